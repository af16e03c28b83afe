"""`hwnas demo` end to end at a small scale, and its report checked as a person would see it:
rendered by a real headless Chromium (Debian `chromium`, installed by the test when missing).

Small settings (a short supernet schedule, few predictor samples) keep it to a few minutes;
the full-size demo's timings are in BENCHMARKS.md.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import netns  # tests/netns.py (conftest puts tests/ on sys.path)
import pytest

pytestmark = pytest.mark.slow


def _demo_args(out: Path) -> list[str]:
    """A small demo. ``--max-wait 0``: beside the suite's other worker the noise gate would wait its 15 s
    before each measurement and then measure anyway."""
    return [sys.executable, "-m", "hwnas", "demo", "--out", str(out), "--epochs-scale", "0.03",
            "--accuracy-samples", "12", "--validate-samples", "3", "--max-wait", "0", "--json"]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "demo-cache")}
    proc = subprocess.run(_demo_args(out), capture_output=True, text=True, timeout=800, env=env)
    # exit 0: every budget met as measured (the closed loop searches an over-budget one again, tighter)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout)


def test_summary_has_the_design_fields(demo_out: tuple[Path, dict]) -> None:
    out, result = demo_out
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert len(summary["budgets"]) == 3 and summary["infeasible"] == []
    for b in summary["budgets"]:
        assert {"budget_ms", "arch", "predicted_ms", "measured_ms", "top1"} <= set(b)
        assert b["predicted_ms"] <= b["budget_ms"] + 1e-9  # the search honours the budget
        # measured on the device within its budget (up to the measurement's own confidence interval)
        assert b["within_budget"] is True
        assert b["measured_ms"] <= b["budget_ms"] * (1 + (b.get("measured_ci") or 0.0)) + 1e-9
        assert 0.0 <= b["top1"] <= 1.0 and 0.0 <= b["predicted_accuracy"] <= 1.0
        for fmt in ("onnx", "tflite"):
            assert Path(b["files"][fmt]["file"]).stat().st_size > 1000, fmt
    budgets = [b["budget_ms"] for b in summary["budgets"]]
    assert budgets == sorted(budgets) and len(set(budgets)) == 3
    # three budgets, three different subnets
    assert len({json.dumps(b["arch"], sort_keys=True) for b in summary["budgets"]}) == 3
    assert summary["data"] == "digits-hard"
    assert set(summary["step_seconds"]) >= {"profile", "train", "accuracy", "search", "export"}
    assert result["report"] == str(out / "report")
    from hwnas.profiler.lut import LUT

    lut = LUT.load(summary["lut"])  # --max-wait reached the measurements
    assert lut.metadata["measurement"]["max_wait_s"] == 0


def test_second_run_reuses_every_step(demo_out: tuple[Path, dict]) -> None:
    out, _ = demo_out
    env = {**os.environ, "HWNAS_CACHE_DIR": str(out.parent.parent / "demo-cache")}  # the first run's
    proc = subprocess.run(_demo_args(out), capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads(proc.stdout)
    assert set(again["cached_steps"]) >= {"profile", "validate", "train", "accuracy", "search", "export"}


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    proc = subprocess.run([sys.executable, "-m", "hwnas", "demo", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--force" in proc.stderr and proc.stderr.count("\n") == 1
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def _chromium() -> str:
    try:
        return netns.ensure_system_package("chromium", "chromium")
    except RuntimeError as exc:
        pytest.skip(f"headless Chromium not available: {exc}")


@pytest.mark.browser
def test_report_renders_in_chromium_with_every_plot(demo_out: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo_out
    page = out / "report" / "report.html"
    chromium = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    summary = json.loads((out / "report" / "summary.json").read_text())
    # the tables a person reads: the device as rows of fields, one row per budget with its figures
    device = re.search(r'<table class="device">(.*?)</table>', dom.stdout, re.S)
    assert device and device.group(1).count("<tr>") >= 2, "the device table is missing"
    assert "{" not in re.sub(r"<[^>]+>", "", device.group(1)), "the device is shown as raw JSON"
    budgets = re.search(r'<table class="budgets">(.*?)</table>', dom.stdout, re.S)
    assert budgets, "the budget table is missing"
    rows = re.findall(r"<tr>(.*?)</tr>", budgets.group(1), re.S)[1:]
    assert len(rows) == len(summary["budgets"]) == 3
    for row, b in zip(rows, summary["budgets"]):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        assert cells[0] == f"{b['budget_ms']:.3f}" and cells[2] == f"{b['measured_ms']:.3f}" and cells[3] == "yes"
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', dom.stdout)
    names = {name for name, _ in images}
    assert names >= {"lut_heatmap", "predicted_vs_measured", "pareto", "accuracy_per_budget", "training_curves"}
    for name, data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name  # a real plot, not an empty image
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image  # matplotlib brings Pillow

    img = Image.open(shot).convert("L")
    colours = img.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the rendered page is blank"
