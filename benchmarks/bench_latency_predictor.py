"""Learned latency predictor with few samples, on whole-model measurements of this CPU.

    .venv/bin/python -m benchmarks.bench_latency_predictor [--space ofa-mbv3-w1.0] [--subnets 120]
        [--train 50] [--threads 1,2] [--passes 2] [--splits 5] [--rounds 3] [--runs 10] [--reference-lut LUT]
        [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

For each thread count, ``--subnets`` random subnets of ``--space`` (at its LUT resolutions) are measured
end to end with ONNX Runtime by the profiler's own measurement (``profiler.validate.measure_subnets``:
interleaved batches holding the reference workload), ``--passes`` times over, each pass in another order
(so that no two subnets share a batch twice by design). Four readings of the same runs are compared: the
profiler's (p10, normalised to the reference workload of the batch), p10 as measured, the median as
measured, the median normalised like the p10. The ground truth of a subnet is the geometric mean of its
passes.

Reported per thread count:
- the noise ceiling: how well one pass predicts the other (Spearman, share within ±5% and ±10%, MAPE):
  no predictor can be judged more precisely than the measurements it is checked against;
- ``LearnedLatency`` (its candidate models on the structure features, stacked) fitted on ``--train``
  subnets and judged on all the others, for ``--splits`` random splits (mean and range), next to plain
  gradient boosting (scikit-learn's defaults) on the same features;
- with ``--reference-lut``, the same with that LUT as the predictor's prior (``predictor latency --prior``;
  a LUT of this CPU at another thread count, say: transferring a LUT with a few whole-model measurements).

Every measurement is made once quiet and once under ``--load`` (benchmarks/_load.py): a row per setting.

Target (issue: search): with 50 samples, mean Spearman >= 0.95 and >= 90% within ±10% on held-out subnets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._harness import header, load_average, table
from ._load import add_load_arguments, describe_settings, settings, under

READINGS = {  # name: (statistic, normalised to the reference)
    "p10, normalised (the profiler's)": ("p10_ms", True),
    "p10, raw": ("p10_ms", False),
    "median, raw": ("median_ms", False),
    "median, normalised": ("median_ms", True),
}


def measure(space: str, archs: list[Any], threads: int, passes: int, rounds: int, runs: int
            ) -> tuple[dict[str, np.ndarray], list[float]]:
    """{reading: (passes, n) latencies in ms} and the seconds of each pass."""
    from hwnas.agents.device import Device
    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.measure import MeasurePlan
    from hwnas.profiler.validate import measure_subnets

    out: dict[str, list[np.ndarray]] = {k: [] for k in READINGS}
    secs = []
    with Device(load_profile("local")) as dev:
        dev.acquire()
        for p in range(passes):
            order = np.random.default_rng(1000 + p).permutation(len(archs)) if p else np.arange(len(archs))
            t0 = time.perf_counter()
            m = measure_subnets(dev, [archs[i] for i in order], space_name=space, runtime="onnxruntime",
                                threads=threads, plan=MeasurePlan(rounds=rounds, runs=runs))
            secs.append(time.perf_counter() - t0)
            back = np.argsort(order)
            for name, (stat, norm) in READINGS.items():
                out[name].append(np.asarray(m["stats_ms" if norm else "stats_raw_ms"][stat], dtype=float)[back])
            print(f"  {threads} thread(s), pass {p + 1}/{passes}: {secs[-1]:.0f} s, median p10 "
                  f"{np.median(out['p10, raw'][-1]):.2f} ms", flush=True)
    return {k: np.stack(v) for k, v in out.items()}, secs


def agreement(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    rel = np.abs(pred / y - 1)
    return {"spearman": float(spearmanr(pred, y).statistic), "within5": float(np.mean(rel <= 0.05)),
            "within10": float(np.mean(rel <= 0.10)), "mape": float(np.mean(rel))}


def fit_and_judge(space: str, archs: list[Any], y: np.ndarray, n_train: int, splits: int,
                  reference: Any = None) -> dict[str, list[dict[str, float]]]:
    from sklearn.ensemble import GradientBoostingRegressor

    from hwnas.search.latency import LearnedLatency

    out: dict[str, list[dict[str, float]]] = {"learned": [], "gbm": []}
    for split in range(splits):
        order = np.random.default_rng(split).permutation(len(y))
        tr, te = order[:n_train], order[n_train:]
        from hwnas.search.fewshot import lut_prior

        priors = [] if reference is None else [lut_prior(reference.lut, reference.space)]
        model = LearnedLatency(space=space, priors=priors, seed=split).fit([archs[i] for i in tr], y[tr])
        x = model.features_arrays(model.space.arrays_from_archs(archs))
        out["learned"].append(agreement(model.predict_arrays(model.space.arrays_from_archs([archs[i] for i in te])), y[te]))
        gbm = GradientBoostingRegressor(random_state=0).fit(x[tr], np.log(y[tr]))
        out["gbm"].append(agreement(np.exp(gbm.predict(x[te])), y[te]))
    return out


def summary(rows: list[dict[str, float]], key: str, pct: bool = False) -> str:
    v = [r[key] * (100 if pct else 1) for r in rows]
    f = "{:.0f}%" if pct else "{:.3f}"
    return f"{f.format(statistics.mean(v))} ({f.format(min(v))}-{f.format(max(v))})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--subnets", type=int, default=120)
    ap.add_argument("--train", type=int, default=50)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-lut", type=Path, default=None, help="A LUT of the space: the learned predictor's prior.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the measurements and results here.")
    add_load_arguments(ap)
    args = ap.parse_args()
    if args.passes < 2:
        raise SystemExit("--passes must be at least 2 (the noise ceiling compares passes)")
    from hwnas.search.latency import LUTLatency
    from hwnas.supernet import get_space

    sp = get_space(args.space)
    archs = sp.archs_from_arrays(sp.sample_arrays(np.random.default_rng(args.seed), args.subnets, sp.lut_resolutions))
    reference = LUTLatency.from_file(args.reference_lut) if args.reference_lut else None
    print(header(f"Learned latency predictor: {args.train} samples of `{args.space}`, ONNX Runtime on this CPU"))
    print(f"{args.subnets} random subnets at resolutions {list(sp.lut_resolutions)}, measured {args.passes} times each "
          f"(rounds {args.rounds} x runs {args.runs}); fitted on {args.train}, judged on the other "
          f"{args.subnets - args.train}, {args.splits} random splits (mean, range).\n", flush=True)
    print(describe_settings(args))
    raw: dict[str, Any] = {"archs": [a.to_dict() for a in archs]}
    rows, ceil_rows = [], []
    for setting, threads, spec in [(n, int(t), spec) for n, spec in settings(args) for t in args.threads.split(",")]:
        with under(spec):
            readings, secs = measure(args.space, archs, threads, args.passes, args.rounds, args.runs)
        raw[f"{setting}-threads{threads}"] = {"seconds": secs}
        for reading, ms in readings.items():
            y = np.exp(np.log(ms).mean(axis=0))
            pairs = [agreement(ms[i], ms[j]) for i in range(len(ms)) for j in range(i + 1, len(ms))]
            ceil_rows.append([setting, f"{threads}", reading, f"{np.min(y):.2f}-{np.max(y):.2f} (median {np.median(y):.2f})",
                              " / ".join(f"{s:.0f}" for s in secs), summary(pairs, "spearman"),
                              summary(pairs, "within5", True), summary(pairs, "within10", True),
                              summary(pairs, "mape", True)])
            results = {"structure features": fit_and_judge(args.space, archs, y, args.train, args.splits)}
            if reference is not None:
                results[f"+ {args.reference_lut.name}"] = fit_and_judge(args.space, archs, y, args.train, args.splits,
                                                                        reference)
            for feats, res in results.items():
                for model, label in (("learned", "LearnedLatency (stacked)"), ("gbm", "gradient boosting")):
                    rows.append([setting, f"{threads}", reading, f"{label}, {feats}", summary(res[model], "spearman"),
                                 summary(res[model], "within10", True), summary(res[model], "within5", True),
                                 summary(res[model], "mape", True)])
            raw[f"{setting}-threads{threads}"][reading] = {"ms": ms.tolist(), "results": results}
    print("Noise ceiling (one pass against another, all subnets):\n")
    print(table(["setting", "threads", "reading", "latency range ms", "seconds per pass", "spearman", "within ±5%",
                 "within ±10%", "MAPE"], ceil_rows))
    print(f"\nPredictors ({args.train} samples) against the mean of the passes, held-out subnets:\n")
    print(table(["setting", "threads", "reading", "predictor", "spearman", "within ±10%", "within ±5%", "MAPE"], rows))
    print(f"\nTarget: mean Spearman >= 0.95 and >= 90% within ±10%. Load after: {load_average()}.")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
