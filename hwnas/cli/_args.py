"""Argument parsers shared by commands: ``--arch`` and ``--archs FILE.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.cli._app import UsageError
from hwnas.supernet.errors import ArchError

ARCH_HELP = "An arch as JSON, a file holding one, 'max', 'min' or 'random:SEED' of the space."


def resolve_arch(space: Any, text: str, resolutions: Iterable[int] | None = None) -> Any:
    """The architecture that ``--arch TEXT`` names, validated by ``space`` (returns its ``Arch``).

    ``TEXT`` is OFA's arch dict as JSON, a file holding one, ``max`` / ``min`` (at the largest / smallest of
    ``resolutions``, default the space's), or ``random:SEED`` (drawn from ``resolutions``).
    Raises ArchError for an invalid arch and UsageError for text that is none of these.
    """
    rs = sorted({int(r) for r in resolutions}) if resolutions is not None else None
    spec = text.strip()
    if spec == "max":
        return space.max_arch(rs[-1] if rs else None)
    if spec == "min":
        return space.min_arch(rs[0] if rs else None)
    if spec.startswith("random:") or spec == "random":
        seed_text = spec.partition(":")[2]
        try:
            seed = int(seed_text)
        except ValueError:
            raise UsageError(f"--arch {text!r}: expected random:SEED with an integer SEED") from None
        return space.sample(np.random.default_rng(seed), rs)
    if spec.startswith(("{", "[")):
        return space.parse(spec, rs)
    path = Path(spec)
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--arch {path}: cannot read ({exc})") from exc
        try:
            data = json.loads(content)
        except ValueError:
            raise ArchError(f"{path}: not a JSON arch (expected {{\"ks\": [...], \"e\": [...], \"d\": [...], \"r\": R}})") from None
        try:
            return space.parse(data, rs)
        except ArchError as exc:
            raise ArchError(f"{path}: {exc}") from None
    raise UsageError(f"--arch {text!r}: not JSON, not a file, and not max, min or random:SEED")


def read_archs(space: Any, path: str | Path, resolutions: Iterable[int] | None = None) -> list[Any]:
    """Architectures from a JSON-lines file (one arch per line; blank lines skipped), each validated.

    Raises ArchError naming the file and line of the first bad one, UsageError for an unreadable file."""
    path = Path(path)
    rs = sorted({int(r) for r in resolutions}) if resolutions is not None else None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from exc
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(space.parse(line, rs))
        except ArchError as exc:
            raise ArchError(f"{path} line {number}: {exc}") from None
    if not out:
        raise UsageError(f"{path}: no architectures in the file")
    return out


def read_archs_arrays(space: Any, path: str | Path, resolutions: Iterable[int] | None = None) -> dict[str, np.ndarray]:
    """Architectures from a JSON-lines file straight into the space's array form (``ks, e, d, r``).

    The fast path for many architectures: plain JSON decoding and one vectorised validation. Anything
    unusual falls back to :func:`read_archs`, whose per-line validation gives the precise message
    (ArchError naming the file, line and field)."""
    path = Path(path)
    rs = sorted({int(r) for r in resolutions}) if resolutions is not None else None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from exc
    ks: list[Any] = []
    e: list[Any] = []
    d: list[Any] = []
    r: list[Any] = []
    fields = {"ks", "e", "d", "r"}
    try:
        if "true" in text or "false" in text:
            raise ValueError("booleans")
        for line in text.splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if type(obj) is not dict or obj.keys() - {"wid"} != fields or obj.get("wid") is not None:
                raise ValueError("not a plain arch")
            rv = obj["r"]
            if type(rv) is list and len(rv) == 1:
                rv = rv[0]
            ks.append(obj["ks"])
            e.append(obj["e"])
            d.append(obj["d"])
            r.append(rv)
        arrays = {k: np.array(v) for k, v in (("ks", ks), ("e", e), ("d", d), ("r", r))}
        if not r or any(a.dtype.kind != "i" for a in arrays.values()):
            raise ValueError("not integers")
        arrays = space.check_arrays(arrays)
        if rs is not None and not np.isin(arrays["r"], rs).all():
            raise ValueError("resolution")
    except (ValueError, TypeError, KeyError):  # ArchError is a ValueError
        return space.arrays_from_archs(read_archs(space, path, resolutions))
    return arrays
