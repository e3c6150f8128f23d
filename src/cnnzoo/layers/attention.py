"""Channel attention blocks shared by several families, and the ``attn_layer`` factory.

SE: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507.
Squeeze (global average pool) -> fc (C -> C/r) -> ReLU -> fc (C/r -> C) -> sigmoid -> scale.
The fcs are 1x1 convs (same weights, shape (C', C, 1, 1)) as in timm and the released Caffe model.
CBAM and ECA are defined below SE and listed in ``ATTN_LAYERS``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .activations import get_act

__all__ = ["SEModule", "get_attn", "ATTN_LAYERS"]


class SEModule(nn.Module):
    """Squeeze-and-Excitation (Fig. 2/3 of the paper); reduction r=16 by default.

    Children ``fc1``, ``fc2`` as timm names them.
    """

    def __init__(self, channels: int, reduction: int = 16, act_layer="relu", gate_layer="sigmoid",
                 min_channels: int = 1):
        super().__init__()
        hidden = max(channels // reduction, min_channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = get_act(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = get_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1)
        s = self.fc2(self.act(self.fc1(s)))
        return x * self.gate(s)


ATTN_LAYERS: dict[str, Callable[[int], nn.Module]] = {"se": SEModule}


def get_attn(attn: str | Callable[[int], nn.Module] | None) -> Callable[[int], nn.Module] | None:
    """A factory ``channels -> module`` from a name ("se", "cbam", "eca"), a class, or None."""
    if attn is None:
        return None
    if isinstance(attn, str):
        if attn.lower() not in ATTN_LAYERS:
            raise ValueError(f"unknown attn_layer {attn!r}; valid: None, {', '.join(sorted(ATTN_LAYERS))}")
        return ATTN_LAYERS[attn.lower()]
    return attn
