"""Import and export once-for-all's YAML latency lookup tables, losslessly.

OFA keeps one YAML file per input resolution, ``{R}_lookup_table.yaml``, mapping each key to
``{count, mean, std}`` in ms (``ofa/tutorial/latency_table.py``: ``LatencyTable`` sums ``mean`` over a
subnet's keys). Imported, a file's rows become LUT rows with ``runs = count``, ``mean_ms = mean``,
``std_ms = std``, and the LUT's ``statistic`` is ``mean_ms`` so that predictions sum what OFA sums.
Exporting writes the same structure back (``yaml.safe_dump``, keys sorted as OFA's files are), so an
imported table exports to the very bytes it came from.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..supernet import get_space
from .errors import LUTError
from .lut import LUT, OP_FIELDS, OVERHEAD_KEY, atomic_write_text, default_metadata, entry_row

log = logging.getLogger(__name__)

__all__ = ["export_ofa", "import_ofa", "ofa_note10_dir", "read_ofa_yaml", "resolution_of"]

_FILE_RE = re.compile(r"^(\d+)_lookup_table\.ya?ml$")
_NOTE10_FILES = (*(f"{r}_lookup_table.yaml" for r in (160, 176, 192, 208, 224)), "acc_predictor.pth")
_CONV_RE = re.compile(r"^Conv-input:(\d+)x(\d+)x3-")


def ofa_note10_dir() -> Path:
    """The folder of OFA's published Note10 files shipped inside the package (``profiler/data/ofa-note10``):
    ``{160,176,192,208,224}_lookup_table.yaml`` and ``acc_predictor.pth`` (MIT, see its README.md).

    The one place that knows where they are; raises LUTError when the installation lacks one of them."""
    folder = Path(str(importlib.resources.files(__package__) / "data" / "ofa-note10"))
    missing = [name for name in _NOTE10_FILES if not (folder / name).is_file()]
    if missing:
        raise LUTError(f"{folder}: OFA's published Note10 files are missing ({', '.join(missing)}); reinstall hwnas")
    return folder


def read_ofa_yaml(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """One OFA table, ``{key: {"count", "mean", "std"}}``; LUTError with one line for any problem."""
    path = Path(path)
    if not path.is_file():
        raise LUTError(f"{path}: no such OFA lookup table")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LUTError(f"{path}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LUTError(f"{path}: not valid YAML{where}") from exc
    if not isinstance(data, dict) or not data:
        raise LUTError(f"{path}: not an OFA lookup table (expected a mapping of keys to {{count, mean, std}})")
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, dict) or "mean" not in value:
            raise LUTError(f"{path}: entry {key!r} is not {{count, mean, std}}")
        mean = value["mean"]
        if isinstance(mean, bool) or not isinstance(mean, (int, float)) or not math.isfinite(mean) or mean < 0:
            raise LUTError(f"{path}: entry {key!r}: 'mean' must be a non-negative number, got {mean!r}")
        count = value.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LUTError(f"{path}: entry {key!r}: 'count' must be a non-negative integer, got {count!r}")
        std = value.get("std")
        if std is not None and (isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std)):
            raise LUTError(f"{path}: entry {key!r}: 'std' must be a number, got {std!r}")
        extra = set(value) - {"count", "mean", "std"}
        if extra:
            raise LUTError(f"{path}: entry {key!r} has fields {sorted(extra)}; expected count, mean, std")
    return data


def resolution_of(path: str | os.PathLike[str], table: dict[str, Any]) -> int:
    """The input resolution of an OFA table: from ``NNN_lookup_table.yaml``, else from its stem key
    ``Conv-input:RxRx3-...``; LUTError when neither says or they disagree."""
    path = Path(path)
    from_name = None
    m = _FILE_RE.match(path.name)
    if m:
        from_name = int(m.group(1))
    from_key = None
    for key in table:
        k = _CONV_RE.match(key)
        if k and k.group(1) == k.group(2):
            if from_key is not None and from_key != int(k.group(1)):
                raise LUTError(f"{path}: stem keys of two resolutions ({from_key}, {k.group(1)})")
            from_key = int(k.group(1))
    if from_name is not None and from_key is not None and from_name != from_key:
        raise LUTError(f"{path}: file name says resolution {from_name} but the stem key says {from_key}")
    r = from_name if from_name is not None else from_key
    if r is None:
        raise LUTError(f"{path}: cannot tell the resolution (name it NNN_lookup_table.yaml)")
    return r


def import_ofa(yaml_paths: Sequence[str | os.PathLike[str]], space: Any) -> LUT:
    """A LUT from OFA's YAML tables (one per resolution), for ``space`` (name or object).

    Every key must be an entry of the space at its resolution (a table of another space is refused, not
    partly imported). The LUT's statistic is ``mean_ms``; ``runs`` = ``count``; ``std_ms`` = ``std``.
    Raises LUTError (bad or duplicate files, unknown keys) or SpaceError (unknown space).
    """
    sp = get_space(space)
    if not yaml_paths:
        raise LUTError("no OFA lookup tables given")
    tables: dict[int, tuple[Path, dict[str, Any]]] = {}
    for p in yaml_paths:
        path = Path(p)
        table = read_ofa_yaml(path)
        r = resolution_of(path, table)
        if r in tables:
            raise LUTError(f"{path}: resolution {r} given twice (also {tables[r][0]})")
        if r not in sp.resolutions:
            raise LUTError(f"{path}: resolution {r} is not one of the resolutions of {sp.name} {list(sp.resolutions)}")
        tables[r] = (path, table)
    with_std = all("std" in v and v["std"] is not None for _, t in tables.values() for v in t.values())
    if not with_std:
        log.warning("some OFA entries have no 'std'; the LUT gets no std_ms column")
    rows: list[dict[str, Any]] = []
    for r in sorted(tables):
        path, table = tables[r]
        order = {e.key: i for i, e in enumerate(sp.all_lut_entries([r]))}
        unknown = [k for k in table if k not in order]
        if unknown:
            raise LUTError(
                f"{path}: key {unknown[0]!r} is not an entry of space {sp.name} at resolution {r} "
                f"({len(unknown)} unknown keys; is this a table of another space?)"
            )
        for key in sorted(table, key=order.__getitem__):
            value = table[key]
            stats = {"mean_ms": float(value["mean"])}
            if with_std:
                stats["std_ms"] = float(value["std"])
            rows.append(entry_row(key, r, runs=int(value.get("count", 0)), stats=stats))
    meta = default_metadata(space=sp.name, resolutions=sorted(tables), statistic="mean_ms")
    meta["imported_from"] = {"format": "ofa-lookup-table", "files": [tables[r][0].name for r in sorted(tables)]}
    columns = ["key", "resolution", "op", *OP_FIELDS, "runs", "mean_ms"] + (["std_ms"] if with_std else [])
    df = pd.DataFrame(rows, columns=columns)
    lut = LUT(metadata=meta, rows=df, source="<imported OFA tables>")
    lut.validate()
    return lut


def ofa_tables(lut: LUT, *, column: str = "mean_ms") -> dict[int, dict[str, dict[str, Any]]]:
    """The LUT as OFA's per-resolution dicts ``{R: {key: {count, mean, std}}}`` (``mean`` from ``column``).

    The reserved ``Overhead-inference`` row has no OFA counterpart and is left out."""
    if column not in lut.rows.columns:
        raise LUTError(f"{lut.source}: no column {column!r} to export as OFA's 'mean'")
    has_std = "std_ms" in lut.rows.columns
    out: dict[int, dict[str, dict[str, Any]]] = {}
    keys = lut.rows["key"].tolist()
    res = lut.rows["resolution"].astype(int).tolist()
    runs = lut.rows["runs"].astype(int).tolist()
    means = lut.rows[column].astype(float).tolist()
    stds = lut.rows["std_ms"].astype(float).tolist() if has_std else [None] * len(keys)
    for key, r, n, mean, std in zip(keys, res, runs, means, stds, strict=True):
        if key == OVERHEAD_KEY:
            continue
        item: dict[str, Any] = {"count": n, "mean": mean}
        if std is not None and not math.isnan(std):
            item["std"] = std
        out.setdefault(r, {})[key] = item
    return out


def export_ofa(lut: LUT, out_dir: str | os.PathLike[str], *, column: str | None = None) -> list[Path]:
    """Write ``{R}_lookup_table.yaml`` per resolution into ``out_dir`` (created if missing); returns the files.

    OFA's ``mean`` comes from ``column`` (default: ``mean_ms`` when the LUT has it -- OFA's ``mean`` is a
    mean -- else the LUT's statistic); ``std`` from ``std_ms``; ``count`` from ``runs``. The reserved
    ``Overhead-inference`` row is left out (OFA has no such entry). Raises LUTError when the folder cannot be written."""
    if column is None:
        column = "mean_ms" if "mean_ms" in lut.rows.columns else lut.statistic
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LUTError(f"{out}: cannot create the folder ({exc.strerror or exc})") from exc
    files = []
    for r, table in sorted(ofa_tables(lut, column=column).items()):
        path = out / f"{r}_lookup_table.yaml"
        atomic_write_text(path, yaml.safe_dump(table, default_flow_style=False))
        files.append(path)
    return files


def ofa_yaml_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders into their ``*_lookup_table.yaml`` files; files are kept as given."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(path.glob("*_lookup_table.yaml")))
        else:
            out.append(path)
    return out
