"""MobileNet v3. Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam, "Searching for
MobileNetV3", ICCV 2019. https://arxiv.org/abs/1905.02244

Key ideas
    The blocks were found by platform-aware architecture search (MnasNet's block-wise search for the overall
    structure, then NetAdapt to trim the filters of each layer, optimising accuracy under a latency target on a
    Pixel phone). The building block is MobileNet v2's inverted residual with linear bottleneck plus, in some
    blocks, a squeeze-and-excitation module after the depthwise conv whose squeeze width is 1/4 of the expanded
    channels and whose gate is a hard sigmoid (Fig. 4). Two hand-made changes: the expensive layers at both ends
    were redesigned (16 instead of 32 stem filters; the last stage pools *before* the 1280/1024-wide 1x1 layer,
    Fig. 5, saving 7 ms / 11% of the latency at no accuracy cost), and a new non-linearity, h-swish(x) =
    x ReLU6(x + 3) / 6, a piecewise approximation of swish x sigmoid(x) that is cheap on mobile hardware and exact in
    quantised arithmetic, used in the second half of the network where activation maps are small (eq. 1-2); the
    gate h-sigmoid(x) = ReLU6(x + 3) / 6.

Which table the code reproduces
    Table 1 (MobileNetV3-Large: 15 bottlenecks, 960-wide last conv, 1280-wide head; 5,483,032 parameters and 217M
    multiply-adds at 224, torchvision's count; paper 5.4M, 219M) and Table 2 (MobileNetV3-Small: 11 bottlenecks,
    576-wide last conv, 1024-wide head; 2,542,856 parameters, 57M; paper 2.5M, 56M). Each row: kernel, expansion
    width, output width, SE, non-linearity (RE = ReLU, HS = h-swish), stride. ``width_mult`` is the multiplier of
    Table 3 / Fig. 6 (0.35-1.25).

Training setup in the paper
    TensorFlow, synchronous training on 4x4 TPU Pods, RMSPropOptimizer with 0.9 momentum, initial learning rate 0.1,
    batch 4096 (128 per chip), learning rate decay 0.01 every 3 epochs, dropout 0.8 (keep), l2 weight decay 1e-5,
    the Inception preprocessing, exponential moving average of the weights with decay 0.9999; BN with average decay
    0.99.

This implementation
    torchvision's ``mobilenet_v3_large`` / ``mobilenet_v3_small`` layout and keys (``features.0`` stem,
    ``features.N.block.K`` the bottlenecks, the last 1x1 conv, ``classifier.0`` 1280/1024-wide linear + h-swish +
    dropout 0.2 + ``classifier.3``), so torchvision checkpoints load directly. The bottleneck is the zoo's shared
    `cnnzoo.layers.InvertedResidual` with `cnnzoo.layers.SEModule` (squeeze ``make_divisible(C/4, 8)``, ReLU,
    h-sigmoid gate). The paper's "conv2d 1x1, NBN" head layers after pooling are ``nn.Linear`` (same weights).
    BatchNorm eps 1e-3 as torchvision (TF's; ``bn_eps``). BatchNorm momentum 0.1, PyTorch's default, where the
    paper (TF decay 0.99) and torchvision use 0.01 (``bn_momentum=0.01``): it only sets how fast the running
    statistics follow training, and at 0.01 they need some 300 steps to forget their (0, 1) start, so a short run
    evaluates near chance (mobilenet_v3_small on mnist5k at 64 px, 60 SGD steps of 32, seeds 0-4: 10-22% test
    accuracy at 0.01, 68-80% at 0.1). Checkpoints load the same.
    Table 2 marks SE on Small's last 1x1 conv (576); the official TF model and torchvision have none there, nor
    here. h-swish and h-sigmoid are the paper's, x ReLU6(x+3)/6 and ReLU6(x+3)/6. Note 003 writes h-sigmoid as
    0 below -2.5, 0.2x + 0.5 between, 1 above 2.5: that is Keras' old ``hard_sigmoid``, a different function
    (slope 1/5, not 1/6); ``gate_layer="hard_sigmoid_keras"`` builds the SE gates with it (any activation name is
    accepted, e.g. "sigmoid" for the original SE gate). Options: ``width_mult``, ``drop_rate``, ``gate_layer``,
    ``bn_eps``, ``bn_momentum``, ``output_stride`` (default 32: Tables 1-2; 16: the segmentation backbone of
    Sec. 6.4, the last stage's stride 2 replaced by dilation 2 in its depthwise convs, torchvision's
    ``dilated=True``; 8: also the 1/16 stage dilated by 2 and the last by 4, as timm's ``output_stride``; no
    parameter changes, so weights load; ``feature_info`` reports the dilated stages at the reduction they keep).
    He (fan-out) conv init, BN to identity, zero biases, as torchvision; the head's two linear layers as timm
    initialises them (N(0, 2/1280) and U(+-1/sqrt(classes))), not torchvision's N(0, 0.01), which a short run
    barely trains out of (same runs: 29-37% training accuracy over the last 20 steps vs 71-73%).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (
    InvertedResidual,
    SEModule,
    conv_norm_act,
    get_act,
    init_classifier_uniform,
    init_conv_bn,
    make_divisible,
    strided_feature_info,
)
from ..registry import Paper, register_model
from .base import ZooModel

MOBILENET_V3 = Paper(
    "Searching for MobileNetV3",
    "A. Howard, M. Sandler, G. Chu, L.-C. Chen, B. Chen, M. Tan, W. Wang, Y. Zhu, R. Pang, V. Vasudevan, Q. V. Le, "
    "H. Adam",
    2019,
    "https://arxiv.org/abs/1905.02244",
)

# Tables 1 and 2, the bneck rows: (kernel, expansion width, output width, SE, non-linearity, stride), after a
# 3x3/2 h-swish conv to 16 channels; then a 1x1 h-swish conv, pooling, and the head of the given width.
LARGE = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
SMALL = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
# variant -> (bneck table, head width)
VARIANTS = {"large": (LARGE, 1280), "small": (SMALL, 1024)}
STEM = 16
#: output_stride: 32 (Tables 1-2) or the dilated backbones of Sec. 6.4 (16) and DeepLab (8)
OUTPUT_STRIDES = (8, 16, 32)
NONLINEARITY = {"RE": "relu", "HS": "hard_swish"}


class MobileNetV3(ZooModel):
    """MobileNetV3-Large (Table 1) or -Small (Table 2), torchvision's layout."""

    def __init__(self, *, variant: str = "large", width_mult: float = 1.0, num_classes: int = 1000,
                 in_channels: int = 3, drop_rate: float = 0.2, gate_layer="hard_sigmoid",
                 bn_eps: float = 1e-3, bn_momentum: float = 0.1, output_stride: Literal[8, 16, 32] = 32):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0 (the paper uses 0.35 to 1.25), got {width_mult}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if not bn_eps > 0 or not 0 <= bn_momentum <= 1:
            raise ValueError(f"bn_eps must be > 0 and bn_momentum in [0, 1], got {bn_eps}, {bn_momentum}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))} (the last stages "
                             f"dilated instead of strided), got {output_stride!r}")
        get_act(gate_layer)  # an unknown name fails here, listing the valid ones
        self.num_classes, self.in_channels, self.variant = num_classes, in_channels, variant
        table, head = VARIANTS[variant]
        norm = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        ch = make_divisible(STEM * width_mult)
        layers: list[nn.Module] = [conv_norm_act(in_channels, ch, 3, 2, norm_layer=norm, act_layer="hard_swish")]
        chain = [("features.0", ch, 2)]
        net_stride, dilation = 2, 1
        self.output_stride = output_stride
        for k, exp, out, se, nl, stride in table:
            first_dilated = stride > 1 and net_stride >= output_stride
            if first_dilated:
                # atrous instead of strided (Sec. 6.4: "atrous convolution to the last block"), as torchvision's
                # dilated=True: stride 1, and this block already at the doubled dilation (unlike ResNet's)
                stride, dilation = 1, dilation * 2
            net_stride *= stride
            mid, out = make_divisible(exp * width_mult), make_divisible(out * width_mult)
            # Sec. 5.3: SE squeeze "fixed to 1/4 of the number of channels in expansion layer" (rounded to 8s)
            attn = partial(SEModule, hidden_channels=make_divisible(mid // 4), act_layer="relu",
                           gate_layer=gate_layer) if se else None
            layers.append(InvertedResidual(ch, out, mid, k, stride, dilation=dilation, act_layer=NONLINEARITY[nl],
                                           norm_layer=norm, attn_layer=attn, residual=not first_dilated))
            chain.append((f"features.{len(layers) - 1}", out, stride))
            ch = out
        self.num_features = 6 * ch  # Tables 1-2: 960 = 6 x 160, 576 = 6 x 96 (torchvision keeps the 6x at any width)
        layers.append(conv_norm_act(ch, self.num_features, 1, norm_layer=norm, act_layer="hard_swish"))
        chain.append((f"features.{len(layers) - 1}", self.num_features, 1))
        self.features = nn.Sequential(*layers)
        self.feature_info = strided_feature_info(chain)
        self._head_width = make_divisible(head * width_mult)
        # Fig. 5: pool first, then the "1x1 conv, NBN" (a linear layer on the pooled vector) + h-swish, then the fc
        self.classifier = nn.Sequential(nn.Linear(self.num_features, self._head_width), get_act("hard_swish"),
                                        nn.Dropout(drop_rate), nn.Linear(self._head_width, num_classes))
        init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)
        # timm's init of the head (its conv_head and classifier), not torchvision's N(0, 0.01) for both layers: two
        # stacked linear layers that small start near a saddle (gradients of each scale with the other's weights),
        # and a short run barely leaves it (see the notes: 29-37% training accuracy after 60 steps vs 71-73%).
        nn.init.normal_(self.classifier[0].weight, 0, math.sqrt(2 / self._head_width))
        nn.init.zeros_(self.classifier[0].bias)
        init_classifier_uniform(self.classifier[3])

    @property
    def head_hidden_size(self) -> int:
        return self._head_width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, H, W) -> (B, 960 | 576, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = self.classifier[2](self.classifier[1](self.classifier[0](x)))  # -> (B, 1280 | 1024)
        return x if pre_logits else self.classifier[3](x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier[3] = nn.Linear(self._head_width, num_classes, device=self.classifier[3].weight.device)
        init_classifier_uniform(self.classifier[3])


_DEVIATIONS = (
    ("h-sigmoid gate = ReLU6(x+3)/6 as the paper; note 003's 0.2x+0.5 clipped at +-2.5 (Keras' old hard_sigmoid) is "
     "gate_layer='hard_sigmoid_keras'"),
    "BatchNorm momentum 0.1 (paper/torchvision: 0.01, bn_momentum=0.01, with which short runs evaluate at chance)",
    "head linear layers initialised as timm does (torchvision: N(0, 0.01), slow to start training)",
)


@register_model(MobileNetV3, paper=MOBILENET_V3, input_size=(3, 224, 224),
                counterparts={"torchvision": "mobilenet_v3_large"}, deviations=_DEVIATIONS)
def mobilenet_v3_large(**kwargs) -> MobileNetV3:
    """MobileNetV3-Large 1.0 (Table 1)."""
    return MobileNetV3(**{"variant": "large", **kwargs})


@register_model(MobileNetV3, paper=MOBILENET_V3, input_size=(3, 224, 224),
                counterparts={"torchvision": "mobilenet_v3_small"},
                deviations=(*_DEVIATIONS, "no SE on the last 1x1 conv (Table 2 marks one; the released model has none)"))
def mobilenet_v3_small(**kwargs) -> MobileNetV3:
    """MobileNetV3-Small 1.0 (Table 2)."""
    return MobileNetV3(**{"variant": "small", **kwargs})
