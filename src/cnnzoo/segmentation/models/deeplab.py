"""DeepLab v1, v2 and v3 as their papers describe them (torchvision's DeepLab v3 layouts are in ``deeplabv3.py``).

Papers
    v1: L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille, "Semantic Image Segmentation with Deep
    Convolutional Nets and Fully Connected CRFs", ICLR 2015 (https://arxiv.org/abs/1412.7062), with the authors'
    released Caffe net ``DeepLab-LargeFOV/train.prototxt``.
    v2: L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille, "DeepLab: Semantic Image Segmentation with
    Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", IEEE TPAMI 2017
    (https://arxiv.org/abs/1606.00915).
    v3: L.-C. Chen, G. Papandreou, F. Schroff, H. Adam, "Rethinking Atrous Convolution for Semantic Image
    Segmentation", arXiv 2017 (https://arxiv.org/abs/1706.05587).

Key ideas
    v1 (Sec. 3.1): a classification VGG-16 made dense by the "hole" (atrous) algorithm: the last two max-poolings
    no longer subsample, and the layers after them dilate their filters instead (conv5 by 2, fc6 by 4), so the
    score map has output stride 8 rather than 32 with the same receptive field and the same parameters; the
    coarse scores are bilinearly upsampled to pixels (Sec. 3.2 "the final ... bilinear interpolation") and refined
    by a fully connected CRF (Sec. 4, Krahenbuhl & Koltun). DeepLab-LargeFOV (Sec. 4.1 "Field of view", Table 2):
    fc6 shrunk to 3x3 (by decimating the 7x7 filters) with rate 12 and fc6/fc7 to 1,024 channels keeps the 224-
    pixel field of view at 20.5M instead of 134.3M parameters and is 3.36x faster.
    v2 (Sec. 3.1, 3.2, Fig. 7): atrous convolution on ResNet-101 too (output stride 8), and Atrous Spatial Pyramid
    Pooling: parallel atrous branches at several rates on the same map, each with its own classifier, their score
    maps summed. ASPP-L: rates 6, 12, 18, 24. On VGG-16 each branch is fc6 (3x3 at rate r, 1,024) - fc7 (1x1,
    1,024) - fc8 (1x1, classes); on ResNet-101 (the released ``fc1_voc12_c0..c3``) each branch is a single 3x3
    convolution at rate r straight to the classes.
    v3 (Sec. 3.2, 3.3): ``output_stride`` 16 (train) or 8 (eval), multi-grid unit rates (1, 2, 4) on block4 (the
    final rates are the block's rate times them: 2 * (1, 2, 4) = (2, 4, 8) at output stride 16), and an ASPP with
    batch normalisation: one 1x1 and three 3x3 branches (rates 6, 12, 18 at output stride 16, doubled at 8) of 256
    filters each, plus image-level features (global average pooling, 1x1 256 + BN, bilinear upsampling) because a
    3x3 filter at a rate near the map size degenerates to its centre tap (Fig. 4); the five are concatenated, then
    a 1x1 convolution (256, BN) and a final 1x1 convolution give the logits, upsampled bilinearly to the input. No
    CRF in v3.

Which tables the code reproduces, parameters by hand (21 PASCAL classes; tests/test_segmentation_deeplab.py
recomputes each sum)
    v1, Table 2 (ICLR 2015): VGG-16's 13 convolutions 14,714,688 (weights + biases), then
        DeepLab-CRF-7x7 (``deeplabv1_vgg16``): fc6 7x7x512x4096 + 4096 = 102,764,544; fc7 4096^2 + 4096 =
            16,781,312; fc8 4096 * 21 + 21 = 86,037; total 134,346,581 (the table's 134.3M).
        DeepLab-CRF-LargeFOV (``deeplabv1_largefov_vgg16``): fc6 3x3x512x1024 + 1024 = 4,719,616; fc7 1024^2 +
            1024 = 1,049,600; fc8 1024 * 21 + 21 = 21,525; total 20,505,429 (the table's 20.5M).
    v2, Table 3 / Fig. 7 (ASPP-L), no count in the paper:
        ResNet-101 (``deeplabv2_resnet101``): ResNet-101 without fc 42,500,160 (44,549,160 - 2048 * 1000 - 1000;
            derived from the ResNet paper's Table 1 in the test); ASPP-L 4 * (3 * 3 * 2048 * 21 + 21) = 1,548,372;
            total 44,048,532.
        VGG-16 (``deeplabv2_vgg16``): 14,714,688 + 4 * (4,719,616 + 1,049,600 + 21,525) = 37,877,652.
    v3, Sec. 3.3 / Fig. 5 (``deeplabv3_resnet101_paper``): ResNet-101 without fc 42,500,160; ASPP 1x1 and image
    pooling 2 * (2048 * 256 + 2 * 256) + three 3x3 3 * (9 * 2048 * 256 + 2 * 256) + projection 1280 * 256 + 2 * 256
    = 15,535,104; classifier 256 * 21 + 21 = 5,397; total 58,040,661 (torchvision's ``deeplabv3_resnet101`` has
    60,996,202: the extra 3x3 conv + BN and the aux head).

Training setup in the papers
    v1: from ImageNet VGG-16, SGD mini-batch 20, lr 0.001 (0.01 for fc8) x 0.1 every 2,000 iterations, momentum
    0.9, weight decay 5e-4; PASCAL VOC 2012 + SBD (10,582 images), 306x306 crops (321 in the released nets); the
    ground truth subsampled by 8 for the loss; CRF parameters cross-validated on 100 val images; 71.6% test mIOU
    (LargeFOV + CRF). v2: "poly" lr (power 0.9), base 0.001 (VGG-16) / 0.00025 (ResNet-101), batch 20/10, 20K
    iterations, 321x321 crops, multi-scale inputs (MSC), COCO pre-training, random scaling; BN frozen (Caffe); 79.7%
    test (ResNet-101, ASPP-L, MSC, COCO, CRF). v3: see ``deeplabv3.py`` (poly 0.007, crops 513, batch 16 with BN
    trained at output stride 16, then output stride 8 with BN frozen; 85.7% test).

This implementation (every deliberate deviation is on the cards)
    ``deeplabv1_largefov_vgg16`` follows the released LargeFOV prototxt: pool1-3 3x3/2 pad 1, pool4 and pool5 3x3/1
    pad 1 (max, rounding up as Caffe), conv5_1-3 3x3 rate 2, ``pool5a`` a 3x3/1 pad-1 average pooling before fc6
    (in the released net, not in the paper's text), fc6 3x3 rate 12, 1,024 - ReLU - dropout 0.5 - fc7 1x1 1,024 -
    ReLU - dropout 0.5 - fc8 1x1. ``deeplabv1_vgg16`` is the plain DeepLab (fc6 7x7 rate 4, 4,096 channels, no
    pool5a). Both: the same ``features`` keys as the zoo's vgg16 (``features.0`` ... ``features.28``), so
    ``backbone_weights`` (a vgg16 checkpoint) loads VGG-16's convolutions and converts fc6/fc7 (`load_backbone`):
    for the 7x7 net exactly (the 25088-input fc6 reshaped to 7x7x512); for LargeFOV by decimation, as Sec. 4.1
    says without detail: every 4th of the 4,096 channels and the 3x3 taps at rows/columns 0, 3, 6 of the 7x7 filter
    (which taps and channels the authors kept is not published).
    ``deeplabv2_resnet101``: the zoo's ResNet-101 through the features API at output stride 8, the units of its last
    two stages all at rate 2 and 4 (the released Caffe net dilates res4a/res5a's 3x3 too; torchvision's rule keeps
    the previous rate in a stage's first unit), ASPP-L summed. The zoo's ResNet-101 puts the stride on the 3x3
    (torchvision's v1.5); the paper's MSRA Caffe ResNet-101 puts it on the first 1x1: pass
    ``backbone_options={"stride_in_1x1": True}``. ``deeplabv2_vgg16``: the v1 VGG-16 (no pool5a) with four
    fc6-fc7-fc8 branches. ``deeplabv3_resnet101_paper``: ASPP of ``deeplabv3.py`` (torchvision's keys) without its
    dropout (``drop_rate`` 0; the paper has none; the authors' TF code keeps 0.9), straight to the 1x1 classifier
    (no extra 3x3 conv, no aux head), multi-grid on the last stage's units.
    All: logits resized to the input by bilinear interpolation with ``align_corners=True`` (Caffe's Interp layer and
    the authors' TF ``resize_bilinear``; with inputs of 8k+1 pixels, e.g. 321 or 513, output pixel 8i is score i);
    the loss is on full-resolution labels (v1/v2 subsample the labels by 8 instead). ``score_map(x)`` gives the
    coarse logits before upsampling. No multi-scale inputs (MSC) or test-time augmentation; the CRF is separate:
    `cnnzoo.segmentation.crf.dense_crf` (optional ``pydensecrf2``).
    ``backbone`` (v2, v3): any zoo network with a dilated variant (``output_stride``: the ResNet family,
    `dilated_backbones`); the paper's ResNet-101 by default. ``backbone_options``: extra ``create_model`` options
    for it. ``atrous_rates``: the ASPP rates (the paper's by default). ``width_mult`` (v1, v2 VGG): scales every VGG
    width including fc6/fc7 (a CPU-training deviation; vgg16 checkpoints load only at 1.0). ``batch_norm`` (v1, v2
    VGG; default False, as the papers): a BN after each of the 13 encoder convolutions (conv - BN - ReLU), in the
    zoo's / torchvision's ``vgg16_bn`` layout: ``features.0`` ... ``features.43``, the convolutions keeping their
    biases as vgg16_bn's do, so ``backbone_weights`` is then a vgg16_bn checkpoint (its fc6/fc7 convert as above);
    fc6-fc8 stay without BN. It adds 2 x C parameters per convolution (scale and shift; the running statistics are
    buffers): 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512) = 8,448, vgg16_bn's 138,365,992 less vgg16's 138,357,544.
    Not in the papers (whose VGG-16 has no normalisation and starts from ImageNet weights): used by the digits
    recipes only, to train from scratch.
    Initialisation: VGG convolutions Kaiming-normal (fan-out, the zoo's VGG), BN scale 1 / shift 0, fc8 / classifiers
    N(0, 0.01) with zero bias (the prototxt's gaussian filler); ResNet as the zoo's; v3's ASPP at PyTorch's defaults
    (as torchvision).

Digits recipes (``get_digits_recipe``; 64x64 single-channel digits-segmentation, 1,000 train / 200 test images;
all-background scores mean IU 0.087). Measured with ``SegTrainer(default_seg_config(name, seed=s), threads=1)``,
final-epoch test mean IU for seeds 0 / 1, and the process CPU time of the run (a 1-thread run's time on an idle core;
the machine was loaded, wall time 3-6x that); the learning rate is constant, so the last epoch is noisy:
    ``deeplabv1_largefov_vgg16``: width 1/8, fc6 rate 2 (the 8x8 map), ``batch_norm``, dropout 0, Adam 3e-3, 20
    epochs: 0.258 / 0.445 (135 s / 134 s; the curve peaks at 0.44 in epoch 19 for seed 0).
    ``deeplabv1_vgg16``: width 1/8, fc6 7x7 rate 1, fc_channels 1,024 (128 at 1/8, as LargeFOV's; 4,096 costs 1.8x
    per step), ``batch_norm``, dropout 0, Adam 3e-3, 20 epochs: 0.367 / 0.322 (157 s / 151 s).
    ``deeplabv2_vgg16``: width 1/8, rates (1, 2, 3, 4), ``batch_norm``, dropout 0, Adam 3e-3, 20 epochs: 0.410 /
    0.492 (185 s / 167 s).
    Without BN these VGG-16 nets stay at 0.087 (LargeFOV: 4 epochs at Adam 1e-3; 200 steps at 1e-4 with width 1/4
    or 1/8): a 16-layer VGG without normalisation from scratch, as ``fcn8s_vgg16``'s card reports; the papers start
    from ImageNet VGG-16 (``backbone_weights``). With BN but the papers' dropout 0.5, or at Adam 1e-3, they leave the
    plateau too late (LargeFOV, 16 epochs at 3e-3 with dropout: 0.179; 8 epochs at 1e-3: 0.087; width 1/2 does not
    help at 1e-3), hence dropout 0 and 3e-3.
    ``deeplabv2_resnet101``: backbone resnet18 with one unit per stage (``backbone_options``), output stride 8,
    rates (1, 2, 3, 4), Adam 1e-3, 4 epochs: 0.444 / 0.380 (87 s / 85 s; already within budget, kept).
    ``deeplabv3_resnet101_paper``: the same backbone at output stride 8 (the paper's evaluation stride; rates
    (2, 4, 6), its (1, 2, 3) for the 4x4 map at 16 doubled as Sec. 3.3 doubles), multi-grid (1,) (one unit), Adam
    1e-3, 4 epochs: 0.413 / 0.371 (132 s / 129 s). At output stride 16 (a 4x4 map) it stays near the plateau (0.124
    at 1e-3, 0.101 at 3e-3 after 4 epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Paper, create_model, list_models, model_options
from ..registry import register_segmenter
from .base import Segmenter
from .deeplabv3 import ASPP, ASPP_CHANNELS

__all__ = ["DeepLabV1", "DeepLabV1LargeFOV", "DeepLabV2", "DeepLabV2VGG16", "DeepLabV3Paper",
           "deeplabv1_largefov_vgg16", "deeplabv1_vgg16", "deeplabv2_resnet101", "deeplabv2_vgg16",
           "deeplabv3_resnet101_paper", "dilated_backbones", "set_unit_rates"]

DEEPLABV1 = Paper("Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs",
                  "L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille", 2015,
                  "https://arxiv.org/abs/1412.7062")
DEEPLABV2 = Paper("DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and Fully "
                  "Connected CRFs", "L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille", 2017,
                  "https://arxiv.org/abs/1606.00915")
DEEPLABV3 = Paper("Rethinking Atrous Convolution for Semantic Image Segmentation",
                  "L.-C. Chen, G. Papandreou, F. Schroff, H. Adam", 2017, "https://arxiv.org/abs/1706.05587")

# VGG-16 (configuration D) in the zoo's vgg16 ``features`` indices: channels, or "M" = a max-pooling
VGG16_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
#: v2 Sec. 3.2 / Fig. 7: ASPP-L
ASPP_L_RATES = (6, 12, 18, 24)
#: v3 Sec. 3.3: the ASPP rates at output stride 16 (doubled at 8)
V3_RATES_OS16 = (6, 12, 18)
#: v3 Sec. 3.2 / Table 3: block4's unit rates
MULTI_GRID = (1, 2, 4)


def _check_int(name: str, key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} option {key} must be an integer >= {minimum}, got {value!r}")


def _check_rates(name: str, key: str, rates: Any, length: int | None = None) -> tuple[int, ...]:
    ok = isinstance(rates, (list, tuple)) and len(rates) > 0 and all(
        not isinstance(r, bool) and isinstance(r, int) and r >= 1 for r in rates)
    if not ok or (length is not None and len(rates) != length):
        want = f"{length} " if length is not None else ""
        raise ValueError(f"{name} option {key} must be a list of {want}integers >= 1, got {rates!r}")
    return tuple(rates)


def _upsample(scores: torch.Tensor, size) -> torch.Tensor:
    """Bilinear interpolation of the score map to the input (Caffe's Interp / TF's resize_bilinear: corners
    aligned)."""
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=True)


def _normal_classifier(conv: nn.Conv2d) -> None:
    nn.init.normal_(conv.weight, 0.0, 0.01)  # the prototxt's fc8 filler: gaussian std 0.01, bias 0
    nn.init.zeros_(conv.bias)


# ------------------------------------------------------------------------------------------------ VGG-16 (v1, v2)
def atrous_vgg16(in_channels: int, width, batch_norm: bool = False) -> nn.Sequential:
    """VGG-16's 13 convolutions in the zoo's vgg16 ``features`` indices (0 ... 30), made dense as DeepLab v1 Sec. 3.1
    and the released prototxt: pool1-3 3x3/2 pad 1, pool4-5 3x3/1 pad 1 (max, rounding up), conv5_* at rate 2.
    ``batch_norm``: conv - BN - ReLU in the zoo's (torchvision's) vgg16_bn indices and keys (0 ... 43; the conv
    keeps its bias there, so vgg16_bn checkpoints load), not in the papers."""
    layers: list[nn.Module] = []
    chs, pools = in_channels, 0
    for item in VGG16_D:
        if item == "M":
            pools += 1
            layers.append(nn.MaxPool2d(3, 2 if pools <= 3 else 1, padding=1, ceil_mode=True))
        else:
            rate = 2 if pools == 4 else 1  # conv5_1..conv5_3 after pool4
            layers.append(nn.Conv2d(chs, width(item), 3, padding=rate, dilation=rate))
            layers += [nn.BatchNorm2d(width(item)), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
            chs = width(item)
    return nn.Sequential(*layers)


def _vgg_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _vgg_name(batch_norm: bool) -> str:
    return "vgg16_bn" if batch_norm else "vgg16"


def _check_vgg_options(name: str, num_classes, in_channels, width_mult, drop_rate, backbone_weights,
                       batch_norm) -> None:
    _check_int(name, "num_classes", num_classes)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"{name} option batch_norm must be true or false, got {batch_norm!r}")
    _check_int(name, "in_channels", in_channels)
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not float(width_mult) > 0.0:
        raise ValueError(f"{name} option width_mult must be a number > 0, got {width_mult!r}")
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"{name} option drop_rate must be a number in [0, 1), got {drop_rate!r}")
    if backbone_weights is not None and float(width_mult) != 1.0:
        raise ValueError(f"{name}: backbone_weights are a {_vgg_name(batch_norm)} checkpoint, which fits only "
                         f"width_mult=1.0, got width_mult={width_mult!r}")


def _fc_from_vgg(linear: nn.Linear, conv: nn.Conv2d, in_spatial: int) -> None:
    """Copy a VGG-16 fully connected layer into a DeepLab fc conv: reshaped to ``(out, C, k, k)`` (k = 7 for fc6,
    1 for fc7), then decimated to the conv's shape (every (out / out') th filter and input channel, and for a
    smaller kernel the taps at even spacing 0, 3, 6 of 7 for 3x3), as v1 Sec. 4.1 "subsample (by simple
    decimation)"."""
    out, cin, k = conv.out_channels, conv.in_channels, conv.kernel_size[0]
    w = linear.weight.detach().reshape(linear.out_features, -1, in_spatial, in_spatial)
    if w.shape[0] % out or w.shape[1] % cin or (in_spatial - 1) % max(k - 1, 1) or (k == 1) != (in_spatial == 1):
        raise ValueError(f"cannot decimate a {tuple(w.shape)} fully connected filter bank to {tuple(conv.weight.shape)}")
    step = (in_spatial - 1) // (k - 1) if k > 1 else 1
    w = w[:: w.shape[0] // out, :: w.shape[1] // cin, ::step, ::step]
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(linear.bias.detach()[:: linear.out_features // out])


class _VGGBackboneMixin:
    features: nn.Sequential
    batch_norm: bool

    def _load_vgg_features(self, vgg: nn.Module) -> None:
        theirs, mine = getattr(vgg, "features", nn.Sequential()).state_dict(), self.features.state_dict()
        wrong = [k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape]
        if wrong or len(theirs) != len(mine):
            raise ValueError(f"{type(self).__name__}: the network given is not a VGG-16 with this network's "
                             f"in_channels and width (features.{wrong[0] if wrong else '?'} differs); use a "
                             f"{_vgg_name(self.batch_norm)} at width_mult=1.0")
        with torch.no_grad():
            self.features.load_state_dict(theirs)


class DeepLabV1(_VGGBackboneMixin, Segmenter):
    """DeepLab v1 on VGG-16 (ICLR 2015 Sec. 3-4): the atrous VGG-16, fc6 (``fc6_kernel`` x ``fc6_kernel`` at rate
    ``fc6_dilation``, ``fc_channels``) - fc7 (1x1) - fc8 (1x1 -> classes), output stride 8, bilinear upsampling.
    Defaults: the plain DeepLab (DeepLab-CRF-7x7 of Table 2). See the module notes."""

    min_input_size = 1  # pooling pads and rounds up: every size keeps at least one position

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, fc6_kernel: int = 7, fc6_dilation: int = 4,
                 fc_channels: int = 4096, pool5a: bool = False, drop_rate: float = 0.5, width_mult: float = 1.0,
                 backbone_weights: str | None = None, batch_norm: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        _check_vgg_options(name, num_classes, in_channels, width_mult, drop_rate, backbone_weights, batch_norm)
        _check_int(name, "fc6_kernel", fc6_kernel)
        if fc6_kernel % 2 == 0:
            raise ValueError(f"{name} option fc6_kernel must be odd (a centred filter: 1, 3, 7, ...), got {fc6_kernel}")
        _check_int(name, "fc6_dilation", fc6_dilation)
        _check_int(name, "fc_channels", fc_channels)
        self.num_classes, self.in_channels, self.batch_norm = num_classes, in_channels, batch_norm

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.features = atrous_vgg16(in_channels, width, batch_norm)
        # released LargeFOV prototxt: pool5a = AVE 3x3/1 pad 1 (Caffe counts the padding: count_include_pad)
        self.pool5a = nn.AvgPool2d(3, 1, padding=1) if pool5a else nn.Identity()
        fc = width(fc_channels)
        self.fc6 = nn.Conv2d(width(512), fc, fc6_kernel, padding=fc6_dilation * (fc6_kernel - 1) // 2,
                             dilation=fc6_dilation)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.fc8 = nn.Conv2d(fc, num_classes, 1)
        self.dropout = nn.Dropout(drop_rate)  # Caffe's Dropout: element-wise, after relu6 and relu7
        _vgg_init(self)
        _normal_classifier(self.fc8)
        if backbone_weights is not None:
            self.load_backbone(create_model(_vgg_name(batch_norm), weights=backbone_weights, in_channels=in_channels))

    def load_backbone(self, vgg: nn.Module) -> None:
        """VGG-16's convolutions into ``features`` and its fc6/fc7 into ``fc6``/``fc7`` (reshaped, and decimated
        for a smaller fc6 / fewer channels: see the module notes); fc8 keeps its initialisation."""
        self._load_vgg_features(vgg)
        fcs = [m for m in getattr(vgg, "classifier", nn.Sequential()) if isinstance(m, nn.Linear)]
        if len(fcs) != 3 or fcs[0].in_features != 512 * 7 * 7:
            raise ValueError(f"{type(self).__name__}: the network given has no VGG-16 classifier (fc6 25088 -> 4096, "
                             f"fc7, fc8) to convert")
        _fc_from_vgg(fcs[0], self.fc6, 7)
        _fc_from_vgg(fcs[1], self.fc7, 1)

    def output_size(self, size: int) -> int:
        return size

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """The fc8 scores at output stride 8: ``(N, K, h, w)``, h = ceil(ceil(ceil(H / 2) / 2) / 2) (each 3x3/2
        pad-1 pooling rounding up), e.g. 41 for 321, 9 for 65 or 64."""
        self.check_input(x)
        x = self.pool5a(self.features(x))  # (N, 512, h, w)
        x = self.dropout(F.relu(self.fc6(x)))
        x = self.dropout(F.relu(self.fc7(x)))
        return self.fc8(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample(self.score_map(x), x.shape[-2:])


class DeepLabV1LargeFOV(DeepLabV1):
    """DeepLab-LargeFOV (ICLR 2015 Sec. 4.1, Table 2; the released prototxt): fc6 3x3 rate 12, 1,024 channels,
    pool5a."""

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, fc6_kernel: int = 3, fc6_dilation: int = 12,
                 fc_channels: int = 1024, pool5a: bool = True, drop_rate: float = 0.5, width_mult: float = 1.0,
                 backbone_weights: str | None = None, batch_norm: bool = False) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, fc6_kernel=fc6_kernel,
                         fc6_dilation=fc6_dilation, fc_channels=fc_channels, pool5a=pool5a, drop_rate=drop_rate,
                         width_mult=width_mult, backbone_weights=backbone_weights, batch_norm=batch_norm)


class DeepLabV2VGG16(_VGGBackboneMixin, Segmenter):
    """DeepLab v2 ASPP on VGG-16 (TPAMI Sec. 3.2, Fig. 7): the atrous VGG-16 of v1, then one branch per rate
    (``aspp{i}``: fc6 3x3 at the rate, ``fc_channels`` - ReLU - dropout - fc7 1x1 - ReLU - dropout - fc8 1x1 ->
    classes), the branches' scores summed, output stride 8, bilinear upsampling."""

    min_input_size = 1

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3,
                 atrous_rates: Sequence[int] = ASPP_L_RATES, fc_channels: int = 1024, drop_rate: float = 0.5,
                 width_mult: float = 1.0, backbone_weights: str | None = None, batch_norm: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        _check_vgg_options(name, num_classes, in_channels, width_mult, drop_rate, backbone_weights, batch_norm)
        _check_int(name, "fc_channels", fc_channels)
        self.atrous_rates = _check_rates(name, "atrous_rates", atrous_rates)
        self.num_classes, self.in_channels, self.batch_norm = num_classes, in_channels, batch_norm

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.features = atrous_vgg16(in_channels, width, batch_norm)
        fc = width(fc_channels)
        self.aspp = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width(512), fc, 3, padding=r, dilation=r), nn.ReLU(inplace=True),
                          nn.Dropout(drop_rate), nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
                          nn.Conv2d(fc, num_classes, 1))
            for r in self.atrous_rates)
        _vgg_init(self)
        for branch in self.aspp:
            _normal_classifier(branch[-1])
        if backbone_weights is not None:
            self._load_vgg_features(create_model(_vgg_name(batch_norm), weights=backbone_weights,
                                                 in_channels=in_channels))

    def output_size(self, size: int) -> int:
        return size

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """The summed ASPP scores at output stride 8, ``(N, K, h, w)`` (h as `DeepLabV1.score_map`)."""
        self.check_input(x)
        x = self.features(x)
        return torch.stack([branch(x) for branch in self.aspp]).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample(self.score_map(x), x.shape[-2:])


# ------------------------------------------------------------------------------------------------ ResNet (v2, v3)
def dilated_backbones() -> list[str]:
    """The zoo networks that have a dilated variant (an ``output_stride`` option): the backbones v2 and v3 take."""
    return [n for n in list_models() if "output_stride" in model_options(n)]


def set_unit_rates(stage: nn.Module, rates: Sequence[int]) -> None:
    """Give unit i of a residual stage atrous rate ``rates[i]`` on its 3x3 convolutions (dilation and padding; no
    parameter changes): v3's multi-grid (Sec. 3.2) and v2's uniformly dilated stages."""
    units = list(stage.children())
    if len(units) != len(rates):
        raise ValueError(f"{len(rates)} unit rates {tuple(rates)} for a stage of {len(units)} units; give one rate "
                         f"per unit")
    for unit, rate in zip(units, rates):
        for m in unit.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1):
                m.dilation, m.padding = (rate, rate), (rate, rate)


def _dilated_backbone(owner: str, backbone: str, output_stride: int, in_channels: int, weights: str | None,
                      options: dict | None) -> nn.Module:
    if not isinstance(backbone, str) or backbone not in dilated_backbones():
        raise ValueError(f"{owner} option backbone must be a zoo network with a dilated variant (output_stride), got "
                         f"{backbone!r}; valid: {', '.join(dilated_backbones())}")
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"{owner} option backbone_options must be a dict of {backbone} options, got {options!r}")
    options = dict(options or {})
    clash = sorted(set(options) & {"output_stride", "in_channels", "weights", "features_only", "out_indices"})
    if clash:
        raise ValueError(f"{owner}: backbone_options may not set {', '.join(clash)} (the network sets them)")
    return create_model(backbone, features_only=True, out_indices=(-1,), output_stride=output_stride,
                        in_channels=in_channels, weights=weights, **options)


def _stage(backbone: nn.Module, index: int) -> nn.Module:
    """The residual stage whose output is the network's ``feature_info[index]`` (``layer4`` for -1)."""
    return backbone.get_submodule(backbone.model.feature_info[index]["module"])


class DeepLabV2(Segmenter):
    """DeepLab v2 on a dilated ResNet (TPAMI Sec. 3.1-3.2, Fig. 7): output stride 8 (the last two stages' units all
    at rate 2 and 4), ASPP-L: one 3x3 convolution per rate straight to the classes (``aspp.{i}``), summed, then
    bilinear upsampling."""

    min_input_size = 1

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, backbone: str = "resnet101",
                 atrous_rates: Sequence[int] = ASPP_L_RATES, backbone_weights: str | None = None,
                 backbone_options: dict | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        _check_int(name, "num_classes", num_classes)
        _check_int(name, "in_channels", in_channels)
        self.atrous_rates = _check_rates(name, "atrous_rates", atrous_rates)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.backbone = _dilated_backbone(name, backbone, 8, in_channels, backbone_weights, backbone_options)
        for index, rate in ((-2, 2), (-1, 4)):  # the released Caffe net: res4* at 2, res5* at 4, first units too
            stage = _stage(self.backbone, index)
            set_unit_rates(stage, [rate] * len(list(stage.children())))
        channels = self.backbone.feature_info.channels(-1)
        self.aspp = nn.ModuleList(nn.Conv2d(channels, num_classes, 3, padding=r, dilation=r)
                                  for r in self.atrous_rates)
        for conv in self.aspp:
            _normal_classifier(conv)

    def output_size(self, size: int) -> int:
        return size

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """The summed ASPP scores at output stride 8, ``(N, K, h, w)`` (h = ceil(H / 8) for the ResNet stem)."""
        self.check_input(x)
        x = self.backbone(x)[-1]
        return torch.stack([conv(x) for conv in self.aspp]).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample(self.score_map(x), x.shape[-2:])


class DeepLabV3Paper(Segmenter):
    """DeepLab v3 as the paper (Sec. 3.2-3.3, Fig. 5): a dilated ResNet at ``output_stride`` 16 or 8, multi-grid
    rates on the last stage, ASPP (1x1, three 3x3 at ``atrous_rates``, image pooling; 256 filters + BN each),
    1x1 projection + BN, 1x1 classifier, bilinear upsampling. No extra 3x3 conv, no aux head (unlike torchvision's
    ``deeplabv3_resnet101`` in ``deeplabv3.py``)."""

    min_input_size = 1

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, backbone: str = "resnet101",
                 output_stride: int = 16, multi_grid: Sequence[int] = MULTI_GRID,
                 atrous_rates: Sequence[int] | None = None, drop_rate: float = 0.0,
                 backbone_weights: str | None = None, backbone_options: dict | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        _check_int(name, "num_classes", num_classes)
        _check_int(name, "in_channels", in_channels)
        if output_stride not in (8, 16) or isinstance(output_stride, bool):
            raise ValueError(f"{name} option output_stride must be 16 or 8 (Sec. 3.2), got {output_stride!r}")
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"{name} option drop_rate must be a number in [0, 1), got {drop_rate!r}")
        if atrous_rates is None:  # Sec. 3.3: (6, 12, 18) at output stride 16, "doubled" at 8
            atrous_rates = tuple(r * 16 // output_stride for r in V3_RATES_OS16)
        self.atrous_rates = _check_rates(name, "atrous_rates", atrous_rates)
        self.output_stride = output_stride
        self.num_classes, self.in_channels = num_classes, in_channels
        self.backbone = _dilated_backbone(name, backbone, output_stride, in_channels, backbone_weights,
                                          backbone_options)
        last = _stage(self.backbone, -1)
        units = len(list(last.children()))
        self.multi_grid = _check_rates(name, f"multi_grid (one rate per unit of {backbone}'s last stage)",
                                       multi_grid, units)
        # Sec. 3.2: "the final atrous rate for block4 ... 2 * (1, 2, 4) = (2, 4, 8)" at output stride 16
        set_unit_rates(last, [32 // output_stride * g for g in self.multi_grid])
        channels = self.backbone.feature_info.channels(-1)
        self.aspp = ASPP(channels, self.atrous_rates, ASPP_CHANNELS)  # torchvision's keys: convs.0-4, project.0-1
        self.aspp.project[3] = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, 1)

    def output_size(self, size: int) -> int:
        return size

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """The logits at ``output_stride``: ``(N, K, h, w)`` (h = ceil(H / output_stride) for the ResNet stem)."""
        self.check_input(x)
        return self.classifier(self.aspp(self.backbone(x)[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample(self.score_map(x), x.shape[-2:])


# ------------------------------------------------------------------------------------------------ registration
_V1_DEVIATIONS = (
    ("logits upsampled bilinearly (align_corners=True) inside forward and the loss taken at full resolution; the "
     "paper subsamples the ground truth by 8 for training"),
    "no fully connected CRF in the network: cnnzoo.segmentation.crf.dense_crf applies it afterwards (pydensecrf2)",
    "width_mult < 1 scales every VGG and fc width for CPU training (not in the paper)",
    ("batch_norm=True (digits recipe only; default off as the paper): BN after each VGG-16 convolution, vgg16_bn's "
     "layout, so the net trains from scratch; the paper's VGG-16 has no BN and starts from ImageNet weights"),
)
_V2_DEVIATIONS = (
    _V1_DEVIATIONS[0],
    _V1_DEVIATIONS[1],
    "no multi-scale inputs (MSC), COCO pre-training or random scaling (training-recipe matters, not the network)",
)
_V2_RESNET_DEVIATIONS = _V2_DEVIATIONS + (
    ("the zoo's ResNet-101 puts the stride on the 3x3 (torchvision's v1.5); the paper's MSRA Caffe model puts it on "
     "the first 1x1: backbone_options={'stride_in_1x1': True}"),
    "BN is trained as PyTorch's (the released Caffe nets freeze it); backbone= takes any dilated zoo network",
)
_V3_DEVIATIONS = (
    ("logits upsampled with align_corners=True (the authors' TF code); the ASPP's image-pooling BN needs batches "
     "of at least 2 in training"),
    ("block3's first unit keeps rate 1 at output stride 8 (the zoo's/torchvision's dilation rule); block4's units "
     "get the multi-grid rates"),
    "no multi-scale / flipped inference; backbone= takes any dilated zoo network (the paper: ResNet-50/101)",
)
_VOC = "PASCAL VOC 2012 (+ SBD augmented train set)"


@register_segmenter(DeepLabV1, paper=DEEPLABV1, input_size=(3, 321, 321), dataset=_VOC, deviations=_V1_DEVIATIONS,
                    digits_recipe={"options": {"width_mult": 0.125, "fc6_dilation": 1, "fc_channels": 1024,
                                               "batch_norm": True, "drop_rate": 0.0},
                                   "optimizer": "adam", "lr": 3e-3, "epochs": 20, "batch_size": 16})
def deeplabv1_vgg16(**kwargs) -> DeepLabV1:
    """DeepLab (v1) on VGG-16: atrous conv5 (2) and fc6 7x7 at rate 4, 4,096 channels (134,346,581 params, K=21)."""
    return DeepLabV1(**kwargs)


@register_segmenter(DeepLabV1LargeFOV, paper=DEEPLABV1, input_size=(3, 321, 321), dataset=_VOC,
                    deviations=_V1_DEVIATIONS,
                    digits_recipe={"options": {"width_mult": 0.125, "fc6_dilation": 2, "batch_norm": True,
                                               "drop_rate": 0.0},
                                   "optimizer": "adam", "lr": 3e-3, "epochs": 20, "batch_size": 16})
def deeplabv1_largefov_vgg16(**kwargs) -> DeepLabV1LargeFOV:
    """DeepLab-LargeFOV (v1): VGG-16, fc6 3x3 at rate 12 with 1,024 channels, output stride 8 (20,505,429, K=21)."""
    return DeepLabV1LargeFOV(**kwargs)


@register_segmenter(DeepLabV2VGG16, paper=DEEPLABV2, input_size=(3, 321, 321), dataset=_VOC,
                    deviations=_V2_DEVIATIONS + _V1_DEVIATIONS[2:],
                    digits_recipe={"options": {"width_mult": 0.125, "atrous_rates": [1, 2, 3, 4], "batch_norm": True,
                                               "drop_rate": 0.0},
                                   "optimizer": "adam", "lr": 3e-3, "epochs": 20, "batch_size": 16})
def deeplabv2_vgg16(**kwargs) -> DeepLabV2VGG16:
    """DeepLab v2 on VGG-16: ASPP-L, four fc6-fc7-fc8 branches at rates 6, 12, 18, 24, summed (37,877,652, K=21)."""
    return DeepLabV2VGG16(**kwargs)


@register_segmenter(DeepLabV2, paper=DEEPLABV2, input_size=(3, 321, 321), dataset=_VOC,
                    deviations=_V2_RESNET_DEVIATIONS,
                    digits_recipe={"options": {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]},
                                               "atrous_rates": [1, 2, 3, 4]},
                                   "optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 16})
def deeplabv2_resnet101(**kwargs) -> DeepLabV2:
    """DeepLab v2 on ResNet-101: output stride 8, ASPP-L (3x3 rates 6, 12, 18, 24 to classes, summed) (44,048,532)."""
    return DeepLabV2(**kwargs)


@register_segmenter(DeepLabV3Paper, paper=DEEPLABV3, input_size=(3, 513, 513), dataset=_VOC,
                    deviations=_V3_DEVIATIONS,
                    digits_recipe={"options": {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]},
                                               "multi_grid": [1], "output_stride": 8, "atrous_rates": [2, 4, 6]},
                                   "optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 16})
def deeplabv3_resnet101_paper(**kwargs) -> DeepLabV3Paper:
    """DeepLab v3 as the paper: ResNet-101 at output stride 16, multi-grid (1, 2, 4), ASPP + image pooling + BN."""
    return DeepLabV3Paper(**kwargs)
