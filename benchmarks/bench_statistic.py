"""Which latency statistic makes the most faithful LUT, quiet and under load.

    .venv/bin/python -m benchmarks.bench_statistic [--space ofa-mbv3-w1.0] [--resolution 160] [--samples 40]
        [--statistics p10_ms,median_ms,min_ms,tmean_ms] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

For each setting (quiet, then the loaded row: ``benchmarks/_load.py``) and each statistic, profiles the
local CPU from scratch (ONNX Runtime, 1 thread, one resolution; adaptive sampling aims at that statistic
and the LUT's values are that statistic, normalised by the reference workload of each batch) and
validates the table on ``--samples`` random subnets measured end to end in two interleaved passes by
the same statistic. Reported per row: profiling seconds and inferences, rows that did not converge,
within ±5 / ±10 %, MAPE, the two passes' disagreement (``repeat_mape``) and the noise floor. The
statistic the registry (``agents/runtimes.py``) uses was chosen from these rows.

The measurements run on a profile of their own (a ``local`` transport with its own work folder), so a
``hwnas profile local`` elsewhere on the machine does not hold its device lock.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from hwnas.agents.profiles import parse_profile
from hwnas.profiler.lut import LUT
from hwnas.profiler.profile import ProfileRequest, profile_device
from hwnas.profiler.validate import validate_lut

from ._harness import header, load_average, table
from ._load import add_load_arguments, describe_settings, settings, under


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--statistics", default="p10_ms,median_ms,min_ms,tmean_ms")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    add_load_arguments(ap)
    args = ap.parse_args()
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        profile = parse_profile(
            {"name": "bench-statistic", "transport": {"local": {}}, "workdir": str(Path(tmp) / "wd")},
            source="bench_statistic",
        )
        for setting, spec in settings(args):
            for stat in args.statistics.split(","):
                plan = profile.measure.replace(statistic=stat, max_wait_s=0)  # noise recorded, no waiting
                out = Path(tmp) / f"{setting}-{stat}.csv"
                with under(spec):
                    load = os.getloadavg()[0]
                    t0 = time.perf_counter()
                    prof = profile_device(profile, ProfileRequest(space=args.space, resolutions=(args.resolution,),
                                                                  out=out, plan=plan))
                    wall = time.perf_counter() - t0
                    lut = LUT.load(out)
                    val = validate_lut(profile, lut, samples=args.samples, seed=100, plan=plan)
                unconverged = int((lut.rows["converged"] != "true").sum())
                raw.append({"setting": setting, "statistic": stat, "profile": prof, "validate": val, "wall_s": wall,
                            "load_avg_1min": load})
                rows.append([setting, stat, round(wall, 1), prof["inferences"], f"{unconverged}/{len(lut)}",
                             f"{round(val['within_5pct'] * val['samples'])}/{val['samples']}",
                             f"{round(val['within_10pct'] * val['samples'])}/{val['samples']}",
                             f"{val['mape']:.1%}", f"{val['repeat_mape']:.1%}",
                             f"{(lut.metadata.get('noise_floor') or 0):.1%} / {(val['noise_floor'] or 0):.1%}",
                             round(load, 2)])
                print(table(["setting", "statistic", "profile s", "inferences", "unconverged", "within ±5%",
                             "within ±10%", "MAPE", "repeat MAPE", "noise floor (profile / validate)", "load 1 min"],
                            rows[-1:]), flush=True)
    print(header(f"Statistic: {args.space} @ {args.resolution}, onnxruntime, 1 thread, {args.samples} subnets"))
    print(describe_settings(args))
    print(table(["setting", "statistic", "profile s", "inferences", "unconverged", "within ±5%", "within ±10%",
                 "MAPE", "repeat MAPE", "noise floor (profile / validate)", "load 1 min"], rows))
    print(load_average())
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
