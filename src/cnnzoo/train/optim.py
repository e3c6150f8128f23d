"""Optimizers and learning-rate schedules from the config.

Schedules are computed here rather than with ``torch.optim.lr_scheduler`` so that the learning rate is a pure
function of (global step, plateau scale): a resumed run sets exactly the rate an uninterrupted one would, and
the schedule's state is three numbers.

Per-parameter multipliers (Caffe's ``lr_mult``/``decay_mult``, once ``blobs_lr``/``weight_decay`` per blob): a network
may declare them with a method ``lr_multipliers()`` returning ``{parameter name: (lr_mult, decay_mult)}`` (names as
``named_parameters`` gives them; a parameter it leaves out keeps (1, 1)). `build_optimizer` then puts parameters
with equal multipliers in one group (in the order of their first parameter), each group carrying ``lr_mult`` and
``decay_mult`` and the weight decay ``optim.weight_decay x decay_mult``; `LRSchedule.apply` sets every group's lr to
the schedule's lr x its ``lr_mult``. The multipliers travel in the optimizer's state dict, so a resumed run steps
exactly as an uninterrupted one. A network that declares none (or an empty mapping) gets one group, as before.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig

__all__ = ["LRSchedule", "build_optimizer", "param_groups"]


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """The trainable parameters of ``model`` as optimizer groups under its ``lr_multipliers()`` (module docstring).

    One group ``{"params": [...]}`` when the network declares no multipliers; otherwise one group per distinct
    (lr_mult, decay_mult), with ``lr = lr x lr_mult`` and ``weight_decay = weight_decay x decay_mult``.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    declare = getattr(model, "lr_multipliers", None)
    mults = dict(declare()) if callable(declare) else {}
    if not mults:
        return [{"params": [p for _, p in named]}]
    known = {n for n, _ in model.named_parameters()}
    unknown = sorted(set(mults) - known)
    if unknown:
        raise ValueError(f"{type(model).__name__}.lr_multipliers() names parameters the network does not have: "
                         f"{', '.join(unknown)}")
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in named:
        lr_mult, decay_mult = (float(v) for v in mults.get(name, (1.0, 1.0)))
        if not (math.isfinite(lr_mult) and math.isfinite(decay_mult) and lr_mult >= 0 and decay_mult >= 0):
            raise ValueError(f"{type(model).__name__}.lr_multipliers(): {name} has multipliers "
                             f"({lr_mult}, {decay_mult}); each must be a finite number >= 0")
        groups.setdefault((lr_mult, decay_mult), []).append(p)
    return [{"params": ps, "lr": lr * lm, "weight_decay": weight_decay * dm, "lr_mult": lm, "decay_mult": dm}
            for (lm, dm), ps in groups.items()]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over the trainable parameters of ``model``, grouped by the network's
    learning-rate and weight-decay multipliers if it declares any (`param_groups`)."""
    params = param_groups(model, cfg.lr, cfg.weight_decay)
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
        if c.name == "poly":  # DeepLab v2 Sec. 4.1 ("poly": (1 - iter/max_iter)^power), PSPNet, torchvision's reference
            t = min(1.0, (step - warm) / max(1.0, self.total - warm))
            return c.min_lr + (self.base_lr - c.min_lr) * (1.0 - t) ** c.power
        if c.name == "step":
            return self.base_lr * c.gamma ** int(epoch // c.step_size)
        if c.name == "multistep":
            return self.base_lr * c.gamma ** sum(int(epoch) >= m for m in c.milestones)
        return self.base_lr * self.scale  # none, plateau

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's learning rate for ``step`` (the schedule's, times the group's ``lr_mult`` if it has
        one); returns the schedule's."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
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
