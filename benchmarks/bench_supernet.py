"""Once-for-all supernet on digits (`compact`): the issue's targets.

    .venv/bin/python -m benchmarks.bench_supernet [--out DIR] [--samples 50] [--scratch 5] [--threads N]

(a) `hwnas supernet train --space compact --data digits --threads 1` (the default progressive-shrinking schedule):
    wall time, top-1 of the largest and the smallest subnet (BN recalibrated on the training split).
(b) The naive baseline, `--sampling random`, the same number of steps.
(c) SAMPLES random subnets (seeded), each extracted and BN-recalibrated from both supernets: mean, min and
    the share >= 90% top-1, side by side.
(d) SCRATCH of those subnets trained from scratch as standalone networks for as many epochs as the whole
    progressive schedule (same optimiser, label smoothing, augmentation; no distillation), vs the same
    subnets taken from the supernet without retraining.

Checkpoints in DIR are reused (the training resumes / skips finished phases), so a rerun only re-evaluates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.supernet import bn
from hwnas.supernet.data import load_dataset
from hwnas.supernet.spaces import get_space
from hwnas.supernet.train import default_phases, load_checkpoint

from ._harness import header, table


def _hwnas(*args: str, threads: int | None) -> tuple[dict[str, Any], str, float]:
    argv = [sys.executable, "-m", "hwnas", *args]
    shown = "hwnas " + " ".join(shlex.quote(a) for a in args)
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{shown} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout), shown, wall


def _scratch(arch: Any, *, epochs: float, seed: int, train: Any, val: Any) -> float:
    """Top-1 of ``arch`` trained from scratch as a standalone subnet at its own resolution."""
    sp = get_space("compact")
    torch.manual_seed(seed)
    net = sp.build_subnet(arch, n_classes=train.n_classes, dropout_rate=0.1).train()
    loader = train.loader(batch_size=64, resolutions=[arch.r], drop_last=True, augment=True, seed=seed)
    total = max(1, round(epochs * len(loader)))
    warmup = len(loader)
    decay = [p for n, p in net.named_parameters() if not (".bn." in n or n.endswith("bias"))]
    rest = [p for n, p in net.named_parameters() if ".bn." in n or n.endswith("bias")]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 3e-5}, {"params": rest, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=True)
    step, epoch = 0, 0
    while step < total:
        loader.set_epoch(epoch)
        for x, y in loader:
            if step >= total:
                break
            lr = 0.1 * (step + 1) / (warmup + 1) if step < warmup else 0.05 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        epoch += 1
    bn.recalibrate_bn(net, train, resolution=arch.r)
    return bn.evaluate(net, val, resolution=arch.r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="Folder for the checkpoints (default: a temporary one).")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--scratch", type=int, default=5)
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: on a shared 2-core machine 2 threads ran 5x slower than 1, their OpenMP "
             "barriers waiting on descheduled threads).",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_supernet_"))
    out.mkdir(parents=True, exist_ok=True)
    threads = ["--threads", str(args.threads)] if args.threads else []
    if args.threads:
        torch.set_num_threads(args.threads)

    print(header("Once-for-all supernet: compact on digits"))
    runs: dict[str, dict[str, Any]] = {}
    rows = []
    for sampling in ("progressive", "random"):
        ckpt = out / f"{sampling}.pt"
        result, shown, wall = _hwnas(
            "supernet", "train", "--space", "compact", "--data", "digits", "--sampling", sampling,
            "--seed", str(args.seed), "--out", str(ckpt), *threads, "--json", threads=args.threads,
        )
        runs[sampling] = result
        resumed = all(p["skipped"] for p in result["phases"])
        steps = sum(p["steps"] for p in result["phases"])
        phase_s = sum(p["seconds"] for p in result["phases"])
        rows.append([sampling, steps, f"{phase_s:.0f}" + (" (earlier run)" if resumed else ""), f"{wall:.0f}",
                     result["top1_max"], result["top1_min"]])
        print(f"`{shown}`\n")
    print("(a, b) training, default schedule\n")
    print(table(["sampling", "steps", "training s", "command wall s", "top-1 largest", "top-1 smallest"], rows))
    print()

    sp = get_space("compact")
    train = load_dataset("digits", resolution=48, split="train")
    val = load_dataset("digits", resolution=48, split="val")
    rng = np.random.default_rng(args.seed + 12345)
    archs = [sp.sample(rng) for _ in range(args.samples)]
    accs: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for sampling in ("progressive", "random"):
        net = load_checkpoint(out / f"{sampling}.pt").supernet()
        accs[sampling] = []
        for a in archs:
            sub = net.get_active_subnet(a)
            bn.recalibrate_bn(sub, train, resolution=a.r)
            accs[sampling].append(bn.evaluate(sub, val, resolution=a.r))
    rows = [
        [s, statistics.mean(v), min(v), max(v), sum(x >= 0.9 for x in v) / len(v)] for s, v in accs.items()
    ]
    print(f"(c) {args.samples} random subnets (seed {args.seed + 12345}), BN recalibrated on the {len(train)} "
          f"training images, top-1 on {len(val)} validation images ({time.perf_counter() - t0:.0f} s)\n")
    print(table(["supernet", "mean top-1", "min", "max", "share >= 90%"], rows))
    gain = statistics.mean(accs["progressive"]) - statistics.mean(accs["random"])
    print(f"\nprogressive shrinking - random sampling: {gain * 100:+.2f} points (mean top-1)\n")

    if args.scratch > 0:
        epochs = sum(p.epochs for p in default_phases("compact"))
        rows = []
        t0 = time.perf_counter()
        for i, a in enumerate(archs[: args.scratch]):
            scratch = _scratch(a, epochs=epochs, seed=args.seed + i, train=train, val=val)
            ofa = accs["progressive"][i]
            rows.append([a.to_json(), sp.macs(a) / 1e6, ofa, scratch, (ofa - scratch) * 100])
        print(f"(d) without retraining vs from scratch ({epochs:g} epochs each, {time.perf_counter() - t0:.0f} s)\n")
        print(table(["arch", "MMACs", "top-1 supernet", "top-1 scratch", "gap (points)"], rows))
        print(f"\nmean gap: {statistics.mean(r[-1] for r in rows):+.2f} points\n")


if __name__ == "__main__":
    main()
