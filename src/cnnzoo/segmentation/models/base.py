"""`Segmenter`: the interface every segmentation network here shares.

``forward(x)`` takes ``(N, in_channels, H, W)`` and returns logits ``(N, num_classes, H', W')``; ``output_size(H)``
says what ``H'`` is for a square input (equal to ``H`` for networks that keep the size).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Segmenter"]


class Segmenter(nn.Module):
    """Base class: subclasses set ``num_classes``, ``in_channels`` and ``min_input_size`` (the smallest square input
    that runs: ``min_input_size - 1`` fails `check_input`) and implement ``forward`` and ``output_size``."""

    num_classes: int
    in_channels: int
    min_input_size: int = 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError naming what the network expects when ``x`` does not fit it."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} expects a 4-D input (N, {self.in_channels}, H, W), got {got}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{name} was built for {self.in_channels} input channel(s) but got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)}); build it with in_channels={x.shape[1]}")
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(f"{name} needs inputs of at least {self.min_input_size}x{self.min_input_size} pixels, "
                             f"got {h}x{w}")

    def output_size(self, size: int) -> int:
        """The side of the output map for an input of side ``size``."""
        raise NotImplementedError
