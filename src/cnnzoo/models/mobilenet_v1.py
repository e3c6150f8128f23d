"""MobileNet v1. Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam, "MobileNets: Efficient Convolutional
Neural Networks for Mobile Vision Applications", arXiv 2017. https://arxiv.org/abs/1704.04861

Key ideas
    A standard kxk convolution filters and combines channels in one step. MobileNet factorises it into a depthwise
    convolution (one kxk filter per input channel) and a pointwise 1x1 convolution that mixes the channels, each
    followed by BN and ReLU (Fig. 3). For M input and N output channels on a D_F x D_F map the cost drops from
    k^2 M N D_F^2 to k^2 M D_F^2 + M N D_F^2, a ratio of 1/N + 1/k^2 (eq. 5): 8-9 times fewer multiply-adds for
    3x3 kernels, with little loss of accuracy (Table 4: 70.6% vs 71.7% for the same net with full convolutions).
    Two global hyper-parameters trade accuracy for cost: the width multiplier alpha thins every layer (M -> alpha M,
    N -> alpha N; cost and parameters fall roughly as alpha^2) and the resolution multiplier rho shrinks the input
    (cost falls as rho^2, parameters unchanged). 95% of the computation sits in the 1x1 convolutions (Table 2),
    which map onto fast GEMM routines.

Which table the code reproduces
    Table 1: a 3x3/2 convolution to 32 channels, then 13 depthwise separable layers of 64, 128 (/2), 128, 256 (/2),
    256, 512 (/2), 5 x 512, 1024 (/2), 1024, global average pooling and a fully connected layer: 4,231,976
    parameters and 569M multiply-adds at 224x224 (Table 1-2; the FC layer included). Table 6, the width multiplier:
    ``mobilenet_v1_075``, ``_050``, ``_025`` (alpha = 0.75, 0.5, 0.25 at 224: 325M, 149M, 41M multiply-adds).
    Table 7, the resolution multiplier: ``mobilenet_v1_100_192``, ``_160``, ``_128`` (alpha = 1 at 192, 160, 128
    pixels: 418M, 290M, 186M; the network is the same, its card's input size is not). Any other alpha:
    ``create_model("mobilenet_v1", width_mult=a)``; any other rho: feed smaller images (``--input``,
    ``data.input_size``).

Training setup in the paper
    TensorFlow, RMSprop with asynchronous gradient descent as for Inception V3; less regularisation and data
    augmentation than for large models (no side heads or label smoothing, fewer small crops), and very little or no
    weight decay on the depthwise filters, which have few parameters.

This implementation
    Module names and state-dict keys are timm's ``mobilenetv1_100`` (``conv_stem``, ``bn1``,
    ``blocks.S.I.conv_dw/bn1/conv_pw/bn2``, ``classifier``), the layers grouped into five stages that each start
    at a stride, so timm checkpoints load directly. timm (like TF-slim's released checkpoints) uses ReLU6 where
    the paper writes ReLU: the default here is the paper's ``act_layer="relu"``, and a timm file gets
    ``act_layer="relu6"`` applied by ``create_model(..., weights=FILE)`` (card counterpart). Table 1 prints stride 2
    for the last depthwise layer although its input and output are both 7x7; it is stride 1 here, as in every
    released model. Widths are ``make_divisible(c * alpha, 8)``: the paper's alphas give multiples of 8, so this
    only matters for other values. BatchNorm eps 1e-5 (PyTorch's and timm's; TF-slim uses 1e-3). The 7x7 average
    pool is adaptive (any input size). Options: ``width_mult`` (alpha), ``drop_rate`` (dropout before the
    classifier, 0 by default: the paper names none), ``act_layer``, ``norm_layer``. He (fan-out) initialisation
    of the convolutions, BN to identity, PyTorch's default for the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DepthwiseSeparableConv, get_act, get_norm, init_conv_bn, make_divisible
from ..registry import Counterpart, Paper, register_model
from .base import ZooModel

MOBILENET_V1 = Paper(
    "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
    "A. G. Howard, M. Zhu, B. Chen, D. Kalenichenko, W. Wang, T. Weyand, M. Andreetto, H. Adam",
    2017,
    "https://arxiv.org/abs/1704.04861",
)

# Table 1, after the 3x3/2 stem conv to 32 channels: (output channels, stride of the first layer, layers) of each
# stage of depthwise separable layers (the paper's last "s2" at 7x7 is stride 1, see the notes).
STAGES = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 6), (1024, 2, 2))
STEM = 32


class MobileNetV1(ZooModel):
    """MobileNet (Table 1) with width multiplier alpha; timm's layout."""

    def __init__(self, *, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 drop_rate: float = 0.0, act_layer="relu", norm_layer="batchnorm"):
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult (alpha) must be > 0 (the paper uses 1.0, 0.75, 0.5, 0.25), got {width_mult}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        get_act(act_layer)  # validates the name early
        self.num_classes, self.in_channels, self.drop_rate = num_classes, in_channels, drop_rate
        ch = make_divisible(STEM * width_mult)
        self.conv_stem = nn.Conv2d(in_channels, ch, 3, 2, 1, bias=False)
        self.bn1 = get_norm(norm_layer, ch)
        self.act1 = get_act(act_layer, inplace=True)
        self.blocks = nn.Sequential()
        self.feature_info, reduction = [], 2
        for i, (c, stride, n) in enumerate(STAGES):
            out = make_divisible(c * width_mult)
            stage = []
            for j in range(n):
                stage.append(DepthwiseSeparableConv(ch, out, 3, stride if j == 0 else 1, act_layer=act_layer,
                                                    norm_layer=norm_layer))
                ch = out
            reduction *= stride
            self.blocks.add_module(str(i), nn.Sequential(*stage))
            self.feature_info.append({"num_chs": ch, "reduction": reduction, "module": f"blocks.{i}"})
        self.num_features = ch
        self.classifier = nn.Linear(ch, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))  # (B, 3, H, W) -> (B, 32a, H/2, W/2)
        return self.blocks(x)  # -> (B, 1024a, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # Table 1: "Avg Pool 7x7" at 224
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes, device=self.classifier.weight.device)


# timm (and TF-slim) train MobileNet v1 with ReLU6; the paper writes ReLU.
_TIMM = (Counterpart("timm", "mobilenetv1_100", options={"act_layer": "relu6"}),)
_DEVIATIONS = ("ReLU as the paper's Fig. 3 (timm/TF-slim checkpoints use ReLU6: applied when loading one)",
               "last depthwise layer stride 1 (Table 1 prints s2 at 7x7, a typo)")


def _v1(width: float, kwargs: dict) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": width, **kwargs})


@register_model(MobileNetV1, paper=MOBILENET_V1, input_size=(3, 224, 224), counterparts=_TIMM,
                deviations=_DEVIATIONS)
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """1.0 MobileNet-224 (Table 1; alpha = width_mult = 1)."""
    return _v1(1.0, kwargs)


@register_model(MobileNetV1, paper=MOBILENET_V1, input_size=(3, 224, 224), deviations=_DEVIATIONS)
def mobilenet_v1_075(**kwargs) -> MobileNetV1:
    """0.75 MobileNet-224 (Table 6: alpha = 0.75)."""
    return _v1(0.75, kwargs)


@register_model(MobileNetV1, paper=MOBILENET_V1, input_size=(3, 224, 224), deviations=_DEVIATIONS)
def mobilenet_v1_050(**kwargs) -> MobileNetV1:
    """0.5 MobileNet-224 (Table 6: alpha = 0.5)."""
    return _v1(0.5, kwargs)


@register_model(MobileNetV1, paper=MOBILENET_V1, input_size=(3, 224, 224), deviations=_DEVIATIONS)
def mobilenet_v1_025(**kwargs) -> MobileNetV1:
    """0.25 MobileNet-224 (Table 6: alpha = 0.25)."""
    return _v1(0.25, kwargs)


@register_model(MobileNetV1, paper=MOBILENET_V1, input_size=(3, 192, 192), counterparts=_TIMM,
                deviations=_DEVIATIONS)
def mobilenet_v1_100_192(**kwargs) -> MobileNetV1:
    """1.0 MobileNet-192 (Table 7: resolution multiplier rho = 192/224; same network, 192x192 inputs)."""
    return _v1(1.0, kwargs)


@register_model(MobileNetV1, paper=MOBILENET_V1, input_size=(3, 160, 160), counterparts=_TIMM,
                deviations=_DEVIATIONS)
def mobilenet_v1_100_160(**kwargs) -> MobileNetV1:
    """1.0 MobileNet-160 (Table 7: rho = 160/224; same network, 160x160 inputs)."""
    return _v1(1.0, kwargs)


@register_model(MobileNetV1, paper=MOBILENET_V1, input_size=(3, 128, 128), counterparts=_TIMM,
                deviations=_DEVIATIONS)
def mobilenet_v1_100_128(**kwargs) -> MobileNetV1:
    """1.0 MobileNet-128 (Table 7: rho = 128/224; same network, 128x128 inputs)."""
    return _v1(1.0, kwargs)
