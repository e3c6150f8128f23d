"""DropPath (stochastic depth, Huang et al. 2016, https://arxiv.org/abs/1603.09382)."""

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
    """Linearly growing rates from 0 to ``rate`` over ``n_blocks`` blocks (the stochastic-depth paper's rule)."""
    if n_blocks <= 1:
        return [rate] * n_blocks
    return [rate * i / (n_blocks - 1) for i in range(n_blocks)]
