"""Few-shot latency prediction for a new device: leave one device out, adapt with 10, 20 and 50 of its subnets.

    .venv/bin/python -m benchmarks.bench_fewshot [--space ofa-mbv3-w1.0] [--subnets 100]
        [--settings ort1,ort2,litert-f32,litert-int8] [--shots 10,20,50] [--splits 5] [--measure-only]
        [--load SPEC | --load none] [--loaded-settings ort1] [--cost-repeats 3]

Four settings of this machine stand in for four devices: ONNX Runtime with 1 thread, ONNX Runtime with 2
threads, LiteRT float32 and LiteRT int8 (1 thread). ``--subnets`` random subnets of ``--space`` at its LUT
resolutions are measured end to end on each, twice (the second pass in another order), through the
profiler's own end-to-end measurement (``profiler.validate.measure_subnets``; median as measured). The
measurements are cached in ``benchmark-results/fewshot-<space>-<setting>.csv`` (columns ``arch``,
``pass1_ms``, ``pass2_ms``): a second run reads them instead of measuring.

For each setting (the target), the other settings are the prior devices (their measurements, all of them);
the target's ``--shots`` subnets are picked by ``suggest_archs`` from the measured pool (and, for
``--splits`` more fits, at random), and the predictor (``LearnedLatency``: the candidate models stacked with
weights from cross-validation) is judged on the rest against the geometric mean of the two passes. Reported:
Spearman, share within ±10%, the coverage of the 90% interval, the stack's heaviest models, the same without
the priors (the
transfer's gain: ``--prior`` against none), the per-stage-MACs linear baseline at the same samples, and the
device's noise floor (pass 1 against pass 2, every subnet).

The loaded row: each of ``--loaded-settings`` is measured again (both passes) while ``--load`` runs beside
it (``benchmarks/_load.py``; default its ``DEFAULT_LOAD``), cached as ``...-<setting>-loaded.csv``, and
judged the same way (priors: the other settings' quiet measurements).

The cost: the seconds of one fit on the largest ``--shots`` of the first setting, without and with the
priors, and of predicting 5000 random subnets with their intervals; the median of ``--cost-repeats`` runs,
quiet and under ``--load``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._harness import header, load_average, table
from ._load import add_load_arguments, under

SETTINGS = {  # name: (runtime, threads, dtype)
    "ort1": ("onnxruntime", 1, "float32"),
    "ort2": ("onnxruntime", 2, "float32"),
    "litert-f32": ("litert", 1, "float32"),
    "litert-int8": ("litert", 1, "int8"),
}
LABELS = {"ort1": "ONNX Runtime, 1 thread", "ort2": "ONNX Runtime, 2 threads",
          "litert-f32": "LiteRT float32", "litert-int8": "LiteRT int8"}
RESULTS = Path("benchmark-results")


def cache_path(space: str, setting: str, loaded: bool = False) -> Path:
    return RESULTS / f"fewshot-{space}-{setting}{'-loaded' if loaded else ''}.csv"


def read_cache(path: Path, reading: str = "median") -> tuple[list[str], np.ndarray]:
    """(arch JSON strings, (2, n) latencies in ms: the median, or the p10 where the file has it)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    col = "pass{}_ms" if reading == "median" or "pass1_p10_ms" not in rows[0] else "pass{}_p10_ms"
    return [r["arch"] for r in rows], np.asarray([[float(r[col.format(k)]) for r in rows] for k in (1, 2)])


def measure_setting(space: str, archs: list[Any], setting: str, rounds: int, runs: int, device: str = "local"
                    ) -> dict[str, np.ndarray]:
    """{"median": (2, n), "p10": (2, n)} latencies (ms, as measured) of two passes, the second in another
    order."""
    from hwnas.agents.device import Device
    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.measure import MeasurePlan
    from hwnas.profiler.validate import measure_subnets

    runtime, threads, dtype = SETTINGS[setting]
    out: dict[str, list[np.ndarray]] = {"median": [], "p10": []}
    with Device(load_profile(device)) as dev:
        dev.acquire()
        for p in range(2):
            order = np.random.default_rng(1000 + p).permutation(len(archs)) if p else np.arange(len(archs))
            t0 = time.perf_counter()
            got: dict[str, list[float]] = {"median_ms": [], "p10_ms": []}
            for lo in range(0, len(order), 20):  # chunks, each retried: a killed runner costs one chunk
                for attempt in range(4):
                    try:
                        m = measure_subnets(dev, [archs[i] for i in order[lo:lo + 20]], space_name=space,
                                            runtime=runtime, threads=threads, dtype=dtype,
                                            plan=MeasurePlan(rounds=rounds, runs=runs))
                        break
                    except Exception as exc:  # a runner killed from outside: measure the chunk again
                        print(f"  chunk {lo}: {str(exc)[:80]}; retry {attempt + 1}", flush=True)
                else:
                    raise SystemExit(f"{setting}: chunk {lo} failed 4 times")
                for k in got:
                    got[k] += [float(v) for v in m["stats_raw_ms"][k]]
            back = np.argsort(order)
            ms = np.asarray(got["median_ms"])[back]
            out["median"].append(ms)
            out["p10"].append(np.asarray(got["p10_ms"])[back])
            print(f"  {setting}, pass {p + 1}/2: {time.perf_counter() - t0:.0f} s, median {np.median(ms):.2f} ms",
                  flush=True)
    return {k: np.stack(v) for k, v in out.items()}


def ensure_measured(space: str, n: int, settings: list[str], seed: int, rounds: int, runs: int,
                    litert_n: int | None = None, reading: str = "median", device: str = "local",
                    load: Any = None) -> dict[str, tuple[list[str], np.ndarray]]:
    """{setting: (arch JSON strings, (2, n) ms)}, measured (under ``load``, a LoadSpec, when given: the
    ``-loaded`` cache) or read from the cache."""
    from hwnas.supernet import get_space

    sp = get_space(space)
    archs = sp.archs_from_arrays(sp.sample_arrays(np.random.default_rng(seed), n, sp.lut_resolutions))
    RESULTS.mkdir(exist_ok=True)
    data = {}
    for s in settings:
        path = cache_path(space, s, loaded=load is not None)
        if not path.is_file():
            todo = archs[:litert_n] if litert_n and SETTINGS[s][0] == "litert" else archs
            print(f"measuring {len(todo)} subnets on {LABELS[s]}{'' if load is None else ' under ' + str(load)} "
                  f"({load_average()})", flush=True)
            with under(load):
                ms = measure_setting(space, todo, s, rounds, runs, device)
            print(f"  measured ({load_average()})", flush=True)
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
    ap.add_argument("--device", default="local", help="Device profile measured (its runtime is overridden per setting).")
    ap.add_argument("--litert-subnets", type=int, default=None,
                    help="Measure only the first N subnets with LiteRT (converting to .tflite is slow).")
    ap.add_argument("--measure-only", action="store_true")
    ap.add_argument("--loaded-settings", default="ort1",
                    help="Settings also measured under --load (the loaded row); empty: none.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    ap.add_argument("--cost-repeats", type=int, default=3, help="Runs of the fit-cost table (0: leave it out).")
    add_load_arguments(ap)
    args = ap.parse_args()
    settings = args.settings.split(",")
    data = {}
    if not args.no_quiet:
        data = ensure_measured(args.space, args.subnets, settings, args.seed, args.rounds, args.runs,
                               args.litert_subnets, device=args.device)
    loaded = [s for s in args.loaded_settings.split(",") if s] if args.load is not None else []
    loaded_data = ensure_measured(args.space, args.subnets, loaded, args.seed, args.rounds, args.runs,
                                  args.litert_subnets, device=args.device, load=args.load) if loaded else {}
    if args.measure_only:
        return
    if args.no_quiet:  # the priors of a loaded row are the other settings' quiet measurements
        data = ensure_measured(args.space, args.subnets, settings, args.seed, args.rounds, args.runs,
                               args.litert_subnets, device=args.device)
    report(args, settings, data, loaded_data)


def agreement(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    return float(spearmanr(pred, y).statistic), float(np.mean(np.abs(pred / y - 1) <= 0.10))


def judge(space: Any, archs: list[Any], y: np.ndarray, train: np.ndarray, priors: list[Any], seed: int
          ) -> dict[str, Any]:
    from hwnas.search.latency import LearnedLatency

    test = np.setdiff1d(np.arange(len(y)), train)
    fit_on = [archs[i] for i in train]
    held = [archs[i] for i in test]
    out: dict[str, Any] = {"held_out": int(len(test))}
    for tag, kw in (("", {"priors": priors}), ("noprior_", {}), ("base_", {"models": ["macs-linear"]})):
        model = LearnedLatency(space=space, seed=seed, **kw).fit(fit_on, y[train])
        pred, iv = model.predict_interval(held)
        out[tag + "spearman"], out[tag + "within10"] = agreement(pred, y[test])
        out[tag + "coverage"] = float(np.mean((iv[:, 0] <= y[test]) & (y[test] <= iv[:, 1])))
        out[tag + "model"] = model.model_
        out[tag + "weights"] = model.weights_
    return out


def fit_cost(args: argparse.Namespace, sp: Any, label: str, archs: list[Any], y: np.ndarray, priors: list[Any]
             ) -> str:
    """The fit-cost table: seconds (median of ``--cost-repeats``) to fit ``label``'s largest ``--shots`` of
    ``archs`` (latencies ``y``) without and with ``priors``, and to predict 5000 subnets with intervals,
    quiet and loaded."""
    from hwnas.search.latency import LearnedLatency

    shots = max(int(k) for k in args.shots.split(","))
    train = np.random.default_rng(0).permutation(len(y))[:shots]
    fit_on = [archs[i] for i in train]
    fits = (("fit, no prior", []), (f"fit, {len(priors)} priors", priors))
    pool = sp.archs_from_arrays(sp.sample_arrays(np.random.default_rng(1), 5000, sp.lut_resolutions))
    rows = []
    for cond, load in [("quiet", None)] + ([(f"loaded ({args.load})", args.load)] if args.load is not None else []):
        secs: dict[str, list[float]] = {name: [] for name, _ in fits} | {"predict 5000": []}
        with under(load):
            for _ in range(args.cost_repeats):
                for name, pri in fits:
                    t0 = time.perf_counter()
                    model = LearnedLatency(space=sp, priors=pri).fit(fit_on, y[train])
                    secs[name].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                model.predict_interval(pool)
                secs["predict 5000"].append(time.perf_counter() - t0)
        rows.append([cond, *(f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in secs.values())])
    return table(["load", f"fit {shots} samples of {label}, no prior: s (min-max)",
                  f"fit with {len(priors)} priors", "predict 5000 subnets with intervals"], rows)


def _heaviest(weights: dict[str, float], k: int = 2) -> str:
    """The ``k`` heaviest models of a stack with their weights, e.g. ``prior-ops .61, nnls .27``."""
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"{m} {w:.2f}" for m, w in top)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def report(args: argparse.Namespace, settings: list[str], data: dict[str, tuple[list[str], np.ndarray]],
           loaded: dict[str, tuple[list[str], np.ndarray]] | None = None) -> None:
    """Print the table (and ``--json``): every quiet setting left out in turn, then each loaded one."""
    from hwnas.search.fewshot import measurements_prior, suggest_archs
    from hwnas.supernet import get_space

    sp = get_space(args.space)
    print(header(f"Few-shot latency: leave one device out, `{args.space}`"))
    quiet_y = {s: np.exp(np.log(data[s][1]).mean(axis=0)) for s in settings}
    prior_of = {s: measurements_prior(data[s][0], quiet_y[s], sp, source=s) for s in settings}
    jobs = [(s, "quiet", data[s]) for s in settings]
    jobs += [(s, f"loaded ({args.load})", v) for s, v in (loaded or {}).items()]
    rows, raw, means = [], {}, {}
    for target, cond, (arch_json, ms) in jobs:
        archs = [sp.parse(a) for a in arch_json]
        y = np.exp(np.log(ms).mean(axis=0))
        noise = agreement(ms[0], ms[1])
        priors = [prior_of[o] for o in settings if o != target]
        for shots in [int(k) for k in args.shots.split(",")]:
            if shots > len(y) - 10:
                continue
            picks = [np.asarray([archs.index(a) for a in suggest_archs(sp, shots, pool=archs, seed=0)])]
            picks += [np.random.default_rng(k).permutation(len(y))[:shots] for k in range(args.splits)]
            res = [judge(sp, archs, y, tr, priors, k) for k, tr in enumerate(picks)]
            raw[f"{target}/{cond}/{shots}"] = res
            rnd = res[1:]

            def mean(key: str, rs: list[dict[str, Any]] = rnd) -> float:
                return statistics.mean(r[key] for r in rs)

            if cond == "quiet":
                means.setdefault(shots, []).append({k: mean(k) for k in ("spearman", "within10", "coverage",
                                                                        "base_spearman", "base_within10")})
            s0 = res[0]
            rows.append([LABELS[target], cond, shots, f"{noise[0]:.3f} / {_pct(noise[1])}",
                         _heaviest(s0["weights"]), f"{s0['spearman']:.3f}", _pct(s0["within10"]), _pct(s0["coverage"]),
                         f"{mean('spearman'):.3f}", _pct(mean("within10")), _pct(mean("coverage")),
                         f"{mean('noprior_spearman'):.3f} / {_pct(mean('noprior_within10'))} / "
                         f"{_pct(mean('noprior_coverage'))}",
                         f"{mean('base_spearman'):.3f} / {_pct(mean('base_within10'))}", s0["held_out"]])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print()
    print(table(["target (left out)", "load", "samples", "noise floor: pass vs pass Spearman / within ±10%",
                 "heaviest models (suggested, with priors)", "Spearman (suggested)", "within ±10%", "90% coverage",
                 f"Spearman (with priors, random, {args.splits} splits)", "within ±10%", "90% coverage",
                 "no prior (random): Spearman / ±10% / coverage", "per-stage-MACs linear baseline (random)",
                 "held out"], rows))
    print()
    summary = []
    for shots, ms_ in means.items():
        beat = sum(m["spearman"] >= m["base_spearman"] and m["within10"] >= m["base_within10"]
                   and (m["spearman"] > m["base_spearman"] or m["within10"] > m["base_within10"]) for m in ms_)
        summary.append([shots, f"{statistics.mean(m['spearman'] for m in ms_):.3f}",
                        _pct(statistics.mean(m["within10"] for m in ms_)),
                        _pct(statistics.mean(m["coverage"] for m in ms_)),
                        f"{statistics.mean(m['base_spearman'] for m in ms_):.3f} / "
                        f"{_pct(statistics.mean(m['base_within10'] for m in ms_))}",
                        f"{beat} of {len(ms_)}"])
    print(table(["samples", "mean Spearman (quiet, with priors, random)", "mean within ±10%", "mean coverage",
                 "baseline mean", "settings beating the baseline (better on one, no worse on the other)"], summary))
    if args.cost_repeats > 0:
        print()
        first = settings[0]
        print(fit_cost(args, sp, LABELS[first], [sp.parse(a) for a in data[first][0]], quiet_y[first],
                       [prior_of[o] for o in settings if o != first]))
    print(f"\nLoad after: {load_average()}.")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
