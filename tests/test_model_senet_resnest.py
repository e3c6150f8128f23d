"""What is specific to SENet-154 and ResNeSt."""

from __future__ import annotations

import torch

import cnnzoo
from cnnzoo.models.resnest import ResNestBottleneck, SplitAttn, _attn_channels
from cnnzoo.models.senet import SEBottleneck, _from_legacy_resnet


def test_split_attention_mixes_splits_with_a_softmax_over_radix():
    sa = SplitAttn(8, radix=2).eval()
    x = torch.randn(2, 8, 5, 5)
    # With fc2 zeroed the attention logits are equal, so the r-softmax gives 1/2 to each split.
    torch.nn.init.zeros_(sa.fc2.weight)
    torch.nn.init.zeros_(sa.fc2.bias)
    splits = sa.act0(sa.bn0(sa.conv(x))).reshape(2, 2, 8, 5, 5)
    assert torch.allclose(sa(x), splits.mean(1), atol=1e-6)


def test_split_attention_width_rule():
    assert _attn_channels(64, 2) == 32 and _attn_channels(128, 2) == 64 and _attn_channels(16, 2) == 32


def test_resnest_downsamples_by_average_pooling_after_attention():
    block = ResNestBottleneck(64, 32, stride=2, downsample=torch.nn.Sequential(
        torch.nn.AvgPool2d(2, 2), torch.nn.Conv2d(64, 128, 1, bias=False), torch.nn.BatchNorm2d(128)))
    assert block.conv2.conv.stride == (1, 1)  # the split-attention conv keeps the resolution
    assert isinstance(block.avd_last, torch.nn.AvgPool2d) and block.avd_last.stride == 2
    assert block.eval()(torch.randn(1, 64, 8, 8)).shape == (1, 128, 4, 4)


def test_senet154_block_widths_and_groups():
    m = cnnzoo.create_model("senet154", num_classes=10)
    blk = m.layer1[0]
    assert isinstance(blk, SEBottleneck)
    assert (blk.conv1.out_channels, blk.conv2.out_channels, blk.conv2.groups) == (128, 256, 64)
    assert m.layer2[0].downsample[0].kernel_size == (3, 3)  # 3x3 stride-2 projections (section 6.1)
    assert m.layer1[0].downsample[0].kernel_size == (1, 1)
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    assert m.head.drop.p == 0.2


def test_legacy_se_layout_is_renamed_and_native_left_alone():
    legacy = {"layer0.conv1.weight": 1, "layer0.bn1.weight": 2, "layer1.0.se_module.fc1.weight": 3,
              "last_linear.bias": 4}
    assert _from_legacy_resnet(legacy) == {"conv1.weight": 1, "bn1.weight": 2, "layer1.0.se.fc1.weight": 3,
                                           "fc.bias": 4}
    native = {"conv1.weight": 1, "layer1.0.se.fc1.weight": 3, "fc.bias": 4}
    assert _from_legacy_resnet(native) == native
