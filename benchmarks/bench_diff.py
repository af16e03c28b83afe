"""`lut diff` on real back-to-back profiles, quiet and loaded: false positives, injected slowdowns caught,
and `--recheck` on a slowdown caused on purpose.

    .venv/bin/python -m benchmarks.bench_diff [--space compact] [--pairs 1] [--slowdowns 25,25,25]
        [--load mem:2x50%@2s,64MiB | none] [--no-quiet] [--draws 10] [--no-recheck]
        [--variant LABEL:NAME=VALUE,... ...]

Per setting (quiet, then under ``--load``: benchmarks/_load.py, running through the whole pair):

1. profiles the local device twice back to back (fresh LUTs) and diffs them: every flagged entry is a
   false positive; entries beyond the threshold but not told from noise are counted as undecided;
2. edits the slowdowns into 3 random entries of the second table (every latency column and the per-run
   samples scaled) and diffs again: the edited entries must be flagged and nothing else; ``--draws N``
   repeats this with N random sets of entries on the same pair (the first set is the one rechecked);
3. ``--recheck``: re-measures the flagged and undecided entries of that edited table on a device that
   really runs the first two edited entries slower by the same factors (a runtime wrapper,
   benchmarks/_slow_runtime.py) and the third at its own speed: the first two must be confirmed and the
   third cleared, since re-measuring an edited file rightly clears it.

Each ``--variant`` (``p2:processes=2``) profiles every pair once more with those measurement settings.

``--judge DIR [DIR ...]`` profiles nothing: it judges again the pairs an earlier run kept (``--keep DIR``:
one folder a pair, ``a.csv`` and ``b.csv``) with this tree's ``lut diff``, ``--draws`` random sets of
edited entries each, so a change of the diff can be compared on the same tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.agents.device import Device
from hwnas.agents.profiles import load_profile
from hwnas.profiler.diff import diff_luts
from hwnas.profiler.lut import LUT, OVERHEAD_KEY, read_samples, samples_path
from hwnas.profiler.profile import ProfileRequest, profile_device
from hwnas.profiler.recheck import recheck

from ._harness import add_variant_argument, header, load_average, parse_variants, table
from ._load import add_load_arguments, describe_settings, settings, under
from ._slow_runtime import write_slow_profile


def inject(path: Path, out: Path, picks: list[tuple[str, int]], factors: list[float]) -> None:
    """Copy the LUT at ``path`` to ``out`` with the ``picks`` rows (every ``*_ms`` column but ``ref_ms``, and
    their per-run samples) multiplied by ``factors``."""
    lut = LUT.load(path)
    rows = lut.rows
    for (key, r), f in zip(picks, factors):
        sel = (rows["key"] == key) & (rows["resolution"].astype(int) == r)
        for col in rows.columns:
            if col.endswith("_ms") and col != "ref_ms":
                rows.loc[sel, col] = rows.loc[sel, col].astype(float) * f
    lut.save(out)
    samples = read_samples(path)
    if samples is not None:
        lines = ["key,resolution,run,ms"]
        for (key, r), vals in samples.items():
            f = dict(zip(picks, factors)).get((key, r), 1.0)
            lines += [f"{key},{r},{i},{float(v) * f!r}" for i, v in enumerate(vals)]
        samples_path(out).write_text("\n".join(lines) + "\n")


def judge_kept(folders: list[Path], factors: list[float], draws: int, seed: int) -> None:
    """Judge every kept pair under ``folders`` again: the clean diff, then ``draws`` random sets of entries
    edited by ``factors``; one row a pair and a total."""
    print(header("lut diff judged again on kept back-to-back profiles"))
    draws = max(1, draws)
    rows, total = [], np.zeros(6, dtype=int)
    pairs = [d for f in folders for d in sorted(f.iterdir()) if (d / "a.csv").is_file() and (d / "b.csv").is_file()]
    for d in pairs:
        a, b = LUT.load(d / "a.csv"), LUT.load(d / "b.csv")
        clean = diff_luts(a, b, samples=0)
        false = len(clean.regressions) + len(clean.improvements)
        keys = [k for k in b.keys() if k[0] != OVERHEAD_KEY]
        rng = np.random.default_rng(seed)
        caught = exactly = others = 0
        with tempfile.TemporaryDirectory() as tmp:
            c = Path(tmp) / "c.csv"
            for _ in range(draws):
                picks = [keys[i] for i in rng.choice(len(keys), size=len(factors), replace=False)]
                inject(d / "b.csv", c, picks, factors)
                flagged = {(e.key, e.resolution) for e in diff_luts(a, LUT.load(c), samples=0).regressions}
                caught += len(flagged & set(picks))
                exactly += flagged == set(picks)
                others += len(flagged - set(picks))
        n = len(factors) * draws
        total += [false, false == 0, len(clean.undecided), caught, exactly, others]
        rows.append([f"{d.parent.name}/{d.name}", false, len(clean.undecided), _pct(clean.noise_pct),
                     f"{caught}/{n}", f"{exactly}/{draws}", others])
    rows.append(["**all**", int(total[0]), int(total[2]), f"{int(total[1])}/{len(pairs)} pairs without one",
                 f"{int(total[3])}/{len(factors) * draws * len(pairs)}", f"{int(total[4])}/{draws * len(pairs)}",
                 int(total[5])])
    print(table(["pair", "false findings", "undecided", "noise", "edited entries flagged", "draws found exactly",
                 "other entries flagged in the draws"], rows))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="compact")
    ap.add_argument("--resolutions", default=None, help="comma-separated (default: the space's LUT resolutions)")
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--slowdowns", default="25,25,25")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep every pair's LUTs in this folder")
    ap.add_argument("--draws", type=int, default=1,
                    help="edit this many random sets of entries into each pair's second table (the first one is also rechecked)")
    ap.add_argument("--no-recheck", action="store_true", help="skip --recheck (it re-measures: minutes on a large space)")
    ap.add_argument("--judge", type=Path, nargs="+", default=None,
                    help="judge again the pairs kept by earlier runs (--keep folders) instead of profiling")
    add_variant_argument(ap, "profile each pair")
    add_load_arguments(ap)
    args = ap.parse_args()
    factors = [1 + float(x) / 100 for x in args.slowdowns.split(",")]
    if args.judge:
        judge_kept(args.judge, factors, args.draws, args.seed)
        return
    resolutions = tuple(int(r) for r in args.resolutions.split(",")) if args.resolutions else None
    profile = load_profile("local")
    variants = [("default", {})] + parse_variants(args.variant)
    rng = np.random.default_rng(args.seed)
    print(header(f"lut diff on back-to-back real profiles: {args.space}, local CPU"))
    print(describe_settings(args))
    rows, rechecks = [], []
    for name, spec in settings(args):
        for pair, (variant, overrides) in ((p, v) for p in range(args.pairs) for v in variants):
            with tempfile.TemporaryDirectory() as tmp, under(spec):
                a, b, c = Path(tmp) / "a.csv", Path(tmp) / "b.csv", Path(tmp) / "c.csv"
                secs = []
                for out in (a, b):
                    t0 = time.perf_counter()
                    profile_device(profile, ProfileRequest(space=args.space, resolutions=resolutions, out=out,
                                                           overrides=tuple(overrides.items())))
                    secs.append(time.perf_counter() - t0)
                clean = diff_luts(LUT.load(a), LUT.load(b))
                keys = [k for k in LUT.load(b).keys() if k[0] != OVERHEAD_KEY]
                draws = []  # (picks, flagged) per draw; the first draw is also rechecked
                for _ in range(max(1, args.draws)):
                    chosen = [keys[i] for i in rng.choice(len(keys), size=len(factors), replace=False)]
                    inject(b, c, chosen, factors)
                    draws.append((chosen, {(e.key, e.resolution) for e in diff_luts(LUT.load(a), LUT.load(c), samples=0).regressions}))
                picks, flagged = draws[0]
                inject(b, c, picks, factors)
                caught = [p in flagged for p in picks]
                all_caught = sum(len(f & set(p)) for p, f in draws)
                exactly = sum(f == set(p) for p, f in draws)
                others = sum(len(f - set(p)) for p, f in draws)
                t0 = time.perf_counter()
                if not args.no_recheck:
                    re = diff_luts(LUT.load(a), LUT.load(c))
                    # --recheck on a device that really runs the first picks (all but the last) slower
                    slow_ids = {f"{k}@{r}": f for (k, r), f in zip(picks[:-1], factors[:-1])}
                    dev_profile = write_slow_profile(Path(tmp) / "dev", slow_ids, float(np.mean(factors[:-1])))
                    with Device(load_profile(str(dev_profile))) as dev:
                        dev.acquire()
                        recheck(re, LUT.load(a), LUT.load(c), dev)
                re_secs = time.perf_counter() - t0
                load = load_average().split(" (")[0]
                if args.keep is not None:
                    import shutil

                    dest = args.keep / f"{name}-{variant}-{pair + 1}"
                    shutil.copytree(tmp, dest, dirs_exist_ok=True)
            rows.append([
                name, variant, pair + 1, len(keys), " / ".join(f"{s:.0f}" for s in secs), len(clean.regressions),
                len(clean.improvements), len(clean.undecided), f"{clean.drift_pct:+.1f}%" if clean.drift_pct is not None else "-",
                _pct(clean.noise_pct),
                _pct(None if clean.smallest_detectable is None else 100 * clean.smallest_detectable),
                _pct(clean.detectable_pct),
                " ".join(f"+{(f - 1) * 100:.0f}%:{'yes' if ok else 'NO'}" for f, ok in zip(factors, caught)),
                len(flagged - set(picks)), f"{all_caught}/{len(factors) * len(draws)}", f"{exactly}/{len(draws)}", others,
                load,
            ])
            if args.no_recheck:
                continue
            confirmed = {(e.key, e.resolution) for e in re.regressions}
            really = set(picks[:-1])
            rechecks.append([
                name, variant, pair + 1, re.rechecked["entries"], re.rechecked["confirmed"], re.rechecked["cleared"],
                re.rechecked["undecided"],
                "yes" if confirmed == really else f"NO ({len(confirmed & really)}/{len(really)} real, "
                f"{len(confirmed - really)} other)",
                " ".join(f"{(e.rechecked or {}).get('change_pct', float('nan')):+.0f}%" for e in re.entries
                         if (e.key, e.resolution) in set(picks)),
                f"{re_secs:.0f}", load,
            ])
    print(table(["setting", "variant", "pair", "entries", "profile s (a / b)", "false positives", "improvements (false too)",
                 "undecided", "drift",
                 "noise", "smallest detectable (best entry)", "typical detectable", "edited entries caught",
                 "other entries flagged", f"edited caught ({args.draws} draws)", "draws: exactly the edited",
                 "draws: other entries flagged", "load avg (1 min)"], rows))
    if args.no_recheck:
        return
    print()
    print("`--recheck` (the first edited entries really slower on the recheck device, the last one not):")
    print()
    print(table(["setting", "variant", "pair", "entries re-measured", "confirmed", "cleared", "still undecided",
                 "exactly the real slowdowns confirmed", "edited entries' rechecked change", "recheck s",
                 "load avg (1 min)"], rechecks))


if __name__ == "__main__":
    main()
