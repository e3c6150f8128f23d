"""Losses of the one-stage detectors: the focal loss, SSD's MultiBox loss, RetinaNet's loss, GIoU / DIoU / CIoU.

**Focal loss** (Lin et al. 2017, "Focal Loss for Dense Object Detection", https://arxiv.org/abs/1708.02002,
Sec. 3.2 Eq. 5): ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p_t = p`` for a positive target and
``1 - p`` otherwise, ``alpha_t`` likewise ``alpha`` or ``1 - alpha``; alpha 0.25, gamma 2 (Sec. 5.1). Per class a
sigmoid (Sec. 3.3, "Class Imbalance and Model Initialization" onwards); it equals binary cross-entropy at gamma 0
without alpha, and ``0.5 x`` it at gamma 0, alpha 0.5. As torchvision.ops.sigmoid_focal_loss (``log(p_t)`` as
``binary_cross_entropy_with_logits``; a negative alpha turns the weighting off).

**RetinaNet's loss** (Sec. 4 "Inference and Training", "Optimization"): the focal loss summed over all anchors that
are not ignored (`matching.Matcher` 0.5 / 0.4 with low-quality matches) and all classes, "normalized by the number of
anchors assigned to a ground-truth box", plus the box regression on the positives. As torchvision's
retinanet_resnet50_fpn: the sum and the normalisation are per image (then averaged over the batch) and the box loss
is L1 (``box_loss="l1"``; the paper/Detectron use smooth L1, ``box_loss="smooth_l1"`` with beta 1/9 = 0.11).

**SSD's MultiBox loss** (Liu et al. 2016, "SSD", https://arxiv.org/abs/1512.02325, Sec. 2.2 "Training objective",
Eq. 1-3): ``L = (L_conf + alpha L_loc) / N`` with N the number of matched default boxes (the loss is 0 when N = 0),
alpha 1; ``L_loc`` the smooth L1 between predicted and encoded offsets (Eq. 2, `coder.BoxCoder` with SSD's
variances) of the positives; ``L_conf`` the softmax cross-entropy (Eq. 3) of the positives and of the hard
negatives: "we sort them using the highest confidence loss for each default box and pick the top ones so that the
ratio between the negatives and positives is at most 3:1" ("Hard negative mining"), per image as torchvision's
ssd300_vgg16 does. Deviation: when an image has fewer negatives than ``ratio x`` its positives, only its negatives
are taken (torchvision's ranking would count positives a second time; that needs over a quarter of all default
boxes matched).

**GIoU / DIoU / CIoU losses** (Rezatofighi et al. 2019, "Generalized Intersection over Union", Algorithm 1 / Eq.:
``L = 1 - IoU + |C \\ (A u B)| / |C|``; Zheng et al. 2020, "Distance-IoU Loss", https://arxiv.org/abs/1911.08287,
Eq. 6: ``L_DIoU = 1 - IoU + rho^2(b, b_gt) / c^2`` (centre distance over the enclosing box's diagonal), Eq. 9-11:
``L_CIoU = L_DIoU + alpha v``, ``v = 4 / pi^2 (arctan(w_gt / h_gt) - arctan(w / h))^2``,
``alpha = v / ((1 - IoU) + v)``). YOLOv4 (Bochkovskiy et al. 2020, Sec. 3.4) uses CIoU. As torchvision.ops and the
authors' PyTorch code, alpha is a constant for the gradient (computed without grad) and ``eps`` = 1e-7 guards the
divisions. Element-wise on pairs of boxes ``(..., 4)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .coder import SSD_WEIGHTS, BoxCoder
from .matching import BETWEEN_THRESHOLDS, Matcher, ssd_match

__all__ = ["REDUCTIONS", "ciou_loss", "diou_loss", "giou_loss", "hard_negative_mask", "retinanet_loss",
           "sigmoid_focal_loss", "ssd_multibox_loss"]

REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


# ----------------------------------------------------------------------------------------------------- focal
def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> torch.Tensor:
    """Lin et al. Eq. 5 on sigmoid outputs: ``-alpha_t (1 - p_t)^gamma log(p_t)`` element-wise.

    Args:
        logits: any shape; ``p = sigmoid(logits)``.
        targets: same shape, 1 for the object's class and 0 elsewhere (soft targets work too).
        alpha: weight of the positives (``1 - alpha`` of the negatives); negative: no weighting.
        gamma: the focusing parameter (0: cross-entropy).
        reduction: "none", "mean" or "sum".
    """
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def retinanet_loss(cls_logits: torch.Tensor, bbox_regression: torch.Tensor, anchors: torch.Tensor,
                   targets: list[dict], coder: BoxCoder | None = None, matcher: Matcher | None = None, *,
                   alpha: float = 0.25, gamma: float = 2.0, box_loss: str = "l1") -> dict[str, torch.Tensor]:
    """RetinaNet's loss as torchvision computes it (see the module docstring).

    Args:
        cls_logits: (N, A, K) sigmoid logits; K = num_classes outputs, label ``k`` is column ``k`` (torchvision:
            labels 1..C, column 0 never a positive).
        bbox_regression: (N, A, 4) offsets, `coder`'s encoding.
        anchors: (A, 4) xyxy.
        targets: per image {"boxes": (M, 4), "labels": (M,) int64}.
        coder: default ``BoxCoder((1, 1, 1, 1))``.
        matcher: default ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``.
        box_loss: "l1" (torchvision) or "smooth_l1" (beta 1/9, Detectron).

    Returns {"classification", "bbox_regression", "loss"}.
    """
    coder = coder or BoxCoder((1.0, 1.0, 1.0, 1.0))
    matcher = matcher or Matcher(0.5, 0.4, allow_low_quality_matches=True)
    if box_loss not in ("l1", "smooth_l1"):
        raise ValueError(f"RetinaNet box_loss must be l1 or smooth_l1, got {box_loss!r}")
    anchors = anchors.to(bbox_regression)
    cls_losses, box_losses = [], []
    for logits, deltas, t in zip(cls_logits, bbox_regression, targets):
        matches = matcher.match_boxes(anchors, t["boxes"].to(anchors)).to(logits.device)
        fg = matches >= 0
        num_fg = max(1, int(fg.sum()))
        target = torch.zeros_like(logits)
        target[fg, t["labels"].to(logits.device, torch.int64)[matches[fg]]] = 1.0
        valid = matches != BETWEEN_THRESHOLDS
        cls_losses.append(sigmoid_focal_loss(logits[valid], target[valid], alpha, gamma, "sum") / num_fg)
        enc = coder.encode(t["boxes"].to(deltas)[matches[fg]], anchors[fg])
        if box_loss == "l1":
            box_losses.append(F.l1_loss(deltas[fg], enc, reduction="sum") / num_fg)
        else:
            box_losses.append(F.smooth_l1_loss(deltas[fg], enc, beta=1 / 9, reduction="sum") / num_fg)
    cls = torch.stack(cls_losses).mean()
    box = torch.stack(box_losses).mean()
    return {"classification": cls, "bbox_regression": box, "loss": cls + box}


# ------------------------------------------------------------------------------------------------------- SSD
def hard_negative_mask(cls_loss: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float = 3.0) -> torch.Tensor:
    """SSD's hard negatives (Sec. 2.2): per image (row) the ``neg_pos_ratio x #positives`` non-positive default
    boxes with the highest confidence loss (all of them when there are fewer). ``cls_loss``, ``positive``: (N, A).
    Ties are broken by position (stable sort)."""
    if neg_pos_ratio < 0:
        raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
    neg_loss = cls_loss.detach().clone()
    neg_loss[positive] = -math.inf
    order = neg_loss.sort(dim=1, descending=True, stable=True).indices
    rank = order.sort(dim=1, stable=True).indices  # each box's place in its image's ranking
    num_neg = (neg_pos_ratio * positive.sum(1, keepdim=True)).floor()
    return (rank < num_neg) & ~positive


def ssd_multibox_loss(cls_logits: torch.Tensor, bbox_regression: torch.Tensor, anchors: torch.Tensor,
                      targets: list[dict], coder: BoxCoder | None = None, neg_pos_ratio: float = 3.0,
                      iou_threshold: float = 0.5, alpha: float = 1.0,
                      matches: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """SSD's loss, Eq. 1-3 (see the module docstring).

    Args:
        cls_logits: (N, A, C + 1) softmax logits, column 0 background.
        bbox_regression: (N, A, 4) offsets in `coder`'s encoding.
        anchors: (A, 4) default boxes, xyxy.
        targets: per image {"boxes": (M, 4), "labels": (M,) int64 in 1..C}.
        coder: default ``BoxCoder((10, 10, 5, 5))`` (variances 0.1 / 0.2).
        neg_pos_ratio: the paper's 3 negatives per positive.
        iou_threshold: `matching.ssd_match`'s 0.5.
        alpha: Eq. 1's weight of the localisation loss (1).
        matches: per image precomputed ``ssd_match`` results (A,), instead of matching here.

    Returns {"classification", "bbox_regression", "loss"}, each already divided by N (the positives of the batch).
    """
    coder = coder or BoxCoder(SSD_WEIGHTS)
    anchors = anchors.to(bbox_regression)
    n, a, _ = cls_logits.shape
    cls_targets = torch.zeros(n, a, dtype=torch.int64, device=cls_logits.device)
    box_loss = cls_logits.new_zeros(())
    for i, t in enumerate(targets):
        gt = t["boxes"].to(bbox_regression)
        m = ssd_match(anchors, gt, iou_threshold) if matches is None else matches[i]
        m = m.to(cls_logits.device)
        fg = m >= 0
        cls_targets[i, fg] = t["labels"].to(cls_logits.device, torch.int64)[m[fg]]
        enc = coder.encode(gt[m[fg]], anchors[fg])
        box_loss = box_loss + F.smooth_l1_loss(bbox_regression[i, fg], enc, reduction="sum")  # Eq. 2
    positive = cls_targets > 0
    ce = F.cross_entropy(cls_logits.reshape(n * a, -1), cls_targets.reshape(-1), reduction="none").reshape(n, a)
    negative = hard_negative_mask(ce, positive, neg_pos_ratio)
    num_pos = max(1, int(positive.sum()))
    cls = (ce[positive].sum() + ce[negative].sum()) / num_pos  # Eq. 3
    box = box_loss / num_pos
    return {"classification": cls, "bbox_regression": box, "loss": cls + alpha * box}


# -------------------------------------------------------------------------------------------- IoU-based losses
def _iou_terms(boxes: torch.Tensor, target: torch.Tensor, eps: float):
    x1, y1, x2, y2 = boxes.unbind(-1)
    gx1, gy1, gx2, gy2 = target.unbind(-1)
    inter = (torch.min(x2, gx2) - torch.max(x1, gx1)).clamp(min=0) * (torch.min(y2, gy2) - torch.max(y1, gy1)).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    iou = inter / (union + eps)
    cw = torch.max(x2, gx2) - torch.min(x1, gx1)  # the smallest enclosing box
    ch = torch.max(y2, gy2) - torch.min(y1, gy1)
    return iou, union, cw, ch


def giou_loss(boxes: torch.Tensor, target: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """``1 - GIoU = 1 - IoU + (|C| - |A u B|) / |C|`` (Rezatofighi et al. 2019) of matching pairs ``(..., 4)``."""
    iou, union, cw, ch = _iou_terms(boxes, target, eps)
    area_c = cw * ch
    return _reduce(1 - iou + (area_c - union) / (area_c + eps), reduction)


def _diou(boxes: torch.Tensor, target: torch.Tensor, eps: float):
    iou, _, cw, ch = _iou_terms(boxes, target, eps)
    c2 = cw ** 2 + ch ** 2 + eps  # squared diagonal of the enclosing box
    rho2 = ((boxes[..., 0] + boxes[..., 2]) - (target[..., 0] + target[..., 2])) ** 2 / 4 + \
           ((boxes[..., 1] + boxes[..., 3]) - (target[..., 1] + target[..., 3])) ** 2 / 4  # squared centre distance
    return 1 - iou + rho2 / c2, iou


def diou_loss(boxes: torch.Tensor, target: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """``1 - IoU + rho^2 / c^2`` (Zheng et al. 2020, Eq. 6) of matching pairs ``(..., 4)``."""
    return _reduce(_diou(boxes, target, eps)[0], reduction)


def ciou_loss(boxes: torch.Tensor, target: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """``1 - IoU + rho^2 / c^2 + alpha v`` (Zheng et al. 2020, Eq. 9-11) of matching pairs ``(..., 4)``;
    ``boxes`` are the predictions (``w, h``), ``target`` the ground truth (``w_gt, h_gt``)."""
    d, iou = _diou(boxes, target, eps)
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    wg, hg = target[..., 2] - target[..., 0], target[..., 3] - target[..., 1]
    v = (4 / math.pi ** 2) * (torch.atan(wg / (hg + eps)) - torch.atan(w / (h + eps))) ** 2  # Eq. 9
    with torch.no_grad():
        a = v / (1 - iou + v + eps)  # Eq. 11, a constant for the gradient
    return _reduce(d + a * v, reduction)
