"""Per-class linear SVMs with hard negative mining (Girshick et al. 2014, Section 2.3).

The SVM is L2-regularised with the hinge loss, the problem R-CNN's released code gives liblinear (solver 3,
"L2-regularized L1-loss support vector classification (dual)"):

    min_w  1/2 ||w||^2 + sum_i C_i max(0, 1 - y_i w^T x_i),     C_i = C (negatives), C * pos_weight (positives)

with a constant feature ``bias_mult`` appended to every x (liblinear's ``-B``: the bias is learnt as a weight, so it
is regularised too). We solve it as liblinear does, by dual coordinate descent (Hsieh, Chang, Lin, Keerthi,
Sundararajan, "A Dual Coordinate Descent Method for Large-scale Linear SVM", ICML 2008, Algorithm 1): one dual
variable 0 <= alpha_i <= C_i at a time, in closed form, keeping w = sum_i alpha_i y_i x_i; it stops when the
projected gradient's spread is below ``tol``. The settings default to R-CNN's code (rcnn_train.m): C = 1e-3,
pos_weight = 2, bias_mult = 10, features scaled so that their mean L2 norm is 20.

Hard negative mining (Section 2.3, after Sung and Poggio 1994 / Felzenszwalb et al. 2010): the negatives (all
proposals with IoU < 0.3 to every box of the class) are far too many to train on at once and nearly all easy. Start
from a random subset; after each round score every negative with the current model, add to the cache the ones not
in it that score above ``hard_threshold`` (-1.0001: inside the margin or on the wrong side, i.e. the model's false
positives under the hinge loss), drop cached ones below ``evict_threshold`` (-1.2: well outside the margin, they have
zero loss and zero alpha), and retrain warm-started. It stops when a round finds no new hard negative.

Training sets (`svm_examples`, Section 2.3 and Appendix B): for class c, the positives are the ground-truth boxes of
class c only, the negatives the proposals whose IoU with every box of class c is below 0.3 ("less than 0.3 IoU
overlap with all instances of a class"; R-CNN's code: ``neg_ovr_thresh = 0.3``, ``overlap(:, cls) < 0.3``). The
proposals in between, IoU >= 0.3 with some box of c (even >= 0.5), are ignored for c ("the grey zone").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "BIAS_MULT",
    "EVICT_THRESHOLD",
    "FEAT_NORM_MEAN",
    "HARD_THRESHOLD",
    "POS_WEIGHT",
    "SVM_C",
    "SVM_NEG_IOU",
    "LinearSVM",
    "MiningRound",
    "feature_scale",
    "svm_examples",
    "train_linear_svm",
    "train_with_hard_negatives",
]

# R-CNN's released code (rcnn_train.m): svm_C = 10^-3, pos_loss_weight = 2, bias_mult = 10, feat_norm_mean = 20,
# hard negatives score > -1.0001, evicted below -1.2.
SVM_C, POS_WEIGHT, BIAS_MULT, FEAT_NORM_MEAN = 1e-3, 2.0, 10.0, 20.0
HARD_THRESHOLD, EVICT_THRESHOLD = -1.0001, -1.2
#: Section 2.3 / Appendix B (grid-searched over {0, 0.1, ..., 0.5}); rcnn_train.m: neg_ovr_thresh = 0.3, "< 0.3"
SVM_NEG_IOU = 0.3


def svm_examples(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, cls: int,
                 neg_iou: float = SVM_NEG_IOU, *, iou: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The SVM training examples of class ``cls`` in one image: ``(positive, negative)`` boolean masks over
    ``gt_boxes`` (K,) and ``proposals`` (N,). Positives: the ground-truth boxes of the class; negatives: proposals
    whose IoU with every box of the class is below ``neg_iou``; the other proposals are ignored. ``iou`` (N, K) may
    be given precomputed (`box_iou(proposals, gt_boxes)`)."""
    from .bbox import box_iou

    mine = gt_labels == cls
    if not bool(mine.any()):
        return mine, torch.ones(len(proposals), dtype=torch.bool)
    iou = box_iou(proposals, gt_boxes) if iou is None else iou
    return mine, iou[:, mine].max(1).values < neg_iou


def feature_scale(features: torch.Tensor, target: float = FEAT_NORM_MEAN) -> float:
    """The factor that makes the mean L2 norm of ``features`` equal ``target`` (R-CNN scales all features by it)."""
    mean = float(features.to(torch.float64).norm(dim=1).mean()) if len(features) else 0.0
    return target / mean if mean > 0 else 1.0


@dataclass
class LinearSVM:
    """A trained linear SVM: ``score(x) = x . weight + bias``."""

    weight: torch.Tensor
    bias: float

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64) @ self.weight.to(torch.float64) + self.bias


def _augment(x: np.ndarray, bias_mult: float) -> np.ndarray:
    return np.hstack([x, np.full((len(x), 1), bias_mult)]) if bias_mult else x


def train_linear_svm(x: torch.Tensor, y: torch.Tensor, *, C: float = SVM_C, pos_weight: float = POS_WEIGHT,
                     bias_mult: float = BIAS_MULT, tol: float = 1e-3, max_epochs: int = 1000, seed: int = 0,
                     alpha: np.ndarray | None = None) -> tuple[LinearSVM, np.ndarray]:
    """Solve the hinge-loss SVM of the module docstring by dual coordinate descent.

    Args:
        x: (N, D) features; y: (N,) labels in {+1, -1}.
        C, pos_weight, bias_mult: the problem (see the module docstring); ``bias_mult=0`` fits no bias.
        tol: stop when max - min of the projected gradient is below this (liblinear's default is 0.1).
        max_epochs: passes over the data at most.
        seed: the order of the coordinates.
        alpha: a warm start (N,) (e.g. the previous round's dual variables; new samples 0).

    Returns:
        the SVM and its dual variables alpha (N,).
    """
    if C <= 0 or pos_weight <= 0 or bias_mult < 0:
        raise ValueError(f"SVM needs C > 0, pos_weight > 0 and bias_mult >= 0, got {C}, {pos_weight}, {bias_mult}")
    xa = _augment(x.to(torch.float64).numpy(), bias_mult)
    ya = y.to(torch.float64).numpy()
    if not np.all(np.abs(ya) == 1):
        raise ValueError("SVM labels must be +1 or -1")
    n = len(ya)
    upper = np.where(ya > 0, C * pos_weight, C)
    a = np.zeros(n) if alpha is None else np.clip(np.asarray(alpha, dtype=np.float64), 0, upper)
    w = (a * ya) @ xa if n else np.zeros(xa.shape[1])
    qii = np.einsum("ij,ij->i", xa, xa)
    rng = np.random.default_rng(seed)
    for _ in range(max_epochs):
        pg_max, pg_min = -np.inf, np.inf
        for i in rng.permutation(n):
            if qii[i] <= 0:
                continue
            xi, yi, ai = xa[i], ya[i], a[i]
            g = yi * (w @ xi) - 1.0  # the dual gradient in alpha_i
            pg = min(g, 0.0) if ai <= 0 else max(g, 0.0) if ai >= upper[i] else g
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if pg != 0.0:
                new = min(max(ai - g / qii[i], 0.0), upper[i])
                w += (new - ai) * yi * xi
                a[i] = new
        if n == 0 or pg_max - pg_min <= tol:
            break
    weight = w[:-1] if bias_mult else w
    bias = float(w[-1] * bias_mult) if bias_mult else 0.0
    return LinearSVM(torch.from_numpy(weight.copy()), bias), a


@dataclass
class MiningRound:
    """One round of hard negative mining: the negatives trained on (``cache``, indices into the negatives), those
    added before this round (the previous model's hard negatives; round 0: the initial sample), those evicted, the
    model it gave, and how many negatives that model scores above the hard threshold."""

    cache: np.ndarray
    added: np.ndarray
    evicted: np.ndarray
    svm: LinearSVM
    hard_after: int = 0
    extra: dict = field(default_factory=dict)


def train_with_hard_negatives(pos: torch.Tensor, neg: torch.Tensor, *, C: float = SVM_C,
                              pos_weight: float = POS_WEIGHT, bias_mult: float = BIAS_MULT,
                              init_negatives: int = 500, max_rounds: int = 5, hard_threshold: float = HARD_THRESHOLD,
                              evict_threshold: float = EVICT_THRESHOLD, tol: float = 1e-3,
                              seed: int = 0) -> tuple[LinearSVM, list[MiningRound]]:
    """Train one class's SVM on positives ``pos`` (P, D) and negatives mined from ``neg`` (M, D).

    Returns:
        the final SVM and the rounds (see `MiningRound`); round r+1's ``added`` are exactly the negatives outside
        round r's cache that round r's model scores above ``hard_threshold``.
    """
    if evict_threshold > hard_threshold:
        raise ValueError(f"evict_threshold ({evict_threshold}) must not exceed hard_threshold ({hard_threshold})")
    if init_negatives < 1 or max_rounds < 1:
        raise ValueError(f"init_negatives and max_rounds must be >= 1, got {init_negatives} and {max_rounds}")
    rng = np.random.default_rng(seed)
    m = len(neg)
    cache = np.sort(rng.choice(m, size=min(init_negatives, m), replace=False)) if m else np.zeros(0, dtype=np.int64)
    neg_alpha = np.zeros(m)
    pos_alpha = np.zeros(len(pos))
    added, evicted = cache, np.zeros(0, dtype=np.int64)
    rounds: list[MiningRound] = []
    while True:
        x = torch.cat([pos, neg[torch.from_numpy(cache)]])
        y = torch.cat([torch.ones(len(pos)), -torch.ones(len(cache))])
        svm, alpha = train_linear_svm(x, y, C=C, pos_weight=pos_weight, bias_mult=bias_mult, tol=tol, seed=seed,
                                      alpha=np.concatenate([pos_alpha, neg_alpha[cache]]))
        pos_alpha, neg_alpha[cache] = alpha[: len(pos)], alpha[len(pos) :]
        scores = svm.decision(neg).numpy() if m else np.zeros(0)
        outside = np.setdiff1d(np.arange(m), cache)
        hard = outside[scores[outside] > hard_threshold]
        rounds.append(MiningRound(cache, added, evicted, svm, hard_after=len(hard)))
        if len(hard) == 0 or len(rounds) >= max_rounds:
            return svm, rounds
        evicted = cache[scores[cache] < evict_threshold]
        neg_alpha[evicted] = 0.0
        cache = np.union1d(np.setdiff1d(cache, evicted), hard)
        added = hard
