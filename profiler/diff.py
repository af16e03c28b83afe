"""Regression test between two LUTs of the same device: real slowdowns, not noise.

1. **Comparability** from the metadata, field by field (:data:`COMPARABILITY_FIELDS`). A mismatch refuses
   the diff unless the user allows that field (``allow=["runtime.version"]``; a prefix such as ``runtime``
   allows every ``runtime.*`` field).
2. **Values judged**: what the device measured, each row's raw statistic over its batch's reference
   (``p10_ms / ref_ms``), when both tables hold it; else the tables' statistic (an imported LUT). The
   calibration's per-resolution scale is a property of the table, not of an entry (:func:`_measured`).
   **Drift**: rows are matched by (key, resolution); the uniform drift of the whole table is the median
   of the per-entry log ratios ``log(new / base)`` (robust to the few entries that really changed). It is
   reported, factored out of every entry, and is itself a finding beyond ``drift_threshold_pct``.
   **Batch offsets**: entries measured in the same runner job (the same ``ref_ms``) share that job's speed
   beyond the drift; a two-way fit (each table's jobs, median polish) is factored out of every entry too
   (``batch_offsets``: per pair of jobs, :func:`_batch_offsets`).
3. **Entries**: an entry regresses when its drift-corrected change exceeds ``threshold_pct``, stands out
   from the table's own between-run noise (more than ``noise_z`` robust standard deviations of the
   drift-corrected log ratios of entries of similar size: an empirical null), *and* its spreads say it
   is not noise: a one-sided Mann-Whitney U test on the per-run samples when both LUTs keep
   them (sidecar ``NAME.samples.csv``/``.npz``), else the runs' p10-p90 intervals (base scaled by the
   drift) not overlapping, else mean +- 1.2816 std (the p10-p90 of a normal) when only mean/std are known.
   Spreads are taken relative to their centre and applied to the statistic, so a calibrated or
   reference-normalised statistic (``lut_ms``) is judged with the spread of its raw runs. When both
   rows carry their statistic's confidence interval (``ci``, the relative half-width of its 95%
   interval, from adaptive sampling), a change beyond the two intervals combined also counts as
   significant. Where the rows say how far the runner processes that measured them disagreed
   (``process_spread``: a process can run one model slower for its whole life, so the runs of one process
   cannot show it), the change must also exceed the larger of the two; and where an entry's processes
   disagreed by much more or less than its job's other entries', its job's offset may not be its own, so
   the change must exceed the threshold by that difference too (:func:`_spread_deviation`).
   Every entry is ``decided`` unless its change is beyond the threshold but not told from noise, or
   one of its rows never converged (``converged`` false) and its change is beyond the threshold: those,
   with the regressions, are what ``lut diff --recheck DEVICE`` re-measures (:mod:`.recheck`). Each
   entry says the smallest change it could have been flagged for (``detectable_pct``); the table's
   ``smallest_detectable`` (a fraction) is the smallest of those.
4. **Impact**: how much a random subnet of the space moves, from ``LUTPredictor`` over ``samples``
   random subnets: per entry the mean relative change its own (drift-corrected) change causes (and the
   median over the subnets that use it); for the whole table the median relative change of the predicted
   latency (drift-corrected, raw, and from the flagged regressions alone, with the share of subnets that
   contain a regressed entry and their median change).
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import LUTError, ProfilerError
from .lut import COMPARABILITY_FIELDS, LUT, OVERHEAD_KEY, dotted_get

log = logging.getLogger(__name__)

__all__ = [
    "COMPARABILITY_FIELDS",
    "DiffResult",
    "EntryChange",
    "check_allow",
    "compare_metadata",
    "diff_luts",
]

#: How many robust standard deviations of the table's own between-run noise a change must exceed. The
#: drift-corrected changes between two back-to-back profiles have heavier tails than a normal: under the
#: memory load of benchmarks/_load.py one entry of 78 stood 4 robust sd out (bench_diff, BENCHMARKS.md).
NOISE_Z = 5.0
Z80 = 1.2815515655446004  # p90 of the standard normal: mean +- Z80 * std spans p10..p90
MIN_SAMPLES = 5
#: An entry's change must exceed this many times how far its own runner processes disagreed (the larger
#: ``process_spread`` of its two rows): the runs of one process share that process's speed for the model,
#: so their samples say nothing of the next process's (see ``profiler/measure.measure_batches``). Two
#: processes give one draw of that disagreement, often smaller than the next one: over 28 back-to-back pairs
#: here 1x left 3 false findings (changes 1.05-1.4x their spread, two of them the stem convolution, whose
#: processes disagreed by 15-20%), 1.5x one, 2x none, for 76%, 73% and 70% of the entries edited +25%
#: flagged (BENCHMARKS.md, section 0000000000).
PROCESS_SPREAD_K = 2.0


def check_allow(names: Iterable[str]) -> list[str]:
    """Validate ``--allow`` names: a comparability field or a prefix of some (``runtime``, ``device``).

    Raises ProfilerError (exit 2) naming the close matches for an unknown name."""
    prefixes = {f.split(".")[0] for f in COMPARABILITY_FIELDS}
    out = []
    for name in names:
        if name in COMPARABILITY_FIELDS or name in prefixes:
            out.append(name)
            continue
        close = difflib.get_close_matches(name, [*COMPARABILITY_FIELDS, *sorted(prefixes)], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ProfilerError(
            f"--allow {name!r} is not a comparability field{hint} (fields: {', '.join(COMPARABILITY_FIELDS)})"
        )
    return out


def _allowed(fieldname: str, allow: Sequence[str]) -> bool:
    return any(fieldname == a or fieldname.startswith(a + ".") for a in allow)


def compare_metadata(
    base: Mapping[str, Any], new: Mapping[str, Any], allow: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Every comparability field whose values differ: ``[{field, base, new, allowed}]``."""
    out = []
    for name in COMPARABILITY_FIELDS:
        b, n = dotted_get(base, name), dotted_get(new, name)
        if _norm(b) != _norm(n):
            out.append({"field": name, "base": b, "new": n, "allowed": _allowed(name, allow)})
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _norm(v)) for k, v in value.items()))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class EntryChange:
    """One matched row. Percentages are of the base value; ``change_pct`` is drift-corrected."""

    key: str
    resolution: int
    base_ms: float
    new_ms: float
    change_pct: float
    raw_change_pct: float
    uncertainty_pct: float | None
    p_value: float | None
    method: str
    verdict: str  # regression | improvement | noise | ok
    decided: bool = True
    detectable_pct: float | None = None
    noise_pct: float | None = None
    with_neighbours: bool = False
    process_spread_pct: float | None = None
    impact_pct: float | None = None
    impact_when_used_pct: float | None = None
    rechecked: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DiffResult:
    base: str
    new: str
    comparable: bool
    mismatches: list[dict[str, Any]]
    statistic: str | None = None
    threshold_pct: float = 5.0
    drift_threshold_pct: float = 10.0
    drift: float | None = None
    drift_uncertainty_pct: float | None = None
    drift_finding: bool = False
    noise_pct: float | None = None
    noise_z: float = NOISE_Z
    detectable_pct: float | None = None
    batch_offsets: list[dict[str, Any]] = field(default_factory=list)
    rechecked: dict[str, Any] | None = None
    entries: list[EntryChange] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)
    network: dict[str, Any] | None = None
    overhead: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[EntryChange]:
        return sorted((e for e in self.entries if e.verdict == "regression"), key=_impact_order)

    @property
    def improvements(self) -> list[EntryChange]:
        return sorted((e for e in self.entries if e.verdict == "improvement"), key=_impact_order)

    @property
    def undecided(self) -> list[EntryChange]:
        return [e for e in self.entries if not e.decided]

    @property
    def smallest_detectable(self) -> float | None:
        """The smallest slowdown (a fraction) any entry could have been flagged for."""
        found = [e.detectable_pct for e in self.entries if e.detectable_pct is not None]
        return min(found) / 100.0 if found else None

    @property
    def drift_pct(self) -> float | None:
        return None if self.drift is None else 100.0 * self.drift

    @property
    def exit_code(self) -> int:
        """0: no finding; 1: a regression or a drift beyond its threshold; 2: not comparable."""
        if not self.comparable:
            return 2
        return 1 if (self.regressions or self.drift_finding) else 0

    def findings(self) -> list[str]:
        out = []
        if not self.comparable:
            bad = [m["field"] for m in self.mismatches if not m["allowed"]]
            out.append(f"not comparable: {', '.join(bad)} differ (pass --allow FIELD to accept)")
            return out
        if self.drift_finding and self.drift is not None:
            out.append(
                f"the whole table drifted by {100 * self.drift:+.1f}% (beyond +-{self.drift_threshold_pct:g}%)"
            )
        for e in self.regressions:
            out.append(f"{e.key} @ {e.resolution}: {e.change_pct:+.1f}% after drift correction")
        return out

    def to_json(self) -> dict[str, Any]:
        def short(e: EntryChange) -> dict[str, Any]:
            return e.to_json()

        noise = sum(e.verdict == "noise" for e in self.entries)
        return {
            "base": self.base,
            "new": self.new,
            "comparable": self.comparable,
            "mismatches": self.mismatches,
            "statistic": self.statistic,
            "drift": self.drift,
            "drift_pct": self.drift_pct,
            "drift_uncertainty_pct": self.drift_uncertainty_pct,
            "drift_finding": self.drift_finding,
            "threshold_pct": self.threshold_pct,
            "drift_threshold_pct": self.drift_threshold_pct,
            "noise_pct": self.noise_pct,
            "noise_z": self.noise_z,
            "detectable_pct": self.detectable_pct,
            "batch_offsets": self.batch_offsets,
            "smallest_detectable": self.smallest_detectable,
            "entries_compared": len(self.entries),
            "undecided": [short(e) for e in self.undecided],
            "rechecked": self.rechecked,
            "regressions": [short(e) for e in self.regressions],
            "improvements": [short(e) for e in self.improvements],
            "within_noise": noise,
            "missing": self.missing,
            "added": self.added,
            "network": self.network,
            "overhead": self.overhead,
            "findings": self.findings(),
            "notes": self.notes,
        }


def _impact_order(e: EntryChange) -> tuple[float, float]:
    return (-abs(e.impact_pct) if e.impact_pct is not None else 0.0, -abs(e.change_pct))


def _refs(lut: LUT) -> np.ndarray | None:
    """The ``ref_ms`` column (each row's batch reference) as numbers, None when absent or not numeric."""
    if "ref_ms" not in lut.rows.columns:
        return None
    try:
        return lut.rows["ref_ms"].to_numpy(dtype=float)
    except (TypeError, ValueError):
        return None


def _measured(lut: LUT) -> tuple[np.ndarray, str] | None:
    """Each row's measured statistic over its batch's reference (``raw / ref_ms``, times the table's reference
    in ms), or None when the table lacks the columns. This is what the device measured, before the
    per-resolution calibration: ``lut_ms = a * (raw - overhead)`` amplifies the noise of entries that cost
    about one inference's overhead (a pooling of a few numbers: ``lut_ms`` near 0, so a 1% change of ``raw``
    moved it by 40-130% between two back-to-back profiles, bench_diff), and a change of ``a`` between
    profiles moves every entry of a resolution together."""
    raw = str((lut.metadata.get("measurement") or {}).get("raw_statistic") or "")
    refs = _refs(lut)
    if not raw or raw not in lut.rows.columns or refs is None:
        return None
    try:
        values = lut.rows[raw].to_numpy(dtype=float)
    except (TypeError, ValueError):
        return None
    if not (np.all(np.isfinite(refs)) and np.all(refs > 0)):
        return None
    ref = float((lut.metadata.get("reference") or {}).get("ms") or np.median(refs))
    return values / refs * ref, f"{raw} / ref_ms"


def _judged_values(base: LUT, new: LUT) -> tuple[np.ndarray, np.ndarray, str]:
    """The values entries are judged by, and their name: the measured statistic over its batch reference
    (:func:`_measured`) when both tables hold it, else each table's own statistic."""
    b, n = _measured(base), _measured(new)
    if b is not None and n is not None and b[1] == n[1]:
        return b[0], n[0], b[1]
    return base.rows[base.statistic].to_numpy(dtype=float), new.rows[new.statistic].to_numpy(dtype=float), base.statistic


def _relative_spread(lut: LUT, i: int) -> tuple[float, float] | None:
    """The runs' p10 and p90 relative to their centre (``median_ms``, else ``mean_ms``), or mean -+ Z80 std
    relative to the mean when only mean/std are known.

    Relative, so that they apply to the LUT's statistic even when that statistic is calibrated or
    normalised (e.g. ``lut_ms`` from reference-normalised ``p10_ms``) while the spread columns are raw."""
    cols = lut.rows.columns
    stat = float(lut.rows[lut.statistic].iat[i])
    if "p10_ms" in cols and "p90_ms" in cols:
        center = float(lut.rows["median_ms"].iat[i]) if "median_ms" in cols else stat
        if center > 0:
            return float(lut.rows["p10_ms"].iat[i]) / center, float(lut.rows["p90_ms"].iat[i]) / center
    if "std_ms" in cols:
        center = float(lut.rows["mean_ms"].iat[i]) if "mean_ms" in cols else stat
        if center > 0:
            rel = Z80 * float(lut.rows["std_ms"].iat[i]) / center
            return 1.0 - rel, 1.0 + rel
    return None


def _fraction(lut: LUT, i: int, column: str) -> float | None:
    """The row's ``column`` as a fraction >= 0 (``ci``: the statistic's relative 95% half-width;
    ``process_spread``: how far the runner processes that measured the row disagreed), None when the column
    is absent or the cell blank or not a number."""
    if column not in lut.rows.columns:
        return None
    try:
        v = float(lut.rows[column].iat[i])
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 else None


def _converged(lut: LUT, i: int) -> bool:
    if "converged" not in lut.rows.columns:
        return True
    v = lut.rows["converged"].iat[i]
    if isinstance(v, str):
        return v.strip().lower() not in ("0", "false", "no")
    try:
        return bool(int(v)) if not (isinstance(v, float) and math.isnan(v)) else True
    except (TypeError, ValueError):
        return True


def diff_luts(
    base: LUT,
    new: LUT,
    *,
    threshold_pct: float = 5.0,
    drift_threshold_pct: float = 10.0,
    allow: Sequence[str] = (),
    alpha: float = 0.001,
    noise_z: float = NOISE_Z,
    samples: int = 1000,
    seed: int = 0,
) -> DiffResult:
    """Compare ``new`` against ``base``; see the module docstring. Never raises for noisy data; raises
    ProfilerError for an unknown ``allow`` name and LUTError when the two LUTs share no entry."""
    allow = check_allow(allow)
    if not threshold_pct > 0 or not drift_threshold_pct > 0:
        raise ProfilerError("thresholds must be positive percentages")
    mismatches = compare_metadata(base.metadata, new.metadata, allow)
    result = DiffResult(
        base=base.source,
        new=new.source,
        comparable=all(m["allowed"] for m in mismatches),
        mismatches=mismatches,
        statistic=base.statistic,
        threshold_pct=float(threshold_pct),
        drift_threshold_pct=float(drift_threshold_pct),
    )
    if not result.comparable:
        return result
    b_idx = {k: i for i, k in enumerate(base.keys())}
    n_idx = {k: i for i, k in enumerate(new.keys())}
    result.missing = [{"key": k, "resolution": r} for (k, r) in b_idx if (k, r) not in n_idx]
    result.added = [{"key": k, "resolution": r} for (k, r) in n_idx if (k, r) not in b_idx]
    common = [k for k in b_idx if k in n_idx]
    if not common:
        raise LUTError(f"{base.source} and {new.source} share no (key, resolution) row")
    b_vals, n_vals, result.statistic = _judged_values(base, new)

    # ---- drift: median of per-entry log ratios (overhead rows and zero values excluded)
    pairs = [(k, b_idx[k], n_idx[k]) for k in common if k[0] != OVERHEAD_KEY]
    positive = [(k, i, j) for k, i, j in pairs if b_vals[i] > 0 and n_vals[j] > 0]
    if len(positive) < len(pairs):
        result.notes.append(f"{len(pairs) - len(positive)} entries with a zero latency were not judged")
    logs = np.array([math.log(n_vals[j] / b_vals[i]) for _, i, j in positive])
    if len(logs):
        drift_log = float(np.median(logs))
        mad = float(np.median(np.abs(logs - drift_log))) * 1.4826
        se = 1.2533 * mad / math.sqrt(len(logs))
        result.drift = math.expm1(drift_log)
        result.drift_uncertainty_pct = 100.0 * 1.96 * se
        result.drift_finding = abs(100.0 * result.drift) > drift_threshold_pct
    else:
        drift_log = 0.0
        result.drift = 0.0
    thr_log = math.log1p(threshold_pct / 100.0)
    local = logs - drift_log
    offsets, groups = _batch_offsets(base, new, positive, local)
    local = local - offsets
    result.batch_offsets = groups
    if groups:
        lo, hi = min(g["offset_pct"] for g in groups), max(g["offset_pct"] for g in groups)
        result.notes.append(
            f"{len(groups)} pairs of runner jobs measured at their own speed ({lo:+.1f}% to {hi:+.1f}% beyond the "
            "drift, each the median change of its entries): factored out of their entries"
        )
    together = _moved_with_neighbours(base, new, positive, local, thr_log)
    sigma = _between_run_noise(local, np.array([b_vals[i] for _, i, _ in positive]), exclude=together)
    if together.any():
        result.notes.append(
            f"{int(together.sum())} entries moved beyond the threshold together with entries measured beside them "
            "(in their batch or just before and after: the machine's speed changed for a while, or several similar "
            "entries changed): "
            "undecided, not findings; --recheck re-measures them in another order"
        )
    if len(logs):
        overall = _null_scale(np.abs(local[~together] if (~together).sum() >= 5 else local))
        result.noise_pct = 100.0 * overall
        result.detectable_pct = 100.0 * math.expm1(max(thr_log, noise_z * overall))
    result.noise_z = float(noise_z)

    spread_dev = _spread_deviation(base, new, positive)

    # ---- per entry
    b_samples = base.samples()
    n_samples = new.samples()
    thr = threshold_pct / 100.0
    for n_entry, ((key, res), i, j) in enumerate(positive):
        bv, nv = float(b_vals[i]), float(n_vals[j])
        scale = math.exp(drift_log + float(offsets[n_entry]))  # the drift and this entry's batch offset
        corrected = nv / (bv * scale) - 1.0
        raw = nv / bv - 1.0
        p_value: float | None = None
        significant_up = significant_down = False
        unc: float | None = None
        bs = b_samples.get((key, res)) if b_samples else None
        ns = n_samples.get((key, res)) if n_samples else None
        rb, rn = _relative_spread(base, i), _relative_spread(new, j)
        bi = (bv * rb[0], bv * rb[1]) if rb else None
        ni = (nv * rn[0], nv * rn[1]) if rn else None
        if (
            bs is not None and ns is not None and len(bs) >= MIN_SAMPLES and len(ns) >= MIN_SAMPLES
            and np.median(bs) > 0 and np.median(ns) > 0
        ):
            method = "mann-whitney"
            # runs rescaled to each table's statistic (which may be calibrated), the base's also by the drift
            bs = bs * (bv / float(np.median(bs)))
            ns = ns * (nv / float(np.median(ns)))
            p_up, p_down = _mann_whitney(bs * scale, ns)
            p_value = p_up if corrected >= 0 else p_down
            significant_up, significant_down = p_up < alpha, p_down < alpha
            bi = (float(np.percentile(bs, 10)), float(np.percentile(bs, 90)))
            ni = (float(np.percentile(ns, 10)), float(np.percentile(ns, 90)))
        elif bi is not None and ni is not None:
            method = "p10-p90" if "p10_ms" in base.rows.columns and "p10_ms" in new.rows.columns else "std"
            significant_up = ni[0] > bi[1] * scale
            significant_down = ni[1] < bi[0] * scale
        else:
            method = "threshold"
            significant_up = significant_down = True
        if bi is not None and ni is not None:
            hb = (bi[1] - bi[0]) / (2.0 * bv)
            hn = (ni[1] - ni[0]) / (2.0 * nv)
            unc = 100.0 * math.hypot(hb, hn) * (1.0 + corrected)
        cb, cn = _fraction(base, i, "ci"), _fraction(new, j, "ci")
        ci_width = math.hypot(cb, cn) if cb is not None and cn is not None else None
        if ci_width is not None and method != "threshold":
            # the statistics' own 95% intervals (adaptive sampling) apart: significant as well
            significant_up = significant_up or math.log1p(corrected) > ci_width
            significant_down = significant_down or math.log1p(corrected) < -ci_width
        # beyond what the table's own between-run noise (entries of similar size) explains, and beyond what
        # this entry's own runner processes disagreed by in either table
        spreads = [v for v in (_fraction(base, i, "process_spread"), _fraction(new, j, "process_spread")) if v is not None]
        spread = max(spreads) if spreads else None
        spread_log = PROCESS_SPREAD_K * math.log1p(spread) if spread is not None else 0.0
        # the job's offset may be off for this entry by how far its processes' disagreement is from its
        # job's: the change must exceed the threshold by that much (:func:`_spread_deviation`)
        dev = float(spread_dev[n_entry])
        outlier = abs(math.log1p(corrected)) > max(noise_z * sigma[n_entry], spread_log, math.log1p(thr) + dev)
        need = max(math.log1p(thr) + dev, noise_z * float(sigma[n_entry]), ci_width or 0.0, spread_log)
        converged = _converged(base, i) and _converged(new, j)
        if corrected > thr and significant_up and outlier:
            verdict = "regression"
        elif corrected < -thr and significant_down and outlier:
            verdict = "improvement"
        elif abs(corrected) > thr:
            verdict = "noise"
        else:
            verdict = "ok"
        if verdict in ("regression", "improvement") and together[n_entry]:
            verdict = "noise"  # moved with the entries measured beside it: machine or these ops?
        decided = verdict != "noise" and (converged or abs(corrected) <= thr)
        result.entries.append(
            EntryChange(
                key=key,
                resolution=int(res),
                base_ms=bv,
                new_ms=nv,
                change_pct=100.0 * corrected,
                raw_change_pct=100.0 * raw,
                uncertainty_pct=unc,
                p_value=p_value,
                method=method,
                verdict=verdict,
                decided=decided,
                detectable_pct=100.0 * math.expm1(need),
                noise_pct=100.0 * float(sigma[n_entry]),
                with_neighbours=bool(together[n_entry]),
                process_spread_pct=None if spread is None else 100.0 * spread,
            )
        )
    for (key, res) in common:
        if key == OVERHEAD_KEY:
            result.overhead.append(
                {"resolution": int(res), "base_ms": float(b_vals[b_idx[(key, res)]]), "new_ms": float(n_vals[n_idx[(key, res)]])}
            )
    if result.missing:
        result.notes.append(f"{len(result.missing)} entries of the base are missing from the new table")
    _impacts(result, base, new, math.exp(drift_log), samples=samples, seed=seed)
    return result


#: An entry that moved beyond the threshold is undecided rather than a finding when, in either table, at
#: least ``NEIGHBOURS_MOVED`` of the ``NEIGHBOURS`` rows before and after it moved the same way, or its batch
#: moved: at least ``BATCH_MOVED`` of its entries (and ``BATCH_MIN``, or all of a job of 2 to ``BATCH_MIN``
#: entries: a job of 3 whose entries all moved -34% beside a job of 45 that moved -29% gave a false
#: improvement, bench_diff) the same way. "Moved" here: beyond the
#: threshold and beyond ``MOVED_Z`` robust sd of the table's changes. Under the load of benchmarks/_load.py
#: a disturbed batch had 6-22 of its 6-22 entries moved one way and every other batch 0-1 (quiet: 0-1 in
#: every batch), so three real slowdowns that share a batch still stand out.
NEIGHBOURS = 3
NEIGHBOURS_MOVED = 2
BATCH_MOVED = 0.25
BATCH_MIN = 4
MOVED_Z = 3.0


def _batches(lut: LUT, rows: Sequence[int]) -> list[float | None]:
    """Each row's batch label: its ``ref_ms`` value (every batch measures the reference once), None without."""
    refs = _refs(lut)
    if refs is None:
        return [None] * len(rows)
    return [float(refs[i]) if math.isfinite(refs[i]) else None for i in rows]


#: A runner job (an entry's batch in BASE or in NEW) with at least this many entries gets its own speed
#: offset; smaller jobs keep the table's drift alone.
BATCH_OFFSET_MIN = 8
#: Median polish stops after this many sweeps over both tables' jobs (or once no effect moves).
POLISH_SWEEPS = 10


def _batch_offsets(base: LUT, new: LUT, positive: Sequence[tuple[Any, int, int]],
                   drift_corrected: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Per entry, the speed offset (log) of the runner jobs that measured it in BASE and in NEW, beyond the
    table's drift, and the pairs of jobs that got one: a two-way fit, ``offset = base job + new job``,
    by median polish (each job's effect the median of its entries' changes left over by the other table's
    jobs, a few sweeps) over jobs of at least ``BATCH_OFFSET_MIN`` entries. An entry takes it when both of
    its jobs are that large; else (and for tables without ``ref_ms``) 0.

    Every batch of a profile measures its reference workload, and an entry's value is taken over it; but a
    machine's speed moves the reference and the small entries differently (a compute-bound subnet against
    ops that wait on memory), so whole batches still moved against each other. Between back-to-back
    profiles of the compact space here (BENCHMARKS.md) the batches' median changes were up to 17% apart, and
    taking each batch's own median out halved the entries' robust spread (4.9 -> 2.9%, 3.9 -> 1.5%,
    5.3 -> 2.6%). Jobs of the two tables do not line up (an entry keeps the result of one of its runner
    processes, each with its own reference): fitting each table's jobs, rather than each pair of jobs,
    gives an entry whose pair is small (1-3 entries) its jobs' offsets too; under the memory load such an
    entry once moved +13.7% with the 9 and 8 other entries of its two jobs and was a false regression. A
    real change of a few entries barely moves a job's median; a change of one operator type everywhere
    moves every job alike and stays in the entries (or the drift)."""
    n = len(positive)
    resid = np.array(drift_corrected, dtype=float)
    labels = (_batches(base, [p[1] for p in positive]), _batches(new, [p[2] for p in positive]))
    jobs = []  # (entries of one job of one table) with enough entries for an effect of its own
    for table in labels:
        members: dict[float, list[int]] = {}
        for e, label in enumerate(table):
            if label is not None:
                members.setdefault(label, []).append(e)
        jobs.append([np.asarray(idx) for idx in members.values() if len(idx) >= BATCH_OFFSET_MIN])
    if max(len(j) for j in jobs) < 2:  # one job a table at most: its offset is the drift itself
        return np.zeros(n), []
    for _ in range(POLISH_SWEEPS):
        moved = 0.0
        for table_jobs in jobs:
            for idx in table_jobs:
                m = float(np.median(resid[idx]))
                resid[idx] -= m
                moved = max(moved, abs(m))
        if moved < 1e-6:
            break
    out = np.asarray(drift_corrected, dtype=float) - resid
    # an entry takes the fit where it is known: both of its jobs have an effect of their own (a pair of jobs
    # of BATCH_OFFSET_MIN entries has). A job of a few entries has an unknown effect, not none: with one
    # side of the pair unknown the entry keeps the drift alone (a lone entry of a small NEW job once took its
    # BASE job's -30%, which that job's other entries owed to the NEW job they shared, and was a +27%
    # regression)
    fitted = [np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)]
    for side, table_jobs in enumerate(jobs):
        for idx in table_jobs:
            fitted[side][idx] = True
    cells: dict[tuple[float | None, float | None], list[int]] = {}
    for e in range(n):
        cells.setdefault((labels[0][e], labels[1][e]), []).append(e)
    for (lb, ln), idx in cells.items():
        if lb is None or ln is None or not (fitted[0][idx[0]] and fitted[1][idx[0]]):
            out[idx] = 0.0
    cells = {k: idx for k, idx in cells.items() if abs(out[idx[0]]) > 1e-9}
    groups = [{"entries": len(idx), "offset_pct": 100.0 * math.expm1(float(out[idx[0]]))} for idx in cells.values()]
    return out, groups


def _spread_deviation(base: LUT, new: LUT, positive: Sequence[tuple[Any, int, int]]) -> np.ndarray:
    """Per entry, how far its runner processes' disagreement (``log1p(process_spread)``) is from the median of
    its job's entries, the larger of the two tables (0 without the column or for jobs of fewer than 3
    entries that carry it).

    A job's offset (:func:`_batch_offsets`) is what its entries share, and they share it through the
    processes they were taken from: when a spell of the machine slowed one process's reference and not the
    entries measured outside the spell, those entries' processes disagree by about the spell and their
    values moved by it, while an entry measured inside the spell in both processes did not. The job's offset
    is then not that entry's: back-to-back profiles here had jobs whose entries' processes disagreed by
    20-36% and moved -11 to -17% together, and three entries of the same job whose processes agreed within
    2% were false regressions of +16-18% once the job's offset was taken out (bench_diff, BENCHMARKS.md)."""
    n = len(positive)
    out = np.zeros(n)
    for lut, col in ((base, 1), (new, 2)):
        rows = [p[col] for p in positive]
        spreads = np.array([_fraction(lut, i, "process_spread") for i in rows], dtype=float)
        logs = np.log1p(spreads)  # None became nan
        members: dict[float, list[int]] = {}
        for e, label in enumerate(_batches(lut, rows)):
            if label is not None and math.isfinite(logs[e]):
                members.setdefault(label, []).append(e)
        for idx in members.values():
            if len(idx) >= 3:
                out[idx] = np.maximum(out[idx], np.abs(logs[idx] - float(np.median(logs[idx]))))
    return out


def _moved_with_neighbours(base: LUT, new: LUT, positive: Sequence[tuple[Any, int, int]], corrected_logs: np.ndarray,
                           thr_log: float) -> np.ndarray:
    """Per entry: did it move beyond the threshold together with the entries measured beside it?

    A profile measures its entries in batches of a second or less (each entry's runs in rounds spread over
    its batch), and a machine's speed can change for a while in a way the batch's reference workload does
    not follow (a memory-bandwidth load slows memory-bound entries more than the reference). Two
    back-to-back profiles under the load of benchmarks/_load.py had runs of 5-22 consecutive entries, and
    entries here and there in one batch, 20-48% apart while their references agreed (bench_diff). Such
    entries are the machine, or a change of several similar entries (rows are in the space's order, so
    neighbours are alike): one measurement cannot tell, a re-measurement in another order can
    (``--recheck``). An entry that really changed alone stands out from the entries measured beside it."""
    n = len(positive)
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    scale = 1.4826 * float(np.median(np.abs(corrected_logs)))
    moved = np.abs(corrected_logs) > max(thr_log, MOVED_Z * scale)
    if not moved.any():
        return out
    sign = np.sign(corrected_logs)
    for lut, col in ((base, 1), (new, 2)):
        rows = [p[col] for p in positive]
        order = np.argsort(rows, kind="stable")
        rank = np.empty(n, dtype=int)
        rank[order] = np.arange(n)
        labels = _batches(lut, rows)
        members: dict[float, list[int]] = {}
        for e, label in enumerate(labels):
            if label is not None:
                members.setdefault(label, []).append(e)
        for e in np.flatnonzero(moved):
            near = order[max(0, rank[e] - NEIGHBOURS) : rank[e] + NEIGHBOURS + 1]
            near = near[near != e]
            if int(np.sum(moved[near] & (sign[near] == sign[e]))) >= NEIGHBOURS_MOVED:
                out[e] = True
            if labels[e] is not None:
                batch = np.asarray(members[labels[e]])
                same = int(np.sum(moved[batch] & (sign[batch] == sign[e])))
                if same >= max(min(BATCH_MIN, len(batch)), BATCH_MOVED * len(batch), 2):  # every entry of a small one
                    out[e] = True
    return out


#: The null's scale per size bin is the larger of the MAD's and this quantile of the absolute changes over
#: the normal's same quantile. Between back-to-back profiles here the changes have heavier tails than a
#: normal: once each batch's offset was taken out, the larger entries' MAD-based scale was 0.9% while single
#: entries moved 6-10% (false regressions and improvements at 5 sd); the 80th percentile keeps such tails
#: in the scale and is still untouched by a few real changes.
TAIL_QUANTILE = 0.8
_TAIL_Z = 1.2815515655446004  # the standard normal's 80th percentile of |x| (its 90th percentile)


def _between_run_noise(corrected_logs: np.ndarray, base_ms: np.ndarray, min_bin: int = 50,
                       exclude: np.ndarray | None = None) -> np.ndarray:
    """Robust scale of the drift-corrected log ratios, per entry: entries are binned by base latency
    (up to 4 bins of at least ``min_bin`` entries; small ops are noisier than large ones) and each gets
    its bin's scale, the larger of 1.4826 * median |log ratio| and the ``TAIL_QUANTILE`` quantile of
    |log ratio| over the normal's (a heavy tail widens it) -- the empirical null that a real change must
    stand out from. Entries in ``exclude`` (those that moved with their neighbours:
    :func:`_moved_with_neighbours`) are binned but left out of the scale, which is the noise of one
    entry's measurement."""
    n = len(corrected_logs)
    out = np.zeros(n)
    if n == 0:
        return out
    keep = np.ones(n, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    order = np.argsort(base_ms, kind="stable")
    for chunk in np.array_split(order, max(1, min(4, n // min_bin))):
        use = chunk[keep[chunk]]
        out[chunk] = _null_scale(np.abs(corrected_logs[use if len(use) >= 5 else chunk]))
    return out


def _null_scale(abs_changes: np.ndarray) -> float:
    """The scale of |changes| that a real change must stand out from: the larger of the MAD's
    (1.4826 * median) and the ``TAIL_QUANTILE`` quantile over the normal's."""
    return max(1.4826 * float(np.median(abs_changes)), float(np.quantile(abs_changes, TAIL_QUANTILE)) / _TAIL_Z)


def _mann_whitney(base: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """One-sided p-values (new > base, new < base)."""
    from scipy.stats import mannwhitneyu

    up = float(mannwhitneyu(new, base, alternative="greater").pvalue)
    down = float(mannwhitneyu(new, base, alternative="less").pvalue)
    return up, down


def _impacts(result: DiffResult, base: LUT, new: LUT, scale: float, *, samples: int, seed: int) -> None:
    """Per-entry and whole-network impact on random subnets of the space (notes when not possible)."""
    if samples <= 0:
        return
    from ..supernet import get_space
    from .predict import LUTPredictor

    try:
        space = get_space(base.space)
    except Exception as exc:  # noqa: BLE001 - an unknown space only disables the impact estimate
        result.notes.append(f"no impact estimate: {exc}")
        return
    res = sorted(set(base.resolutions) & set(new.resolutions) & set(space.resolutions))
    if not res:
        result.notes.append("no impact estimate: the tables share no resolution of the space")
        return
    try:
        predictor = LUTPredictor(base, space, resolutions=res)
    except LUTError as exc:
        result.notes.append(f"no impact estimate: {exc}")
        return
    rng = np.random.default_rng(seed)
    arrays = space.sample_arrays(rng, samples, res)
    base_pred = predictor.predict_arrays(arrays)
    idents, counts = predictor.entry_counts(arrays)
    col = {k: c for c, k in enumerate(idents)}
    b_vals = base.values()
    n_vals = new.values()
    delta_corr = np.zeros(len(idents))
    delta_raw = np.zeros(len(idents))
    for k, c in col.items():
        if k in n_vals:
            delta_corr[c] = n_vals[k] / scale - b_vals[k]
            delta_raw[c] = n_vals[k] - b_vals[k]
    rel_corr = counts @ delta_corr / base_pred
    rel_raw = counts @ delta_raw / base_pred
    flagged = np.zeros(len(idents))
    for e in result.entries:
        c = col.get((e.key, e.resolution))
        if c is None:
            continue
        per_net = counts[:, c] * delta_corr[c] / base_pred
        e.impact_pct = 100.0 * float(per_net.mean())
        used = counts[:, c] > 0
        e.impact_when_used_pct = 100.0 * float(np.median(per_net[used])) if used.any() else 0.0
        if e.verdict == "regression":
            flagged[c] = delta_corr[c]
    rel_flagged = counts @ flagged / base_pred
    affected = (counts[:, flagged != 0] > 0).any(axis=1)
    result.network = {
        "samples": int(samples),
        "seed": int(seed),
        "resolutions": res,
        "base_median_ms": float(np.median(base_pred)),
        "change_pct": 100.0 * float(np.median(rel_corr)),
        "raw_change_pct": 100.0 * float(np.median(rel_raw)),
        "regressions_change_pct": 100.0 * float(np.median(rel_flagged)),
        "regressions_affected_share": float(affected.mean()),
        "regressions_change_pct_when_affected": 100.0 * float(np.median(rel_flagged[affected])) if affected.any() else 0.0,
    }
