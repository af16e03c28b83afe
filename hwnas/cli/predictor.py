"""`hwnas predictor ...`: fit or import accuracy predictors, fit learned latency predictors, predict."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import typer

from hwnas.cli._app import JsonOption, UsageError, app, emit, progress_bar

predictor_app = typer.Typer(
    name="predictor",
    help="Accuracy and latency predictors: fit, import OFA's, predict.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(predictor_app, name="predictor")


def _read_pairs(path: Path, value_column: str) -> tuple[list[Any], list[float]]:
    """(arch JSON strings, values) from a CSV with columns ``arch`` and ``value_column``."""
    import pandas as pd

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, comment="#")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a CSV file ({str(exc).splitlines()[0]})") from None
    for col in ("arch", value_column):
        if col not in df.columns:
            raise UsageError(f"{path}: missing column {col!r} (columns: {', '.join(map(str, df.columns))})")
    values = pd.to_numeric(df[value_column], errors="coerce")
    if values.isna().any():
        row = int(values.isna().to_numpy().nonzero()[0][0]) + 2
        raise UsageError(f"{path} line {row}: {value_column!r} is not a number")
    return df["arch"].astype(str).tolist(), values.astype(float).tolist()


@predictor_app.command("accuracy")
def accuracy_cmd(
    ckpt: Path | None = typer.Argument(None, metavar="[CKPT]", help="Trained supernet checkpoint to sample subnets from."),
    samples: int | None = typer.Option(None, "--samples", min=5, help="Subnets to sample, BN-recalibrate and evaluate."),
    data: str | None = typer.Option(None, "--data", help="Evaluation data: digits | cifar10:PATH | imagefolder:PATH."),
    ofa_checkpoint: Path | None = typer.Option(None, "--ofa-checkpoint", help="Import OFA's published acc_predictor.pth instead."),
    pairs: Path | None = typer.Option(None, "--pairs", help="Fit on measured pairs instead: a CSV with columns arch (JSON), top1 (0-1)."),
    space: str | None = typer.Option(None, "--space", help="Space of --pairs / --ofa-checkpoint (default for OFA: ofa-mbv3-w1.2)."),
    out: Path = typer.Option(..., "--out", help="Predictor file to write."),
    epochs: int = typer.Option(200, "--epochs", min=1, help="Training epochs."),
    seed: int = typer.Option(0, "--seed", min=0),
    as_json: bool = JsonOption,
) -> int:
    """Fit OFA's MLP accuracy predictor on subnets of a trained supernet (Kendall tau and RMSE on a held-out
    20%), or import OFA's published predictor.

    Example: hwnas predictor accuracy supernet.pt --samples 100 --out accuracy.pt
    """
    from hwnas.search.accuracy import AccuracyPredictor, generate_accuracy_dataset

    modes = [ofa_checkpoint is not None, pairs is not None, ckpt is not None]
    if sum(modes) != 1:
        raise UsageError("give exactly one of CKPT (with --samples and --data), --pairs FILE or --ofa-checkpoint PTH")
    start = time.perf_counter()
    if ofa_checkpoint is not None:
        pred = AccuracyPredictor.from_ofa_checkpoint(ofa_checkpoint, space=space or "ofa-mbv3-w1.2")
    else:
        if pairs is not None:
            if space is None:
                raise UsageError("--pairs needs --space")
            archs, top1 = _read_pairs(pairs, "top1")
            pred_space: str = space
        else:
            if samples is None or data is None:
                raise UsageError("CKPT needs --samples N and --data D")
            assert ckpt is not None
            from hwnas.supernet.train import load_checkpoint

            pred_space = load_checkpoint(ckpt).space
            with progress_bar("evaluating subnets", samples) as bar:
                archs, top1 = generate_accuracy_dataset(ckpt, samples, data, seed=seed, on_progress=bar)
        with progress_bar("training predictor", epochs) as bar:
            pred = AccuracyPredictor(space=pred_space, epochs=epochs, seed=seed).fit(archs, top1, on_progress=bar)
    pred.save(out)
    emit(
        {
            "samples": pred.samples_,
            "kendall_tau": pred.kendall_tau_,
            "rmse": pred.rmse_,
            "space": pred.space_name,
            "file": str(out),
            "seconds": round(time.perf_counter() - start, 3),
        },
        as_json,
    )
    return 0


@predictor_app.command("latency")
def latency_cmd(
    space: str = typer.Option(..., "--space", help="Search space of the measured architectures."),
    data: Path | None = typer.Option(None, "--data", help="CSV with columns arch (JSON) and latency_ms (end-to-end measurements of the target device)."),
    prior: list[Path] = typer.Option([], "--prior", help="Another device's LUT, measurements CSV or saved latency predictor to adapt from (repeatable)."),
    suggest: int | None = typer.Option(None, "--suggest", min=1, help="Instead of fitting: write the N subnets worth measuring (JSON lines) to --out."),
    out: Path = typer.Option(..., "--out", help="Predictor file to write (JSON); with --suggest, the archs (JSON lines)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds the cross-validation folds (and --suggest's pool)."),
    as_json: bool = JsonOption,
) -> int:
    """Fit a learned latency predictor on a few end-to-end measurements of a device (candidate models stacked
    with weights from cross-validation, optionally adapted from other devices with --prior), or with
    --suggest pick the subnets worth measuring first.

    Example: hwnas predictor latency --space ofa-mbv3-w1.0 --suggest 30 --out archs.jsonl;
    hwnas predictor measure board --archs archs.jsonl --out board.csv;
    hwnas predictor latency --space ofa-mbv3-w1.0 --data board.csv --prior device_profiles/local/lut.csv --out board.json"""
    from hwnas.search.fewshot import load_prior, read_measurements, suggest_archs
    from hwnas.search.latency import LearnedLatency
    from hwnas.supernet import get_space

    sp = get_space(space)
    priors = [load_prior(p, sp) for p in prior]
    start = time.perf_counter()
    if suggest is not None:
        if data is not None:
            raise UsageError("give either --data (to fit) or --suggest N (to pick subnets to measure), not both")
        rs = sorted(set(sp.lut_resolutions).intersection(*[p.resolutions for p in priors])) or None
        archs = suggest_archs(sp, suggest, resolutions=rs, seed=seed)
        from hwnas.profiler.lut import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, "".join(a.to_json() + "\n" for a in archs))
        emit({"archs": [a.to_dict() for a in archs], "file": str(out),
              "seconds": round(time.perf_counter() - start, 3)}, as_json,
             None if as_json else (lambda r: typer.echo(f"{len(r['archs'])} archs to measure: {r['file']}")))
        return 0
    if data is None:
        raise UsageError("give --data FILE.csv (measurements to fit) or --suggest N")
    model = LearnedLatency(space=sp, priors=priors, seed=seed)
    archs, ms = read_measurements(data, sp, model.resolutions)
    model.fit(archs, ms)
    model.save(out)
    emit(
        {
            "samples": model.samples_,
            "model": model.model_,
            "weights": model.weights_,
            "cv_log_error": model.cv_,
            "spearman": model.spearman_,
            "within_10pct": model.within_10pct_,
            "mape": model.mape_,
            "interval": {"level": model.level, "halfwidth_pct": round(100 * math.expm1(model.interval_), 2)},
            "priors": [p.source for p in priors],
            "file": str(out),
            "seconds": round(time.perf_counter() - start, 3),
        },
        as_json,
    )
    return 0


@predictor_app.command("measure")
def measure_cmd(
    device: str = typer.Argument(..., metavar="DEVICE", help="Device profile name or path."),
    archs: Path = typer.Option(..., "--archs", help="Architectures to measure, one JSON arch per line (e.g. from --suggest)."),
    space: str = typer.Option(..., "--space", help="Search space of the architectures."),
    out: Path = typer.Option(..., "--out", help="CSV to write (columns arch, latency_ms): what `predictor latency --data` reads."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | int8 (int8: runtime litert)."),
    batch: int = typer.Option(1, "--batch", min=1),
    as_json: bool = JsonOption,
) -> int:
    """Measure subnets end to end on a device (the profiler's measurement, as `lut validate` does) and write
    the CSV a learned latency predictor is fitted on.

    Example: hwnas predictor measure local --space compact --archs archs.jsonl --out measured.csv
    """
    from hwnas.agents.device import Device
    from hwnas.agents.profiles import load_profile
    from hwnas.cli._args import read_archs
    from hwnas.profiler.lut import atomic_write_text, csv_line
    from hwnas.profiler.validate import measure_subnets
    from hwnas.supernet import get_space

    sp = get_space(space)
    profile = load_profile(device)
    todo = read_archs(sp, archs)
    start = time.perf_counter()
    with Device(profile) as dev, progress_bar("measuring subnets", 2 * len(todo)) as bar:
        dev.acquire()
        m = measure_subnets(dev, todo, space_name=sp.name, runtime=profile.runtime, threads=profile.threads,
                            dtype=dtype, batch=batch, on_progress=bar)
    ms = [float(v) for v in m["raw_ms"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, csv_line(["arch", "latency_ms"])
                      + "".join(csv_line([a.to_json(), f"{v:.6g}"]) for a, v in zip(todo, ms, strict=True)))
    emit({"device": profile.name, "samples": len(ms), "latency_ms": ms, "file": str(out),
          "seconds": round(time.perf_counter() - start, 3)}, as_json,
         None if as_json else (lambda r: typer.echo(f"{r['samples']} subnets measured on {r['device']}: {r['file']}")))
    return 0


def _kind_of(path: Path) -> str:
    """'latency' for a JSON latency predictor, 'accuracy' otherwise (a torch file)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such predictor file")
    head = path.read_bytes()[:64].lstrip()
    return "latency" if head.startswith(b"{") else "accuracy"


@predictor_app.command("predict")
def predict_cmd(
    file: Path = typer.Argument(..., metavar="FILE", help="A saved accuracy or latency predictor."),
    archs: Path = typer.Option(..., "--archs", help="Architectures, one JSON arch per line."),
    as_json: bool = JsonOption,
) -> int:
    """Predict with a saved accuracy predictor (top-1, 0-1) or latency predictor (ms, with an interval per
    prediction).

    Example: hwnas predictor predict accuracy.pt --archs archs.jsonl
    """
    from hwnas.cli._args import read_archs
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.latency import LearnedLatency

    kind = _kind_of(file)
    result: dict[str, Any] = {"kind": kind}
    if kind == "latency":
        model: Any = LearnedLatency.load(file)
        space = model.space
        values, intervals = model.predict_interval(read_archs(space, archs, model.resolutions))
        result["intervals"] = intervals.tolist()
        result["interval_level"] = model.level
    else:
        model = AccuracyPredictor.load(file)
        space = model.encoding_.space
        values = model.predict(read_archs(space, archs))
    result["space"] = space.name
    result["values"] = [None if not math.isfinite(v) else float(v) for v in values.tolist()]
    emit(result, as_json, None if as_json else (lambda r: typer.echo(json.dumps(r["values"]))))
    return 0
