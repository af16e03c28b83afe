"""Pruning-as-Search (Li et al., IJCAI 2022): learn every layer's width under a cost target, then deploy plain.

One run: pre-train the unpruned multi-branch :class:`~hwnas.supernet.pas_net.PasNet` (its top-1 is the
baseline), search (weights and DBC gates trained jointly on ``task loss + lam * ((cost(gates) - target) /
base_cost)**2``), snap the gates to the target if the last step left the cost outside the tolerance band,
fine-tune the weights with the gates frozen, and reparameterise into a plain network.

The cost is pluggable (:class:`Cost`): :class:`MacsCost` (default) or :class:`LatencyCost`, whose table maps
per-layer widths to milliseconds; :class:`LayerLatencyTable` is such a table, measured per 3x3 layer at a few
widths with ONNX Runtime (:func:`measure_layer_table`) and stored as a LUT text file (``# hwnas-lut 1``).
Everything :attr:`PruningAsSearch.record_` holds is plain data (names and numbers).
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import datetime as _dt
import io
import json
import logging
import math
import platform
import statistics
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..supernet.errors import DatasetError
from ..supernet.pas_net import (
    PasNet,
    PasNetConfig,
    base_config,
    count_macs,
    init_gates_by_importance,
    reparameterize,
)
from .errors import BudgetError, PredictorError

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

#: dataset name -> the base network it trains by default
DATASETS: dict[str, str] = {"digits": "digits", "cifar10": "cifar", "imagefolder": "cifar"}
DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)


# ----------------------------------------------------------------------------------------------- data


def parse_data_spec(spec: str) -> tuple[str, Path | None]:
    """``digits`` | ``cifar10:PATH`` | ``imagefolder:PATH`` -> ``(kind, path)``; anything else: DatasetError."""
    from ..supernet.data import parse_spec

    try:
        return parse_spec(spec)
    except DatasetError as exc:
        raise DatasetError(f"--data: {exc}") from None


def load_data(
    spec: str, config: PasNetConfig
) -> tuple[PasNetConfig, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(config, x_train, y_train, x_val, y_val)`` from :func:`hwnas.supernet.data.load_dataset` at the
    config's resolution (resized, normalised). A one-channel config gets the channel mean (grey datasets such
    as digits: the three channels are equal); the config's classifier is resized to the dataset's classes."""
    from ..supernet.data import load_dataset

    parse_data_spec(spec)
    train = load_dataset(spec, resolution=config.resolution, split="train")
    val = load_dataset(spec, resolution=config.resolution, split="val")
    (x, y), (xv, yv) = train.tensors(), val.tensors()
    if config.in_channels == 1:
        x, xv = x.mean(1, keepdim=True), xv.mean(1, keepdim=True)
    if train.n_classes != config.num_classes:
        config = dataclasses.replace(config, num_classes=train.n_classes)
    return config, x.contiguous(), y, xv.contiguous(), yv


# ----------------------------------------------------------------------------------------------- costs


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

    def minimum(self, config: PasNetConfig) -> float:
        return self.of_config(config, [1] * len(config.layers))


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


def width_grid(channels: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[int]:
    """The widths a latency table measures for a layer of ``channels`` channels (always includes 1)."""
    return sorted({1, channels, *(max(1, round(f * channels)) for f in fractions)})


def layer_key(h_in: int, c_in: int, h_out: int, c_out: int, kernel: int, stride: int) -> str:
    """LUT key of one plain 3x3 conv + ReLU layer (OFA-style key schema)."""
    return (
        f"pas_conv-input:{h_in}x{h_in}x{c_in}-output:{h_out}x{h_out}x{c_out}-kernel:{kernel}-stride:{stride}"
    )


def _interp_axis(grid: Sequence[int], value: Any) -> tuple[int, int, Any]:
    if len(grid) == 1:
        return 0, 0, value * 0.0
    at = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    j = min(max(bisect.bisect_right(grid, at) - 1, 0), len(grid) - 2)
    return j, j + 1, (value - grid[j]) / (grid[j + 1] - grid[j])


class LayerLatencyTable:
    """Per-layer latency (ms) over a grid of (input width, output width), interpolated bilinearly.

    Calling it with per-layer widths sums the layers' interpolated latencies; with scalar tensors the sum is
    differentiable, which is what :class:`LatencyCost` needs in the regulariser. The classifier is not counted.
    """

    def __init__(
        self,
        *,
        config: PasNetConfig,
        values: dict[str, float],
        fractions: Sequence[float],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.fractions = tuple(fractions)
        self.values = dict(values)
        self.meta = dict(meta or {})
        self.grids: list[tuple[list[int], list[int], list[list[float]]]] = []
        for i, shape in enumerate(config.layer_shapes()):
            gi = [shape["c_in"]] if i == 0 else width_grid(shape["c_in"], self.fractions)
            go = width_grid(shape["c_out"], self.fractions)
            ms = []
            for ci in gi:
                row = []
                for co in go:
                    key = layer_key(shape["h_in"], ci, shape["h_out"], co, shape["kernel"], shape["stride"])
                    if key not in self.values:
                        raise PredictorError(
                            f"latency table: no row for key '{key}' at resolution {config.resolution} "
                            f"(made for another base network or width grid?)"
                        )
                    row.append(self.values[key])
                ms.append(row)
            self.grids.append((gi, go, ms))

    @staticmethod
    def layer_keys(config: PasNetConfig, fractions: Sequence[float]) -> list[list[tuple[str, int, int]]]:
        """Per layer, the ``(role, c_in, c_out)`` points of its grid (role ``stem`` for the first layer)."""
        out = []
        for i, shape in enumerate(config.layer_shapes()):
            gi = [shape["c_in"]] if i == 0 else width_grid(shape["c_in"], fractions)
            role = "stem" if i == 0 else "body"
            out.append([(role, ci, co) for ci in gi for co in width_grid(shape["c_out"], fractions)])
        return out

    def __call__(self, widths: Sequence[Any]) -> Any:
        widths = list(widths)
        if len(widths) != len(self.grids):
            raise PredictorError(f"latency table: expected {len(self.grids)} widths, got {len(widths)}")
        total: Any = 0.0
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

    def save(self, path: Path) -> None:
        """Write the table as a LUT text file: ``# hwnas-lut 1``, JSON metadata, then CSV rows."""
        rows = []
        for shape, points in zip(
            self.config.layer_shapes(), self.layer_keys(self.config, self.fractions), strict=True
        ):
            for _, ci, co in points:
                key = layer_key(shape["h_in"], ci, shape["h_out"], co, shape["kernel"], shape["stride"])
                rows.append(
                    {
                        "key": key,
                        "resolution": self.config.resolution,
                        "c_in": ci,
                        "c_out": co,
                        "kernel": shape["kernel"],
                        "stride": shape["stride"],
                        "h_in": shape["h_in"],
                        "h_out": shape["h_out"],
                        "median_ms": f"{self.values[key]:.6f}",
                    }
                )
        seen: set[str] = set()
        buf = io.StringIO()
        buf.write("# hwnas-lut 1\n")
        for line in json.dumps(self.meta, indent=1).splitlines():
            buf.write(f"# {line}\n")
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            if row["key"] not in seen:
                seen.add(row["key"])
                writer.writerow(row)
        Path(path).write_text(buf.getvalue())

    @classmethod
    def load(cls, path: Path, config: PasNetConfig) -> LayerLatencyTable:
        """Read a LUT text file (``# hwnas-lut 1`` + metadata + CSV) holding this base network's layer keys."""
        try:
            text = Path(path).read_text()
        except UnicodeDecodeError as exc:
            raise PredictorError(f"{path}: not a LUT text file ({exc.reason})") from None
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# hwnas-lut"):
            raise PredictorError(f"{path}: not a LUT file (first line must be '# hwnas-lut 1')")
        meta_lines = [ln[2:] if ln.startswith("# ") else ln[1:] for ln in lines[1:] if ln.startswith("#")]
        try:
            meta = json.loads("\n".join(meta_lines)) if meta_lines else {}
        except json.JSONDecodeError:
            import yaml

            meta = yaml.safe_load("\n".join(meta_lines)) or {}
        statistic = str(meta.get("statistic", "median_ms"))
        values: dict[str, float] = {}
        reader = csv.DictReader([ln for ln in lines if ln and not ln.startswith("#")])
        for row in reader:
            if statistic not in row or "key" not in row:
                raise PredictorError(f"{path}: rows need columns 'key' and '{statistic}'")
            if int(float(row.get("resolution") or config.resolution)) != config.resolution:
                continue
            try:
                values[row["key"]] = float(row[statistic])
            except (TypeError, ValueError):
                raise PredictorError(f"{path}: row '{row['key']}': {statistic} is not a number") from None
        fractions = meta.get("pas_fractions", DEFAULT_FRACTIONS)
        return cls(config=config, values=values, fractions=fractions, meta=meta)


def _conv_onnx(c_in: int, c_out: int, h: int, stride: int) -> bytes:
    """A one-layer ONNX model: 3x3 conv (bias) + ReLU on a 1 x c_in x h x h input, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32) * 0.1, "w")
    b = numpy_helper.from_array(np.zeros(c_out, np.float32), "b")
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]
        ),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    h_out = (h - 1) // stride + 1
    graph = helper.make_graph(
        nodes,
        "pas_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, h_out, h_out])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _ort_session(model: bytes | str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _time_ms(
    session: Any, feed: dict[str, np.ndarray], *, warmup: int = 5, runs: int = 30, min_seconds: float = 0.05
) -> list[float]:
    for _ in range(warmup):
        session.run(None, feed)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - t0) * 1e3)
        if len(samples) >= 20 * runs:
            break
    return samples


def compare_latency_ms(
    sessions: dict[str, Any], feed: dict[str, np.ndarray], *, rounds: int = 10, per_round: int = 20
) -> dict[str, float]:
    """Median latency (ms) of each ONNX Runtime session, measured in interleaved rounds so that a change of
    machine load affects all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        _time_ms(session, feed, warmup=20, runs=0, min_seconds=0.0)
    for _ in range(rounds):
        for name, session in sessions.items():
            samples[name] += _time_ms(session, feed, warmup=2, runs=per_round, min_seconds=0.0)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_layer_table(
    config: PasNetConfig,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    threads: int = 1,
    runs: int = 30,
    on_progress: ProgressFn | None = None,
) -> LayerLatencyTable:
    """Measure every 3x3 layer of ``config`` at each (input, output) width of its grid with ONNX Runtime on
    this machine (batch 1, float32, median of ``runs``)."""
    import onnxruntime as ort

    jobs = []
    for shape, points in zip(
        config.layer_shapes(), LayerLatencyTable.layer_keys(config, fractions), strict=True
    ):
        for _, ci, co in points:
            jobs.append(
                (
                    layer_key(shape["h_in"], ci, shape["h_out"], co, shape["kernel"], shape["stride"]),
                    ci,
                    co,
                    shape,
                )
            )
    values: dict[str, float] = {}
    for n, (key, ci, co, shape) in enumerate(jobs):
        if key not in values:
            sess = _ort_session(_conv_onnx(ci, co, shape["h_in"], shape["stride"]), threads)
            x = (
                np.random.default_rng(0)
                .standard_normal((1, ci, shape["h_in"], shape["h_in"]))
                .astype(np.float32)
            )
            values[key] = statistics.median(_time_ms(sess, {"x": x}, runs=runs))
        if on_progress is not None:
            on_progress(n + 1, len(jobs), key)
    meta = {
        "space": f"pas-{config.name}",
        "resolutions": [config.resolution],
        "statistic": "median_ms",
        "runtime": {
            "name": "onnxruntime",
            "version": ort.__version__,
            "execution_provider": "CPUExecutionProvider",
        },
        "exporter": {"name": "onnx.helper", "opset": 17},
        "dtype": "float32",
        "batch": 1,
        "threads": threads,
        "cores": "all",
        "device": {"model": platform.node(), "machine": platform.machine()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pas_base": config.as_dict(),
        "pas_fractions": list(fractions),
    }
    return LayerLatencyTable(config=config, values=values, fractions=fractions, meta=meta)


# ----------------------------------------------------------------------------------------------- target


def resolve_target(
    target: float | str, base: float, minimum: float = 0.0, *, what: str = "--target-macs", unit: str = "MACs"
) -> float:
    """An absolute target from ``target`` (a number, or ``"PCT%"`` of ``base``).

    Raises :class:`BudgetError` for a target that is not a positive number, is larger than the unpruned
    network (``base``) or smaller than the narrowest network (``minimum``, one channel per layer).
    """
    text = str(target).strip()
    try:
        value = float(text[:-1]) / 100.0 * base if text.endswith("%") else float(text)
    except ValueError:
        raise BudgetError(
            f"{what} '{target}': expected a number of {unit} or a percentage like 40%"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(
            f"{what} '{target}': must be a positive number of {unit} or a percentage in (0, 100]%"
        )
    if value > base * (1 + 1e-9):
        raise BudgetError(
            f"{what} '{target}': {value:.6g} {unit} is larger than the unpruned network ({base:.6g})"
        )
    if value < minimum:
        raise BudgetError(
            f"{what} '{target}': {value:.6g} {unit} is below the narrowest network "
            f"(one channel per layer: {minimum:.6g})"
        )
    return value


# ----------------------------------------------------------------------------------------------- search


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    model.train(was)
    return correct / max(1, len(x))


def _max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    a.eval()
    b.eval()
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


class PruningAsSearch:
    """The PaS search: pre-train, search widths under a cost target, fine-tune, reparameterise.

    ``target`` is in the cost's unit or ``"PCT%"`` of the unpruned network's cost; ``lam`` weighs the
    regulariser ``((cost - target) / base_cost) ** 2`` (normalised so that ``lam`` has no unit); after the
    search, gates are snapped (lowest gate weights closed first, highest reopened first) until the cost lies
    within ``tolerance`` of the target. Learned: ``net_`` (gated multi-branch), ``plain_`` (reparameterised),
    ``record_`` (plain data), ``history_``.
    """

    def __init__(
        self,
        *,
        base: str | PasNetConfig = "digits",
        target: float | str = "40%",
        cost: Cost | None = None,
        lam: float = 20.0,
        pretrain_epochs: int = 4,
        search_epochs: int = 4,
        finetune_epochs: int = 4,
        batch_size: int = 64,
        lr: float = 2e-3,
        gate_lr: float = 0.1,
        gate_momentum: float = 0.0,
        gate_init: float = 0.6,
        importance_init: bool = True,
        tolerance: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.base = base
        self.target = target
        self.cost = cost
        self.lam = lam
        self.pretrain_epochs = pretrain_epochs
        self.search_epochs = search_epochs
        self.finetune_epochs = finetune_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.gate_lr = gate_lr
        self.gate_momentum = gate_momentum
        self.gate_init = gate_init
        self.importance_init = importance_init
        self.tolerance = tolerance
        self.seed = seed

    def _validate(self) -> None:
        for name in ("pretrain_epochs", "search_epochs", "finetune_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise BudgetError(
                    f"The '{name}' parameter of PruningAsSearch must be an int in [0, inf). Got {v!r} instead."
                )
        for name in ("batch_size",):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise BudgetError(
                    f"The '{name}' parameter of PruningAsSearch must be an int in [1, inf). Got {v!r} instead."
                )
        for name in ("lam", "lr", "gate_lr", "tolerance"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise BudgetError(
                    f"The '{name}' parameter of PruningAsSearch must be a float in (0, inf). Got {v!r} instead."
                )

    def _batches(self, n: int, gen: torch.Generator) -> list[torch.Tensor]:
        perm = torch.randperm(n, generator=gen)
        return [perm[i : i + self.batch_size] for i in range(0, n, self.batch_size)]

    def search(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        *,
        on_progress: ProgressFn | None = None,
    ) -> PruningAsSearch:
        """Run the whole search on tensors; raises BudgetError for a bad target or parameter."""
        self._validate()
        t_start = time.perf_counter()
        config = base_config(self.base) if isinstance(self.base, str) else self.base
        cost = self.cost if self.cost is not None else MacsCost(config=config)
        base_cost = cost.of_config(config)
        target = resolve_target(self.target, base_cost, cost.minimum(config), what="target", unit=cost.unit)
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        net = PasNet(config=config, gate_init=self.gate_init)
        history: list[dict[str, Any]] = []
        total = self.pretrain_epochs + self.search_epochs + self.finetune_epochs
        done = 0

        def tick(phase: str, epoch: int, n: int, **values: Any) -> None:
            nonlocal done
            done += 1
            history.append({"phase": phase, "epoch": epoch, **values})
            if on_progress is not None:
                on_progress(done, total, f"{phase} {epoch}/{n}")

        # 1. pre-train the unpruned network (gates all open and frozen)
        net.set_gates_trainable(False)
        net.train()
        opt = torch.optim.Adam(net.weight_parameters(), lr=self.lr)
        for epoch in range(self.pretrain_epochs):
            loss_sum = 0.0
            for idx in self._batches(len(x_train), gen):
                loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(idx)
            tick("pretrain", epoch + 1, self.pretrain_epochs, loss=loss_sum / len(x_train))
        base_top1 = _evaluate(net, x_test, y_test)

        # 2. search: weights and gates jointly, task loss + lam * normalised squared cost gap
        if self.importance_init:
            init_gates_by_importance(net)
        net.set_gates_trainable(True)
        opt = torch.optim.Adam(net.weight_parameters(), lr=self.lr)
        gate_opt = torch.optim.SGD(net.gate_parameters(), lr=self.gate_lr, momentum=self.gate_momentum)
        for epoch in range(self.search_epochs):
            loss_sum = 0.0
            for idx in self._batches(len(x_train), gen):
                task = F.cross_entropy(net(x_train[idx]), y_train[idx])
                gap = (cost(net) - target) / base_cost
                loss = task + self.lam * gap * gap
                opt.zero_grad()
                gate_opt.zero_grad()
                loss.backward()
                opt.step()
                gate_opt.step()
                for gate in net.gates():
                    gate.clamp_()
                loss_sum += task.item() * len(idx)
            tick(
                "search",
                epoch + 1,
                self.search_epochs,
                loss=loss_sum / len(x_train),
                cost=cost.of_config(config, net.widths()),
                widths=net.widths(),
            )
        snapped = self._snap(net, cost, config, target)

        # 3. fine-tune with the gates frozen (cosine-decayed learning rate)
        net.set_gates_trainable(False)
        opt = torch.optim.Adam(net.weight_parameters(), lr=self.lr)
        steps = max(1, self.finetune_epochs * math.ceil(len(x_train) / self.batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        net.train()
        for epoch in range(self.finetune_epochs):
            loss_sum = 0.0
            for idx in self._batches(len(x_train), gen):
                loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item() * len(idx)
            tick("finetune", epoch + 1, self.finetune_epochs, loss=loss_sum / len(x_train))
        net.eval()

        # 4. reparameterise and check
        plain = reparameterize(net)
        widths = net.widths()
        macs_cost = MacsCost(config=config)
        self.net_, self.plain_, self.history_ = net, plain, history
        self.record_ = {
            "base": config.as_dict(),
            "cost": cost.unit,
            "target": float(target),
            "base_cost": float(base_cost),
            "final_cost": cost.of_config(config, widths),
            "target_macs": float(target) if cost.unit == "macs" else None,
            "base_macs": int(config.macs()),
            "macs": int(macs_cost.of_config(config, widths)),
            "macs_ratio": float(config.macs(widths) / config.macs()),
            "plain_macs_counted": count_macs(
                plain, (config.in_channels, config.resolution, config.resolution)
            ),
            "base_widths": config.widths,
            "widths": widths,
            "base_top1": base_top1,
            "top1": _evaluate(plain, x_test, y_test),
            "gated_top1": _evaluate(net, x_test, y_test),
            "reparam_max_abs_diff": _max_abs_diff(net, plain, x_test),
            "snapped": snapped,
            "params": {
                k: getattr(self, k)
                for k in (
                    "lam",
                    "pretrain_epochs",
                    "search_epochs",
                    "finetune_epochs",
                    "batch_size",
                    "lr",
                    "gate_lr",
                    "gate_momentum",
                    "gate_init",
                    "importance_init",
                    "tolerance",
                    "seed",
                )
            },
            "history": history,
            "seconds": time.perf_counter() - t_start,
        }
        self.x_example_ = x_test[:64].clone()
        return self

    def _snap(self, net: PasNet, cost: Cost, config: PasNetConfig, target: float) -> int:
        """Close (open) gates one by one, lowest (highest) weight first, until the cost is within tolerance."""
        changes = 0
        hi, lo = target * (1 + self.tolerance), target * (1 - self.tolerance)
        with torch.no_grad():
            for _ in range(sum(config.widths)):
                now = cost.of_config(config, net.widths())
                if lo <= now <= hi:
                    break
                best: tuple[float, Any, int] | None = None
                for gate in net.gates():
                    keep = gate.keep()
                    if now > hi and int(keep.sum()) > 1:
                        w = gate.weight.masked_fill(~keep, math.inf)
                        j = int(torch.argmin(w))
                        if best is None or float(w[j]) < best[0]:
                            best = (float(w[j]), gate, j)
                    elif now < lo and int((~keep).sum()) > 0:
                        w = gate.weight.masked_fill(keep, -math.inf)
                        j = int(torch.argmax(w))
                        if best is None or -float(w[j]) < best[0]:
                            best = (-float(w[j]), gate, j)
                if best is None:
                    break
                _, gate, j = best
                gate.weight[j] = gate.threshold + (-1e-3 if now > hi else 1e-3)
                changes += 1
        if changes:
            log.info(
                "snapped %d gates to bring the cost within %.0f%% of the target",
                changes,
                self.tolerance * 100,
            )
        return changes

    def export(
        self, out_dir: Path, *, measure: bool = True, threads: int = 1, tflite: bool = False
    ) -> dict[str, Any]:
        """Write ``pas.onnx`` (plain), ``multibranch.onnx``, ``widths.png`` and ``pas.json`` into ``out_dir``;
        check ONNX Runtime against torch and, with ``measure``, time both ONNX models (batch 1, ``threads``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        config = self.net_.config
        shape = (config.in_channels, config.resolution, config.resolution)
        plain_path, multi_path = out / "pas.onnx", out / "multibranch.onnx"
        onnx_diff = export_onnx(self.plain_, plain_path, shape, self.x_example_)
        export_onnx(self.net_, multi_path, shape, self.x_example_)
        extra: dict[str, Any] = {
            "file": str(plain_path),
            "multibranch_file": str(multi_path),
            "onnx_max_abs_diff": onnx_diff,
        }
        if measure:
            sessions = {
                "multibranch": _ort_session(str(multi_path), threads),
                "reparameterised": _ort_session(str(plain_path), threads),
            }
            ms = compare_latency_ms(sessions, {"x": self.x_example_[:1].numpy()})
            extra["latency_ms"] = ms
            extra["speedup"] = ms["multibranch"] / ms["reparameterised"]
        if tflite:
            exported = export_tflite(self.plain_, out / "pas.tflite", self.x_example_[:1])
            extra["tflite_file"], extra["tflite_max_abs_diff"] = exported if exported else (None, None)
        extra["plot"] = str(plot_widths(self.record_, out / "widths.png"))
        self.record_.update(extra)
        (out / "pas.json").write_text(json.dumps(self.record_, indent=1) + "\n")
        return extra


# ----------------------------------------------------------------------------------------------- export, plot


def export_onnx(model: nn.Module, path: Path, input_shape: Sequence[int], example: torch.Tensor) -> float:
    """Export ``model`` (eval mode, dynamic batch) to ONNX and return max |onnxruntime - torch| on ``example``."""
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, *input_shape),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
        expected = model(example).numpy()
    got = _ort_session(str(path), 1).run(None, {"x": example.numpy()})[0]
    return float(np.abs(got - expected).max())


def export_tflite(model: nn.Module, path: Path, example: torch.Tensor) -> tuple[str, float | None] | None:
    """TFLite through litert-torch when it is installed (else ``None``): ``(file, max |litert - torch|)``, the
    difference ``None`` when ai-edge-litert is missing. The converter's chatter goes to the log, not stdout."""
    try:
        import litert_torch
    except ImportError:
        log.warning("litert-torch is not installed: no TFLite export")
        return None
    model.eval()
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        litert_torch.convert(model, (example,)).export(str(path))
    log.debug("litert-torch: %s", chatter.getvalue())
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return str(path), None
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], example.numpy())
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    with torch.no_grad():
        return str(path), float(np.abs(got - model(example).numpy()).max())


def plot_widths(record: dict[str, Any], path: Path) -> Path:
    """Bar plot of the unpruned and the PaS per-layer widths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = PasNetConfig.from_dict(record["base"])
    shapes = cfg.layer_shapes()
    xs = np.arange(len(shapes))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(xs, record["base_widths"], color="#cfd8e3", label="unpruned")
    ax.bar(xs, record["widths"], width=0.5, color="#2b6cb0", label="PaS")
    for x, w, b in zip(xs, record["widths"], record["base_widths"], strict=True):
        ax.text(x, w, f"{w / b:.0%}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [f"L{i + 1}\n{s['h_out']}x{s['h_out']}" for i, s in enumerate(shapes)])
    ax.set_ylabel("channels")
    ax.set_title(
        f"PaS widths on {cfg.name}: MACs {record['macs_ratio']:.0%} of unpruned, top-1 {record['top1']:.3f} "
        f"(unpruned {record['base_top1']:.3f})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
