"""Batch-norm recalibration and evaluation of a subnet.

A subnet taken out of a supernet carries running BN statistics that were accumulated over many different
subnets; OFA re-estimates them for the subnet alone before it is evaluated or exported
(``set_running_statistics``). :func:`recalibrate_bn` does that: it resets every BatchNorm's running mean
and variance and forwards training images through the subnet with the cumulative average (``momentum =
None``), in nearly equal batches, so every image weighs about the same.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .data import ImageDataset

__all__ = ["DEFAULT_BN_IMAGES", "evaluate", "recalibrate_bn"]

#: Training images forwarded by :func:`recalibrate_bn` by default (OFA uses 2000 ImageNet images).
DEFAULT_BN_IMAGES = 2000


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    n_images: int = DEFAULT_BN_IMAGES,
    resolution: int | None = None,
    batch_size: int = 200,
    seed: int = 0,
) -> nn.Module:
    """Re-estimate the running statistics of every BatchNorm of ``model`` on ``n_images`` images of
    ``dataset`` (all of them when it holds fewer; a fixed random choice by ``seed``) at ``resolution``
    (default: the dataset's). Returns ``model``, in eval mode; its weights are unchanged."""
    bns = _batch_norms(model)
    if not bns:
        return model.eval()
    n = min(int(n_images), len(dataset))
    if n < 1:
        raise ValueError("BN recalibration needs at least one image")
    order = np.random.default_rng(seed).permutation(len(dataset))[:n]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    device = next(model.parameters()).device
    model.train()
    try:
        for chunk in np.array_split(order, max(1, int(np.ceil(n / batch_size)))):
            if len(chunk) == 0:
                continue
            x, _ = dataset.batch(torch.as_tensor(np.sort(chunk)), resolution)
            model(x.to(device).contiguous(memory_format=torch.channels_last))
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        model.eval()
    return model


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    resolution: int | None = None,
    batch_size: int = 500,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of ``model`` in eval mode on ``dataset`` at ``resolution``
    (default: the dataset's)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    n = len(dataset)
    try:
        for start in range(0, n, batch_size):
            x, y = dataset.batch(slice(start, min(n, start + batch_size)), resolution)
            pred = model(x.to(device).contiguous(memory_format=torch.channels_last)).argmax(dim=1).cpu()
            correct += int((pred == y).sum())
            if on_progress is not None:
                on_progress(min(n, start + batch_size), n, "evaluate")
    finally:
        model.train(was_training)
    return correct / n if n else 0.0
