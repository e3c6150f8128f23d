"""Xception. Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017.
https://arxiv.org/abs/1610.02357

Key ideas
    An Inception module factors a convolution into cross-channel correlations (1x1 convs) and spatial correlations
    (3x3 convs on a few channel segments). Taken to the extreme, every channel gets its own spatial filter: a
    *depthwise separable convolution* (depthwise kxk conv, then pointwise 1x1 conv; Sec. 2), which Xception uses for
    every convolution after the first two. The hypothesis: cross-channel and spatial correlations can be mapped
    entirely separately. 36 convolutional layers in 14 modules, all but the first and last with linear residual
    connections (Sec. 3), no non-linearity between the depthwise and the pointwise step (Fig. 10: better without).

Which table the code reproduces
    Figure 5: entry flow (conv 32 3x3/2, conv 64 3x3, then three modules of two separable convs 128, 256, 728 with
    a 3x3/2 max-pool and a 1x1/2 conv shortcut), middle flow (eight modules of three separable 728 convs with
    identity shortcuts), exit flow (separable 728 and 1024 + max-pool with a 1x1/2 conv shortcut, separable 1536 and
    2048, global average pool, logistic regression). Every conv and separable conv is followed by batch
    normalization. 22,855,952 parameters (Table 3: 22,855,952 for Xception at 1000 classes).

Training setup in the paper
    ImageNet: SGD, momentum 0.9, initial learning rate 0.045 decayed by 0.94 every 2 epochs, weight decay 1e-5,
    dropout 0.5 before the logistic regression layer, Polyak averaging at inference; 299x299 input (Sec. 4.3);
    60 NVIDIA K80 GPUs, about 3 days.

This implementation
    timm's ``legacy_xception`` layout and state-dict keys (``conv1``/``bn1``, ``conv2``/``bn2``, ``block1`` ...
    ``block12`` with ``rep`` (ReLU, SeparableConv2d, BN, ...) and ``skip``/``skipbn``, ``conv3``/``bn3``,
    ``conv4``/``bn4``, ``fc``), so its checkpoints (the Keras weights) load unchanged, and its init (Kaiming-normal
    fan-out convs, BN weight 1 / bias 0). The first two convs are unpadded (299 -> 149 -> 147), as in the paper's
    Keras model. Every separable conv is preceded by a ReLU except the first of block1 (it follows conv2's ReLU);
    block1 has no ReLU in front, as in Fig. 5. ``drop_rate`` is the paper's dropout before the fc (0.5; timm's
    default is 0, which only matters in training). Options: ``middle_blocks`` (8 in the paper), ``drop_rate``,
    ``num_classes``, ``in_channels``. The paper's optional fully connected layers before the logistic regression
    (Fig. 5, "optional") are not built, as in the paper's ImageNet model.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import init_conv_bn
from ..registry import Paper, register_model
from .base import PooledFcModel

XCEPTION = Paper(
    "Xception: Deep Learning with Depthwise Separable Convolutions",
    "F. Chollet",
    2017,
    "https://arxiv.org/abs/1610.02357",
)


class SeparableConv2d(nn.Module):
    """Depthwise kxk conv (one filter per channel) followed by a pointwise 1x1 conv, no non-linearity between."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))  # (B, C, H, W) -> (B, C, H, W) -> (B, C_out, H, W)


class Block(nn.Module):
    """A module of Fig. 5: ``reps`` x [ReLU, SeparableConv 3x3, BN] (+ 3x3/2 max-pool) + shortcut (identity or 1x1)."""

    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int = 1, start_with_relu: bool = True,
                 grow_first: bool = True):
        super().__init__()
        if out_channels != in_channels or stride != 1:  # Fig. 5: 1x1 conv, stride 2, + BN on the shortcut
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_channels)
        else:
            self.skip = None
        rep: list[nn.Module] = []
        for i in range(reps):
            # the module widens at its first conv (grow_first) or at its last (the exit flow's 728 -> 1024)
            cin = (in_channels if i == 0 else out_channels) if grow_first else in_channels
            cout = out_channels if grow_first or i == reps - 1 else in_channels
            rep += [nn.ReLU(inplace=i > 0), SeparableConv2d(cin, cout), nn.BatchNorm2d(cout)]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + skip  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)


class Xception(PooledFcModel):
    """Xception (Fig. 5), timm's legacy_xception layout."""

    def __init__(self, *, middle_blocks: int = 8, num_classes: int = 1000, in_channels: int = 3,
                 drop_rate: float = 0.5):
        super().__init__()
        if middle_blocks < 0:
            raise ValueError(f"middle_blocks must be >= 0 (the paper has 8), got {middle_blocks}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels, self.drop_rate = num_classes, in_channels, drop_rate
        # entry flow: two unpadded convs (299 -> 149 -> 147), then 128, 256, 728-wide modules with stride 2
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = nn.ReLU(inplace=True)
        blocks = [Block(64, 128, 2, 2, start_with_relu=False), Block(128, 256, 2, 2), Block(256, 728, 2, 2)]
        blocks += [Block(728, 728, 3, 1) for _ in range(middle_blocks)]  # middle flow
        blocks.append(Block(728, 1024, 2, 2, grow_first=False))  # exit flow
        for i, block in enumerate(blocks):
            self.add_module(f"block{i + 1}", block)
        self.num_blocks = len(blocks)
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.act3 = nn.ReLU(inplace=True)
        self.conv4 = SeparableConv2d(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)
        self.act4 = nn.ReLU(inplace=True)
        self.num_features = 2048
        self.feature_info = [
            {"num_chs": 64, "reduction": 2, "module": "act2"},
            {"num_chs": 128, "reduction": 4, "module": "block1"},
            {"num_chs": 256, "reduction": 8, "module": "block2"},
            {"num_chs": 728, "reduction": 16, "module": f"block{self.num_blocks - 1}"},
            {"num_chs": 2048, "reduction": 32, "module": "act4"},
        ]
        self.fc = nn.Linear(2048, num_classes)
        init_conv_bn(self)  # timm's init
        # conv1 (3x3/2) and conv2 (3x3) are unpadded: conv2 needs a 3x3 map, i.e. a 7x7 input
        self.min_input_size = 7

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (B, 3, 299, 299) -> (B, 32, 149, 149)
        x = self.act2(self.bn2(self.conv2(x)))  # -> (B, 64, 147, 147)
        for i in range(self.num_blocks):
            x = getattr(self, f"block{i + 1}")(x)  # -> (B, 728, 19, 19) after the entry flow; (B, 1024, 10, 10)
        x = self.act3(self.bn3(self.conv3(x)))
        return self.act4(self.bn4(self.conv4(x)))  # -> (B, 2048, 10, 10)


@register_model(Xception, paper=XCEPTION, input_size=(3, 299, 299), counterparts={"timm": "legacy_xception"})
def xception(**kwargs) -> Xception:
    """Xception (Fig. 5: entry flow, 8 middle-flow modules, exit flow)."""
    return Xception(**kwargs)
