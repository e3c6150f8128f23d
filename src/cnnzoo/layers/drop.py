"""DropPath (stochastic depth, Huang et al. 2016, "Deep Networks with Stochastic Depth", ECCV 2016,
https://arxiv.org/abs/1603.09382).

The rate per block (`drop_path_rates`) follows timm (``torch.linspace(0, drop_path_rate, depth)``): block i of n
(i = 0..n-1) drops with probability ``rate * i / (n - 1)``, from 0 for the first block to ``drop_path_rate`` for
the last. Huang et al.'s linear decay rule (Sec. 3, Eq. 4: survival p_l = 1 - l/L (1 - p_L)) gives block l of L
(l = 1..L) the drop rate ``l / L * rate``: its first block already drops with rate / L, and every block but the
last drops a little more often than here (e.g. 4 blocks, rate 0.5: Huang 0.125, 0.25, 0.375, 0.5; here 0, 0.167,
0.333, 0.5). The difference shrinks with depth and is deliberate: timm's, DeiT's and torchvision's networks (and
the recipes behind their checkpoints) use the linspace rule.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "drop_path", "drop_path_rates"]


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability p, scaling survivors by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Stochastic depth on a residual branch; identity in eval mode or when p == 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, n_blocks: int) -> list[float]:
    """Rates growing linearly from 0 (first block) to ``rate`` (last block): timm's linspace rule, not Huang et al.'s
    ``l / L * rate`` for l = 1..L (whose first block has rate / L); see the module docstring."""
    if n_blocks <= 1:
        return [rate] * n_blocks
    return [rate * i / (n_blocks - 1) for i in range(n_blocks)]
