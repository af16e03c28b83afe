"""Pruning-as-Search (Li et al., IJCAI 2022): learn every layer's width under a cost target, then deploy plain.

One run: pre-train the unpruned multi-branch :class:`~hwnas.supernet.pas_net.PasNet` (its top-1 is the
baseline), search (weights and DBC gates trained jointly on ``task loss + lam * ((cost(gates) - target) /
base_cost)**2``), snap the gates to the target if the last step left the cost outside the tolerance band,
fine-tune the weights with the gates frozen, and reparameterise into a plain network.

The cost is pluggable: MACs or latency from a per-layer table (:mod:`.pas_cost`); the table and whole networks
are measured on a device by :mod:`.pas_table` (through the profiler's table API, any runtime); the network
pieces (gates, blocks, the plain network, layer keys, width grids) live in :mod:`hwnas.supernet.pas_net`; one
run as ``hwnas pas`` makes it is :func:`hwnas.search.pas_run.run_pas`. Their public names are importable
from here too. This module holds the data, the target and the search (:class:`PruningAsSearch`: one training
loop for pre-training, search and fine-tuning; snapping; export).
Everything :attr:`PruningAsSearch.record_` holds is plain data (names and numbers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..supernet.errors import DatasetError
from ..supernet.export import check_onnx, export_onnx
from ..supernet.files import atomic_write
from ..supernet.pas_net import (
    DEFAULT_WIDTH_STEP,
    PasNet,
    PasNetConfig,
    base_config,
    count_macs,
    init_gates_by_importance,
    layer_key,
    plain_network,
    reparameterize,
    width_grid,
)
from .base import Interval, check_params
from .errors import BudgetError
from .pas_cost import Cost, LatencyCost, LayerLatencyTable, MacsCost, lut_space
from .pas_table import (
    COMPARE_PLAN,
    PAS_WORKLOAD_VERSION,
    PasWorkloads,
    _device_settings,
    measure_layer_table,
    measure_networks,
    ratio_summary,
)

# The costs (pas_cost), the measuring (pas_table) and the network pieces (supernet.pas_net) stay importable
# from here, where the search that uses them lives.
__all__ = [
    "COMPARE_PLAN",
    "DATASETS",
    "DEFAULT_WIDTH_STEP",
    "PAS_WORKLOAD_VERSION",
    "Cost",
    "LatencyCost",
    "LayerLatencyTable",
    "MacsCost",
    "PasWorkloads",
    "PruningAsSearch",
    "export_deploy_onnx",
    "layer_key",
    "load_data",
    "lut_space",
    "measure_layer_table",
    "measure_networks",
    "parse_data_spec",
    "parse_target",
    "plain_network",
    "plot_widths",
    "ratio_summary",
    "resolve_target",
    "width_grid",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

#: dataset name -> the base network it trains by default
DATASETS: dict[str, str] = {"digits": "digits", "cifar10": "cifar", "imagefolder": "cifar"}


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


# ----------------------------------------------------------------------------------------------- target


def parse_target(target: float | str, *, what: str = "--target-macs", unit: str = "MACs") -> tuple[float, bool]:
    """``(value, is_percentage)`` of a target: a positive number, or ``"PCT%"`` with PCT in (0, 100]."""
    text = str(target).strip()
    try:
        value = float(text[:-1]) if text.endswith("%") else float(text)
    except ValueError:
        raise BudgetError(
            f"{what} '{target}': expected a number of {unit} or a percentage like 40%"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(
            f"{what} '{target}': must be a positive number of {unit} or a percentage in (0, 100]%"
        )
    if text.endswith("%") and value > 100 * (1 + 1e-12):
        raise BudgetError(f"{what} '{target}': {value:g}% is larger than the unpruned network (100%)")
    return value, text.endswith("%")


def resolve_target(
    target: float | str, base: float, minimum: float = 0.0, *, what: str = "--target-macs", unit: str = "MACs"
) -> float:
    """An absolute target from ``target`` (a number, or ``"PCT%"`` of ``base``).

    Raises :class:`BudgetError` for a target that is not a positive number, is larger than the unpruned
    network (``base``) or smaller than the narrowest network (``minimum``, one channel per layer).
    """
    value, pct = parse_target(target, what=what, unit=unit)
    if pct:
        value = value / 100.0 * base
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

    _parameters: ClassVar[dict[str, Interval]] = {
        **dict.fromkeys(("pretrain_epochs", "search_epochs", "finetune_epochs"), Interval(int, 0, None)),
        **dict.fromkeys(("batch_size", "width_multiple"), Interval(int, 1, None)),
        **dict.fromkeys(("lam", "lr", "gate_lr", "tolerance"), Interval(float, 0, None, closed_low=False)),
    }

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
        width_multiple: int = 1,
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
        self.width_multiple = width_multiple
        self.seed = seed

    def _validate(self) -> None:
        check_params(self, self._parameters, error=BudgetError)

    def _batches(self, n: int, gen: torch.Generator) -> list[torch.Tensor]:
        perm = torch.randperm(n, generator=gen)
        return [perm[i : i + self.batch_size] for i in range(0, n, self.batch_size)]

    def _train_epoch(
        self,
        net: PasNet,
        x: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator,
        optimisers: Sequence[torch.optim.Optimizer],
        *,
        penalty: Callable[[], torch.Tensor] | None = None,
        after_step: Callable[[], Any] | None = None,
    ) -> float:
        """One epoch over ``(x, y)`` in shuffled batches, the one training loop of every phase: the task loss
        (cross-entropy) plus ``penalty()`` if given, one step of every optimiser, then ``after_step()``.
        Returns the epoch's mean task loss."""
        net.train()
        loss_sum = 0.0
        for idx in self._batches(len(x), gen):
            task = F.cross_entropy(net(x[idx]), y[idx])
            loss = task if penalty is None else task + penalty()
            for opt in optimisers:
                opt.zero_grad()
            loss.backward()
            for opt in optimisers:
                opt.step()
            if after_step is not None:
                after_step()
            loss_sum += task.item() * len(idx)
        return loss_sum / len(x)

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
        target = resolve_target(
            self.target, base_cost, cost.minimum(config, self.width_multiple), what="target", unit=cost.unit
        )
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

        def train(phase: str, epochs: int, optimisers: list[torch.optim.Optimizer], **options: Any) -> None:
            for epoch in range(epochs):
                loss = self._train_epoch(net, x_train, y_train, gen, optimisers, **options)
                extra = {"cost": cost.of_config(config, net.widths()), "widths": net.widths()} if phase == "search" else {}
                tick(phase, epoch + 1, epochs, loss=loss, **extra)

        # 1. pre-train the unpruned network (gates all open and frozen)
        net.set_gates_trainable(False)
        train("pretrain", self.pretrain_epochs, [torch.optim.Adam(net.weight_parameters(), lr=self.lr)])
        base_top1 = _evaluate(net, x_test, y_test)

        # 2. search: weights and gates jointly, task loss + lam * normalised squared cost gap
        if self.importance_init:
            init_gates_by_importance(net)
        net.set_gates_trainable(True)

        def penalty() -> torch.Tensor:
            gap = (cost(net) - target) / base_cost
            return self.lam * gap * gap

        optimisers = [
            torch.optim.Adam(net.weight_parameters(), lr=self.lr),
            torch.optim.SGD(net.gate_parameters(), lr=self.gate_lr, momentum=self.gate_momentum),
        ]
        train("search", self.search_epochs, optimisers, penalty=penalty, after_step=net.clamp_gates)
        snapped = self._snap(net, cost, config, target)

        # 3. fine-tune with the gates frozen (cosine-decayed learning rate)
        net.set_gates_trainable(False)
        opt = torch.optim.Adam(net.weight_parameters(), lr=self.lr)
        steps = max(1, self.finetune_epochs * math.ceil(len(x_train) / self.batch_size))
        train("finetune", self.finetune_epochs, [opt], after_step=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps).step)
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
                    "width_multiple",
                    "seed",
                )
            },
            "history": history,
            "seconds": time.perf_counter() - t_start,
        }
        self.x_example_ = x_test[:64].clone()
        return self

    def _snap(self, net: PasNet, cost: Cost, config: PasNetConfig, target: float) -> int:
        """Bring every width to a multiple of ``width_multiple`` (keeping each layer's strongest gates), then
        close (open) gates, ``width_multiple`` at a time, until the cost lies within ``tolerance`` of the
        target: a step that lands in the band first, else the layer whose gates at stake have the lowest
        (highest) weights; returns the number of gates changed. Should the band be too narrow
        for the steps, the widths closest to the target are kept."""
        step = self.width_multiple
        hi, lo = target * (1 + self.tolerance), target * (1 - self.tolerance)
        gates = net.gates()
        before = [g.keep().clone() for g in gates]
        with torch.no_grad():
            if step > 1:
                for gate in gates:
                    n = int(gate.keep().sum())
                    _set_width(gate, min(gate.channels, max(step, step * round(n / step))))
            best: tuple[float, list[torch.Tensor]] | None = None
            seen: set[tuple[int, ...]] = set()
            for _ in range(sum(config.widths)):
                widths = tuple(net.widths())
                now = cost.of_config(config, widths)
                if best is None or abs(now - target) < best[0]:
                    best = (abs(now - target), [g.weight.clone() for g in gates])
                if lo <= now <= hi or widths in seen:
                    break
                seen.add(widths)
                # candidates: per layer, its weakest open (strongest closed) `step` gates; a step that lands
                # in the band wins, else the lowest (highest) gate weights go first
                choice: tuple[bool, float, Any, int] | None = None
                for i, gate in enumerate(gates):
                    n = widths[i]
                    if now > hi and n > min(step, gate.channels):
                        new = max(1, step * ((n - 1) // step) if step > 1 else n - 1)
                        score = float(gate.weight.sort(descending=True).values[new:n].mean())
                    elif now < lo and n < gate.channels:
                        new = min(gate.channels, step * (n // step + 1))
                        score = -float(gate.weight.sort(descending=True).values[n:new].mean())
                    else:
                        continue
                    after = cost.of_config(config, [*widths[:i], new, *widths[i + 1 :]])
                    key = (not lo <= after <= hi, score)
                    if choice is None or key < choice[:2]:
                        choice = (key[0], score, gate, new)
                if choice is None:
                    break
                _set_width(choice[2], choice[3])
            if best is not None and not lo <= cost.of_config(config, net.widths()) <= hi:
                for gate, weight in zip(gates, best[1], strict=True):
                    gate.weight.copy_(weight)
        changes = sum(int((g.keep() != b).sum()) for g, b in zip(gates, before, strict=True))
        if changes:
            log.info(
                "snapped %d gates (widths in multiples of %d) to bring the cost within %.0f%% of the target",
                changes,
                step,
                self.tolerance * 100,
            )
        return changes

    def export(
        self,
        out_dir: Path,
        *,
        device: Any = None,
        runtime: str | None = None,
        threads: int | None = None,
        table: LayerLatencyTable | None = None,
        repeats: int = 5,
        tflite: bool = False,
    ) -> dict[str, Any]:
        """Write ``pas.onnx`` (plain), ``multibranch.onnx``, ``widths.png`` and ``pas.json`` into ``out_dir`` and
        check ONNX Runtime against torch.

        With ``device`` (an open :class:`hwnas.agents.device.Device`, lock held by the caller), measure the
        multi-branch and the reparameterised network there (:func:`measure_networks`, in the device runtime's
        format: ``.tflite`` files for ``litert``) and record the speed-up (median ratio over ``repeats``
        interleaved measurements, with its spread). With ``table`` too, the reparameterised latency is also
        reported at the table's machine speed (``measured_ms``, scaled by the reference workload) beside the
        table's prediction (``predicted_ms``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        config = self.net_.config
        shape = (config.in_channels, config.resolution, config.resolution)
        plain_path, multi_path = out / "pas.onnx", out / "multibranch.onnx"
        onnx_diff = export_deploy_onnx(self.plain_, plain_path, shape, self.x_example_)
        export_deploy_onnx(self.net_, multi_path, shape, self.x_example_)
        extra: dict[str, Any] = {
            "file": str(plain_path),
            "multibranch_file": str(multi_path),
            "onnx_max_abs_diff": onnx_diff,
        }
        fmt = None
        if device is not None:
            runtime, threads, fmt = _device_settings(device, runtime, threads)
        if tflite or fmt == "tflite":
            from ..profiler import tflite_export

            example = self.x_example_[:1]
            tfl = tflite_export.export_tflite(self.plain_, example, out / "pas.tflite")
            extra["tflite_file"] = str(tfl)
            extra["tflite_max_abs_diff"] = tflite_export.check_tflite(tfl, self.plain_, example)
            if fmt == "tflite":
                extra["multibranch_tflite_file"] = str(
                    tflite_export.export_tflite(self.net_, example, out / "multibranch.tflite")
                )
        if device is not None:
            files = {
                "multibranch": Path(extra["multibranch_tflite_file"] if fmt == "tflite" else multi_path),
                "reparameterised": Path(extra["tflite_file"] if fmt == "tflite" else plain_path),
            }
            reference = PasWorkloads(config=config, fmt=str(fmt)).reference()
            m = measure_networks(
                device, files, reference=reference, runtime=runtime, threads=threads, repeats=repeats
            )
            multi, plain, refs = m["ms"]["multibranch"], m["ms"]["reparameterised"], m["reference_ms"]
            ratios = [a / b for a, b in zip(multi, plain, strict=True)]
            extra.update(
                device=device.profile.name,
                runtime=runtime,
                threads=threads,
                latency_statistic=m["statistic"],
                latency_ms={
                    "multibranch": statistics.median(multi),
                    "reparameterised": statistics.median(plain),
                    "reference": statistics.median(refs),
                },
                latency_samples_ms={"multibranch": multi, "reparameterised": plain, "reference": refs},
                speedup=statistics.median(ratios),
                speedup_summary=ratio_summary(ratios),
                measured_ms=statistics.median(plain),
                measured_raw_ms=statistics.median(plain),
            )
            if table is not None:
                extra["predicted_ms"] = float(table(self.record_["widths"]))
                lut_ref = table.reference_ms
                if lut_ref:
                    extra["measured_ms"] = statistics.median(
                        [p * lut_ref / r for p, r in zip(plain, refs, strict=True)]
                    )
                    extra["drift"] = statistics.median(refs) / lut_ref
        extra["plot"] = str(plot_widths(self.record_, out / "widths.png"))
        self.record_.update(extra)
        atomic_write(out / "pas.json", json.dumps(self.record_, indent=1) + "\n")
        return extra


@torch.no_grad()
def _set_width(gate: Any, width: int) -> None:
    """Open exactly the ``width`` channels of ``gate`` with the highest weights. Weights that must cross the
    threshold are moved just across it, monotonically, so that the order of the weights (which the next snapping
    step reads) is kept."""
    order = torch.argsort(gate.weight, descending=True)
    keep = torch.zeros(gate.channels, dtype=torch.bool)
    keep[order[:width]] = True
    w, thr = gate.weight, gate.threshold
    is_open = w > thr
    moved = thr + 1e-4 * (w - thr)
    w.copy_(torch.where(keep & ~is_open, moved + 1e-3, torch.where(~keep & is_open, moved - 1e-3, w)))


# ----------------------------------------------------------------------------------------------- export, plot


def export_deploy_onnx(model: nn.Module, path: Path, input_shape: Sequence[int], example: torch.Tensor) -> float:
    """Export ``model`` (eval mode, dynamic batch) as the deployable ONNX file with the one exporter (input
    ``input``, output ``output``) and return max |onnxruntime - torch| on ``example`` (a correctness check,
    not a measurement)."""
    export_onnx(model, torch.zeros(1, *input_shape), path, dynamic_batch=True)
    return check_onnx(Path(path), model, [example])[0]


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
