"""The typed training config: recipes, --set overrides, and the errors users see for bad keys and values."""

from __future__ import annotations

import itertools

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
        assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.001 and all(a >= b for a, b in itertools.pairwise(lrs))
    else:  # onecycle: up to the peak, then down far below the start
        peak = max(range(40), key=lambda i: lrs[i])
        assert 0 < peak < 39 and lrs[peak] == pytest.approx(0.1, rel=1e-3) and lrs[0] == pytest.approx(0.004)
        assert s.lr(40) < 1e-6  # the end: lr / (div_factor * final_div_factor)


def test_poly_schedule_is_deeplabs():
    """DeepLab v2 Sec. 4.1: the base rate times (1 - iter/max_iter)^power, power 0.9 (values by hand)."""
    cfg = apply_overrides(Config(), ["schedule.name=poly"])
    s = LRSchedule(cfg.schedule, 0.1, steps_per_epoch=10, epochs=4)  # 40 steps
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(20) == pytest.approx(0.1 * 0.5 ** 0.9)  # 0.053589
    assert s.lr(30) == pytest.approx(0.1 * 0.25 ** 0.9)  # 0.028717
    assert s.lr(40) == 0.0
    cfg = apply_overrides(Config(), ["schedule.name=poly", "schedule.power=2"])
    assert LRSchedule(cfg.schedule, 0.1, 10, 4).lr(20) == pytest.approx(0.025)
    with pytest.raises(Exception, match="schedule.power"):
        apply_overrides(Config(), ["schedule.name=poly", "schedule.power=0"]).check()


def test_warmup_and_plateau():
    cfg = apply_overrides(Config(), ["schedule.name=plateau", "schedule.patience=1", "schedule.warmup_epochs=1"])
    s = LRSchedule(cfg.schedule, 0.1, steps_per_epoch=10, epochs=5)
    assert s.lr(0) == pytest.approx(0.01) and s.lr(9) == pytest.approx(0.1)
    for loss in (1.0, 1.0, 1.0):  # no improvement for patience+1 epochs: x0.1
        s.end_epoch(loss)
    assert s.lr(20) == pytest.approx(0.01)


# ----------------------------------------------------------------------------------------------- numbers (issue 8.9)
# Every spelling Python's float() reads is a number for every float key (YAML 1.1 alone reads 1e-3 as text).
FLOAT_SPELLINGS = ["0.00001", "1e-3", "1E-3", "1e+2", "1.0e5", "5e-5", ".5", "5.", "1_000.5", "7"]


@pytest.mark.parametrize("text", FLOAT_SPELLINGS)
def test_every_float_spelling_is_a_number(text, tmp_path):
    want = float(text)  # the specification: what Python's float() reads
    cfg = apply_overrides(Config(), [f"optim.lr={text}", f"schedule.min_lr={text}"])
    assert (cfg.optim.lr, cfg.schedule.min_lr) == (want, want) and isinstance(cfg.optim.lr, float)
    assert config_from_dict({"schedule": {"gamma": text}}).schedule.gamma == want  # a string from another loader
    (tmp_path / "r.yaml").write_text(f"optim: {{lr: {text}, weight_decay: {text}}}\n")
    cfg = load_recipe(tmp_path / "r.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (want, want)
    assert apply_overrides(Config(), [f"model.options.drop_rate={text}"]).model.options["drop_rate"] == want


def test_negative_spellings_are_numbers_too():
    from cnnzoo.train.config import load_yaml

    assert [load_yaml(t, "x") for t in ("-.5", "-1e-3", "+2E2")] == [-0.5, -0.001, 200.0]
    with pytest.raises(ValueError, match=r"optim\.weight_decay must be 0 or more, got -0\.001$"):  # read as a number
        apply_overrides(Config(), ["optim.weight_decay=-1e-3"])


def _train_args(*argv):
    from cnnzoo.cli.main import build_parser

    return build_parser().parse_args(["train", "lenet5", *argv])


def test_flags_take_every_float_spelling():
    from cnnzoo.cli.train import build_config

    cfg = build_config(_train_args("--lr", "0.00001", "--weight-decay", "5e-5", "--momentum", ".5",
                                   "--label-smoothing", "1E-1", "--set", "optim.eps=1e-6"))
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum) == (1e-05, 5e-05, 0.5)
    assert (cfg.train.label_smoothing, cfg.optim.eps) == (0.1, 1e-06)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "nan"], r"^--lr must be a finite number, got 'nan'"),
    (["--lr=-inf"], r"^--lr must be a finite number"),
    (["--lr", "0"], r"^--lr must be positive, got 0\.0"),
    (["--weight-decay=-1e-4"], r"^--weight-decay must be 0 or more"),
    (["--momentum", "1.5"], r"^--momentum must be in \[0, 1\)"),
    (["--epochs", "0"], r"^--epochs must be at least 1"),
    (["--label-smoothing", "1"], r"^--label-smoothing must be in \[0, 1\)"),
    (["--set", "optim.lr=1e-3", "--set", "optim.lr=.nan"], r"^--set: optim\.lr must be a finite number"),
])
def test_messages_name_the_flag_the_user_typed(argv, message):
    from cnnzoo.cli.train import build_config

    with pytest.raises(ValueError, match=message):
        build_config(_train_args(*argv))


# ----------------------------------------------------------------------------------------------- ranges (issue 8.10)
@pytest.mark.parametrize("pair, message", [
    ("optim.lr=.nan", r"optim\.lr must be a finite number, got nan"),
    ("optim.lr=.inf", r"optim\.lr must be a finite number, got inf"),
    ("optim.weight_decay=.nan", r"optim\.weight_decay must be a finite number"),
    ("optim.grad_clip=-1", r"optim\.grad_clip must be positive .* or null"),
    ("optim.grad_clip=0", r"optim\.grad_clip must be positive"),
    ("data.num_workers=-1", r"data\.num_workers must be at least 0, got -1"),
    ("optim.betas=[0.9, 1.5]", r"optim\.betas must be two numbers in \[0, 1\)"),
    ("optim.eps=0", r"optim\.eps must be positive"),
    ("schedule.gamma=-0.1", r"schedule\.gamma must be positive"),
    ("schedule.milestones=[0, 5]", r"schedule\.milestones must be epochs >= 1"),
    ("data.input_size=0", r"data\.input_size must be at least 1 or null"),
])
def test_values_out_of_range_are_refused(pair, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Config(), [pair])


def test_grad_clip_null_and_positive_are_accepted():
    assert apply_overrides(Config(), ["optim.grad_clip=1e0"]).optim.grad_clip == 1.0
    assert apply_overrides(Config(), ["optim.grad_clip=0.5", "optim.grad_clip=null"]).optim.grad_clip is None


def test_warmup_longer_than_the_run_is_refused():
    # refused, not clamped: the rate would never reach optim.lr nor decay
    for warm in ("10", "12.5"):
        with pytest.raises(ValueError, match=r"schedule\.warmup_epochs \(1[0-9.]*\) must be shorter than the run "
                                             r"\(train\.epochs = 10\)"):
            apply_overrides(Config(), [f"schedule.warmup_epochs={warm}"])
    assert apply_overrides(Config(), ["schedule.warmup_epochs=9.5"]).schedule.warmup_epochs == 9.5
    # onecycle and none ignore warmup_epochs, so it is not an error there
    assert apply_overrides(Config(), ["schedule.name=onecycle", "schedule.warmup_epochs=20"]).schedule.name == "onecycle"
    # a recipe layer with a long warmup may be completed by a later layer (more epochs) before the check
    cfg = apply_overrides(default_config("lenet5", "folder:/x"), ["train.epochs=1", "schedule.warmup_epochs=0"])
    assert cfg.schedule.warmup_epochs == 0.0


def test_device_syntax_is_checked_and_availability_when_the_user_sets_it():
    with pytest.raises(ValueError, match=r"train\.device 'gpu' is not a device; valid: auto, cpu, cuda, cuda:N, mps"):
        apply_overrides(Config(), ["train.device=gpu"])
    # a run trained on a GPU still loads here (to be resumed with --device cpu)
    assert config_from_dict({"train": {"device": "cuda:1"}}).train.device == "cuda:1"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"no CUDA GPU is available on this machine; valid here: auto, cpu"):
            apply_overrides(Config(), ["train.device=cuda"])


# ----------------------------------------------------------------------------------------------- YAML and recipe files
def test_yaml_errors_name_the_input_and_the_place(tmp_path):
    with pytest.raises(ValueError, match=r"--set 'optim\.betas=\[0\.9,': not valid YAML .* line 1"):
        apply_overrides(Config(), ["optim.betas=[0.9,"])
    (tmp_path / "r.yaml").write_text("optim:\n  lr: 0.1\n  momentum: [0.9\n")
    with pytest.raises(ValueError, match=r"recipe '.*r\.yaml': not valid YAML \(.* line 3, column 13\)"):
        load_recipe(tmp_path / "r.yaml")
    with pytest.raises(ValueError, match=r"recipe '.*' is a directory; give a YAML file"):
        load_recipe(tmp_path)
    (tmp_path / "b.yaml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(ValueError, match=r"recipe '.*b\.yaml' is not a text \(UTF-8\) YAML file"):
        load_recipe(tmp_path / "b.yaml")
    with pytest.raises(FileNotFoundError, match=r"recipe '.*nope\.yaml' does not exist"):
        load_recipe(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------------------------- dataset names
@pytest.mark.parametrize("spelling, name", [("MNIST5K", "mnist5k"), ("Mnist", "mnist"), ("Fashion_MNIST", "fashion-mnist"),
                                            ("fashionmnist", "fashion-mnist"), ("CIFAR-10", "cifar10"),
                                            ("Cifar100", "cifar100"), ("Folder:/data/My Photos", "folder:/data/My Photos")])
def test_dataset_names_are_normalised_once(spelling, name):
    from cnnzoo.data.datasets import dataset_name

    assert dataset_name(spelling) == name
    assert default_config("lenet5", spelling).data.name == name
    assert recipe_path(spelling) == recipe_path(name)


def test_data_in_capitals_gets_its_recipe():
    import yaml

    from cnnzoo.cli.train import build_config

    recipe = yaml.safe_load(recipe_path("mnist5k").read_text())  # the bundled file, read independently
    cfg = build_config(_train_args("--data", "MNIST5K"))
    assert cfg.data.name == "mnist5k"
    assert (cfg.optim.lr, cfg.schedule.name, cfg.train.epochs) == (
        recipe["optim"]["lr"], recipe["schedule"]["name"], recipe["train"]["epochs"])
    assert cfg == build_config(_train_args("--data", "mnist5k"))


def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; valid: mnist5k, mnist, fashion-mnist, cifar10, "
                                         r"cifar100 or folder:PATH"):
        default_config("lenet5", "imagenet")
    with pytest.raises(ValueError, match=r"is a directory: for an image folder write folder:"):
        default_config("lenet5", str(tmp_path))


def test_yaml_1_1_words_are_not_booleans():
    """`train.amp=off` is the string "off" (YAML 1.1 would read False); only true/false are booleans."""
    from cnnzoo.train.config import apply_overrides, default_config

    cfg = apply_overrides(default_config("lenet5", "mnist5k"), ["train.amp=off", "optim.nesterov=false"])
    assert cfg.train.amp == "off" and cfg.optim.nesterov is False
    with pytest.raises(ValueError, match="optim.nesterov must be a bool"):
        apply_overrides(default_config("lenet5", "mnist5k"), ["optim.nesterov=yes"])
