"""`hwnas search`: architectures under latency budgets, per LUT or per device profile."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import typer

from hwnas.cli._app import JsonOption, UsageError, WorkFailed, app, emit, progress_bar

log = logging.getLogger(__name__)


def parse_budgets(text: str, flag: str) -> list[float]:
    """``"15,20,25"`` -> floats (search.base.check_budgets checks them); BudgetError for anything else."""
    from hwnas.search.base import check_budgets
    from hwnas.search.errors import BudgetError

    out = []
    for part in text.split(","):
        try:
            out.append(float(part.strip()))
        except ValueError:
            raise BudgetError(f"{flag} {text!r}: {part.strip()!r} is not a number (ms)") from None
    return check_budgets(out, what=flag)


def device_lut(device: str, space: str) -> Path:
    """The LUT of ``space`` under the device profile's folder (``device_profiles/NAME/{space}_*.csv``):
    the only one, else the one matching the profile's runtime and threads, else the newest."""
    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.lut import is_sidecar

    profile = load_profile(device)
    folder = profile.lut_dir
    found = sorted(p for p in folder.glob(f"{space}_*.csv") if not is_sidecar(p)) if folder.is_dir() else []
    if not found:
        raise UsageError(
            f"device {profile.name}: no LUT for space {space} in {folder}/ (make one with: hwnas profile {profile.name} --space {space})"
        )
    if len(found) > 1:
        runtime = str(getattr(profile, "runtime", ""))
        threads = getattr(profile, "threads", None)
        match = [p for p in found if f"_{runtime}_" in p.name and f"_t{threads}_" in p.name]
        if len(match) == 1:
            return match[0]
        found = sorted(match or found, key=lambda p: p.stat().st_mtime)
        log.warning("device %s: %d LUTs for %s; using the newest, %s", profile.name, len(found), space, found[-1].name)
    return found[-1]


@app.command("search")
def search_cmd(
    space: str = typer.Option(..., "--space", help="Search space, e.g. ofa-mbv3-w1.2."),
    lut: Path | None = typer.Option(None, "--lut", help="The device's LUT file."),
    device: list[str] = typer.Option([], "--device", help="Device profile(s): their LUT for the space (repeat for several; searched in parallel)."),
    latency_predictor: Path | None = typer.Option(None, "--latency-predictor", help="A learned latency predictor (JSON) instead of a LUT."),
    accuracy: Path = typer.Option(..., "--accuracy", help="Accuracy predictor file (hwnas predictor accuracy)."),
    latency_ms: str | None = typer.Option(None, "--latency-ms", help="Latency budgets in ms, e.g. 15,20,25."),
    algo: str = typer.Option("evolution", "--algo", help="evolution | nsga2 | pnag | mnas | random."),
    seed: int = typer.Option(0, "--seed", min=0),
    max_params: float | None = typer.Option(None, "--max-params", help="Hard limit on parameters."),
    max_macs: float | None = typer.Option(None, "--max-macs", help="Hard limit on MACs."),
    out: Path | None = typer.Option(None, "--out", help="Folder for results.json/.csv, front.csv and front.png (one subfolder per device with several)."),
    train_budgets: str | None = typer.Option(None, "--train-budgets", help="pnag: budgets to train the generator on."),
    generator: Path | None = typer.Option(None, "--generator", help="pnag: generator file to write (with --train-budgets) or to answer from."),
    validate: str | None = typer.Option(None, "--validate", help="Device profile: export the chosen subnets and measure them there (needs --lut, one --device or --latency-predictor); a subnet over its budget makes that budget tighter and the search run again. With --latency-predictor, candidates whose interval straddles a budget are measured before one is chosen."),
    max_rounds: int | None = typer.Option(None, "--max-rounds", help="With --validate: searches per budget at most (default 3)."),
    as_json: bool = JsonOption,
) -> int:
    """Search architectures under one or more latency budgets (and parameter/MACs limits). Exit 1 if a budget
    is infeasible (its result says the smallest achievable latency).

    Example: hwnas search --space compact --lut local-compact.csv --accuracy accuracy.pt --latency-ms 0.5,0.8
    """
    from hwnas.profiler.lut import LUT
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.errors import BudgetError
    from hwnas.search.latency import LearnedLatency, LUTLatency
    from hwnas.search.registry import get_algorithm
    from hwnas.search.run import search_targets
    from hwnas.supernet import get_space

    sp = get_space(space)
    get_algorithm(algo)
    sources = (lut is not None) + bool(device) + (latency_predictor is not None)
    if sources != 1:
        raise UsageError("give exactly one of --lut LUT, --device DEVICE... or --latency-predictor FILE")
    tb = parse_budgets(train_budgets, "--train-budgets") if train_budgets else None
    if algo == "pnag":
        if tb is None and generator is None:
            raise UsageError("--algo pnag needs --train-budgets (to train) or --generator FILE (to answer)")
        if tb is None and generator is not None and not generator.is_file():
            raise UsageError(f"--generator {generator}: no such file (train one with --train-budgets)")
    elif tb is not None or generator is not None:
        raise UsageError("--train-budgets and --generator are for --algo pnag")
    if latency_ms is None:
        if tb is None:
            raise UsageError("--latency-ms is required (e.g. --latency-ms 15,20,25)")
        budgets = tb
    else:
        budgets = parse_budgets(latency_ms, "--latency-ms")
    limits: dict[str, int | None] = {}
    for flag, value in (("--max-params", max_params), ("--max-macs", max_macs)):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise BudgetError(f"{flag} {value!r} is not a positive number")
        limits[flag] = None if value is None else int(value)

    acc = AccuracyPredictor.load(accuracy, space=sp)
    targets: list[tuple[str, Any]] = []
    if lut is not None:
        targets.append((lut.stem, LUTLatency(LUT.load(lut), space=sp)))
    elif latency_predictor is not None:
        model = LearnedLatency.load(latency_predictor)
        if model.space.name != sp.name:
            raise UsageError(f"--latency-predictor {latency_predictor}: for space {model.space.name}, not {sp.name}")
        targets.append((latency_predictor.stem, model))
    else:
        for name in dict.fromkeys(device):
            path = device_lut(name, sp.name)
            targets.append((name, LUTLatency(LUT.load(path), space=sp)))
    if algo == "pnag" and len(targets) > 1 and generator is not None:
        raise UsageError("--generator names one file: use it with one device")

    if validate is not None and len(targets) != 1:
        raise UsageError("--validate needs exactly one LUT (--lut, or one --device) or --latency-predictor")
    if validate is not None and algo == "pnag" and generator is None:
        raise UsageError("--validate with --algo pnag needs --generator FILE (later rounds answer from it)")
    if max_rounds is not None and validate is None:
        raise UsageError("--max-rounds is for --validate DEVICE")
    if max_rounds is not None and max_rounds < 1:
        raise BudgetError(f"--max-rounds must be at least 1, got {max_rounds}")
    with progress_bar(f"search ({algo})", None) as bar:
        result = search_targets(
            targets, accuracy=acc, budgets=budgets, algo=algo, seed=seed, max_params=limits["--max-params"],
            max_macs=limits["--max-macs"], train_budgets=tb, generator=generator, out=out, on_progress=bar,
            validate=validate, max_rounds=max_rounds,
        )

    def human(r: dict[str, Any]) -> None:
        for item in r["results"]:
            who = f"[{item['device']}] " if "device" in item else ""
            if item.get("arch") is None:
                typer.echo(f"{who}{item['budget_ms']:g} ms: infeasible (smallest achievable: {item['min_latency_ms']} ms)")
            else:
                measured = ""
                if item.get("measured_ms") is not None:
                    ok = "within budget" if item["within_budget"] else "OVER budget"
                    measured = f", measured {item['measured_ms']:.2f} ms ({ok}, round {item['rounds']})"
                typer.echo(
                    f"{who}{item['budget_ms']:g} ms: top-1 {100 * item['predicted_accuracy']:.2f}% at "
                    f"{item['predicted_latency_ms']:.2f} ms{measured}  {item['arch']}"
                )
        typer.echo(f"{r['evaluations']} evaluations in {r['seconds']:.2f} s")

    emit(result, as_json, human)
    infeasible = [item for item in result["results"] if item.get("infeasible")]
    if infeasible:
        first = infeasible[0]
        if first["min_latency_ms"] is None:
            why = "no architecture of the space meets the --max-params/--max-macs limits"
        else:
            why = f"{first['budget_ms']:g} ms is below the smallest achievable latency {first['min_latency_ms']:.3f} ms"
        raise WorkFailed(f"{len(infeasible)} budget(s) infeasible: {why}")
    missed = (result.get("validation") or {}).get("missed_budgets_ms") or []
    if missed:
        rounds = result["validation"]["rounds"]
        raise WorkFailed(f"no round of {rounds} met budget(s) {', '.join(f'{b:g}' for b in missed)} ms as measured on {validate}")
    return 0
