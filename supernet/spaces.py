"""Search spaces: the one place that knows what an architecture is.

A space says which architectures exist (:class:`Arch`, OFA's ``{"ks", "e", "d", "r"}`` dict), validates
them, samples them (one at a time or as numpy arrays for fast search), counts their MACs and parameters,
lists the LUT entries a subnet consists of (:class:`Entry`, keys in OFA's ``MBv3LatencyTable`` schema), and
builds the torch modules -- the whole subnet and each entry on its own -- from the same block code
(``blocks.py``).

Registered spaces (:func:`list_spaces`):

- ``ofa-mbv3-w1.0`` / ``ofa-mbv3-w1.2``: OFA's ``OFAMobileNetV3`` layer for layer (width multiplier 1.0 /
  1.2), 5 elastic stages of up to 4 blocks, kernel {3, 5, 7}, expand {3, 4, 6}, depth {2, 3, 4}.
- ``compact``: the same structure, narrow and at 32-48 px, 4 stages of up to 3 blocks, 10 classes;
  trainable on a 2-core CPU in minutes, with a LUT of at most 156 entries (2 resolutions).

Only numpy is imported at module level; torch is imported when a module is built.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ArchError, SpaceError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .blocks import MobileNetV3

__all__ = [
    "ARCH_FIELDS",
    "OPS",
    "Arch",
    "Entry",
    "SearchSpace",
    "build_entry",
    "entry_input",
    "get_space",
    "list_spaces",
    "make_divisible",
    "register_space",
]

#: LUT operator names, in execution order (OFA's ``MBv3LatencyTable`` names).
OPS = ("Conv", "expanded_conv", "Conv_1", "AvgPool2D", "Conv_2", "Logits")
#: The fields of an architecture dict.
ARCH_FIELDS = ("ks", "e", "d", "r")
CHANNEL_DIVISIBLE = 8
SE_REDUCTION = 4


def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE, min_val: int | None = None) -> int:
    """OFA's ``make_divisible`` (from the TF MobileNet code): round ``v`` to a multiple of ``divisor``,
    at least ``min_val`` (default ``divisor``), never more than 10% below ``v``."""
    if min_val is None:
        min_val = divisor
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a same-padded conv (OFA: ``int((size - 1) / stride + 1)``, i.e. ceil)."""
    return (size - 1) // stride + 1


def _fmt(value: Any) -> str:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, np.floating):
        return repr(float(value))
    return repr(value)


def _hwc(size: int, channels: int) -> str:
    return f"{size}x{size}x{channels}"


# --------------------------------------------------------------------------------------------------------
# Architecture


@dataclass(frozen=True)
class Arch:
    """One subnet: per-block kernel sizes ``ks`` and expand ratios ``e`` (``n_stages * max_depth`` each,
    stage-major), per-stage depths ``d`` and the input resolution ``r``.

    Values of blocks beyond a stage's depth are carried along (they are valid choices but unused), as in
    OFA. Hashable; build one through :meth:`SearchSpace.parse` to have it validated.
    """

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int

    def to_dict(self) -> dict[str, Any]:
        """OFA's arch dict: ``{"ks": [...], "e": [...], "d": [...], "r": 224}`` (plain ints)."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def to_json(self) -> str:
        """The dict as one line of JSON."""
        return json.dumps(self.to_dict(), separators=(", ", ": "))


# --------------------------------------------------------------------------------------------------------
# LUT entries


@dataclass(frozen=True)
class Entry:
    """One LUT row's operator: a piece of the network timed on its own.

    ``key`` follows OFA's schema, e.g. ``expanded_conv-input:56x56x24-output:28x28x40-expand:96-kernel:5-
    stride:2-idskip:0-se:1-hs:0`` (``expand`` is the mid channel count). Head keys repeat across input
    resolutions, so a row is identified by ``(key, resolution)``, ``resolution`` being the network input
    resolution the entry belongs to.

    ``input_shape`` is (C, H, W), except for ``Logits`` whose input is the flattened (C,) vector (the
    ``Conv_2`` module flattens its output). Fields that do not apply to an op are 0: ``mid_channels`` is set
    for ``expanded_conv`` only, ``idskip``/``se`` for ``expanded_conv``; ``hs`` is 1 where the op ends in
    h_swish (``Conv``, ``Conv_1``, ``Conv_2``, blocks of h_swish stages); ``kernel``/``stride`` are the conv's
    (``AvgPool2D``: the global pool's kernel = ``in_size``; ``Logits``: 1, 1).
    """

    key: str
    resolution: int
    op: str
    input_shape: tuple[int, ...]
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    mid_channels: int = 0
    kernel: int = 0
    stride: int = 1
    idskip: int = 0
    se: int = 0
    hs: int = 0

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the entry module's output without the batch dim (= the next entry's ``input_shape``)."""
        if self.op in ("Conv_2", "Logits"):
            return (self.out_channels,)
        return (self.out_channels, self.out_size, self.out_size)

    @property
    def se_channels(self) -> int:
        """Channels inside the SE module (OFA: ``make_divisible(mid // 4, 8)``); 0 without SE."""
        if not self.se:
            return 0
        return make_divisible(self.mid_channels // SE_REDUCTION, CHANNEL_DIVISIBLE)

    @property
    def has_expand_conv(self) -> bool:
        """Whether an ``expanded_conv`` has its 1x1 expansion conv (not the first block's expand-1 case)."""
        return self.op == "expanded_conv" and self.mid_channels != self.in_channels

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the entry's convolutions and linear layer (what OFA's
        ``count_flops_given_config`` and thop-style Conv2d/Linear hooks count): ``out_h * out_w *
        out_channels * in_channels / groups * k * k`` per conv, including the SE 1x1 convs, and
        ``in * out`` for the classifier. BN, activations, pooling, additions and biases are not counted."""
        op = self.op
        if op == "Conv":
            return self.out_size**2 * self.in_channels * self.out_channels * self.kernel**2
        if op == "expanded_conv":
            mid = self.mid_channels
            total = 0
            if self.has_expand_conv:
                total += self.in_size**2 * self.in_channels * mid
            total += self.out_size**2 * mid * self.kernel**2
            if self.se:
                total += 2 * mid * self.se_channels
            total += self.out_size**2 * mid * self.out_channels
            return total
        if op == "Conv_1":
            return self.in_size**2 * self.in_channels * self.out_channels
        if op in ("Conv_2", "Logits"):
            return self.in_channels * self.out_channels
        return 0

    @property
    def params(self) -> int:
        """Trainable parameters of the entry module: conv/linear weights and biases, BN weight and bias
        (running statistics are buffers, not counted)."""
        op = self.op
        if op == "Conv":
            return self.in_channels * self.out_channels * self.kernel**2 + 2 * self.out_channels
        if op == "expanded_conv":
            mid, se = self.mid_channels, self.se_channels
            total = 0
            if self.has_expand_conv:
                total += self.in_channels * mid + 2 * mid
            total += mid * self.kernel**2 + 2 * mid
            if self.se:
                total += mid * se + se + se * mid + mid
            total += mid * self.out_channels + 2 * self.out_channels
            return total
        if op == "Conv_1":
            return self.in_channels * self.out_channels + 2 * self.out_channels
        if op == "Conv_2":
            return self.in_channels * self.out_channels
        if op == "Logits":
            return self.in_channels * self.out_channels + self.out_channels
        return 0


def _plain_key(op: str, in_size: int, in_ch: int, out_size: int, out_ch: int) -> str:
    return f"{op}-input:{_hwc(in_size, in_ch)}-output:{_hwc(out_size, out_ch)}"


def _block_entry(
    *, r: int, in_size: int, in_ch: int, out_ch: int, mid: int, kernel: int, stride: int, se: bool, act: str
) -> Entry:
    out_size = _out_size(in_size, stride)
    idskip = int(stride == 1 and in_ch == out_ch)
    hs = int(act == "h_swish")
    key = (
        f"expanded_conv-input:{_hwc(in_size, in_ch)}-output:{_hwc(out_size, out_ch)}-expand:{mid}"
        f"-kernel:{kernel}-stride:{stride}-idskip:{idskip}-se:{int(se)}-hs:{hs}"
    )
    return Entry(
        key=key,
        resolution=r,
        op="expanded_conv",
        input_shape=(in_ch, in_size, in_size),
        in_channels=in_ch,
        out_channels=out_ch,
        in_size=in_size,
        out_size=out_size,
        mid_channels=mid,
        kernel=kernel,
        stride=stride,
        idskip=idskip,
        se=int(se),
        hs=hs,
    )


# --------------------------------------------------------------------------------------------------------
# Search space


class SearchSpace:
    """A MobileNetV3-style elastic space (OFA's ``OFAMobileNetV3`` structure).

    Network: first conv 3x3 stride ``stem_stride`` h_swish -> first block (MBConv expand 1, kernel 3,
    stride 1, relu, no SE, identity skip when the widths agree) -> ``n_stages`` elastic stages of up to
    ``max_depth`` MBConv blocks (the first block of a stage has the stage's stride and width change) ->
    final expand 1x1 conv + BN + h_swish -> global average pool -> feature mix 1x1 conv (no BN, no bias)
    + h_swish -> linear classifier. Block mid channels are ``make_divisible(round(in_channels * e), 8)``.

    Attributes: ``name, description, n_stages, max_depth, n_blocks (= n_stages * max_depth), ks_choices,
    e_choices, d_choices, resolutions`` (accepted/training), ``lut_resolutions`` (profiled by default),
    ``n_classes``, ``width_mult`` (OFA spaces; None otherwise) and the layer widths.
    """

    def __init__(
        self,
        *,
        name: str,
        description: str,
        stem_channels: int,
        first_block_channels: int,
        stage_widths: Sequence[int],
        stage_strides: Sequence[int],
        stage_acts: Sequence[str],
        stage_se: Sequence[bool],
        final_expand_channels: int,
        feature_mix_channels: int,
        n_classes: int,
        ks_choices: Sequence[int],
        e_choices: Sequence[int],
        d_choices: Sequence[int],
        resolutions: Sequence[int],
        lut_resolutions: Sequence[int],
        width_mult: float | None = None,
        stem_stride: int = 2,
        dropout_rate: float = 0.1,
    ) -> None:
        n = len(stage_widths)
        if not (len(stage_strides) == len(stage_acts) == len(stage_se) == n) or n == 0:
            raise SpaceError(f"space {name!r}: stage_widths/strides/acts/se must have the same length")
        for act in stage_acts:
            if act not in ("relu", "h_swish"):
                raise SpaceError(f"space {name!r}: activation {act!r} is not one of ['relu', 'h_swish']")
        if not set(lut_resolutions) <= set(resolutions):
            raise SpaceError(f"space {name!r}: lut_resolutions must be among the resolutions")
        self.name = name
        self.description = description
        self.stem_channels = int(stem_channels)
        self.first_block_channels = int(first_block_channels)
        self.stage_widths = tuple(int(w) for w in stage_widths)
        self.stage_strides = tuple(int(s) for s in stage_strides)
        self.stage_acts = tuple(stage_acts)
        self.stage_se = tuple(bool(s) for s in stage_se)
        self.final_expand_channels = int(final_expand_channels)
        self.feature_mix_channels = int(feature_mix_channels)
        self.n_classes = int(n_classes)
        self.ks_choices = tuple(sorted(int(k) for k in ks_choices))
        self.e_choices = tuple(sorted(int(e) for e in e_choices))
        self.d_choices = tuple(sorted(int(d) for d in d_choices))
        self.resolutions = tuple(sorted(int(r) for r in resolutions))
        self.lut_resolutions = tuple(sorted(int(r) for r in lut_resolutions))
        self.width_mult = width_mult
        self.stem_stride = int(stem_stride)
        self.dropout_rate = float(dropout_rate)
        self.n_stages = n
        self.max_depth = max(self.d_choices)
        self.n_blocks = n * self.max_depth
        #: input channels of each stage's first block
        self.stage_in_channels = (self.first_block_channels, *self.stage_widths[:-1])
        self._block_cache: dict[tuple[int, bool, int, int, int], Entry] = {}
        self._fixed_cache: dict[int, tuple[Entry, ...]] = {}
        self._by_key_cache: dict[int, dict[str, Entry]] = {}

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r})"

    def info(self) -> dict[str, Any]:
        """A JSON-able summary of the space."""
        return {
            "name": self.name,
            "description": self.description,
            "n_stages": self.n_stages,
            "max_depth": self.max_depth,
            "ks_choices": list(self.ks_choices),
            "e_choices": list(self.e_choices),
            "d_choices": list(self.d_choices),
            "resolutions": list(self.resolutions),
            "lut_resolutions": list(self.lut_resolutions),
            "n_classes": self.n_classes,
            "width_mult": self.width_mult,
            "stem_channels": self.stem_channels,
            "first_block_channels": self.first_block_channels,
            "stage_widths": list(self.stage_widths),
            "stage_strides": list(self.stage_strides),
            "stage_acts": list(self.stage_acts),
            "stage_se": list(self.stage_se),
            "final_expand_channels": self.final_expand_channels,
            "feature_mix_channels": self.feature_mix_channels,
        }

    # ---- resolutions -------------------------------------------------------------------------------

    def check_resolutions(self, resolutions: Iterable[int] | None) -> tuple[int, ...]:
        """Sorted, de-duplicated ``resolutions`` (default: all of :attr:`resolutions`).

        Raises SpaceError if one is not a resolution of the space or the list is empty.
        """
        if resolutions is None:
            return self.resolutions
        out: set[int] = set()
        for r in resolutions:
            if isinstance(r, bool) or not isinstance(r, int | np.integer) or int(r) not in self.resolutions:
                raise SpaceError(
                    f"resolution {_fmt(r)} is not one of the resolutions of {self.name} {list(self.resolutions)}"
                )
            out.add(int(r))
        if not out:
            raise SpaceError(f"no resolutions given for space {self.name}")
        return tuple(sorted(out))

    # ---- parsing and validation ----------------------------------------------------------------------

    def parse(
        self, obj: Arch | Mapping[str, Any] | str | bytes, resolutions: Iterable[int] | None = None
    ) -> Arch:
        """Validate an architecture: an :class:`Arch`, OFA's dict, or that dict as a JSON string.

        ``r`` may be an int or a list of one int (OFA writes ``"r": [224]``); it must be one of
        ``resolutions`` (default: the space's :attr:`resolutions`). OFA's ``"wid": null`` is accepted and
        dropped; any other unknown field is rejected.

        Raises ArchError with a one-line message naming the field and the allowed values, e.g.
        ``arch field 'ks'[3]: 4 is not one of [3, 5, 7]``.
        """
        if isinstance(obj, Arch):
            data: Any = obj.to_dict()
        elif isinstance(obj, str | bytes):
            try:
                data = json.loads(obj)
            except ValueError as exc:
                raise ArchError(f"arch is not valid JSON: {exc}") from None
        else:
            data = obj
        if not isinstance(data, Mapping):
            raise ArchError(f"arch must be a JSON object with fields ks, e, d, r; got {type(data).__name__}")
        for k in data:
            if k not in ARCH_FIELDS and not (k == "wid" and data[k] is None):
                raise ArchError(f"arch has unknown field {k!r}; expected the fields ks, e, d, r")
        for k in ARCH_FIELDS:
            if k not in data:
                raise ArchError(f"arch field {k!r} is missing; expected the fields ks, e, d, r")
        ks = self._check_list(data["ks"], "ks", self.n_blocks, self.ks_choices)
        e = self._check_list(data["e"], "e", self.n_blocks, self.e_choices)
        d = self._check_list(data["d"], "d", self.n_stages, self.d_choices)
        r = self._check_r(data["r"], resolutions)
        return Arch(ks=ks, e=e, d=d, r=r)

    def parse_lines(self, lines: Iterable[str], resolutions: Iterable[int] | None = None) -> dict[str, np.ndarray]:
        """Architectures given one per line (as :meth:`parse` reads them; blank lines skipped), straight into
        the array form. Plain lines take a fast path (JSON decoding and one vectorised validation); anything
        unusual is parsed line by line by :meth:`parse`, so the rules and messages are the same.

        Raises ArchError ``line N: <parse's message>`` for the first bad line."""
        texts = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
        rs = sorted({int(r) for r in resolutions}) if resolutions is not None else None
        columns: dict[str, list[Any]] = {k: [] for k in ARCH_FIELDS}
        try:
            for _, line in texts:
                if "true" in line or "false" in line:
                    raise ValueError("booleans")
                obj = json.loads(line)
                if type(obj) is not dict or obj.keys() - {"wid"} != set(ARCH_FIELDS) or obj.get("wid") is not None:
                    raise ValueError("not a plain arch")
                rv = obj["r"]
                columns["r"].append(rv[0] if type(rv) is list and len(rv) == 1 else rv)
                for k in ("ks", "e", "d"):
                    columns[k].append(obj[k])
            arrays = {k: np.array(v) for k, v in columns.items()}
            if not texts or any(a.dtype.kind != "i" for a in arrays.values()):
                raise ValueError("not integers")
            arrays = self.check_arrays(arrays)
            if rs is not None and not np.isin(arrays["r"], rs).all():
                raise ValueError("resolution")
            return arrays
        except (ValueError, TypeError, KeyError):  # ArchError is a ValueError: parse() names it precisely
            pass
        archs = []
        for number, line in texts:
            try:
                archs.append(self.parse(line, rs))
            except ArchError as exc:
                raise ArchError(f"line {number}: {exc}") from None
        return self.arrays_from_archs(archs)

    def validate(
        self, obj: Arch | Mapping[str, Any] | str | bytes, resolutions: Iterable[int] | None = None
    ) -> Arch:
        """Alias of :meth:`parse`."""
        return self.parse(obj, resolutions)

    @staticmethod
    def _as_int(value: Any, choices: Sequence[int]) -> int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | np.integer):
            v = int(value)
        elif isinstance(value, float | np.floating) and float(value).is_integer():
            v = int(value)
        else:
            return None
        return v if v in choices else None

    def _check_list(self, value: Any, field: str, length: int, choices: Sequence[int]) -> tuple[int, ...]:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise ArchError(
                f"arch field {field!r}: expected a list of {length} values from {list(choices)}, "
                f"got {type(value).__name__} {_fmt(value)}"
            )
        if len(value) != length:
            raise ArchError(
                f"arch field {field!r}: expected a list of {length} values from {list(choices)}, "
                f"got {len(value)} values"
            )
        out = []
        for i, v in enumerate(value):
            iv = self._as_int(v, choices)
            if iv is None:
                raise ArchError(f"arch field {field!r}[{i}]: {_fmt(v)} is not one of {list(choices)}")
            out.append(iv)
        return tuple(out)

    def _check_r(self, value: Any, resolutions: Iterable[int] | None) -> int:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, list | tuple):
            if len(value) != 1:
                raise ArchError(
                    f"arch field 'r': expected an int or a list of one int, got {len(value)} values"
                )
            value = value[0]
        if resolutions is None:
            allowed = self.resolutions
            where = f"the resolutions of {self.name}"
        else:
            allowed = tuple(sorted({int(x) for x in resolutions}))
            where = "the allowed resolutions"
        iv = self._as_int(value, allowed)
        if iv is None:
            raise ArchError(f"arch field 'r': {_fmt(value)} is not one of {where} {list(allowed)}")
        return iv

    # ---- special and random architectures -------------------------------------------------------------

    def _default_r(self, r: int | None, pick: Callable[[Sequence[int]], int]) -> int:
        if r is None:
            return pick(self.resolutions)
        return self._check_r(r, None)

    def max_arch(self, r: int | None = None) -> Arch:
        """The largest subnet (max kernel, expand and depth everywhere) at ``r`` (default: the largest
        resolution of the space). Raises ArchError for a resolution not in the space."""
        return Arch(
            ks=(self.ks_choices[-1],) * self.n_blocks,
            e=(self.e_choices[-1],) * self.n_blocks,
            d=(self.d_choices[-1],) * self.n_stages,
            r=self._default_r(r, max),
        )

    def min_arch(self, r: int | None = None) -> Arch:
        """The smallest subnet at ``r`` (default: the smallest resolution of the space)."""
        return Arch(
            ks=(self.ks_choices[0],) * self.n_blocks,
            e=(self.e_choices[0],) * self.n_blocks,
            d=(self.d_choices[0],) * self.n_stages,
            r=self._default_r(r, min),
        )

    def sample(self, rng: np.random.Generator, resolutions: Iterable[int] | None = None) -> Arch:
        """One architecture drawn uniformly per field (every ks, e, d and r independently), ``r`` from
        ``resolutions`` (default: the space's). ``sample(rng)`` draws the same as ``sample_arrays(rng, 1)``.
        """
        return self.arch_from_arrays(self.sample_arrays(rng, 1, resolutions), 0)

    def sample_arrays(
        self, rng: np.random.Generator, n: int, resolutions: Iterable[int] | None = None
    ) -> dict[str, np.ndarray]:
        """``n`` random architectures as int64 arrays ``{"ks": (n, n_blocks), "e": (n, n_blocks),
        "d": (n, n_stages), "r": (n,)}``. Raises SpaceError for resolutions not in the space."""
        rs = np.asarray(self.check_resolutions(resolutions), dtype=np.int64)
        ks = np.asarray(self.ks_choices, dtype=np.int64)
        es = np.asarray(self.e_choices, dtype=np.int64)
        ds = np.asarray(self.d_choices, dtype=np.int64)
        return {
            "ks": ks[rng.integers(0, len(ks), size=(n, self.n_blocks))],
            "e": es[rng.integers(0, len(es), size=(n, self.n_blocks))],
            "d": ds[rng.integers(0, len(ds), size=(n, self.n_stages))],
            "r": rs[rng.integers(0, len(rs), size=n)],
        }

    def check_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate the array form (2-D ks/e/d, 1-D r; a single arch's 1-D ks/e/d and scalar r is promoted)
        and return it as int64 arrays. Raises ArchError naming the field and row of the first bad value."""
        missing = [k for k in ARCH_FIELDS if k not in arrays]
        if missing:
            raise ArchError(f"arch arrays: field {missing[0]!r} is missing; expected the fields ks, e, d, r")
        out: dict[str, np.ndarray] = {}
        for k in ARCH_FIELDS:
            a = np.asarray(arrays[k])
            if a.dtype.kind not in "iu":
                if a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0):
                    a = a.astype(np.int64)
                else:
                    raise ArchError(f"arch arrays: field {k!r} must hold integers, got dtype {a.dtype}")
            out[k] = a.astype(np.int64, copy=False)
        if out["ks"].ndim == 1:
            out = {k: (v[None, :] if k != "r" else v.reshape(1)) for k, v in out.items()}
        n = out["r"].shape[0]
        expected = {"ks": (n, self.n_blocks), "e": (n, self.n_blocks), "d": (n, self.n_stages), "r": (n,)}
        for k, shape in expected.items():
            if out[k].shape != shape:
                raise ArchError(f"arch arrays: field {k!r} has shape {out[k].shape}, expected {shape}")
        for k, choices in (
            ("ks", self.ks_choices),
            ("e", self.e_choices),
            ("d", self.d_choices),
            ("r", self.resolutions),
        ):
            bad = ~np.isin(out[k], choices)
            if bad.any():
                idx = np.argwhere(bad)[0]
                where = f"[{idx[1]}]" if k != "r" else ""
                what = f"the resolutions of {self.name} " if k == "r" else ""
                raise ArchError(
                    f"arch field {k!r}{where} (row {idx[0]}): {int(out[k][tuple(idx)])} is not one of "
                    f"{what}{list(choices)}"
                )
        return out

    def arch_from_arrays(self, arrays: Mapping[str, np.ndarray], index: int = 0) -> Arch:
        """Row ``index`` of the array form as an :class:`Arch` (validated)."""
        a = self.check_arrays(arrays)
        return Arch(
            ks=tuple(int(v) for v in a["ks"][index]),
            e=tuple(int(v) for v in a["e"][index]),
            d=tuple(int(v) for v in a["d"][index]),
            r=int(a["r"][index]),
        )

    def archs_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> list[Arch]:
        """Every row of the array form as an :class:`Arch` (validated)."""
        a = self.check_arrays(arrays)
        ks, e, d, r = a["ks"].tolist(), a["e"].tolist(), a["d"].tolist(), a["r"].tolist()
        return [Arch(ks=tuple(ks[i]), e=tuple(e[i]), d=tuple(d[i]), r=r[i]) for i in range(len(r))]

    def arrays_from_archs(self, archs: Iterable[Arch | Mapping[str, Any] | str]) -> dict[str, np.ndarray]:
        """Stack architectures (each validated with :meth:`parse`) into the array form."""
        parsed = [a if isinstance(a, Arch) else self.parse(a) for a in archs]
        n = len(parsed)
        return {
            "ks": np.array([a.ks for a in parsed], dtype=np.int64).reshape(n, self.n_blocks),
            "e": np.array([a.e for a in parsed], dtype=np.int64).reshape(n, self.n_blocks),
            "d": np.array([a.d for a in parsed], dtype=np.int64).reshape(n, self.n_stages),
            "r": np.array([a.r for a in parsed], dtype=np.int64).reshape(n),
        }

    def active_mask(self, d: np.ndarray) -> np.ndarray:
        """Boolean (n, n_blocks) mask of the blocks that run, from depths ``d`` of shape (n, n_stages)."""
        d = np.asarray(d)
        return (np.arange(self.max_depth)[None, None, :] < d[:, :, None]).reshape(d.shape[0], self.n_blocks)

    # ---- LUT entries ---------------------------------------------------------------------------------

    def _sizes(self, r: int) -> tuple[int, list[int]]:
        """(stem output size, input size of each stage's first block) at input resolution ``r``."""
        size = _out_size(r, self.stem_stride)  # the first block has stride 1
        stem = size
        stage_in = []
        for s in self.stage_strides:
            stage_in.append(size)
            size = _out_size(size, s)
        return stem, stage_in

    def block_entry(self, stage: int, first: bool, ks: int, e: int, r: int) -> Entry:
        """The entry of an elastic block: stage ``stage`` (0-based), ``first`` = the stage's first block
        (stride and width change; the later blocks of a stage all share one shape), kernel ``ks``, expand
        ratio ``e``, network input resolution ``r``. Raises SpaceError for values outside the space."""
        cache_key = (stage, bool(first), ks, e, r)
        hit = self._block_cache.get(cache_key)
        if hit is not None:
            return hit
        if not 0 <= stage < self.n_stages:
            raise SpaceError(f"stage {stage} is not in [0, {self.n_stages}) for space {self.name}")
        if ks not in self.ks_choices:
            raise SpaceError(f"kernel {ks} is not one of {list(self.ks_choices)} for space {self.name}")
        if e not in self.e_choices:
            raise SpaceError(f"expand ratio {e} is not one of {list(self.e_choices)} for space {self.name}")
        if r not in self.resolutions:
            raise SpaceError(
                f"resolution {r} is not one of the resolutions of {self.name} {list(self.resolutions)}"
            )
        _, stage_in = self._sizes(r)
        out_ch = self.stage_widths[stage]
        if first:
            in_ch, stride, in_size = self.stage_in_channels[stage], self.stage_strides[stage], stage_in[stage]
        else:
            in_ch, stride, in_size = out_ch, 1, _out_size(stage_in[stage], self.stage_strides[stage])
        entry = _block_entry(
            r=r,
            in_size=in_size,
            in_ch=in_ch,
            out_ch=out_ch,
            mid=make_divisible(round(in_ch * e), CHANNEL_DIVISIBLE),
            kernel=ks,
            stride=stride,
            se=self.stage_se[stage],
            act=self.stage_acts[stage],
        )
        self._block_cache[cache_key] = entry
        return entry

    def fixed_entries(self, r: int) -> list[Entry]:
        """The entries every subnet at resolution ``r`` runs, whatever its ks/e/d:
        ``[Conv, first expanded_conv, Conv_1, AvgPool2D, Conv_2, Logits]`` -- the first two run before
        the elastic blocks, the last four after them."""
        hit = self._fixed_cache.get(r)
        if hit is not None:
            return list(hit)
        if r not in self.resolutions:
            raise SpaceError(
                f"resolution {r} is not one of the resolutions of {self.name} {list(self.resolutions)}"
            )
        stem_size, stage_in = self._sizes(r)
        c0, c1 = self.stem_channels, self.first_block_channels
        stem = Entry(
            key=_plain_key("Conv", r, 3, stem_size, c0),
            resolution=r,
            op="Conv",
            input_shape=(3, r, r),
            in_channels=3,
            out_channels=c0,
            in_size=r,
            out_size=stem_size,
            kernel=3,
            stride=self.stem_stride,
            hs=1,
        )
        first = _block_entry(
            r=r, in_size=stem_size, in_ch=c0, out_ch=c1, mid=c0, kernel=3, stride=1, se=False, act="relu"
        )
        size = _out_size(stage_in[-1], self.stage_strides[-1])
        c_last, c_fe, c_fm = self.stage_widths[-1], self.final_expand_channels, self.feature_mix_channels
        head = [
            Entry(
                key=_plain_key("Conv_1", size, c_last, size, c_fe),
                resolution=r,
                op="Conv_1",
                input_shape=(c_last, size, size),
                in_channels=c_last,
                out_channels=c_fe,
                in_size=size,
                out_size=size,
                kernel=1,
                stride=1,
                hs=1,
            ),
            Entry(
                key=_plain_key("AvgPool2D", size, c_fe, 1, c_fe),
                resolution=r,
                op="AvgPool2D",
                input_shape=(c_fe, size, size),
                in_channels=c_fe,
                out_channels=c_fe,
                in_size=size,
                out_size=1,
                kernel=size,
                stride=1,
            ),
            Entry(
                key=_plain_key("Conv_2", 1, c_fe, 1, c_fm),
                resolution=r,
                op="Conv_2",
                input_shape=(c_fe, 1, 1),
                in_channels=c_fe,
                out_channels=c_fm,
                in_size=1,
                out_size=1,
                kernel=1,
                stride=1,
                hs=1,
            ),
            Entry(
                key=f"Logits-input:{_hwc(1, c_fm)}-output:{self.n_classes}",
                resolution=r,
                op="Logits",
                input_shape=(c_fm,),
                in_channels=c_fm,
                out_channels=self.n_classes,
                in_size=1,
                out_size=1,
                kernel=1,
                stride=1,
            ),
        ]
        entries = (stem, first, *head)
        self._fixed_cache[r] = entries
        return list(entries)

    def lut_entries(self, arch: Arch | Mapping[str, Any] | str) -> list[Entry]:
        """The entries a subnet consists of, in execution order: Conv, the first block, the active
        elastic blocks, Conv_1, AvgPool2D, Conv_2, Logits. Raises ArchError for an invalid arch."""
        a = self.parse(arch)
        fixed = self.fixed_entries(a.r)
        blocks = []
        for s in range(self.n_stages):
            for j in range(a.d[s]):
                i = s * self.max_depth + j
                blocks.append(self.block_entry(s, j == 0, a.ks[i], a.e[i], a.r))
        return [*fixed[:2], *blocks, *fixed[2:]]

    def all_lut_entries(self, resolutions: Iterable[int] | None = None) -> list[Entry]:
        """Every entry any subnet can have at ``resolutions`` (default: :attr:`lut_resolutions`), unique by
        ``(key, resolution)``, in a deterministic order: per resolution (ascending), the stem and first
        block, then stage by stage the first-block entries and the later-block entries (kernel-major,
        then expand ratio), then the head. Raises SpaceError for resolutions not in the space."""
        rs = self.lut_resolutions if resolutions is None else self.check_resolutions(resolutions)
        out: list[Entry] = []
        seen: set[tuple[str, int]] = set()
        for r in rs:
            fixed = self.fixed_entries(r)
            entries = list(fixed[:2])
            for s in range(self.n_stages):
                for first in (True, False):
                    if not first and self.max_depth < 2:
                        continue
                    for ks in self.ks_choices:
                        for e in self.e_choices:
                            entries.append(self.block_entry(s, first, ks, e, r))
            entries.extend(fixed[2:])
            for entry in entries:
                ident = (entry.key, entry.resolution)
                if ident not in seen:
                    seen.add(ident)
                    out.append(entry)
        return out

    def entries_by_key(self, resolution: int) -> dict[str, Entry]:
        """Every entry at input resolution ``resolution`` by its key (see :meth:`all_lut_entries`)."""
        hit = self._by_key_cache.get(resolution)
        if hit is None:
            hit = {e.key: e for e in self.all_lut_entries([resolution])}
            self._by_key_cache[resolution] = hit
        return dict(hit)

    def entry_for_key(self, key: str, resolution: int) -> Entry:
        """The entry of this space with OFA key ``key`` at input resolution ``resolution`` (for importing
        OFA's YAML tables). Raises SpaceError if the space has no such entry."""
        entry = self._by_key_cache.get(resolution, {}).get(key) or self.entries_by_key(resolution).get(key)
        if entry is None:
            raise SpaceError(
                f"LUT key {key!r} is not an entry of space {self.name} at resolution {resolution}"
            )
        return entry

    def block_table(
        self, value: Callable[[Entry], Any], resolutions: Iterable[int], *, dtype: Any = np.float64
    ) -> np.ndarray:
        """``value(entry)`` of every elastic block for every choice, by block position: an array of shape
        ``(len(resolutions), n_blocks, len(ks_choices), len(e_choices), *shape of value)``, so that the
        blocks of many architectures are one gather ``table[ri[:, None], arange(n_blocks), ks_index,
        e_index]`` masked by :meth:`active_mask`. This is the one place that walks (stage, block, kernel,
        expand): LUT sums, MACs, parameters and predictor features all gather from it.

        ``value`` is called once per distinct entry (a stage's later blocks share one). ``dtype=object``
        keeps strings (e.g. ``lambda e: e.key``). Raises SpaceError for resolutions not in the space."""
        rs = tuple(int(r) for r in resolutions)
        memo: dict[tuple[int, bool, int, int, int], Any] = {}

        def cell(b: int, ks: int, e: int, r: int) -> Any:
            s, j = divmod(b, self.max_depth)
            ident = (s, j == 0, ks, e, r)
            if ident not in memo:
                memo[ident] = value(self.block_entry(s, j == 0, ks, e, r))
            return memo[ident]

        nested = [
            [[[cell(b, ks, e, r) for e in self.e_choices] for ks in self.ks_choices] for b in range(self.n_blocks)]
            for r in rs
        ]
        return np.asarray(nested, dtype=dtype)

    def choice_indices(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(kernel index, expand index), each (n, n_blocks), of validated array-form values: the positions
        in ``ks_choices`` / ``e_choices`` that :meth:`block_table` is indexed by."""
        return (
            np.searchsorted(np.asarray(self.ks_choices), arrays["ks"]),
            np.searchsorted(np.asarray(self.e_choices), arrays["e"]),
        )

    def sum_entries(self, arrays: Mapping[str, np.ndarray], value: Callable[[Entry], float]) -> np.ndarray:
        """Vectorised sum over each architecture's entries: for every row of the array form, the sum of
        ``value(entry)`` over :meth:`lut_entries` of that arch, as float64 (n,).

        ``value`` is called once per entry of :meth:`all_lut_entries` at the resolutions present (so a
        LUT lookup ``lambda e: lut[(e.key, e.resolution)]`` gives LUT-sum latencies, ``lambda e: e.macs``
        MACs). Raises ArchError for invalid arrays.
        """
        a = self.check_arrays(arrays)
        ks_idx, e_idx = self.choice_indices(a)
        active = self.active_mask(a["d"])
        rs = np.unique(a["r"]).tolist()
        table = self.block_table(value, rs)
        positions = np.arange(self.n_blocks)[None, :]
        out = np.zeros(a["r"].shape[0], dtype=np.float64)
        for ri, r in enumerate(rs):
            rows = np.flatnonzero(a["r"] == r)
            fixed = math.fsum(value(x) for x in self.fixed_entries(r))
            vals = table[ri][positions, ks_idx[rows], e_idx[rows]]
            out[rows] = fixed + np.where(active[rows], vals, 0.0).sum(axis=1)
        return out

    # ---- MACs and parameters -------------------------------------------------------------------------

    def macs(self, arch: Arch | Mapping[str, Any] | str) -> int:
        """Multiply-accumulates of the subnet, counted as OFA's ``count_flops_given_config`` / thop-style
        Conv2d and Linear hooks count them: every conv (stem, expansion, depthwise, SE reduce/expand,
        projection, final expand, feature mix) as ``out_h * out_w * out_c * in_c / groups * k * k`` and the
        classifier as ``in * out``. BN, activations, pooling, residual additions and biases are not
        counted. See :attr:`Entry.macs`."""
        return sum(e.macs for e in self.lut_entries(arch))

    def params(self, arch: Arch | Mapping[str, Any] | str) -> int:
        """Trainable parameters of the subnet (``sum(p.numel() for p in subnet.parameters())``): conv and
        linear weights and biases and BN affine weights/biases; BN running statistics not counted."""
        return sum(e.params for e in self.lut_entries(arch))

    def macs_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`macs` of every row of the array form (int64)."""
        return np.rint(self.sum_entries(arrays, lambda e: float(e.macs))).astype(np.int64)

    def params_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`params` of every row of the array form (int64)."""
        return np.rint(self.sum_entries(arrays, lambda e: float(e.params))).astype(np.int64)

    # ---- torch ---------------------------------------------------------------------------------------

    def build_subnet(
        self, arch: Arch | Mapping[str, Any] | str, *, n_classes: int | None = None, dropout_rate: float = 0.0
    ) -> MobileNetV3:
        """The standalone subnet of ``arch`` as a :class:`blocks.MobileNetV3` (OFA's module names, so OFA's
        ``get_active_subnet().state_dict()`` loads with ``strict=True``), OFA's he_fout initialisation.
        ``n_classes`` overrides the classifier width (default: the space's); ``dropout_rate`` adds
        ``classifier.dropout`` (OFA trains with 0.1). Built entry by entry with :func:`build_entry`.
        Raises ArchError for an invalid arch."""
        from . import blocks

        entries = self.lut_entries(arch)
        modules = [build_entry(e, n_classes=n_classes, dropout_rate=dropout_rate) for e in entries]
        net = blocks.MobileNetV3(
            first_conv=modules[0],
            blocks=modules[1:-4],
            final_expand_layer=modules[-4],
            feature_mix_layer=modules[-2],
            classifier=modules[-1],
        )
        return blocks.init_weights(net)

    def build_entry(self, entry: Entry) -> nn.Module:
        """The module of one LUT entry (see :func:`build_entry`)."""
        return build_entry(entry)

    def entry_input(self, entry: Entry, batch: int = 1) -> torch.Tensor:
        """A random input for the entry's module (see :func:`entry_input`)."""
        return entry_input(entry, batch=batch)


def build_entry(entry: Entry, *, n_classes: int | None = None, dropout_rate: float = 0.0) -> nn.Module:
    """The torch module of one LUT entry, from the same classes the subnet is made of:
    ``Conv`` -> ``ConvLayer`` (3x3, BN, h_swish), ``expanded_conv`` -> ``ResidualBlock(MBConvLayer,
    IdentityLayer | None)``, ``Conv_1`` -> ``ConvLayer`` (1x1, BN, h_swish), ``AvgPool2D`` ->
    ``GlobalAvgPool``, ``Conv_2`` -> ``ConvLayer`` (1x1, no BN, no bias, h_swish, flattening its output),
    ``Logits`` -> ``LinearLayer``. Its input is ``(batch, *entry.input_shape)`` and its output
    ``(batch, *entry.output_shape)``. ``n_classes``/``dropout_rate`` apply to ``Logits`` only.
    Raises SpaceError for an unknown op."""
    from . import blocks

    op = entry.op
    if op == "Conv":
        return blocks.ConvLayer(
            entry.in_channels,
            entry.out_channels,
            kernel_size=entry.kernel,
            stride=entry.stride,
            act_func="h_swish",
        )
    if op == "expanded_conv":
        conv = blocks.MBConvLayer(
            entry.in_channels,
            entry.out_channels,
            kernel_size=entry.kernel,
            stride=entry.stride,
            mid_channels=entry.mid_channels,
            act_func="h_swish" if entry.hs else "relu",
            se_channels=entry.se_channels if entry.se else None,
        )
        shortcut = blocks.IdentityLayer() if entry.idskip else None
        return blocks.ResidualBlock(conv, shortcut)
    if op == "Conv_1":
        return blocks.ConvLayer(entry.in_channels, entry.out_channels, kernel_size=1, act_func="h_swish")
    if op == "AvgPool2D":
        return blocks.GlobalAvgPool()
    if op == "Conv_2":
        return blocks.ConvLayer(
            entry.in_channels,
            entry.out_channels,
            kernel_size=1,
            use_bn=False,
            act_func="h_swish",
            flatten=True,
        )
    if op == "Logits":
        out = entry.out_channels if n_classes is None else int(n_classes)
        return blocks.LinearLayer(entry.in_channels, out, dropout_rate=dropout_rate)
    raise SpaceError(f"unknown LUT op {op!r}; expected one of {list(OPS)}")


def entry_input(entry: Entry, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A standard-normal float32 input of shape ``(batch, *entry.input_shape)``, reproducible by ``seed``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *entry.input_shape), generator=gen)


# --------------------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> SearchSpace:
    """Add ``space`` to the registry under ``space.name``; raises SpaceError if the name is taken."""
    if space.name in _REGISTRY:
        raise SpaceError(f"search space {space.name!r} is already registered")
    _REGISTRY[space.name] = space
    return space


def list_spaces() -> list[str]:
    """Names of the registered spaces, sorted."""
    return sorted(_REGISTRY)


def get_space(name: str | SearchSpace) -> SearchSpace:
    """The registered space called ``name`` (a SearchSpace is returned as is).

    Raises SpaceError naming the close matches for an unknown name."""
    if isinstance(name, SearchSpace):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpaceError(f"unknown search space {name!r}{hint} (known: {', '.join(list_spaces())})") from None


def _ofa_mbv3(width_mult: float, resolutions: Sequence[int], what: str) -> SearchSpace:
    base = [16, 16, 24, 40, 80, 112, 160, 960, 1280]
    widths = [make_divisible(w * width_mult, CHANNEL_DIVISIBLE) for w in base]
    return SearchSpace(
        name=f"ofa-mbv3-w{width_mult:.1f}",
        description=f"OFA MobileNetV3 (OFAMobileNetV3, width_mult={width_mult}); {what}",
        stem_channels=widths[0],
        first_block_channels=widths[1],
        stage_widths=widths[2:7],
        stage_strides=[2, 2, 2, 1, 2],
        stage_acts=["relu", "relu", "h_swish", "h_swish", "h_swish"],
        stage_se=[False, True, False, True, True],
        final_expand_channels=widths[7],
        feature_mix_channels=widths[8],
        n_classes=1000,
        ks_choices=[3, 5, 7],
        e_choices=[3, 4, 6],
        d_choices=[2, 3, 4],
        resolutions=resolutions,
        lut_resolutions=[160, 176, 192, 208, 224],
        width_mult=width_mult,
    )


register_space(_ofa_mbv3(1.0, range(128, 225, 4), "resolutions 128-224 step 4"))
register_space(_ofa_mbv3(1.2, range(160, 225, 16), "resolutions 160-224 step 16 (OFA's tutorial space)"))
register_space(
    SearchSpace(
        name="compact",
        description="narrow OFA-MobileNetV3-style space at 32-48 px for CPU training on sklearn digits",
        stem_channels=16,
        first_block_channels=16,
        stage_widths=[24, 40, 64, 96],
        stage_strides=[1, 2, 2, 2],
        stage_acts=["relu", "relu", "h_swish", "h_swish"],
        stage_se=[False, True, False, True],
        final_expand_channels=384,
        feature_mix_channels=512,
        n_classes=10,
        ks_choices=[3, 5, 7],
        e_choices=[3, 4, 6],
        d_choices=[1, 2, 3],
        resolutions=[32, 40, 48],
        lut_resolutions=[32, 48],
    )
)


# --------------------------------------------------------------------------------------------------------
# Structure features: what a subnet costs the hardware, for learned latency predictors

#: The costs of one entry (see :func:`entry_costs`); each is summed over a group of entries.
ENTRY_COSTS = ("mmacs", "dw_mmacs", "dw3_mmacs", "dw5_mmacs", "dw7_mmacs", "mparams", "act_in_mb", "act_out_mb",
               "act_mid_mb", "layers")
#: The depthwise kernel sizes whose MACs are also a cost of their own (``dw<k>_mmacs``): a runtime's depthwise
#: convolution can cost far more per MAC at one kernel size than at another (LiteRT, one thread, on this
#: project's development CPU: 447 us per MMAC at 7x7 against 48 at 5x5 and 44 at 3x3, where ONNX Runtime
#: takes 29-66 at every size; ``benchmarks/bench_depthwise.py``, BENCHMARKS.md).
DW_KERNELS = (3, 5, 7)


def entry_costs(entry: Entry) -> tuple[float, ...]:
    """The costs of one entry, in the order of :data:`ENTRY_COSTS`: MACs and their depthwise share (M), the
    depthwise MACs again at each kernel size of :data:`DW_KERNELS` (M; other kernel sizes count in
    ``dw_mmacs`` only), parameters (M), float32 activation bytes read and written by the entry (MB), the bytes
    of the expanded tensors inside a block (written and read again: MB), and 1 (a per-layer overhead)."""
    dw = mid = 0.0
    if entry.op == "expanded_conv":
        m = entry.mid_channels
        dw = float(entry.out_size**2 * m * entry.kernel**2)
        mid = 2.0 * entry.out_size**2 * m + (2.0 * entry.in_size**2 * m if entry.has_expand_conv else 0.0)
    by_kernel = tuple(dw / 1e6 if entry.kernel == k else 0.0 for k in DW_KERNELS)
    act_in = float(np.prod(entry.input_shape))
    act_out = float(np.prod(entry.output_shape))
    return (entry.macs / 1e6, dw / 1e6, *by_kernel, entry.params / 1e6, act_in * 4e-6, act_out * 4e-6, mid * 4e-6,
            1.0)


def block_costs(space: SearchSpace, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n, n_blocks, len(ENTRY_COSTS)) costs of every elastic block of each architecture of the array form
    (zeros for the blocks beyond a stage's depth). Raises ArchError for invalid arrays."""
    a = space.check_arrays(arrays)
    ks_idx, e_idx = space.choice_indices(a)
    rs = np.unique(a["r"]).tolist()
    table = space.block_table(entry_costs, rs)  # (R, B, K, E, costs)
    ri = np.searchsorted(np.asarray(rs), a["r"])
    out = table[ri[:, None], np.arange(space.n_blocks)[None, :], ks_idx, e_idx]
    return out * space.active_mask(a["d"])[:, :, None]


def fixed_costs(space: SearchSpace, resolutions: np.ndarray) -> np.ndarray:
    """(n, len(ENTRY_COSTS)) summed costs of the entries every subnet runs (stem, first block, head) at
    each input resolution of ``resolutions``."""
    r = np.asarray(resolutions, dtype=np.int64).reshape(-1)
    per_r = {int(v): np.sum([entry_costs(x) for x in space.fixed_entries(int(v))], axis=0) for v in np.unique(r)}
    return np.asarray([per_r[int(v)] for v in r], dtype=np.float64).reshape(len(r), len(ENTRY_COSTS))


def structure_features(space: SearchSpace, arrays: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Features that carry a subnet's cost structure, as (names, (n, len(names)) float64):

    - ``fixed.<cost>`` and ``stage<s>.<cost>`` for every cost of :data:`ENTRY_COSTS`: the sums over the
      fixed entries and over each stage's active blocks (additive: latency is about a non-negative
      combination of these);
    - ``stage<s>.depth``, ``stage<s>.kernel`` and ``stage<s>.expand`` (the mean kernel size and expand ratio
      of the stage's active blocks) and ``resolution``.

    Raises ArchError for invalid arrays."""
    a = space.check_arrays(arrays)
    blocks = block_costs(space, a)
    n, nc = a["r"].shape[0], len(ENTRY_COSTS)
    per_stage = blocks.reshape(n, space.n_stages, space.max_depth, nc).sum(axis=2)
    active = space.active_mask(a["d"]).reshape(n, space.n_stages, space.max_depth)
    depth = active.sum(axis=2)
    kernel = (a["ks"].reshape(n, space.n_stages, -1) * active).sum(axis=2) / depth
    expand = (a["e"].reshape(n, space.n_stages, -1) * active).sum(axis=2) / depth
    names = [f"fixed.{c}" for c in ENTRY_COSTS]
    names += [f"stage{s}.{c}" for s in range(space.n_stages) for c in ENTRY_COSTS]
    names += [f"stage{s}.{f}" for s in range(space.n_stages) for f in ("depth", "kernel", "expand")]
    names.append("resolution")
    shape = np.stack([depth, kernel, expand], axis=2).reshape(n, -1)
    x = np.concatenate([fixed_costs(space, a["r"]), per_stage.reshape(n, -1), shape, a["r"][:, None]], axis=1)
    return names, x.astype(np.float64)
