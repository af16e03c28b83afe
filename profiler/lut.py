"""The LUT file: one latency lookup table per (device, space, runtime, dtype, threads, batch).

Format (version 1), a text file diffable in git::

    # hwnas-lut 1
    # space: ofa-mbv3-w1.0
    # resolutions: [160, 224]
    # statistic: median_ms
    # runtime:
    #   name: onnxruntime
    # ...
    # ...
    key,resolution,op,input,output,expand,kernel,stride,idskip,se,hs,runs,median_ms,p10_ms,p90_ms,mean_ms,std_ms,min_ms
    Conv-input:160x160x3-output:80x80x24,160,Conv,160x160x3,80x80x24,,,,,,,50,0.91,0.88,0.97,0.92,0.03,0.87

- line 1 names the format and its version;
- then a YAML mapping, every line prefixed ``# ``, closed by the YAML document end ``# ...``;
- then CSV (header + one row per entry), so ``pandas.read_csv(path, comment="#")`` reads the rows.

Rows are identified by (``key``, ``resolution``): OFA's head keys repeat across resolutions. Columns:
``key, resolution, op``, the op fields parsed from the key (``input, output, expand, kernel, stride,
idskip, se, hs``; empty where an op has none), ``runs``, then latency statistics whose names end in their
unit (``median_ms, p10_ms, p90_ms, mean_ms, std_ms, min_ms``, ...). Floats are written with ``repr`` so
that they read back bit for bit.

Sidecars next to ``NAME.csv`` (optional): ``NAME.samples.csv`` (per-run samples, long format
``key,resolution,run,ms``) and ``NAME.ops.csv`` (per-operator timings inside each entry,
``key,resolution,node,op_type,provider,ms``).

The row key ``Overhead-inference`` (op ``overhead``) is reserved: a measured per-inference overhead that a
predictor adds once per network and resolution. It may be negative (work the runtime saves across entry
boundaries), unlike every other latency.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata as _metadata
import io
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import yaml

from ..agents.runtimes import COMPARABILITY_FIELDS
from ..supernet.files import atomic_write
from .errors import LUTError

log = logging.getLogger(__name__)

FORMAT_LINE = "# hwnas-lut 1"
FORMAT_PREFIX = "# hwnas-lut "
METADATA_END = "..."
OVERHEAD_KEY = "Overhead-inference"
OVERHEAD_OP = "overhead"

#: Metadata keys every LUT carries (``None`` where unknown), in the order they are written.
STANDARD_METADATA = (
    "space",
    "resolutions",
    "statistic",
    "runtime",
    "exporter",
    "dtype",
    "batch",
    "threads",
    "cores",
    "device",
    "temperatures_c",
    "noise_floor",
    "measurement",
    "reference",
    "hwnas_version",
    "date",
)
#: Metadata a file must have to be read at all.
REQUIRED_METADATA = ("space", "resolutions", "statistic")
#: Op fields parsed from OFA-schema keys (``name:value`` tokens), in column order.
OP_FIELDS = ("input", "output", "expand", "kernel", "stride", "idskip", "se", "hs")
ID_COLUMNS = ("key", "resolution", "op")
STAT_COLUMNS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "min_ms")
DEFAULT_COLUMNS = (*ID_COLUMNS, *OP_FIELDS, "runs", *STAT_COLUMNS)
REQUIRED_COLUMNS = ("key", "resolution", "op", "runs")
#: How sure each measured row is: ``ci`` (relative half-width of the statistic's 95% confidence interval,
#: a fraction; blank where unknown) and ``converged`` (``true`` when ``ci`` reached the precision target);
#: ``outliers`` (``true`` when a benchmark program's mean came from a run with outliers: max above 10x min,
#: or std above half the mean; see ``agents/bench_binary.outlier_reason``).
MEASURE_COLUMNS = ("ci", "converged", "outliers")
SAMPLES_COLUMNS = ("key", "resolution", "run", "ms")
OPS_COLUMNS = ("key", "resolution", "node", "op_type", "provider", "ms")
#: Metadata fields (dotted paths) that must agree before ``LUTWriter(resume=True)`` appends to a file: the
#: same list ``lut diff`` compares tables by (the runtime registry's).
RESUME_FIELDS = COMPARABILITY_FIELDS


# --------------------------------------------------------------------------------------------- helpers


def is_latency_column(name: str) -> bool:
    return name.endswith("_ms")


def samples_path(lut_path: str | os.PathLike[str]) -> Path:
    """``NAME.samples.csv`` beside ``NAME.csv``: per-run samples, one row per run."""
    p = Path(lut_path)
    return p.with_name(p.stem + ".samples.csv")


def samples_npz_path(lut_path: str | os.PathLike[str]) -> Path:
    """``NAME.samples.npz`` beside ``NAME.csv``: per-run samples as arrays ``key, resolution, ms``."""
    p = Path(lut_path)
    return p.with_name(p.stem + ".samples.npz")


def ops_path(lut_path: str | os.PathLike[str]) -> Path:
    """``NAME.ops.csv`` beside ``NAME.csv``: per-operator timings inside each entry."""
    p = Path(lut_path)
    return p.with_name(p.stem + ".ops.csv")


def is_sidecar(path: str | os.PathLike[str]) -> bool:
    name = Path(path).name
    return name.endswith((".samples.csv", ".ops.csv", ".samples.npz"))


def parse_key(key: str) -> dict[str, Any]:
    """Op and op fields of an OFA-schema key.

    ``expanded_conv-input:56x56x24-output:28x28x40-expand:96-kernel:5-stride:2-idskip:0-se:1-hs:0`` gives
    ``{"op": "expanded_conv", "input": "56x56x24", ..., "expand": 96, ...}``; integer values become ints.
    The reserved ``Overhead-inference`` key gives op ``overhead``. Tokens without ``:`` are ignored.
    """
    if key == OVERHEAD_KEY:
        return {"op": OVERHEAD_OP}
    parts = key.split("-")
    fields: dict[str, Any] = {"op": parts[0]}
    for token in parts[1:]:
        name, sep, value = token.partition(":")
        if not sep:
            continue
        fields[name] = int(value) if value.lstrip("-").isdigit() else value
    return fields


def entry_row(key: str, resolution: int, *, runs: int, stats: Mapping[str, float], op: str | None = None) -> dict[str, Any]:
    """One LUT row: id columns, op fields parsed from ``key``, ``runs`` and the given ``*_ms`` statistics."""
    fields = parse_key(key)
    row: dict[str, Any] = {"key": key, "resolution": int(resolution), "op": op or fields.pop("op")}
    fields.pop("op", None)
    for name in OP_FIELDS:
        row[name] = fields.get(name)
    row["runs"] = int(runs)
    for name, value in stats.items():
        if not is_latency_column(name):
            raise ValueError(f"statistic column {name!r} must end in its unit (e.g. '_ms')")
        row[name] = float(value)
    return row


def measure_cells(result: Mapping[str, Any]) -> dict[str, Any]:
    """A measurement result's ``ci``, ``converged`` and ``outliers`` as LUT cells."""
    ci = result.get("ci")
    return {
        "ci": None if ci is None or not math.isfinite(float(ci)) else float(ci),
        "converged": "true" if result.get("converged") else "false",
        "outliers": "true" if result.get("outliers") else "false",
    }


def default_metadata(*, space: str, resolutions: Sequence[int], statistic: str = "median_ms") -> dict[str, Any]:
    """Metadata with every standard key present (``None`` where not known yet), version and date filled."""
    try:
        version: str | None = _metadata.version("hwnas")
    except _metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = None
    meta: dict[str, Any] = dict.fromkeys(STANDARD_METADATA)
    meta.update(
        space=space,
        resolutions=[int(r) for r in resolutions],
        statistic=statistic,
        hwnas_version=version,
        date=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    )
    return meta


def dotted_get(meta: Mapping[str, Any], path: str) -> Any:
    """``dotted_get(meta, "runtime.version")``; ``None`` where any level is missing or not a mapping."""
    node: Any = meta
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _plain(obj: Any) -> Any:
    """Metadata as plain YAML-safe Python (numpy scalars and arrays, tuples, paths, dates)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (_dt.date, _dt.datetime)):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


class _MetaLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (dates stay the strings they were written as) and without
    aliases: hwnas never writes one, and a few nested ``*alias`` lines expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed in LUT metadata", event.start_mark
            )
        return super().compose_node(parent, index)


_MetaLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _MetaDumper(yaml.SafeDumper):
    """Block style, except lists of scalars (``resolutions: [160, 224]``) in flow style; never an alias (the
    reader refuses them); a string with a line break or a control character double-quoted on one line, so
    that nothing a device says can put a line of its own (``...``, ``---``) into the block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = '"' if _ONE_LINE.search(data) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_MetaDumper.add_representer(str, _represent_str)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict, tuple)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_MetaDumper.add_representer(list, _represent_list)


def metadata_text(meta: Mapping[str, Any]) -> str:
    """The metadata block (format line, ``# ``-prefixed YAML, end marker), newline-terminated."""
    ordered = {k: meta.get(k) for k in STANDARD_METADATA}
    ordered.update({k: v for k, v in meta.items() if k not in ordered})
    body = yaml.dump(
        _plain(ordered), Dumper=_MetaDumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100000
    )
    lines = [FORMAT_LINE] + [("# " + line) if line else "#" for line in body.splitlines()] + ["# " + METADATA_END]
    text = "\n".join(lines) + "\n"
    # validate what is written: its only end marker is the last line, no document marker, and it reads back
    bad = [line for line in body.splitlines() if line.strip() in (METADATA_END, "---")]
    if bad:
        raise LUTError(f"the LUT metadata would not read back as written (a line {bad[0]!r})")
    yaml.load(body, Loader=_MetaLoader)  # noqa: S506 - a SafeLoader subclass; raises on anything unreadable
    return text


def format_value(value: Any) -> str:
    """A CSV cell: ``repr`` for floats (reads back bit for bit), empty for missing."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def csv_line(values: Iterable[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([format_value(v) for v in values])
    return buf.getvalue()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` with the one atomic writer (:func:`hwnas.supernet.files.atomic_write`).

    Raises LUTError naming the path when it cannot be written.
    """
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise LUTError(f"{path}: cannot write ({exc.strerror or exc})") from exc


# ------------------------------------------------------------------------------------------------ parse


def _split(text: str, source: str) -> tuple[dict[str, Any], int, list[str]]:
    """Metadata, number of the CSV header line (1-based), and the CSV lines (with their newlines)."""
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].strip():
        raise LUTError(f"{source}: not a LUT file (empty; expected first line {FORMAT_LINE!r})")
    first = lines[0].rstrip("\r\n")
    if first != FORMAT_LINE:
        if first.startswith(FORMAT_PREFIX):
            raise LUTError(f"{source}: unsupported LUT format {first[2:]!r} (this hwnas reads {FORMAT_LINE[2:]!r})")
        raise LUTError(f"{source}: not a LUT file (first line must be {FORMAT_LINE!r}, got {first[:40]!r})")
    meta_lines: list[str] = []
    ended = False
    i = 1
    while i < len(lines) and lines[i].startswith("#"):
        content = lines[i].rstrip("\r\n")
        content = content[2:] if content.startswith("# ") else content[1:]
        i += 1
        if content == METADATA_END:  # exactly: an indented "..." inside a value is not the end
            ended = True
            # further comment lines before the CSV header are ignored, as pandas(comment="#") does
            while i < len(lines) and lines[i].startswith("#"):
                i += 1
            break
        meta_lines.append(content)
    if i >= len(lines) and not ended:
        raise LUTError(f"{source}: truncated metadata (no end marker '# {METADATA_END}' and no rows header)")
    try:
        meta = yaml.load("\n".join(meta_lines), Loader=_MetaLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise LUTError(f"{source}: garbled metadata{where} ({problem})") from exc
    if not isinstance(meta, dict):
        raise LUTError(f"{source}: garbled metadata (expected a YAML mapping, got {type(meta).__name__})")
    missing = [k for k in REQUIRED_METADATA if meta.get(k) in (None, "", [])]
    if missing:
        hint = " (truncated?)" if not ended else ""
        raise LUTError(f"{source}: metadata lacks {', '.join(missing)}{hint}")
    if not isinstance(meta["space"], str):
        raise LUTError(f"{source}: metadata 'space' must be a space name, got {meta['space']!r}")
    stat = meta["statistic"]
    if not isinstance(stat, str) or not is_latency_column(stat):
        raise LUTError(f"{source}: metadata 'statistic' must name a latency column such as 'median_ms', got {stat!r}")
    res = meta["resolutions"]
    if not isinstance(res, list) or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in res):
        raise LUTError(f"{source}: metadata 'resolutions' must be a list of positive integers, got {res!r}")
    if i >= len(lines):
        raise LUTError(f"{source}: no rows header after the metadata (truncated?)")
    return meta, i + 1, lines[i:]


def _check_fields(csv_lines: list[str], header_line: int, source: str) -> list[str]:
    """Header names; raises LUTError for a row with the wrong number of fields."""
    reader = csv.reader(io.StringIO("".join(csv_lines)))
    try:
        header = next(reader)
    except StopIteration as exc:  # pragma: no cover - _split guarantees a header line
        raise LUTError(f"{source}: no rows header") from exc
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise LUTError(f"{source}: line {header_line}: column {dup!r} appears twice in the header")
    n = len(header)
    last_complete = csv_lines[-1].endswith("\n")
    try:
        for row in reader:
            line = header_line + reader.line_num - 1
            if not row:
                continue
            if len(row) != n:
                torn = line == header_line + len(csv_lines) - 1 and not last_complete
                why = " (truncated last row; the file was cut while being written)" if torn else ""
                raise LUTError(f"{source}: line {line}: expected {n} fields, got {len(row)}{why}")
    except csv.Error as exc:
        raise LUTError(f"{source}: garbled CSV near line {header_line + reader.line_num - 1} ({exc})") from exc
    return header


def _floats(cells: list[str]) -> tuple[np.ndarray, int | None]:
    """Cells as floats (NaN for blanks) with Python's correctly rounded ``float``; position of the first
    non-numeric cell, if any."""
    out = np.full(len(cells), np.nan)
    bad: int | None = None
    for i, cell in enumerate(cells):
        cell = cell.strip()
        if not cell:
            continue
        try:
            out[i] = float(cell)
        except ValueError:
            if bad is None:
                bad = i
    return out, bad


def _parse_rows(meta: dict[str, Any], header_line: int, csv_lines: list[str], source: str) -> pd.DataFrame:
    header = _check_fields(csv_lines, header_line, source)
    stat = meta["statistic"]
    missing = [c for c in (*REQUIRED_COLUMNS, stat) if c not in header]
    if missing:
        raise LUTError(f"{source}: missing columns: {', '.join(missing)} (header at line {header_line})")
    try:
        df = pd.read_csv(
            io.StringIO("".join(csv_lines)),
            dtype=str,
            keep_default_na=False,
            na_values=[],
            skip_blank_lines=True,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise LUTError(f"{source}: garbled CSV ({str(exc).strip().splitlines()[0]})") from exc
    df.columns = [c.strip() for c in df.columns]
    lines = header_line + 1 + np.arange(len(df))  # file line of each row (blank lines are not expected)

    def fail(col: str, pos: int, what: str) -> LUTError:
        return LUTError(f"{source}: line {int(lines[pos])}: {what} in column {col!r}")

    empty_key = np.flatnonzero(df["key"].str.strip() == "")
    if len(empty_key):
        raise fail("key", int(empty_key[0]), "empty key")
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        raw = df[col]
        blank = raw.str.strip() == ""
        if col in ("key", "op"):
            out[col] = raw.astype(object)
            continue
        values, bad = _floats(raw.tolist())
        if col in ("resolution", "runs") or is_latency_column(col):
            if bad is not None:
                raise fail(col, bad, f"non-numeric value {raw.iloc[bad]!r}")
            holes = np.flatnonzero(blank.to_numpy())
            if len(holes):
                raise fail(col, int(holes[0]), "missing value")
            nonfinite = np.flatnonzero(~np.isfinite(values))
            if len(nonfinite):
                raise fail(col, int(nonfinite[0]), f"non-finite value {raw.iloc[int(nonfinite[0])]!r}")
            if col in ("resolution", "runs"):
                frac = np.flatnonzero((values != np.round(values)) | (values < (1 if col == "resolution" else 0)))
                if len(frac):
                    kind = "a positive integer" if col == "resolution" else "a non-negative integer"
                    raise fail(col, int(frac[0]), f"expected {kind}, got {raw.iloc[int(frac[0])]!r}")
                out[col] = values.astype(np.int64)
            else:
                negative = (values < 0) & (df["key"].to_numpy() != OVERHEAD_KEY)
                neg = np.flatnonzero(negative)
                if len(neg):
                    raise fail(col, int(neg[0]), f"negative latency {raw.iloc[int(neg[0])]!r}")
                out[col] = values
            continue
        # op fields and extra columns: integers where every present value is an integer, else text
        present = values[~blank.to_numpy()]
        if bad is None and len(present) and np.all(np.isfinite(present)) and np.all(present == np.round(present)):
            out[col] = pd.array([None if b else int(v) for v, b in zip(values, blank, strict=True)], dtype="Int64")
        elif bad is None and len(present):
            out[col] = values
        else:
            out[col] = raw.where(~blank, None).astype(object)
    dup = out.duplicated(subset=["key", "resolution"], keep=False)
    if dup.any():
        pos = np.flatnonzero(dup.to_numpy())
        key, res = out["key"].iloc[pos[0]], int(out["resolution"].iloc[pos[0]])
        same = pos[(out["key"].iloc[pos] == key).to_numpy() & (out["resolution"].iloc[pos] == res).to_numpy()]
        raise LUTError(
            f"{source}: duplicate row ({key}, {res}) at lines {int(lines[same[0]])} and {int(lines[same[1]])}"
        )
    return out.reset_index(drop=True)


# -------------------------------------------------------------------------------------------------- LUT


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


def read_samples(lut_path: str | os.PathLike[str]) -> dict[tuple[str, int], np.ndarray] | None:
    """Per-run samples of a LUT from its sidecar, ``{(key, resolution): ms array}``; ``None`` if none."""
    csv_path, npz_path = samples_path(lut_path), samples_npz_path(lut_path)
    if csv_path.is_file():
        try:
            df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, ValueError, OSError) as exc:
            raise LUTError(f"{csv_path}: garbled samples file ({exc})") from exc
        if not {"key", "resolution", "ms"} <= set(df.columns):
            raise LUTError(f"{csv_path}: samples file needs columns key, resolution, ms")
        ms, bad = _floats(df["ms"].tolist())
        res_f, bad_r = _floats(df["resolution"].tolist())
        if bad is not None or bad_r is not None:
            raise LUTError(f"{csv_path}: line {(bad if bad is not None else bad_r) + 2}: non-numeric value")
        keys, res = df["key"].to_numpy(), res_f.astype(np.int64)
    elif npz_path.is_file():
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                keys, res, ms = z["key"].astype(str), z["resolution"], z["ms"].astype(float)
        except (OSError, KeyError, ValueError) as exc:
            raise LUTError(f"{npz_path}: garbled samples file ({exc})") from exc
    else:
        return None
    out: dict[tuple[str, int], list[float]] = {}
    for k, r, v in zip(keys.tolist(), res.tolist(), ms.tolist(), strict=True):
        if math.isfinite(v):
            out.setdefault((str(k), int(r)), []).append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def read_ops(lut_path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The per-operator sidecar of a LUT (columns key, resolution, node, op_type, provider, ms) or ``None``."""
    path = ops_path(lut_path)
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise LUTError(f"{path}: garbled per-operator file ({exc})") from exc
    missing = [c for c in OPS_COLUMNS if c not in df.columns]
    if missing:
        raise LUTError(f"{path}: per-operator file lacks columns: {', '.join(missing)}")
    for col in ("resolution", "ms"):
        values, bad = _floats(df[col].tolist())
        if bad is not None or np.isnan(values).any():
            line = (bad if bad is not None else int(np.flatnonzero(np.isnan(values))[0])) + 2
            raise LUTError(f"{path}: line {line}: column {col!r} needs a number")
        df[col] = values.astype(np.int64) if col == "resolution" else values
    return df


# ------------------------------------------------------------------------------------------- LUTWriter


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
        existing = LUT.load(self.path)
        diffs = [
            f"{f} {dotted_get(existing.metadata, f)!r} != {dotted_get(self.metadata, f)!r}"
            for f in self.match_fields
            if dotted_get(existing.metadata, f) != dotted_get(self.metadata, f)
        ]
        if diffs:
            raise LUTError(f"{self.path}: cannot resume, the file measured something else: {'; '.join(diffs)}")
        if list(existing.rows.columns) != self.columns:
            raise LUTError(
                f"{self.path}: cannot resume, columns differ "
                f"(file: {','.join(existing.rows.columns)}; now: {','.join(self.columns)})"
            )
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
        unknown = [c for c in row if c not in self.columns]
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
