"""`lut diff --recheck DEVICE`: re-measure the entries a diff flagged or could not decide, then decide.

A table measured under noise holds entries that moved by more than the threshold without standing out
from the noise (undecided), and a flagged entry may still be one unlucky measurement. Re-measuring them
on the device the NEW table came from gives a second, independent measurement of each:

- the device must be the NEW table's: its fingerprint (``device.model``, ``device.soc``) and runtime
  (``runtime.name``, and ``runtime.version`` where the runner reports one) are compared first, and a
  difference is refused (NotComparable, exit 2) naming the field;
- each suspect is measured in batches holding the reference workload, like the profile; its value is
  normalised to the NEW table's speed by the reference (``raw / ref_ms`` now and in the NEW row), so the
  recheck measures the entry's change against NEW (``ratio_to_new``) and, through NEW, against BASE;
- suspects and controls are measured in ``PASSES`` passes, each in another order, and each entry's value
  is the median of its passes;
- a few entries the diff found unchanged (controls) are re-measured in the same batches: a batch of a
  handful of models need not run at the speed of a whole profile's batches (seen here: +6% on every model
  of one recheck batch), so the controls' median change is that batch's own offset, taken off every
  suspect's rechecked change (``controls`` and ``offset_pct`` in the summary);
- suspects left undecided after a round are measured again beside the controls, up to ``ROUNDS`` rounds
  (``rounds`` in the summary); an entry's value is the median of all its passes;
- the verdict then uses both measurements: a **regression** when both the NEW and the rechecked change
  are beyond the threshold and their mean log change exceeds ``noise_z`` robust standard deviations of
  the table's between-run noise divided by sqrt(2) (two independent measurements); **ok** (cleared) when
  the rechecked change is within the threshold; otherwise it stays **noise** and undecided.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import statistics
import time
from typing import Any

from ..agents.device import Device
from .diff import DiffResult, EntryChange, _impacts
from .errors import NotComparable
from .lut import LUT
from .measure import measure_batches, raw_statistic
from .workloads import RUNTIME_FORMAT, WorkloadBuilder

log = logging.getLogger(__name__)

__all__ = ["check_recheck_device", "recheck"]


def check_recheck_device(device: Device, new: LUT) -> None:
    """Refuse (NotComparable, exit 2) a device whose fingerprint or runtime differs from NEW's metadata."""
    from ..agents import probe as probe_mod
    from ..agents.profiles import PYTHON_RUNTIMES

    meta = new.metadata
    name = device.profile.name
    runtime = (meta.get("runtime") or {}).get("name")
    if device.profile.runtime != runtime:
        raise NotComparable(
            f"--recheck {name}: runtime.name is {device.profile.runtime!r} on the device, {runtime!r} in {new.source}"
        )
    state = probe_mod.probe_profile(device.profile, transport=device.transport)
    fp = probe_mod.fingerprint(state)
    for field in ("model", "soc"):
        want = (meta.get("device") or {}).get(field)
        if want is not None and fp.get(field) != want:
            raise NotComparable(
                f"--recheck {name}: device.{field} is {fp.get(field)!r} on the device, {want!r} in {new.source}"
            )
    version = (meta.get("runtime") or {}).get("version")
    if version is not None and runtime in PYTHON_RUNTIMES:
        now = device.runtime_hello(runtime).get("runtime_version")
        if now is not None and str(now) != str(version):
            raise NotComparable(
                f"--recheck {name}: runtime.version is {now!r} on the device, {version!r} in {new.source}"
            )


#: Unchanged entries re-measured beside the suspects, to measure the recheck batches' own speed offset.
CONTROLS = 8
#: Each suspect and control is measured this many times, in other batches; its value is their median (one
#: pass left 2 of 3 unchanged entries undecided at 5-7% on this machine, three passes 1 run in 10).
PASSES = 5
#: Entries still undecided after a round are measured again (with the controls), up to this many rounds in
#: all; each entry's value is the median of all its passes (one round of five passes left an unchanged
#: entry undecided in 1 CI run of about 10).
ROUNDS = 3


def _controls(result: DiffResult, suspects: list[EntryChange], new: LUT, stat: str, *, n: int, seed: int) -> list[EntryChange]:
    """Up to ``n`` decided, unchanged entries (verdict ok) whose raw statistic NEW holds, spread evenly over the
    table's order from a seeded start."""
    taken = {(e.key, e.resolution) for e in suspects}
    pool = [e for e in result.entries if e.verdict == "ok" and e.decided and (e.key, e.resolution) not in taken
            and _new_normalised(new, e.key, e.resolution, stat) is not None]
    if len(pool) <= n:
        return pool
    start = seed % len(pool)
    step = len(pool) / n
    return [pool[(start + int(i * step)) % len(pool)] for i in range(n)]


def _new_normalised(new: LUT, key: str, res: int, stat: str) -> float | None:
    row = new.row(key, res)
    raw, ref = row.get(stat), row.get("ref_ms")
    try:
        raw, ref = float(raw), float(ref)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(raw) and math.isfinite(ref) and raw > 0 and ref > 0):
        return None
    return raw / ref


def _offset(controls: list[EntryChange], got: dict[tuple[str, int], float], new: LUT, stat: str) -> float:
    """The recheck batches' own speed offset (log): the median change of the controls re-measured."""
    changes = []
    for c in controls:
        now, before = got.get((c.key, c.resolution)), _new_normalised(new, c.key, c.resolution, stat)
        if now is not None and before is not None:
            changes.append(math.log1p(c.change_pct / 100.0) + math.log(now / before))
    return float(sorted(changes)[len(changes) // 2]) if changes else 0.0


def _judge(e: EntryChange, got: dict[tuple[str, int], float], new: LUT, stat: str, thr: float, offset: float,
           result: DiffResult) -> tuple[str, dict[str, Any]]:
    """One suspect's verdict from its rechecked value: ``confirmed``, ``ok``, ``noise`` or ``error``, and the
    ``rechecked`` record."""
    now = got.get((e.key, e.resolution))
    before = _new_normalised(new, e.key, e.resolution, stat)
    if now is None or before is None:
        return "error", {"error": "not re-measured" if now is None else "the NEW row lacks its raw statistic or ref_ms"}
    ratio = now / before
    change_new = math.log1p(e.change_pct / 100.0)
    change_re = change_new + math.log(ratio) - offset
    sigma = (e.noise_pct or 0.0) / 100.0
    both = (change_new > thr and change_re > thr) or (change_new < -thr and change_re < -thr)
    stands_out = abs(change_new + change_re) / 2 > result.noise_z * sigma / math.sqrt(2)
    rechecked = {"ratio_to_new": ratio, "change_pct": 100.0 * math.expm1(change_re)}
    if both and stands_out:
        return "confirmed", rechecked
    if abs(change_re) <= thr:
        return "ok", rechecked
    return "noise", rechecked


def recheck(
    result: DiffResult,
    base: LUT,
    new: LUT,
    device: Device,
    *,
    plan: Any = None,
    samples: int = 1000,
    seed: int = 0,
) -> DiffResult:
    """Re-measure ``result``'s regressions, improvements and undecided entries on ``device`` (acquired, the
    NEW table's device) and re-judge them; updates and returns ``result`` (``rechecked`` per entry and at
    the top). Raises NotComparable for another device, DeviceError when the device fails."""
    started = time.perf_counter()
    check_recheck_device(device, new)
    suspects: list[EntryChange] = [e for e in result.entries if e.verdict in ("regression", "improvement") or not e.decided]
    summary: dict[str, Any] = {"device": device.profile.name, "entries": len(suspects), "confirmed": 0, "cleared": 0,
                               "undecided": 0, "seconds": 0.0}
    result.rechecked = summary
    if not suspects:
        return result
    meta = new.metadata
    runtime = str((meta.get("runtime") or {}).get("name"))
    threads = int(meta.get("threads") or 1)
    stat = raw_statistic(runtime)
    from ..supernet import get_space

    space = get_space(new.space)
    controls = _controls(result, suspects, new, stat, n=CONTROLS, seed=seed)
    want = {(e.key, e.resolution) for e in [*suspects, *controls]}
    entries = [x for x in space.all_lut_entries(new.resolutions) if (x.key, x.resolution) in want]
    builder = WorkloadBuilder(space=space, fmt=RUNTIME_FORMAT[runtime], dtype=str(meta.get("dtype") or "float32"),
                              batch=int(meta.get("batch") or 1))
    by_key = {(w.key, int(w.resolution)): w for w in builder.entries(entries)}
    rng = random.Random(seed)
    passes: dict[tuple[str, int], list[float]] = {}
    thr = math.log1p(result.threshold_pct / 100.0)
    pending = list(suspects)
    summary["rounds"] = 0
    for _ in range(ROUNDS):
        # this round measures the suspects still undecided and every control, PASSES passes in other orders
        want_now = {(e.key, e.resolution) for e in [*pending, *controls]}
        unique = [w for k, w in by_key.items() if k in want_now]
        workloads = []
        for p in range(PASSES):
            order = list(unique)
            rng.shuffle(order)
            tag = summary["rounds"] * PASSES + p
            workloads += [dataclasses.replace(w, id=f"{w.id}~{tag}") for w in order]

        def on_result(w: Any, res: dict[str, Any], ref_ms: float) -> None:
            passes.setdefault((w.key, int(w.resolution)), []).append(float(res[stat]) / ref_ms)

        measure_batches(device, workloads, reference=builder.reference(), plan=plan or device.profile.measure,
                        runtime=runtime, threads=threads, on_result=on_result)
        summary["rounds"] += 1
        got = {k: float(statistics.median(v)) for k, v in passes.items()}
        offset = _offset(controls, got, new, stat)
        pending = [e for e in suspects if _judge(e, got, new, stat, thr, offset, result)[0] == "noise"]
        if not pending:
            break
    summary["controls"] = sum(1 for c in controls if (c.key, c.resolution) in got)
    summary["offset_pct"] = 100.0 * math.expm1(offset)
    for e in suspects:
        verdict, rechecked = _judge(e, got, new, stat, thr, offset, result)
        e.rechecked = rechecked
        if verdict == "error":
            summary["undecided"] += 1
        elif verdict == "confirmed":
            e.verdict = "regression" if rechecked["change_pct"] > 0 else "improvement"
            e.decided = True
            summary["confirmed"] += 1
        elif verdict == "ok":
            e.verdict = "ok"
            e.decided = True
            summary["cleared"] += 1
        else:
            e.verdict = "noise"
            e.decided = False
            summary["undecided"] += 1
    if result.network is not None and result.drift is not None:
        _impacts(result, base, new, 1.0 + result.drift, samples=samples, seed=seed)
    summary["seconds"] = time.perf_counter() - started
    return result
