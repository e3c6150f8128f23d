"""The typed training config: recipes, --set overrides, and the errors users see for bad keys and values."""

from __future__ import annotations

import pytest

from cnnzoo.train.config import (
    OPTIMIZERS,
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
    load_recipe,
    recipe_path,
)
from cnnzoo.train.optim import LRSchedule


def test_set_overrides_are_typed():
    cfg = apply_overrides(Config(), ["optim.lr=0.5", "train.epochs=3", "optim.nesterov=true",
                                     "schedule.milestones=[2, 4]", "model.options.drop_rate=0.2"])
    assert cfg.optim.lr == 0.5 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3 and cfg.optim.nesterov is True
    assert cfg.schedule.milestones == [2, 4]
    assert cfg.model.options == {"drop_rate": 0.2}
    # an int is accepted where a float is expected, and becomes a float
    assert apply_overrides(Config(), ["optim.lr=1"]).optim.lr == 1.0


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown key optim\.lrate; valid keys of optim: name, lr, momentum"):
        apply_overrides(Config(), ["optim.lrate=0.1"])
    with pytest.raises(ValueError, match="valid sections: model, data, optim, schedule, train"):
        config_from_dict({"optimizer": {"lr": 0.1}})


def test_wrong_type_names_expected_type():
    with pytest.raises(ValueError, match=r"train\.epochs must be an int, got 'ten'"):
        apply_overrides(Config(), ["train.epochs=ten"])
    with pytest.raises(ValueError, match=r"optim\.nesterov must be a bool"):
        apply_overrides(Config(), ["optim.nesterov=3"])
    with pytest.raises(ValueError, match=r"train\.epochs must be an int, got 2\.5"):
        config_from_dict({"train": {"epochs": 2.5}})


def test_choices_are_listed():
    with pytest.raises(ValueError, match="optim.name must be one of " + ", ".join(OPTIMIZERS)):
        apply_overrides(Config(), ["optim.name=lamb"])
    with pytest.raises(ValueError, match="train.amp must be one of off, bf16, fp16"):
        apply_overrides(Config(), ["train.amp=fp8"])
    with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
        apply_overrides(Config(), ["lr"])


def test_recipe_file_and_roundtrip(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim: {name: adamw, lr: 0.002}\nschedule: {name: cosine, warmup_epochs: 1}\n")
    cfg = load_recipe(path)
    assert (cfg.optim.name, cfg.optim.lr, cfg.schedule.warmup_epochs) == ("adamw", 0.002, 1.0)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    path.write_text("optim: {lr: fast}\n")
    with pytest.raises(ValueError, match=r"r\.yaml.*optim\.lr must be a float"):
        load_recipe(path)


def test_every_dataset_has_a_recipe():
    for name in ("mnist5k", "mnist", "fashion-mnist", "cifar10", "cifar100", "folder:/x"):
        assert recipe_path(name) is not None, name
        cfg = default_config("lenet5", name)
        assert cfg.data.name == name and cfg.model.name == "lenet5"


@pytest.mark.parametrize("name", ["step", "multistep", "cosine", "onecycle", "none"])
def test_schedules_shape(name):
    cfg = apply_overrides(Config(), [f"schedule.name={name}", "schedule.step_size=2", "schedule.milestones=[1, 3]"])
    s = LRSchedule(cfg.schedule, 0.1, steps_per_epoch=10, epochs=4)
    lrs = [s.lr(i) for i in range(40)]
    if name == "none":
        assert set(lrs) == {0.1}
    elif name == "step":
        assert lrs[19] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01)
    elif name == "multistep":
        assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.01) and lrs[30] == pytest.approx(0.001)
    elif name == "cosine":
        assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.001 and all(a >= b for a, b in zip(lrs, lrs[1:]))
    else:  # onecycle: up to the peak, then down far below the start
        peak = max(range(40), key=lambda i: lrs[i])
        assert 0 < peak < 39 and lrs[peak] == pytest.approx(0.1, rel=1e-3) and lrs[0] == pytest.approx(0.004)
        assert s.lr(40) < 1e-6  # the end: lr / (div_factor * final_div_factor)


def test_warmup_and_plateau():
    cfg = apply_overrides(Config(), ["schedule.name=plateau", "schedule.patience=1", "schedule.warmup_epochs=1"])
    s = LRSchedule(cfg.schedule, 0.1, steps_per_epoch=10, epochs=5)
    assert s.lr(0) == pytest.approx(0.01) and s.lr(9) == pytest.approx(0.1)
    for loss in (1.0, 1.0, 1.0):  # no improvement for patience+1 epochs: x0.1
        s.end_epoch(loss)
    assert s.lr(20) == pytest.approx(0.01)
