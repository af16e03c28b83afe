"""Supernet checkpoints: what a training run keeps after every phase (weights, schedule done, history,
settings), written atomically and read back with ``weights_only`` unpickling."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .elastic import OFASupernet
from .errors import CheckpointError, SupernetError
from .files import atomic_write
from .spaces import SearchSpace, get_space

CHECKPOINT_FORMAT = "hwnas-supernet"
CHECKPOINT_VERSION = 1


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
