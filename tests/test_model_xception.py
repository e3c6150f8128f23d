"""Xception (Chollet 2017): Fig. 5's flows, 36 conv layers in 14 modules, separable convs, the map sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.models.xception import Block, SeparableConv2d
from test_model_init import check_model


def _build(**opts):
    with torch.device("meta"):
        return cnnzoo.create_model("xception", **opts)


def test_36_conv_layers_in_14_modules():
    """Sec. 3: 36 convolutional layers (shortcut 1x1 convs aside) in 14 modules, all but the first and last with
    residual connections: conv1+conv2, 3 entry-flow modules, 8 middle-flow modules, 1 exit module, conv3+conv4."""
    model = _build()
    separable = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert len(separable) + 2 == 36  # + conv1, conv2
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert len(blocks) == 12 and 1 + len(blocks) + 1 == 14
    assert [b.skip is None for b in blocks] == [False] * 3 + [True] * 8 + [False]  # identity in the middle flow


def test_flows_of_figure_5():
    model = _build()
    widths = [m.pointwise.out_channels for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert widths == [128, 128, 256, 256, 728, 728] + [728] * 24 + [728, 1024, 1536, 2048]
    assert (model.conv1.out_channels, model.conv1.stride, model.conv2.out_channels) == (32, (2, 2), 64)
    for b in [model.block1, model.block2, model.block3, model.block12]:  # 1x1 stride-2 conv shortcut + max-pool
        assert b.skip.kernel_size == (1, 1) and b.skip.stride == (2, 2)
        assert isinstance(b.rep[-1], nn.MaxPool2d) and b.rep[-1].kernel_size == 3
    assert not isinstance(model.block1.rep[0], nn.ReLU) and isinstance(model.block2.rep[0], nn.ReLU)


def test_separable_conv_is_depthwise_then_pointwise_without_a_nonlinearity():
    conv = SeparableConv2d(8, 16)
    assert conv.conv1.groups == 8 and conv.conv1.kernel_size == (3, 3) and conv.pointwise.kernel_size == (1, 1)
    assert [type(m) for m in conv.children()] == [nn.Conv2d, nn.Conv2d]  # Sec. 4.7 / Fig. 10: no ReLU between
    assert sum(p.numel() for p in conv.parameters()) == 8 * 9 + 8 * 16  # vs 8 * 16 * 9 for a full 3x3 conv


def test_map_sizes_at_299():
    """Fig. 5: 299x299x3 images, 19x19x728 feature maps through the middle flow, 2048 features at the end."""
    model = _build().eval()
    seen = {}
    for name in ("act2", "block1", "block2", "block3", "block11", "block12", "act4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, tuple(o.shape[1:])))
    model(torch.empty(1, 3, 299, 299, device="meta"))
    assert seen == {"act2": (64, 147, 147), "block1": (128, 74, 74), "block2": (256, 37, 37),
                    "block3": (728, 19, 19), "block11": (728, 19, 19), "block12": (1024, 10, 10),
                    "act4": (2048, 10, 10)}


def test_middle_flow_repeats():
    per_module = 3 * (728 * 9 + 728 * 728 + 2 * 728)  # three separable 728 convs + BN, by hand
    base = sum(p.numel() for p in _build().parameters())
    assert base == 22_855_952
    assert sum(p.numel() for p in _build(middle_blocks=4).parameters()) == base - 4 * per_module
    model = cnnzoo.create_model("xception", middle_blocks=0, num_classes=3).eval()
    assert model.feature_info[3]["module"] == "block3"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_residual_adds_the_shortcut():
    torch.manual_seed(0)
    block = Block(16, 16, reps=3).eval()
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.rep(x.clone()) + x)


def test_init_is_timms():
    """timm's legacy_xception: He fan-out convs (no biases), BN (1, 0), PyTorch's default fc."""
    torch.manual_seed(0)
    check_model(cnnzoo.create_model("xception", middle_blocks=1), conv="he_fan_out", conv_bias=None, linear="torch",
                linear_bias="torch")


@pytest.mark.parametrize("opts,match", [({"middle_blocks": -1}, "middle_blocks"), ({"drop_rate": 1.0}, "drop_rate")])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("xception", **opts)
