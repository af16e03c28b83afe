"""Measurement plan: batches of workloads, interleaved rounds, a reference in every batch.

This machine (and any shared or thermally limited device) changes speed while it is
being measured. Three things make a LUT robust to it:

- every batch of models sent to the runner also holds the *reference* workload, and
  every result records the reference latency of its own batch (``ref_ms``), so values
  from batches measured at different machine speeds are normalised to one speed;
- inside a batch, models are measured round-robin (``rounds``), so a slow spell
  affects all of them alike;
- the statistic is a low quantile (``p10_ms``): interference only ever adds time, so the
  lower tail moves far less than the median between runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..agents.device import Device, ModelFile
from .workloads import Workload

log = logging.getLogger(__name__)

#: The raw statistic LUT values and validations are computed from (Python runner runtimes).
RAW_STATISTIC = "p10_ms"
STAT_KEYS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "min_ms")
#: Benchmark programs (benchmark_model, onnxruntime_perf_test) print no per-run samples: every
#: variant prints the mean, std, min and max, so those runtimes are measured by their mean.
BINARY_STATISTIC = "mean_ms"
BINARY_STAT_KEYS = ("mean_ms", "std_ms", "min_ms", "max_ms")


def raw_statistic(runtime: str) -> str:
    """The statistic measurements of ``runtime`` are compared by."""
    return RAW_STATISTIC if runtime in ("onnxruntime", "litert") else BINARY_STATISTIC


def stat_keys(runtime: str) -> tuple[str, ...]:
    """The statistics every result of ``runtime`` carries (the LUT's latency columns)."""
    return STAT_KEYS if runtime in ("onnxruntime", "litert") else BINARY_STAT_KEYS


@dataclass(frozen=True)
class MeasurePlan:
    """How each workload is measured on a device."""

    rounds: int = 3
    runs: int = 10
    warmup: int = 10
    min_seconds: float = 0.0
    batch_size: int = 24
    profile_ops: bool = False


def measure_batches(
    device: Device,
    workloads: Sequence[Workload],
    *,
    reference: Workload,
    plan: MeasurePlan,
    runtime: str,
    threads: int,
    on_result: Callable[[Workload, dict[str, Any], float], None],
    on_batch: Callable[[int, int], None] | None = None,
    temp_paths: Sequence[str] = (),
    extra_job: dict[str, Any] | None = None,
) -> list[float]:
    """Measure ``workloads`` in batches, the reference in each; ``on_result(workload, result, ref_ms)``
    is called for each result as its batch completes. Returns the reference's latency per batch."""
    by_id = {w.id: w for w in workloads}
    refs: list[float] = []
    batches = [list(workloads[i : i + plan.batch_size]) for i in range(0, len(workloads), plan.batch_size)]
    # one archive for everything up front: a remote device's round trips per batch drop to the run itself
    device.stage([ModelFile(w.id, w.path) for w in [reference, *workloads]], runtime=runtime)
    for n, batch in enumerate(batches):
        models = [ModelFile(reference.id, reference.path)] + [ModelFile(w.id, w.path) for w in batch]
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
            extra=extra_job,
        )
        ok = {r["id"]: r for r in results if r.get("type") == "result"}
        failed = [r for r in results if r.get("type") == "error"]
        if reference.id not in ok:
            from ..agents.errors import DeviceError

            raise DeviceError("the reference workload failed to run", device=device.profile.name)
        ref_ms = float(ok[reference.id][raw_statistic(runtime)])
        refs.append(ref_ms)
        for err in failed:
            from ..agents.errors import DeviceError

            raise DeviceError(f"model {err.get('id')} failed: {err.get('message')}", device=device.profile.name)
        for mid, res in ok.items():
            if mid == reference.id:
                continue
            on_result(by_id[mid], res, ref_ms)
        if on_batch is not None:
            on_batch(n + 1, len(batches))
    return refs
