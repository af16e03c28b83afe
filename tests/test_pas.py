"""Pruning-as-Search: DBC gates (STE), differentiable MACs, reparameterisation, latency table, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hwnas.agents.device import Device
from hwnas.agents.profiles import load_profile
from hwnas.profiler.lut import LUT, OVERHEAD_KEY, OVERHEAD_OP, LUTWriter, default_metadata, entry_row
from hwnas.profiler.measure import STAT_KEYS, MeasurePlan
from hwnas.profiler.profile import LUT_COLUMNS, LUT_STATISTIC, lut_columns
from hwnas.search import pas as pas_search
from hwnas.search.errors import BudgetError, PredictorError
from hwnas.search.pas import (
    LatencyCost,
    LayerLatencyTable,
    MacsCost,
    layer_key,
    load_data,
    lut_space,
    measure_layer_table,
    parse_data_spec,
    resolve_target,
    width_grid,
)
from hwnas.supernet.errors import DatasetError, SpaceError
from hwnas.supernet.pas_net import (
    BASE_NETS,
    PasNet,
    PasNetConfig,
    base_config,
    count_macs,
    init_gates_by_importance,
    reparameterize,
)

REPO = Path(__file__).resolve().parents[1]
TINY = PasNetConfig(name="tiny", in_channels=1, resolution=8, num_classes=10, layers=((4, 1), (8, 2)))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    return load_data("digits", base_config("digits"))[1:]


def _randomise(net: PasNet, seed: int, open_share: float = 0.6) -> None:
    """Random BN statistics/affine parameters and random gates, as after training and search."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        for gate in net.gates():
            gate.weight.copy_((torch.rand(gate.channels, generator=gen) < open_share).float())


def test_ste_gradient_reaches_gates_and_not_pruned_channels(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:32], digits[1][:32]
    torch.manual_seed(0)
    net = PasNet(config=base_config("digits"))
    block = net.blocks[2]  # 32 -> 32, stride 1: has the identity branch too
    closed = torch.zeros(32, dtype=torch.bool)
    closed[::3] = True
    with torch.no_grad():
        block.gate.weight[closed] = 0.2
    assert torch.equal(block.gate.mask(), (~closed).float())  # binarised forward
    net.train()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    for gate in net.gates():
        assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0
    assert block.gate.weight.grad[closed].abs().sum() > 0  # closed gates still learn (they can reopen)
    for param in (
        block.conv3.weight,
        block.conv1.weight,
        block.bn3.weight,
        block.bn1.weight,
        block.bn_id.weight,
    ):
        assert param.grad is not None
        assert torch.all(param.grad[closed] == 0)
        assert param.grad[~closed].abs().sum() > 0
    assert block.conv3.weight[closed].abs().sum() > 0  # masked, not erased


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macs_match_hook_count_of_reparameterised_net(seed: int) -> None:
    config = base_config("digits")
    net = PasNet(config=config)
    shape = (config.in_channels, config.resolution, config.resolution)
    assert count_macs(reparameterize(net), shape) == config.macs() == int(net.macs())
    _randomise(net, seed, open_share=0.3 + 0.2 * seed)
    macs = net.macs()
    assert int(macs) == count_macs(reparameterize(net), shape)
    assert int(macs) == config.macs(net.widths()) < config.macs()
    macs.backward()  # differentiable through the STE
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in net.gate_parameters())


@pytest.mark.parametrize("name", sorted(BASE_NETS))
def test_reparameterisation_equals_pruned_multibranch(name: str) -> None:
    config = base_config(name)
    x = load_data("digits", config)[3][:48]
    torch.manual_seed(0)
    net = PasNet(config=config)
    _randomise(net, 7)
    init_gates_by_importance(net)  # all open, spread over [0.52, 1]
    with torch.no_grad():
        for gate in net.gates():
            gate.weight[gate.weight < 0.75] = 0.3  # then prune about half of each layer
    net.eval()
    plain = reparameterize(net)
    with torch.no_grad():
        diff = float((net(x) - plain(x)).abs().max())
    assert diff <= 1e-4
    allowed = (nn.Sequential, nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)
    assert all(isinstance(m, allowed) for m in plain.modules())
    convs = [m for m in plain if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == net.widths() != config.widths
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_base_config_unknown_name() -> None:
    with pytest.raises(SpaceError, match="did you mean digits"):
        base_config("digit")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("0", "positive"),
        ("-3", "positive"),
        ("0%", "positive"),
        ("200%", "larger than the unpruned"),
        ("1e12", "larger than the unpruned"),
        ("abc", "percentage"),
        ("1", "narrowest"),
    ],
    ids=["zero", "negative", "zero-pct", "200pct", "huge", "text", "below-min"],
)
def test_resolve_target_rejects(target: str, message: str) -> None:
    config = base_config("digits")
    with pytest.raises(BudgetError, match=message):
        resolve_target(target, config.macs(), config.min_macs())


def test_resolve_target_values() -> None:
    assert resolve_target("40%", 1000.0) == pytest.approx(400.0)
    assert resolve_target("250", 1000.0) == 250.0
    assert resolve_target(1000, 1000.0) == 1000.0


@pytest.mark.parametrize("spec", ["mnist", "digit", "digits:/tmp/x", "cifar10"])
def test_bad_data_spec(spec: str) -> None:
    with pytest.raises(DatasetError, match="--data"):
        parse_data_spec(spec)


@pytest.fixture(autouse=True)
def _workload_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "workload-cache"))


@pytest.fixture
def device_yaml(tmp_path: Path) -> Path:
    """The local device with its own work folder, so that its lock does not meet other tests' runs."""
    path = tmp_path / "pastest.yaml"
    path.write_text(
        f"name: pastest\ntransport:\n  local: {{}}\nruntime: onnxruntime\nthreads: 1\nworkdir: {tmp_path}/work\n"
    )
    return path


def _fake_ms(c_in: int, c_out: int, h_out: int) -> float:
    return 1e-4 * c_in * c_out * h_out * h_out + 0.01


def _fake_lut(path: Path, config: PasNetConfig, step: int, overhead: float = 0.05) -> None:
    """A PaS latency LUT with made-up numbers (bilinear in the widths), written with the profiler's LUTWriter."""
    meta = default_metadata(space=lut_space(config), resolutions=[config.resolution], statistic=LUT_STATISTIC)
    meta.update(
        runtime={"name": "onnxruntime", "version": None, "threads": 1},
        threads=1,
        pas={"base": config.as_dict(), "width_step": step},
    )
    stats = dict.fromkeys((*STAT_KEYS, "ref_ms"), 0.0)  # every column the runtime's LUT holds
    rows = [entry_row(OVERHEAD_KEY, config.resolution, runs=1, stats=stats, op=OVERHEAD_OP) | {LUT_STATISTIC: overhead}]
    seen = set()
    for shape, grid in zip(config.layer_shapes(), LayerLatencyTable.layer_keys(config, step), strict=True):
        for _, ci, co in grid:
            key = layer_key(shape["h_in"], ci, shape["h_out"], co, 3, shape["stride"])
            if key not in seen:
                seen.add(key)
                row = entry_row(key, config.resolution, runs=1, stats=stats)
                rows.append(row | {LUT_STATISTIC: _fake_ms(ci, co, shape["h_out"])})
    full = overhead + sum(_fake_ms(s["c_in"], s["c_out"], s["h_out"]) for s in config.layer_shapes())
    meta["reference"] = {"ms": full, "statistic": "p10_ms"}
    with LUTWriter(path, metadata=meta, columns=LUT_COLUMNS) as writer:
        for row in rows:
            writer.write(row)
        writer.finish()


def test_latency_table_interpolates_and_reads_luts(tmp_path: Path) -> None:
    path = tmp_path / "lut.csv"
    _fake_lut(path, TINY, 2, overhead=0.05)
    table = LayerLatencyTable.load(path, TINY)
    assert table.overhead_ms == 0.05 and table.step == 2
    # bilinear interpolation is exact for a function bilinear in (c_in, c_out); the overhead counts once
    assert table([3, 5]) == pytest.approx(0.05 + _fake_ms(1, 3, 8) + _fake_ms(3, 5, 4))
    assert table(TINY.widths) == pytest.approx(table.reference_ms)
    widths = [torch.tensor(3.0, requires_grad=True), torch.tensor(5.0, requires_grad=True)]
    value = LatencyCost(table=table).of_widths(widths)
    value.backward()
    assert widths[1].grad is not None and float(widths[1].grad) == pytest.approx(1e-4 * 3 * 16)
    with pytest.raises(PredictorError, match="measured for base network 'tiny'"):
        LayerLatencyTable.load(path, base_config("digits"))
    lut = LUT.load(path)
    lut.metadata.pop("pas")
    with pytest.raises(PredictorError, match="not a PaS latency table"):
        LayerLatencyTable.from_lut(lut, TINY)


def test_measure_layer_table_on_a_device_profile(tmp_path: Path, device_yaml: Path) -> None:
    """Real ONNX Runtime through the on-device runner of the local transport, as `hwnas profile` measures."""
    out = tmp_path / "tiny.csv"
    with Device(load_profile(str(device_yaml))) as device:
        device.acquire()
        table = measure_layer_table(
            TINY, device=device, out=out, step=8, plan=MeasurePlan(rounds=1, runs=3, warmup=1),
            calibration_nets=3,
        )
    assert width_grid(8, 8) == [1, 8] and width_grid(20, 8) == [1, 8, 16, 20]
    lut = LUT.load(out)  # the profiler's LUT format, read by its own reader
    assert len(lut) == 1 + 2 + 4  # overhead row + the stem's and the body's grid points
    assert lut.statistic == "lut_ms" and lut.space == "pas-tiny" and lut.resolutions == [8]
    meta = lut.metadata
    assert meta["runtime"]["name"] == "onnxruntime" and meta["runtime"]["version"]
    assert meta["device"]["name"] == "pastest" and meta["reference"]["ms"] > 0
    assert meta["calibration"]["8"]["subnets"] == 4
    assert all(lut.rows[c].gt(0).all() for c in ("p10_ms", "median_ms", "ref_ms"))
    assert lut.samples() is not None  # per-run samples in the sidecar, as the profiler keeps them
    again = LayerLatencyTable.load(out, TINY)
    assert again.values == table.values and again([4, 8]) == pytest.approx(table([4, 8]))
    assert table.reference_ms == meta["reference"]["ms"]
    assert MacsCost(config=TINY).of_config(TINY) == TINY.macs()
    proc = _hwnas("lut", "show", str(out), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entries"] == 7


STANDIN = REPO / "tests" / "standin_benchmark.py"
FIXTURES = REPO / "tests" / "fixtures"


@pytest.mark.parametrize(
    ("runtime", "fixture", "mean_ms", "columns"),
    [
        pytest.param(
            "onnxruntime-perf-test", "ort_perf_test_android_pixel6_cpu_1t_resnet18.txt", 19.918,
            ("mean_ms", "min_ms", "max_ms"), id="onnxruntime-perf-test",
        ),
        pytest.param(
            "tflite-benchmark", "tflite_benchmark_android_pocox3_cpu_2t_op_profiling.txt", 17.138,
            ("mean_ms", "std_ms", "min_ms", "max_ms"), id="tflite-benchmark", marks=pytest.mark.tflite,
        ),
    ],
)
def test_measure_layer_table_with_a_benchmark_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str, fixture: str, mean_ms: float, columns: tuple[str, ...]
) -> None:
    """A PaS latency table on a benchmark-program runtime, through the profiler's public table API.

    No ``benchmark_model``/``onnxruntime_perf_test`` binary exists for this machine: the profile runs the
    STAND-IN ``tests/standin_benchmark.py``, which prints a recorded real output of the tool (the same one for
    every model). Everything else is real: the exported model files, the local transport, the argv, the
    output parser, the batches with their reference workload, the calibration and the LUT file."""
    if runtime == "tflite-benchmark":
        pytest.importorskip("litert_torch", reason="litert-torch is not installed")
    monkeypatch.setenv("HWNAS_STANDIN_FIXTURE", str(FIXTURES / fixture))
    yaml = tmp_path / "standin.yaml"
    yaml.write_text(
        f"name: standin\ntransport:\n  local: {{}}\nruntime: {runtime}\nbenchmark_binary: {STANDIN}\n"
        f"threads: 1\nworkdir: {tmp_path}/work\n"
    )
    out = tmp_path / "tiny.csv"
    with Device(load_profile(str(yaml))) as device:
        device.acquire()
        table = measure_layer_table(
            TINY, device=device, out=out, step=8, plan=MeasurePlan(rounds=1, runs=3, warmup=1), calibration_nets=3
        )
    lut = LUT.load(out)
    assert len(lut) == 1 + 2 + 4 and lut.space == "pas-tiny"
    meta = lut.metadata
    # the runtime's statistic (benchmark programs: the mean), not the Python runner's p10
    assert meta["measurement"]["raw_statistic"] == "mean_ms" and meta["reference"]["statistic"] == "mean_ms"
    assert meta["runtime"]["name"] == runtime and meta["runtime"]["version"].startswith("standin_benchmark.py sha256:")
    assert meta["reference"]["ms"] == pytest.approx(mean_ms)
    assert list(lut.rows.columns) == list(lut_columns(runtime))
    for column in columns:
        assert lut.rows[column].gt(0).all(), column
    assert lut.rows["mean_ms"].tolist() == pytest.approx([mean_ms] * 7)
    # every model prints the same numbers: each layer costs nothing beyond the overhead, and the table's sum
    # is what a whole network measured
    assert table(TINY.widths) == pytest.approx(mean_ms) and table([1, 1]) == pytest.approx(mean_ms)
    assert meta["calibration"]["8"]["subnets"] == 4


def test_private_onnxruntime_timing_is_gone() -> None:
    for name in ("_ort_session", "_time_ms", "compare_latency_ms", "_conv_onnx"):
        assert not hasattr(pas_search, name)


def _hwnas(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hwnas", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=env,
    )


def test_cli_pas_end_to_end(tmp_path: Path, device_yaml: Path) -> None:
    out = tmp_path / "pas"
    proc = _hwnas(
        "pas", "--data", "digits", "--target-macs", "40%", "--out", str(out), "--epochs", "1",
        "--device", str(device_yaml), "--repeats", "2", "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for field in ("base_macs", "macs", "top1", "reparam_max_abs_diff", "file", "base_top1", "widths"):
        assert field in result
    assert result["base_macs"] == base_config("digits").macs()
    assert abs(result["macs"] / (0.4 * result["base_macs"]) - 1) <= 0.10
    assert result["reparam_max_abs_diff"] <= 1e-4
    assert result["onnx_max_abs_diff"] <= 1e-4
    assert 0 <= result["top1"] <= 1 and 0 <= result["base_top1"] <= 1
    assert len(result["widths"]) == len(base_config("digits").layers)
    assert Path(result["file"]).is_file() and (out / "widths.png").is_file()
    record = json.loads((out / "pas.json").read_text())
    assert record["widths"] == result["widths"] and record["plain_macs_counted"] == result["macs"]
    assert result["device"] == "pastest" and result["latency_statistic"] == "p10_ms"
    assert result["latency_ms"]["reparameterised"] > 0 and result["latency_ms"]["multibranch"] > 0
    assert result["speedup"] == pytest.approx(result["speedup_summary"]["median"])
    assert len(record["latency_samples_ms"]["reparameterised"]) == 2
    assert "lut" not in result  # MACs cost: no latency table


def test_cli_pas_latency_target_with_a_lut(tmp_path: Path, device_yaml: Path) -> None:
    lut = tmp_path / "digits.csv"
    config = base_config("digits")
    _fake_lut(lut, config, 8)
    table = LayerLatencyTable.load(lut, config)
    proc = _hwnas(
        "pas", "--data", "digits", "--target-ms", "50%", "--lut", str(lut), "--out", str(tmp_path / "pas"),
        "--epochs", "1", "--device", str(device_yaml), "--repeats", "1", "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["cost"] == "ms" and result["lut"] == str(lut) and result["lut_measured"] is False
    assert result["target_macs"] is None
    assert result["base_predicted_ms"] == pytest.approx(table(config.widths))
    assert result["target_ms"] == pytest.approx(0.5 * result["base_predicted_ms"])
    assert abs(result["predicted_ms"] / result["target_ms"] - 1) <= 0.05  # snapped into the tolerance band
    assert result["predicted_ms"] == pytest.approx(table(result["widths"]))
    assert result["measured_ms"] > 0 and result["drift"] > 0  # made-up table: the numbers are not comparable
    assert result["width_multiple"] == 8
    assert all(w % 8 == 0 for w in result["widths"]), result["widths"]


@pytest.mark.parametrize(("multiple", "share"), [(1, 0.4), (8, 0.4), (8, 0.25), (4, 0.7)])
def test_snap_reaches_the_target_in_width_multiples(multiple: int, share: float) -> None:
    config = base_config("digits")
    torch.manual_seed(0)
    net = PasNet(config=config)
    _randomise(net, 3, open_share=0.9)
    init_gates_by_importance(net)
    with torch.no_grad():  # a search that stopped off target, at widths that are no multiples
        for i, gate in enumerate(net.gates()):
            gate.weight[: 3 + i] = 0.2
    cost = MacsCost(config=config)
    searcher = pas_search.PruningAsSearch(base=config, width_multiple=multiple, tolerance=0.05)
    target = share * config.macs()
    order = [torch.argsort(g.weight, descending=True) for g in net.gates()]
    assert searcher._snap(net, cost, config, target) > 0
    widths = net.widths()
    assert all(w % multiple == 0 for w in widths), widths
    assert abs(cost.of_config(config, widths) / target - 1) <= 0.05
    for gate, before in zip(net.gates(), order, strict=True):  # the strongest gates are the ones kept
        assert set(torch.nonzero(gate.keep()).flatten().tolist()) == set(before[: int(gate.keep().sum())].tolist())


@pytest.mark.parametrize(
    "args",
    [
        ["--target-macs", "0"],
        ["--target-macs", "200%"],
        ["--target-macs", "40%", "--data", "mnist"],
        ["--target-macs", "40%", "--out", "{file}/sub"],
        [],
        ["--target-ms", "0"],
        ["--target-ms", "fast"],
        ["--target-ms", "150%"],
        ["--target-macs", "40%", "--device", "no-such-device"],
        ["--target-macs", "40%", "--lut", "{file}"],
        ["--target-ms", "1e6", "--lut", "{tiny}"],
    ],
    ids=[
        "target-zero", "target-200pct", "unknown-data", "unwritable-out", "no-target", "target-ms-zero",
        "target-ms-text", "target-ms-150pct", "unknown-device", "lut-not-a-lut", "lut-other-base",
    ],
)
def test_cli_pas_bad_input_exits_2(tmp_path: Path, args: list[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    tiny = tmp_path / "tiny.csv"
    _fake_lut(tiny, TINY, 8)
    args = [a.replace("{file}", str(blocker)).replace("{tiny}", str(tiny)) for a in args]
    base = {"--data": "digits", "--out": str(tmp_path / "out")}
    for flag, value in base.items():
        if flag not in args:
            args += [flag, value]
    proc = _hwnas("pas", *args, "--epochs", "0", "--json", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwnas: error:"), proc.stderr
    assert not (tmp_path / "out" / "pas.onnx").exists()


def test_device_held_waits_for_a_busy_device(device_yaml: Path) -> None:
    """`hwnas pas --wait-device`: a trained network is not thrown away because another run holds the device.
    Two real devices on the local transport share one lock file; the first releases it after a second."""
    import threading
    import time

    from hwnas.agents.errors import DeviceBusy

    profile = load_profile(str(device_yaml))
    with Device(profile) as first, Device(profile) as second:
        first.acquire()
        with pytest.raises(DeviceBusy), second.held(wait_s=0):
            pass
        threading.Timer(1.0, first.release).start()
        start = time.monotonic()
        with second.held(wait_s=30) as dev:
            waited = time.monotonic() - start
            assert dev.lock is not None
        assert second.lock is None  # released on leaving the block
    assert 0.9 <= waited < 30
