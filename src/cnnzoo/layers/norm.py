"""Normalisation layers: the norm factory and Local Response Normalization."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LocalResponseNorm", "get_norm"]


class LocalResponseNorm(nn.Module):
    """Local Response Normalization across channels, exactly as AlexNet section 3.3 writes it.

    b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]^2) ** beta

    Defaults are AlexNet's constants (k=2, n=5, alpha=1e-4, beta=0.75; the study notes print
    alpha as "10e-4", a typo). Note that ``torch.nn.LocalResponseNorm`` divides alpha by n; this
    layer does not, so its alpha is the paper's.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.local_response_norm computes k + (alpha / n) * sum over the same window (centred, size n).
        return F.local_response_norm(x, self.size, alpha=self.alpha * self.size, beta=self.beta, k=self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "bn": nn.BatchNorm2d,
    "groupnorm": lambda c: nn.GroupNorm(32 if c % 32 == 0 else 1, c),
    "none": lambda c: nn.Identity(),
}


def get_norm(norm: str | Callable[[int], nn.Module] | None, channels: int) -> nn.Module:
    """A 2-D norm layer over ``channels`` from a name, a class/factory taking channels, or None (identity)."""
    if norm is None:
        return nn.Identity()
    if isinstance(norm, str):
        key = norm.lower()
        if key not in _NORMS:
            raise ValueError(f"unknown norm layer {norm!r}; valid: {', '.join(sorted(_NORMS))}")
        return _NORMS[key](channels)
    return norm(channels)
