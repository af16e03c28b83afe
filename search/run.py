"""One search run as the ``hwnas search`` command makes it: the problem, the searcher by name, the PNAG
generator (trained on budgets and saved, or loaded from a file), the search and its results files.

Library code and the demo call :func:`run_search` as the command does; it returns plain data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .base import Searcher, SearchProblem
from .registry import make_searcher
from .results import write_results

__all__ = ["prepare_generator", "run_search"]

Progress = Callable[[int, int, str], None]


def prepare_generator(
    searcher: Searcher,
    *,
    train_budgets: Sequence[float] | None,
    generator: Path | None,
    on_progress: Progress | None = None,
) -> float | None:
    """Make a PNAG searcher ready to answer: train it on ``train_budgets`` (and save it to ``generator``
    when given), else load it from ``generator``. Returns the training seconds (None when loaded)."""
    if train_budgets:
        searcher.train(train_budgets, on_progress=on_progress)  # type: ignore[attr-defined]
        seconds: float = searcher.train_seconds_  # type: ignore[attr-defined]
        if generator is not None:
            searcher.save(generator)  # type: ignore[attr-defined]
        return seconds
    if generator is None:
        raise ValueError("a PNAG search needs train_budgets (to train) or a generator file (to answer)")
    searcher.load(generator)  # type: ignore[attr-defined]
    return None


def run_search(
    *,
    name: str,
    latency: Any,
    accuracy: Any,
    budgets: list[float],
    algo: str,
    seed: int = 0,
    max_params: int | None = None,
    max_macs: int | None = None,
    train_budgets: list[float] | None = None,
    generator: Path | None = None,
    out: Path | None = None,
    on_progress: Progress | None = None,
    front: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Search ``budgets`` with algorithm ``algo`` on ``latency`` and ``accuracy`` predictors.

    Returns ``{device: name, latency, results, evaluations, seconds[, train_seconds][, files]}``; with
    ``out``, the results files are written there (:func:`~.results.write_results`); ``front``, when given,
    receives the search's Pareto front."""
    problem = SearchProblem(latency=latency, accuracy=accuracy, max_params=max_params, max_macs=max_macs)
    searcher = make_searcher(algo, problem, seed=seed)
    train_seconds = None
    if algo == "pnag":
        train_seconds = prepare_generator(
            searcher, train_budgets=train_budgets, generator=generator, on_progress=on_progress
        )
    results = searcher.search(budgets, on_progress=None if algo == "pnag" else on_progress)
    if front is not None:  # the Pareto front, for --validate with a learned predictor
        front.extend(searcher.front_)
    entry: dict[str, Any] = {
        "device": name,
        "latency": latency.describe(),
        "results": results,
        "evaluations": searcher.evaluations_,
        "seconds": round(searcher.seconds_, 4),
    }
    if train_seconds is not None:
        entry["train_seconds"] = round(train_seconds, 3)
    if out is not None:
        info = {
            "device": name, "space": problem.space.name, "algo": algo, "seed": seed,
            "params": searcher.get_params(), "latency": latency.describe(),
            "evaluations": searcher.evaluations_, "seconds": searcher.seconds_,
            "max_params": max_params, "max_macs": max_macs,
        }
        entry["files"] = write_results(out, results=results, front=searcher.front_, info=info)
    return entry
