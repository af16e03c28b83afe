"""How a device's LUTs moved over time: every version of every LUT kept for the device.

The versions are the files under the device's folder (``device_profiles/NAME/``) and, where the folder is
in a git repository, every committed version of them (``git log --follow`` + ``git show``), plus the
working-tree file when it differs from the last commit. For each version: the typical-subnet latency
(median predicted latency of ``samples`` random subnets of its space, same seed for every version), the
reference workload's latency when recorded, and how its entries moved against the previous version of
the same file (drift and entries beyond the threshold after drift correction).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LUTError, ProfilerError
from .lut import FORMAT_LINE, LUT, OVERHEAD_KEY, dotted_get, is_sidecar

log = logging.getLogger(__name__)

__all__ = ["LUTVersion", "history", "lut_versions", "plot_history"]

GIT_TIMEOUT_S = 30


@dataclass
class LUTVersion:
    """One version of one LUT file."""

    file: str  # path relative to the device folder (current name)
    commit: str | None  # None for the working-tree file
    date: str
    text: str


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _is_lut_name(name: str) -> bool:
    return name.endswith(".csv") and not is_sidecar(name)


def _looks_like_lut(text: str) -> bool:
    return text.startswith(FORMAT_LINE)


def lut_versions(folder: str | os.PathLike[str], *, use_git: bool = True) -> list[LUTVersion]:
    """Every version of every LUT file under ``folder`` (files and git history), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ProfilerError(f"{folder}: no such device folder (no LUTs kept for this device)")
    versions: list[LUTVersion] = []
    seen: set[tuple[str, str]] = set()
    top = _git(["rev-parse", "--show-toplevel"], folder) if use_git else None
    root = Path(top.strip()) if top else None
    current = sorted(p for p in folder.rglob("*.csv") if _is_lut_name(p.name))
    paths: set[str] = set()
    if root is not None:
        listed = _git(["log", "--format=", "--name-only", "--", "."], folder) or ""
        for line in listed.splitlines():
            if line.strip() and _is_lut_name(line.strip()):
                paths.add(line.strip())  # relative to the repository root
        for p in current:
            paths.add(str(p.resolve().relative_to(root.resolve())))
        for rel in sorted(paths):
            versions.extend(_git_versions(root, rel, folder, seen))
    for p in current:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not _looks_like_lut(text):
            continue
        name = str(p.relative_to(folder))
        digest = hashlib.sha1(text.encode()).hexdigest()
        if (name, digest) in seen:
            continue  # same as a committed version
        seen.add((name, digest))
        mtime = _dt.datetime.fromtimestamp(p.stat().st_mtime, tz=_dt.timezone.utc).replace(microsecond=0)
        versions.append(LUTVersion(file=name, commit=None, date=mtime.isoformat(), text=text))
    versions.sort(key=lambda v: (v.date, v.file))
    return versions


def _git_versions(root: Path, rel: str, folder: Path, seen: set[tuple[str, str]]) -> list[LUTVersion]:
    out = _git(["log", "--follow", "--diff-filter=d", "--format=%x00%H%x09%cI", "--name-only", "--", rel], root)
    if not out:
        return []
    try:
        name = str((root / rel).resolve().relative_to(folder.resolve()))
    except ValueError:
        name = Path(rel).name
    versions = []
    for block in out.split("\x00")[1:]:
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        commit, _, date = lines[0].partition("\t")
        path_then = lines[1].strip() if len(lines) > 1 else rel
        text = _git(["show", f"{commit}:{path_then}"], root)
        if text is None or not _looks_like_lut(text):
            continue
        digest = hashlib.sha1(text.encode()).hexdigest()
        if (name, digest) in seen:
            continue
        seen.add((name, digest))
        versions.append(LUTVersion(file=name, commit=commit, date=date, text=text))
    return versions


def _typical(lut: LUT, samples: int, seed: int) -> tuple[float | None, dict[int, float], str | None]:
    from ..supernet import get_space
    from .predict import LUTPredictor

    try:
        space = get_space(lut.space)
        predictor = LUTPredictor(lut, space)
    except (LUTError, ProfilerError, ValueError) as exc:
        return None, {}, str(exc)
    rng = np.random.default_rng(seed)
    arrays = space.sample_arrays(rng, samples, predictor.resolutions_)
    pred = predictor.predict_arrays(arrays)
    by_res = {int(r): float(np.median(pred[arrays["r"] == r])) for r in predictor.resolutions_ if (arrays["r"] == r).any()}
    return float(np.median(pred)), by_res, None


def _movement(prev: LUT, cur: LUT, threshold_pct: float) -> dict[str, Any]:
    a, b = prev.values(), cur.values()
    common = [k for k in a if k in b and k[0] != OVERHEAD_KEY and a[k] > 0 and b[k] > 0]
    if not common:
        return {"drift_pct": None, "changed_entries": None, "common_entries": 0}
    logs = np.array([math.log(b[k] / a[k]) for k in common])
    drift = float(np.median(logs))
    changed = int(np.sum(np.abs(np.expm1(logs - drift)) > threshold_pct / 100.0))
    return {"drift_pct": 100.0 * math.expm1(drift), "changed_entries": changed, "common_entries": len(common)}


def history(
    folder: str | os.PathLike[str],
    *,
    samples: int = 1000,
    seed: int = 0,
    threshold_pct: float = 5.0,
    use_git: bool = True,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """One point per LUT version under ``folder``, oldest first: ``{file, commit, date, space, statistic,
    runtime, entries, typical_ms, typical_ms_by_resolution, reference_ms, drift_pct, changed_entries}``.

    A version that does not read as a LUT is reported with ``error`` instead of numbers."""
    versions = lut_versions(folder, use_git=use_git)
    points: list[dict[str, Any]] = []
    previous: dict[str, LUT] = {}
    for n, v in enumerate(versions):
        if on_progress is not None:
            on_progress(n, len(versions), v.file)
        where = f"{v.file}@{v.commit[:10]}" if v.commit else v.file
        point: dict[str, Any] = {"file": v.file, "commit": v.commit, "date": v.date}
        try:
            lut = LUT.from_text(v.text, source=where)
        except LUTError as exc:
            point["error"] = str(exc)
            points.append(point)
            continue
        typical, by_res, why = _typical(lut, samples, seed)
        ref = lut.metadata.get("reference")
        point.update(
            space=lut.space,
            statistic=lut.statistic,
            runtime=dotted_get(lut.metadata, "runtime.name"),
            runtime_version=dotted_get(lut.metadata, "runtime.version"),
            lut_date=lut.metadata.get("date"),
            entries=len(lut),
            typical_ms=typical,
            typical_ms_by_resolution=by_res,
            reference_ms=ref.get("median_ms") if isinstance(ref, dict) else None,
        )
        if why:
            point["note"] = why
        prev = previous.get(v.file)
        point.update(
            _movement(prev, lut, threshold_pct)
            if prev is not None
            else {"drift_pct": None, "changed_entries": None, "common_entries": None}
        )
        previous[v.file] = lut
        points.append(point)
    if on_progress is not None:
        on_progress(len(versions), len(versions), "")
    return points


def plot_history(points: list[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Typical-subnet latency of each LUT file over time (one line per file) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    files = sorted({p["file"] for p in points if p.get("typical_ms") is not None})
    for f in files:
        pts = [p for p in points if p["file"] == f and p.get("typical_ms") is not None]
        xs = [_dt.datetime.fromisoformat(str(p["date"]).replace("Z", "+00:00")) for p in pts]
        ax.plot(xs, [p["typical_ms"] for p in pts], marker="o", label=f)
    ax.set_ylabel("typical subnet latency (median of random subnets, ms)")
    ax.set_xlabel("date")
    ax.set_title(title or "LUT history")
    if files:
        ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    try:
        fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    except OSError as exc:
        raise ProfilerError(f"{path}: cannot write the plot ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)
    return path
