"""Data-parallel plumbing of :func:`hwnas.supernet.train.train_supernet` under ``torchrun``: which rank this
process is, and the all-reduces of gradients and sums (gloo on CPU, NCCL with CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): gloo on CPU, NCCL with CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size())


def allreduce_grads(params: list[nn.Parameter], world_size: int) -> None:
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


def allreduce_sum(values: list[float], dist_info: Dist) -> list[float]:
    if not dist_info.active:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier(dist_info: Dist) -> None:
    if dist_info.active:
        import torch.distributed as dist

        dist.barrier()
