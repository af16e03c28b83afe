"""End-to-end validation: measure whole subnets on the device and compare with the LUT's prediction.

Subnets are measured exactly as the LUT was (same runtime, threads, dtype, batch, raw
statistic, batches holding the reference workload). The machine's speed drifts between
the time a LUT was made and the time it is validated; the reference workload measures
that drift (``drift`` = reference now / reference in the LUT), and measured values are
normalised to the LUT's speed unless ``correct_drift=False``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..agents import runtimes
from ..agents.device import Device
from ..agents.measure_settings import MeasureSettings
from ..agents.profiles import DeviceProfile
from ..supernet import Arch, get_space
from .calibration import smoothed_refs
from .errors import LUTError
from .lut import LUT
from .measure import measure_batches, sampling_statistic, stat_keys
from .noise import noise_gate
from .predict import LUTPredictor
from .workloads import Workload, WorkloadBuilder

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def lut_settings(lut: LUT) -> dict[str, Any]:
    """Runtime, threads, dtype and batch a LUT was measured with (from its metadata)."""
    meta = lut.metadata
    runtime = (meta.get("runtime") or {}).get("name")
    if runtime not in runtimes.REGISTRY:
        raise LUTError(f"{lut.source}: metadata 'runtime.name' is {runtime!r}; expected one of {', '.join(runtimes.NAMES)}")
    return {
        "runtime": runtime,
        "threads": int(meta.get("threads") or 1),
        "dtype": str(meta.get("dtype") or "float32"),
        "batch": int(meta.get("batch") or 1),
    }


def measure_subnets(
    device: Device,
    archs: Sequence[Arch],
    *,
    space_name: str,
    runtime: str,
    threads: int,
    dtype: str = "float32",
    batch: int = 1,
    plan: MeasureSettings | None = None,
    passes: int = 1,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure whole subnets end to end (``plan``: the device profile's ``measure:`` settings when None).

    Returns ``{"ms": [...], "raw_ms": [...], "ci": [...], "converged": [...], "reference_ms": x,
    "reference_batches_ms": [...], "stats_ms": {stat: [...]}, "stats_raw_ms": {stat: [...]}}`` where
    ``ms[i]`` (the runtime's statistic) and each of ``stats_ms`` (every statistic the runtime reports) are
    normalised to the median reference speed of this run (each batch's reference smoothed over its
    neighbours', as a profile's rows are); ``raw_ms`` and ``stats_raw_ms`` are not; ``ci``
    is each subnet's relative confidence half-width (the widest of its passes). With ``passes`` > 1 every
    subnet is measured that many times, the passes one after the other in the batches (so each pass of a
    subnet runs in another batch, beside other models); values are the mean over the passes, and
    ``passes_ms`` holds each pass's normalised values."""
    plan = plan or device.profile.measure
    space = get_space(space_name)
    builder = WorkloadBuilder(space=space, fmt=runtimes.get_runtime(runtime).model_format, dtype=dtype, batch=batch)
    builder.convert(archs=[*archs, builder.reference_arch()])  # .tflite: in worker processes
    workloads: list[Workload] = []
    for i, arch in enumerate(archs):
        workloads.append(builder.subnet(arch))
        if on_progress is not None:
            on_progress(i + 1, (1 + passes) * len(archs), "exporting subnets")
    reference = builder.reference()
    unique = list({w.id: w for w in workloads}.values())
    runs = [dataclasses.replace(w, id=f"{w.id}~{p}" if passes > 1 else w.id) for p in range(passes) for w in unique]
    got: dict[str, tuple[dict[str, float], float, float | None, bool]] = {}  # id: (stats, batch ref, ci, converged)
    done = [len(archs)]
    keys = stat_keys(runtime)

    def on_result(w: Workload, res: dict[str, Any], ref_ms: float) -> None:
        stats = {k: float(res[k]) for k in keys if res.get(k) is not None}
        got[w.id] = (stats, ref_ms, res.get("ci"), bool(res.get("converged")))
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], (1 + passes) * len(archs), "measuring subnets")

    refs = measure_batches(device, runs, reference=reference, plan=plan, runtime=runtime, threads=threads, on_result=on_result)
    ref_run = float(np.median(refs))
    smooth = smoothed_refs(refs)  # as the profile normalises its rows (profiler/calibration.py)

    def ids(w: Workload) -> list[str]:
        return [f"{w.id}~{p}" if passes > 1 else w.id for p in range(passes)]

    def per_pass(k: str, normalised: bool) -> list[list[float]]:
        return [[got[i][0][k] * (ref_run / smooth[got[i][1]] if normalised else 1.0)
                 for w in workloads for i in [ids(w)[p]]]
                for p in range(passes)]

    present = [k for k in keys if all(k in got[i][0] for w in workloads for i in ids(w))]
    stats = {k: list(np.mean(per_pass(k, True), axis=0)) for k in present}
    stats_raw = {k: list(np.mean(per_pass(k, False), axis=0)) for k in present}
    stat = sampling_statistic(plan, runtime)
    cis = []
    for w in workloads:
        values = [got[i][2] for i in ids(w)]
        cis.append(None if any(v is None for v in values) else float(max(values)))
    out = {"ms": [float(x) for x in stats[stat]], "raw_ms": [float(x) for x in stats_raw[stat]], "ci": cis,
           "converged": [all(got[i][3] for i in ids(w)) for w in workloads],
           "reference_ms": ref_run, "reference_batches_ms": refs,
           "stats_ms": {k: [float(x) for x in v] for k, v in stats.items()},
           "stats_raw_ms": {k: [float(x) for x in v] for k, v in stats_raw.items()}}
    if passes > 1:
        out["passes_ms"] = per_pass(stat, True)
    return out


def repeat_mape(passes_ms: Sequence[Sequence[float]]) -> float | None:
    """How far two passes over the same subnets disagree: mean of |a - b| / mean(a, b)."""
    if len(passes_ms) < 2 or not len(passes_ms[0]):
        return None
    a, b = np.asarray(passes_ms[0], dtype=float), np.asarray(passes_ms[1], dtype=float)
    return float(np.mean(np.abs(a - b) / ((a + b) / 2)))


def summarize_points(predicted: np.ndarray, measured: np.ndarray) -> dict[str, Any]:
    from scipy.stats import spearmanr

    err = np.abs(predicted - measured) / measured
    rho = float(spearmanr(predicted, measured).statistic) if len(measured) > 2 else None
    return {
        "samples": int(len(measured)),
        "within_5pct": float(np.mean(err <= 0.05)),
        "within_10pct": float(np.mean(err <= 0.10)),
        "mape": float(np.mean(err)),
        "max_error": float(np.max(err)) if len(err) else None,
        "spearman": rho,
    }


def validate_lut(
    profile: DeviceProfile,
    lut: LUT,
    *,
    samples: int,
    seed: int = 0,
    correct_drift: bool = True,
    plan: MeasureSettings | None = None,
    overrides: Any = (),
    passes: int = 2,
    on_progress: Progress | None = None,
    device: Device | None = None,
) -> dict[str, Any]:
    """Measure ``samples`` random subnets (at the LUT's resolutions) and compare with the LUT sum.

    Each subnet is measured in ``passes`` interleaved passes (their mean is the measured value);
    ``repeat_mape`` says how far the passes disagree, which is as close as re-measuring gets: a LUT
    whose ``mape`` is not above it (``lut_error_above_repeat`` false) predicts within the noise.
    ``plan``: the profile's ``measure:`` settings when None, with ``overrides`` (flags) on top."""
    if samples < 1:
        raise LUTError(f"--samples must be at least 1, got {samples}")
    if passes < 1:
        raise LUTError(f"passes must be at least 1, got {passes}")
    plan = (plan or profile.measure).replace(**dict(overrides))
    started = time.perf_counter()
    settings = lut_settings(lut)
    # subnets are measured by the statistic the LUT was measured by
    plan = plan.replace(statistic=(lut.metadata.get("measurement") or {}).get("raw_statistic")
                        or sampling_statistic(plan, settings["runtime"]))
    predictor = LUTPredictor(lut)
    space = predictor.space
    rng = np.random.default_rng(seed)
    arrays = space.sample_arrays(rng, samples, predictor.resolutions_)
    archs = space.archs_from_arrays(arrays)
    predicted = predictor.predict_arrays(arrays)
    own = device is None
    device = device or Device(profile)
    try:
        if device.lock is None:
            device.acquire()
        builder = WorkloadBuilder(space=space, fmt=runtimes.get_runtime(settings["runtime"]).model_format,
                                  dtype=settings["dtype"], batch=settings["batch"])
        noise = noise_gate(device, builder.reference(), runtime=settings["runtime"], threads=settings["threads"],
                           settings=plan)
        m = measure_subnets(
            device, archs, space_name=space.name, plan=plan, passes=passes, on_progress=on_progress, **settings
        )
    finally:
        if own:
            device.close()
    ref_lut = float((lut.metadata.get("reference") or {}).get("ms") or float("nan"))
    drift = m["reference_ms"] / ref_lut if np.isfinite(ref_lut) and ref_lut > 0 else None
    measured = np.asarray(m["ms"], dtype=float)
    if correct_drift and drift:
        measured = measured / drift
    result = summarize_points(predicted, measured)
    rep = repeat_mape(m.get("passes_ms") or [])
    result.update(
        repeat_mape=rep,
        noise_floor=noise["noise_floor"],
        lut_error_above_repeat=None if rep is None else bool(result["mape"] > rep),
        unconverged=int(sum(not c for c in m["converged"])),
        drift=drift,
        drift_corrected=bool(correct_drift and drift),
        reference_ms={"lut": ref_lut, "now": m["reference_ms"]},
        statistic=plan.statistic,
        measurement={**plan.to_dict(), "passes": passes, "noise": {k: noise[k] for k in ("waited_s", "quiet")}},
        points=[
            {"arch": a.to_dict(), "predicted_ms": float(p), "measured_ms": float(x), "ci": c}
            for a, p, x, c in zip(archs, predicted, measured, m["ci"], strict=False)
        ],
        seconds=time.perf_counter() - started,
    )
    return result
