"""`hwnas demo`: the whole pipeline on the local CPU (see hwnas/demo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hwnas.cli._app import JsonOption, WorkFailed, app, emit, stderr
from hwnas.demo import EPOCHS_SCALE


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder (an earlier demo's output is resumed)."),
    force: bool = typer.Option(False, "--force", help="Start afresh: replace an earlier demo's output in --out (a folder holding anything else is never removed)."),
    validate_samples: int = typer.Option(20, "--validate-samples", min=1, help="Random subnets to validate the LUT with."),
    accuracy_samples: int = typer.Option(100, "--accuracy-samples", min=10, help="Subnets evaluated to fit the accuracy predictor."),
    epochs_scale: float = typer.Option(EPOCHS_SCALE, "--epochs-scale", min=0.001, help="Scale the compact supernet's schedule (1 = the whole schedule of `hwnas supernet train --space compact`)."),
    max_wait: float | None = typer.Option(None, "--max-wait", help="Wait up to this many seconds for a quiet spell before each measurement, then measure anyway (default: the local profile's, 15)."),
    as_json: bool = JsonOption,
) -> int:
    """Profile, validate, train, predict, search three budgets measured on the local CPU, export; write a report.

    Trains on digits-hard (sklearn's digits drawn small, rotated, cluttered, noisy and occluded) so that
    larger subnets score higher. Exit 1 when no search round met a budget as measured.

    Example: hwnas demo --out demo-output   (then open demo-output/report/report.html)
    """
    from hwnas.demo import STEP_TITLES, STEPS, check_out_folder, run_demo

    check_out_folder(out, force=force)
    if max_wait is not None:
        from hwnas.agents.measure_settings import DEFAULTS

        DEFAULTS.replace(max_wait_s=max_wait)  # a bad value: exit 2 naming --max-wait, before any work

    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[what]}"), console=stderr,
    )
    with bar:
        steps = bar.add_task("demo steps", total=len(STEPS), what="")
        inner = bar.add_task("  current step", total=None, what="")

        def on_step(name: str, index: int, total: int) -> None:
            bar.update(steps, completed=index - 1, what=f"step {index}/{total}: {STEP_TITLES.get(name, name)}")
            bar.reset(inner, total=None, what=name)

        def on_progress(done: int, total: int | None, what: str = "") -> None:
            kw: dict[str, Any] = {"completed": done, "what": str(what)[:50]}
            if total:
                kw["total"] = total
            bar.update(inner, **kw)

        result = run_demo(
            out, force=force, on_step=on_step, on_progress=on_progress, validate_samples=validate_samples,
            accuracy_samples=accuracy_samples, epochs_scale=epochs_scale, max_wait_s=max_wait,
        )
        bar.update(steps, completed=len(STEPS), what="done")

    def human(r: dict[str, Any]) -> None:
        from rich.console import Console

        c = Console()
        for b in r["budgets"]:
            ok = "within budget" if b["within_budget"] else "OVER BUDGET"
            c.print(
                f"budget {b['budget_ms']:.3f} ms: predicted {b['predicted_ms']:.3f} ms, measured {b['measured_ms']:.3f} ms "
                f"({ok}), top-1 {b['top1']:.3f}", highlight=False,
            )
        c.print(f"report: {r['report']}/report.html ({r['seconds']:.1f} s; cached steps: {', '.join(r['cached_steps']) or 'none'})",
                highlight=False)

    emit(result, as_json, human)
    missed = [b for b in result["budgets"] if not b["within_budget"]]
    if missed:
        rounds = max(int(b.get("rounds") or 1) for b in missed)
        which = ", ".join(f"{b['budget_ms']:.4g}" for b in missed)
        raise WorkFailed(f"demo: no round of {rounds} met budget(s) {which} ms as measured")
    return 0
