"""`hwnas devices` and `hwnas probe`: placeholder module, filled by the agents work."""

from __future__ import annotations
