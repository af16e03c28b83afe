"""hwnas: hardware-aware latency profiling and neural-architecture search.

The installed namespace holds four packages (``hwnas.agents``, ``hwnas.profiler``,
``hwnas.search``, ``hwnas.supernet``) and the command-line interface (``hwnas.cli``).
"""

from __future__ import annotations

__version__ = "0.1.0"
