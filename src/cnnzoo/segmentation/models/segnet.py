"""SegNet. V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for
Image Segmentation", IEEE TPAMI 2017. https://arxiv.org/abs/1511.00561 -- with the authors' Caffe models
(github.com/alexgkendall/SegNet-Tutorial, ``segnet_train.prototxt``).

Key ideas
    An encoder-decoder with no fully connected layers: the encoder is the 13 convolutional layers of VGG-16 (each
    3x3 convolution + batch normalisation + ReLU), with five 2x2/2 max-poolings that *record the position of each
    maximum* (the "pooling indices" or switches, 2 bits per 2x2 window). Each of the five decoder stages mirrors one
    encoder stage: it upsamples its input by max-unpooling with the indices of the corresponding encoder pooling (the
    value goes back to where the maximum was, zeros elsewhere: a sparse map), then densifies it with trainable
    3x3 convolution + BN + ReLU layers (Sec. 3, Fig. 2-3). Unlike FCN no encoder feature map is kept for the
    decoder (only the indices), and unlike U-Net nothing is concatenated, so memory at inference is small; unlike
    DeconvNet there are no fc6/fc7 (which hold most of VGG-16's parameters): the encoder keeps 14.7M of VGG-16's
    134M parameters (Sec. 3), the whole network ~29.4M. Boundary delineation improves because the indices keep
    where the high-frequency detail was (Sec. 3.1, the decoder variants compared in Table 1).

Which table the code reproduces
    Sec. 3 / Fig. 2 (the "SegNet" of Table 1 and Sec. 4), in the layout of ``segnet_train.prototxt``: encoder
    conv1_1 ... conv5_3 (VGG-16 configuration D), each with BN + ReLU; decoder, each unpooling followed by
        conv5_3_D 512, conv5_2_D 512, conv5_1_D 512 | conv4_3_D 512, conv4_2_D 512, conv4_1_D 256 |
        conv3_3_D 256, conv3_2_D 256, conv3_1_D 128 | conv2_2_D 128, conv2_1_D 64 | conv1_2_D 64, conv1_1_D K
    every one 3x3 (pad 1) + BN + ReLU except conv1_1_D, the 13th decoder convolution, which gives the K class scores
    fed to the soft-max ("the decoder network has 13 layers"). Every convolution has a bias (Caffe's default);
    BN has a learned scale and shift (2 parameters per channel; its running mean/variance are buffers).
    Parameters, by hand (tests/test_segmentation_segnet_deconvnet.py), K = 11 CamVid classes:
        encoder convs (VGG-16 conv1_1 ... conv5_3, weights + biases)                        14,714,688
        encoder BN: 2 * (2*64 + 2*128 + 3*256 + 6*512) = 2 * 4,224                            8,448
        decoder convs up to conv1_2_D, weights: 9 * (3*512*512 + 2*512*512 + 512*256 + 2*256*256 + 256*128
            + 128*128 + 128*64 + 64*64) = 9 * 1,634,304                                       14,708,736
        their biases and BN: 3 * (3*512 + 2*512 + 256 + 2*256 + 128 + 128 + 64 + 64) = 3 * 3,712  11,136
        conv1_1_D 3x3, 64 -> K: 9*64*K + K = 577 K                                            6,347
        total                                                                              29,449,355
    (29,443,008 + 577 K in general).

Training setup in the paper
    Sec. 3.2 (CamVid, 367 train / 233 test images of 360 x 480, 11 classes): SGD, fixed learning rate 0.1, momentum
    0.9, mini-batches of 12 shuffled images, cross-entropy with median-frequency class balancing, encoder and decoder
    initialised as He et al.; trained until the loss converges. Sec. 4 also benchmarks SUN RGB-D indoor scenes
    (37 classes).

This implementation
    ``segnet_vgg16``: ``features`` is VGG-16 with BN in the zoo's ``vgg16_bn`` layout (``features.0`` conv1_1,
    ``features.1`` its BN, ... ``features.43`` pool5: the same keys and shapes), so ``backbone_weights`` (anything
    ``create_model("vgg16_bn", weights=...)`` reads) or `SegNet.load_backbone` copies every encoder convolution
    *and* its BN (scale, shift, running statistics); vgg16_bn's classifier (fc6-fc8) has no place here and is
    dropped. Nothing of the decoder maps. Initialisation: Kaiming-normal (fan-out, as the zoo's VGG: He et al.) for
    every convolution, zero biases, BN scale 1 and shift 0.
    Input sizes: pooling rounds up (Caffe's pooling, ``ceil_mode=True``) and each unpooling restores the exact size
    its pooling saw (``output_size``, as the authors' ``Upsample`` layers with ``upsample_h``/``upsample_w`` do for
    CamVid's 360 x 480, which is not a multiple of 32: 360 -> 180 -> 90 -> 45 -> 23 -> 12 and back), so *every*
    input of at least 1 x 1 gives an output of the input's size; inputs are neither refused nor padded.
    Options: ``num_classes`` (11, CamVid), ``in_channels`` (3), ``backbone_weights``, and ``width_mult`` (1.0) --
    a deviation for training on 2 CPU cores: it scales every width (64 ... 512, rounded, at least 1; the classes are
    kept); checkpoints of vgg16_bn load only at 1.0.
    Median frequency class balancing (Sec. 3.2) is the trainer's loss setting ``class_weighting:
    median_frequency`` (`cnnzoo.segmentation.train.median_frequency_weights`; ``cnnzoo segment train
    --class-weighting``), not part of the network. Not here: the Bayesian SegNet's dropout.
    digits-segmentation recipe (`DIGITS_RECIPE`): ``width_mult=0.25``, the paper's median frequency balancing, Adam
    1e-3, 10 epochs of batch 8 (the paper: SGD 0.1, batch 12). Measured with `SegTrainer` (one thread, test split
    of 200 canvases; seconds are the process's CPU time, what an idle thread takes, on a loaded shared machine):
        seed 0: mean IU 0.292, pixel accuracy 0.958, 174 CPU s;  seed 1: mean IU 0.320, pixel accuracy 0.964, 175 CPU s
        (1,250 steps, ~0.14 s each; the test mean IU per epoch still rising: 0.10 -> 0.29 / 0.32 over the 10 epochs).
    Before the class balancing (the same width, Adam 1e-3, 8 epochs of batch 16, unweighted): mean IU 0.112 (seed
    0, 122 CPU s), at 1/8 width 12 epochs 0.088 -- barely above all-background (0.087): without skips the narrow
    net first collapses to background (95% of the pixels); the weights (background ~0.03, digits ~0.8-1.9 on the
    default data) pull it out. With the balancing at batch 16 (8 epochs): 0.192 (seed 0, 127 CPU s); lr 3e-3:
    0.186.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Paper
from ..registry import register_segmenter
from .base import Segmenter

__all__ = ["SegNet", "Switches", "check_common_options", "max_unpool", "pool_with_switches", "segnet_vgg16",
           "vgg16_bn_encoder"]

SEGNET = Paper("SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation",
               "V. Badrinarayanan, A. Kendall, R. Cipolla", 2017, "https://arxiv.org/abs/1511.00561")

# VGG-16, configuration D of Simonyan & Zisserman's Table 1: channels, "M" = 2x2/2 max-pool recording its indices.
VGG16_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# The decoder, deepest stage first (segnet_train.prototxt): each stage unpools, then these 3x3 conv + BN + ReLU
# widths; the last stage ends with conv1_1_D (3x3, 64 -> num_classes), which is not in this table.
SEGNET_DECODER = [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64]]

Switches = tuple[torch.Tensor, tuple[int, int]]  # (argmax indices into each H x W plane, the (H, W) pooled)


def pool_with_switches(x: torch.Tensor) -> tuple[torch.Tensor, Switches]:
    """2x2/2 max-pooling, rounding up, that records where each maximum was: returns the pooled map and its switches
    (the flat index of each maximum in its ``H x W`` plane, as ``F.max_pool2d(..., return_indices=True)``, and
    ``(H, W)``)."""
    y, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)  # (B, C, H, W) -> (B, C, ceil(H/2), ...)
    return y, (idx, (x.shape[-2], x.shape[-1]))


def max_unpool(y: torch.Tensor, switches: Switches) -> torch.Tensor:
    """Max-unpooling with recorded switches: each value goes back to the position of its maximum in the pooled
    ``H x W`` map, every other position is zero (SegNet Fig. 3, DeconvNet Fig. 3)."""
    idx, size = switches
    if idx.shape != y.shape:
        raise ValueError(f"switches of shape {tuple(idx.shape)} do not belong to a map of shape {tuple(y.shape)}")
    return F.max_unpool2d(y, idx, 2, 2, output_size=size)  # (B, C, h, w) -> (B, C, H, W)


def _conv_bn_relu(in_chs: int, out_chs: int, conv=nn.Conv2d) -> list[nn.Module]:
    return [conv(in_chs, out_chs, 3, padding=1), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True)]


def vgg16_bn_encoder(in_channels: int, width) -> nn.Sequential:
    """VGG-16's 13 convolutions with BN and its five pools, in the zoo's ``vgg16_bn`` ``features`` layout (keys
    ``0`` ... ``43``); the pools are placeholders that `encode` runs as `pool_with_switches`."""
    layers: list[nn.Module] = []
    chs = in_channels
    for item in VGG16_D:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True))
        else:
            layers += _conv_bn_relu(chs, width(item))
            chs = width(item)
    return nn.Sequential(*layers)


def encode(features: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, list[Switches]]:
    """Run `vgg16_bn_encoder`: pool5's map and the switches of pool1 ... pool5 (in that order)."""
    switches: list[Switches] = []
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            x, sw = pool_with_switches(x)
            switches.append(sw)
        else:
            x = layer(x)
    return x, switches


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions with zero biases, BN scale 1 / shift 0 (the zoo's VGG init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_common_options(name: str, num_classes, in_channels, width_mult, backbone_weights) -> None:
    """Validate the options SegNet and DeconvNet share; raise ValueError naming the option and what is valid."""
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} option {key} must be an integer >= 1, got {value!r}")
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not float(width_mult) > 0.0:
        raise ValueError(f"{name} option width_mult must be a number > 0, got {width_mult!r}")
    if backbone_weights is not None and float(width_mult) != 1.0:
        raise ValueError(f"{name}: backbone_weights are a vgg16_bn checkpoint, which fits only width_mult=1.0, "
                         f"got width_mult={width_mult!r}")


def load_features(features: nn.Sequential, vgg: nn.Module, name: str) -> None:
    """Copy a vgg16_bn's ``features`` (convolutions and BN, running statistics included) into ``features``."""
    theirs, mine = getattr(vgg, "features", nn.Sequential()).state_dict(), features.state_dict()
    wrong = [k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape]
    if wrong or len(theirs) != len(mine):
        shown = ", ".join(f"features.{k} {tuple(mine[k].shape)} vs "
                          f"{tuple(theirs[k].shape) if k in theirs else 'missing'}" for k in wrong[:3])
        raise ValueError(f"the network's features are not {name}'s VGG-16-BN encoder ({shown or 'other keys'}); "
                         f"use a vgg16_bn with this network's in_channels and width")
    with torch.no_grad():
        features.load_state_dict(theirs)


class SegNet(Segmenter):
    """SegNet (Sec. 3, Fig. 2): VGG-16-BN encoder, a mirrored decoder unpooling with the encoder's indices."""

    min_input_size = 1  # pooling rounds up and unpooling restores each recorded size

    def __init__(self, *, num_classes: int = 11, in_channels: int = 3, width_mult: float = 1.0,
                 backbone_weights: str | None = None) -> None:
        super().__init__()
        check_common_options(type(self).__name__, num_classes, in_channels, width_mult, backbone_weights)
        self.num_classes, self.in_channels = num_classes, in_channels

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.features = vgg16_bn_encoder(in_channels, width)  # keys as vgg16_bn's features
        stages, chs = [], width(512)
        for widths in SEGNET_DECODER:  # conv5_*_D first
            layers: list[nn.Module] = []
            for c in widths:
                layers += _conv_bn_relu(chs, width(c))
                chs = width(c)
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.classifier = nn.Conv2d(chs, num_classes, 3, padding=1)  # conv1_1_D: no BN, no ReLU; soft-max in the loss
        init_weights(self)
        if backbone_weights is not None:
            from ...registry import create_model

            self.load_backbone(create_model("vgg16_bn", weights=backbone_weights))

    def load_backbone(self, vgg: nn.Module) -> None:
        """Copy a vgg16_bn's convolutions and BN (``features.*``) into the encoder; its classifier is dropped."""
        load_features(self.features, vgg, "SegNet")

    def output_size(self, size: int) -> int:
        return size

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Switches]]:
        """pool5's map ``(B, 512, ceil(H/32), ceil(W/32))`` and the switches of pool1 ... pool5."""
        return encode(self.features, x)

    def decode(self, x: torch.Tensor, switches: list[Switches]) -> torch.Tensor:
        """Decoder stage i (deepest first) unpools with the switches of encoder pool ``5 - i``, then convolves."""
        for stage, sw in zip(self.decoder, reversed(switches)):
            x = stage(max_unpool(x, sw))  # (B, C, h, w) -> (B, C, 2h or 2h - 1, ...) -> (B, C', ...)
        return self.classifier(x)  # (B, 64, H, W) -> (B, K, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.decode(*self.encode(x))


_DEVIATIONS = (("input sizes that are not multiples of 32 work (ceil pooling, unpooling to the recorded size, as the "
                "authors' Upsample layers for 360x480); neither refused nor padded"),
               "width_mult < 1 shrinks every width for CPU training (not in the paper)")


#: digits-segmentation (64x64, 1 channel, 11 classes; `get_digits_recipe`): 1/4 width, the paper's median frequency
#: balancing (Sec. 3.2), Adam from scratch (measured: see the module docstring)
DIGITS_RECIPE = {"options": {"width_mult": 0.25}, "optimizer": "adam", "lr": 1e-3, "epochs": 10, "batch_size": 8,
                 "class_weighting": "median_frequency"}


@register_segmenter(SegNet, paper=SEGNET, input_size=(3, 360, 480), dataset="CamVid (11 classes)",
                    deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPE)
def segnet_vgg16(**kwargs) -> SegNet:
    """SegNet on VGG-16-BN: 13-conv encoder, pooling-index unpooling, 13-conv decoder (29,449,355 parameters, K=11)."""
    return SegNet(**kwargs)
