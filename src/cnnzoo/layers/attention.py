"""Channel attention blocks shared by several families, and the ``attn_layer`` factory.

SE: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507.
Squeeze (global average pool) -> fc (C -> C/r) -> ReLU -> fc (C/r -> C) -> sigmoid -> scale.
The fcs are 1x1 convs (same weights, shape (C', C, 1, 1)) as in timm and the released Caffe model.

CBAM: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521. Channel attention (Sec. 3, eq. 2): one shared MLP (C -> C/r -> C,
r=16) applied to both the average- and the max-pooled descriptor, summed, sigmoid. Then spatial
attention (eq. 3): a 7x7 conv over the 2-channel map [mean over channels; max over channels],
sigmoid. Sequential, channel first (Table 4: the best arrangement). The paper writes the spatial
branch as sigma(f7x7([AvgPool; MaxPool])) with no normalisation, which is what we build; the
authors' code (Jongchan/attention-module) and timm add a BatchNorm after that conv (+2 parameters
per block).

ECA: Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020, https://arxiv.org/abs/1910.03151. Global average pool, then a 1-D
conv of size k across the channel axis (no bias, no dimensionality reduction), sigmoid. k adapts
to the channel count (eq. 12): k = |log2(C)/gamma + b/gamma|_odd, gamma=2, b=1, computed as the
authors' code does (truncate, then bump an even value to the next odd): C=64 -> 3, 256 -> 5,
512 -> 5, 1024 -> 5, 2048 -> 7. The module has exactly k parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .activations import get_act

__all__ = [
    "ATTN_LAYERS",
    "CBAM",
    "ChannelAttention",
    "ECAModule",
    "SEModule",
    "SpatialAttention",
    "eca_kernel_size",
    "get_attn",
]


class SEModule(nn.Module):
    """Squeeze-and-Excitation (Fig. 2/3 of the paper); reduction r=16 by default.

    Children ``fc1``, ``fc2`` as timm and torchvision name them. ``hidden_channels`` sets the squeeze width
    directly where a family does not derive it as C/r (MobileNetV3: make_divisible(C/4, 8); EfficientNet: the
    block's input channels / 4), and ``act_layer``/``gate_layer`` take any activation (MobileNetV3's gate is
    h-sigmoid, EfficientNet's hidden activation swish).
    """

    def __init__(
        self, channels: int, reduction: int = 16, act_layer="relu", gate_layer="sigmoid", min_channels: int = 1,
        hidden_channels: int | None = None,
    ):
        super().__init__()
        hidden = max(channels // reduction, min_channels) if hidden_channels is None else hidden_channels
        if hidden < 1:
            raise ValueError(f"SE hidden_channels must be >= 1, got {hidden}")
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = get_act(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = get_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1)
        s = self.fc2(self.act(self.fc1(s)))
        return x * self.gate(s)


class ChannelAttention(nn.Module):
    """CBAM's channel attention (Fig. 2 top): sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), one shared MLP."""

    def __init__(self, channels: int, reduction: int = 16, act_layer="relu", min_channels: int = 1):
        super().__init__()
        hidden = max(channels // reduction, min_channels)
        # The shared MLP as 1x1 convs (fc1/fc2 as in SEModule and timm's CbamModule).
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = get_act(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def mlp(self, s: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(s)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean((2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1)
        mx = x.amax((2, 3), keepdim=True)
        return x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention (Fig. 2 bottom): sigmoid(conv7x7([mean_c(x); max_c(x)])), BN-free as eq. 3."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial attention kernel_size must be a positive odd number, got {kernel_size}")
        # 7x7 is the paper's choice (Table 3: better than 3x3); no bias, as in the authors' conv.
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # (B, C, H, W) -> (B, 2, H, W)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention (Fig. 1)."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel_size: int = 7, act_layer="relu"):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, act_layer=act_layer)
        self.spatial = SpatialAttention(spatial_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size k = |log2(C)/gamma + b/gamma|_odd (paper eq. 12, authors' rounding)."""
    if channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return max(t if t % 2 else t + 1, 1)


class ECAModule(nn.Module):
    """Efficient Channel Attention (Fig. 2): GAP -> 1-D conv of size k across channels -> sigmoid -> scale."""

    def __init__(self, channels: int, k_size: int | None = None, gamma: float = 2, b: float = 1):
        super().__init__()
        k = eca_kernel_size(channels, gamma, b) if k_size is None else k_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA k_size must be a positive odd number, got {k}")
        self.k_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3))[:, None, :]  # (B, C, H, W) -> (B, 1, C): channels become the 1-D axis
        s = self.conv(s)[:, 0, :, None, None]  # (B, 1, C) -> (B, C, 1, 1)
        return x * torch.sigmoid(s)

    def extra_repr(self) -> str:
        return f"k_size={self.k_size}"


ATTN_LAYERS: dict[str, Callable[[int], nn.Module]] = {"se": SEModule, "cbam": CBAM, "eca": ECAModule}


def get_attn(attn: str | Callable[[int], nn.Module] | None) -> Callable[[int], nn.Module] | None:
    """A factory ``channels -> module`` from a name ("se", "cbam", "eca"), a class, or None."""
    if attn is None:
        return None
    if isinstance(attn, str):
        if attn.lower() not in ATTN_LAYERS:
            raise ValueError(f"unknown attn_layer {attn!r}; valid: None, {', '.join(sorted(ATTN_LAYERS))}")
        return ATTN_LAYERS[attn.lower()]
    return attn
