"""CBAM and ECA (cnnzoo.layers.attention): what the papers define them to compute."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.layers import ATTN_LAYERS, get_attn
from cnnzoo.layers.attention import CBAM, ChannelAttention, ECAModule, SpatialAttention, eca_kernel_size


def test_attn_factory_lists_cbam_and_eca():
    assert get_attn("cbam") is CBAM and get_attn("eca") is ECAModule
    assert {"se", "cbam", "eca"} <= set(ATTN_LAYERS)
    with pytest.raises(ValueError, match="cbam.*eca|eca.*cbam"):
        get_attn("nonlocal")


def test_cbam_channel_attention_shares_one_mlp_over_avg_and_max():
    ca = ChannelAttention(32, reduction=16)
    assert ca.fc1.in_channels == 32 and ca.fc1.out_channels == 2 and ca.fc2.out_channels == 32
    x = torch.randn(2, 32, 5, 5)
    # eq. 2: M_c = sigmoid(W1 relu(W0 F_avg + b0) + b1 + W1 relu(W0 F_max + b0) + b1), the same W0, W1 for both
    w0, b0 = ca.fc1.weight.view(2, 32), ca.fc1.bias  # (C/r, C)
    w1, b1 = ca.fc2.weight.view(32, 2), ca.fc2.bias  # (C, C/r)
    f_avg, f_max = x.sum((2, 3)) / 25, x.flatten(2).max(2).values  # (B, C)

    def mlp(f):
        return torch.relu(f @ w0.T + b0) @ w1.T + b1

    gate = 1 / (1 + torch.exp(-(mlp(f_avg) + mlp(f_max))))
    assert torch.allclose(ca(x), x * gate[:, :, None, None], atol=1e-6)
    # The max descriptor matters: raising one pixel and lowering another keeps the average but changes the gate.
    for fc in (ca.fc1, ca.fc2):
        torch.nn.init.constant_(fc.weight, 0.1)
        torch.nn.init.zeros_(fc.bias)
    x2 = x.clone()
    x2[:, :, 0, 0] += 10.0
    x2[:, :, 1, 1] -= 10.0
    assert torch.allclose(x2.mean((2, 3)), x.mean((2, 3)), atol=1e-5)
    assert not torch.allclose(ca(x2)[:, :, 2:, 2:], ca(x)[:, :, 2:, 2:], atol=1e-4)


def test_cbam_spatial_attention_is_a_7x7_conv_over_channel_mean_and_max():
    sa = SpatialAttention()
    assert tuple(sa.conv.weight.shape) == (1, 2, 7, 7) and sa.conv.bias is None
    assert sum(p.numel() for p in sa.parameters()) == 98  # BN-free (paper eq. 3)
    x = torch.randn(2, 16, 9, 9)
    desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    gate = torch.sigmoid(torch.nn.functional.conv2d(desc, sa.conv.weight, padding=3))
    assert torch.allclose(sa(x), x * gate, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(6)


def test_cbam_applies_channel_then_spatial():
    cbam = CBAM(64)
    x = torch.randn(1, 64, 6, 6)
    assert torch.allclose(cbam(x), cbam.spatial(cbam.channel(x)), atol=1e-6)
    se_like = 2 * 64 * 4 + 4 + 64  # the shared MLP, r=16, with biases
    assert sum(p.numel() for p in cbam.parameters()) == se_like + 98


@pytest.mark.parametrize("channels,k", [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_size_formula_and_parameter_count(channels, k):
    assert eca_kernel_size(channels) == k
    eca = ECAModule(channels)
    assert eca.k_size == k
    assert sum(p.numel() for p in eca.parameters()) == k  # one 1-D kernel, no bias


def test_eca_is_a_1d_conv_across_channels():
    eca = ECAModule(16, k_size=3)
    x = torch.randn(2, 16, 4, 4)
    s = x.mean((2, 3))
    w = eca.conv.weight.view(3)
    padded = torch.nn.functional.pad(s, (1, 1))
    mixed = w[0] * padded[:, :-2] + w[1] * padded[:, 1:-1] + w[2] * padded[:, 2:]  # neighbours c-1, c, c+1
    assert torch.allclose(eca(x), x * torch.sigmoid(mixed)[:, :, None, None], atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        ECAModule(16, k_size=4)
