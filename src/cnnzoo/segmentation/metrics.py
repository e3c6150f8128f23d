"""Semantic-segmentation metrics as the FCN paper defines them: Long, Shelhamer, Darrell, "Fully Convolutional
Networks for Semantic Segmentation", CVPR 2015, Sec. 5 (https://arxiv.org/abs/1411.4038).

With ``n_ij`` the number of pixels of class ``i`` predicted to belong to class ``j``, ``n_cl`` the number of
classes and ``t_i = sum_j n_ij`` the number of pixels of class ``i``::

    pixel accuracy              sum_i n_ii / sum_i t_i
    mean accuracy               (1/n_cl) sum_i n_ii / t_i
    mean IU                     (1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
    frequency weighted IU       (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

The confusion matrix ``hist[i, j] = n_ij`` has ground truth along rows and prediction along columns, as the FCN
reference code's ``score.py`` (``fast_hist(gt, pred, n)``) builds it, and is summed over every pixel of every image
of the evaluation set before any ratio is taken (one matrix for the whole set, not a mean of per-image scores).

Pixels whose ground truth is the ignore label (255, VOC's "void": object boundaries and unlabelled regions) are left
out of the matrix altogether: they count for no class, neither as ground truth nor as prediction.

Classes absent from the evaluation (the decision, as ``score.py`` makes it with ``np.nanmean``):

- a class with no ground-truth pixel *and* no predicted pixel has ``0/0`` accuracy and ``0/0`` IU: it is left out
  of both means (``n_cl`` counts only the classes that occur), and its per-class IoU is NaN;
- a class with no ground-truth pixel that *is* predicted somewhere has IU ``0 / (false positives) = 0``: it counts
  as 0 in mean IU, while its accuracy is ``0/0`` and it is left out of mean accuracy;
- frequency-weighted IU weighs each class by ``t_i``, so a class without ground-truth pixels adds nothing to it.

Unlike ``score.py``, which silently drops every ground-truth value outside ``[0, n_cl)``, a label other than
``0..n_cl-1`` and the ignore label is an error here (a mask of the wrong dataset should not score), and so is a
predicted class outside ``0..n_cl-1``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["IGNORE_INDEX", "ConfusionMatrix", "confusion_matrix", "scores_from_confusion"]

IGNORE_INDEX = 255  # VOC's "void" label: object boundaries and unlabelled pixels


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                     ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """The ``(num_classes, num_classes)`` int64 matrix ``hist[i, j]`` = pixels of class ``i`` predicted as ``j``.

    Args:
        pred: predicted class per pixel, integer ``(...)`` (for example ``logits.argmax(1)``).
        target: ground-truth class per pixel, integer, the same shape; ``ignore_index`` marks pixels to leave out.
        num_classes: the number of classes ``n_cl``.
        ignore_index: the ground-truth label that is left out (None: every pixel counts).

    Raises:
        ValueError: shapes differ, a non-integer tensor, or a label outside ``0..num_classes-1`` (and not ignored).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    for what, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex():
            raise ValueError(f"{what} must be an integer tensor of class indices, got "
                             f"{getattr(t, 'dtype', type(t).__name__)} (take logits.argmax(1) for predictions)")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    pred, target = pred[keep], target[keep]
    for what, t in (("target", target), ("pred", pred)):
        bad = (t < 0) | (t >= num_classes)
        if bool(bad.any()):
            values = sorted(set(t[bad].unique().tolist()))[:10]
            ignore = f" or the ignore label {ignore_index}" if ignore_index is not None and what == "target" else ""
            raise ValueError(f"{what} has label(s) {values} outside 0..{num_classes - 1}{ignore}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def scores_from_confusion(hist: torch.Tensor) -> dict:
    """The four FCN metrics and the per-class IoU and accuracy of a confusion matrix (rows: ground truth).

    Returns:
        ``{"pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"}`` as floats (NaN when the matrix is empty), and
        ``"per_class_iou"`` and ``"per_class_accuracy"`` as lists of floats with NaN for ``0/0`` (see the module
        docstring for how absent classes count).
    """
    h = hist.detach().to(torch.float64).cpu()
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"a confusion matrix is square (n_cl, n_cl), got shape {tuple(h.shape)}")
    n_ii = torch.diagonal(h)
    t = h.sum(1)  # t_i: ground-truth pixels of class i
    predicted = h.sum(0)  # sum_j n_ji: pixels predicted as class i
    total = t.sum()
    with torch.no_grad():
        acc = n_ii / t  # 0/0 -> NaN for classes without ground truth
        iu = n_ii / (t + predicted - n_ii)  # 0/0 -> NaN for classes neither present nor predicted
    pixel_acc = float(n_ii.sum() / total) if total > 0 else math.nan
    fw = float((t[t > 0] * iu[t > 0]).sum() / total) if total > 0 else math.nan
    return {
        "pixel_accuracy": pixel_acc,
        "mean_accuracy": float(acc.nanmean()),
        "mean_iu": float(iu.nanmean()),
        "fw_iu": fw,
        "per_class_iou": iu.tolist(),
        "per_class_accuracy": acc.tolist(),
    }


class ConfusionMatrix:
    """A confusion matrix accumulated over batches; `compute` gives `scores_from_confusion` of the sum.

        >>> cm = ConfusionMatrix(num_classes=21)
        >>> for images, masks in loader:
        ...     cm.update(model(images).argmax(1), masks)
        >>> cm.compute()["mean_iu"]
    """

    def __init__(self, num_classes: int, *, ignore_index: int | None = IGNORE_INDEX) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` integer class maps of one shape (``(N, H, W)`` or ``(H, W)``)."""
        self.hist += confusion_matrix(pred, target, self.num_classes, ignore_index=self.ignore_index).cpu()

    def reset(self) -> None:
        self.hist.zero_()

    def compute(self) -> dict:
        return scores_from_confusion(self.hist)
