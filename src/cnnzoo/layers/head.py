"""Classifier head: global pooling, dropout, fc; or the same fc as a 1x1 conv for dense evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassifierHead", "global_pool"]

POOL_TYPES = ("avg", "max", "avgmax", "")


def global_pool(x: torch.Tensor, pool_type: str = "avg", flatten: bool = True) -> torch.Tensor:
    """Pool (B, C, H, W) to (B, C) (or (B, C, 1, 1) when not flattening)."""
    if pool_type == "avg":
        x = F.adaptive_avg_pool2d(x, 1)
    elif pool_type == "max":
        x = F.adaptive_max_pool2d(x, 1)
    elif pool_type == "avgmax":
        x = 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1))
    elif pool_type != "":
        raise ValueError(f"unknown pool type {pool_type!r}; valid: {', '.join(repr(p) for p in POOL_TYPES)}")
    return x.flatten(1) if flatten and x.ndim == 4 else x


class ClassifierHead(nn.Module):
    """Global pool -> dropout -> fc.

    Args:
        in_features: channels of the feature map.
        num_classes: outputs; 0 makes the head return pooled features only.
        pool_type: "avg", "max", "avgmax" or "" (features already flat).
        drop_rate: dropout before the fc.
        use_conv: apply the fc as a 1x1 conv to every position and skip pooling -> a class map
            (B, num_classes, h, w); the weights are the same tensors reshaped (dense evaluation).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool_type: str = "avg",
        drop_rate: float = 0.0,
        use_conv: bool = False,
    ):
        super().__init__()
        global_pool(torch.zeros(1, 1, 1, 1), pool_type)  # validates pool_type
        self.in_features, self.pool_type, self.use_conv = in_features, pool_type, use_conv
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._make_fc(num_classes)

    def _make_fc(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = self._make_fc(num_classes).to(next(self.parameters(), torch.zeros(())).device)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.use_conv and x.ndim == 4:
            x = self.drop(x)
            if pre_logits or isinstance(self.fc, nn.Identity):
                return x
            return F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias)
        x = global_pool(x, self.pool_type)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)
