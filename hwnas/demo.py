"""``hwnas demo``: the whole pipeline on the local CPU, step by step, each step cached by its inputs.

profile the device -> validate the LUT -> train the compact supernet (progressive shrinking)
-> fit the accuracy predictor -> search three latency budgets -> export the chosen subnets
-> measure them on the device -> report (summary.json, report.html with plots).
"""

from __future__ import annotations

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
STEPS = ("profile", "validate", "train", "accuracy", "search", "export", "measure", "report")
Progress = Callable[[int, int, str], None]


class DemoFolderError(ValueError):
    """The output folder holds something other than an earlier demo's output."""

    exit_code = 2


def _commands(out: Path, lut: str, budgets: list[float]) -> list[str]:
    b = ",".join(f"{x:.4g}" for x in budgets)
    return [
        f"hwnas profile {DEVICE} --space {SPACE} --out {lut} --resume",
        f"hwnas lut validate {DEVICE} --lut {lut} --samples 20",
        f"hwnas supernet train --space {SPACE} --data digits --out {out}/supernet.pt",
        f"hwnas predictor accuracy {out}/supernet.pt --samples 100 --data digits --out {out}/accuracy.pt",
        f"hwnas search --space {SPACE} --lut {lut} --accuracy {out}/accuracy.pt --latency-ms {b} --out {out}/search",
        f"hwnas export {out}/supernet.pt --arch ARCH --format onnx --out {out}/models/budget.onnx",
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
    accuracy_samples: int = 100,
    epochs_scale: float = 1.0,
) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns ``{"report": folder, ...}``."""
    out = Path(out)
    check_out_folder(out, force=force)
    if force and out.is_dir() and is_demo_folder(out):  # checked again right before: only the demo's own output
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    import torch

    # one thread: on a shared 2-core machine two torch threads ran the training 5x slower than one
    torch.set_num_threads(1)
    pipe = Pipeline(out, on_step=on_step, total=len(STEPS))

    from hwnas.agents.profiles import load_profile
    from hwnas.profiler.lut import LUT
    from hwnas.profiler.profile import ProfileRequest, profile_device
    from hwnas.profiler.validate import validate_lut

    profile = load_profile(DEVICE)
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

        res = train_supernet(
            TrainConfig(space=SPACE, data="digits", epochs_scale=epochs_scale), out=ckpt, on_progress=on_progress
        )
        return {"checkpoint": str(ckpt), "phases": res.phases, "final": res.final, "seconds": res.seconds}

    trained = pipe.step("train", {"space": SPACE, "epochs_scale": epochs_scale, "v": __version__}, train, files=("supernet.pt",))

    # 4. accuracy predictor
    acc_path = out / "accuracy.pt"

    def accuracy() -> dict[str, Any]:
        from hwnas.search.accuracy import AccuracyPredictor, generate_accuracy_dataset

        archs, top1 = generate_accuracy_dataset(
            ckpt, accuracy_samples, "digits", seed=0, resolutions=lut.resolutions, on_progress=on_progress
        )
        pred = AccuracyPredictor(space=SPACE, seed=0).fit(archs, top1)
        pred.save(acc_path)
        return {"samples": len(archs), **pred.metrics_}

    acc = pipe.step("accuracy", {"train": trained, "samples": accuracy_samples}, accuracy, files=("accuracy.pt",))

    # 5. search three budgets spread over the achievable range
    search_dir = out / "search"

    def search() -> dict[str, Any]:
        from hwnas.search.accuracy import AccuracyPredictor
        from hwnas.search.base import SearchProblem
        from hwnas.search.latency import LUTLatency
        from hwnas.search.registry import make_searcher
        from hwnas.search.results import write_results

        latency = LUTLatency(lut, space=SPACE)
        problem = SearchProblem(latency=latency, accuracy=AccuracyPredictor.load(acc_path, space=SPACE))
        _, lo = problem.min_latency()
        space = problem.space
        hi = float(max(latency.predict_arrays(space.arrays_from_archs([space.max_arch(r)]))[0] for r in lut.resolutions))
        budgets = [round(lo + f * (hi - lo), 4) for f in (0.25, 0.5, 0.8)]
        from hwnas.agents.device import Device
        from hwnas.search.closed_loop import device_measure, search_until_measured

        front: list[Any] = [None]

        def one_round(targets: list[float]) -> list[dict[str, Any]]:
            s = make_searcher("evolution", problem, seed=0)
            found = s.search(targets)
            front[0] = front[0] or s.front_
            return found

        # budgets met as measured: a subnet over its budget makes that budget tighter and the search run again
        with Device(profile) as dev:
            dev.acquire()
            results = search_until_measured(one_round, budgets, device_measure(dev, lut), space=SPACE)
        write_results(search_dir, results=results, front=front[0], info={"algo": "evolution", "budgets": budgets})
        return {"budgets": budgets, "min_latency_ms": lo, "max_latency_ms": hi, "results": results,
                "front": front[0], "evaluations": problem.evaluations}

    found = pipe.step("search", {"lut": prof, "acc": acc}, search, files=("search",))
    chosen = [r for r in found["results"] if r.get("arch")]

    # 6. export the chosen subnets (BN recalibrated) and measure their accuracy
    def export() -> dict[str, Any]:
        return _export_chosen(ckpt, chosen, out / "models")

    exported = pipe.step("export", {"search": found, "train": trained}, export, files=("models",))

    # 7. measured on the device, the way the LUT was measured, by the search's closed loop (step 5)
    def measure() -> dict[str, Any]:
        raw = [r.get("measured_raw_ms") for r in chosen]
        drifts = [m / r["measured_ms"] for m, r in zip(raw, chosen) if m and r.get("measured_ms")]
        return {"measured_ms": [r["measured_ms"] for r in chosen], "raw_ms": raw,
                "drift": float(np.median(drifts)) if drifts else None}

    measured = pipe.step("measure", {"export": exported, "lut": prof}, measure)

    # 8. report
    budgets = []
    for r, e, ms, raw in zip(chosen, exported["models"], measured["measured_ms"], measured["raw_ms"]):
        budgets.append(
            {
                "budget_ms": r["budget_ms"],
                "arch": r["arch"],
                "predicted_ms": r["predicted_latency_ms"],
                "measured_ms": ms,
                "measured_raw_ms": raw,
                "within_budget": r["within_budget"],
                "rounds": r["rounds"],
                "measured_ci": r.get("measured_ci"),
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
        "fingerprint": lut.metadata.get("device"),
        "lut": str(lut_path),
        "budgets": budgets,
        "infeasible": [r for r in found["results"] if not r.get("arch")],
        "validation": {k: v for k, v in val.items() if k != "points"},
        "drift_at_measure": measured["drift"],
        "supernet": trained.get("final"),
        "accuracy_predictor": acc,
        "cached_steps": list(pipe.cached),
        "step_seconds": dict(pipe.timings),
    }

    def report() -> dict[str, Any]:
        return _write_report(out, summary, lut, val, found, ckpt, lut_path)

    rep = pipe.step("report", {"summary": summary}, report, files=("report/report.html", "report/summary.json"))
    summary_seconds = time.perf_counter() - started
    return {"report": rep["folder"], "summary": str(out / "report" / "summary.json"), "budgets": budgets,
            "cached_steps": list(pipe.cached), "seconds": summary_seconds}


def _export_chosen(ckpt: Path, chosen: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    from hwnas.supernet import bn as bn_mod
    from hwnas.supernet import get_space
    from hwnas.supernet.data import load_dataset
    from hwnas.supernet.export import export_subnet
    from hwnas.supernet.train import load_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    space = get_space(SPACE)
    net = load_checkpoint(ckpt).supernet()
    models = []
    try:
        import litert_torch  # noqa: F401

        formats = ("onnx", "tflite")
    except ImportError:
        formats = ("onnx",)
    for r in chosen:
        arch = space.parse(r["arch"])
        train = load_dataset("digits", resolution=arch.r, split="train")
        val = load_dataset("digits", resolution=arch.r, split="val")
        sub = net.get_active_subnet(arch)
        bn_mod.recalibrate_bn(sub, train, resolution=arch.r)
        top1 = bn_mod.evaluate(sub, val, resolution=arch.r)
        files = {}
        info: dict[str, Any] = {}
        for fmt in formats:
            path = folder / f"budget-{r['budget_ms']:.4g}ms.{fmt}"
            info = export_subnet(sub, arch, fmt, path, space=space)
            files[fmt] = {"file": str(path), "max_abs_diff": info["max_abs_diff"]}
        models.append({"arch": arch.to_dict(), "top1": top1, "macs": info["macs"], "params": info["params"], "files": files})
    return {"models": models}


def _write_report(out: Path, summary: dict[str, Any], lut: Any, val: dict[str, Any], found: dict[str, Any],
                  ckpt: Path, lut_path: Path) -> dict[str, Any]:
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
    report.write_html(folder / "report.html", summary, plots, _commands(out, str(lut_path), [b["budget_ms"] for b in summary["budgets"]]))
    return {"folder": str(folder), "plots": {k: str(v) for k, v in plots.items()}}


def _plain(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
