"""`hwnas pas`: Pruning-as-Search on a RepVGG-style base network, reparameterised into a plain network."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from hwnas.cli._app import JsonOption, UsageError, app, emit, progress_bar


def _writable_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".hwnas-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out}: not a writable folder ({exc.strerror or exc})") from None
    return out


@app.command("pas")
def pas(
    data: str = typer.Option(..., "--data", help="digits | cifar10:PATH | imagefolder:PATH"),
    target_macs: str = typer.Option(
        ..., "--target-macs", help="MACs target: a number or a percentage like 40%"
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for pas.onnx, multibranch.onnx, widths.png, pas.json."
    ),
    lut: Path | None = typer.Option(
        None,
        "--lut",
        help="Latency table (LUT text file) to use as the cost instead of MACs; measured here with ONNX Runtime "
        "and written to this path when the file does not exist.",
    ),
    target_ms: str | None = typer.Option(
        None,
        "--target-ms",
        help="With --lut: latency target in ms or PCT% of the unpruned network's predicted latency (default: the "
        "--target-macs share of it; per-layer overheads make that stricter than the same share of MACs).",
    ),
    base: str | None = typer.Option(
        None, "--base", help="Base network (digits, cifar); default: from --data."
    ),
    epochs: int = typer.Option(
        4, "--epochs", min=0, help="Epochs of each phase (pre-train, search, fine-tune)."
    ),
    pretrain_epochs: int | None = typer.Option(None, "--pretrain-epochs", min=0),
    search_epochs: int | None = typer.Option(None, "--search-epochs", min=0),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs", min=0),
    lam: float = typer.Option(20.0, "--lambda", help="Weight of the cost regulariser."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", min=1, help="ONNX Runtime threads for latency measurements."),
    tflite: bool = typer.Option(False, "--tflite", help="Also export pas.tflite (needs litert-torch)."),
    as_json: bool = JsonOption,
) -> int:
    """Learn every layer's width under a MACs (or latency) target and export the reparameterised network."""
    from hwnas.search import pas as pas_search
    from hwnas.supernet.pas_net import base_config

    name, _ = pas_search.parse_data_spec(data)
    if target_ms is not None and lut is None:
        raise UsageError("--target-ms needs --lut (a latency table)")
    config = base_config(base or pas_search.DATASETS[name])
    base_macs = float(config.macs())
    macs_target = pas_search.resolve_target(target_macs, base_macs, float(config.min_macs()))
    out = _writable_dir(out)
    config, x_train, y_train, x_test, y_test = pas_search.load_data(data, config)
    if config.macs() != base_macs:  # the dataset's classes resized the classifier
        base_macs = float(config.macs())
        macs_target = pas_search.resolve_target(target_macs, base_macs, float(config.min_macs()))

    cost: Any = None
    target: float | str = macs_target
    if lut is not None:
        if lut.exists():
            table = pas_search.LayerLatencyTable.load(lut, config)
        else:
            with progress_bar("latency table", total=None) as advance:
                table = pas_search.measure_layer_table(
                    config, threads=threads, on_progress=lambda d, t, w: advance(d, t, w)
                )
            table.save(lut)
        cost = pas_search.LatencyCost(table=table)
        base_ms = cost.of_config(config)
        target = pas_search.resolve_target(
            target_ms if target_ms is not None else f"{macs_target / base_macs * 100}%",
            base_ms,
            cost.minimum(config),
            what="--target-ms",
            unit="ms",
        )

    searcher = pas_search.PruningAsSearch(
        base=config,
        target=target,
        cost=cost,
        lam=lam,
        seed=seed,
        pretrain_epochs=epochs if pretrain_epochs is None else pretrain_epochs,
        search_epochs=epochs if search_epochs is None else search_epochs,
        finetune_epochs=epochs if finetune_epochs is None else finetune_epochs,
    )
    t0 = time.perf_counter()
    with progress_bar("pas", total=None) as advance:
        searcher.search(x_train, y_train, x_test, y_test, on_progress=lambda d, t, w: advance(d, t, w))
        advance(what="export")
        searcher.export(out, threads=threads, tflite=tflite)
    record = searcher.record_
    result = {
        "base_macs": record["base_macs"],
        "target_macs": macs_target,
        "macs": record["macs"],
        "macs_ratio": record["macs_ratio"],
        "base_top1": record["base_top1"],
        "top1": record["top1"],
        "reparam_max_abs_diff": record["reparam_max_abs_diff"],
        "onnx_max_abs_diff": record["onnx_max_abs_diff"],
        "file": record["file"],
        "widths": record["widths"],
        "base_widths": record["base_widths"],
        "cost": record["cost"],
        "target_ms": float(target) if cost is not None else None,
        "latency_ms": record.get("latency_ms"),
        "speedup": record.get("speedup"),
        "plot": record["plot"],
        "record": str(out / "pas.json"),
        "tflite_file": record.get("tflite_file"),
        "tflite_max_abs_diff": record.get("tflite_max_abs_diff"),
        "seconds": time.perf_counter() - t0,
    }
    if lut is not None:
        result["lut"] = str(lut)
        result["predicted_ms"] = record["final_cost"]
    emit(result, as_json)
    return 0
