"""One depthwise convolution per kernel size, LiteRT against ONNX Runtime: the cost per MAC that made the
per-kernel depthwise MACs a structure feature (``supernet.spaces.DW_KERNELS``).

    .venv/bin/python -m benchmarks.bench_depthwise [--channels 144] [--size 80] [--kernels 3,5,7]
        [--rounds 5] [--invokes 30] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

A ``--channels``-channel depthwise ``Conv2d`` (stride 1, same padding, no bias) on a ``--size`` x ``--size``
input is converted once per kernel size by the project's own exporters (``supernet.export.tflite_bytes``,
``onnx_bytes``) and run in this process on one thread: LiteRT's ``Interpreter`` (its default delegate,
XNNPACK) and an ONNX Runtime CPU session. Each round times every (runtime, kernel) pair in turn, 5 warm-up
calls then the median of ``--invokes`` calls; a figure is the median over ``--rounds`` rounds with its
range. Quiet, then under ``--load`` (benchmarks/_load.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from ._harness import header, load_average, spread, table
from ._load import add_load_arguments, settings, under


def runners(channels: int, size: int, kernel: int) -> dict[str, Callable[[], object]]:
    """{runtime: a call running the converted depthwise convolution once}."""
    import onnxruntime as ort
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from hwnas.supernet.export import onnx_bytes, tflite_bytes

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False).eval()
    example = torch.randn(1, channels, size, size)
    lite = Interpreter(model_content=tflite_bytes(conv, example), num_threads=1)
    lite.allocate_tensors()
    inp = lite.get_input_details()[0]
    lite.set_tensor(inp["index"], np.random.default_rng(0).random(inp["shape"], dtype=np.float32))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes(conv, example), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: example.numpy()}
    return {"LiteRT": lite.invoke, "ONNX Runtime": lambda: sess.run(None, feed)}


def time_call(call: Callable[[], object], invokes: int) -> float:
    """Median milliseconds of ``invokes`` calls after 5 warm-up calls."""
    for _ in range(5):
        call()
    ts = []
    for _ in range(invokes):
        t0 = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=144)
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--kernels", default="3,5,7")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--invokes", type=int, default=30)
    add_load_arguments(ap)
    args = ap.parse_args()
    kernels = [int(k) for k in args.kernels.split(",")]
    print(header(f"Depthwise convolution per kernel size: {args.channels} channels at {args.size}x{args.size}, "
                 "1 thread"))
    calls = {k: runners(args.channels, args.size, k) for k in kernels}
    rows = []
    for cond, load in settings(args):
        ms: dict[tuple[str, int], list[float]] = {(rt, k): [] for k in kernels for rt in calls[k]}
        with under(load):
            for _ in range(args.rounds):
                for (rt, k), got in ms.items():
                    got.append(time_call(calls[k][rt], args.invokes))
        print(f"{cond}: measured ({load_average()})", flush=True)
        for (rt, k), got in ms.items():
            s = spread(got)
            mmacs = args.channels * args.size**2 * k**2 / 1e6
            rows.append([cond if load is None else f"{cond} ({load})", rt, f"{k}x{k}", f"{mmacs:.1f}",
                         f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})", f"{s['spread_pct']:.0f}%",
                         f"{1e3 * s['median'] / mmacs:.0f}"])
    print()
    print(table(["load", "runtime", "kernel", "MMAC", f"ms, median of {args.rounds} rounds (range)",
                 "spread", "us per MMAC"], rows))


if __name__ == "__main__":
    main()
