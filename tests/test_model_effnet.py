"""EffNet (Freeman et al. 2018): the block's separable convs and pooling, Table 1's CIFAR-10 network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.models.effnet import EffNetBlock
from test_model_init import check_model


def test_block_layers():
    """Sec. 3: 1x1 conv to out/2 (bottleneck factor 2), depthwise 1x3, 1-D 2x1 max-pool, depthwise 3x1, 2x1 conv
    with a 1-D stride; no residual connection, no group convolution besides the depthwise ones."""
    block = EffNetBlock(32, 64)
    assert block.conv1.kernel_size == (1, 1) and block.conv1.out_channels == 32
    assert block.conv_dw_1x3.kernel_size == (1, 3) and block.conv_dw_1x3.groups == 32
    assert block.pool.kernel_size == (2, 1) and block.pool.stride == (2, 1)
    assert block.conv_dw_3x1.kernel_size == (3, 1) and block.conv_dw_3x1.groups == 32
    assert block.conv_2x1.kernel_size == (2, 1) and block.conv_2x1.stride == (1, 2)
    assert block.conv_2x1.out_channels == 64 and block.conv_2x1.groups == 1
    # the spatially separable depthwise pair: 3 + 3 weights per channel instead of a 3x3's 9
    assert block.conv_dw_1x3.weight.numel() + block.conv_dw_3x1.weight.numel() == 32 * 6
    assert isinstance(block.act1, nn.LeakyReLU)


def test_block_halves_rows_in_the_middle_and_columns_at_the_end():
    block = EffNetBlock(3, 8).eval()
    shapes = {}
    block.pool.register_forward_hook(lambda m, i, o: shapes.__setitem__("pool", tuple(o.shape[2:])))
    block.conv_dw_3x1.register_forward_hook(lambda m, i, o: shapes.__setitem__("dw3x1", tuple(o.shape[2:])))
    with torch.no_grad():
        out = block(torch.randn(1, 3, 32, 32))
    assert shapes == {"pool": (16, 32), "dw3x1": (16, 32)}  # the 3x1 depthwise conv runs at half the rows
    assert out.shape == (1, 8, 16, 16)


def _params_by_hand(widths=(64, 128, 256), factor=2, cin=3, classes=10) -> int:
    total = 0
    for w in widths:
        mid = w // factor
        total += cin * mid + 3 * mid + 3 * mid + 2 * mid * w  # 1x1, dw 1x3, dw 3x1, 2x1 conv (no biases)
        total += 2 * (3 * mid + w)  # four BNs
        cin = w
    return total + 4 * 4 * cin * classes + classes


def test_table_1_cifar_network():
    """Three blocks 32->64, 64->128, 128->256 take the 32x32 image to 4x4x256; then the fc on 4096 features."""
    model = cnnzoo.create_model("effnet").eval()
    assert [b.conv1.out_channels for b in model.blocks] == [32, 64, 128]
    assert [b.conv_2x1.out_channels for b in model.blocks] == [64, 128, 256]
    assert model.fc.in_features == 4 * 4 * 256 and model.num_classes == 10
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 256, 4, 4)
    assert sum(p.numel() for p in model.parameters()) == _params_by_hand() == 151_146
    s = summarize(model, (3, 32, 32))
    assert s.find("pool").output_shape == (1, 256, 4, 4)  # the adaptive pool is the identity at 32x32
    assert s.find("pool").input_shape == (1, 256, 4, 4)


def test_init():
    """He fan-out convs (no biases), BN (1, 0), PyTorch's default fc."""
    torch.manual_seed(0)
    check_model(cnnzoo.create_model("effnet"), conv="he_fan_out", conv_bias=None, linear="torch",
                linear_bias="torch")


def test_options():
    model = cnnzoo.create_model("effnet", widths=(32, 64), bottleneck_factor=4, act_layer="relu")
    assert [b.conv1.out_channels for b in model.blocks] == [8, 16]
    assert sum(p.numel() for p in model.parameters()) == _params_by_hand((32, 64), factor=4)
    assert isinstance(model.blocks[0].act1, nn.ReLU) and model.min_input_size == 4
    with pytest.raises(ValueError, match="bottleneck_factor"):
        cnnzoo.create_model("effnet", bottleneck_factor=3)
    with pytest.raises(ValueError, match="widths"):
        cnnzoo.create_model("effnet", widths=())
