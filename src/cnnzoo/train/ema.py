"""Weight EMA: an exponential moving average of the network's weights, evaluated and kept beside the raw weights.

``train.ema: {decay: 0.9999}`` keeps, after every optimizer step t,

    ema <- d ema + (1 - d) weights,     d = decay  (or min(decay, (1 + t) / (10 + t)) with ``warmup: true``)

over every floating-point tensor of the state dict (parameters and BN running statistics, as timm's ModelEmaV2
does); integer buffers (BN's num_batches_tracked) are copied. Polyak averaging of this kind is how Inception-v3
(Szegedy et al. 2016, Sec. 8: "a running average of the parameters"), MnasNet and EfficientNet (Tan & Le 2019,
Sec. 5.2: "exponential moving average with decay 0.9999") report their results; 0.9999 is the default here.
``warmup`` is TensorFlow's ``ExponentialMovingAverage(num_updates=step)`` rule used by their reference code, which
lets a short run's average forget its random initialisation.

What a run with EMA writes (`cnnzoo.train.Trainer`):

- every epoch the EMA weights are evaluated too: ``ema_test_loss``, ``ema_test_acc``, ``ema_test_top5`` columns in
  metrics.csv/jsonl, and ``eval_ema.json`` at the end beside ``eval.json``;
- the run's ``best`` and ``last`` checkpoints stay the raw weights (what ``cnnzoo eval RUN_DIR`` and ``predict
  RUN_DIR`` use, as without EMA); the EMA weights are separate, complete checkpoints a user picks by path, as
  timm users pick ``--use-ema``: ``checkpoints/ema_last.safetensors`` (with every ``last``) and
  ``checkpoints/ema_best.safetensors`` (with ``data.holdout_fraction``: the epoch of the EMA's best validation
  accuracy, never chosen on the test split), whose metadata says
  ``"weights": "ema"`` and the decay. The EMA state travels in the ``last`` training state, so a resumed run
  continues the same average bit for bit.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["EMA_DECAY", "ModelEma", "parse_ema"]

EMA_DECAY = 0.9999  # Tan & Le 2019 (EfficientNet), Sec. 5.2
EMA_KEYS = ("decay", "warmup")


def parse_ema(value) -> dict | None:
    """``train.ema`` checked and completed: None (off) or {decay: float in (0, 1), warmup: bool}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"train.ema must be null (off) or a mapping {{decay: 0.9999, warmup: false}}, got "
                         f"{value!r}")
    unknown = sorted(set(value) - set(EMA_KEYS))
    if unknown:
        raise ValueError(f"train.ema: unknown key(s) {unknown}; valid: {', '.join(EMA_KEYS)}")
    decay = value.get("decay", EMA_DECAY)
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not math.isfinite(decay) \
            or not 0 < decay < 1:
        raise ValueError(f"train.ema decay must be a number in (0, 1) (e.g. 0.9999), got {decay!r}")
    warmup = value.get("warmup", False)
    if not isinstance(warmup, bool):
        raise ValueError(f"train.ema warmup must be true or false, got {warmup!r}")
    return {"decay": float(decay), "warmup": warmup}


class ModelEma:
    """The moving average of ``model``'s state, as a model of its own (``ema.module``, always in eval mode)."""

    def __init__(self, model: nn.Module, decay: float = EMA_DECAY, warmup: bool = False) -> None:
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval()
        for m in self.module.modules():  # hooks others put on the training network are not the average's
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used by update number ``step`` (0-based)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the weights after optimizer step ``step`` (0-based global step) into the average."""
        d = self.decay_at(step)
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            new = current[name].detach()
            if avg.is_floating_point():
                avg.mul_(d).add_(new.to(avg.dtype), alpha=1 - d)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
