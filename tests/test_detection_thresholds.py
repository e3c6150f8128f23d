"""R-CNN's thresholds on hand-made boxes whose IoU is computed here by hand (Girshick et al. 2014):

* fine-tuning positives at IoU >= 0.5, the rest background (Section 2.3; Caffe's window layer: ``overlap >= 0.5``);
* SVM positives = ground truth only, negatives at IoU < 0.3 with every box of the class, the grey zone ignored
  (Section 2.3, Appendix B; rcnn_train.m: ``overlap < 0.3``);
* box-regression pairs at IoU > 0.6, each with the box it overlaps most (Appendix C; rcnn_train_bbox_regressor.m:
  ``O > 0.6``);
* test-time NMS per class at 0.3, suppressing IoU > 0.3 (imdb_eval_voc.m: ``nms(bbox, 0.3)``; nms.m keeps
  ``o <= 0.3``).

Every case runs through the project's own labelling functions, with the thresholds from three places: the
functions' defaults, `RCNNConfig()` (the paper's defaults) and the digits-detection preset (what `cnnzoo detect
train` runs), so a changed constant in any of them fails a test here.

The boxes: a ground-truth box G = (0, 0, 100, 10) (area 1000) and proposals P_k = (0, 0, k, 10) inside it, whose
IoU with G is (10 k) / 1000 = k / 100 exactly: P_50 has IoU 0.5, P_49 0.49, P_30 0.3, P_29 0.29, P_60 0.6, P_61 0.61.
"""

from types import SimpleNamespace

import pytest
import torch

from cnnzoo.detection.bbox import box_iou, regression_pairs
from cnnzoo.detection.config import RCNNConfig, preset_config
from cnnzoo.detection.nms import batched_nms, nms
from cnnzoo.detection.rcnn import _windows, finetune_labels
from cnnzoo.detection.svm import svm_examples

G = [0.0, 0.0, 100.0, 10.0]


def p(k: float) -> list[float]:
    """P_k: IoU with G = k / 100."""
    return [0.0, 0.0, float(k), 10.0]


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# where each threshold is read from: the function's default (None: not passed), the paper's config, the preset
SOURCES = {"function-default": None, "RCNNConfig": RCNNConfig(), "digits-preset": preset_config("digits-detection")}


def _kw(source, name: str, section: str, key: str) -> dict:
    cfg = SOURCES[source]
    return {} if cfg is None else {name: getattr(getattr(cfg, section), key)}


def test_the_hand_ious():
    # intersection k x 10 (P_k lies inside G), union 1000: IoU k / 100, exactly in floating point for these k
    got = box_iou(boxes(p(50), p(49), p(30), p(29), p(60), p(61)), boxes(G))[:, 0].tolist()
    assert got == [0.5, 0.49, 0.3, 0.29, 0.6, 0.61]


@pytest.mark.parametrize("source", SOURCES)
def test_sec2_3_finetune_positive_at_iou_at_least_0_5(source):
    """Section 2.3: IoU >= 0.5 with a ground-truth box -> that box's class (label class + 1), the rest -> 0."""
    kw = _kw(source, "fg_iou", "finetune", "fg_iou")
    props = boxes(p(50), p(49), p(45), p(100), [200, 0, 250, 10])
    labels = finetune_labels(props, boxes(G), torch.tensor([3]), **kw)
    assert labels.tolist() == [4, 0, 0, 4, 0]  # 0.5 positive; 0.49, 0.45 background; 1.0 positive; 0 background


@pytest.mark.parametrize("source", SOURCES)
def test_sec2_3_finetune_label_of_the_box_overlapped_most(source):
    # G (class 1) and H = (40, 0, 140, 10) (class 2); P_100 = G overlaps G by 1 and H by 60 / 140:
    # label of G; Q = (50, 0, 140, 10) overlaps G by 50 / 140 = 0.357 and H by 90 / 100 = 0.9: label of H
    kw = _kw(source, "fg_iou", "finetune", "fg_iou")
    gt = boxes(G, [40, 0, 140, 10])
    assert finetune_labels(boxes(p(100), [50, 0, 140, 10]), gt, torch.tensor([1, 2]), **kw).tolist() == [2, 3]


@pytest.mark.parametrize("source", ["RCNNConfig", "digits-preset"])
def test_sec2_3_finetune_windows_of_a_training_image(source):
    """`_windows` (what fine-tuning samples from): the ground-truth boxes are positive windows, then the proposals
    labelled by IoU >= 0.5."""
    image = SimpleNamespace(boxes=[boxes(G)], labels=[torch.tensor([7])])  # the two fields `_windows` reads
    fg_iou = SOURCES[source].finetune.fg_iou
    idx, win, lab = _windows(image, [boxes(p(50), p(49), [300, 0, 310, 10])], fg_iou)
    assert idx.tolist() == [0, 0, 0, 0]
    assert win.tolist() == [G, p(50), p(49), [300, 0, 310, 10]]
    assert lab.tolist() == [8, 8, 0, 0]


@pytest.mark.parametrize("source", SOURCES)
def test_sec2_3_appb_svm_negatives_below_0_3_and_ground_truth_positives(source):
    """Section 2.3 / Appendix B: for class c, positives are its ground-truth boxes only; negatives the proposals with
    IoU < 0.3 with every box of c; IoU >= 0.3 (the grey zone, and even >= 0.5) is ignored."""
    kw = _kw(source, "neg_iou", "svm", "neg_iou")
    gt = boxes(G, [200, 0, 300, 10])  # class 0, class 1 (H, far from every proposal but the last)
    gt_labels = torch.tensor([0, 1])
    props = boxes(p(30), p(29), p(49), p(60), p(100), [400, 0, 450, 10], [200, 0, 229, 10])
    pos, neg = svm_examples(props, gt, gt_labels, 0, **kw)
    assert pos.tolist() == [True, False]
    #                     0.3    0.29  0.49   0.6    1.0    0     0 (with G; 0.29 with H)
    assert neg.tolist() == [False, True, False, False, False, True, True]
    # the same from the float32 IoUs `_train_svms` keeps
    assert torch.equal(svm_examples(props, gt, gt_labels, 0, **kw, iou=box_iou(props, gt).float())[1], neg)
    # class 1: only the last proposal overlaps H, by 29 / 100 = 0.29 < 0.3: every proposal is a negative of class 1
    pos, neg = svm_examples(props, gt, gt_labels, 1, **kw)
    assert pos.tolist() == [False, True] and neg.all()
    # a class without a box in the image: no positive, every proposal a negative
    pos, neg = svm_examples(props, gt, gt_labels, 5, **kw)
    assert not pos.any() and neg.all()


@pytest.mark.parametrize("source", SOURCES)
def test_appc_regression_pairs_above_0_6(source):
    """Appendix C: a proposal is a training pair iff its largest IoU with a ground-truth box is > 0.6, paired with
    that box."""
    kw = _kw(source, "min_iou", "bbox", "min_iou")
    gt = boxes(G, [0, 20, 50, 30])  # G and K = (0, 20, 50, 30) (area 500)
    # P_61 (0.61 with G), P_60 (0.6), P_100 (1.0), (0, 20, 31, 30) (31 / 50 = 0.62 with K), (0, 20, 30, 30) (0.6)
    props = boxes(p(61), p(60), p(100), [0, 20, 31, 30], [0, 20, 30, 30])
    sel, assigned = regression_pairs(props, gt, **kw)
    assert sel.tolist() == [True, False, True, True, False]
    assert assigned[sel].tolist() == [0, 0, 1]
    assert torch.equal(regression_pairs(props, gt, **kw, iou=box_iou(props, gt).float())[0], sel)  # as `_train_svms`


@pytest.mark.parametrize("source", SOURCES)
def test_rcnn_code_nms_suppresses_iou_above_0_3(source):
    """Greedy per-class NMS at R-CNN's 0.3 (imdb_eval_voc.m: nms(bbox, 0.3); nms.m keeps o <= 0.3).

    A = G (score 0.9), B = P_30 (0.8): IoU(A, B) = 0.3, kept; C = (69, 0, 100, 10) (0.7): IoU(A, C) = 31 / 100 =
    0.31, suppressed by A; D = (55, 0, 100, 10) (0.6): IoU(A, D) = 45 / 100 = 0.45, suppressed by A. B touches
    neither C nor D. (At 0.5, C would stay and suppress D: IoU(C, D) = 31 / 45 = 0.69.)"""
    cfg = SOURCES[source]
    kw = {} if cfg is None else {"iou_threshold": cfg.test.nms_iou}
    bx = boxes(G, p(30), [69, 0, 100, 10], [55, 0, 100, 10])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert box_iou(bx[:1], bx)[0].tolist() == pytest.approx([1.0, 0.3, 0.31, 0.45], abs=1e-12)
    assert nms(bx, scores, **kw).tolist() == [0, 1]
    # per class: the same four boxes in class 1 are suppressed the same way, and never by class 0's
    cls = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    two = torch.cat([bx, bx])
    kept = batched_nms(two, torch.cat([scores, scores - 0.05]), cls, **kw)
    assert kept.tolist() == [0, 4, 1, 5]
