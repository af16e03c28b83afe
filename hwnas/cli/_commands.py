"""Imports every command module so that each registers its commands on the app."""

from __future__ import annotations

from hwnas.cli import demo as demo  # noqa: F401
from hwnas.cli import devices as devices  # noqa: F401
from hwnas.cli import lut as lut  # noqa: F401
from hwnas.cli import pas as pas  # noqa: F401
from hwnas.cli import predictor as predictor  # noqa: F401
from hwnas.cli import profile as profile  # noqa: F401
from hwnas.cli import search as search  # noqa: F401
from hwnas.cli import supernet as supernet  # noqa: F401
