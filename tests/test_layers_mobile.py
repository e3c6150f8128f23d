"""The mobile building blocks (cnnzoo.layers.mobile): make_divisible, depthwise separable conv, inverted residual."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo.analysis import summarize
from cnnzoo.layers import (
    DepthwiseSeparableConv,
    HardSigmoid,
    HardSigmoidKeras,
    InvertedResidual,
    SEModule,
    get_act,
    make_divisible,
    strided_feature_info,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("value,divisor,expected", [
    (24, 8, 24),  # MobileNet v1 0.75: 32 * 0.75, already a multiple
    (17.6, 8, 16),  # EfficientNet phi=1: 16 * 1.1 rounds down (16 >= 0.9 * 17.6)
    (123.2, 8, 120),  # 112 * 1.1
    (211.2, 8, 208),  # 192 * 1.1
    (12, 8, 16),  # ties round up (int(12 + 4) // 8 * 8)
    (3, 8, 8),  # never below the divisor
    (20, 16, 32),  # nearest is 16, 20% below 20: bumped one divisor up
    (18, 8, 24),  # MobileNet v3 SE squeeze of 72 channels: 16 is more than 10% below 18
])
def test_make_divisible_rounds_as_the_tf_mobilenet_code(value, divisor, expected):
    assert make_divisible(value, divisor) == expected


def test_make_divisible_rejects_nonsense():
    with pytest.raises(ValueError, match="positive"):
        make_divisible(0)
    with pytest.raises(ValueError, match="divisor"):
        make_divisible(16, 0)


def test_depthwise_separable_cost_is_1_over_n_plus_1_over_k2_of_a_full_conv():
    """MobileNet v1 eq. 5: (k^2 M D^2 + M N D^2) / (k^2 M N D^2) = 1/N + 1/k^2, and the parameters likewise."""
    m, n, k, d = 32, 64, 3, 14
    with torch.device("meta"):
        sep = DepthwiseSeparableConv(m, n, k)
        full = nn.Conv2d(m, n, k, padding=1, bias=False)
    sep_macs = summarize(sep, (m, d, d)).macs
    assert sep_macs == k * k * m * d * d + m * n * d * d
    assert sep_macs / summarize(full, (m, d, d)).macs == pytest.approx(1 / n + 1 / k**2, rel=1e-12)
    assert n_params(sep) == k * k * m + m * n + 2 * m + 2 * n  # depthwise, pointwise, two BNs
    assert sep.conv_dw.groups == m and sep.conv_pw.kernel_size == (1, 1)
    assert set(sep.state_dict()) >= {"conv_dw.weight", "bn1.running_var", "conv_pw.weight", "bn2.bias"}  # timm's


def test_depthwise_separable_activation_and_shortcut_options():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    relu = DepthwiseSeparableConv(8, 8).eval()
    assert (relu(x) >= 0).all()  # BN + ReLU after the pointwise conv (Fig. 3 right)
    linear = DepthwiseSeparableConv(8, 8, pw_act=False).eval()
    assert (linear(x) < 0).any()
    res = DepthwiseSeparableConv(8, 8, residual=True).eval()
    plain = DepthwiseSeparableConv(8, 8).eval()
    plain.load_state_dict(res.state_dict())
    with torch.no_grad():
        assert torch.allclose(res(x), x + plain(x))
    assert not DepthwiseSeparableConv(8, 8, stride=2, residual=True).has_residual
    assert not DepthwiseSeparableConv(8, 16, residual=True).has_residual


def _mbconv(attn=None, drop_path_rate=0.0) -> InvertedResidual:
    return InvertedResidual(16, 16, 96, 5, attn_layer=attn, act_layer="silu", drop_path_rate=drop_path_rate)


def test_inverted_residual_has_torchvisions_keys_and_a_linear_bottleneck():
    se = _mbconv(attn=lambda c: SEModule(c, hidden_channels=4, act_layer="silu"))
    keys = set(se.state_dict())
    # torchvision's MBConv / MobileNetV3 InvertedResidual: expand, depthwise, SE, project
    assert {"block.0.0.weight", "block.0.1.running_mean", "block.1.0.weight", "block.2.fc1.weight",
            "block.2.fc2.bias", "block.3.0.weight", "block.3.1.weight"} <= keys
    assert tuple(se.block[0][0].weight.shape) == (96, 16, 1, 1)  # expand 1x1
    assert se.block[1][0].groups == 96 and se.block[1][0].kernel_size == (5, 5)  # depthwise kxk
    assert tuple(se.block[2].fc1.weight.shape) == (4, 96, 1, 1)
    assert len(se.block[3]) == 2  # projection: conv + BN, no activation (Sec. 3.2, linear bottleneck)
    # no expansion conv when the expanded width is the input width (MobileNet v2's first block, B0's stage 1)
    flat = InvertedResidual(32, 16, 32)
    assert tuple(flat.block[0][0].weight.shape) == (32, 1, 3, 3) and len(flat.block) == 2
    torch.manual_seed(0)
    y = flat.eval()(torch.randn(2, 32, 5, 5))
    assert (y < 0).any()  # linear output


def test_inverted_residual_adds_the_input_only_when_shapes_allow():
    torch.manual_seed(0)
    blk = _mbconv().eval()
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        assert torch.allclose(blk(x), x + blk.block(x))
    assert blk.use_res_connect
    assert not InvertedResidual(16, 16, 96, stride=2).use_res_connect
    assert not InvertedResidual(16, 24, 96).use_res_connect
    assert not InvertedResidual(16, 16, 96, residual=False).use_res_connect
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        InvertedResidual(16, 16, 96, stride=3)


def test_inverted_residual_stochastic_depth_drops_whole_branches_in_training_only():
    torch.manual_seed(0)
    blk = _mbconv(drop_path_rate=0.5)
    x = torch.randn(64, 16, 4, 4)
    blk.train()
    branch = blk.block(x).detach()
    torch.manual_seed(1)
    y = blk(x).detach()
    dropped = [(y[i] - x[i]).abs().max() < 1e-6 for i in range(64)]
    assert 10 < sum(dropped) < 54  # about half the samples keep only the shortcut
    kept = [i for i, d in enumerate(dropped) if not d]
    # the survivors' branch is scaled by 1 / (1 - p); BN statistics are the same batch's in both calls
    assert torch.allclose(y[kept], x[kept] + 2 * branch[kept], atol=1e-5)
    blk.eval()
    with torch.no_grad():
        assert torch.equal(blk(x), blk(x))


def test_se_squeeze_width_and_gate_are_the_familys():
    se = SEModule(72, hidden_channels=make_divisible(72 // 4), act_layer="relu", gate_layer="hard_sigmoid")
    assert se.fc1.out_channels == 24 and isinstance(se.gate, HardSigmoid)
    assert SEModule(64).fc1.out_channels == 4  # the default stays C / 16
    with pytest.raises(ValueError, match="hidden_channels"):
        SEModule(8, hidden_channels=0)


def test_keras_hard_sigmoid_is_the_piecewise_function_of_note_003():
    x = torch.linspace(-5, 5, 1001)
    expected = torch.where(x <= -2.5, torch.zeros_like(x), torch.where(x >= 2.5, torch.ones_like(x), 0.2 * x + 0.5))
    assert torch.allclose(get_act("hard_sigmoid_keras")(x), expected, atol=1e-6)
    assert isinstance(get_act("hard_sigmoid_keras"), HardSigmoidKeras)
    # not MobileNetV3's h-sigmoid ReLU6(x + 3) / 6: at x = 1 it is 0.7, not 2/3; they agree only at 0 and far out
    one = torch.tensor([1.0])
    assert get_act("hard_sigmoid_keras")(one).item() == pytest.approx(0.7)
    assert get_act("hard_sigmoid")(one).item() == pytest.approx(4 / 6)


def test_strided_feature_info_keeps_the_last_module_of_each_reduction():
    chain = [("stem", 8, 2), ("a", 16, 1), ("b", 24, 2), ("c", 24, 1), ("d", 40, 2), ("head", 80, 1)]
    assert strided_feature_info(chain) == [
        {"num_chs": 16, "reduction": 2, "module": "a"},
        {"num_chs": 24, "reduction": 4, "module": "c"},
        {"num_chs": 80, "reduction": 8, "module": "head"},
    ]
