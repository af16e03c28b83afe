"""NSGA-II (pymoo) on (latency, -accuracy): one run gives a Pareto front, every budget's answer is read
off it.

The decision variables are the choice indices (kernel and expand ratio per block, depth per stage,
resolution) as integers: pymoo's SBX crossover and polynomial mutation with rounding repair, its standard
set-up for integer problems. The initial population is spread over the latency range: uniform random
architectures repaired into budgets drawn between the fastest architecture and the largest budget. The
largest budget and the parameter/MACs limits are inequality constraints. Every evaluated architecture
enters the problem's Pareto archive, from which each budget takes the most accurate architecture within it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from .base import Interval, Options, Progress, Searcher, SearchProblem
from .encoding import Genes

log = logging.getLogger(__name__)

__all__ = ["NSGA2Search"]


class NSGA2Search(Searcher):
    """NSGA-II over the integer choice indices (see the module docstring).

    Parameters: ``population_size``, ``generations``, ``eta_crossover``, ``eta_mutation`` (SBX and PM
    distribution indices; small values make larger steps), ``seed``.
    """

    name: ClassVar[str] = "nsga2"
    _parameters: ClassVar[dict[str, Interval | Options]] = {
        "population_size": Interval(int, 4, None),
        "generations": Interval(int, 1, None),
        "eta_crossover": Interval(float, 0.0, None, closed_low=False),
        "eta_mutation": Interval(float, 0.0, None, closed_low=False),
        "seed": Interval(int, 0, None),
    }

    def __init__(
        self,
        *,
        problem: SearchProblem,
        population_size: int = 200,
        generations: int = 150,
        eta_crossover: float = 3.0,
        eta_mutation: float = 3.0,
        seed: int = 0,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        self.population_size = population_size
        self.generations = generations
        self.eta_crossover = eta_crossover
        self.eta_mutation = eta_mutation

    def _search_feasible(self, budgets: list[float], on_progress: Progress | None) -> dict[float, dict[str, Any]]:
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.callback import Callback
        from pymoo.core.problem import Problem
        from pymoo.core.sampling import Sampling
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.optimize import minimize

        sp = self.problem
        enc = sp.encoding
        nb, ns = enc.n_blocks, enc.n_stages
        upper = np.concatenate([
            np.full(nb, enc.nk - 1), np.full(nb, enc.ne - 1), np.full(ns, enc.nd - 1), [len(enc.resolutions) - 1]
        ]).astype(float)
        max_budget = max(budgets)
        n_constr = 1 + (sp.max_params is not None) + (sp.max_macs is not None)

        def to_genes(x: np.ndarray) -> Genes:
            xi = np.rint(x).astype(np.int64)
            return Genes(
                ks=xi[:, :nb].astype(np.int8),
                e=xi[:, nb : 2 * nb].astype(np.int8),
                d=xi[:, 2 * nb : 2 * nb + ns].astype(np.int8),
                r=xi[:, -1].astype(np.int16),
            )

        def to_x(g: Genes) -> np.ndarray:
            return np.concatenate([g.ks, g.e, g.d, g.r[:, None]], axis=1).astype(float)

        class _Problem(Problem):
            def __init__(self) -> None:
                super().__init__(n_var=len(upper), n_obj=2, n_ieq_constr=n_constr, xl=0.0, xu=upper, vtype=int)

            def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
                g = to_genes(x)
                ev = sp.evaluate(g)
                out["F"] = np.column_stack([ev.latency, -ev.accuracy])
                cons = [ev.latency - max_budget]
                if sp.max_params is not None:
                    cons.append(sp.params(g) - sp.max_params)
                if sp.max_macs is not None:
                    cons.append(sp.macs(g) - sp.max_macs)
                out["G"] = np.column_stack(cons)

        seed = self.seed
        lo = sp.min_latency()[1]

        class _Spread(Sampling):
            def _do(self, problem: Any, n_samples: int, **kwargs: Any) -> np.ndarray:
                rng = np.random.default_rng(seed)
                g = enc.sample(rng, n_samples)
                edges = np.linspace(lo, max_budget, 9)[1:]  # 8 latency bands up to the largest budget
                band = rng.integers(0, len(edges), n_samples)
                for i, edge in enumerate(edges):
                    rows = np.flatnonzero(band == i)
                    if len(rows):
                        part, _ = sp.repair(g.take(rows), float(edge), rng)
                        g.put(rows, part)
                return to_x(g)

        generations = self.generations

        class _Progress(Callback):
            def notify(self, algorithm: Any) -> None:
                if on_progress is not None:
                    on_progress(int(algorithm.n_gen), generations, "generation")

        algorithm = NSGA2(
            pop_size=self.population_size,
            sampling=_Spread(),
            crossover=SBX(prob=1.0, eta=self.eta_crossover, vtype=float, repair=RoundingRepair()),
            mutation=PM(eta=self.eta_mutation, vtype=float, repair=RoundingRepair()),
            eliminate_duplicates=True,
        )
        minimize(_Problem(), algorithm, ("n_gen", self.generations), seed=self.seed, verbose=False,
                 callback=_Progress())
        return answers_from_front(sp, budgets)


def answers_from_front(problem: SearchProblem, budgets: list[float]) -> dict[float, dict[str, Any]]:
    """Each budget's most accurate architecture on the problem's Pareto archive."""
    front = problem.front()
    answers = {}
    for b in budgets:
        if front is None or not (front.latency <= b).any():
            # nothing evaluated fits (cannot happen after a spread initial population): the fastest one
            g, lat = problem.min_latency()
            acc = float(problem.evaluate(g, np.asarray([lat])).accuracy[0])
            answers[b] = problem.result(b, g, 0, lat, acc)
            continue
        j = int(np.flatnonzero(front.latency <= b)[-1])
        answers[b] = problem.result(b, front.genes, j, float(front.latency[j]), float(front.accuracy[j]))
    return answers
