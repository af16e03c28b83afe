"""Search runs as the ``hwnas search`` command makes them: the problem, the searcher by name, the PNAG
generator (trained on budgets and saved, or loaded from a file), the search and its results files
(:func:`run_search`); several devices searched in parallel and their results merged, and the on-device
validation that searches again with tighter targets (:func:`search_targets`).

Library code and the demo call these as the command does; they return plain data."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .base import Searcher, SearchProblem
from .registry import make_searcher
from .results import write_results

__all__ = ["prepare_generator", "run_search", "search_targets"]

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


def search_targets(
    targets: Sequence[tuple[str, Any]],
    *,
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
    validate: str | None = None,
    max_rounds: int | None = None,
) -> dict[str, Any]:
    """Search ``budgets`` on each ``(name, latency predictor)`` of ``targets`` (several in parallel, with one
    results subfolder each under ``out``), and with ``validate`` (a device profile; one target only) measure
    the chosen subnets there and search again with tighter targets where one measured over its budget.

    Returns the ``hwnas search`` JSON: ``{results, evaluations, seconds, ...}``; with several targets each
    result names its ``device`` and ``devices`` holds the per-target entries; with ``validate``, the
    ``validation`` block (:func:`~.closed_loop.validate_on_device`), also written into ``results.json``."""
    if validate is not None and len(targets) != 1:
        raise ValueError("on-device validation needs exactly one latency predictor")
    several = len(targets) > 1
    first_front: list[dict[str, Any]] = []
    limits = {"max_params": max_params, "max_macs": max_macs}

    def run(item: tuple[str, Any]) -> dict[str, Any]:
        name, latency = item
        return run_search(
            name=name, latency=latency, accuracy=accuracy, budgets=budgets, algo=algo, seed=seed, **limits,
            train_budgets=train_budgets, generator=generator,
            out=(out / name if several else out) if out is not None else None,
            on_progress=None if several else on_progress, front=None if several else first_front,
        )

    start = time.perf_counter()
    if several:
        with ThreadPoolExecutor(max_workers=min(len(targets), 4)) as pool:
            entries = list(pool.map(run, targets))
    else:
        entries = [run(targets[0])]
    wall = time.perf_counter() - start

    result: dict[str, Any]
    if several:
        result = {
            "results": [{"device": e["device"], **r} for e in entries for r in e["results"]],
            "devices": entries,
            "evaluations": sum(e["evaluations"] for e in entries),
            "seconds": round(wall, 4),
        }
    else:
        e = entries[0]
        result = {"results": e["results"], "evaluations": e["evaluations"], "seconds": e["seconds"]}
        result.update({key: e[key] for key in ("train_seconds", "files") if key in e})
        result["latency"] = e["latency"]
    if algo == "pnag" and train_budgets is not None:
        result.setdefault("train_seconds", max((e.get("train_seconds") or 0.0) for e in entries))
    if generator is not None and train_budgets is not None:
        result["generator"] = str(generator)
    if validate is not None:
        _validate(validate, targets[0], result, accuracy=accuracy, budgets=budgets, algo=algo, seed=seed,
                  limits=limits, generator=generator, max_rounds=max_rounds, front=first_front)
    return result


def _validate(
    device: str, target: tuple[str, Any], result: dict[str, Any], *, accuracy: Any, budgets: list[float], algo: str,
    seed: int, limits: dict[str, int | None], generator: Path | None, max_rounds: int | None,
    front: list[dict[str, Any]],
) -> None:
    """Hold ``device`` and run :func:`~.closed_loop.validate_on_device` on it; its block goes into ``result``
    and into the results file already written."""
    from ..agents.device import Device
    from ..agents.profiles import load_profile
    from .closed_loop import DEFAULT_MAX_ROUNDS, validate_on_device

    name, latency = target

    def research(tighter: list[float], seen: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        again = run_search(name=name, latency=latency, accuracy=accuracy, budgets=tighter, algo=algo, seed=seed,
                           **limits, train_budgets=None, generator=generator, out=None, front=seen)
        result["evaluations"] += again["evaluations"]
        return again["results"]

    with Device(load_profile(device)) as dev:
        dev.acquire()
        result["validation"] = validate_on_device(dev, latency, result, budgets, research, latency.space,
                                                  max_rounds or DEFAULT_MAX_ROUNDS, front=front)
    if "files" in result:
        written = json.loads(Path(result["files"]["json"]).read_text())
        written.pop("results", None)
        front_rows = written.pop("front", [])
        written["validation"] = result["validation"]
        result["files"] = write_results(Path(result["files"]["json"]).parent, results=result["results"],
                                        front=front_rows, info=written)
