"""Search algorithms by name: ``evolution``, ``nsga2``, ``pnag``, ``mnas``, ``random``."""

from __future__ import annotations

import difflib
from typing import Any

from .base import Searcher, SearchProblem
from .errors import SearchError
from .evolution import EvolutionSearch, MnasSearch, RandomSearch
from .nsga2 import NSGA2Search
from .pnag import PNAGSearch

__all__ = ["ALGORITHMS", "get_algorithm", "list_algorithms", "make_searcher"]

ALGORITHMS: dict[str, type[Searcher]] = {
    cls.name: cls for cls in (EvolutionSearch, NSGA2Search, PNAGSearch, MnasSearch, RandomSearch)
}


def list_algorithms() -> list[str]:
    return list(ALGORITHMS)


def get_algorithm(name: str) -> type[Searcher]:
    """The searcher class registered as ``name``; SearchError naming close matches otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(ALGORITHMS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SearchError(
            f"unknown search algorithm {name!r}{hint} (known: {', '.join(ALGORITHMS)})"
        ) from None


def make_searcher(name: str, problem: SearchProblem, *, seed: int = 0, **params: Any) -> Searcher:
    """An instance of algorithm ``name`` for ``problem`` with its default parameters, overridden by
    ``params`` (validated when searching)."""
    cls = get_algorithm(name)
    return cls(problem=problem, seed=seed, **params)
