"""Caffe-style per-parameter learning-rate and weight-decay multipliers (issue 24, point 10).

A network declares ``lr_multipliers()`` -> {parameter name: (lr_mult, decay_mult)}; `build_optimizer` groups the
parameters by them and `LRSchedule.apply` scales each group's lr. NiN-CIFAR's are the authors' (Caffe net as ported by
jiecaoyu/pytorch-nin-cifar10, original.py): weights 1x lr with weight decay, biases 2x lr without, the classifier
conv (cccp6) 0.1x lr, its bias without weight decay. Expected values below are computed by hand.
"""

from __future__ import annotations

import signal

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.train import Trainer, TrainingInterrupted, apply_overrides, default_config
from cnnzoo.train.config import OptimConfig, ScheduleConfig
from cnnzoo.train.optim import LRSchedule, build_optimizer


class Tiny(nn.Module):
    """Two linear layers; the biases at 2x (no decay), the last layer's weight at 0.1x."""

    def __init__(self, mults: dict | None = None):
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.mults = {"body.bias": (2, 0), "head.weight": (0.1, 1), "head.bias": (2, 0)} if mults is None else mults

    def lr_multipliers(self):
        return self.mults

    def forward(self, x):
        return self.head(self.body(x))


def summary(opt):
    return [(len(g["params"]), g["lr"], g["weight_decay"], g["lr_mult"], g["decay_mult"]) for g in opt.param_groups]


def test_groups_and_their_lrs_after_a_schedule_step_are_the_hand_computed_ones():
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4))
    # groups in the order of their first parameter: body.weight (1, 1), body.bias (2, 0), head.weight (0.1, 1)
    assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [
        [id(model.body.weight)], [id(model.body.bias), id(model.head.bias)], [id(model.head.weight)]]
    assert summary(opt) == [(1, 0.1, 1e-4, 1.0, 1.0), (2, pytest.approx(0.2), 0.0, 2.0, 0.0),
                            (1, pytest.approx(0.01), 1e-4, 0.1, 1.0)]
    # cosine over 10 steps from 0.1: step 5 is half way, 0.1 * (1 + cos(pi / 2)) / 2 = 0.05
    sched = LRSchedule(ScheduleConfig(name="cosine"), 0.1, steps_per_epoch=10, epochs=1)
    assert sched.apply(opt, 5) == pytest.approx(0.05)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1, 0.005])
    # a 2-epoch linear warm-up of a constant ("step") schedule, 4 steps an epoch: step 1 is 2/8 of the peak
    sched = LRSchedule(ScheduleConfig(name="step", warmup_epochs=2, step_size=100), 0.1, steps_per_epoch=4, epochs=3)
    sched.apply(opt, 1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.025, 0.05, 0.0025])


def test_an_sgd_step_scales_each_parameters_update_by_its_multipliers():
    """Plain SGD: p <- p - lr x lr_mult x (grad + weight_decay x decay_mult x p), by hand."""
    torch.manual_seed(0)
    model = Tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.5, momentum=0.0, weight_decay=0.1))
    LRSchedule(ScheduleConfig(name="none"), 0.5, 1, 1).apply(opt, 0)
    model(torch.randn(5, 3)).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    for name, (lm, dm) in {"body.weight": (1, 1), "body.bias": (2, 0), "head.weight": (0.1, 1),
                           "head.bias": (2, 0)}.items():
        expected = before[name] - 0.5 * lm * (grads[name] + 0.1 * dm * before[name])
        assert torch.allclose(dict(model.named_parameters())[name], expected, atol=1e-7), name


def test_a_network_without_multipliers_keeps_one_group_at_the_schedules_lr():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen parameters stay out of the optimizer
    opt = build_optimizer(model, OptimConfig(name="adam", lr=1e-3, weight_decay=0.0))
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 3
    assert "lr_mult" not in opt.param_groups[0]
    LRSchedule(ScheduleConfig(name="none"), 1e-3, 1, 1).apply(opt, 0)
    assert opt.param_groups[0]["lr"] == 1e-3
    assert len(build_optimizer(Tiny(mults={}), OptimConfig()).param_groups) == 1  # an empty mapping: none


def test_bad_multipliers_are_clear_errors():
    with pytest.raises(ValueError, match=r"Tiny.lr_multipliers\(\) names parameters the network does not have: "
                                         r"head.gamma"):
        build_optimizer(Tiny(mults={"head.gamma": (1, 1)}), OptimConfig())
    with pytest.raises(ValueError, match=r"head.bias has multipliers \(-1.0, 0.0\); each must be a finite number >= 0"):
        build_optimizer(Tiny(mults={"head.bias": (-1, 0)}), OptimConfig())


def test_nin_cifar_declares_the_authors_multipliers_only_when_asked():
    """jiecaoyu/pytorch-nin-cifar10 original.py: classifier (cccp6) weight 0.1x lr, decay 1e-4; its bias 0.1x lr, no
    decay; every other weight 1x lr with decay; every other bias 2x lr without."""
    model = cnnzoo.create_model("nin_cifar", caffe_lr_mult=True)
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4))
    assert summary(opt) == [(8, 0.1, 1e-4, 1.0, 1.0), (8, pytest.approx(0.2), 0.0, 2.0, 0.0),
                            (1, pytest.approx(0.01), 1e-4, 0.1, 1.0), (1, pytest.approx(0.01), 0.0, 0.1, 0.0)]
    assert opt.param_groups[2]["params"][0] is model.head.conv.weight
    assert opt.param_groups[3]["params"][0] is model.head.conv.bias
    model.reset_classifier(5)  # the new classifier conv is the same parameter names: the same multipliers
    assert len(build_optimizer(model, OptimConfig()).param_groups[2]["params"]) == 1
    for off in (cnnzoo.create_model("nin_cifar", caffe_lr_mult=False), cnnzoo.create_model("nin")):
        assert len(build_optimizer(off, OptimConfig()).param_groups) == 1


def test_optimizer_state_round_trip_keeps_the_multipliers_and_the_steps():
    """What a resume does: a fresh optimizer loading the saved state steps exactly as the uninterrupted one."""
    torch.manual_seed(0)
    xs = torch.randn(6, 5, 3)
    cfg, sched = OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-2), ScheduleConfig(name="cosine")

    def steps(model, opt, schedule, todo):
        for i in todo:
            schedule.apply(opt, i)
            opt.zero_grad()
            model(xs[i]).square().sum().backward()
            opt.step()

    full = Tiny()
    cut = Tiny()
    cut.load_state_dict(full.state_dict())
    opt_full = build_optimizer(full, cfg)
    steps(full, opt_full, LRSchedule(sched, 0.1, 6, 1), range(6))
    opt_cut = build_optimizer(cut, cfg)
    steps(cut, opt_cut, LRSchedule(sched, 0.1, 6, 1), range(3))
    state = opt_cut.state_dict()
    resumed = Tiny()
    resumed.load_state_dict(cut.state_dict())
    opt_resumed = build_optimizer(resumed, cfg)
    opt_resumed.load_state_dict(state)
    assert [g["lr_mult"] for g in opt_resumed.param_groups] == [1.0, 2.0, 0.1]
    steps(resumed, opt_resumed, LRSchedule(sched, 0.1, 6, 1), range(3, 6))
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


def _nin_cfg(run_dir, *extra):
    """nin_cifar with the authors' multipliers, 4-px digits, 3 epochs of 2 batches of 8: seconds on a CPU."""
    return apply_overrides(default_config("nin_cifar", "mnist5k"), [
        "train.epochs=3", "train.limit_batches=2", "data.batch_size=8", "data.input_size=4", "data.num_workers=0",
        "train.device=cpu", f"train.run_dir={run_dir}", "model.options.caffe_lr_mult=true", "optim.name=sgd",
        "optim.lr=0.1", "optim.weight_decay=0.0001", *extra])


@pytest.mark.slow
def test_resume_with_multipliers_is_bit_identical(tmp_path):
    full = Trainer(_nin_cfg(tmp_path / "full"), verbose=False)
    full.fit()
    assert [g["lr_mult"] for g in full.optimizer.param_groups] == [1.0, 2.0, 0.1, 0.1]

    def stop(trainer, e, b):
        if (e, b) == (1, 0):
            trainer.request_stop(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        Trainer(_nin_cfg(tmp_path / "cut"), callbacks=[stop], verbose=False).fit()
    resumed = Trainer(resume=tmp_path / "cut", verbose=False)
    resumed.fit()
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [g["lr"] for g in full.optimizer.param_groups]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
