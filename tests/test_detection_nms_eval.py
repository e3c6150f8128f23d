"""NMS, IoU and VOC average precision against hand-computed cases."""

import math

import pytest
import torch

from cnnzoo.detection.bbox import box_iou
from cnnzoo.detection.nms import batched_nms, nms
from cnnzoo.detection.voc_eval import average_precision, evaluate_detections


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_iou_by_hand():
    # (0,0,10,10) and (5,5,15,15): intersection 5x5 = 25, union 100 + 100 - 25 = 175
    iou = box_iou(t([[0, 0, 10, 10]]), t([[5, 5, 15, 15], [10, 0, 20, 10], [0, 0, 10, 10]]))
    assert iou.tolist()[0] == pytest.approx([25 / 175, 0.0, 1.0])


# A (0.9) and B (0.8) overlap by 81/119 = 0.68; A and C (0.7) by 50/150 = 0.333; D (0.95) touches nothing.
BOXES = t([[0, 0, 10, 10], [1, 1, 11, 11], [0, 5, 10, 15], [20, 20, 30, 30]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.95])


@pytest.mark.parametrize(("threshold", "kept"), [(0.3, [3, 0]), (0.5, [3, 0, 2]), (0.7, [3, 0, 1, 2]),
                                                 (1.0, [3, 0, 1, 2])])
def test_nms_by_hand(threshold, kept):
    assert nms(BOXES, SCORES, threshold).tolist() == kept


def test_nms_suppressed_boxes_do_not_suppress():
    # X overlaps Y by 1/3, Y overlaps Z by 1/3, X and Z are disjoint: greedy NMS at 0.3 keeps X and Z (Y is gone
    # before it could suppress Z)
    boxes = t([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]])
    assert nms(boxes, torch.tensor([3.0, 2.0, 1.0]), 0.3).tolist() == [0, 2]


def test_nms_ties_keep_the_lower_index_and_per_class():
    boxes = t([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    assert nms(boxes, torch.tensor([0.5, 0.5, 0.1]), 0.3).tolist() == [0]
    # per class: the same box in two classes survives in both
    assert batched_nms(boxes, torch.tensor([0.5, 0.7, 0.1]), torch.tensor([0, 1, 0]), 0.3).tolist() == [1, 0]


def test_nms_rejects_a_bad_threshold():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        nms(BOXES, SCORES, 1.5)


# Hand-computed case: 3 ground-truth boxes, 5 detections in decreasing score:
#   d1 TP, d2 duplicate of d1's box (FP), d3 FP, d4 TP, d5 TP (IoU 0.9)
#   precision 1, 1/2, 1/3, 2/4, 3/5; recall 1/3, 1/3, 1/3, 2/3, 1
# all-point AP: envelope 1 on (0, 1/3], 0.6 on (1/3, 1] -> 1/3 + 2/3 * 0.6 = 2.2/3
# 11-point AP: t = 0, .1, .2, .3 -> 1; t = .4, .5, .6 -> 0.6; t = .7, .8, .9, 1 -> 0.6: (4 + 7 * 0.6) / 11 = 8.2/11
GT = [t([[0, 0, 10, 10], [20, 20, 30, 30]]), t([[0, 0, 10, 10], [30, 30, 40, 40]])]
GT_LABELS = [torch.tensor([0, 0]), torch.tensor([0, 0])]
GT_DIFFICULT = [torch.tensor([False, False]), torch.tensor([False, True])]
DETS = [
    (t([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 29]]), torch.tensor([0.9, 0.8, 0.5]), torch.tensor([0, 0, 0])),
    # img 1: an FP, a TP, a hit on the difficult box (ignored), and a class-1 detection (class 1 has no ground truth)
    (t([[50, 50, 60, 60], [0, 0, 10, 10], [30, 30, 40, 40], [0, 0, 5, 5]]), torch.tensor([0.7, 0.6, 0.65, 0.99]),
     torch.tensor([0, 0, 0, 1])),
]


def test_average_precision_by_hand():
    prec = [1, 1 / 2, 1 / 3, 2 / 4, 3 / 5]
    rec = [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1]
    assert average_precision(rec, prec, "all") == pytest.approx(2.2 / 3)
    assert average_precision(rec, prec, "11point") == pytest.approx(8.2 / 11)


def test_average_precision_edge_cases():
    assert average_precision([0.5, 1.0], [1.0, 1.0], "all") == pytest.approx(1.0)
    # recall never reaches 0.6: the 11-point mean counts 0 for t = 0.6 ... 1 (5 of 11 points)
    assert average_precision([0.5], [1.0], "11point") == pytest.approx(6 / 11)
    assert average_precision([0.5], [1.0], "all") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="11point"):
        average_precision([1.0], [1.0], "voc2012")


def test_evaluate_detections_voc_protocol():
    res = evaluate_detections(DETS, GT, GT_LABELS, GT_DIFFICULT, ["digit", "other"])
    assert res.num_gt == [3, 0]  # the difficult box does not count
    assert res.ap[0] == pytest.approx(2.2 / 3)
    assert res.ap11[0] == pytest.approx(8.2 / 11)
    assert math.isnan(res.ap[1]) and math.isnan(res.ap11[1])  # no ground truth: no AP, left out of the mean
    assert res.map == pytest.approx(2.2 / 3) and res.map11 == pytest.approx(8.2 / 11)
    d = res.to_dict()
    assert d["classes"]["digit"]["num_detections"] == 6 and d["mAP"] == pytest.approx(2.2 / 3)


def test_evaluate_detections_iou_threshold_is_inclusive_at_half():
    # a detection of IoU exactly 0.5 is a true positive (the devkit's ovmax >= minoverlap)
    gt = [t([[0, 0, 10, 10]])]
    det = [(t([[0, 0, 10, 5]]), torch.tensor([1.0]), torch.tensor([0]))]
    res = evaluate_detections(det, gt, [torch.tensor([0])], [torch.tensor([False])], ["a"])
    assert res.ap[0] == pytest.approx(1.0)
    det = [(t([[0, 0, 10, 4.9]]), torch.tensor([1.0]), torch.tensor([0]))]
    assert evaluate_detections(det, gt, [torch.tensor([0])], [torch.tensor([False])], ["a"]).ap[0] == 0.0
