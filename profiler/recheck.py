"""`lut diff --recheck DEVICE`: re-measure the entries a diff flagged or could not decide, then decide.

A table measured under noise holds entries that moved by more than the threshold without standing out
from the noise (undecided), and a flagged entry may still be one unlucky measurement. Re-measuring them
on the device the NEW table came from gives a second, independent measurement of each:

- the device must be the NEW table's: its fingerprint (``device.model``, ``device.soc``) and runtime
  (``runtime.name``, and ``runtime.version`` where the runner reports one) are compared first, and a
  difference is refused (NotComparable, exit 2) naming the field;
- each suspect is measured in batches holding the reference workload, like the profile; its value is
  normalised by the reference (``raw / ref_ms``) and compared with the NEW row's, so the recheck measures
  the entry's change against NEW (``ratio_to_new``) and, through NEW, against BASE;
- a few entries the diff found unchanged (controls), of the suspects' sizes, are measured in **every**
  batch beside the suspects. Under load the reference does not carry a batch's speed to the other models
  (seen here: the reference ratio moved +-20% between batches while the entries did not follow it), so
  each batch's offset is the median change of its controls, and every suspect's pass is corrected by its
  own batch's offset;
- each round measures every suspect ``PASSES`` times, each pass in other batches and another order, and an
  entry's value is the median of its corrected passes. Suspects left undecided after a round are
  measured again, up to ``ROUNDS`` rounds (``rounds`` in the summary);
- the yardstick is what re-measuring an unchanged entry gives now: the robust spread (1.4826 x MAD) of
  the controls' own rechecked changes, each control corrected by the *other* controls (``noise_pct``),
  and never less than one BASE measurement's share of the table's between-run noise;
- the verdict: NEW claims a change one way; a **regression** (or improvement) when the rechecked change
  is beyond the threshold that way by ``RECHECK_Z`` times the yardstick; **ok** (cleared) when
  it does not go beyond the threshold that way; otherwise it stays **noise**, undecided. The rechecked
  change alone must stand out: a NEW claim of +40% and a recheck of +8% is not averaged into a regression.
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


#: Unchanged entries re-measured beside the suspects, in every batch: each batch's own speed offset, and the
#: yardstick of what re-measuring gives. They are chosen like the suspects in size (see :func:`_controls`).
CONTROLS = 16
#: Each suspect and control is measured this many times per round, each pass in a batch (a runner job) of its
#: own and in another order; its value is the median of its passes.
PASSES = 5
#: Entries still undecided after a round are measured again (with the controls), up to this many rounds in
#: all; each entry's value is the median of all its passes.
ROUNDS = 3
#: A rechecked change is confirmed only when it is beyond the threshold by this many robust standard
#: deviations of the controls' own rechecked changes (what re-measuring an unchanged entry gives on this device
#: now): the lower end of a one-sided ~98% interval of the change is past the threshold. Being beyond the
#: threshold and beyond 3 sigma from zero was not enough: under a concurrent load here an entry that NEW
#: claimed +40% and that had not changed rechecked at +5.6% (BASE's own error) with a yardstick below 2%.
RECHECK_Z = 2.0
#: Below this many controls their spread is no estimate; the table's between-run noise is used instead.
MIN_CONTROLS_FOR_SPREAD = 4
#: An entry's own passes give its own spread from this many on (see :meth:`_Passes.pass_spread`).
MIN_PASSES_FOR_SPREAD = 4


def _controls(result: DiffResult, suspects: list[EntryChange], new: LUT, stat: str, *, n: int) -> list[EntryChange]:
    """Up to ``n`` decided, unchanged entries (verdict ok) whose raw statistic NEW holds, chosen like the
    suspects in size: in turn for each suspect, the unused entry nearest to it in log normalised latency.

    Size matters: how far an entry moves between two measurements depends on it (compact space at 32 px,
    four quiet back-to-back profiles here: robust sd 2.0-11.2% for the smaller half of entries, 1.6-4.6% for
    the larger half, single entries up to 40%), so controls of another size would give a yardstick that is
    too narrow (a false confirmation) or too wide."""
    taken = {(e.key, e.resolution) for e in suspects}
    pool = {(e.key, e.resolution): (e, v) for e in result.entries if e.verdict == "ok" and e.decided
            and (e.key, e.resolution) not in taken and (v := _new_normalised(new, e.key, e.resolution, stat)) is not None}
    if len(pool) <= n:
        return [e for e, _ in pool.values()]
    targets = []
    for e in suspects:  # a suspect's size before its change: NEW's value over NEW's change
        v = _new_normalised(new, e.key, e.resolution, stat)
        if v is not None:
            targets.append(math.log(v) - math.log1p(e.change_pct / 100.0))
    out: list[EntryChange] = []
    while len(out) < n and pool and targets:
        for t in targets:
            if len(out) == n or not pool:
                break
            k = min(pool, key=lambda k: (abs(math.log(pool[k][1]) - t), k))
            out.append(pool.pop(k)[0])
    return out


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


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _robust_sd(values: list[float]) -> float:
    """1.4826 x the median absolute deviation: a standard deviation that a few outliers do not move."""
    mid = _median(values)
    return 1.4826 * _median([abs(x - mid) for x in values])


def _round_batches(pending: list[Any], controls: list[Any], size: int, rng: random.Random, first_tag: int) -> list[list[Any]]:
    """One round's runner jobs: ``PASSES`` passes, each pass's suspects (shuffled) split into groups that fit a
    batch beside every control; a batch is one group plus the controls, shuffled. Ids carry the pass."""
    room = max(1, size - len(controls))
    batches = []
    for p in range(PASSES):
        order = list(pending)
        rng.shuffle(order)
        groups = max(1, math.ceil(len(order) / room))
        for g in range(groups):
            batch = [*order[g::groups], *controls]
            rng.shuffle(batch)
            batches.append([dataclasses.replace(w, id=f"{w.id}~{first_tag + p}") for w in batch])
    return batches


@dataclasses.dataclass
class _Passes:
    """Every pass's normalised change against NEW (log of ``raw / ref_ms`` now over NEW's), by entry and batch."""

    before: dict[tuple[str, int], float]
    prior: dict[tuple[str, int], float]  # controls: their change from BASE to NEW (log), which the diff measured
    values: dict[int, dict[tuple[str, int], list[float]]] = dataclasses.field(default_factory=dict)

    def add(self, batch: int, key: tuple[str, int], raw_over_ref: float) -> None:
        self.values.setdefault(batch, {}).setdefault(key, []).append(math.log(raw_over_ref / self.before[key]))

    def batch_offset(self, batch: int, leave_out: tuple[str, int] | None = None) -> float | None:
        """The batch's own speed offset (log): the median change from BASE of the controls measured in it."""
        got = self.values.get(batch, {})
        changes = [self.prior[k] + v for k in self.prior if k != leave_out for v in got.get(k, [])]
        return _median(changes) if changes else None

    def corrected(self, key: tuple[str, int], *, leave_out: bool = False) -> list[float]:
        """The entry's passes' changes against NEW (log), each corrected by its batch's offset. A control's own
        passes are corrected by the other controls (``leave_out``), so its spread is honest."""
        out = []
        for batch, got in self.values.items():
            offset = self.batch_offset(batch, key if leave_out else None)
            if offset is not None:
                out += [v - offset for v in got.get(key, [])]
        return out

    def change(self, key: tuple[str, int], *, leave_out: bool = False) -> float | None:
        """The entry's change against NEW (log): the median of its corrected passes."""
        out = self.corrected(key, leave_out=leave_out)
        return _median(out) if out else None

    def pass_spread(self, key: tuple[str, int]) -> float | None:
        """The robust sd (log) of the entry's own passes, each corrected by its batch's offset: how far one
        measurement of this entry lands from another (some small entries here take one of two speeds per
        runner job). None with fewer than MIN_PASSES_FOR_SPREAD passes."""
        out = self.corrected(key)
        return _robust_sd(out) if len(out) >= MIN_PASSES_FOR_SPREAD else None

    def offsets(self) -> list[float]:
        return [o for o in (self.batch_offset(b) for b in self.values) if o is not None]


def _spread(controls: list[EntryChange], passes: _Passes) -> float | None:
    """The robust standard deviation of the controls' rechecked changes from BASE (log): what re-measuring an
    unchanged entry gives now. None with fewer than MIN_CONTROLS_FOR_SPREAD controls."""
    changes = []
    for c in controls:
        k = (c.key, c.resolution)
        now = passes.change(k, leave_out=True)
        if now is not None:
            changes.append(passes.prior[k] + now)
    return _robust_sd(changes) if len(changes) >= MIN_CONTROLS_FOR_SPREAD else None


def _judge(e: EntryChange, passes: _Passes, thr: float, sigma: float) -> tuple[str, dict[str, Any]]:
    """One suspect's verdict from its rechecked value: ``confirmed``, ``ok``, ``noise`` or ``error``, and the
    ``rechecked`` record.

    NEW claims a change one way (the sign of its change). Confirmed: the rechecked change is beyond the
    threshold the same way by RECHECK_Z times ``sigma`` (or the entry's own spread between its passes, where
    wider); ok (cleared): the rechecked change does not
    go beyond the threshold that way (an entry NEW made 40% slower that re-measures 20% faster than BASE is
    no regression, whatever BASE's own error); otherwise noise."""
    k = (e.key, e.resolution)
    if k not in passes.before:
        return "error", {"error": "the NEW row lacks its raw statistic or ref_ms"}
    now = passes.change(k)
    if now is None:
        return "error", {"error": "not re-measured"}
    # BASE measured the entry once: where the entry's own passes spread wider than the controls (an entry
    # that takes one of two speeds per runner job), BASE's single value may be either, and so is NEW's claim
    sigma = max(sigma, passes.pass_spread(k) or 0.0)
    change_new = math.log1p(e.change_pct / 100.0)
    change_re = change_new + now
    rechecked = {"ratio_to_new": math.exp(now), "change_pct": 100.0 * math.expm1(change_re)}
    way = 1.0 if change_new >= 0 else -1.0
    if way * change_new > thr and way * change_re - RECHECK_Z * sigma > thr:
        return "confirmed", rechecked
    if way * change_re <= thr:
        return "ok", rechecked
    return "noise", rechecked


def _sigma(e: EntryChange, spread: float | None) -> float:
    """The yardstick of a suspect's rechecked change (log): the controls' spread, and never below what the
    table's between-run noise of entries of its size gives for one measurement of BASE (``noise_pct`` / sqrt 2:
    the rechecked change still holds BASE's own error)."""
    table = (e.noise_pct or 0.0) / 100.0 / math.sqrt(2.0)
    return table if spread is None else max(spread, table)


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
    controls = _controls(result, suspects, new, stat, n=CONTROLS)
    before = {(e.key, e.resolution): v for e in [*suspects, *controls]
              if (v := _new_normalised(new, e.key, e.resolution, stat)) is not None}
    passes = _Passes(before=before, prior={(c.key, c.resolution): math.log1p(c.change_pct / 100.0) for c in controls})
    entries = [x for x in space.all_lut_entries(new.resolutions) if (x.key, x.resolution) in before]
    builder = WorkloadBuilder(space=space, fmt=RUNTIME_FORMAT[runtime], dtype=str(meta.get("dtype") or "float32"),
                              batch=int(meta.get("batch") or 1))
    by_key = {(w.key, int(w.resolution)): w for w in builder.entries(entries)}
    rng = random.Random(seed)
    thr = math.log1p(result.threshold_pct / 100.0)
    plan = plan or device.profile.measure
    pending = [e for e in suspects if (e.key, e.resolution) in by_key]
    summary["rounds"] = 0
    batch_no = [0]  # the runner job the next results come from, over all rounds

    def on_result(w: Any, res: dict[str, Any], ref_ms: float) -> None:
        passes.add(batch_no[0], (w.key, int(w.resolution)), float(res[stat]) / ref_ms)

    def on_batch(n: int, total: int) -> None:
        batch_no[0] += 1

    def verdicts() -> dict[tuple[str, int], tuple[str, dict[str, Any]]]:
        sigma = _spread(controls, passes)
        return {(e.key, e.resolution): _judge(e, passes, thr, _sigma(e, sigma)) for e in suspects}

    for _ in range(ROUNDS):
        # this round measures the suspects still undecided and every control, PASSES passes in other batches
        batches = _round_batches([by_key[(e.key, e.resolution)] for e in pending],
                                 [by_key[(c.key, c.resolution)] for c in controls if (c.key, c.resolution) in by_key],
                                 plan.batch_size, rng, summary["rounds"] * PASSES)
        measure_batches(device, [w for b in batches for w in b], batches=batches, reference=builder.reference(),
                        plan=plan, runtime=runtime, threads=threads, on_result=on_result, on_batch=on_batch)
        summary["rounds"] += 1
        judged = verdicts()
        pending = [e for e in pending if judged[(e.key, e.resolution)][0] == "noise"]
        if not pending:
            break
    judged = verdicts()
    summary["controls"] = sum(1 for c in controls if (c.key, c.resolution) in by_key)
    offsets = passes.offsets()
    summary["offset_pct"] = 100.0 * math.expm1(_median(offsets)) if offsets else 0.0
    sigma = _spread(controls, passes)
    summary["noise_pct"] = None if sigma is None else 100.0 * sigma
    for e in suspects:
        verdict, rechecked = judged[(e.key, e.resolution)]
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
