"""Where the LUT sum differs from the whole network: each block's kernel time alone vs inside the network.

    .venv/bin/python -m benchmarks.bench_context [--space ofa-mbv3-w1.0] [--resolution 160] [--seed 1]
        [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

Uses ONNX Runtime's own profiler (per-node kernel times, median over runs) for one subnet
and for each of its LUT entries measured alone, and prints the in-network / alone ratio
per block plus the layout reorders ONNX Runtime adds at every entry boundary; once quiet and once
under ``--load`` (benchmarks/_load.py).
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import numpy as np

from hwnas.agents.device import Device, ModelFile
from hwnas.agents.profiles import load_profile
from hwnas.profiler.workloads import WorkloadBuilder
from hwnas.supernet import get_space

from ._harness import header, table
from ._load import add_load_arguments, describe_settings, settings, under


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--seed", type=int, default=1)
    add_load_arguments(ap)
    args = ap.parse_args()
    space = get_space(args.space)
    builder = WorkloadBuilder(space=space)
    arch = space.sample(np.random.default_rng(args.seed), [args.resolution])
    entries = space.lut_entries(arch)
    work = [builder.entry(e) for e in entries]
    subnet = builder.subnet(arch)
    print(header(f"Kernel time alone vs inside the network: {args.space} @ {args.resolution}"))
    print(describe_settings(args))
    for name, spec in settings(args):
        with under(spec), Device(load_profile("local")) as dev:
            res = dev.measure(
                [ModelFile(w.id, w.path) for w in [*work, subnet]], runs=30, rounds=1, keep_samples=False,
                profile_ops=True, extra={"profile_runs": 60},
            )
        print(f"### {name}\n")
        _report(res, subnet, work, entries)
        print()


def _report(res: list, subnet: Any, work: list, entries: list) -> None:
    by_id = {r["id"]: r for r in res}
    whole: dict[str, float] = collections.defaultdict(float)
    for op in by_id[subnet.id]["ops"]:
        node = op["node"]
        block = node.split("/")[1] if node.startswith("/") else "reorder (layout)"
        whole[block] += op["ms"]
    names = ["first_conv"] + [f"blocks.{i}" for i in range(len(entries) - 5)] + [
        "final_expand_layer", "global_avg_pool", "feature_mix_layer", "classifier"]
    rows = []
    alone_reorder = 0.0
    tot_alone = tot_whole = 0.0
    for name, w, e in zip(names, work, entries):
        ops = by_id[w.id]["ops"]
        alone = sum(o["ms"] for o in ops if not o["op_type"].startswith("Reorder"))
        alone_reorder += sum(o["ms"] for o in ops if o["op_type"].startswith("Reorder"))
        inside = whole.get(name, 0.0)
        tot_alone += alone
        tot_whole += inside
        rows.append([name, e.key[:60], round(alone, 4), round(inside, 4), round(inside / alone, 2) if alone else "-"])
    rows.append(["all blocks", "", round(tot_alone, 3), round(tot_whole, 3), round(tot_whole / tot_alone, 2)])
    rows.append(["layout reorders", "", round(alone_reorder, 3), round(whole["reorder (layout)"], 3), ""])
    print(table(["module", "LUT key", "alone ms", "in network ms", "ratio"], rows))


if __name__ == "__main__":
    main()
