"""The training loss, with auxiliary classifiers weighted as their papers say.

Two criteria (``train.loss``):

- ``cross_entropy``: softmax cross-entropy on the logits (optionally label-smoothed); every network's default.
- ``lenet_map``: the MAP criterion of LeCun et al. 1998 (Section II-C, eq. 9) for networks whose logits are
  negated RBF penalties (``lenet5_paper``): ``E = y_D + log(exp(-j) + sum_i exp(-y_i))``, y_i the penalty of
  class i and D the correct class. It is the cross-entropy over the classes plus a "rubbish class" whose
  penalty is the constant j: while the correct penalty is above j the loss pulls it down like the plain
  mean-squared criterion (eq. 8), and the wrong classes are pushed up only when they come close, so the
  penalties cannot all collapse together.

Targets are class indices (B,) or class distributions (B, K) whose rows sum to 1: the mixed targets of mixup,
CutMix and the rest of `cnnzoo.data.mix`. Both go through the same soft-target loss, and label smoothing acts on
both the same way (Szegedy et al. 2016, Sec. 7: ``q' = (1 - eps) q + eps / K``), so smoothing and mixing combine.
With index targets each criterion equals its soft form on the one-hot distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "MAP_J", "ClassificationLoss", "lenet_map_loss"]

LOSSES = ("cross_entropy", "lenet_map")

# The paper says only that j is a positive constant. Distances between the network's +-1 codes are
# 4 x (number of differing bits), ~168 for two random 84-bit codes; 20 (a vector within ~5 bits of its
# code) keeps the rubbish class well inside the gap, so that it rewards getting close to the right code.
MAP_J = 20.0


def lenet_map_loss(logits: torch.Tensor, target: torch.Tensor, j: float = MAP_J,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """Eq. 9 of LeCun et al. 1998 on ``logits = -penalties``, averaged over the batch.

    With ``label_smoothing`` eps the correct-class term is mixed as cross-entropy mixes it:
    (1 - eps) x the correct class's term + eps x the mean over the classes. A soft target (B, K) weights each
    class's term by its probability.
    """
    rubbish = logits.new_full((logits.shape[0], 1), -j)
    log_norm = torch.logsumexp(torch.cat([logits, rubbish], 1), 1)  # log(e^-j + sum_i e^-y_i)
    nll = log_norm[:, None] - logits  # (B, K): y_i + log(...) for every class i
    if target.is_floating_point():
        loss = (nll * target.to(nll.dtype)).sum(1)
    else:
        loss = nll.gather(1, target[:, None]).squeeze(1)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss + label_smoothing * nll.mean(1)
    return loss.mean()


class ClassificationLoss:
    """The criterion on the main logits plus ``aux_weight`` x the same criterion on each aux head's.

    Networks with auxiliary heads return ``(main, aux1, ...)`` in training; the weight comes from the model
    card (GoogLeNet: 0.3, Szegedy et al. 2015, Sec. 5; Inception-v3: 0.4 in torchvision's recipe).

    Args:
        label_smoothing: cross-entropy's label smoothing (0 for none).
        aux_weight: the card's weight of each auxiliary loss (None: the network has no aux heads).
        loss: one of :data:`LOSSES`.
    """

    def __init__(self, label_smoothing: float = 0.0, aux_weight: float | None = None,
                 loss: str = "cross_entropy") -> None:
        if loss not in LOSSES:
            raise ValueError(f"train.loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_weight
        self.loss = loss

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one head; ``target`` class indices (B,) or a distribution over the classes (B, K)."""
        if self.loss == "lenet_map":
            return lenet_map_loss(logits.float(), target, label_smoothing=self.label_smoothing)
        # probabilities: torch's cross-entropy with class-probability targets, smoothed as index targets are
        return F.cross_entropy(logits.float(), target.float() if target.is_floating_point() else target,
                               label_smoothing=self.label_smoothing)

    def __call__(self, output: torch.Tensor | tuple, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, main logits); ``target`` (B,) class indices or (B, K) mixed/soft targets."""
        if isinstance(output, (tuple, list)):
            main, *aux = output
        else:
            main, aux = output, []
        loss = self.criterion(main, target)
        if aux:
            if self.aux_weight is None:
                raise ValueError("the network returned auxiliary outputs but its card has no aux_weight")
            for a in aux:
                loss = loss + self.aux_weight * self.criterion(a, target)
        return loss, main
