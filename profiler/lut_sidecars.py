"""A LUT's sidecar files beside ``NAME.csv``: per-run samples (``NAME.samples.csv``, or ``NAME.samples.npz``)
and per-operator timings (``NAME.ops.csv``): their paths and readers (:class:`~.lut_writer.LUTWriter` writes
them)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LUTError
from .lut_format import OPS_COLUMNS, _floats


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
