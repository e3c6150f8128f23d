"""The interface every cnnzoo network shares (timm's, so tools written once work on the whole zoo).

- ``forward(x)``: logits; in training mode, networks with enabled aux heads return ``(main, aux1, ...)``.
- ``forward_features(x)``: the last feature map (B, num_features, h, w) (or (B, num_features) for FC nets).
- ``forward_head(x, pre_logits=False)``: pooled features -> logits, or the pre-logit vector of
  ``head_hidden_size`` values.
- ``reset_classifier(num_classes)``: a fresh classifier with another number of classes.
- ``num_classes``, ``num_features``, ``head_hidden_size``, ``in_channels``, ``min_input_size``.
- ``feature_info``: one dict per stage, ``{"num_chs": C, "reduction": stride, "module": "layer1"}``,
  naming the submodule whose output is that stage.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ZooModel"]


class ZooModel(nn.Module):
    """Base class: input checking and the shared forward. Subclasses set the attributes in ``__init__``."""

    num_classes: int
    num_features: int
    in_channels: int = 3
    #: smallest square input (pixels) the network accepts; smaller raises ValueError.
    min_input_size: int = 1
    feature_info: list[dict]

    @property
    def head_hidden_size(self) -> int:
        return self.num_features

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError naming what the network expects when ``x`` does not fit it."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} expects a tensor of shape (N, {self.in_channels}, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"{name} expects a 4-D input (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} was built for {self.in_channels} input channel(s) but got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); build it with in_channels={x.shape[1]} to accept these images"
            )
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(
                f"{name} needs inputs of at least {self.min_input_size}x{self.min_input_size} pixels, got {h}x{w}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))
