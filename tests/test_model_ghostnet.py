"""GhostNet (Han et al. 2020): the Ghost module, the Ghost bottleneck, Table 1, the width multiplier."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo
from cnnzoo.layers import SEModule
from cnnzoo.models.ghostnet import GhostBottleneck, GhostModule
from test_model_init import check_model


def _build(**opts):
    with torch.device("meta"):
        return cnnzoo.create_model("ghostnet_100", **opts)


# Han et al. 2020, Table 1: (#exp, #out, SE, stride) of the sixteen Ghost bottlenecks (kernel 3 or 5 aside).
TABLE1 = [(16, 16, False, 1), (48, 24, False, 2), (72, 24, False, 1), (72, 40, True, 2), (120, 40, True, 1),
          (240, 80, False, 2), (200, 80, False, 1), (184, 80, False, 1), (184, 80, False, 1), (480, 112, True, 1),
          (672, 112, True, 1), (672, 160, True, 2), (960, 160, False, 1), (960, 160, True, 1), (960, 160, False, 1),
          (960, 160, True, 1)]


def test_ghost_module_makes_intrinsic_maps_and_cheap_ghosts():
    """Sec. 3.1, s = 2, d = 3: m = n/s intrinsic maps from a 1x1 conv, the other n - m from a 3x3 depthwise conv."""
    module = GhostModule(40, 120)
    primary, cheap = module.primary_conv[0], module.cheap_operation[0]
    assert (primary.in_channels, primary.out_channels, primary.kernel_size) == (40, 60, (1, 1))
    assert (cheap.in_channels, cheap.out_channels, cheap.groups, cheap.kernel_size) == (60, 60, 60, (3, 3))
    # eq. 4-5: about s times cheaper than the ordinary 1x1 conv (40 * 120 weights): 40 * 60 + 60 * 9
    assert primary.weight.numel() + cheap.weight.numel() == 40 * 60 + 60 * 9
    x = torch.randn(2, 40, 5, 5)
    module.eval()
    with torch.no_grad():
        y = module(x)
        intrinsic = module.primary_conv(x)
        assert y.shape == (2, 120, 5, 5)
        torch.testing.assert_close(y[:, :60], intrinsic)  # the identity "ghost" keeps the intrinsic maps
        torch.testing.assert_close(y[:, 60:], module.cheap_operation(intrinsic))


def test_odd_widths_keep_the_first_n_maps():
    module = GhostModule(8, 7)  # ceil(7 / 2) = 4 intrinsic maps, 4 ghosts, 7 kept
    assert module.primary_conv[0].out_channels == math.ceil(7 / 2)
    assert module(torch.randn(1, 8, 3, 3)).shape == (1, 7, 3, 3)
    assert GhostModule(8, 9, ratio=3).cheap_operation[0].out_channels == 2 * 3  # (s - 1) m ghosts


def test_ghost_bottleneck_of_figure_3():
    down = GhostBottleneck(24, 72, 40, kernel_size=5, stride=2, se_ratio=0.25)
    assert down.conv_dw.stride == (2, 2) and down.conv_dw.groups == 72 and down.conv_dw.kernel_size == (5, 5)
    assert isinstance(down.se, SEModule) and down.se.fc1.out_channels == 20  # 72 / 4 = 18, rounded to 4: 20
    assert len(down.shortcut) == 4  # depthwise + BN, pointwise + BN on the shortcut
    assert not isinstance(down.ghost2.primary_conv[-1], torch.nn.ReLU)  # the projection is linear
    assert isinstance(down.ghost1.primary_conv[-1], torch.nn.ReLU)
    same = GhostBottleneck(16, 48, 16)
    assert same.conv_dw is None and len(same.shortcut) == 0 and same.se is None
    x = torch.randn(2, 16, 6, 6)
    same.eval()
    with torch.no_grad():
        torch.testing.assert_close(same(x), same.ghost2(same.ghost1(x)) + x)  # identity shortcut


def test_table_1():
    model = _build()
    units = [u for stage in model.blocks[:-1] for u in stage]
    got = [(u.ghost1.out_channels, u.ghost2.out_channels, u.se is not None, 2 if u.conv_dw is not None else 1)
           for u in units]
    assert got == TABLE1
    assert model.conv_stem.out_channels == 16 and model.conv_stem.stride == (2, 2)
    assert model.blocks[-1][0].conv.out_channels == 960 and model.conv_head.out_channels == 1280
    assert model.head_hidden_size == 1280 and model.num_features == 960
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 5.2  # Table 7: 5.2M


@pytest.mark.parametrize("width", [0.5, 1.3])
def test_width_multiplier_scales_everything_but_the_head(width):
    model = _build(width_mult=width)

    def rounded(c):  # to a multiple of 4, never 10% below (timm / the official code)
        r = max(4, int(c * width + 2) // 4 * 4)
        return r + 4 if r < 0.9 * c * width else r

    units = [u for stage in model.blocks[:-1] for u in stage]
    assert [(u.ghost1.out_channels, u.ghost2.out_channels) for u in units] == [
        (rounded(e), rounded(o)) for e, o, _, _ in TABLE1]
    assert model.conv_head.out_channels == 1280


def test_head_runs_pool_then_conv_1280():
    model = cnnzoo.create_model("ghostnet_100", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 960, 2, 2)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, 1280) and (pre >= 0).all()  # ReLU after the 1280 conv
        torch.testing.assert_close(model.forward_head(feats), model.classifier(pre))


def test_init_is_timms():
    """timm's GhostNet has no init of its own: PyTorch's defaults (the SE and head convs have biases)."""
    torch.manual_seed(0)
    check_model(cnnzoo.create_model("ghostnet_100", width_mult=0.5), conv="torch", conv_bias="torch",
                linear="torch", linear_bias="torch")


@pytest.mark.parametrize("opts,match", [({"width_mult": 0}, "width_mult"), ({"ratio": 1}, "ratio"),
                                        ({"dw_size": 2}, "dw_size"), ({"drop_rate": 1.0}, "drop_rate")])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("ghostnet_100", **opts)
