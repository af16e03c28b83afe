"""Search on OFA's Note10 tables with OFA's predictor: ours against OFA's own EvolutionFinder, same run.

    .venv/bin/python -m benchmarks.bench_search [--seeds 3] [--ofa-seeds 3] [--budgets 15,20,25,30,40]
        [--pnag-iterations 200] [--no-ofa] [--no-pnag] [--ofa-pkg DIR]

(a) OFA's ``ofa.tutorial.EvolutionFinder`` (the pip package ``ofa``, installed with ``pip --target`` into a
    temporary folder when not given; torchvision and gdown, which the package imports but the finder does not
    use, are stubbed) with its defaults (population 100, 500 generations, parents 25%, mutation 50%, prob
    0.1), its ``AccuracyPredictor`` loaded with ``acc_predictor.pth`` and its ``LatencyTable`` reading the
    Note10 YAML files, per budget and seed.
(b) ``hwnas``'s ``evolution`` (defaults) on the same LUT (imported with ``lut import-ofa``) and predictor, all
    budgets in one search per seed; ``nsga2`` and ``random`` (one run each), ``mnas`` (hard reward).
(c) ``pnag`` trained on 15, 20, 30 and 40 ms, answering 15, 20, 22.5, 25, 30 and 40 ms from the saved
    generator (``evolution`` also answers 22.5 for the comparison).
The learned latency predictor, measured on this CPU, has its own benchmark: ``bench_latency_predictor``.

Predicted top-1 in %, times in seconds of wall time on this (shared) machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.profiler.ofa_interop import ofa_note10_dir

from ._harness import header, table

OFA_NOTE10 = ofa_note10_dir()  # OFA's published Note10 tables and predictor, shipped in the package


# --------------------------------------------------------------------------------------------------------
# OFA's own finder


def _stub_modules() -> None:
    """torchvision and gdown are imported by ``ofa`` at package level but unused by the finder."""

    class _Stub(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            value = type(name, (), {})
            setattr(self, name, value)
            return value

    for name in ("gdown", "torchvision", "torchvision.transforms", "torchvision.datasets",
                 "torchvision.transforms.functional"):
        sys.modules.setdefault(name, _Stub(name))
    tv = sys.modules["torchvision"]
    tv.transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
    tv.datasets = sys.modules["torchvision.datasets"]  # type: ignore[attr-defined]
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]  # type: ignore[attr-defined]


def _ofa_package(target: Path | None) -> Path:
    if target is None:
        target = Path(tempfile.mkdtemp(prefix="ofa_pkg_"))
    if not (target / "ofa" / "tutorial" / "evolution_finder.py").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "ofa"],
                       check=True)
    return target


def run_ofa(budgets: list[float], seeds: list[int], pkg: Path) -> dict[float, list[tuple[float, float, float]]]:
    """{budget: [(top-1 %, latency ms, seconds) per seed]} of OFA's EvolutionFinder."""
    import random

    import torch
    import yaml

    sys.path.insert(0, str(pkg))
    _stub_modules()
    import ofa.tutorial.evolution_finder as finder_module
    from ofa.tutorial.accuracy_predictor import AccuracyPredictor
    from ofa.tutorial.evolution_finder import EvolutionFinder
    from ofa.tutorial.latency_table import LatencyEstimator, LatencyTable

    finder_module.tqdm = lambda iterable, **kwargs: iterable  # its progress bar only (stderr noise)

    torch.set_num_threads(1)
    acc = AccuracyPredictor(pretrained=False, device="cpu")
    acc.model.load_state_dict(torch.load(OFA_NOTE10 / "acc_predictor.pth", map_location="cpu", weights_only=True))
    table_ = LatencyTable.__new__(LatencyTable)  # its __init__ downloads; read the same files instead
    table_.latency_tables = {}
    for r in (160, 176, 192, 208, 224):
        est = LatencyEstimator.__new__(LatencyEstimator)
        est.lut = yaml.safe_load((OFA_NOTE10 / f"{r}_lookup_table.yaml").read_text())
        table_.latency_tables[r] = est
    out: dict[float, list[tuple[float, float, float]]] = {b: [] for b in budgets}
    for seed in seeds:
        for b in budgets:
            random.seed(seed)
            np.random.seed(seed)
            finder = EvolutionFinder("note10", b, table_, acc)
            t0 = time.perf_counter()
            _, info = finder.run_evolution_search()
            dt = time.perf_counter() - t0
            out[b].append((100 * float(info[0]), float(info[2]), dt))
            print(f"  OFA seed {seed} {b:g} ms: {100 * info[0]:.3f}% at {info[2]:.2f} ms in {dt:.1f} s", flush=True)
    sys.path.remove(str(pkg))
    return out


# --------------------------------------------------------------------------------------------------------
# ours


def _problem() -> Any:
    from hwnas.profiler.ofa_interop import import_ofa
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.base import SearchProblem
    from hwnas.search.latency import LUTLatency

    lut = import_ofa(sorted(OFA_NOTE10.glob("*_lookup_table.yaml")), "ofa-mbv3-w1.2")
    acc = AccuracyPredictor.from_ofa_checkpoint(OFA_NOTE10 / "acc_predictor.pth")
    return SearchProblem(latency=LUTLatency(lut), accuracy=acc)


def run_ours(name: str, budgets: list[float], seeds: list[int], **params: Any) -> dict[str, Any]:
    from hwnas.search.registry import make_searcher

    per_budget: dict[float, list[float]] = {b: [] for b in budgets}
    seconds, evals = [], []
    for seed in seeds:
        s = make_searcher(name, _problem(), seed=seed, **params)
        results = s.search(budgets)
        for r in results:
            assert r["predicted_latency_ms"] <= r["budget_ms"]
            per_budget[r["budget_ms"]].append(100 * r["predicted_accuracy"])
        seconds.append(s.seconds_)
        evals.append(s.evaluations_)
        print(f"  {name} seed {seed}: {[round(v[-1], 3) for v in per_budget.values()]} in {s.seconds_:.2f} s, "
              f"{s.evaluations_} evaluations", flush=True)
    return {"acc": per_budget, "seconds": seconds, "evaluations": evals}


def run_pnag(train: list[float], answer: list[float], iterations: int, seed: int = 0) -> dict[str, Any]:
    from hwnas.search.pnag import PNAGSearch, load_generator

    p = PNAGSearch(problem=_problem(), train_budgets=train, iterations=iterations, seed=seed)
    p.train()
    with tempfile.TemporaryDirectory() as tmp:
        path = p.save(Path(tmp) / "gen.pt")
        q = load_generator(path, _problem(), seed=seed)
        times = {}
        res = {}
        for b in answer:
            t0 = time.perf_counter()
            (r,) = q.search([b])
            times[b] = time.perf_counter() - t0
            assert r["predicted_latency_ms"] <= b
            res[b] = 100 * r["predicted_accuracy"]
        q.polish_top = q.local_search_rounds = 0
        raw = {b: 100 * q.search([b])[0]["predicted_accuracy"] for b in answer}
    print(f"  pnag: trained {p.train_seconds_:.1f} s; {res}", flush=True)
    return {"acc": res, "raw": raw, "answer_seconds": times, "train_seconds": p.train_seconds_}


# --------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ofa-seeds", type=int, default=3)
    ap.add_argument("--budgets", default="15,20,25,30,40")
    ap.add_argument("--pnag-iterations", type=int, default=200)
    ap.add_argument("--no-ofa", action="store_true")
    ap.add_argument("--no-pnag", action="store_true")
    ap.add_argument("--ofa-pkg", type=Path, default=None, help="Folder holding the ofa package (pip --target).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the raw numbers here.")
    args = ap.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = list(range(args.seeds))
    raw: dict[str, Any] = {}

    print(header("Search on OFA's Note10 tables with OFA's accuracy predictor"))
    print("(b) ours", flush=True)
    evo = run_ours("evolution", [*budgets, 22.5] if not args.no_pnag else budgets, seeds)
    raw["evolution"] = evo
    ofa: dict[float, list[tuple[float, float, float]]] = {}
    if not args.no_ofa:
        print("(a) OFA's EvolutionFinder", flush=True)
        ofa = run_ofa(budgets, list(range(args.ofa_seeds)), _ofa_package(args.ofa_pkg))
        raw["ofa"] = {str(k): v for k, v in ofa.items()}
    others = {
        "nsga2": run_ours("nsga2", budgets, [0]),
        "random": run_ours("random", budgets, [0]),
        "mnas (hard)": run_ours("mnas", budgets, [0], alpha=0.0, beta=-1.0),
    }
    raw.update(others)

    evo_s_per_budget = statistics.mean(evo["seconds"]) / len(evo["acc"])
    rows = []
    for b in budgets:
        ours = evo["acc"][b]
        row: list[Any] = [f"{b:g}"]
        if ofa:
            o = [v[0] for v in ofa[b]]
            o_s = statistics.mean(v[2] for v in ofa[b])
            row += [f"{statistics.mean(o):.3f} ({min(o):.2f}-{max(o):.2f})", f"{o_s:.1f}"]
        row += [f"{statistics.mean(ours):.3f} ({min(ours):.2f}-{max(ours):.2f})", f"{evo_s_per_budget:.2f}"]
        if ofa:
            row += [f"{statistics.mean(ours) - statistics.mean(o):+.3f}", f"1/{o_s / evo_s_per_budget:.0f}"]
        row += [f"{others[k]['acc'][b][0]:.3f}" for k in others]
        rows.append(row)
    head = ["budget ms"]
    if ofa:
        head += ["OFA finder top-1 mean (range)", "OFA s/budget"]
    head += [f"evolution top-1 mean (range), {len(seeds)} seeds", "evolution s/budget"]
    if ofa:
        head += ["gain (points)", "time ratio"]
    head += list(others)
    print(table(head, rows))
    print(f"\nevaluations per search (5 budgets): evolution {int(statistics.mean(evo['evaluations']))}, "
          + ", ".join(f"{k} {int(v['evaluations'][0])}" for k, v in others.items())
          + "; seconds: " + ", ".join(f"{k} {v['seconds'][0]:.2f}" for k, v in others.items()))

    if not args.no_pnag:
        print("\n(c) pnag", flush=True)
        p = run_pnag([15.0, 20.0, 30.0, 40.0], [15.0, 20.0, 22.5, 25.0, 30.0, 40.0], args.pnag_iterations)
        raw["pnag"] = p
        prow = []
        for b in [15.0, 20.0, 22.5, 25.0, 30.0, 40.0]:
            e = statistics.mean(evo["acc"][b])
            prow.append([f"{b:g}", f"{p['acc'][b]:.3f}", f"{p['raw'][b]:.3f}", f"{e:.3f}", f"{p['acc'][b] - e:+.3f}",
                         f"{1000 * p['answer_seconds'][b]:.0f}"])
        print(f"trained on 15, 20, 30, 40 ms for {args.pnag_iterations} iterations in {p['train_seconds']:.0f} s")
        print(table(["budget ms", "pnag top-1", "generator samples only", "evolution mean", "pnag - evolution",
                     "answer ms"], prow))

    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
