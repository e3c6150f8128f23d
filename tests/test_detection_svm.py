"""The linear SVM (hand-solved margins, zero duality gap) and hard negative mining's defining property."""

import itertools

import numpy as np
import pytest
import torch

from cnnzoo.detection.svm import feature_scale, train_linear_svm, train_with_hard_negatives


def test_svm_hard_margin_without_bias_by_hand():
    # x = +2 (positive) and -2 (negative), no bias: the max-margin w solves 2w = 1, so w = 0.5; since
    # w = sum alpha_i y_i x_i = 2 (alpha_1 + alpha_2), the dual variables sum to 0.25
    svm, alpha = train_linear_svm(torch.tensor([[2.0], [-2.0]]), torch.tensor([1.0, -1.0]), C=10.0, pos_weight=1.0,
                                  bias_mult=0.0, tol=1e-9)
    assert float(svm.weight[0]) == pytest.approx(0.5, abs=1e-6)
    assert svm.bias == 0.0
    assert alpha.sum() == pytest.approx(0.25, abs=1e-6)


def test_svm_hard_margin_with_regularised_bias_by_hand():
    # x = 1 (negative), 3 (positive), bias feature 1: minimise (w^2 + b^2) / 2 subject to 3w + b >= 1 and
    # -(w + b) >= 1. Both constraints active (either alone violates the other): w = 1, b = -2.
    svm, _ = train_linear_svm(torch.tensor([[1.0], [3.0]]), torch.tensor([-1.0, 1.0]), C=100.0, pos_weight=1.0,
                              bias_mult=1.0, tol=1e-9)
    assert float(svm.weight[0]) == pytest.approx(1.0, abs=1e-5)
    assert svm.bias == pytest.approx(-2.0, abs=1e-5)


def test_svm_reaches_zero_duality_gap():
    # primal 1/2 ||w'||^2 + sum_i C_i max(0, 1 - y_i w'.x'_i) equals the dual sum alpha - 1/2 ||sum alpha y x'||^2
    # at the optimum (x' = [x, B], w' = [w, b / B]); both computed here from the formulas
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, 6, generator=g) + 0.7, torch.randn(120, 6, generator=g)])
    y = torch.cat([torch.ones(40), -torch.ones(120)])
    C, pw, B = 0.5, 2.0, 10.0
    svm, alpha = train_linear_svm(x, y, C=C, pos_weight=pw, bias_mult=B, tol=1e-6, max_epochs=20000)
    xa = np.hstack([x.double().numpy(), np.full((len(x), 1), B)])
    ya = y.double().numpy()
    w_full = np.concatenate([svm.weight.numpy(), [svm.bias / B]])
    assert np.allclose((alpha * ya) @ xa, w_full, atol=1e-10)  # w = sum alpha_i y_i x_i
    upper = np.where(ya > 0, C * pw, C)
    assert np.all(alpha >= 0) and np.all(alpha <= upper + 1e-12)  # box constraints
    primal = 0.5 * w_full @ w_full + np.sum(upper * np.maximum(0, 1 - ya * (xa @ w_full)))
    dual = alpha.sum() - 0.5 * w_full @ w_full
    assert primal - dual == pytest.approx(0.0, abs=1e-4 * primal)
    # and the decision function is x.w + b
    assert torch.allclose(svm.decision(x[:3]), x[:3].double() @ svm.weight + svm.bias)


def test_svm_rejects_bad_settings():
    with pytest.raises(ValueError, match="C > 0"):
        train_linear_svm(torch.zeros(2, 1), torch.tensor([1.0, -1.0]), C=0.0)
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        train_linear_svm(torch.zeros(2, 1), torch.tensor([1.0, 0.0]))


def test_feature_scale_gives_mean_norm_20():
    x = torch.randn(50, 8)
    assert float((x * feature_scale(x)).norm(dim=1).mean()) == pytest.approx(20.0)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(30, 8, generator=g) * 0.7 + 1.0
    neg = torch.randn(3000, 8, generator=g)
    neg[:150] = torch.randn(150, 8, generator=g) * 0.7 + 0.8  # a minority of negatives that look like positives
    return pos.double(), neg.double()


@pytest.mark.parametrize("hard_threshold", [-1.0001, 0.0])
def test_hard_negative_mining_adds_the_previous_rounds_false_positives(hard_threshold):
    pos, neg = _data()
    _, rounds = train_with_hard_negatives(pos, neg, C=0.1, init_negatives=100, max_rounds=6,
                                          hard_threshold=hard_threshold, evict_threshold=min(-1.2, hard_threshold))
    assert len(rounds) >= 2
    for prev, nxt in itertools.pairwise(rounds):
        scores = (neg @ prev.svm.weight + prev.svm.bias).numpy()  # the previous model's scores, computed here
        outside = np.setdiff1d(np.arange(len(neg)), prev.cache)
        expected = outside[scores[outside] > hard_threshold]
        assert len(expected) > 0
        np.testing.assert_array_equal(np.sort(nxt.added), expected)
        assert set(nxt.added) <= set(nxt.cache)
        # evicted: cached negatives the previous model put well outside the margin; the rest stay
        np.testing.assert_array_equal(np.sort(nxt.evicted), np.sort(prev.cache[scores[prev.cache] < min(-1.2,
                                                                                                 hard_threshold)]))
        np.testing.assert_array_equal(nxt.cache, np.union1d(np.setdiff1d(prev.cache, nxt.evicted), nxt.added))
    # the first model's false positives among all negatives, and the final model's: mining cuts them down
    fp = [int(((neg @ r.svm.weight + r.svm.bias) > 0).sum()) for r in (rounds[0], rounds[-1])]
    assert fp[1] < fp[0]


def test_hard_negative_mining_stops_when_nothing_is_hard():
    pos, neg = _data()
    _, rounds = train_with_hard_negatives(pos, neg, C=0.1, init_negatives=100, max_rounds=50)
    assert rounds[-1].hard_after == 0 and len(rounds) < 50
    last = rounds[-1]
    scores = (neg @ last.svm.weight + last.svm.bias).numpy()
    outside = np.setdiff1d(np.arange(len(neg)), last.cache)
    assert np.all(scores[outside] <= -1.0001)  # every negative left out is outside the margin
