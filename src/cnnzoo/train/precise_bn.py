"""Precise BatchNorm statistics before each evaluation: ``train.precise_bn: N``.

A BatchNorm layer evaluates with running statistics, an exponential average (momentum 0.1) of the batch statistics
of the last ~10 training steps. While the weights move fast (early in training, or under Adam) those statistics
describe networks that no longer exist, and a deep BN network compounds the mismatch layer after layer: Inception-v4
trained 2 epochs on 75-px digits with Adam reaches 21.0% test accuracy in eval mode but 45.8% with batch statistics
(seed 0, measured for issue 9). Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021, Sec. 3, "PreciseBN"; also
pycls and detectron2) fix it by recomputing the statistics with the final weights: the plain average over N batches.

``train.precise_bn: N`` (default 0: off, the running statistics as every peer library evaluates them) does that
before every evaluation of the trained weights (each epoch's and the final one): every BatchNorm's running mean and
variance are reset and re-estimated as the mean over the first N training batches, read in a fixed order without
augmentation (the test images' preprocessing), with dropout and drop-path off as in evaluation, so it draws no
random numbers and a resumed run stays bit-identical.
The recomputed statistics are the network's from then on: they are what the checkpoints hold and what later
training updates. Under torchrun each rank averages its own shard's batches and the ranks' statistics are then
averaged. The EMA copy (``train.ema``) keeps its averaged statistics. Asking it of a network without BatchNorm is
an error (it would do nothing).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["has_batchnorm", "recompute_bn_stats"]


def _bn_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that keeps running statistics (what ``train.precise_bn`` redoes)."""
    return bool(_bn_layers(model))


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader, batches: int, *, forward=None, all_reduce_mean=None) -> int:
    """Re-estimate every BatchNorm's running statistics of ``model`` over ``batches`` batches of ``loader``.

    ``forward(x)`` runs the network (default ``model(x)``; the Trainer passes its autocast / channels-last forward);
    ``all_reduce_mean(tensor)`` (in place) averages the statistics across ranks. Returns the number of batches read
    (0 when the model has no BatchNorm layer or ``batches`` is 0).
    """
    if batches < 0:
        raise ValueError(f"batches must be >= 0, got {batches}")
    layers = _bn_layers(model)
    if not layers or batches == 0:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after k batches, the plain mean of their statistics
    model.eval()  # dropout and drop-path off, as when evaluating: the statistics of the activations eval sees
    for m in layers:
        m.train()
    seen = 0
    try:
        for x, _ in loader:
            (forward or model)(x)
            seen += 1
            if seen >= batches:
                break
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    if all_reduce_mean is not None:
        for m in layers:
            all_reduce_mean(m.running_mean)
            all_reduce_mean(m.running_var)
    return seen
