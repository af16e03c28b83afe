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
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import bn as bn_mod
from .data import ImageDataset, load_dataset
from .elastic import Choices, OFASupernet
from .errors import CheckpointError, SupernetError
from .files import atomic_write
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

CHECKPOINT_FORMAT = "hwnas-supernet"
CHECKPOINT_VERSION = 1
SAMPLINGS = ("progressive", "random")
PHASE_NAMES = ("largest", "kernel", "depth-1", "depth-2", "expand-1", "expand-2")

#: OFA's schedule (epochs, lr per 64 images, warm-up epochs); the largest network: a MobileNetV3 run.
OFA_EPOCHS: dict[str, tuple[float, float, float]] = {
    "largest": (180, 0.026, 5),
    "kernel": (120, 3e-2, 5),
    "depth-1": (25, 2.5e-3, 0),
    "depth-2": (120, 7.5e-3, 5),
    "expand-1": (25, 2.5e-3, 0),
    "expand-2": (120, 7.5e-3, 5),
}
#: ``compact`` on digits (1438 training images, batch 64, 22 steps an epoch): OFA's phases scaled down --
#: 660 optimizer steps, 593 s wall with ``--threads 1`` on a shared 2-core machine (extrapolated: ~6 minutes
#: on 2 free cores); largest subnet 99.2% top-1, smallest 93.3%. The short phases want larger learning
#: rates than OFA's (halving the later phases' rates cost the smallest subnet 4 points); the fine-tuning
#: phases keep a fraction of the kernel phase's rate as in OFA.
COMPACT_EPOCHS: dict[str, tuple[float, float, float]] = {
    "largest": (10, 0.1, 1),
    "kernel": (5, 0.06, 0.5),
    "depth-1": (1, 0.01, 0),
    "depth-2": (4, 0.03, 0.25),
    "expand-1": (1, 0.01, 0),
    "expand-2": (4, 0.03, 0.25),
}
SUBNETS_PER_STEP = {"largest": 1, "kernel": 1, "depth-1": 2, "depth-2": 2, "expand-1": 4, "expand-2": 4}


class TrainConfigError(SupernetError, ValueError):
    """An invalid training setting (exit code 2)."""


@dataclass(frozen=True)
class Phase:
    """One phase of the schedule: ``choices`` is its sampling space, ``n_subnets`` the subnets trained per
    step (gradients summed), ``kd`` whether the largest network's soft targets are added, ``expand_stage``
    the channel-sorting stage applied before the phase (None: none)."""

    name: str
    epochs: float
    lr: float
    warmup_epochs: float
    choices: Choices
    n_subnets: int = 1
    kd: bool = True
    expand_stage: int | None = None
    largest_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = self.choices.to_dict()
        return d


def _top(values: Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(sorted(values)[-n:])


def default_phases(
    space: str | SearchSpace, *, sampling: str = "progressive", epochs_scale: float = 1.0
) -> list[Phase]:
    """The schedule for ``space``: progressive shrinking's phases, or the one phase of the random baseline
    (as many steps as progressive shrinking's phases together; the largest phase's learning rate).
    Phases whose sampling space equals the previous one's are left out (e.g. depth-1 with two depths).
    ``epochs_scale`` multiplies every phase's epochs and warm-up."""
    sp = get_space(space)
    if sampling not in SAMPLINGS:
        raise TrainConfigError(f"sampling {sampling!r} is not one of {list(SAMPLINGS)}")
    if not (epochs_scale > 0 and math.isfinite(epochs_scale)):
        raise TrainConfigError(f"epochs_scale must be a positive number, got {epochs_scale}")
    table = COMPACT_EPOCHS if sp.name == "compact" else OFA_EPOCHS
    ks_all, e_all, d_all = sp.ks_choices, sp.e_choices, sp.d_choices
    ks_max, e_max, d_max = ks_all[-1:], e_all[-1:], d_all[-1:]
    spaces = {
        "largest": Choices(ks=ks_max, e=e_max, d=d_max),
        "kernel": Choices(ks=ks_all, e=e_max, d=d_max),
        "depth-1": Choices(ks=ks_all, e=e_max, d=_top(d_all, 2)),
        "depth-2": Choices(ks=ks_all, e=e_max, d=d_all),
        "expand-1": Choices(ks=ks_all, e=_top(e_all, 2), d=d_all),
        "expand-2": Choices(ks=ks_all, e=e_all, d=d_all),
    }
    phases: list[Phase] = []
    previous: Choices | None = None
    expand_stage = 0
    for name in PHASE_NAMES:
        ch = spaces[name]
        if ch == previous:
            continue
        epochs, lr, warmup = table[name]
        stage = None
        if name.startswith("expand"):
            stage = expand_stage
            expand_stage += 1
        phases.append(
            Phase(
                name=name,
                epochs=epochs * epochs_scale,
                lr=lr,
                warmup_epochs=warmup * epochs_scale,
                choices=ch,
                n_subnets=SUBNETS_PER_STEP[name],
                kd=name != "largest",
                expand_stage=stage,
                largest_only=name == "largest",
            )
        )
        previous = ch
    if sampling == "random":
        total = sum(p.epochs for p in phases)
        first = phases[0]
        return [
            Phase(
                name="random",
                epochs=total,
                lr=first.lr,
                warmup_epochs=first.warmup_epochs,
                choices=Choices.of_space(sp),
                n_subnets=1,
                kd=False,
            )
        ]
    return phases


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
    phase_eval_bn_images: int = 500
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
# Checkpoints


@dataclass
class Checkpoint:
    """A supernet checkpoint's content (see :func:`save_checkpoint`)."""

    space: str
    state_dict: dict[str, torch.Tensor]
    n_classes: int
    config: dict[str, Any]
    phases: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    teacher_state_dict: dict[str, torch.Tensor] | None = None
    final: dict[str, Any] | None = None
    path: Path | None = None

    @property
    def finished(self) -> list[str]:
        """Names of the finished phases."""
        return [p["name"] for p in self.phases]

    def supernet(self) -> OFASupernet:
        """The supernet with the checkpoint's weights, in eval mode."""
        net = OFASupernet(self.space, n_classes=self.n_classes, dropout_rate=float(self.config.get("dropout_rate", 0.1)))
        try:
            net.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            where = self.path or "checkpoint"
            first = str(exc).strip().splitlines()
            raise CheckpointError(f"{where}: weights do not fit the {self.space} supernet ({first[-1].strip() if first else exc})") from None
        return net.eval()


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` with ``torch.save`` (atomically: a temporary file renamed over ``path``) as the plain
    dict ``{"format": "hwnas-supernet", "version": 1, "space", "state_dict", "phases", "history",
    "config", "n_classes", "teacher_state_dict", "final"}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "space": ckpt.space,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "phases": ckpt.phases,
        "history": ckpt.history,
        "config": ckpt.config,
        "n_classes": ckpt.n_classes,
        "teacher_state_dict": (
            None if ckpt.teacher_state_dict is None else {k: v.detach().cpu() for k, v in ckpt.teacher_state_dict.items()}
        ),
        "final": ckpt.final,
    }
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | Path, *, space: str | SearchSpace | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` unpickling: tensors and plain
    data only). ``space``: the space it must belong to.

    Raises CheckpointError for a missing or unreadable file, another format or version, or another space."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/pickle raise many kinds of errors for a foreign or truncated file
        text = str(exc).strip()
        reason = type(exc).__name__ if not text or "Weights only load failed" in text else text.splitlines()[0][:120]
        raise CheckpointError(f"{path}: not a readable hwnas supernet checkpoint ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an hwnas supernet checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {data.get('version')!r} is not supported (expected {CHECKPOINT_VERSION})"
        )
    missing = [k for k in ("space", "state_dict", "config") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {', '.join(missing)}")
    name = str(data["space"])
    if space is not None:
        want = get_space(space).name
        if name != want:
            raise CheckpointError(f"{path}: checkpoint of space {name}, not of {want}")
    try:
        sp = get_space(name)
    except SupernetError:
        raise CheckpointError(f"{path}: checkpoint of unknown space {name!r}") from None
    if not isinstance(data["state_dict"], dict):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict of tensors")
    return Checkpoint(
        space=sp.name,
        state_dict=data["state_dict"],
        n_classes=int(data.get("n_classes") or sp.n_classes),
        config=dict(data["config"]),
        phases=list(data.get("phases") or []),
        history=list(data.get("history") or []),
        teacher_state_dict=data.get("teacher_state_dict"),
        final=data.get("final"),
        path=path,
    )


# --------------------------------------------------------------------------------------------------------
# Distributed helpers


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): gloo on CPU, NCCL with CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return _Dist(rank=dist.get_rank(), world_size=dist.get_world_size())


def _allreduce_grads(params: list[nn.Parameter], world_size: int) -> None:
    """Average the gradients over the ranks in one all-reduce. Flattened by logical element order
    (``reshape``): channels-last gradients must not be flattened by their memory layout."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view(g.shape))
        offset += n


def _allreduce_sum(values: list[float], dist_info: _Dist) -> list[float]:
    if not dist_info.active:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _barrier(dist_info: _Dist) -> None:
    if dist_info.active:
        import torch.distributed as dist

        dist.barrier()


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


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / (warmup + 1)
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * t))


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
    dist_info = _init_distributed()
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
                net, sp.max_arch(), train=train_set, val=val_set, bn_images=min(config.phase_eval_bn_images, config.bn_images),
            )
            rec["val_top1_min"] = evaluate_arch(
                net, _phase_min_arch(sp, phase), train=train_set, val=val_set,
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
        _barrier(dist_info)
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
    _barrier(dist_info)
    return TrainResult(
        checkpoint=out_path, phases=records, history=history, final=final,
        seconds=time.perf_counter() - started, rank=dist_info.rank,
    )


def _phase_min_arch(sp: SearchSpace, phase: Phase) -> Any:
    """The smallest subnet of the phase's sampling space at the smallest resolution."""
    ch = phase.choices
    return sp.parse({"ks": [min(ch.ks)] * sp.n_blocks, "e": [min(ch.e)] * sp.n_blocks,
                     "d": [min(ch.d)] * sp.n_stages, "r": sp.resolutions[0]})


def _make_teacher(net: OFASupernet, dist_info: _Dist) -> OFASupernet:
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
    dist_info: _Dist,
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
            lr = _lr_at(step, total, warmup, base_lr)
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
                _allreduce_grads(params, dist_info.world_size)
            opt.step()
            step += 1
            e_steps += 1
            if on_progress is not None:
                on_progress(step, total, phase.name)
        loss_sum, correct, seen = _allreduce_sum([loss_sum, correct, seen], dist_info)
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
