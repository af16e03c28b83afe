"""Search spaces: validation, sampling, LUT entries (OFA's key schema), MACs/params, torch modules."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from hwnas.profiler.ofa_interop import ofa_note10_dir
from hwnas.supernet import Arch, Entry, SearchSpace, get_space, list_spaces
from hwnas.supernet.errors import ArchError, SpaceError
from hwnas.supernet.spaces import OPS, build_entry, entry_input, make_divisible

SPACES = list_spaces()
OFA_NOTE10 = ofa_note10_dir()  # OFA's published Note10 tables, shipped in the package

KEY_RE = re.compile(
    r"^(?:Conv-input:\d+x\d+x3-output:\d+x\d+x\d+"
    r"|expanded_conv-input:\d+x\d+x\d+-output:\d+x\d+x\d+-expand:\d+-kernel:[357]-stride:[12]"
    r"-idskip:[01]-se:[01]-hs:[01]"
    r"|Conv_1-input:\d+x\d+x\d+-output:\d+x\d+x\d+"
    r"|AvgPool2D-input:\d+x\d+x\d+-output:1x1x\d+"
    r"|Conv_2-input:1x1x\d+-output:1x1x\d+"
    r"|Logits-input:1x1x\d+-output:\d+)$"
)


@pytest.fixture(params=SPACES, ids=SPACES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def _small_r(space: SearchSpace) -> int:
    return min(space.resolutions)


# ---- registry -------------------------------------------------------------------------------------------


def test_registry_has_the_design_spaces() -> None:
    assert {"ofa-mbv3-w1.0", "ofa-mbv3-w1.2", "compact"} <= set(SPACES)


def test_unknown_space_names_close_matches() -> None:
    with pytest.raises(SpaceError, match=r"unknown search space 'ofa-mbv3-w1\.1'.*ofa-mbv3-w1\.0"):
        get_space("ofa-mbv3-w1.1")
    assert SpaceError.exit_code == 2


def test_ofa_structure_matches_ofa_mbv3() -> None:
    w10, w12 = get_space("ofa-mbv3-w1.0"), get_space("ofa-mbv3-w1.2")
    assert (w10.stem_channels, w10.first_block_channels, w10.stage_widths) == (16, 16, (24, 40, 80, 112, 160))
    assert (w10.final_expand_channels, w10.feature_mix_channels) == (960, 1280)
    assert (w12.stem_channels, w12.first_block_channels, w12.stage_widths) == (24, 24, (32, 48, 96, 136, 192))
    assert (w12.final_expand_channels, w12.feature_mix_channels) == (1152, 1536)
    assert w10.resolutions == tuple(range(128, 225, 4))
    assert w12.resolutions == (160, 176, 192, 208, 224)
    for sp in (w10, w12):
        assert (sp.n_stages, sp.max_depth, sp.n_classes) == (5, 4, 1000)
        assert (sp.ks_choices, sp.e_choices, sp.d_choices) == ((3, 5, 7), (3, 4, 6), (2, 3, 4))
        assert sp.lut_resolutions == (160, 176, 192, 208, 224)
    assert make_divisible(16 * 1.2, 8) == 24 and make_divisible(112 * 1.2, 8) == 136


# ---- arch parsing and validation --------------------------------------------------------------------------


def test_parse_accepts_dict_json_arch_and_r_list(space: SearchSpace) -> None:
    arch = space.max_arch()
    d = arch.to_dict()
    assert space.parse(d) == arch
    assert space.parse(json.dumps(d)) == arch
    assert space.parse(arch) == arch
    assert space.parse({**d, "r": [arch.r]}) == arch
    assert space.parse({**d, "wid": None}) == arch  # OFA's ArchManager writes "wid": null
    assert isinstance(hash(arch), int)
    assert json.loads(arch.to_json()) == d
    assert len(arch.ks) == len(arch.e) == space.n_stages * space.max_depth
    assert len(arch.d) == space.n_stages


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("ks", "bad-at-3", r"^arch field 'ks'\[3\]: 4 is not one of \[3, 5, 7\]$"),
        ("e", "bad-at-0", r"^arch field 'e'\[0\]: 5 is not one of \[3, 4, 6\]$"),
        ("d", "bad-at-1", r"^arch field 'd'\[1\]: 9 is not one of \["),
        ("r", 100, r"^arch field 'r': 100 is not one of the resolutions of .* \[\d+"),
        ("r", [160, 224], r"^arch field 'r': expected an int or a list of one int"),
        ("ks", "short", r"^arch field 'ks': expected a list of \d+ values from \[3, 5, 7\], got \d+ values$"),
        ("e", 3, r"^arch field 'e': expected a list of \d+ values"),
        ("ks", "bool", r"^arch field 'ks'\[0\]: True is not one of"),
        ("e", "str", r"^arch field 'e'\[0\]: '3' is not one of"),
    ],
    ids=[
        "ks-value",
        "e-value",
        "d-value",
        "r-value",
        "r-list",
        "ks-length",
        "e-scalar",
        "ks-bool",
        "e-string",
    ],
)
def test_parse_rejects_bad_fields(space: SearchSpace, field: str, value: object, match: str) -> None:
    d = space.max_arch().to_dict()
    if value == "bad-at-3":
        d[field][3] = 4
    elif value == "bad-at-0":
        d[field][0] = 5
    elif value == "bad-at-1":
        d[field][1] = 9
    elif value == "short":
        d[field] = d[field][:-1]
    elif value == "bool":
        d[field][0] = True
    elif value == "str":
        d[field][0] = "3"
    else:
        d[field] = value
    with pytest.raises(ArchError, match=match):
        space.parse(d)


def test_parse_rejects_unknown_missing_and_malformed(space: SearchSpace) -> None:
    d = space.max_arch().to_dict()
    with pytest.raises(ArchError, match=r"unknown field 'width'"):
        space.parse({**d, "width": 1})
    with pytest.raises(ArchError, match=r"unknown field 'wid'"):
        space.parse({**d, "wid": [1]})
    with pytest.raises(ArchError, match=r"arch field 'd' is missing"):
        space.parse({k: v for k, v in d.items() if k != "d"})
    with pytest.raises(ArchError, match=r"not valid JSON"):
        space.parse("{ks: 3")
    with pytest.raises(ArchError, match=r"must be a JSON object"):
        space.parse("[1, 2]")
    assert ArchError.exit_code == 2


def test_parse_with_given_resolutions(space: SearchSpace) -> None:
    lo, hi = space.lut_resolutions[0], space.lut_resolutions[-1]
    assert space.parse(space.max_arch(hi), resolutions=[lo, hi]).r == hi
    other = next(r for r in space.resolutions if r not in (lo, hi)) if len(space.resolutions) > 2 else None
    if other is not None:
        with pytest.raises(
            ArchError, match=rf"'r': {other} is not one of the allowed resolutions \[{lo}, {hi}\]"
        ):
            space.parse(space.max_arch(other), resolutions=[lo, hi])


def test_max_min_and_random_archs_validate(space: SearchSpace) -> None:
    mx, mn = space.max_arch(), space.min_arch()
    assert mx.r == max(space.resolutions) and mn.r == min(space.resolutions)
    assert set(mx.ks) == {max(space.ks_choices)} and set(mn.d) == {min(space.d_choices)}
    assert space.macs(mn) < space.macs(mx) and space.params(mn) < space.params(mx)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = space.sample(rng)
        assert space.parse(a.to_dict()) == a
    lut_r = space.sample(rng, resolutions=space.lut_resolutions).r
    assert lut_r in space.lut_resolutions
    with pytest.raises(SpaceError, match=r"resolution 7 is not one of the resolutions"):
        space.sample(rng, resolutions=[7])
    with pytest.raises(ArchError, match=r"'r': 7 is not one of"):
        space.max_arch(7)


def test_sample_is_reproducible_and_matches_arrays(space: SearchSpace) -> None:
    a1 = space.sample(np.random.default_rng(3))
    a2 = space.sample(np.random.default_rng(3))
    assert a1 == a2
    arr = space.sample_arrays(np.random.default_rng(3), 1)
    assert space.arch_from_arrays(arr) == a1


def test_array_form_round_trip(space: SearchSpace) -> None:
    n = 64
    arrays = space.sample_arrays(np.random.default_rng(1), n, space.lut_resolutions)
    assert arrays["ks"].shape == (n, space.n_blocks) and arrays["e"].shape == (n, space.n_blocks)
    assert arrays["d"].shape == (n, space.n_stages) and arrays["r"].shape == (n,)
    assert set(np.unique(arrays["r"]).tolist()) <= set(space.lut_resolutions)
    archs = space.archs_from_arrays(arrays)
    back = space.arrays_from_archs(archs)
    for k in ("ks", "e", "d", "r"):
        np.testing.assert_array_equal(back[k], arrays[k])
    assert space.arch_from_arrays(arrays, 5) == archs[5]
    bad = {k: v.copy() for k, v in arrays.items()}
    bad["e"][2, 4] = 5
    with pytest.raises(ArchError, match=r"arch field 'e'\[4\] \(row 2\): 5 is not one of \[3, 4, 6\]"):
        space.check_arrays(bad)


def test_vectorised_sums_match_per_arch(space: SearchSpace) -> None:
    arrays = space.sample_arrays(np.random.default_rng(2), 40, space.lut_resolutions)
    archs = space.archs_from_arrays(arrays)
    np.testing.assert_array_equal(space.macs_arrays(arrays), [space.macs(a) for a in archs])
    np.testing.assert_array_equal(space.params_arrays(arrays), [space.params(a) for a in archs])
    lut = {(e.key, e.resolution): float(i % 7) + 0.25 for i, e in enumerate(space.all_lut_entries())}
    fast = space.sum_entries(arrays, lambda e: lut[(e.key, e.resolution)])
    slow = [sum(lut[(e.key, e.resolution)] for e in space.lut_entries(a)) for a in archs]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


# ---- LUT entries ------------------------------------------------------------------------------------------


def test_lut_entries_follow_ofa_schema(space: SearchSpace) -> None:
    rng = np.random.default_rng(4)
    for arch in [space.max_arch(), space.min_arch(), *(space.sample(rng) for _ in range(10))]:
        entries = space.lut_entries(arch)
        assert [e.op for e in entries[:2]] == ["Conv", "expanded_conv"]
        assert [e.op for e in entries[-4:]] == ["Conv_1", "AvgPool2D", "Conv_2", "Logits"]
        assert len(entries) == 6 + sum(arch.d)
        for prev, nxt in zip(entries, entries[1:], strict=False):
            assert prev.output_shape == nxt.input_shape, (prev.key, nxt.key)
        for e in entries:
            assert KEY_RE.match(e.key), e.key
            assert e.op in OPS and e.resolution == arch.r
        assert entries[0].input_shape == (3, arch.r, arch.r)
        assert entries[-1].output_shape == (space.n_classes,)
        first = entries[1]  # expand = in channels, identity skip
        assert first.mid_channels == first.in_channels and first.idskip == 1


def test_block_entry_and_fixed_entries_compose_lut_entries(space: SearchSpace) -> None:
    arch = space.sample(np.random.default_rng(5))
    fixed = space.fixed_entries(arch.r)
    assert [e.op for e in fixed] == ["Conv", "expanded_conv", "Conv_1", "AvgPool2D", "Conv_2", "Logits"]
    blocks = [
        space.block_entry(
            s, j == 0, arch.ks[s * space.max_depth + j], arch.e[s * space.max_depth + j], arch.r
        )
        for s in range(space.n_stages)
        for j in range(arch.d[s])
    ]
    assert space.lut_entries(arch) == [*fixed[:2], *blocks, *fixed[2:]]
    e = space.block_entry(0, True, 5, 4, arch.r)
    assert e.mid_channels == make_divisible(round(e.in_channels * 4), 8)
    with pytest.raises(SpaceError, match=r"kernel 4 is not one of \[3, 5, 7\]"):
        space.block_entry(0, True, 4, 4, arch.r)


def test_all_lut_entries_unique_and_cover_random_archs(space: SearchSpace) -> None:
    entries = space.all_lut_entries()
    ids = [(e.key, e.resolution) for e in entries]
    assert len(ids) == len(set(ids))
    assert entries == space.all_lut_entries()  # deterministic
    per_r = 6 + space.n_stages * (2 if space.max_depth > 1 else 1) * len(space.ks_choices) * len(
        space.e_choices
    )
    assert len(entries) == per_r * len(space.lut_resolutions)
    rng = np.random.default_rng(6)
    seen = set()
    for r in space.lut_resolutions:
        for a in space.archs_from_arrays(space.sample_arrays(rng, 150, [r])):
            seen.update((e.key, e.resolution) for e in space.lut_entries(a))
    assert seen == set(ids)
    some = entries[len(entries) // 2]
    assert space.entry_for_key(some.key, some.resolution) == some
    with pytest.raises(SpaceError, match=r"is not an entry of space"):
        space.entry_for_key("Conv-input:1x1x3-output:1x1x1", space.lut_resolutions[0])


def test_compact_lut_is_small() -> None:
    sp = get_space("compact")
    assert len(sp.lut_resolutions) <= 2
    assert len(sp.all_lut_entries()) <= 160
    assert (sp.n_stages, sp.max_depth, sp.n_classes) == (4, 3, 10)
    assert len(sp.max_arch().ks) == 12 and len(sp.max_arch().d) == 4


@pytest.mark.parametrize("r", [160, 176, 192, 208, 224])
def test_w12_keys_equal_ofa_note10_lut(r: int) -> None:
    sp = get_space("ofa-mbv3-w1.2")
    with open(OFA_NOTE10 / f"{r}_lookup_table.yaml") as fp:
        ofa_keys = set(yaml.safe_load(fp))
    assert {e.key for e in sp.all_lut_entries([r])} == ofa_keys
    rng = np.random.default_rng(r)
    union = set()
    for a in sp.archs_from_arrays(sp.sample_arrays(rng, 200, [r])):
        union.update(e.key for e in sp.lut_entries(a))
    assert union == ofa_keys


@pytest.mark.parametrize(
    ("name", "r", "macs", "params"),
    [("ofa-mbv3-w1.0", 224, 566_170_656, 7_664_760), ("ofa-mbv3-w1.2", 224, 843_101_040, 10_701_632)],
    ids=["w1.0", "w1.2"],
)
def test_max_arch_macs_params_equal_ofa(name: str, r: int, macs: int, params: int) -> None:
    # Reference values from once-for-all itself (ofa 0.1.0.post202307202001): OFAMobileNetV3 with
    # set_max_net(); MBv3LatencyTable.count_flops_given_config(get_active_net_config(), 224) * 1e6 and
    # sum(p.numel() for p in get_active_subnet().parameters()).
    sp = get_space(name)
    assert sp.macs(sp.max_arch(r)) == macs
    assert sp.params(sp.max_arch(r)) == params


def test_spatial_sizes_follow_ofa_padding() -> None:
    sp = get_space("ofa-mbv3-w1.2")
    entries = sp.lut_entries(sp.max_arch(176))
    sizes = [entries[0].in_size] + [e.out_size for e in entries[:-3]]
    assert sorted(set(sizes), reverse=True) == [176, 88, 44, 22, 11, 6]
    assert entries[-4].key == "Conv_1-input:6x6x192-output:6x6x1152"
    assert get_space("ofa-mbv3-w1.0").fixed_entries(132)[0].key == "Conv-input:132x132x3-output:66x66x16"


# ---- MACs, params and torch modules ---------------------------------------------------------------------


def _hook_count(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_subnet_forward_macs_and_params(space: SearchSpace) -> None:
    torch.manual_seed(0)
    for arch in (space.max_arch(_small_r(space)), space.sample(np.random.default_rng(7), [_small_r(space)])):
        net = space.build_subnet(arch).eval()
        x = torch.randn(1, 3, arch.r, arch.r)
        with torch.no_grad():
            y = net(x)
        assert y.shape == (1, space.n_classes)
        assert torch.isfinite(y).all()
        assert _hook_count(net, x) == space.macs(arch)
        assert sum(p.numel() for p in net.parameters()) == space.params(arch)
        assert len(net.blocks) == 1 + sum(arch.d)
    assert space.build_subnet(space.min_arch(), n_classes=3).classifier.linear.out_features == 3


def test_entry_modules_compose_to_the_subnet(space: SearchSpace) -> None:
    arch = space.sample(np.random.default_rng(8), [_small_r(space)])
    net = space.build_subnet(arch).eval()
    entries = space.lut_entries(arch)
    modules = net.entry_modules()
    assert len(modules) == len(entries)
    x = entry_input(entries[0])
    with torch.no_grad():
        h = x
        for entry, module in zip(entries, modules, strict=True):
            assert tuple(h.shape[1:]) == entry.input_shape
            standalone = space.build_entry(entry).eval()
            # the standalone entry module has exactly the subnet's parameters and buffers
            standalone.load_state_dict(module.state_dict(), strict=True)
            h_next = module(h)
            torch.testing.assert_close(standalone(h), h_next, rtol=0, atol=0)
            h = h_next
        torch.testing.assert_close(h, net(x), rtol=1e-5, atol=1e-5)


def test_every_entry_module_maps_input_to_output_shape(space: SearchSpace) -> None:
    r = space.lut_resolutions[0]
    entries = space.fixed_entries(r) + [space.block_entry(s, True, 7, 6, r) for s in range(space.n_stages)]
    entries += [space.block_entry(s, False, 3, 3, r) for s in range(space.n_stages)]
    for entry in entries:
        module = build_entry(entry).eval()
        x = space.entry_input(entry)
        assert tuple(x.shape) == (1, *entry.input_shape)
        with torch.no_grad():
            y = module(x)
        assert tuple(y.shape) == (1, *entry.output_shape), entry.key
        assert sum(p.numel() for p in module.parameters()) == entry.params, entry.key
        assert _hook_count(module, x) == entry.macs, entry.key


def test_state_dict_names_mirror_ofa_mobilenet_v3() -> None:
    sp = get_space("ofa-mbv3-w1.0")
    net = sp.build_subnet(sp.max_arch(128), dropout_rate=0.1)
    keys = set(net.state_dict())
    expected = {
        "first_conv.conv.weight",
        "first_conv.bn.running_var",
        "blocks.0.conv.depth_conv.conv.weight",
        "blocks.0.conv.point_linear.bn.weight",
        "blocks.1.conv.inverted_bottleneck.conv.weight",
        "blocks.1.conv.inverted_bottleneck.bn.num_batches_tracked",
        "blocks.5.conv.depth_conv.se.fc.reduce.weight",
        "blocks.5.conv.depth_conv.se.fc.reduce.bias",
        "blocks.5.conv.depth_conv.se.fc.expand.bias",
        "blocks.5.conv.point_linear.conv.weight",
        "final_expand_layer.conv.weight",
        "final_expand_layer.bn.bias",
        "feature_mix_layer.conv.weight",
        "classifier.linear.weight",
        "classifier.linear.bias",
    }
    assert expected <= keys
    assert not any(k.startswith("blocks.0.conv.inverted_bottleneck") for k in keys)
    assert "feature_mix_layer.conv.bias" not in keys and not any("feature_mix_layer.bn" in k for k in keys)
    assert not any("shortcut" in k or "global_avg_pool" in k for k in keys)
    # OFA's SE: make_divisible(mid // 4, 8); blocks 5-8 are stage 2 (SE), block 5 expands 24 * 6 = 144
    assert net.blocks[5].conv.depth_conv.se.fc.reduce.out_channels == make_divisible(144 // 4, 8) == 40
    assert net.blocks[6].conv.depth_conv.se.fc.reduce.out_channels == make_divisible(240 // 4, 8) == 64
    bn = net.first_conv.bn
    assert (bn.momentum, bn.eps) == (0.1, 1e-5)


def test_entry_dataclass_is_frozen() -> None:
    e = get_space("compact").fixed_entries(32)[0]
    assert isinstance(e, Entry)
    with pytest.raises(AttributeError):
        e.key = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Arch(ks=(3,), e=(3,), d=(1,), r=32).r = 1  # type: ignore[misc]
