"""Predictors: OFA's arch encoding, OFA's accuracy predictor imported exactly, fitting and plain files,
LUT-sum and learned latency predictors, and the `hwnas predictor` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.cli._app import main
from hwnas.profiler.ofa_interop import import_ofa, ofa_note10_dir
from hwnas.search.accuracy import AccuracyPredictor
from hwnas.search.encoding import ArchEncoding
from hwnas.search.errors import PredictorError
from hwnas.search.latency import LearnedLatency, LUTLatency
from hwnas.supernet import get_space, list_spaces

OFA_NOTE10 = ofa_note10_dir()  # OFA's published Note10 tables and predictor, shipped in the package
OFA_PTH = OFA_NOTE10 / "acc_predictor.pth"


# --------------------------------------------------------------------------------------------------------
# An independent reimplementation of OFA's tutorial code (ofa/tutorial/accuracy_predictor.py), written from
# its source: spec2feats and the nn.Sequential the published acc_predictor.pth belongs to.


def ofa_spec2feats(ks_list: list[int], ex_list: list[int], d_list: list[int], r: int) -> list[float]:
    ks_list, ex_list = list(ks_list), list(ex_list)
    ks_map = {3: 0, 5: 1, 7: 2}
    ex_map = {3: 0, 4: 1, 6: 2}
    start, end = 0, 4
    for d in d_list:
        for j in range(start + d, end):
            ks_list[j] = 0
            ex_list[j] = 0
        start += 4
        end += 4
    ks_onehot = [0] * 60
    ex_onehot = [0] * 60
    r_onehot = [0] * 8
    for i in range(20):
        if ks_list[i] != 0:
            ks_onehot[i * 3 + ks_map[ks_list[i]]] = 1
        if ex_list[i] != 0:
            ex_onehot[i * 3 + ex_map[ex_list[i]]] = 1
    r_onehot[(r - 112) // 16] = 1
    return ks_onehot + ex_onehot + r_onehot


def ofa_model() -> torch.nn.Module:
    model = torch.nn.Sequential(
        torch.nn.Linear(128, 400), torch.nn.ReLU(),
        torch.nn.Linear(400, 400), torch.nn.ReLU(),
        torch.nn.Linear(400, 400), torch.nn.ReLU(),
        torch.nn.Linear(400, 1),
    )
    model.load_state_dict(torch.load(OFA_PTH, map_location="cpu", weights_only=True))
    return model.eval()


def _random_archs(space_name: str, n: int, seed: int = 0) -> list:
    sp = get_space(space_name)
    return sp.archs_from_arrays(sp.sample_arrays(np.random.default_rng(seed), n))


@pytest.fixture(scope="module")
def note10_lut():
    return import_ofa(sorted(OFA_NOTE10.glob("*_lookup_table.yaml")), "ofa-mbv3-w1.2")


# --------------------------------------------------------------------------------------------------------
# Encoding


def test_encoding_equals_ofa_spec2feats() -> None:
    enc = ArchEncoding("ofa-mbv3-w1.2")
    assert enc.n_features == 128
    archs = _random_archs("ofa-mbv3-w1.2", 300)
    ours = enc.encode(archs)
    ref = np.array([ofa_spec2feats(a.ks, a.e, a.d, a.r) for a in archs], dtype=np.float32)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name", list_spaces(), ids=list_spaces())
def test_encoding_is_one_hot_per_active_block(name: str) -> None:
    enc = ArchEncoding(name)
    sp = enc.space
    arrays = sp.sample_arrays(np.random.default_rng(1), 200)
    x = enc.encode_arrays(arrays)
    active = sp.active_mask(arrays["d"]).sum(axis=1)
    np.testing.assert_array_equal(x.sum(axis=1), 2 * active + 1)
    genes = enc.genes(arrays)
    back = enc.arrays(genes)
    for k in ("ks", "e", "d", "r"):
        np.testing.assert_array_equal(back[k], arrays[k])


def test_encoding_rejects_foreign_metadata() -> None:
    enc = ArchEncoding("compact")
    info = ArchEncoding("ofa-mbv3-w1.2").to_dict()
    with pytest.raises(PredictorError, match="encoding field 'space'"):
        enc.check_compatible(info, "x.pt")


# --------------------------------------------------------------------------------------------------------
# Accuracy predictor


def test_ofa_checkpoint_import_equals_ofa_forward() -> None:
    ours = AccuracyPredictor.from_ofa_checkpoint(OFA_PTH)
    archs = _random_archs("ofa-mbv3-w1.2", 500, seed=3)
    feats = torch.tensor([ofa_spec2feats(a.ks, a.e, a.d, a.r) for a in archs], dtype=torch.float32)
    with torch.no_grad():
        ref = ofa_model()(feats).squeeze(1).numpy()
    np.testing.assert_allclose(ours.predict(archs), ref, atol=2e-6, rtol=0)
    assert ours.samples_ is None and ours.kendall_tau_ is None and ours.rmse_ is None


def test_accuracy_save_load_round_trip_is_plain(tmp_path: Path) -> None:
    ours = AccuracyPredictor.from_ofa_checkpoint(OFA_PTH)
    path = ours.save(tmp_path / "acc.pt")
    payload = torch.load(path, weights_only=True)  # plain data: loads without unpickling classes
    assert payload["format"] == "hwnas-accuracy-predictor" and payload["version"] == 1
    assert payload["encoding"]["n_features"] == 128
    back = AccuracyPredictor.load(path, space="ofa-mbv3-w1.2")
    archs = _random_archs("ofa-mbv3-w1.2", 50)
    np.testing.assert_array_equal(back.predict(archs), ours.predict(archs))
    with pytest.raises(PredictorError, match="for space ofa-mbv3-w1.2, not compact"):
        AccuracyPredictor.load(path, space="compact")


def test_accuracy_load_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(PredictorError, match="no such predictor file"):
        AccuracyPredictor.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(PredictorError, match="not a readable predictor file"):
        AccuracyPredictor.load(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(PredictorError, match="not an hwnas accuracy predictor"):
        AccuracyPredictor.load(other)
    with pytest.raises(PredictorError, match="not an OFA accuracy predictor"):
        AccuracyPredictor.from_ofa_checkpoint(other)


def test_accuracy_fit_reports_held_out_metrics() -> None:
    sp = get_space("compact")
    archs = _random_archs("compact", 250, seed=4)
    arrays = sp.arrays_from_archs(archs)
    # a structured target: more/larger blocks and resolution help, with diminishing returns
    macs = sp.macs_arrays(arrays).astype(float)
    top1 = 0.5 + 0.4 * (1 - np.exp(-macs / macs.mean())) + np.random.default_rng(0).normal(0, 0.003, len(archs))
    pred = AccuracyPredictor(space="compact", hidden_size=64, epochs=60, seed=0).fit(archs, top1)
    assert pred.samples_ == 250
    assert pred.kendall_tau_ > 0.6
    assert pred.rmse_ < 0.03
    again = AccuracyPredictor(space="compact", hidden_size=64, epochs=60, seed=0).fit(archs, top1)
    np.testing.assert_array_equal(again.predict(archs[:20]), pred.predict(archs[:20]))
    with pytest.raises(PredictorError, match="fractions"):
        AccuracyPredictor(space="compact").fit(archs[:10], [75.0] * 10)
    with pytest.raises(ValueError, match="The 'hidden_size' parameter of AccuracyPredictor must be an int"):
        AccuracyPredictor(space="compact", hidden_size=0).fit(archs[:10], [0.5] * 10)


def test_accuracy_predictions_stay_in_0_1() -> None:
    """Fitted to top-1 values at 0.99-1.0 (as on easy data), the MLP extrapolates above 1 unless clamped;
    fitted near 0, below it."""
    archs = _random_archs("compact", 60, seed=5)
    rng = np.random.default_rng(1)
    others = _random_archs("compact", 200, seed=6)
    for level in (0.999, 0.001):
        top1 = np.clip(level + rng.normal(0, 0.002, len(archs)), 0, 1)
        pred = AccuracyPredictor(space="compact", hidden_size=64, epochs=80, lr=1e-2, seed=0).fit(archs, top1)
        raw = pred.weights_  # the unclamped MLP: shows the test data does push past the bounds
        h = pred.encoding_.encode(others)
        for w, b in raw[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        unclamped = (h @ raw[-1][0]).reshape(-1) + pred.base_acc_
        assert unclamped.max() > 1.0 or unclamped.min() < 0.0
        values = pred.predict(others)
        assert values.min() >= 0.0 and values.max() <= 1.0


def test_accuracy_predict_throughput() -> None:
    """Not a speed target (those live in benchmarks/): batches of 20k archs go through numpy matmuls."""
    ours = AccuracyPredictor.from_ofa_checkpoint(OFA_PTH)
    sp = get_space("ofa-mbv3-w1.2")
    values = ours.predict_arrays(sp.sample_arrays(np.random.default_rng(0), 20000))
    assert values.shape == (20000,) and np.all((values > 0.5) & (values < 0.9))



def test_accuracy_dataset_jobs_evaluate_side_by_side_with_the_same_top1(tmp_path: Path) -> None:
    """Subnets evaluated several at a time (threads, one-thread kernels) get exactly the top-1 they get one
    after another with one thread; the order, the progress reports and torch's thread count are kept."""
    from hwnas.search.accuracy import generate_accuracy_dataset
    from hwnas.supernet.data import load_dataset
    from hwnas.supernet.elastic import OFASupernet
    from hwnas.supernet.train import Checkpoint, evaluate_arch, save_checkpoint

    torch.manual_seed(0)
    net = OFASupernet("compact")  # untrained: its subnets still differ in what they predict
    ckpt = tmp_path / "compact.pt"
    save_checkpoint(ckpt, Checkpoint(space="compact", state_dict=net.state_dict(), n_classes=10, config={"data": "digits"}))
    kw = {"seed": 3, "bn_images": 64, "resolutions": [32]}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        archs1, top1_seq = generate_accuracy_dataset(ckpt, 6, "digits", jobs=1, **kw)
    finally:
        torch.set_num_threads(before)
    seen: list[tuple[int, int]] = []
    archs3, top1_par = generate_accuracy_dataset(ckpt, 6, "digits", jobs=3, on_progress=lambda d, t, _w: seen.append((d, t)), **kw)
    assert torch.get_num_threads() == before
    assert archs3 == archs1 and len(set(archs1)) == 6
    assert top1_par == top1_seq and len(set(top1_seq)) > 1, top1_seq
    assert seen == [(i, 6) for i in range(1, 7)]
    # the same number the supernet package's evaluation of one subnet gives
    train = load_dataset("digits", resolution=32, split="train")
    val = load_dataset("digits", resolution=32, split="val")
    torch.set_num_threads(1)
    try:
        direct = evaluate_arch(net.eval(), archs1[4], train=train, val=val, bn_images=64, seed=3)
    finally:
        torch.set_num_threads(before)
    assert direct == top1_par[4]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(PredictorError, match="jobs must be an int >= 1"):
            generate_accuracy_dataset(ckpt, 6, "digits", jobs=bad, **kw)  # type: ignore[arg-type]

# --------------------------------------------------------------------------------------------------------
# Latency predictors


def test_lut_latency_matches_profiler(note10_lut) -> None:
    from hwnas.profiler.predict import LUTPredictor

    lat = LUTLatency(note10_lut)
    enc = ArchEncoding(lat.space, resolutions=lat.resolutions)
    genes = enc.sample(np.random.default_rng(0), 2000)
    arrays = enc.arrays(genes)
    ref = LUTPredictor(note10_lut).predict_arrays(arrays)
    np.testing.assert_allclose(lat.predict_genes(genes, enc), ref, rtol=1e-12)
    np.testing.assert_allclose(lat.predict_arrays(arrays), ref, rtol=1e-12)


def _device_like(lat: LUTLatency, enc: ArchEncoding, genes, rng, noise: float) -> np.ndarray:
    """A synthetic-but-structured device: the Note10 LUT sum with stage-dependent speed-ups, a slower fixed
    part, and multiplicative measurement noise."""
    block, fixed = lat.block_table(enc)
    ri = genes.r.astype(int)
    scale = np.repeat(np.array([1.5, 1.25, 1.0, 0.85, 0.7]), 4)
    vals = block[ri[:, None], np.arange(20)[None, :], genes.ks, genes.e] * scale[None, :]
    y = 1.2 * fixed[ri] + np.where(enc.active(genes), vals, 0.0).sum(axis=1)
    return y * (1 + rng.normal(0, noise, len(y)))


@pytest.mark.parametrize("reference", [False, True], ids=["no-prior", "lut-prior"])
def test_learned_latency_with_50_samples(note10_lut, reference: bool, tmp_path: Path) -> None:
    from scipy.stats import spearmanr

    lut_lat = LUTLatency(note10_lut)
    sp = lut_lat.space
    enc = ArchEncoding(sp, resolutions=lut_lat.resolutions)
    rng = np.random.default_rng(0)
    train, test = enc.sample(rng, 50), enc.sample(rng, 500)
    y_train = _device_like(lut_lat, enc, train, rng, 0.03)
    y_test = _device_like(lut_lat, enc, test, rng, 0.0)
    from hwnas.search.fewshot import lut_prior

    priors = [lut_prior(note10_lut, sp, source="note10")] if reference else []
    model = LearnedLatency(space=sp, priors=priors, seed=0)
    model.fit(sp.archs_from_arrays(enc.arrays(train)), y_train)
    pred = model.predict_arrays(enc.arrays(test))
    assert spearmanr(pred, y_test).statistic > 0.9
    assert np.mean(np.abs(pred / y_test - 1) <= 0.10) > 0.9
    assert model.spearman_ is not None and model.within_10pct_ is not None
    path = model.save(tmp_path / "lat.json")
    data = json.loads(path.read_text())
    assert data["format"] == "hwnas-latency-predictor" and data["model"] == model.model_
    assert len(data["samples"]) == 50 and len(data["priors"]) == len(priors)
    back = LearnedLatency.load(path)  # the prior travels inside the file
    np.testing.assert_allclose(back.predict_arrays(enc.arrays(test)), pred, rtol=1e-12)


def test_learned_latency_rejects_bad_data() -> None:
    archs = _random_archs("compact", 10)
    with pytest.raises(PredictorError, match="positive"):
        LearnedLatency(space="compact").fit(archs, [1.0] * 9 + [-1.0])
    with pytest.raises(PredictorError, match="10 architectures but 9 latencies"):
        LearnedLatency(space="compact").fit(archs, [1.0] * 9)
    with pytest.raises(ValueError, match="The 'level' parameter of LearnedLatency"):
        LearnedLatency(space="compact", level=1.5).fit(archs, [1.0] * 10)


# --------------------------------------------------------------------------------------------------------
# CLI


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_predictor_accuracy_import_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "acc.pt"
    code, out, _ = _run(["predictor", "accuracy", "--ofa-checkpoint", str(OFA_PTH), "--out", str(out_file), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["samples"] is None and data["kendall_tau"] is None and data["rmse"] is None
    archs = _random_archs("ofa-mbv3-w1.2", 5)
    jsonl = tmp_path / "archs.jsonl"
    jsonl.write_text("".join(a.to_json() + "\n" for a in archs))
    code, out, _ = _run(["predictor", "predict", str(out_file), "--archs", str(jsonl), "--json"], capsys)
    assert code == 0
    values = json.loads(out)["values"]
    feats = torch.tensor([ofa_spec2feats(a.ks, a.e, a.d, a.r) for a in archs], dtype=torch.float32)
    with torch.no_grad():
        ref = ofa_model()(feats).squeeze(1).numpy()
    np.testing.assert_allclose(values, ref, atol=2e-6)


def test_cli_predictor_latency_fit_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sp = get_space("compact")
    archs = _random_archs("compact", 60, seed=2)
    ms = sp.macs_arrays(sp.arrays_from_archs(archs)) / 1e6 * 0.8 + 0.3
    csv = tmp_path / "measured.csv"
    csv.write_text("arch,latency_ms\n" + "".join(f"\"{a.to_json().replace(chr(34), chr(34) * 2)}\",{m}\n" for a, m in zip(archs, ms)))
    model = tmp_path / "lat.json"
    code, out, _ = _run(["predictor", "latency", "--space", "compact", "--data", str(csv), "--out", str(model), "--json"], capsys)
    assert code == 0, out
    data = json.loads(out)
    # latency exactly linear in MACs: cross-validation picks the MACs model
    assert data["samples"] == 60 and data["model"] == "macs-linear" and data["spearman"] > 0.9
    jsonl = tmp_path / "archs.jsonl"
    jsonl.write_text("".join(a.to_json() + "\n" for a in archs[:3]))
    code, out, _ = _run(["predictor", "predict", str(model), "--archs", str(jsonl), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["kind"] == "latency"
    np.testing.assert_allclose(json.loads(out)["values"], ms[:3], rtol=0.1)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["predictor", "predict", "{tmp}/missing.pt", "--archs", "{tmp}/a.jsonl"], "no such predictor file"),
        (["predictor", "latency", "--space", "compact", "--data", "{tmp}/missing.csv", "--out", "{tmp}/x.json"], "no such file"),
        (["predictor", "accuracy", "--out", "{tmp}/x.pt"], "exactly one of"),
        (["predictor", "accuracy", "--ofa-checkpoint", "{tmp}/junk.pt", "--out", "{tmp}/x.pt"], "not a readable predictor file"),
    ],
    ids=["predict-missing", "latency-missing-data", "accuracy-no-source", "accuracy-junk"],
)
def test_cli_predictor_bad_input_exits_2(argv: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.pt").write_bytes(b"junk")
    (tmp_path / "a.jsonl").write_text("{}\n")
    code, _, err = _run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1
