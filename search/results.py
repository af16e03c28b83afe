"""Search results on disk: JSON and CSV of the answers and of the Pareto front, and a PNG of the front with
each budget's chosen architecture.

``write_results(out_dir, results=..., front=..., info=...)`` writes

- ``results.json``: ``{**info, "results": [...], "front": [...]}``
- ``results.csv``: one row per budget (``budget_ms, infeasible, predicted_latency_ms, predicted_accuracy,
  params, macs, min_latency_ms, arch`` with the arch as JSON)
- ``front.csv``: ``latency_ms, accuracy, arch``
- ``front.png``: accuracy vs latency: the front, the budgets as vertical lines, the answers as markers.

:func:`attach_measurements` adds end-to-end measurements (from any ``measure(archs) -> ms`` function, e.g.
the profiler's whole-subnet measurement on a device) to the results: ``measured_latency_ms`` and
``latency_error`` (measured / predicted - 1).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..supernet.files import atomic_write

__all__ = ["attach_measurements", "plot_front", "write_results"]

RESULT_COLUMNS = (
    "budget_ms", "infeasible", "predicted_latency_ms", "predicted_accuracy", "params", "macs", "min_latency_ms",
    "measured_latency_ms", "arch",
)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def results_csv(results: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULT_COLUMNS)
    for r in results:
        row = dict(r)
        row["infeasible"] = int(bool(r.get("infeasible", False)))
        w.writerow([_cell(row.get(c)) for c in RESULT_COLUMNS])
    return buf.getvalue()


def front_csv(front: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("latency_ms", "accuracy", "arch"))
    for p in front:
        w.writerow([_cell(p["latency_ms"]), _cell(p["accuracy"]), _cell(p["arch"])])
    return buf.getvalue()


def plot_front(
    path: str | os.PathLike[str],
    front: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    *,
    title: str = "",
) -> Path:
    """Write a PNG: the Pareto front (accuracy vs latency), budgets as dashed lines, answers as stars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    if front:
        xs = [p["latency_ms"] for p in front]
        ys = [100 * p["accuracy"] for p in front]
        ax.step(xs, ys, where="post", color="tab:blue", lw=1.2, label="Pareto front (evaluated)")
        ax.scatter(xs, ys, s=6, color="tab:blue")
    for i, r in enumerate(results):
        b = r["budget_ms"]
        ax.axvline(b, color="grey", ls="--", lw=0.8, label="budgets" if i == 0 else None)
        if r.get("arch") is not None:
            ax.scatter([r["predicted_latency_ms"]], [100 * r["predicted_accuracy"]], marker="*", s=140,
                       color="tab:red", zorder=5, label="chosen" if i == 0 else None)
            ax.annotate(f"{100 * r['predicted_accuracy']:.2f}%", (r["predicted_latency_ms"], 100 * r["predicted_accuracy"]),
                        textcoords="offset points", xytext=(-10, 8), fontsize=8)
        else:
            ax.annotate("infeasible", (b, ax.get_ylim()[0]), textcoords="offset points", xytext=(2, 4),
                        fontsize=8, rotation=90, color="tab:red")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("predicted top-1 (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    atomic_write(path, buf.getvalue())
    return path


def write_results(
    out_dir: str | os.PathLike[str],
    *,
    results: Sequence[Mapping[str, Any]],
    front: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write the four files (see the module docstring) into ``out_dir`` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**(info or {}), "results": list(results), "front": list(front)}
    files = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "front_csv": out / "front.csv",
        "plot": out / "front.png",
    }
    atomic_write(files["json"], json.dumps(payload, indent=1) + "\n")
    atomic_write(files["csv"], results_csv(results))
    atomic_write(files["front_csv"], front_csv(front))
    title = " / ".join(str(info[k]) for k in ("device", "space", "algo") if info and info.get(k))
    plot_front(files["plot"], front, results, title=title)
    return {k: str(v) for k, v in files.items()}


def attach_measurements(
    results: Sequence[dict[str, Any]], measure: Callable[[list[Any]], Sequence[float]], space: Any
) -> list[dict[str, Any]]:
    """Measure every answered architecture with ``measure(archs) -> ms`` (one call for all of them) and add
    ``measured_latency_ms`` and ``latency_error`` (measured / predicted - 1) to each answered result."""
    from ..supernet import get_space

    sp = get_space(space)
    answered = [r for r in results if r.get("arch") is not None]
    if not answered:
        return list(results)
    ms = list(measure([sp.parse(r["arch"]) for r in answered]))
    if len(ms) != len(answered):
        raise ValueError(f"measure() returned {len(ms)} values for {len(answered)} architectures")
    for r, m in zip(answered, ms, strict=True):
        r["measured_latency_ms"] = float(m)
        pred = r.get("predicted_latency_ms")
        r["latency_error"] = float(m) / pred - 1 if pred else None
    return list(results)
