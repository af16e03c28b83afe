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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from exc


def read_archs_arrays(space: Any, path: str | Path, resolutions: Iterable[int] | None = None) -> dict[str, np.ndarray]:
    """Architectures from a JSON-lines file (one arch per line; blank lines skipped) in the space's array
    form (``ks, e, d, r``), read by :meth:`SearchSpace.parse_lines`.

    Raises ArchError naming the file and line of the first bad one, UsageError for an unreadable or empty
    file."""
    path = Path(path)
    try:
        arrays = space.parse_lines(_read_text(path).splitlines(), resolutions)
    except ArchError as exc:
        raise ArchError(f"{path} {exc}") from None
    if not len(arrays["r"]):
        raise UsageError(f"{path}: no architectures in the file")
    return arrays


def read_archs(space: Any, path: str | Path, resolutions: Iterable[int] | None = None) -> list[Any]:
    """:func:`read_archs_arrays` as a list of the space's ``Arch``."""
    return space.archs_from_arrays(read_archs_arrays(space, path, resolutions))
