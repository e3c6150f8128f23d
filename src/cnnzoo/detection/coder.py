"""Weighted box encoding of the anchor-based detectors: torchvision's ``det_utils.BoxCoder`` arithmetic.

An anchor (or default box) ``a`` with centre ``(a_x, a_y)`` and size ``(a_w, a_h)`` and a ground-truth box ``g``
are related by the offsets of Faster R-CNN (Ren et al. 2015, Eq. 2; R-CNN's Appendix C, `cnnzoo.detection.bbox`),
each multiplied by a weight:

    t_x = w_x (g_x - a_x) / a_w,   t_y = w_y (g_y - a_y) / a_h,   t_w = w_w log(g_w / a_w),   t_h = w_h log(g_h / a_h)

- SSD (Liu et al. 2016, Sec. 2.2 Eq. 2) regresses the same offsets; its Caffe code divides them by the "variances"
  (0.1, 0.1, 0.2, 0.2), which are the weights ``(10, 10, 5, 5)`` here (torchvision's ssd.py).
- RetinaNet (Lin et al. 2017, Sec. 4 "Box Regression Subnet") uses the plain offsets: weights ``(1, 1, 1, 1)``.

Decoding inverts the map. ``t_w``, ``t_h`` (after dividing by their weights) are clamped from above at
``log(1000 / 16)`` before the exponential (torchvision's / Detectron's ``bbox_xform_clip``): a box can grow at most
62.5 times its anchor, so an untrained network never overflows ``exp``.

Boxes are float ``(x1, y1, x2, y2)`` pixels (see `cnnzoo.detection.data`), width ``x2 - x1``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BBOX_XFORM_CLIP", "RETINANET_WEIGHTS", "SSD_WEIGHTS", "BoxCoder"]

#: torchvision's / Detectron's clamp of the decoded log-scale offsets
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
#: SSD's variances 0.1 (centre) and 0.2 (size) as weights (torchvision ssd.py)
SSD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
#: RetinaNet's unweighted offsets (torchvision retinanet.py)
RETINANET_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


class BoxCoder:
    """Encodes boxes as weighted offsets from anchors and decodes them back (see the module docstring).

    Args:
        weights: ``(w_x, w_y, w_w, w_h)``: `SSD_WEIGHTS` (10, 10, 5, 5) or `RETINANET_WEIGHTS` (1, 1, 1, 1).
        bbox_xform_clip: upper clamp of the decoded log-size offsets, ``log(1000 / 16)`` as torchvision.

    Both methods broadcast over leading dimensions: ``anchors`` (A, 4) with ``boxes`` / ``deltas`` (A, 4) or
    (N, A, 4).
    """

    def __init__(self, weights: tuple[float, float, float, float] = RETINANET_WEIGHTS,
                 bbox_xform_clip: float = BBOX_XFORM_CLIP):
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4 or any(not w > 0 for w in weights):
            raise ValueError(f"BoxCoder weights must be 4 positive numbers (wx, wy, ww, wh), got {weights}")
        self.weights = weights
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Offsets ``(..., 4)`` taking each anchor to its box (torchvision ``encode_single(boxes, anchors)``)."""
        anchors = anchors.to(boxes.dtype)
        ax, ay, aw, ah = _centre_size(anchors)
        gx, gy, gw, gh = _centre_size(boxes)
        wx, wy, ww, wh = self.weights
        return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                            ww * torch.log(gw / aw), wh * torch.log(gh / ah)], -1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes ``(..., 4)`` from offsets and their anchors (torchvision ``decode_single(deltas, anchors)``)."""
        anchors = anchors.to(deltas.dtype)
        ax, ay, aw, ah = _centre_size(anchors)
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = torch.clamp(deltas[..., 2] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.bbox_xform_clip)
        cx, cy = dx * aw + ax, dy * ah + ay
        w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
