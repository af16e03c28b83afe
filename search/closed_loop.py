"""Budgets met as measured: search, measure the chosen subnets on the device, tighten, search again.

A LUT predicts; the device decides. :func:`search_until_measured` answers every budget with the search,
measures the chosen subnets end to end (one ``measure(archs)`` call per round, all subnets of the round
together), and for every subnet that measured over its budget by more than its own confidence interval
(``measured > budget * (1 + ci)``) tightens that budget's search target by the measured/predicted ratio
(``target * predicted / measured``) and searches that budget again, up to ``max_rounds`` rounds in all.

Each answered result gains ``measured_ms`` (the end-to-end statistic, normalised to the LUT's machine
speed as ``lut validate`` reports it), ``measured_ci`` (relative half-width of
its 95% interval, ``None`` when the measurement gives none), ``within_budget``, ``rounds`` (how many
searches this budget took) and ``search_budget_ms`` (the target the last search was given); ``budget_ms``
stays the budget asked for. When no round met a budget, the result kept is the round that came closest.

Who measures is the caller's choice: :func:`device_measure` measures on an acquired device the way the
LUT was measured (``hwnas search --validate`` and the demo use it); tests pass a recorded factor.

With a learned latency predictor (its predictions carry intervals), :func:`measure_where_unsure` runs
before each round's subnets are measured: for every budget, the candidates of the search's Pareto front
(and its answer) whose interval reaches below the budget are ranked by predicted accuracy; those ranked
above the most accurate one whose whole interval is under the budget, and whose interval straddles the
budget, are measured on the device (at most ``max_per_budget`` of them), and the answer becomes the most
accurate of the sure one and those measured within the budget. Each such result gains
``candidates_measured`` (how many subnets were measured for it before it was chosen, in the round kept)
and ``predicted_interval_ms`` (``[lo, hi]`` of its prediction); ``hwnas search --validate`` adds the
total over all budgets and rounds as ``validation.candidates_measured``. :class:`MeasureOnce` makes a
subnet measured while choosing not measured again when it is then validated.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..supernet import Arch, get_space
from .errors import BudgetError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_ROUNDS", "MAX_UNSURE", "MeasureOnce", "Measurement", "device_measure",
           "device_measure_as_profiled", "measure_where_unsure", "search_until_measured", "summarize", "validate_on_device"]

#: ``--max-rounds`` when not given.
DEFAULT_MAX_ROUNDS = 3
#: Most candidates measured per budget and round because their interval straddles the budget.
MAX_UNSURE = 8


@dataclass(frozen=True)
class Measurement:
    """One subnet measured end to end: ``ms`` as compared with its budget, ``ci`` the relative half-width of
    its 95% confidence interval (``None``: unknown, judged as 0), ``raw_ms`` before drift normalisation."""

    ms: float
    ci: float | None = None
    raw_ms: float | None = None


MeasureFn = Callable[[Sequence[Arch]], Sequence[Measurement]]
SearchFn = Callable[[list[float]], list[dict[str, Any]]]
RoundFn = Callable[[int, list[dict[str, Any]]], None]


def _over(result: dict[str, Any]) -> bool:
    """Over its budget by more than its own interval."""
    ci = result.get("measured_ci") or 0.0
    return float(result["measured_ms"]) > float(result["budget_ms"]) * (1.0 + ci)


def _closeness(result: dict[str, Any]) -> float:
    return float(result["measured_ms"]) / float(result["budget_ms"])


def search_until_measured(
    search: SearchFn,
    budgets: Sequence[float],
    measure: MeasureFn,
    *,
    space: str,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    on_round: RoundFn | None = None,
) -> list[dict[str, Any]]:
    """Answer ``budgets`` (ms) with ``search(targets) -> results`` until every answer measures within its
    budget or ``max_rounds`` searches were made; see the module docstring. Results come back in the order
    of ``budgets``; an infeasible budget (no architecture predicted under it) is not measured.

    Raises BudgetError for ``max_rounds`` < 1 and ValueError when ``measure`` returns a wrong count or a
    non-finite or non-positive time."""
    if not isinstance(max_rounds, int) or max_rounds < 1:
        raise BudgetError(f"--max-rounds must be an integer of at least 1, got {max_rounds!r}")
    sp = get_space(space)
    budgets = [float(b) for b in budgets]
    targets = list(budgets)
    best: list[dict[str, Any] | None] = [None] * len(budgets)
    open_ = list(range(len(budgets)))  # budgets still searched
    for rnd in range(1, max_rounds + 1):
        found = search([targets[i] for i in open_])
        if len(found) != len(open_):
            raise ValueError(f"search() returned {len(found)} results for {len(open_)} budgets")
        answered: list[tuple[int, dict[str, Any]]] = []
        for i, r in zip(open_, found, strict=True):
            r = dict(r)
            r["search_budget_ms"] = r["budget_ms"]
            r["budget_ms"] = budgets[i]
            r["rounds"] = rnd
            if r.get("arch") is None:
                if best[i] is None:  # infeasible as asked: nothing to measure
                    best[i] = r
                else:  # the tightened target is below the space's smallest latency: keep the closest round
                    best[i]["tightened_infeasible"] = True  # type: ignore[index]
                    best[i]["rounds"] = rnd  # type: ignore[index]
                continue
            answered.append((i, r))
        if answered:
            got = list(measure([sp.parse(r["arch"]) for _, r in answered]))
            if len(got) != len(answered):
                raise ValueError(f"measure() returned {len(got)} values for {len(answered)} architectures")
            for (i, r), m in zip(answered, got, strict=True):
                if not (math.isfinite(m.ms) and m.ms > 0):
                    raise ValueError(f"measured time {m.ms!r} ms for {r['arch']} is not a positive number")
                r["measured_ms"] = float(m.ms)
                r["measured_raw_ms"] = None if m.raw_ms is None else float(m.raw_ms)
                r["measured_ci"] = None if m.ci is None else float(m.ci)
                pred = r.get("predicted_latency_ms")
                r["latency_error"] = float(m.ms) / pred - 1 if pred else None
                r["within_budget"] = not _over(r)
                prev = best[i]
                if prev is None or prev.get("measured_ms") is None or r["within_budget"] or (
                    not prev["within_budget"] and _closeness(r) < _closeness(prev)
                ):
                    best[i] = r
                else:
                    prev["rounds"] = rnd
        if on_round is not None:
            on_round(rnd, [dict(b) for b in best if b is not None])
        still = []
        for i, r in answered:
            if r["within_budget"]:
                continue
            ratio = r["measured_ms"] / r["predicted_latency_ms"] if r.get("predicted_latency_ms") else None
            if ratio is None or ratio <= 1.0:
                # the LUT did not under-predict it: a tighter target would not help (the budget is simply tight)
                targets[i] = targets[i] * budgets[i] / r["measured_ms"]
            else:
                targets[i] = targets[i] / ratio
            still.append(i)
        if not still:
            break
        open_ = still
        if rnd < max_rounds:
            log.info("round %d: %d budget(s) measured over; searching again with tighter targets %s", rnd,
                     len(still), ", ".join(f"{targets[i]:.3f}" for i in still))
    out = []
    for b in best:
        assert b is not None
        if b.get("arch") is not None and b.get("within_budget") is None:  # pragma: no cover - defensive
            b["within_budget"] = False
        out.append(b)
    return out


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Top-level summary: how many budgets measured within, how many rounds the slowest took, which missed."""
    answered = [r for r in results if r.get("arch") is not None and r.get("measured_ms") is not None]
    missed = [r["budget_ms"] for r in answered if not r.get("within_budget")]
    return {
        "budgets_within": sum(bool(r.get("within_budget")) for r in answered),
        "budgets_measured": len(answered),
        "rounds": max((int(r.get("rounds") or 1) for r in results), default=0),
        "missed_budgets_ms": missed,
        "all_within_budget": bool(answered) and not missed,
    }


def device_measure(device: Any, lut: Any, *, plan: Any = None) -> MeasureFn:
    """A ``measure`` for :func:`search_until_measured`: subnets measured on ``device`` (an acquired
    ``hwnas.agents.device.Device``) as ``lut`` was measured and normalised to the LUT's machine speed, as
    ``lut validate`` does it (:func:`hwnas.profiler.validate.measure_against_lut`: runtime, threads, dtype,
    batch and statistic from its metadata, the reference workload in every batch, the drift measured on the
    LUT's anchors; the device profile's ``measure:`` settings or ``plan``); ``ci`` is each subnet's own
    interval."""
    from ..profiler.validate import measure_against_lut

    def measure(archs: Sequence[Arch]) -> list[Measurement]:
        m = measure_against_lut(device, lut, list(archs), plan=plan)
        cis = m.get("ci") or [None] * len(archs)
        return [Measurement(ms=float(x), ci=None if c is None else float(c), raw_ms=float(raw))
                for x, raw, c in zip(m["ms_lut"], m["raw_ms"], cis, strict=True)]

    return measure


def device_measure_as_profiled(device: Any, space: str, *, dtype: str = "float32", plan: Any = None) -> MeasureFn:
    """A ``measure`` for a device without a LUT (a learned latency predictor): subnets measured on ``device``
    (an acquired ``hwnas.agents.device.Device``) with its profile's runtime and threads, as ``hwnas predictor
    measure`` measures the samples such a predictor is fitted on (not normalised: ``ms`` is ``raw_ms``)."""
    from ..profiler.validate import measure_subnets

    def measure(archs: Sequence[Arch]) -> list[Measurement]:
        m = measure_subnets(device, list(archs), space_name=space, runtime=device.profile.runtime,
                            threads=device.profile.threads, dtype=dtype, plan=plan)
        cis = m.get("ci") or [None] * len(archs)
        return [Measurement(ms=float(raw), ci=None if c is None else float(c), raw_ms=float(raw))
                for raw, c in zip(m["raw_ms"], cis, strict=True)]

    return measure


def _arch_key(arch: Any) -> str:
    return arch.to_json() if isinstance(arch, Arch) else json.dumps(arch, sort_keys=True)


class MeasureOnce:
    """A ``measure`` that measures each subnet once: later calls answer a subnet already measured from
    memory (one device call for the rest). ``measured`` counts the distinct subnets measured."""

    def __init__(self, measure: MeasureFn) -> None:
        self._measure = measure
        self._seen: dict[str, Measurement] = {}

    @property
    def measured(self) -> int:
        return len(self._seen)

    def __call__(self, archs: Sequence[Arch]) -> list[Measurement]:
        keys = [_arch_key(a) for a in archs]
        todo = {k: a for k, a in zip(keys, archs, strict=True) if k not in self._seen}
        if todo:
            got = list(self._measure(list(todo.values())))
            if len(got) != len(todo):
                raise ValueError(f"measure() returned {len(got)} values for {len(todo)} architectures")
            self._seen.update(zip(todo, got, strict=True))
        return [self._seen[k] for k in keys]


def measure_where_unsure(
    results: Sequence[dict[str, Any]],
    front: Sequence[dict[str, Any]],
    latency: Any,
    measure: MeasureFn,
    *,
    space: str,
    max_per_budget: int = MAX_UNSURE,
) -> list[dict[str, Any]]:
    """Each budget's answer chosen with measurements where the predictor is unsure (see the module
    docstring). ``results`` are a search's answers (``budget_ms`` the target searched), ``front`` its Pareto
    front (``[{"latency_ms", "accuracy", "arch"}]``), ``latency`` a predictor with ``predict_interval``. All
    budgets' candidates are measured in one ``measure`` call. Returns new result dicts, in order."""
    sp = get_space(space)
    pool: dict[str, tuple[float, dict[str, Any]]] = {}
    for p in front:
        pool.setdefault(_arch_key(p["arch"]), (float(p["accuracy"]), p["arch"]))
    for r in results:
        if r.get("arch") is not None:
            pool.setdefault(_arch_key(r["arch"]), (float(r["predicted_accuracy"]), r["arch"]))
    keys = list(pool)
    if not keys:
        return [dict(r) for r in results]
    pred, iv = latency.predict_interval([pool[k][1] for k in keys])
    acc = [pool[k][0] for k in keys]
    plans: list[tuple[int | None, list[int]] | None] = []
    todo: dict[str, int] = {}
    for r in results:
        if r.get("arch") is None:
            plans.append(None)
            continue
        budget = float(r["budget_ms"])
        ranked = sorted((i for i in range(len(keys)) if iv[i, 0] <= budget), key=lambda i: (-acc[i], pred[i]))
        sure = next((i for i in ranked if iv[i, 1] <= budget), None)
        unsure = [i for i in ranked if iv[i, 1] > budget and (sure is None or acc[i] > acc[sure])][:max_per_budget]
        plans.append((sure, unsure))
        todo.update((keys[i], i) for i in unsure)
    got: dict[int, Measurement] = {}
    if todo:
        idx = list(todo.values())
        got = dict(zip(idx, measure([sp.parse(pool[keys[i]][1]) for i in idx]), strict=True))
    out = []
    for r, plan in zip(results, plans, strict=True):
        r = dict(r)
        if plan is not None:
            sure, unsure = plan
            budget = float(r["budget_ms"])
            ok = [i for i in unsure if got[i].ms <= budget * (1.0 + (got[i].ci or 0.0))]
            if sure is not None:
                ok.append(sure)
            if ok:
                best = max(ok, key=lambda i: (acc[i], -pred[i]))
                arch = sp.parse(pool[keys[best]][1])
                r.update({"arch": arch.to_dict(), "predicted_latency_ms": float(pred[best]),
                          "predicted_accuracy": acc[best], "params": int(sp.params(arch)), "macs": int(sp.macs(arch))})
            lo, hi = latency.predict_interval([r["arch"]])[1][0]
            r["predicted_interval_ms"] = [float(lo), float(hi)]
            r["candidates_measured"] = len(unsure)
        out.append(r)
    return out


def validate_on_device(
    dev: Any, latency: Any, first: dict[str, Any], budgets: list[float], research: Any, space: Any, max_rounds: int,
    front: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measure the chosen subnets on ``dev`` (an acquired Device) and search again with tighter targets where
    one measured over its budget (``hwnas search --validate``); ``first`` is the first round's entry,
    ``research(targets)`` a later round's search. Rewrites ``first["results"]``; returns the top-level ``validation`` block.

    With a learned latency predictor (no LUT), each round's answers are chosen with the candidates of the
    search's Pareto front (``front``; ``research(targets, front)`` fills a later round's) whose interval
    straddles the budget measured first (:func:`measure_where_unsure`), on the device as its profile
    measures; ``validation`` then also says ``candidates_measured`` (distinct subnets measured while
    choosing) and ``subnets_measured`` (distinct subnets measured in all)."""
    calls = [0]
    learned = getattr(latency, "lut", None) is None
    while_choosing = [0]

    measure: Any = MeasureOnce(device_measure_as_profiled(dev, space.name)) if learned else device_measure(dev, latency.lut)

    def search(targets: list[float]) -> list[dict[str, Any]]:
        calls[0] += 1
        if not learned:
            return first["results"] if calls[0] == 1 else research(targets)
        seen: list[dict[str, Any]] = []
        found = first["results"] if calls[0] == 1 else research(targets, seen)
        before = measure.measured
        found = measure_where_unsure(found, (front or []) if calls[0] == 1 else seen, latency, measure,
                                     space=space.name)
        while_choosing[0] += measure.measured - before
        return found

    first["results"] = search_until_measured(search, budgets, measure, space=space.name, max_rounds=max_rounds)
    out = {"device": dev.profile.name, **summarize(first["results"])}
    if learned:
        out["candidates_measured"] = while_choosing[0]
        out["subnets_measured"] = measure.measured
    return out
