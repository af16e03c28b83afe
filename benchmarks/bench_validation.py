"""How the validation's own measurement limits what it can show: one LUT, validated several ways.

    .venv/bin/python -m benchmarks.bench_validation [--space ofa-mbv3-w1.0] [--resolution 160] [--samples 40]
        [--passes 2,4] [--references smoothed,raw] [--repeats 2] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

Profiles the local CPU once (ONNX Runtime, 1 thread, one resolution, the profile defaults), then, per setting
(quiet, then the loaded row: ``benchmarks/_load.py``) and per repeat, validates that one LUT on the same
``--samples`` random subnets (a new draw per repeat) in every way asked, one after the other:

- ``--passes``: how many interleaved passes measure each subnet (the measured value is their mean);
- ``--references``: ``smoothed`` normalises each batch by its reference smoothed over the neighbouring
  batches (``profiler.calibration.smoothed_refs``, what the library does), ``raw`` by the batch's own
  reference measurement (what it did before), to see what the smoothing buys.

Because the LUT is the same in every row, differences between rows are the validation's own measurement,
not the table's. Reported per row: within ±5 / ±10 %, MAPE, the first two passes' disagreement
(``repeat_mape``), the noise floor and the seconds the validation took.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hwnas.agents.profiles import parse_profile
from hwnas.profiler import validate as validate_mod
from hwnas.profiler.lut import LUT
from hwnas.profiler.profile import ProfileRequest, profile_device

from ._harness import header, load_average, table
from ._load import add_load_arguments, describe_settings, settings, under

COLUMNS = ["setting", "repeat", "passes", "reference", "within ±5%", "within ±10%", "MAPE", "repeat MAPE",
           "noise floor", "validate s", "load 1 min"]


@contextmanager
def references(kind: str) -> Iterator[None]:
    """``raw``: the validation normalises each batch by its own reference (the smoothing switched off)."""
    if kind == "smoothed":
        yield
        return
    if kind != "raw":
        raise SystemExit(f"--references: {kind!r} is not smoothed or raw")
    kept = validate_mod.smoothed_refs

    def unsmoothed(refs: Sequence[float]) -> dict[float, float]:
        return {float(r): float(r) for r in refs}

    validate_mod.smoothed_refs = unsmoothed  # type: ignore[assignment]
    try:
        yield
    finally:
        validate_mod.smoothed_refs = kept  # type: ignore[assignment]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--passes", default="2,4")
    ap.add_argument("--references", default="smoothed")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    add_load_arguments(ap)
    args = ap.parse_args()
    passes = [int(p) for p in args.passes.split(",")]
    kinds = args.references.split(",")
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        profile = parse_profile(
            {"name": "bench-validation", "transport": {"local": {}}, "workdir": str(Path(tmp) / "wd")},
            source="bench_validation",
        )
        plan = profile.measure.replace(max_wait_s=0)  # noise recorded, no waiting
        out = Path(tmp) / "lut.csv"
        prof = profile_device(profile, ProfileRequest(space=args.space, resolutions=(args.resolution,), out=out,
                                                      plan=plan))
        lut = LUT.load(out)
        print(f"profile: {prof['seconds']:.1f} s, {prof['inferences']} inferences (quiet, load {os.getloadavg()[0]:.2f})",
              flush=True)
        for setting, spec in settings(args):
            for rep in range(args.repeats):
                for n in passes:
                    for kind in kinds:
                        with under(spec), references(kind):
                            load = os.getloadavg()[0]
                            t0 = time.perf_counter()
                            val = validate_mod.validate_lut(profile, lut, samples=args.samples, seed=100 + rep,
                                                            plan=plan, passes=n)
                            wall = time.perf_counter() - t0
                        raw.append({"setting": setting, "repeat": rep + 1, "passes": n, "reference": kind,
                                    "validate": val, "wall_s": wall, "load_avg_1min": load})
                        k = val["samples"]
                        rows.append([setting, rep + 1, n, kind, f"{round(val['within_5pct'] * k)}/{k}",
                                     f"{round(val['within_10pct'] * k)}/{k}", f"{val['mape']:.2%}",
                                     f"{val['repeat_mape']:.2%}", f"{(val['noise_floor'] or 0):.1%}", round(wall, 1),
                                     round(load, 2)])
                        print(table(COLUMNS, rows[-1:]), flush=True)
    print(header(f"Validation method: {args.space} @ {args.resolution}, onnxruntime, 1 thread, {args.samples} subnets"))
    print(describe_settings(args))
    print(table(COLUMNS, rows))
    print(load_average())
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
