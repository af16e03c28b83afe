"""What every search algorithm shares: the problem (predictors + hard limits), parameter validation,
feasibility repair, the minimum-latency search and the shape of the results.

A :class:`SearchProblem` evaluates architectures in index form (:class:`~.encoding.Genes`) in batches:
latency from a :class:`~.latency.LatencyPredictor`, top-1 from an :class:`~.accuracy.AccuracyPredictor`,
parameters and MACs from per-block tables of the space. It counts evaluations (architectures whose accuracy
was predicted) and keeps the Pareto front (latency vs accuracy) of everything it evaluated within the
parameter/MACs limits.

Every :class:`Searcher` follows the estimator contract: ``__init__`` stores keyword-only parameters,
validated by :meth:`Searcher._validate_params` from the class's one declarative ``_parameters`` table;
:meth:`Searcher.search` takes the budgets and returns one result per budget::

    {"budget_ms", "arch", "predicted_latency_ms", "predicted_accuracy", "params", "macs"}
    {"budget_ms", "arch": None, "infeasible": True, "min_latency_ms"}      # nothing fits the budget

Infeasible budgets are known before any search: :meth:`SearchProblem.min_latency` finds the fastest
architecture within the limits by a direct (coordinate-descent) search in well under a second.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..supernet import get_space
from .accuracy import AccuracyPredictor
from .encoding import ArchEncoding, Genes
from .errors import BudgetError, PredictorError
from .latency import LatencyPredictor
from .params import Interval, Options, check_params

log = logging.getLogger(__name__)

__all__ = [
    "Interval",
    "Options",
    "SearchProblem",
    "Searcher",
    "check_budgets",
    "check_params",
    "pareto_mask",
]

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------------------
# Budgets and the Pareto front


def check_budgets(budgets: Iterable[Any], what: str = "latency budget") -> list[float]:
    """Budgets as floats; BudgetError unless each is a positive finite number."""
    out: list[float] = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int | float | np.integer | np.floating) or not math.isfinite(b) or b <= 0:
            raise BudgetError(f"{what} {b!r} is not a positive number (ms)")
        out.append(float(b))
    if not out:
        raise BudgetError(f"no {what}s given")
    return out


def pareto_mask(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Boolean mask of the points not dominated (lower latency and higher accuracy are better); of equal
    points the first is kept."""
    order = np.lexsort((-accuracy, latency))
    best = -np.inf
    keep = np.zeros(len(latency), dtype=bool)
    acc_sorted = accuracy[order]
    running = np.maximum.accumulate(acc_sorted)
    prev = np.concatenate([[best], running[:-1]])
    keep[order] = acc_sorted > prev
    return keep


# --------------------------------------------------------------------------------------------------------
# The problem


@dataclass
class Evaluated:
    """A batch of evaluated architectures."""

    genes: Genes
    latency: np.ndarray
    accuracy: np.ndarray


class SearchProblem:
    """Predictors, hard limits and the bookkeeping shared by all algorithms.

    Parameters
    ----------
    latency, accuracy:
        The predictors; both must be for the same space.
    resolutions:
        Resolutions to search (default: those the latency predictor holds).
    max_params, max_macs:
        Hard limits (None: none).

    Raises PredictorError when the predictors disagree on the space or a resolution cannot be encoded,
    BudgetError for a non-positive limit.
    """

    def __init__(
        self,
        *,
        latency: LatencyPredictor,
        accuracy: AccuracyPredictor,
        resolutions: Sequence[int] | None = None,
        max_params: int | None = None,
        max_macs: int | None = None,
    ) -> None:
        space = latency.space
        if accuracy.space_name != space.name:
            raise PredictorError(
                f"the accuracy predictor is for space {accuracy.space_name}, the latency predictor for {space.name}"
            )
        for name, value in (("max_params", max_params), ("max_macs", max_macs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise BudgetError(f"--{name.replace('_', '-')} {value!r} is not a positive number")
        self.space = get_space(space)
        rs = tuple(latency.resolutions) if resolutions is None else tuple(sorted({int(r) for r in resolutions}))
        slots = accuracy.encoding_.slots
        bad = [r for r in rs if r not in slots]
        if bad:
            raise PredictorError(f"the accuracy predictor cannot encode resolution {bad[0]} (slots {list(slots)})")
        self.encoding = ArchEncoding(self.space, resolutions=rs)
        self.latency_predictor = latency
        self.accuracy_predictor = accuracy
        self.max_params = max_params
        self.max_macs = max_macs
        self.evaluations = 0
        self._front: Evaluated | None = None
        self._min_cache: tuple[Genes, float] | None = None
        self._build_cost_tables()

    # ---- cost tables (params, MACs) ------------------------------------------------------------------

    def _build_cost_tables(self) -> None:
        sp, enc = self.space, self.encoding
        rs = enc.resolutions
        # parameters do not depend on the resolution: the first resolution's table serves all
        self._blk_params = sp.block_table(lambda e: e.params, rs[:1])[0]
        self._blk_macs = sp.block_table(lambda e: e.macs, rs)
        self._fix_params = np.asarray([sum(x.params for x in sp.fixed_entries(r)) for r in rs], dtype=np.float64)
        self._fix_macs = np.asarray([sum(x.macs for x in sp.fixed_entries(r)) for r in rs], dtype=np.float64)
        self._bidx = np.arange(sp.n_blocks)[None, :]

    def params(self, genes: Genes) -> np.ndarray:
        vals = self._blk_params[self._bidx, genes.ks, genes.e]
        return self._fix_params[genes.r] + np.where(self.encoding.active(genes), vals, 0.0).sum(axis=1)

    def macs(self, genes: Genes) -> np.ndarray:
        ri = genes.r.astype(np.int64)
        vals = self._blk_macs[ri[:, None], self._bidx, genes.ks, genes.e]
        return self._fix_macs[ri] + np.where(self.encoding.active(genes), vals, 0.0).sum(axis=1)

    @property
    def has_limits(self) -> bool:
        return self.max_params is not None or self.max_macs is not None

    def within_limits(self, genes: Genes) -> np.ndarray:
        """Boolean (n,): within ``max_params`` and ``max_macs``."""
        ok = np.ones(len(genes), dtype=bool)
        if self.max_params is not None:
            ok &= self.params(genes) <= self.max_params
        if self.max_macs is not None:
            ok &= self.macs(genes) <= self.max_macs
        return ok

    # ---- evaluation ----------------------------------------------------------------------------------

    def latency(self, genes: Genes) -> np.ndarray:
        """Predicted latency (ms); not counted as an evaluation (a table gather)."""
        return self.latency_predictor.predict_genes(genes, self.encoding)

    def accuracy(self, genes: Genes, *, count: bool = True) -> np.ndarray:
        """Predicted top-1, counted in :attr:`evaluations`."""
        if count:
            self.evaluations += len(genes)
        return self.accuracy_predictor.predict_genes(genes, self.encoding)

    def evaluate(self, genes: Genes, latency: np.ndarray | None = None, *, archive: bool = True) -> Evaluated:
        """Latency and accuracy of a batch; adds the batch to the Pareto front (``archive``)."""
        lat = self.latency(genes) if latency is None else latency
        acc = self.accuracy(genes)
        out = Evaluated(genes, lat, acc)
        if archive:
            self.add_to_front(out)
        return out

    def add_to_front(self, ev: Evaluated) -> None:
        ok = self.within_limits(ev.genes) if self.has_limits else np.ones(len(ev.genes), dtype=bool)
        if not ok.any():
            return
        cand = Evaluated(ev.genes.take(ok), ev.latency[ok], ev.accuracy[ok])
        # cheap pre-filter: keep only the batch's own front before merging
        keep = pareto_mask(cand.latency, cand.accuracy)
        cand = Evaluated(cand.genes.take(keep), cand.latency[keep], cand.accuracy[keep])
        if self._front is not None:
            cand = Evaluated(
                Genes.concat([self._front.genes, cand.genes]),
                np.concatenate([self._front.latency, cand.latency]),
                np.concatenate([self._front.accuracy, cand.accuracy]),
            )
            keep = pareto_mask(cand.latency, cand.accuracy)
            cand = Evaluated(cand.genes.take(keep), cand.latency[keep], cand.accuracy[keep])
        self._front = cand

    def front(self) -> Evaluated | None:
        """The Pareto front of everything evaluated within the limits, by increasing latency."""
        if self._front is None:
            return None
        order = np.argsort(self._front.latency, kind="stable")
        return Evaluated(self._front.genes.take(order), self._front.latency[order], self._front.accuracy[order])

    def reset(self) -> None:
        self.evaluations = 0
        self._front = None

    # ---- feasibility ---------------------------------------------------------------------------------

    def _moves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every single-choice move as (field 0=ks 1=e 2=d 3=r, position, new value index)."""
        hit = getattr(self, "_moves_cache", None)
        if hit is not None:
            return hit
        enc = self.encoding
        f, p, v = [], [], []
        for code, width, n in ((0, enc.n_blocks, enc.nk), (1, enc.n_blocks, enc.ne), (2, enc.n_stages, enc.nd),
                               (3, 1, len(enc.resolutions))):
            for pos in range(width):
                for val in range(n):
                    f.append(code)
                    p.append(pos)
                    v.append(val)
        self._moves_cache = (np.asarray(f), np.asarray(p), np.asarray(v))
        return self._moves_cache

    @staticmethod
    def apply_moves(genes: Genes, field: np.ndarray, pos: np.ndarray, value: np.ndarray) -> None:
        """Apply move i to row i of ``genes`` (in place)."""
        for code, arr in ((0, genes.ks), (1, genes.e), (2, genes.d)):
            i = np.flatnonzero(field == code)
            arr[i, pos[i]] = value[i]
        i = np.flatnonzero(field == 3)
        genes.r[i] = value[i]

    def neighbours(self, genes: Genes, row: int = 0) -> tuple[Genes, np.ndarray]:
        """Every architecture one choice away from row ``row`` (including unchanged copies where a move
        sets the current value), and the move indices into :meth:`_moves`."""
        f, p, v = self._moves()
        base = genes.take(np.full(len(f), row))
        self.apply_moves(base, f, p, v)
        return base, np.arange(len(f))

    def min_latency(self) -> tuple[Genes, float]:
        """The fastest architecture within the limits and its latency (ms), by coordinate descent from the
        smallest architecture at every resolution; ``(empty, inf)`` when even that breaks the limits.

        Exact for additive predictors (the LUT sum); at most a few hundred latency look-ups otherwise."""
        if self._min_cache is not None:
            return self._min_cache
        enc = self.encoding
        best_g: Genes | None = None
        best_lat = math.inf
        for ri in range(len(enc.resolutions)):
            g = enc.fill(1, ks=0, e=0, d=0, r=ri)
            if not self.within_limits(g)[0]:
                continue
            lat = float(self.latency(g)[0])
            for _ in range(200):  # each step strictly lowers the latency; bounded anyway
                nb, _ = self.neighbours(g)
                nb_lat = self.latency(nb)
                ok = self.within_limits(nb) if self.has_limits else np.ones(len(nb), dtype=bool)
                nb_lat = np.where(ok, nb_lat, np.inf)
                j = int(np.argmin(nb_lat))
                if nb_lat[j] >= lat - 1e-12:
                    break
                g, lat = nb.take(slice(j, j + 1)), float(nb_lat[j])
            if lat < best_lat:
                best_g, best_lat = g, lat
        if best_g is None:
            self._min_cache = (enc.fill(0, ks=0, e=0, d=0, r=0), math.inf)
        else:
            self._min_cache = (best_g, best_lat)
        return self._min_cache

    def min_latency_at(self, r_index: int) -> float:
        """Lower bound of the latency at resolution index ``r_index`` (the smallest choices there), ignoring
        the limits; an island whose bound exceeds the budget is skipped."""
        g = self.encoding.fill(1, ks=0, e=0, d=0, r=r_index)
        nb, _ = self.neighbours(g)
        nb = nb.take(nb.r == r_index)
        return float(min(self.latency(g)[0], self.latency(nb).min()))

    def feasible(self, genes: Genes, budget: float, latency: np.ndarray | None = None) -> np.ndarray:
        lat = self.latency(genes) if latency is None else latency
        ok = lat <= budget
        if self.has_limits:
            ok &= self.within_limits(genes)
        return ok

    def repair(
        self,
        genes: Genes,
        budget: float,
        rng: np.random.Generator,
        latency: np.ndarray | None = None,
        *,
        fixed_resolution: bool = False,
    ) -> tuple[Genes, np.ndarray]:
        """Make every row feasible (latency <= ``budget``, within the limits), in place, by shrinking one
        randomly chosen active choice at a time (kernel, expand ratio, depth or -- unless
        ``fixed_resolution`` -- resolution one step down); a row that reaches the smallest choices and is
        still infeasible becomes the minimum-latency architecture. Returns ``(genes, latency)``. The budget
        must be feasible (>= :meth:`min_latency`)."""
        enc = self.encoding
        lat = self.latency(genes) if latency is None else latency.copy()
        bad = ~self.feasible(genes, budget, lat)
        nb, ns = enc.n_blocks, enc.n_stages
        limit = nb * (enc.nk + enc.ne) + ns * enc.nd + len(enc.resolutions) + 2
        steps = 0
        while bad.any() and steps < limit:
            steps += 1
            rows = np.flatnonzero(bad)
            sub = genes.take(rows)
            active = enc.active(sub)
            # candidate decrements: ks (B), e (B), d (S), r (1)
            can = np.concatenate(
                [active & (sub.ks > 0), active & (sub.e > 0), sub.d > 0,
                 ((sub.r > 0) & (not fixed_resolution))[:, None]], axis=1
            )
            score = np.where(can, rng.random(can.shape), -1.0)
            pick = np.argmax(score, axis=1)
            stuck = score[np.arange(len(rows)), pick] < 0
            ks_i = np.flatnonzero((pick < nb) & ~stuck)
            sub.ks[ks_i, pick[ks_i]] -= 1
            e_i = np.flatnonzero((pick >= nb) & (pick < 2 * nb) & ~stuck)
            sub.e[e_i, pick[e_i] - nb] -= 1
            d_i = np.flatnonzero((pick >= 2 * nb) & (pick < 2 * nb + ns) & ~stuck)
            sub.d[d_i, pick[d_i] - 2 * nb] -= 1
            r_i = np.flatnonzero((pick == 2 * nb + ns) & ~stuck)
            sub.r[r_i] -= 1
            if stuck.any():
                g_min, _ = self.min_latency()
                st = np.flatnonzero(stuck)
                sub.put(st, Genes.concat([g_min] * len(st)))
            genes.put(rows, sub)
            sub_lat = self.latency(sub)
            lat[rows] = sub_lat
            bad[rows] = ~self.feasible(sub, budget, sub_lat)
        if bad.any():  # cannot happen for a feasible budget; be safe
            g_min, lat_min = self.min_latency()
            rows = np.flatnonzero(bad)
            genes.put(rows, Genes.concat([g_min] * len(rows)))
            lat[rows] = lat_min
        return genes, lat

    # ---- results -------------------------------------------------------------------------------------

    def result(self, budget: float, genes: Genes | None, row: int, latency: float, accuracy: float) -> dict[str, Any]:
        """One budget's answer as plain data."""
        if genes is None:
            _, min_lat = self.min_latency()
            return {
                "budget_ms": budget,
                "arch": None,
                "infeasible": True,
                "min_latency_ms": None if not math.isfinite(min_lat) else round(min_lat, 6),
                "predicted_latency_ms": None,
                "predicted_accuracy": None,
            }
        one = genes.take(slice(row, row + 1))
        arch = self.space.arch_from_arrays(self.encoding.arrays(one), 0)
        return {
            "budget_ms": budget,
            "arch": arch.to_dict(),
            "predicted_latency_ms": float(latency),
            "predicted_accuracy": float(accuracy),
            "params": int(round(float(self.params(one)[0]))),
            "macs": int(round(float(self.macs(one)[0]))),
        }

    def infeasible(self, budget: float) -> bool:
        return self.min_latency()[1] > budget


# --------------------------------------------------------------------------------------------------------
# Searchers


class Searcher(ABC):
    """Base class of the search algorithms (estimator contract; see the module docstring).

    Subclasses set ``name`` and ``_parameters`` ({parameter: Interval | Options}) and implement
    :meth:`_search_feasible`. Learned state after :meth:`search`: ``results_``, ``evaluations_``,
    ``seconds_``, ``front_`` (``[{"latency_ms", "accuracy", "arch"}]``).
    """

    name: ClassVar[str] = ""
    _parameters: ClassVar[dict[str, Interval | Options]] = {"seed": Interval(int, 0, None)}

    def __init__(self, *, problem: SearchProblem, seed: int = 0) -> None:
        self.problem = problem
        self.seed = seed

    def _validate_params(self) -> None:
        check_params(self, self._parameters)

    def get_params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._parameters}

    def search(self, budgets: Sequence[float], *, on_progress: Progress | None = None) -> list[dict[str, Any]]:
        """Answer every budget (ms); infeasible budgets are reported without searching."""
        self._validate_params()
        budgets = check_budgets(budgets)
        problem = self.problem
        problem.reset()
        start = time.perf_counter()
        feasible = [b for b in budgets if not problem.infeasible(b)]
        answers: dict[float, dict[str, Any]] = {}
        if feasible:
            with single_threaded_blas():
                answers = self._search_feasible(sorted(set(feasible)), on_progress)
        results = []
        for b in budgets:
            if b in answers:
                results.append(answers[b])
            else:
                results.append(problem.result(b, None, 0, math.nan, math.nan))
        self.seconds_ = time.perf_counter() - start
        self.evaluations_ = problem.evaluations
        self.results_ = results
        self.front_ = front_points(problem)
        return results

    @abstractmethod
    def _search_feasible(self, budgets: list[float], on_progress: Progress | None) -> dict[float, dict[str, Any]]:
        """Answers for the feasible budgets (ascending, unique), keyed by budget."""


def single_threaded_blas() -> Any:
    """A context in which numpy's BLAS runs on one thread: the search's matmuls are small (a population
    at a time), where a second BLAS thread gains little on an idle machine and loses several times over on
    a busy one (threads spin waiting for a core)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def front_points(problem: SearchProblem) -> list[dict[str, Any]]:
    """The problem's Pareto front as ``[{"latency_ms", "accuracy", "arch"}]``, by increasing latency."""
    front = problem.front()
    if front is None:
        return []
    archs = problem.space.archs_from_arrays(problem.encoding.arrays(front.genes))
    return [
        {"latency_ms": float(lat), "accuracy": float(acc), "arch": a.to_dict()}
        for lat, acc, a in zip(front.latency.tolist(), front.accuracy.tolist(), archs, strict=True)
    ]


def best_feasible(problem: SearchProblem, ev: Evaluated, budget: float) -> int | None:
    """Row of the most accurate feasible architecture of a batch, or None."""
    ok = problem.feasible(ev.genes, budget, ev.latency)
    if not ok.any():
        return None
    acc = np.where(ok, ev.accuracy, -np.inf)
    return int(np.argmax(acc))
