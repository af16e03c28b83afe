"""Load once-for-all's published MobileNetV3 supernets into :class:`OFASupernet`.

OFA publishes ``ofa_mbv3_d234_e346_k357_w1.0`` and ``..._w1.2``: ``torch.save({"state_dict": ...})`` of
``OFAMobileNetV3`` (sometimes wrapped by ``DataParallel``, i.e. keys prefixed ``module.``). Our
``ofa-mbv3-w1.0`` / ``ofa-mbv3-w1.2`` supernets have the same parameter names and shapes, so the state
dict loads as it is; :func:`convert_ofa_state_dict` also accepts the variants OFA's own
``OFAMobileNetV3.load_state_dict`` accepts (``.mobile_inverted_conv.`` for ``.conv.``, static vs dynamic
naming of BN, conv and linear layers: ``.bn.`` vs ``.bn.bn.``, ``.conv.weight`` vs ``.conv.conv.weight``,
``.linear.`` vs ``.linear.linear.``) and fills ``num_batches_tracked`` buffers missing from files saved by
old PyTorch versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .elastic import OFASupernet
from .errors import CheckpointError
from .spaces import SearchSpace, get_space

__all__ = ["OFA_SPACES", "convert_ofa_state_dict", "detect_space", "load_ofa_supernet", "read_ofa_state_dict"]

#: The spaces whose supernets are OFA's ``OFAMobileNetV3`` (and their published checkpoint names).
OFA_SPACES = {
    "ofa-mbv3-w1.0": "ofa_mbv3_d234_e346_k357_w1.0",
    "ofa-mbv3-w1.2": "ofa_mbv3_d234_e346_k357_w1.2",
}


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _candidates(key: str) -> list[str]:
    """Names a key of an OFA file may have in our state dict, first choice first."""
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    out = [key]
    swaps = [
        (".bn.bn.", ".bn."), (".bn.", ".bn.bn."),
        (".conv.conv.weight", ".conv.weight"), (".conv.weight", ".conv.conv.weight"),
        (".linear.linear.", ".linear."), (".linear.", ".linear.linear."),
    ]
    for old, new in swaps:
        if old in key:
            out.append(key.replace(old, new))
    return out


def convert_ofa_state_dict(state_dict: Mapping[str, Any], space: str | SearchSpace) -> dict[str, torch.Tensor]:
    """OFA's ``OFAMobileNetV3`` state dict (any of the naming variants above) with our keys for ``space``.

    Raises CheckpointError naming the first key that fits nowhere, has another shape, or is missing."""
    sp = get_space(space)
    if sp.name not in OFA_SPACES:
        raise CheckpointError(f"space {sp.name} is not one of OFA's MobileNetV3 spaces {sorted(OFA_SPACES)}")
    src = _strip_prefix(state_dict)
    n_classes = _n_classes(src, sp)
    target = OFASupernet(sp, n_classes=n_classes).state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"OFA state dict entry {key!r} is not a tensor")
        name = next((c for c in _candidates(key) if c in target), None)
        if name is None:
            raise CheckpointError(f"OFA state dict key {key!r} has no counterpart in the {sp.name} supernet")
        if tuple(value.shape) != tuple(target[name].shape):
            raise CheckpointError(
                f"OFA state dict key {key!r}: shape {tuple(value.shape)}, the {sp.name} supernet has "
                f"{tuple(target[name].shape)} (another width multiplier?)"
            )
        out[name] = value
    for name, value in target.items():
        if name not in out:
            if name.endswith("num_batches_tracked"):
                out[name] = torch.zeros_like(value)
            else:
                raise CheckpointError(f"OFA state dict lacks {name!r} of the {sp.name} supernet")
    return out


def _n_classes(state_dict: Mapping[str, Any], sp: SearchSpace) -> int:
    for key in ("classifier.linear.weight", "classifier.linear.linear.weight"):
        w = state_dict.get(key)
        if isinstance(w, torch.Tensor) and w.ndim == 2:
            return int(w.shape[0])
    return sp.n_classes


def detect_space(state_dict: Mapping[str, Any]) -> str:
    """The OFA space (``ofa-mbv3-w1.0`` or ``ofa-mbv3-w1.2``) whose supernet the state dict fits.

    Raises CheckpointError if it fits neither."""
    reasons = []
    for name in OFA_SPACES:
        try:
            convert_ofa_state_dict(state_dict, name)
            return name
        except CheckpointError as exc:
            reasons.append(f"{name}: {exc}")
    raise CheckpointError("not an OFA MobileNetV3 supernet state dict (" + "; ".join(reasons) + ")")


def read_ofa_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The state dict in an OFA checkpoint file (``{"state_dict": ...}`` or the bare dict).

    Reads with ``weights_only=True`` unless ``allow_pickle`` (arbitrary pickles run code: only for files
    you trust). Raises CheckpointError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such OFA checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as exc:  # torch/pickle raise many kinds of errors for foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read as an OFA checkpoint ({first[:160]})") from None
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a state dict or {{'state_dict': ...}}, got {type(data).__name__}")
    return dict(data)


def load_ofa_supernet(
    source: str | Path | Mapping[str, Any], space: str | SearchSpace | None = None, *, allow_pickle: bool = False
) -> OFASupernet:
    """An :class:`OFASupernet` holding OFA's weights, in eval mode, from a checkpoint path or a state dict.

    ``space``: ``ofa-mbv3-w1.0`` or ``ofa-mbv3-w1.2`` (default: detected from the shapes). Raises
    CheckpointError when the weights do not fit."""
    sd = read_ofa_state_dict(source, allow_pickle=allow_pickle) if isinstance(source, str | Path) else dict(source)
    name = get_space(space).name if space is not None else detect_space(sd)
    converted = convert_ofa_state_dict(sd, name)
    net = OFASupernet(name, n_classes=_n_classes(_strip_prefix(sd), get_space(name)))
    net.load_state_dict(converted, strict=True)
    return net.eval()
