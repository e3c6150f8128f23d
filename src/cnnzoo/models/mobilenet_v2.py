"""MobileNet v2. Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018. https://arxiv.org/abs/1801.04381

Key ideas
    The block is an *inverted residual with linear bottleneck* (Fig. 3b, Table 1): a 1x1 convolution expands the
    narrow input t-fold (t = 6), a 3x3 depthwise convolution filters the wide map, and a 1x1 convolution projects
    it back to a narrow output *without* a non-linearity; the shortcut joins the narrow ends when stride is 1 and the
    widths agree. The argument of Section 3.2: the "manifold of interest" lives in a low-dimensional subspace, and a
    ReLU on a low-dimensional tensor destroys information, so the bottlenecks stay linear while the expanded layers
    carry the ReLU6 non-linearity (ReLU6 for low-precision robustness). Shortcuts between bottlenecks instead of
    between wide layers keep the memory footprint small (Section 5). The width multiplier of MobileNet v1 and the
    input resolution trade accuracy for cost (Table 6, Fig. 5).

Which table the code reproduces
    Table 2: a 3x3/2 conv to 32 channels, 17 bottlenecks (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 2),
    (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1), a 1x1 conv to 1280, global
    average pooling and the classifier: 3,504,872 parameters and 300M multiply-adds at 224 (torchvision's
    count; the paper prints 3.4M and 300M). ``width_mult`` is the paper's width multiplier (Table 6 / Fig. 5 use
    0.35-1.4); as in the paper it is not applied to the last 1x1 conv when below 1.

Training setup in the paper
    TensorFlow, RMSProp (decay and momentum 0.9), batch norm after every layer, weight decay 4e-5, initial
    learning rate 0.045 decayed by 0.98 per epoch, 16 GPU workers with batch 96 each.

This implementation
    torchvision's ``mobilenet_v2`` architecture: ``features.0`` stem, ``features.1``-``features.17`` the
    bottlenecks, ``features.18`` the last 1x1 conv, ``classifier.1`` the fc after dropout 0.2 (``drop_rate``).
    The bottleneck is the zoo's shared `cnnzoo.layers.InvertedResidual` (MobileNet v3 and EfficientNet use the same
    block with SE), whose keys are torchvision's MobileNetV3/EfficientNet ones (``block.0.0`` ... ``block.2.1``).
    torchvision's MobileNetV2 names the same tensors ``conv.0.0`` ... ``conv.2``, ``conv.3``: the registered
    torchvision converter renames them, so ``create_model("mobilenet_v2", weights=FILE)`` loads torchvision's
    file (one block and one layout for three families rather than a naming option kept only for this file).
    Expanded widths are round(t x c_in) and other widths ``make_divisible(c x width_mult, 8)``, as torchvision.
    BatchNorm eps 1e-5; He (fan-out) conv init, BN to identity, classifier N(0, 0.01) with zero bias, as
    torchvision. Options: ``width_mult``, ``drop_rate``, ``act_layer``, ``norm_layer``.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import InvertedResidual, conv_norm_act, get_act, init_conv_bn, make_divisible, strided_feature_info
from ..registry import Paper, register_converter, register_model
from .base import ZooModel

MOBILENET_V2 = Paper(
    "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    "M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen",
    2018,
    "https://arxiv.org/abs/1801.04381",
)

# Table 2: expansion t, output channels c, repeats n, stride of the first s; after a 3x3/2 conv to 32 channels,
# and followed by a 1x1 conv to 1280.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, LAST = 32, 1280


class MobileNetV2(ZooModel):
    """MobileNet v2 (Table 2), torchvision's architecture."""

    def __init__(self, *, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 drop_rate: float = 0.2, act_layer="relu6", norm_layer="batchnorm"):
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0 (the paper uses 0.35 to 1.4), got {width_mult}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        get_act(act_layer)
        self.num_classes, self.in_channels = num_classes, in_channels
        ch = make_divisible(STEM * width_mult)
        layers: list[nn.Module] = [conv_norm_act(in_channels, ch, 3, 2, norm_layer=norm_layer, act_layer=act_layer)]
        chain = [("features.0", ch, 2)]  # (module, channels, stride) for feature_info
        for t, c, n, s in SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(InvertedResidual(ch, out, round(ch * t), 3, stride, act_layer=act_layer,
                                               norm_layer=norm_layer))
                chain.append((f"features.{len(layers) - 1}", out, stride))
                ch = out
        # Section 6.1: the width multiplier is not applied to the last conv when below 1
        self.num_features = make_divisible(LAST * max(1.0, width_mult))
        layers.append(conv_norm_act(ch, self.num_features, 1, norm_layer=norm_layer, act_layer=act_layer))
        chain.append((f"features.{len(layers) - 1}", self.num_features, 1))
        self.features = nn.Sequential(*layers)
        self.feature_info = strided_feature_info(chain)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes))
        init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # torchvision's classifier init
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, H, W) -> (B, 1280, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier[1] = nn.Linear(self.num_features, num_classes, device=self.classifier[1].weight.device)


_TV_BLOCK = re.compile(r"^(features\.\d+)\.conv\.(\d+)\.(.+)$")


def from_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's MobileNetV2 keys -> the shared InvertedResidual's: ``conv.0``/``conv.1`` (conv-BN-ReLU6 units)
    stay ``block.0``/``block.1``; the projection's bare conv and BN (``conv.N-1``, ``conv.N``) become
    ``block.N-1.0`` and ``block.N-1.1``."""
    last: dict[str, int] = {}
    for k in sd:
        m = _TV_BLOCK.match(k)
        if m:
            last[m.group(1)] = max(last.get(m.group(1), 0), int(m.group(2)))
    if not last:
        raise ValueError("not a torchvision MobileNetV2 state dict (no features.N.conv.* keys)")
    out = {}
    for k, v in sd.items():
        m = _TV_BLOCK.match(k)
        if m is None:
            out[k] = v
            continue
        prefix, j, rest = m.group(1), int(m.group(2)), m.group(3)
        n = last[prefix]
        if j < n - 1:
            out[f"{prefix}.block.{j}.{rest}"] = v
        else:  # the projection: conv at n-1, its BN at n
            out[f"{prefix}.block.{n - 1}.{j - (n - 1)}.{rest}"] = v
    return out


def to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `from_torchvision`: a cnnzoo mobilenet_v2 state dict in torchvision's keys."""
    pattern = re.compile(r"^(features\.\d+)\.block\.(\d+)\.(.+)$")
    last: dict[str, int] = {}
    for k in sd:
        m = pattern.match(k)
        if m:
            last[m.group(1)] = max(last.get(m.group(1), 0), int(m.group(2)))
    out = {}
    for k, v in sd.items():
        m = pattern.match(k)
        if m is None:
            out[k] = v
            continue
        prefix, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if j < last[prefix]:
            out[f"{prefix}.conv.{j}.{rest}"] = v
        else:  # block.N.0.x -> conv.N.x, block.N.1.x -> conv.N+1.x
            sub, rest = rest.split(".", 1)
            out[f"{prefix}.conv.{j + int(sub)}.{rest}"] = v
    return out


@register_model(MobileNetV2, paper=MOBILENET_V2, input_size=(3, 224, 224), counterparts={"torchvision": "mobilenet_v2"})
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNet v2 1.0 (Table 2; width_mult scales it)."""
    return MobileNetV2(**kwargs)


register_converter("mobilenet_v2", "torchvision")(from_torchvision)
