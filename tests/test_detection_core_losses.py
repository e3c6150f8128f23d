"""Box coder, matchers and the one-stage losses on hand-computed cases (expected values worked out in comments)."""

import math

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.detection.bbox import encode as rcnn_encode
from cnnzoo.detection.coder import BBOX_XFORM_CLIP, SSD_WEIGHTS, BoxCoder
from cnnzoo.detection.losses import (
    ciou_loss,
    diou_loss,
    giou_loss,
    hard_negative_mask,
    retinanet_loss,
    sigmoid_focal_loss,
    ssd_multibox_loss,
)
from cnnzoo.detection.matching import Matcher, ssd_match

LN2 = math.log(2)


# ------------------------------------------------------------------------------------------------------- coder
def test_box_coder_hand_values_and_round_trip():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0]])  # centre (10, 5), 20 x 10
    # raw offsets: (10 - 5) / 10 = 0.5, (5 - 10) / 20 = -0.25, log(20 / 10) = ln 2, log(10 / 20) = -ln 2;
    # SSD's variances 0.1 / 0.2 are weights (10, 10, 5, 5): (5, -2.5, 5 ln 2, -5 ln 2)
    ssd = BoxCoder(SSD_WEIGHTS)
    assert torch.allclose(ssd.encode(gt, anchor), torch.tensor([[5.0, -2.5, 5 * LN2, -5 * LN2]]))
    assert torch.allclose(BoxCoder((1, 1, 1, 1)).encode(gt, anchor), torch.tensor([[0.5, -0.25, LN2, -LN2]]))
    # unit weights are R-CNN's Appendix C targets
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, 2, generator=g) * 50
    a = torch.cat([a, a + 1 + torch.rand(20, 2, generator=g) * 30], 1)
    b = torch.rand(20, 2, generator=g) * 50
    b = torch.cat([b, b + 1 + torch.rand(20, 2, generator=g) * 30], 1)
    assert torch.allclose(BoxCoder((1, 1, 1, 1)).encode(b, a).double(), rcnn_encode(a, b), atol=1e-5)
    assert torch.allclose(ssd.decode(ssd.encode(b, a), a), b, atol=1e-4)
    # decode broadcasts over a batch: (N, A, 4) offsets with (A, 4) anchors
    assert ssd.decode(torch.zeros(3, 20, 4), a).shape == (3, 20, 4)


def test_box_coder_clamps_log_sizes():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = BoxCoder((1, 1, 1, 1)).decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), anchor)
    # dw clamped at log(1000 / 16): width 10 * 62.5 = 625 around the centre 5
    assert BBOX_XFORM_CLIP == pytest.approx(math.log(62.5))
    assert torch.allclose(out, torch.tensor([[5 - 312.5, 0.0, 5 + 312.5, 10.0]]))
    with pytest.raises(ValueError, match="4 positive numbers"):
        BoxCoder((1, 1, 0, 1))


# ---------------------------------------------------------------------------------------------------- matching
def test_matcher_threshold_band():
    q = torch.tensor([[0.9, 0.45, 0.30, 0.1, 0.0],
                      [0.2, 0.30, 0.35, 0.55, 0.0]])
    # anchor 0: 0.9 >= 0.5 -> box 0; anchor 1: 0.45 in [0.4, 0.5) -> ignored (-2); anchor 2: 0.35 < 0.4 -> -1;
    # anchor 3: 0.55 -> box 1; anchor 4: 0 -> -1
    assert Matcher(0.5, 0.4)(q).tolist() == [0, -2, -1, 1, -1]


def test_matcher_low_quality_matches():
    q = torch.tensor([[0.9, 0.45, 0.30, 0.10],
                      [0.2, 0.30, 0.38, 0.38]])
    # box 1's best IoU is 0.38 (anchors 2 and 3, a tie): below 0.4 both are background without low-quality matches,
    assert Matcher(0.5, 0.4, False)(q).tolist() == [0, -2, -1, -1]
    # and both take box 1 with them (ties included)
    assert Matcher(0.5, 0.4, True)(q).tolist() == [0, -2, 1, 1]
    # a low-quality anchor takes the box *it* overlaps most: box 0's best anchor 0 prefers box 1 (0.35 > 0.3)
    assert Matcher(0.5, 0.4, True)(torch.tensor([[0.3, 0.1], [0.35, 0.2]])).tolist() == [1, -1]
    assert Matcher(0.5, 0.4, True)(torch.zeros(0, 3)).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="low_threshold <= high_threshold"):
        Matcher(0.4, 0.5)


def test_ssd_match_best_box_then_threshold():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12], [50, 50, 60, 60], [100, 100, 110, 110],
                            [0, 0, 40, 40]])
    gt = torch.tensor([[0.0, 0, 10, 10],  # IoU 1 with anchor 0, 100/120 = 0.83 with anchor 1
                       [48.0, 48, 68, 68]])  # best: anchor 2, IoU 100/400 = 0.25 < 0.5, matched anyway
    # anchor 4 (40x40) has IoU 100/1600 with box 0: background; anchor 3 overlaps nothing
    assert ssd_match(anchors, gt).tolist() == [0, 0, 1, -1, -1]
    assert ssd_match(anchors, torch.zeros(0, 4)).tolist() == [-1] * 5


# ------------------------------------------------------------------------------------------------------- focal
def test_focal_loss_reduces_to_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g) * 3
    targets = (torch.rand(50, 7, generator=g) > 0.8).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # gamma 0, alpha 0.5: every term weighted 0.5 -> half the cross-entropy (the check)
    assert torch.allclose(2 * sigmoid_focal_loss(logits, targets, alpha=0.5, gamma=0.0), bce, atol=1e-6)
    assert torch.allclose(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0), bce, atol=1e-6)
    assert torch.allclose(sigmoid_focal_loss(logits, targets, 0.5, 0.0, reduction="sum"), bce.sum() / 2, atol=1e-4)


def test_focal_loss_hand_value_at_gamma_2():
    # logit ln 3 -> p = 0.75.  Positive: p_t = 0.75, CE = ln(4/3) = 0.287682, (1 - p_t)^2 = 0.0625, alpha_t = 0.25:
    # 0.25 * 0.0625 * 0.287682 = 0.00449503.  Negative: p_t = 0.25, CE = ln 4, (1 - p_t)^2 = 0.5625, alpha_t = 0.75:
    # 0.75 * 0.5625 * 1.386294 = 0.584843
    logits = torch.tensor([math.log(3), math.log(3)], dtype=torch.float64)
    out = sigmoid_focal_loss(logits, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert out.tolist() == pytest.approx([0.00449503238, 0.58484293360], rel=1e-8)
    assert float(sigmoid_focal_loss(logits, torch.tensor([1.0, 0.0]), reduction="mean")) == pytest.approx(
        (0.00449503238 + 0.58484293360) / 2)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(logits, logits, reduction="avg")


def test_retinanet_loss_ignores_the_band_and_normalises_by_positives():
    anchors = torch.tensor([[0.0, 0, 10, 10],  # IoU 1 with the box: positive
                            [0.0, 0, 10, 22.5],  # IoU 100 / 225 = 0.444: ignored
                            [50.0, 50, 60, 60]])  # IoU 0: background
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    logits = torch.zeros(1, 3, 3, dtype=torch.float64)  # p = 0.5 everywhere: (1 - p_t)^2 = 0.25, CE = ln 2
    deltas = torch.zeros(1, 3, 4, dtype=torch.float64)
    deltas[0, 0, 0] = 0.5
    deltas[0, 1:] = 7.0  # non-positives' regressions do not count
    out = retinanet_loss(logits, deltas, anchors, targets)
    # anchor 0: class 1 positive 0.25 * 0.25 ln 2, classes 0 and 2 negative 2 * 0.75 * 0.25 ln 2 -> 0.4375 ln 2;
    # anchor 2: 3 * 0.1875 ln 2 = 0.5625 ln 2; anchor 1 ignored. Sum ln 2, over 1 positive.
    assert float(out["classification"]) == pytest.approx(LN2)
    assert float(out["bbox_regression"]) == pytest.approx(0.5)  # L1 of the one positive's offsets
    assert float(out["loss"]) == pytest.approx(LN2 + 0.5)


# --------------------------------------------------------------------------------------------------------- SSD
NEG_Z = [0.5, 3.0, -1.0, 2.0, 0.0, 4.0, 1.0, -2.0, 2.5, 1.5]  # the negatives' class-1 logits (background 0)


def test_hard_negative_mask_takes_the_3_to_1_largest():
    loss = torch.tensor([[9.0, 9.0] + [math.log1p(math.exp(z)) for z in NEG_Z]])
    positive = torch.zeros(1, 12, dtype=torch.bool)
    positive[0, :2] = True
    neg = hard_negative_mask(loss, positive)
    # 2 positives -> 6 negatives: those with z = 4, 3, 2.5, 2, 1.5, 1 (positions 2 + 5, 1, 8, 3, 9, 6)
    assert sorted(torch.nonzero(neg[0]).flatten().tolist()) == sorted(2 + i for i in (5, 1, 8, 3, 9, 6))
    # more asked for than there are: every negative, never a positive
    assert hard_negative_mask(loss, positive, 10.0)[0].tolist() == [False] * 2 + [True] * 10


def test_ssd_loss_counts_exactly_the_six_hardest_negatives():
    # 12 default boxes: two coincide with the two ground-truth boxes (IoU 1), ten lie far away (IoU 0)
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]] + [[100.0 + 20 * i, 100, 110 + 20 * i, 110]
                                                                   for i in range(10)])
    targets = [{"boxes": anchors[:2].clone(), "labels": torch.tensor([1, 1])}]
    logits = torch.zeros(1, 12, 2, dtype=torch.float64)
    logits[0, 2:, 1] = torch.tensor(NEG_Z, dtype=torch.float64)  # a negative's CE: ln(1 + e^z); positives: ln 2
    deltas = torch.zeros(1, 12, 4, dtype=torch.float64)
    deltas[0, 0, 0] = 1.0  # target offsets are 0 (box == anchor): smooth L1 of 1 = 0.5
    deltas[0, 1, 2] = 0.5  # 0.5 * 0.5^2 = 0.125
    deltas[0, 2:] = 3.0  # negatives have no regression loss
    out = ssd_multibox_loss(logits, deltas, anchors, targets)
    hardest = sorted(NEG_Z, reverse=True)[:6]  # 4, 3, 2.5, 2, 1.5, 1
    expect_cls = (2 * LN2 + sum(math.log1p(math.exp(z)) for z in hardest)) / 2  # N = 2 positives
    assert float(out["classification"]) == pytest.approx(expect_cls, rel=1e-10)
    assert float(out["bbox_regression"]) == pytest.approx((0.5 + 0.125) / 2)
    assert float(out["loss"]) == pytest.approx(expect_cls + 0.3125)
    # no ground truth at all: N = 0 and the loss is 0 (Sec. 2.2)
    empty = ssd_multibox_loss(logits, deltas, anchors, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])
    assert float(empty["loss"]) == 0.0


# --------------------------------------------------------------------------------------------- GIoU/DIoU/CIoU
def test_iou_losses_against_their_formulas_on_hand_boxes():
    pred = torch.tensor([[0.0, 0, 2, 2], [0.0, 0, 4, 2], [1.0, 1, 5, 4]], dtype=torch.float64)
    gt = torch.tensor([[1.0, 1, 3, 3], [1.0, 0, 3, 4], [1.0, 1, 5, 4]], dtype=torch.float64)
    # pair 1: overlap 1, union 4 + 4 - 1 = 7, IoU 1/7; enclosing box (0, 0, 3, 3): |C| = 9, c^2 = 18;
    #   centres (1, 1), (2, 2): rho^2 = 2.  GIoU loss 1 - 1/7 + (9 - 7)/9 = 1.0793651; DIoU 1 - 1/7 + 2/18 =
    #   0.9682540; equal aspect ratios: v = 0, CIoU = DIoU.
    # pair 2: 4 x 2 and 2 x 4 boxes, overlap 2 x 2 = 4, union 12, IoU 1/3; enclosing (0, 0, 4, 4): |C| = 16,
    #   c^2 = 32; centres (2, 1), (2, 2): rho^2 = 1.  GIoU 1 - 1/3 + 4/16 = 0.9166667; DIoU 1 - 1/3 + 1/32 =
    #   0.6979167; v = 4/pi^2 (atan(2/4) - atan(4/2))^2 = 0.4052847 * 0.6435011^2 = 0.1678258,
    #   alpha = v / (2/3 + v) = 0.2011113, CIoU = 0.6979167 + 0.2011113 * 0.1678258 = 0.7316683.
    # pair 3: identical boxes: every loss is 0.
    assert giou_loss(pred, gt).tolist() == pytest.approx([1.0793651, 0.9166667, 0.0], abs=1e-6)
    assert diou_loss(pred, gt).tolist() == pytest.approx([0.9682540, 0.6979167, 0.0], abs=1e-6)
    assert ciou_loss(pred, gt).tolist() == pytest.approx([0.9682540, 0.7316683, 0.0], abs=1e-6)
    assert float(ciou_loss(pred, gt, reduction="sum")) == pytest.approx(0.9682540 + 0.7316683, abs=1e-6)


def test_ciou_has_a_gradient_towards_the_target():
    pred = torch.tensor([[0.0, 0, 4, 2]], requires_grad=True)
    gt = torch.tensor([[1.0, 0, 3, 4]])
    ciou_loss(pred, gt, reduction="sum").backward()
    stepped = pred.detach() - 0.1 * pred.grad
    assert float(ciou_loss(stepped, gt).sum()) < 0.7316683
