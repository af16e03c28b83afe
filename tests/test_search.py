"""Search: every registered algorithm on OFA's Note10 LUT with OFA's predictor (within budget, seeded),
infeasible budgets, hard limits, evolution vs random, PNAG train/save/answer, results files and the
`hwnas search` command's exit codes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas.cli._app import main
from hwnas.profiler.ofa_interop import import_ofa, ofa_note10_dir
from hwnas.search.accuracy import AccuracyPredictor
from hwnas.search.base import SearchProblem
from hwnas.search.errors import BudgetError, SearchError
from hwnas.search.latency import LUTLatency
from hwnas.search.registry import ALGORITHMS, get_algorithm, make_searcher

OFA_NOTE10 = ofa_note10_dir()  # OFA's published Note10 tables and predictor, shipped in the package
BUDGETS = [15.0, 20.0, 30.0]

#: Small settings per algorithm so that the whole file runs in well under a minute.
SMALL: dict[str, dict[str, Any]] = {
    "evolution": {"population_size": 48, "generations": 6, "polish_top": 1, "polish_rounds": 1, "local_search_rounds": 1},
    "nsga2": {"population_size": 40, "generations": 8},
    "random": {"samples": 1500},
    "mnas": {"population_size": 48, "generations": 6},
    "pnag": {"train_budgets": [15, 30], "iterations": 3, "batch_size": 16, "evaluator_samples": 200,
             "evaluator_epochs": 1, "refresh_every": 2, "candidates": 32, "polish_top": 1, "polish_rounds": 1,
             "local_search_rounds": 1},
}


@pytest.fixture(scope="module")
def note10(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    lut = import_ofa(sorted(OFA_NOTE10.glob("*_lookup_table.yaml")), "ofa-mbv3-w1.2")
    folder = tmp_path_factory.mktemp("note10")
    lut_path = folder / "note10.csv"
    lut.save(lut_path)
    acc = AccuracyPredictor.from_ofa_checkpoint(OFA_NOTE10 / "acc_predictor.pth")
    acc_path = acc.save(folder / "acc.pt")
    return {"lut": lut, "lut_path": lut_path, "acc": acc, "acc_path": acc_path, "folder": folder}


def _problem(note10: dict[str, Any], **limits: Any) -> SearchProblem:
    return SearchProblem(latency=LUTLatency(note10["lut"]), accuracy=note10["acc"], **limits)


def _check_within(problem: SearchProblem, results: list[dict[str, Any]], budgets: list[float]) -> None:
    lat = problem.latency_predictor
    acc = problem.accuracy_predictor
    assert [r["budget_ms"] for r in results] == budgets
    for r in results:
        assert r["arch"] is not None, r
        arch = problem.space.parse(r["arch"])
        measured = float(lat.predict([arch])[0])
        assert measured <= r["budget_ms"] + 1e-9
        assert measured == pytest.approx(r["predicted_latency_ms"], rel=1e-9)
        assert float(acc.predict([arch])[0]) == pytest.approx(r["predicted_accuracy"], abs=1e-6)
        assert r["params"] == problem.space.params(arch) and r["macs"] == problem.space.macs(arch)


@pytest.mark.parametrize("name", list(ALGORITHMS), ids=list(ALGORITHMS))
def test_every_algorithm_within_budget_and_seeded(note10: dict[str, Any], name: str) -> None:
    runs = []
    for _ in range(2):
        problem = _problem(note10)
        searcher = make_searcher(name, problem, seed=3, **SMALL[name])
        results = searcher.search(BUDGETS)
        _check_within(problem, results, BUDGETS)
        assert searcher.evaluations_ > 0 and searcher.seconds_ >= 0
        assert searcher.front_ and all(p["latency_ms"] <= q["latency_ms"] for p, q in zip(searcher.front_, searcher.front_[1:]))
        runs.append(results)
    assert runs[0] == runs[1]
    if name not in ("mnas",):  # MnasNet's soft reward may prefer a faster, less accurate answer
        accs = [r["predicted_accuracy"] for r in runs[0]]
        assert accs == sorted(accs)


def test_infeasible_budget_is_reported_fast(note10: dict[str, Any]) -> None:
    problem = _problem(note10)
    start = time.perf_counter()
    results = make_searcher("evolution", problem, seed=0, **SMALL["evolution"]).search([5.0, 20.0])
    assert time.perf_counter() - start < 30
    bad, good = results
    assert bad["infeasible"] is True and bad["arch"] is None
    # the fastest subnet of OFA's space on the Note10 tables: every minimum choice at 160 px
    smallest = float(problem.latency_predictor.predict([problem.space.min_arch(160)])[0])
    assert bad["min_latency_ms"] == pytest.approx(smallest, rel=1e-6)
    assert good["arch"] is not None and good["predicted_latency_ms"] <= 20.0


@pytest.mark.parametrize("name", ["evolution", "nsga2", "random"])
def test_hard_limits_hold(note10: dict[str, Any], name: str) -> None:
    problem = _problem(note10, max_params=6_000_000, max_macs=300_000_000)
    results = make_searcher(name, problem, seed=1, **SMALL[name]).search([25.0, 40.0])
    for r in results:
        arch = problem.space.parse(r["arch"])
        assert problem.space.params(arch) <= 6_000_000 and problem.space.macs(arch) <= 300_000_000
        assert r["predicted_latency_ms"] <= r["budget_ms"]


def test_limits_nothing_can_meet_is_infeasible(note10: dict[str, Any]) -> None:
    problem = _problem(note10, max_params=1000)
    (r,) = make_searcher("random", problem, seed=0, samples=100).search([40.0])
    assert r["infeasible"] and r["min_latency_ms"] is None


def test_evolution_beats_random_at_equal_evaluations(note10: dict[str, Any]) -> None:
    problem = _problem(note10)
    evo = make_searcher("evolution", problem, seed=0, population_size=64, generations=10, polish_top=0,
                        local_search_rounds=0)
    evo_results = evo.search([20.0])
    n_eval = evo.evaluations_
    problem = _problem(note10)
    rnd = make_searcher("random", problem, seed=0, samples=n_eval)
    rnd_results = rnd.search([20.0])
    assert rnd.evaluations_ == n_eval
    assert evo_results[0]["predicted_accuracy"] >= rnd_results[0]["predicted_accuracy"]


def test_pnag_train_save_answer(note10: dict[str, Any], tmp_path: Path) -> None:
    from hwnas.search.pnag import load_generator

    problem = _problem(note10)
    params = {k: v for k, v in SMALL["pnag"].items() if k != "train_budgets"}
    pnag = make_searcher("pnag", problem, seed=0, **params)
    pnag.train([15, 20, 30, 40])
    assert pnag.train_seconds_ > 0
    path = pnag.save(tmp_path / "gen.pt")
    answerer = load_generator(path, _problem(note10), seed=0)
    answerer.candidates, answerer.polish_top, answerer.local_search_rounds = 32, 1, 1
    start = time.perf_counter()
    results = answerer.search([15.0, 22.5, 40.0])
    assert time.perf_counter() - start < 20
    _check_within(answerer.problem, results, [15.0, 22.5, 40.0])
    with pytest.raises(Exception, match="not an hwnas PNAG generator"):
        load_generator(note10["acc_path"], _problem(note10))


def test_parameter_validation_and_registry(note10: dict[str, Any]) -> None:
    problem = _problem(note10)
    with pytest.raises(ValueError, match=r"The 'population_size' parameter of EvolutionSearch must be an int in \[4, inf\)\. Got 0 instead\."):
        make_searcher("evolution", problem, population_size=0).search([20.0])
    with pytest.raises(SearchError, match="did you mean evolution"):
        get_algorithm("evolutoin")
    with pytest.raises(BudgetError, match="not a positive number"):
        make_searcher("random", problem, samples=10).search([-1.0])


def test_results_files(note10: dict[str, Any], tmp_path: Path) -> None:
    from hwnas.search.results import attach_measurements, write_results

    problem = _problem(note10)
    searcher = make_searcher("nsga2", problem, seed=0, **SMALL["nsga2"])
    results = searcher.search([20.0, 30.0])
    files = write_results(tmp_path / "out", results=results, front=searcher.front_, info={"algo": "nsga2"})
    data = json.loads(Path(files["json"]).read_text())
    assert data["algo"] == "nsga2" and len(data["results"]) == 2 and data["front"]
    assert Path(files["csv"]).read_text().splitlines()[0].startswith("budget_ms,infeasible")
    assert Path(files["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    measured = attach_measurements(results, lambda archs: [1.1 * float(x) for x in problem.latency_predictor.predict(archs)], problem.space)
    assert measured[0]["latency_error"] == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------------------
# CLI


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _base(note10: dict[str, Any]) -> list[str]:
    return ["search", "--space", "ofa-mbv3-w1.2", "--lut", str(note10["lut_path"]), "--accuracy", str(note10["acc_path"])]


def test_cli_search_ok_and_infeasible(note10: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run([*_base(note10), "--latency-ms", "20,30", "--algo", "random", "--out", str(tmp_path / "r"), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert [r["budget_ms"] for r in data["results"]] == [20.0, 30.0]
    assert data["evaluations"] > 0 and data["seconds"] >= 0
    assert (tmp_path / "r" / "front.png").is_file()
    code, out, err = _run([*_base(note10), "--latency-ms", "5,20", "--algo", "random", "--json"], capsys)
    assert code == 1
    data = json.loads(out)
    assert data["results"][0]["infeasible"] is True and data["results"][0]["min_latency_ms"] > 5
    assert "infeasible" in err


def test_cli_search_devices(note10: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("phone-a", "phone-b"):
        (tmp_path / "device_profiles" / name).mkdir(parents=True)
        (tmp_path / "device_profiles" / f"{name}.yaml").write_text(f"name: {name}\ntransport:\n  local: {{}}\n")
        (tmp_path / "device_profiles" / name / "ofa-mbv3-w1.2_onnxruntime_float32_t1_b1.csv").write_bytes(
            note10["lut_path"].read_bytes())
    code, out, _ = _run(["search", "--space", "ofa-mbv3-w1.2", "--device", "phone-a", "--device", "phone-b",
                         "--accuracy", str(note10["acc_path"]), "--latency-ms", "20", "--algo", "random", "--json"], capsys)
    assert code == 0, out
    data = json.loads(out)
    assert [r["device"] for r in data["results"]] == ["phone-a", "phone-b"]
    assert data["results"][0]["arch"] == data["results"][1]["arch"]  # same LUT, same seed


def test_cli_pnag_train_then_answer(note10: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.search import pnag

    # the CLI uses the algorithm's defaults; shrink them for the test
    for key, value in SMALL["pnag"].items():
        if key != "train_budgets":
            monkeypatch.setitem(pnag.PNAGSearch.__init__.__kwdefaults__, key, value)
    gen = tmp_path / "gen.pt"
    code, out, _ = _run([*_base(note10), "--algo", "pnag", "--train-budgets", "15,30", "--generator", str(gen), "--json"], capsys)
    assert code == 0, out
    data = json.loads(out)
    assert data["train_seconds"] > 0 and gen.is_file() and [r["budget_ms"] for r in data["results"]] == [15.0, 30.0]
    code, out, _ = _run([*_base(note10), "--algo", "pnag", "--generator", str(gen), "--latency-ms", "22.5", "--json"], capsys)
    assert code == 0, out
    (r,) = json.loads(out)["results"]
    assert r["predicted_latency_ms"] <= 22.5


def _lut_missing_one(note10: dict[str, Any], tmp_path: Path) -> tuple[Path, str]:
    from hwnas.profiler.lut import LUT

    lut = note10["lut"]
    rows = lut.rows.copy()
    victim = rows[rows["key"].str.startswith("expanded_conv")].iloc[5]
    rows = rows.drop(index=victim.name)
    path = tmp_path / "partial.csv"
    LUT(metadata=lut.metadata, rows=rows).save(path)
    return path, str(victim["key"])


def test_cli_search_bad_input_exits_2(note10: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compact = AccuracyPredictor(space="compact", hidden_size=8, epochs=1)
    from hwnas.supernet import get_space

    sp = get_space("compact")
    archs = sp.archs_from_arrays(sp.sample_arrays(np.random.default_rng(0), 10))
    compact_path = compact.fit(archs, np.linspace(0.3, 0.9, 10)).save(tmp_path / "compact.pt")
    partial, missing_key = _lut_missing_one(note10, tmp_path)
    cases = [
        ([*_base(note10), "--latency-ms", "0,20"], "not a positive number"),
        ([*_base(note10), "--latency-ms", "abc"], "is not a number"),
        (["search", "--space", "ofa-mbv3-w1.2", "--lut", str(note10["lut_path"]), "--accuracy", str(tmp_path / "nope.pt"), "--latency-ms", "20"], "no such predictor file"),
        (["search", "--space", "ofa-mbv3-w1.2", "--lut", str(note10["lut_path"]), "--accuracy", str(compact_path), "--latency-ms", "20"], "for space compact, not ofa-mbv3-w1.2"),
        (["search", "--space", "ofa-mbv3-w1.2", "--lut", str(partial), "--accuracy", str(note10["acc_path"]), "--latency-ms", "20"], missing_key),
        ([*_base(note10), "--latency-ms", "20", "--algo", "evolutoin"], "did you mean evolution"),
        ([*_base(note10), "--latency-ms", "20", "--max-params", "-5"], "not a positive number"),
        (["search", "--space", "ofa-mbv3-w1.2", "--accuracy", str(note10["acc_path"]), "--latency-ms", "20"], "exactly one of"),
        ([*_base(note10), "--algo", "pnag", "--latency-ms", "20"], "--train-budgets"),
    ]
    for argv, match in cases:
        code, _, err = _run(argv, capsys)
        assert code == 2, (argv, err)
        assert match in err and len(err.strip().splitlines()) == 1, (match, err)
