"""Runtimes ``tflite-benchmark`` / ``onnxruntime-perf-test``: a benchmark program driven through
``Device.measure`` and the real LocalTransport.

No ``benchmark_model`` (or ``onnxruntime_perf_test``) binary exists for this machine in any package
here, so these tests run a STAND-IN program, ``tests/standin_benchmark.py``, which prints a recorded
real output from ``tests/fixtures/`` (see ``tests/fixtures/SOURCES.md``). Everything else is real: the
profile, the argv, ``sh -c 'exec "$@" 2>&1'``, taskset, the subprocess, the parsers, the result dicts.
Expected numbers are read off the fixture files by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

import pytest

from hwnas.agents.bench_binary import BinaryRunner, benchmark_model_args, ort_perf_test_args
from hwnas.agents.device import Device, ModelFile
from hwnas.agents.errors import DeviceError
from hwnas.agents.parsers import BenchmarkOutputError
from hwnas.agents.profiles import parse_profile
from hwnas.agents.transport import LocalTransport

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
STANDIN = HERE / "standin_benchmark.py"

POCO_CPU = FIXTURES / "tflite_benchmark_android_pocox3_cpu_2t_op_profiling.txt"
LITERT_SME2 = FIXTURES / "tflite_benchmark_litert_android_sme2_op_profiling_p5_median_p95.txt"
NNAPI_FAILED = FIXTURES / "tflite_benchmark_android_mi11_nnapi_delegate_failed.txt"
ORT_PIXEL6 = FIXTURES / "ort_perf_test_android_pixel6_cpu_1t_resnet18.txt"


def make_device(tmp_path: Path, *, binary: str, runtime: str = "tflite-benchmark", cores: str = "all") -> Device:
    profile = parse_profile(
        {
            "name": "standin",
            "transport": {"local": {}},
            "runtime": runtime,
            "benchmark_binary": binary,
            "cores": cores,
            "workdir": str(tmp_path / "work"),
            "measure": {"warmup": 2, "runs": 5, "min_seconds": 0},
        },
        source="test",
    )
    return Device(profile)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3 not a real model: the stand-in only checks that it exists")
    return path


@pytest.fixture
def argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("HWNAS_STANDIN_ARGV_LOG", str(log))
    return log


def use_fixture(monkeypatch: pytest.MonkeyPatch, fixture: Path, exit_code: int = 0) -> None:
    monkeypatch.setenv("HWNAS_STANDIN_FIXTURE", str(fixture))
    monkeypatch.setenv("HWNAS_STANDIN_EXIT", str(exit_code))


def test_standin_is_executable() -> None:
    assert os.access(STANDIN, os.X_OK), "tests/standin_benchmark.py must be executable (chmod +x)"


def test_benchmark_model_cpu_op_profiling(tmp_path: Path, model: Path, argv_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture(monkeypatch, POCO_CPU)
    seen: list[dict] = []
    with make_device(tmp_path, binary=str(STANDIN)) as dev:
        results = dev.measure([ModelFile("m", model)], threads=2, profile_ops=True, on_result=seen.append)
        hello = dev.hello
    assert len(results) == 1 and seen == results
    r = results[0]
    # "count=58 first=17231 curr=17201 min=16993 max=17256 avg=17138 std=58" (us)
    assert r["type"] == "result" and r["id"] == "m"
    assert r["runs"] == 58
    assert r["mean_ms"] == pytest.approx(17.138)
    assert r["min_ms"] == pytest.approx(16.993)
    assert r["max_ms"] == pytest.approx(17.256)
    assert r["std_ms"] == pytest.approx(0.058)
    # "Inference timings in us: Init: 746, First inference: 49587, Warmup (avg): 18851.5, ..."
    assert r["first_ms"] == pytest.approx(49.587)
    assert r["init_ms"] == pytest.approx(0.746)
    assert r["warmup_mean_ms"] == pytest.approx(18.8515)
    # the tool prints no quantiles: nothing is made up, the fallback is named
    assert r["p10_ms"] is None and r["median_ms"] is None and r["p90_ms"] is None
    assert r["statistic_fallback"] == "mean_ms"
    assert set(r["missing"]) == {"median_ms", "p10_ms", "p90_ms"}
    assert "samples_ms" not in r
    # the Run Order table of the regular runs, first row: CONV_2D, avg 1.502 ms, node ...:0
    ops = r["ops"]
    assert ops[0]["op_type"] == "CONV_2D" and ops[0]["ms"] == pytest.approx(1.502)
    assert ops[0]["node"].endswith(":0") and ops[0]["provider"] == "CPU"
    assert ops[1] == {"node": "[model/expanded_conv/depthwise/pad/Pad]:1", "op_type": "PAD", "provider": "CPU", "ms": pytest.approx(0.190)}
    assert {"node", "op_type", "provider", "ms"} == set(ops[0])
    # the argv: one process, the flags asked for
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv == [
        f"--graph={model.resolve()}", "--num_threads=2", "--warmup_runs=2", "--num_runs=5", "--min_secs=0",
        "--use_xnnpack=true", "--enable_op_profiling=true",
    ]
    assert r["command"].startswith("sh -c 'exec \"$@\" 2>&1' hwnas ")
    assert hello is not None and hello["runtime"] == "tflite-benchmark"
    assert hello["runtime_version"].startswith("standin_benchmark.py sha256:")


def test_litert_benchmark_quantiles_and_delegate_ops(tmp_path: Path, model: Path, argv_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture(monkeypatch, LITERT_SME2)
    with make_device(tmp_path, binary=str(STANDIN)) as dev:
        (r,) = dev.measure([ModelFile("m", model)], profile_ops=True, extra={"xnnpack": False, "gpu": True})
    # "count=2112 first=463 curr=459 min=442 max=979 avg=464.545 std=13 p5=460 median=462 p95=478"
    assert r["runs"] == 2112
    assert r["median_ms"] == pytest.approx(0.462)
    assert r["mean_ms"] == pytest.approx(0.464545)
    assert r["min_ms"] == pytest.approx(0.442) and r["max_ms"] == pytest.approx(0.979)
    assert r["std_ms"] == pytest.approx(0.013)
    assert r["p5_ms"] == pytest.approx(0.460) and r["p95_ms"] == pytest.approx(0.478)
    assert r["p10_ms"] is None and r["statistic_fallback"] == "median_ms"
    assert r["delegates"] == ["XNNPACK"]
    by_type = {o["op_type"]: o for o in r["ops"]}
    assert "AllocateTensors" not in by_type  # called 0 times per inference: initialisation
    assert by_type["Fully Connected (NC, PF32) GEMM"]["ms"] == pytest.approx(0.382)
    assert by_type["Fully Connected (NC, PF32) GEMM"]["provider"] == "XNNPACK"
    assert by_type["Static Reshape (NC)"]["provider"] == "XNNPACK"
    assert by_type["LiteRT::Run[Buffer sync]"] == {
        "node": "LiteRT::Run[Buffer sync]/0", "op_type": "LiteRT::Run[Buffer sync]", "provider": "LiteRT", "ms": pytest.approx(0.012)
    }
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert "--use_xnnpack=false" in argv and "--use_gpu=true" in argv


def test_ort_perf_test(tmp_path: Path, argv_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not a real model")
    use_fixture(monkeypatch, ORT_PIXEL6)
    with make_device(tmp_path, binary=str(STANDIN), runtime="onnxruntime-perf-test") as dev:
        (r,) = dev.measure([ModelFile("m", onnx)], threads=1, runs=100)
    # "Average inference time cost: 19.918 ms", "Runs:100", "P50 Latency: 0.0199047 s", ...
    assert r["runs"] == 100
    assert r["mean_ms"] == pytest.approx(19.918)
    assert r["median_ms"] == pytest.approx(19.9047)
    assert r["p90_ms"] == pytest.approx(20.0251)
    assert r["p95_ms"] == pytest.approx(20.1534)
    assert r["p99_ms"] == pytest.approx(20.2704)
    assert r["min_ms"] == pytest.approx(19.7812) and r["max_ms"] == pytest.approx(20.2704)
    assert r["p10_ms"] is None and r["std_ms"] is None
    assert r["statistic_fallback"] == "median_ms"
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv == ["-m", "times", "-r", "100", "-x", "1", "-y", "1", "-e", "cpu", "-I", str(onnx.resolve())]


def _real_ort_profile(tmp_path: Path) -> tuple[Path, Path]:
    """A small ONNX model (Conv, Relu) and a real ONNX Runtime profile of 5 runs of it."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv0"), helper.make_node("Relu", ["c"], ["y"], name="relu0")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], initializer=[w],
    )
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "real")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    for _ in range(5):
        sess.run(None, {"x": np.ones((1, 3, 16, 16), np.float32)})
    return model, Path(sess.end_profiling())


def test_ort_perf_test_op_profile(tmp_path: Path, argv_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, profile = _real_ort_profile(tmp_path)
    use_fixture(monkeypatch, ORT_PIXEL6)
    monkeypatch.setenv("HWNAS_STANDIN_PROFILE", str(profile))
    with make_device(tmp_path, binary=str(STANDIN), runtime="onnxruntime-perf-test") as dev:
        (r,) = dev.measure([ModelFile("m", model)], profile_ops=True)
    ops = {o["node"]: o for o in r["ops"]}
    assert set(ops) == {"conv0", "relu0"}
    assert ops["conv0"]["op_type"] == "Conv" and ops["conv0"]["provider"] == "CPUExecutionProvider"
    events = json.loads(profile.read_text())
    durs = [e["dur"] for e in events if e.get("cat") == "Node" and e.get("name") == "conv0_kernel_time"]
    assert len(durs) == 5 and ops["conv0"]["ms"] == pytest.approx(statistics.median(durs[1:]) / 1000)  # first run dropped
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[argv.index("-p") + 1].startswith(str(tmp_path / "work" / "prof" / "ort-"))
    assert not list((tmp_path / "work" / "prof").iterdir())  # the profile was pulled and removed


def test_rounds_keep_the_fastest_and_results_arrive_per_model(tmp_path: Path, model: Path, argv_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture(monkeypatch, POCO_CPU)
    other = tmp_path / "n.tflite"
    other.write_bytes(b"x")
    order: list[str] = []
    with make_device(tmp_path, binary=str(STANDIN)) as dev:
        results = dev.measure([ModelFile("a", model), ModelFile("b", other)], rounds=2, on_result=lambda r: order.append(r["id"]))
    assert order == ["a", "b"] and [r["rounds"] for r in results] == [2, 2]
    graphs = [json.loads(line)[0] for line in argv_log.read_text().splitlines()]
    assert graphs == [f"--graph={p.resolve()}" for p in (model, other, model, other)]  # round-robin, one process each


def test_core_mask_runs_under_taskset(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed")
    use_fixture(monkeypatch, POCO_CPU)
    with make_device(tmp_path, binary=str(STANDIN), cores="1") as dev:
        (r,) = dev.measure([ModelFile("m", model)])
    assert " hwnas taskset 1 " in r["command"]
    assert r["mean_ms"] == pytest.approx(17.138)


# --------------------------------------------------------------------------- failures


def test_delegate_failure_is_a_device_error(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture(monkeypatch, NNAPI_FAILED, exit_code=1)  # benchmark_model exits 1 after "Benchmarking failed."
    with make_device(tmp_path, binary=str(STANDIN)) as dev, pytest.raises(BenchmarkOutputError) as err:
        dev.measure([ModelFile("m", model)])
    exc = err.value
    assert exc.exit_code == 1 and isinstance(exc, DeviceError)
    text = str(exc)
    assert "NN API returned error ANEURALNETWORKS_OP_FAILED" in text
    assert str(STANDIN) in exc.command and "exec" in exc.command
    assert exc.returncode == 1
    assert "Benchmarking failed." in exc.output  # the last lines of the output


def test_output_without_timing_is_a_device_error(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truncated = tmp_path / "truncated.txt"
    truncated.write_text("".join(POCO_CPU.read_text().splitlines(keepends=True)[:40]))  # stops before any timing
    use_fixture(monkeypatch, truncated)
    with make_device(tmp_path, binary=str(STANDIN)) as dev, pytest.raises(BenchmarkOutputError, match="no timing") as err:
        dev.measure([ModelFile("m", model)])
    assert err.value.exit_code == 1
    assert "Loaded model" in err.value.output or "Initialized session" in err.value.output
    assert str(STANDIN) in err.value.command


def test_non_executable_binary(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture(monkeypatch, POCO_CPU)
    plain = tmp_path / "benchmark_model"
    plain.write_text(STANDIN.read_text())
    plain.chmod(0o644)
    with make_device(tmp_path, binary=str(plain)) as dev, pytest.raises(DeviceError, match="not executable") as err:
        dev.measure([ModelFile("m", model)])
    assert err.value.exit_code == 1 and err.value.returncode == 126
    assert str(plain) in err.value.command
    assert "Permission denied" in str(err.value)  # the shell's own message, from the last lines


def test_missing_binary(tmp_path: Path, model: Path) -> None:
    with make_device(tmp_path, binary="/data/local/tmp/no-such-benchmark_model") as dev, pytest.raises(DeviceError, match="not found") as err:
        dev.measure([ModelFile("m", model)])
    assert err.value.exit_code == 1 and err.value.returncode == 127


def test_missing_model_reports_the_tools_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture(monkeypatch, POCO_CPU)
    gone = tmp_path / "gone.tflite"
    gone.write_bytes(b"x")
    with make_device(tmp_path, binary=str(STANDIN)) as dev:
        dev.measure([ModelFile("m", gone)])  # fine while it exists
        gone.unlink()
        with pytest.raises(BenchmarkOutputError, match="Failed to load model"):
            dev.measure([ModelFile("m", gone)])


# --------------------------------------------------------------------------- no shell


HOSTILE = "we ird;$(touch PWNED)`touch PWNED2`'\"&|*"


def test_hostile_paths_are_single_arguments(tmp_path: Path, argv_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture(monkeypatch, POCO_CPU)
    folder = tmp_path / HOSTILE
    folder.mkdir()
    model = folder / f"model {HOSTILE}.tflite"
    model.write_bytes(b"x")
    binary = folder / f"bench {HOSTILE}"
    shutil.copy(STANDIN, binary)
    binary.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    with make_device(tmp_path, binary=str(binary)) as dev:
        (r,) = dev.measure([ModelFile("m", model)])
    assert r["mean_ms"] == pytest.approx(17.138)
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[0] == f"--graph={model.resolve()}"
    assert not list(tmp_path.rglob("PWNED*")), "a path was run through a shell"


def test_pushes_a_local_binary_to_a_remote_device(tmp_path: Path) -> None:
    """A profile whose transport is not local gets push_benchmark_binary (a real ELF program of this machine's
    architecture) sent to benchmark_binary, its path on the device, made executable. The ssh link itself is
    replaced by the LocalTransport here (the ssh tests cover the link): what is tested is the push and the chmod."""
    elf = Path(os.path.realpath(shutil.which("true") or "/bin/true"))
    work = tmp_path / "remote"
    target = work / "bin" / "benchmark_model"
    profile = parse_profile(
        {"name": "phone", "transport": {"ssh": {"host": "127.0.0.1"}}, "runtime": "tflite-benchmark",
         "benchmark_binary": str(target), "push_benchmark_binary": str(elf), "workdir": str(work)},
        source="test",
    )
    dev = Device(profile, transport=LocalTransport(device="phone", workdir=str(work)))
    assert BinaryRunner(dev, runtime="tflite-benchmark").remote_binary() == str(target)
    assert target.read_bytes() == elf.read_bytes() and os.access(target, os.X_OK)


def test_flag_builders() -> None:
    assert benchmark_model_args("/m.tflite", threads=4, warmup=3, runs=20, min_seconds=0.5, xnnpack=False) == [
        "--graph=/m.tflite", "--num_threads=4", "--warmup_runs=3", "--num_runs=20", "--min_secs=0.5", "--use_xnnpack=false",
    ]
    assert ort_perf_test_args("/m.onnx", threads=2, runs=7) == ["-m", "times", "-r", "7", "-x", "2", "-y", "1", "-e", "cpu", "-I", "/m.onnx"]
