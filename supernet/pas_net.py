"""Pruning-as-Search network pieces (Li et al., IJCAI 2022).

- :class:`DBCGate`: the depth-wise binary convolution that decides, channel by channel, whether a layer's
  output channel is kept; binarised at 0.5 in the forward pass, straight-through in the backward pass.
- :class:`RepBlock`: a RepVGG-style block (3x3 + 1x1 + identity branches, each with BN) with its gate after
  the branch addition, so every block's width is free (no residual constraint ties widths together).
- :class:`PasNetConfig` / :data:`BASE_NETS`: the base networks as data (``digits`` and ``cifar``).
- :class:`PasNet`: the multi-branch, gated network that is trained and searched; :meth:`PasNet.macs` is a
  differentiable function of the gates.
- :func:`reparameterize`: BN folding, branch merging and channel slicing into a plain ``nn.Sequential`` of
  ``Conv2d``/``ReLU``/pool/``Linear`` that computes what the pruned multi-branch network computes in eval mode.
- the plain network as a latency table sees it: :func:`plain_network`, one layer of it (:func:`plain_layer`),
  each layer's LUT key (:func:`layer_key`, :func:`network_keys`) and the widths a table measures
  (:func:`width_grid`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpaceError

GATE_THRESHOLD = 0.5


class _BinarizeSTE(torch.autograd.Function):
    """``w > threshold`` in the forward pass, identity gradient in the backward pass."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, threshold: float) -> torch.Tensor:  # type: ignore[override]
        return _hard_mask(weight, threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def _hard_mask(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    hard = weight > threshold
    # A layer of width zero would disconnect the network: the strongest channel always stays.
    hard[torch.argmax(weight)] = True
    return hard.to(weight.dtype)


class DBCGate(nn.Module):
    """Depth-wise binary convolution gate over ``channels`` channels.

    Mathematically a depth-wise 1x1 convolution (one weight per channel, no bias) whose weights are binarised
    in the forward pass (``w > 0.5`` -> 1, else 0; the strongest channel is always kept so that no layer has
    width zero). It is computed as a per-channel multiplication, which is the same thing and cheaper.

    Backward: straight-through estimator; the gate weights receive the gradient of their binarised value, so a
    closed gate keeps receiving the task's and the cost's gradient and can reopen.

    Pruned channels neither compute nor update but keep their information: a closed gate multiplies the
    channel by 0, so nothing downstream depends on that channel and the gradient reaching the convolutions and
    BNs that produce it is exactly zero; their weights are not zeroed or removed, only masked, so reopening the
    gate restores the channel as it was. (An optimiser's momentum may still carry a few small steps after a
    gate closes; the search uses no weight decay, so a closed channel's weights never shrink.) Only
    :func:`reparameterize` physically drops pruned channels.
    """

    def __init__(self, channels: int, *, init: float = 0.6, threshold: float = GATE_THRESHOLD) -> None:
        super().__init__()
        self.channels = channels
        self.threshold = threshold
        self.weight = nn.Parameter(torch.full((channels,), float(init)))

    def mask(self) -> torch.Tensor:
        """Binary mask of shape (channels,); differentiable through the STE when grad is enabled."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return _BinarizeSTE.apply(self.weight, self.threshold)
        return _hard_mask(self.weight.detach(), self.threshold)

    def keep(self) -> torch.Tensor:
        """Boolean tensor of the channels that stay."""
        with torch.no_grad():
            return self.mask() > 0.5

    def active(self) -> torch.Tensor:
        """Number of open channels as a (soft-through-STE) scalar tensor."""
        return self.mask().sum()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep gate weights in [0, 1] so that closed gates stay within reach of the threshold."""
        self.weight.clamp_(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask().view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, threshold={self.threshold}"


class RepBlock(nn.Module):
    """RepVGG-style block: ``gate(relu(bn(conv3x3(x)) + bn(conv1x1(x)) [+ bn(x)]))``.

    The identity branch exists when the block keeps its width and resolution. The gate sits after the addition
    (and its ReLU), so the block's output width is whatever its gate decides, independently of its input's width.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, gate_init: float = 0.6
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.conv3 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn_id = nn.BatchNorm2d(out_channels) if in_channels == out_channels and stride == 1 else None
        self.gate = DBCGate(out_channels, init=gate_init)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        if self.bn_id is not None:
            y = y + self.bn_id(x)
        # gate after the ReLU: the same forward for a 0/1 gate, but a closed gate still sees the ReLU's output
        # (relu'(0) = 0 would otherwise cut its straight-through gradient and it could never reopen)
        return self.gate(self.act(y))

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one 3x3 kernel and bias equal to the three branches with BN in eval mode (float64, unsliced)."""
        k3, b3 = _fold_bn(self.conv3.weight.double(), self.bn3)
        k1, b1 = _fold_bn(self.conv1.weight.double(), self.bn1)
        kernel = k3 + F.pad(k1, [1, 1, 1, 1])
        bias = b3 + b1
        if self.bn_id is not None:
            ident = torch.zeros_like(kernel)
            idx = torch.arange(self.out_channels)
            ident[idx, idx, 1, 1] = 1.0
            kid, bid = _fold_bn(ident, self.bn_id)
            kernel = kernel + kid
            bias = bias + bid
        return kernel, bias


def _fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return kernel * scale.view(-1, 1, 1, 1), bn.bias.double() - bn.running_mean.double() * scale


@dataclass(frozen=True)
class PasNetConfig:
    """A base network as data: input, classes, and one ``(width, stride)`` per 3x3 block."""

    name: str
    in_channels: int
    resolution: int
    num_classes: int
    layers: tuple[tuple[int, int], ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [list(pair) for pair in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PasNetConfig:
        return cls(
            name=str(d["name"]),
            in_channels=int(d["in_channels"]),
            resolution=int(d["resolution"]),
            num_classes=int(d["num_classes"]),
            layers=tuple((int(w), int(s)) for w, s in d["layers"]),
        )

    @property
    def widths(self) -> list[int]:
        return [w for w, _ in self.layers]

    def layer_shapes(self) -> list[dict[str, int]]:
        """Per 3x3 layer: ``c_in, c_out, kernel, stride, h_in, h_out`` of the unpruned network."""
        shapes = []
        h, c_in = self.resolution, self.in_channels
        for width, stride in self.layers:
            h_out = (h + 2 - 3) // stride + 1
            shapes.append(
                {"c_in": c_in, "c_out": width, "kernel": 3, "stride": stride, "h_in": h, "h_out": h_out}
            )
            h, c_in = h_out, width
        return shapes

    def macs(self, widths: Sequence[Any] | None = None) -> Any:
        """MACs of the plain (reparameterised) network at the given per-layer widths.

        ``widths`` may hold ints (gives an int) or scalar tensors (gives a tensor, differentiable): every 3x3
        layer costs ``9 * c_in * c_out * h_out * w_out``, the classifier ``c_last * num_classes``; pooling,
        biases and ReLUs are not counted.
        """
        widths = self.widths if widths is None else list(widths)
        if len(widths) != len(self.layers):
            raise SpaceError(
                f"widths: expected {len(self.layers)} values for base '{self.name}', got {len(widths)}"
            )
        total: Any = 0
        c_in: Any = self.in_channels
        for shape, c_out in zip(self.layer_shapes(), widths, strict=True):
            total = total + shape["kernel"] ** 2 * c_in * c_out * shape["h_out"] ** 2
            c_in = c_out
        return total + c_in * self.num_classes

    def min_macs(self) -> int:
        """MACs with one channel per layer (the narrowest network a gate set can give)."""
        return int(self.macs([1] * len(self.layers)))


BASE_NETS: dict[str, PasNetConfig] = {
    # 8x8 digits upsampled to 32x32, one channel: about 8.4 M MACs unpruned.
    "digits": PasNetConfig(
        name="digits",
        in_channels=1,
        resolution=32,
        num_classes=10,
        layers=((16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)),
    ),
    # CIFAR-10 sized (32x32 RGB), a narrow RepVGG-A-like stack: about 53 M MACs unpruned.
    "cifar": PasNetConfig(
        name="cifar",
        in_channels=3,
        resolution=32,
        num_classes=10,
        layers=((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1), (256, 2), (256, 1)),
    ),
}


def base_config(name: str) -> PasNetConfig:
    """The registered base network ``name``; an unknown name raises :class:`SpaceError` with close matches."""
    try:
        return BASE_NETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, BASE_NETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpaceError(f"unknown PaS base network '{name}' (known: {', '.join(BASE_NETS)}){hint}") from None


class PasNet(nn.Module):
    """The gated multi-branch network: :class:`RepBlock` s, global average pooling, a linear classifier."""

    def __init__(self, *, config: PasNetConfig, gate_init: float = 0.6) -> None:
        super().__init__()
        self.config = config
        blocks = []
        c_in = config.in_channels
        for width, stride in config.layers:
            blocks.append(RepBlock(c_in, width, stride=stride, gate_init=gate_init))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(self.pool(x), 1))

    def gates(self) -> list[DBCGate]:
        return [block.gate for block in self.blocks]

    def gate_parameters(self) -> list[nn.Parameter]:
        return [gate.weight for gate in self.gates()]

    def weight_parameters(self) -> list[nn.Parameter]:
        gate_ids = {id(p) for p in self.gate_parameters()}
        return [p for p in self.parameters() if id(p) not in gate_ids]

    def active_widths(self) -> list[torch.Tensor]:
        """Per-layer open-channel counts as scalar tensors (gradients flow to the gates through the STE)."""
        return [gate.active() for gate in self.gates()]

    def widths(self) -> list[int]:
        """Per-layer open-channel counts as ints."""
        return [int(gate.keep().sum()) for gate in self.gates()]

    def macs(self) -> torch.Tensor:
        """MACs of the reparameterised network at the current gates, differentiable w.r.t. the gate weights."""
        return self.config.macs(self.active_widths())

    def set_gates_trainable(self, trainable: bool) -> None:
        for p in self.gate_parameters():
            p.requires_grad_(trainable)

    def clamp_gates(self) -> None:
        """Every gate's weights back into their range (after an optimiser step)."""
        for gate in self.gates():
            gate.clamp_()


#: A latency table measures every layer at every multiple of this many channels (and at 1 and the full width).
DEFAULT_WIDTH_STEP = 8


def width_grid(channels: int, step: int = DEFAULT_WIDTH_STEP) -> list[int]:
    """The widths a latency table measures for a layer of ``channels`` channels: 1, every multiple of ``step``
    and ``channels``. Runtimes are markedly slower at widths off their vector blocks (on an AVX-512 CPU, ONNX
    Runtime's conv at 25 or 37 channels costs more than at 32 or 48), which no interpolation between a few
    widths sees: a table holds every width a search with ``width_multiple == step`` can choose."""
    return sorted({1, channels, *range(step, channels + 1, step)})


def layer_key(h_in: int, c_in: int, h_out: int, c_out: int, kernel: int, stride: int) -> str:
    """LUT key of one plain 3x3 conv + ReLU layer (OFA-style key schema: op ``pas_conv``)."""
    return (
        f"pas_conv-input:{h_in}x{h_in}x{c_in}-output:{h_out}x{h_out}x{c_out}-kernel:{kernel}-stride:{stride}"
    )


def network_keys(config: PasNetConfig, widths: Sequence[int]) -> list[str]:
    """The :func:`layer_key` of every 3x3 layer of the plain network of ``config`` at ``widths``."""
    keys, c_in = [], config.in_channels
    for shape, c_out in zip(config.layer_shapes(), widths, strict=True):
        keys.append(layer_key(shape["h_in"], c_in, shape["h_out"], int(c_out), shape["kernel"], shape["stride"]))
        c_in = int(c_out)
    return keys


def plain_network(config: PasNetConfig, widths: Sequence[int]) -> nn.Sequential:
    """A plain network of ``config`` at ``widths`` with random weights: exactly the layers
    :func:`reparameterize` produces (3x3 conv + ReLU per block, pool, linear)."""
    layers: list[nn.Module] = []
    c_in = config.in_channels
    for (_, stride), width in zip(config.layers, widths, strict=True):
        layers += [nn.Conv2d(c_in, int(width), 3, stride=stride, padding=1, bias=True), nn.ReLU()]
        c_in = int(width)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, config.num_classes)]
    return nn.Sequential(*layers).eval()


def plain_layer(shape: dict[str, int], c_in: int, c_out: int) -> nn.Sequential:
    """One layer of a plain network (3x3 conv + ReLU) of the :meth:`PasNetConfig.layer_shapes` entry ``shape``
    at ``c_in`` -> ``c_out`` channels, random weights: what a latency table's entry :func:`layer_key` measures."""
    conv = nn.Conv2d(c_in, c_out, shape["kernel"], stride=shape["stride"], padding=1, bias=True)
    return nn.Sequential(conv, nn.ReLU())


@torch.no_grad()
def init_gates_by_importance(net: PasNet, *, low: float = 0.52, high: float = 1.0) -> None:
    """Spread each layer's gate weights over ``[low, high]`` by the rank of the channel's importance.

    Importance of an output channel is the L2 norm of its fused (BN-folded, branch-merged) 3x3 kernel. All gates
    stay open, but under the cost regulariser (which pushes every gate of a layer equally) the least important
    channels reach the threshold first, one after another, instead of a whole layer closing in the same step.
    """
    for block in net.blocks:
        kernel, _ = block.fused_kernel_bias()
        importance = kernel.flatten(1).norm(dim=1)
        ranks = torch.argsort(torch.argsort(importance)).double()
        span = ranks / max(1, block.out_channels - 1)
        block.gate.weight.copy_((low + (high - low) * span).to(block.gate.weight.dtype))


@torch.no_grad()
def reparameterize(net: PasNet) -> nn.Sequential:
    """The plain network equal to ``net`` in eval mode: one ``Conv2d`` + ``ReLU`` per block, pool, ``Linear``.

    Per block: fold each branch's BN into its kernel, pad the 1x1 kernel to 3x3, write the identity branch as a
    3x3 kernel with a 1 at the centre of channel i -> i, and sum kernels and biases; then keep the output channels
    whose gate is open and the input channels the previous gate kept (the others are exactly zero in ``net``).
    The classifier keeps the columns of the last block's open channels. Arithmetic runs in float64.
    """
    layers: list[nn.Module] = []
    keep_prev: torch.Tensor | None = None
    for block in net.blocks:
        kernel, bias = block.fused_kernel_bias()
        keep = block.gate.keep()
        kernel, bias = kernel[keep], bias[keep]
        if keep_prev is not None:
            kernel = kernel[:, keep_prev]
        conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, stride=block.stride, padding=1, bias=True)
        conv.weight.copy_(kernel.float())
        assert conv.bias is not None
        conv.bias.copy_(bias.float())
        layers += [conv, nn.ReLU()]
        keep_prev = keep
    assert keep_prev is not None
    fc = nn.Linear(int(keep_prev.sum()), net.config.num_classes)
    fc.weight.copy_(net.fc.weight[:, keep_prev])
    fc.bias.copy_(net.fc.bias)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc]
    return nn.Sequential(*layers).eval()


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass of ``model`` on one input of ``input_shape`` (C, H, W), counted with hooks on
    ``Conv2d`` (``k_h * k_w * c_in / groups * c_out * h_out * w_out``) and ``Linear`` (``in * out``)."""
    total = 0

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += (
                kh
                * kw
                * module.in_channels
                // module.groups
                * module.out_channels
                * output.shape[2]
                * output.shape[3]
            )
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total

