"""A benchmark program's mean that came from a run with outliers is flagged in the LUT (``outliers``) and
shown by ``hwnas lut show``.

No ``onnxruntime_perf_test`` binary exists for this machine: the profile runs ``tests/standin_benchmark.py``,
which prints a recorded real output of the program (``tests/fixtures/ort_perf_test_android_pixel6_cpu_1t_resnet18.txt``)
with its ``Max Latency`` line raised to 220 ms, more than 10x its 19.8 ms minimum. Everything else is real:
the workloads are exported, the device is local, the LUT is written and read back by the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.agents.profiles import parse_profile
from hwnas.profiler.lut import LUT, measure_cells
from hwnas.profiler.profile import ProfileRequest, profile_device

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin_benchmark.py"
ORT_FIXTURE = HERE / "fixtures" / "ort_perf_test_android_pixel6_cpu_1t_resnet18.txt"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "workload-cache"))


def test_a_runners_row_is_not_flagged() -> None:
    assert measure_cells({"ci": 0.01, "converged": True})["outliers"] == "false"
    assert measure_cells({"ci": None, "converged": False, "outliers": True})["outliers"] == "true"


def test_a_mean_from_a_run_with_outliers_is_flagged_in_the_lut_and_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    text = ORT_FIXTURE.read_text()
    assert "Max Latency: 0.0202704 s" in text and "Min Latency: 0.0197812 s" in text
    fixture = tmp_path / "ort_outliers.txt"
    fixture.write_text(text.replace("Max Latency: 0.0202704 s", "Max Latency: 0.2202704 s"))
    monkeypatch.setenv("HWNAS_STANDIN_FIXTURE", str(fixture))
    profile = parse_profile(
        {
            "name": "standin",
            "transport": {"local": {}},
            "runtime": "onnxruntime-perf-test",
            "benchmark_binary": str(STANDIN),
            "workdir": str(tmp_path / "work"),
            "measure": {"warmup": 0, "runs": 1, "rounds": 1, "min_seconds": 0, "max_wait_s": 0},
        },
        source="test",
    )
    out = tmp_path / "lut.csv"
    with caplog.at_level(logging.WARNING):
        res = profile_device(profile, ProfileRequest(space="compact", resolutions=(32,), out=out, calibration_subnets=2))
    lut = LUT.load(out)
    assert res["measured"] == len(lut) > 0
    assert (lut.rows["outliers"] == "true").all()
    assert (lut.rows["max_ms"].astype(float) > 10 * lut.rows["min_ms"].astype(float)).all()
    assert "max 220.3 ms > 10x min 19.78 ms" in caplog.text

    env = {**os.environ, "COLUMNS": "400"}
    shown = subprocess.run([sys.executable, "-m", "hwnas", "lut", "show", str(out), "--json"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["rows"]
    assert len(rows) == len(lut) and {r["outliers"] for r in rows} == {"true"}
    human = subprocess.run([sys.executable, "-m", "hwnas", "lut", "show", str(out)],
                           capture_output=True, text=True, timeout=120, env=env)
    assert human.returncode == 0, human.stderr
    assert f"{len(lut)} of {len(lut)} rows are flagged 'outliers'" in " ".join(human.stdout.split())
