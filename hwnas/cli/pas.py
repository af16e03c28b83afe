"""`hwnas pas`: Pruning-as-Search on a RepVGG-style base network, reparameterised into a plain network."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import typer

from hwnas.cli._app import JsonOption, UsageError, app, emit, progress_bar

log = logging.getLogger(__name__)


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
    target_macs: str | None = typer.Option(
        None,
        "--target-macs",
        help="MACs target: a number or a percentage like 40% (needed unless --target-ms is given).",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for pas.onnx, multibranch.onnx, widths.png, pas.json."
    ),
    device_name: str = typer.Option(
        "local",
        "--device",
        metavar="DEVICE",
        help="Device profile (name or YAML path) that measures the latency table and the exported networks.",
    ),
    lut: Path | None = typer.Option(
        None,
        "--lut",
        help="Latency table (hwnas LUT file) to use as the cost instead of MACs; measured on --device and written "
        "here when the file does not exist.",
    ),
    target_ms: str | None = typer.Option(
        None,
        "--target-ms",
        help="Latency target in ms, or PCT% of the unpruned network's latency on --device. Without --lut, the "
        "table lives at the device's default LUT place (device_profiles/NAME/pas-BASE_...csv).",
    ),
    remeasure: bool = typer.Option(
        False, "--remeasure", help="Measure the latency table again even when the file exists."
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
    width_multiple: int | None = typer.Option(
        None,
        "--width-multiple",
        min=1,
        help="Final widths in multiples of N (default: 8 with a latency cost, since runtimes are slower at "
        "widths off their vector blocks than a latency table interpolates; 1 with MACs).",
    ),
    seed: int = typer.Option(0, "--seed"),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Threads for latency measurements (default: the device profile's)."
    ),
    repeats: int = typer.Option(
        5, "--repeats", min=1, help="Interleaved measurements of multi-branch vs reparameterised."
    ),
    wait_device: float = typer.Option(
        600.0, "--wait-device", min=0, help="Seconds to wait for a device another run holds before failing."
    ),
    tflite: bool = typer.Option(False, "--tflite", help="Also export pas.tflite (litert-torch)."),
    as_json: bool = JsonOption,
) -> int:
    """Learn every layer's width under a MACs (or latency) target and export the reparameterised network.

    Example: hwnas pas --data digits --target-macs 50% --out pas-out
    """
    from hwnas.agents.device import Device
    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.profile import default_lut_path
    from hwnas.search import pas as pas_search
    from hwnas.search.pas_run import run_pas
    from hwnas.supernet.pas_net import base_config

    # everything that can be wrong with the input is checked before any training or measuring
    name, _ = pas_search.parse_data_spec(data)
    if target_macs is None and target_ms is None:
        raise UsageError("give a target: --target-macs M|PCT% or --target-ms MS|PCT%")
    if target_ms is not None:
        pas_search.parse_target(target_ms, what="--target-ms", unit="ms")
    config = base_config(base or pas_search.DATASETS[name])
    latency = lut is not None or target_ms is not None
    multiple = width_multiple if width_multiple is not None else (8 if latency else 1)

    def min_macs() -> float:
        return pas_search.MacsCost(config=config).minimum(config, multiple)

    if target_macs is not None:
        pas_search.resolve_target(target_macs, float(config.macs()), min_macs())
    profile = load_profile(device_name)
    runtime = profile.runtime
    threads = threads or profile.threads
    if latency and lut is None:
        lut = default_lut_path(profile, pas_search.lut_space(config), runtime, "float32", threads, 1)
        lut.parent.mkdir(parents=True, exist_ok=True)
    out = _writable_dir(out)
    config, x_train, y_train, x_test, y_test = pas_search.load_data(data, config)

    device = Device(profile)
    try:
        with contextlib.ExitStack() as stack:
            bars: list[Any] = []

            def bar(done: int | None, total: int | None, what: str) -> None:
                # the bar starts with the work: a bad --lut file fails before it, with its error line alone
                if not bars:
                    bars.append(stack.enter_context(progress_bar(f"pas on {profile.name}", total=None)))
                bars[0](done, total, what)

            searcher = pas_search.PruningAsSearch(
                base=config,
                lam=lam,
                width_multiple=multiple,
                seed=seed,
                pretrain_epochs=epochs if pretrain_epochs is None else pretrain_epochs,
                search_epochs=epochs if search_epochs is None else search_epochs,
                finetune_epochs=epochs if finetune_epochs is None else finetune_epochs,
            )
            result = run_pas(
                searcher,
                (x_train, y_train, x_test, y_test),
                device=device,
                hold=lambda: device.held(wait_s=wait_device),
                out=out,
                runtime=runtime,
                threads=threads,
                target_macs=target_macs,
                target_ms=target_ms,
                lut=lut,
                remeasure=remeasure,
                repeats=repeats,
                tflite=tflite,
                on_table_progress=bar,
                on_progress=bar,
            )
    finally:
        device.close()
    emit(result, as_json)
    return 0
