"""Small helpers shared by the benchmarks: load, medians with spread, markdown tables."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} cores"
    except OSError:
        return "load average unknown"


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the max-min spread in percent of the median."""
    v = sorted(values)
    med = statistics.median(v)
    return {"median": med, "min": v[0], "max": v[-1], "spread_pct": (v[-1] - v[0]) / med * 100 if med else float("nan")}


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header(title: str) -> str:
    from pathlib import Path

    cmd = " ".join([".venv/bin/python", "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    return f"## {title}\n\nCommand: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load_average()})\n"
