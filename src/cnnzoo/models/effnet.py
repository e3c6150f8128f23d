"""EffNet. Freeman, Roese-Koerner, Kummert, "EffNet: An Efficient Structure for Convolutional Neural Networks",
ICIP 2018. https://arxiv.org/abs/1801.06434

Key ideas
    MobileNet and ShuffleNet blocks lose accuracy when the network is small to begin with. The EffNet block keeps
    the depthwise idea but (Sec. 3): splits the 3x3 depthwise convolution *spatially* into a 1x3 and a 3x1
    depthwise convolution; puts the down-sampling *inside* the block as "separable pooling": a 1-D 2x1 max-pool
    (rows) after the first depthwise conv, and a 2x1 convolution with stride (1, 2) (columns) instead of the final
    1x1 pointwise conv, so the second depthwise conv already runs at half the rows; uses a mild bottleneck factor
    of 2 (the block's 1x1 conv has half the output channels; MobileNet and ShuffleNet squeeze harder); drops
    residual connections and group convolutions (they help deep networks, not slim ones); and also replaces the
    first layer, which other efficient designs leave as a costly ordinary conv. Leaky ReLU activations.

Which table the code reproduces
    Table 1, the EffNet column of the CIFAR-10 comparison: three EffNet blocks with 32 -> 64, 64 -> 128 and
    128 -> 256 channels (1x1 conv to 32; dw 1x3 + 1-D max-pool; dw 3x1; 2x1 conv to 64 with a 1-D stride, ...),
    taking the 32x32 input to 4x4x256, then the fully connected classifier. (The paper's text was not available
    to us while writing this module; the table's layers were taken from its description in secondary sources and
    the widely used keras-effnet implementation, which agree on the structure above.)

Training setup in the paper
    CIFAR-10 (also MNIST and GTSRB), trained from scratch with the same setup for the baseline, MobileNet,
    ShuffleNet and EffNet networks; the comparison holds parameters and FLOPs roughly equal (Table 2).

This implementation
    ``EffNetBlock`` (children ``conv1``/``bn1``, ``conv_dw_1x3``/``bn2``, ``pool`` (2x1/2 max-pool on rows),
    ``conv_dw_3x1``/``bn3``, ``conv_2x1``/``bn4``); every conv is followed by BN and Leaky ReLU (slope 0.01, Keras'
    default is 0.3; ``act_layer`` changes it), convolutions have no bias. The 2x1 conv is zero-padded by one row at
    the bottom (TensorFlow's "same" for an even kernel), so a block halves rows and columns exactly. Options:
    ``widths`` (the blocks' output channels), ``bottleneck_factor`` (2 in the paper), ``act_layer``,
    ``drop_rate`` (dropout before the fc; none in the paper), ``num_classes``, ``in_channels``. Deviation: an
    adaptive average pool to 4x4 precedes the flatten + fc; it is the identity at the paper's 32x32 input and lets
    other sizes run. Kaiming-normal (fan-out) conv init, BN weight 1 / bias 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import get_act, init_conv_bn
from ..registry import Paper, register_model
from .base import ZooModel

EFFNET = Paper(
    "EffNet: An Efficient Structure for Convolutional Neural Networks",
    "I. Freeman, L. Roese-Koerner, A. Kummert",
    2018,
    "https://arxiv.org/abs/1801.06434",
)

WIDTHS = (64, 128, 256)  # Table 1: the three blocks' output channels (their 1x1 convs: 32, 64, 128)
HEAD_GRID = 4  # 32x32 input, three blocks halving it: the fc sees 4x4 maps


class EffNetBlock(nn.Module):
    """EffNet block (Fig. 1 / Sec. 3): 1x1 -> dw 1x3 -> 2x1 max-pool -> dw 3x1 -> 2x1 conv with stride (1, 2)."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_factor: int = 2, act_layer="leaky_relu"):
        super().__init__()
        mid = out_channels // bottleneck_factor
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = get_act(act_layer, inplace=True)
        self.conv_dw_1x3 = nn.Conv2d(mid, mid, (1, 3), padding=(0, 1), groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = get_act(act_layer, inplace=True)
        self.pool = nn.MaxPool2d((2, 1), stride=(2, 1))  # separable pooling, first half: rows
        self.conv_dw_3x1 = nn.Conv2d(mid, mid, (3, 1), padding=(1, 0), groups=mid, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.act3 = get_act(act_layer, inplace=True)
        self.conv_2x1 = nn.Conv2d(mid, out_channels, (2, 1), stride=(1, 2), bias=False)  # second half: columns
        self.bn4 = nn.BatchNorm2d(out_channels)
        self.act4 = get_act(act_layer, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (B, C_in, H, W) -> (B, C_out/2, H, W)
        x = self.act2(self.bn2(self.conv_dw_1x3(x)))
        x = self.pool(x)  # -> (B, C_out/2, H/2, W)
        x = self.act3(self.bn3(self.conv_dw_3x1(x)))
        x = F.pad(x, (0, 0, 0, 1))  # "same" padding of the even 2x1 kernel: one zero row at the bottom
        return self.act4(self.bn4(self.conv_2x1(x)))  # -> (B, C_out, H/2, W/2)


class EffNet(ZooModel):
    """EffNet for CIFAR-10 (Table 1): three EffNet blocks and a fully connected classifier."""

    dense_window = HEAD_GRID  # the fc reads a 4x4 map: a 4x4 convolution in dense evaluation

    def __init__(self, *, widths: tuple[int, ...] = WIDTHS, bottleneck_factor: int = 2, act_layer="leaky_relu",
                 num_classes: int = 10, in_channels: int = 3, drop_rate: float = 0.0):
        super().__init__()
        widths = tuple(widths)
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must list at least one block's output channels (>= 1), got {widths}")
        if bottleneck_factor < 1 or any(w % bottleneck_factor for w in widths):
            raise ValueError(f"bottleneck_factor must be >= 1 and divide every width {widths}, got {bottleneck_factor}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels, self.drop_rate = num_classes, in_channels, drop_rate
        blocks, ch, self.feature_info = [], in_channels, []
        for i, w in enumerate(widths):
            blocks.append(EffNetBlock(ch, w, bottleneck_factor, act_layer))
            ch = w
            self.feature_info.append({"num_chs": w, "reduction": 2 ** (i + 1), "module": f"blocks.{i}"})
        self.blocks = nn.Sequential(*blocks)
        self.num_features = ch
        self.pool = nn.AdaptiveAvgPool2d(HEAD_GRID)
        self.fc = nn.Linear(ch * HEAD_GRID * HEAD_GRID, num_classes)
        init_conv_bn(self)
        self.min_input_size = 2 ** len(widths)  # each block's 2x1 max-pool needs two rows

    @property
    def head_hidden_size(self) -> int:
        return self.num_features * HEAD_GRID * HEAD_GRID

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)  # (B, 3, 32, 32) -> (B, 256, 4, 4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (B, 256, 4, 4) -> (B, 4096)
        if pre_logits:
            return x
        return self.fc(F.dropout(x, self.drop_rate, self.training))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.head_hidden_size, num_classes, device=self.fc.weight.device)


@register_model(EffNet, paper=EFFNET, input_size=(3, 32, 32), dataset="CIFAR-10",
                deviations=("adaptive 4x4 average pool before the fc (the identity at 32x32)",
                            "Leaky ReLU slope 0.01 (PyTorch's default; the paper does not give one)"))
def effnet(**kwargs) -> EffNet:
    """EffNet for CIFAR-10 (Table 1: blocks 32->64, 64->128, 128->256, then fc)."""
    return EffNet(**kwargs)
