"""`hwnas profile` (build LUTs on devices) and `hwnas lut validate` (LUT vs end-to-end measurements)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hwnas.cli._app import JsonOption, UsageError, app, emit, exit_code_for, plain, progress_bar, stderr
from hwnas.cli.lut import lut_app


def _parse_resolutions(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--resolutions: expected comma-separated integers such as 160,224, got {text!r}") from None
    if not values:
        raise UsageError("--resolutions: expected at least one resolution")
    return values


def _measure_flags(**flags: Any) -> tuple[tuple[str, Any], ...]:
    """Flags that override a profile's ``measure:`` settings (validated with them: exit 2 naming the flag)."""
    return tuple((k, v) for k, v in flags.items() if v is not None)


@app.command("profile")
def profile_cmd(
    devices: list[str] = typer.Argument(..., metavar="DEVICE...", help="Device profile names or YAML paths."),
    space: str = typer.Option(..., "--space", help="Search space, e.g. compact or ofa-mbv3-w1.0."),
    resolutions: str | None = typer.Option(None, "--resolutions", help="Comma-separated, e.g. 160,224 (default: the space's LUT resolutions)."),
    runtime: str | None = typer.Option(None, "--runtime", help="onnxruntime | litert | tflite-benchmark | onnxruntime-perf-test (default: the profile's)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | int8 (int8: TFLite runtimes)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Threads (default: the profile's)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size of the measured models."),
    out: Path | None = typer.Option(None, "--out", help="LUT file (only with one device; default device_profiles/NAME/...)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the rows already in the LUT and measure only the rest."),
    force: bool = typer.Option(False, "--force", help="Replace an existing LUT and its sidecars (without --resume or --force an existing LUT is refused)."),
    rounds: int | None = typer.Option(None, "--rounds", help="Interleaved measurement rounds per batch, at least (default: the profile's measure.rounds)."),
    runs: int | None = typer.Option(None, "--runs", help="Timed runs per model, at least (default: the profile's measure.runs)."),
    warmup: int | None = typer.Option(None, "--warmup", help="Untimed runs before a model is timed (default: the profile's)."),
    min_seconds: float | None = typer.Option(None, "--min-seconds", help="A model's timed runs span at least this many seconds, its batch's rounds in between (default: the profile's, 0.2)."),
    precision: float | None = typer.Option(None, "--precision", help="Measure each entry until its statistic's 95% CI half-width is within this fraction (default: the profile's, 0.02)."),
    max_entry_s: float | None = typer.Option(None, "--max-entry-s", help="...or until this many seconds went into it (default: the profile's, 10)."),
    max_wait: float | None = typer.Option(None, "--max-wait", help="Wait up to this many seconds for the device's noise floor to fall under measure.max_noise, then go on with a warning (default: the profile's, 15)."),
    processes: int | None = typer.Option(None, "--processes", help="Runner processes each entry is measured in; it keeps the fastest (default: the profile's, 2; 1 halves the entries' share of the time)."),
    profile_ops: bool = typer.Option(False, "--profile-ops", help="Also record per-operator timings (ONNX Runtime profiler)."),
    calibration_subnets: int | None = typer.Option(None, "--calibration-subnets", min=2, help="Whole subnets per resolution measured to calibrate the entries (default 16; fewer: faster, a less steady calibration)."),
    as_json: bool = JsonOption,
) -> int:
    """Measure every LUT entry of a space on each device and write its LUT (rows saved as they arrive).

    Example: hwnas profile local --space compact --out local-compact.csv
    """
    from hwnas.profiler.device_pool import profile_devices, profile_named
    from hwnas.profiler.profile import ProfileRequest

    if out is not None and len(devices) > 1:
        raise UsageError("--out works with one device only; with several, each LUT goes to its default place")
    if resume and force:
        raise UsageError("--resume keeps the LUT's rows and --force replaces them: give one of them")
    if dtype not in ("float32", "int8"):
        raise UsageError(f"--dtype: expected float32 or int8, got {dtype!r}")
    request = ProfileRequest(
        space=space,
        resolutions=_parse_resolutions(resolutions),
        runtime=runtime,
        dtype=dtype,
        threads=threads,
        batch=batch,
        out=out,
        resume=resume,
        force=force,
        overrides=_measure_flags(rounds=rounds, runs=runs, warmup=warmup, min_seconds=min_seconds, precision=precision,
                                 max_entry_s=max_entry_s, max_wait_s=max_wait, processes=processes,
                                 profile_ops=profile_ops or None),
        **({} if calibration_subnets is None else {"calibration_subnets": calibration_subnets}),
    )
    if len(devices) == 1:
        with progress_bar(f"profile {devices[0]}") as update:
            result = profile_named(devices[0], request, lambda d, t, w: update(d, t, w))
        emit(result, as_json)
        return 0
    with progress_bar(f"profile {len(devices)} devices") as update:
        outcomes = profile_devices(
            devices, request, on_progress=lambda d, t, w: update(d, t, w),
            on_error=lambda name, exc: stderr.print(f"hwnas: error: {plain(exc)}", highlight=False, markup=False),
        )
    ordered = [
        {"device": o.device, "ok": True, **(o.result or {})} if o.error is None
        else {"device": o.device, "ok": False, "error": str(o.error), "exit_code": exit_code_for(o.error)}
        for o in outcomes
    ]
    emit({"devices": ordered}, as_json)
    codes = [r.get("exit_code", 0) for r in ordered]
    return 0 if all(c == 0 for c in codes) else max(codes)


@lut_app.command("validate")
def validate_cmd(
    device: str = typer.Argument(..., metavar="DEVICE", help="Device profile name or YAML path."),
    lut_path: Path = typer.Option(..., "--lut", help="The LUT to validate."),
    samples: int = typer.Option(40, "--samples", min=1, help="Random subnets to measure end to end."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random subnets."),
    correct_drift: bool = typer.Option(True, "--correct-drift/--no-correct-drift", help="Normalise measurements to the LUT's machine speed, measured on some of its calibration subnets (else the reference workload)."),
    precision: float | None = typer.Option(None, "--precision", help="Measure each subnet until its statistic's 95% CI half-width is within this fraction (default: the profile's)."),
    max_entry_s: float | None = typer.Option(None, "--max-entry-s", help="...or until this many seconds went into it (default: the profile's)."),
    max_wait: float | None = typer.Option(None, "--max-wait", help="Wait up to this many seconds for a quieter spell before measuring (default: the profile's, 15)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the points as CSV here."),
    as_json: bool = JsonOption,
) -> int:
    """Measure random subnets end to end on the device and compare them with the LUT's prediction.

    Example: hwnas lut validate local --lut local-compact.csv --samples 20
    """
    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.lut import LUT
    from hwnas.profiler.validate import validate_lut

    lut = LUT.load(lut_path)
    profile = load_profile(device)
    with progress_bar(f"validate on {device}") as update:
        result = validate_lut(
            profile, lut, samples=samples, seed=seed, correct_drift=correct_drift,
            overrides=_measure_flags(precision=precision, max_entry_s=max_entry_s, max_wait_s=max_wait),
            on_progress=lambda d, t, w: update(d, t, w),
        )
    if out is not None:
        import csv
        import json

        with open(out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["arch", "predicted_ms", "measured_ms"])
            for p in result["points"]:
                w.writerow([json.dumps(p["arch"]), p["predicted_ms"], p["measured_ms"]])

    def human(r: dict[str, Any]) -> None:
        from rich.console import Console

        c = Console()
        how = "corrected" if r["drift_corrected"] else "not corrected"
        source = {"anchors": f", from {r['anchors']} anchors", "reference": ", from the reference workload"}.get(
            r.get("drift_source") or "", "")
        c.print(
            f"{r['samples']} subnets: {r['within_5pct']:.0%} within ±5%, {r['within_10pct']:.0%} within ±10%, "
            f"MAPE {r['mape']:.1%}, Spearman {r['spearman'] if r['spearman'] is None else format(r['spearman'], '.3f')}; drift {r['drift'] or float('nan'):.3f}"
            f" ({how}{source})",
            highlight=False,
        )
        if r.get("repeat_mape") is not None:
            verdict = (
                "the LUT's error is above what re-measuring gives" if r["lut_error_above_repeat"]
                else "the LUT's error is within what re-measuring gives"
            )
            c.print(f"two passes disagree by {r['repeat_mape']:.1%} (repeat MAPE); {verdict}", highlight=False)
        if r.get("noise_floor") is not None:
            c.print(f"noise floor {r['noise_floor']:.1%}", highlight=False)
        else:
            c.print("noise floor not measured (too few timed runs, or the runtime prints no per-run samples)", highlight=False)

    emit(result, as_json, human)
    return 0
