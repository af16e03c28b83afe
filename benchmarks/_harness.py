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


def add_variant_argument(ap: Any, what: str) -> None:
    """``--variant LABEL:NAME=VALUE,...`` (repeatable; :func:`parse_variants` reads it): ``what`` says what a
    benchmark does with one."""
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=VALUE,...",
                    help=f"also {what} with these measurement settings (repeatable; alternated with the rest)")


def parse_variants(specs: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``LABEL:NAME=VALUE,NAME=VALUE`` (measurement settings, ``agents/measure_settings.py``) -> ``[(label,
    overrides)]``; an empty list when none are given. Values are validated like command-line flags (a bad
    field or value exits with its one-line error)."""
    from hwnas.agents.errors import ProfileError
    from hwnas.agents.measure_settings import DEFAULTS

    out: list[tuple[str, dict[str, Any]]] = []
    for spec in specs:
        label, _, body = spec.partition(":")
        changes: dict[str, Any] = {}
        for part in filter(None, body.split(",")):
            name, _, value = part.partition("=")
            try:
                changes[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
            except ValueError:
                changes[name.strip()] = value.strip()
        try:
            DEFAULTS.replace(**changes)
        except ProfileError as exc:
            raise SystemExit(f"--variant {spec!r}: {exc}") from None
        out.append((label or body or "default", changes))
    return out
