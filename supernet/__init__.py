"""Search spaces (the one place that knows what an architecture is, its LUT entries and block table), torch
modules, the OFA supernet and its training (``train``, ``schedule``, ``checkpoint``), PaS network pieces, the one exporter (``export``) and the one atomic
writer (``files``). Imports nothing else of hwnas, so every package may use it."""

from __future__ import annotations

from .spaces import Arch as Arch
from .spaces import Entry as Entry
from .spaces import SearchSpace as SearchSpace
from .spaces import get_space as get_space
from .spaces import list_spaces as list_spaces

__all__ = ["Arch", "Entry", "SearchSpace", "get_space", "list_spaces"]
