"""The device's noise floor, and a gate that waits for a quieter spell before measuring.

The reference workload is timed back to back for a couple of seconds on the device; the samples are cut
into short windows (by their cumulative time), and the *noise floor* is the spread of the statistic
between windows: ``(max - min) / median`` of the per-window values, a fraction. Whatever a profile or a
validation does, it cannot measure one model more steadily than that; it goes into the LUT metadata and
the validation's JSON (``noise_floor``).

The gate (:func:`noise_gate`), like the thermal gate, measures it, and while it is above
``MeasureSettings.max_noise`` waits by measuring on, :data:`RETRY_WINDOWS` windows at a time, judging the
latest :data:`WINDOWS` windows (a rolling 2 s), up to ``max_wait_s``; then it goes on with a warning that
names the figure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..agents import runtimes
from ..agents.device import Device, ModelFile
from ..agents.measure_settings import MeasureSettings
from ..agents.profiles import DeviceProfile
from .measure import raw_statistic
from .workloads import Workload, WorkloadBuilder

log = logging.getLogger(__name__)

#: 4 windows of 0.5 s: the statistic of a window of 0.25 s (the reference's p10 from ~60 runs) moved by itself
#: enough that 8 such windows spread 3-7% on this machine with nothing of ours running, and the gate (5%)
#: waited in half of the quiet profiles (BENCHMARKS.md, "Profiling cost"); twice the runs per window and half
#: the windows roughly halve that sampling spread for the same 2 s, and a load that comes and goes within
#: a few seconds still shows.
WINDOWS = 4
WINDOW_S = 0.5
#: windows measured per retry while the gate waits. Before, each retry paused 1 s and measured all 4 windows
#: afresh (3.4 s with the runner's start); on a host whose speed changes within seconds the gate then spent
#: 5.9-12.7 s of a 16-28 s profile waiting in 3 of 5 quiet-setting runs (bench_cost, BENCHMARKS.md). Measuring
#: on and judging the latest 4 windows sees a quiet 2 s as soon as it has passed, for ~1.4 s per retry.
RETRY_WINDOWS = 2

_QUANTILE = {"median_ms": 50, "p10_ms": 10, "p90_ms": 90, "min_ms": 0}


def window_stat(samples: np.ndarray, statistic: str) -> float:
    if statistic in _QUANTILE:
        return float(np.percentile(samples, _QUANTILE[statistic]))
    return float(np.mean(samples))


def _spread(values: Sequence[float]) -> float | None:
    """``(max - min) / median`` of the per-window values; None with fewer than two."""
    if len(values) < 2:
        return None
    arr = np.asarray(values, dtype=float)
    return float((arr.max() - arr.min()) / np.median(arr))


def spread_between_windows(samples_ms: Sequence[float], statistic: str, window_s: float = WINDOW_S) -> tuple[float | None, list[float]]:
    """Cut consecutive per-run samples into windows of ``window_s`` of timed work; ``(spread, values)``
    where ``values`` is the statistic per window (windows of fewer than 5 runs are merged forward) and
    ``spread`` is ``(max - min) / median`` of them (None with fewer than two windows)."""
    v = np.asarray(samples_ms, dtype=float)
    if len(v) == 0:
        return None, []
    values: list[float] = []
    start, acc = 0, 0.0
    for i, x in enumerate(v):
        acc += x / 1000.0
        if acc >= window_s and i + 1 - start >= 5:  # a window closes (an unfinished tail is dropped)
            values.append(window_stat(v[start : i + 1], statistic))
            start, acc = i + 1, 0.0
    return _spread(values), values


def fitted_window_s(samples_ms: Sequence[float], windows: int = WINDOWS, window_s: float = WINDOW_S) -> float:
    """``window_s``, or shorter so that ``windows`` windows fit into the timed work of ``samples_ms``.

    The runner stops on wall-clock time, which includes its own per-run overhead: for a fast reference or on
    a busy machine the timed work falls short of ``windows * window_s`` (a CI run got one window, hence no
    noise floor), so the windows shrink to fit."""
    timed_s = float(np.sum(samples_ms)) / 1000.0 if len(samples_ms) else 0.0
    return min(window_s, 0.999 * timed_s / windows) if timed_s > 0 else window_s


def _window_values(
    device: Device, reference: Workload, *, runtime: str, threads: int, settings: MeasureSettings,
    windows: int, window_s: float, statistic: str,
) -> list[float]:
    """Time ``reference`` for ``windows * window_s`` seconds; the statistic per window (empty when the runtime
    returns no per-run samples: a benchmark program)."""
    results = device.measure(
        [ModelFile(reference.id, reference.path)], runtime=runtime, threads=threads, runs=5 * windows,
        warmup=settings.warmup, min_seconds=windows * window_s, rounds=1, keep_samples=True,
        extra={"precision": None},
    )
    res = next((r for r in results if r.get("type") == "result"), None)
    samples = (res or {}).get("samples_ms") or []
    return spread_between_windows(samples, statistic, fitted_window_s(samples, windows, window_s))[1]


def measure_noise_floor(
    device: Device, reference: Workload, *, runtime: str, threads: int, settings: MeasureSettings,
    windows: int = WINDOWS, window_s: float = WINDOW_S,
) -> dict[str, Any]:
    """Time ``reference`` for ``windows * window_s`` seconds; ``{noise_floor, windows_ms, statistic}``.
    Benchmark programs print no per-run samples: their noise floor is None."""
    statistic = settings.statistic or raw_statistic(runtime)
    values = _window_values(device, reference, runtime=runtime, threads=threads, settings=settings,
                            windows=windows, window_s=window_s, statistic=statistic)
    return _floor(values, statistic)


def _floor(values: Sequence[float], statistic: str) -> dict[str, Any]:
    """``{noise_floor, windows_ms, statistic}`` of per-window values (what the LUT and the JSON record)."""
    return {"noise_floor": _spread(values), "windows_ms": [round(x, 4) for x in values], "statistic": statistic}


def noise_gate(
    device: Device, reference: Workload, *, runtime: str, threads: int, settings: MeasureSettings,
    on_wait: Callable[[float, float], None] | None = None, clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Measure the noise floor over :data:`WINDOWS` windows; while it is above ``settings.max_noise``, measure
    :data:`RETRY_WINDOWS` more and judge the latest :data:`WINDOWS`, up to ``settings.max_wait_s``. Returns
    ``{noise_floor, windows_ms, waited_s, quiet, ...}`` (the windows judged last); warns (naming the figure)
    when it goes on above the limit. ``on_wait(noise_floor, waited_s)`` is called before each retry."""
    statistic = settings.statistic or raw_statistic(runtime)
    started = clock()
    values: list[float] = []
    count = WINDOWS
    while True:
        got = _window_values(device, reference, runtime=runtime, threads=threads, settings=settings,
                             windows=count, window_s=WINDOW_S, statistic=statistic)
        values = (values + got)[-WINDOWS:]
        floor = _spread(values)
        waited = clock() - started
        if not got or floor is None or floor <= settings.max_noise or waited >= settings.max_wait_s:
            break
        if on_wait is not None:
            on_wait(floor, waited)
        count = RETRY_WINDOWS
    quiet = floor is None or floor <= settings.max_noise
    if not quiet:
        log.warning(
            "%s: noise floor %.1f%% is above %.1f%% after waiting %.0f s; measuring anyway "
            "(results will be less precise)", device.profile.name, 100 * floor, 100 * settings.max_noise, waited,
        )
    return {**_floor(values, statistic), "waited_s": round(waited, 1), "quiet": quiet, "max_noise": settings.max_noise}


def probe_noise_floor(profile: DeviceProfile, *, space: str = "compact") -> dict[str, Any]:
    """The device's noise floor now, for ``hwnas probe``: ``space``'s reference workload measured with the
    profile's runtime and threads, no waiting. Never raises for the device's sake: when it cannot be
    measured (runtime missing, device busy, link lost) ``noise_floor`` is None and ``noise_error`` says why."""
    from ..agents.errors import AgentError
    from ..supernet import get_space

    try:
        runtime = runtimes.get_runtime(profile.runtime)
        builder = WorkloadBuilder(space=get_space(space), fmt=runtime.model_format)
        reference = builder.reference()
        with Device(profile) as device:
            device.acquire()
            got = measure_noise_floor(device, reference, runtime=runtime.name, threads=profile.threads,
                                      settings=profile.measure)
    except AgentError as exc:
        return {"noise_floor": None, "noise_error": str(exc)}
    return {**got, "space": space}
