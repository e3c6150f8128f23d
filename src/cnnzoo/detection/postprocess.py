"""What every YOLO's inference shares: per (box, class) scores above a threshold, per-class NMS, the best
``max_detections`` kept (YOLO v1 Sec. 2 "class-specific confidence scores"; v2-v4 the same on their decoded boxes),
and the eval-mode forward around it."""

from __future__ import annotations

import torch
from torch import nn

from ..models.base import eval_mode
from .nms import batched_nms

__all__ = ["eval_forward", "image_hw", "select_per_class"]


def image_hw(image_size) -> tuple[int, int]:
    """``image_size`` as (height, width): an int is a square."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def select_per_class(boxes: torch.Tensor, scores: torch.Tensor, image_size, score_thresh: float, nms_thresh: float,
                     max_detections: int) -> list[dict[str, torch.Tensor]]:
    """Per image ``{"boxes" (K, 4) xyxy pixels clipped to the image, "scores" (K,), "labels" (K,) in 1..C}`` from
    decoded ``boxes`` (N, A, 4) and class-specific ``scores`` (N, A, C): every (box, class) scoring above
    ``score_thresh``, per-class NMS at ``nms_thresh``, the ``max_detections`` best."""
    if not 0.0 <= nms_thresh <= 1.0:
        raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh!r}")
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 0:
        raise ValueError(f"max_detections must be a whole number >= 0, got {max_detections!r}")
    height, width = image_hw(image_size)
    results = []
    for b, s in zip(boxes, scores):
        b = b.float().clone()
        b[:, 0::2] = b[:, 0::2].clamp(0, width)
        b[:, 1::2] = b[:, 1::2].clamp(0, height)
        idx, cls = torch.nonzero(s > score_thresh, as_tuple=True)  # every (box, class) above the threshold
        cand_boxes, cand_scores = b[idx], s[idx, cls].float()
        keep = batched_nms(cand_boxes, cand_scores, cls, nms_thresh)[:max_detections]
        results.append({"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": cls[keep] + 1})
    return results


def eval_forward(model: nn.Module, images: torch.Tensor):
    """``model(images)`` in eval mode without gradients, every module's train/eval mode restored after."""
    with eval_mode(model), torch.no_grad():
        return model(images)
