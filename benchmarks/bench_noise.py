"""The machine's noise floor: one fixed model timed back to back, and how its speed moves over time.

    .venv/bin/python -m benchmarks.bench_noise [--space ofa-mbv3-w1.0] [--seconds 30] [--segment 2] [--threads 1]
        [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

Times the space's reference workload (its largest subnet at the smallest LUT resolution, the model every
LUT and validation records) with ONNX Runtime, ``--threads`` threads, inference after inference for
``--seconds``, and splits the samples into ``--segment``-second windows. Reported: per window p10 and
median, and over the windows the spread (max/min - 1) of each. Whatever the profiler does, it cannot
measure one model more steadily than this: when the p10 of neighbouring 2-second windows moves by 20%,
entries measured seconds apart differ by that much before any LUT question arises.

Runs once quiet and once under ``--load`` (benchmarks/_load.py); one summary row per setting.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._harness import header, table
from ._load import add_load_arguments, describe_settings, settings, under


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--segment", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    add_load_arguments(ap)
    args = ap.parse_args()

    import onnxruntime as ort

    from hwnas.profiler.workloads import WorkloadBuilder
    from hwnas.supernet import get_space

    ref = WorkloadBuilder(space=get_space(args.space)).reference()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(ref.path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
    print(header(f"Noise floor: the {args.space} reference workload, ONNX Runtime, {args.threads} thread(s)"))
    print(describe_settings(args))
    summary = []
    for name, spec in settings(args):
        with under(spec):
            for _ in range(10):
                sess.run(None, {inp.name: x})
            stamps, ms = [], []
            start = time.perf_counter()
            while (now := time.perf_counter()) - start < args.seconds:
                sess.run(None, {inp.name: x})
                stamps.append(now - start)
                ms.append((time.perf_counter() - now) * 1e3)
        t, v = np.asarray(stamps), np.asarray(ms)
        rows = []
        for k in range(int(args.seconds // args.segment)):
            sel = (t >= k * args.segment) & (t < (k + 1) * args.segment)
            if sel.sum() >= 5:
                seg = v[sel]
                rows.append([f"{k * args.segment:g}-{(k + 1) * args.segment:g}", int(sel.sum()),
                             round(float(np.percentile(seg, 10)), 3), round(float(np.median(seg)), 3),
                             round(float(seg.min()), 3)])
        p10 = np.array([r[2] for r in rows])
        med = np.array([r[3] for r in rows])
        print(f"### {name}\n")
        print(table(["window s", "inferences", "p10 ms", "median ms", "min ms"], rows))
        print()
        summary.append([name, len(rows), f"{100 * (p10.max() / p10.min() - 1):.1f}%",
                        f"{100 * (med.max() / med.min() - 1):.1f}%", round(float(np.percentile(v, 10)), 3),
                        round(float(np.median(v)), 3), round(float(v.min()), 3)])
    print(table(["setting", f"windows of {args.segment:g} s", "p10 spread", "median spread", "whole-run p10 ms",
                 "median ms", "min ms"], summary))


if __name__ == "__main__":
    main()
