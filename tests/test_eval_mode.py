"""`cnnzoo.models.base.eval_mode`: every module in eval mode for a block, each module's own flag restored after, so a
frozen BatchNorm inside a training model stays frozen through the tools that use it (receptive fields, explain,
dense evaluation, detection inference)."""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.analysis.output_field import gradient_output_field
from cnnzoo.models.base import eval_mode


def _net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    net.train()
    net[1].eval()  # a frozen BN in a training model
    return net


def test_eval_mode_restores_each_modules_flag():
    net = _net()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and not net[1].training and net[0].training


def test_eval_mode_restores_after_an_error():
    net = _net()
    try:
        with eval_mode(net):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert net.training and not net[1].training


def test_the_receptive_field_tool_leaves_a_frozen_bn_frozen():
    net = _net()
    gradient_output_field(net, (1, 16, 16))
    assert net.training and not net[1].training  # model.train(was_training) used to unfreeze it
    assert torch.equal(net[1].running_mean, torch.zeros(4))  # and the probe did not move its statistics
