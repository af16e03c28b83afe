"""`lut diff` and `lut history`: comparability, drift, noise-aware regressions, reports, exit codes.

Tables are synthetic (the `compact` space's entries with latencies from their MACs, per-run spreads of
1.5-3% and 1% between-run noise, seeded) so that the injected changes are known exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas.profiler.diff import NEIGHBOURS, diff_luts
from hwnas.profiler.errors import ProfilerError
from hwnas.profiler.history import history
from hwnas.profiler.lut import DEFAULT_COLUMNS, LUT, LUTWriter, default_metadata, entry_row
from hwnas.supernet import get_space

SPACE = "compact"


def _meta(**changes) -> dict:
    meta = default_metadata(space=SPACE, resolutions=[32, 48], statistic="median_ms")
    meta.update(
        runtime={"name": "onnxruntime", "version": "1.20.1", "providers": ["CPUExecutionProvider"]},
        exporter={"name": "torch.onnx", "version": "2.13.0", "opset": 17},
        dtype="float32", batch=1, threads=1, cores="all",
        device={"name": "local", "model": "box", "soc": "x86_64", "governor": "performance"},
    )
    for key, value in changes.items():
        meta[key] = value
    return meta


def _base_values(seed: int = 0) -> dict[tuple[str, int], float]:
    rng = np.random.default_rng(seed)
    entries = get_space(SPACE).all_lut_entries()
    return {(e.key, e.resolution): 0.005 + e.macs / 2e7 * float(rng.uniform(0.8, 1.25)) for e in entries}


def _rows(values: dict[tuple[str, int], float], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for (key, r), med in values.items():
        lo, hi = rng.uniform(0.015, 0.03, size=2)
        rows.append(entry_row(key, r, runs=50, stats={
            "median_ms": med, "p10_ms": med * (1 - lo), "p90_ms": med * (1 + hi), "mean_ms": med * 1.003,
            "std_ms": med * (lo + hi) / 2.56, "min_ms": med * (1 - 1.5 * lo),
        }))
    return rows


def _save(path: Path, values: dict, seed: int, meta: dict | None = None) -> Path:
    lut = LUT(metadata=meta or _meta(), rows=pd.DataFrame(_rows(values, seed), columns=DEFAULT_COLUMNS))
    lut.save(path)
    return path


def _noisy(values: dict, seed: int, *, drift: float = 0.0, noise: float = 0.01) -> dict:
    rng = np.random.default_rng(seed)
    return {k: v * (1 + drift) * float(np.exp(rng.normal(0, noise))) for k, v in values.items()}


def _pick(values: dict, n: int, seed: int) -> list[tuple[str, int]]:
    keys = [k for k in values if k[0].startswith("expanded_conv")]
    rng = np.random.default_rng(seed)
    return [keys[i] for i in rng.choice(len(keys), size=n, replace=False)]


def _hwnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, timeout=180)


# ------------------------------------------------------------------------------------------- library


def test_identical_tables_have_no_findings(tmp_path):
    base = _save(tmp_path / "a.csv", _base_values(), seed=1)
    result = diff_luts(LUT.load(base), LUT.load(base), samples=200)
    assert result.comparable and result.exit_code == 0
    assert result.drift == 0.0 and not result.regressions and not result.improvements
    assert result.network is not None and result.network["change_pct"] == 0.0


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_injected_slowdowns_are_exactly_the_regressions(tmp_path, seed):
    values = _base_values()
    new_values = _noisy(values, seed, drift=0.03)
    victims = _pick(values, 3, seed)
    for k, slow in zip(victims, (0.10, 0.15, 0.25), strict=True):
        new_values[k] *= 1 + slow
    base = LUT.load(_save(tmp_path / "a.csv", values, seed=1))
    new = LUT.load(_save(tmp_path / "b.csv", new_values, seed=seed + 100))
    result = diff_luts(base, new, samples=300)
    flagged = {(e.key, e.resolution): e for e in result.regressions}
    assert set(flagged) == set(victims)
    for k, slow in zip(victims, (0.10, 0.15, 0.25), strict=True):
        assert flagged[k].change_pct == pytest.approx(100 * slow, abs=4.0)
        assert flagged[k].method == "p10-p90" and flagged[k].impact_pct > 0
    assert result.drift == pytest.approx(0.03, abs=0.01)
    assert not result.drift_finding and result.exit_code == 1
    assert not result.improvements


def test_calibrated_statistic_is_judged_with_relative_spreads(tmp_path):
    """A normalised statistic (``lut_ms``, as the profiler writes) next to raw run columns that moved with
    the machine: the raw spread is applied relative to the statistic, so a run on a machine 8% faster as
    a whole still shows the real slowdowns, and only them."""
    values = _base_values()
    victims = _pick(values, 3, 31)
    new_values = _noisy(values, 31)
    for k, slow in zip(victims, (0.10, 0.15, 0.25), strict=True):
        new_values[k] *= 1 + slow

    def save(path: Path, vals: dict, machine: float, seed: int) -> LUT:
        rows = _rows({k: v * machine for k, v in vals.items()}, seed)  # raw columns: as measured
        for row, v in zip(rows, vals.values(), strict=True):
            row["lut_ms"] = v * 0.9  # the calibrated, reference-normalised statistic
        lut = LUT(metadata=_meta(statistic="lut_ms"), rows=pd.DataFrame(rows))
        lut.save(path)
        return LUT.load(path)

    base = save(tmp_path / "a.csv", values, 1.0, 1)
    new = save(tmp_path / "b.csv", new_values, 0.92, 131)
    result = diff_luts(base, new, samples=0)
    assert abs(result.drift) < 0.01
    assert {(e.key, e.resolution) for e in result.regressions} == set(victims)


def _profiled(path: Path, values: dict, seed: int, *, a: float, overhead: float, refs: list[float], shift: int = 0,
              spreads: dict | None = None) -> LUT:
    """A table as the profiler writes it: raw ``p10_ms`` per row with its batch's reference (``ref_ms``, one
    value per batch of 24 rows, in row order; the first batch ``24 - shift`` rows), the measured statistic
    named in the metadata, and the calibrated ``lut_ms = a * (p10 - overhead)`` as the table's statistic.
    ``spreads``: each row's ``process_spread`` by key (0.01 where not given)."""
    rows = _rows(values, seed)
    for n, row in enumerate(rows):
        ref = refs[((n + shift) // 24) % len(refs)]
        if spreads is not None:
            row["process_spread"] = spreads.get((row["key"], row["resolution"]), 0.01)
        for col in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "min_ms"):
            row[col] *= ref / 0.5  # raw: as measured on a machine whose reference ran in `ref` ms
        row["ref_ms"] = ref
        row["lut_ms"] = max(0.0, a * (row["p10_ms"] * 0.5 / ref - overhead))
    meta = _meta(statistic="lut_ms")
    meta["measurement"] = {"raw_statistic": "p10_ms"}
    meta["reference"] = {"ms": 0.5}
    lut = LUT(metadata=meta, rows=pd.DataFrame(rows))
    lut.save(path)
    return LUT.load(path)


#: One reference value per batch of 24 rows (``_profiled``): the batches tell themselves apart by it.
BATCH_REFS = [0.50, 0.51, 0.49, 0.52, 0.48, 0.505, 0.495]


def _diff_profiled(tmp_path: Path, values: dict, new_values: dict, seed: int, refs: list[float], tag: str = ""):
    """Diff two tables as the profiler writes them (``_profiled``, scale 1.3, no overhead), batched by ``refs``."""
    base = _profiled(tmp_path / f"a{tag}.csv", values, 1, a=1.3, overhead=0.0, refs=refs)
    new = _profiled(tmp_path / f"b{tag}.csv", new_values, seed, a=1.3, overhead=0.0, refs=refs)
    return diff_luts(base, new, samples=0)


def test_entries_are_judged_by_what_was_measured_not_by_the_calibration(tmp_path):
    """Two back-to-back profiles whose calibration differs (scale 1.30 vs 1.45, an overhead close to the
    smallest entries' cost, so their ``lut_ms`` is near 0 and moves by tens of percent) and whose batches
    ran at other reference speeds: judged by ``p10_ms / ref_ms``, only the three real slowdowns are found."""
    values = _base_values()
    small = min(values.values())
    victims = _pick(values, 3, 41)
    new_values = _noisy(values, 41)
    for k in victims:
        new_values[k] *= 1.25
    base = _profiled(tmp_path / "a.csv", values, 1, a=1.30, overhead=0.95 * small, refs=[0.50, 0.52, 0.49])
    new = _profiled(tmp_path / "b.csv", new_values, 141, a=1.45, overhead=0.90 * small, refs=[0.55, 0.50, 0.53])
    result = diff_luts(base, new, samples=0)
    assert result.statistic == "p10_ms / ref_ms"
    assert {(e.key, e.resolution) for e in result.regressions} == set(victims)
    assert not result.improvements and abs(result.drift) < 0.01
    by_lut_ms = [abs(n / b - 1) for b, n in zip(base.rows["lut_ms"], new.rows["lut_ms"], strict=True) if b > 0]
    assert max(by_lut_ms) > 0.25  # what judging the calibrated column would have seen


def test_entries_that_moved_with_their_neighbours_are_undecided(tmp_path):
    """A run of eleven consecutive rows measured 30% slower (the machine slowed for a while, as a memory
    load did in bench_diff) is undecided, not eleven regressions, and does not widen the noise; a slowdown
    of one entry on its own is still found."""
    values = _base_values()
    keys = list(values)
    new_values = _noisy(values, 51)
    run = keys[40:51]
    for k in run:
        new_values[k] *= 1.30
    alone = keys[100]
    new_values[alone] *= 1.25
    base = _profiled(tmp_path / "a.csv", values, 1, a=1.3, overhead=0.0, refs=[0.5])
    new = _profiled(tmp_path / "b.csv", new_values, 151, a=1.3, overhead=0.0, refs=[0.5])
    result = diff_luts(base, new, samples=0)
    assert [(e.key, e.resolution) for e in result.regressions] == [alone]
    assert {(e.key, e.resolution) for e in result.undecided} == set(run)
    assert all(e.with_neighbours and e.verdict == "noise" for e in result.undecided)
    assert result.noise_pct < 2.0 and result.exit_code == 1
    assert any("together with entries measured beside them" in n for n in result.notes)
    new_values[alone] /= 1.25  # without the lone slowdown: nothing found, the run still undecided
    new = _profiled(tmp_path / "c.csv", new_values, 151, a=1.3, overhead=0.0, refs=[0.5])
    result = diff_luts(base, new, samples=0)
    assert result.exit_code == 0 and len(result.undecided) == len(run)


def test_a_disturbed_batch_is_undecided_but_three_slowdowns_in_one_batch_are_found(tmp_path):
    """Every fourth entry of one batch of 24 measured 30% slower (a load hit the batch: entries here and
    there, not in a row, as bench_diff saw) is undecided; three real slowdowns in another batch, apart
    from each other, are three regressions: three of 24 is not a disturbed batch."""
    values = _base_values()
    keys = list(values)
    new_values = _noisy(values, 61)
    hit = keys[48:72:4]  # batch 2: six entries, none within three rows of another
    for k in hit:
        new_values[k] *= 1.30
    real = [keys[97], keys[105], keys[114]]  # batch 4
    for k in real:
        new_values[k] *= 1.25
    result = _diff_profiled(tmp_path, values, new_values, 161, BATCH_REFS)
    assert {(e.key, e.resolution) for e in result.regressions} == set(real)
    assert {(e.key, e.resolution) for e in result.undecided} == set(hit)
    assert not result.improvements and result.exit_code == 1


def test_a_batch_measured_at_its_own_speed_is_taken_out_and_its_slowdown_found(tmp_path):
    """A whole batch of 24 measured 12% slower in NEW while its reference was not (the machine's speed moved
    the small entries and not the compute-bound reference, as between back-to-back profiles here): the
    batch's own offset is factored out, so its entries are neither regressions nor undecided, and a real
    25% slowdown inside it is found beside two in other batches. Without the batch offset its 24 entries
    were undecided and the slowdown inside it with them."""
    values = _base_values()
    keys = list(values)
    new_values = _noisy(values, 71)
    for k in keys[24:48]:
        new_values[k] *= 1.12
    real = [keys[30], keys[80], keys[130]]
    for k in real:
        new_values[k] *= 1.25
    result = _diff_profiled(tmp_path, values, new_values, 171, BATCH_REFS)
    assert {(e.key, e.resolution) for e in result.regressions} == set(real)
    assert not result.undecided and not result.improvements and result.exit_code == 1
    by_key = {(e.key, e.resolution): e for e in result.entries}
    assert by_key[real[0]].change_pct == pytest.approx(25.0, abs=4.0)
    offsets = sorted(g["offset_pct"] for g in result.batch_offsets)
    assert len(result.batch_offsets) == len(BATCH_REFS) and offsets[-1] == pytest.approx(12.0, abs=2.5)
    assert all(abs(o) < 2.0 for o in offsets[:-1]) and result.noise_pct < 2.0
    assert any("runner jobs measured at their own speed" in n for n in result.notes)
    # the same tables without batch labels (one reference value throughout): the drift alone, and the batch
    # that moved is undecided as a run of entries that moved together
    flat = _diff_profiled(tmp_path, values, new_values, 171, [0.5], tag="-flat")
    assert flat.batch_offsets == [] and {(e.key, e.resolution) for e in flat.undecided} >= set(keys[25:47]) - set(real)


def test_noisy_table_does_not_cry_wolf(tmp_path):
    """5% between-run noise but only 1.5-3% within-run spreads: the spreads alone would flag dozens of
    entries; the table's own noise (empirical null) keeps them quiet and says what is detectable."""
    values = _base_values()
    base = LUT.load(_save(tmp_path / "a.csv", values, seed=1))
    new = LUT.load(_save(tmp_path / "b.csv", _noisy(values, 0, noise=0.05), seed=100))
    result = diff_luts(base, new, samples=0)
    assert not result.regressions and not result.improvements and result.exit_code == 0
    assert result.noise_pct == pytest.approx(5.0, abs=1.0) and result.detectable_pct > 15
    assert sum(e.verdict == "noise" for e in result.entries) > 20
    assert len(diff_luts(base, new, samples=0, noise_z=0.0).regressions) > 10  # what the spreads alone say


def test_uniform_drift_is_drift_not_regressions(tmp_path):
    values = _base_values()
    base = LUT.load(_save(tmp_path / "a.csv", values, seed=1))
    new = LUT.load(_save(tmp_path / "b.csv", _noisy(values, 5, drift=0.08), seed=2))
    result = diff_luts(base, new, samples=200)
    assert result.drift == pytest.approx(0.08, abs=0.01)
    assert result.noise_pct == pytest.approx(1.0, abs=0.3) and result.detectable_pct == pytest.approx(5.0, abs=0.5)
    assert not result.regressions and not result.improvements
    assert not result.drift_finding and result.exit_code == 0
    assert abs(result.network["change_pct"]) < 1.0 and result.network["raw_change_pct"] == pytest.approx(8, abs=1.5)
    far = LUT.load(_save(tmp_path / "c.csv", _noisy(values, 5, drift=0.15), seed=2))
    result = diff_luts(base, far, samples=0)
    assert result.drift_finding and not result.regressions and result.exit_code == 1


def test_comparability_field_by_field(tmp_path):
    values = _base_values()
    base = LUT.load(_save(tmp_path / "a.csv", values, seed=1))
    meta = _meta(threads=2)
    meta["runtime"] = dict(meta["runtime"], version="1.22.0")
    new = LUT.load(_save(tmp_path / "b.csv", values, seed=1, meta=meta))
    result = diff_luts(base, new)
    assert not result.comparable and result.exit_code == 2
    assert [(m["field"], m["base"], m["new"]) for m in result.mismatches] == [
        ("runtime.version", "1.20.1", "1.22.0"), ("threads", 1, 2)]
    assert diff_luts(base, new, allow=["runtime.version", "threads"]).exit_code == 0
    assert diff_luts(base, new, allow=["runtime", "threads"]).comparable
    assert not diff_luts(base, new, allow=["runtime"]).comparable
    with pytest.raises(ProfilerError, match="did you mean runtime.version"):
        diff_luts(base, new, allow=["runtime.versoin"])


def test_missing_and_added_entries(tmp_path):
    values = _base_values()
    gone, = _pick(values, 1, 3)
    new_values = {k: v for k, v in values.items() if k != gone}
    base = LUT.load(_save(tmp_path / "a.csv", values, seed=1))
    new = LUT.load(_save(tmp_path / "b.csv", new_values, seed=1))
    result = diff_luts(base, new, samples=100)
    assert result.missing == [{"key": gone[0], "resolution": gone[1]}] and result.added == []
    assert diff_luts(new, base, samples=0).added == [{"key": gone[0], "resolution": gone[1]}]


def test_mann_whitney_on_per_run_samples(tmp_path):
    """With per-run samples kept (sidecar NAME.samples.csv) the decision is a Mann-Whitney U test."""
    values = dict(list(_base_values().items())[:30])
    victim = list(values)[7]
    rng = np.random.default_rng(4)

    def write(path: Path, vals: dict) -> LUT:
        with LUTWriter(path, metadata=_meta(), columns=DEFAULT_COLUMNS, keep_samples=True) as w:
            for (key, r), med in vals.items():
                runs = med * np.exp(rng.normal(0, 0.03, size=40))
                w.write(entry_row(key, r, runs=40, stats={
                    "median_ms": float(np.median(runs)), "p10_ms": float(np.percentile(runs, 10)),
                    "p90_ms": float(np.percentile(runs, 90)), "mean_ms": float(runs.mean()),
                    "std_ms": float(runs.std()), "min_ms": float(runs.min())}), samples=runs)
            return w.finish()

    write(tmp_path / "a.csv", values)
    new_values = _noisy(values, 9, drift=0.02)
    new_values[victim] *= 1.12
    write(tmp_path / "b.csv", new_values)
    result = diff_luts(LUT.load(tmp_path / "a.csv"), LUT.load(tmp_path / "b.csv"), samples=100)
    assert [(e.key, e.resolution) for e in result.regressions] == [victim]
    assert result.regressions[0].method == "mann-whitney" and result.regressions[0].p_value < 1e-3
    assert any("no impact estimate" in n for n in result.notes)  # 30 entries do not cover the space


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_exit_codes_json_and_reports(tmp_path):
    values = _base_values()
    new_values = _noisy(values, 21)
    victims = _pick(values, 3, 21)
    for k, slow in zip(victims, (0.10, 0.15, 0.25), strict=True):
        new_values[k] *= 1 + slow
    a = _save(tmp_path / "a.csv", values, seed=1)
    b = _save(tmp_path / "b.csv", new_values, seed=121)

    proc = _hwnas("lut", "diff", str(a), str(a), "--json", "--samples", "100")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["regressions"] == []

    md = tmp_path / "report" / "diff.md"
    md.parent.mkdir()
    proc = _hwnas("lut", "diff", str(a), str(b), "--json", "--report", str(md), "--samples", "200")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["comparable"] is True and data["mismatches"] == []
    assert {(r["key"], r["resolution"]) for r in data["regressions"]} == set(victims)
    for r in data["regressions"]:
        assert {"key", "resolution", "base_ms", "new_ms", "change_pct"} <= set(r)
    assert {"drift", "improvements", "missing", "added"} <= set(data)
    text = md.read_text()
    assert all(k[0] in text for k in victims) and "Verdict: FAIL" in text
    pngs = sorted(md.parent.glob("*.png"))
    assert [p.name for p in pngs] == ["diff_change_vs_latency.png", "diff_changes.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    html = tmp_path / "diff.html"
    proc = _hwnas("lut", "diff", str(a), str(b), "--report", str(html), "--samples", "100")
    assert proc.returncode == 1, proc.stderr
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 2 and victims[0][0] in page

    meta = _meta()
    meta["runtime"] = dict(meta["runtime"], version="1.22.0")
    c = _save(tmp_path / "c.csv", values, seed=1, meta=meta)
    proc = _hwnas("lut", "diff", str(a), str(c), "--json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["comparable"] is False and data["mismatches"][0]["field"] == "runtime.version"
    assert len(proc.stderr.strip().splitlines()) == 1 and "runtime.version" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _hwnas("lut", "diff", str(a), str(c), "--json", "--allow", "runtime.version", "--samples", "50")
    assert proc.returncode == 0, proc.stderr

    other = _save(tmp_path / "other.csv", values, seed=1, meta=_meta(space="ofa-mbv3-w1.0"))
    for args in ([str(a), str(tmp_path / "nope.csv")], [str(a), str(other)]):
        proc = _hwnas("lut", "diff", *args)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------- history


def test_history_over_git_and_files(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x", "GIT_CONFIG_NOSYSTEM": "1"}

    def git(*args: str, date: str | None = None) -> None:
        e = dict(env)
        if date:
            e.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        subprocess.run(["git", *args], cwd=tmp_path, env=e, check=True, capture_output=True, timeout=60)

    folder = tmp_path / "device_profiles" / "board"
    folder.mkdir(parents=True)
    values = _base_values()
    lut_path = folder / "compact_onnxruntime_float32_t1_b1.csv"
    git("init", "-q")
    _save(lut_path, values, seed=1)
    git("add", ".")
    git("commit", "-qm", "first profile", date="2026-01-01T10:00:00+00:00")
    _save(lut_path, {k: v * 1.05 for k, v in values.items()}, seed=1)
    git("commit", "-qam", "re-profiled", date="2026-02-01T10:00:00+00:00")
    _save(lut_path, {k: v * 1.10 for k, v in values.items()}, seed=1)  # not committed yet

    points = history(folder, samples=200)
    assert [p["commit"] is None for p in points] == [False, False, True]
    assert [p["entries"] for p in points] == [len(values)] * 3
    typical = [p["typical_ms"] for p in points]
    assert typical[1] / typical[0] == pytest.approx(1.05, rel=1e-9) and typical[2] / typical[0] == pytest.approx(1.10)
    assert points[1]["drift_pct"] == pytest.approx(5.0) and points[1]["changed_entries"] == 0

    plot = tmp_path / "h.png"
    proc = subprocess.run([sys.executable, "-m", "hwnas", "lut", "history", str(folder), "--json", "--plot", str(plot),
                           "--samples", "100"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["points"]) == 3 and plot.read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------ decided, intervals, recheck


def test_decided_and_smallest_detectable(tmp_path):
    values = _base_values()
    new_values = _noisy(values, 31)
    victims = _pick(values, 2, 31)
    new_values[victims[0]] *= 1.30
    a = _save(tmp_path / "a.csv", values, seed=1)
    b = _save(tmp_path / "b.csv", new_values, seed=131)
    res = diff_luts(LUT.load(a), LUT.load(b), samples=0)
    out = res.to_json()
    assert [(r["key"], r["resolution"], r["decided"]) for r in out["regressions"]] == [(*victims[0], True)]
    assert 0 < out["smallest_detectable"] <= min(e.detectable_pct for e in res.entries) / 100 + 1e-12
    assert out["smallest_detectable"] * 100 >= res.threshold_pct - 1e-9
    assert all(e.decided for e in res.entries if e.verdict in ("ok", "regression", "improvement"))
    assert all(not e.decided for e in res.entries if e.verdict == "noise")


def _with_columns(path: Path, out: Path, **columns) -> Path:
    lut = LUT.load(path)
    for name, fn in columns.items():
        lut.rows[name] = [fn(k, int(r)) for k, r in zip(lut.rows["key"], lut.rows["resolution"])]
    lut.save(out)
    return out


def test_unconverged_change_is_undecided_and_ci_gives_power(tmp_path):
    """A +8% change beyond threshold: undecided where a row never converged; with tight intervals (ci) on
    both sides and no per-run samples, the intervals alone make it significant."""
    values = _base_values()
    victim = _pick(values, 1, 41)[0]
    new_values = dict(values)
    new_values[victim] *= 1.08
    a = _save(tmp_path / "a.csv", values, seed=1)
    b = _save(tmp_path / "b.csv", new_values, seed=1)
    for path in (a, b):  # the victim's runs spread +-10%: its p10-p90 intervals overlap at +8%
        lut = LUT.load(path)
        sel = (lut.rows["key"] == victim[0]) & (lut.rows["resolution"].astype(int) == victim[1])
        med = lut.rows.loc[sel, "median_ms"].astype(float)
        lut.rows.loc[sel, "p10_ms"], lut.rows.loc[sel, "p90_ms"] = med * 0.9, med * 1.1
        lut.save(path)
    unconv = _with_columns(b, tmp_path / "b-unconv.csv", ci=lambda k, r: 0.2 if (k, r) == victim else 0.01,
                           converged=lambda k, r: 0 if (k, r) == victim else 1)
    res = diff_luts(LUT.load(a), LUT.load(unconv), samples=0, noise_z=0.0)
    e = next(e for e in res.entries if (e.key, e.resolution) == victim)
    assert e.decided is False and e.verdict == "noise"
    # p10-p90 of the synthetic rows overlap at +8%: without ci this stays noise; with 1% intervals it is not
    plain = diff_luts(LUT.load(a), LUT.load(b), samples=0, noise_z=0.0)
    assert next(e for e in plain.entries if (e.key, e.resolution) == victim).verdict == "noise"
    ci_a = _with_columns(a, tmp_path / "a-ci.csv", ci=lambda k, r: 0.01, converged=lambda k, r: 1)
    ci_b = _with_columns(b, tmp_path / "b-ci.csv", ci=lambda k, r: 0.01, converged=lambda k, r: 1)
    tight = diff_luts(LUT.load(ci_a), LUT.load(ci_b), samples=0, noise_z=0.0)
    assert [(e.key, e.resolution) for e in tight.regressions] == [victim]


def test_a_change_within_its_processes_disagreement_is_undecided(tmp_path):
    """Two entries +12% slower. One's runner processes disagreed by 15% in the new table (a process can run one
    model slower for its whole life, which its own runs cannot show): undecided, sent to --recheck, and a
    change under twice that disagreement (+32%) could not have been flagged. The other's agreed within 2%: a
    regression. Blank spreads (one process) leave the rule out."""
    values = _base_values()
    victims = _pick(values, 2, 51)
    new_values = dict(values)
    for v in victims:
        new_values[v] *= 1.12
    a = _save(tmp_path / "a.csv", values, seed=1)
    b = _save(tmp_path / "b.csv", new_values, seed=1)
    spread_a = _with_columns(a, tmp_path / "a-s.csv", process_spread=lambda k, r: 0.01)
    spread_b = _with_columns(b, tmp_path / "b-s.csv", process_spread=lambda k, r: 0.15 if (k, r) == victims[0] else 0.02)
    res = diff_luts(LUT.load(spread_a), LUT.load(spread_b), samples=0)
    by_key = {(e.key, e.resolution): e for e in res.entries}
    assert by_key[victims[0]].verdict == "noise" and by_key[victims[0]].decided is False
    assert by_key[victims[0]].process_spread_pct == pytest.approx(15.0)
    assert by_key[victims[0]].detectable_pct == pytest.approx(100 * (1.15**2 - 1))
    assert [(e.key, e.resolution) for e in res.regressions] == [victims[1]]
    assert [(e["key"], e["resolution"]) for e in res.to_json()["undecided"]] == [victims[0]]
    from hwnas.profiler.report import write_report

    md = write_report(res, tmp_path / "diff.md")[0].read_text()  # the report says why it is undecided
    row = next(line for line in md.splitlines() if line.startswith("| noise | `" + victims[0][0]))
    assert "| processes % |" in md and "| 15.0 |" in row
    blank = _with_columns(b, tmp_path / "b-blank.csv", process_spread=lambda k, r: None)
    plain = diff_luts(LUT.load(spread_a), LUT.load(blank), samples=0)
    assert {(e.key, e.resolution) for e in plain.regressions} == set(victims)


def test_a_job_moved_in_one_table_moves_its_entries_in_the_pairs_of_jobs_it_shares(tmp_path):
    """NEW's runner jobs start 20 rows later than BASE's (an entry keeps the result of one of its runner
    processes, so two profiles' jobs need not line up). One NEW job of 24 entries ran 13% slow beyond its
    reference: 4 of its entries share their BASE job with nobody else of it, 20 another. Each table's jobs
    get their own offset (a two-way fit), so the 4 are not findings (by pairs of jobs alone, too few for an
    offset of their own, they moved 13% together and were undecided), and a real 25% slowdown among them is
    found beside one elsewhere."""
    values = _base_values()
    keys = list(values)
    new_values = _noisy(values, 81)
    for k in keys[44:68]:  # NEW's job 2: rows 44-67; BASE's jobs: rows 24-47 and 48-71
        new_values[k] *= 1.13
    real = [keys[45], keys[120]]
    for k in real:
        new_values[k] *= 1.25
    base = _profiled(tmp_path / "a.csv", values, 1, a=1.3, overhead=0.0, refs=BATCH_REFS)
    new = _profiled(tmp_path / "b.csv", new_values, 181, a=1.3, overhead=0.0, refs=[*BATCH_REFS, 0.515], shift=4)
    result = diff_luts(base, new, samples=0)
    assert {(e.key, e.resolution) for e in result.regressions} == set(real)
    assert not result.undecided and not result.improvements
    by_key = {(e.key, e.resolution): e for e in result.entries}
    assert all(abs(by_key[k].change_pct) < 5.0 for k in keys[44:48] if k not in real)
    assert by_key[real[0]].change_pct == pytest.approx(25.0, abs=4.0)
    assert max(g["offset_pct"] for g in result.batch_offsets) == pytest.approx(13.0, abs=2.5)


def test_an_entry_measured_unlike_its_job_keeps_its_change_undecided(tmp_path):
    """A NEW job whose entries moved -12% together while their runner processes disagreed by 28% (a spell of
    the machine slowed one process's reference, not the entries measured outside it), and three entries of
    that job whose processes agreed within 1% and did not move: 13.6% beyond the job's offset, but the
    offset is not theirs. They are undecided (sent to --recheck), not regressions; a real 25% slowdown in
    a quiet job is still found, and the same three entries are regressions when their job's entries
    agree as well as they do."""
    values = _base_values()
    keys = list(values)
    new_values = _noisy(values, 91, noise=0.005)
    job = keys[48:72]
    apart = [job[2], job[10], job[18]]
    for k in job:
        if k not in apart:
            new_values[k] *= 0.88
    real = keys[100]
    new_values[real] *= 1.25
    base = _profiled(tmp_path / "a.csv", values, 1, a=1.3, overhead=0.0, refs=BATCH_REFS, spreads={})
    disturbed = {k: 0.28 for k in job if k not in apart}
    new = _profiled(tmp_path / "b.csv", new_values, 191, a=1.3, overhead=0.0, refs=BATCH_REFS, spreads=disturbed)
    result = diff_luts(base, new, samples=0)
    assert [(e.key, e.resolution) for e in result.regressions] == [real]
    assert {(e.key, e.resolution) for e in result.undecided} == set(apart)
    by_key = {(e.key, e.resolution): e for e in result.entries}
    assert all(by_key[k].change_pct == pytest.approx(13.6, abs=2.0) for k in apart)
    assert all(by_key[k].detectable_pct > 25.0 for k in apart)  # 5% beyond the 24% the job's spreads allow
    calm = _profiled(tmp_path / "c.csv", new_values, 191, a=1.3, overhead=0.0, refs=BATCH_REFS, spreads={})
    assert {(e.key, e.resolution) for e in diff_luts(base, calm, samples=0).regressions} == {*apart, real}


@pytest.fixture(scope="module")
def local_base(tmp_path_factory):
    """Two real profiles of the local CPU back to back (compact space at 32): the base, and a second one that
    tells which of its entries measured the same twice."""
    folder = tmp_path_factory.mktemp("recheck")
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "workload-cache")}
    outs = [folder / "base.csv", folder / "again.csv"]
    for out in outs:
        proc = subprocess.run([sys.executable, "-m", "hwnas", "profile", "local", "--space", SPACE, "--resolutions",
                               "32", "--out", str(out), "--json"], capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr
    return outs[0], outs[1], env


def test_recheck_end_to_end_on_local(local_base, tmp_path):
    """Three entries of NEW edited 40% slower; the device then really runs two of them 1.4x slower (a runtime
    wrapper, benchmarks/_slow_runtime.py). --recheck on it confirms those two (or leaves one undecided while
    seeing it slower, never cleared) and nothing else; on the plain local device it confirms none. Another device's fingerprint or runtime: exit 2 naming the field."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks._slow_runtime import write_slow_profile
    from benchmarks.bench_diff import inject

    base, again, env = local_base
    # The recheck cannot correct BASE's own error, so the edits go to blocks BASE measured faithfully: the larger
    # half (at 32 px the smaller ones take tens of microseconds, mostly the runtime's own per-call cost, and move
    # up to 30-40% between two quiet profiles here), and of those the ones a second profile measured within 3%
    # (a few blocks take one of two speeds per runner job under load, 7-36% apart: BASE's draw may be either)
    # and whose +30% change the diff of the two could have flagged (its runner processes agreed, and agreed as
    # well as its job's others: the suite's other worker loads the machine while these profiles run).
    table = LUT.load(base)
    size = {(k, int(r)): float(v) for k, r, v in zip(table.rows["key"], table.rows["resolution"], table.rows["p10_ms"])}
    same = {(e.key, e.resolution) for e in diff_luts(table, LUT.load(again), samples=0).entries
            if abs(e.change_pct) < 3.0 and e.detectable_pct is not None and e.detectable_pct < 30.0}
    keys = sorted((k for k in table.keys() if k[0].startswith("expanded_conv")), key=lambda k: (size[k], k))
    keys = [k for k in keys[len(keys) // 2:] if k in same]
    assert len(keys) >= 8, f"only {len(keys)} of the larger blocks measured within 3% twice, each able to show +30%"
    # apart in the table's row order: edits within NEIGHBOURS rows of each other moved "with their neighbours"
    # and are rightly undecided (a CI run picked three neighbouring blocks)
    row = {k: i for i, k in enumerate(table.keys())}
    rng = np.random.default_rng(5)
    while True:
        picks = [keys[i] for i in rng.choice(len(keys), size=3, replace=False)]
        if min(abs(row[a] - row[b]) for a in picks for b in picks if a != b) > NEIGHBOURS:
            break
    new = tmp_path / "new.csv"
    inject(base, new, picks, [1.4, 1.4, 1.4])
    slow = write_slow_profile(tmp_path / "dev", [f"{k}@{r}" for k, r in picks[:2]], 1.4)

    def diff(*extra):
        proc = subprocess.run([sys.executable, "-m", "hwnas", "lut", "diff", str(base), str(new), "--json",
                               "--samples", "50", *extra], capture_output=True, text=True, timeout=600, env=env)
        return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)

    proc, plain = diff()
    assert proc.returncode == 1, proc.stderr
    assert {(r["key"], r["resolution"]) for r in plain["regressions"]} == set(picks)
    assert plain["rechecked"] is None

    proc, data = diff("--recheck", str(slow))
    assert proc.returncode == 1, proc.stderr
    seen = (data["rechecked"], [(r["key"], r["rechecked"]) for r in data["regressions"] + data["undecided"]])
    confirmed = {(r["key"], r["resolution"]) for r in data["regressions"]}
    undecided = {(r["key"], r["resolution"]): r for r in data["undecided"]}
    # the two real slowdowns: confirmed, or (an entry whose own passes spread wider than the yardstick allows)
    # undecided with the recheck seeing it slower; never cleared, and nothing else confirmed
    assert confirmed and confirmed <= set(picks[:2]), seen
    assert all(r["decided"] and r["rechecked"]["change_pct"] > 20 for r in data["regressions"])
    assert all(undecided[k]["rechecked"]["change_pct"] > 20 for k in set(picks[:2]) - confirmed), seen
    assert data["rechecked"]["device"] == "local-slow" and data["rechecked"]["confirmed"] == len(confirmed)
    # the third edit is not slower on the device: cleared, or undecided where BASE's own value of it was off
    # by more than the threshold (as on the plain device below), with the recheck well below NEW's claim
    third = undecided.get(picks[2])
    assert data["rechecked"]["cleared"] == 1 or (third is not None and third["rechecked"]["ratio_to_new"] < 0.85), seen

    proc, data = diff("--recheck", "local")
    assert proc.returncode == 0, (proc.stderr, data["regressions"])
    seen = (data["rechecked"], [(r["key"], r["rechecked"]) for r in data["regressions"] + data["undecided"]])
    assert data["regressions"] == [] and data["rechecked"]["confirmed"] == 0, seen
    # the device measured what it really runs: each edited entry about 1/1.4 of NEW's value. An entry whose
    # BASE value was itself off by more than the yardstick may stay undecided (compact at 32 px: entries of
    # tens of microseconds, single ones 30-40% apart between two quiet profiles here), never confirmed.
    rechecked = {(r["key"], r["resolution"]): r for r in data["undecided"]}
    assert data["rechecked"]["cleared"] + len(rechecked) == 3
    assert all(r["rechecked"]["ratio_to_new"] < 0.85 for r in rechecked.values())

    other = LUT.load(new)
    other.metadata["device"] = dict(other.metadata["device"], model="Pixel 9")
    other_path = tmp_path / "other.csv"
    other.save(other_path)
    proc = subprocess.run([sys.executable, "-m", "hwnas", "lut", "diff", str(base), str(other_path), "--allow",
                           "device.model", "--recheck", "local"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "device.model" in proc.stderr and "Traceback" not in proc.stderr
    litert = tmp_path / "dev" / "litert.yaml"
    litert.write_text("name: litert-box\ntransport:\n  local: {}\nruntime: litert\nthreads: 1\n")
    proc, _ = diff("--recheck", str(litert))
    assert proc.returncode == 2 and "runtime.name" in proc.stderr and "Traceback" not in proc.stderr
