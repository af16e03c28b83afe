"""A reproducible load beside a measurement: N processes, each busy for a share of every period.

    --load cpu:2x30%@1s          2 processes spinning the CPU for 0.3 s of every 1 s
    --load mem:2x50%@2s,64MiB    2 processes copying a 64 MiB buffer for 1 s of every 2 s
    --load none                  no loaded row

``cpu`` spins the interpreter; ``mem`` copies between two buffers of the given size in 4 MiB
chunks, which eats memory bandwidth and evicts the caches the measured model runs from. All
processes share one phase (their periods start at the same CLOCK_MONOTONIC instant), so "2
processes for half of every 2 s" means both cores are taken for that half: the worst case for a
statistic computed over a window shorter than the period, and the same every time it is run.

:class:`Load` is a context manager. Its processes stop when the benchmark stops, however it ends:
leaving the ``with`` block (normally, by an exception or Ctrl-C) terminates and reaps them; when
the parent dies without running its ``finally`` (SIGTERM's default action, SIGKILL, a crash) the
kernel sends each worker SIGKILL (``PR_SET_PDEATHSIG``, set by the worker itself through ctypes),
and every worker also exits as soon as its parent pid changes (the check that closes the window
between fork and ``prctl``, and the fallback off Linux). The worker is this file run as a script:
standard library only, so it starts in tens of milliseconds and measures nothing of ours.

Every latency benchmark takes ``--load`` through :func:`add_load_arguments` and runs its
measurement once per :func:`settings` entry: a quiet row, then a loaded row.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: The loaded setting every latency benchmark reports unless told otherwise (issue 13).
DEFAULT_LOAD = "mem:2x50%@2s,64MiB"

_SPEC = re.compile(
    r"^(?P<kind>cpu|mem):(?P<procs>\d+)x(?P<share>\d+(?:\.\d+)?)%@(?P<period>\d+(?:\.\d+)?)(?P<unit>ms|s)"
    r"(?:,(?P<size>\d+)(?P<sunit>KiB|MiB|GiB))?$"
)
_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_CHUNK = 4 << 20
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LoadSpec:
    """What runs beside the measurement: ``procs`` processes of ``kind``, busy ``share`` of each ``period_s``."""

    kind: str
    procs: int
    share: float
    period_s: float
    buffer_bytes: int = 64 << 20

    @classmethod
    def parse(cls, text: str) -> LoadSpec:
        """``KIND:NxSHARE%@PERIOD[,SIZE]``; raises ``ValueError`` saying what was expected."""
        m = _SPEC.match(text.strip())
        if not m:
            raise ValueError(
                f"load {text!r}: expected KIND:NxSHARE%@PERIOD[,SIZE], e.g. {DEFAULT_LOAD} or cpu:2x30%@1s "
                "(KIND cpu or mem, PERIOD in s or ms, SIZE in KiB, MiB or GiB)"
            )
        procs, share = int(m["procs"]), float(m["share"]) / 100
        period = float(m["period"]) / (1000 if m["unit"] == "ms" else 1)
        if not 1 <= procs <= 64:
            raise ValueError(f"load {text!r}: the process count must be in [1, 64], got {procs}")
        if not 0 < share <= 1:
            raise ValueError(f"load {text!r}: the busy share must be in (0, 100]%, got {m['share']}%")
        if period < 0.01:
            raise ValueError(f"load {text!r}: the period must be at least 10 ms, got {period * 1000:g} ms")
        if m["size"] and m["kind"] != "mem":
            raise ValueError(f"load {text!r}: a buffer size is for mem loads only")
        size = int(m["size"]) * _UNITS[m["sunit"]] if m["size"] else 64 << 20
        if m["kind"] == "mem" and size < _CHUNK:
            raise ValueError(f"load {text!r}: the buffer must be at least 4 MiB")
        return cls(kind=m["kind"], procs=procs, share=share, period_s=period, buffer_bytes=size)

    def __str__(self) -> str:
        size = f",{self.buffer_bytes >> 20}MiB" if self.kind == "mem" else ""
        return f"{self.kind}:{self.procs}x{self.share * 100:g}%@{self.period_s:g}s{size}"

    def describe(self) -> str:
        what = "spinning the CPU" if self.kind == "cpu" else f"copying a {self.buffer_bytes >> 20} MiB buffer"
        return (f"{self.procs} process(es) {what} for {self.share:.0%} of every {self.period_s:g} s "
                f"(`--load {self}`)")


class Load:
    """Context manager running a :class:`LoadSpec`'s worker processes; ``pids`` lists them while it runs."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def start(self) -> Load:
        s = self.spec
        phase = time.monotonic() + 0.05
        argv = [sys.executable, "-S", str(Path(__file__).resolve()), "--worker", s.kind, repr(s.share),
                repr(s.period_s), str(s.buffer_bytes), repr(phase), str(os.getpid())]
        try:
            for _ in range(s.procs):
                self._procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def under(spec: LoadSpec | None) -> Iterator[Load | None]:
    """Run the block under ``spec`` (nothing when ``None``: the quiet setting)."""
    if spec is None:
        yield None
        return
    with Load(spec) as load:
        time.sleep(0.1)  # let the workers reach their first busy phase
        yield load


def _parse_arg(text: str) -> LoadSpec | None:
    if text.strip().lower() == "none":
        return None
    try:
        return LoadSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_load_arguments(ap: argparse.ArgumentParser) -> None:
    """``--load SPEC`` (default :data:`DEFAULT_LOAD`; ``none``: quiet row only) and ``--no-quiet``."""
    ap.add_argument("--load", type=_parse_arg, default=LoadSpec.parse(DEFAULT_LOAD), metavar="SPEC",
                    help=f"the loaded row's load, KIND:NxSHARE%%@PERIOD[,SIZE] (default {DEFAULT_LOAD.replace('%', '%%')}; none: no loaded row)")
    ap.add_argument("--no-quiet", action="store_true", help="leave out the quiet row")


def settings(args: argparse.Namespace) -> list[tuple[str, LoadSpec | None]]:
    """The settings a benchmark measures under, in order: ``("quiet", None)`` and ``("loaded", spec)``."""
    out: list[tuple[str, LoadSpec | None]] = []
    if not args.no_quiet:
        out.append(("quiet", None))
    if args.load is not None:
        out.append(("loaded", args.load))
    if not out:
        raise SystemExit("nothing to measure: --no-quiet with --load none")
    return out


def describe_settings(args: argparse.Namespace) -> str:
    rows = [f"- {name}: " + ("no load of ours (the machine's neighbours only)" if spec is None else spec.describe())
            for name, spec in settings(args)]
    return "Settings:\n" + "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------------------------------
# the worker (this file run as a script; standard library only)


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid check below still ends the worker
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _worker(kind: str, share: float, period: float, size: int, phase: float, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, whose exit stops us
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    size = max(_CHUNK, size // _CHUNK * _CHUNK)
    if kind == "mem":
        src, dst = bytearray(os.urandom(_CHUNK)) * (size // _CHUNK), bytearray(size)
        view_src, view_dst = memoryview(src), memoryview(dst)
    busy = share * period
    offset = 0
    while True:
        now = time.monotonic()
        start = phase + max(0, (now - phase) // period) * period
        if now >= start + busy:
            start += period
        time.sleep(max(0.0, start - time.monotonic()))
        if os.getppid() != parent:
            os._exit(0)
        end = start + busy
        while time.monotonic() < end:
            if kind == "mem":
                view_dst[offset:offset + _CHUNK] = view_src[offset:offset + _CHUNK]
                offset = (offset + _CHUNK) % size
            else:
                for _ in range(2000):
                    pass


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "--worker":
    _worker(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]))
