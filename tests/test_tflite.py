"""``.tflite`` workloads (litert-torch, float32 and int8) and the ``litert`` runtime, for real.

Conversions take seconds each on this machine. The end-to-end CLI test converts into the run's
workload cache (``HWNAS_CACHE_DIR``, set by conftest to a folder of the pytest session's temporary
directory, never in the repository): file names are content hashes of what was converted and with which
exporter version, so each distinct model converts once per run and a stale file cannot be picked up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("litert_torch", reason="litert-torch is not installed")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")

from hwnas.agents.device import Device, ModelFile  # noqa: E402
from hwnas.agents.errors import DeviceError  # noqa: E402
from hwnas.agents.profiles import parse_profile  # noqa: E402
from hwnas.profiler import tflite_export  # noqa: E402
from hwnas.profiler.workloads import WorkloadBuilder  # noqa: E402
from hwnas.supernet import get_space  # noqa: E402

pytestmark = pytest.mark.tflite


def _entry(op: str = "expanded_conv", *, se: int = 1, hs: int = 1, resolution: int = 32):
    space = get_space("compact")
    for e in space.all_lut_entries([resolution]):
        if e.op == op and (op != "expanded_conv" or (e.se == se and e.hs == hs)):
            return space, e
    raise AssertionError(f"no {op} entry in compact")


def _local_device(tmp_path: Path) -> Device:
    profile = parse_profile({"name": "local-test", "transport": {"local": {}}, "runtime": "litert", "workdir": str(tmp_path / "w")}, source="test")
    return Device(profile)


@pytest.fixture(scope="module")
def exported() -> dict[str, object]:
    """One SE + h_swish block (the richest entry) exported float32 and int8, through the profiler's
    workload builder into the run's workload cache: the float32 file is the one the CLI test's profile
    then finds there (same content key) instead of converting it again."""
    import torch

    space, entry = _entry()
    paths = {dt: WorkloadBuilder(space=space, fmt="tflite", dtype=dt).entry(entry).path for dt in ("float32", "int8")}
    torch.manual_seed(0)  # the builder's seed: the same weights as the converted module's
    module = space.build_entry(entry).eval()
    example = space.entry_input(entry)
    return {"module": module, "example": example, "paths": paths, "entry": entry}


def test_float32_matches_torch(exported: dict, record_property: pytest.RecordProperty) -> None:
    diff = tflite_export.check_tflite(exported["paths"]["float32"], exported["module"], exported["example"])
    record_property("max_abs_diff_float32", diff)
    assert diff < 1e-4  # measured ~1e-7


def test_int8_is_full_integer_and_bounded(exported: dict, record_property: pytest.RecordProperty) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    path = exported["paths"]["int8"]
    diff = tflite_export.check_tflite(path, exported["module"], exported["example"])
    ref = float(exported["module"](exported["example"]).detach().abs().max())
    record_property("max_abs_diff_int8", diff)
    assert diff <= 0.1 * ref  # measured ~2% of the largest output
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    ops = {op["op_name"] for op in it._get_ops_details()}
    assert not ops & {"DEQUANTIZE", "QUANTIZE"}, ops  # no float islands
    assert os.path.getsize(path) < os.path.getsize(exported["paths"]["float32"])


def test_nhwc_io_without_boundary_transposes(exported: dict) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(exported["paths"]["float32"]))
    it.allocate_tensors()
    c, h, w = exported["entry"].input_shape
    assert tuple(it.get_input_details()[0]["shape"]) == (1, h, w, c)
    assert "TRANSPOSE" not in {op["op_name"] for op in it._get_ops_details()}


def test_folding_batch_norms_keeps_the_outputs_and_the_operators() -> None:
    """The exporter folds each conv's batch norm before converting (the converter's graph work is the
    cost): the same outputs and, in the file, the same operators as converting the unfolded module."""
    import litert_torch
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from hwnas.supernet import export

    space, entry = _entry()
    torch.manual_seed(1)
    module = space.build_entry(entry).eval()
    n_bn = 0
    for m in module.modules():  # trained-looking statistics: folding them must change the conv weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
            n_bn += 1
    example = space.entry_input(entry)
    folded = export.fold_batch_norms(module)
    assert n_bn == 3 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())  # the caller's module is untouched
    with torch.no_grad():
        assert torch.allclose(folded(example), module(example), atol=1e-5)

    def ops(data: bytes) -> list[str]:
        it = Interpreter(model_content=data)
        return [op["op_name"] for op in it._get_ops_details()]

    with export.quiet():
        wrapped, ex, _ = export._channel_last_io(module, example)
        plain = bytes(litert_torch.convert(wrapped, (ex,)).model_content())
    assert ops(export.tflite_bytes(module, example)) == ops(plain)


def test_exporter_info() -> None:
    f32 = tflite_export.exporter_info("float32")
    i8 = tflite_export.exporter_info("int8")
    assert f32["name"] == "litert-torch" and f32["version"] and f32["quantization"] is None
    assert i8["quantization"]["tool"] == "ai-edge-quantizer" and i8["quantization"]["recipe"] == "static_wi8_ai8"
    with pytest.raises(tflite_export.ProfilerError, match="dtype 'float16'"):
        tflite_export.exporter_info("float16")


def test_cache_hit_and_parallel_conversion(tmp_path: Path) -> None:
    space = get_space("compact")
    entries = [e for e in space.all_lut_entries([32]) if e.op in ("Conv_1", "AvgPool2D", "Conv_2", "Logits")]
    assert len(entries) == tflite_export.MIN_PARALLEL_JOBS == 4
    builder = WorkloadBuilder(space=space, fmt="tflite", dtype="float32", cache=tmp_path)
    works = builder.entries(entries)  # all missing: converted in worker processes
    mtimes = [w.path.stat().st_mtime_ns for w in works]
    assert all(w.path.suffix == ".tflite" and w.path.stat().st_size > 0 for w in works)
    start = time.perf_counter()
    again = builder.entries(entries) + [builder.entry(entries[0])]
    assert time.perf_counter() - start < 1.0  # no re-conversion
    assert [w.path for w in again] == [w.path for w in works] + [works[0].path]
    assert [w.path.stat().st_mtime_ns for w in works] == mtimes
    other = WorkloadBuilder(space=space, fmt="tflite", dtype="int8", cache=tmp_path)
    assert other._entry_path(entries[0]) != builder._entry_path(entries[0])  # dtype is part of the content hash


def test_litert_runner_xnnpack_on_and_off(exported: dict, tmp_path: Path) -> None:
    dev = _local_device(tmp_path)
    models = [ModelFile("f32", exported["paths"]["float32"]), ModelFile("i8", exported["paths"]["int8"])]
    on = {r["id"]: r for r in dev.measure(models, runtime="litert", runs=5, warmup=1, min_seconds=0)}
    off = {r["id"]: r for r in dev.measure(models, runtime="litert", runs=5, warmup=1, min_seconds=0, extra={"xnnpack": False})}
    assert dev.hello is not None and dev.hello["runtime_version"].startswith(("ai-edge-litert", "tflite_runtime"))
    for mid in ("f32", "i8"):
        assert on[mid]["type"] == "result" and on[mid]["p10_ms"] > 0
        assert off[mid]["type"] == "result" and off[mid]["p10_ms"] > 0
        assert on[mid]["delegates"] == ["XNNPACK"] and off[mid]["delegates"] == []


def test_litert_op_profiling_is_reported_unavailable(exported: dict, tmp_path: Path) -> None:
    (r,) = _local_device(tmp_path).measure(
        [ModelFile("f32", exported["paths"]["float32"])], runtime="litert", runs=2, warmup=0, min_seconds=0, profile_ops=True
    )
    assert "ops" not in r and "no op profiler" in r["ops_error"]


def test_a_model_that_does_not_load_is_a_device_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(DeviceError, match="every model failed.*not a valid Flatbuffer") as err:
        _local_device(tmp_path).measure([ModelFile("bad", bad)], runtime="litert", runs=1, warmup=0)
    assert err.value.exit_code == 1


@pytest.mark.slow
def test_cli_profile_and_validate_litert(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # the run's workload cache (conftest: HWNAS_CACHE_DIR under the session's temp dir), shared by content
    env = {**os.environ, "HWNAS_CONVERT_WORKERS": "2"}
    assert Path(env["HWNAS_CACHE_DIR"]).is_relative_to(tmp_path_factory.getbasetemp())
    lut = tmp_path / "lut.csv"
    # the local machine, with a work folder (and so a device lock) of its own: other runs on this
    # machine that profile the packaged `local` device do not make this one wait. Quick measurement
    # settings (this test is about the LiteRT path, not the numbers), set in the profile: validate reads them too
    dev = tmp_path / "local-litert.yaml"
    dev.write_text(f"name: local-litert\ntransport: local\nruntime: litert\nworkdir: {tmp_path / 'work'}\n"
                   "measure: {min_seconds: 0, precision: 0.05, max_entry_s: 0.5, max_wait_s: 0}\n")

    def hwnas(*args: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", "hwnas", *args, "--json"], capture_output=True, text=True, env=env, timeout=800, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)  # exactly one JSON object: the converters print nothing there

    res = hwnas("profile", str(dev), "--space", "compact", "--resolutions", "32", "--runtime", "litert", "--runs", "3",
                "--calibration-subnets", "3", "--out", str(lut))
    assert res["lut"] == str(lut) and res["entries"] == res["measured"] > 50
    from hwnas.profiler.lut import LUT

    table = LUT.load(lut)
    assert table.metadata["runtime"]["name"] == "litert" and table.metadata["exporter"]["name"] == "litert-torch"
    assert table.metadata["dtype"] == "float32" and table.metadata["runtime"]["version"].startswith("ai-edge-litert")
    assert table.metadata["calibration"]["32"]["subnets"] == 3  # the flag reached the profile (default 16)
    val = hwnas("lut", "validate", str(dev), "--lut", str(lut), "--samples", "3")
    assert val["samples"] == 3 and len(val["points"]) == 3
    assert 0.0 <= val["within_10pct"] <= 1.0
    assert all(p["measured_ms"] > 0 and p["predicted_ms"] > 0 for p in val["points"])
