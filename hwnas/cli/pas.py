"""`hwnas pas`: Pruning-as-Search on a RepVGG-style base network, reparameterised into a plain network."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def _locked(device: Any, wait_s: float) -> Iterator[Any]:
    """The device's lock, held only while measuring (not while training); while another run holds the device,
    wait up to ``wait_s`` seconds for it (a trained network is not thrown away for a busy device)."""
    from hwnas.agents.errors import DeviceBusy

    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        try:
            device.acquire()
            break
        except DeviceBusy:
            if time.monotonic() >= deadline:
                raise
            if not waited:
                log.warning("%s is busy with another run; waiting up to %.0f s", device.profile.name, wait_s)
                waited = True
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
    try:
        yield device
    finally:
        device.release()


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
    base_macs = float(config.macs())
    macs_target = (
        pas_search.resolve_target(target_macs, base_macs, min_macs())
        if target_macs is not None
        else None
    )

    t0 = time.perf_counter()
    device = Device(profile)
    try:
        cost: Any = None
        table = None
        measured_table = False
        target: float | None = macs_target
        if latency:
            assert lut is not None
            if lut.exists() and not remeasure:
                table = pas_search.LayerLatencyTable.load(lut, config)
                if multiple % table.step:
                    log.warning(
                        "%s holds widths in steps of %d: widths in multiples of %d fall between its points "
                        "(interpolated); --remeasure measures them", lut, table.step, multiple,
                    )
            else:
                with _locked(device, wait_device), progress_bar(f"latency table on {profile.name}") as advance:
                    table = pas_search.measure_layer_table(
                        config,
                        device=device,
                        out=lut,
                        step=multiple if multiple > 1 else pas_search.DEFAULT_WIDTH_STEP,
                        runtime=runtime,
                        threads=threads,
                        seed=seed,
                        on_progress=lambda d, t, w: advance(d, t, w),
                    )
                measured_table = True
            cost = pas_search.LatencyCost(table=table)
            base_ms = cost.of_config(config)
            assert target_ms is not None or macs_target is not None
            target = pas_search.resolve_target(
                target_ms if target_ms is not None else f"{macs_target / base_macs * 100}%",
                base_ms,
                cost.minimum(config, multiple),
                what="--target-ms",
                unit="ms",
            )

        assert target is not None
        searcher = pas_search.PruningAsSearch(
            base=config,
            target=target,
            cost=cost,
            lam=lam,
            width_multiple=multiple,
            seed=seed,
            pretrain_epochs=epochs if pretrain_epochs is None else pretrain_epochs,
            search_epochs=epochs if search_epochs is None else search_epochs,
            finetune_epochs=epochs if finetune_epochs is None else finetune_epochs,
        )
        with progress_bar("pas", total=None) as advance:
            searcher.search(x_train, y_train, x_test, y_test, on_progress=lambda d, t, w: advance(d, t, w))
            advance(what=f"export, measure on {profile.name}")
            with _locked(device, wait_device):
                searcher.export(
                    out,
                    device=device,
                    runtime=runtime,
                    threads=threads,
                    table=table,
                    repeats=repeats,
                    tflite=tflite,
                )
    finally:
        device.close()
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
        "width_multiple": multiple,
        "device": profile.name,
        "runtime": runtime,
        "threads": threads,
        "latency_statistic": record.get("latency_statistic"),
        "latency_ms": record.get("latency_ms"),
        "speedup": record.get("speedup"),
        "speedup_summary": record.get("speedup_summary"),
        "measured_ms": record.get("measured_ms"),
        "plot": record["plot"],
        "record": str(out / "pas.json"),
        "tflite_file": record.get("tflite_file"),
        "tflite_max_abs_diff": record.get("tflite_max_abs_diff"),
        "seconds": time.perf_counter() - t0,
    }
    if table is not None:
        result.update(
            lut=str(lut),
            lut_measured=measured_table,
            target_ms=float(record["target"]),
            base_predicted_ms=float(record["base_cost"]),
            base_measured_ms=table.reference_ms,
            predicted_ms=record["final_cost"],
            measured_raw_ms=record.get("measured_raw_ms"),
            drift=record.get("drift"),
            calibration=table.meta.get("calibration"),
        )
    emit(result, as_json)
    return 0
