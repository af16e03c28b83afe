"""The LUT file: format round trip, atomic save, the append-only writer (torn line, resume), bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas.profiler.errors import LUTError
from hwnas.profiler.lut import (
    DEFAULT_COLUMNS,
    FORMAT_LINE,
    LUT,
    MEASURE_COLUMNS,
    OVERHEAD_KEY,
    LUTWriter,
    default_metadata,
    entry_row,
    parse_key,
    read_samples,
    samples_path,
)

KEYS = [
    "Conv-input:48x48x3-output:24x24x16",
    "expanded_conv-input:24x24x16-output:24x24x16-expand:16-kernel:3-stride:1-idskip:1-se:0-hs:0",
    "expanded_conv-input:24x24x16-output:12x12x24-expand:48-kernel:5-stride:2-idskip:0-se:1-hs:0",
    "Conv_1-input:3x3x96-output:3x3x384",
    "AvgPool2D-input:3x3x384-output:1x1x384",
    "Conv_2-input:1x1x384-output:1x1x512",
    "Logits-input:1x1x512-output:10",
]


def _meta() -> dict:
    meta = default_metadata(space="compact", resolutions=[32, 48], statistic="median_ms")
    meta.update(
        runtime={"name": "onnxruntime", "version": "1.20.1", "providers": ["CPUExecutionProvider"]},
        exporter={"name": "torch.onnx", "version": "2.13.0", "opset": 17},
        dtype="float32",
        batch=1,
        threads=1,
        cores="all",
        device={"name": "local", "model": "test-box", "soc": "x86_64", "governor": "performance"},
        temperatures_c={"before": 41.0, "after": None},
        reference={"name": "mbv3-ref", "median_ms": 3.25},
    )
    meta["team_note"] = {"ticket": "LAT-7", "when": "2026-01-02"}  # unknown extra metadata
    return meta


def _stats(rng: np.random.Generator) -> dict[str, float]:
    med = float(rng.uniform(0.01, 3.0))
    return {
        "median_ms": med,
        "p10_ms": med * 0.97,
        "p90_ms": med * 1.04,
        "mean_ms": med * 1.005,
        "std_ms": med * 0.02,
        "min_ms": med * 0.95,
    }


def _rows(n_res: tuple[int, ...] = (32, 48), seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [entry_row(k, r, runs=50, stats=_stats(rng)) for r in n_res for k in KEYS]


def _write_lut(path: Path, rows: list[dict] | None = None) -> LUT:
    with LUTWriter(path, metadata=_meta(), columns=DEFAULT_COLUMNS) as w:
        for row in rows if rows is not None else _rows():
            w.write(row)
        return w.finish(metadata_updates={"temperatures_c": {"before": 41.0, "after": 44.5}})


# ------------------------------------------------------------------------------------------ format


def test_parse_key_gives_op_fields():
    f = parse_key(KEYS[2])
    assert f == {
        "op": "expanded_conv", "input": "24x24x16", "output": "12x12x24", "expand": 48, "kernel": 5,
        "stride": 2, "idskip": 0, "se": 1, "hs": 0,
    }
    assert parse_key(OVERHEAD_KEY) == {"op": "overhead"}


def test_round_trip_is_exact_and_pandas_reads_rows(tmp_path):
    path = tmp_path / "t.csv"
    rows = _rows()
    lut = _write_lut(path, rows)
    text = path.read_text()
    assert text.startswith(FORMAT_LINE + "\n")
    loaded = LUT.load(path)
    assert loaded.keys() == [(r["key"], r["resolution"]) for r in rows]
    for r in rows:
        for col in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "min_ms"):
            assert loaded.latency(r["key"], r["resolution"], col) == r[col]  # bit for bit
    assert loaded.statistic == "median_ms"
    assert loaded.metadata["temperatures_c"] == {"before": 41.0, "after": 44.5}
    assert loaded.metadata["team_note"] == {"ticket": "LAT-7", "when": "2026-01-02"}  # verbatim, date stays text
    assert loaded.metadata["date"] == lut.metadata["date"]
    assert isinstance(loaded.metadata["date"], str)
    # integer op fields stay integers (no "48.0"), empty where an op has none
    assert "expand:48" in text and ",48,5,2,0,1,0,50," in text
    df = pd.read_csv(path, comment="#")
    assert len(df) == len(rows) and list(df.columns) == list(DEFAULT_COLUMNS)
    # save -> load -> save is a fixed point
    again = tmp_path / "again.csv"
    loaded.save(again)
    assert again.read_text() == text


def test_save_is_atomic_and_reports_unwritable(tmp_path):
    path = tmp_path / "t.csv"
    lut = _write_lut(path)
    lut.metadata["threads"] = 2
    lut.save(path)
    assert LUT.load(path).metadata["threads"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no temporary files left
    with pytest.raises(LUTError, match="cannot write"):
        lut.save(tmp_path / "no-such-dir" / "t.csv")


def test_overhead_row_may_be_negative(tmp_path):
    rows = _rows()
    rows.append(entry_row(OVERHEAD_KEY, 32, runs=50, stats={k: -0.01 for k in _stats(np.random.default_rng(1))}))
    lut = _write_lut(tmp_path / "t.csv", rows)
    assert LUT.load(tmp_path / "t.csv").latency(OVERHEAD_KEY, 32) == -0.01
    assert lut.row(OVERHEAD_KEY, 32)["op"] == "overhead"


# ------------------------------------------------------------------------------------------ writer


def test_writer_resume_drops_torn_line_and_continues(tmp_path):
    path = tmp_path / "t.csv"
    rows = _rows()
    w = LUTWriter(path, metadata=_meta(), columns=DEFAULT_COLUMNS, keep_samples=True)
    w.open()
    for row in rows[:5]:
        w.write(row, samples=np.linspace(0.9, 1.1, 7) * row["median_ms"])
    w.close()
    with open(path, "a") as fh:  # a crash in the middle of the 6th row
        fh.write(rows[5]["key"] + ",32,expanded_co")
    with open(samples_path(path), "a") as fh:  # its samples made it, the row did not
        fh.write(f"{rows[5]['key']},32,0,0.5\n{rows[5]['key']},32,1,0.")
    with pytest.raises(LUTError, match=r"line \d+: expected 18 fields, got 3 \(truncated last row"):
        LUT.load(path)
    w2 = LUTWriter(path, metadata=_meta(), columns=DEFAULT_COLUMNS, resume=True, keep_samples=True)
    done = w2.open()
    assert done == {(r["key"], r["resolution"]) for r in rows[:5]}
    assert w2.resumed == 5
    for row in rows[5:]:
        w2.write(row, samples=[row["median_ms"]] * 7)
    lut = w2.finish(metadata_updates={"temperatures_c": {"before": 41.0, "after": 43.0}})
    assert len(lut) == len(rows)
    assert LUT.load(path).keys() == [(r["key"], r["resolution"]) for r in rows]
    samples = read_samples(path)
    assert samples is not None and len(samples) == len(rows)
    assert all(len(v) == 7 for v in samples.values())  # the orphan samples of the torn row are gone


def test_writer_survives_a_killed_process(tmp_path):
    """A real crash: the writing process is SIGKILLed after 3 rows and half a 4th."""
    path = tmp_path / "t.csv"
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from hwnas.profiler.lut import LUTWriter, DEFAULT_COLUMNS, default_metadata, entry_row
        meta = default_metadata(space="compact", resolutions=[32], statistic="median_ms")
        w = LUTWriter({str(path)!r}, metadata=meta, columns=DEFAULT_COLUMNS)
        w.open()
        for i, key in enumerate({KEYS[:3]!r}):
            w.write(entry_row(key, 32, runs=5, stats={{"median_ms": 1.0 + i, "p10_ms": 1.0, "p90_ms": 4.0,
                    "mean_ms": 1.0, "std_ms": 0.1, "min_ms": 0.9}}))
        w._fh.write("Conv_1-input:3x3x96-output:3x3x384,32,Con")
        w._fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    meta = default_metadata(space="compact", resolutions=[32], statistic="median_ms")
    with LUTWriter(path, metadata=meta, columns=DEFAULT_COLUMNS, resume=True) as w:
        assert w.done == {(k, 32) for k in KEYS[:3]}
        lut = w.finish()
    assert [lut.latency(k, 32) for k in KEYS[:3]] == [1.0, 2.0, 3.0]


def test_writer_resume_refuses_other_settings(tmp_path):
    path = tmp_path / "t.csv"
    _write_lut(path)
    meta = _meta()
    meta["threads"] = 4
    with pytest.raises(LUTError, match=r"cannot resume.*threads 1 != 4"):
        LUTWriter(path, metadata=meta, columns=DEFAULT_COLUMNS, resume=True).open()
    cols = [c for c in DEFAULT_COLUMNS if c != "min_ms"]
    with pytest.raises(LUTError, match="columns differ"):
        LUTWriter(path, metadata=_meta(), columns=cols, resume=True).open()
    w = LUTWriter(path, metadata=_meta(), columns=DEFAULT_COLUMNS, resume=True)
    w.open()
    with pytest.raises(LUTError, match="already in the file"):
        w.write(_rows()[0])
    w.close()


def test_writer_resumes_a_file_written_before_a_measurement_column(tmp_path):
    """A LUT begun by an earlier version (no process_spread column) is resumed: its rows stay, the rows
    appended leave the new column out. A file that lacks a statistic column is still refused."""
    path = tmp_path / "t.csv"
    rows = _rows()
    old = [*DEFAULT_COLUMNS, "ci", "converged", "outliers"]
    with LUTWriter(path, metadata=_meta(), columns=old) as w:
        for row in rows[:3]:
            w.write({**row, "ci": 0.01, "converged": "true", "outliers": "false"})
    now = [*DEFAULT_COLUMNS, *MEASURE_COLUMNS]
    assert "process_spread" in now
    with LUTWriter(path, metadata=_meta(), columns=now, resume=True) as w:
        assert w.resumed == 3
        for row in rows[3:]:
            w.write({**row, "ci": 0.01, "converged": "true", "outliers": "false", "process_spread": 0.02})
        w.finish()
    lut = LUT.load(path)
    assert list(lut.rows.columns) == old and len(lut) == len(rows)
    with pytest.raises(LUTError, match="columns differ"):  # not a measurement column: refused
        LUTWriter(path, metadata=_meta(), columns=[c for c in now if c != "min_ms"], resume=True).open()


def test_writer_without_resume_starts_over(tmp_path):
    path = tmp_path / "t.csv"
    _write_lut(path)
    with LUTWriter(path, metadata=_meta(), columns=DEFAULT_COLUMNS) as w:
        assert w.done == set()
    assert len(LUT.load(path)) == 0


# --------------------------------------------------------------------------------------- bad input


def _good_text(tmp_path: Path) -> str:
    return _write_lut(tmp_path / "good.csv").to_text()


def _replace_line(text: str, needle: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if needle in ln)
    lines[i] = new
    return "".join(lines)


def _first_row(text: str) -> str:
    return next(ln for ln in text.splitlines(keepends=True) if ln.startswith("Conv-input:48"))


BAD = {
    "missing": (None, "no such LUT file"),
    "directory": ("<dir>", "is a directory"),
    "not-a-lut": (lambda t: "key,resolution,op\nConv,32,Conv\n", "not a LUT file"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", "not a LUT file"),
    "other-version": (lambda t: t.replace("# hwnas-lut 1", "# hwnas-lut 9", 1), "unsupported LUT format"),
    "truncated-metadata": (lambda t: t[: t.index("# device:")], "truncated metadata"),
    "garbled-metadata": (lambda t: t.replace("# dtype: float32", "# dtype: [float32", 1), "garbled metadata"),
    "metadata-lacks-statistic": (lambda t: _replace_line(t, "# statistic:", ""), "metadata lacks statistic"),
    "missing-column": (lambda t: t.replace(",runs,", ",RUNS,", 1), "missing columns: runs"),
    "non-numeric": (lambda t: _nonnum(t), "non-numeric value '0.3ms' in column 'p90_ms'"),
    "nan": (lambda t: _set_median(t, "nan"), "non-finite value 'nan'"),
    "empty-value": (lambda t: _set_median(t, ""), "missing value in column 'median_ms'"),
    "negative": (lambda t: _set_median(t, "-0.5"), "negative latency"),
    "duplicate": (lambda t: t + _first_row(t), "duplicate row"),
    "torn-last-row": (lambda t: t + _first_row(t)[:30], "truncated last row"),
}


def _set_median(text: str, value: str) -> str:
    row = _first_row(text)
    cells = row.rstrip("\n").split(",")
    cells[DEFAULT_COLUMNS.index("median_ms")] = value
    return text.replace(row, ",".join(cells) + "\n")


def _nonnum(text: str) -> str:
    row = _first_row(text)
    cells = row.rstrip("\n").split(",")
    cells[DEFAULT_COLUMNS.index("p90_ms")] = "0.3ms"
    return text.replace(row, ",".join(cells) + "\n")


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_lut_is_one_line_exit_2(tmp_path, case):
    make, message = BAD[case]
    path = tmp_path / "bad.csv"
    if make == "<dir>":
        path.mkdir()
    elif isinstance(make, bytes):
        path.write_bytes(make)
    elif make is not None:
        path.write_text(make(_good_text(tmp_path)))
    with pytest.raises(LUTError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LUT.load(path)
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", "lut", "show", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in lines[0] and message in lines[0]


def test_show_json_rows_and_by_op(tmp_path):
    import json

    path = tmp_path / "t.csv"
    _write_lut(path)
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", "lut", "show", str(path), "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["rows"]) == 2 * len(KEYS) and data["statistic"] == "median_ms"
    assert data["rows"][0]["key"] == KEYS[0] and data["rows"][0]["expand"] is None
    # per-operator sidecar
    (tmp_path / "t.ops.csv").write_text(
        "key,resolution,node,op_type,provider,ms\n"
        f"{KEYS[2]},32,/conv1/Conv,Conv,CPUExecutionProvider,0.2\n"
        f"{KEYS[2]},32,/conv2/Conv,Conv,CPUExecutionProvider,0.1\n"
        f"{KEYS[2]},32,/act/HardSwish,HardSwish,CPUExecutionProvider,0.1\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", "lut", "show", str(path), "--by", "op", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [(r["op_type"], r["nodes"]) for r in rows] == [("Conv", 2), ("HardSwish", 1)]
    assert rows[0]["share"] == pytest.approx(0.75)
