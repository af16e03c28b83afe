"""The demo's report: PNG plots and a self-contained ``report.html`` (images embedded as data URIs)."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lut_heatmap(lut: Any, space: Any, path: Path) -> Path:
    """Block latency (LUT statistic, ms) by stage/position and kernel/expand, one panel per resolution."""
    plt = _plt()
    values = lut.values()
    rs = [r for r in lut.resolutions if r in space.resolutions]
    combos = [(k, e) for k in space.ks_choices for e in space.e_choices]
    fig, axes = plt.subplots(1, len(rs), figsize=(4.2 * len(rs) + 1, 3.8), squeeze=False)
    for ax, r in zip(axes[0], rs):
        grid = np.full((2 * space.n_stages, len(combos)), np.nan)
        labels = []
        for s in range(space.n_stages):
            for j, first in enumerate((True, False)):
                labels.append(f"stage {s + 1} {'first' if first else 'rest'}")
                for c, (k, e) in enumerate(combos):
                    entry = space.block_entry(s, first, k, e, r)
                    grid[2 * s + j, c] = values.get((entry.key, r), np.nan)
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_title(f"resolution {r}")
        ax.set_xticks(range(len(combos)), [f"k{k}e{e}" for k, e in combos], rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        fig.colorbar(im, ax=ax, label="ms")
    fig.suptitle("LUT: block latency on the device")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predicted_vs_measured(validation: Sequence[Mapping[str, Any]], chosen: Sequence[Mapping[str, Any]], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if validation:
        p = [v["predicted_ms"] for v in validation]
        m = [v["measured_ms"] for v in validation]
        ax.scatter(m, p, s=14, alpha=0.7, label="random subnets (lut validate)")
    if chosen:
        ax.scatter([c["measured_ms"] for c in chosen], [c["predicted_ms"] for c in chosen], s=60, marker="*",
                   color="crimson", label="chosen subnets", zorder=3)
    vals = [v for d in (validation, chosen) for x in d for v in (x["predicted_ms"], x["measured_ms"])]
    if vals:
        lo, hi = min(vals) * 0.9, max(vals) * 1.1
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.15, label="±10%")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("LUT prediction (ms)")
    ax.set_title("Predicted vs measured on the device")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_plot(front: Sequence[Mapping[str, Any]], chosen: Sequence[Mapping[str, Any]], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if front:
        f = sorted(front, key=lambda x: x["latency_ms"])
        ax.plot([x["latency_ms"] for x in f], [x["accuracy"] for x in f], ".-", color="steelblue", label="Pareto front")
    f = sorted(front, key=lambda x: x["latency_ms"]) if front else []
    for c in chosen:
        ax.axvline(c["budget_ms"], color="grey", lw=0.7, ls="--")
        ax.scatter([c["predicted_ms"]], [c["predicted_accuracy"]], s=80, marker="*", color="crimson", zorder=3)
        reach = [x["accuracy"] for x in f if x["latency_ms"] <= c["budget_ms"]]
        if reach:  # where the front reaches the budget: the best predicted top-1 within it
            ax.scatter([c["budget_ms"]], [max(reach)], s=40, marker="o", facecolors="none", edgecolors="black", zorder=3)
        label = f"{c['budget_ms']:.3g} ms" + ("" if reach or not f else " (front cannot reach)")
        ax.annotate(label, (c["budget_ms"], c["predicted_accuracy"]), fontsize=8,
                    textcoords="offset points", xytext=(3, -12))
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("predicted top-1")
    ax.set_title("Search: Pareto front and the chosen subnets")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_per_budget(chosen: Sequence[Mapping[str, Any]], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    x = np.arange(len(chosen))
    ax.bar(x - 0.2, [c["predicted_accuracy"] for c in chosen], width=0.4, label="predicted")
    ax.bar(x + 0.2, [c["top1"] for c in chosen], width=0.4, label="measured (validation split)")
    ax.set_xticks(x, [f"{c['budget_ms']:.3g} ms" for c in chosen])
    lo = min([c["top1"] for c in chosen] + [c["predicted_accuracy"] for c in chosen] + [1.0])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("top-1")
    ax.set_title("Accuracy per latency budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``history``: records with ``phase``, ``epoch`` and any of ``loss``, ``top1_max``, ``top1_min``..."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    step = 0
    xs, loss, accs = [], [], {}
    bounds = []
    last_phase = None
    for rec in history:
        if rec.get("phase") != last_phase:
            bounds.append((step, str(rec.get("phase"))))
            last_phase = rec.get("phase")
        xs.append(step)
        loss.append(rec.get("loss", rec.get("train_loss", np.nan)))
        for k, v in rec.items():
            if isinstance(v, (int, float)) and ("top1" in k or "acc" in k):
                accs.setdefault(k, []).append((step, v))
        step += 1
    a1.plot(xs, loss, color="black")
    a1.set_title("training loss")
    for k, pts in accs.items():
        a2.plot([p[0] for p in pts], [p[1] for p in pts], label=k)
    a2.set_title("validation top-1")
    if accs:
        a2.legend(fontsize=7)
    for ax in (a1, a2):
        for b, name in bounds:
            ax.axvline(b, color="grey", lw=0.6, ls=":")
            ax.text(b, ax.get_ylim()[1], name, fontsize=7, rotation=90, va="top")
        ax.set_xlabel("epoch (all phases)")
    fig.suptitle("Supernet training: progressive shrinking")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _device_rows(fingerprint: Mapping[str, Any], prefix: str = "") -> str:
    """The device fingerprint as table rows (nested fields as ``a.b``), every value escaped as text."""
    rows = []
    for key, value in fingerprint.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.append(_device_rows(value, name + "."))
            continue
        if isinstance(value, (list, tuple)):
            text = ", ".join(json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{html.escape(text)}</td></tr>")
    return "".join(rows)


def write_html(out: Path, summary: Mapping[str, Any], plots: Mapping[str, Path], commands: Sequence[str]) -> Path:
    """A self-contained page: the summary table, every plot embedded, the commands to reproduce."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            f"{b['budget_ms']:.3f}", f"{b['predicted_ms']:.3f}", f"{b['measured_ms']:.3f}",
            "yes" if b.get("within_budget", b["measured_ms"] <= b["budget_ms"]) else "NO",
            f"{b['predicted_accuracy']:.3f}", f"{b['top1']:.3f}", json.dumps(b["arch"]),
        )) + "</tr>"
        for b in summary.get("budgets", [])
    )
    val = summary.get("validation") or {}
    figs = "".join(f"<figure>{_img(p)}<figcaption>{html.escape(name)}</figcaption></figure>" for name, p in plots.items())
    cmds = html.escape("\n".join(commands))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hwnas demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
table.device th {{ text-align: left; background: #f4f4f4; }}
table.budgets td:last-child {{ font-family: monospace; font-size: 11px; max-width: 420px; word-break: break-all; }}
figure {{ display: inline-block; margin: 1em; vertical-align: top; }} img {{ max-width: 100%; }}
pre {{ background: #f4f4f4; padding: 1em; overflow-x: auto; }}
</style></head><body>
<h1>hwnas demo: {html.escape(str(summary.get('device', 'local')))}, space {html.escape(str(summary.get('space')))}</h1>
<h2>Device</h2>
<table class="device">{_device_rows(summary.get('fingerprint') or {})}</table>
<h2>Chosen subnets per latency budget</h2>
<p>Trained and evaluated on {html.escape(str(summary.get('data', 'digits')))}. Each budget's subnet was measured on
the device; one measured over its budget made that budget's search target tighter and the search run again.</p>
<table class="budgets"><tr><th>budget ms</th><th>predicted ms</th><th>measured ms</th><th>within budget</th>
<th>predicted top-1</th><th>measured top-1</th><th>arch</th></tr>{rows}</table>
<h2>LUT validation</h2>
<p>{val.get('samples', 0)} random subnets measured end to end: {val.get('within_5pct', 0):.0%} within ±5%,
{val.get('within_10pct', 0):.0%} within ±10%, MAPE {val.get('mape', 0):.1%}, Spearman {val.get('spearman') or 0:.3f},
machine drift {val.get('drift') or 1:.3f}.</p>
<h2>Plots</h2>
{figs}
<h2>Reproduce every step</h2>
<pre>{cmds}</pre>
</body></html>
"""
    out.write_text(page, encoding="utf-8")
    return out
