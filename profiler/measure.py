"""Measurement plan: batches of workloads, interleaved rounds, a reference in every batch, adaptive sampling.

This machine (and any shared or thermally limited device) changes speed while it is
being measured. What makes a LUT robust to it:

- every batch of models sent to the runner also holds the *reference* workload, and
  every result records the reference latency of its own batch (``ref_ms``), so values
  from batches measured at different machine speeds are normalised to one speed; the reference
  is timed as ``reference_sessions`` sessions of its model spread over the batch, and the
  batch's reference is their median (one session can run slower for its whole life);
- inside a batch, models are measured round-robin (``rounds``), so a slow spell
  affects all of them alike;
- sampling is adaptive: each model is measured until its statistic's confidence interval
  is within ``precision`` (or ``max_entry_s`` is spent), see ``agents/measure_settings.py``;
  every result carries ``ci`` and ``converged``;
- the statistic comes from the runtime registry (``agents/runtimes.py``);
- every result a device returns is checked before anyone writes it (:func:`check_results`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..agents import runtimes
from ..agents.device import Device, ModelFile
from ..agents.errors import DeviceError
from ..agents.measure_settings import MeasureSettings
from ..agents.runner import Z95
from .workloads import Workload

log = logging.getLogger(__name__)

#: The one measurement settings type (also a profile's ``measure:`` block); the old name stays for callers.
MeasurePlan = MeasureSettings


#: Workload kinds measured in every one of ``MeasureSettings.processes`` runner processes (the others in the first).
AGAIN = ("entry", "overhead")


def raw_statistic(runtime: str) -> str:
    """The statistic measurements of ``runtime`` are compared by (the registry's)."""
    return runtimes.get_runtime(runtime).statistic


def stat_keys(runtime: str) -> tuple[str, ...]:
    """The statistics every result of ``runtime`` carries (the LUT's latency columns)."""
    return runtimes.get_runtime(runtime).stat_keys


#: The Python runner runtimes' statistic and statistics (for callers that measure only with those).
RAW_STATISTIC = runtimes.get_runtime("onnxruntime").statistic
STAT_KEYS = runtimes.get_runtime("onnxruntime").stat_keys


def sampling_statistic(plan: MeasureSettings, runtime: str) -> str:
    """The statistic adaptive sampling aims at: the plan's, else the runtime's."""
    if plan.statistic is not None and plan.statistic not in stat_keys(runtime):
        raise DeviceError(f"runtime {runtime} reports no {plan.statistic}; it reports {', '.join(stat_keys(runtime))}")
    return plan.statistic or raw_statistic(runtime)


def runner_job(plan: MeasureSettings, runtime: str) -> dict[str, Any]:
    """The job keys the runner's stopping rule reads, beside those ``Device.measure`` sends itself."""
    job = plan.job()
    job["statistic"] = sampling_statistic(plan, runtime)
    return {k: job[k] for k in ("precision", "max_entry_s", "statistic", "cooldown_s", "max_temp_c")}


def check_results(
    results: Sequence[Mapping[str, Any]], *, known: Sequence[str], runtime: str, device: str
) -> None:
    """Refuse what a device returned unless every result names a model it was sent, carries the
    runtime's statistics and ``runs``, and every time is a finite number >= 0. Raises DeviceError
    (exit 1) naming the device and the model, before anything of the batch is written."""
    rt = runtimes.get_runtime(runtime)
    ids = set(known)
    for res in results:
        mid = res.get("id")
        if mid not in ids:
            raise DeviceError(f"the device returned a result for an unknown model id {str(mid)[:80]!r}", device=device)
        if res.get("type") != "result":
            continue
        required = rt.stat_keys if rt.samples else (rt.statistic,)
        for key in ("runs", *required):
            if res.get(key) is None:
                raise DeviceError(f"model {mid}: the result lacks {key!r}", device=device)
        for key in (*rt.stat_keys, "runs"):
            value = res.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise DeviceError(f"model {mid}: {key} is {value!r}; expected a finite number >= 0", device=device)
        if int(res["runs"]) < 1:
            raise DeviceError(f"model {mid}: runs is {res['runs']!r}; expected at least 1", device=device)
        bad = [v for v in res.get("samples_ms") or () if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0]
        if bad:
            raise DeviceError(f"model {mid}: a per-run sample is {bad[0]!r}; expected a finite number >= 0", device=device)


def _fill_ci(res: dict[str, Any], plan: MeasureSettings, runtime: str) -> None:
    """``ci``/``converged`` for results whose device computed none (benchmark programs print a mean and a
    standard deviation: the mean's normal interval)."""
    if "ci" in res and "converged" in res:
        return
    mean, std, n = res.get("mean_ms"), res.get("std_ms"), int(res.get("runs") or 0)
    ci = Z95 * std / math.sqrt(n) / mean if mean and std is not None and n > 1 else None
    res["ci"] = ci
    res["converged"] = ci is not None and ci <= plan.precision


def measure_batches(
    device: Device,
    workloads: Sequence[Workload],
    *,
    reference: Workload,
    plan: MeasureSettings,
    runtime: str,
    threads: int,
    on_result: Callable[[Workload, dict[str, Any], float], None],
    on_batch: Callable[[int, int], None] | None = None,
    temp_paths: Sequence[str] = (),
    extra_job: dict[str, Any] | None = None,
    batches: Sequence[Sequence[Workload]] | None = None,
) -> list[float]:
    """Measure ``workloads`` in batches, the reference in each; ``on_result(workload, result, ref_ms)``
    is called for each result as its batch completes (every result carries ``ci`` and ``converged``).
    Returns the reference's latency per runner process. With ``plan.processes`` > 1 the LUT entries of each
    batch (:data:`AGAIN`) are measured in that many runner processes one after the other (the second in the
    reverse order), and each keeps the result of the process where it ran fastest relative to that process's
    reference (with ``process_spread``, how far the processes disagreed). A workload may appear under several ids (two passes of a
    validation): ids are what the device sees. ``batches`` gives the runner jobs already formed (each
    workload of ``workloads`` in one of them); by default ``workloads`` are cut in ``plan.batch_size`` chunks."""
    by_id = {w.id: w for w in workloads}
    refs: list[float] = []
    stat = sampling_statistic(plan, runtime)
    if batches is None:
        batches = [list(workloads[i : i + plan.batch_size]) for i in range(0, len(workloads), plan.batch_size)]
    # one archive for everything up front: a remote device's round trips per batch drop to the run itself
    device.stage([ModelFile(w.id, w.path) for w in [reference, *workloads]], runtime=runtime)
    for n, batch in enumerate(batches):
        got: dict[str, list[tuple[dict[str, Any], float]]] = {}  # id: (result, its process's reference) each
        for k in range(plan.processes):
            # the later processes measure the LUT's entries again (whole subnets once: a calibration leaves an
            # outlying network out of its fit, the anchors' drift is a median, validation has its passes)
            order = list(batch) if k == 0 else [w for w in batch if w.kind in AGAIN]
            if k % 2:
                order.reverse()  # other neighbours before each model
            if not order:
                break
            ok, ref_ms = _measure_once(device, reference, order, plan=plan, stat=stat, runtime=runtime,
                                       threads=threads, temp_paths=temp_paths, extra_job=extra_job)
            refs.append(ref_ms)
            for mid, res in ok.items():
                got.setdefault(mid, []).append((res, ref_ms))
        for w in batch:
            if w.id not in got:
                continue
            tries = got.pop(w.id)
            speeds = [float(res[stat]) / ref for res, ref in tries]
            res, ref_ms = tries[int(np.argmin(speeds))]
            if len(tries) > 1:  # how far the processes disagreed on this model: (slowest - fastest) / fastest
                res["process_spread"] = float(max(speeds) / min(speeds) - 1.0) if min(speeds) > 0 else None
            _fill_ci(res, plan, runtime)
            on_result(by_id[w.id], res, ref_ms)
        if on_batch is not None:
            on_batch(n + 1, len(batches))
    return refs


def _measure_once(
    device: Device,
    reference: Workload,
    batch: Sequence[Workload],
    *,
    plan: MeasureSettings,
    stat: str,
    runtime: str,
    threads: int,
    temp_paths: Sequence[str],
    extra_job: dict[str, Any] | None,
) -> tuple[dict[str, dict[str, Any]], float]:
    """One runner process over ``batch`` and the reference's sessions (the first before the batch, the others
    spread over it): every model's checked result by id, and the median of the reference sessions' ``stat``."""
    name = device.profile.name
    ref_ids = reference_session_ids(reference, plan.reference_sessions)
    models = [ModelFile(w.id, w.path) for w in batch]
    for k, rid in reversed(list(enumerate(ref_ids))):  # the first session first, the others spread evenly
        models.insert(k * len(batch) // len(ref_ids), ModelFile(rid, reference.path))
    results = device.measure(
        models,
        runtime=runtime,
        threads=threads,
        runs=plan.runs,
        warmup=plan.warmup,
        min_seconds=plan.min_seconds,
        rounds=plan.rounds,
        profile_ops=plan.profile_ops,
        keep_samples=True,
        temp_paths=temp_paths,
        extra={**runner_job(plan, runtime), **(extra_job or {})},
    )
    check_results(results, known=[m.id for m in models], runtime=runtime, device=name)
    ok = {r["id"]: r for r in results if r.get("type") == "result"}
    failed = [r for r in results if r.get("type") == "error"]
    answered = set(ok) | {r.get("id") for r in failed}
    silent = [m.id for m in models if m.id not in answered]
    if silent:
        raise DeviceError(
            f"the runner returned no result for {len(silent)} of {len(models)} models (first: {silent[0]})",
            device=name,
        )
    if any(rid not in ok for rid in ref_ids):
        raise DeviceError("the reference workload failed to run", device=name)
    for err in failed:
        raise DeviceError(f"model {err.get('id')} failed: {err.get('message')}", device=name)
    ref_ms = float(np.median([float(ok.pop(rid)[stat]) for rid in ref_ids]))
    return ok, ref_ms


def reference_session_ids(reference: Workload, sessions: int) -> list[str]:
    """The ids the reference's ``sessions`` sessions go by in a runner job (the first its own)."""
    return [reference.id] + [f"{reference.id}#{k}" for k in range(2, sessions + 1)]
