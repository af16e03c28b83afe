"""Benchmark-tool output parsers, on real console outputs recorded on devices.

The fixtures are real captures (see SOURCES.md beside them). Every expected number below was read
off the fixture text by eye, not computed by the parser: microseconds in the text appear here
divided by 1000 (ms), seconds multiplied by 1000.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnas.agents.errors import DeviceError
from hwnas.agents.parsers import (
    BenchmarkOutputError,
    BenchmarkResult,
    parse_benchmark_model,
    parse_ort_perf_test,
)

_HERE = Path(__file__).resolve().parent
FIXTURES = _HERE / "fixtures"  # real outputs of real devices, sources in fixtures/SOURCES.md


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()  # shipped with the tests: a missing one is a failure, not a skip


def tflite(name: str) -> BenchmarkResult:
    return parse_benchmark_model(fixture(name))


# --------------------------------------------------------------------------- benchmark_model


def test_pocox3_cpu_two_threads_with_op_profiling() -> None:
    r = tflite("tflite_benchmark_android_pocox3_cpu_2t_op_profiling.txt")
    # count=58 first=17231 curr=17201 min=16993 max=17256 avg=17138 std=58
    assert r.tool == "benchmark_model"
    assert r.runs == 58
    assert r.mean_ms == pytest.approx(17.138)
    assert r.std_ms == pytest.approx(0.058)
    assert r.min_ms == pytest.approx(16.993)
    assert r.max_ms == pytest.approx(17.256)
    assert r.median_ms is None and r.p5_ms is None and r.p95_ms is None
    # Inference timings in us: Init: 746, First inference: 49587, Warmup (avg): 18851.5, ...
    assert r.init_ms == pytest.approx(0.746)
    assert r.first_ms == pytest.approx(49.587)
    assert r.warmup_mean_ms == pytest.approx(18.8515)
    assert r.warmup_runs == 27
    # Peak memory footprint (MB): init=2.58594 overall=15.7461
    assert r.memory_mb == pytest.approx(15.7461)
    assert r.init_memory_mb == pytest.approx(2.58594)
    assert r.threads == 2
    assert r.delegates == ()
    assert "Duplicate flags: num_threads" in r.warnings

    # Run Order of the regular runs: 77 nodes ("Number of nodes executed: 77").
    assert len(r.ops) == 77
    first = r.ops[0]
    assert first.node_type == "CONV_2D"
    assert first.name.startswith("[model/re_lu/Relu;model/Conv/BatchNorm/FusedBatchNormV3;")
    assert first.name.endswith("model/Conv/Conv2D]:0")
    assert first.avg_ms == pytest.approx(1.502)
    assert first.first_ms == pytest.approx(1.504)
    assert first.start_ms == pytest.approx(0.0)
    assert first.pct == pytest.approx(8.780)
    assert first.times_called == 1
    assert r.ops[1].node_type == "PAD" and r.ops[1].avg_ms == pytest.approx(0.190)
    slowest = max(r.ops, key=lambda op: op.avg_ms)
    assert slowest.name == "[model/up_sampling2d_4/resize/ResizeBilinear]:75"
    assert slowest.node_type == "RESIZE_BILINEAR"
    assert slowest.avg_ms == pytest.approx(3.180)
    assert slowest.pct == pytest.approx(18.597)
    assert r.ops[-1].name == "[Identity]:76" and r.ops[-1].avg_ms == pytest.approx(1.521)

    # Summary by node type: 5 rows.
    assert [s.node_type for s in r.op_summary] == [
        "CONV_2D",
        "RESIZE_BILINEAR",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "PAD",
    ]
    conv = r.op_summary[0]
    assert conv.count == 36 and conv.times_called == 36
    assert conv.avg_ms == pytest.approx(8.695)
    assert conv.pct == pytest.approx(50.958)
    assert r.op_summary[-1].avg_ms == pytest.approx(0.396)

    # The initialisation table is kept apart: one AllocateTensors row, not in r.ops.
    assert [(op.node_type, op.avg_ms) for op in r.init_ops] == [("AllocateTensors", pytest.approx(0.110))]
    assert "AllocateTensors" not in {op.node_type for op in r.ops}


def test_pocox3_gpu_delegate_single_delegate_row() -> None:
    r = tflite("tflite_benchmark_android_pocox3_gpu_delegate_op_profiling.txt")
    # count=110 first=8325 curr=10016 min=7863 max=10688 avg=8680.33 std=591
    assert r.runs == 110
    assert r.mean_ms == pytest.approx(8.68033)
    assert r.std_ms == pytest.approx(0.591)
    assert r.min_ms == pytest.approx(7.863)
    assert r.max_ms == pytest.approx(10.688)
    # Init: 1451507, First inference: 11147, Warmup (avg): 8779.68
    assert r.init_ms == pytest.approx(1451.507)
    assert r.first_ms == pytest.approx(11.147)
    assert r.warmup_mean_ms == pytest.approx(8.77968)
    assert r.warmup_runs == 56
    assert r.memory_mb == pytest.approx(63.4883)
    assert r.threads == 1
    assert r.delegates == ("GPU",)

    assert len(r.ops) == 1
    (row,) = r.ops
    assert row.node_type == "TfLiteGpuDelegateV2"
    assert row.name == "[Identity]:77"
    assert row.avg_ms == pytest.approx(8.671)
    assert row.first_ms == pytest.approx(8.317)
    assert row.pct == pytest.approx(100.0)
    assert [(s.node_type, s.count) for s in r.op_summary] == [("TfLiteGpuDelegateV2", 1)]

    # ModifyGraphWithDelegate (1450.744 ms) belongs to initialisation only.
    assert [op.node_type for op in r.init_ops] == ["ModifyGraphWithDelegate", "AllocateTensors"]
    assert r.init_ops[0].avg_ms == pytest.approx(1450.744)
    assert r.init_ops[0].mem_kb == pytest.approx(62364.0)
    assert r.init_ops[1].times_called == 2


def test_imx8mp_xnnpack_rows_and_scientific_notation() -> None:
    r = tflite("tflite_benchmark_imx8mp_cpu_xnnpack_rows_op_profiling_scinotation.txt")
    # count=50 first=1051421 curr=1049947 min=1048761 max=1052337 avg=1.05037e+06 std=756
    assert r.runs == 50
    assert r.mean_ms == pytest.approx(1050.37)
    assert r.std_ms == pytest.approx(0.756)
    assert r.min_ms == pytest.approx(1048.761)
    assert r.max_ms == pytest.approx(1052.337)
    # Init: 108774, First inference: 1216820, Warmup (avg): 1.21682e+06; warm-up "count=1 curr=1216820"
    assert r.init_ms == pytest.approx(108.774)
    assert r.first_ms == pytest.approx(1216.82)
    assert r.warmup_mean_ms == pytest.approx(1216.82)
    assert r.warmup_runs == 1
    assert r.memory_mb == pytest.approx(194.328)
    assert r.init_memory_mb == pytest.approx(10.9102)
    assert r.delegates == ("XNNPACK",)

    assert len(r.ops) == 43
    first = r.ops[0]
    assert first.node_type == "TfLiteXNNPackDelegate"
    assert first.name.startswith("[tfl.conv_2d13, tfl.conv_2d14, std.constant19_dequantize, ")
    assert first.name.endswith("std.constant62_dequantize]:233")
    assert first.avg_ms == pytest.approx(143.027)
    assert first.start_ms == pytest.approx(0.034)
    second = r.ops[1]
    assert second.node_type == "SPACE_TO_BATCH_ND"
    assert second.name == "[MobilenetV2/expanded_conv_7/depthwise/depthwise/SpaceToBatchND]:69"
    assert second.avg_ms == pytest.approx(4.397)
    assert sum(op.node_type == "TfLiteXNNPackDelegate" for op in r.ops) == 22
    assert r.ops[-1].name == "[ResizeBilinear_2]:254"
    assert r.ops[-1].avg_ms == pytest.approx(156.943)

    assert len(r.op_summary) == 4
    xnn = r.op_summary[0]
    assert (xnn.node_type, xnn.count) == ("TfLiteXNNPackDelegate", 22)
    assert xnn.avg_ms == pytest.approx(982.881)
    assert xnn.pct == pytest.approx(93.588)
    assert [op.node_type for op in r.init_ops] == ["ModifyGraphWithDelegate", "AllocateTensors"]
    assert r.init_ops[0].avg_ms == pytest.approx(41.047)


def test_litert_results_block_percentiles_and_names_with_spaces() -> None:
    r = tflite("tflite_benchmark_litert_android_sme2_op_profiling_p5_median_p95.txt")
    # INFO: count=2112 first=463 curr=459 min=442 max=979 avg=464.545 std=13 p5=460 median=462 p95=478
    assert r.runs == 2112
    assert r.mean_ms == pytest.approx(0.464545)
    assert r.std_ms == pytest.approx(0.013)
    assert r.min_ms == pytest.approx(0.442)
    assert r.max_ms == pytest.approx(0.979)
    assert r.p5_ms == pytest.approx(0.460)
    assert r.median_ms == pytest.approx(0.462)
    assert r.p95_ms == pytest.approx(0.478)
    # Warm-up: count=1055 first=1033 ... avg=465.319; "Initialized session in 4.478ms."
    assert r.warmup_runs == 1055
    assert r.warmup_mean_ms == pytest.approx(0.465319)
    assert r.first_ms == pytest.approx(1.033)
    assert r.init_ms == pytest.approx(4.478)
    # Memory Usage: Init footprint: 8.94 MB, Overall footprint: 11.51 MB
    assert r.memory_mb == pytest.approx(11.51)
    assert r.init_memory_mb == pytest.approx(8.94)
    assert r.delegates == ("XNNPACK",)

    # No [start] column in this tool's tables; columns are read by header name.
    assert len(r.ops) == 5
    assert r.ops[0].name == "LiteRT::Run[buffer registration]/0"
    assert r.ops[0].node_type == "LiteRT::Run[buffer registration]"
    assert r.ops[0].avg_ms == pytest.approx(0.014)
    assert r.ops[0].first_ms == pytest.approx(0.020)
    assert all(op.start_ms is None for op in r.ops)
    gemm = r.ops[3]
    assert gemm.node_type == "Fully Connected (NC, PF32) GEMM"
    assert gemm.name == "Delegate/Fully Connected (NC, PF32) GEMM:1"
    assert gemm.avg_ms == pytest.approx(0.382)
    assert gemm.pct == pytest.approx(92.948)
    alloc = r.ops[1]
    assert alloc.node_type == "AllocateTensors"
    assert alloc.times_called == 0 and alloc.mem_kb == pytest.approx(452.0)

    assert len(r.op_summary) == 5
    assert r.op_summary[0].node_type == "Fully Connected (NC, PF32) GEMM"
    assert r.op_summary[0].avg_ms == pytest.approx(0.382)
    assert r.op_summary[0].pct == pytest.approx(93.171)
    assert r.init_ops == ()


def test_zedboard_old_summary_followed_by_tables() -> None:
    r = tflite("tflite_benchmark_zedboard_cortexa9_2t_oldformat_op_profiling.txt")
    # count=50 first=390368 curr=390936 min=389982 max=417669 avg=394183 std=4373
    assert r.runs == 50
    assert r.mean_ms == pytest.approx(394.183)
    assert r.std_ms == pytest.approx(4.373)
    assert r.min_ms == pytest.approx(389.982)
    assert r.max_ms == pytest.approx(417.669)
    # Average inference timings in us: Warmup: 395037, Init: 18764, no stats: 394183
    assert r.warmup_mean_ms == pytest.approx(395.037)
    assert r.init_ms == pytest.approx(18.764)
    assert r.warmup_runs == 2
    assert r.first_ms == pytest.approx(393.5)  # warm-up "count=2 first=393500"
    assert r.memory_mb is None
    assert r.threads == 2

    assert len(r.ops) == 31
    assert r.ops[0].name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]"
    assert r.ops[0].node_type == "CONV_2D"
    assert r.ops[0].avg_ms == pytest.approx(22.697)
    assert r.ops[-1].node_type == "SOFTMAX"
    assert r.ops[-1].avg_ms == pytest.approx(0.077)
    assert [(s.node_type, s.count) for s in r.op_summary] == [
        ("CONV_2D", 15),
        ("DEPTHWISE_CONV_2D", 13),
        ("AVERAGE_POOL_2D", 1),
        ("SOFTMAX", 1),
        ("RESHAPE", 1),
    ]
    assert r.op_summary[0].avg_ms == pytest.approx(322.055)
    assert r.init_ops == ()  # this tool version has no initialisation profiling


def test_am57x_oldest_format_without_profiling() -> None:
    r = tflite("tflite_benchmark_am57x_tflite112_oldformat_nostats.txt")
    # count=50 first=137789 curr=137254 min=137079 max=143416 avg=137722 std=896
    assert r.runs == 50
    assert r.mean_ms == pytest.approx(137.722)
    assert r.std_ms == pytest.approx(0.896)
    assert r.min_ms == pytest.approx(137.079)
    assert r.max_ms == pytest.approx(143.416)
    # Warmup: 146161, Init: 4452 (warm-up "count=1 curr=146161")
    assert r.warmup_mean_ms == pytest.approx(146.161)
    assert r.first_ms == pytest.approx(146.161)
    assert r.init_ms == pytest.approx(4.452)
    assert r.warmup_runs == 1
    assert r.threads == 1
    assert r.ops == () and r.op_summary == () and r.memory_mb is None


def test_nnapi_delegate_failure_raises_with_the_tools_error_lines() -> None:
    text = fixture("tflite_benchmark_android_mi11_nnapi_delegate_failed.txt")
    with pytest.raises(BenchmarkOutputError, match="ANEURALNETWORKS_OP_FAILED") as info:
        parse_benchmark_model(text)
    err = info.value
    assert isinstance(err, DeviceError) and err.exit_code == 1
    message = str(err)
    assert "Node number 248 (TfLiteNnapiDelegate) failed to prepare." in message
    assert "Failed to apply NNAPI delegate." in message
    assert "Benchmarking failed." in message


def test_to_dict_is_json_ready() -> None:
    r = tflite("tflite_benchmark_android_pocox3_gpu_delegate_op_profiling.txt")
    data = json.loads(json.dumps(r.to_dict()))
    assert data["mean_ms"] == pytest.approx(8.68033)
    assert data["ops"][0]["node_type"] == "TfLiteGpuDelegateV2"
    assert data["delegates"] == ["GPU"]


# --------------------------------------------------------------------------- synthetic edge cases

_POCO_CPU = "tflite_benchmark_android_pocox3_cpu_2t_op_profiling.txt"


def _cut_after(text: str, marker: str) -> str:
    """The text up to and including the first line containing ``marker`` (a truncated capture)."""
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if marker in line)
    return "\n".join(lines[: index + 1]) + "\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no timing"),
        ("   \n\n", "no timing"),
        ("STARTING!\nNum threads: [1]\nGraph: [m.tflite]\nLoaded model m.tflite\n", "no timing"),
        (
            "STARTING!\nGraph: [x.tflite]\nERROR: Could not open 'x.tflite'.\nFailed to mmap model x.tflite\n",
            "Could not open 'x.tflite'",
        ),
        ("STARTING!\nFailed to load model /data/local/tmp/m.tflite\n", "Failed to load model"),
    ],
    ids=["empty", "blank", "no-run", "mmap-failed", "load-failed"],
)
def test_benchmark_model_errors(text: str, match: str) -> None:
    with pytest.raises(BenchmarkOutputError, match=match):
        parse_benchmark_model(text)


def test_output_cut_during_warmup_raises_rather_than_reporting_warmup_as_latency() -> None:
    text = _cut_after(fixture(_POCO_CPU), "count=27 first=49587")
    with pytest.raises(BenchmarkOutputError, match="no timing of the regular runs"):
        parse_benchmark_model(text)


def test_output_cut_inside_the_op_tables_keeps_the_timings() -> None:
    text = _cut_after(fixture(_POCO_CPU), "[model/expanded_conv/depthwise/pad/Pad]:1")
    r = parse_benchmark_model(text)
    assert r.mean_ms == pytest.approx(17.138)
    assert r.runs == 58
    assert [op.node_type for op in r.ops] == ["CONV_2D", "PAD"]
    assert r.op_summary == ()


def test_benchmarking_failed_after_timings_still_raises() -> None:
    text = fixture("tflite_benchmark_am57x_tflite112_oldformat_nostats.txt") + "Benchmarking failed.\n"
    with pytest.raises(BenchmarkOutputError, match="Benchmarking failed"):
        parse_benchmark_model(text)


def test_failed_default_delegate_is_a_warning_not_a_failure() -> None:
    text = fixture("tflite_benchmark_am57x_tflite112_oldformat_nostats.txt").replace(
        "resolved reporter\n",
        "resolved reporter\n"
        "ERROR: Failed to apply the default TensorFlow Lite delegate indexed at 0.\n"
        "WARNING: Ignoring failed application of the default TensorFlow Lite delegate indexed at 0.\n",
    )
    r = parse_benchmark_model(text)
    assert r.mean_ms == pytest.approx(137.722)
    assert any("default TensorFlow Lite delegate" in w for w in r.warnings)


def test_info_prefixes_are_stripped() -> None:
    plain = fixture("tflite_benchmark_am57x_tflite112_oldformat_nostats.txt")
    prefixed = "".join(
        f"INFO: [benchmark_model.cc:{n}] {line}\n" if n % 2 else f"INFO: {line}\n"
        for n, line in enumerate(plain.splitlines())
    )
    assert parse_benchmark_model(prefixed) == parse_benchmark_model(plain)


def test_op_table_columns_are_read_by_header_name() -> None:
    # The am57x run with a hand-made table whose columns come in an unusual order.
    table = (
        "============================== Run Order ==============================\n"
        "\t[Name]\t[avg ms]\t[node type]\t[times called]\t[%]\n"
        "\tconv/0\t1.250\tCONV_2D\t2\t62.500%\n"
        "\tfc/1\t0.750\tFULLY_CONNECTED\t1\t37.500%\n"
        "\n"
    )
    text = fixture("tflite_benchmark_am57x_tflite112_oldformat_nostats.txt") + table
    r = parse_benchmark_model(text)
    assert [(op.name, op.node_type, op.avg_ms, op.times_called, op.pct) for op in r.ops] == [
        ("conv/0", "CONV_2D", 1.25, 2, 62.5),
        ("fc/1", "FULLY_CONNECTED", 0.75, 1, 37.5),
    ]
    assert r.ops[0].first_ms is None and r.ops[0].start_ms is None


# --------------------------------------------------------------------------- onnxruntime_perf_test


def test_ort_pixel6_one_thread() -> None:
    r = parse_ort_perf_test(fixture("ort_perf_test_android_pixel6_cpu_1t_resnet18.txt"))
    assert r.tool == "onnxruntime_perf_test"
    assert r.mean_ms == pytest.approx(19.918)  # Average inference time cost: 19.918 ms
    assert r.runs == 100  # Runs:100
    assert r.min_ms == pytest.approx(19.7812)  # Min Latency: 0.0197812 s
    assert r.max_ms == pytest.approx(20.2704)
    assert r.median_ms == pytest.approx(19.9047)  # P50 Latency: 0.0199047 s
    assert r.p90_ms == pytest.approx(20.0251)
    assert r.p95_ms == pytest.approx(20.1534)
    assert r.p99_ms == pytest.approx(20.2704)
    assert r.p999_ms == pytest.approx(20.2704)
    assert r.std_ms is None and r.p5_ms is None
    assert r.init_ms == pytest.approx(50.8382)  # Session creation time cost: 0.0508382 s
    assert r.first_ms is None  # no "First inference time cost" line
    assert r.threads == 1
    assert r.cpu_usage_pct == pytest.approx(12)
    assert r.memory_mb == pytest.approx(109531136 / 2**20)  # Peak working set size: 109531136 bytes
    assert r.inferences_per_second == pytest.approx(50.2002)
    assert r.delegates == ()


def test_ort_spacemit_average_cost_total_wording() -> None:
    r = parse_ort_perf_test(fixture("ort_perf_test_spacemit_riscv_avg_cost_total_variant.txt"))
    assert r.mean_ms == pytest.approx(7.270205)  # Average inference time cost total: 7.270205 ms
    assert r.runs == 10
    assert r.min_ms == pytest.approx(7.20383)
    assert r.max_ms == pytest.approx(7.30163)
    assert r.median_ms == pytest.approx(7.27787)
    assert r.p95_ms == pytest.approx(7.30163)
    assert r.first_ms == pytest.approx(109.0)  # First inference time cost: 109 ms
    assert r.init_ms == pytest.approx(169.475)
    assert r.threads == 1
    assert r.cpu_usage_pct == pytest.approx(62)
    assert r.memory_mb == pytest.approx(91336704 / 2**20)
    assert r.delegates == ("SpaceMITExecutionProvider",)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "Average inference time cost"),
        ("Setting intra_op_num_threads to 1\nSession creation time cost: 0.05 s\n", "Average inference"),
        (
            "Load model from /data/local/tmp/m.onnx failed:Load model m.onnx failed. File doesn't exist\n",
            "Load model from /data/local/tmp/m.onnx failed",
        ),
    ],
    ids=["empty", "truncated", "model-missing"],
)
def test_ort_errors(text: str, match: str) -> None:
    with pytest.raises(BenchmarkOutputError, match=match):
        parse_ort_perf_test(text)


# --------------------------------------------------------------------------- newer outputs, partial logs

POCO_CPU = "tflite_benchmark_android_pocox3_cpu_2t_op_profiling.txt"
POCO_GPU = "tflite_benchmark_android_pocox3_gpu_delegate_op_profiling.txt"


def test_newer_memory_lines() -> None:
    """TF >= 2.13's benchmark_model prints the footprint delta and a periodically monitored peak instead of
    "Peak memory footprint (MB): init= overall=" (the lines below are the tool's wording, values from a
    capture)."""
    text = fixture(POCO_CPU).replace(
        "Peak memory footprint (MB): init=2.58594 overall=15.7461",
        "INFO: Memory footprint delta from the start of the tool (MB): init=2.43359 overall=8.67578\n"
        "INFO: Overall peak memory footprint (MB) via periodic monitoring: 13.1797\n"
        "INFO: Memory status at the end of exeution:\n"
        "INFO: - VmRSS              : 13 MB\n"
        "INFO: + RssAnnon           : 7 MB\n"
        "INFO: + RssFile + RssShmem : 6 MB",
    )
    r = parse_benchmark_model(text)
    assert r.init_memory_mb == pytest.approx(2.43359)
    assert r.memory_mb == pytest.approx(8.67578)
    assert r.peak_memory_mb == pytest.approx(13.1797)
    assert r.mean_ms == pytest.approx(17.138)  # the timings are untouched
    old = tflite(POCO_CPU)
    assert (old.init_memory_mb, old.memory_mb, old.peak_memory_mb) == (pytest.approx(2.58594), pytest.approx(15.7461), None)


def test_vendor_delegate_partition_is_labelled_with_its_delegate() -> None:
    """A vendor NPU delegate whose kernel is not named TfLite*: the GPU capture with its partition's node
    type renamed as such a delegate names it, and the tool's own "Replacing ... with delegate" line."""
    from hwnas.agents.bench_binary import op_rows

    text = fixture(POCO_GPU).replace("TfLiteGpuDelegateV2", "QnnDelegate").replace(
        "Applied GPU delegate, and the model graph will be completely executed w/ the delegate.",
        "Replacing 58 out of 58 node(s) with delegate (QnnDelegate) node, yielding 1 partitions for the whole graph.",
    )
    r = parse_benchmark_model(text)
    assert r.delegates == ("Qnn",)
    assert r.delegate_kernels == ("QnnDelegate",)
    rows = op_rows(r)
    assert [(row["op_type"], row["provider"]) for row in rows] == [("QnnDelegate", "Qnn")]
    # the same partition under a kernel name without "Delegate" in it: the Replacing line still names it
    text2 = text.replace("QnnDelegate", "NeuronPartition")
    r2 = parse_benchmark_model(text2)
    assert [row["provider"] for row in op_rows(r2)] == ["NeuronPartition"]
    # CPU kernels stay CPU
    assert {row["provider"] for row in op_rows(tflite(POCO_CPU))} == {"CPU"}


def _op_tables_only(text: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Operator-wise Profiling Info for Regular"))
    return "\n".join(lines[start:]) + "\n"


def test_log_with_only_op_tables_yields_rows_and_says_what_is_missing() -> None:
    full = tflite(POCO_CPU)
    only = _op_tables_only(fixture(POCO_CPU))
    with pytest.raises(BenchmarkOutputError, match=r"no 'count=\.\.\. avg=\.\.\.' line.*holds only the op-profiling tables \(\d+ op rows"):
        parse_benchmark_model(only)
    r = parse_benchmark_model(only, need_timing=False)
    assert r.mean_ms is None and r.runs is None
    assert r.ops == full.ops and len(r.ops) > 10
    assert r.op_summary == full.op_summary
    with pytest.raises(BenchmarkOutputError, match="empty, truncated"):
        parse_benchmark_model("STARTING!\nNum threads: [1]\n", need_timing=False)


def test_ort_perf_test_result_without_std_fills_every_lut_statistic() -> None:
    """onnxruntime_perf_test prints no standard deviation: its result carries the runtime's statistics."""
    from hwnas.agents.bench_binary import result_from_benchmark
    from hwnas.agents.runtimes import get_runtime

    res = result_from_benchmark("m", parse_ort_perf_test(fixture("ort_perf_test_android_pixel6_cpu_1t_resnet18.txt")))
    assert res["std_ms"] is None and res["outliers"] is False
    rt = get_runtime("onnxruntime-perf-test")
    stats = {k: float(res[k]) for k in rt.stat_keys}  # what the profiler writes into a LUT row
    assert stats["mean_ms"] == pytest.approx(19.918) and "std_ms" not in stats


@pytest.mark.parametrize(
    ("tool", "name", "old", "new", "why"),
    [
        ("ort", "ort_perf_test_android_pixel6_cpu_1t_resnet18.txt", "Max Latency: 0.0202704 s",
         "Max Latency: 0.2202704 s", "max 220.3 ms > 10x min 19.78 ms"),
        ("tflite", POCO_CPU, "count=58 first=17231 curr=17201 min=16993 max=17256 avg=17138 std=58",
         "count=58 first=17231 curr=17201 min=16993 max=97256 avg=21138 std=11058", "std 11.06 ms > 0.5x mean 21.14 ms"),
    ],
    ids=["ort-max-over-min", "tflite-std-over-mean"],
)
def test_mean_from_a_run_with_outliers_is_flagged(tool: str, name: str, old: str, new: str, why: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from hwnas.agents.bench_binary import result_from_benchmark

    text = fixture(name)
    assert old in text
    parse = parse_ort_perf_test if tool == "ort" else parse_benchmark_model
    clean = result_from_benchmark("m", parse(text))
    assert clean["outliers"] is False
    with caplog.at_level("WARNING"):
        res = result_from_benchmark("m", parse(text.replace(old, new)))
    assert res["outliers"] is True and res["converged"] is False
    assert why in res["warnings"][0] and why in caplog.text
