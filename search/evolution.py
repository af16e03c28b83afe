"""Regularised evolution on array-encoded populations (OFA's ``EvolutionFinder``, made fast and better),
its MnasNet-reward variant, and the random-search baseline.

:class:`EvolutionSearch` keeps OFA's scheme -- each generation keeps the best ``parent_ratio`` of the
population as parents and refills it with mutated parents (``mutation_ratio``; every block's kernel and
expand ratio, every stage's depth and the resolution resampled with probability ``mutate_prob``) and uniform
crossovers of two parents -- and changes how it is run:

- whole populations are int arrays: one latency gather and one batched MLP call per generation;
- offspring are feasible by construction: each child draws ``retries`` candidates from its parent(s) (a
  bounded, vectorised version of OFA's rejection loop, costing latency look-ups only) and keeps the first
  that fits; when none fits, the first is *repaired* (random choices shrunk one step at a time);
- one island per resolution (a resolution change moves every layer's latency and rarely survives as a
  mutation), evolved side by side in one array, with successive halving of the islands;
- the fittest member of the best distinct (resolution, depths) pairs is polished by a multiple-choice
  knapsack over every block's (kernel, expand) pair (:func:`knapsack_polish`), then a short local search
  (single changes, and pairs of one change up and one down) finishes at the budget's edge.

``benchmarks/bench_search.py`` measures it against OFA's own finder. :class:`MnasSearch` is the same
evolution with MnasNet's reward ``ACC * (LAT / T) ** w`` (``w = alpha`` if ``LAT <= T`` else ``beta``;
soft: alpha = beta = -0.07, hard: alpha = 0, beta = -1) as fitness and no repair; its answer is the
best-reward architecture that meets the budget (hard limits hold for every algorithm).
:class:`RandomSearch` draws uniform architectures, repairs them into each budget and keeps the most
accurate.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from .base import Evaluated, Interval, Options, Progress, Searcher, SearchProblem, best_feasible
from .encoding import Genes

log = logging.getLogger(__name__)

#: With more resolutions than this (e.g. ``ofa-mbv3-w1.0`` searched at all 25 under a learned latency
#: predictor) one population covers them all instead of one island each.
MAX_ISLANDS = 8

#: The best answer of a run: (genes (1 row), latency, accuracy, fitness).
Best = tuple[Genes, float, float, float]

__all__ = ["EvolutionSearch", "MnasSearch", "RandomSearch", "local_search"]


def mutate(genes: Genes, prob: float, n_res: int, rng: np.random.Generator, nk: int, ne: int, nd: int) -> Genes:
    """OFA's mutation, vectorised: every block's (kernel, expand) pair, every stage's depth and the
    resolution are resampled uniformly with probability ``prob``."""
    g = genes.copy()
    n, b = g.ks.shape
    blk = rng.random((n, b)) < prob
    g.ks[blk] = rng.integers(0, nk, size=int(blk.sum()))
    g.e[blk] = rng.integers(0, ne, size=int(blk.sum()))
    stg = rng.random(g.d.shape) < prob
    g.d[stg] = rng.integers(0, nd, size=int(stg.sum()))
    res = rng.random(n) < prob
    g.r[res] = rng.integers(0, n_res, size=int(res.sum()))
    return g


def crossover(a: Genes, b: Genes, rng: np.random.Generator) -> Genes:
    """Uniform crossover: every choice from either parent with probability 1/2."""
    return Genes(
        ks=np.where(rng.random(a.ks.shape) < 0.5, a.ks, b.ks),
        e=np.where(rng.random(a.e.shape) < 0.5, a.e, b.e),
        d=np.where(rng.random(a.d.shape) < 0.5, a.d, b.d),
        r=np.where(rng.random(a.r.shape) < 0.5, a.r, b.r),
    )


def local_search(
    problem: SearchProblem, genes: Genes, latency: float, accuracy: float, budget: float, *, rounds: int
) -> tuple[Genes, float, float]:
    """Hill-climb one feasible architecture: each round evaluates every single change and every pair of
    a change that breaks the budget with one lower choice elsewhere, and moves to the best feasible one if
    it is more accurate. Returns (genes (1 row), latency, accuracy)."""
    f_all, p_all, v_all = problem._moves()
    for _ in range(rounds):
        singles, _ = problem.neighbours(genes)
        s_lat = problem.latency(singles)
        ok = problem.feasible(singles, budget, s_lat)
        cur = np.concatenate([genes.ks[0], genes.e[0], genes.d[0], genes.r])
        width = (genes.ks.shape[1], genes.e.shape[1], genes.d.shape[1], 1)
        offset = np.cumsum((0, *width))[:-1]
        current_val = cur[offset[f_all] + p_all]
        changed = v_all != current_val
        active = problem.encoding.active(genes)[0]
        relevant = np.ones(len(f_all), dtype=bool)
        blockwise = f_all <= 1
        relevant[blockwise] = active[p_all[blockwise]]
        down = np.flatnonzero(changed & relevant & (v_all < current_val))
        up = np.flatnonzero(changed & relevant & ~ok)
        parts = [singles.take(np.flatnonzero(changed & relevant & ok))]
        if len(up) and len(down):
            uu = np.repeat(up, len(down))
            dd = np.tile(down, len(up))
            keep = (f_all[uu] != f_all[dd]) | (p_all[uu] != p_all[dd])
            uu, dd = uu[keep], dd[keep]
            pairs = singles.take(uu)
            problem.apply_moves(pairs, f_all[dd], p_all[dd], v_all[dd])
            parts.append(pairs)
        cand = Genes.concat(parts)
        c_lat = problem.latency(cand)
        ok = problem.feasible(cand, budget, c_lat)
        if not ok.any():
            break
        cand = cand.take(ok)
        c_lat = c_lat[ok]
        ev = problem.evaluate(cand, c_lat)
        j = int(np.argmax(ev.accuracy))
        if ev.accuracy[j] <= accuracy + 1e-9:
            break
        genes, latency, accuracy = cand.take(slice(j, j + 1)), float(c_lat[j]), float(ev.accuracy[j])
    return genes, latency, accuracy


def knapsack_polish(
    problem: SearchProblem, genes: Genes, latency: float, accuracy: float, budget: float, *, rounds: int,
    bins: int = 2000,
) -> tuple[Genes, float, float]:
    """Re-choose every active block's (kernel, expand) pair at once, keeping depths and resolution.

    Each round measures, for every active block and every pair, the accuracy and latency change of that
    single change, and solves the multiple-choice knapsack "maximise the summed accuracy changes with the
    summed latency changes within the budget's slack" exactly by dynamic programming (latencies rounded
    *up* to ``budget / bins``). The solution is evaluated for real and kept if more accurate; latency is
    additive over blocks for the LUT sum and the learned predictor, and checked anyway.
    Returns (genes (1 row), latency, accuracy)."""
    enc = problem.encoding
    n_pairs = enc.nk * enc.ne
    pair_k = np.repeat(np.arange(enc.nk), enc.ne).astype(np.int8)
    pair_e = np.tile(np.arange(enc.ne), enc.nk).astype(np.int8)
    step = budget / bins
    for _ in range(rounds):
        act = np.flatnonzero(enc.active(genes)[0])
        n_act = len(act)
        cand = genes.take(np.zeros(n_act * n_pairs, dtype=np.int64))
        rows = np.arange(n_act * n_pairs)
        blocks = np.repeat(act, n_pairs)
        cand.ks[rows, blocks] = np.tile(pair_k, n_act)
        cand.e[rows, blocks] = np.tile(pair_e, n_act)
        c_lat = problem.latency(cand)
        c_acc = problem.evaluate(cand, c_lat).accuracy
        w = (c_lat - latency).reshape(n_act, n_pairs)
        v = (c_acc - accuracy).reshape(n_act, n_pairs)
        w_min = w.min(axis=1)
        cap = budget - latency - w_min.sum()
        if cap < 0:
            break
        q = np.ceil((w - w_min[:, None]) / step - 1e-9).astype(np.int64)
        n_cap = int(np.floor(cap / step + 1e-9))
        dp = np.full(n_cap + 1, -np.inf)
        dp[0] = 0.0
        choice = np.zeros((n_act, n_cap + 1), dtype=np.int16)
        for i in range(n_act):
            new = np.full(n_cap + 1, -np.inf)
            arg = np.zeros(n_cap + 1, dtype=np.int16)
            for c in range(n_pairs):
                qc = q[i, c]
                if qc > n_cap:
                    continue
                shifted = np.full(n_cap + 1, -np.inf)
                shifted[qc:] = dp[: n_cap + 1 - qc] + v[i, c]
                better = shifted > new
                new[better] = shifted[better]
                arg[better] = c
            dp, choice[i] = new, arg
        t = int(np.argmax(dp))
        if not np.isfinite(dp[t]) or dp[t] <= 1e-9:
            break
        picks = np.zeros(n_act, dtype=np.int64)
        for i in range(n_act - 1, -1, -1):
            c = int(choice[i, t])
            picks[i] = c
            t -= int(q[i, c])
        new_g = genes.copy()
        new_g.ks[0, act] = pair_k[picks]
        new_g.e[0, act] = pair_e[picks]
        n_lat = problem.latency(new_g)
        if not problem.feasible(new_g, budget, n_lat)[0]:
            break
        n_acc = float(problem.evaluate(new_g, n_lat).accuracy[0])
        if n_acc <= accuracy + 1e-9:
            break
        genes, latency, accuracy = new_g, float(n_lat[0]), n_acc
    return genes, latency, accuracy


class EvolutionSearch(Searcher):
    """Array-encoded regularised evolution (see the module docstring).

    Parameters
    ----------
    problem:
        The :class:`~.base.SearchProblem`.
    population_size, generations, parent_ratio, mutation_ratio, mutate_prob:
        OFA's evolution parameters (OFA: 100, 500, 0.25, 0.5, 0.1). The defaults here are tuned for the
        array form: a larger population for fewer generations (see ``benchmarks/bench_search.py``).
    islands:
        ``"resolution"``: one run per resolution (the resolution fixed in it; the best answer wins), since
        a resolution change moves the latency of every layer and rarely survives as a mutation;
        ``"none"``: one run over all resolutions (OFA), also used with more than :data:`MAX_ISLANDS`
        resolutions.
    halving:
        With islands: after a quarter and after half of the generations, drop the worse half of the
        islands (successive halving), so that the evaluations go to the promising resolutions.
    retries:
        Candidates drawn per child (mutations of the same parent, or crossovers of the same two parents);
        the first that fits is kept, and only when none fits is the first one repaired. Latency is a cheap
        table gather, so this costs no accuracy evaluations.
    polish_top, polish_rounds:
        After the run, the fittest member of each of the ``polish_top`` best distinct (resolution,
        depths) pairs is polished by :func:`knapsack_polish` (``polish_rounds`` rounds): evolution finds
        good depths and resolutions, the knapsack the best kernels and expand ratios for them.
    restarts:
        Independent runs per budget (and island); the best answer is kept.
    shared:
        Run the budgets in ascending order, seeding each run with ``seed_fraction`` of its population from
        the previous budget's final population (which fits the larger budget).
    seed_fraction:
        Share of the population seeded with ``shared``.
    local_search_rounds:
        Rounds of the final local search per answer (0: none).
    seed:
        Seeds everything.
    """

    name: ClassVar[str] = "evolution"
    _parameters: ClassVar[dict[str, Interval | Options]] = {
        "population_size": Interval(int, 4, None),
        "generations": Interval(int, 0, None),
        "parent_ratio": Interval(float, 0.0, 1.0, closed_low=False),
        "mutation_ratio": Interval(float, 0.0, 1.0),
        "mutate_prob": Interval(float, 0.0, 1.0),
        "islands": Options(("resolution", "none")),
        "halving": Options((True, False)),
        "retries": Interval(int, 1, None),
        "polish_top": Interval(int, 0, None),
        "polish_rounds": Interval(int, 1, None),
        "restarts": Interval(int, 1, None),
        "shared": Options((True, False)),
        "seed_fraction": Interval(float, 0.0, 1.0),
        "local_search_rounds": Interval(int, 0, None),
        "seed": Interval(int, 0, None),
    }

    def __init__(
        self,
        *,
        problem: SearchProblem,
        population_size: int = 192,
        generations: int = 36,
        parent_ratio: float = 0.25,
        mutation_ratio: float = 0.5,
        mutate_prob: float = 0.1,
        islands: str = "resolution",
        halving: bool = True,
        retries: int = 4,
        polish_top: int = 4,
        polish_rounds: int = 4,
        restarts: int = 1,
        shared: bool = False,
        seed_fraction: float = 0.1,
        local_search_rounds: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        self.islands = islands
        self.halving = halving
        self.retries = retries
        self.polish_top = polish_top
        self.polish_rounds = polish_rounds
        self.seed_fraction = seed_fraction
        self.population_size = population_size
        self.generations = generations
        self.parent_ratio = parent_ratio
        self.mutation_ratio = mutation_ratio
        self.mutate_prob = mutate_prob
        self.restarts = restarts
        self.shared = shared
        self.local_search_rounds = local_search_rounds

    # ---- fitness: accuracy (feasible by repair) ------------------------------------------------------

    repair_offspring: ClassVar[bool] = True

    def _fitness(self, ev: Evaluated, budget: float) -> np.ndarray:
        return ev.accuracy

    def _answer(self, ev: Evaluated, fitness: np.ndarray, budget: float) -> int | None:
        """Row of the answer in a final (or any) batch."""
        return best_feasible(self.problem, ev, budget)

    # ---- the run -------------------------------------------------------------------------------------

    def _prepare(
        self, genes: Genes, budget: float, rng: np.random.Generator, fixed_r: bool
    ) -> tuple[Genes, np.ndarray]:
        if self.repair_offspring:
            return self.problem.repair(genes, budget, rng, fixed_resolution=fixed_r)
        return genes, self.problem.latency(genes)

    def _evolve(
        self, budget: float, islands: list[int | None], seed_pop: Evaluated | None, rng: np.random.Generator
    ) -> tuple[Evaluated, np.ndarray, Best | None]:
        """One run for one budget: ``len(islands)`` populations evolved side by side in one array
        (island-major rows), each at its own resolution index (``None``: one population over all
        resolutions). Returns the final population, its fitness and the best feasible answer seen."""
        problem, enc = self.problem, self.problem.encoding
        n_isl, pop_size = len(islands), self.population_size
        n_par = max(1, int(round(self.parent_ratio * pop_size)))
        n_mut = int(round(self.mutation_ratio * pop_size))
        n_cross = pop_size - n_mut
        fixed_r = islands[0] is not None
        r_of = np.asarray([0 if r is None else r for r in islands], dtype=np.int16)
        n_res = 1 if fixed_r else len(enc.resolutions)
        isl = np.arange(n_isl)
        start = enc.sample(rng, n_isl * pop_size)
        if fixed_r:
            start.r[:] = np.repeat(r_of, pop_size)
        if seed_pop is not None and self.seed_fraction > 0:
            n_seed = int(pop_size * self.seed_fraction)
            for k in range(n_isl):
                rows = np.flatnonzero(seed_pop.genes.r == r_of[k]) if fixed_r else np.arange(len(seed_pop.genes))
                rows = rows[:n_seed]
                if len(rows):
                    start.put(k * pop_size + np.arange(len(rows)), seed_pop.genes.take(rows))
        genes, lat = self._prepare(start, budget, rng, fixed_r)
        pop = problem.evaluate(genes, lat)
        fit = self._fitness(pop, budget)
        best = self._track(None, pop, fit, budget)
        width = pop_size
        drops = {max(1, self.generations // 4), max(2, self.generations // 2)} if self.halving else set()
        for gen in range(self.generations):
            if gen in drops and n_isl > 1:  # successive halving: keep the better half of the islands
                keep = np.sort(np.argsort(-fit.reshape(n_isl, width).max(axis=1), kind="stable")[: (n_isl + 1) // 2])
                rows = (keep[:, None] * width + np.arange(width)[None, :]).ravel()
                pop, fit = Evaluated(*_take3(pop, rows)), fit[rows]
                r_of, n_isl = r_of[keep], len(keep)
                isl = np.arange(n_isl)
            top = np.argsort(-fit.reshape(n_isl, width), axis=1, kind="stable")[:, :n_par]
            rows = (top + isl[:, None] * width).ravel()
            parents = Evaluated(*_take3(pop, rows))
            p_fit = fit[rows]
            base = isl[:, None] * n_par
            # every child slot gets `retries` candidates from the same parent(s) (OFA's rejection loop, bounded
            # and vectorised); the first feasible one is kept, else the first one is repaired
            m = self.retries if self.repair_offspring else 1
            kids = []
            if n_mut:
                pick = (rng.integers(0, n_par, (n_isl, n_mut)) + base).ravel()
                kids.append(mutate(parents.genes.take(np.repeat(pick, m)), self.mutate_prob, n_res, rng,
                                   enc.nk, enc.ne, enc.nd))
            if n_cross:
                a = (rng.integers(0, n_par, (n_isl, n_cross)) + base).ravel()
                b = (rng.integers(0, n_par, (n_isl, n_cross)) + base).ravel()
                kids.append(crossover(parents.genes.take(np.repeat(a, m)), parents.genes.take(np.repeat(b, m)), rng))
            slot_island = np.concatenate([np.repeat(isl, n_mut), np.repeat(isl, n_cross)])
            cand = Genes.concat(kids)
            if fixed_r:
                cand.r[:] = np.repeat(r_of[slot_island], m)
            if m > 1:
                ok = problem.feasible(cand, budget).reshape(-1, m)
                choice = np.argmax(ok, axis=1)
                cand = cand.take(np.arange(len(choice)) * m + choice)
            children = cand.take(np.argsort(slot_island, kind="stable"))
            children, c_lat = self._prepare(children, budget, rng, fixed_r)
            child_ev = _evaluate_new(problem, parents, children, c_lat)
            c_fit = self._fitness(child_ev, budget)
            best = self._track(best, child_ev, c_fit, budget)
            merged = np.argsort(np.concatenate([np.repeat(isl, n_par), np.repeat(isl, pop_size)]), kind="stable")
            pop = Evaluated(
                Genes.concat([parents.genes, child_ev.genes]).take(merged),
                np.concatenate([parents.latency, child_ev.latency])[merged],
                np.concatenate([parents.accuracy, child_ev.accuracy])[merged],
            )
            fit = np.concatenate([p_fit, c_fit])[merged]
            width = n_par + pop_size
        return pop, fit, best

    def _polish(
        self, pop: Evaluated, fit: np.ndarray, best: tuple[Genes, float, float], budget: float
    ) -> tuple[Genes, float, float]:
        """Knapsack-polish the fittest feasible member of each of the ``polish_top`` best distinct
        (resolution, depths) pairs of the final population; return the best result (or ``best``)."""
        problem = self.problem
        ok = problem.feasible(pop.genes, budget, pop.latency)
        order = np.argsort(-np.where(ok, fit, -np.inf), kind="stable")
        order = order[ok[order]]
        keys = np.concatenate([pop.genes.d[order].astype(np.int64), pop.genes.r[order, None].astype(np.int64)], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        chosen = order[np.sort(first)][: self.polish_top]
        out = best
        for row in chosen.tolist():
            g, lat, acc = knapsack_polish(
                problem, pop.genes.take(slice(row, row + 1)), float(pop.latency[row]), float(pop.accuracy[row]),
                budget, rounds=self.polish_rounds,
            )
            if acc > out[2]:
                out = (g, lat, acc)
        return out

    def _track(self, best: Best | None, ev: Evaluated, fit: np.ndarray, budget: float) -> Best | None:
        """Keep the best answer (by fitness among feasible rows) as (genes, latency, accuracy, fitness)."""
        ok = self.problem.feasible(ev.genes, budget, ev.latency)
        if not ok.any():
            return best
        f = np.where(ok, fit, -np.inf)
        j = int(np.argmax(f))
        if best is None or f[j] > best[3]:
            return (ev.genes.take(slice(j, j + 1)), float(ev.latency[j]), float(ev.accuracy[j]), float(f[j]))
        return best

    def _search_feasible(self, budgets: list[float], on_progress: Progress | None) -> dict[float, dict[str, Any]]:
        problem = self.problem
        rng = np.random.default_rng(self.seed)
        answers: dict[float, dict[str, Any]] = {}
        carry: Evaluated | None = None
        n_res = len(problem.encoding.resolutions)
        total = len(budgets) * self.restarts
        done = 0
        for budget in budgets:
            if self.islands == "resolution" and 1 < n_res <= MAX_ISLANDS:
                islands: list[int | None] = [ri for ri in range(n_res) if problem.min_latency_at(ri) <= budget]
            else:
                islands = [None]
            best: Best | None = None
            final: tuple[Evaluated, np.ndarray] | None = None
            for _ in range(self.restarts):
                pop, fit, run_best = self._evolve(budget, islands, carry if self.shared else None, rng)
                if run_best is not None and (best is None or run_best[3] > best[3]):
                    best, final = run_best, (pop, fit)
                done += 1
                if on_progress is not None:
                    on_progress(done, total, f"{budget:g} ms")
            if best is None:  # only without repair (MnasNet reward): repair the fastest architecture
                g, lat = problem.repair(problem.min_latency()[0].copy(), budget, rng)
                acc = problem.evaluate(g, lat).accuracy
                best = (g, float(lat[0]), float(acc[0]), 0.0)
            genes, lat, acc, _ = best
            if self.repair_offspring and final is not None and self.polish_top:
                genes, lat, acc = self._polish(final[0], final[1], (genes, lat, acc), budget)
            if self.local_search_rounds and self.repair_offspring:
                genes, lat, acc = local_search(problem, genes, lat, acc, budget, rounds=self.local_search_rounds)
            answers[budget] = problem.result(budget, genes, 0, lat, acc)
            if final is not None:
                order = np.argsort(-final[1], kind="stable")
                carry = Evaluated(*_take3(final[0], order))
        return answers


def _evaluate_new(problem: SearchProblem, parents: Evaluated, children: Genes, latency: np.ndarray) -> Evaluated:
    """Evaluate the children, predicting each distinct architecture once: a child equal to a parent (or to
    an earlier child) takes its accuracy without an evaluation. Late generations of a converged population
    breed many copies; the search trajectory is the same, only cheaper."""
    n_par = len(parents.genes)
    keys = Genes.concat([parents.genes, children]).flat()
    keys = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    child_ids = inverse[n_par:]
    new_ids = np.unique(child_ids[first[child_ids] >= n_par])
    acc_of = np.empty(len(first), dtype=np.float64)
    known = first < n_par
    acc_of[known] = parents.accuracy[first[known]]
    if len(new_ids):
        rows = first[new_ids] - n_par
        acc_of[new_ids] = problem.evaluate(children.take(rows), latency[rows]).accuracy
    return Evaluated(children, latency, acc_of[child_ids])


def _take3(ev: Evaluated, rows: Any) -> tuple[Genes, np.ndarray, np.ndarray]:
    return ev.genes.take(rows), ev.latency[rows], ev.accuracy[rows]


class MnasSearch(EvolutionSearch):
    """Evolution with MnasNet's reward ``ACC * (LAT / T) ** w`` as fitness (see the module docstring).

    Extra parameters: ``alpha`` (exponent when LAT <= T; soft -0.07, hard 0) and ``beta`` (when LAT > T;
    soft -0.07, hard -1)."""

    name: ClassVar[str] = "mnas"
    _parameters: ClassVar[dict[str, Interval | Options]] = {
        **EvolutionSearch._parameters,
        "alpha": Interval(float, -10.0, 0.0),
        "beta": Interval(float, -10.0, 0.0),
    }
    repair_offspring: ClassVar[bool] = False

    def __init__(
        self,
        *,
        problem: SearchProblem,
        alpha: float = -0.07,
        beta: float = -0.07,
        population_size: int = 192,
        generations: int = 36,
        parent_ratio: float = 0.25,
        mutation_ratio: float = 0.5,
        mutate_prob: float = 0.1,
        islands: str = "resolution",
        halving: bool = True,
        retries: int = 4,
        polish_top: int = 4,
        polish_rounds: int = 4,
        restarts: int = 1,
        shared: bool = False,
        seed_fraction: float = 0.1,
        local_search_rounds: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            problem=problem, population_size=population_size, generations=generations,
            parent_ratio=parent_ratio, mutation_ratio=mutation_ratio, mutate_prob=mutate_prob,
            islands=islands, halving=halving, retries=retries, polish_top=polish_top,
            polish_rounds=polish_rounds, restarts=restarts, shared=shared, seed_fraction=seed_fraction,
            local_search_rounds=local_search_rounds, seed=seed,
        )
        self.alpha = alpha
        self.beta = beta

    def _fitness(self, ev: Evaluated, budget: float) -> np.ndarray:
        ratio = ev.latency / budget
        w = np.where(ratio <= 1.0, self.alpha, self.beta)
        reward = ev.accuracy * ratio**w
        if self.problem.has_limits:
            reward = np.where(self.problem.within_limits(ev.genes), reward, -np.inf)
        return reward


class RandomSearch(Searcher):
    """Uniformly random architectures, repaired into each budget; the most accurate is kept.

    Parameters: ``samples`` per budget, ``seed``."""

    name: ClassVar[str] = "random"
    _parameters: ClassVar[dict[str, Interval | Options]] = {
        "samples": Interval(int, 1, None),
        "seed": Interval(int, 0, None),
    }

    def __init__(self, *, problem: SearchProblem, samples: int = 20000, seed: int = 0) -> None:
        super().__init__(problem=problem, seed=seed)
        self.samples = samples

    def _search_feasible(self, budgets: list[float], on_progress: Progress | None) -> dict[float, dict[str, Any]]:
        problem = self.problem
        rng = np.random.default_rng(self.seed)
        answers = {}
        for i, budget in enumerate(budgets):
            best: tuple[Genes, float, float] | None = None
            for start in range(0, self.samples, 8192):
                n = min(8192, self.samples - start)
                g, lat = problem.repair(problem.encoding.sample(rng, n), budget, rng)
                ev = problem.evaluate(g, lat)
                j = best_feasible(problem, ev, budget)
                if j is not None and (best is None or ev.accuracy[j] > best[2]):
                    best = (g.take(slice(j, j + 1)), float(ev.latency[j]), float(ev.accuracy[j]))
            assert best is not None  # repaired rows are feasible
            answers[budget] = problem.result(budget, best[0], 0, best[1], best[2])
            if on_progress is not None:
                on_progress(i + 1, len(budgets), f"{budget:g} ms")
        return answers
