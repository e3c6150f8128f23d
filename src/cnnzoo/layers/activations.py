"""Activation factory: one vocabulary of names across the zoo."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "HardSigmoid", "HardSigmoidKeras", "HardSwish", "get_act"]


class HardSigmoid(nn.Module):
    """h-sigmoid(x) = ReLU6(x + 3) / 6 (MobileNetV3, Howard et al. 2019, eq. 2's gate)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0, inplace=self.inplace) / 6.0


class HardSigmoidKeras(nn.Module):
    """clip(0.2 x + 0.5, 0, 1): 0 below -2.5, 1 above 2.5 (Keras' old ``hard_sigmoid``; the MobileNetV3 section of
    note 003 writes h-sigmoid this way). Not MobileNetV3's h-sigmoid, ReLU6(x + 3) / 6 (slope 1/6, saturating at
    +-3), which `HardSigmoid` is."""

    def __init__(self, inplace: bool = False):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.2 * x + 0.5).clamp(0.0, 1.0)


class HardSwish(nn.Module):
    """h-swish(x) = x * ReLU6(x + 3) / 6 (MobileNetV3)."""

    def __init__(self, inplace: bool = False):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "hard_swish": HardSwish,
    "h_swish": HardSwish,
    "hard_sigmoid": HardSigmoid,
    "h_sigmoid": HardSigmoid,
    "hard_sigmoid_keras": HardSigmoidKeras,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}
_INPLACE = {"relu", "relu6", "leaky_relu", "silu", "swish"}


def get_act(act: str | type[nn.Module] | Callable[..., nn.Module] | None, inplace: bool = False) -> nn.Module:
    """An activation module from a name, a class/factory, or None (identity)."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        key = act.lower().replace("-", "_")
        if key not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
        return ACTIVATIONS[key](inplace=True) if inplace and key in _INPLACE else ACTIVATIONS[key]()
    if isinstance(act, nn.Module):
        raise ValueError("pass an activation name or class, not an instance (each layer needs its own)")
    return act()
