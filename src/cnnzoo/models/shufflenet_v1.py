"""ShuffleNet (v1). Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
Devices", CVPR 2018. https://arxiv.org/abs/1707.01083

Key ideas
    In a small network the 1x1 convolutions dominate the cost (93% of ResNeXt's multiply-adds). ShuffleNet makes
    them *pointwise group convolutions* (g groups: g times cheaper) and, because stacked group convolutions never
    mix the groups, *shuffles the channels* after the first one (Sec. 3.1, Fig. 1): reshape to (g, C/g), transpose,
    flatten. The ShuffleNet unit (Fig. 2) is a bottleneck residual unit: 1x1 GConv -> BN -> ReLU -> channel shuffle
    -> 3x3 depthwise conv (BN, no ReLU) -> 1x1 GConv -> BN, added to the input; a stride-2 unit instead concatenates
    the branch with a 3x3/2 average pool of the input (more channels for almost no cost), ReLU after the merge. The
    bottleneck has 1/4 of the unit's output channels. For a fixed budget, more groups allow wider feature maps.

Which table the code reproduces
    Table 1: conv1 24 3x3/2, max-pool 3x3/2, Stage 2 / 3 / 4 of 1 + 3, 1 + 7, 1 + 3 units (the first of each with
    stride 2), global pool, fc; output channels per stage for g = 1, 2, 3, 4, 8: 144/288/576, 200/400/800,
    240/480/960, 272/544/1088, 384/768/1536 (about 140 MFLOPs each). Stage 2's first pointwise layer is not grouped
    (its 24 input channels are too few, Sec. 3.3). "ShuffleNet s x" scales the number of filters by s (Table 2:
    0.25x, 0.5x, 1x; Table 3/5: up to 2x). ShuffleNet 1x (g = 3) has 1,865,728 parameters (osmr/imgclsmob's
    exact count; the official repository: 1.9M).

Training setup in the paper
    ImageNet: weight decay 4e-5, linear-decay learning-rate policy from 0.5, batch 1024, 3 x 10^5 iterations; less
    aggressive scale augmentation than for large networks (small networks underfit). 224x224 input.

This implementation
    One class for every g and width: ``shufflenet_v1_g1``, ``_g2``, ``_g3``, ``_g4``, ``_g8`` (Table 1's columns)
    with ``width_mult`` for "ShuffleNet s x" (any s > 0). Deviation: the paper does not say how scaled widths are
    rounded; we scale every layer (conv1 included) and round each stage's output to a multiple of 4g (the
    bottleneck, a quarter of it, must split into g groups) and conv1 to a multiple of g, which leaves Table 1's 1x
    widths unchanged. Convolutions have no bias (BN follows each); the fc has one. Kaiming-normal (fan-out) conv
    init, BN weight 1 / bias 0 (the official code draws N(0, 1/fan-in) instead; the paper gives no init). The
    channel shuffle is `cnnzoo.layers.channel_shuffle` (shared with ShuffleNet v2). Options: ``groups``,
    ``width_mult``, ``drop_rate`` (dropout before the fc; the paper uses none), ``num_classes``, ``in_channels``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ChannelShuffle, init_conv_bn
from ..registry import Paper, register_model
from .base import PooledFcModel

SHUFFLENET = Paper(
    "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
    "X. Zhang, X. Zhou, M. Lin, J. Sun",
    2018,
    "https://arxiv.org/abs/1707.01083",
)

# Table 1: output channels of Stages 2, 3, 4 for each number of groups g (at 1x), and conv1's 24 filters.
STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
STAGE_REPEATS = (4, 8, 4)  # Table 1: one stride-2 unit, then 3, 7, 3 stride-1 units
STEM_CHANNELS = 24


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(value / multiple + 0.5) * multiple)


class ShuffleUnit(nn.Module):
    """ShuffleNet unit (Fig. 2b, stride 1: add; Fig. 2c, stride 2: concat with a 3x3/2 average pool)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int, group_first: bool = True):
        super().__init__()
        self.stride = stride
        mid = out_channels // 4  # Sec. 3.3: bottleneck = 1/4 of the unit's output channels
        branch_out = out_channels - in_channels if stride == 2 else out_channels  # concat makes up the rest
        g1 = groups if group_first else 1
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)  # depthwise
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shuffle(F.relu(self.bn1(self.conv1(x))))  # (B, C, H, W) -> (B, C_out/4, H, W)
        y = self.bn2(self.conv2(y))  # depthwise 3x3, no ReLU (Sec. 3.2) -> (B, C_out/4, H/s, W/s)
        y = self.bn3(self.conv3(y))
        if self.stride == 1:
            return F.relu(x + y)
        # (B, C_in, H/2, W/2) ++ (B, C_out - C_in, H/2, W/2) -> (B, C_out, H/2, W/2)
        return F.relu(torch.cat([F.avg_pool2d(x, 3, stride=2, padding=1), y], 1))


class ShuffleNetV1(PooledFcModel):
    """ShuffleNet of Table 1 for ``groups`` g, scaled by ``width_mult`` (Table 2's "ShuffleNet s x")."""

    def __init__(self, *, groups: int = 3, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        if groups not in STAGE_CHANNELS:
            raise ValueError(f"groups must be one of {', '.join(map(str, STAGE_CHANNELS))} (Table 1); got {groups!r}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive (the paper uses 0.25 to 2), got {width_mult}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels, self.groups, self.drop_rate = num_classes, in_channels, groups, drop_rate
        stem = _round_to(STEM_CHANNELS * width_mult, groups)
        widths = [_round_to(c * width_mult, 4 * groups) for c in STAGE_CHANNELS[groups]]
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [{"num_chs": stem, "reduction": 2, "module": "conv1"}]
        ch, reduction = stem, 4
        for i, (n, out) in enumerate(zip(STAGE_REPEATS, widths)):
            units = [ShuffleUnit(ch, out, groups, 2, group_first=i > 0)]  # Stage 2's first 1x1 is not grouped
            units += [ShuffleUnit(out, out, groups, 1) for _ in range(n - 1)]
            self.add_module(f"stage{i + 2}", nn.Sequential(*units))
            ch, reduction = out, reduction * 2
            self.feature_info.append({"num_chs": out, "reduction": reduction, "module": f"stage{i + 2}"})
        self.num_features = ch
        self.fc = nn.Linear(ch, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))  # (B, 3, H, W) -> (B, 24, H/4, W/4)
        return self.stage4(self.stage3(self.stage2(x)))  # -> (B, C4, H/32, W/32)


_CARD = {"paper": SHUFFLENET, "input_size": (3, 224, 224)}
_ROUNDING = ("width_mult: scaled widths rounded to multiples of 4g (stages) and g (conv1); the paper gives no rule",)


# Card recipe hint: the paper's lr 0.5 for batch 1024 is 0.031 at the mnist5k recipe's batch of 64; at the recipe's
# 0.05 (and even 0.01) the first steps blow up (loss 50 averaged over the first 10 steps at 0.05, 8.3 at 0.01: the
# residual stream ends post-ReLU with mean ~1.4 over 240-1536 channels, so one fc step moves the logits a lot) and
# 60 steps at 64 px leave g1 / g3 / g8 at 19.0% / 12.9% / 18.1%. At 0.0125: 71.5% / 70.5% / 65.7% (g2 80.2%).
_RECIPE = {"optim.lr": 0.0125}


@register_model(ShuffleNetV1, deviations=_ROUNDING, recipe=_RECIPE, **_CARD)
def shufflenet_v1_g1(**kwargs) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 1 (Table 1: 144/288/576 channels)."""
    return ShuffleNetV1(**{"groups": 1, **kwargs})


@register_model(ShuffleNetV1, deviations=_ROUNDING, recipe=_RECIPE, **_CARD)
def shufflenet_v1_g2(**kwargs) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 2 (Table 1: 200/400/800 channels)."""
    return ShuffleNetV1(**{"groups": 2, **kwargs})


@register_model(ShuffleNetV1, deviations=_ROUNDING, recipe=_RECIPE, **_CARD)
def shufflenet_v1_g3(**kwargs) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 3 (Table 1: 240/480/960 channels; the paper's headline model)."""
    return ShuffleNetV1(**{"groups": 3, **kwargs})


@register_model(ShuffleNetV1, deviations=_ROUNDING, recipe=_RECIPE, **_CARD)
def shufflenet_v1_g4(**kwargs) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 4 (Table 1: 272/544/1088 channels)."""
    return ShuffleNetV1(**{"groups": 4, **kwargs})


@register_model(ShuffleNetV1, deviations=_ROUNDING, recipe=_RECIPE, **_CARD)
def shufflenet_v1_g8(**kwargs) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 8 (Table 1: 384/768/1536 channels)."""
    return ShuffleNetV1(**{"groups": 8, **kwargs})
