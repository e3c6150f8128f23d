"""Channel shuffle (Zhang et al. 2018, "ShuffleNet", Sec. 3.1 and Fig. 1c), used by ShuffleNet v1 and v2.

A grouped convolution only mixes the channels inside each group; stacking two of them keeps the groups apart. The
shuffle lets the next grouped layer see every group: reshape the C channels to (g, C/g), transpose to (C/g, g),
flatten. Channel ``i * (C/g) + j`` (j-th channel of group i) moves to position ``j * g + i``. It costs no
arithmetic and has no parameters; it is a permutation, undone by a shuffle with C/g groups.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelShuffle", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Shuffle the channels of ``x`` (B, C, H, W) across ``groups`` groups (C must be divisible by ``groups``)."""
    b, c, h, w = x.shape
    if groups < 1 or c % groups:
        raise ValueError(f"channel_shuffle needs channels divisible by groups, got {c} channels, {groups} groups")
    # (B, C, H, W) -> (B, g, C/g, H, W) -> (B, C/g, g, H, W) -> (B, C, H, W)
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ChannelShuffle(nn.Module):
    """`channel_shuffle` as a module (so it shows as a layer in summaries)."""

    def __init__(self, groups: int):
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"ChannelShuffle groups must be a positive integer, got {groups!r}")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
