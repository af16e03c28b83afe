"""Reports of a LUT diff: markdown or HTML (chosen by the file suffix), with two PNG plots.

Markdown writes the plots beside the report (``NAME_change_vs_latency.png``, ``NAME_changes.png``) and links
them; HTML embeds them as base64, so the one file can be attached to a CI job.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from ..supernet.files import atomic_write
from .diff import DiffResult, EntryChange
from .errors import ProfilerError
from .lut import atomic_write_text

__all__ = ["plot_changes", "write_report"]

TOP_UNFLAGGED = 20
_COLORS = {"regression": "#d62728", "improvement": "#2ca02c", "noise": "#ff7f0e", "ok": "#7f7f7f"}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_changes(result: DiffResult) -> dict[str, bytes]:
    """The two plots as PNG bytes: ``change_vs_latency`` (drift-corrected change per entry against its
    base latency) and ``changes`` (histogram of the changes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thr = result.threshold_pct
    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for verdict, color in _COLORS.items():
        pts = [e for e in result.entries if e.verdict == verdict]
        if pts:
            ax.scatter(
                [e.base_ms for e in pts], [e.change_pct for e in pts], s=14, c=color, label=f"{verdict} ({len(pts)})"
            )
    ax.set_xscale("log")
    for y in (thr, -thr):
        ax.axhline(y, color="k", lw=0.8, ls="--")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel(f"base latency ({result.statistic}, ms)")
    ax.set_ylabel("change after drift correction (%)")
    drift = f"{result.drift_pct:+.1f}%" if result.drift_pct is not None else "n/a"
    ax.set_title(f"per-entry change (drift {drift} factored out; threshold +-{thr:g}%)")
    ax.legend(loc="best", fontsize=8)
    out["change_vs_latency"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    changes = [e.change_pct for e in result.entries]
    if changes:
        ax.hist(changes, bins=min(60, max(10, len(changes) // 5)), color="#1f77b4")
    for x in (thr, -thr):
        ax.axvline(x, color="k", lw=0.8, ls="--")
    ax.set_xlabel("change after drift correction (%)")
    ax.set_ylabel("entries")
    ax.set_title(f"distribution of per-entry changes ({len(changes)} entries)")
    out["changes"] = _png(fig)
    plt.close(fig)
    return out


def _table_entries(result: DiffResult) -> tuple[list[EntryChange], int]:
    flagged = [e for e in result.entries if e.verdict in ("regression", "improvement")]
    others = [e for e in result.entries if e.verdict not in ("regression", "improvement")]

    def order(e: EntryChange) -> tuple[float, float]:
        return (-abs(e.impact_pct) if e.impact_pct is not None else 0.0, -abs(e.change_pct))

    others.sort(key=order)
    rows = sorted(flagged, key=order) + others[:TOP_UNFLAGGED]
    rows.sort(key=order)
    return rows, len(others) - min(len(others), TOP_UNFLAGGED)


def _fmt(value: float | None, spec: str = "+.1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _summary_lines(result: DiffResult) -> list[str]:
    lines = []
    verdict = {0: "PASS", 1: "FAIL", 2: "NOT COMPARABLE"}[result.exit_code]
    lines.append(f"**Verdict: {verdict}**")
    for finding in result.findings():
        lines.append(f"- {finding}")
    if result.comparable:
        lines.append(
            f"- drift {_fmt(result.drift_pct)}% (+- {_fmt(result.drift_uncertainty_pct, '.1f')}%, threshold "
            f"+-{result.drift_threshold_pct:g}%), {len(result.entries)} entries compared, threshold "
            f"{result.threshold_pct:g}%: {len(result.regressions)} regressions, {len(result.improvements)} "
            f"improvements, {sum(e.verdict == 'noise' for e in result.entries)} changes within noise"
        )
        if result.noise_pct is not None:
            lines.append(
                f"- between-run noise {result.noise_pct:.1f}% (robust sd of the drift-corrected changes): changes "
                f"from about {result.detectable_pct:.1f}% up can be told from noise ({result.noise_z:g} sd)"
            )
        net = result.network
        if net:
            lines.append(
                f"- typical subnet ({net['samples']} random subnets at {net['resolutions']}, median "
                f"{net['base_median_ms']:.3f} ms): {net['change_pct']:+.2f}% after drift correction, "
                f"{net['raw_change_pct']:+.2f}% raw; the regressions touch "
                f"{100 * net['regressions_affected_share']:.0f}% of subnets, which move by a median "
                f"{net['regressions_change_pct_when_affected']:+.2f}%"
            )
    for note in result.notes:
        lines.append(f"- note: {note}")
    return lines


_HEAD = ("verdict", "key", "resolution", "base ms", "new ms", "change %", "+- %", "raw %", "processes %", "impact %", "test")


def _row_cells(e: EntryChange) -> list[str]:
    test = e.method + (f" p={e.p_value:.2g}" if e.p_value is not None else "")
    return [
        e.verdict,
        e.key,
        str(e.resolution),
        f"{e.base_ms:.4g}",
        f"{e.new_ms:.4g}",
        f"{e.change_pct:+.1f}",
        _fmt(e.uncertainty_pct, ".1f"),
        f"{e.raw_change_pct:+.1f}",
        _fmt(e.process_spread_pct, ".1f"),  # how far the runner processes that measured it disagreed
        _fmt(e.impact_pct, "+.3f"),
        test,
    ]


def _markdown(result: DiffResult, images: dict[str, str]) -> str:
    out = [f"# LUT diff: `{result.base}` -> `{result.new}`", ""]
    out += _summary_lines(result)
    out += ["", "## Comparability", "", "| field | base | new | status |", "|---|---|---|---|"]
    if result.mismatches:
        for m in result.mismatches:
            status = "allowed" if m["allowed"] else "**mismatch**"
            out.append(f"| {m['field']} | `{m['base']}` | `{m['new']}` | {status} |")
    else:
        out.append("| (all fields) | | | equal |")
    if result.comparable:
        rows, more = _table_entries(result)
        out += ["", "## Entries by impact", ""]
        out.append("| " + " | ".join(_HEAD) + " |")
        out.append("|" + "---|" * len(_HEAD))
        for e in rows:
            cells = _row_cells(e)
            cells[1] = f"`{cells[1]}`"
            out.append("| " + " | ".join(cells) + " |")
        if more:
            out.append(f"\n{more} more entries within the threshold are not listed.")
        out += ["", "## Plots", ""]
        for name, ref in images.items():
            out.append(f"![{name}]({ref})")
        out += ["", f"## Missing from the new table ({len(result.missing)})", ""]
        out += [f"- `{m['key']}` @ {m['resolution']}" for m in result.missing] or ["(none)"]
        out += ["", f"## Added in the new table ({len(result.added)})", ""]
        out += [f"- `{m['key']}` @ {m['resolution']}" for m in result.added] or ["(none)"]
    return "\n".join(out) + "\n"


def _html(result: DiffResult, pngs: dict[str, bytes]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>LUT diff</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}td.k{font-family:monospace}"
        ".regression{background:#fdd}.improvement{background:#dfd}.noise{background:#ffe9cc}"
        "</style></head><body>",
        f"<h1>LUT diff: <code>{esc(result.base)}</code> &rarr; <code>{esc(result.new)}</code></h1><ul>",
    ]
    for line in _summary_lines(result):
        parts.append(f"<li>{esc(line.lstrip('- ').replace('**', ''))}</li>")
    parts.append("</ul><h2>Comparability</h2><table><tr><th>field</th><th>base</th><th>new</th><th>status</th></tr>")
    for m in result.mismatches or [{"field": "(all fields)", "base": "", "new": "", "allowed": None}]:
        status = "equal" if m["allowed"] is None else ("allowed" if m["allowed"] else "MISMATCH")
        parts.append(
            f"<tr><td>{esc(str(m['field']))}</td><td>{esc(str(m['base']))}</td><td>{esc(str(m['new']))}</td>"
            f"<td>{status}</td></tr>"
        )
    parts.append("</table>")
    if result.comparable:
        rows, more = _table_entries(result)
        parts.append("<h2>Entries by impact</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in _HEAD) + "</tr>")
        for e in rows:
            cells = _row_cells(e)
            tds = "".join(f"<td{' class=k' if i == 1 else ''}>{esc(c)}</td>" for i, c in enumerate(cells))
            parts.append(f"<tr class='{e.verdict}'>{tds}</tr>")
        parts.append("</table>")
        if more:
            parts.append(f"<p>{more} more entries within the threshold are not listed.</p>")
        parts.append("<h2>Plots</h2>")
        for name, data in pngs.items():
            parts.append(f"<p><img alt='{name}' src='data:image/png;base64,{base64.b64encode(data).decode()}'></p>")
        for title, items in (("Missing from the new table", result.missing), ("Added in the new table", result.added)):
            parts.append(f"<h2>{title} ({len(items)})</h2><ul>")
            parts += [f"<li><code>{esc(m['key'])}</code> @ {m['resolution']}</li>" for m in items] or ["<li>(none)</li>"]
            parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(result: DiffResult, path: str | os.PathLike[str]) -> list[Path]:
    """Write the report (``.md`` or ``.html``); returns the files written (the report first, then the
    plots for markdown). Raises ProfilerError for another suffix or an unwritable path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".md", ".html", ".htm"):
        raise ProfilerError(f"--report {path}: expected a .md or .html file")
    pngs = plot_changes(result) if result.comparable else {}
    written = [path]
    try:
        if suffix == ".md":
            images = {}
            for name, data in pngs.items():
                png = path.with_name(f"{path.stem}_{name}.png")
                atomic_write(png, data)
                images[name] = png.name
                written.append(png)
            atomic_write_text(path, _markdown(result, images))
        else:
            atomic_write_text(path, _html(result, pngs))
    except OSError as exc:
        raise ProfilerError(f"{path}: cannot write the report ({exc.strerror or exc})") from exc
    return written
