"""Accuracy-dataset generation: subnets evaluated one after another vs side by side.

    .venv/bin/python -m benchmarks.bench_accuracy_eval [--samples 16] [--repeats 2] [--ckpt supernet.pt]
        [--data digits-hard] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

What :func:`hwnas.search.accuracy.generate_accuracy_dataset` costs per subnet (BN recalibration on 500
training images, top-1 on the validation split) for the ``compact`` space, three ways: one subnet at a
time on one torch thread, one at a time on every core's thread, and ``jobs`` = cores subnets side by side
(one thread each). Modes are interleaved within each repeat; the table gives the median over repeats and
checks that the side-by-side top-1 equal the one-thread ones. Without ``--ckpt`` an untrained supernet is
evaluated (the arithmetic, and so the time, is the same as a trained one's); once quiet and once under
``--load`` (benchmarks/_load.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hwnas.search.accuracy import generate_accuracy_dataset
from hwnas.supernet.elastic import OFASupernet
from hwnas.supernet.train import Checkpoint, save_checkpoint

from ._harness import header, load_average, table
from ._load import add_load_arguments, describe_settings, settings, under


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ckpt", type=Path, default=None, help="a compact supernet checkpoint (default: untrained)")
    ap.add_argument("--data", default="digits-hard")
    add_load_arguments(ap)
    args = ap.parse_args()
    cores = max(2, min(os.cpu_count() or 1, 4))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            torch.manual_seed(0)
            ckpt = Path(tmp) / "compact.pt"
            net = OFASupernet("compact", n_classes=10)
            save_checkpoint(ckpt, Checkpoint(space="compact", state_dict=net.state_dict(), n_classes=10,
                                             config={"data": args.data}))
        modes = [("1 at a time, 1 thread", 1, 1), (f"1 at a time, {cores} threads", 1, cores),
                 (f"{cores} side by side, 1 thread each", cores, 1)]
        print(header(f"Accuracy dataset: {args.samples} compact subnets on {args.data}, one by one vs side by side"))
        print(describe_settings(args))
        generate_accuracy_dataset(ckpt, 5, args.data, seed=99)  # data sets built and cached, imports warm
        before = torch.get_num_threads()
        for name, spec in settings(args):
            seconds: dict[str, list[float]] = {m[0]: [] for m in modes}
            top1: dict[str, list[float]] = {}
            with under(spec):
                for _ in range(args.repeats):
                    for label, jobs, threads in modes:
                        torch.set_num_threads(threads)
                        t0 = time.perf_counter()
                        _, values = generate_accuracy_dataset(ckpt, args.samples, args.data, seed=0, jobs=jobs)
                        seconds[label].append(time.perf_counter() - t0)
                        torch.set_num_threads(before)
                        top1[label] = values
                load = load_average()
            base = statistics.median(seconds[modes[0][0]])
            rows = []
            for label, _, _ in modes:
                med = statistics.median(seconds[label])
                rows.append([label, round(med, 2), round(med / args.samples, 3), round(base / med, 2),
                             " / ".join(f"{s:.1f}" for s in seconds[label])])
            same = top1[modes[2][0]] == top1[modes[0][0]]
            print(f"### {name} ({load})\n")
            print(table(["mode", "seconds (median)", "s per subnet", "speed-up vs 1x1", "each repeat s"], rows))
            print(f"\nside-by-side top-1 identical to one-thread top-1: {same}\n")


if __name__ == "__main__":
    main()
