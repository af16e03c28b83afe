"""End-to-end validation: measure whole subnets on the device and compare with the LUT's prediction.

Subnets are measured exactly as the LUT was (same runtime, threads, dtype, batch, raw
statistic, batches holding the reference workload). The machine's speed drifts between
the time a LUT was made and the time it is validated, and measured values are normalised to
the LUT's speed (``drift``; not with ``correct_drift=False``). The drift is measured on
*anchors* (:func:`measure_against_lut`): some of the whole subnets the LUT's calibration measured
(their values are in its metadata) are measured again beside the subnets, and ``drift`` is the
median of their now/then ratios. A LUT without them (older files, imported tables) falls back to
the reference workload alone (reference now / reference in the LUT). One workload's ratio was not
enough here: on this shared host one ONNX Runtime session can run 15% slower or faster than another
of the same model, and a validation whose reference landed in such a mode shifted every subnet by it
(11.7% once, with the subnets themselves within 2% of the LUT: BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
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


#: Calibration subnets of the LUT measured again beside the subnets of a validation or a closed loop: the
#: median of 8 ratios moves about a third as much as one ratio, and 8 cost about as much as 8 of the 40
#: subnets of a default ``lut validate``.
ANCHORS = 8


def lut_anchors(lut: LUT, count: int = ANCHORS) -> list[tuple[Arch, float]]:
    """Up to ``count`` of the LUT's calibration subnets and their values as measured in the profile
    (``calibration.<resolution>.networks`` of its metadata), spread evenly over their latencies; empty
    for a LUT without them. Raises LUTError naming the field when they are there but unreadable."""
    calibration = lut.metadata.get("calibration") or {}
    if not isinstance(calibration, dict):
        raise LUTError(f"{lut.source}: metadata 'calibration' is {type(calibration).__name__}; expected a mapping")
    space = get_space(lut.space)
    found: list[tuple[Arch, float]] = []
    for r, cal in calibration.items():
        nets = (cal or {}).get("networks") if isinstance(cal, dict) else None
        if nets is None:
            continue
        if not isinstance(nets, list):
            raise LUTError(f"{lut.source}: metadata 'calibration.{r}.networks' is {type(nets).__name__}; expected a list")
        for i, net in enumerate(nets):
            where = f"{lut.source}: metadata 'calibration.{r}.networks'[{i}]"
            if not isinstance(net, dict):
                raise LUTError(f"{where} is {type(net).__name__}; expected a mapping with arch and ms")
            ms = net.get("ms")
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
                raise LUTError(f"{where}.ms is {ms!r}; expected a number > 0")
            try:
                arch = space.parse(net.get("arch") or "", resolutions=lut.resolutions)
            except ValueError as exc:
                raise LUTError(f"{where}.arch: {exc}") from None
            found.append((arch, float(ms)))
    if count <= 0 or not found:
        return []
    found.sort(key=lambda x: x[1])
    picks = np.unique(np.round(np.linspace(0, len(found) - 1, min(count, len(found)))).astype(int))
    return [found[i] for i in picks]


def lut_plan(lut: LUT, plan: MeasureSettings) -> MeasureSettings:
    """``plan`` aimed at the statistic ``lut`` was measured by (subnets are compared by that one)."""
    stat = (lut.metadata.get("measurement") or {}).get("raw_statistic")
    return plan.replace(statistic=stat or sampling_statistic(plan, lut_settings(lut)["runtime"]))


def measure_against_lut(
    device: Device,
    lut: LUT,
    archs: Sequence[Arch],
    *,
    plan: MeasureSettings | None = None,
    passes: int = 1,
    anchors: int = ANCHORS,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure ``archs`` on ``device`` as ``lut`` was measured (:func:`lut_settings`, the statistic it was
    measured by) and normalise them to the LUT's machine speed.

    :func:`measure_subnets`' result for ``archs``, plus ``ms_lut`` (``ms`` / ``drift``),
    ``drift`` (machine speed now / when the LUT was made), ``drift_source`` (``"anchors"`` or
    ``"reference"``), ``drift_reference`` (the reference workload's own ratio, for comparison),
    ``anchor_ratios`` and ``reference_ms`` (``{"lut": .., "now": ..}``). ``drift`` is None where the LUT
    records no reference and no anchors (values are then left as measured)."""
    anchor_list = lut_anchors(lut, anchors)
    every = [*archs, *(a for a, _ in anchor_list)]
    m = measure_subnets(device, every, space_name=lut.space, plan=lut_plan(lut, plan or device.profile.measure),
                        passes=passes, on_progress=on_progress, **lut_settings(lut))
    n = len(archs)
    out: dict[str, Any] = {k: m[k][:n] for k in ("ms", "raw_ms", "ci", "converged")}
    out.update(reference_batches_ms=m["reference_batches_ms"],
               stats_ms={k: v[:n] for k, v in m["stats_ms"].items()},
               stats_raw_ms={k: v[:n] for k, v in m["stats_raw_ms"].items()})
    if "passes_ms" in m:
        out["passes_ms"] = [p[:n] for p in m["passes_ms"]]
    ref_lut = float((lut.metadata.get("reference") or {}).get("ms") or float("nan"))
    drift_reference = m["reference_ms"] / ref_lut if math.isfinite(ref_lut) and ref_lut > 0 else None
    ratios = [float(now / then) for now, (_, then) in zip(m["ms"][n:], anchor_list, strict=True)]
    drift = float(np.median(ratios)) if ratios else drift_reference
    scale = drift or 1.0
    out.update(
        ms_lut=[float(x) / scale for x in out["ms"]],
        drift=drift,
        drift_source="anchors" if ratios else ("reference" if drift_reference else None),
        drift_reference=drift_reference,
        anchor_ratios=ratios,
        reference_ms={"lut": ref_lut, "now": m["reference_ms"]},
    )
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
    anchors: int = ANCHORS,
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
    started = time.perf_counter()
    settings = lut_settings(lut)
    plan = lut_plan(lut, (plan or profile.measure).replace(**dict(overrides)))
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
        m = measure_against_lut(device, lut, archs, plan=plan, passes=passes, anchors=anchors, on_progress=on_progress)
    finally:
        if own:
            device.close()
    drift = m["drift"]
    measured = np.asarray(m["ms_lut"] if correct_drift else m["ms"], dtype=float)
    result = summarize_points(predicted, measured)
    rep = repeat_mape(m.get("passes_ms") or [])
    result.update(
        repeat_mape=rep,
        noise_floor=noise["noise_floor"],
        lut_error_above_repeat=None if rep is None else bool(result["mape"] > rep),
        unconverged=int(sum(not c for c in m["converged"])),
        drift=drift,
        drift_corrected=bool(correct_drift and drift),
        drift_source=m["drift_source"],
        drift_reference=m["drift_reference"],
        anchors=len(m["anchor_ratios"]),
        anchor_ratios=m["anchor_ratios"],
        reference_ms=m["reference_ms"],
        statistic=plan.statistic,
        measurement={**plan.to_dict(), "passes": passes, "noise": {k: noise[k] for k in ("waited_s", "quiet")}},
        points=[
            {"arch": a.to_dict(), "predicted_ms": float(p), "measured_ms": float(x), "ci": c}
            for a, p, x, c in zip(archs, predicted, measured, m["ci"], strict=False)
        ],
        seconds=time.perf_counter() - started,
    )
    return result
