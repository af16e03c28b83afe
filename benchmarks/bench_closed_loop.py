"""Budgets met as measured: `hwnas search --validate local`, quiet and loaded.

    .venv/bin/python -m benchmarks.bench_closed_loop [--space ofa-mbv3-w1.0] [--resolution 160]
        [--fractions 0.25,0.5,0.8] [--max-rounds 3] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

Per setting (quiet, then under ``--load``: benchmarks/_load.py, running through the profile and the
search), profiles the local CPU (a fresh LUT of the space at one resolution), then runs the command a
user runs, ``hwnas search --space S --lut LUT --accuracy ACC --latency-ms B1,B2,B3 --validate local
--max-rounds N --json``, with the budgets at ``--fractions`` of the LUT's achievable range. The accuracy
predictor is fitted on the subnets' MACs (bigger is better): accuracy decides which subnet a budget
gets, not whether it is met, and a trained supernet is beside the point here. Target (issue 13): every
budget measured within budget plus its own interval, quiet and loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.agents.profiles import load_profile
from hwnas.profiler.lut import LUT
from hwnas.profiler.profile import ProfileRequest, profile_device
from hwnas.search.accuracy import AccuracyPredictor
from hwnas.search.latency import LUTLatency
from hwnas.supernet import get_space

from ._harness import header, load_average, table
from ._load import add_load_arguments, describe_settings, settings, under


def _accuracy(space_name: str, resolution: int, path: Path) -> Path:
    space = get_space(space_name)
    rng = np.random.default_rng(0)
    archs = space.archs_from_arrays(space.sample_arrays(rng, 400, [resolution]))
    macs = np.array([space.macs(a) for a in archs], dtype=float)
    top1 = 0.6 + 0.2 * (macs - macs.min()) / (macs.max() - macs.min())
    pred = AccuracyPredictor(space=space, hidden_size=64, n_layers=2, epochs=40, seed=0).fit(archs, top1)
    return pred.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--fractions", default="0.25,0.5,0.8")
    ap.add_argument("--max-rounds", type=int, default=3)
    add_load_arguments(ap)
    args = ap.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    print(header(f"search --validate: {args.space} @ {args.resolution}, ONNX Runtime, local CPU"))
    print(describe_settings(args))
    rows, totals = [], []
    with tempfile.TemporaryDirectory() as tmp:
        acc = _accuracy(args.space, args.resolution, Path(tmp) / "acc.pt")
        for name, spec in settings(args):
            lut_path = Path(tmp) / f"{name}.csv"
            with under(spec):
                profile_device(load_profile("local"), ProfileRequest(space=args.space, resolutions=(args.resolution,),
                                                                     out=lut_path))
                lut = LUT.load(lut_path)
                space = get_space(args.space)
                latency = LUTLatency(lut, space=space)
                lo = float(latency.predict([space.min_arch(args.resolution)])[0])
                hi = float(latency.predict([space.max_arch(args.resolution)])[0])
                budgets = [round(lo + f * (hi - lo), 3) for f in fractions]
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "hwnas", "search", "--space", args.space, "--lut", str(lut_path), "--accuracy",
                     str(acc), "--latency-ms", ",".join(f"{b:g}" for b in budgets), "--validate", "local",
                     "--max-rounds", str(args.max_rounds), "--json"],
                    capture_output=True, text=True, env=os.environ.copy(),
                )
                wall = time.perf_counter() - t0
                load = load_average().split(" (")[0]
            if not proc.stdout.strip():
                print(f"{name}: hwnas search failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
                continue
            out = json.loads(proc.stdout)
            for r in out["results"]:
                ci = r.get("measured_ci")
                rows.append([
                    name, f"{r['budget_ms']:g}", f"{r['predicted_latency_ms']:.3f}", f"{r['search_budget_ms']:.3f}",
                    f"{r['measured_ms']:.3f}", "-" if ci is None else f"±{100 * ci:.1f}%",
                    f"{100 * (r['measured_ms'] / r['budget_ms'] - 1):+.1f}%", "yes" if r["within_budget"] else "NO",
                    r["rounds"], load,
                ])
            v = out["validation"]
            totals.append([name, f"{v['budgets_within']}/{v['budgets_measured']}", v["rounds"], proc.returncode,
                           f"{wall:.0f}", out["evaluations"]])
    print(table(["setting", "budget ms", "predicted ms", "last search target ms", "measured ms", "its interval",
                 "measured vs budget", "within budget (+ interval)", "rounds", "load avg (1 min)"], rows))
    print()
    print(table(["setting", "budgets within", "rounds (most)", "exit", "search + measure s", "evaluations"], totals))


if __name__ == "__main__":
    main()
