"""How whole networks calibrate a table of separately measured entries: the one owner of the calibration
arithmetic that ``profile_device`` (search-space LUTs) and ``measure_entry_table`` (per-layer tables) share.

An entry measured alone keeps its weights in the core's caches between runs; inside a whole network the
other layers evict them, so every operator runs slower there. Whole networks are therefore measured among
the entries (:func:`interleave`: every batch holds some of both and both see the same machine), values are
normalised to the run's reference speed with each batch's reference smoothed over its neighbours
(:func:`smoothed_refs`), and per resolution ``whole = a * sum(entry - o) + b`` is fitted
(:func:`calibration_line`; ``o`` the per-inference overhead workload), with a term per parameter of the
network where that predicts the networks better (:func:`calibration_fit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

__all__ = ["calibration_fit", "calibration_line", "interleave", "leave_one_out_errors", "residuals_pct", "smoothed_refs"]

T = TypeVar("T")


def interleave(entries: Sequence[T], nets: Sequence[T]) -> list[T]:
    """The entries with the whole networks spread evenly among them, so that every batch holds some of both
    and both see the same machine conditions."""
    if not entries:
        return list(nets)
    out: list[T] = []
    step = len(entries) / max(1, len(nets))
    j = 0
    for i, w in enumerate(entries):
        while j < len(nets) and j * step <= i:
            out.append(nets[j])
            j += 1
        out.append(w)
    out.extend(nets[j:])
    return out


def smoothed_refs(refs: Sequence[float]) -> dict[float, float]:
    """Each batch's reference latency replaced by the median of it and its neighbours' (batches in
    measurement order): a slow drift of the machine is still followed, but the noise of one batch's
    reference measurement no longer shifts every entry of that batch together."""
    batches = list(dict.fromkeys(float(r) for r in refs))
    return {ref: float(np.median(batches[max(0, i - 1) : i + 2])) for i, ref in enumerate(batches)}


def _relative_least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares on relative errors (each network weighs the same in percent)."""
    w = 1.0 / y
    A = np.stack([x * w, w], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if a <= 0 or not np.isfinite(a):
        a, b = float(np.median(y / x)), 0.0
    return a, b


#: A calibration network whose relative residual exceeds the larger of this (20%: ordinary residuals are 2-8%) and ``OUTLIER_MADS`` robust sd of
#: the residuals is left out of the fit (at most a quarter of them, three always kept). Under the memory load of
#: benchmarks/_load.py one of a resolution's 8 subnets once measured 45% off the line, and the least-squares
#: fit through it scaled every entry of that resolution by 0.79: 23 of 156 entries then differed between two
#: back-to-back profiles (bench_diff, BENCHMARKS.md section 000).
OUTLIER_MIN = 0.2
OUTLIER_MADS = 6.0


def _trimmed_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """:func:`_relative_least_squares`, refitted without the worst network while it is an outlier; also
    which networks were kept."""
    keep = np.ones(len(x), dtype=bool)
    a, b = _relative_least_squares(x, y)
    while keep.sum() > 3 and (~keep).sum() < len(x) // 4:
        resid = np.abs((a * x + b - y) / y)
        resid[~keep] = -1.0
        worst = int(np.argmax(resid))
        scale = 1.4826 * float(np.median(resid[keep]))
        if resid[worst] <= max(OUTLIER_MIN, OUTLIER_MADS * scale):
            break
        keep[worst] = False
        a, b = _relative_least_squares(x[keep], y[keep])
    return a, b, keep


def calibration_line(xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray, overhead: float) -> tuple[float, float]:
    """``(a, b)`` of ``whole = a * sum(entries - overhead) + b`` from the networks' entry sums ``xs`` and their
    measured latencies ``ys``: least squares on relative errors from three networks on (an outlying network
    left out: :data:`OUTLIER_MIN`), the ratio of medians
    below (``b = overhead``), ``(1, overhead)`` without networks; ``(1, median(whole - sum))`` when the sums
    carry no information (every entry measured as the overhead, as a benchmark program that prints the same
    numbers for every model)."""
    a, b, _ = _line(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), overhead)
    return a, b


def _line(x: np.ndarray, y: np.ndarray, overhead: float) -> tuple[float, float, np.ndarray | None]:
    """:func:`calibration_line`, and which networks its least-squares fit kept (None where it made none)."""
    if len(x) == 0:
        return 1.0, float(overhead), None
    if not np.all(np.abs(x) > 1e-12):
        return 1.0, float(np.median(y - x)), None
    keep = None
    if len(x) >= 3:
        a, b, keep = _trimmed_fit(x, y)
    elif float(np.median(x)) > 0:
        a, b = float(np.median(y - overhead) / np.median(x)), float(overhead)
    else:
        a, b = 1.0, float(overhead)
    if not (math.isfinite(a) and math.isfinite(b)):
        a, b = 1.0, float(overhead)
    return a, b, keep


#: Fewest networks (after outliers are left out) for the fit with the parameters term.
MIN_NETWORKS_WEIGHTS = 6


def _relative_coefficients(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(f / y[:, None], np.ones_like(y), rcond=None)
    return coef


def leave_one_out_errors(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Relative error of each network predicted by the least-squares fit (on relative errors) of
    ``y ~ f @ coef`` on the other networks; ``f``: one column per term (a column of ones for a constant)."""
    f, y = np.asarray(f, dtype=float), np.asarray(y, dtype=float)
    errs = []
    for i in range(len(y)):
        m = np.arange(len(y)) != i
        errs.append(float(f[i] @ _relative_coefficients(f[m], y[m])) / y[i] - 1.0)
    return np.asarray(errs)


def calibration_fit(
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray,
    overhead: float,
    ws: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """``(a, b, c)`` of ``whole = a * sum(entries - overhead) + c * sum(entry parameters) + b``.

    A network's weights are fetched from memory in the network (the other layers evicted them) but stay in
    the core's caches when an entry is measured alone, so a network pays per parameter beyond the scale
    ``a`` of its entries. On 80 ``ofa-mbv3-w1.0`` subnets at 160 px (bench_additivity) the parameters term
    took the leave-one-out fit from 75 to 80 within ±5% quiet and from 71 to 78 loaded. It is kept only
    where it predicts the calibration networks better left out one at a time than the line does, with
    ``a > 0`` and ``c >= 0`` (``ws``: each network's parameters, M); otherwise ``c = 0`` and
    ``(a, b)`` is :func:`calibration_line`'s."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    a, b, keep = _line(x, y, overhead)
    if ws is None:
        return a, b, 0.0
    w = np.asarray(ws, dtype=float)
    if keep is None or keep.sum() < MIN_NETWORKS_WEIGHTS or float(np.ptp(w)) <= 0:
        return a, b, 0.0
    x, y, w = x[keep], y[keep], w[keep]
    line = np.stack([x, np.ones_like(x)], axis=1)
    plane = np.stack([x, w, np.ones_like(x)], axis=1)
    a3, c3, b3 = (float(v) for v in _relative_coefficients(plane, y))
    if not (a3 > 0 and c3 >= 0 and math.isfinite(b3)):
        return a, b, 0.0
    if np.mean(np.abs(leave_one_out_errors(plane, y))) >= np.mean(np.abs(leave_one_out_errors(line, y))):
        return a, b, 0.0
    return a3, b3, c3


def residuals_pct(a: float, b: float, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray,
                  c: float = 0.0, ws: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """``|a * x + c * w + b - y| / y`` in percent, per network."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    w = np.zeros_like(x) if ws is None else np.asarray(ws, dtype=float)
    return np.abs(a * x + c * w + b - y) / y * 100 if len(x) else np.array([])


