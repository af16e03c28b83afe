"""The ``hwnas`` command line: thin commands over the four packages.

Each command module registers itself on ``app``; ``_commands`` imports them all.
"""

from __future__ import annotations

from hwnas.cli._app import app as app
from hwnas.cli._app import main as main
