"""`lut diff` on real back-to-back profiles: false positives, and injected slowdowns caught.

    .venv/bin/python -m benchmarks.bench_diff [--space compact] [--pairs 1] [--slowdowns 10,15,25]

Profiles the local device twice back to back (fresh LUTs), diffs them (every flagged entry
is a false positive), then injects the slowdowns into 3 random entries of the second table
(every latency column and the per-run samples scaled) and diffs again: the injected entries
must be flagged and nothing else.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from hwnas.agents.profiles import load_profile
from hwnas.profiler.diff import diff_luts
from hwnas.profiler.lut import LUT, OVERHEAD_KEY, read_samples, samples_path
from hwnas.profiler.profile import ProfileRequest, profile_device

from ._harness import header, table


def inject(path: Path, out: Path, picks: list[tuple[str, int]], factors: list[float]) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="compact")
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--slowdowns", default="10,15,25")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    factors = [1 + float(x) / 100 for x in args.slowdowns.split(",")]
    profile = load_profile("local")
    rng = np.random.default_rng(args.seed)
    rows = []
    for pair in range(args.pairs):
        with tempfile.TemporaryDirectory() as tmp:
            a, b, c = Path(tmp) / "a.csv", Path(tmp) / "b.csv", Path(tmp) / "c.csv"
            for out in (a, b):
                profile_device(profile, ProfileRequest(space=args.space, out=out))
            clean = diff_luts(LUT.load(a), LUT.load(b))
            keys = [k for k in LUT.load(b).keys() if k[0] != OVERHEAD_KEY]
            picks = [keys[i] for i in rng.choice(len(keys), size=len(factors), replace=False)]
            inject(b, c, picks, factors)
            hurt = diff_luts(LUT.load(a), LUT.load(c))
            flagged = {(e.key, e.resolution) for e in hurt.regressions}
            caught = [p in flagged for p in picks]
            rows.append([
                pair + 1, len(keys), len(clean.regressions), f"{len(clean.regressions) / len(keys):.1%}",
                f"{clean.drift_pct:+.1f}%" if clean.drift_pct is not None else "-",
                f"{clean.noise_pct:.1f}%" if clean.noise_pct is not None else "-",
                f"{clean.detectable_pct:.1f}%" if clean.detectable_pct is not None else "-",
                " ".join(f"+{(f - 1) * 100:.0f}%:{'yes' if ok else 'NO'}" for f, ok in zip(factors, caught)),
                len(flagged - set(picks)),
            ])
    print(header(f"lut diff on back-to-back real profiles: {args.space}, local CPU"))
    print(table(["pair", "entries", "false positives", "FP rate", "drift", "noise", "smallest detectable",
                 "injected caught", "other entries flagged"], rows))


if __name__ == "__main__":
    main()
