"""benchmarks/_load.py: the load specification, and that its processes never outlive the benchmark.

Real processes throughout: a parent Python process runs a :class:`Load` and is then ended the ways a
benchmark ends (normal exit, exception, SIGINT, SIGTERM, SIGKILL); the test then looks in /proc for
the load's workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netns import read_line  # noqa: E402  (tests/netns.py: a bounded readline)

from benchmarks._load import DEFAULT_LOAD, Load, LoadSpec, under  # noqa: E402


def _alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped by a reaper-less init) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in {"Z", "X"}


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("mem:2x50%@2s,64MiB", LoadSpec("mem", 2, 0.5, 2.0, 64 << 20)),
        ("cpu:2x30%@1s", LoadSpec("cpu", 2, 0.3, 1.0)),
        ("mem:1x100%@500ms,8MiB", LoadSpec("mem", 1, 1.0, 0.5, 8 << 20)),
    ],
)
def test_parse(text: str, want: LoadSpec) -> None:
    spec = LoadSpec.parse(text)
    assert spec == want
    assert LoadSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("gpu:2x50%@2s", "expected KIND:NxSHARE%@PERIOD"),
        ("mem:0x50%@2s", "process count"),
        ("cpu:2x0%@1s", "busy share"),
        ("cpu:2x150%@1s", "busy share"),
        ("cpu:2x50%@1ms", "period"),
        ("cpu:2x50%@1s,64MiB", "mem loads only"),
        ("mem:2x50%@2s,1MiB", "at least 4 MiB"),
    ],
)
def test_parse_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoadSpec.parse(text)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("kind", ["cpu", "mem"])
def test_workers_run_then_stop_with_the_block(kind: str) -> None:
    spec = LoadSpec.parse(f"{kind}:2x100%@200ms" + (",8MiB" if kind == "mem" else ""))
    with Load(spec) as load:
        pids = load.pids
        assert len(pids) == 2
        time.sleep(1.0)
        assert all(_alive(p) for p in pids)
        assert all(_cpu_seconds(p) > 0.05 for p in pids), "the workers did no work"
    assert _wait_gone(pids, 1.0) == []


def test_exception_in_block_stops_workers() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with under(LoadSpec.parse("cpu:1x10%@1s")) as load:
            assert load is not None
            pids = load.pids
            raise RuntimeError("boom")
    assert _wait_gone(pids, 1.0) == []


def test_quiet_setting_starts_nothing() -> None:
    with under(None) as load:
        assert load is None


_PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from benchmarks._load import Load, LoadSpec
with Load(LoadSpec.parse({spec!r})) as load:
    print(" ".join(map(str, load.pids)), flush=True)
    if {how!r} == "exit":
        time.sleep(0.5)
    elif {how!r} == "raise":
        time.sleep(0.5)
        raise SystemExit(3)
    else:
        time.sleep(120)
"""


@pytest.mark.parametrize(
    ("how", "sig"),
    [("exit", None), ("raise", None), ("wait", signal.SIGINT), ("wait", signal.SIGTERM), ("wait", signal.SIGKILL)],
    ids=["normal-exit", "exception", "ctrl-c", "sigterm", "sigkill"],
)
def test_no_worker_outlives_its_parent(how: str, sig: signal.Signals | None) -> None:
    code = _PARENT.format(root=str(ROOT), spec=DEFAULT_LOAD.replace("64MiB", "8MiB"), how=how)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in read_line(parent.stdout, timeout=30, what="the load's parent").split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        if sig is not None:
            time.sleep(0.3)
            parent.send_signal(sig)
        parent.wait(timeout=20)
        assert _wait_gone(pids) == [], f"load workers left running after the parent ended ({how}, {sig})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
