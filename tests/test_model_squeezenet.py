"""SqueezeNet: Table 1's Fire widths and map sizes, Section 5's metaparameters, Section 6's bypasses."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo
from cnnzoo.models.squeezenet import Fire
from test_model_init import assert_const, assert_normal, assert_uniform


def _build(name: str, **opts):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


def _count(name: str, **opts) -> int:
    return sum(p.numel() for p in _build(name, **opts).parameters())


def _fires(model) -> list[Fire]:
    return [m for m in model.features if isinstance(m, Fire)]


# Iandola et al. 2016, Table 1: (s1x1, e1x1, e3x3) of fire2 ... fire9.
TABLE1_FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
                (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_fire_widths_are_table_1s(name):
    fires = _fires(_build(name))
    assert [(f.squeeze.out_channels, f.expand1x1.out_channels, f.expand3x3.out_channels) for f in fires] == TABLE1_FIRES
    assert all(f.squeeze.kernel_size == (1, 1) and f.expand1x1.kernel_size == (1, 1) for f in fires)
    assert all(f.expand3x3.kernel_size == (3, 3) and f.expand3x3.padding == (1, 1) for f in fires)


def test_stems_of_v1_0_and_v1_1():
    v10, v11 = _build("squeezenet1_0").features[0], _build("squeezenet1_1").features[0]
    assert (v10.out_channels, v10.kernel_size, v10.stride) == (96, (7, 7), (2, 2))  # Table 1 conv1
    assert (v11.out_channels, v11.kernel_size, v11.stride) == (64, (3, 3), (2, 2))  # DeepScale v1.1


def test_map_sizes_of_table_1_at_227():
    """Table 1 (227x227 input): conv1 111x111, maxpool1 55x55, maxpool4 27x27, maxpool8 13x13, conv10 13x13x1000."""
    model = _build("squeezenet1_0").eval()
    seen = []
    for i, m in enumerate(model.features):
        if isinstance(m, torch.nn.MaxPool2d) or i == 0:
            m.register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape[1:])))
    model.classifier[1].register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape[1:])))
    model(torch.empty(1, 3, 227, 227, device="meta"))
    assert seen == [(96, 111, 111), (96, 55, 55), (256, 27, 27), (512, 13, 13), (1000, 13, 13)]


def _params_by_hand(stem: int, kernel: int, fires: list[tuple[int, int, int]], classes: int = 1000) -> int:
    """conv1 + every Fire (three convs with biases) + conv10, from the widths alone."""
    total, cin = 3 * stem * kernel * kernel + stem, stem
    for s, e1, e3 in fires:
        total += cin * s + s + s * e1 + e1 + 9 * s * e3 + e3
        cin = e1 + e3
    return total + cin * classes + classes


def _section5_fires(sr: float, pct: float) -> list[tuple[int, int, int]]:
    """Section 5: e_i = 128 + 128 * floor(i / 2), e3x3 = pct * e_i, s1x1 = SR * e_i (i = 0..7)."""
    out = []
    for i in range(8):
        e = 128 + 128 * (i // 2)
        e3 = round(pct * e)
        out.append((round(sr * e), e - e3, e3))
    return out


def test_hand_count_reproduces_the_published_totals():
    assert _params_by_hand(96, 7, TABLE1_FIRES) == 1_248_424  # torchvision's squeezenet1_0
    assert _section5_fires(0.125, 0.5) == TABLE1_FIRES


@pytest.mark.parametrize("sr,pct", [(0.25, 0.5), (0.5, 0.5), (0.75, 0.5), (1.0, 0.5),  # Fig. 2(a): SR sweep
                                    (0.125, 0.25), (0.125, 0.75), (0.125, 0.99)])  # Fig. 2(b): pct_3x3 sweep
def test_section_5_metaparameters(sr, pct):
    model = _build("squeezenet1_0", squeeze_ratio=sr, pct_3x3=pct)
    fires = _section5_fires(sr, pct)
    assert [(f.squeeze.out_channels, f.expand1x1.out_channels, f.expand3x3.out_channels)
            for f in _fires(model)] == fires
    assert sum(p.numel() for p in model.parameters()) == _params_by_hand(96, 7, fires)


def test_larger_squeeze_ratio_means_more_parameters():
    counts = [_count("squeezenet1_0", squeeze_ratio=sr) for sr in (0.125, 0.25, 0.5, 0.75, 1.0)]
    assert counts == sorted(counts) and len(set(counts)) == 5


def test_simple_bypass_adds_the_input_around_fire_3_5_7_9_for_free():
    plain, simple = _build("squeezenet1_0"), _build("squeezenet1_0", bypass="simple")
    assert [i for i, f in enumerate(_fires(simple), start=2) if f.simple_bypass] == [3, 5, 7, 9]  # Section 6
    assert _count("squeezenet1_0", bypass="simple") == _count("squeezenet1_0") == 1_248_424
    assert not any(hasattr(f, "bypass") for f in _fires(simple)) and not any(f.simple_bypass for f in _fires(plain))
    torch.manual_seed(0)
    a, b = Fire(32, 8, 16, 16), Fire(32, 8, 16, 16, bypass="simple")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 32, 5, 5)
    torch.testing.assert_close(b(x), a(x) + x)


def test_complex_bypass_puts_a_1x1_conv_around_fire_2_4_6_8():
    model = _build("squeezenet1_0", bypass="complex")
    convs = {i: f.bypass for i, f in enumerate(_fires(model), start=2) if hasattr(f, "bypass")}
    assert sorted(convs) == [2, 4, 6, 8]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs.values()] == [
        (96, 128, (1, 1)), (128, 256, (1, 1)), (256, 384, (1, 1)), (384, 512, (1, 1))]
    assert [i for i, f in enumerate(_fires(model), start=2) if f.simple_bypass] == [3, 5, 7, 9]
    # Section 6 by hand: 96*128 + 128*256 + 256*384 + 384*512 weights + 128 + 256 + 384 + 512 biases
    assert _count("squeezenet1_0", bypass="complex") - 1_248_424 == 339_968 + 1_280
    # v1.1's fire2 reads conv1's 64 channels
    assert _count("squeezenet1_1", bypass="complex") - 1_235_496 == 64 * 128 + 128 * 256 + 256 * 384 + 384 * 512 + 1_280
    torch.manual_seed(0)
    a, b = Fire(24, 8, 16, 16), Fire(24, 8, 16, 16, bypass="complex")
    b.load_state_dict(a.state_dict(), strict=False)
    x = torch.randn(2, 24, 5, 5)
    torch.testing.assert_close(b(x), a(x) + b.bypass(x))


def test_init_is_torchvisions():
    """torchvision: Kaiming-uniform convs (bound sqrt(6 / fan_in)), conv10 N(0, 0.01), zero biases."""
    torch.manual_seed(0)
    model = cnnzoo.create_model("squeezenet1_1", bypass="complex")
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            if m is model.classifier[1]:
                assert_normal(m.weight, 0.01, name)
            else:
                assert_uniform(m.weight, math.sqrt(6 / m.weight[0].numel()), name)
            assert_const(m.bias, 0.0, name)


def test_head_pre_logits_and_reset():
    model = cnnzoo.create_model("squeezenet1_1", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats, pre_logits=True).shape == (2, 512)
        assert model(x).shape == (2, 7) and (model(x) >= 0).all()  # conv10 -> ReLU -> average: non-negative
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
    assert model.classifier[1].weight.std() < 0.05  # conv10 keeps torchvision's N(0, 0.01) init


@pytest.mark.parametrize("opts,match", [
    ({"bypass": "full"}, "bypass"),
    ({"squeeze_ratio": 0.0}, "squeeze_ratio"),
    ({"squeeze_ratio": 1.5}, "squeeze_ratio"),
    ({"pct_3x3": 1.0}, "pct_3x3"),
    ({"pct_3x3": 0.0}, "pct_3x3"),
    ({"version": "1_2"}, "version"),
    ({"freq": 0}, "freq"),
    ({"drop_rate": 1.0}, "drop_rate"),
])
def test_bad_options_are_clear_errors(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("squeezenet1_0", **opts)
