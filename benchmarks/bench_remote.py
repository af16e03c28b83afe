"""Overhead of the remote path: the same LUT profiled locally and over SSH on loopback.

    sudo .venv/bin/python -m benchmarks.bench_remote [--space compact] [--resolutions 32,48]
        [--runs 10] [--rounds 3] [--repeats 2] [--plain-rc] [--load mem:2x50%@2s,64MiB | none] [--no-quiet]

Needs root: it creates a network namespace and starts OpenSSH's sshd on 127.0.0.1 inside it
(the helpers of tests/netns.py, the same as the tests' ``sshd_server`` fixture). The "device"
behind sshd is this machine, running the runner with this interpreter. Each run is the real
CLI (``hwnas profile ... --json``) in the namespace, in the order local / SSH cold / SSH warm,
repeated, so that drift of the machine's speed hits all alike. A cold SSH run starts from an
empty device work folder, so it pays for pushing the runner and every model; the warm run
that follows profiles the same device again (its files are there: checksums only), as a
regression re-profile does. The workloads are exported once beforehand (an untimed local
run), since both paths share that cache.

bash runs ``~/.bashrc`` for every command sshd starts; this machine's root one runs ``pyenv
init``, which costs a few tenths of a second per command and is no part of hwnas. With
``--plain-rc`` sshd's sessions see an empty one (a bind mount in sshd's own mount namespace,
see tests/netns.py), as on a board with stock dotfiles.

Reported: wall time of each run (process start to exit) and the profile's own ``seconds``,
the ratios of median wall times SSH cold / local and SSH warm / local (target: <= 1.10), each
also as the median of the per-repeat ratios (runs seconds apart), the cost of one SSH command
(``true`` on an open connection: the fixed price of every round trip), and the median over
entries of the per-entry ``p10_ms`` (and ``median_ms``) ratio SSH / local with its spread (the
interquartile range), next to the same ratio between the two local runs: the noise floor.

Runs once quiet and once under ``--load`` (benchmarks/_load.py; the load runs on the host, outside the
namespace, through every run of its setting): one table of runs and one of ratios per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ._harness import load_average, table
from ._load import add_load_arguments, describe_settings, settings, under

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import netns as ns_helpers  # noqa: E402  (tests/netns.py: namespaces, sshd)


def run_cli(ns: str, args: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    proc = subprocess.run(
        ns_helpers.ns_argv(ns, [sys.executable, "-m", "hwnas", *args]), capture_output=True, text=True, env=env,
        cwd=str(cwd), timeout=3600,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"hwnas {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return wall, json.loads(proc.stdout)


def stat_ratio(a: Path, b: Path, column: str) -> dict[str, float]:
    """Per-entry ratio a/b of ``column`` (rows matched on key and resolution): median and quartiles."""
    da = pd.read_csv(a, comment="#").set_index(["key", "resolution"])[column].astype(float)
    db = pd.read_csv(b, comment="#").set_index(["key", "resolution"])[column].astype(float)
    if set(da.index) != set(db.index):
        raise SystemExit(f"{a} and {b} hold different entries")
    r = (da / db.loc[da.index]).to_numpy()
    q1, med, q3 = np.percentile(r, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": len(r)}


ROUND_TRIP = r"""
import json, sys, time
from hwnas.agents.ssh import SSHTransport
t = SSHTransport(device="d", workdir="/tmp/hwnas-bench-rt", **json.loads(sys.argv[1]))
t.run(["true"], description="warm up", timeout=60)
t0 = time.perf_counter()
for _ in range(10):
    t.run(["true"], description="round trip", timeout=60)
print(json.dumps({"per_command_s": (time.perf_counter() - t0) / 10}))
"""


def ssh_round_trip(ns: str, settings: dict[str, Any], *, env: dict[str, str]) -> float:
    """Seconds per command over the SSH transport (``true``, 10 times on one connection)."""
    proc = subprocess.run(ns_helpers.ns_argv(ns, [sys.executable, "-c", ROUND_TRIP, json.dumps(settings)]),
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"round-trip probe failed: {proc.stderr.strip()[-1500:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["per_command_s"])


def fmt_ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.3f} (IQR {r['q1']:.3f}-{r['q3']:.3f}, {r['n']} entries)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="compact")
    ap.add_argument("--resolutions", default=None, help="comma-separated (default: the space's LUT resolutions)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per model per round (hwnas profile --runs)")
    ap.add_argument("--rounds", type=int, default=3, help="hwnas profile --rounds")
    ap.add_argument("--repeats", type=int, default=2, help="local and SSH runs each, alternating")
    ap.add_argument("--keep", type=Path, default=None, help="keep the LUTs in this folder")
    ap.add_argument("--plain-rc", action="store_true", help="sshd's sessions see an empty ~/.bashrc")
    add_load_arguments(ap)
    args = ap.parse_args()
    reason = ns_helpers.netns_unavailable_reason()
    if reason:
        raise SystemExit(f"bench_remote: {reason}")
    from hwnas.supernet import get_space

    space = get_space(args.space)
    resolutions = args.resolutions or ",".join(str(r) for r in space.lut_resolutions)
    cmd = ".venv/bin/python -m benchmarks.bench_remote " + " ".join(
        [f"--space {args.space}", f"--resolutions {resolutions}", f"--runs {args.runs}", f"--rounds {args.rounds}",
         f"--repeats {args.repeats}"] + (["--plain-rc"] if args.plain_rc else [])
        + [a for a in sys.argv[1:] if a.startswith(("--load", "--no-quiet"))]
    )
    results: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="hwnas-bench-remote-"))
    ns = ns_helpers.create_netns()
    server = None
    try:
        env = dict(os.environ)
        env.pop("SSH_AUTH_SOCK", None)
        for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache")):
            (tmp / sub).mkdir()
            env[var] = str(tmp / sub)
        env["HWNAS_CACHE_DIR"] = os.environ.get("HWNAS_CACHE_DIR") or str(tmp / "workloads")
        server = ns_helpers.start_sshd(ns, tmp / "sshd", plain_rc=args.plain_rc)
        local_yaml = tmp / "local.yaml"  # a local device of our own: its lock and workdir in tmp
        local_yaml.write_text(yaml.safe_dump({"name": "local", "transport": {"local": {}},
                                              "workdir": str(tmp / "local-device")}))
        common = ["--space", args.space, "--resolutions", resolutions, "--runs", str(args.runs),
                  "--rounds", str(args.rounds), "--json"]
        print(f"exporting the workloads (untimed) into {env['HWNAS_CACHE_DIR']} ...", file=sys.stderr, flush=True)
        run_cli(ns, ["profile", str(local_yaml), *common[:4], "--runs", "1", "--rounds", "1",
                     "--out", str(tmp / "warmup.csv"), "--json"], env=env, cwd=tmp)
        for setting, spec in settings(args):
            with under(spec):
                load_before = load_average()
                runs: list[dict[str, Any]] = []
                for i in range(args.repeats):
                    for kind in ("local", "ssh", "ssh-warm"):
                        if kind == "local":
                            profile = local_yaml
                        elif kind == "ssh-warm":  # the same device folder again: everything is there
                            profile = tmp / f"{setting}-ssh{i}.yaml"
                        else:  # a fresh device work folder: the runner and every model are pushed again
                            profile = tmp / f"{setting}-ssh{i}.yaml"
                            profile.write_text(yaml.safe_dump({
                                "name": "sshdev", "transport": {"ssh": server.settings()}, "python": sys.executable,
                                "workdir": str(tmp / f"{setting}-ssh-device-{i}"),
                            }))
                        out = tmp / f"{setting}-{kind}{i}.csv"
                        print(f"{setting} run {len(runs) + 1}/{3 * args.repeats}: {kind} ...", file=sys.stderr, flush=True)
                        wall, info = run_cli(ns, ["profile", str(profile), *common, "--out", str(out)], env=env, cwd=tmp)
                        runs.append({"kind": kind, "i": i, "wall": wall, "seconds": info["seconds"], "entries": info["entries"],
                                     "lut": out})
                round_trip = ssh_round_trip(ns, server.settings(), env=env)
                load_after = load_average()
                local = [r for r in runs if r["kind"] == "local"]
                ssh = [r for r in runs if r["kind"] == "ssh"]
                warm = [r for r in runs if r["kind"] == "ssh-warm"]
                wall_ratio = statistics.median(r["wall"] for r in ssh) / statistics.median(r["wall"] for r in local)
                warm_ratio = statistics.median(r["wall"] for r in warm) / statistics.median(r["wall"] for r in local)
                paired = {k: statistics.median(r["wall"] / loc["wall"] for r, loc in zip(rs, local, strict=True))
                          for k, rs in (("ssh", ssh), ("ssh-warm", warm))}
                sec_ratio = statistics.median(r["seconds"] for r in ssh) / statistics.median(r["seconds"] for r in local)
                pairs = [(s["lut"], loc["lut"]) for s, loc in zip(ssh, local, strict=True)]
                ratios = {col: [stat_ratio(s, loc, col) for s, loc in pairs] for col in ("p10_ms", "median_ms")}
                noise = {col: stat_ratio(local[1]["lut"], local[0]["lut"], col) for col in ratios} if len(local) > 1 else {}
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    for r in runs:
                        shutil.copy(r["lut"], args.keep / r["lut"].name)
                results.append({"setting": setting, "runs": runs, "load_before": load_before, "load_after": load_after,
                                "round_trip": round_trip, "wall_ratio": wall_ratio, "warm_ratio": warm_ratio,
                                "paired": paired, "sec_ratio": sec_ratio, "ratios": ratios, "noise": noise})
    finally:
        if server is not None:
            server.stop()
        ns_helpers.delete_netns(ns)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"## Remote path overhead: `{args.space}` over SSH on loopback vs local\n")
    print(f"Command: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})  ")
    print(describe_settings(args))
    rc_note = "an empty ~/.bashrc (--plain-rc)" if args.plain_rc else "this machine's root ~/.bashrc"
    print("SSH: OpenSSH sshd on 127.0.0.1 in a network namespace, sessions with " + rc_note + "; a cold SSH run "
          "starts from an empty device work folder (runner and models pushed), the warm one after it profiles the "
          "same folder again; workloads exported beforehand (untimed).\n")
    for res in results:
        runs, ratios, noise, paired = res["runs"], res["ratios"], res["noise"], res["paired"]
        wall_ratio, warm_ratio, sec_ratio, round_trip = (res[k] for k in ("wall_ratio", "warm_ratio", "sec_ratio",
                                                                              "round_trip"))
        print(f"### {res['setting']}\n\nMachine load: before {res['load_before']}; after {res['load_after']}.\n")
        print(table(["run", "path", "entries", "wall s", "profile seconds"],
                    [[n + 1, r["kind"], r["entries"], round(r["wall"], 2), round(r["seconds"], 2)]
                     for n, r in enumerate(runs)]))
        print()
        rows = [
            ["wall time, median SSH cold / median local", f"{wall_ratio:.3f}", "<= 1.10"],
            ["wall time, SSH cold / local of the same repeat, median", f"{paired['ssh']:.3f}", "<= 1.10"],
            ["wall time, median SSH warm / median local", f"{warm_ratio:.3f}", "<= 1.10"],
            ["wall time, SSH warm / local of the same repeat, median", f"{paired['ssh-warm']:.3f}", "<= 1.10"],
            ["profile seconds, median SSH cold / median local", f"{sec_ratio:.3f}", ""],
            ["one SSH command (`true`) on an open connection, seconds", f"{round_trip:.3f}", ""],
        ]
        for col in ratios:
            for n, r in enumerate(ratios[col]):
                rows.append([f"per-entry {col} SSH cold / local (pair {n + 1}), median over entries", fmt_ratio(r), "within noise"])
            if col in noise:
                rows.append([f"per-entry {col} local 2 / local 1 (noise floor)", fmt_ratio(noise[col]), ""])
        print(table(["measure", "value", "target"], rows))
        print()


if __name__ == "__main__":
    main()
