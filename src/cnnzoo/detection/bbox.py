"""Box arithmetic and R-CNN's bounding-box regression (Girshick et al. 2014, Appendix C).

Boxes are float ``(x1, y1, x2, y2)`` in continuous pixel coordinates (see `cnnzoo.detection.data`): width
``x2 - x1``, centre ``x1 + w / 2``.

Appendix C: a proposal P (centre Px, Py, width Pw, height Ph) and its ground-truth box G are related by the targets

    t_x = (Gx - Px) / Pw,   t_y = (Gy - Py) / Ph,   t_w = log(Gw / Pw),   t_h = log(Gh / Ph)

(scale-invariant translation of the centre, log-space scaling of width and height). Each is a linear function
``w_*^T phi(P)`` of the proposal's pool5 features, learnt per class by ridge regression (lambda = 1000) on the
proposals whose IoU with some ground-truth box exceeds 0.6 (each paired with the box it overlaps most); the
prediction is ``G^x = Pw d_x(P) + Px``, ``G^w = Pw exp(d_w(P))``, and so on, applied once (iterating did not help).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["REGRESSION_MIN_IOU", "BoxRegressor", "box_area", "box_iou", "clip_boxes", "decode", "encode",
           "fit_box_regressor", "regression_pairs"]

#: Appendix C: "lambda = 1000", and training pairs whose IoU exceeds 0.6 ("if and only if the overlap is greater
#: than a threshold (which we set to 0.6 using a validation set)"; rcnn_train_bbox_regressor.m: ``O > min_overlap``)
RIDGE_LAMBDA = 1000.0
REGRESSION_MIN_IOU = 0.6


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(N, 4)`` boxes; a degenerate box has area 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): ``(N, M)``."""
    a, b = a.reshape(-1, 4).to(torch.float64), b.reshape(-1, 4).to(torch.float64)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def regression_pairs(proposals: torch.Tensor, gt_boxes: torch.Tensor, min_iou: float = REGRESSION_MIN_IOU, *,
                     iou: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Appendix C's training pairs of one image: ``(selected, assigned)``: a boolean mask over ``proposals`` (N,) of
    those whose largest IoU with a ground-truth box is greater than ``min_iou``, and for each proposal the index of
    the box it overlaps most (its target, and its class). ``iou`` (N, K) may be given precomputed."""
    if len(gt_boxes) == 0 or len(proposals) == 0:
        return torch.zeros(len(proposals), dtype=torch.bool), torch.zeros(len(proposals), dtype=torch.int64)
    best, assigned = (box_iou(proposals, gt_boxes) if iou is None else iou).max(1)
    return best > min_iou, assigned


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes cut to the image ``(0, 0, width, height)``."""
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(proposals: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Appendix C's targets ``(t_x, t_y, t_w, t_h)`` taking each proposal to its ground-truth box: ``(N, 4)``."""
    px, py, pw, ph = _centre_size(proposals.to(torch.float64))
    gx, gy, gw, gh = _centre_size(gt.to(torch.float64))
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], 1)


def decode(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """The boxes predicted from proposals and ``(d_x, d_y, d_w, d_h)``: the inverse of `encode`."""
    px, py, pw, ph = _centre_size(proposals.to(torch.float64))
    d = deltas.to(torch.float64)
    cx, cy = pw * d[:, 0] + px, ph * d[:, 1] + py
    w, h = pw * torch.exp(d[:, 2]), ph * torch.exp(d[:, 3])
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 1).to(proposals.dtype)


@dataclass
class BoxRegressor:
    """Per-class linear maps from features to Appendix C's deltas: ``weight`` (N_classes, D + 1, 4) (bias last),
    ``target_mean`` (N_classes, 4) added back to the predictions, ``trained`` (N_classes,) bool."""

    weight: torch.Tensor
    target_mean: torch.Tensor
    trained: torch.Tensor

    def predict(self, features: torch.Tensor, proposals: torch.Tensor, cls: int) -> torch.Tensor:
        """Refined boxes of ``proposals`` for class ``cls`` (the proposals unchanged if that class had no
        training pairs)."""
        if not bool(self.trained[cls]):
            return proposals
        x = torch.cat([features.to(torch.float64), torch.ones(len(features), 1, dtype=torch.float64)], 1)
        deltas = x @ self.weight[cls].to(torch.float64) + self.target_mean[cls].to(torch.float64)
        return decode(proposals, deltas)


def fit_box_regressor(features: torch.Tensor, proposals: torch.Tensor, gt_boxes: torch.Tensor,
                      labels: torch.Tensor, num_classes: int, *, lam: float = RIDGE_LAMBDA) -> BoxRegressor:
    """Ridge regression per class from ``features`` (N, D) of ``proposals`` (N, 4) to the targets towards their
    assigned ``gt_boxes`` (N, 4) of class ``labels`` (N,); the caller picks the pairs (`regression_pairs`: IoU > 0.6,
    Appendix C).

    Solves ``min_w ||X w - (T - mean T)||^2 + lam ||w||^2`` in closed form (the bias is not penalised: the targets
    are centred and the bias column absorbs the rest); ``lam`` is Appendix C's 1000 for features at the R-CNN
    scale (mean norm 20, see `cnnzoo.detection.svm`).
    """
    if lam < 0:
        raise ValueError(f"ridge lambda must be >= 0, got {lam}")
    d = features.shape[1]
    weight = torch.zeros(num_classes, d + 1, 4, dtype=torch.float64)
    mean = torch.zeros(num_classes, 4, dtype=torch.float64)
    trained = torch.zeros(num_classes, dtype=torch.bool)
    targets = encode(proposals, gt_boxes)
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) == 0:
            continue
        x = features[idx].to(torch.float64)
        t = targets[idx]
        mean[c] = t.mean(0)
        xm = x.mean(0)
        xc = x - xm
        a = xc.T @ xc + lam * torch.eye(d, dtype=torch.float64)
        w = torch.linalg.solve(a, xc.T @ (t - mean[c]))
        weight[c, :d] = w
        weight[c, d] = -(xm @ w)  # the bias: predictions at the mean feature are the mean target
        trained[c] = True
    return BoxRegressor(weight.to(torch.float32), mean.to(torch.float32), trained)
