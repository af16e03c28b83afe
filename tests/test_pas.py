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

from hwnas.search.errors import BudgetError, PredictorError
from hwnas.search.pas import (
    LatencyCost,
    LayerLatencyTable,
    MacsCost,
    layer_key,
    load_data,
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


def test_latency_table_interpolates_and_round_trips(tmp_path: Path) -> None:
    def fake_ms(c_in: int, c_out: int, h: int) -> float:
        return 1e-4 * c_in * c_out * h * h + 0.01

    values = {}
    for i, shape in enumerate(TINY.layer_shapes()):
        for _, ci, co in LayerLatencyTable.layer_keys(TINY, (0.5, 1.0))[i]:
            values[layer_key(shape["h_in"], ci, shape["h_out"], co, 3, shape["stride"])] = fake_ms(
                ci, co, shape["h_out"]
            )
    meta = {"statistic": "median_ms", "pas_fractions": [0.5, 1.0]}
    table = LayerLatencyTable(config=TINY, values=values, fractions=(0.5, 1.0), meta=meta)
    # bilinear interpolation is exact for a function bilinear in (c_in, c_out)
    assert table([3, 5]) == pytest.approx(fake_ms(1, 3, 8) + fake_ms(3, 5, 4))
    widths = [torch.tensor(3.0, requires_grad=True), torch.tensor(5.0, requires_grad=True)]
    cost = LatencyCost(table=table)
    value = cost.of_widths(widths)
    value.backward()
    assert widths[1].grad is not None and float(widths[1].grad) == pytest.approx(1e-4 * 3 * 16)
    path = tmp_path / "lut.csv"
    table.save(path)
    assert path.read_text().startswith("# hwnas-lut 1\n")
    again = LayerLatencyTable.load(path, TINY)
    assert again([4, 8]) == pytest.approx(table([4, 8]))
    with pytest.raises(PredictorError, match="no row for key"):
        LayerLatencyTable.load(path, base_config("digits"))


def test_measure_layer_table_with_onnxruntime() -> None:
    table = measure_layer_table(TINY, fractions=(1.0,), runs=3)
    assert width_grid(8, (1.0,)) == [1, 8]
    assert len(table.values) == 2 + 4
    assert all(v > 0 for v in table.values.values())
    assert table.meta["runtime"]["name"] == "onnxruntime"
    assert MacsCost(config=TINY).of_config(TINY) == TINY.macs()


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


def test_cli_pas_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "pas"
    proc = _hwnas(
        "pas", "--data", "digits", "--target-macs", "40%", "--out", str(out), "--epochs", "1", "--json"
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
    assert result["latency_ms"]["reparameterised"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["--target-macs", "0"],
        ["--target-macs", "200%"],
        ["--target-macs", "40%", "--data", "mnist"],
        ["--target-macs", "40%", "--out", "{file}/sub"],
    ],
    ids=["target-zero", "target-200pct", "unknown-data", "unwritable-out"],
)
def test_cli_pas_bad_input_exits_2(tmp_path: Path, args: list[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = [a.replace("{file}", str(blocker)) for a in args]
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
