"""`Segmenter`: the interface every segmentation network here shares.

``forward(x)`` takes ``(N, in_channels, H, W)`` and returns logits ``(N, num_classes, H', W')``; ``output_size(H)``
says what ``H'`` is for a square input (equal to ``H`` for networks that keep the size).
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.base import check_image_batch

__all__ = ["Segmenter"]


class Segmenter(nn.Module):
    """Base class: subclasses set ``num_classes``, ``in_channels`` and ``min_input_size`` (the smallest square input
    that runs: ``min_input_size - 1`` fails `check_input`) and implement ``forward`` and ``output_size``."""

    num_classes: int
    in_channels: int
    min_input_size: int = 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError naming what the network expects when ``x`` does not fit it."""
        check_image_batch(type(self).__name__, x, self.in_channels, self.min_input_size)

    def output_size(self, size: int) -> int:
        """The side of the output map for an input of side ``size``."""
        raise NotImplementedError
