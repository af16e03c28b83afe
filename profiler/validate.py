"""End-to-end validation: measure whole subnets on the device and compare with the LUT's prediction.

Subnets are measured exactly as the LUT was (same runtime, threads, dtype, batch, raw
statistic, batches holding the reference workload). The machine's speed drifts between
the time a LUT was made and the time it is validated; the reference workload measures
that drift (``drift`` = reference now / reference in the LUT), and measured values are
normalised to the LUT's speed unless ``correct_drift=False``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..agents.device import Device
from ..agents.profiles import DeviceProfile
from ..supernet import Arch, get_space
from .errors import LUTError
from .lut import LUT
from .measure import MeasurePlan, measure_batches, raw_statistic, stat_keys
from .predict import LUTPredictor
from .workloads import RUNTIME_FORMAT, Workload, WorkloadBuilder

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def lut_settings(lut: LUT) -> dict[str, Any]:
    """Runtime, threads, dtype and batch a LUT was measured with (from its metadata)."""
    meta = lut.metadata
    runtime = (meta.get("runtime") or {}).get("name")
    if runtime not in RUNTIME_FORMAT:
        raise LUTError(f"{lut.source}: metadata 'runtime.name' is {runtime!r}; expected one of {sorted(RUNTIME_FORMAT)}")
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
    plan: MeasurePlan = MeasurePlan(),
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure whole subnets end to end; returns ``{"ms": [...], "raw_ms": [...], "reference_ms": x,
    "reference_batches_ms": [...], "stats_ms": {stat: [...]}, "stats_raw_ms": {stat: [...]}}`` where ``ms[i]``
    (the runtime's raw statistic) and each of ``stats_ms`` (every statistic the runtime reports) are
    normalised to the median reference speed of this run; ``raw_ms`` and ``stats_raw_ms`` are not."""
    space = get_space(space_name)
    builder = WorkloadBuilder(space=space, fmt=RUNTIME_FORMAT[runtime], dtype=dtype, batch=batch)
    workloads: list[Workload] = []
    for i, arch in enumerate(archs):
        workloads.append(builder.subnet(arch))
        if on_progress is not None:
            on_progress(i + 1, 2 * len(archs), "exporting subnets")
    reference = builder.reference()
    got: dict[str, tuple[dict[str, float], float]] = {}  # id: (every statistic, the batch's reference)
    done = [len(archs)]

    def on_result(w: Workload, res: dict[str, Any], ref_ms: float) -> None:
        got[w.id] = ({k: float(res[k]) for k in stat_keys(runtime)}, ref_ms)
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], 2 * len(archs), "measuring subnets")

    unique = list({w.id: w for w in workloads}.values())
    refs = measure_batches(device, unique, reference=reference, plan=plan, runtime=runtime, threads=threads, on_result=on_result)
    ref_run = float(np.median(refs))
    stats_raw = {k: [got[w.id][0][k] for w in workloads] for k in stat_keys(runtime)}
    stats = {k: [got[w.id][0][k] * ref_run / got[w.id][1] for w in workloads] for k in stat_keys(runtime)}
    stat = raw_statistic(runtime)
    return {"ms": stats[stat], "raw_ms": stats_raw[stat], "reference_ms": ref_run, "reference_batches_ms": refs,
            "stats_ms": stats, "stats_raw_ms": stats_raw}


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
    plan: MeasurePlan = MeasurePlan(),
    on_progress: Progress | None = None,
    device: Device | None = None,
) -> dict[str, Any]:
    """Measure ``samples`` random subnets (at the LUT's resolutions) and compare with the LUT sum."""
    if samples < 1:
        raise LUTError(f"--samples must be at least 1, got {samples}")
    started = time.perf_counter()
    settings = lut_settings(lut)
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
        m = measure_subnets(
            device, archs, space_name=space.name, plan=plan, on_progress=on_progress, **settings
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
    result.update(
        drift=drift,
        drift_corrected=bool(correct_drift and drift),
        reference_ms={"lut": ref_lut, "now": m["reference_ms"]},
        statistic=raw_statistic(settings["runtime"]),
        points=[
            {"arch": a.to_dict(), "predicted_ms": float(p), "measured_ms": float(x)}
            for a, p, x in zip(archs, predicted, measured, strict=False)
        ],
        seconds=time.perf_counter() - started,
    )
    return result
