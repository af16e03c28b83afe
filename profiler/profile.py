"""Profile a device into a LUT: measure every entry of a space, calibrate, write as rows arrive.

The flow for one device::

    probe -> workloads (one model per LUT entry, cached) -> batches on the device
          -> rows appended to the LUT as each batch returns (crash-safe, --resume)
          -> calibration: a few whole subnets measured the same way -> final LUT values

Why a calibration: an entry measured alone keeps its weights in the core's caches
between runs; inside a whole network the other layers evict them, so every operator
runs slower there (on this machine ~25% for blocks, 2-4x for the large head layers
whose weights exceed the L2 cache; see BENCHMARKS.md). The profiler measures that
effect on the device itself: per resolution it fits ``whole = a * sum(entries - o) + b``
on calibration subnets (``o`` the measured per-inference overhead), with a term ``c`` per
parameter of the network where that predicts them better (weights fetched from memory in the
network), and writes the LUT column ``lut_ms = a * (p10 - o) + c * params`` for entries and
``b`` for the ``Overhead-inference`` row, so a plain sum of the ``lut_ms`` column predicts a
whole network.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..agents import runtimes
from ..agents.device import Device
from ..agents.errors import DeviceError
from ..agents.measure_settings import MeasureSettings
from ..agents.profiles import DeviceProfile
from ..supernet import SearchSpace, get_space
from .calibration import calibration_fit, interleave, residuals_pct, smoothed_refs
from .errors import LUTError
from .lut import (
    LUT,
    MEASURE_COLUMNS,
    OP_FIELDS,
    OVERHEAD_KEY,
    OVERHEAD_OP,
    LUTWriter,
    default_metadata,
    entry_row,
    measure_cells,
)
from .measure import measure_batches, sampling_statistic, stat_keys
from .noise import noise_gate
from .workloads import Workload, WorkloadBuilder

log = logging.getLogger(__name__)

LUT_STATISTIC = "lut_ms"


def lut_columns(runtime: str) -> tuple[str, ...]:
    """The CSV columns of a LUT measured with ``runtime``."""
    return ("key", "resolution", "op", *OP_FIELDS, "runs", *stat_keys(runtime), *MEASURE_COLUMNS, "ref_ms", LUT_STATISTIC)


LUT_COLUMNS = lut_columns("onnxruntime")


#: Whole subnets per resolution that calibrate the entries (min, max and random ones). 16 rather than 8: the
#: parameters term of the calibration (:func:`~.calibration.calibration_fit`) needs them to be stable (its
#: ``c`` moved 0.095-0.22 between profiles fitted on 8, 0.110-0.128 on 16; bench_fidelity, BENCHMARKS.md).
CALIBRATION_SUBNETS = 16
# Building and exporting workloads uses torch's global state (export flags, manual_seed): one thread
# at a time when several devices are profiled concurrently (`hwnas profile A B`).
_BUILD_LOCK = threading.Lock()
Progress = Callable[[int, int, str], None]


def default_lut_path(profile: DeviceProfile, space: str, runtime: str, dtype: str, threads: int, batch: int) -> Path:
    """``device_profiles/NAME/{space}_{runtime}_{dtype}_t{threads}_b{batch}.csv``."""
    return profile.lut_dir / f"{space}_{runtime}_{dtype}_t{threads}_b{batch}.csv"


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile: a space at some resolutions, with a runtime and its settings."""

    space: str
    resolutions: tuple[int, ...] | None = None
    runtime: str | None = None
    dtype: str = "float32"
    threads: int | None = None
    batch: int = 1
    out: Path | None = None
    resume: bool = False
    #: replace an existing LUT (and its sidecars); without it or ``resume`` an existing LUT is refused
    force: bool = False
    #: measurement settings: None takes the profile's ``measure:`` block; ``overrides`` (flags) go on top
    plan: MeasureSettings | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    calibration_subnets: int = CALIBRATION_SUBNETS
    seed: int = 0


def measure_settings(
    profile: DeviceProfile, plan: MeasureSettings | None = None, overrides: Any = ()
) -> MeasureSettings:
    """The settings a run measures with: ``plan`` (else the profile's ``measure:`` block), then the
    non-None ``overrides`` (command-line flags: a mapping or (name, value) pairs), validated."""
    return (plan or profile.measure).replace(**dict(overrides))


def _fingerprint(device: Device) -> tuple[dict[str, Any], list[str], float | None]:
    """The device fingerprint for the LUT metadata, the temperature files to watch, the hottest zone now."""
    from ..agents import probe as probe_mod

    state = probe_mod.probe_profile(device.profile, transport=device.transport)
    fp = {"name": device.profile.name, **probe_mod.fingerprint(state)}
    temps = [t for t in (state.get("temperatures_c") or {}).values() if isinstance(t, (int, float))]
    return fp, list(probe_mod.temperature_paths(state)), (max(temps) if temps else None)


def _max_temp(results: Sequence[dict[str, Any]]) -> float | None:
    temps = [r.get("temp_c") for r in results if r.get("temp_c") is not None]
    return max(temps) if temps else None


def _stats(result: dict[str, Any], runtime: str) -> dict[str, float]:
    return {k: float(result[k]) for k in stat_keys(runtime)}


def profile_device(
    profile: DeviceProfile,
    request: ProfileRequest,
    *,
    on_progress: Progress | None = None,
    device: Device | None = None,
) -> dict[str, Any]:
    """Build (or resume) the LUT of ``request.space`` on the device of ``profile``.

    Returns ``{lut, entries, measured, resumed, seconds, ...}``. Rows are appended as
    they are measured; if the device fails half-way, what was measured stays in the
    file and ``resume=True`` measures only the rest. Raises DeviceError (exit 1) on
    device failures, LUTError/SpaceError (exit 2) on bad input.
    """
    space = get_space(request.space)
    resolutions = tuple(space.check_resolutions(request.resolutions or space.lut_resolutions))
    runtime = request.runtime or profile.runtime
    threads = request.threads or profile.threads
    if runtime not in runtimes.REGISTRY:
        raise LUTError(f"runtime {runtime!r} is not supported; expected one of {', '.join(runtimes.NAMES)}")
    fmt = runtimes.REGISTRY[runtime].model_format
    request = dataclasses.replace(request, plan=measure_settings(profile, request.plan, request.overrides))
    if request.out:
        out = Path(request.out)
        if not out.parent.is_dir():
            raise LUTError(f"{out}: cannot write the LUT: no such folder {out.parent}")
    else:
        out = default_lut_path(profile, space.name, runtime, request.dtype, threads, request.batch)
        out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not request.resume and not os.access(out, os.W_OK):
        raise LUTError(f"{out}: cannot write the LUT: permission denied")
    if out.exists() and not request.resume and not request.force:
        raise LUTError(f"{out}: a LUT is already there; rerun with --resume to keep its rows and measure the rest, "
                       "or with --force to replace it (its sidecars too)")
    started = time.perf_counter()
    builder = WorkloadBuilder(space=space, fmt=fmt, dtype=request.dtype, batch=request.batch)
    own_device = device is None
    device = device or Device(profile)
    try:
        if device.lock is None:
            device.acquire(resume=request.resume)
        try:
            return _profile(device, space, resolutions, runtime, threads, request, builder, out, started, on_progress)
        except DeviceError as exc:
            # A link may drop between two commands: the reconnect's error then speaks of
            # connecting only. Whatever failed, the rows measured are kept: say how to go on
            # (an error without a hint gets the CLI's resume hint).
            if exc.exit_code == 1 and exc.hint and "--resume" not in exc.hint:
                exc.hint += f"; then rerun with --resume: the rows measured so far are kept in {out}"
                exc.args = (exc.one_line(),)
            raise
    finally:
        if own_device:
            device.close()


def _profile(
    device: Device,
    space: SearchSpace,
    resolutions: tuple[int, ...],
    runtime: str,
    threads: int,
    request: ProfileRequest,
    builder: WorkloadBuilder,
    out: Path,
    started: float,
    on_progress: Progress | None,
) -> dict[str, Any]:
    fingerprint, temp_paths, temp_before = _fingerprint(device)
    entries = space.all_lut_entries(resolutions)
    meta = default_metadata(space=space.name, resolutions=resolutions, statistic=LUT_STATISTIC)
    meta.update(
        runtime={"name": runtime, "version": None, "threads": threads},
        exporter=builder._exporter,
        dtype=request.dtype,
        batch=request.batch,
        threads=threads,
        cores=device.profile.cores,
        device=fingerprint,
        measurement={
            "raw_statistic": sampling_statistic(request.plan, runtime),
            **request.plan.to_dict(),
            "note": f"lut_ms = calibration.a * ({sampling_statistic(request.plan, runtime)} * reference/ref_ms - overhead)"
                    " + calibration.c_ms_per_mparam * the entry's parameters (M); see calibration",
        },
    )
    # The runtime version is known once the runner said hello (a benchmark program: a tiny batch).
    with _BUILD_LOCK:
        reference = builder.reference()
    hello_version = _runtime_version(device, reference, runtime, threads)
    meta["runtime"]["version"] = hello_version
    noise = noise_gate(device, reference, runtime=runtime, threads=threads, settings=request.plan)
    meta["noise_floor"] = noise["noise_floor"]
    meta["measurement"]["noise"] = {k: noise[k] for k in ("waited_s", "quiet", "windows_ms")}

    writer = LUTWriter(out, metadata=meta, columns=lut_columns(runtime), resume=request.resume, keep_samples=True, keep_ops=request.plan.profile_ops)
    done = writer.open()
    resumed = len(done)
    todo_entries = [e for e in entries if (e.key, e.resolution) not in done]
    total = len(entries) + len(resolutions)
    count = [resumed]

    def progress(what: str) -> None:
        if on_progress is not None:
            on_progress(count[0], total, what)

    progress("exporting workloads")
    calib_archs = _calibration_archs(space, resolutions, request)
    with _BUILD_LOCK:
        todo_overheads = [r for r in resolutions if (OVERHEAD_KEY, r) not in done]
        builder.convert(entries=todo_entries, archs=calib_archs, overheads=todo_overheads)  # .tflite: one worker pool
        entry_work = [builder.overhead(r) for r in todo_overheads] + builder.entries(todo_entries)
        calib_work = builder.subnets(calib_archs)
    workloads = interleave(entry_work, calib_work)
    results: list[dict[str, Any]] = []
    calib: list[dict[str, Any]] = []

    def on_result(w: Workload, res: dict[str, Any], ref_ms: float) -> None:
        if w.kind == "subnet":
            calib.append({"id": w.id, "value": float(res[sampling_statistic(request.plan, runtime)]), "ref_ms": ref_ms})
            return
        stats = _stats(res, runtime)
        op = OVERHEAD_OP if w.kind == "overhead" else None
        row = entry_row(w.key, w.resolution, runs=int(res["runs"]), stats=stats, op=op)
        row.update(measure_cells(res))
        row["ref_ms"] = ref_ms
        row[LUT_STATISTIC] = stats[sampling_statistic(request.plan, runtime)]  # provisional until calibration
        writer.write(row, samples=res.get("samples_ms"), ops=res.get("ops"))
        results.append(res)
        count[0] += 1
        progress(w.key[:48])

    refs: list[float] = []
    try:
        refs = measure_batches(
            device, workloads, reference=reference, plan=request.plan, runtime=runtime, threads=threads,
            on_result=on_result, temp_paths=temp_paths,
        )
    finally:
        writer.close()
    measured = len(results)
    by_id = {c["id"]: c for c in calib}
    calibration = {"subnets": [(a, by_id[w.id]) for a, w in zip(calib_archs, calib_work, strict=False) if w.id in by_id]}
    lut = LUT.load(out)
    lut.metadata.update(meta)
    ref_all = [float(v) for v in lut.rows["ref_ms"].tolist()] + list(refs)
    ref_lut = float(np.median(ref_all)) if ref_all else float("nan")
    _apply_calibration(lut, calibration, ref_lut)
    lut.metadata["reference"] = {
        "name": "max subnet at the smallest LUT resolution",
        "arch": space.max_arch(min(space.lut_resolutions)).to_dict(),
        "statistic": sampling_statistic(request.plan, runtime),
        "ms": ref_lut,
        "spread_pct": _spread_pct(ref_all),
    }
    lut.metadata["temperatures_c"] = {"before": temp_before, "after": _max_temp(results)}
    lut.metadata["date"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    lut.save(out)
    return {
        "lut": str(out),
        "device": device.profile.name,
        "entries": len(lut),
        "measured": measured,
        "resumed": resumed,
        "inferences": int(sum(int(r.get("runs", 0)) for r in results)),
        "calibration": lut.metadata.get("calibration"),
        "seconds": time.perf_counter() - started,
    }


def _spread_pct(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    v = np.asarray(values, dtype=float)
    return float((v.max() - v.min()) / np.median(v) * 100)


def _runtime_version(device: Device, reference: Workload, runtime: str, threads: int) -> str | None:
    from ..agents.device import ModelFile
    from ..agents.profiles import PYTHON_RUNTIMES

    if runtime in PYTHON_RUNTIMES:  # the runner's hello alone: nothing staged before the whole batch is
        return device.runtime_hello(runtime).get("runtime_version")
    device.measure([ModelFile(reference.id, reference.path)], runtime=runtime, threads=threads, runs=1, warmup=0, min_seconds=0, keep_samples=False)
    return (device.hello or {}).get("runtime_version")


def _calibration_archs(space: SearchSpace, resolutions: Sequence[int], request: ProfileRequest) -> list[Any]:
    """Whole subnets measured beside the entries (min, max and random ones per resolution)."""
    rng = np.random.default_rng(request.seed + 7919)
    archs: list[Any] = []
    for r in resolutions:
        chosen = [space.min_arch(r), space.max_arch(r)]
        while len(chosen) < max(2, request.calibration_subnets):
            chosen.append(space.sample(rng, [r]))
        archs += chosen
    return archs


def _apply_calibration(lut: LUT, calib: dict[str, Any], ref_lut: float) -> None:
    """Fit ``whole = a * sum(entry - o) + c * sum(entry parameters) + b`` per resolution
    (:func:`~.calibration.calibration_fit`: ``c`` is 0 where the term does not predict the calibration
    networks better) and write ``lut_ms``."""
    from ..supernet import get_space

    space = get_space(lut.metadata["space"])
    rows = lut.rows
    stat = (lut.metadata.get("measurement") or {}).get("raw_statistic") or "p10_ms"
    smooth = smoothed_refs([*rows["ref_ms"].astype(float).tolist(), *(m["ref_ms"] for _, m in calib["subnets"])])
    norm = (rows[stat].astype(float) * ref_lut / rows["ref_ms"].astype(float).map(smooth)).to_numpy()
    value = {(k, int(r)): float(v) for k, r, v in zip(rows["key"], rows["resolution"], norm, strict=False)}
    result: dict[str, Any] = {}
    lut_ms = np.array(norm, dtype=float)
    resolutions = sorted({int(x) for x in rows["resolution"]})
    entry_params = {(e.key, e.resolution): e.params / 1e6 for e in space.all_lut_entries(resolutions)}
    params = np.array([entry_params.get((k, int(r)), 0.0) for k, r in zip(rows["key"], rows["resolution"], strict=False)])
    for r in resolutions:
        o = value.get((OVERHEAD_KEY, r), 0.0)
        xs, ws, ys, nets = [], [], [], []
        for arch, m in calib["subnets"]:
            if arch.r != r:
                continue
            entries = space.lut_entries(arch)
            xs.append(sum(value[(e.key, e.resolution)] - o for e in entries))
            ws.append(sum(e.params for e in entries) / 1e6)
            ys.append(m["value"] * ref_lut / smooth[m["ref_ms"]])
            nets.append(arch.to_json())
        a, b, c = calibration_fit(xs, ys, o, ws)
        resid = residuals_pct(a, b, xs, ys, c, ws)
        result[str(r)] = {
            "a": a,
            "b_ms": b,
            "c_ms_per_mparam": c,
            "overhead_ms": o,
            "subnets": len(xs),
            "max_abs_residual_pct": float(np.max(resid)) if len(resid) else None,
            # as measured (normalised to the LUT's reference speed): a validation re-measures some of them
            # to learn how far the machine's speed moved since (profiler/validate.py, anchors)
            "networks": [{"arch": a, "ms": float(y)} for a, y in zip(nets, ys, strict=True)],
        }
        sel = (rows["resolution"].astype(int) == r).to_numpy()
        is_over = (rows["key"] == OVERHEAD_KEY).to_numpy()
        # an op cheaper than one inference's fixed cost (a pooling of a few numbers) costs ~0 in a network
        lut_ms[sel & ~is_over] = np.maximum(a * (norm[sel & ~is_over] - o), 0.0) + c * params[sel & ~is_over]
        lut_ms[sel & is_over] = b
    rows[LUT_STATISTIC] = lut_ms
    lut.metadata["calibration"] = result


# Public name for the other packages' callers of the profiler's fingerprint.
device_fingerprint = _fingerprint
