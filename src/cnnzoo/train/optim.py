"""Optimizers and learning-rate schedules from the config.

Schedules are computed here rather than with ``torch.optim.lr_scheduler`` so that the learning rate is a pure
function of (global step, plateau scale): a resumed run sets exactly the rate an uninterrupted one would, and
the schedule's state is three numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig

__all__ = ["LRSchedule", "build_optimizer"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over the trainable parameters of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum, eps=cfg.eps,
                                   weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name must be one of sgd, adam, adamw, rmsprop; got {cfg.name!r}")


class LRSchedule:
    """The learning rate of every step: base lr x schedule factor(step) x plateau scale.

    Args:
        cfg: the schedule section.
        base_lr: the configured peak learning rate.
        steps_per_epoch: optimizer steps in one epoch.
        epochs: length of the run.
    """

    def __init__(self, cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, epochs: int) -> None:
        self.cfg, self.base_lr = cfg, base_lr
        self.steps_per_epoch, self.total = steps_per_epoch, max(1, steps_per_epoch * epochs)
        self.scale = 1.0  # reduce-on-plateau's accumulated factor
        self.best = math.inf
        self.bad_epochs = 0

    def lr(self, step: int) -> float:
        """Learning rate for global optimizer step ``step`` (0-based)."""
        c = self.cfg
        epoch = step / self.steps_per_epoch
        warm = c.warmup_epochs * self.steps_per_epoch
        if c.name == "onecycle":
            # Smith & Topin 2019 (torch's OneCycleLR, cosine annealing): lr/div -> lr -> lr/(div*final_div).
            peak_at = max(1.0, c.pct_start * self.total)
            start, end = self.base_lr / c.div_factor, self.base_lr / (c.div_factor * c.final_div_factor)
            if step < peak_at:
                return _cos(start, self.base_lr, step / peak_at)
            return _cos(self.base_lr, end, min(1.0, (step - peak_at) / max(1.0, self.total - peak_at)))
        if warm > 0 and step < warm and c.name != "none":  # linear to the peak, never past it (fractional warm-ups)
            return self.base_lr * self.scale * min(1.0, (step + 1) / warm)
        if c.name == "cosine":
            t = min(1.0, (step - warm) / max(1.0, self.total - warm))
            return c.min_lr + (self.base_lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        if c.name == "step":
            return self.base_lr * c.gamma ** int(epoch // c.step_size)
        if c.name == "multistep":
            return self.base_lr * c.gamma ** sum(int(epoch) >= m for m in c.milestones)
        return self.base_lr * self.scale  # none, plateau

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's learning rate for ``step``; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def end_epoch(self, metric: float) -> None:
        """Reduce-on-plateau: after ``patience`` epochs without a lower ``metric``, multiply the lr by gamma."""
        if self.cfg.name != "plateau":
            return
        if metric < self.best * (1 - 1e-4):  # torch's default relative threshold
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.cfg.patience:
                self.scale *= self.cfg.gamma
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = float(state["scale"]), float(state["best"]), int(state["bad_epochs"])


def _cos(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
