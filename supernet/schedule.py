"""The training schedule of a supernet: progressive shrinking's phases (OFA's epochs and learning rates, or
``compact``'s scaled-down ones), the random-sampling baseline's one phase, and the per-step learning rate
(linear warm-up, then cosine decay). See :mod:`hwnas.supernet.train` for how a run uses them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .elastic import Choices
from .errors import SupernetError
from .spaces import SearchSpace, get_space

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


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """The learning rate of step ``step`` of ``total``: linear warm-up over ``warmup`` steps, then cosine decay."""
    if step < warmup:
        return base * (step + 1) / (warmup + 1)
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * t))
