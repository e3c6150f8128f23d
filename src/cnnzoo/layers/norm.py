"""Normalisation layers: the norm factory and Local Response Normalization."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FreshBatchNorm2d", "LocalResponseNorm", "get_norm"]


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


class FreshBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose running statistics come from data, never from the (0, 1) placeholders.

    PyTorch starts the running mean and variance at 0 and 1, which makes an untrained BN the identity in
    eval mode, and its first training batches move them only 10% of the way to the real statistics. In a
    very deep residual network with He initialisation (ResNet-1202, pre-act ResNet-1001) each block then
    roughly doubles the variance of the eval-mode signal, and 600 blocks overflow float32 (NaN logits at
    init; ~1e22 after one step). So, until this layer has statistics (``has_stats``): its first training
    batch sets them (momentum 1), and in eval mode it normalises with the batch's own statistics, as training
    mode does. Loading a state dict with running statistics counts as having them. Training-mode outputs and
    the update after the first batch are exactly ``nn.BatchNorm2d``'s.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.has_stats = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "running_mean" in state_dict:
            self.has_stats = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_stats or not self.track_running_stats:
            return super().forward(x)
        if self.training:  # the first batch's statistics replace the placeholders
            self.has_stats = True
            self.num_batches_tracked.add_(1)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, 1.0, self.eps)
        if x.numel() // x.shape[1] > 1:  # eval mode, no statistics yet: the batch's own, as in training
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)  # a single value per channel has no statistics to use


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
