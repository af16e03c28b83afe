"""Search spaces, torch modules, OFA supernet, training and PaS network pieces."""

from __future__ import annotations

from .spaces import Arch as Arch
from .spaces import Entry as Entry
from .spaces import SearchSpace as SearchSpace
from .spaces import get_space as get_space
from .spaces import list_spaces as list_spaces
