"""train.drop_path_schedule: NASNet's ScheduledDropPath ramps every DropPath rate linearly with the global step from
0 to the rate the network was built with; constant leaves them alone; networks without drop-path are refused."""

from __future__ import annotations

import pytest

from cnnzoo import create_model
from cnnzoo.layers import DropPath
from cnnzoo.train import Trainer, TrainingInterrupted, apply_overrides, default_config
from cnnzoo.train.droppath import DropPathSchedule


def rates(model) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, DropPath)]


def test_linear_schedule_ramps_each_rate_from_zero_to_its_built_value():
    model = create_model("resnet20_cifar", drop_path_rate=0.2)
    built = rates(model)  # 0 .. 0.2 over depth (timm's linear rule, see the next test)
    sched = DropPathSchedule(model, "linear", total_steps=11)
    for step, frac in ((0, 0.0), (5, 0.5), (10, 1.0), (20, 1.0)):
        sched.apply(step)
        assert rates(model) == pytest.approx([frac * p for p in built])
    const = create_model("resnet20_cifar", drop_path_rate=0.2)
    DropPathSchedule(const, "constant", total_steps=11).apply(0)
    assert rates(const) == pytest.approx(built)


def test_rates_over_depth_are_timms_linspace_rule_not_huangs():
    """Block i of n drops at rate i / (n - 1) (timm's linspace, from 0); Huang et al. 2016 (Sec. 3, Eq. 4) would give
    block l of L the rate l / L (from rate / L). By hand, 5 blocks at 0.2: 0, 0.05, 0.1, 0.15, 0.2 (Huang: 0.04, ...).
    resnet20_cifar has 9 blocks: 0, 0.025, ..., 0.2."""
    from cnnzoo.layers.drop import drop_path_rates

    assert drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert drop_path_rates(0.2, 1) == [0.2]
    assert rates(create_model("resnet20_cifar", drop_path_rate=0.2)) == pytest.approx([0.2 * i / 8 for i in range(9)])


def test_linear_schedule_needs_drop_path():
    with pytest.raises(ValueError, match=r"drop_path_schedule=linear .* lenet5 has no DropPath .* drop_path_rate"):
        DropPathSchedule(create_model("lenet5"), "linear", 10, "lenet5")
    with pytest.raises(ValueError, match="torch.compile recompile every step"):
        DropPathSchedule(create_model("resnet20_cifar", drop_path_rate=0.1), "linear", 10, compiled=True)
    with pytest.raises(ValueError, match=r"--set: train.drop_path_schedule must be one of constant, linear"):
        apply_overrides(default_config("lenet5", "mnist5k"), ["train.drop_path_schedule=cosine"])


def test_the_trainer_applies_the_rate_of_each_global_step(tmp_path):
    cfg = apply_overrides(default_config("resnet20_cifar", "mnist5k"), [
        "train.epochs=2", "train.limit_batches=4", "data.batch_size=16", "train.device=cpu",
        f"train.run_dir={tmp_path / 'r'}", "model.options={drop_path_rate: 0.3}", "train.drop_path_schedule=linear"])
    seen = []

    def record(tr, epoch, batch):
        seen.append(max(rates(tr.model)))
        if batch == 2:  # three steps are enough (and stopping mid-epoch skips the evaluation)
            tr.request_stop()

    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, callbacks=[record], verbose=False).fit()
    assert seen == pytest.approx([0.3 * s / 7 for s in range(3)])  # 8 steps in the run: 0, 0.3/7, 0.6/7 ...
