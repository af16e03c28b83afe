"""Pruning-as-Search costs: a cost of per-layer widths (:class:`Cost`), MACs (:class:`MacsCost`) or latency
(:class:`LatencyCost`) from a per-layer latency table (:class:`LayerLatencyTable`, an hwnas LUT file read back
and interpolated, with a smooth monotone surrogate for the search's gradient)."""

from __future__ import annotations

import bisect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..profiler.lut import LUT, OVERHEAD_KEY
from ..supernet.pas_net import (
    DEFAULT_WIDTH_STEP,
    PasNet,
    PasNetConfig,
    layer_key,
    width_grid,
)
from .errors import PredictorError

log = logging.getLogger(__name__)


class Cost(ABC):
    """A cost of per-layer widths; works on ints (gives a number) and scalar tensors (gives a tensor)."""

    unit: str = ""

    @abstractmethod
    def of_widths(self, widths: Sequence[Any]) -> Any:
        """The cost of a network whose 3x3 layers have these widths."""

    def __call__(self, net: PasNet) -> torch.Tensor:
        """The cost at the net's current gates, differentiable w.r.t. the gate weights (through the STE)."""
        return self.of_widths(net.active_widths())

    def of_config(self, config: PasNetConfig, widths: Sequence[int] | None = None) -> float:
        return float(self.of_widths(config.widths if widths is None else list(widths)))

    def minimum(self, config: PasNetConfig, multiple: int = 1) -> float:
        """The cost of the narrowest network: ``multiple`` channels per layer (one by default)."""
        return self.of_config(config, [min(multiple, w) for w in config.widths])


class MacsCost(Cost):
    """MACs of the reparameterised network (:meth:`PasNetConfig.macs`)."""

    unit = "macs"

    def __init__(self, *, config: PasNetConfig) -> None:
        self.config = config

    def of_widths(self, widths: Sequence[Any]) -> Any:
        return self.config.macs(widths)


class LatencyCost(Cost):
    """Latency in ms from ``table``, a callable mapping per-layer widths to ms (differentiable on tensors)."""

    unit = "ms"

    def __init__(self, *, table: Callable[[Sequence[Any]], Any]) -> None:
        self.table = table

    def of_widths(self, widths: Sequence[Any]) -> Any:
        return self.table(widths)


def lut_space(config: PasNetConfig) -> str:
    """The ``space`` a PaS latency LUT names in its metadata (``pas-digits``): not a registered search space,
    so ``hwnas lut show`` reads the file while the OFA-space commands (``lut predict``, ``lut validate``)
    refuse it by name."""
    return f"pas-{config.name}"


def _interp_axis(grid: Sequence[int], value: Any) -> tuple[int, int, Any]:
    if len(grid) == 1:
        return 0, 0, value * 0.0
    at = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    j = min(max(bisect.bisect_right(grid, at) - 1, 0), len(grid) - 2)
    return j, j + 1, (value - grid[j]) / (grid[j + 1] - grid[j])


class LayerLatencyTable:
    """Per-layer latency (ms) over a grid of (input width, output width), interpolated bilinearly.

    ``values`` maps :func:`layer_key` s to ms; ``overhead_ms`` is added once per network (the LUT's
    ``Overhead-inference`` row: what an inference costs beyond its layers, pooling and classifier included).
    Calling the table with per-layer widths sums the layers' interpolated latencies and the overhead.

    With scalar tensors (the regulariser of :class:`LatencyCost`) the *value* is the same measured sum, but the
    *gradient* is that of a smooth surrogate: per layer, ``ms = a + b * c_in + c * c_out + d * c_in * c_out``
    fitted to the layer's grid by non-negative least squares (monotone in both widths). Measured latency is a
    step function of width (a runtime pads channels to its vector blocks; timing noise adds jitter), so the
    interpolated table's local slopes are often zero or negative and would stall the search; its values are
    right at the widths the search finally takes (every multiple of ``step`` is measured). Tables are measured on a device by :func:`measure_layer_table` and kept as hwnas LUT files
    (:mod:`hwnas.profiler.lut`); :meth:`load` reads one back.
    """

    def __init__(
        self,
        *,
        config: PasNetConfig,
        values: dict[str, float],
        step: int = DEFAULT_WIDTH_STEP,
        overhead_ms: float = 0.0,
        meta: dict[str, Any] | None = None,
        source: str = "latency table",
    ) -> None:
        self.config = config
        self.step = int(step)
        self.values = dict(values)
        self.overhead_ms = float(overhead_ms)
        self.meta = dict(meta or {})
        self.grids: list[tuple[list[int], list[int], list[list[float]]]] = []
        for i, shape in enumerate(config.layer_shapes()):
            gi = [shape["c_in"]] if i == 0 else width_grid(shape["c_in"], self.step)
            go = width_grid(shape["c_out"], self.step)
            ms = []
            for ci in gi:
                row = []
                for co in go:
                    key = layer_key(shape["h_in"], ci, shape["h_out"], co, shape["kernel"], shape["stride"])
                    if key not in self.values:
                        raise PredictorError(
                            f"{source}: no row for key '{key}' at resolution {config.resolution} "
                            f"(made for another base network or width grid?)"
                        )
                    row.append(self.values[key])
                ms.append(row)
            self.grids.append((gi, go, ms))
        self.smooth = [_monotone_bilinear(gi, go, ms) for gi, go, ms in self.grids]

    @staticmethod
    def layer_keys(config: PasNetConfig, step: int = DEFAULT_WIDTH_STEP) -> list[list[tuple[str, int, int]]]:
        """Per layer, the ``(role, c_in, c_out)`` points of its grid (role ``stem`` for the first layer)."""
        out = []
        for i, shape in enumerate(config.layer_shapes()):
            gi = [shape["c_in"]] if i == 0 else width_grid(shape["c_in"], step)
            role = "stem" if i == 0 else "body"
            out.append([(role, ci, co) for ci in gi for co in width_grid(shape["c_out"], step)])
        return out

    def __call__(self, widths: Sequence[Any]) -> Any:
        widths = list(widths)
        if len(widths) != len(self.grids):
            raise PredictorError(f"latency table: expected {len(self.grids)} widths, got {len(widths)}")
        measured = self.measured(widths)
        if not any(isinstance(w, torch.Tensor) and w.requires_grad for w in widths):
            return measured
        smooth: Any = 0.0
        c_in: Any = self.config.in_channels
        for (a, b, c, d), c_out in zip(self.smooth, widths, strict=True):
            smooth = smooth + a + b * c_in + c * c_out + d * c_in * c_out
            c_in = c_out
        return measured.detach() + (smooth - smooth.detach())

    def measured(self, widths: Sequence[Any]) -> Any:
        """The overhead plus every layer's latency interpolated bilinearly in the measured grid."""
        total: Any = self.overhead_ms
        c_in: Any = self.config.in_channels
        for (gi, go, ms), c_out in zip(self.grids, widths, strict=True):
            i0, i1, ti = _interp_axis(gi, c_in)
            o0, o1, to = _interp_axis(go, c_out)
            total = total + (
                (1 - ti) * (1 - to) * ms[i0][o0]
                + (1 - ti) * to * ms[i0][o1]
                + ti * (1 - to) * ms[i1][o0]
                + ti * to * ms[i1][o1]
            )
            c_in = c_out
        return total

    @property
    def reference_ms(self) -> float | None:
        """The unpruned network's measured latency when the table was made (``metadata.reference.ms``)."""
        ref = self.meta.get("reference")
        return float(ref["ms"]) if isinstance(ref, dict) and ref.get("ms") is not None else None

    @classmethod
    def from_lut(cls, lut: LUT, config: PasNetConfig) -> LayerLatencyTable:
        """The table in a PaS latency LUT (its ``statistic`` column at the config's resolution); PredictorError
        when the LUT was measured for another base network."""
        pas_meta = lut.metadata.get("pas")
        if not isinstance(pas_meta, dict) or not isinstance(pas_meta.get("base"), dict):
            raise PredictorError(
                f"{lut.source}: not a PaS latency table (metadata has no 'pas.base'; space {lut.space!r})"
            )
        made_for = PasNetConfig.from_dict(pas_meta["base"])
        if (made_for.in_channels, made_for.resolution, made_for.layers) != (
            config.in_channels,
            config.resolution,
            config.layers,
        ):
            raise PredictorError(
                f"{lut.source}: measured for base network '{made_for.name}' "
                f"({made_for.resolution}px, widths {made_for.widths}), not '{config.name}' "
                f"({config.resolution}px, widths {config.widths})"
            )
        values: dict[str, float] = {}
        overhead = 0.0
        for (key, res), ms in lut.values().items():
            if res != config.resolution:
                continue
            if key == OVERHEAD_KEY:
                overhead = ms
            else:
                values[key] = ms
        step = int(pas_meta.get("width_step") or DEFAULT_WIDTH_STEP)
        return cls(
            config=config,
            values=values,
            step=step,
            overhead_ms=overhead,
            meta=lut.metadata,
            source=lut.source,
        )

    @classmethod
    def load(cls, path: Path, config: PasNetConfig) -> LayerLatencyTable:
        """Read a PaS latency LUT file (LUTError, exit 2, for a file that is not a LUT)."""
        return cls.from_lut(LUT.load(path), config)


def _monotone_bilinear(gi: Sequence[int], go: Sequence[int], ms: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """``(a, b, c, d)`` >= 0 with ``a + b * c_in + c * c_out + d * c_in * c_out`` closest (least squares) to the
    grid's latencies; columns scaled to [0, 1] for the solver."""
    from scipy.optimize import nnls

    rows = [(1.0, float(ci), float(co), float(ci * co)) for ci in gi for co in go]
    y = np.array([v for row in ms for v in row], dtype=float)
    A = np.array(rows)
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(A / scale, y)
    return tuple(float(x) for x in coef / scale)
