"""Measure a table of entries (one model file per LUT key) on a device, calibrated on whole networks.

The public per-entry table API for callers outside ``profile_device``'s search spaces (Pruning-as-Search's
per-layer tables): the caller exports the workloads, this module measures them the profiler's way for any
runtime of the registry (:mod:`hwnas.agents.runtimes`), Python runner or benchmark program, and writes an
hwnas LUT file (:mod:`.lut`):

- batches with a reference workload in each, interleaved rounds (:func:`.measure.measure_batches`); values
  are normalised to the run's median reference speed;
- the statistic is the runtime's (or the settings'; :func:`.measure.sampling_statistic`), the LUT columns are
  the runtime's (:func:`.profile.lut_columns`), with each row's ``ci``/``converged``;
- per resolution ``whole = a * sum(entry - o) + b`` is fitted on the whole networks (``o`` the overhead
  workload), and the LUT column ``lut_ms`` holds ``a * (value - o)`` per entry and ``b`` in the
  ``Overhead-inference`` row, so a plain sum of entries predicts a whole network;
- the metadata says what was measured and how (runtime and version, exporter, device fingerprint,
  temperatures, reference, settings, calibration).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..agents.device import Device
from ..agents.measure_settings import MeasureSettings
from .calibration import calibration_line, interleave, residuals_pct, smoothed_refs
from .errors import LUTError
from .lut import LUT, OVERHEAD_OP, LUTWriter, default_metadata, entry_row, measure_cells
from .measure import measure_batches, sampling_statistic, stat_keys
from .profile import LUT_STATISTIC, device_fingerprint, lut_columns
from .workloads import Workload

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class WholeNetwork:
    """A whole network measured beside the entries: its workload (``None`` for the reference workload,
    which every batch measures anyway), the LUT keys whose sum it is, and plain data for the metadata."""

    workload: Workload | None
    keys: tuple[str, ...]
    info: Mapping[str, Any] = field(default_factory=dict)


def measure_entry_table(
    device: Device,
    *,
    entries: Sequence[Workload],
    overhead: Workload,
    reference: WholeNetwork,
    reference_workload: Workload,
    networks: Sequence[WholeNetwork],
    out: Path,
    space: str,
    runtime: str,
    threads: int,
    plan: MeasureSettings,
    exporter: Mapping[str, Any],
    dtype: str = "float32",
    metadata: Mapping[str, Any] | None = None,
    on_progress: Progress | None = None,
) -> LUT:
    """Measure ``entries`` (workloads with a ``key``), the ``overhead`` workload and the whole ``networks`` on
    ``device`` (open, lock held by the caller) and write the calibrated LUT to ``out`` (see the module
    docstring). All workloads share one resolution. ``reference`` describes ``reference_workload`` (measured in
    every batch; its keys make it one more calibration point). ``metadata`` is added to the LUT's.
    Raises DeviceError (exit 1) when the device fails; nothing is written then."""
    resolution = overhead.resolution
    if any(w.resolution != resolution for w in entries):
        raise LUTError(f"{out}: every entry of a table must have the overhead's resolution {resolution}")
    stat = sampling_statistic(plan, runtime)
    fingerprint, temp_paths, temp_before = device_fingerprint(device)
    nets = [n for n in networks if n.workload is not None]
    total = len(entries) + 1 + len(nets)
    workloads = [overhead, *interleave(entries, [n.workload for n in nets if n.workload is not None])]
    got: dict[str, tuple[dict[str, Any], float]] = {}

    def on_result(w: Workload, res: dict[str, Any], ref_ms: float) -> None:
        got[w.id] = (res, ref_ms)
        if on_progress is not None:
            on_progress(len(got), total, w.id[:48])

    refs = measure_batches(
        device, workloads, reference=reference_workload, plan=plan, runtime=runtime, threads=threads,
        on_result=on_result, temp_paths=temp_paths,
    )
    ref_run = float(np.median(refs))
    smooth = smoothed_refs(refs)
    norm = {wid: float(res[stat]) * ref_run / smooth[ref_ms] for wid, (res, ref_ms) in got.items()}
    o = norm[overhead.id]
    by_key = {w.key: norm[w.id] for w in entries}
    measured = [(reference, ref_run)] + [(n, norm[n.workload.id]) for n in nets if n.workload is not None]
    xs = np.array([sum(by_key[k] - o for k in n.keys) for n, _ in measured])
    ys = np.array([m for _, m in measured])
    a, b = calibration_line(xs, ys, o)
    predicted = a * xs + b
    residual = residuals_pct(a, b, xs, ys)

    meta = default_metadata(space=space, resolutions=[resolution], statistic=LUT_STATISTIC)
    temps = [res.get("temp_c") for res, _ in got.values() if res.get("temp_c") is not None]
    meta.update(
        runtime={"name": runtime, "version": (device.hello or {}).get("runtime_version"), "threads": threads},
        exporter=dict(exporter),
        dtype=dtype,
        batch=1,
        threads=threads,
        cores=device.profile.cores,
        device=fingerprint,
        temperatures_c={"before": temp_before, "after": max(temps) if temps else None},
        reference={
            **reference.info,
            "statistic": stat,
            "ms": ref_run,
            "spread_pct": float((max(refs) - min(refs)) / ref_run * 100) if len(refs) > 1 else None,
        },
        measurement={
            "raw_statistic": stat,
            **plan.to_dict(),
            "note": f"lut_ms = calibration.a * ({stat} * reference/ref_ms - overhead); see calibration",
        },
        calibration={
            str(resolution): {
                "a": float(a),
                "b_ms": float(b),
                "overhead_ms": o,
                "subnets": len(measured),
                "max_abs_residual_pct": float(residual.max()),
            }
        },
        networks=[
            {**n.info, "measured_ms": float(m), "predicted_ms": float(p)}
            for (n, m), p in zip(measured, predicted, strict=True)
        ],
    )
    meta.update(metadata or {})
    keys = stat_keys(runtime)
    with LUTWriter(out, metadata=meta, columns=lut_columns(runtime), keep_samples=True) as writer:
        for w in [overhead, *entries]:
            res, ref_ms = got[w.id]
            is_overhead = w.kind == "overhead"
            stats = {k: float(res[k]) for k in keys if res.get(k) is not None}
            row = entry_row(w.key, w.resolution, runs=int(res["runs"]), stats=stats, op=OVERHEAD_OP if is_overhead else None)
            row.update(measure_cells(res))
            row["ref_ms"] = ref_ms
            row[LUT_STATISTIC] = b if is_overhead else max(a * (norm[w.id] - o), 0.0)
            writer.write(row, samples=res.get("samples_ms"))
        lut = writer.finish()
    log.info(
        "table %s: %d entries, calibration a=%.3f b=%.4f ms, max residual %.1f%%",
        out, len(entries), a, b, float(residual.max()),
    )
    return lut


__all__ = ["WholeNetwork", "measure_entry_table"]
