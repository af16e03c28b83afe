"""Few-shot latency prediction: structure features, models stacked by cross-validation, priors from other
devices, conformal intervals, which subnets to measure, and the CLI's `predictor latency / measure /
predict` with its bad-input errors.

The "devices" here are OFA's published Note10 LUT with stage-dependent speed-ups and multiplicative noise
(a phone cannot be attached here); `predictor measure` measures real subnets with ONNX Runtime on this
machine through the `local` profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from hwnas.cli._app import main
from hwnas.profiler.ofa_interop import import_ofa, ofa_note10_dir
from hwnas.search.encoding import ArchEncoding
from hwnas.search.errors import PredictorError
from hwnas.search.fewshot import (
    MIN_SAMPLES,
    features,
    load_prior,
    lut_prior,
    measurements_prior,
    stack_models,
    suggest_archs,
)
from hwnas.search.latency import STACKED, LearnedLatency, LUTLatency
from hwnas.supernet import get_space
from hwnas.supernet.spaces import ENTRY_COSTS, structure_features

W12 = "ofa-mbv3-w1.2"


@pytest.fixture(scope="module")
def note10() -> LUTLatency:
    return LUTLatency(import_ofa(sorted(ofa_note10_dir().glob("*_lookup_table.yaml")), W12))


def _device(lat: LUTLatency, archs: list, stage_scale: list[float], fixed_scale: float, noise: float,
            seed: int = 0) -> np.ndarray:
    """Another device: the Note10 LUT's blocks scaled per stage, its fixed part scaled, times noise."""
    sp = lat.space
    enc = ArchEncoding(sp, resolutions=lat.resolutions)
    genes = enc.genes(sp.arrays_from_archs(archs))
    block, fixed = lat.block_table(enc)
    ri = genes.r.astype(int)
    scale = np.repeat(np.asarray(stage_scale), sp.max_depth)
    vals = block[ri[:, None], np.arange(sp.n_blocks)[None, :], genes.ks, genes.e] * scale[None, :]
    y = fixed_scale * fixed[ri] + np.where(enc.active(genes), vals, 0.0).sum(axis=1)
    return y * np.exp(np.random.default_rng(seed).normal(0, noise, len(y)))


def _archs(space: str, n: int, seed: int, resolutions=None) -> list:
    sp = get_space(space)
    return sp.archs_from_arrays(sp.sample_arrays(np.random.default_rng(seed), n, resolutions or sp.lut_resolutions))


def _score(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return float(spearmanr(pred, y).statistic), float(np.mean(np.abs(pred / y - 1) <= 0.10))


# ---- features


@pytest.mark.parametrize("space", ["ofa-mbv3-w1.0", W12, "compact"])
def test_structure_features_add_up_to_the_space_costs(space: str) -> None:
    sp = get_space(space)
    arrays = sp.sample_arrays(np.random.default_rng(1), 50)
    names, x = structure_features(sp, arrays)
    assert x.shape == (50, len(names)) and len(names) == len(set(names))

    def total(cost: str) -> np.ndarray:
        return x[:, names.index(f"fixed.{cost}")] + sum(x[:, names.index(f"stage{s}.{cost}")] for s in range(sp.n_stages))

    np.testing.assert_allclose(total("mmacs") * 1e6, sp.macs_arrays(arrays), rtol=1e-9)
    np.testing.assert_allclose(total("mparams") * 1e6, sp.params_arrays(arrays), rtol=1e-9)
    layers = total("layers")
    assert np.array_equal(layers, arrays["d"].sum(axis=1) + len(sp.fixed_entries(int(arrays["r"][0]))))
    assert np.array_equal(x[:, names.index("resolution")], arrays["r"])
    assert set(ENTRY_COSTS) <= {n.split(".")[-1] for n in names}
    # every depthwise kernel of these spaces is 3, 5 or 7: the per-kernel MACs add up to the depthwise MACs
    by_kernel = total("dw3_mmacs") + total("dw5_mmacs") + total("dw7_mmacs")
    np.testing.assert_allclose(by_kernel, total("dw_mmacs"), rtol=1e-12)
    sevens = (arrays["ks"] == 7) & sp.active_mask(arrays["d"]).astype(bool)  # blocks beyond a depth do not run
    assert (total("dw7_mmacs")[sevens.any(axis=1)] > 0).all() and (total("dw7_mmacs")[~sevens.any(axis=1)] == 0).all()


# ---- models, intervals, priors


def test_fit_stacks_by_cross_validation_and_beats_the_macs_baseline(note10: LUTLatency) -> None:
    archs = _archs(W12, 550, 0)
    y = _device(note10, archs, [1.6, 1.3, 1.0, 0.8, 0.6], 1.4, 0.03)
    train, test = slice(0, 50), slice(50, None)
    model = LearnedLatency(space=W12).fit(archs[train], y[train])
    assert set(model.weights_) <= set(model.cv_) and abs(sum(model.weights_.values()) - 1) < 1e-9
    assert all(w > 0 for w in model.weights_.values())
    assert model.model_ == (STACKED if len(model.weights_) > 1 else next(iter(model.weights_)))
    assert "prior-ops" not in model.cv_  # no prior, no prior models
    rho, w10 = _score(model.predict(archs[test]), y[test])
    base = LearnedLatency(space=W12, models=["macs-linear"]).fit(archs[train], y[train])
    assert base.model_ == "macs-linear" and base.weights_ == {"macs-linear": 1.0}
    rho_b, w10_b = _score(base.predict(archs[test]), y[test])
    assert rho > 0.9 and w10 > 0.8
    assert rho > rho_b and w10 >= w10_b


def test_the_stack_fits_its_out_of_fold_predictions_no_worse_than_any_one_model(note10: LUTLatency) -> None:
    """The weights are the least-squares fit on the simplex, so each single model (a corner of it) is no
    better on the same out-of-fold predictions; equal weights would be."""
    archs = _archs(W12, 40, 8)
    y = _device(note10, archs, [1.0, 1.4, 0.8, 1.2, 0.7], 0.9, 0.04, seed=8)
    sp = get_space(W12)
    fs = features(sp, sp.arrays_from_archs(archs))
    weights, scores, stacked = stack_models(fs, y, seed=0)
    sse = float(np.sum(np.log(stacked / y) ** 2))
    singles = {m: stack_models(fs, y, models=[m], seed=0)[2] for m in scores}
    assert len(weights) >= 2
    assert all(sse <= float(np.sum(np.log(p / y) ** 2)) + 1e-9 for p in singles.values())
    equal = np.exp(np.mean([np.log(p) for p in singles.values()], axis=0))
    assert sse < float(np.sum(np.log(equal / y) ** 2))


def test_interval_covers_about_its_level(note10: LUTLatency) -> None:
    archs = _archs(W12, 1050, 3)
    y = _device(note10, archs, [1.2, 1.1, 1.0, 0.9, 0.8], 1.1, 0.05, seed=3)
    model = LearnedLatency(space=W12, level=0.9).fit(archs[:50], y[:50])
    pred, iv = model.predict_interval(archs[50:])
    assert np.all(iv[:, 0] <= pred) and np.all(pred <= iv[:, 1])
    coverage = np.mean((iv[:, 0] <= y[50:]) & (y[50:] <= iv[:, 1]))
    assert 0.8 <= coverage <= 0.99


def test_a_lut_prior_transfers_with_ten_samples(note10: LUTLatency) -> None:
    archs = _archs(W12, 510, 5)
    y = _device(note10, archs, [2.0, 1.5, 1.0, 0.7, 0.5], 1.8, 0.02, seed=5)
    alone = LearnedLatency(space=W12).fit(archs[:10], y[:10])
    prior = lut_prior(note10.lut, note10.space, source="note10")
    adapted = LearnedLatency(space=W12, priors=[prior]).fit(archs[:10], y[:10])
    assert max(adapted.weights_, key=adapted.weights_.get).startswith("prior")
    rho_a, w10_a = _score(alone.predict(archs[10:]), y[10:])
    rho_p, w10_p = _score(adapted.predict(archs[10:]), y[10:])
    assert rho_p > 0.97 and w10_p > 0.9
    assert w10_p > w10_a


def test_a_measurements_prior_and_saving_round_trip(note10: LUTLatency, tmp_path: Path) -> None:
    archs = _archs(W12, 420, 6)
    source = _device(note10, archs[:200], [1.0, 1.0, 1.0, 1.0, 1.0], 1.0, 0.02, seed=6)
    target = _device(note10, archs[200:], [1.5, 1.4, 1.3, 1.2, 1.1], 1.6, 0.02, seed=7)
    prior = measurements_prior(archs[:200], source, get_space(W12), source="source.csv")
    model = LearnedLatency(space=W12, priors=[prior]).fit(archs[200:220], target[:20])
    pred, iv = model.predict_interval(archs[220:])
    assert _score(pred, target[20:])[1] > 0.85
    path = model.save(tmp_path / "lat.json")
    payload = json.loads(path.read_text())
    assert payload["model"] == model.model_ and payload["weights"] == model.weights_ and len(payload["samples"]) == 20
    assert payload["priors"][0]["kind"] == "measurements"
    back = LearnedLatency.load(path)
    got, got_iv = back.predict_interval(archs[220:])
    np.testing.assert_allclose(got, pred, rtol=1e-9)
    np.testing.assert_allclose(got_iv, iv, rtol=1e-9)
    # a version-2 file held one chosen model: it loads as that model alone
    one = LearnedLatency(space=W12, priors=[prior], models=["prior-ops"]).fit(archs[200:220], target[:20])
    old = dict(one.to_dict(), version=2)
    del old["weights"]
    (tmp_path / "v2.json").write_text(json.dumps(old))
    v2 = LearnedLatency.load(tmp_path / "v2.json")
    assert v2.weights_ == {"prior-ops": 1.0}
    np.testing.assert_allclose(v2.predict(archs[220:]), one.predict(archs[220:]), rtol=1e-9)
    for weights, message in [({"tree": 1.0}, "model 'tree' is not one of"),
                             ({"nnls": 0.5, "ridge-log": 0.4}, "'weights' sum to 0.9"),
                             ({"nnls": "1"}, "weight of 'nnls' is '1', expected a number in \\(0, 1\\]"),
                             ([], "'weights' must be an object")]:
        (tmp_path / "bad.json").write_text(json.dumps(dict(payload, weights=weights)))
        with pytest.raises(PredictorError, match=f"bad.json: {message}"):
            LearnedLatency.load(tmp_path / "bad.json")


def test_a_measurements_prior_saved_without_its_costs_reads_them_by_name() -> None:
    """Format 2 saved a measurements prior's coefficients for seven costs, unnamed; they keep their meaning
    among today's costs (the per-kernel depthwise MACs get 0)."""
    from hwnas.search.fewshot import _V2_COSTS, prior_from_dict

    sp = get_space(W12)
    archs = _archs(W12, 30, 4)
    arrays = sp.arrays_from_archs(archs)
    coef = np.random.default_rng(4).uniform(0.0, 1.0, (sp.n_stages + 1, len(_V2_COSTS)))
    old = {"kind": "measurements", "source": "old.csv", "space": W12, "resolutions": list(sp.lut_resolutions),
           "coef": coef.tolist(), "samples": 30}
    prior = prior_from_dict(old, source="old.json")
    additive = features(sp, arrays).additive
    expected = np.einsum("ngc,gc->ng", additive[:, :, [ENTRY_COSTS.index(c) for c in _V2_COSTS]], coef)
    np.testing.assert_allclose(prior.components(sp, arrays), expected, rtol=1e-12)
    assert prior.to_dict()["costs"] == list(ENTRY_COSTS)
    with pytest.raises(PredictorError, match="old.json: a measurements prior's cost 'flops' is not one of"):
        prior_from_dict(dict(old, costs=["flops", *_V2_COSTS[1:]]), source="old.json")
    with pytest.raises(PredictorError, match=r"old.json: a measurements prior's 'coef' must be \(groups, 7 costs\)"):
        prior_from_dict(dict(old, coef=coef[:, :5].tolist()), source="old.json")


def test_fit_refuses_too_few_samples_and_foreign_priors(note10: LUTLatency) -> None:
    archs = _archs(W12, MIN_SAMPLES - 1, 0)
    with pytest.raises(PredictorError, match=f"need at least {MIN_SAMPLES} measured architectures.*got {MIN_SAMPLES - 1}"):
        LearnedLatency(space=W12).fit(archs, [1.0] * len(archs))
    with pytest.raises(PredictorError, match="a LUT of space ofa-mbv3-w1.2, not ofa-mbv3-w1.0"):
        lut_prior(note10.lut, get_space("ofa-mbv3-w1.0"), source="note10.csv")
    with pytest.raises(ValueError, match="The 'models' parameter of LearnedLatency"):
        LearnedLatency(space=W12, models=["tree"]).fit(_archs(W12, 10, 0), [1.0] * 10)


# ---- which subnets to measure


def test_suggest_spreads_over_macs_resolution_and_depth() -> None:
    sp = get_space("ofa-mbv3-w1.0")
    pool = _archs("ofa-mbv3-w1.0", 2000, 11)
    picked = suggest_archs(sp, 20, pool=pool, seed=0)
    assert len(set(picked)) == 20 and set(picked) <= set(pool)
    assert picked == suggest_archs(sp, 20, pool=pool, seed=0)
    macs = sp.macs_arrays(sp.arrays_from_archs(pool))
    got = sp.macs_arrays(sp.arrays_from_archs(picked))
    assert got.min() == macs.min() and got.max() == macs.max()
    assert {a.r for a in picked} == set(sp.lut_resolutions)
    depths = [sum(a.d) for a in picked]
    assert max(depths) - min(depths) >= 8
    # spread, not random: the suggestions cover the MACs range more evenly than random draws
    rng = np.random.default_rng(0)
    edges = np.quantile(macs, np.linspace(0, 1, 6))
    spread = len(np.unique(np.digitize(got, edges[1:-1])))
    rand = np.mean([len(np.unique(np.digitize(macs[rng.choice(len(pool), 5, replace=False)], edges[1:-1])))
                    for _ in range(200)])
    assert spread == 5 and rand < 5


# ---- CLI


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _write_csv(path: Path, archs: list, values: list) -> Path:
    lines = ["arch,latency_ms"] + ['"' + a.to_json().replace('"', '""') + '",' + str(v) for a, v in zip(archs, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_suggest_fit_with_prior_and_predict_intervals(note10: LUTLatency, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    lut_file = tmp_path / "note10.csv"
    note10.lut.save(lut_file)
    code, out, _ = _run(["predictor", "latency", "--space", W12, "--suggest", "12", "--out", str(tmp_path / "s.jsonl"),
                         "--json"], capsys)
    assert code == 0 and len(json.loads(out)["archs"]) == 12
    sp = get_space(W12)
    archs = [sp.parse(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    y = _device(note10, archs, [1.5, 1.2, 1.0, 0.9, 0.7], 1.3, 0.02)
    data = _write_csv(tmp_path / "board.csv", archs, y.tolist())
    code, out, err = _run(["predictor", "latency", "--space", W12, "--data", str(data), "--prior", str(lut_file),
                           "--out", str(tmp_path / "board.json"), "--json"], capsys)
    assert code == 0, err
    fitted = json.loads(out)
    assert fitted["samples"] == 12 and set(fitted["weights"]) <= set(fitted["cv_log_error"])
    assert fitted["model"] in (STACKED, *fitted["weights"])
    test = _archs(W12, 5, 99)
    (tmp_path / "t.jsonl").write_text("".join(a.to_json() + "\n" for a in test))
    code, out, _ = _run(["predictor", "predict", str(tmp_path / "board.json"), "--archs", str(tmp_path / "t.jsonl"),
                         "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert len(res["values"]) == len(res["intervals"]) == 5
    assert all(lo <= v <= hi for v, (lo, hi) in zip(res["values"], res["intervals"]))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"board.csv line 3: 'latency_ms' is missing"),
        ("text", r"board.csv line 4: 'latency_ms' is 'fast', expected a positive number"),
        ("space", r"board.csv line 2: not an arch of space ofa-mbv3-w1.2"),
        ("few", rf"need at least {MIN_SAMPLES} measured architectures to fit, got 3"),
        ("prior", r"prior .*w10.json: a predictor of space ofa-mbv3-w1.0, not ofa-mbv3-w1.2"),
    ],
    ids=["missing-latency", "non-numeric", "other-space-arch", "too-few", "other-space-prior"],
)
def test_cli_bad_input_exits_2_naming_the_row_or_file(case: str, message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    archs = _archs(W12, 8, 2)
    values: list = [5.0 + i for i in range(8)]
    extra: list[str] = []
    if case == "missing":
        values[1] = ""
    elif case == "text":
        values[2] = "fast"
    elif case == "space":
        archs[0] = _archs("compact", 1, 0)[0]
    elif case == "few":
        archs, values = archs[:3], values[:3]
    else:
        other = _archs("ofa-mbv3-w1.0", 8, 2)
        LearnedLatency(space="ofa-mbv3-w1.0").fit(other, values).save(tmp_path / "w10.json")
        extra = ["--prior", str(tmp_path / "w10.json")]
    data = _write_csv(tmp_path / "board.csv", archs, values)
    code, _, err = _run(["predictor", "latency", "--space", W12, "--data", str(data), "--out",
                         str(tmp_path / "p.json"), *extra], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "p.json").exists()


def test_cli_measure_writes_the_csv_the_fit_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real end-to-end measurements with ONNX Runtime on this machine (the `local` profile)."""
    sp = get_space("compact")
    archs = suggest_archs(sp, 6, seed=0)
    (tmp_path / "a.jsonl").write_text("".join(a.to_json() + "\n" for a in archs))
    out_csv = tmp_path / "m.csv"
    code, out, err = _run(["predictor", "measure", "local", "--space", "compact", "--archs", str(tmp_path / "a.jsonl"),
                           "--out", str(out_csv), "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["samples"] == 6 and all(v > 0 for v in res["latency_ms"])
    from hwnas.search.fewshot import read_measurements

    got, ms = read_measurements(out_csv, sp)
    assert got == archs and ms == pytest.approx(res["latency_ms"], rel=1e-5)
    prior = load_prior(out_csv, sp)
    assert prior.kind == "measurements" and prior.data["samples"] == 6


# ---- search that measures where it is unsure (search --validate with a learned predictor)


def test_measure_where_unsure_measures_only_straddling_candidates(note10: LUTLatency) -> None:
    """The device is the Note10 LUT scaled per stage (recorded: a phone cannot be attached here); the
    predictor is fitted on 20 noisy samples of it, so its intervals are some 10% wide."""
    from hwnas.search.closed_loop import Measurement, measure_where_unsure

    sp = get_space(W12)
    train = _archs(W12, 20, 3)
    scales = ([1.4, 1.1, 1.0, 0.8, 0.7], 1.2)
    model = LearnedLatency(space=W12, models=["nnls", "ridge-log"]).fit(train, _device(note10, train, *scales, 0.05))
    pool = _archs(W12, 300, 4)
    macs = np.asarray([sp.macs(a) for a in pool], dtype=float)
    front = [{"arch": a.to_dict(), "accuracy": float(m / macs.max()), "latency_ms": 0.0} for a, m in zip(pool, macs)]
    pred, iv = model.predict_interval(pool)
    budget = float(np.median(pred))
    answer = {"budget_ms": budget, "arch": pool[int(np.argmin(pred))].to_dict(), "predicted_accuracy": 0.0,
              "predicted_latency_ms": float(pred.min())}
    calls: list[list[str]] = []

    def measure(archs: list) -> list[Measurement]:
        calls.append([a.to_json() for a in archs])
        return [Measurement(ms=float(v)) for v in _device(note10, list(archs), *scales, 0.0)]

    out = measure_where_unsure([answer], front, model, measure, space=W12, max_per_budget=len(pool))[0]
    acc = np.asarray([f["accuracy"] for f in front])
    sure = (iv[:, 1] <= budget)
    straddle = (iv[:, 0] <= budget) & (iv[:, 1] > budget)
    best_sure = float(acc[sure].max())
    expected = {pool[i].to_json() for i in np.flatnonzero(straddle & (acc > best_sure))}
    assert len(calls) == 1 and len(expected) >= 3, len(expected)
    assert set(calls[0]) == expected, (len(calls[0]), len(expected))
    assert out["candidates_measured"] == len(expected)
    truth = dict(zip(calls[0], _device(note10, [sp.parse(a) for a in calls[0]], *scales, 0.0)))
    within = [a for a, v in truth.items() if v <= budget]
    chosen = sp.parse(out["arch"]).to_json()
    best = max(within, key=lambda a: acc[[p.to_json() for p in pool].index(a)], default=None)
    if best is not None and acc[[p.to_json() for p in pool].index(best)] > best_sure:
        assert chosen == best and truth[chosen] <= budget
    else:
        assert out["predicted_accuracy"] == pytest.approx(best_sure)
    lo, hi = out["predicted_interval_ms"]
    assert lo <= out["predicted_latency_ms"] <= hi
    # a cap of 2 measures the two most accurate of them
    calls.clear()
    out2 = measure_where_unsure([answer], front, model, measure, space=W12, max_per_budget=2)[0]
    top2 = sorted(expected, key=lambda a: -acc[[p.to_json() for p in pool].index(a)])[:2]
    assert out2["candidates_measured"] == 2 and sorted(calls[0]) == sorted(top2)


def test_search_validate_with_a_learned_predictor_measures_where_unsure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real end to end on this machine (`local` profile, ONNX Runtime): 16 suggested subnets measured, a
    learned predictor fitted on them, then `search --latency-predictor --validate local` at the median
    predicted latency measures the candidates whose interval straddles the budget before choosing."""
    from hwnas.search.accuracy import AccuracyPredictor

    sp = get_space("compact")
    (tmp_path / "a.jsonl").write_text("".join(a.to_json() + "\n" for a in suggest_archs(sp, 16, seed=0)))
    code, _, err = _run(["predictor", "measure", "local", "--space", "compact", "--archs", str(tmp_path / "a.jsonl"),
                         "--out", str(tmp_path / "m.csv")], capsys)
    assert code == 0, err
    code, _, err = _run(["predictor", "latency", "--space", "compact", "--data", str(tmp_path / "m.csv"),
                         "--out", str(tmp_path / "lat.json")], capsys)
    assert code == 0, err
    archs = _archs("compact", 300, 0)
    macs = np.asarray([sp.macs(a) for a in archs], dtype=float)
    acc = AccuracyPredictor(space=sp, hidden_size=32, n_layers=2, epochs=30, seed=0).fit(
        archs, 0.5 + 0.4 * (macs - macs.min()) / (macs.max() - macs.min()))
    acc.save(tmp_path / "acc.pt")
    budget = float(np.median(LearnedLatency.load(tmp_path / "lat.json").predict(archs)))
    code, out, err = _run(["search", "--space", "compact", "--latency-predictor", str(tmp_path / "lat.json"),
                           "--accuracy", str(tmp_path / "acc.pt"), "--latency-ms", f"{budget:.6f}",
                           "--validate", "local", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    r, v = res["results"][0], res["validation"]
    assert v["candidates_measured"] >= 1, "no candidate straddled the budget"
    if r["rounds"] == 1:
        assert v["candidates_measured"] == r["candidates_measured"]
    assert v["subnets_measured"] >= v["candidates_measured"]
    assert r["within_budget"] is True and r["measured_ms"] <= r["budget_ms"] * (1 + (r["measured_ci"] or 0))
    lo, hi = r["predicted_interval_ms"]
    assert lo < hi
