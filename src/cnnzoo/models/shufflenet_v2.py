"""ShuffleNet V2. Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design",
ECCV 2018. https://arxiv.org/abs/1807.11164

Key ideas
    FLOPs are an indirect measure of speed: memory access cost (MAC) and the degree of parallelism matter too. Four
    guidelines from controlled experiments (Sec. 2): G1 equal input and output widths minimise MAC for a given FLOP
    count; G2 excessive group convolution increases MAC; G3 network fragmentation (many small branches) reduces
    parallelism; G4 element-wise operations (ReLU, additions) are not negligible. The ShuffleNet V2 unit (Fig. 3c)
    follows them: a *channel split* sends half the channels through untouched and the other half through 1x1 conv
    -> 3x3 depthwise conv -> 1x1 conv (plain, not grouped; equal widths), the halves are concatenated (no addition)
    and channel-shuffled. The down-sampling unit (Fig. 3d) has no split: both branches see all channels (the left
    one a 3x3/2 depthwise conv + 1x1 conv), doubling the width.

Which table the code reproduces
    Table 5: conv1 24 3x3/2, max-pool 3x3/2, Stage 2 / 3 / 4 of 1 + 3, 1 + 7, 1 + 3 units, conv5 1x1, global pool,
    fc; output channels 48/96/192/1024 (0.5x), 116/232/464/1024 (1x), 176/352/704/1024 (1.5x) and 244/488/976/2048
    (2x): 41, 146, 299 and 591 MFLOPs.

Training setup in the paper
    As ShuffleNet v1 (Zhang et al. 2018): ImageNet, weight decay 4e-5, linear-decay learning rate from 0.5, batch
    1024, 3 x 10^5 iterations, 224x224 input.

This implementation
    torchvision's module layout and state-dict keys (``conv1``, ``stage2``-``stage4`` of units with ``branch1`` /
    ``branch2``, ``conv5``, ``fc``), so torchvision checkpoints load unchanged; torchvision calls the unit
    ``InvertedResidual``, although it is the paper's Fig. 3c/d unit, not MobileNet v2's. PyTorch's default init, as
    torchvision. Convolutions have no bias (BN follows each). Options: ``stage_out_channels`` (Table 5's column),
    ``stages_repeats``, ``drop_rate`` (dropout before the fc; none in the paper). The channel shuffle is
    `cnnzoo.layers.channel_shuffle` (shared with ShuffleNet v1), with 2 groups.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import channel_shuffle
from ..registry import Paper, register_model
from .base import PooledFcModel

SHUFFLENET_V2 = Paper(
    "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design",
    "N. Ma, X. Zhang, H.-T. Zheng, J. Sun",
    2018,
    "https://arxiv.org/abs/1807.11164",
)

# Table 5: output channels of conv1, Stage 2, 3, 4 and conv5 for each width; units per stage (1 stride-2 + rest).
STAGE_OUT_CHANNELS: dict[str, tuple[int, ...]] = {
    "0.5x": (24, 48, 96, 192, 1024),
    "1.0x": (24, 116, 232, 464, 1024),
    "1.5x": (24, 176, 352, 704, 1024),
    "2.0x": (24, 244, 488, 976, 2048),
}
STAGES_REPEATS = (4, 8, 4)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class ShuffleV2Block(nn.Module):
    """ShuffleNet V2 unit: Fig. 3c (stride 1: channel split) or Fig. 3d (stride 2: both branches see everything)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        branch = out_channels // 2
        if stride == 1 and in_channels != 2 * branch:
            raise ValueError(f"a stride-1 unit keeps its width: in_channels {in_channels} != {out_channels}")
        if stride == 2:  # left branch of Fig. 3d: 3x3/2 depthwise conv + BN, 1x1 conv + BN + ReLU
            self.branch1 = nn.Sequential(*_conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, relu=False),
                                         *_conv_bn(in_channels, branch, 1))
        # right branch: 1x1 conv + BN + ReLU, 3x3 depthwise (stride) + BN, 1x1 conv + BN + ReLU (G1: equal widths)
        self.branch2 = nn.Sequential(*_conv_bn(in_channels if stride == 2 else branch, branch, 1),
                                     *_conv_bn(branch, branch, 3, stride, groups=branch, relu=False),
                                     *_conv_bn(branch, branch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)  # channel split: (B, C, H, W) -> 2 x (B, C/2, H, W)
            out = torch.cat([x1, self.branch2(x2)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)  # (B, C, H, W) -> (B, C_out, H/2, W/2)
        return channel_shuffle(out, 2)


class ShuffleNetV2(PooledFcModel):
    """ShuffleNet V2 of Table 5 (torchvision's layout)."""

    def __init__(self, *, stage_out_channels: tuple[int, ...] = STAGE_OUT_CHANNELS["1.0x"],
                 stages_repeats: tuple[int, ...] = STAGES_REPEATS, num_classes: int = 1000, in_channels: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        stage_out_channels, stages_repeats = tuple(stage_out_channels), tuple(stages_repeats)
        if len(stages_repeats) != 3 or any(n < 1 for n in stages_repeats):
            raise ValueError(f"stages_repeats must list 3 stages of >= 1 units, got {stages_repeats}")
        if len(stage_out_channels) != 5 or any(c < 1 for c in stage_out_channels):
            raise ValueError(f"stage_out_channels must list 5 widths (conv1, stages 2-4, conv5), "
                             f"got {stage_out_channels}")
        if any(c % 2 for c in stage_out_channels[1:4]):
            raise ValueError(f"stage widths must be even (each unit splits them in two), got {stage_out_channels[1:4]}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels, self.drop_rate = num_classes, in_channels, drop_rate
        stem = stage_out_channels[0]
        self.conv1 = nn.Sequential(*_conv_bn(in_channels, stem, 3, 2))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [{"num_chs": stem, "reduction": 2, "module": "conv1"}]
        ch, reduction = stem, 4
        for i, (n, out) in enumerate(zip(stages_repeats, stage_out_channels[1:4])):
            units = [ShuffleV2Block(ch, out, 2)] + [ShuffleV2Block(out, out, 1) for _ in range(n - 1)]
            self.add_module(f"stage{i + 2}", nn.Sequential(*units))
            ch, reduction = out, reduction * 2
            if i < 2:
                self.feature_info.append({"num_chs": out, "reduction": reduction, "module": f"stage{i + 2}"})
        self.num_features = stage_out_channels[4]
        self.conv5 = nn.Sequential(*_conv_bn(ch, self.num_features, 1))
        self.feature_info.append({"num_chs": self.num_features, "reduction": reduction, "module": "conv5"})
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))  # (B, 3, H, W) -> (B, 24, H/4, W/4)
        x = self.stage4(self.stage3(self.stage2(x)))  # -> (B, C4, H/32, W/32)
        return self.conv5(x)  # -> (B, num_features, H/32, W/32)


def _v2(width: str, kwargs: dict) -> ShuffleNetV2:
    return ShuffleNetV2(**{"stage_out_channels": STAGE_OUT_CHANNELS[width], **kwargs})


_CARD = {"paper": SHUFFLENET_V2, "input_size": (3, 224, 224)}


@register_model(ShuffleNetV2, counterparts={"torchvision": "shufflenet_v2_x0_5"}, **_CARD)
def shufflenet_v2_x0_5(**kwargs) -> ShuffleNetV2:
    """ShuffleNet V2 0.5x (Table 5: 48/96/192/1024 channels, 41 MFLOPs)."""
    return _v2("0.5x", kwargs)


@register_model(ShuffleNetV2, counterparts={"torchvision": "shufflenet_v2_x1_0"}, **_CARD)
def shufflenet_v2_x1_0(**kwargs) -> ShuffleNetV2:
    """ShuffleNet V2 1x (Table 5: 116/232/464/1024 channels, 146 MFLOPs)."""
    return _v2("1.0x", kwargs)


@register_model(ShuffleNetV2, counterparts={"torchvision": "shufflenet_v2_x1_5"}, **_CARD)
def shufflenet_v2_x1_5(**kwargs) -> ShuffleNetV2:
    """ShuffleNet V2 1.5x (Table 5: 176/352/704/1024 channels, 299 MFLOPs)."""
    return _v2("1.5x", kwargs)


@register_model(ShuffleNetV2, counterparts={"torchvision": "shufflenet_v2_x2_0"}, **_CARD)
def shufflenet_v2_x2_0(**kwargs) -> ShuffleNetV2:
    """ShuffleNet V2 2x (Table 5: 244/488/976/2048 channels, 591 MFLOPs)."""
    return _v2("2.0x", kwargs)
