"""The papers' recipes shipped in the package (`cnnzoo recipes`, `cnnzoo train NAME --recipe paper`).

What a user relies on: every network family the issue lists has its paper's recipe; every recipe loads, validates
and trains a step on a tiny input with the smallest of its networks; the run adapts the recipe to the data at hand
and says so (the schedule keeps its shape over fewer epochs, the learning rate follows the linear scaling rule when
the batch changes, the paper's augmentation applies to its own kind of images only); a network without a recipe is
one clear error listing the networks that have one. Expected numbers are worked out by hand from the papers.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli.main import build_parser
from cnnzoo.cli.train import build_config
from cnnzoo.data.bundle import DataBundle, TensorSplit, channel_stats
from cnnzoo.registry import model_options
from cnnzoo.train import Trainer
from cnnzoo.train.init import init_spec
from cnnzoo.train.optim import LRSchedule
from cnnzoo.train.paper_recipes import list_paper_recipes, paper_recipe_for
from cnnzoo.train.progress import make_progress
from test_cli_errors import assert_one_clear_error, run_cli, snapshot

RECIPES = {r.name: r for r in list_paper_recipes()}

# The families the issue names, one network each, and the recipe that must be theirs.
FAMILIES = {"alexnet_paper": "alexnet", "vgg16": "vgg", "googlenet": "googlenet", "resnet50": "resnet_imagenet",
            "resnet20_cifar": "resnet_cifar", "preact_resnet110_cifar": "preact_resnet_cifar",
            "wide_resnet28_10_cifar": "wrn_cifar", "densenet_bc100_k12_cifar": "densenet_cifar",
            "mobilenet_v2": "mobilenet_v2", "efficientnet_b3": "efficientnet", "vit_b_16": "vit"}

# The network each recipe trains its step with (the cheapest of its networks) and the input size it takes.
STEP = {"alexnet": ("alexnet", 63), "vgg": ("vgg11", 32), "googlenet": ("googlenet", 32),
        "resnet_imagenet": ("resnet18", 32), "mobilenet_v2": ("mobilenet_v2", 32),
        "efficientnet": ("efficientnet_b0", 32), "vit": ("vit_b_16", 16), "resnet_cifar": ("resnet20_cifar", 32),
        "preact_resnet_cifar": ("preact_resnet110_cifar", 32), "wrn_cifar": ("wide_resnet40_4_cifar", 32),
        "densenet_cifar": ("densenet40_k12_cifar", 32)}


def config(argv: list[str]):
    return build_config(build_parser().parse_args(["train", *argv]))


def test_every_family_of_the_issue_has_its_papers_recipe():
    for network, recipe in FAMILIES.items():
        found = paper_recipe_for(network)
        assert found is not None and found.name == recipe, (network, found)
    assert set(STEP) == set(RECIPES), "a recipe without a one-step test, or a test of no recipe"


def test_no_network_has_two_recipes_and_every_pattern_names_networks():
    owner: dict[str, str] = {}
    for r in RECIPES.values():
        for pattern in r.networks:
            assert cnnzoo.list_models(pattern), f"{r.name}: {pattern!r} matches no registered network"
        for network in r.registered():
            assert network not in owner, f"{network} is in {owner.get(network)} and {r.name}"
            owner[network] = r.name
        for pattern in r.per_network:
            assert any(r.matches(n) for n in cnnzoo.list_models(pattern)), f"{r.name}: per_network {pattern!r}"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_fits_every_one_of_its_networks_and_cites_the_paper(name):
    r = RECIPES[name]
    for network in r.registered():  # (the one-step test builds the smallest network with these options)
        s = r.settings_for(network)
        options = s.get("model", {}).get("options", {})
        assert set(options) <= set(model_options(network)), (network, options)
        init_spec(s.get("model", {}).get("init"))
    assert re.search(r"Sec\. ?\d|Table \d|App\. [A-Z]|Appendix", r.paper), r.paper
    chunks = yaml_sections(r.path.read_text())
    for section in ("data", "optim", "schedule", "train"):  # each part of the setup says where it comes from
        assert re.search(r"#.*(Sec\.|Table|App\.|Appendix|reference code|Caffe|MnasNet|paper)", chunks[section]), \
            (name, section)


def yaml_sections(text: str) -> dict[str, str]:
    """Each top-level key of a YAML file with its lines and the comment lines just above it."""
    out: dict[str, str] = {}
    current, pending = None, []
    for line in text.splitlines():
        if line.startswith("#"):
            pending.append(line)
        elif line and not line[0].isspace():
            current = line.split(":")[0]
            out[current], pending = "\n".join([*pending, line]), []
        elif current:
            out[current] += "\n" + line
    return out


# ---------------------------------------------------------------------------------------- one step each
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """Two classes of random 48x48 RGB images: 3 to train on and 1 to test, each."""
    root = tmp_path_factory.mktemp("tiny") / "imgs"
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def tiny_cifar(*args, **kwargs) -> DataBundle:
    """What the engine gets for cifar10 in this test: 8 random 32x32 RGB images (no download)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(8) % 10
    mean, std = channel_stats(images)
    return DataBundle("cifar10", [str(i) for i in range(10)], 3, (32, 32), mean, std, TensorSplit(images, labels),
                      TensorSplit(images[:4], labels[:4]), kind="tensor")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_one_step_on_a_tiny_input(name, tiny_folder, tmp_path, monkeypatch):
    r = RECIPES[name]
    network, size = STEP[name]
    assert r.matches(network)
    if r.dataset == "imagenet":
        data = ["--data", f"folder:{tiny_folder}", "--set", f"data.input_size={size}"]
    else:
        monkeypatch.setattr("cnnzoo.train.engine.load_dataset", tiny_cifar)
        data = ["--data", "cifar10", "--no-download"]
    cfg = config([network, "--recipe", "paper", *data, "--batch-size", "2", "--limit-batches", "1", "--epochs", "1",
                  "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--set", "data.num_workers=0"])
    settings = r.settings_for(network)
    assert cfg.model.init == init_spec(settings.get("model", {}).get("init"))
    assert cfg.optim.name == settings["optim"]["name"]
    paper_aug = settings["data"].get("augment")
    if paper_aug is not None and r.dataset == "cifar":
        assert cfg.data.augment == paper_aug  # the paper's augmentation on its own kind of images
    elif paper_aug is not None:
        assert set(cfg.data.augment) == set(paper_aug)  # on a folder: the same operations (jitter scaled to the crop)
    trainer = Trainer(cfg, verbose=False)
    layers = [m.weight for m in trainer.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    watched = [layers[0], layers[-1]]  # the first and last layers (copies of all would double VGG's memory)
    before = [p.detach().clone() for p in watched]
    try:
        trainer._train_epoch(make_progress(False, 1))  # the engine's own step: loader, schedule, loss, optimizer
    finally:
        trainer.train_loader.close()
        trainer.close()
    assert trainer.global_step == 1
    assert math.isfinite(trainer.sums[0]) and trainer.sums[2] == 2
    assert all(not torch.equal(a, b) for a, b in zip(before, watched)), "the step did not move the weights"


# ---------------------------------------------------------------------------------------- scaling to the run
def test_fewer_epochs_keep_the_schedule_shape():
    # ResNet on CIFAR (Sec. 4.2): x0.1 at 32k and 48k of 64k iterations = epochs 82 and 123 of 164.
    # Over 100 epochs: 82 x 100/164 = 50 and 123 x 100/164 = 75.
    assert config(["resnet20_cifar", "--recipe", "paper", "--epochs", "100"]).schedule.milestones == [50, 75]
    # given explicitly, the milestones stay
    cfg = config(["resnet20_cifar", "--recipe", "paper", "--epochs", "100", "--set", "schedule.milestones=[10]"])
    assert cfg.schedule.milestones == [10]
    # GoogLeNet (Sec. 6): x0.96 every 8 of 250 epochs, 31.25 decays in all. Over 25 epochs: every round(0.8) = 1
    # epoch, gamma 0.96^(31.25 / 25), the same total decay.
    cfg = config(["googlenet", "--recipe", "paper", "--epochs", "25"])
    assert cfg.schedule.step_size == 1 and cfg.schedule.gamma == pytest.approx(0.96 ** 1.25)
    sched = LRSchedule(cfg.schedule, 1.0, steps_per_epoch=10, epochs=25)
    assert sched.lr(25 * 10 - 1) == pytest.approx(0.96 ** (1.25 * 24))  # epoch 24: 24 decays
    # ViT (Table 3): 10k warm-up steps = 32 of 300 epochs; over 30 epochs: 3.2
    assert config(["vit_b_16", "--recipe", "paper", "--epochs", "30"]).schedule.warmup_epochs == pytest.approx(3.2)
    # over 1 epoch 0.107 epochs: with 4 steps per epoch, less than one step; the rate never passes the peak
    cfg = config(["vit_b_16", "--recipe", "paper", "--epochs", "1", "--lr", "0.003"])
    sched = LRSchedule(cfg.schedule, 0.003, steps_per_epoch=4, epochs=1)
    assert max(sched.lr(i) for i in range(4)) == pytest.approx(0.003)


def test_a_different_batch_follows_the_linear_scaling_rule(capsys, monkeypatch):
    # resnet_cifar: batch 128, lr 0.1 (Sec. 4.2); batch 32: 0.1 x 32 / 128 = 0.025, and the log says so
    assert config(["resnet20_cifar", "--recipe", "paper", "--batch-size", "32"]).optim.lr == pytest.approx(0.025)
    err = capsys.readouterr().err
    assert "linear scaling rule" in err and "0.1 x 32/128 = 0.025" in err
    assert config(["resnet20_cifar", "--recipe", "paper"]).optim.lr == 0.1  # the paper's batch: the paper's lr
    # --lr wins, and the log says it was not scaled
    assert config(["resnet20_cifar", "--recipe", "paper", "--batch-size", "32", "--lr", "0.3"]).optim.lr == 0.3
    assert "as given (not scaled)" in capsys.readouterr().err
    # under torchrun the global batch counts: 4 processes x 32 = 128, the paper's
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert config(["resnet20_cifar", "--recipe", "paper", "--batch-size", "32"]).optim.lr == 0.1


def test_the_papers_augmentation_applies_to_its_own_kind_of_images(capsys, tiny_folder):
    mnist = config(["resnet20_cifar", "--recipe", "paper"])
    # digits keep their own policy (mnist5k's recipe)
    assert mnist.data.augment == {"translate": 2, "rotate": 10, "zoom": [0.9, 1.1]}
    assert "keeps its own" in capsys.readouterr().err
    assert config(["resnet20_cifar", "--recipe", "paper", "--data", "cifar10"]).data.augment == \
        {"random_crop_padding": 4, "hflip": True}  # Sec. 4.2
    # VGG Sec. 3.1: S in [256, 512] for 224-pixel crops; for 112-pixel crops [128, 256]
    vgg = config(["vgg16", "--recipe", "paper", "--data", f"folder:{tiny_folder}", "--set", "data.input_size=112"])
    assert vgg.data.augment == {"scale_jitter": [128, 256], "hflip": True, "pca_lighting": True}
    assert config(["vgg16", "--recipe", "paper", "--data", f"folder:{tiny_folder}"]).data.augment["scale_jitter"] == \
        [256, 512]


def test_per_network_settings_and_named_recipes():
    # Sec. 4.2: only ResNet-110 (and 1202) needed the warm-up
    assert config(["resnet110_cifar", "--recipe", "paper"]).schedule.warmup_epochs == 1
    assert config(["resnet20_cifar", "--recipe", "paper"]).schedule.warmup_epochs == 0
    # nothing of the dataset's recipe leaks in: mnist5k's onecycle and label smoothing are not the paper's
    cfg = config(["wide_resnet28_10_cifar", "--recipe", "paper", "--data", "fashion-mnist", "--no-download"])
    assert cfg.schedule.name == "multistep" and cfg.train.label_smoothing == 0.0 and cfg.optim.nesterov
    # paper:NAME applies a recipe to any network
    cfg = config(["resnext29_8x64d_cifar", "--recipe", "paper:resnet_cifar"])
    assert cfg.optim.lr == 0.1 and cfg.schedule.milestones == [82, 123] and cfg.train.epochs == 164
    # the recipes that set network options: EfficientNet's BN momentum 0.99 (TF) = 0.01 (torch), ViT's dropout 0.1
    assert config(["efficientnet_b0", "--recipe", "paper"]).model.options == {"bn_momentum": 0.01}
    assert config(["vit_b_32", "--recipe", "paper", "-o", "attn_drop_rate=0.1"]).model.options == \
        {"drop_rate": 0.1, "attn_drop_rate": 0.1}


def test_recipes_command_lists_and_shows():
    code, out, _ = run_cli(["recipes", "--format", "markdown"])
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith(("| recipe", "| ---"))]
    assert sorted(row.split("|")[1].strip() for row in rows) == sorted(RECIPES)
    code, out, _ = run_cli(["recipes", "vgg16"])
    assert code == 0 and "Sec. 3.1" in out and "vgg11, vgg11_bn" in out and "batch_size: 256" in out


@pytest.mark.parametrize("argv, expect", [
    (["train", "lenet5", "--recipe", "paper"],
     ("lenet5 has no paper recipe", "vgg16", "resnet20_cifar", "vit_b_16", "--recipe paper:NAME")),
    (["train", "lenet5", "--recipe", "paper:resnet"], ("no paper recipe named 'resnet'", "resnet_cifar", "vgg")),
    (["train", "vgg99", "--recipe", "paper"], ("unknown network 'vgg99'",)),
    (["recipes", "lenet5"], ("lenet5 has no paper recipe", "resnet_cifar")),
    (["recipes", "nosuch"], ("unknown network 'nosuch'",)),
], ids=["no-recipe", "unknown-recipe", "unknown-network", "recipes-no-recipe", "recipes-unknown"])
def test_bad_recipe_requests_are_one_clear_error(tmp_path, monkeypatch, argv, expect):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert_one_clear_error(*run_cli(argv), expect)
    assert snapshot(tmp_path) == before


def test_recipes_ship_with_the_package():
    from pathlib import Path

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"train/recipes/paper/*.yaml"' in pyproject.split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    assert len(RECIPES) == 11 and all(r.path.parent.name == "paper" for r in RECIPES.values())


def test_mnist5k_paper_recipe_config_is_what_a_run_records(tmp_path):
    """The scaled values are the run's: config.yaml holds them (so --resume and eval see the same run)."""
    cfg = config(["resnet20_cifar", "--recipe", "paper", "--epochs", "100", "--batch-size", "64",
                  "--run-dir", str(tmp_path / "r"), "--limit-batches", "1"])
    trainer = Trainer(cfg, verbose=False)
    trainer.close()
    import yaml

    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["schedule"]["milestones"] == [50, 75] and saved["optim"]["lr"] == pytest.approx(0.05)
