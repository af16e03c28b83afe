"""Few-shot latency prediction for a new device: leave one device out, adapt with 10, 20 and 50 of its subnets.

    .venv/bin/python -m benchmarks.bench_fewshot [--space ofa-mbv3-w1.0] [--subnets 100]
        [--settings ort1,ort2,litert-f32,litert-int8] [--shots 10,20,50] [--splits 5] [--measure-only]
        [--load]

Four settings of this machine stand in for four devices: ONNX Runtime with 1 thread, ONNX Runtime with 2
threads, LiteRT float32 and LiteRT int8 (1 thread). ``--subnets`` random subnets of ``--space`` at its LUT
resolutions are measured end to end on each, twice (the second pass in another order), through the
profiler's own end-to-end measurement (``profiler.validate.measure_subnets``; median as measured). The
measurements are cached in ``benchmark-results/fewshot-<space>-<setting>.csv`` (columns ``arch``,
``pass1_ms``, ``pass2_ms``): a second run reads them instead of measuring.

For each setting (the target), the other settings are the prior devices (their measurements, all of them);
the target's ``--shots`` subnets are picked by ``suggest_archs`` from the measured pool (and, as a check,
at random), and the predictor (``fit_fewshot``: the model chosen by cross-validation) is judged on the rest
against the geometric mean of the two passes. Reported: Spearman, share within ±10%, the coverage of the
90% interval, the chosen model, the per-stage-MACs linear baseline at the same samples, and the device's
noise floor (pass 1 against pass 2, every subnet).

With ``--load``, the judging is repeated while ``benchmarks._load`` keeps the other core busy (a loaded
row next to the quiet one) where that module exists.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._harness import header, load_average, table

SETTINGS = {  # name: (runtime, threads, dtype)
    "ort1": ("onnxruntime", 1, "float32"),
    "ort2": ("onnxruntime", 2, "float32"),
    "litert-f32": ("litert", 1, "float32"),
    "litert-int8": ("litert", 1, "int8"),
}
LABELS = {"ort1": "ONNX Runtime, 1 thread", "ort2": "ONNX Runtime, 2 threads",
          "litert-f32": "LiteRT float32", "litert-int8": "LiteRT int8"}
RESULTS = Path("benchmark-results")


def cache_path(space: str, setting: str) -> Path:
    return RESULTS / f"fewshot-{space}-{setting}.csv"


def read_cache(path: Path, reading: str = "median") -> tuple[list[str], np.ndarray]:
    """(arch JSON strings, (2, n) latencies in ms: the median, or the p10 where the file has it)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    col = "pass{}_ms" if reading == "median" or "pass1_p10_ms" not in rows[0] else "pass{}_p10_ms"
    return [r["arch"] for r in rows], np.asarray([[float(r[col.format(k)]) for r in rows] for k in (1, 2)])


def measure_setting(space: str, archs: list[Any], setting: str, rounds: int, runs: int) -> dict[str, np.ndarray]:
    """{"median": (2, n), "p10": (2, n)} latencies (ms, as measured) of two passes, the second in another
    order."""
    from hwnas.agents.device import Device
    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.measure import MeasurePlan
    from hwnas.profiler.validate import measure_subnets

    runtime, threads, dtype = SETTINGS[setting]
    out: dict[str, list[np.ndarray]] = {"median": [], "p10": []}
    with Device(load_profile("local")) as dev:
        dev.acquire()
        for p in range(2):
            order = np.random.default_rng(1000 + p).permutation(len(archs)) if p else np.arange(len(archs))
            t0 = time.perf_counter()
            m = measure_subnets(dev, [archs[i] for i in order], space_name=space, runtime=runtime,
                                threads=threads, dtype=dtype, plan=MeasurePlan(rounds=rounds, runs=runs))
            back = np.argsort(order)
            ms = np.asarray(m["stats_raw_ms"]["median_ms"], dtype=float)[back]
            out["median"].append(ms)
            out["p10"].append(np.asarray(m["stats_raw_ms"]["p10_ms"], dtype=float)[back])
            print(f"  {setting}, pass {p + 1}/2: {time.perf_counter() - t0:.0f} s, median {np.median(ms):.2f} ms",
                  flush=True)
    return {k: np.stack(v) for k, v in out.items()}


def ensure_measured(space: str, n: int, settings: list[str], seed: int, rounds: int, runs: int,
                    litert_n: int | None = None, reading: str = "median") -> dict[str, tuple[list[str], np.ndarray]]:
    from hwnas.supernet import get_space

    sp = get_space(space)
    archs = sp.archs_from_arrays(sp.sample_arrays(np.random.default_rng(seed), n, sp.lut_resolutions))
    RESULTS.mkdir(exist_ok=True)
    data = {}
    for s in settings:
        path = cache_path(space, s)
        if not path.is_file():
            todo = archs[:litert_n] if litert_n and SETTINGS[s][0] == "litert" else archs
            print(f"measuring {len(todo)} subnets on {LABELS[s]} ({load_average()})", flush=True)
            ms = measure_setting(space, todo, s, rounds, runs)
            tmp = path.with_name(path.name + ".tmp")
            with tmp.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["arch", "pass1_ms", "pass2_ms", "pass1_p10_ms", "pass2_p10_ms"])
                for i, a in enumerate(todo):
                    w.writerow([a.to_json(), *(f"{ms[k][j, i]:.5f}" for k in ("median", "p10") for j in (0, 1))])
            tmp.replace(path)
        data[s] = read_cache(path, reading)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--subnets", type=int, default=100)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--shots", default="10,20,50")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--litert-subnets", type=int, default=None,
                    help="Measure only the first N subnets with LiteRT (converting to .tflite is slow).")
    ap.add_argument("--measure-only", action="store_true")
    ap.add_argument("--load", action="store_true", help="Also judge with the other core kept busy.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = ap.parse_args()
    settings = args.settings.split(",")
    data = ensure_measured(args.space, args.subnets, settings, args.seed, args.rounds, args.runs,
                           args.litert_subnets)
    if args.measure_only:
        return
    from ._fewshot_eval import report

    report(args, settings, data, header, table, load_average, statistics, json, sys)


if __name__ == "__main__":
    main()
