"""The LUT: one latency lookup table per (device, space, runtime, dtype, threads, batch), read from its file.

The file format and its parser live in :mod:`.lut_format`, the sidecars (per-run samples, per-operator
timings) in :mod:`.lut_sidecars`, the append-only writer with torn-tail recovery in :mod:`.lut_writer`; this
module holds :class:`LUT` and re-exports their public names, so ``from hwnas.profiler.lut import ...``
reaches all of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import LUTError
from .lut_format import (
    COMPARABILITY_FIELDS,
    DEFAULT_COLUMNS,
    FORMAT_LINE,
    FORMAT_PREFIX,
    ID_COLUMNS,
    MEASURE_COLUMNS,
    METADATA_END,
    OP_FIELDS,
    OPS_COLUMNS,
    OVERHEAD_KEY,
    OVERHEAD_OP,
    REQUIRED_COLUMNS,
    REQUIRED_METADATA,
    RESUME_FIELDS,
    SAMPLES_COLUMNS,
    STANDARD_METADATA,
    STAT_COLUMNS,
    _parse_rows,
    _split,
    atomic_write_text,
    csv_line,
    default_metadata,
    dotted_get,
    entry_row,
    format_value,
    is_latency_column,
    measure_cells,
    metadata_text,
    parse_key,
)
from .lut_sidecars import (
    is_sidecar,
    ops_path,
    read_ops,
    read_samples,
    samples_npz_path,
    samples_path,
)
from .lut_writer import (
    LUTWriter,
)


class LUT:
    """A latency lookup table: ``metadata`` (dict) and ``rows`` (DataFrame, one row per (key, resolution))."""

    def __init__(self, *, metadata: Mapping[str, Any], rows: pd.DataFrame, source: str | None = None) -> None:
        self.metadata: dict[str, Any] = dict(metadata)
        self.rows: pd.DataFrame = _normalise(rows)
        self.source = source or "<LUT>"
        self._index: dict[tuple[str, int], int] | None = None

    # ---- reading and writing

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LUT:
        """Read a LUT file; every problem is a one-line LUTError naming the file."""
        path = Path(path)
        if not path.exists():
            raise LUTError(f"{path}: no such LUT file")
        if path.is_dir():
            raise LUTError(f"{path}: is a directory, not a LUT file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LUTError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LUTError(f"{path}: not a LUT file (not UTF-8 text)") from exc
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "<LUT>") -> LUT:
        if "\x00" in text:
            raise LUTError(f"{source}: not a LUT file (binary content)")
        meta, header_line, csv_lines = _split(text, source)
        rows = _parse_rows(meta, header_line, csv_lines, source)
        return cls(metadata=meta, rows=rows, source=source)

    def to_text(self) -> str:
        cols = list(self.rows.columns)
        parts = [metadata_text(self.metadata), csv_line(cols)]
        for values in self.rows.itertuples(index=False, name=None):
            parts.append(csv_line(values))
        return "".join(parts)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temporary file + ``os.replace``); LUTError when the path is not writable."""
        self.validate()
        atomic_write_text(path, self.to_text())
        self.source = str(path)

    def validate(self) -> None:
        """Raise LUTError if the in-memory table would not read back (the same checks as ``load``)."""
        text = self.to_text()
        LUT.from_text(text, source=self.source)

    # ---- metadata

    @property
    def statistic(self) -> str:
        return str(self.metadata["statistic"])

    @property
    def space(self) -> str:
        return str(self.metadata["space"])

    @property
    def resolutions(self) -> list[int]:
        return [int(r) for r in self.metadata.get("resolutions") or []]

    # ---- rows

    def __len__(self) -> int:
        return len(self.rows)

    def _idx(self) -> dict[tuple[str, int], int]:
        if self._index is None:
            keys = self.rows["key"].tolist()
            res = self.rows["resolution"].astype(int).tolist()
            self._index = {(k, r): i for i, (k, r) in enumerate(zip(keys, res, strict=True))}
        return self._index

    def keys(self) -> list[tuple[str, int]]:
        """(key, resolution) of every row, in file order."""
        return list(self._idx())

    def __contains__(self, item: object) -> bool:
        return item in self._idx()

    def has(self, key: str, resolution: int) -> bool:
        return (key, int(resolution)) in self._idx()

    def latency(self, key: str, resolution: int, column: str | None = None) -> float:
        """The value of ``column`` (default: the LUT's statistic) of one row; LUTError when absent."""
        column = column or self.statistic
        i = self._idx().get((key, int(resolution)))
        if i is None:
            raise LUTError(f"{self.source}: no entry {key!r} at resolution {int(resolution)}")
        if column not in self.rows.columns:
            raise LUTError(f"{self.source}: no column {column!r}")
        return float(self.rows[column].iat[i])

    def values(self, column: str | None = None) -> dict[tuple[str, int], float]:
        """``{(key, resolution): value}`` of ``column`` (default: the statistic)."""
        column = column or self.statistic
        if column not in self.rows.columns:
            raise LUTError(f"{self.source}: no column {column!r}")
        return dict(zip(self._idx(), self.rows[column].astype(float).tolist(), strict=True))

    def row(self, key: str, resolution: int) -> dict[str, Any]:
        i = self._idx().get((key, int(resolution)))
        if i is None:
            raise LUTError(f"{self.source}: no entry {key!r} at resolution {int(resolution)}")
        return {c: _scalar(v) for c, v in self.rows.iloc[i].items()}

    def latency_columns(self) -> list[str]:
        return [c for c in self.rows.columns if is_latency_column(c)]

    # ---- sidecars

    def samples(self) -> dict[tuple[str, int], np.ndarray] | None:
        """Per-run samples from ``NAME.samples.csv`` / ``NAME.samples.npz`` beside the file, if any."""
        if self.source.startswith("<"):
            return None
        return read_samples(self.source)

    def ops(self) -> pd.DataFrame | None:
        """Per-operator timings from ``NAME.ops.csv`` beside the file, if any."""
        if self.source.startswith("<"):
            return None
        return read_ops(self.source)


def _normalise(rows: pd.DataFrame) -> pd.DataFrame:
    """Integer-valued float columns (op fields with gaps, ``runs``) as nullable ints, so that they are
    written as ``24``, not ``24.0``; latency columns as float64."""
    rows = rows.reset_index(drop=True).copy()
    for col in rows.columns:
        if is_latency_column(col):
            if rows[col].dtype != np.float64:
                rows[col] = pd.to_numeric(rows[col], errors="coerce").astype(np.float64)
            continue
        if col in ("key", "op"):
            continue
        series = rows[col]
        if pd.api.types.is_float_dtype(series) or series.dtype == object:
            present = series.dropna()
            if len(present) and all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and float(v).is_integer()
                for v in present
            ):
                if col in ("resolution", "runs") and len(present) == len(series):
                    rows[col] = series.astype(np.int64)
                else:
                    rows[col] = pd.array([None if pd.isna(v) else int(v) for v in series], dtype="Int64")
    return rows


def _scalar(value: Any) -> Any:
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = [
    "COMPARABILITY_FIELDS",
    "DEFAULT_COLUMNS",
    "FORMAT_LINE",
    "FORMAT_PREFIX",
    "ID_COLUMNS",
    "LUT",
    "LUTWriter",
    "MEASURE_COLUMNS",
    "METADATA_END",
    "OPS_COLUMNS",
    "OP_FIELDS",
    "OVERHEAD_KEY",
    "OVERHEAD_OP",
    "REQUIRED_COLUMNS",
    "REQUIRED_METADATA",
    "RESUME_FIELDS",
    "SAMPLES_COLUMNS",
    "STANDARD_METADATA",
    "STAT_COLUMNS",
    "atomic_write_text",
    "csv_line",
    "default_metadata",
    "dotted_get",
    "entry_row",
    "format_value",
    "is_latency_column",
    "is_sidecar",
    "measure_cells",
    "metadata_text",
    "ops_path",
    "parse_key",
    "read_ops",
    "read_samples",
    "samples_npz_path",
    "samples_path",
]
