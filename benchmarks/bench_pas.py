"""Pruning-as-Search on digits: MACs target, reparameterisation speed-up, per-layer widths, latency target.

    .venv/bin/python -m benchmarks.bench_pas [--device local] [--epochs 4] [--repeats 7] [--share 0.5] [--out DIR]

(a) `hwnas pas --target-macs 40%`: MACs vs target, top-1 pruned vs unpruned, reparameterisation difference.
(b) The multi-branch and the reparameterised network measured on the device in interleaved batches
    (the profiler's `measure_batches`, statistic p10_ms): median ratio over repeats, with its spread.
(c) The per-layer widths plot, and whether "narrower early, wider late" (PaS paper) holds here.
(d) Latency-aware PaS: the per-layer latency table measured on the device (an hwnas LUT), X = SHARE of the
    unpruned plain network's measured latency, `hwnas pas --target-ms X`; the achieved latency is measured
    beside the MACs-targeted network and the unpruned one, all normalised to the table's machine speed with
    the reference workload.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hwnas.agents.device import Device
from hwnas.agents.profiles import load_profile
from hwnas.search import pas as pas_search
from hwnas.supernet.pas_net import base_config

from ._harness import header, load_average, spread, table


def _hwnas(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[dict[str, Any], str, float]:
    """Run a CLI command (``--json``); a device another run holds is waited for (up to an hour)."""
    argv = [sys.executable, "-m", "hwnas", *args]
    shown = "hwnas " + " ".join(shlex.quote(a) for a in args)
    t0 = time.perf_counter()
    deadline = time.monotonic() + WAIT_S
    while True:
        proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode == 1 and "holds the device" in proc.stderr and time.monotonic() < deadline:
            time.sleep(10)
            continue
        break
    wall = time.perf_counter() - t0
    if proc.returncode not in ok or not proc.stdout.strip():
        raise SystemExit(f"{shown} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout), shown, wall


WAIT_S = 3600.0  # how long to wait for a device another run (another engineer's benchmark) holds


def _acquire(device: Device, wait_s: float = WAIT_S) -> None:
    """Take the device's lock, waiting while another run (another engineer's profiling) holds it."""
    from hwnas.agents.errors import DeviceBusy

    deadline = time.monotonic() + wait_s
    while True:
        try:
            device.acquire()
            return
        except DeviceBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


def _early_late(widths: list[int], base: list[int]) -> tuple[list[float], float, float, float]:
    """Keep ratios per layer, mean of the first and the second half, Spearman(layer index, keep ratio)."""
    from scipy.stats import spearmanr

    keep = [w / b for w, b in zip(widths, base, strict=True)]
    half = len(keep) // 2
    rho = float(spearmanr(range(len(keep)), keep).statistic)
    return keep, statistics.mean(keep[:half]), statistics.mean(keep[half:]), rho


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="local")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of each phase (pre-train, search, fine-tune)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved whole-network measurements")
    ap.add_argument("--target-macs", default="40%")
    ap.add_argument("--share", type=float, default=0.5, help="latency target as a share of the unpruned network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ofa-budgets", default="0.12,0.14",
                    help="(e) budgets in ms for PaS vs OFA (inside both methods' latency ranges); '' skips (e)")
    ap.add_argument("--supernet", type=Path, default=None,
                    help="(e) an existing compact supernet checkpoint (default: train one into OUT/ofa)")
    ap.add_argument("--accuracy-samples", type=int, default=100, help="(e) subnets for OFA's accuracy predictor")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-pas-"))
    out.mkdir(parents=True, exist_ok=True)
    config = base_config("digits")
    profile = load_profile(args.device)
    common = ["--epochs", str(args.epochs), "--seed", str(args.seed), "--repeats", str(args.repeats),
              "--wait-device", f"{WAIT_S:g}"]
    print(header("Pruning-as-Search on digits"))
    loads = [load_average()]

    # the per-layer latency table on the device (the unpruned network's measured latency is its reference)
    lut = out / "pas-digits-lut.csv"
    t0 = time.perf_counter()
    with Device(profile) as device:
        _acquire(device)
        tab = pas_search.measure_layer_table(config, device=device, out=lut, seed=args.seed)
    table_s = time.perf_counter() - t0
    unpruned_ms = tab.reference_ms
    assert unpruned_ms is not None
    target_ms = args.share * unpruned_ms

    # (a) MACs target, (d) latency target
    macs, macs_cmd, macs_s = _hwnas(
        "pas", "--data", "digits", "--target-macs", args.target_macs, "--device", args.device,
        "--out", str(out / "macs"), *common, "--json",
    )
    macs8, macs8_cmd, macs8_s = _hwnas(
        "pas", "--data", "digits", "--target-macs", args.target_macs, "--width-multiple", "8",
        "--device", args.device, "--out", str(out / "macs8"), *common, "--json",
    )
    lat, lat_cmd, lat_s = _hwnas(
        "pas", "--data", "digits", "--target-ms", f"{target_ms:.6f}", "--lut", str(lut), "--device", args.device,
        "--out", str(out / "latency"), *common, "--json",
    )
    loads.append(load_average())

    # all networks measured together, normalised to the table's machine speed with the reference workload
    runs = {"MACs": (macs, "macs"), "MACs, widths x8": (macs8, "macs8"), "latency X": (lat, "latency")}
    files = {}
    for label, (_, folder) in runs.items():
        files[f"multi-branch {label}"] = out / folder / "multibranch.onnx"
        files[f"PaS {label}"] = out / folder / "pas.onnx"
    reference = pas_search.PasWorkloads(config=config).reference()
    with Device(profile) as device:
        _acquire(device)
        m = pas_search.measure_networks(device, files, reference=reference, repeats=args.repeats)
    loads.append(load_average())
    norm = {
        name: [v * unpruned_ms / r for v, r in zip(vals, m["reference_ms"], strict=True)]
        for name, vals in m["ms"].items()
    }

    print("### (a) MACs target\n")
    print(f"- `{macs_cmd}` ({macs_s:.0f} s)\n- `{macs8_cmd}` ({macs8_s:.0f} s)\n")
    print(table(
        ["run", "target", "MACs (unpruned)", "MACs PaS", "MACs / target", "top-1 unpruned", "top-1 PaS",
         "reparam max abs diff", "ONNX max abs diff"],
        [[label, args.target_macs, r["base_macs"], r["macs"], r["macs"] / r["target_macs"], r["base_top1"], r["top1"],
          f"{r['reparam_max_abs_diff']:.2e}", f"{r['onnx_max_abs_diff']:.2e}"]
         for label, r in (("widths free", macs), ("widths x8", macs8))],
    ))

    print("\n### (b) reparameterised vs multi-branch, measured on the device\n")
    print(f"{args.repeats} repeats, each one runner batch with both networks and the reference workload, "
          f"5 interleaved rounds x 10 runs; statistic p10_ms; ratio taken within each repeat.\n")
    rows = []
    for label, (res, _) in runs.items():
        s = res["speedup_summary"]
        multi, plain = m["ms"][f"multi-branch {label}"], m["ms"][f"PaS {label}"]
        again = spread([a / b for a, b in zip(multi, plain, strict=True)])
        rows.append([
            label, res["latency_ms"]["multibranch"], res["latency_ms"]["reparameterised"],
            f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}, spread {s['spread_pct']:.0f}%)",
            f"{again['median']:.2f}x ({again['min']:.2f}-{again['max']:.2f}, spread {again['spread_pct']:.0f}%)",
        ])
    print(table(["PaS run", "multi-branch p10 ms", "reparameterised p10 ms", "speed-up (in its CLI run)",
                 "speed-up (all re-measured together)"], rows))

    print("\n### (c) per-layer widths\n")
    rows = []
    for label, (res, _) in runs.items():
        keep, early, late, rho = _early_late(res["widths"], res["base_widths"])
        holds = "yes" if late > early and rho > 0 else "no"
        rows.append([label, " / ".join(map(str, res["widths"])), " / ".join(f"{k:.0%}" for k in keep),
                     f"{early:.0%}", f"{late:.0%}", f"{rho:.2f}", holds, f"`{res['plot']}`"])
    print(f"unpruned widths {' / '.join(map(str, config.widths))}\n")
    print(table(["target", "widths", "kept", "kept, first half", "kept, second half", "Spearman(layer, kept)",
                 "narrower early, wider late?", "plot"], rows))

    print("\n### (d) latency-aware PaS on the device\n")
    cal = tab.meta["calibration"][str(config.resolution)]
    print(f"Latency table: `{lut}` ({len(tab.values)} layer points + overhead, measured in {table_s:.0f} s; "
          f"calibration on {cal['subnets']} whole plain networks: a = {cal['a']:.3f}, b = {cal['b_ms'] * 1e3:.1f} us, "
          f"max residual {cal['max_abs_residual_pct']:.1f}%). Unpruned plain network measured {unpruned_ms:.4f} ms "
          f"(p10), X = {args.share:.0%} of it = {target_ms:.4f} ms.\n")
    print(f"`{lat_cmd}` ({lat_s:.0f} s)\n")
    rows = [["unpruned (plain)", config.macs(), "100%", float(tab(config.widths)), f"{unpruned_ms:.4f} (table reference)",
             f"{unpruned_ms / target_ms:.2f}", "100%", "-", lat["base_top1"]]]
    for label, (res, _) in runs.items():
        s = spread(norm[f"PaS {label}"])
        predicted = float(tab(res["widths"]))
        rows.append([
            label, res["macs"], f"{res['macs_ratio']:.0%}", predicted,
            f"{s['median']:.4f} ({s['min']:.4f}-{s['max']:.4f})", f"{s['median'] / target_ms:.2f}",
            f"{s['median'] / unpruned_ms:.0%}", res["top1"], res["base_top1"],
        ])
    print(table(["PaS run", "MACs", "MACs share", "predicted ms (table)", "measured ms (min-max over repeats)",
                 "measured / X", "measured / unpruned", "top-1", "top-1 unpruned"], rows))
    print(f"\nIn the CLI run: predicted {lat['predicted_ms']:.4f} ms, measured {lat['measured_ms']:.4f} ms at the "
          f"table's speed (drift {lat['drift']:.3f}), target {lat['target_ms']:.4f} ms.")
    if args.ofa_budgets:
        budgets = [float(b) for b in args.ofa_budgets.split(",") if b.strip()]
        _ofa_vs_pas(args, out, profile, config, tab, lut, budgets, common, loads)
    print(f"\nMachine load: {'; '.join(loads)}. Files under `{out}`.")


def _ofa_vs_pas(
    args: argparse.Namespace, out: Path, profile: Any, config: Any, tab: Any, lut: Path, budgets: list[float],
    common: list[str], loads: list[str],
) -> None:
    """(e) PaS vs the OFA search on the compact supernet, at the same latency budgets, measured together."""
    ofa = out / "ofa"
    ofa.mkdir(exist_ok=True)
    cmds: list[str] = []
    compact_lut = ofa / "compact-lut.csv"
    prof, cmd, _ = _hwnas("profile", args.device, "--space", "compact", "--out", str(compact_lut), "--json")
    cmds.append(cmd)
    if args.supernet is not None:
        ckpt = args.supernet
        cmds.append(f"(supernet: existing checkpoint `{ckpt}`)")
    else:
        ckpt = ofa / "supernet.pt"
        _, cmd, _ = _hwnas("supernet", "train", "--space", "compact", "--data", "digits", "--out", str(ckpt), "--json")
        cmds.append(cmd)
    acc = ofa / "accuracy.pt"
    fit, cmd, _ = _hwnas(
        "predictor", "accuracy", str(ckpt), "--samples", str(args.accuracy_samples), "--data", "digits",
        "--out", str(acc), "--json",
    )
    cmds.append(cmd)
    budget_arg = ",".join(f"{b:g}" for b in budgets)
    found, cmd, _ = _hwnas(
        "search", "--space", "compact", "--lut", str(compact_lut), "--accuracy", str(acc), "--latency-ms", budget_arg,
        "--seed", str(args.seed), "--out", str(ofa / "search"), "--json", ok=(0, 1),  # 1: a budget infeasible
    )
    cmds.append(cmd)
    files: dict[str, Path] = {}
    rows: list[dict[str, Any]] = []
    for res in found["results"]:
        b = float(res["budget_ms"])
        row: dict[str, Any] = {"budget": b, "ofa": res}
        if res.get("arch"):
            arch = json.dumps(res["arch"], separators=(",", ":"))
            ev, cmd, _ = _hwnas("supernet", "eval", str(ckpt), "--arch", arch, "--data", "digits", "--json")
            cmds.append(cmd)
            path = ofa / f"ofa-{b:g}ms.onnx"
            ex, cmd, _ = _hwnas(
                "export", str(ckpt), "--arch", arch, "--format", "onnx", "--data", "digits", "--out", str(path), "--json"
            )
            cmds.append(cmd)
            row.update(ofa_top1=ev["top1"], ofa_macs=ev.get("macs", ex.get("macs")))
            files[f"OFA {b:g}"] = path
        pas, cmd, _ = _hwnas(
            "pas", "--data", "digits", "--target-ms", f"{b:g}", "--lut", str(lut), "--device", args.device,
            "--out", str(out / f"pas-{b:g}ms"), *common, "--json",
        )
        cmds.append(cmd)
        row["pas"] = pas
        files[f"PaS {b:g}"] = Path(pas["file"])
        rows.append(row)
    reference = pas_search.PasWorkloads(config=config).reference()
    with Device(profile) as device:
        _acquire(device)
        m = pas_search.measure_networks(device, files, reference=reference, repeats=args.repeats)
    loads.append(load_average())
    ref_ms = tab.reference_ms
    norm = {k: [v * ref_ms / r for v, r in zip(vals, m["reference_ms"], strict=True)] for k, vals in m["ms"].items()}

    print("\n### (e) PaS vs OFA at equal measured latency (digits, local)\n")
    print("Commands:\n")
    for c in cmds:
        print(f"- `{c}`" if not c.startswith("(") else f"- {c}")
    print(f"\nOFA: compact space LUT ({prof['entries']} entries), accuracy predictor on {fit.get('samples')} subnets "
          f"(Kendall tau {fit.get('kendall_tau')}), evolution search at each budget; the subnet's top-1 after BN "
          "recalibration (`supernet eval`). PaS: the digits base network at `--target-ms` on its own latency table. "
          f"Both networks of a budget measured in the same runner batches ({args.repeats} repeats, p10), normalised "
          "to the PaS table's reference speed.\n")
    out_rows = []
    for row in rows:
        b, pas = row["budget"], row["pas"]
        if row["ofa"].get("arch"):
            s = spread(norm[f"OFA {b:g}"])
            arch = row["ofa"]["arch"]
            out_rows.append([
                f"{b:g}", "OFA (compact)", f"r={arch['r']} d={arch['d']}", row["ofa"]["predicted_latency_ms"],
                f"{s['median']:.4f} ({s['min']:.4f}-{s['max']:.4f})", f"{s['median'] / b:.2f}",
                row["ofa_macs"], row["ofa_top1"],
            ])
        else:
            out_rows.append([f"{b:g}", "OFA (compact)", "infeasible", row["ofa"].get("min_latency_ms"), "-", "-", "-", "-"])
        s = spread(norm[f"PaS {b:g}"])
        out_rows.append([
            f"{b:g}", "PaS (digits)", "widths " + "/".join(map(str, pas["widths"])), pas["predicted_ms"],
            f"{s['median']:.4f} ({s['min']:.4f}-{s['max']:.4f})", f"{s['median'] / b:.2f}", pas["macs"], pas["top1"],
        ])
    print(table(["budget ms", "method", "network", "predicted ms", "measured ms (min-max)", "measured / budget",
                 "MACs", "top-1"], out_rows))


if __name__ == "__main__":
    main()
