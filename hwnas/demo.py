"""``hwnas demo``: the whole pipeline on the local CPU, step by step, each step cached by its inputs.

profile the device -> validate the LUT -> train the compact supernet on ``digits-hard`` (progressive
shrinking) -> fit the accuracy predictor -> search three latency budgets, measure the chosen subnets on
the device and search again with a tighter target where one measured over its budget
(:mod:`hwnas.search.closed_loop`) -> export the chosen subnets (ONNX and TFLite, converted in parallel and
cached by content) -> report (summary.json, report.html with plots).

``digits-hard`` (:mod:`hwnas.supernet.data`) rather than plain digits: on plain digits every subnet scores
98-99%, so the accuracy predictor is flat and the three budgets cannot show a trade-off. The torch thread
count of the training and the export is chosen by timing a few steps with each count
(:func:`fastest_threads`): on a shared machine a second thread can make it slower. The accuracy data set
evaluates subnets side by side instead, one thread each
(:func:`hwnas.search.accuracy.default_jobs`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hwnas import __version__
from hwnas.pipeline import Pipeline, is_demo_folder

log = logging.getLogger(__name__)

SPACE = "compact"
DEVICE = "local"
DATA = "digits-hard"
STEPS = ("profile", "validate", "train", "accuracy", "search", "export", "report")
#: What each step does, for progress displays.
STEP_TITLES = {
    "profile": "profile the device (LUT)",
    "validate": "validate the LUT end to end",
    "train": "train the supernet",
    "accuracy": "accuracy of sampled subnets",
    "search": "search 3 budgets, measure on the device",
    "export": "export ONNX and TFLite",
    "report": "write the report",
}
#: Searches per budget at most (search, measure, tighten): the demo exits 1 only when none met a budget.
MAX_ROUNDS = 3
#: Where the three budgets sit between the space's fastest subnet (0) and its slowest (1). The smallest sits
#: near the fast end, where capacity shows: on digits-hard the subnets above about a third of the range
#: score within a point of each other (93-94% top-1), so budgets at 25/50/80% once gave the largest budget's
#: subnet 0.3 points over the smallest's, and once 1.1 points under it. From one trained supernet and predictor
#: (BENCHMARKS.md): 10/40/80% gave 89.8/92.8/92.9%, 5/30/80% 88.6/93.5/93.0%, 25/50/80% 93.6/93.3/92.5%.
BUDGET_FRACTIONS = (0.1, 0.4, 0.8)
#: Subnets evaluated (BN recalibrated, top-1 on the validation split) to fit the accuracy predictor.
ACCURACY_SAMPLES = 100
#: The demo's supernet schedule: ``compact``'s (:data:`hwnas.supernet.schedule.COMPACT_EPOCHS`) times this.
#: At 0.6 the cold demo took 5:27 on a 2-core host where the whole schedule took 8:29 (training 173 s against
#: 311 s); its three subnets scored 84.5/88.2/90.0% top-1 against 91.8/92.8/94.2%: less accuracy, a wider
#: trade-off (BENCHMARKS.md, "the cold demo in six minutes").
EPOCHS_SCALE = 0.6
#: Training images each of those subnets' BN statistics are recalibrated on (the training's own per-phase
#: figure uses as many): 500 images made BN recalibration 58% of the step's forward passes.
ACCURACY_BN_IMAGES = 250
Progress = Callable[[int, int, str], None]


class DemoFolderError(ValueError):
    """The output folder holds something other than an earlier demo's output."""

    exit_code = 2


def _commands(out: Path, lut: str, budgets: list[float], samples: int) -> list[str]:
    b = ",".join(f"{x:.4g}" for x in budgets)
    return [
        f"hwnas profile {DEVICE} --space {SPACE} --out {lut} --resume",
        f"hwnas lut validate {DEVICE} --lut {lut} --samples 20",
        f"hwnas supernet train --space {SPACE} --data {DATA} --out {out}/supernet.pt",
        f"hwnas predictor accuracy {out}/supernet.pt --samples {samples} --data {DATA} --out {out}/accuracy.pt",
        f"hwnas search --space {SPACE} --lut {lut} --accuracy {out}/accuracy.pt --latency-ms {b} "
        f"--validate {DEVICE} --max-rounds {MAX_ROUNDS} --out {out}/search",
        f"hwnas export {out}/supernet.pt --arch ARCH --format onnx --out {out}/models/budget.onnx",
        f"hwnas export {out}/supernet.pt --arch ARCH --format tflite --out {out}/models/budget.tflite",
        f"hwnas lut validate {DEVICE} --lut {lut} --samples 40   # end-to-end check of the LUT",
    ]


def check_out_folder(out: Path, *, force: bool) -> None:
    """Refuse a folder that holds something other than an earlier demo's output, ``force`` or not: the demo
    only ever removes a folder that holds its own marker (``state.json`` of a demo)."""
    if not is_demo_folder(Path(out)):
        raise DemoFolderError(
            f"{out}: the folder holds files that are not an earlier demo's output (--force replaces only "
            "that, never anything else); pick another --out"
        )


def run_demo(
    out: Path,
    *,
    force: bool = False,
    on_step: Callable[[str, int, int], None] | None = None,
    on_progress: Progress | None = None,
    validate_samples: int = 20,
    accuracy_samples: int = ACCURACY_SAMPLES,
    epochs_scale: float = EPOCHS_SCALE,
    max_wait_s: float | None = None,
) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns ``{"report": folder, "summary", "budgets",
    "cached_steps", "seconds", "all_within_budget"}``. ``max_wait_s`` overrides the device profile's wait for
    a quiet spell before each measurement (profile, validation, the search's measurements)."""
    from hwnas.agents.profiles import load_profile

    out = Path(out)
    check_out_folder(out, force=force)
    profile = load_profile(DEVICE)
    if max_wait_s is not None:  # a bad value stops here, before an earlier output is removed
        profile = dataclasses.replace(profile, measure=profile.measure.replace(max_wait_s=max_wait_s))
    if force and out.is_dir() and is_demo_folder(out):  # checked again right before: only the demo's own output
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipe = Pipeline(out, on_step=on_step, total=len(STEPS))

    from hwnas.profiler.lut import LUT
    from hwnas.profiler.profile import ProfileRequest, profile_device
    from hwnas.profiler.validate import validate_lut

    lut_path = out / "lut" / f"{SPACE}_onnxruntime_float32_t1_b1.csv"
    lut_path.parent.mkdir(parents=True, exist_ok=True)

    # 1. profile (resumes inside itself when interrupted)
    prof = pipe.step(
        "profile",
        {"space": SPACE, "device": profile.to_dict(), "v": __version__},
        lambda: profile_device(profile, ProfileRequest(space=SPACE, out=lut_path, resume=True), on_progress=on_progress),
        files=(str(lut_path.relative_to(out)),),
    )
    lut = LUT.load(lut_path)

    # 2. validate
    val = pipe.step(
        "validate",
        {"lut": prof, "samples": validate_samples},
        lambda: validate_lut(profile, lut, samples=validate_samples, seed=0, on_progress=on_progress),
    )

    # 3. train the supernet (resumes finished phases inside itself)
    ckpt = out / "supernet.pt"

    def train() -> dict[str, Any]:
        from hwnas.supernet.train import TrainConfig, train_supernet

        threads = _use_threads(fastest_threads())
        config = TrainConfig(space=SPACE, data=DATA, epochs_scale=epochs_scale)
        res = train_supernet(config, out=ckpt, **_training_progress(config, on_progress))
        return {"checkpoint": str(ckpt), "phases": res.phases, "final": res.final, "seconds": res.seconds,
                "threads": threads}

    trained = pipe.step("train", {"space": SPACE, "data": DATA, "epochs_scale": epochs_scale, "v": __version__},
                        train, files=("supernet.pt",))

    # 4. accuracy predictor
    acc_path = out / "accuracy.pt"

    def accuracy() -> dict[str, Any]:
        from hwnas.search.accuracy import AccuracyPredictor, default_jobs, generate_accuracy_dataset

        jobs = default_jobs()  # subnets side by side, one torch thread each
        archs, top1 = generate_accuracy_dataset(
            ckpt, accuracy_samples, DATA, seed=0, bn_images=ACCURACY_BN_IMAGES, resolutions=lut.resolutions, jobs=jobs,
            on_progress=on_progress,
        )
        pred = AccuracyPredictor(space=SPACE, seed=0).fit(archs, top1)
        pred.save(acc_path)
        return {"samples": len(archs), **pred.metrics_, "top1_range": [min(top1), max(top1)], "jobs": jobs}

    acc = pipe.step("accuracy", {"train": trained, "samples": accuracy_samples, "bn_images": ACCURACY_BN_IMAGES}, accuracy, files=("accuracy.pt",))

    # 5. search three budgets spread over the achievable range; measure the answers on the device and
    #    search again with a tighter target where one measured over its budget
    search_dir = out / "search"

    def search() -> dict[str, Any]:
        return _search_and_measure(profile, lut, acc_path, search_dir, on_progress)

    found = pipe.step("search", {"lut": prof, "acc": acc, "rounds": MAX_ROUNDS}, search, files=("search",))
    chosen = [r for r in found["results"] if r.get("arch")]

    # 6. export the chosen subnets (BN recalibrated), measure their top-1
    def export() -> dict[str, Any]:
        return _export_chosen(ckpt, chosen, out / "models", on_progress)

    exported = pipe.step("export", {"search": found, "train": trained}, export, files=("models",))

    # 7. report
    budgets = []
    for r, e in zip(chosen, exported["models"]):
        budgets.append(
            {
                "budget_ms": r["budget_ms"],
                "arch": r["arch"],
                "predicted_ms": r["predicted_latency_ms"],
                "measured_ms": r["measured_ms"],
                "measured_raw_ms": r.get("measured_raw_ms"),
                "measured_ci": r.get("measured_ci"),
                "within_budget": bool(r["within_budget"]),
                "rounds": r.get("rounds"),
                "search_budget_ms": r.get("search_budget_ms"),
                "predicted_accuracy": r["predicted_accuracy"],
                "top1": e["top1"],
                "macs": e["macs"],
                "params": e["params"],
                "files": e["files"],
            }
        )
    summary = {
        "device": DEVICE,
        "space": SPACE,
        "data": DATA,
        "fingerprint": lut.metadata.get("device"),
        "lut": str(lut_path),
        "budgets": budgets,
        "infeasible": [r for r in found["results"] if not r.get("arch")],
        "closed_loop": found.get("closed_loop"),
        "validation": {k: v for k, v in val.items() if k != "points"},
        "supernet": trained.get("final"),
        "accuracy_predictor": acc,
        "cached_steps": list(pipe.cached),
        "step_seconds": dict(pipe.timings),
        "step_load": dict(pipe.loads),
    }

    def report() -> dict[str, Any]:
        return _write_report(out, summary, lut, val, found, ckpt, lut_path, accuracy_samples)

    rep = pipe.step("report", {"summary": summary}, report, files=("report/report.html", "report/summary.json"))
    ok = bool(budgets) and not summary["infeasible"] and all(b["within_budget"] for b in budgets)
    return {"report": rep["folder"], "summary": str(out / "report" / "summary.json"), "budgets": budgets,
            "infeasible": summary["infeasible"], "cached_steps": list(pipe.cached),
            "step_seconds": dict(pipe.timings), "seconds": time.perf_counter() - started, "all_within_budget": ok}


def fastest_threads(*, backward: bool = True, steps: int = 1) -> tuple[int, dict[int, float]]:
    """The torch thread count (1 .. cores, at most 4) that runs a training step (or, without ``backward``, an
    evaluation batch) of the largest ``compact`` subnet fastest right now, and the seconds per step of each:
    on a shared machine a second thread can be slower than one."""
    import os

    import torch
    import torch.nn.functional as F

    from hwnas.supernet.elastic import OFASupernet

    torch.manual_seed(0)
    net = OFASupernet(SPACE, n_classes=10).to(memory_format=torch.channels_last)
    net.set_max()
    net.train(backward)
    x = torch.randn(16 if backward else 64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(x.shape[0], dtype=torch.int64)
    before = torch.get_num_threads()
    timings: dict[int, float] = {}
    try:
        for n in range(1, min(os.cpu_count() or 1, 4) + 1):
            torch.set_num_threads(n)
            runs = []
            for i in range(steps + 1):
                t0 = time.perf_counter()
                if backward:
                    F.cross_entropy(net(x), y).backward()
                else:
                    with torch.no_grad():
                        net(x)
                if i:  # the first run warms up
                    runs.append(time.perf_counter() - t0)
            timings[n] = min(runs)
            if n > 1 and timings[n] > timings[n - 1]:
                break  # more threads only get slower from here
    finally:
        torch.set_num_threads(before)
    return min(timings, key=timings.__getitem__), timings


def _training_progress(config: Any, on_progress: Progress | None) -> dict[str, Any]:
    """``on_progress``/``on_phase`` for :func:`train_supernet` that report the whole schedule as one bar
    (steps weighted by the subnets trained per step, so that the ETA holds across phases)."""
    if on_progress is None:
        return {}
    from hwnas.supernet.data import load_dataset
    from hwnas.supernet.train import default_phases

    phases = default_phases(SPACE, sampling=config.sampling, epochs_scale=config.epochs_scale)
    n = len(load_dataset(config.data, resolution=32, split="train"))
    per_epoch = max(1, n // config.batch_size if n >= config.batch_size else 1)
    steps = [max(1, int(round(p.epochs * per_epoch))) for p in phases]
    weights = [p.n_subnets + (0.4 if p.kd else 0.0) for p in phases]
    offsets = [sum(s * w for s, w in zip(steps[:i], weights[:i])) for i in range(len(phases))]
    total = int(round(sum(s * w for s, w in zip(steps, weights))))
    index = {p.name: i for i, p in enumerate(phases)}

    def progress(done: int, _total: int, name: str) -> None:
        i = index.get(name, 0)
        on_progress(int(round(offsets[i] + done * weights[i])), total, f"phase {name}")

    def phase(name: str, i: int, count: int, event: str) -> None:
        if event in ("skip", "done") and name in index:
            j = index[name]
            on_progress(int(round(offsets[j] + steps[j] * weights[j])), total, f"phase {name} {event}")

    return {"on_progress": progress, "on_phase": phase}


def _use_threads(choice: tuple[int, dict[int, float]]) -> dict[str, Any]:
    """Set torch's thread count to the measured fastest; returns what was measured (seconds per step)."""
    import torch

    threads, timings = choice
    torch.set_num_threads(threads)
    return {"chosen": threads, "seconds_per_step": {str(k): round(v, 4) for k, v in timings.items()}}


def demo_budgets(lut: Any, latency: Any, problem: Any) -> tuple[list[float], float, float]:
    """Three budgets at :data:`BUDGET_FRACTIONS` of the way from the space's fastest subnet to its slowest."""
    _, lo = problem.min_latency()
    space = problem.space
    hi = float(max(latency.predict_arrays(space.arrays_from_archs([space.max_arch(r)]))[0] for r in lut.resolutions))
    return [round(lo + f * (hi - lo), 4) for f in BUDGET_FRACTIONS], float(lo), hi


def _search_and_measure(profile: Any, lut: Any, acc_path: Path, search_dir: Path, on_progress: Progress | None) -> dict[str, Any]:
    from hwnas.agents.device import Device
    from hwnas.search.accuracy import AccuracyPredictor
    from hwnas.search.base import SearchProblem
    from hwnas.search.closed_loop import device_measure, search_until_measured, summarize
    from hwnas.search.latency import LUTLatency
    from hwnas.search.registry import make_searcher
    from hwnas.search.results import write_results

    latency = LUTLatency(lut, space=SPACE)
    problem = SearchProblem(latency=latency, accuracy=AccuracyPredictor.load(acc_path, space=SPACE))
    budgets, lo, hi = demo_budgets(lut, latency, problem)
    fronts: list[Any] = []
    evaluations = [0]

    def search(targets: list[float]) -> list[dict[str, Any]]:
        searcher = make_searcher("evolution", problem, seed=0)
        results = searcher.search(targets)
        if not fronts:
            fronts.append(searcher.front_)
        evaluations[0] += searcher.evaluations_
        return results

    def on_round(rnd: int, results: list[dict[str, Any]]) -> None:
        if on_progress is not None:
            met = sum(bool(r.get("within_budget")) for r in results)
            on_progress(rnd, MAX_ROUNDS, f"round {rnd}: {met}/{len(budgets)} budgets met as measured")

    with Device(profile) as dev:
        dev.acquire()
        results = search_until_measured(search, budgets, device_measure(dev, lut), space=SPACE,
                                        max_rounds=MAX_ROUNDS, on_round=on_round)
    loop = summarize(results)
    write_results(search_dir, results=results, front=fronts[0], info={"algo": "evolution", "budgets": budgets,
                                                                    "closed_loop": loop})
    return {"budgets": budgets, "min_latency_ms": lo, "max_latency_ms": hi, "results": results,
            "front": fronts[0], "evaluations": evaluations[0], "closed_loop": loop}


def _load_subnet(path: str, r: int) -> tuple[Any, Any]:
    """A conversion job's ``build``: the subnet saved by :func:`_export_chosen` and its example input."""
    import torch

    return torch.load(path, weights_only=False).eval(), torch.zeros(1, 3, r, r)


def _export_chosen(ckpt: Path, chosen: list[dict[str, Any]], folder: Path, on_progress: Progress | None) -> dict[str, Any]:
    """Each chosen subnet, BN recalibrated, as ONNX and (when litert-torch is installed) TFLite in
    ``folder``, with its top-1 on the validation split. The TFLite files are converted through the
    profiler's conversion cache, keyed by the subnet's weights: a rerun (another folder, ``--force``)
    converts nothing twice."""
    import hashlib
    import tempfile

    import torch

    from hwnas.profiler.workloads import cache_dir
    from hwnas.supernet import bn as bn_mod
    from hwnas.supernet import get_space
    from hwnas.supernet.data import load_dataset
    from hwnas.supernet.export import check_tflite, export_subnet
    from hwnas.supernet.train import load_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    space = get_space(SPACE)
    net = load_checkpoint(ckpt).supernet()
    _use_threads(fastest_threads(backward=False))
    try:
        import litert_torch  # noqa: F401

        tflite = True
    except ImportError:
        tflite = False
    total = len(chosen) * (2 if tflite else 1)
    done = 0
    models = []
    subs = []
    for r in chosen:
        arch = space.parse(r["arch"])
        train = load_dataset(DATA, resolution=arch.r, split="train")
        val = load_dataset(DATA, resolution=arch.r, split="val")
        sub = net.get_active_subnet(arch)
        bn_mod.recalibrate_bn(sub, train, resolution=arch.r)
        top1 = bn_mod.evaluate(sub, val, resolution=arch.r)
        path = folder / f"budget-{r['budget_ms']:.4g}ms.onnx"
        checks = [val.random_images(2, arch.r), val.batch(slice(0, 2), arch.r)[0]]
        info = export_subnet(sub, arch, "onnx", path, space=space, check_inputs=checks)
        done += 1
        if on_progress is not None:
            on_progress(done, total, path.name)
        models.append({"arch": arch.to_dict(), "top1": top1, "macs": info["macs"], "params": info["params"],
                       "files": {"onnx": {"file": str(path), "max_abs_diff": info["max_abs_diff"]}}})
        subs.append((sub, arch, checks))
    if tflite:
        from hwnas.profiler.tflite_export import ConvertJob, convert_many, exporter_info

        with tempfile.TemporaryDirectory() as tmp:
            jobs = []
            for i, (sub, arch, _) in enumerate(subs):
                digest = hashlib.sha256()
                for k, v in sorted(sub.state_dict().items()):
                    digest.update(k.encode())
                    digest.update(v.detach().cpu().contiguous().numpy().tobytes())
                digest.update(json.dumps(arch.to_dict(), sort_keys=True).encode())
                digest.update(json.dumps(exporter_info("float32"), sort_keys=True).encode())  # a new recipe: a new file
                saved = Path(tmp) / f"sub{i}.pt"
                torch.save(sub, saved)
                cached = cache_dir() / "demo-subnets" / f"{digest.hexdigest()[:24]}.tflite"
                jobs.append(ConvertJob(path=cached, dtype="float32", build=_load_subnet, args=(str(saved), arch.r),
                                       what=f"subnet {i + 1} (TFLite)"))

            def converted(n: int, _total: int, what: str) -> None:
                if on_progress is not None:
                    on_progress(len(chosen) + n, total, what)

            paths = convert_many(jobs, on_progress=converted)
        for m, (sub, _, checks), src, r in zip(models, subs, paths, chosen):
            dest = folder / f"budget-{r['budget_ms']:.4g}ms.tflite"
            shutil.copyfile(src, dest)
            diff, _scale = check_tflite(dest, sub, [x[i : i + 1] for x in checks for i in range(x.shape[0])])
            m["files"]["tflite"] = {"file": str(dest), "max_abs_diff": diff}
    return {"models": models}


def _write_report(out: Path, summary: dict[str, Any], lut: Any, val: dict[str, Any], found: dict[str, Any],
                  ckpt: Path, lut_path: Path, samples: int = ACCURACY_SAMPLES) -> dict[str, Any]:
    from hwnas import report
    from hwnas.supernet import get_space
    from hwnas.supernet.train import load_checkpoint

    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    space = get_space(SPACE)
    history = load_checkpoint(ckpt).history
    plots = {
        "LUT heat map by block and resolution": report.lut_heatmap(lut, space, folder / "lut_heatmap.png"),
        "Predicted vs measured latency": report.predicted_vs_measured(val.get("points", []), summary["budgets"], folder / "predicted_vs_measured.png"),
        "Pareto front and chosen subnets": report.pareto_plot(found.get("front", []), summary["budgets"], folder / "pareto.png"),
        "Accuracy per budget": report.accuracy_per_budget(summary["budgets"], folder / "accuracy_per_budget.png"),
        "Supernet training curves": report.training_curves(history, folder / "training_curves.png"),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=_plain))
    report.write_html(folder / "report.html", summary, plots, _commands(out, str(lut_path), [b["budget_ms"] for b in summary["budgets"]], samples))
    return {"folder": str(folder), "plots": {k: str(v) for k, v in plots.items()}}


def _plain(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
