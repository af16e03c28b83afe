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
    20%), or import OFA's published predictor."""
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
    data: Path = typer.Option(..., "--data", help="CSV with columns arch (JSON) and latency_ms (end-to-end measurements)."),
    out: Path = typer.Option(..., "--out", help="Predictor file to write (JSON)."),
    reference_lut: Path | None = typer.Option(None, "--reference-lut", help="A LUT whose prediction is one more feature (calibration / transfer)."),
    granularity: str = typer.Option("stage", "--granularity", help="Features per 'stage' or 'total'."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds the held-out split."),
    as_json: bool = JsonOption,
) -> int:
    """Fit a learned latency predictor on whole-model measurements; reports Spearman, within +-10% and MAPE
    on a held-out 20%."""
    from hwnas.search.latency import LearnedLatency, LUTLatency

    archs, ms = _read_pairs(data, "latency_ms")
    reference = LUTLatency.from_file(reference_lut, space=space) if reference_lut is not None else None
    try:
        model = LearnedLatency(space=space, reference=reference, granularity=granularity, seed=seed)
        model.fit(archs, ms)
    except ValueError as exc:
        if getattr(type(exc), "exit_code", None) is None:
            raise UsageError(str(exc)) from None
        raise
    model.save(out)
    emit(
        {
            "samples": model.samples_,
            "model": "ridge",
            "spearman": model.spearman_,
            "within_10pct": model.within_10pct_,
            "mape": model.mape_,
            "file": str(out),
        },
        as_json,
    )
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
    """Predict with a saved accuracy predictor (top-1, 0-1) or latency predictor (ms)."""
    from hwnas.cli._args import read_archs
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.latency import LearnedLatency

    kind = _kind_of(file)
    if kind == "latency":
        model: Any = LearnedLatency.load(file)
        space = model.space
        values = model.predict(read_archs(space, archs, model.resolutions))
    else:
        model = AccuracyPredictor.load(file)
        space = model.encoding_.space
        values = model.predict(read_archs(space, archs))
    out = [None if not math.isfinite(v) else float(v) for v in values.tolist()]
    emit({"kind": kind, "space": space.name, "values": out}, as_json,
         None if as_json else (lambda r: typer.echo(json.dumps(r["values"]))))
    return 0
