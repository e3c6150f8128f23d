"""The FCN paper's metrics (Long et al. 2015, Sec. 5) against confusion matrices counted by hand."""

import math

import pytest
import torch

from cnnzoo.segmentation.metrics import ConfusionMatrix, confusion_matrix, scores_from_confusion

# A worked example, 4 classes; class 3 occurs neither in the ground truth nor in a counted prediction (the one
# pixel predicted as 3 lies on an ignored pixel). Two batches, 255 = ignore.
GT1 = torch.tensor([[0, 0, 1, 1],
                    [2, 255, 1, 0]])
PRED1 = torch.tensor([[0, 1, 1, 1],
                      [2, 2, 0, 0]])
GT2 = torch.tensor([[2, 2, 2, 255]])
PRED2 = torch.tensor([[2, 1, 2, 3]])
# Counted by hand, rows = ground truth, columns = prediction (n_ij): pairs (gt, pred) of batch 1 without the ignored
# pixel: (0,0) (0,1) (1,1) (1,1) (2,2) (1,0) (0,0); batch 2: (2,2) (2,1) (2,2).
HIST = [[2, 1, 0, 0],
        [1, 2, 0, 0],
        [0, 1, 3, 0],
        [0, 0, 0, 0]]
# t = (3, 3, 4, 0), predicted = column sums (3, 4, 3, 0), total 10
# pixel accuracy  = (2 + 2 + 3) / 10                                = 0.7
# mean accuracy   = (2/3 + 2/3 + 3/4) / 3   (class 3: 0/0, left out) = 0.694444...
# IU              = 2/(3+3-2), 2/(3+4-2), 3/(4+3-3), 0/0  = 0.5, 0.4, 0.75, NaN
# mean IU         = (0.5 + 0.4 + 0.75) / 3                           = 0.55
# fw IU           = (3*0.5 + 3*0.4 + 4*0.75) / 10                    = 0.57


def test_confusion_matrix_counts_by_hand_and_drops_ignored_pixels():
    cm = ConfusionMatrix(4)
    cm.update(PRED1, GT1)
    cm.update(PRED2, GT2)
    assert cm.hist.tolist() == HIST
    both = confusion_matrix(torch.cat([PRED1.flatten(), PRED2.flatten()]), torch.cat([GT1.flatten(), GT2.flatten()]), 4)
    assert both.tolist() == HIST  # accumulating batches = one matrix over all pixels


def test_four_metrics_and_per_class_iou_by_hand():
    s = scores_from_confusion(torch.tensor(HIST))
    assert s["pixel_accuracy"] == pytest.approx(0.7)
    assert s["mean_accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    assert s["mean_iu"] == pytest.approx(0.55)
    assert s["fw_iu"] == pytest.approx(0.57)
    assert s["per_class_iou"][:3] == pytest.approx([0.5, 0.4, 0.75])
    assert math.isnan(s["per_class_iou"][3])  # absent from both: 0/0, left out of the mean (score.py's nanmean)
    assert math.isnan(s["per_class_accuracy"][3])


def test_class_predicted_but_absent_from_ground_truth_counts_zero_in_mean_iu():
    # gt (0, 0), pred (0, 1): hist [[1, 1], [0, 0]]; IU0 = 1/(2+1-1) = 0.5, IU1 = 0/(0+1-0) = 0; acc1 = 0/0
    s = scores_from_confusion(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2))
    assert s["per_class_iou"] == [0.5, 0.0]
    assert s["mean_iu"] == pytest.approx(0.25)
    assert s["mean_accuracy"] == pytest.approx(0.5)
    assert s["pixel_accuracy"] == pytest.approx(0.5)
    assert s["fw_iu"] == pytest.approx(0.5)


def test_bad_labels_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"target has label\(s\) \[7\] outside 0..3"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 4)
    with pytest.raises(ValueError, match=r"pred has label\(s\) \[4\]"):
        confusion_matrix(torch.tensor([0, 4]), torch.tensor([0, 1]), 4)
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 4)
    with pytest.raises(ValueError, match="argmax"):
        confusion_matrix(torch.zeros(2), torch.tensor([0, 1]), 4)


def test_matches_torchmetrics_when_installed():
    tm = pytest.importorskip("torchmetrics.classification")
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 16, 16), generator=g)
    target[:, :2] = 255
    target[target == 4] = 2  # class 4 never in the ground truth
    pred = torch.randint(0, 5, (3, 16, 16), generator=g)
    ours = confusion_matrix(pred, target, 5)
    theirs = tm.MulticlassConfusionMatrix(5, ignore_index=255)(pred, target)
    assert torch.equal(ours, theirs)
    s = scores_from_confusion(ours)
    iou = tm.MulticlassJaccardIndex(5, average="none", ignore_index=255)(pred, target)
    assert s["per_class_iou"] == pytest.approx(iou.tolist(), abs=1e-6)  # class 4: predicted, absent -> 0 in both
    acc = tm.MulticlassAccuracy(5, average="micro", ignore_index=255)(pred, target)
    assert s["pixel_accuracy"] == pytest.approx(float(acc), abs=1e-6)
