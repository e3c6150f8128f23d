"""Segmentation networks on a zoo backbone (issue 25, "Every encoder is a zoo network through the features API"):
``unet_resnet34`` (segmentation_models_pytorch's Unet layout on the zoo's ResNet-34) and ``backbone=`` for it, and
the ``backbone_layers`` option of the torchvision ResNet FCN / DeepLab v3.

Expected counts are derived here from the ResNet paper's Table 1 (He et al. 2016, the 34-layer column: conv1 7x7/64,
then [3x3, 64; 3x3, 64] x 3, [3x3, 128] x2 x 4, [3x3, 256] x2 x 6, [3x3, 512] x2 x 3, projection shortcuts (1x1 + BN)
where the width changes, BN after every convolution) and from smp's decoder layout (two 3x3 conv (no bias) + BN per
block, decoder channels 256, 128, 64, 32, 16; skips of 256, 128, 64, 64 channels; a 3x3 head with bias), not from the
module under test.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from cnnzoo import create_model
from cnnzoo.segmentation import create_segmenter
from cnnzoo.segmentation.models.unet import unet_backbones


def _bn(c: int) -> int:
    return 2 * c  # scale and shift


def resnet34_encoder_count(in_channels: int = 3) -> int:
    """ResNet-34 without its fc, from Table 1."""
    total = 7 * 7 * in_channels * 64 + _bn(64)  # conv1 + bn1
    c_in = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            total += 9 * c_in * width + _bn(width) + 9 * width * width + _bn(width)
            if c_in != width:  # the stage's first block projects its shortcut (option B): 1x1 conv + BN
                total += c_in * width + _bn(width)
            c_in = width
    return total


def smp_decoder_count(num_classes: int) -> int:
    ins, skips, outs = (512, 256, 128, 64, 32), (256, 128, 64, 64, 0), (256, 128, 64, 32, 16)
    total = sum(9 * (i + s) * o + _bn(o) + 9 * o * o + _bn(o) for i, s, o in zip(ins, skips, outs))
    return total + 9 * 16 * num_classes + num_classes  # segmentation head 3x3 with bias


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def gray_net():
    return create_segmenter("unet_resnet34", in_channels=1, num_classes=11).eval()


def test_resnet34_encoder_count_from_the_paper_table():
    assert resnet34_encoder_count() == 21_284_672  # resnet34's 21,797,672 less fc 512 * 1000 + 1000
    assert _count(create_model("resnet34")) - (512 * 1000 + 1000) == 21_284_672


@pytest.mark.parametrize("num_classes", [1, 11])
def test_unet_resnet34_parameter_count(num_classes):
    net = create_segmenter("unet_resnet34", num_classes=num_classes)
    assert _count(net.encoder) == resnet34_encoder_count()
    assert _count(net) == resnet34_encoder_count() + smp_decoder_count(num_classes)
    if num_classes == 1:
        assert _count(net) == 24_436_369  # segmentation_models_pytorch's Unet("resnet34", classes=1)


def test_unet_resnet34_encoder_maps_and_keys(gray_net):
    net = gray_net
    info = net.encoder.feature_info
    assert info.reduction() == [2, 4, 8, 16, 32]  # the stem's ReLU is the reduction-2 skip, as smp's encoder
    assert info.channels() == [64, 64, 128, 256, 512]
    keys = net.state_dict()
    assert "encoder.conv1.weight" in keys and "encoder.layer4.2.bn2.bias" in keys
    assert not any(k.startswith("encoder.fc") for k in keys)
    assert keys["encoder.conv1.weight"].shape == (64, 1, 7, 7)
    assert keys["decoder.blocks.3.conv1.0.weight"].shape == (32, 64 + 64, 3, 3)  # [upsampled, stem skip]
    assert keys["segmentation_head.0.weight"].shape == (11, 16, 3, 3)


@pytest.mark.parametrize("size", [(64, 64), (65, 47), (1, 1)])
def test_unet_resnet34_output_has_the_input_size(gray_net, size):
    net = gray_net
    with torch.no_grad():
        y = net(torch.randn(2, 1, *size))
    assert y.shape == (2, 11, *size)
    assert net.output_size(size[0]) == size[0]


def test_decoder_upsampling_at_multiples_of_32_is_nearest_x2(gray_net):
    # for sizes that are multiples of 32 the block's "upsample to the skip's size" is smp's nearest x2
    block = gray_net.decoder.blocks[0]
    x, skip = torch.randn(1, 512, 2, 3), torch.randn(1, 256, 4, 6)
    ref = block.conv2(block.conv1(torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], 1)))
    torch.testing.assert_close(block(x, skip.shape[-2:], skip), ref)


def test_other_backbone_through_the_features_api():
    net = create_segmenter("unet_resnet34", backbone="mobilenet_v2", in_channels=1, num_classes=3).eval()
    assert net.encoder.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert net(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("backbone, missing", [("alexnet", "[4]"), ("vit_tiny_patch4_32", "[8, 16, 32]")])
def test_backbone_without_the_needed_reductions_is_refused(backbone, missing):
    pattern = rf"needs one at each of 4, 8, 16 and 32.*missing {re.escape(missing)}.*resnet34"
    with pytest.raises(ValueError, match=pattern) as e:
        create_segmenter("unet_resnet34", backbone=backbone)
    assert repr(backbone) in str(e.value)


def test_bad_decoder_channels_and_unknown_backbone():
    with pytest.raises(ValueError, match="decoder_channels must be 5 integers"):
        create_segmenter("unet_resnet34", decoder_channels=[256, 128])
    with pytest.raises(ValueError, match="unknown network 'resnet35'"):
        create_segmenter("unet_resnet34", backbone="resnet35")


def test_unet_backbones_filters_by_reductions():
    assert unet_backbones(["resnet18", "alexnet", "vgg11", "vit_b_16", "lstm_mnist"]) == ["resnet18", "vgg11"]


def test_backbone_weights_load_into_the_encoder(tmp_path):
    torch.manual_seed(1)
    resnet = create_model("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), path)
    net = create_segmenter("unet_resnet34", backbone="resnet18", backbone_weights=str(path))
    mine = net.encoder.state_dict()
    for key, value in resnet.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(mine[key], value)
    # one input channel: smp's patch_first_conv sums the RGB filters
    gray = create_segmenter("unet_resnet34", backbone="resnet18", backbone_weights=str(path), in_channels=1,
                            num_classes=11)
    torch.testing.assert_close(gray.encoder.conv1.weight, resnet.conv1.weight.sum(1, keepdim=True))
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 11, 32, 32)


@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_backbone_layers_option(name):
    net = create_segmenter(name, in_channels=1, num_classes=11, backbone_layers=[1, 1, 1, 1])
    assert [len(getattr(net.backbone, f"layer{i}")) for i in (1, 2, 3, 4)] == [1, 1, 1, 1]
    out, aux = net.train()(torch.randn(2, 1, 32, 32))
    assert out.shape == aux.shape == (2, 11, 32, 32)
    with pytest.raises(ValueError, match="backbone_layers must be 4 integers"):
        create_segmenter(name, backbone_layers=[1, 1])
    with pytest.raises(ValueError, match=r"fits only backbone_layers=\[3, 4, 6, 3\]"):
        create_segmenter(name, backbone_layers=[1, 1, 1, 1], backbone_weights="torchvision")
