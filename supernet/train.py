"""Progressive shrinking (OFA) and the naive random-sampling baseline, resumable and data-parallel.

Progressive shrinking trains the largest network first, then adds smaller subnets to the sampling space
in phases, each phase fine-tuning the supernet with the subnets of a growing space, distilled from the
largest network (soft targets of a frozen copy, ``kd_ratio``):

=========  =============================  ============  ===========================================
phase      samples                        subnets/step  OFA (ImageNet): epochs, lr (per 64 images)
=========  =============================  ============  ===========================================
largest    the largest subnet             1             the teacher, trained beforehand
kernel     ks from all, e and d max       1             120, 3e-2 (5 warm-up)
depth-1    + d from the 2 largest         2             25, 2.5e-3
depth-2    + every d                      2             120, 7.5e-3 (5 warm-up)
expand-1   + e from the 2 largest         4             25, 2.5e-3 (channel sorting first)
expand-2   + every e                      4             120, 7.5e-3 (5 warm-up, channel sorting)
=========  =============================  ============  ===========================================

``ofa-mbv3-*`` spaces use OFA's epochs (and 180 for the largest network); ``compact`` a schedule scaled to
sklearn's digits on a 2-core CPU (:data:`COMPACT_EPOCHS`), multiplied by ``epochs_scale``. Every phase:
SGD with Nesterov momentum 0.9, weight decay 3e-5 (none on BN and biases), label smoothing 0.1, linear
warm-up then cosine decay per step, each batch at a resolution drawn from the space's (elastic resolution).
``sampling="random"`` is the naive baseline: one random subnet of the whole space per step for as many
steps as progressive shrinking takes in all, without a teacher.

A checkpoint is written after every phase; rerunning with the same ``out`` skips the phases it holds.

This module holds the training run (settings, the loop, evaluation); the schedule lives in
:mod:`.schedule`, checkpoints in :mod:`.checkpoint`, the data-parallel plumbing in :mod:`._distributed`
(their public names are importable from here too).

Data parallelism: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank takes its share of each global batch,
samples the same subnets (the sampling RNG is seeded by step), normalises with batch statistics
all-reduced across ranks (:meth:`OFASupernet.set_sync_bn`) and all-reduces the summed gradients of the
step's subnets before the optimizer step -- what Horovod's ``DistributedOptimizer`` does in OFA. (The
gradients are reduced explicitly rather than by ``DistributedDataParallel``, whose reducer expects one
backward pass per step over a fixed set of parameters; elastic subnets use a different set each time.)
Only rank 0 evaluates, writes checkpoints and reports progress.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import bn as bn_mod
from ._distributed import Dist, allreduce_grads, allreduce_sum, barrier, init_distributed
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Checkpoint, load_checkpoint, save_checkpoint
from .data import ImageDataset, load_dataset
from .elastic import OFASupernet
from .errors import CheckpointError
from .schedule import COMPACT_EPOCHS, OFA_EPOCHS, SAMPLINGS, Phase, TrainConfigError, default_phases, lr_at
from .spaces import SearchSpace, get_space

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "COMPACT_EPOCHS",
    "OFA_EPOCHS",
    "Checkpoint",
    "Phase",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "default_phases",
    "load_checkpoint",
    "save_checkpoint",
    "train_supernet",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (stored in the checkpoint; those in :data:`RESUME_KEYS` must match when a
    run resumes)."""

    space: str
    data: str = "digits"
    sampling: str = "progressive"
    epochs_scale: float = 1.0
    seed: int = 0
    batch_size: int = 64
    kd_ratio: float = 1.0
    label_smoothing: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 3e-5
    dropout_rate: float = 0.1
    bn_images: int = bn_mod.DEFAULT_BN_IMAGES
    #: the largest and smallest subnets' top-1 after each phase (a progress figure in the checkpoint): BN
    #: recalibrated on this many images and judged on the first ``phase_eval_images`` of the validation split;
    #: the final figures use ``bn_images`` and the whole split. Per-phase evaluation on the whole split took
    #: 40 of the 52 s of a demo-sized run (``epochs_scale`` 0.03) and about a fifth of the full schedule.
    phase_eval_bn_images: int = 250
    phase_eval_images: int = 250
    eval_images: int | None = None
    augment: bool = True
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise TrainConfigError(f"sampling {self.sampling!r} is not one of {list(SAMPLINGS)}")
        checks = [
            ("epochs_scale", self.epochs_scale > 0),
            ("batch_size", self.batch_size >= 1),
            ("kd_ratio", self.kd_ratio >= 0),
            ("label_smoothing", 0 <= self.label_smoothing < 1),
            ("momentum", 0 <= self.momentum < 1),
            ("weight_decay", self.weight_decay >= 0),
            ("dropout_rate", 0 <= self.dropout_rate < 1),
            ("bn_images", self.bn_images >= 1),
            ("phase_eval_bn_images", self.phase_eval_bn_images >= 1),
            ("phase_eval_images", self.phase_eval_images >= 1),
            ("eval_images", self.eval_images is None or self.eval_images >= 1),
            ("lr_scale", self.lr_scale > 0),
        ]
        for name, ok in checks:
            if not ok:
                raise TrainConfigError(f"the {name!r} setting of TrainConfig is out of range: {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Settings that must agree between a checkpoint and the run that resumes it.
RESUME_KEYS = ("space", "data", "sampling", "epochs_scale", "seed", "batch_size", "kd_ratio", "label_smoothing",
               "momentum", "weight_decay", "dropout_rate", "augment", "lr_scale")


# --------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainResult:
    """What :func:`train_supernet` did: ``phases`` (one record per phase: name, steps, seconds, skipped,
    val_top1_max, val_top1_min), ``final`` (top-1 of the largest and smallest subnets after BN
    recalibration), ``seconds`` (training and evaluation work of this run)."""

    checkpoint: Path | None
    phases: list[dict[str, Any]]
    history: list[dict[str, Any]]
    final: dict[str, Any]
    seconds: float
    rank: int = 0


def _param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        # OFA's no_decay_keys "bn#bias": BN weights and biases, and every bias
        (no_decay if (".bn." in name or name.endswith("bias")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _soft_ce(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.sum(-soft * F.log_softmax(logits, dim=1), dim=1))


def evaluate_arch(
    net: OFASupernet,
    arch: Any,
    *,
    train: ImageDataset,
    val: ImageDataset,
    bn_images: int,
    seed: int = 0,
) -> float:
    """Top-1 on ``val`` of ``arch``'s subnet extracted from ``net`` after BN recalibration on ``train``."""
    a = net.space.parse(arch)
    sub = net.get_active_subnet(a)
    bn_mod.recalibrate_bn(sub, train, n_images=bn_images, resolution=a.r, seed=seed)
    return bn_mod.evaluate(sub, val, resolution=a.r)


def train_supernet(
    config: TrainConfig,
    *,
    out: str | Path | None,
    phases: Sequence[Phase] | None = None,
    device: str | torch.device | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    on_phase: Callable[[str, int, int, str], None] | None = None,
) -> TrainResult:
    """Train a supernet for ``config`` and write its checkpoint to ``out`` after every phase.

    ``phases``: the schedule (default :func:`default_phases`). If ``out`` holds a checkpoint of this run
    (same space and :data:`RESUME_KEYS` settings), its finished phases are skipped. ``on_progress(done,
    total, phase_name)`` is called after each step of a phase and ``on_phase(name, index, n_phases, event)``
    with event ``start``, ``skip`` or ``done`` (rank 0 only). Raises CheckpointError for an unreadable
    ``out`` or one written by another run, DatasetError for bad data."""
    dist_info = init_distributed()
    sp = get_space(config.space)
    config = replace(config, space=sp.name)
    schedule = list(phases) if phases is not None else default_phases(
        sp, sampling=config.sampling, epochs_scale=config.epochs_scale
    )
    dev = torch.device(device) if device is not None else torch.device(
        f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    )
    config_dict = config.to_dict()
    config_dict["schedule"] = [p.to_dict() for p in schedule]
    config_dict["resolutions"] = list(sp.resolutions)

    # resume
    ckpt: Checkpoint | None = None
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.exists():
        ckpt = load_checkpoint(out_path, space=sp)
        _check_resumable(ckpt, config_dict, out_path)

    r_max = sp.resolutions[-1]
    train_set = load_dataset(config.data, resolution=r_max, split="train", seed=0)
    val_set = load_dataset(config.data, resolution=r_max, split="val", seed=0)
    if config.eval_images is not None and config.eval_images < len(val_set):
        val_set = val_set.subset(np.arange(config.eval_images))
    phase_val = val_set.subset(np.arange(config.phase_eval_images)) if config.phase_eval_images < len(val_set) else val_set
    config_dict["n_classes"] = train_set.n_classes
    if ckpt is not None and ckpt.n_classes != train_set.n_classes:
        raise CheckpointError(f"{out_path}: trained for {ckpt.n_classes} classes, {config.data} has {train_set.n_classes}")

    started = time.perf_counter()  # the work itself, after loading data and checkpoint
    torch.manual_seed(config.seed)
    net = OFASupernet(sp, n_classes=train_set.n_classes, dropout_rate=config.dropout_rate)
    teacher: OFASupernet | None = None
    history: list[dict[str, Any]] = []
    done_phases: list[dict[str, Any]] = []
    if ckpt is not None:
        net.load_state_dict(ckpt.state_dict, strict=True)
        history = list(ckpt.history)
        done_phases = list(ckpt.phases)
        if ckpt.teacher_state_dict is not None:
            teacher = net.copy_frozen()
            teacher.load_state_dict(ckpt.teacher_state_dict, strict=True)
    net.to(dev)
    if teacher is not None:
        teacher.to(dev)
    if dist_info.active:
        import torch.distributed as dist

        for t in net.state_dict().values():  # every rank starts from rank 0's weights (as DDP does)
            dist.broadcast(t, src=0)
        net.set_sync_bn(dist.group.WORLD)
        torch.manual_seed(config.seed + 1000 * dist_info.rank)  # own dropout masks per rank
        if teacher is not None:
            teacher.set_sync_bn(dist.group.WORLD)

    finished = {p["name"] for p in done_phases}
    records: list[dict[str, Any]] = []
    for index, phase in enumerate(schedule):
        if phase.name in finished:
            rec = dict(next(p for p in done_phases if p["name"] == phase.name))
            rec["skipped"] = True
            records.append(rec)
            if on_phase is not None and dist_info.main:
                on_phase(phase.name, index, len(schedule), "skip")
            continue
        if on_phase is not None and dist_info.main:
            on_phase(phase.name, index, len(schedule), "start")
        if phase.kd and config.kd_ratio > 0 and teacher is None:
            teacher = _make_teacher(net, dist_info)
        rec, phase_history = _run_phase(
            net, teacher if (phase.kd and config.kd_ratio > 0) else None, phase, index, config, train_set, dist_info,
            dev, on_progress if dist_info.main else None,
        )
        if phase.largest_only and config.kd_ratio > 0:
            teacher = _make_teacher(net, dist_info)
        if dist_info.main:
            rec["val_top1_max"] = evaluate_arch(
                net, sp.max_arch(), train=train_set, val=phase_val, bn_images=min(config.phase_eval_bn_images, config.bn_images),
            )
            rec["val_top1_min"] = evaluate_arch(
                net, _phase_min_arch(sp, phase), train=train_set, val=phase_val,
                bn_images=min(config.phase_eval_bn_images, config.bn_images),
            )
            net.train()
        history.extend(phase_history)
        done_phases.append(rec)
        records.append(dict(rec, skipped=False))
        if dist_info.main and out_path is not None:
            save_checkpoint(out_path, Checkpoint(
                space=sp.name, state_dict=net.state_dict(), n_classes=train_set.n_classes, config=config_dict,
                phases=done_phases, history=history,
                teacher_state_dict=None if teacher is None else teacher.state_dict(), final=None,
            ))
        barrier(dist_info)
        if on_phase is not None and dist_info.main:
            on_phase(phase.name, index, len(schedule), "done")

    final: dict[str, Any] = {}
    if dist_info.main:
        if ckpt is not None and ckpt.final is not None and all(r.get("skipped") for r in records):
            final = dict(ckpt.final)
        else:
            net.eval()
            final = {
                "top1_max": evaluate_arch(net, sp.max_arch(), train=train_set, val=val_set, bn_images=config.bn_images),
                "top1_min": evaluate_arch(net, sp.min_arch(), train=train_set, val=val_set, bn_images=config.bn_images),
                "arch_max": sp.max_arch().to_dict(),
                "arch_min": sp.min_arch().to_dict(),
            }
            if out_path is not None:
                save_checkpoint(out_path, Checkpoint(
                    space=sp.name, state_dict=net.state_dict(), n_classes=train_set.n_classes, config=config_dict,
                    phases=done_phases, history=history,
                    teacher_state_dict=None if teacher is None else teacher.state_dict(), final=final,
                ))
    barrier(dist_info)
    return TrainResult(
        checkpoint=out_path, phases=records, history=history, final=final,
        seconds=time.perf_counter() - started, rank=dist_info.rank,
    )


def _phase_min_arch(sp: SearchSpace, phase: Phase) -> Any:
    """The smallest subnet of the phase's sampling space at the smallest resolution."""
    ch = phase.choices
    return sp.parse({"ks": [min(ch.ks)] * sp.n_blocks, "e": [min(ch.e)] * sp.n_blocks,
                     "d": [min(ch.d)] * sp.n_stages, "r": sp.resolutions[0]})


def _make_teacher(net: OFASupernet, dist_info: Dist) -> OFASupernet:
    """A frozen copy of the supernet's largest network (the KD teacher)."""
    net.set_sync_bn(None)
    teacher = net.copy_frozen()
    teacher.set_max()
    if dist_info.active:
        import torch.distributed as dist

        net.set_sync_bn(dist.group.WORLD)
        teacher.set_sync_bn(dist.group.WORLD)
    return teacher


def _check_resumable(ckpt: Checkpoint, config: dict[str, Any], path: Path) -> None:
    for key in RESUME_KEYS:
        if ckpt.config.get(key) != config.get(key):
            raise CheckpointError(
                f"{path}: written by a run with {key}={ckpt.config.get(key)!r}, this run has {key}={config.get(key)!r}; "
                "remove the file or choose another --out"
            )
    names_old = [p["name"] for p in ckpt.config.get("schedule", [])]
    names_new = [p["name"] for p in config["schedule"]]
    if names_old and names_old != names_new:
        raise CheckpointError(f"{path}: written with the phases {names_old}, this run has {names_new}")


def _run_phase(
    net: OFASupernet,
    teacher: OFASupernet | None,
    phase: Phase,
    index: int,
    config: TrainConfig,
    train_set: ImageDataset,
    dist_info: Dist,
    device: torch.device,
    on_progress: Callable[[int, int, str], None] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sp = net.space
    t0 = time.perf_counter()
    if phase.expand_stage is not None:
        net.re_organize_middle_weights(expand_ratio_stage=phase.expand_stage)
    loader = train_set.loader(
        batch_size=config.batch_size, resolutions=sp.resolutions, shuffle=True, drop_last=len(train_set) >= config.batch_size,
        augment=config.augment, seed=config.seed * 1000 + index, rank=dist_info.rank, world_size=dist_info.world_size,
    )
    steps_per_epoch = max(1, len(loader))
    total = max(1, int(round(phase.epochs * steps_per_epoch)))
    warmup = int(round(phase.warmup_epochs * steps_per_epoch))
    base_lr = phase.lr * config.lr_scale * config.batch_size / 64.0
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        _param_groups(net, config.weight_decay), lr=base_lr, momentum=config.momentum,
        nesterov=config.momentum > 0,
    )
    net.train()
    history: list[dict[str, Any]] = []
    step = 0
    epoch = 0
    while step < total:
        loader.set_epoch(epoch)
        loss_sum = correct = seen = 0.0
        e_start = time.perf_counter()
        e_steps = 0
        for x, y in loader:
            if step >= total:
                break
            lr = lr_at(step, total, warmup, base_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            soft = None
            if teacher is not None:
                with torch.no_grad():
                    teacher.train()
                    soft = F.softmax(teacher(x), dim=1)
            opt.zero_grad(set_to_none=True)
            for k in range(phase.n_subnets):
                if phase.largest_only:
                    net.set_max()
                else:
                    net.sample_active(np.random.default_rng([config.seed, index, step, k]), phase.choices)
                out = net(x)
                loss = F.cross_entropy(out, y, label_smoothing=config.label_smoothing)
                if soft is not None:
                    loss = loss + config.kd_ratio * _soft_ce(out, soft)
                loss.backward()
                loss_sum += float(loss.detach()) * len(y)
                correct += float((out.detach().argmax(1) == y).sum())
                seen += len(y)
            if dist_info.active:
                allreduce_grads(params, dist_info.world_size)
            opt.step()
            step += 1
            e_steps += 1
            if on_progress is not None:
                on_progress(step, total, phase.name)
        loss_sum, correct, seen = allreduce_sum([loss_sum, correct, seen], dist_info)
        history.append({
            "phase": phase.name,
            "epoch": epoch + 1,
            "steps": e_steps,
            "loss": loss_sum / max(seen, 1.0),
            "train_top1": correct / max(seen, 1.0),
            "lr": lr,
            "seconds": time.perf_counter() - e_start,
        })
        epoch += 1
    net.set_max()
    rec = {
        "name": phase.name,
        "steps": total,
        "epochs": phase.epochs,
        "n_subnets": phase.n_subnets,
        "seconds": time.perf_counter() - t0,
    }
    return rec, history
