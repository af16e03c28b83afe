"""One Pruning-as-Search run as ``hwnas pas`` makes it: the cost (MACs, or a latency table read from its file
or measured on the device), the target in the cost's unit, the search, the export and the measurement of the
exported networks on the device; returns the plain-data result the command prints.

Devices come in open (:class:`hwnas.agents.device.Device`) with a ``hold`` callable giving the context in which
the device's lock is held (only while measuring, not while training): this package does not import ``agents``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from ..supernet.pas_net import DEFAULT_WIDTH_STEP, PasNetConfig
from .pas import PruningAsSearch, resolve_target
from .pas_cost import LatencyCost, LayerLatencyTable, MacsCost
from .pas_table import measure_layer_table

log = logging.getLogger(__name__)

__all__ = ["run_pas"]

Progress = Callable[[int | None, int | None, str], None]


def run_pas(
    searcher: PruningAsSearch,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    device: Any,
    hold: Callable[[], AbstractContextManager[Any]],
    out: Path,
    runtime: str,
    threads: int,
    target_macs: str | None = None,
    target_ms: str | None = None,
    lut: Path | None = None,
    remeasure: bool = False,
    repeats: int = 5,
    tflite: bool = False,
    on_table_progress: Progress | None = None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``searcher`` (its base network a :class:`PasNetConfig`; its ``target`` and ``cost`` are set here) on
    ``data`` (``x_train, y_train, x_test, y_test``) under ``target_macs`` (a number or ``PCT%`` of the unpruned
    network's MACs) or, with ``lut``, under ``target_ms`` (ms or ``PCT%`` of the unpruned network's predicted
    latency; without it, the MACs share of ``target_macs``), export into ``out`` and measure the exported
    networks on ``device``.

    The latency table is read from ``lut`` when the file exists (unless ``remeasure``), else measured on the
    device (:func:`~.pas.measure_layer_table`) and written there. Raises BudgetError for a target outside
    the reachable range, PredictorError for a table made for another base network."""
    config = searcher.base
    if not isinstance(config, PasNetConfig):
        raise TypeError("run_pas: the searcher's base must be a PasNetConfig (the data's classes decided)")
    width_multiple, seed = searcher.width_multiple, searcher.seed
    t0 = time.perf_counter()
    base_macs = float(config.macs())
    min_macs = MacsCost(config=config).minimum(config, width_multiple)
    macs_target = resolve_target(target_macs, base_macs, min_macs) if target_macs is not None else None
    cost: Any = None
    table: LayerLatencyTable | None = None
    measured_table = False
    target: float | None = macs_target
    if lut is not None:
        if lut.exists() and not remeasure:
            table = LayerLatencyTable.load(lut, config)
            if width_multiple % table.step:
                log.warning(
                    "%s holds widths in steps of %d: widths in multiples of %d fall between its points "
                    "(interpolated); --remeasure measures them", lut, table.step, width_multiple,
                )
        else:
            with hold():
                table = measure_layer_table(
                    config,
                    device=device,
                    out=lut,
                    step=width_multiple if width_multiple > 1 else DEFAULT_WIDTH_STEP,
                    runtime=runtime,
                    threads=threads,
                    seed=seed,
                    on_progress=on_table_progress,
                )
            measured_table = True
        cost = LatencyCost(table=table)
        base_ms = cost.of_config(config)
        if target_ms is None and macs_target is None:
            raise ValueError("a PaS run needs target_macs or target_ms")
        target = resolve_target(
            target_ms if target_ms is not None else f"{macs_target / base_macs * 100}%",
            base_ms,
            cost.minimum(config, width_multiple),
            what="--target-ms",
            unit="ms",
        )
    if target is None:
        raise ValueError("a PaS run needs target_macs (or a latency table and target_ms)")
    searcher.target, searcher.cost = target, cost
    searcher.search(*data, on_progress=on_progress)
    if on_progress is not None:
        on_progress(None, None, f"export, measure on {device.profile.name}")
    with hold():
        searcher.export(
            out, device=device, runtime=runtime, threads=threads, table=table, repeats=repeats, tflite=tflite
        )
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
        "width_multiple": width_multiple,
        "device": device.profile.name,
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
    return result
