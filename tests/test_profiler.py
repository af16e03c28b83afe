"""The profiler on the local CPU, for real: ONNX Runtime measures every model (no mocked timings).

Small settings (compact space, one resolution, few runs) keep it quick; the fidelity
targets are benchmarks (benchmarks/bench_fidelity.py), not tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas.agents.measure_settings import MeasureSettings
from hwnas.agents.profiles import load_profile
from hwnas.profiler.lut import LUT, OVERHEAD_KEY
from hwnas.profiler.predict import LUTPredictor
from hwnas.profiler.profile import LUT_STATISTIC, ProfileRequest, profile_device
from hwnas.profiler.validate import validate_lut
from hwnas.supernet import get_space

# few runs, a loose precision target, a short cap per entry, no waiting for a quiet spell
FAST = MeasureSettings(rounds=2, runs=3, warmup=2, batch_size=24, min_seconds=0, precision=0.05, max_entry_s=0.5,
                       max_wait_s=0)
QUICK_FLAGS = ("--precision", "0.05", "--max-entry-s", "0.5", "--max-wait", "0")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # one workload cache for the whole session, never the user's
    cache = tmp_path_factory.getbasetemp() / "workload-cache"
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def compact_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["HWNAS_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "workload-cache")
    out = tmp_path_factory.mktemp("lut") / "compact.csv"
    res = profile_device(
        load_profile("local"),
        ProfileRequest(space="compact", resolutions=(32,), out=out, plan=FAST, calibration_subnets=4),
    )
    assert res["measured"] == res["entries"]
    return out


def hwnas(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def test_lut_holds_every_entry_of_the_space(compact_lut: Path) -> None:
    lut = LUT.load(compact_lut)
    space = get_space("compact")
    expected = {(e.key, e.resolution) for e in space.all_lut_entries([32])} | {(OVERHEAD_KEY, 32)}
    assert set(lut.keys()) == expected
    rows = lut.rows
    for col in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "min_ms", "ref_ms", LUT_STATISTIC):
        assert np.isfinite(rows[col].astype(float)).all(), col
    entries = rows[rows["key"] != OVERHEAD_KEY]
    assert (entries["p10_ms"] <= entries["median_ms"]).all() and (entries["median_ms"] <= entries["p90_ms"]).all()
    assert (entries["min_ms"] > 0).all()
    assert (rows["runs"] >= FAST.runs).all()
    # bigger blocks cost more: the largest expanded_conv of a stage is slower than its smallest
    convs = entries[entries["op"] == "expanded_conv"]
    assert convs["p10_ms"].max() > 2 * convs["p10_ms"].min()
    # pandas reads the rows directly, as DESIGN.md promises
    df = pd.read_csv(compact_lut, comment="#")
    assert len(df) == len(lut)


def test_metadata_records_what_was_measured(compact_lut: Path) -> None:
    meta = LUT.load(compact_lut).metadata
    assert meta["space"] == "compact" and meta["resolutions"] == [32]
    assert meta["statistic"] == LUT_STATISTIC
    assert meta["runtime"]["name"] == "onnxruntime"
    import onnxruntime

    assert meta["runtime"]["version"] == onnxruntime.__version__
    assert meta["exporter"]["opset"] == 17
    assert meta["dtype"] == "float32" and meta["batch"] == 1 and meta["threads"] == 1
    assert meta["reference"]["ms"] > 0
    cal = meta["calibration"]["32"]
    assert cal["subnets"] == 4 and cal["a"] > 0
    # the calibration subnets as measured: a validation measures some of them again to learn the drift
    assert len(cal["networks"]) == 4 and all(n["ms"] > 0 for n in cal["networks"])
    assert {get_space("compact").parse(n["arch"], resolutions=[32]).r for n in cal["networks"]} == {32}
    assert meta["device"]["name"] == "local"


def test_prediction_is_the_sum_of_the_statistic_column(compact_lut: Path) -> None:
    lut = LUT.load(compact_lut)
    space = get_space("compact")
    arch = space.sample(np.random.default_rng(3), [32])
    values = lut.values(LUT_STATISTIC)
    by_hand = sum(values[(e.key, 32)] for e in space.lut_entries(arch)) + values[(OVERHEAD_KEY, 32)]
    assert LUTPredictor(lut).predict([arch])[0] == pytest.approx(by_hand, rel=1e-12)


def test_validate_reports_the_design_fields(compact_lut: Path) -> None:
    res = validate_lut(load_profile("local"), LUT.load(compact_lut), samples=4, seed=1, plan=FAST)
    assert res["samples"] == 4 and len(res["points"]) == 4
    for k in ("within_5pct", "within_10pct", "mape"):
        assert 0.0 <= res[k] <= 1.0 or k == "mape"
    assert res["drift"] > 0
    # two interleaved passes: how far re-measuring moves, and the device's noise when validated
    assert 0.0 <= res["repeat_mape"] < 0.5 and res["lut_error_above_repeat"] == (res["mape"] > res["repeat_mape"])
    assert res["noise_floor"] is None or res["noise_floor"] >= 0.0
    assert res["measurement"]["passes"] == 2 and res["measurement"]["precision"] == FAST.precision
    for p in res["points"]:
        get_space("compact").parse(p["arch"], resolutions=[32])
        assert p["predicted_ms"] > 0 and p["measured_ms"] > 0
        # a LUT of the same machine predicts the right order of magnitude even on a busy machine
        assert 0.5 < p["predicted_ms"] / p["measured_ms"] < 2.0


def test_validation_takes_the_drift_from_the_luts_anchors_not_the_reference_alone(compact_lut: Path, tmp_path: Path) -> None:
    # A LUT whose reference workload ran 1.5x slow while it was profiled (one ONNX Runtime session in a slow
    # mode, as seen on shared hosts): the reference's ratio alone would scale every measured subnet by 1/1.5.
    lut = LUT.load(compact_lut)
    lut.metadata["reference"]["ms"] *= 1.5
    lut.save(tmp_path / "slow-reference.csv")
    res = validate_lut(load_profile("local"), LUT.load(tmp_path / "slow-reference.csv"), samples=4, seed=2, plan=FAST)
    assert res["drift_source"] == "anchors" and res["anchors"] == 4 == len(res["anchor_ratios"])
    assert res["drift"] == pytest.approx(float(np.median(res["anchor_ratios"])))
    predicted = np.array([p["predicted_ms"] for p in res["points"]])
    measured = np.array([p["measured_ms"] for p in res["points"]])
    by_anchors = abs(float(np.median(np.log(measured / predicted))))
    by_reference = abs(float(np.median(np.log(measured * res["drift"] / res["drift_reference"] / predicted))))
    assert by_reference > 0.2 and by_anchors < by_reference, (by_anchors, by_reference)


def test_anchors_are_spread_over_the_calibration_subnets_and_bad_ones_are_named(compact_lut: Path) -> None:
    from hwnas.profiler.errors import LUTError
    from hwnas.profiler.validate import lut_anchors

    lut = LUT.load(compact_lut)
    nets = lut.metadata["calibration"]["32"]["networks"]
    picked = lut_anchors(lut, 2)
    values = sorted(n["ms"] for n in nets)
    assert [ms for _, ms in picked] == [values[0], values[-1]]  # the fastest and the slowest of them
    assert len(lut_anchors(lut, 99)) == 4 and lut_anchors(lut, 0) == []
    nets[1]["ms"] = -2.0
    with pytest.raises(LUTError, match=r"'calibration\.32\.networks'\[1\]\.ms is -2\.0; expected a number > 0"):
        lut_anchors(lut)
    nets[1]["ms"] = 1.0
    nets[2]["arch"] = '{"ks": [9]}'
    with pytest.raises(LUTError, match=r"'calibration\.32\.networks'\[2\]\.arch: arch field"):
        lut_anchors(lut)
    del lut.metadata["calibration"]["32"]["networks"]  # a LUT from before anchors: the reference alone
    assert lut_anchors(lut) == []


def test_validate_cli_json(compact_lut: Path) -> None:
    proc = hwnas("lut", "validate", "local", "--lut", str(compact_lut), "--samples", "3", *QUICK_FLAGS, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"samples", "within_5pct", "within_10pct", "mape", "spearman", "points", "repeat_mape", "noise_floor"} <= set(out)
    human = hwnas("lut", "validate", "local", "--lut", str(compact_lut), "--samples", "2", *QUICK_FLAGS)
    assert human.returncode == 0, human.stderr
    text = " ".join(human.stdout.split())  # the console wraps long lines
    assert "(repeat MAPE)" in text and "what re-measuring gives" in text and "noise floor" in text


def _measured_cells(path: Path) -> list[str]:
    """Data rows without the derived lut_ms column (the calibration refits it when a LUT completes)."""
    df = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    return [",".join(r) for r in df.drop(columns=[LUT_STATISTIC]).itertuples(index=False)]


def test_killed_profile_resumes_without_losing_rows(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    args = [sys.executable, "-m", "hwnas", "profile", "local", "--space", "compact", "--resolutions", "32",
            "--out", str(out), "--runs", "3", "--rounds", "2", *QUICK_FLAGS, "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
                            start_new_session=True)
    deadline = time.time() + 240
    rows_before = 0
    while time.time() < deadline:
        if out.exists():
            rows_before = sum(1 for line in out.read_text().splitlines() if line and not line.startswith("#")) - 1
            if rows_before >= 10:
                break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 10 <= rows_before < 80, "the profile should be killed half-way"
    # a crash may leave a torn last line: simulate one
    with open(out, "a") as fh:
        fh.write("expanded_conv-input:16x16x16-output:8x8x2")
    before = LUT.load(out) if False else None  # the torn file is only readable through the writer's resume
    del before
    kept = [line for line in out.read_text().splitlines() if line and not line.startswith("#")][1:-1]
    res = hwnas("profile", "local", "--space", "compact", "--resolutions", "32", "--out", str(out),
                "--runs", "3", "--rounds", "2", *QUICK_FLAGS, "--resume", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["resumed"] == len(kept) and info["measured"] + info["resumed"] == info["entries"] == 79
    lut = LUT.load(out)
    assert len(set(lut.keys())) == len(lut) == 79
    # every row measured before the kill is kept, its measured values byte-identical
    after = _measured_cells(out)
    for line in kept:
        cells = line.split(",")
        header = [c for c in pd.read_csv(out, comment="#", nrows=0).columns]
        idx = header.index(LUT_STATISTIC)
        assert ",".join(cells[:idx] + cells[idx + 1 :]) in after


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    cases = [
        ["profile", "local", "--space", "compactt"],
        ["profile", "local", "--space", "compact", "--resolutions", "31"],
        ["profile", "local", "--space", "compact", "--resolutions", "a,b"],
        ["profile", "nosuchdevice", "--space", "compact"],
        ["profile", "local", "--space", "compact", "--out", str(tmp_path / "missing" / "x.csv")],
        ["lut", "validate", "local", "--lut", str(tmp_path / "none.csv")],
    ]
    for args in cases:
        proc = hwnas(*args, "--json")
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("hwnas: error") or "Error" in line]
        assert len(lines) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""
