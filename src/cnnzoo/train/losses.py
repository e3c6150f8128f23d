"""The training loss, with auxiliary classifiers weighted as their papers say."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ClassificationLoss"]


class ClassificationLoss:
    """Cross-entropy (optionally label-smoothed) on the main logits plus ``aux_weight`` x each aux head's.

    Networks with auxiliary heads return ``(main, aux1, ...)`` in training; the weight comes from the model
    card (GoogLeNet: 0.3, Szegedy et al. 2015, Sec. 5; Inception-v3: 0.4 in torchvision's recipe).
    """

    def __init__(self, label_smoothing: float = 0.0, aux_weight: float | None = None) -> None:
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_weight

    def __call__(self, output: torch.Tensor | tuple, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, main logits)."""
        if isinstance(output, (tuple, list)):
            main, *aux = output
        else:
            main, aux = output, []
        loss = F.cross_entropy(main.float(), target, label_smoothing=self.label_smoothing)
        if aux:
            if self.aux_weight is None:
                raise ValueError("the network returned auxiliary outputs but its card has no aux_weight")
            for a in aux:
                loss = loss + self.aux_weight * F.cross_entropy(a.float(), target, label_smoothing=self.label_smoothing)
        return loss, main
