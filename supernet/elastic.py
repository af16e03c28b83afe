"""Elastic operators and the once-for-all supernet (Cai et al., ICLR 2020).

One network holds every subnet of a search space:

- **elastic kernel** (:class:`DynamicSeparableConv2d`): one ``max(ks)`` x ``max(ks)`` depthwise kernel; a
  smaller kernel is the centre of the next larger one passed through a per-layer kernel transformation
  matrix shared across channels (``7to5_matrix`` 25x25, ``5to3_matrix`` 9x9, initialised to identity);
- **elastic width** (:class:`DynamicMBConvLayer`): expand ratio ``e`` keeps the first
  ``make_divisible(round(in * e), 8)`` middle channels; :meth:`OFASupernet.re_organize_middle_weights`
  sorts them by importance (L1 norm of the projection weights), reordering the block's weights accordingly;
- **elastic depth** (:meth:`OFASupernet.forward`): stage ``s`` runs its first ``d[s]`` blocks;
- **elastic resolution**: the network is fully convolutional up to the global pool, any input size runs;
  the training loader (``data.py``) draws one resolution per batch;
- **dynamic batch norm** (:class:`DynamicBatchNorm2d`): the first ``C`` channels of one BatchNorm2d; in
  training under ``torch.distributed`` with :meth:`OFASupernet.set_sync_bn` the batch statistics are
  all-reduced across ranks (PyTorch's SyncBatchNorm does not run on CPU).

Parameter names and shapes are those of once-for-all's ``OFAMobileNetV3`` (``blocks.N.conv.depth_conv.conv
.conv.weight``, ``...depth_conv.conv.7to5_matrix``, ``...inverted_bottleneck.bn.bn.running_mean``, ...), so
OFA's published supernet state dicts load into the ``ofa-mbv3-*`` supernets (see ``ofa_compat.py``), and
the numerics are OFA's (``F.linear`` with the matrices, same-padding, BN slicing), so a subnet here computes
what it computes in OFA.

:meth:`OFASupernet.get_active_subnet` returns the standalone subnet that ``SearchSpace.build_subnet`` builds
for the arch, loaded with the extracted weights (``strict=True``): the module that is exported and timed.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import blocks
from .spaces import CHANNEL_DIVISIBLE, SE_REDUCTION, Arch, SearchSpace, build_entry, get_space, make_divisible

__all__ = [
    "Choices",
    "DynamicBatchNorm2d",
    "DynamicConv2d",
    "DynamicMBConvLayer",
    "DynamicSE",
    "DynamicSeparableConv2d",
    "ElasticBatchNorm2d",
    "OFASupernet",
    "sub_filter_start_end",
]


def sub_filter_start_end(kernel_size: int, sub_kernel_size: int) -> tuple[int, int]:
    """Start and end (exclusive) of the centred ``sub_kernel_size`` window inside ``kernel_size``."""
    center = kernel_size // 2
    dev = sub_kernel_size // 2
    return center - dev, center + dev + 1


# --------------------------------------------------------------------------------------------------------
# Batch norm


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameter and buffer names) that can normalise the first ``C`` of its
    channels and, in training with a process group set (:attr:`sync_group`), all-reduces the batch mean and
    variance across ranks so that data-parallel training normalises with global-batch statistics."""

    def __init__(self, num_features: int, *, eps: float = blocks.BN_EPS, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.sync_group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm_slice(x, self)


def _exponential_average_factor(bn: nn.BatchNorm2d) -> float:
    if not (bn.training and bn.track_running_stats) or bn.num_batches_tracked is None:
        return 0.0
    bn.num_batches_tracked.add_(1)
    if bn.momentum is None:  # cumulative moving average
        return 1.0 / float(bn.num_batches_tracked)
    return float(bn.momentum)


def batch_norm_slice(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Batch norm of ``x`` (N, C, H, W) with the first C channels of ``bn`` (OFA's ``bn_forward``): running
    statistics of those channels are updated in place in training. With ``bn.sync_group`` set and a
    process group of more than one rank, training uses statistics all-reduced over the ranks."""
    c = x.size(1)
    group = getattr(bn, "sync_group", None)
    if group is not None and bn.training:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            return _sync_batch_norm(x, bn, c, group)
    factor = _exponential_average_factor(bn)
    use_batch_stats = bn.training or not bn.track_running_stats
    running_mean = bn.running_mean[:c] if bn.running_mean is not None else None
    running_var = bn.running_var[:c] if bn.running_var is not None else None
    return F.batch_norm(
        x,
        running_mean,
        running_var,
        bn.weight[:c] if bn.weight is not None else None,
        bn.bias[:c] if bn.bias is not None else None,
        use_batch_stats,
        factor,
        bn.eps,
    )


def _sync_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, c: int, group: Any) -> torch.Tensor:
    """Training-mode batch norm with statistics over the samples of every rank of ``group``: the mean
    from all-reduced per-channel sums, then the variance from all-reduced squared deviations from that
    mean (two passes, as precise as one process's; ``E[x^2] - mean^2`` loses digits where the mean is large).
    Both reductions are ``torch.distributed.nn.functional.all_reduce``, so the backward pass sees the global
    statistics too, as SyncBatchNorm's does."""
    from torch.distributed.nn.functional import all_reduce

    n_local = x.numel() // c
    sums = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), x.new_full((1,), float(n_local))]), group=group)
    n = sums[-1].detach()
    mean = sums[:c] / n
    shape = (1, c, 1, 1)
    centred = x - mean.view(shape)
    var = all_reduce((centred * centred).sum(dim=(0, 2, 3)), group=group) / n
    factor = _exponential_average_factor(bn)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            total = float(n.item())
            unbiased = var.detach() * (total / max(total - 1.0, 1.0))
            bn.running_mean[:c].mul_(1.0 - factor).add_(mean.detach(), alpha=factor)
            bn.running_var[:c].mul_(1.0 - factor).add_(unbiased, alpha=factor)
    y = centred * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.weight is not None:
        y = y * bn.weight[:c].view(shape) + bn.bias[:c].view(shape)
    return y


class DynamicBatchNorm2d(nn.Module):
    """OFA's ``DynamicBatchNorm2d``: a BatchNorm2d over ``max_feature_dim`` channels (``bn``) applied to
    the first ``C`` channels of its input."""

    def __init__(self, max_feature_dim: int) -> None:
        super().__init__()
        self.max_feature_dim = max_feature_dim
        self.bn = ElasticBatchNorm2d(max_feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)

    def active_state(self, c: int) -> dict[str, torch.Tensor]:
        """State of a standalone ``BatchNorm2d(c)``: the first ``c`` channels."""
        return _bn_state(self.bn, c)


def _bn_state(bn: nn.BatchNorm2d, c: int) -> dict[str, torch.Tensor]:
    out = {"weight": bn.weight[:c], "bias": bn.bias[:c], "running_mean": bn.running_mean[:c],
           "running_var": bn.running_var[:c], "num_batches_tracked": bn.num_batches_tracked}
    return {k: v.detach().clone() for k, v in out.items()}


def _adjust_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for name in ("weight", "bias"):
        getattr(bn, name).data = torch.index_select(getattr(bn, name).data, 0, idx)
    bn.running_mean.data = torch.index_select(bn.running_mean.data, 0, idx)
    bn.running_var.data = torch.index_select(bn.running_var.data, 0, idx)


# --------------------------------------------------------------------------------------------------------
# Convolutions


class DynamicSeparableConv2d(nn.Module):
    """Elastic-kernel depthwise conv (OFA's ``DynamicSeparableConv2d`` with kernel transformation).

    ``conv`` holds the ``max(kernel_size_list)`` kernel; for each pair of consecutive kernel sizes
    (``larger``, ``smaller``) a parameter ``{larger}to{smaller}_matrix`` of shape
    (``smaller**2``, ``smaller**2``) maps the centre ``smaller`` x ``smaller`` window of the ``larger`` kernel
    to the ``smaller`` kernel (``F.linear``, i.e. ``window @ M.T``), the same matrix for every channel.
    Going from 7 to 3 applies 7to5 then 5to3, as OFA does.
    """

    def __init__(self, max_in_channels: int, kernel_size_list: Sequence[int], *, stride: int = 1) -> None:
        super().__init__()
        self.max_in_channels = max_in_channels
        self.kernel_size_list = sorted({int(k) for k in kernel_size_list})
        self.stride = stride
        kmax = self.kernel_size_list[-1]
        self.conv = nn.Conv2d(max_in_channels, max_in_channels, kmax, stride, groups=max_in_channels, bias=False)
        for small, large in zip(self.kernel_size_list[:-1], self.kernel_size_list[1:], strict=True):
            self.register_parameter(f"{large}to{small}_matrix", nn.Parameter(torch.eye(small * small)))
        self.active_kernel_size = kmax

    def transform_matrix(self, large: int, small: int) -> torch.Tensor:
        """The ``{large}to{small}_matrix`` parameter."""
        return getattr(self, f"{large}to{small}_matrix")

    def get_active_filter(self, in_channel: int, kernel_size: int) -> torch.Tensor:
        """The (in_channel, 1, k, k) depthwise filter of kernel size ``kernel_size``."""
        ks = self.kernel_size_list
        if kernel_size not in ks:
            raise ValueError(f"kernel size {kernel_size} is not one of {ks}")
        filters = self.conv.weight[:in_channel]
        for i in range(len(ks) - 1, 0, -1):
            src = ks[i]
            if src <= kernel_size:
                break
            dst = ks[i - 1]
            start, end = sub_filter_start_end(src, dst)
            window = filters[:, :, start:end, start:end].contiguous().view(-1, dst * dst)
            window = F.linear(window, self.transform_matrix(src, dst))
            filters = window.view(in_channel, 1, dst, dst)
        return filters

    def forward(self, x: torch.Tensor, kernel_size: int | None = None) -> torch.Tensor:
        k = self.active_kernel_size if kernel_size is None else kernel_size
        c = x.size(1)
        w = self.get_active_filter(c, k).contiguous()
        return F.conv2d(x, w, None, self.stride, k // 2, 1, c)


class DynamicConv2d(nn.Module):
    """Pointwise (or any fixed-kernel) conv whose active input and output channels are the first ones of
    ``conv`` (OFA's ``DynamicConv2d``): input channels from the input, output channels
    :attr:`active_out_channel`."""

    def __init__(self, max_in_channels: int, max_out_channels: int, *, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv2d(max_in_channels, max_out_channels, kernel_size, stride=stride, bias=False)
        self.active_out_channel = max_out_channels

    def get_active_filter(self, out_channel: int, in_channel: int) -> torch.Tensor:
        return self.conv.weight[:out_channel, :in_channel]

    def forward(self, x: torch.Tensor, out_channel: int | None = None) -> torch.Tensor:
        out = self.active_out_channel if out_channel is None else out_channel
        w = self.get_active_filter(out, x.size(1)).contiguous()
        return F.conv2d(x, w, None, self.stride, self.kernel_size // 2, 1, 1)


def se_channels(channels: int) -> int:
    """Channels inside the SE module of a block with ``channels`` middle channels (OFA's rule)."""
    return make_divisible(channels // SE_REDUCTION, CHANNEL_DIVISIBLE)


class DynamicSE(nn.Module):
    """Squeeze-and-excitation over the first C channels (OFA's ``DynamicSE``): ``fc.reduce`` (C -> mid,
    mid = ``make_divisible(C // 4, 8)``), ReLU, ``fc.expand`` (mid -> C), h_sigmoid, scale."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.channel = max_channels
        mid = se_channels(max_channels)
        self.fc = nn.Sequential(
            OrderedDict(
                [
                    ("reduce", nn.Conv2d(max_channels, mid, 1, 1, 0, bias=True)),
                    ("relu", nn.ReLU()),
                    ("expand", nn.Conv2d(mid, max_channels, 1, 1, 0, bias=True)),
                    ("h_sigmoid", nn.Hardsigmoid()),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        mid = se_channels(c)
        y = F.adaptive_avg_pool2d(x, 1)
        y = F.conv2d(y, self.fc.reduce.weight[:mid, :c].contiguous(), self.fc.reduce.bias[:mid])
        y = self.fc.relu(y)
        y = F.conv2d(y, self.fc.expand.weight[:c, :mid].contiguous(), self.fc.expand.bias[:c])
        return x * self.fc.h_sigmoid(y)

    def active_state(self, c: int) -> dict[str, torch.Tensor]:
        mid = se_channels(c)
        out = {
            "fc.reduce.weight": self.fc.reduce.weight[:mid, :c],
            "fc.reduce.bias": self.fc.reduce.bias[:mid],
            "fc.expand.weight": self.fc.expand.weight[:c, :mid],
            "fc.expand.bias": self.fc.expand.bias[:c],
        }
        return {k: v.detach().clone() for k, v in out.items()}


# --------------------------------------------------------------------------------------------------------
# Blocks


class DynamicMBConvLayer(nn.Module):
    """Elastic mobile inverted bottleneck (OFA's ``DynamicMBConvLayer`` with fixed input and output
    widths): 1x1 expansion to ``make_divisible(round(in * e), 8)`` channels for the active expand ratio
    ``e``, elastic-kernel depthwise conv, [SE], 1x1 projection. Set :attr:`active_kernel_size` and
    :attr:`active_expand_ratio` to choose the subnet block."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size_list: Sequence[int],
        expand_ratio_list: Sequence[int],
        stride: int,
        act_func: str,
        use_se: bool,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size_list = sorted({int(k) for k in kernel_size_list})
        self.expand_ratio_list = sorted({int(e) for e in expand_ratio_list})
        self.stride = stride
        self.act_func = act_func
        self.use_se = use_se
        max_mid = self.middle_channels(max(self.expand_ratio_list))
        self.max_middle_channels = max_mid
        if max(self.expand_ratio_list) == 1:
            self.inverted_bottleneck = None
        else:
            self.inverted_bottleneck = nn.Sequential(
                OrderedDict(
                    [
                        ("conv", DynamicConv2d(in_channels, max_mid)),
                        ("bn", DynamicBatchNorm2d(max_mid)),
                        ("act", blocks.build_activation(act_func)),
                    ]
                )
            )
        depth_conv: list[tuple[str, nn.Module]] = [
            ("conv", DynamicSeparableConv2d(max_mid, self.kernel_size_list, stride=stride)),
            ("bn", DynamicBatchNorm2d(max_mid)),
            ("act", blocks.build_activation(act_func)),
        ]
        if use_se:
            depth_conv.append(("se", DynamicSE(max_mid)))
        self.depth_conv = nn.Sequential(OrderedDict(depth_conv))
        self.point_linear = nn.Sequential(
            OrderedDict([("conv", DynamicConv2d(max_mid, out_channels)), ("bn", DynamicBatchNorm2d(out_channels))])
        )
        self.active_kernel_size = max(self.kernel_size_list)
        self.active_expand_ratio = max(self.expand_ratio_list)

    def middle_channels(self, expand_ratio: int) -> int:
        """Middle channels at ``expand_ratio`` (OFA: ``make_divisible(round(in * e), 8)``)."""
        return make_divisible(round(self.in_channels * expand_ratio), CHANNEL_DIVISIBLE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.middle_channels(self.active_expand_ratio)
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck.conv(x, mid)
            x = self.inverted_bottleneck.act(self.inverted_bottleneck.bn(x))
        x = self.depth_conv.conv(x, self.active_kernel_size)
        x = self.depth_conv.act(self.depth_conv.bn(x))
        if self.use_se:
            x = self.depth_conv.se(x)
        x = self.point_linear.conv(x, self.out_channels)
        return self.point_linear.bn(x)

    def active_state(self, kernel_size: int, expand_ratio: int) -> dict[str, torch.Tensor]:
        """State dict of the standalone ``blocks.MBConvLayer`` for (``kernel_size``, ``expand_ratio``)."""
        mid = self.middle_channels(expand_ratio)
        out: dict[str, torch.Tensor] = {}
        if self.inverted_bottleneck is not None:
            ib = self.inverted_bottleneck
            out["inverted_bottleneck.conv.weight"] = ib.conv.get_active_filter(mid, self.in_channels)
            out.update({f"inverted_bottleneck.bn.{k}": v for k, v in ib.bn.active_state(mid).items()})
        dc = self.depth_conv
        out["depth_conv.conv.weight"] = dc.conv.get_active_filter(mid, kernel_size)
        out.update({f"depth_conv.bn.{k}": v for k, v in dc.bn.active_state(mid).items()})
        if self.use_se:
            out.update({f"depth_conv.se.{k}": v for k, v in dc.se.active_state(mid).items()})
        out["point_linear.conv.weight"] = self.point_linear.conv.get_active_filter(self.out_channels, mid)
        out.update({f"point_linear.bn.{k}": v for k, v in self.point_linear.bn.active_state(self.out_channels).items()})
        return {k: v.detach().clone() for k, v in out.items()}

    @torch.no_grad()
    def re_organize_middle_weights(self, expand_ratio_stage: int = 0) -> torch.Tensor:
        """Channel sorting (OFA): order the middle channels by importance, the L1 norm of the projection
        conv's weights of each channel, most important first, and reorder the expansion conv's output
        channels, both middle BNs, the depthwise filters and the SE convs the same way (the SE's own
        middle channels by the L1 norm of ``fc.expand``). With ``expand_ratio_stage = k > 0`` the channels
        already inside the widths of the ``k`` largest smaller expand ratios keep their groups (OFA's
        ``1e5`` offsets), so a later phase does not reshuffle what an earlier one trained. Returns the
        permutation."""
        importance = torch.sum(torch.abs(self.point_linear.conv.conv.weight.data), dim=(0, 2, 3))
        if expand_ratio_stage > 0:
            widths = [self.middle_channels(e) for e in sorted(self.expand_ratio_list, reverse=True)]
            right = len(importance)
            base = -len(widths) * 1e5
            for i in range(expand_ratio_stage + 1):
                left = widths[i]
                importance[left:right] += base
                base += 1e5
                right = left
        _, idx = torch.sort(importance, dim=0, descending=True)
        pl = self.point_linear.conv.conv
        pl.weight.data = torch.index_select(pl.weight.data, 1, idx)
        _adjust_bn(self.depth_conv.bn.bn, idx)
        dw = self.depth_conv.conv.conv
        dw.weight.data = torch.index_select(dw.weight.data, 0, idx)
        if self.use_se:
            se_expand, se_reduce = self.depth_conv.se.fc.expand, self.depth_conv.se.fc.reduce
            se_expand.weight.data = torch.index_select(se_expand.weight.data, 0, idx)
            se_expand.bias.data = torch.index_select(se_expand.bias.data, 0, idx)
            se_reduce.weight.data = torch.index_select(se_reduce.weight.data, 1, idx)
            se_importance = torch.sum(torch.abs(se_expand.weight.data), dim=(0, 2, 3))
            _, se_idx = torch.sort(se_importance, dim=0, descending=True)
            se_expand.weight.data = torch.index_select(se_expand.weight.data, 1, se_idx)
            se_reduce.weight.data = torch.index_select(se_reduce.weight.data, 0, se_idx)
            se_reduce.bias.data = torch.index_select(se_reduce.bias.data, 0, se_idx)
        if self.inverted_bottleneck is not None:
            _adjust_bn(self.inverted_bottleneck.bn.bn, idx)
            ib = self.inverted_bottleneck.conv.conv
            ib.weight.data = torch.index_select(ib.weight.data, 0, idx)
        return idx


class DynamicResidualBlock(nn.Module):
    """``conv(x) [+ x]``: an elastic block and its identity shortcut (None when the shape changes)."""

    def __init__(self, conv: DynamicMBConvLayer, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.conv(x)
        return self.conv(x) + self.shortcut(x)


# --------------------------------------------------------------------------------------------------------
# Supernet


@dataclass(frozen=True)
class Choices:
    """The values the sampler may draw per field (a progressive-shrinking phase's sampling space)."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]

    @classmethod
    def of_space(cls, space: SearchSpace) -> Choices:
        """Every value of the space."""
        return cls(ks=space.ks_choices, e=space.e_choices, d=space.d_choices)

    def to_dict(self) -> dict[str, list[int]]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d)}


def _swap_bn(module: nn.Module) -> None:
    """Replace every plain BatchNorm2d child of ``module`` (recursively) by an ElasticBatchNorm2d with the
    same settings (same state-dict names)."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            bn = ElasticBatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
            bn.load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            _swap_bn(child)


class OFASupernet(nn.Module):
    """The once-for-all supernet of a search space, laid out as OFA's ``OFAMobileNetV3``.

    ``first_conv``, ``blocks[0]`` (the fixed first block), ``final_expand_layer``, ``feature_mix_layer`` and
    ``classifier`` are the standalone modules of ``blocks.py`` (with :class:`ElasticBatchNorm2d`);
    ``blocks[1:]`` are ``n_stages * max_depth`` :class:`DynamicMBConvLayer` blocks, stage-major. The active
    subnet is set with :meth:`set_active` (or :meth:`sample_active`); ``forward`` runs it at the input's
    resolution. ``n_classes`` overrides the space's classifier width (e.g. 10 classes of a dataset).
    """

    def __init__(self, space: str | SearchSpace, *, n_classes: int | None = None, dropout_rate: float = 0.1) -> None:
        super().__init__()
        self.space = get_space(space)
        sp = self.space
        self.n_classes = sp.n_classes if n_classes is None else int(n_classes)
        self.dropout_rate = float(dropout_rate)
        fixed = sp.fixed_entries(sp.resolutions[-1])
        stem, first, conv_1, _pool, conv_2, logits = fixed
        self.first_conv = build_entry(stem)
        block_list: list[nn.Module] = [build_entry(first)]
        for s in range(sp.n_stages):
            for j in range(sp.max_depth):
                in_ch = sp.stage_in_channels[s] if j == 0 else sp.stage_widths[s]
                out_ch = sp.stage_widths[s]
                stride = sp.stage_strides[s] if j == 0 else 1
                conv = DynamicMBConvLayer(
                    in_channels=in_ch,
                    out_channels=out_ch,
                    kernel_size_list=sp.ks_choices,
                    expand_ratio_list=sp.e_choices,
                    stride=stride,
                    act_func=sp.stage_acts[s],
                    use_se=sp.stage_se[s],
                )
                shortcut = blocks.IdentityLayer() if stride == 1 and in_ch == out_ch else None
                block_list.append(DynamicResidualBlock(conv, shortcut))
        self.blocks = nn.ModuleList(block_list)
        self.final_expand_layer = build_entry(conv_1)
        self.global_avg_pool = blocks.GlobalAvgPool()
        self.feature_mix_layer = build_entry(conv_2)
        self.classifier = build_entry(logits, n_classes=self.n_classes, dropout_rate=self.dropout_rate)
        blocks.init_weights(self)
        _swap_bn(self)
        self.runtime_depth = list(sp.d_choices[-1:] * sp.n_stages)

    # ---- structure ---------------------------------------------------------------------------------

    def elastic_blocks(self) -> list[DynamicMBConvLayer]:
        """The elastic blocks' layers, stage-major (``n_stages * max_depth``)."""
        return [b.conv for b in self.blocks[1:]]  # type: ignore[misc]

    def stage_block_indices(self, stage: int) -> list[int]:
        """Indices into :attr:`blocks` of stage ``stage``'s blocks."""
        md = self.space.max_depth
        return [1 + stage * md + j for j in range(md)]

    # ---- active subnet -----------------------------------------------------------------------------

    @property
    def active_arch(self) -> Arch:
        """The active architecture (``r`` = the largest resolution of the space; the input decides it)."""
        layers = self.elastic_blocks()
        return Arch(
            ks=tuple(b.active_kernel_size for b in layers),
            e=tuple(b.active_expand_ratio for b in layers),
            d=tuple(self.runtime_depth),
            r=self.space.resolutions[-1],
        )

    def set_active(self, arch: Arch | Mapping[str, Any] | str) -> Arch:
        """Make ``arch`` the active subnet (validated against the space; raises ArchError)."""
        a = self.space.parse(arch)
        for layer, k, e in zip(self.elastic_blocks(), a.ks, a.e, strict=True):
            layer.active_kernel_size = k
            layer.active_expand_ratio = e
        self.runtime_depth = list(a.d)
        return a

    def set_max(self) -> Arch:
        """Make the largest subnet active."""
        return self.set_active(self.space.max_arch())

    def sample_active(
        self,
        rng: np.random.Generator,
        phase: Choices | None = None,
        resolutions: Iterable[int] | None = None,
    ) -> Arch:
        """Draw a subnet uniformly per field from ``phase`` (a :class:`Choices`; default: the whole space),
        ``r`` from ``resolutions`` (default: the space's), make it active and return it."""
        sp = self.space
        ch = Choices.of_space(sp) if phase is None else phase
        rs = sp.check_resolutions(resolutions)
        ks = np.asarray(ch.ks)[rng.integers(0, len(ch.ks), size=sp.n_blocks)]
        e = np.asarray(ch.e)[rng.integers(0, len(ch.e), size=sp.n_blocks)]
        d = np.asarray(ch.d)[rng.integers(0, len(ch.d), size=sp.n_stages)]
        r = int(np.asarray(rs)[rng.integers(0, len(rs))])
        arch = sp.parse({"ks": ks.tolist(), "e": e.tolist(), "d": d.tolist(), "r": r})
        self.set_active(arch)
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        x = self.blocks[0](x)
        for s, depth in enumerate(self.runtime_depth):
            for idx in self.stage_block_indices(s)[:depth]:
                x = self.blocks[idx](x)
        x = self.final_expand_layer(x)
        x = self.global_avg_pool(x)
        x = self.feature_mix_layer(x)
        return self.classifier(x)

    # ---- extraction --------------------------------------------------------------------------------

    def active_state_dict(self, arch: Arch | Mapping[str, Any] | str | None = None) -> dict[str, torch.Tensor]:
        """The state dict of the standalone subnet of ``arch`` (default: the active one), with the keys of
        ``SearchSpace.build_subnet(arch)``: fixed layers copied, elastic blocks sliced and their kernels
        transformed. Does not change the active subnet."""
        a = self.active_arch if arch is None else self.space.parse(arch)
        out: dict[str, torch.Tensor] = {}
        for prefix in ("first_conv", "final_expand_layer", "feature_mix_layer", "classifier"):
            for k, v in getattr(self, prefix).state_dict().items():
                out[f"{prefix}.{k}"] = v.detach().clone()
        for k, v in self.blocks[0].state_dict().items():
            out[f"blocks.0.{k}"] = v.detach().clone()
        sub = 1
        md = self.space.max_depth
        for s in range(self.space.n_stages):
            for j in range(a.d[s]):
                i = s * md + j
                layer = self.elastic_blocks()[i]
                for k, v in layer.active_state(a.ks[i], a.e[i]).items():
                    out[f"blocks.{sub}.conv.{k}"] = v
                sub += 1
        return out

    def get_active_subnet(
        self, arch: Arch | Mapping[str, Any] | str | None = None, *, dropout_rate: float = 0.0
    ) -> blocks.MobileNetV3:
        """The standalone subnet of ``arch`` (default: the active one) -- ``space.build_subnet(arch)`` loaded
        with the extracted weights (``strict=True``), in the supernet's train/eval mode and on its device.
        Raises ArchError for an invalid arch."""
        a = self.active_arch if arch is None else self.space.parse(arch)
        net = self.space.build_subnet(a, n_classes=self.n_classes, dropout_rate=dropout_rate)
        net.load_state_dict(self.active_state_dict(a), strict=True)
        device = next(self.parameters()).device
        return net.to(device).train(self.training)

    # ---- channel sorting, BN sync ------------------------------------------------------------------

    def re_organize_middle_weights(self, expand_ratio_stage: int = 0) -> None:
        """Channel sorting of every elastic block (see :meth:`DynamicMBConvLayer.re_organize_middle_weights`);
        the largest subnet computes the same function before and after."""
        for layer in self.elastic_blocks():
            layer.re_organize_middle_weights(expand_ratio_stage)

    def set_sync_bn(self, group: Any) -> None:
        """All-reduce batch statistics over ``group`` in training (None: per-process statistics)."""
        for m in self.modules():
            if isinstance(m, ElasticBatchNorm2d):
                m.sync_group = group

    def copy_frozen(self) -> OFASupernet:
        """A deep copy with gradients off (e.g. the KD teacher)."""
        twin = copy.deepcopy(self)
        for p in twin.parameters():
            p.requires_grad_(False)
        return twin

