"""`hwnas supernet train|eval` and `hwnas export`: the once-for-all supernet and its subnets."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import typer

from hwnas.cli._app import JsonOption, UsageError, app, emit, progress_bar
from hwnas.cli._args import ARCH_HELP, resolve_arch

supernet_app = typer.Typer(
    name="supernet",
    help="Once-for-all supernet: train with progressive shrinking, evaluate subnets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(supernet_app, name="supernet")

DATA_HELP = "digits | cifar10:PATH | imagefolder:PATH (local files; nothing is downloaded)."


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise UsageError(f"{flag} {value!r} is not one of {', '.join(allowed)}")
    return value


def _check_space_option(ckpt: Any, space: str | None) -> None:
    if space is not None:
        from hwnas.supernet.errors import CheckpointError
        from hwnas.supernet.spaces import get_space

        want = get_space(space).name
        if ckpt.space != want:
            raise CheckpointError(f"{ckpt.path}: checkpoint of space {ckpt.space}, not of {want}")


def _datasets(spec: str, ckpt: Any) -> tuple[Any, Any]:
    from hwnas.supernet.data import load_dataset
    from hwnas.supernet.errors import DatasetError
    from hwnas.supernet.spaces import get_space

    r_max = get_space(ckpt.space).resolutions[-1]
    train = load_dataset(spec, resolution=r_max, split="train")
    if train.n_classes != ckpt.n_classes:
        raise DatasetError(
            f"dataset {spec!r} has {train.n_classes} classes but the checkpoint {ckpt.path} was trained for "
            f"{ckpt.n_classes}"
        )
    return train, load_dataset(spec, resolution=r_max, split="val")


# --------------------------------------------------------------------------------------------- train


@supernet_app.command("train")
def train_cmd(
    space: str = typer.Option(..., "--space", help="Search space, e.g. compact or ofa-mbv3-w1.0."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Checkpoint file, written after every phase; an existing one resumes."),
    sampling: str = typer.Option("progressive", "--sampling", help="progressive (OFA's phases) or random (naive baseline)."),
    epochs_scale: float = typer.Option(1.0, "--epochs-scale", help="Multiply every phase's epochs (e.g. 0.05 for a smoke run)."),
    seed: int = typer.Option(0, "--seed", help="Seed of subnet sampling, shuffling and augmentation."),
    kd_ratio: float = typer.Option(1.0, "--kd-ratio", help="Weight of the distillation loss from the largest network (0: off)."),
    dropout: float = typer.Option(0.1, "--dropout", min=0.0, max=0.99, help="Dropout before the classifier (OFA: 0.1)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Global batch size (shared across torchrun ranks)."),
    bn_images: int = typer.Option(2000, "--bn-images", min=1, help="Training images for BN recalibration of the final evaluation."),
    eval_images: int | None = typer.Option(None, "--eval-images", min=1, help="Validation images for the evaluations after each phase and at the end (default: all)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)."),
    as_json: bool = JsonOption,
) -> int:
    """Train a once-for-all supernet: the largest network, then elastic kernel, depth and width (progressive
    shrinking), or random subnets from the start (--sampling random). Works under `torchrun -m hwnas`.

    Example: hwnas supernet train --space compact --data digits-hard --out supernet.pt
    """
    from hwnas.supernet.train import TrainConfig, train_supernet

    _choice(sampling, ("progressive", "random"), "--sampling")
    if not epochs_scale > 0:
        raise UsageError(f"--epochs-scale must be > 0, got {epochs_scale}")
    _set_threads(threads)
    config = TrainConfig(
        space=space, data=data, sampling=sampling, epochs_scale=epochs_scale, seed=seed, kd_ratio=kd_ratio,
        batch_size=batch_size, bn_images=bn_images, eval_images=eval_images, dropout_rate=dropout,
    )
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with contextlib.ExitStack() as stack:
        bar: dict[str, Any] = {}

        def on_phase(name: str, index: int, n: int, event: str) -> None:
            if event == "start" and main_rank:
                bar["stack"] = contextlib.ExitStack()
                bar["advance"] = bar["stack"].enter_context(progress_bar(f"{name} ({index + 1}/{n})", total=None))
            elif event == "done" and "stack" in bar:
                bar.pop("stack").close()
                bar.pop("advance", None)

        def on_progress(done: int, total: int, what: str) -> None:
            if "advance" in bar:
                bar["advance"](done, total, what)

        stack.callback(lambda: bar.pop("stack").close() if "stack" in bar else None)
        result = train_supernet(config, out=out, on_progress=on_progress, on_phase=on_phase)
    if result.rank != 0:
        return 0
    payload = {
        "checkpoint": str(result.checkpoint),
        "space": config.space,
        "sampling": sampling,
        "phases": result.phases,
        "seconds": result.seconds,
        "top1_max": result.final.get("top1_max"),
        "top1_min": result.final.get("top1_min"),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }

    def human(r: dict[str, Any]) -> None:
        from rich.console import Console

        con = Console()
        for p in r["phases"]:
            state = "skipped (checkpoint)" if p.get("skipped") else f"{p['steps']} steps, {p['seconds']:.0f} s"
            con.print(
                f"{p['name']:<9} {state:<22} val top-1 largest {p.get('val_top1_max', 0):.3f}, "
                f"smallest {p.get('val_top1_min', 0):.3f}", highlight=False,
            )
        con.print(
            f"checkpoint {r['checkpoint']}: top-1 largest {r['top1_max']:.4f}, smallest {r['top1_min']:.4f} "
            f"({r['seconds']:.0f} s)", highlight=False,
        )

    emit(payload, as_json, human)
    return 0


# --------------------------------------------------------------------------------------------- eval


@supernet_app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Argument(..., metavar="CKPT", help="Supernet checkpoint (hwnas supernet train)."),
    arch: str = typer.Option(..., "--arch", help=ARCH_HELP),
    data: str | None = typer.Option(None, "--data", help=DATA_HELP + " Default: the checkpoint's training data."),
    space: str | None = typer.Option(None, "--space", help="Check that the checkpoint belongs to this space."),
    bn_images: int = typer.Option(2000, "--bn-images", min=1, help="Training images for BN recalibration."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)."),
    as_json: bool = JsonOption,
) -> int:
    """Top-1 of one subnet, extracted from the supernet and BN-recalibrated, with its MACs and params.

    Example: hwnas supernet eval supernet.pt --arch max --data digits-hard
    """
    from hwnas.supernet import bn
    from hwnas.supernet.spaces import get_space
    from hwnas.supernet.train import load_checkpoint

    _set_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    _check_space_option(ckpt, space)
    sp = get_space(ckpt.space)
    a = resolve_arch(sp, arch)
    spec = data or str(ckpt.config.get("data", "digits"))
    train, val = _datasets(spec, ckpt)
    started = time.perf_counter()
    net = ckpt.supernet()
    sub = net.get_active_subnet(a)
    bn.recalibrate_bn(sub, train, n_images=bn_images, resolution=a.r)
    top1 = bn.evaluate(sub, val, resolution=a.r)
    emit(
        {
            "top1": top1, "macs": sp.macs(a), "params": sp.params(a), "arch": a.to_dict(), "resolution": a.r,
            "data": spec, "val_images": len(val), "bn_images": min(bn_images, len(train)),
            "seconds": time.perf_counter() - started,
        },
        as_json,
    )
    return 0


# --------------------------------------------------------------------------------------------- export


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., metavar="CKPT", help="Supernet checkpoint (hwnas supernet train)."),
    arch: str = typer.Option(..., "--arch", help=ARCH_HELP),
    fmt: str = typer.Option(..., "--format", help="onnx or tflite."),
    out: Path = typer.Option(..., "--out", help="Model file to write."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or int8 (post-training, calibrated on training images)."),
    data: str | None = typer.Option(None, "--data", help=DATA_HELP + " For BN recalibration and int8 calibration; default: the checkpoint's."),
    space: str | None = typer.Option(None, "--space", help="Check that the checkpoint belongs to this space."),
    bn_images: int = typer.Option(2000, "--bn-images", min=1, help="Training images for BN recalibration."),
    calib_images: int = typer.Option(100, "--calib-images", min=1, help="Training images for int8 calibration."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)."),
    as_json: bool = JsonOption,
) -> int:
    """Export one subnet as a standalone model (BN recalibrated) and check its outputs against PyTorch's on
    random images of the data's kind and on validation images (max_abs_diff, over the logits).

    Example: hwnas export supernet.pt --arch max --format onnx --out max.onnx
    """
    from hwnas.supernet import bn
    from hwnas.supernet.export import export_subnet
    from hwnas.supernet.spaces import get_space
    from hwnas.supernet.train import load_checkpoint

    _choice(fmt, ("onnx", "tflite"), "--format")
    _choice(dtype, ("float32", "int8"), "--dtype")
    _set_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    _check_space_option(ckpt, space)
    sp = get_space(ckpt.space)
    a = resolve_arch(sp, arch)
    spec = data or str(ckpt.config.get("data", "digits"))
    train, val = _datasets(spec, ckpt)
    started = time.perf_counter()
    sub = ckpt.supernet().get_active_subnet(a)
    bn.recalibrate_bn(sub, train, n_images=bn_images, resolution=a.r)
    import numpy as np
    import torch

    calib = None
    if dtype == "int8":
        idx = np.sort(np.random.default_rng(1).permutation(len(train))[: min(calib_images, len(train))])
        calib = [train.batch(torch.as_tensor(idx), a.r)[0]]
    # random images of the data's kind (random pixels at the stored size, resized, normalised) and real ones
    check = [train.random_images(4, a.r), val.batch(slice(0, 4), a.r)[0]]
    with progress_bar(f"export {fmt} {dtype}", total=None):
        result = export_subnet(sub, a, fmt, out, dtype, space=sp, calibration=calib, check_inputs=check)
    result["arch"] = a.to_dict()
    result["seconds"] = time.perf_counter() - started
    emit(result, as_json)
    return 0
