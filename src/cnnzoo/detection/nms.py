"""Greedy non-maximum suppression (Girshick et al. 2014, Section 2.2).

"Given all scored regions in an image, we apply a greedy non-maximum suppression (for each class independently)
that rejects a region if it has an intersection-over-union (IoU) overlap with a higher scoring selected region
larger than a learned threshold." The paper does not print the threshold; R-CNN's released code evaluates its
detections with 0.3, for each class independently (``imdb/imdb_eval_voc.m``, called once per class by
``rcnn_test.m``: ``keep = nms(bbox, 0.3)``), and its ``nms/nms.m`` keeps a box while ``o <= overlap``: a box is
suppressed by an IoU strictly greater than 0.3, an IoU of exactly 0.3 survives.
"""

from __future__ import annotations

import torch

from .bbox import box_iou

__all__ = ["NMS_IOU", "batched_nms", "nms"]

NMS_IOU = 0.3  # R-CNN's released code (imdb/imdb_eval_voc.m): nms(bbox, 0.3), per class


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = NMS_IOU) -> torch.Tensor:
    """Indices of the boxes kept, highest score first: visit boxes by decreasing score (ties: lower index first)
    and keep one unless its IoU with a box already kept is larger than ``iou_threshold``."""
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"NMS IoU threshold must be in [0, 1], got {iou_threshold}")
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float = NMS_IOU) -> torch.Tensor:
    """NMS for each class independently; indices kept, by decreasing score."""
    keep = [torch.nonzero(classes == c).flatten()[nms(boxes[classes == c], scores[classes == c], iou_threshold)]
            for c in torch.unique(classes).tolist()]
    if not keep:
        return torch.zeros(0, dtype=torch.int64)
    kept = torch.cat(keep)
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
