"""Profiling cost now vs an earlier commit, alternating, quiet and loaded.

    .venv/bin/python -m benchmarks.bench_cost [--before aadc330] [--space ofa-mbv3-w1.0] [--resolution 160]
        [--repeats 2] [--load mem:2x50%@2s,64MiB | none] [--no-quiet] [--json FILE]
        [--variant LABEL:NAME=VALUE,... ...]

The code of ``--before`` (default aadc330, the last commit before issue 13's adaptive sampling) is taken
with ``git archive`` and laid out as the ``hwnas`` package in a temporary folder; each run is a fresh
Python process that profiles the built-in ``local`` device (``profile_device(load_profile("local"),
ProfileRequest(space, resolutions=(R,), out=...))``) with either that code (on ``PYTHONPATH``) or this tree,
alternating before, now, before, now so that both see the same machine. Workloads come from the cache
(one untimed warm-up profile with this tree fills it). Reported per run: profile seconds (inside the process,
from ``profile_device`` in to out), inferences, entries, and for this tree the noise gate's measured floor
and wait. Run once quiet and once under ``--load`` (benchmarks/_load.py). Each ``--variant`` adds a run of
this tree with other measurement settings (``p4:precision=0.04``) to every repeat.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ._harness import add_variant_argument, header, load_average, parse_variants, spread, table
from ._load import add_load_arguments, describe_settings, settings, under

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agents", "profiler", "search", "supernet", "device_profiles")

_CHILD = r"""
import json, sys, time, tempfile, pathlib
from hwnas.agents.profiles import load_profile
from hwnas.profiler.profile import ProfileRequest, profile_device
from hwnas.profiler.lut import LUT
space, res = sys.argv[1], int(sys.argv[2])
overrides = tuple(json.loads(sys.argv[3]).items()) if len(sys.argv) > 3 else ()
out = pathlib.Path(tempfile.mkdtemp()) / "lut.csv"
t = time.perf_counter()
# a variant's measurement settings; an older tree runs with its own defaults (its request may lack the field)
extra = {"overrides": overrides} if overrides else {}
got = profile_device(load_profile("local"), ProfileRequest(space=space, resolutions=(res,), out=out, **extra))
seconds = time.perf_counter() - t
lut = LUT.load(out)
runs = int(sum(int(v) for v in lut.rows["runs"]))
noise = (lut.metadata.get("measurement") or {}).get("noise") or {}
print(json.dumps({"seconds": seconds, "entries": len(lut), "inferences": got.get("inferences", runs),
                  "noise_floor": lut.metadata.get("noise_floor"), "waited_s": noise.get("waited_s")}))
"""


def lay_out(commit: str, dest: Path) -> Path:
    """``commit``'s tree as an importable ``hwnas`` package under ``dest``; returns the PYTHONPATH entry."""
    raw = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit], check=True,
                         capture_output=True).stdout
    src = dest / "src"
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(src, filter="data")
    pkg = dest / "pkg"
    shutil.copytree(src / "hwnas", pkg / "hwnas")
    for name in PACKAGES:
        if (src / name).is_dir():
            shutil.copytree(src / name, pkg / "hwnas" / name)
    return pkg


def run_one(space: str, resolution: int, pythonpath: Path | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    else:
        env.pop("PYTHONPATH", None)
    extra = [json.dumps(overrides)] if overrides else []
    proc = subprocess.run([sys.executable, "-c", _CHILD, space, str(resolution), *extra], env=env, capture_output=True,
                          text=True, cwd=tempfile.gettempdir(), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"profile run failed ({'before' if pythonpath else 'now'}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="aadc330")
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    add_variant_argument(ap, "run this tree")
    add_load_arguments(ap)
    args = ap.parse_args()
    variants = [("now", {})] + parse_variants(args.variant)
    print(header(f"Profiling cost: {args.space} @ {args.resolution}, local, {args.before} vs this tree"))
    print(describe_settings(args))
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        old = lay_out(args.before, Path(tmp))
        run_one(args.space, args.resolution, None)  # fills the workload cache (untimed)
        for name, spec in settings(args):
            with under(spec):
                for rep in range(args.repeats):
                    for code, path, overrides in ((args.before, old, {}), *((lab, None, ov) for lab, ov in variants)):
                        load = load_average().split(" (")[0]
                        got = run_one(args.space, args.resolution, path, overrides)
                        item = {"setting": name, "code": code, "repeat": rep + 1, "load_average": load, **got}
                        raw.append(item)
                        nf = got.get("noise_floor")
                        rows.append([name, code, rep + 1, round(got["seconds"], 1), f"{got['inferences']:,}",
                                     got["entries"], "-" if nf is None else f"{nf:.1%}",
                                     "-" if got.get("waited_s") is None else got["waited_s"], load])
    print(table(["setting", "code", "repeat", "profile s", "inferences", "entries", "noise floor", "gate wait s",
                 "load avg at start"], rows))
    print()
    for name, _ in settings(args):
        before = [r["seconds"] for r in raw if r["setting"] == name and r["code"] == args.before]
        for label, overrides in variants:
            now = [r["seconds"] for r in raw if r["setting"] == name and r["code"] == label]
            if before and now:
                b, n = spread(before), spread(now)
                what = "now" if not overrides else f"{label} ({', '.join(f'{k}={v}' for k, v in overrides.items())})"
                print(f"- {name}: {args.before} median {b['median']:.1f} s (spread {b['spread_pct']:.0f}%), {what} median "
                      f"{n['median']:.1f} s (spread {n['spread_pct']:.0f}%): {n['median'] / b['median']:.2f}x "
                      f"(target <= 2x on the quiet setting)")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
