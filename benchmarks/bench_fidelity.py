"""Fidelity of the LUT sum vs end-to-end latency, profiling cost, and run-to-run spread.

    .venv/bin/python -m benchmarks.bench_fidelity [--space ofa-mbv3-w1.0] [--resolution 160]
        [--samples 40] [--repeats 2] [--threads 1]

Each repeat profiles the device from scratch (a fresh LUT; workloads cached after the
first) and validates it on ``--samples`` random subnets. Reports, per repeat: entries,
inferences, seconds, within ±5 / ±10 %, MAPE, Spearman, drift; then the spread over repeats.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hwnas.agents.profiles import load_profile
from hwnas.profiler.lut import LUT
from hwnas.profiler.profile import ProfileRequest, profile_device
from hwnas.profiler.validate import validate_lut

from ._harness import header, spread, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = ap.parse_args()
    profile = load_profile("local")
    rows, raw = [], []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "lut.csv"
            t0 = time.perf_counter()
            prof = profile_device(
                profile,
                ProfileRequest(
                    space=args.space, resolutions=(args.resolution,), out=out, threads=args.threads,
                    runtime=args.runtime, dtype=args.dtype,
                ),
            )
            wall = time.perf_counter() - t0
            val = validate_lut(profile, LUT.load(out), samples=args.samples, seed=100 + rep)
        raw.append({"profile": prof, "validate": val, "wall_s": wall})
        rows.append(
            [rep + 1, prof["entries"], prof["inferences"], round(prof["seconds"], 1), round(wall, 1),
             f"{val['within_5pct']:.0%}", f"{val['within_10pct']:.0%}", f"{val['mape']:.1%}",
             round(val["spearman"], 3), round(val["drift"], 3)]
        )
    print(header(f"LUT fidelity: {args.space} @ {args.resolution}, {args.runtime} {args.dtype}, {args.threads} thread(s)"))
    print(table(["repeat", "entries", "inferences", "profile s", "profile wall s", "within ±5%", "within ±10%",
                 "MAPE", "Spearman", "drift"], rows))
    w5 = [r["validate"]["within_5pct"] for r in raw]
    secs = [r["profile"]["seconds"] for r in raw]
    print()
    print(f"Over {args.repeats} repeats: within ±5% {spread(w5)}, profile seconds {spread(secs)}")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
