"""Pascal VOC detection evaluation: average precision per class at IoU 0.5, and their mean (mAP).

The protocol of the VOC devkit (Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010,
Section 4.2; devkit functions VOCevaldet and VOCap):

- Per class, all detections of the test set are sorted by decreasing score. Each is matched to the ground-truth box
  of that class in its image with which it has the largest IoU. If that IoU is at least 0.5 and the box is not yet
  taken, the detection is a true positive and takes the box; a second detection of a taken box is a false positive
  (duplicates are errors); below 0.5 it is a false positive. A detection matched to a box marked "difficult" counts
  as neither, and difficult boxes do not count towards recall.
- Precision and recall after each detection give the precision/recall curve. **All-point AP** (VOC2010 onwards): the
  area under the curve after making precision monotonically decreasing (each point takes the largest precision at
  any higher recall). **11-point AP** (VOC2007, the number R-CNN's Table 2 reports): the mean over recall levels
  t = 0, 0.1, ..., 1 of the largest precision at recall >= t (0 when recall never reaches t).

A class without any (non-difficult) ground truth in the test set has no AP (NaN) and is left out of the mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .bbox import box_iou

__all__ = ["AP_METHODS", "EvalResult", "average_precision", "evaluate_detections", "match_detections"]

AP_METHODS = ("all", "11point")
VOC_IOU = 0.5


def average_precision(recall, precision, method: str = "all") -> float:
    """AP of a precision/recall curve (points in detection order). ``method``: "all" or "11point"."""
    rec, prec = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if method == "11point":
        return float(np.mean([prec[rec >= t].max() if np.any(rec >= t) else 0.0 for t in np.linspace(0, 1, 11)]))
    if method != "all":
        raise ValueError(f"AP method must be one of {', '.join(AP_METHODS)}, got {method!r}")
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):  # the precision envelope: best precision at this recall or higher
        mpre[i] = max(mpre[i], mpre[i + 1])
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def match_detections(det_boxes: list[torch.Tensor], det_scores: list[torch.Tensor], gt_boxes: list[torch.Tensor],
                     gt_difficult: list[torch.Tensor], iou_threshold: float = VOC_IOU):
    """One class: (true-positive flags, false-positive flags) of all detections in decreasing score order, and the
    number of non-difficult ground-truth boxes. Per image lists; see the module docstring for the rules."""
    scores = torch.cat([s.reshape(-1).to(torch.float64) for s in det_scores]) if det_scores else torch.zeros(0)
    image_of = torch.cat([torch.full((len(s),), i) for i, s in enumerate(det_scores)]) if det_scores else \
        torch.zeros(0, dtype=torch.int64)
    index_in = torch.cat([torch.arange(len(s)) for s in det_scores]) if det_scores else torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores, descending=True, stable=True).indices
    taken = [torch.zeros(len(g), dtype=torch.bool) for g in gt_boxes]
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, k in enumerate(order.tolist()):
        i, j = int(image_of[k]), int(index_in[k])
        gts = gt_boxes[i]
        if len(gts) == 0:
            fp[rank] = 1
            continue
        ious = box_iou(det_boxes[i][j : j + 1], gts)[0]
        best = int(torch.argmax(ious))
        if float(ious[best]) >= iou_threshold:
            if bool(gt_difficult[i][best]):
                continue  # neither: detections of difficult objects are ignored
            if not taken[i][best]:
                tp[rank] = 1
                taken[i][best] = True
            else:
                fp[rank] = 1  # a duplicate detection
        else:
            fp[rank] = 1
    npos = int(sum(int((~d).sum()) for d in gt_difficult))
    return tp, fp, npos


@dataclass
class EvalResult:
    """Per-class AP (both methods), the mean of each, and the counts behind them."""

    classes: list[str]
    ap: list[float]
    ap11: list[float]
    num_gt: list[int]
    num_det: list[int]
    iou_threshold: float

    @property
    def map(self) -> float:
        vals = [a for a in self.ap if not math.isnan(a)]
        return float(np.mean(vals)) if vals else math.nan

    @property
    def map11(self) -> float:
        vals = [a for a in self.ap11 if not math.isnan(a)]
        return float(np.mean(vals)) if vals else math.nan

    def to_dict(self) -> dict:
        return {"iou_threshold": self.iou_threshold, "mAP": self.map, "mAP_11point": self.map11,
                "classes": {c: {"ap": a, "ap_11point": a11, "num_gt": g, "num_detections": d}
                            for c, a, a11, g, d in zip(self.classes, self.ap, self.ap11, self.num_gt, self.num_det)}}


def evaluate_detections(detections: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], gt_boxes: list[torch.Tensor],
                        gt_labels: list[torch.Tensor], gt_difficult: list[torch.Tensor], classes: list[str],
                        iou_threshold: float = VOC_IOU) -> EvalResult:
    """VOC AP per class and mAP.

    Args:
        detections: per image ``(boxes (K, 4), scores (K,), labels (K,))``.
        gt_boxes, gt_labels, gt_difficult: per image ground truth.
        classes: class names (label k is classes[k]).
        iou_threshold: 0.5 in VOC.
    """
    if len(detections) != len(gt_boxes):
        raise ValueError(f"{len(detections)} images of detections for {len(gt_boxes)} images of ground truth")
    ap, ap11, ngt, ndet = [], [], [], []
    for c in range(len(classes)):
        db = [b[lab == c] for b, _, lab in detections]
        ds = [s[lab == c] for _, s, lab in detections]
        gb = [g[lab == c] for g, lab in zip(gt_boxes, gt_labels)]
        gd = [d[lab == c] for d, lab in zip(gt_difficult, gt_labels)]
        tp, fp, npos = match_detections(db, ds, gb, gd, iou_threshold)
        ngt.append(npos)
        ndet.append(len(tp))
        if npos == 0:
            ap.append(math.nan)
            ap11.append(math.nan)
            continue
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        rec = ctp / npos
        prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        ap.append(average_precision(rec, prec, "all"))
        ap11.append(average_precision(rec, prec, "11point"))
    return EvalResult(list(classes), ap, ap11, ngt, ndet, iou_threshold)
