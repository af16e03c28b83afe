"""Measuring for Pruning-as-Search on a device: the model files of a per-layer latency table
(:class:`PasWorkloads`), the table itself (:func:`measure_layer_table`, through the profiler's table API
:func:`hwnas.profiler.entry_table.measure_entry_table`, any runtime) and whole networks measured side by side
(:func:`measure_networks`). Devices come in open (:class:`hwnas.agents.device.Device`): this package does not
import ``agents``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..profiler.entry_table import WholeNetwork, measure_entry_table
from ..profiler.lut import OVERHEAD_KEY
from ..profiler.measure import MeasurePlan, measure_batches, sampling_statistic
from ..profiler.workloads import (
    RUNTIME_FORMAT,
    Workload,
    cache_dir,
    export_model,
    exporter_info,
    overhead_model,
)
from ..supernet.pas_net import (
    DEFAULT_WIDTH_STEP,
    PasNetConfig,
    layer_key,
    network_keys,
    plain_layer,
    plain_network,
    width_grid,
)
from .errors import PredictorError
from .pas_cost import LayerLatencyTable, lut_space

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


PAS_WORKLOAD_VERSION = 1
#: Interleaved measurement of whole networks (multi-branch vs reparameterised, achieved latency).
COMPARE_PLAN = MeasurePlan(rounds=5, runs=10, warmup=10)


class PasWorkloads:
    """The model files a PaS latency table measures, exported with the profiler's exporters for a runtime's
    format and cached by content in :func:`hwnas.profiler.workloads.cache_dir` (as the profiler's are)."""

    def __init__(self, *, config: PasNetConfig, fmt: str = "onnx", dtype: str = "float32") -> None:
        self.config = config
        self.fmt = fmt
        self.dtype = dtype
        self.exporter = exporter_info(fmt, dtype)

    def _path(self, parts: dict[str, Any]) -> Path:
        parts = {
            **parts,
            "pas": PAS_WORKLOAD_VERSION,
            "batch": 1,
            "dtype": self.dtype,
            "exporter": self.exporter,
        }
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
        return cache_dir() / self.fmt / f"pas-{digest}.{self.fmt}"

    def _export(self, make: Callable[[], nn.Module], path: Path, in_shape: Sequence[int]) -> Path:
        def build() -> tuple[nn.Module, torch.Tensor]:
            torch.manual_seed(0)
            return make().eval(), torch.randn(1, *in_shape)

        return export_model(build, self.fmt, self.dtype, path)

    def layer(self, shape: dict[str, int], c_in: int, c_out: int) -> Workload:
        key = layer_key(shape["h_in"], c_in, shape["h_out"], c_out, shape["kernel"], shape["stride"])
        path = self._export(
            lambda: plain_layer(shape, c_in, c_out), self._path({"layer": key}), (c_in, shape["h_in"], shape["h_in"])
        )
        return Workload(id=key, path=path, kind="entry", key=key, resolution=self.config.resolution)

    def network(self, widths: Sequence[int], *, id: str, kind: str = "subnet") -> Workload:
        widths = [int(w) for w in widths]
        cfg = self.config
        path = self._path({"net": {**cfg.as_dict(), "name": ""}, "widths": widths})
        path = self._export(
            lambda: plain_network(cfg, widths), path, (cfg.in_channels, cfg.resolution, cfg.resolution)
        )
        return Workload(id=id, path=path, kind=kind, resolution=cfg.resolution)

    def reference(self) -> Workload:
        """The unpruned plain network: the reference workload of every batch (measures machine drift)."""
        return self.network(self.config.widths, id="reference", kind="reference")

    def overhead(self) -> Workload:
        """The smallest model with the network's input and output (the profiler's overhead workload)."""
        cfg = self.config
        path = self._path({"overhead": cfg.num_classes, "input": [cfg.in_channels, cfg.resolution]})
        path = self._export(
            lambda: overhead_model(cfg.num_classes), path, (cfg.in_channels, cfg.resolution, cfg.resolution)
        )
        return Workload(
            id=f"{OVERHEAD_KEY}@{cfg.resolution}",
            path=path,
            kind="overhead",
            key=OVERHEAD_KEY,
            resolution=cfg.resolution,
        )


def _device_settings(device: Any, runtime: str | None, threads: int | None) -> tuple[str, int, str]:
    runtime = runtime or device.profile.runtime
    threads = threads or device.profile.threads
    if runtime not in RUNTIME_FORMAT:
        raise PredictorError(
            f"runtime {runtime!r} cannot measure PaS latency tables; expected one of {sorted(RUNTIME_FORMAT)}"
        )
    return runtime, int(threads), RUNTIME_FORMAT[runtime]


def _calibration_widths(config: PasNetConfig, step: int, n: int, seed: int) -> list[list[int]]:
    """Widths of the whole networks measured beside the layers: the narrowest one, then random grid points
    (the unpruned network is the reference workload, measured in every batch)."""
    rng = np.random.default_rng(seed + 7919)
    out = [[1] * len(config.layers)]
    grids = [width_grid(w, step) for w in config.widths]
    while len(out) < max(1, n):
        out.append([int(rng.choice(g)) for g in grids])
    return out


def measure_layer_table(
    config: PasNetConfig,
    *,
    device: Any,
    out: Path,
    step: int = DEFAULT_WIDTH_STEP,
    runtime: str | None = None,
    threads: int | None = None,
    plan: MeasurePlan = MeasurePlan(),
    calibration_nets: int = 8,
    seed: int = 0,
    on_progress: ProgressFn | None = None,
) -> LayerLatencyTable:
    """Measure every 3x3 layer of ``config`` at each (input, output) width of its grid on ``device`` (an open
    :class:`hwnas.agents.device.Device`, lock held by the caller) and write the table as an hwnas LUT to ``out``.

    One model file per grid point (a plain 3x3 conv + ReLU, batch 1, float32) in the runtime's format, the
    per-inference overhead workload and ``calibration_nets`` whole plain networks, measured and calibrated by
    the profiler's public table API (:func:`hwnas.profiler.entry_table.measure_entry_table`: the unpruned plain
    network as the reference workload of every batch, interleaved rounds, the runtime's statistic, for any
    runtime of the registry, benchmark programs included). The LUT column ``lut_ms`` holds ``a * (value - o)``
    per layer and ``b`` in the ``Overhead-inference`` row, so the table's sum predicts a whole plain network.
    """
    runtime, threads, fmt = _device_settings(device, runtime, threads)
    out = Path(out)
    if str(out.parent) and not out.parent.is_dir():
        raise PredictorError(f"{out}: cannot write the latency table: no such folder {out.parent}")
    if not isinstance(step, int) or step < 1:
        raise PredictorError(f"latency table: the width step must be a positive integer, got {step!r}")
    builder = PasWorkloads(config=config, fmt=fmt)
    points: dict[str, tuple[dict[str, int], int, int]] = {}
    for shape, grid in zip(config.layer_shapes(), LayerLatencyTable.layer_keys(config, step), strict=True):
        for _, ci, co in grid:
            points.setdefault(layer_key(shape["h_in"], ci, shape["h_out"], co, 3, shape["stride"]), (shape, ci, co))
    calib_widths = _calibration_widths(config, step, calibration_nets, seed)
    if on_progress is not None:
        on_progress(0, len(points) + 1 + len(calib_widths), "exporting workloads")
    layers = [builder.layer(*p) for p in points.values()]
    networks = [
        WholeNetwork(
            workload=builder.network(w, id=f"calibration:{i}"), keys=tuple(network_keys(config, w)),
            info={"widths": list(w)},
        )
        for i, w in enumerate(calib_widths)
    ]
    reference = WholeNetwork(
        workload=None, keys=tuple(network_keys(config, config.widths)),
        info={"name": "unpruned plain (reparameterised) network", "widths": config.widths},
    )
    lut = measure_entry_table(
        device, entries=layers, overhead=builder.overhead(), reference=reference,
        reference_workload=builder.reference(), networks=networks, out=out, space=lut_space(config),
        runtime=runtime, threads=threads, plan=plan, exporter=builder.exporter, dtype=builder.dtype,
        metadata={"pas": {"base": config.as_dict(), "width_step": step}}, on_progress=on_progress,
    )
    return LayerLatencyTable.from_lut(lut, config)


def measure_networks(
    device: Any,
    models: dict[str, Path],
    *,
    reference: Workload,
    runtime: str | None = None,
    threads: int | None = None,
    plan: MeasurePlan = COMPARE_PLAN,
    repeats: int = 5,
) -> dict[str, Any]:
    """Measure whole model files on ``device`` ``repeats`` times, all of them in one batch with the reference
    workload each time (interleaved rounds, :func:`hwnas.profiler.measure.measure_batches`).

    Returns ``{"ms": {name: [value per repeat]}, "reference_ms": [value per repeat], "statistic": STAT}``
    (``STAT`` the runtime's statistic, :func:`hwnas.profiler.measure.sampling_statistic`); ratios of two models are taken within a repeat, so machine load moves both alike."""
    runtime, threads, _ = _device_settings(device, runtime, threads)
    stat = sampling_statistic(plan, runtime)
    work = [Workload(id=name, path=Path(p), kind="subnet") for name, p in models.items()]
    per: dict[str, list[float]] = {name: [] for name in models}
    refs: list[float] = []
    for _ in range(max(1, repeats)):
        got: dict[str, float] = {}

        def on_result(w: Workload, res: dict[str, Any], ref_ms: float, got: dict[str, float] = got) -> None:
            got[w.id] = float(res[stat])

        refs += measure_batches(
            device, work, reference=reference, plan=dataclasses.replace(plan, batch_size=len(work)),
            runtime=runtime, threads=threads, on_result=on_result,
        )
        for name in models:
            per[name].append(got[name])
    return {"ms": per, "reference_ms": refs, "statistic": stat}


def ratio_summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of ``values`` and the max-min spread in percent of the median."""
    v = sorted(float(x) for x in values)
    med = statistics.median(v)
    return {"median": med, "min": v[0], "max": v[-1], "spread_pct": (v[-1] - v[0]) / med * 100 if med else math.nan}
