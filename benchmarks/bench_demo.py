"""The cold and the warm ``hwnas demo``, quiet and loaded: wall time, each step's seconds, what it chose.

    .venv/bin/python -m benchmarks.bench_demo [--repeats 1] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]
        [--keep DIR] [--json FILE] [-- DEMO_FLAGS...]

Each repeat of each setting runs ``hwnas demo --json`` as a fresh process twice in one empty temporary
folder (its output and its own workload cache, ``HWNAS_CACHE_DIR``): cold (nothing cached: every step
runs, every ``.tflite`` is converted) and then warm (the same command again: every step reused). The loaded
setting runs both under the benchmark's own load (benchmarks/_load.py), started before the cold run and
stopped after the warm one. Reported per run: the wall time, the peak resident memory of the demo process,
each step's seconds, the exit code, and per budget the measured latency, whether it is within budget, the
closed loop's rounds and the subnet's top-1. Flags after ``--`` go to the demo (e.g. ``--epochs-scale 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hwnas.demo import STEPS

from ._harness import header, spread, table
from ._load import add_load_arguments, describe_settings, settings, under

ROOT = Path(__file__).resolve().parent.parent


def run_demo(folder: Path, extra: list[str]) -> dict[str, Any]:
    """One ``hwnas demo --json`` into ``folder/out`` with ``folder/cache`` as the workload cache."""
    env = {**os.environ, "HWNAS_CACHE_DIR": str(folder / "cache")}
    cmd = [sys.executable, "-m", "hwnas", "demo", "--out", str(folder / "out"), "--json", *extra]
    started = time.perf_counter()
    with open(folder / "demo.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log)
        stdout = proc.stdout.read() if proc.stdout is not None else b""
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    try:
        result = json.loads(stdout)
    except ValueError:
        result = {}
    return {"wall_s": wall, "rc": rc, "peak_rss_mib": usage.ru_maxrss / 1024, "result": result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="cold + warm runs per setting")
    add_load_arguments(ap)
    ap.add_argument("--keep", type=Path, help="keep each run's folder (output, cache, demo.log) under this folder")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    ap.add_argument("demo_flags", nargs="*", help="flags for hwnas demo (after --)")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")

    runs: list[dict[str, Any]] = []
    for i in range(args.repeats):
        for name, spec in settings(args):
            folder = Path(tempfile.mkdtemp(prefix=f"bench-demo-{name}-"))
            try:
                with under(spec):
                    for kind in ("cold", "warm"):
                        print(f"{name} {kind} (repeat {i + 1}) ...", file=sys.stderr, flush=True)
                        got = run_demo(folder, args.demo_flags)
                        runs.append({"setting": name, "kind": kind, "repeat": i + 1, **got})
                        print(f"  {got['wall_s']:.0f} s, exit {got['rc']}", file=sys.stderr, flush=True)
            finally:
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(folder), str(args.keep / f"{name}-{i + 1}"))
                else:
                    shutil.rmtree(folder, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))

    print(header("The cold and the warm demo"))
    print(describe_settings(args))
    rows = []
    for r in runs:
        steps = r["result"].get("step_seconds") or {}
        cached = set(r["result"].get("cached_steps") or ())
        rows.append([r["setting"], r["kind"], r["repeat"], f"{r['wall_s']:.1f}", r["rc"], f"{r['peak_rss_mib']:.0f}",
                     *("cached" if s in cached else f"{steps[s]:.1f}" if s in steps else "-" for s in STEPS)])
    print(table(["setting", "run", "repeat", "wall s", "exit", "peak RSS MiB", *STEPS], rows))
    print()
    rows = []
    for r in runs:
        if r["kind"] != "cold":
            continue
        for b in r["result"].get("budgets") or []:
            rows.append([r["setting"], r["repeat"], f"{b['budget_ms']:.3f}", f"{b['measured_ms']:.3f}",
                         "yes" if b["within_budget"] else "NO", b.get("rounds"), f"{100 * b['top1']:.1f}%",
                         f"{100 * b['predicted_accuracy']:.1f}%"])
    print(table(["setting", "repeat", "budget ms", "measured ms", "within budget", "rounds", "top-1",
                 "predicted top-1"], rows))
    print()
    for name, _ in settings(args):
        for kind in ("cold", "warm"):
            walls = [r["wall_s"] for r in runs if r["setting"] == name and r["kind"] == kind]
            if len(walls) > 1:
                s = spread(walls)
                print(f"- {name} {kind}: median {s['median']:.1f} s, {s['min']:.1f}-{s['max']:.1f} s "
                      f"(spread {s['spread_pct']:.0f}%)")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
