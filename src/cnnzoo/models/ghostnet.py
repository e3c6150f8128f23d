"""GhostNet. Han, Wang, Tian, Guo, Xu, Xu, "GhostNet: More Features from Cheap Operations", CVPR 2020.
https://arxiv.org/abs/1911.11907

Key ideas
    The feature maps of a trained CNN hold many near-duplicates ("ghosts" of each other, Fig. 1). The Ghost module
    (Sec. 3.1, Fig. 2b) makes m = n/s *intrinsic* maps with an ordinary (1x1) convolution and derives the other
    (s-1)m from them by cheap linear operations, one depthwise dxd convolution per intrinsic map, the intrinsic maps
    themselves kept as the identity ghost: about s times fewer FLOPs and parameters than the convolution it replaces
    (eq. 4-5, with s = 2, d = 3). The Ghost bottleneck (Fig. 3) stacks two Ghost modules like MobileNetV2's inverted
    residual: the first expands (with ReLU), the second projects back (no ReLU), a 3x3/2 depthwise conv between them
    when the stride is 2, optional squeeze-and-excitation, and a residual shortcut (a depthwise + pointwise conv
    pair when the shape changes).

Which table the code reproduces
    Table 1 (GhostNet 1x, 224x224): conv 16 3x3/2, sixteen Ghost bottlenecks (#exp, #out, SE, stride per row),
    conv 960 1x1, global average pool, conv 1280 1x1 (+ ReLU), fc 1000; 5.2M parameters, 141 MFLOPs. Table 7's
    width multipliers (0.5x, 1.3x) scale every channel count except the 1280-wide head (``width_mult``).

Training setup in the paper
    ImageNet at 224x224 (Sec. 4.2), following the MobileNetV3 / FBNet-style setup of the time: SGD with momentum,
    small weight decay, a large batch over 8 GPUs, dropout 0.2 before the fc.

This implementation
    timm's ``ghostnet_100`` layout: ``conv_stem``/``bn1``, ``blocks.0`` ... ``blocks.9`` (``blocks.9`` is the 960-wide
    1x1 ConvBnAct), ``conv_head``, ``classifier``; each bottleneck has ``ghost1``, ``conv_dw``/``bn_dw`` (stride 2
    only), ``se``, ``ghost2`` and ``shortcut``. timm checkpoints load through a converter that renames the SE convs
    (timm's ``se.conv_reduce``/``se.conv_expand`` are cnnzoo's shared `SEModule`'s ``fc1``/``fc2``). As timm and the
    official code: a Ghost module makes ceil(n/s) intrinsic maps and keeps the first n of the concatenation; the SE
    squeezes to make_divisible(C/4, 4) channels, with a hard-sigmoid gate ReLU6(x + 3)/6; widths are
    make_divisible(c * width_mult, 4); PyTorch's default init. Options: ``width_mult``, ``drop_rate`` (0.2 as the
    paper), ``ratio`` (s) and ``dw_size`` (d) of the Ghost modules (Table 4/5 of the paper vary them; 2 and 3 in
    GhostNet), ``num_classes``, ``in_channels``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import SEModule, make_divisible
from ..registry import Counterpart, Paper, register_converter, register_model
from .base import ZooModel

GHOSTNET = Paper(
    "GhostNet: More Features from Cheap Operations",
    "K. Han, Y. Wang, Q. Tian, J. Guo, C. Xu, C. Xu",
    2020,
    "https://arxiv.org/abs/1911.11907",
)

# Table 1, one row per Ghost bottleneck: (kernel of the depthwise conv, #exp, #out, SE ratio, stride), grouped by
# timm's blocks.N (each group ends where the next stride-2 row starts, so blocks.N is also the feature stage).
CFGS: list[list[tuple[int, int, int, float, int]]] = [
    [(3, 16, 16, 0, 1)],
    [(3, 48, 24, 0, 2)],
    [(3, 72, 24, 0, 1)],
    [(5, 72, 40, 0.25, 2)],
    [(5, 120, 40, 0.25, 1)],
    [(3, 240, 80, 0, 2)],
    [(3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)],
    [(5, 672, 160, 0.25, 2)],
    [(5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)],
]
HEAD_CHANNELS = 1280  # Table 1's last conv, not scaled by the width multiplier


class GhostModule(nn.Module):
    """Ghost module (Fig. 2b): a 1x1 conv makes ceil(n/s) intrinsic maps, a dxd depthwise conv the ghosts."""

    def __init__(self, in_channels: int, out_channels: int, ratio: int = 2, dw_size: int = 3, relu: bool = True):
        super().__init__()
        self.out_channels = out_channels
        init = math.ceil(out_channels / ratio)

        def act() -> list[nn.Module]:
            return [nn.ReLU(inplace=True)] if relu else []

        self.primary_conv = nn.Sequential(nn.Conv2d(in_channels, init, 1, bias=False), nn.BatchNorm2d(init), *act())
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init, init * (ratio - 1), dw_size, 1, dw_size // 2, groups=init, bias=False),
            nn.BatchNorm2d(init * (ratio - 1)), *act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)  # (B, C, H, W) -> (B, m, H, W): intrinsic maps
        x2 = self.cheap_operation(x1)  # -> (B, (s-1)m, H, W): their ghosts
        return torch.cat([x1, x2], 1)[:, : self.out_channels]  # -> (B, n, H, W)


class GhostBottleneck(nn.Module):
    """Ghost bottleneck (Fig. 3): Ghost module (ReLU) [-> dw kxk/2 + BN] [-> SE] -> Ghost module, + shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, ratio: int = 2, dw_size: int = 3):
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, ratio, dw_size, relu=True)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_channels, mid_channels, kernel_size, stride, (kernel_size - 1) // 2,
                                     groups=mid_channels, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_channels)
        else:
            self.conv_dw = self.bn_dw = None
        self.se = (SEModule(mid_channels, hidden_channels=make_divisible(mid_channels * se_ratio, 4),
                            gate_layer="hard_sigmoid") if se_ratio > 0 else None)
        self.ghost2 = GhostModule(mid_channels, out_channels, ratio, dw_size, relu=False)
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Sequential()
        else:  # depthwise kxk (stride) + BN, pointwise 1x1 + BN
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=in_channels,
                          bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)  # (B, C_in, H, W) -> (B, C_exp, H, W)
        if self.conv_dw is not None:
            y = self.bn_dw(self.conv_dw(y))  # -> (B, C_exp, H/2, W/2)
        if self.se is not None:
            y = self.se(y)
        return self.ghost2(y) + self.shortcut(x)  # -> (B, C_out, H/s, W/s)


class ConvBnAct(nn.Module):
    """1x1 conv + BN + ReLU (timm's names: ``conv``, ``bn1``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv(x)))


class GhostNet(ZooModel):
    """GhostNet of Table 1, scaled by ``width_mult`` (Table 7)."""

    def __init__(self, *, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 drop_rate: float = 0.2, ratio: int = 2, dw_size: int = 3):
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive (the paper uses 0.5, 1.0, 1.3), got {width_mult}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if ratio < 2:
            raise ValueError(f"ratio (s) must be >= 2 (s = 1 would make no ghosts), got {ratio}")
        if dw_size < 1 or dw_size % 2 == 0:
            raise ValueError(f"dw_size (d) must be a positive odd kernel size, got {dw_size}")
        self.num_classes, self.in_channels, self.drop_rate = num_classes, in_channels, drop_rate
        stem = make_divisible(16 * width_mult, 4)
        self.conv_stem = nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = []
        stages, ch, reduction = [], stem, 2
        for i, rows in enumerate(CFGS):
            units = []
            for k, exp, out, se, s in rows:
                out_ch = make_divisible(out * width_mult, 4)
                units.append(GhostBottleneck(ch, make_divisible(exp * width_mult, 4), out_ch, k, s, se, ratio, dw_size))
                ch = out_ch
            stages.append(nn.Sequential(*units))
            next_stride = CFGS[i + 1][0][4] if i + 1 < len(CFGS) else 2
            reduction *= rows[0][4]
            if next_stride > 1 and i + 1 < len(CFGS):  # the last stage at this resolution
                self.feature_info.append({"num_chs": ch, "reduction": reduction, "module": f"blocks.{i}"})
        self.num_features = make_divisible(CFGS[-1][-1][1] * width_mult, 4)  # conv 960 1x1 (Table 1)
        stages.append(nn.Sequential(ConvBnAct(ch, self.num_features)))
        self.blocks = nn.Sequential(*stages)
        self.feature_info.append({"num_chs": self.num_features, "reduction": reduction,
                                  "module": f"blocks.{len(stages) - 1}"})
        self.conv_head = nn.Conv2d(self.num_features, HEAD_CHANNELS, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    @property
    def head_hidden_size(self) -> int:
        return HEAD_CHANNELS

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))  # (B, 3, H, W) -> (B, 16, H/2, W/2)
        return self.blocks(x)  # -> (B, 960, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act2(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1)  # pool, conv 1280 1x1: (B, 1280)
        if pre_logits:
            return x
        return self.classifier(F.dropout(x, self.drop_rate, self.training))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes, device=self.classifier.weight.device)


@register_converter("ghostnet_100", "timm")
def _from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's SqueezeExcite names its convs conv_reduce / conv_expand; the shared SEModule calls them fc1 / fc2."""
    return {k.replace(".se.conv_reduce.", ".se.fc1.").replace(".se.conv_expand.", ".se.fc2."): v
            for k, v in sd.items()}


@register_model(GhostNet, paper=GHOSTNET, input_size=(3, 224, 224),
                counterparts=(Counterpart("timm", "ghostnet_100"),))
def ghostnet_100(**kwargs) -> GhostNet:
    """GhostNet 1.0x (Table 1; width_mult=0.5 / 1.3 for Table 7's 0.5x / 1.3x)."""
    return GhostNet(**kwargs)
