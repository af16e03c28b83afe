"""Where a LUT's error on whole subnets comes from: the table's noise, the calibration, or the sum itself.

    .venv/bin/python -m benchmarks.bench_additivity [--space ofa-mbv3-w1.0] [--resolution 160]
        [--samples 40] [--validations 2] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

Per setting (quiet, then under ``--load``: benchmarks/_load.py), the local device is profiled twice back to
back (two fresh LUTs, A and B) and ``--validations`` validations of ``--samples`` random subnets each (other
seeds, two passes each, as ``lut validate``) are measured once. Every subnet is then predicted by both LUTs.
Reported:

- each LUT's error on the measured subnets (mean, sd, within ±5 / ±10%);
- **table noise**: how far A's and B's predictions of the same subnets differ, B's taken to A's speed by
  their reference workloads (the sd of log(B / A) once their mean ratio is taken out, and that mean
  ratio: the level moving between two profiles of the same machine);
- **structural error**: the part of A's error that B shares (the sd of the mean of both LUTs' errors once
  each LUT's mean is taken out): error that re-profiling cannot remove, because the sum of separately
  measured entries is not the whole network's cost;
- what other calibration forms would reach, fitted on the measured subnets themselves by leave-one-out (an
  upper bound for a form fitted on a few calibration subnets): ``a * sum + b``, ``+ c * params`` (weights
  to fetch; the profiler's form where it predicts the calibration subnets better), ``+ a constant per
  block of each stage``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.agents.profiles import load_profile
from hwnas.profiler.calibration import leave_one_out_errors
from hwnas.profiler.lut import LUT
from hwnas.profiler.predict import LUTPredictor
from hwnas.profiler.profile import ProfileRequest, profile_device
from hwnas.profiler.validate import validate_lut
from hwnas.supernet import get_space

from ._harness import header, load_average, table
from ._load import add_load_arguments, describe_settings, settings, under


def _loo_within(features: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Leave-one-out fit of ``y ~ features + 1`` on relative errors (the calibration's own fit):
    (share within ±5%, MAPE)."""
    e = np.abs(leave_one_out_errors(np.column_stack([features, np.ones(len(y))]), y))
    return float(np.mean(e <= 0.05)), float(np.mean(e))


def _features(lut: LUT, archs: list[Any]) -> dict[str, np.ndarray]:
    """Per subnet: the entries' measured sum (before calibration), their parameters, blocks per stage."""
    space = get_space(lut.space)
    cal = lut.metadata["calibration"]
    values = lut.values()
    params: dict[str, float] = {}
    xs, ws, depths = [], [], []
    for arch in archs:
        c = cal[str(arch.r)]
        entries = space.lut_entries(arch)
        # lut_ms = a * (raw - overhead) + c * params: back to the measured value minus the overhead
        xs.append(sum((values[(e.key, e.resolution)] - c.get("c_ms_per_mparam", 0.0) * e.params / 1e6) / c["a"]
                      for e in entries))
        for e in entries:
            if e.key not in params:
                params[e.key] = float(sum(p.numel() for p in space.build_entry(e).parameters())) / 1e6
        ws.append(sum(params[e.key] for e in entries))
        depths.append(list(arch.d))
    return {"x": np.asarray(xs), "params": np.asarray(ws), "depths": np.asarray(depths, dtype=float)}


def _err(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (pred - y) / y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--validations", type=int, default=2)
    add_load_arguments(ap)
    args = ap.parse_args()
    profile = load_profile("local")
    print(header(f"LUT error, table noise and structural error: {args.space} @ {args.resolution}, ONNX Runtime 1 thread"))
    print(describe_settings(args))
    rows, forms = [], []
    for name, spec in settings(args):
        with tempfile.TemporaryDirectory() as tmp, under(spec):
            luts = []
            t0 = time.perf_counter()
            for tag in ("a", "b"):
                out = Path(tmp) / f"{tag}.csv"
                profile_device(profile, ProfileRequest(space=args.space, resolutions=(args.resolution,), out=out, threads=1))
                luts.append(LUT.load(out))
            archs: list[Any] = []
            measured: list[float] = []
            repeat = []
            for v in range(args.validations):
                res = validate_lut(profile, luts[0], samples=args.samples, seed=200 + v)
                space = get_space(args.space)
                archs += [space.parse(p["arch"]) for p in res["points"]]
                measured += [p["measured_ms"] for p in res["points"]]
                repeat.append(res["repeat_mape"])
            wall = time.perf_counter() - t0
            load = load_average().split(" (")[0]
        y = np.asarray(measured)
        # the subnets were measured against A's reference (validate_lut's drift correction): B's predictions
        # go to A's speed by the two tables' reference workloads, as validating B would do
        ref = [float(lut.metadata["reference"]["ms"]) for lut in luts]
        preds = [np.asarray(LUTPredictor(lut).predict(archs), dtype=float) * ref[0] / r for lut, r in zip(luts, ref, strict=True)]
        errs = [_err(p, y) for p in preds]
        ratio = np.log(preds[1] / preds[0])
        shared = (errs[0] - errs[0].mean() + errs[1] - errs[1].mean()) / 2
        for tag, e in zip("AB", errs, strict=True):
            rows.append([
                name, tag, len(y), f"{100 * e.mean():+.2f}%", f"{100 * e.std():.2f}%",
                f"{int(np.sum(np.abs(e) <= 0.05))}/{len(y)}", f"{int(np.sum(np.abs(e) <= 0.10))}/{len(y)}",
                f"{100 * math.expm1(ratio.mean()):+.2f}%", f"{100 * ratio.std():.2f}%", f"{100 * shared.std():.2f}%",
                " ".join(f"{100 * r:.2f}%" for r in repeat if r is not None), f"{wall:.0f}", load,
            ])
        f = _features(luts[0], archs)
        for form, cols in (("a * sum + b", [f["x"]]),
                           ("+ c * params (the LUT's form when it predicts its calibration subnets better)", [f["x"], f["params"]]),
                           ("+ a constant per block of each stage", [f["x"], f["depths"]])):
            within, mape = _loo_within(np.column_stack(cols), y)
            forms.append([name, form, f"{round(within * len(y))}/{len(y)}", f"{100 * mape:.2f}%"])
    print(table(["setting", "LUT", "subnets", "mean error", "sd of error", "within ±5%", "within ±10%",
                 "B / A level", "table noise (sd of B / A)", "structural error (shared sd)",
                 "validations' repeat_mape", "s", "load avg (1 min)"], rows))
    print()
    print("Calibration forms fitted on the measured subnets themselves, leave one out (an upper bound):")
    print()
    print(table(["setting", "form", "within ±5%", "MAPE"], forms))


if __name__ == "__main__":
    main()
