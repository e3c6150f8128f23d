"""DeepLab v3 on a dilated ResNet, as torchvision ships it (``deeplabv3_resnet50``, ``deeplabv3_resnet101``).
L.-C. Chen, G. Papandreou, F. Schroff, H. Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation",
arXiv 2017 (https://arxiv.org/abs/1706.05587); the layout is torchvision's ``torchvision.models.segmentation.
deeplabv3``.

Key ideas
    Atrous (dilated) convolution enlarges a filter's field of view without more parameters or lower resolution, so
    a classification ResNet keeps dense features: replacing the stride of the last block(s) by dilation gives an
    ``output_stride`` (input / feature resolution) of 16 or 8 instead of 32 (Sec. 3.1, 3.2). Atrous Spatial
    Pyramid Pooling (ASPP, from DeepLab v2) samples the features at several rates in parallel; v3 adds batch
    normalisation to it and, because a 3x3 filter with a rate close to the map size degenerates to its centre tap
    (Sec. 3.3, Fig. 4), image-level features: global average pooling, a 1x1 conv with 256 filters and BN,
    bilinearly upsampled back. The ASPP branches (one 1x1 and three 3x3 convs with rates (6, 12, 18) at output
    stride 16, doubled at 8, all 256 filters with BN, plus the image pooling) are concatenated and projected by a
    1x1 conv (256, BN) before the final 1x1 classifier. Multi-grid (Sec. 3.2) multiplies block4's three units'
    rates by unit rates such as (1, 2, 4).

Which table the code reproduces
    Not a table of the paper: torchvision's ``deeplabv3_resnet50`` / ``deeplabv3_resnet101`` (torchvision 0.29),
    key for key. ``backbone``: the zoo's resnet50/101 at ``output_stride=8`` without fc (as ``fcn_resnet``);
    ``classifier`` = torchvision's ``DeepLabHead(2048, classes)``: ``classifier.0`` the ASPP (``convs.0`` 1x1
    2048 -> 256 + BN + ReLU; ``convs.1-3`` 3x3 rates 12, 24, 36 + BN + ReLU; ``convs.4`` global pooling, 1x1,
    BN, ReLU, bilinear upsampling; ``project`` 1x1 1280 -> 256 + BN + ReLU + Dropout(0.5)), then 3x3 conv 256
    (``classifier.1``, no bias), BN (2), ReLU (3), 1x1 conv -> classes (4); ``aux_classifier``: FCNHead(1024) on
    layer3, as FCN. Parameters for 21 classes (ResNet-50): backbone 23,508,032; ASPP 2 * (2048 * 256 + 512)
    + 3 * (2048 * 256 * 9 + 512) + 1280 * 256 + 512 = 15,535,104; 3x3 conv + BN 256 * 256 * 9 + 512 = 590,336;
    1x1 256 * 21 + 21 = 5,397; aux 2,365,205; total 42,004,074, torchvision's count.

Training setup in the paper
    Sec. 4: ImageNet-pretrained ResNet, "poly" learning rate (initial 0.007, power 0.9), crop 513 x 513, batch 16
    with BN trained (decay 0.9997) at output stride 16 for 30K iterations on the augmented PASCAL VOC 2012 train
    set, then BN frozen and output stride 8 on the official trainval for another 30K at lr 0.001; random scaling
    0.5-2.0 and flips; the label map is upsampled, not the ground truth downsampled (Sec. 4.1). Inference at output
    stride 8 with multi-scale inputs (0.5-1.75) and flips: 85.7% mIOU on VOC 2012 test (ResNet-101 pretrained on
    ImageNet and COCO; 86.9% pretrained on JFT-300M). torchvision's weights come from its reference script (see fcn_resnet: COCO's 20
    VOC categories, SGD lr 0.02, poly, 30 epochs, aux loss 0.5).

This implementation
    torchvision's network, with its departures from the paper: output stride 8 always (the paper trains at 16),
    rates 12, 24, 36 (the paper's (6, 12, 18) doubled, its output-stride-8 setting), no multi-grid (block4's
    three units use dilation 4 throughout, not 4 * (1, 2, 4)), a 3x3 conv-BN-ReLU between the ASPP and the
    classifier (not in the paper), dropout 0.5 after the projection, an auxiliary FCNHead on layer3, and a single
    bilinear resize (``align_corners=False``) of the logits to the input. ``create_segmenter(name, weights=FILE)``
    loads a torchvision checkpoint with no options and gives torchvision's ``out`` and ``aux`` to float tolerance
    (tests/test_segmentation_torchvision.py). Output convention, ``forward_dict`` and the options
    (``num_classes=21``, ``aux_loss=True``, ``in_channels``, ``backbone_weights``, ``backbone_layers``) as
    ``fcn_resnet``. Note that
    the image-pooling branch has a BN on a 1x1 map: training needs a batch of at least 2, as in torchvision.
    digits-segmentation recipe: fcn_resnet's (``backbone_layers=[1, 1, 1, 1]``, Adam 1e-3, 2 epochs of batch 16,
    CE(out) + 0.5 CE(aux)). Measured (seed 0, one thread, a loaded shared machine; test split of 200 canvases):
    deeplabv3_resnet50 mean IU 0.217, pixel accuracy 0.954, 263 CPU s of training (the ASPP at 1/8 costs more
    than FCN's head); deeplabv3_resnet101 is the very same network and weights under this recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Counterpart, Paper
from ..registry import register_segmenter
from .fcn_resnet import AUX_WEIGHT, DIGITS_RECIPE, DilatedResNetSegmenter

__all__ = ["ASPP", "DeepLabHead", "DeepLabV3", "DeepLabV3ResNet50", "DeepLabV3ResNet101", "deeplabv3_resnet50",
           "deeplabv3_resnet101"]

DEEPLABV3 = Paper("Rethinking Atrous Convolution for Semantic Image Segmentation",
                  "L.-C. Chen, G. Papandreou, F. Schroff, H. Adam", 2017, "https://arxiv.org/abs/1706.05587")

#: ASPP rates at output stride 8 (Sec. 3.3: (6, 12, 18) at output stride 16, "the rates are doubled" at 8)
ATROUS_RATES = (12, 24, 36)
ASPP_CHANNELS = 256


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation if kernel == 3 else 0
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    """Image-level features (Sec. 3.3): global average pool, 1x1 conv, BN, ReLU, bilinear upsampling to the map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)  # (N, C, h, w) -> (N, 256, 1, 1)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling of DeepLab v3 (Sec. 3.3, Fig. 5) in torchvision's layout: ``convs`` = 1x1,
    one 3x3 per rate, image pooling (each 256 channels with BN and ReLU); ``project`` = 1x1 over the concatenation,
    BN, ReLU, Dropout(0.5)."""

    def __init__(self, in_channels: int, atrous_rates: tuple[int, ...] = ATROUS_RATES,
                 out_channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_channels, out_channels))]
        branches += [nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 3, rate)) for rate in atrous_rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * out_channels, out_channels), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))  # (N, 5 * 256, h, w) -> 256


class DeepLabHead(nn.Sequential):
    """torchvision's ``DeepLabHead``: ASPP, 3x3 conv 256 (no bias), BN, ReLU, 1x1 conv -> classes."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: tuple[int, ...] = ATROUS_RATES) -> None:
        super().__init__(
            ASPP(in_channels, atrous_rates),
            *_conv_bn_relu(ASPP_CHANNELS, ASPP_CHANNELS, 3),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )


class DeepLabV3(DilatedResNetSegmenter):
    """torchvision's DeepLab v3: ``DeepLabHead(2048, classes)`` on the stride-8 layer4. See the module notes."""

    def make_head(self, in_channels: int, num_classes: int) -> nn.Module:
        return DeepLabHead(in_channels, num_classes)


class DeepLabV3ResNet50(DeepLabV3):
    """DeepLab v3 on a dilated ResNet-50 (torchvision's ``deeplabv3_resnet50``)."""

    def __init__(self, *, num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3,
                 backbone_weights: str | None = None, backbone_layers: list[int] | None = None) -> None:
        super().__init__(depth=50, num_classes=num_classes, aux_loss=aux_loss, in_channels=in_channels,
                         backbone_weights=backbone_weights, backbone_layers=backbone_layers)


class DeepLabV3ResNet101(DeepLabV3):
    """DeepLab v3 on a dilated ResNet-101 (torchvision's ``deeplabv3_resnet101``)."""

    def __init__(self, *, num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3,
                 backbone_weights: str | None = None, backbone_layers: list[int] | None = None) -> None:
        super().__init__(depth=101, num_classes=num_classes, aux_loss=aux_loss, in_channels=in_channels,
                         backbone_weights=backbone_weights, backbone_layers=backbone_layers)


_DATASET = "COCO train2017, the 20 PASCAL VOC categories (torchvision's weights); the paper: PASCAL VOC 2012"
_DEVIATIONS = (
    "output stride 8 always (the paper trains at 16 and evaluates at 8)",
    "ASPP rates 12, 24, 36 (the paper's output-stride-8 rates) and no multi-grid: block4's units all use dilation 4",
    "a 3x3 conv-BN-ReLU after the ASPP projection and Dropout(0.5) in the projection (torchvision's head)",
    "an auxiliary FCNHead on layer3 (aux_loss=True, loss weight 0.5 in torchvision's recipe), not in the paper",
    ("forward returns the main map in eval and (main, aux) in training (the zoo's aux convention); forward_dict "
     "gives torchvision's {'out', 'aux'}"),
)


@register_segmenter(DeepLabV3ResNet50, paper=DEEPLABV3, input_size=(3, 513, 513), dataset=_DATASET,
                    deviations=_DEVIATIONS, aux_weight=AUX_WEIGHT, digits_recipe=DIGITS_RECIPE,
                    counterparts=(Counterpart("torchvision", "deeplabv3_resnet50"),))
def deeplabv3_resnet50(**kwargs) -> DeepLabV3ResNet50:
    """DeepLab v3 on ResNet-50 as torchvision: output stride 8, ASPP 12/24/36 + image pooling, aux FCNHead."""
    return DeepLabV3ResNet50(**kwargs)


@register_segmenter(DeepLabV3ResNet101, paper=DEEPLABV3, input_size=(3, 513, 513), dataset=_DATASET,
                    deviations=_DEVIATIONS, aux_weight=AUX_WEIGHT, digits_recipe=DIGITS_RECIPE,
                    counterparts=(Counterpart("torchvision", "deeplabv3_resnet101"),))
def deeplabv3_resnet101(**kwargs) -> DeepLabV3ResNet101:
    """DeepLab v3 on ResNet-101 as torchvision: output stride 8, ASPP 12/24/36 + image pooling, aux FCNHead."""
    return DeepLabV3ResNet101(**kwargs)
