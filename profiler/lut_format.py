"""The LUT file format: its constants, rows, metadata block and cells, and parsing a file's text.

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
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..agents.runtimes import COMPARABILITY_FIELDS
from ..supernet.files import atomic_write
from .errors import LUTError

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
#: or std above half the mean; see ``agents/bench_binary.outlier_reason``); ``process_spread`` (how far the
#: runner processes that measured the row disagreed: slowest / fastest - 1 over each one's reference, a
#: fraction; blank where one process measured it, ``profiler/measure.measure_batches``).
MEASURE_COLUMNS = ("ci", "converged", "outliers", "process_spread")
SAMPLES_COLUMNS = ("key", "resolution", "run", "ms")
OPS_COLUMNS = ("key", "resolution", "node", "op_type", "provider", "ms")
#: Metadata fields (dotted paths) that must agree before ``LUTWriter(resume=True)`` appends to a file: the
#: same list ``lut diff`` compares tables by (the runtime registry's).
RESUME_FIELDS = COMPARABILITY_FIELDS


def is_latency_column(name: str) -> bool:
    return name.endswith("_ms")










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
    """A measurement result's ``ci``, ``converged``, ``outliers`` and ``process_spread`` as LUT cells."""
    def finite(key: str) -> float | None:
        value = result.get(key)
        return None if value is None or not math.isfinite(float(value)) else float(value)

    return {
        "ci": finite("ci"),
        "converged": "true" if result.get("converged") else "false",
        "outliers": "true" if result.get("outliers") else "false",
        "process_spread": finite("process_spread"),
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
