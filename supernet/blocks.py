"""Torch modules of the MobileNetV3-style search spaces.

Module and attribute names mirror once-for-all's standalone ``MobileNetV3``
(``ofa/imagenet_classification/networks/mobilenet_v3.py``, ``ofa/utils/layers.py``), so a state dict of
``OFAMobileNetV3.get_active_subnet()`` loads into :class:`MobileNetV3` with ``strict=True``:

``first_conv.{conv,bn}``, ``blocks.N.conv.inverted_bottleneck.{conv,bn}``,
``blocks.N.conv.depth_conv.{conv,bn,se.fc.reduce,se.fc.expand}``, ``blocks.N.conv.point_linear.{conv,bn}``,
``final_expand_layer.{conv,bn}``, ``feature_mix_layer.conv``, ``classifier.linear``.

The numerics are OFA's: same padding ``k // 2``, BatchNorm momentum 0.1 / eps 1e-5, ``h_swish`` and
``h_sigmoid`` as :class:`torch.nn.Hardswish` / :class:`torch.nn.Hardsigmoid` (OFA's ``Hswish``/``Hsigmoid``
compute ``x * relu6(x + 3) / 6`` and ``relu6(x + 3) / 6``, the same functions). Activations are not in-place.

These modules know nothing about architectures or LUT entries: ``spaces.py`` decides the shapes and builds
both the subnet and the per-entry modules from the classes here, so a LUT times exactly what a subnet runs.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.1
BN_EPS = 1e-5
ACTIVATIONS = ("relu", "h_swish")


def build_activation(name: str) -> nn.Module:
    """``relu`` or ``h_swish`` (OFA's names); raises ValueError for anything else."""
    if name == "relu":
        return nn.ReLU()
    if name == "h_swish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}")


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class IdentityLayer(nn.Identity):
    """OFA's identity shortcut (no parameters)."""


class ConvLayer(nn.Module):
    """Conv (same padding) -> BN -> activation, as OFA's ``ConvLayer`` with ``ops_order='weight_bn_act'``.

    ``flatten=True`` appends a parameter-free ``flatten`` child (N, C, 1, 1) -> (N, C): the subnet's
    ``feature_mix_layer`` does the ``x.view(x.size(0), -1)`` that OFA's ``MobileNetV3.forward`` does between
    the feature mix layer and the classifier, so that the forward pass is exactly a chain of LUT entries.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 1,
        stride: int = 1,
        use_bn: bool = True,
        act_func: str | None = "h_swish",
        bias: bool = False,
        flatten: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias)
        if use_bn:
            self.bn = _bn(out_channels)
        if act_func is not None:
            self.act = build_activation(act_func)
        if flatten:
            self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._modules.values():
            x = module(x)
        return x


class GlobalAvgPool(nn.Module):
    """Global average pooling keeping the spatial dims (N, C, H, W) -> (N, C, 1, 1); no parameters.

    OFA computes ``x.mean(3, keepdim=True).mean(2, keepdim=True)``; this is the same mean in one op
    (``GlobalAveragePool`` in ONNX), equal up to float rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1)


class SEModule(nn.Module):
    """Squeeze-and-excitation as OFA's ``SEModule``: pool -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias)
    -> h_sigmoid -> scale. ``mid_channels`` is ``make_divisible(channels // 4, 8)`` in OFA's spaces."""

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.mid_channels = mid_channels
        self.fc = nn.Sequential(
            OrderedDict(
                [
                    ("reduce", nn.Conv2d(channels, mid_channels, 1, 1, 0, bias=True)),
                    ("relu", nn.ReLU()),
                    ("expand", nn.Conv2d(mid_channels, channels, 1, 1, 0, bias=True)),
                    ("h_sigmoid", nn.Hardsigmoid()),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(F.adaptive_avg_pool2d(x, 1))


class MBConvLayer(nn.Module):
    """Mobile inverted bottleneck as OFA's ``MBConvLayer``: [1x1 expand -> BN -> act] -> kxk depthwise
    -> BN -> act [-> SE] -> 1x1 project -> BN.

    The expansion conv exists iff ``mid_channels != in_channels`` (OFA: iff ``expand_ratio != 1``; with
    channel counts divisible by 8 the two rules agree, since ``make_divisible(round(c * 1), 8) == c``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int,
        mid_channels: int,
        act_func: str,
        se_channels: int | None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.mid_channels = mid_channels
        self.act_func = act_func
        self.use_se = se_channels is not None
        if mid_channels == in_channels:
            self.inverted_bottleneck = None
        else:
            self.inverted_bottleneck = nn.Sequential(
                OrderedDict(
                    [
                        ("conv", nn.Conv2d(in_channels, mid_channels, 1, 1, 0, bias=False)),
                        ("bn", _bn(mid_channels)),
                        ("act", build_activation(act_func)),
                    ]
                )
            )
        depth_conv: list[tuple[str, nn.Module]] = [
            (
                "conv",
                nn.Conv2d(
                    mid_channels,
                    mid_channels,
                    kernel_size,
                    stride,
                    kernel_size // 2,
                    groups=mid_channels,
                    bias=False,
                ),
            ),
            ("bn", _bn(mid_channels)),
            ("act", build_activation(act_func)),
        ]
        if se_channels is not None:
            depth_conv.append(("se", SEModule(mid_channels, se_channels)))
        self.depth_conv = nn.Sequential(OrderedDict(depth_conv))
        self.point_linear = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv2d(mid_channels, out_channels, 1, 1, 0, bias=False)),
                    ("bn", _bn(out_channels)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        x = self.depth_conv(x)
        return self.point_linear(x)


class ResidualBlock(nn.Module):
    """OFA's ``ResidualBlock``: ``conv(x) + shortcut(x)``, or ``conv(x)`` when ``shortcut`` is None.

    OFA's ``net.config`` JSON names the conv ``mobile_inverted_conv``; the module attribute (and so the
    state-dict key) is ``conv``, as in current OFA code.
    """

    def __init__(self, conv: MBConvLayer, shortcut: IdentityLayer | None) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.conv(x)
        return self.conv(x) + self.shortcut(x)


class LinearLayer(nn.Module):
    """OFA's ``LinearLayer``: [dropout ->] linear (with bias)."""

    def __init__(self, in_features: int, out_features: int, *, dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        if dropout_rate > 0:
            self.dropout = nn.Dropout(dropout_rate)
        self.linear = nn.Linear(in_features, out_features, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._modules.values():
            x = module(x)
        return x


class MobileNetV3(nn.Module):
    """A standalone subnet, laid out as OFA's ``MobileNetV3``.

    ``forward`` runs :meth:`entry_modules` one after the other: first_conv, blocks (the first block, then
    the active elastic blocks), final_expand_layer, global_avg_pool, feature_mix_layer (which flattens),
    classifier -- one module per LUT entry, in the order of ``SearchSpace.lut_entries``.
    """

    def __init__(
        self,
        *,
        first_conv: ConvLayer,
        blocks: list[ResidualBlock],
        final_expand_layer: ConvLayer,
        feature_mix_layer: ConvLayer,
        classifier: LinearLayer,
    ) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = final_expand_layer
        self.global_avg_pool = GlobalAvgPool()
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier

    def entry_modules(self) -> list[nn.Module]:
        """The modules in execution order, one per LUT entry of the subnet's architecture."""
        return [
            self.first_conv,
            *self.blocks,
            self.final_expand_layer,
            self.global_avg_pool,
            self.feature_mix_layer,
            self.classifier,
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.final_expand_layer(x)
        x = self.global_avg_pool(x)
        x = self.feature_mix_layer(x)
        return self.classifier(x)


def init_weights(module: nn.Module) -> nn.Module:
    """OFA's ``init_models(net, 'he_fout')``: conv ~ N(0, sqrt(2 / (k*k*out))), BN weight 1 bias 0,
    linear ~ U(-1/sqrt(in), 1/sqrt(in)) with zero bias. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(1))
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
