"""`hwnas lut ...`: OFA interop, show, predict, diff and history of latency lookup tables.

(`hwnas lut validate` lives with the profiler commands.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from hwnas.cli._app import JsonOption, UsageError, app, emit, progress_bar, shown
from hwnas.cli._args import ARCH_HELP

lut_app = typer.Typer(
    name="lut",
    help="Latency lookup tables: import/export OFA tables, show, predict, diff, history.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(lut_app, name="lut")


def _console() -> Any:
    from rich.console import Console

    return Console()


# --------------------------------------------------------------------------------------------- interop


@lut_app.command("import-ofa")
def import_ofa_cmd(
    yaml_files: list[Path] = typer.Argument(..., metavar="YAML...", help="OFA tables NNN_lookup_table.yaml (or folders)."),
    space: str = typer.Option(..., "--space", help="Search space the tables belong to, e.g. ofa-mbv3-w1.2."),
    out: Path = typer.Option(..., "--out", help="LUT file to write."),
    as_json: bool = JsonOption,
) -> int:
    """Import OFA's YAML latency tables (one per resolution) into one LUT file, losslessly.

    Example: hwnas lut import-ofa note10/*.yaml --space ofa-mbv3-w1.2 --out note10.csv
    """
    from hwnas.profiler.ofa_interop import import_ofa, ofa_yaml_files

    lut = import_ofa(ofa_yaml_files(yaml_files), space)
    lut.save(out)
    emit({"lut": str(out), "entries": len(lut), "resolutions": lut.resolutions, "statistic": lut.statistic}, as_json)
    return 0


@lut_app.command("export-ofa")
def export_ofa_cmd(
    lut_path: Path = typer.Argument(..., metavar="LUT", help="LUT file."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Folder for the {R}_lookup_table.yaml files."),
    column: str | None = typer.Option(None, "--column", help="Column exported as OFA's 'mean' (default: mean_ms, else the statistic)."),
    as_json: bool = JsonOption,
) -> int:
    """Export a LUT as OFA's YAML tables, one per resolution (the Overhead-inference row is left out).

    Example: hwnas lut export-ofa note10.csv --out-dir note10-yaml
    """
    from hwnas.profiler.lut import LUT, OVERHEAD_KEY
    from hwnas.profiler.ofa_interop import export_ofa

    lut = LUT.load(lut_path)
    if column is not None and column not in lut.rows.columns:
        raise UsageError(f"--column {column!r}: {lut_path} has columns {', '.join(lut.latency_columns())}")
    files = export_ofa(lut, out_dir, column=column)
    entries = int((lut.rows["key"] != OVERHEAD_KEY).sum())
    emit({"lut": str(lut_path), "entries": entries, "files": [str(f) for f in files]}, as_json)
    return 0


# ------------------------------------------------------------------------------------------------- show


@lut_app.command("show")
def show_cmd(
    lut_path: Path = typer.Argument(..., metavar="LUT", help="LUT file."),
    by: str | None = typer.Option(None, "--by", help="'op': per-operator breakdown inside each entry (needs NAME.ops.csv)."),
    as_json: bool = JsonOption,
) -> int:
    """Show a LUT: metadata and rows, or with --by op the per-operator breakdown of each entry.

    Example: hwnas lut show note10.csv --by op
    """
    from hwnas.profiler.lut import LUT

    if by is not None and by != "op":
        raise UsageError(f"--by {by!r}: expected 'op'")
    lut = LUT.load(lut_path)
    if by == "op":
        from hwnas.profiler.ops import ops_breakdown

        result = ops_breakdown(lut)
        emit(result, as_json, _human_ops)
        return 0
    rows = [{c: _cell(v) for c, v in zip(lut.rows.columns, values, strict=True)} for values in lut.rows.itertuples(index=False)]
    result = {
        "lut": str(lut_path),
        "metadata": lut.metadata,
        "statistic": lut.statistic,
        "entries": len(rows),
        "rows": rows,
    }
    emit(result, as_json, _human_show)
    return 0


def _cell(value: Any) -> Any:
    import math

    import pandas as pd

    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _human_ops(result: dict[str, Any]) -> None:
    from rich.table import Table

    out = _console()
    if not result["rows"]:
        out.print(shown(f"{result['lut']}: {result.get('note', 'no per-operator data')}"), highlight=False)
        return
    table = Table(title=shown(f"{result['lut']}: per-operator breakdown"))
    for col in ("key", "resolution", "op_type", "nodes", "ms", "share", "provider"):
        table.add_column(col, overflow="fold")
    for r in result["rows"]:
        share = "" if r["share"] is None else f"{100 * r['share']:.1f}%"
        table.add_row(shown(r["key"]), str(r["resolution"]), shown(r["op_type"]), str(r["nodes"]), f"{r['ms']:.4f}", share,
                      shown(r["provider"]))
    out.print(table)


def _human_show(result: dict[str, Any]) -> None:
    from rich.table import Table

    out = _console()
    meta = result["metadata"]
    out.print(f"[bold]{shown(result['lut'])}[/bold]: {result['entries']} entries", highlight=False)
    for k in ("space", "resolutions", "statistic", "runtime", "exporter", "dtype", "batch", "threads", "cores", "device", "date"):
        if meta.get(k) is not None:
            out.print(f"  {k}: {shown(meta[k])}", highlight=False)  # device strings: no markup, no control characters
    stat = result["statistic"]
    table = Table()
    cols = ["key", "resolution", "runs", stat] + [c for c in ("p10_ms", "p90_ms", "std_ms") if result["rows"] and c in result["rows"][0]]
    flagged = [r for r in result["rows"] if r.get("outliers") == "true"]
    if flagged:
        cols.append("outliers")
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in result["rows"]:
        table.add_row(*[f"{r[c]:.4f}" if isinstance(r[c], float) else shown(r[c]) for c in cols])
    out.print(table)
    if flagged:
        out.print(f"{len(flagged)} of {result['entries']} rows are flagged 'outliers': the benchmark program's mean "
                  "came from a run with outliers (max above 10x min, or std above half the mean); measure them again",
                  highlight=False)


# ---------------------------------------------------------------------------------------------- predict


@lut_app.command("predict")
def predict_cmd(
    lut_path: Path = typer.Option(..., "--lut", help="LUT file."),
    arch: str | None = typer.Option(None, "--arch", help=ARCH_HELP),
    archs: Path | None = typer.Option(None, "--archs", help="JSON-lines file, one arch per line."),
    as_json: bool = JsonOption,
) -> int:
    """Predicted latency (ms) of architectures: the sum of their LUT entries.

    Example: hwnas lut predict --lut note10.csv --arch max
    """
    from hwnas.cli._args import read_archs_arrays, resolve_arch
    from hwnas.profiler.lut import LUT
    from hwnas.profiler.predict import LUTPredictor

    if (arch is None) == (archs is None):
        raise UsageError("give exactly one of --arch and --archs")
    lut = LUT.load(lut_path)
    predictor = LUTPredictor(lut)
    space, rs = predictor.space, predictor.resolutions_
    result: dict[str, Any] = {"lut": str(lut_path), "space": space.name, "statistic": predictor.column}
    if arch is not None:
        one = resolve_arch(space, arch, rs)
        result["arch"] = one.to_dict()
        arrays = space.arrays_from_archs([one])
    else:
        assert archs is not None
        arrays = read_archs_arrays(space, archs, rs)
    start = time.perf_counter()
    latency = predictor.predict_arrays(arrays)
    seconds = time.perf_counter() - start
    result.update(latency_ms=latency.tolist(), archs=int(len(latency)), seconds=seconds)
    emit(result, as_json, _human_predict)
    return 0


def _human_predict(result: dict[str, Any]) -> None:
    out = _console()
    for value in result["latency_ms"]:
        out.print(f"{value:.4f}", highlight=False)


# ------------------------------------------------------------------------------------------------- diff


@lut_app.command("diff")
def diff_cmd(
    base: Path = typer.Argument(..., metavar="BASE", help="The reference LUT."),
    new: Path = typer.Argument(..., metavar="NEW", help="The LUT to check."),
    threshold: float = typer.Option(5.0, "--threshold", min=0.0, help="Per-entry change (percent, after drift correction) that counts."),
    drift_threshold: float = typer.Option(10.0, "--drift-threshold", min=0.0, help="Uniform drift of the whole table (percent) that is itself a finding."),
    allow: list[str] = typer.Option([], "--allow", help="Metadata field allowed to differ (repeatable), e.g. runtime.version."),
    report: Path | None = typer.Option(None, "--report", help="Write a report: FILE.md (plots beside it) or FILE.html."),
    noise_z: float = typer.Option(5.0, "--noise-z", min=0.0, help="How many robust standard deviations of the table's own between-run noise a change must exceed."),
    samples: int = typer.Option(1000, "--samples", min=0, help="Random subnets for the whole-network impact."),
    seed: int = typer.Option(0, "--seed"),
    recheck: str | None = typer.Option(None, "--recheck", help="Device profile (NEW's device): re-measure the flagged and undecided entries there before deciding."),
    as_json: bool = JsonOption,
) -> int:
    """Regression test: exit 0 no regression, 1 regression (or drift beyond its threshold), 2 not comparable.

    Example: hwnas lut diff base.csv new.csv --threshold 10 --report diff.html
    """
    from hwnas.profiler.diff import check_allow, diff_luts
    from hwnas.profiler.errors import NotComparable
    from hwnas.profiler.lut import LUT

    if report is not None and report.suffix.lower() not in (".md", ".html", ".htm"):
        raise UsageError(f"--report {report}: expected a .md or .html file")
    allow = check_allow(allow)
    base_lut, new_lut = LUT.load(base), LUT.load(new)
    start = time.perf_counter()
    result = diff_luts(
        base_lut, new_lut, threshold_pct=threshold, drift_threshold_pct=drift_threshold, allow=allow,
        noise_z=noise_z, samples=samples, seed=seed,
    )
    if recheck is not None and result.comparable:
        from hwnas.agents.device import Device
        from hwnas.agents.profiles import load_profile
        from hwnas.profiler.recheck import recheck as recheck_entries

        with Device(load_profile(recheck)) as dev:
            dev.acquire()
            recheck_entries(result, base_lut, new_lut, dev, samples=samples, seed=seed)
    files: list[str] = []
    if report is not None:
        from hwnas.profiler.report import write_report

        files = [str(p) for p in write_report(result, report)]
    data = result.to_json()
    data["report"] = files[0] if files else None
    data["report_files"] = files
    data["seconds"] = time.perf_counter() - start
    emit(data, as_json, _human_diff)
    if not result.comparable:
        bad = "; ".join(f"{m['field']} {m['base']!r} != {m['new']!r}" for m in result.mismatches if not m["allowed"])
        raise NotComparable(f"{base} and {new} are not comparable: {bad} (pass --allow FIELD to accept)")
    return result.exit_code


def _human_diff(d: dict[str, Any]) -> None:
    out = _console()

    def say(text: str) -> None:
        out.print(text, highlight=False, soft_wrap=True)

    if not d["comparable"]:
        say("[bold red]not comparable[/bold red]")
        for m in d["mismatches"]:
            say(f"  {m['field']}: {m['base']!r} -> {m['new']!r}{' (allowed)' if m['allowed'] else ''}")
        return
    status = "[bold red]FAIL[/bold red]" if (d["regressions"] or d["drift_finding"]) else "[bold green]PASS[/bold green]"
    say(
        f"{status}  drift {d['drift_pct']:+.2f}% (+-{(d['drift_uncertainty_pct'] or 0):.2f}%), "
        f"{d['entries_compared']} entries, {len(d['regressions'])} regressions, {len(d['improvements'])} "
        f"improvements, {d['within_noise']} changes within noise (threshold {d['threshold_pct']:g}%)"
    )
    if d["noise_pct"] is not None:
        say(
            f"  between-run noise {d['noise_pct']:.1f}% (robust sd of drift-corrected changes): changes from "
            f"about {d['detectable_pct']:.1f}% up can be told from noise"
        )
    if d["drift_finding"]:
        say(f"  the whole table drifted beyond +-{d['drift_threshold_pct']:g}%")
    if d["network"]:
        n = d["network"]
        say(f"  typical subnet: {n['change_pct']:+.2f}% after drift correction ({n['raw_change_pct']:+.2f}% raw)")
    for e in d["regressions"] + d["improvements"]:
        unc = "" if e["uncertainty_pct"] is None else f" +-{e['uncertainty_pct']:.1f}"
        impact = "" if e["impact_pct"] is None else f", typical subnet {e['impact_pct']:+.3f}%"
        say(
            f"  {e['verdict']:<11} {e['change_pct']:+6.1f}%{unc} ({e['base_ms']:.4g} -> {e['new_ms']:.4g} ms"
            f"{impact})  {e['key']} @ {e['resolution']}"
        )
    if d.get("undecided"):
        say(f"  {len(d['undecided'])} entries undecided (beyond the threshold, not told from noise, from the entries "
            "measured beside them or from how far their runner processes disagreed): rerun with --recheck DEVICE")
    if d.get("rechecked"):
        r = d["rechecked"]
        say(f"  rechecked on {r['device']}: {r['entries']} entries, {r['confirmed']} confirmed, {r['cleared']} cleared, "
            f"{r['undecided']} still undecided")
    if d.get("smallest_detectable") is not None:
        say(f"  smallest detectable change: {100 * d['smallest_detectable']:.1f}%")
    if d["missing"] or d["added"]:
        say(f"  missing: {len(d['missing'])}, added: {len(d['added'])}")
    for note in d["notes"]:
        say(f"  note: {note}")
    if d.get("report"):
        say(f"  report: {d['report']}")


# ---------------------------------------------------------------------------------------------- history


@lut_app.command("history")
def history_cmd(
    device: str = typer.Argument(..., metavar="DEVICE", help="Device profile name or path, or the folder of its LUTs."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the typical-subnet latency over time as a PNG."),
    samples: int = typer.Option(1000, "--samples", min=1, help="Random subnets for the typical latency."),
    seed: int = typer.Option(0, "--seed"),
    no_git: bool = typer.Option(False, "--no-git", help="Only the files, not their git history."),
    as_json: bool = JsonOption,
) -> int:
    """How a device's LUTs moved over time (files and their git history).

    Example: hwnas lut history local
    """
    from hwnas.profiler.history import history, plot_history

    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: expected a .png file")
    folder = Path(device)
    if not folder.is_dir():
        from hwnas.agents.profiles import load_profile

        folder = load_profile(device).lut_dir
    points: list[dict[str, Any]] = []
    if folder.is_dir():
        with progress_bar("history", total=None) as advance:
            points = history(
                folder, samples=samples, seed=seed, use_git=not no_git, on_progress=lambda d, t, w: advance(d, t, w)
            )
    if plot is not None:
        plot_history(points, plot, title=f"LUT history of {device}")
    result = {"device": device, "folder": str(folder), "points": points, "plot": str(plot) if plot else None}
    emit(result, as_json, _human_history)
    return 0


def _human_history(d: dict[str, Any]) -> None:
    from rich.table import Table

    out = _console()
    if not d["points"]:
        out.print(f"{d['folder']}: no LUTs kept for this device", highlight=False)
        return
    table = Table(title=f"LUT history of {d['device']} ({d['folder']})")
    for col in ("date", "file", "commit", "entries", "typical ms", "reference ms", "drift %", "changed"):
        table.add_column(col, overflow="fold")
    for p in d["points"]:
        if "error" in p:
            table.add_row(p["date"], p["file"], (p["commit"] or "working tree")[:10], "", "", "", "", p["error"])
            continue

        def f(v: Any, spec: str) -> str:
            return "" if v is None else format(v, spec)

        table.add_row(
            p["date"], p["file"], (p["commit"] or "working tree")[:10], str(p["entries"]), f(p["typical_ms"], ".3f"),
            f(p["reference_ms"], ".3f"), f(p["drift_pct"], "+.1f"), f(p["changed_entries"], "d"),
        )
    out.print(table)
    if d.get("plot"):
        out.print(f"plot: {d['plot']}", highlight=False)
