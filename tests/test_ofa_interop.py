"""OFA interop on OFA's published Note10 tables: lossless import/export, keys, and OFA's own latency sum.

The reference sum is OFA's formula written out here independently of hwnas (once-for-all,
``ofa/tutorial/latency_table.py``: ``LatencyEstimator.predict_network_latency_given_spec`` over the
per-resolution YAML, summing ``mean`` over the subnet's keys), not our predictor's output.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwnas.profiler.errors import LUTError
from hwnas.profiler.lut import LUT
from hwnas.profiler.ofa_interop import export_ofa, import_ofa, ofa_note10_dir
from hwnas.profiler.predict import LUTPredictor
from hwnas.supernet import get_space

NOTE10 = ofa_note10_dir()  # OFA's published Note10 tables, shipped in the package
RESOLUTIONS = (160, 176, 192, 208, 224)

def _yaml_files() -> list[Path]:
    return [NOTE10 / f"{r}_lookup_table.yaml" for r in RESOLUTIONS]


def _ofa_tables() -> dict[int, dict]:
    return {r: yaml.safe_load((NOTE10 / f"{r}_lookup_table.yaml").read_text()) for r in RESOLUTIONS}


def ofa_latency(tables: dict[int, dict], spec: dict) -> float:
    """OFA's ``predict_network_latency_given_spec`` for the w1.2 MobileNetV3 space, written out."""
    lut = tables[spec["r"][0] if isinstance(spec["r"], list) else spec["r"]]
    image_size = spec["r"][0] if isinstance(spec["r"], list) else spec["r"]

    def shape(s):
        return "x".join(str(v) for v in s)

    def query(l_type, input_shape, output_shape, mid=None, ks=None, stride=None, id_skip=None, se=None, h_swish=None):
        infos = [l_type, f"input:{shape(input_shape)}", f"output:{shape(output_shape)}"]
        if l_type == "expanded_conv":
            infos += [f"expand:{mid:d}", f"kernel:{ks:d}", f"stride:{stride:d}", f"idskip:{id_skip:d}",
                      f"se:{se:d}", f"hs:{h_swish:d}"]
        return lut["-".join(infos)]["mean"]

    total = 0.0
    total += query("Conv", [image_size, image_size, 3], [(image_size + 1) // 2, (image_size + 1) // 2, 24])
    fsize = (image_size + 1) // 2
    total += query("expanded_conv", [fsize, fsize, 24], [fsize, fsize, 24], mid=24, ks=3, stride=1, id_skip=1,
                   se=0, h_swish=0)
    in_channel = 24
    stride_stages = [2, 2, 2, 1, 2]
    width_stages = [32, 48, 96, 136, 192]
    act_stages = ["relu", "relu", "h_swish", "h_swish", "h_swish"]
    se_stages = [False, True, False, True, True]
    for i in range(20):
        stage = i // 4
        depth = i % 4 + 1
        if depth > spec["d"][stage]:
            continue
        ks, e = spec["ks"][i], spec["e"][i]
        stride, idskip = (stride_stages[stage], 0) if i % 4 == 0 else (1, 1)
        out_channel = width_stages[stage]
        out_fz = int((fsize - 1) / stride + 1)
        total += query("expanded_conv", [fsize, fsize, in_channel], [out_fz, out_fz, out_channel],
                       mid=round(in_channel * e), ks=ks, stride=stride, id_skip=idskip,
                       se=1 if se_stages[stage] else 0, h_swish=1 if act_stages[stage] == "h_swish" else 0)
        fsize = out_fz
        in_channel = out_channel
    total += query("Conv_1", [fsize, fsize, 192], [fsize, fsize, 1152])
    total += query("AvgPool2D", [fsize, fsize, 1152], [1, 1, 1152])
    total += query("Conv_2", [1, 1, 1152], [1, 1, 1536])
    total += query("Logits", [1, 1, 1536], [1000])
    return total


def _random_specs(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "ks": [rnd.choice([3, 5, 7]) for _ in range(20)],
            "e": [rnd.choice([3, 4, 6]) for _ in range(20)],
            "d": [rnd.choice([2, 3, 4]) for _ in range(5)],
            "r": [rnd.choice(RESOLUTIONS)],
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def note10() -> LUT:
    return import_ofa(_yaml_files(), "ofa-mbv3-w1.2")


def test_import_keeps_every_value(note10, tmp_path):
    path = tmp_path / "note10.csv"
    note10.save(path)
    lut = LUT.load(path)
    assert lut.statistic == "mean_ms" and lut.space == "ofa-mbv3-w1.2"
    assert lut.resolutions == list(RESOLUTIONS)
    tables = _ofa_tables()
    assert len(lut) == sum(len(t) for t in tables.values())
    for r, table in tables.items():
        for key, v in table.items():
            row = lut.row(key, r)
            assert (row["runs"], row["mean_ms"], row["std_ms"]) == (v["count"], v["mean"], v["std"])  # exact


def test_export_round_trip_is_lossless(note10, tmp_path):
    path = tmp_path / "note10.csv"
    note10.save(path)
    files = export_ofa(LUT.load(path), tmp_path / "out")
    assert [f.name for f in files] == [f"{r}_lookup_table.yaml" for r in RESOLUTIONS]
    for f in files:
        original = (NOTE10 / f.name).read_text()
        assert yaml.safe_load(f.read_text()) == yaml.safe_load(original)  # values equal as floats
        assert f.read_text() == original  # and even the bytes
    # and back again
    again = import_ofa(files, "ofa-mbv3-w1.2")
    assert again.values("mean_ms") == note10.values("mean_ms")
    assert again.values("std_ms") == note10.values("std_ms")


def test_resolution_from_the_stem_key_when_the_name_does_not_say(tmp_path):
    odd = tmp_path / "note10-small.yaml"
    odd.write_text((NOTE10 / "176_lookup_table.yaml").read_text())
    lut = import_ofa([odd], "ofa-mbv3-w1.2")
    assert lut.resolutions == [176] and len(lut) == 96
    liar = tmp_path / "160_lookup_table.yaml"
    liar.write_text(odd.read_text())
    with pytest.raises(LUTError, match="file name says resolution 160 but the stem key says 176"):
        import_ofa([liar], "ofa-mbv3-w1.2")


def test_space_keys_are_exactly_the_tables_keys():
    space = get_space("ofa-mbv3-w1.2")
    tables = _ofa_tables()
    for r in RESOLUTIONS:
        assert {e.key for e in space.all_lut_entries([r])} == set(tables[r]), r


def test_prediction_equals_ofa_latency_table_sum(note10):
    tables = _ofa_tables()
    specs = _random_specs(300, seed=1)
    space = get_space("ofa-mbv3-w1.2")
    specs += [space.max_arch(r).to_dict() | {"r": [r]} for r in RESOLUTIONS]
    specs += [space.min_arch(r).to_dict() | {"r": [r]} for r in RESOLUTIONS]
    expected = np.array([ofa_latency(tables, s) for s in specs])
    predictor = LUTPredictor(note10)
    got = predictor.predict(specs)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    arrays = space.arrays_from_archs([s | {"r": s["r"][0]} for s in specs])
    np.testing.assert_allclose(predictor.predict_arrays(arrays), expected, rtol=0, atol=1e-6)


def test_missing_entry_is_named(note10):
    space = get_space("ofa-mbv3-w1.2")
    victim = space.block_entry(2, False, 5, 4, 192)
    rows = note10.rows[~((note10.rows["key"] == victim.key) & (note10.rows["resolution"] == 192))]
    lut = LUT(metadata=note10.metadata, rows=rows)
    with pytest.raises(LUTError, match=f"no entry '{victim.key}' at resolution 192.*1 missing in all"):
        LUTPredictor(lut)
    assert LUTPredictor(lut, resolutions=[160]).resolutions_ == (160,)


def test_import_refuses_another_spaces_table():
    with pytest.raises(LUTError, match="is not an entry of space ofa-mbv3-w1.0"):
        import_ofa(_yaml_files()[:1], "ofa-mbv3-w1.0")


def test_cli_import_and_predict(tmp_path):
    out = tmp_path / "note10.csv"
    cmd = [sys.executable, "-m", "hwnas", "lut", "import-ofa", *map(str, _yaml_files()),
           "--space", "ofa-mbv3-w1.2", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["lut"] == str(out) and data["entries"] == 480
    specs = _random_specs(50, seed=2)
    archs = tmp_path / "archs.jsonl"
    archs.write_text("".join(json.dumps(s) + "\n" for s in specs))
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", "lut", "predict", "--lut", str(out), "--archs", str(archs), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["latency_ms"]
    tables = _ofa_tables()
    np.testing.assert_allclose(got, [ofa_latency(tables, s) for s in specs], rtol=0, atol=1e-6)
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", "lut", "predict", "--lut", str(out), "--arch", "max", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["arch"]["r"] == 224
    assert data["latency_ms"][0] == pytest.approx(ofa_latency(tables, data["arch"] | {"r": [224]}), abs=1e-6)
    # a bad arch: one line, exit 2
    archs.write_text(json.dumps(specs[0]) + "\n" + json.dumps(specs[1] | {"ks": [4] * 20}) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", "lut", "predict", "--lut", str(out), "--archs", str(archs), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "line 2" in proc.stderr and "'ks'" in proc.stderr


def test_resolve_arch_forms(tmp_path):
    from hwnas.cli._app import UsageError
    from hwnas.cli._args import resolve_arch
    from hwnas.supernet.errors import ArchError

    space = get_space("ofa-mbv3-w1.2")
    rs = [160, 192]
    assert resolve_arch(space, "max", rs) == space.max_arch(192)
    assert resolve_arch(space, "min", rs) == space.min_arch(160)
    a = resolve_arch(space, "random:7", rs)
    assert a == resolve_arch(space, "random:7", rs) and a.r in rs
    f = tmp_path / "arch.json"
    f.write_text(json.dumps(a.to_dict() | {"r": [a.r]}))
    assert resolve_arch(space, str(f), rs) == a
    assert resolve_arch(space, a.to_json(), rs) == a
    with pytest.raises(ArchError, match="'r'"):
        resolve_arch(space, json.dumps(a.to_dict() | {"r": 224}), rs)
    for bad in ("random:x", "biggest", str(tmp_path / "missing.json")):
        with pytest.raises(UsageError):
            resolve_arch(space, bad, rs)
