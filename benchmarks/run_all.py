"""Run every benchmark in sequence and keep each one's markdown output (``make bench``).

    .venv/bin/python -m benchmarks.run_all [--out benchmark-results] [--only NAME,...] [--skip NAME,...]

Each benchmark runs as its own process (one after the other: on a 2-core machine two of them side by
side would measure each other), its stdout goes to ``OUT/NAME.md`` and its progress to ``OUT/NAME.log``.
``bench_remote`` needs root (a network namespace and sshd) and is skipped without it. The numbers in
BENCHMARKS.md are copied from these files, with the command each file names in its first lines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

# cheap and quick first; the supernet training (~20 min on one thread) last
BENCHMARKS = (
    "bench_noise",
    "bench_depthwise",
    "bench_cost",
    "bench_fidelity",
    "bench_validation",
    "bench_additivity",
    "bench_statistic",
    "bench_context",
    "bench_diff",
    "bench_closed_loop",
    "bench_remote",
    "bench_search",
    "bench_latency_predictor",
    "bench_fewshot",
    "bench_pas",
    "bench_litert",
    "bench_accuracy_eval",
    "bench_supernet",
    "bench_demo",
)
NEEDS_ROOT = {"bench_remote"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmark-results"))
    ap.add_argument("--only", default="", help="Comma-separated benchmark names (default: all).")
    ap.add_argument("--skip", default="", help="Comma-separated benchmark names to leave out.")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"run_all: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    skip = {n for n in args.skip.split(",") if n}
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        if name in skip:
            continue
        if name in NEEDS_ROOT and os.geteuid() != 0:
            print(f"{name}: skipped (needs root for a network namespace)", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        with open(args.out / f"{name}.md", "w") as out, open(args.out / f"{name}.log", "w") as err:
            rc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], stdout=out, stderr=err).returncode
        print(f"{name}: exit {rc} after {time.perf_counter() - t0:.0f} s -> {args.out / (name + '.md')}", file=sys.stderr)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)} (see their .log files)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
