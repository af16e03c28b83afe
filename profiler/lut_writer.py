"""The append-only LUT writer used while profiling: a crash loses nothing already written (torn-tail recovery
on resume, durable appends, sidecars kept in step, an atomic rewrite at the end)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .errors import LUTError
from .lut_format import (
    DEFAULT_COLUMNS,
    MEASURE_COLUMNS,
    OPS_COLUMNS,
    REQUIRED_COLUMNS,
    RESUME_FIELDS,
    SAMPLES_COLUMNS,
    _plain,
    _split,
    atomic_write_text,
    csv_line,
    dotted_get,
    metadata_text,
)
from .lut_sidecars import ops_path, samples_path

if TYPE_CHECKING:
    from .lut import LUT

log = logging.getLogger(__name__)


def _drop_torn_tail(path: Path, n_fields: int | None) -> int:
    """Cut a torn last line (no newline, or the wrong field count) off an append-only file; lines dropped."""
    data = path.read_bytes()
    dropped = 0
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        data = data[:cut]
        dropped += 1
    if n_fields is not None and data:
        start = data.rstrip(b"\n").rfind(b"\n") + 1
        last = data[start:]
        if not last.startswith(b"#"):
            try:
                row = next(csv.reader([last.decode("utf-8")]))
                ok = len(row) == n_fields and "\x00" not in last.decode("utf-8")
            except (UnicodeDecodeError, csv.Error, StopIteration):
                ok = False
            if not ok:
                data = data[:start]
                dropped += 1
    if dropped:
        with open(path, "r+b") as fh:
            fh.truncate(len(data))
            fh.flush()
            os.fsync(fh.fileno())
    return dropped


class LUTWriter:
    """Append-only writer used while profiling: a crash loses nothing already written.

    The header (format line, metadata, CSV header) is written at once, atomically; then every ``write``
    appends one row and flushes and fsyncs it. ``resume=True`` re-opens an existing file after checking
    that its metadata (``RESUME_FIELDS``) and columns match, drops a torn last line a crash may have left,
    and reports the (key, resolution) already done. ``finish`` rewrites the file atomically with the final
    metadata (temperature after, ...). Optional sidecars receive per-run samples and per-operator timings.

    Usage::

        with LUTWriter(path, metadata=meta, columns=cols, resume=True) as w:
            for entry in todo:
                if (entry.key, r) in w.done: continue
                w.write(entry_row(...), samples=runs_ms)
            lut = w.finish(metadata_updates={"temperatures_c": {...}})
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        metadata: Mapping[str, Any],
        columns: Sequence[str] = DEFAULT_COLUMNS,
        resume: bool = False,
        match_fields: Sequence[str] = RESUME_FIELDS,
        keep_samples: bool = False,
        keep_ops: bool = False,
    ) -> None:
        self.path = Path(path)
        self.metadata = _plain(dict(metadata))
        self.columns = list(columns)
        self.resume = resume
        self.match_fields = tuple(match_fields)
        self.keep_samples = keep_samples
        self.keep_ops = keep_ops
        for col in (*REQUIRED_COLUMNS, str(self.metadata.get("statistic"))):
            if col not in self.columns:
                raise ValueError(f"LUTWriter columns must include {col!r}")
        self.done: set[tuple[str, int]] = set()
        self.resumed = 0
        self._left_out: set[str] = set()  # measurement columns a resumed file was written without
        self._fh: IO[str] | None = None
        self._samples_fh: IO[str] | None = None
        self._ops_fh: IO[str] | None = None

    def __enter__(self) -> LUTWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- opening

    def open(self) -> set[tuple[str, int]]:
        """Create (or, with ``resume``, re-open) the file; returns the (key, resolution) already done."""
        if self._fh is not None:
            return self.done
        if self.resume and self.path.exists():
            self._reopen()
        else:
            self._start()
        self._fh = self._append(self.path)
        if self.keep_samples:
            self._samples_fh = self._append(samples_path(self.path))
        if self.keep_ops:
            self._ops_fh = self._append(ops_path(self.path))
        return self.done

    def _append(self, path: Path) -> IO[str]:
        try:
            return open(path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise LUTError(f"{path}: cannot write ({exc.strerror or exc})") from exc

    def _start(self) -> None:
        if str(self.path.parent) and not self.path.parent.is_dir():
            raise LUTError(f"{self.path}: cannot write (no such folder {self.path.parent})")
        atomic_write_text(self.path, metadata_text(self.metadata) + csv_line(self.columns))
        for keep, side, cols in (
            (self.keep_samples, samples_path(self.path), SAMPLES_COLUMNS),
            (self.keep_ops, ops_path(self.path), OPS_COLUMNS),
        ):
            if keep:
                atomic_write_text(side, csv_line(cols))
            elif side.exists():
                side.unlink()  # stale per-run data of an earlier table must not attach to the new one

    def _reopen(self) -> None:
        try:
            head = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise LUTError(f"{self.path}: cannot read ({exc.strerror or exc})") from exc
        meta, _, csv_lines = _split(head, str(self.path))
        header = next(csv.reader([csv_lines[0]])) if csv_lines else []
        dropped = _drop_torn_tail(self.path, len(header))
        if dropped:
            log.warning("%s: dropped %d torn line(s) left by an interrupted run", self.path, dropped)
        from .lut import LUT

        existing = LUT.load(self.path)
        diffs = [
            f"{f} {dotted_get(existing.metadata, f)!r} != {dotted_get(self.metadata, f)!r}"
            for f in self.match_fields
            if dotted_get(existing.metadata, f) != dotted_get(self.metadata, f)
        ]
        if diffs:
            raise LUTError(f"{self.path}: cannot resume, the file measured something else: {'; '.join(diffs)}")
        have = list(existing.rows.columns)
        if have != self.columns:
            # a file written before a measurement column (MEASURE_COLUMNS) existed is resumed without it:
            # what it holds stays, and the rows appended leave that column out
            missing = [c for c in self.columns if c not in have]
            if [c for c in self.columns if c in have] != have or any(c not in MEASURE_COLUMNS for c in missing):
                raise LUTError(
                    f"{self.path}: cannot resume, columns differ "
                    f"(file: {','.join(have)}; now: {','.join(self.columns)})"
                )
            log.info("%s: resumed without the column(s) %s it was written without", self.path, ", ".join(missing))
            self._left_out = set(missing)
            self.columns = have
        self.done = set(existing.keys())
        self.resumed = len(self.done)
        for keep, side, cols in (
            (self.keep_samples, samples_path(self.path), SAMPLES_COLUMNS),
            (self.keep_ops, ops_path(self.path), OPS_COLUMNS),
        ):
            if keep:
                self._trim_sidecar(side, cols)

    def _trim_sidecar(self, side: Path, cols: Sequence[str]) -> None:
        """Keep only sidecar rows of entries whose main row made it to the file (atomic rewrite)."""
        if not side.exists():
            atomic_write_text(side, csv_line(cols))
            return
        _drop_torn_tail(side, len(cols))
        with open(side, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or rows[0] != list(cols):
            atomic_write_text(side, csv_line(cols))
            return
        keep = [r for r in rows[1:] if len(r) == len(cols) and (r[0], _int_or_none(r[1])) in self.done]
        if len(keep) != len(rows) - 1:
            atomic_write_text(side, csv_line(cols) + "".join(csv_line(r) for r in keep))

    # ---- writing

    def write(
        self,
        row: Mapping[str, Any],
        *,
        samples: Sequence[float] | np.ndarray | None = None,
        ops: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Append one row (and its per-run samples / per-operator timings) durably."""
        if self._fh is None:
            self.open()
        assert self._fh is not None
        unknown = [c for c in row if c not in self.columns and c not in self._left_out]
        if unknown:
            raise ValueError(f"row has columns the LUT does not: {unknown}")
        ident = (str(row["key"]), int(row["resolution"]))
        if ident in self.done:
            raise LUTError(f"{self.path}: entry {ident[0]} at resolution {ident[1]} is already in the file")
        if self._samples_fh is not None and samples is not None:
            lines = [csv_line((ident[0], ident[1], i, float(v))) for i, v in enumerate(np.asarray(samples).ravel())]
            self._durable(self._samples_fh, "".join(lines))
        if self._ops_fh is not None and ops is not None:
            lines = [csv_line((ident[0], ident[1], *(o.get(c) for c in OPS_COLUMNS[2:]))) for o in ops]
            self._durable(self._ops_fh, "".join(lines))
        self._durable(self._fh, csv_line(row.get(c) for c in self.columns))
        self.done.add(ident)

    @staticmethod
    def _durable(fh: IO[str], text: str) -> None:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())

    def close(self) -> None:
        for attr in ("_fh", "_samples_fh", "_ops_fh"):
            fh = getattr(self, attr)
            if fh is not None:
                fh.close()
                setattr(self, attr, None)

    def finish(self, *, metadata_updates: Mapping[str, Any] | None = None) -> LUT:
        """Close, then rewrite the file atomically with the final metadata; returns the table."""
        from .lut import LUT

        self.close()
        lut = LUT.load(self.path)
        meta = dict(lut.metadata)
        meta.update(_plain(dict(metadata_updates or {})))
        lut.metadata = meta
        lut.save(self.path)
        return lut


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
