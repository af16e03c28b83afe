"""Behaviour kept through the one-way redesign: every consumer of the space's block table, the one exporter
and the one atomic writer give what the code before it gave.

``fixtures/one_way_golden.json`` holds numbers computed by the code as it was before the redesign (commit
aadc330): ``lut predict`` on OFA's Note10 tables for twelve seeded archs (as exact float hex), their MACs,
parameters, entry counts, the search's gathers, an evolution search with a
fixed seed, and the outputs of exported ONNX models (a subnet, a LUT entry, a PaS network, a PaS deploy file).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hwnas.profiler.ofa_interop import import_ofa, ofa_note10_dir
from hwnas.supernet import get_space

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "one_way_golden.json").read_text())
OFA_NOTE10 = ofa_note10_dir()  # OFA's published Note10 tables and predictor, shipped in the package
RESOLUTIONS = (160, 176, 192, 208, 224)


def _hex(values: Any) -> list[str]:
    return [float(v).hex() for v in values]


@pytest.fixture(scope="module")
def note10() -> dict[str, Any]:
    lut = import_ofa(sorted(OFA_NOTE10.glob("*_lookup_table.yaml")), "ofa-mbv3-w1.2")
    space = get_space("ofa-mbv3-w1.2")
    arrays = space.sample_arrays(np.random.default_rng(7), 12, RESOLUTIONS)
    return {"lut": lut, "space": space, "arrays": arrays}


# ---- the block table and its consumers -------------------------------------------------------------------


def test_lut_predict_is_unchanged(note10: dict[str, Any]) -> None:
    from hwnas.profiler.predict import LUTPredictor

    predictor = LUTPredictor(note10["lut"])
    assert _hex(predictor.predict_arrays(note10["arrays"])) == GOLDEN["predict"]
    entries, counts = predictor.entry_counts(note10["arrays"])
    rows = np.arange(counts.shape[0])
    got = sorted([k, r, int(counts[:, c].sum()), int((counts[:, c] * rows).sum())] for c, (k, r) in enumerate(entries))
    assert got == GOLDEN["counts"]  # the same counts per entry; the column order is not part of the contract


def test_macs_params_and_search_gathers_are_unchanged(note10: dict[str, Any]) -> None:
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.base import SearchProblem
    from hwnas.search.encoding import ArchEncoding
    from hwnas.search.latency import LUTLatency

    space, arrays = note10["space"], note10["arrays"]
    assert space.macs_arrays(arrays).tolist() == GOLDEN["macs"]
    assert space.params_arrays(arrays).tolist() == GOLDEN["params"]
    latency = LUTLatency(note10["lut"])
    encoding = ArchEncoding(space)
    genes = encoding.genes(arrays)
    assert _hex(latency.predict_genes(genes, encoding)) == GOLDEN["genes"]
    problem = SearchProblem(latency=latency, accuracy=AccuracyPredictor.from_ofa_checkpoint(OFA_NOTE10 / "acc_predictor.pth"))
    assert [problem.params(genes).tolist(), problem.macs(genes).tolist()] == GOLDEN["pmacs"]


def test_seeded_search_is_unchanged(note10: dict[str, Any]) -> None:
    """The seeded evolution search finds what it found before the redesign: for each budget a subnet within it
    whose predicted accuracy is the recorded subnet's (within 0.3 points). Not bit for bit: float sums and
    sorts in numpy/torch differ between CPUs and library releases (seen here: the same code on another host
    picked another subnet of 29.92 ms instead of 29.99 ms for the 30 ms budget), and a search is a chain of
    comparisons. On one machine it is exactly repeatable."""
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.base import SearchProblem
    from hwnas.search.latency import LUTLatency
    from hwnas.search.registry import make_searcher

    predictor = AccuracyPredictor.from_ofa_checkpoint(OFA_NOTE10 / "acc_predictor.pth")
    problem = SearchProblem(latency=LUTLatency(note10["lut"]), accuracy=predictor)

    def run() -> list[dict[str, Any]]:
        searcher = make_searcher(
            "evolution", problem, seed=3, population_size=48, generations=6, polish_top=1, polish_rounds=1,
            local_search_rounds=1,
        )
        return searcher.search([15.0, 20.0, 30.0])

    results = run()
    again = [[json.dumps(r["arch"], sort_keys=True), float(r["predicted_latency_ms"]).hex()] for r in run()]
    got = [[json.dumps(r["arch"], sort_keys=True), float(r["predicted_latency_ms"]).hex()] for r in results]
    assert got == again  # seeded: the same result twice on one machine
    for budget, r, (arch_json, latency_hex) in zip([15.0, 20.0, 30.0], results, GOLDEN["search"], strict=True):
        recorded = json.loads(arch_json)
        assert float(r["predicted_latency_ms"]) <= budget
        assert float(r["predicted_latency_ms"]) == pytest.approx(float.fromhex(latency_hex), rel=0.02)
        assert float(predictor.predict([r["arch"]])[0]) == pytest.approx(
            float(predictor.predict([recorded])[0]), abs=0.003)


# ---- exported models -------------------------------------------------------------------------------------


def _run_onnx(path: Path, x: torch.Tensor) -> tuple[tuple[list[str], list[str]], list[float], float]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ([i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
    y = sess.run(None, {names[0][0]: x.numpy()})[0]
    return names, y.ravel()[:6].astype(float).tolist(), float(np.abs(y).sum())


def _seeded(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _same(kind: str, got: tuple[Any, list[float], float]) -> None:
    want = GOLDEN["onnx"][kind]
    assert got[0] == (["input"], ["output"]), kind  # one exporter, one pair of tensor names
    assert got[1] == pytest.approx(want["first"], rel=1e-5, abs=1e-9), kind
    assert math.isclose(got[2], want["abs_sum"], rel_tol=1e-5, abs_tol=1e-9), kind


def test_exported_models_give_the_same_outputs_under_the_same_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    from hwnas.profiler.workloads import WorkloadBuilder
    from hwnas.search import pas
    from hwnas.supernet.export import export_subnet
    from hwnas.supernet.pas_net import base_config

    space = get_space("compact")
    arch = space.max_arch()
    torch.manual_seed(0)
    net = space.build_subnet(arch)
    export_subnet(net, arch, "onnx", tmp_path / "subnet.onnx", space=space)
    _same("subnet", _run_onnx(tmp_path / "subnet.onnx", _seeded(1, 3, arch.r, arch.r)))

    entry = space.lut_entries(arch)[3]
    workload = WorkloadBuilder(space=space, fmt="onnx").entry(entry)
    _same("entry", _run_onnx(workload.path, _seeded(1, *entry.input_shape)))

    config = base_config("digits")
    widths = [8, 16, 16, 32, 32, 64]
    x = _seeded(1, 1, 32, 32)
    _same("pas", _run_onnx(pas.PasWorkloads(config=config).network(widths, id="n").path, x))
    torch.manual_seed(0)
    plain = pas.plain_network(config, widths)
    pas.export_deploy_onnx(plain, tmp_path / "deploy.onnx", (1, 32, 32), x)
    _same("deploy", _run_onnx(tmp_path / "deploy.onnx", x))


@pytest.mark.parametrize("name", ["compact", "ofa-mbv3-w1.0"])
def test_block_table_equals_a_plain_loop_over_each_arch(name: str) -> None:
    space = get_space(name)
    rs = space.lut_resolutions[:3]
    arrays = space.sample_arrays(np.random.default_rng(1), 40, rs)
    archs = space.archs_from_arrays(arrays)
    table = space.block_table(lambda e: (e.macs, e.params), rs)  # (R, B, K, E, 2)
    keys = space.block_table(lambda e: e.key, rs, dtype=object)
    assert table.shape == (len(rs), space.n_blocks, len(space.ks_choices), len(space.e_choices), 2)
    ks_idx, e_idx = space.choice_indices(arrays)
    ri = np.searchsorted(np.asarray(rs), arrays["r"])
    positions = np.arange(space.n_blocks)[None, :]
    active = space.active_mask(arrays["d"])
    gathered = table[ri[:, None], positions, ks_idx, e_idx]
    for row, arch in enumerate(archs):
        blocks = space.lut_entries(arch)[2:-4]  # the active elastic blocks, in order
        assert [e.key for e in blocks] == keys[ri[row], positions[0], ks_idx[row], e_idx[row]][active[row]].tolist()
        assert gathered[row][active[row]].sum(axis=0).tolist() == [sum(e.macs for e in blocks), sum(e.params for e in blocks)]
        assert active[row].sum() == sum(arch.d)
    assert space.macs_arrays(arrays).tolist() == [space.macs(a) for a in archs]
    assert space.params_arrays(arrays).tolist() == [space.params(a) for a in archs]


def test_parse_lines_is_parse_line_by_line() -> None:
    space = get_space("compact")
    archs = space.archs_from_arrays(space.sample_arrays(np.random.default_rng(2), 6))
    lines = [a.to_json() for a in archs]
    lines[1] = json.dumps({**archs[1].to_dict(), "r": [archs[1].r], "wid": None})  # OFA's own spelling
    lines.insert(3, "  ")
    fast = space.parse_lines(lines)
    assert space.archs_from_arrays(fast) == archs
    assert {k: v.tolist() for k, v in fast.items()} == {k: v.tolist() for k, v in space.arrays_from_archs(archs).items()}
    bad = [*lines, json.dumps({**archs[0].to_dict(), "d": [True, 2, 2, 2]})]
    with pytest.raises(ValueError) as exc:
        space.parse(bad[-1])
    with pytest.raises(type(exc.value), match="^" + re.escape(f"line {len(bad)}: {exc.value}")):
        space.parse_lines(bad)
    with pytest.raises(ValueError, match="^line 2: .*not one of"):
        other = json.dumps({**archs[0].to_dict(), "r": 40 if archs[0].r != 40 else 32})
        space.parse_lines([lines[0], other], resolutions=[archs[0].r])


# ---- the one atomic writer -------------------------------------------------------------------------------


def test_atomic_write_never_leaves_a_half_written_file(tmp_path: Path) -> None:
    from hwnas.supernet.files import atomic_write

    path = tmp_path / "table.csv"
    atomic_write(path, "old\n")
    path.chmod(0o640)

    def half(fh: Any) -> None:
        fh.write(b"new, but only ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    atomic_write(path, b"new\n")
    assert path.read_bytes() == b"new\n" and path.stat().st_mode & 0o777 == 0o640
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "x.json", "{}")
    assert atomic_write(tmp_path / "made" / "x.json", "{}", make_parents=True).read_text() == "{}"


@pytest.mark.tflite
def test_one_tflite_exporter_for_all_three_model_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("litert_torch", reason="litert-torch is not installed")
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    from ai_edge_litert.interpreter import Interpreter

    from hwnas.profiler.workloads import WorkloadBuilder
    from hwnas.search import pas
    from hwnas.supernet import export
    from hwnas.supernet.pas_net import base_config

    space = get_space("compact")
    arch = space.min_arch()
    entry = space.lut_entries(arch)[3]
    config = base_config("digits")
    torch.manual_seed(0)
    subnet = space.build_subnet(arch)
    files = {
        "entry": WorkloadBuilder(space=space, fmt="tflite").entry(entry).path,
        "pas": pas.PasWorkloads(config=config, fmt="tflite").network([8, 16, 16, 32, 32, 64], id="n").path,
        "subnet": Path(export.export_subnet(subnet, arch, "tflite", tmp_path / "subnet.tflite", space=space)["file"]),
    }
    for kind, path in files.items():
        sig = Interpreter(model_path=str(path)).get_signature_list()
        assert len(sig) == 1 and len(next(iter(sig.values()))["inputs"]) == 1, kind
    torch.manual_seed(0)
    module = space.build_entry(entry).eval()
    diff, scale = export.check_tflite(files["entry"], module, [space.entry_input(entry)])
    assert scale > 0 and diff <= 1e-4 * max(1.0, scale)
    from hwnas.profiler import tflite_export

    assert tflite_export.INT8_RECIPE == export.TFLITE_INT8_RECIPE
    assert tflite_export.ExportError is export.ExportError  # one error type


# ---- Pruning-as-Search: one training loop --------------------------------------------------------------

#: Recorded at commit 8fc055b (three training loops: pre-train, search, fine-tune) with one torch thread,
#: before they became one loop.
PAS_GOLDEN = {
    "widths": [8, 26, 10, 55, 41, 122],
    "top1": 0.4,
    "base_top1": 0.26,
    "snapped": 25,
    "losses": [1.7841386079788208, 1.0640227913856506, 0.6374026209115982, 0.5828391045331955],
    "costs": [None, 5588480.0, 4511360.0, None],
}


def test_seeded_pas_search_is_unchanged() -> None:
    from hwnas.search import pas
    from hwnas.supernet.pas_net import base_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config, x, y, xv, yv = pas.load_data("digits", base_config("digits"))
        searcher = pas.PruningAsSearch(
            base=config, target="40%", pretrain_epochs=1, search_epochs=2, finetune_epochs=1, seed=3
        )
        record = searcher.search(x[:640], y[:640], xv[:200], yv[:200]).record_
    finally:
        torch.set_num_threads(threads)
    assert [h["phase"] for h in record["history"]] == ["pretrain", "search", "search", "finetune"]
    # as recorded, up to float sums that differ between CPUs and library releases (seen here on another host:
    # widths 27/54 for 26/55); a change of the training loop moves these far more
    assert all(abs(a - b) <= 2 for a, b in zip(record["widths"], PAS_GOLDEN["widths"], strict=True)), record["widths"]
    assert abs(record["snapped"] - PAS_GOLDEN["snapped"]) <= 2
    assert record["base_top1"] == pytest.approx(PAS_GOLDEN["base_top1"], abs=0.02)
    # top1 after one fine-tuning epoch of 640 images is chaotic (recorded 0.40; 0.705 on another host with
    # every loss within 2%): only that fine-tuning helped
    assert record["top1"] > record["base_top1"]
    assert [h["loss"] for h in record["history"]] == pytest.approx(PAS_GOLDEN["losses"], rel=0.05)
    costs = [h.get("cost") for h in record["history"]]
    assert [c is None for c in costs] == [c is None for c in PAS_GOLDEN["costs"]]
    assert [c for c in costs if c is not None] == pytest.approx([c for c in PAS_GOLDEN["costs"] if c is not None], rel=0.02)


# ---- several devices at once: the pool lives in the profiler, callable from Python ------------------------


def test_profile_devices_keeps_order_and_one_failure_does_not_stop_the_others(tmp_path: Path) -> None:
    from hwnas.agents.errors import ProfileError
    from hwnas.profiler.device_pool import profile_devices
    from hwnas.profiler.lut import LUT
    from hwnas.profiler.profile import ProfileRequest

    good = tmp_path / "pooled.yaml"
    good.write_text(f"name: pooled\ntransport:\n  local: {{}}\nthreads: 1\nworkdir: {tmp_path}/work\n")
    missing = tmp_path / "missing.yaml"
    request = ProfileRequest(
        space="compact", resolutions=(32,), out=None, calibration_subnets=2,
        overrides=(("runs", 2), ("rounds", 1), ("min_seconds", 0.0), ("precision", 0.05), ("max_wait_s", 0.0),
                   ("max_entry_s", 0.5)),
    )
    seen: list[str] = []
    failed: list[tuple[str, BaseException]] = []
    outcomes = profile_devices(
        [str(missing), str(good)], request, on_progress=lambda d, t, w: seen.append(w),
        on_error=lambda name, exc: failed.append((name, exc)),
    )
    assert [o.device for o in outcomes] == [str(missing), str(good)]  # the order asked for
    bad, ok = outcomes
    assert not bad.ok and isinstance(bad.error, ProfileError) and "no such device profile file" in str(bad.error)
    assert failed == [(str(missing), bad.error)]
    assert ok.ok and ok.result is not None and ok.result["device"] == "pooled"
    assert ok.result["entries"] == ok.result["measured"] == 79  # compact at 32: 78 entries and the overhead
    assert len(LUT.load(Path(ok.result["lut"]))) == 79
    assert seen and all(w.startswith(f"{good}: ") for w in seen)


# ---- one search run from Python ---------------------------------------------------------------------------


def test_run_search_is_the_registry_search_and_writes_its_files(note10: dict[str, Any], tmp_path: Path) -> None:
    """`hwnas search`'s run (search/run.py) called from Python answers as the searcher by name does."""
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.base import SearchProblem
    from hwnas.search.latency import LUTLatency
    from hwnas.search.registry import make_searcher
    from hwnas.search.run import run_search

    latency = LUTLatency(note10["lut"])
    accuracy = AccuracyPredictor.from_ofa_checkpoint(OFA_NOTE10 / "acc_predictor.pth")
    entry = run_search(
        name="note10", latency=latency, accuracy=accuracy, budgets=[15.0, 25.0], algo="random", seed=5,
        out=tmp_path / "out",
    )
    plain = make_searcher("random", SearchProblem(latency=latency, accuracy=accuracy), seed=5).search([15.0, 25.0])
    assert [r["arch"] for r in entry["results"]] == [r["arch"] for r in plain]
    assert entry["device"] == "note10" and entry["evaluations"] > 0 and "train_seconds" not in entry
    written = json.loads(Path(entry["files"]["json"]).read_text())
    assert [r["arch"] for r in written["results"]] == [r["arch"] for r in plain]
    assert written["algo"] == "random" and written["seed"] == 5


# ---- the LUT file's modules: profiler.lut keeps every public name -----------------------------------------


def test_lut_reexports_the_public_names_of_its_modules() -> None:
    from hwnas.profiler import lut, lut_format, lut_sidecars, lut_writer

    for module in (lut_format, lut_sidecars, lut_writer):
        names = [n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
        assert names, module.__name__
        for name in names:
            assert getattr(lut, name) is getattr(module, name), f"hwnas.profiler.lut.{name}"
            assert name in lut.__all__, name
    assert lut.LUTWriter.__module__ == "hwnas.profiler.lut_writer" and lut.LUT.__module__ == "hwnas.profiler.lut"
    assert lut.OVERHEAD_KEY is lut_format.OVERHEAD_KEY and lut.RESUME_FIELDS is lut_format.RESUME_FIELDS
