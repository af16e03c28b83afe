"""LiteRT on this machine: LUT fidelity (float32, int8), int8 speed-up per op type, conversion cost.

Usage::

    .venv/bin/python -m benchmarks.bench_litert [--samples 20] [--dtypes float32,int8] [--resolutions 32,48]
        [--workers N] [--out DIR] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

Steps, with the real profiler and validation (``hwnas profile local --runtime litert [--dtype int8]``
then ``hwnas lut validate local --samples N``):

1. conversion cost of a full ``compact`` LUT's workloads (every entry at every resolution, plus the
   per-resolution overhead models), float32, into an empty cache (cold) and again (cached), seconds;
2. per setting (quiet, then under ``--load``: benchmarks/_load.py) and dtype: profile the LUT, validate
   it on ``--samples`` random subnets: share within ±10%/±5%, MAPE, Spearman, drift;
3. int8 speed-up per LUT op type: median over the entries of that type of float32 ``p10_ms`` / int8
   ``p10_ms`` (raw per-entry latencies, measured minutes apart: load changes in between show up here).

The 1-minute load average is printed with every step: this machine's 2 cores are shared, so the
numbers move with the load. Prints a markdown table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._load import add_load_arguments


def _load() -> float:
    return os.getloadavg()[0]


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {_load():.1f}] {msg}", file=sys.stderr, flush=True)


def conversion_cost(space_name: str, resolutions: tuple[int, ...], cache: Path, workers: int | None) -> dict[str, Any]:
    from hwnas.profiler.workloads import WorkloadBuilder
    from hwnas.supernet import get_space

    if workers:
        os.environ["HWNAS_CONVERT_WORKERS"] = str(workers)
    space = get_space(space_name)
    entries = space.all_lut_entries(resolutions)
    out: dict[str, Any] = {"entries": len(entries), "workloads": len(entries) + len(resolutions)}
    for label in ("cold", "cached"):
        load0 = _load()
        start = time.perf_counter()
        builder = WorkloadBuilder(space=space, fmt="tflite", dtype="float32", cache=cache)
        builder.entries(entries, on_progress=lambda d, t, w: _say(f"convert {d}/{t}") if d % 20 == 0 else None)
        for r in resolutions:
            builder.overhead(r)
        out[f"{label}_s"] = time.perf_counter() - start
        out[f"{label}_load"] = (load0 + _load()) / 2
        _say(f"conversion {label}: {out[f'{label}_s']:.1f} s")
    return out


def _when_free(what: str, fn: Any, wait_s: float = 1800.0) -> Any:
    """Run ``fn`` once the local device's lock is free (other runs on this machine take it too)."""
    from hwnas.agents.errors import DeviceBusy

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return fn()
        except DeviceBusy as exc:
            if time.monotonic() > deadline:
                raise
            _say(f"{what}: device busy, waiting ({exc.message})")
            time.sleep(20)


def fidelity(dtype: str, resolutions: tuple[int, ...], samples: int, out_dir: Path, seed: int, reuse: bool,
             setting: str = "quiet") -> dict[str, Any]:
    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.lut import LUT
    from hwnas.profiler.profile import ProfileRequest, profile_device
    from hwnas.profiler.validate import validate_lut

    profile = load_profile("local")
    lut_path = out_dir / f"compact_litert_{dtype}_{setting}.csv"
    load0 = _load()
    if reuse and lut_path.exists():
        _say(f"reusing {lut_path}")
        table = LUT.load(lut_path)
        prof = {"entries": len(table), "seconds": float("nan")}
    else:
        _say(f"profile litert {dtype}")
        request = ProfileRequest(space="compact", resolutions=resolutions, runtime="litert", dtype=dtype, out=lut_path)
        prof = _when_free(f"profile {dtype}", lambda: profile_device(
            profile, request, on_progress=lambda d, t, w: _say(f"profile {dtype} {d}/{t}") if d % 40 == 0 else None,
        ))
    _say(f"validate litert {dtype} on {samples} subnets")
    val = _when_free(f"validate {dtype}", lambda: validate_lut(profile, LUT.load(lut_path), samples=samples, seed=seed))
    # the same points without the reference-drift correction (measured * drift undoes it)
    import numpy as np

    from hwnas.profiler.validate import summarize_points

    pred = np.array([p["predicted_ms"] for p in val["points"]])
    meas = np.array([p["measured_ms"] for p in val["points"]]) * (val["drift"] if val["drift_corrected"] else 1.0)
    raw = summarize_points(pred, meas)
    return {
        "setting": setting,
        "raw_within_10pct": raw["within_10pct"],
        "raw_mape": raw["mape"],
        "dtype": dtype,
        "lut": str(lut_path),
        "entries": prof["entries"],
        "profile_s": prof["seconds"],
        "validate_s": val["seconds"],
        "within_10pct": val["within_10pct"],
        "within_5pct": val["within_5pct"],
        "mape": val["mape"],
        "spearman": val["spearman"],
        "drift": val["drift"],
        "load": (load0 + _load()) / 2,
    }


def int8_speedup(f32_lut: str, i8_lut: str) -> dict[str, tuple[float, int]]:
    from hwnas.profiler.lut import LUT, parse_key

    def by_type(path: str) -> dict[tuple[str, int], tuple[str, float]]:
        lut = LUT.load(path)
        out = {}
        for row in lut.rows.to_dict("records"):
            key = str(row["key"])
            op = str(row.get("op") or key.split("-")[0])
            if op == "expanded_conv":
                f = parse_key(key)
                op = f"expanded_conv se{f.get('se', 0)} hs{f.get('hs', 0)}"
            out[(key, int(row["resolution"]))] = (op, float(row["p10_ms"]))
        return out

    a, b = by_type(f32_lut), by_type(i8_lut)
    ratios: dict[str, list[float]] = {}
    for k, (op, v) in a.items():
        if k in b and b[k][1] > 0:
            ratios.setdefault(op, []).append(v / b[k][1])
    return {op: (statistics.median(r), len(r)) for op, r in sorted(ratios.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--dtypes", default="float32,int8")
    ap.add_argument("--resolutions", default=None, help="default: the space's LUT resolutions")
    ap.add_argument("--workers", type=int, default=None, help="conversion processes (default: one per core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="where the LUTs and the workload cache go (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="keep LUTs already in --out (validate only) and skip the conversion-cost step")
    add_load_arguments(ap)
    args = ap.parse_args()

    from hwnas.supernet import get_space

    from ._load import describe_settings, settings, under

    space = get_space("compact")
    resolutions = tuple(int(r) for r in args.resolutions.split(",")) if args.resolutions else tuple(space.lut_resolutions)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-litert-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir / "cache"
    os.environ["HWNAS_CACHE_DIR"] = str(cache)  # the profiler and validation reuse the converted files
    started = time.perf_counter()
    _say(f"out {out_dir}; {os.cpu_count()} cores")
    conv = None if args.reuse else conversion_cost("compact", resolutions, cache, args.workers)
    fid = []
    for setting, spec in settings(args):
        with under(spec):
            fid += [fidelity(dt, resolutions, args.samples, out_dir, args.seed, args.reuse, setting)
                    for dt in args.dtypes.split(",")]
    first = [f for f in fid if f["setting"] == fid[0]["setting"]]
    speed = int8_speedup(first[0]["lut"], first[1]["lut"]) if len(first) == 2 else {}

    print(f"## LiteRT on this machine (`compact`, resolutions {','.join(map(str, resolutions))})\n")
    print(f"Command: `.venv/bin/python -m benchmarks.bench_litert --samples {args.samples} --dtypes {args.dtypes}`;"
          f" {os.cpu_count()} cores shared with other work, 1-minute load average shown per row.\n")
    print(describe_settings(args))
    print("| setting | dtype | LUT entries | subnets | within ±10% | within ±5% | MAPE | Spearman | drift | "
          "within ±10% / MAPE without drift correction | profile s | validate s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for f in fid:
        rho = "n/a" if f["spearman"] is None else f"{f['spearman']:.3f}"
        drift = "n/a" if f["drift"] is None else f"{f['drift']:.3f}"
        print(f"| {f['setting']} | {f['dtype']} | {f['entries']} | {args.samples} | {f['within_10pct']:.0%} | {f['within_5pct']:.0%} | {f['mape']:.1%} | "
              f"{rho} | {drift} | {f['raw_within_10pct']:.0%} / {f['raw_mape']:.1%} | {f['profile_s']:.0f} | "
              f"{f['validate_s']:.0f} | {f['load']:.1f} |")
    if conv is not None:
        print("\n| conversion (float32, full LUT) | workloads | seconds | s / workload | load |")
        print("|---|---|---|---|---|")
        for label in ("cold", "cached"):
            s = conv[f"{label}_s"]
            print(f"| {label} | {conv['workloads']} | {s:.1f} | {s / conv['workloads']:.3f} | {conv[f'{label}_load']:.1f} |")
    if speed:
        print("\n| op type | int8 speed-up (f32 p10 / int8 p10, median) | entries |")
        print("|---|---|---|")
        for op, (ratio, n) in speed.items():
            print(f"| {op} | {ratio:.2f}x | {n} |")
    print(f"\nTotal {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
