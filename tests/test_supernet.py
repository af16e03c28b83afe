"""The once-for-all supernet: data, elastic operators, extraction, training, BN recalibration, export, OFA
compatibility, the CLI and its bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.supernet import bn
from hwnas.supernet.data import load_dataset, parse_spec
from hwnas.supernet.elastic import DynamicSeparableConv2d, OFASupernet
from hwnas.supernet.errors import CheckpointError, DatasetError
from hwnas.supernet.export import export_subnet
from hwnas.supernet.spaces import get_space, list_spaces
from hwnas.supernet.train import (
    Checkpoint,
    default_phases,
    load_checkpoint,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs-scale", "0.002", "--batch-size", "16", "--bn-images", "48", "--eval-images", "40", "--threads", "1"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _hwnas(*args: str, timeout: float = 300, module: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *(module or ["-m", "hwnas"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)


def _randomize_bn(net: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


# --------------------------------------------------------------------------------------------- data


def test_digits_split_resolution_and_normalisation() -> None:
    train = load_dataset("digits", resolution=32, split="train", seed=0)
    val = load_dataset("digits", resolution=32, split="val", seed=0)
    assert len(train) + len(val) == 1797 and 350 <= len(val) <= 370
    assert train.n_classes == 10 and train.classes[3] == "3"
    x, y = train.tensors()
    assert x.shape == (len(train), 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3
    again = load_dataset("digits", resolution=40, split="val", seed=0)
    assert torch.equal(again.labels, val.labels) and again[0][0].shape == (3, 40, 40)


def test_digits_hard_is_generated_deterministically_from_the_digits_split() -> None:
    from hwnas.supernet import data as data_mod

    plain_train = load_dataset("digits", resolution=32, split="train")
    plain_val = load_dataset("digits", resolution=32, split="val")
    train = load_dataset("digits-hard", resolution=40, split="train")
    val = load_dataset("digits-hard", resolution=40, split="val")
    assert train.images.shape == (len(plain_train), 1, 32, 32) and train.images.dtype == torch.uint8
    assert len(val) == 2 * len(plain_val)  # the validation digits drawn twice
    assert torch.equal(train.labels, plain_train.labels) and torch.equal(val.labels, plain_val.labels.repeat(2))
    half = len(plain_val)
    assert not torch.equal(val.images[:half], val.images[half:])  # two different draws of each digit
    x, _ = train.batch(slice(0, 64))
    assert x.shape == (64, 3, 40, 40) and abs(float(x.mean())) < 0.3
    data_mod._DIGITS_CACHE.clear()  # drawn again from scratch: the same pixels
    again = load_dataset("digits-hard", resolution=32, split="val")
    assert torch.equal(again.images, val.images) and again.mean == val.mean


def test_elastic_loader_resolutions_and_shards() -> None:
    ds = load_dataset("digits", resolution=48, split="train")
    full = ds.loader(batch_size=16, resolutions=[32, 40, 48], seed=3)
    shards = [ds.loader(batch_size=16, resolutions=[32, 40, 48], seed=3, rank=r, world_size=2) for r in (0, 1)]
    sizes = set()
    for (x, y), (x0, y0), (x1, y1) in zip(full, *shards, strict=False):
        sizes.add(x.shape[-1])
        assert x0.shape[-1] == x1.shape[-1] == x.shape[-1]
        assert torch.equal(torch.stack([y0, y1], 1).flatten()[: len(y)], y)
        assert torch.allclose(x0, x[0::2]) and torch.allclose(x1, x[1::2])
    assert sizes == {32, 40, 48}
    aug = ds.loader(batch_size=8, augment=True, seed=1, shuffle=False)
    xa, _ = next(iter(aug))
    xp, _ = ds.batch(slice(0, 8))
    assert xa.shape == xp.shape and not torch.allclose(xa, xp)


def _write_cifar(folder: Path, n: int = 6) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))


def test_cifar10_pickle_batches(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    train = load_dataset(f"cifar10:{tmp_path}", resolution=40, split="train")
    val = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", resolution=40, split="val")
    assert len(train) == 30 and len(val) == 6 and train.classes[1] == "c1"
    assert train.batch(slice(0, 4))[0].shape == (4, 3, 40, 40)


def test_imagefolder(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            pil.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    train = load_dataset(f"imagefolder:{tmp_path}", resolution=32, split="train")
    val = load_dataset(f"imagefolder:{tmp_path}", resolution=32, split="val")
    assert train.classes == ["cat", "dog"] and len(train) == 8 and len(val) == 2
    assert train[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("mnist", r"unknown dataset 'mnist'"),
        ("digit", r"did you mean digits"),
        ("cifar10", r"expected cifar10:PATH"),
        ("cifar10:{tmp}/nowhere", r"nowhere: no such folder; expected a folder holding data_batch_1"),
        ("cifar10:{tmp}", r"missing data_batch_1"),
        ("cifar10:{tmp}/bad", r"data_batch_1 is not a CIFAR-10 python batch"),
        ("imagefolder:{tmp}/empty", r"no class folders"),
        ("digits:/x", r"takes no path"),
    ],
    ids=["unknown", "close-match", "no-path", "missing-folder", "empty-folder", "corrupt-batch", "no-classes", "extra-path"],
)
def test_dataset_errors(tmp_path: Path, spec: str, match: str) -> None:
    (tmp_path / "bad").mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / "bad" / name).write_bytes(b"not a pickle")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=match):
        load_dataset(spec.format(tmp=tmp_path), resolution=32, split="train")


def test_parse_spec() -> None:
    assert parse_spec("digits") == ("digits", None)
    assert parse_spec("cifar10:/data/c") == ("cifar10", Path("/data/c"))


# --------------------------------------------------------------------------------------------- elastic ops


def test_kernel_transformation_matrices_and_active_filters() -> None:
    conv = DynamicSeparableConv2d(8, [3, 5, 7])
    params = dict(conv.named_parameters())
    assert params["7to5_matrix"].shape == (25, 25) and params["5to3_matrix"].shape == (9, 9)
    assert params["conv.weight"].shape == (8, 1, 7, 7)
    w = conv.conv.weight
    # identity matrices: the smaller kernels are the centres of the 7x7 kernel
    assert torch.equal(conv.get_active_filter(8, 7), w)
    assert torch.equal(conv.get_active_filter(6, 5), w[:6, :, 1:6, 1:6])
    assert torch.equal(conv.get_active_filter(8, 3), w[:, :, 2:5, 2:5])
    with torch.no_grad():
        conv.get_parameter("5to3_matrix").copy_(torch.randn(9, 9))
    k3 = conv.get_active_filter(8, 3)
    expected = (w[:, :, 2:5, 2:5].reshape(-1, 9) @ conv.get_parameter("5to3_matrix").T).reshape(8, 1, 3, 3)
    assert torch.allclose(k3, expected)
    x = torch.randn(2, 8, 9, 9)
    assert conv(x, kernel_size=3).shape == (2, 8, 9, 9)


def test_supernet_state_dict_follows_ofa_names() -> None:
    net = OFASupernet("ofa-mbv3-w1.0")
    keys = net.state_dict().keys()
    for key in (
        "first_conv.conv.weight",
        "blocks.0.conv.depth_conv.conv.weight",
        "blocks.1.conv.inverted_bottleneck.conv.conv.weight",
        "blocks.1.conv.inverted_bottleneck.bn.bn.running_mean",
        "blocks.1.conv.depth_conv.conv.conv.weight",
        "blocks.1.conv.depth_conv.conv.7to5_matrix",
        "blocks.1.conv.depth_conv.conv.5to3_matrix",
        "blocks.5.conv.depth_conv.se.fc.reduce.weight",
        "blocks.20.conv.point_linear.bn.bn.weight",
        "final_expand_layer.bn.running_var",
        "feature_mix_layer.conv.weight",
        "classifier.linear.weight",
    ):
        assert key in keys, key
    assert len([k for k in keys if k.endswith("7to5_matrix")]) == 20


def _check_equal(name: str, r: int, n_archs: int, batch: int, seed: int) -> None:
    sp = get_space(name)
    torch.manual_seed(seed)
    net = OFASupernet(sp).eval()
    _randomize_bn(net, seed)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith("_matrix"):
                p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(seed)
    for i in range(n_archs):
        arch = net.sample_active(rng, resolutions=[r])
        if i == 0:
            arch = net.set_active(sp.min_arch(r))
        x = torch.randn(batch, 3, r, r)
        sub = net.get_active_subnet(arch).eval()
        with torch.no_grad():
            diff = (net(x) - sub(x)).abs().max().item()
        assert diff <= 1e-5, (name, arch.to_json(), diff)
        assert sum(p.numel() for p in sub.parameters()) == sp.params(arch)


@pytest.mark.parametrize("r", get_space("compact").resolutions)
def test_compact_supernet_equals_extracted_subnet(r: int) -> None:
    _check_equal("compact", r, n_archs=4, batch=2, seed=r)


@pytest.mark.parametrize(("name", "r"), [("ofa-mbv3-w1.0", 128), ("ofa-mbv3-w1.2", 160)])
def test_ofa_supernets_equal_extracted_subnet(name: str, r: int) -> None:
    _check_equal(name, r, n_archs=2, batch=1, seed=1)


def test_every_space_has_a_supernet() -> None:
    for name in list_spaces():
        net = OFASupernet(name)
        assert len(net.blocks) == 1 + get_space(name).n_blocks


def test_channel_sorting_keeps_the_largest_network() -> None:
    torch.manual_seed(0)
    net = OFASupernet("compact").eval()
    _randomize_bn(net)
    net.set_max()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        net.re_organize_middle_weights(expand_ratio_stage=0)
        after = net(x)
    assert torch.allclose(before, after, atol=1e-5)
    w = net.elastic_blocks()[0].point_linear.conv.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(w[:-1] >= w[1:])  # most important middle channels first


# --------------------------------------------------------------------------------------------- BN, export


def test_bn_recalibration_changes_running_stats_and_evaluates() -> None:
    torch.manual_seed(0)
    sp = get_space("compact")
    sub = OFASupernet(sp).get_active_subnet(sp.min_arch())
    train = load_dataset("digits", resolution=48, split="train")
    val = load_dataset("digits", resolution=48, split="val")
    bn_layer = sub.first_conv.bn
    before = bn_layer.running_mean.clone()
    weights = {k: v.clone() for k, v in sub.state_dict().items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    bn.recalibrate_bn(sub, train, n_images=64, resolution=32)
    assert not torch.allclose(bn_layer.running_mean, before)
    assert bn_layer.momentum == 0.1 and not sub.training
    assert all(torch.equal(v, sub.state_dict()[k]) for k, v in weights.items())
    top1 = bn.evaluate(sub, val.subset(range(50)), resolution=32)
    assert 0.0 <= top1 <= 1.0


def _recalibrated_subnet(arch_seed: int = 2) -> tuple[torch.nn.Module, object, object, list[torch.Tensor]]:
    torch.manual_seed(0)
    sp = get_space("compact")
    net = OFASupernet(sp)
    arch = sp.sample(np.random.default_rng(arch_seed))
    sub = net.get_active_subnet(arch)
    train = load_dataset("digits", resolution=48, split="train")
    bn.recalibrate_bn(sub, train, n_images=64, resolution=arch.r)
    # random images of the data's kind (per-pixel noise at 32 px drives logits to ~100) and real images
    check = [train.random_images(3, arch.r), train.batch(slice(0, 3), arch.r)[0]]
    return sub, arch, sp, check


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    sub, arch, sp, check = _recalibrated_subnet()
    result = export_subnet(sub, arch, "onnx", tmp_path / "m.onnx", space=sp, check_inputs=check)
    assert Path(result["file"]).is_file()
    assert result["max_abs_diff"] <= 1e-4
    assert result["macs"] == sp.macs(arch) and result["params"] == sp.params(arch)


@pytest.mark.tflite
def test_tflite_export_matches_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    sub, arch, sp, check = _recalibrated_subnet()
    result = export_subnet(sub, arch, "tflite", tmp_path / "m.tflite", space=sp, check_inputs=check)
    assert result["max_abs_diff"] <= 1e-4 and result["format"] == "tflite"


# --------------------------------------------------------------------------------------------- training


def test_default_schedule_follows_progressive_shrinking() -> None:
    phases = default_phases("compact")
    assert [p.name for p in phases] == ["largest", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    assert [p.n_subnets for p in phases] == [1, 1, 2, 2, 4, 4]
    assert phases[1].choices.ks == (3, 5, 7) and phases[1].choices.e == (6,) and phases[1].choices.d == (3,)
    assert phases[3].choices.d == (1, 2, 3) and phases[5].choices.e == (3, 4, 6)
    assert [p.expand_stage for p in phases[4:]] == [0, 1] and not phases[0].kd
    random = default_phases("compact", sampling="random")
    assert len(random) == 1 and random[0].epochs == pytest.approx(sum(p.epochs for p in phases))
    ofa = default_phases("ofa-mbv3-w1.0")
    assert [p.epochs for p in ofa[1:]] == [120, 25, 120, 25, 120]


def test_cli_train_resume_eval_export(tmp_path: Path) -> None:
    ckpt = tmp_path / "compact.pt"
    proc = _hwnas("supernet", "train", "--space", "compact", "--data", "digits", "--out", str(ckpt), *TINY, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["checkpoint"] == str(ckpt) and result["seconds"] > 0
    assert [p["name"] for p in result["phases"]] == ["largest", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    assert not any(p["skipped"] for p in result["phases"])
    assert 0 <= result["top1_max"] <= 1 and 0 <= result["top1_min"] <= 1

    saved = load_checkpoint(ckpt, space="compact")
    assert saved.finished == [p["name"] for p in result["phases"]]
    assert {h["phase"] for h in saved.history} == set(saved.finished)
    assert all({"loss", "train_top1", "epoch"} <= set(h) for h in saved.history)
    assert saved.config["sampling"] == "progressive"

    again = _hwnas("supernet", "train", "--space", "compact", "--data", "digits", "--out", str(ckpt), *TINY, "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert all(p["skipped"] for p in second["phases"]) and second["top1_max"] == result["top1_max"]

    ev = _hwnas("supernet", "eval", str(ckpt), "--arch", "min", "--bn-images", "48", "--json")
    assert ev.returncode == 0, ev.stderr
    e = json.loads(ev.stdout)
    sp = get_space("compact")
    assert e["macs"] == sp.macs(sp.min_arch()) and e["params"] == sp.params(sp.min_arch()) and 0 <= e["top1"] <= 1

    onnx = tmp_path / "m.onnx"
    ex = _hwnas("export", str(ckpt), "--arch", "max", "--format", "onnx", "--out", str(onnx), "--bn-images", "48", "--json")
    assert ex.returncode == 0, ex.stderr
    x = json.loads(ex.stdout)
    assert x["file"] == str(onnx) and onnx.is_file() and x["macs"] == sp.macs(sp.max_arch())
    # a supernet trained for a few steps answers random images with logits near 100: float32 rounding
    assert x["max_abs_diff"] <= 1e-4 or x["max_rel_diff"] <= 1e-5


def test_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    net = OFASupernet("compact")
    path = save_checkpoint(tmp_path / "c.pt", Checkpoint(space="compact", state_dict=net.state_dict(), n_classes=10, config={"data": "digits"}))
    ck = load_checkpoint(path)
    assert ck.space == "compact" and torch.equal(ck.supernet().state_dict()["first_conv.conv.weight"], net.state_dict()["first_conv.conv.weight"])
    with pytest.raises(CheckpointError, match="checkpoint of space compact, not of ofa-mbv3-w1.0"):
        load_checkpoint(path, space="ofa-mbv3-w1.0")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable hwnas supernet checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an hwnas supernet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def compact_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "compact.pt"
    net = OFASupernet("compact")
    save_checkpoint(path, Checkpoint(space="compact", state_dict=net.state_dict(), n_classes=10, config={"data": "digits"}))
    return path


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["supernet", "train", "--space", "compact", "--data", "mnist", "--out", "{tmp}/x.pt"], "unknown dataset 'mnist'"),
        (["supernet", "train", "--space", "ofa-mbv3-w1.0", "--data", "digits", "--out", "{ckpt}"], "checkpoint of space compact"),
        (["supernet", "eval", "{tmp}/corrupt.pt", "--arch", "min"], "not a readable hwnas supernet checkpoint"),
        (["supernet", "eval", "{tmp}/missing.pt", "--arch", "min"], "no such checkpoint"),
        (["supernet", "eval", "{ckpt}", "--arch", "min", "--space", "ofa-mbv3-w1.2"], "not of ofa-mbv3-w1.2"),
        (["supernet", "eval", "{ckpt}", "--arch", '{{"ks": [4], "e": [3], "d": [1], "r": 32}}'], "arch field 'ks'"),
        (["export", "{ckpt}", "--arch", "min", "--format", "pb", "--out", "{tmp}/m.pb"], "--format 'pb'"),
        (["supernet", "eval", "{ckpt}", "--arch", "min", "--data", "cifar10:{tmp}/none"], "no such folder"),
    ],
    ids=["unknown-data", "other-space", "corrupt", "missing", "space-option", "bad-arch", "bad-format", "missing-data"],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, compact_ckpt: Path, args: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # in-process (hwnas.cli.main, the entry point itself) to spare an interpreter start per case;
    # test_cli_train_resume_eval_export runs `python -m hwnas` as a real process
    from hwnas.cli import main

    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x04not really")
    argv = [a.format(tmp=tmp_path, ckpt=compact_ckpt) for a in args]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    assert out == ""


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    # without dropout (its masks are drawn per process), the two runs do the same arithmetic
    common = ["supernet", "train", "--space", "compact", "--data", "digits", *TINY, "--dropout", "0", "--json"]
    single = _hwnas(*common, "--out", str(one))
    assert single.returncode == 0, single.stderr
    proc = _hwnas(
        "--standalone", "--nproc_per_node", "2", "-m", "hwnas", *common, "--out", str(two),
        module=["-m", "torch.distributed.run"], timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1  # only rank 0 prints
    result = json.loads(lines[0])
    assert result["world_size"] == 2 and Path(result["checkpoint"]) == two
    a, b = load_checkpoint(one), load_checkpoint(two)
    assert a.finished == b.finished
    # The same global batches, subnets and augmentation, and BN statistics all-reduced over the ranks: the
    # first step computes the same loss; later ones drift apart by float rounding only (CPU batch norm's
    # float32 gradients are ~1% off float64 ones, so bitwise equality is not expected).
    first_a, first_b = a.history[0]["loss"], b.history[0]["loss"]
    assert abs(first_a - first_b) <= 1e-3 * abs(first_a)
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["phase"] == hb["phase"] and abs(ha["loss"] - hb["loss"]) <= 0.05 * abs(ha["loss"])


# --------------------------------------------------------------------------------------------- OFA


class _StubModule(types.ModuleType):
    """Stands in for torchvision, which OFA's data loaders import at package import time and which is not
    installed here; the network code never touches it. Any attribute is a dummy class."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


@pytest.fixture(scope="module")
def ofa_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ``ofa`` package from PyPI (``pip install --no-deps --target``); skips without network."""
    target = tmp_path_factory.mktemp("ofa_pkg")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), "ofa"],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0 or not (target / "ofa").is_dir():
        pytest.skip(f"cannot install the ofa package from PyPI: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return target


@pytest.fixture
def ofa_mbv3(ofa_package: Path, monkeypatch: pytest.MonkeyPatch) -> type:
    monkeypatch.syspath_prepend(str(ofa_package))
    try:
        import torchvision  # noqa: F401
    except ImportError:
        for name in ("torchvision", "torchvision.transforms", "torchvision.datasets", "torchvision.transforms.functional"):
            monkeypatch.setitem(sys.modules, name, _StubModule(name))
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
        sys.modules["torchvision"].datasets = sys.modules["torchvision.datasets"]  # type: ignore[attr-defined]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    from ofa.imagenet_classification.elastic_nn.networks.ofa_mbv3 import OFAMobileNetV3

    return OFAMobileNetV3


@pytest.mark.parametrize(("width", "r"), [(1.0, 128), (1.2, 160)])
def test_ofa_state_dict_loads_and_computes_the_same(ofa_mbv3: type, width: float, r: int) -> None:
    from hwnas.supernet.ofa_compat import convert_ofa_state_dict, detect_space, load_ofa_supernet

    torch.manual_seed(0)
    theirs = ofa_mbv3(width_mult=width, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if n.endswith("_matrix"):
                p.add_(0.05 * torch.randn_like(p))
    _randomize_bn(theirs)
    theirs.eval()
    sd = theirs.state_dict()
    name = f"ofa-mbv3-w{width:.1f}"
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in OFASupernet(name).state_dict().items()}
    assert detect_space(sd) == name
    ours = load_ofa_supernet({"module." + k: v for k, v in sd.items()})  # DataParallel-style keys
    legacy = {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k: v for k, v in sd.items()}
    assert set(convert_ofa_state_dict(legacy, name)) == set(sd)
    sp = get_space(name)
    rng = np.random.default_rng(0)
    for _ in range(2):
        arch = sp.sample(rng, [r])
        theirs.set_active_subnet(ks=list(arch.ks), e=list(arch.e), d=list(arch.d))
        x = torch.randn(1, 3, r, r)
        with torch.no_grad():
            ref = theirs(x)
            sub_ref = theirs.get_active_subnet().eval()(x)
            ours.set_active(arch)
            got = ours(x)
            sub = ours.get_active_subnet(arch).eval()(x)
        assert (ref - got).abs().max().item() <= 1e-5
        assert (sub_ref - sub).abs().max().item() <= 1e-5
        assert (ref - sub).abs().max().item() <= 1e-5
    theirs.re_organize_middle_weights(expand_ratio_stage=1)
    ours.re_organize_middle_weights(expand_ratio_stage=1)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in theirs.state_dict().items())


def test_ofa_compat_rejects_foreign_weights() -> None:
    from hwnas.supernet.ofa_compat import convert_ofa_state_dict, detect_space

    sd = OFASupernet("ofa-mbv3-w1.0").state_dict()
    with pytest.raises(CheckpointError, match="another width multiplier"):
        convert_ofa_state_dict(sd, "ofa-mbv3-w1.2")
    with pytest.raises(CheckpointError, match="no counterpart"):
        convert_ofa_state_dict({**sd, "extra.weight": torch.zeros(1)}, "ofa-mbv3-w1.0")
    with pytest.raises(CheckpointError, match="not an OFA MobileNetV3"):
        detect_space(OFASupernet("compact").state_dict())
