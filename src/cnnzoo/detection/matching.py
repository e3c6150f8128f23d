"""Assigning anchors to ground-truth boxes: torchvision's ``Matcher`` (RetinaNet) and ``SSDMatcher`` (SSD).

Both take a quality matrix ``(M, A)``: the IoU of each of M ground-truth boxes with each of A anchors, and return
``(A,)`` int64: for each anchor the index of its box, or a negative code.

- `Matcher` (Lin et al. 2017, RetinaNet, Sec. 4 "Inference and Training": "anchors are assigned to ground-truth
  object boxes using an intersection-over-union (IoU) threshold of 0.5; and to background if their IoU is in
  [0, 0.4). ... Anchors ... in [0.4, 0.5) are ignored"): an anchor whose best IoU is ``>= high`` takes that box;
  below ``low`` it is background (`BELOW_LOW_THRESHOLD` = -1), in between it is ignored
  (`BETWEEN_THRESHOLDS` = -2). With ``allow_low_quality_matches`` (Faster R-CNN's rule (i), Ren et al. 2015
  Sec. 3.1.2, which torchvision's RetinaNet also applies) every box also takes the anchor(s) with which it has its
  highest IoU, ties included, even below ``high``; such an anchor is given the box *it* overlaps most.
- `ssd_match` (Liu et al. 2016, SSD, Sec. 2.2 "Matching strategy"): "We begin by matching each ground truth box to
  the default box with the best jaccard overlap ... we then match default boxes to any ground truth with jaccard
  overlap higher than a threshold (0.5)". Unmatched boxes are background (-1); there is no ignored band.

Deviations: the threshold tests are torchvision's ``>= high`` (the papers say "higher than"; equal IoUs are rare with
float boxes). An image without ground-truth boxes gives all -1 (every anchor background) where torchvision's matcher
raises and its models special-case the empty image to the same -1s. When two boxes share their best default box in
`ssd_match`, the later box keeps it (torchvision's index assignment on CPU).
"""

from __future__ import annotations

import torch

from .bbox import box_iou

__all__ = ["BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "Matcher", "ssd_match"]

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


class Matcher:
    """Anchors to boxes by an IoU band (see the module docstring); RetinaNet: ``Matcher(0.5, 0.4, True)``.

    Args:
        high_threshold: IoU at or above which an anchor is a positive.
        low_threshold: IoU below which it is background; in ``[low, high)`` it is ignored (-2).
        allow_low_quality_matches: each box also takes its best anchor(s), whatever their IoU.
    """

    BELOW_LOW_THRESHOLD = BELOW_LOW_THRESHOLD
    BETWEEN_THRESHOLDS = BETWEEN_THRESHOLDS

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if not 0.0 <= low_threshold <= high_threshold <= 1.0:
            raise ValueError(f"Matcher needs 0 <= low_threshold <= high_threshold <= 1, got low {low_threshold} and "
                             f"high {high_threshold}")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        """``(A,)`` int64 matches of a ``(M, A)`` quality (IoU) matrix: a box index, -1 or -2."""
        if quality.dim() != 2:
            raise ValueError(f"the match quality matrix must be (num_boxes, num_anchors), got shape "
                             f"{tuple(quality.shape)}")
        if quality.shape[0] == 0:
            return torch.full((quality.shape[1],), BELOW_LOW_THRESHOLD, dtype=torch.int64, device=quality.device)
        best, matches = quality.max(dim=0)  # each anchor's best box
        all_matches = matches.clone()
        matches[best < self.low_threshold] = BELOW_LOW_THRESHOLD
        matches[(best >= self.low_threshold) & (best < self.high_threshold)] = BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            best_per_box = quality.max(dim=1).values  # each box's highest IoU with any anchor
            anchors_hit = torch.nonzero(quality == best_per_box[:, None])[:, 1]  # ties included
            matches[anchors_hit] = all_matches[anchors_hit]
        return matches

    def match_boxes(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """`__call__` on the IoU of ``boxes`` (M, 4) with ``anchors`` (A, 4)."""
        return self(box_iou(boxes, anchors))


def ssd_match(anchors: torch.Tensor, boxes: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """SSD's matching (Sec. 2.2): ``(A,)`` int64, for each default box the index of its ground-truth box or -1.

    Every default box with IoU ``>= threshold`` with some box takes the box it overlaps most; then each box takes
    its best default box, whatever the IoU (torchvision's ``SSDMatcher``).

    Args:
        anchors: (A, 4) default boxes, xyxy pixels.
        boxes: (M, 4) ground-truth boxes of one image.
        threshold: the paper's 0.5.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"SSD matching threshold must be in [0, 1], got {threshold}")
    if len(boxes) == 0:
        return torch.full((len(anchors),), BELOW_LOW_THRESHOLD, dtype=torch.int64, device=anchors.device)
    quality = box_iou(boxes, anchors)
    matches = Matcher(threshold, threshold)(quality)
    best_anchor = quality.argmax(dim=1)  # (M,): each box's best default box
    for m, a in enumerate(best_anchor.tolist()):  # in order: a later box sharing a best default box keeps it
        matches[a] = m
    return matches.to(anchors.device)
