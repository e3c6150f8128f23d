"""The papers' recipes shipped in the package (`cnnzoo recipes`, `cnnzoo train NAME --recipe paper`).

What a user relies on: every network family the issue lists has its paper's recipe; every recipe loads, validates
and trains a step on a tiny input with the smallest of its networks; the run adapts the recipe to the data at hand
and says so (the schedule keeps its shape over fewer epochs, the learning rate follows the linear scaling rule when
the batch changes, the paper's augmentation applies to its own kind of images only); a network without a recipe is
one clear error listing the networks that have one. Expected numbers are worked out by hand from the papers.
"""

from __future__ import annotations

import functools
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
    # AlexNet Sec. 2 / 4.1: crops inside the central 256x256 square, for the 224 crops of the text and the 227 of
    # alexnet_paper's arithmetic alike (256 is not rescaled to 259); another crop size scales it (112: 128)
    alex = {"scale_jitter": [256, 256], "central_square": True, "hflip": True, "pca_lighting": True}
    for network in ("alexnet", "alexnet_paper"):
        assert config([network, "--recipe", "paper", "--data", f"folder:{tiny_folder}"]).data.augment == alex
    assert config(["alexnet", "--recipe", "paper", "--data", f"folder:{tiny_folder}", "--set",
                   "data.input_size=112"]).data.augment == {**alex, "scale_jitter": [128, 128]}


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
    # and pre-training head (Sec. 3.1, hidden width D)
    assert config(["efficientnet_b0", "--recipe", "paper"]).model.options == {"bn_momentum": 0.01}
    assert config(["vit_b_32", "--recipe", "paper", "-o", "attn_drop_rate=0.1"]).model.options == \
        {"drop_rate": 0.1, "representation_size": 768, "attn_drop_rate": 0.1}


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


# ---------------------------------------------------------------------------------------- every number, from the papers
# Each row: (test id naming the paper and section, network, what, the paper's value). The values are typed from the
# papers (and, where a recipe says so, the authors' code or the replication it names), never read from the recipes.
# Iteration counts are converted by hand: ImageNet 1,281,167 images, CIFAR 50,000.
PAPER_TABLE = [
    # AlexNet: Krizhevsky, Sutskever, Hinton 2012
    ("alexnet-Sec5-batch-128", "alexnet_paper", "data.batch_size", 128),
    ("alexnet-Sec5-lr-0.01", "alexnet_paper", "optim.lr", 0.01),
    ("alexnet-Sec5-momentum-0.9", "alexnet_paper", "optim.momentum", 0.9),
    ("alexnet-Sec5-weight-decay-0.0005", "alexnet_paper", "optim.weight_decay", 0.0005),
    ("alexnet-Sec5-lr-divided-by-10", "alexnet_paper", "schedule.gamma", 0.1),
    ("alexnet-Sec5-when-validation-stops-improving", "alexnet_paper", "schedule.name", "plateau"),
    ("alexnet-Sec5-90-cycles", "alexnet_paper", "train.epochs", 90),
    ("alexnet-Sec5-init-std-0.01", "alexnet_paper", "model.init.std", 0.01),
    ("alexnet-Sec2-rescale-256", "alexnet_paper", "data.augment.scale_jitter", [256, 256]),
    ("alexnet-Sec2-central-256-square", "alexnet_paper", "data.augment.central_square", True),
    ("alexnet-Sec4.1-reflections", "alexnet_paper", "data.augment.hflip", True),
    ("alexnet-Sec4.1-pca-noise", "alexnet_paper", "data.augment.pca_lighting", True),
    ("alexnet-Sec4.1-pca-sigma-0.1", "alexnet_paper", "PCA_ALPHA_STD", 0.1),
    ("alexnet-Sec4.2-dropout-0.5", "alexnet_paper", "dropout", [0.5]),
    ("alexnet-Sec4.2-dropout-0.5-torchvision-layout", "alexnet", "dropout", [0.5]),
    # VGG: Simonyan & Zisserman 2015, Sec. 3.1
    ("vgg-Sec3.1-batch-256", "vgg16", "data.batch_size", 256),
    ("vgg-Sec3.1-lr-0.01", "vgg16", "optim.lr", 0.01),
    ("vgg-Sec3.1-momentum-0.9", "vgg16", "optim.momentum", 0.9),
    ("vgg-Sec3.1-weight-decay-5e-4", "vgg16", "optim.weight_decay", 0.0005),
    ("vgg-Sec3.1-lr-divided-by-10", "vgg16", "schedule.gamma", 0.1),
    ("vgg-Sec3.1-370K-iterations-74-epochs", "vgg16", "train.epochs", 74),
    ("vgg-Sec3.1-dropout-0.5", "vgg16", "dropout", [0.5]),
    ("vgg-Sec3.1-S-256-to-512", "vgg16", "data.augment.scale_jitter", [256, 512]),
    ("vgg-Sec3.1-flips", "vgg16", "data.augment.hflip", True),
    # GoogLeNet: Szegedy et al. 2015, Sec. 5-6; lr, batch, wd, length from Caffe's bvlc_googlenet solver
    ("googlenet-Sec6-momentum-0.9", "googlenet", "optim.momentum", 0.9),
    ("googlenet-Sec6-lr-down-4pc", "googlenet", "schedule.gamma", 0.96),
    ("googlenet-Sec6-every-8-epochs", "googlenet", "schedule.step_size", 8),
    ("googlenet-Sec5-aux-weight-0.3", "googlenet", "aux_weight", 0.3),
    ("googlenet-Sec5-dropout-0.4-main-0.7-aux", "googlenet", "dropout", [0.4, 0.7]),
    ("googlenet-Sec6-random-resized-crop", "googlenet", "data.augment.random_resized_crop", True),
    ("googlenet-caffe-solver-lr-0.01", "googlenet", "optim.lr", 0.01),
    ("googlenet-caffe-solver-batch-32", "googlenet", "data.batch_size", 32),
    ("googlenet-caffe-solver-wd-2e-4", "googlenet", "optim.weight_decay", 0.0002),
    ("googlenet-caffe-solver-10M-iterations-250-epochs", "googlenet", "train.epochs", 250),
    # ResNet on ImageNet: He et al. 2016, Sec. 3.4
    ("resnet-imagenet-Sec3.4-batch-256", "resnet50", "data.batch_size", 256),
    ("resnet-imagenet-Sec3.4-lr-0.1", "resnet50", "optim.lr", 0.1),
    ("resnet-imagenet-Sec3.4-momentum-0.9", "resnet50", "optim.momentum", 0.9),
    ("resnet-imagenet-Sec3.4-weight-decay-1e-4", "resnet50", "optim.weight_decay", 0.0001),
    ("resnet-imagenet-Sec3.4-lr-divided-by-10", "resnet50", "schedule.gamma", 0.1),
    ("resnet-imagenet-Sec3.4-60e4-iterations-120-epochs", "resnet50", "train.epochs", 120),
    ("resnet-imagenet-Sec3.4-S-256-to-480", "resnet50", "data.augment.scale_jitter", [256, 480]),
    ("resnet-imagenet-Sec3.4-no-dropout", "resnet50", "dropout", []),
    # ResNet on CIFAR-10: He et al. 2016, Sec. 4.2 (391 iterations per epoch of 50k images at 128)
    ("resnet-cifar-Sec4.2-batch-128", "resnet20_cifar", "data.batch_size", 128),
    ("resnet-cifar-Sec4.2-lr-0.1", "resnet20_cifar", "optim.lr", 0.1),
    ("resnet-cifar-Sec4.2-momentum-0.9", "resnet20_cifar", "optim.momentum", 0.9),
    ("resnet-cifar-Sec4.2-weight-decay-1e-4", "resnet20_cifar", "optim.weight_decay", 0.0001),
    ("resnet-cifar-Sec4.2-32k-48k-iterations", "resnet20_cifar", "schedule.milestones", [82, 123]),
    ("resnet-cifar-Sec4.2-lr-divided-by-10", "resnet20_cifar", "schedule.gamma", 0.1),
    ("resnet-cifar-Sec4.2-64k-iterations", "resnet20_cifar", "train.epochs", 164),
    ("resnet-cifar-Sec4.2-pad-4", "resnet20_cifar", "data.augment.random_crop_padding", 4),
    ("resnet-cifar-Sec4.2-no-dropout", "resnet20_cifar", "dropout", []),
    ("resnet-cifar-Sec4.2-resnet110-0.01-for-400-iterations", "resnet110_cifar", "schedule.warmup_epochs", 1),
    # Pre-activation ResNet on CIFAR: He et al. 2016b, Appendix
    ("preact-cifar-Appendix-batch-128", "preact_resnet110_cifar", "data.batch_size", 128),
    ("preact-cifar-Appendix-lr-0.1", "preact_resnet110_cifar", "optim.lr", 0.1),
    ("preact-cifar-Appendix-momentum-0.9", "preact_resnet110_cifar", "optim.momentum", 0.9),
    ("preact-cifar-Appendix-weight-decay-1e-4", "preact_resnet110_cifar", "optim.weight_decay", 0.0001),
    ("preact-cifar-Appendix-32k-48k-iterations", "preact_resnet110_cifar", "schedule.milestones", [82, 123]),
    ("preact-cifar-Appendix-lr-divided-by-10", "preact_resnet110_cifar", "schedule.gamma", 0.1),
    ("preact-cifar-Appendix-64k-iterations", "preact_resnet110_cifar", "train.epochs", 164),
    # Wide ResNet: Zagoruyko & Komodakis 2016, Sec. 3
    ("wrn-Sec3-batch-128", "wide_resnet28_10_cifar", "data.batch_size", 128),
    ("wrn-Sec3-lr-0.1", "wide_resnet28_10_cifar", "optim.lr", 0.1),
    ("wrn-Sec3-nesterov-momentum-0.9", "wide_resnet28_10_cifar", "optim.momentum", 0.9),
    ("wrn-Sec3-nesterov", "wide_resnet28_10_cifar", "optim.nesterov", True),
    ("wrn-Sec3-weight-decay-5e-4", "wide_resnet28_10_cifar", "optim.weight_decay", 0.0005),
    ("wrn-Sec3-drop-at-60-120-160", "wide_resnet28_10_cifar", "schedule.milestones", [60, 120, 160]),
    ("wrn-Sec3-lr-times-0.2", "wide_resnet28_10_cifar", "schedule.gamma", 0.2),
    ("wrn-Sec3-200-epochs", "wide_resnet28_10_cifar", "train.epochs", 200),
    ("wrn-Sec2.4-Sec3-dropout-0.3", "wide_resnet28_10_cifar", "dropout", [0.3]),
    # DenseNet on CIFAR: Huang et al. 2017, Sec. 4.2
    ("densenet-Sec4.2-batch-64", "densenet_bc100_k12_cifar", "data.batch_size", 64),
    ("densenet-Sec4.2-lr-0.1", "densenet_bc100_k12_cifar", "optim.lr", 0.1),
    ("densenet-Sec4.2-nesterov-momentum-0.9", "densenet_bc100_k12_cifar", "optim.momentum", 0.9),
    ("densenet-Sec4.2-nesterov", "densenet_bc100_k12_cifar", "optim.nesterov", True),
    ("densenet-Sec4.2-weight-decay-1e-4", "densenet_bc100_k12_cifar", "optim.weight_decay", 0.0001),
    ("densenet-Sec4.2-50pc-75pc-of-300", "densenet_bc100_k12_cifar", "schedule.milestones", [150, 225]),
    ("densenet-Sec4.2-lr-divided-by-10", "densenet_bc100_k12_cifar", "schedule.gamma", 0.1),
    ("densenet-Sec4.2-300-epochs", "densenet_bc100_k12_cifar", "train.epochs", 300),
    ("densenet-Sec4.2-no-dropout-with-augmentation", "densenet_bc100_k12_cifar", "dropout", []),
    # MobileNetV2: Sandler et al. 2018, Sec. 6.1
    ("mobilenetv2-Sec6.1-rmsprop", "mobilenet_v2", "optim.name", "rmsprop"),
    ("mobilenetv2-Sec6.1-decay-0.9", "mobilenet_v2", "optim.alpha", 0.9),
    ("mobilenetv2-Sec6.1-momentum-0.9", "mobilenet_v2", "optim.momentum", 0.9),
    ("mobilenetv2-Sec6.1-lr-0.045", "mobilenet_v2", "optim.lr", 0.045),
    ("mobilenetv2-Sec6.1-weight-decay-4e-5", "mobilenet_v2", "optim.weight_decay", 0.00004),
    ("mobilenetv2-Sec6.1-lr-decay-0.98-per-epoch", "mobilenet_v2", "schedule.gamma", 0.98),
    ("mobilenetv2-Sec6.1-every-epoch", "mobilenet_v2", "schedule.step_size", 1),
    ("mobilenetv2-Sec6.1-batch-96", "mobilenet_v2", "data.batch_size", 96),
    ("mobilenetv2-not-in-paper-300-epochs", "mobilenet_v2", "train.epochs", 300),
    # EfficientNet: Tan & Le 2019, Sec. 5.2 (batch and warm-up from MnasNet Sec. 4; length from the reference code)
    ("efficientnet-Sec5.2-rmsprop", "efficientnet_b0", "optim.name", "rmsprop"),
    ("efficientnet-Sec5.2-decay-0.9", "efficientnet_b0", "optim.alpha", 0.9),
    ("efficientnet-Sec5.2-momentum-0.9", "efficientnet_b0", "optim.momentum", 0.9),
    ("efficientnet-Sec5.2-lr-0.256", "efficientnet_b0", "optim.lr", 0.256),
    ("efficientnet-Sec5.2-weight-decay-1e-5", "efficientnet_b0", "optim.weight_decay", 0.00001),
    ("efficientnet-Sec5.2-bn-momentum-0.99", "efficientnet_b0", "model.options.bn_momentum", 0.01),
    ("efficientnet-Sec5.2-0.97-every-2.4-epochs", "efficientnet_b0", "schedule.gamma", round(0.97 ** (1 / 2.4), 5)),
    ("efficientnet-Sec5.2-step-every-epoch", "efficientnet_b0", "schedule.step_size", 1),
    ("efficientnet-Sec5.2-survival-0.8", "efficientnet_b0", "drop_path_rate", 0.2),
    ("efficientnet-Sec5.2-dropout-0.2-B0", "efficientnet_b0", "dropout", [0.2]),
    ("efficientnet-Sec5.2-dropout-0.5-B7", "efficientnet_b7", "dropout", [0.5]),
    ("efficientnet-MnasNet-Sec4-batch-4096", "efficientnet_b0", "data.batch_size", 4096),
    ("efficientnet-MnasNet-Sec4-warmup-5-epochs", "efficientnet_b0", "schedule.warmup_epochs", 5),
    ("efficientnet-reference-code-350-epochs", "efficientnet_b0", "train.epochs", 350),
    ("efficientnet-reference-code-ema-0.9999", "efficientnet_b0", "train.ema.decay", 0.9999),
    # ViT: Dosovitskiy et al. 2021, Table 3 (ImageNet row), App. B.1, Sec. 3.1
    ("vit-AppB.1-adam", "vit_b_16", "optim.name", "adamw"),
    ("vit-AppB.1-betas-0.9-0.999", "vit_b_16", "optim.betas", [0.9, 0.999]),
    ("vit-Table3-lr-3e-3", "vit_b_16", "optim.lr", 0.003),
    ("vit-Table3-weight-decay-0.3", "vit_b_16", "optim.weight_decay", 0.3),
    ("vit-Table3-batch-4096", "vit_b_16", "data.batch_size", 4096),
    ("vit-Table3-cosine", "vit_b_16", "schedule.name", "cosine"),
    ("vit-Table3-warmup-10k-steps-32-epochs", "vit_b_16", "schedule.warmup_epochs", round(10_000 * 4096 / 1_281_167)),
    ("vit-Table3-300-epochs", "vit_b_16", "train.epochs", 300),
    ("vit-Table3-dropout-0.1", "vit_b_16", "dropout", [0.1]),
    ("vit-Table3-note-grad-clip-1", "vit_b_16", "optim.grad_clip", 1.0),
    ("vit-Sec3.1-pre-training-mlp-head-B", "vit_b_16", "model.options.representation_size", 768),
    ("vit-Sec3.1-pre-training-mlp-head-B32", "vit_b_32", "model.options.representation_size", 768),
    ("vit-Sec3.1-pre-training-mlp-head-L", "vit_l_16", "model.options.representation_size", 1024),
]


@functools.cache
def _resolved(network: str):
    """The config of ``network`` with ``--recipe paper`` on its paper's kind of data, and the network it builds."""
    from cnnzoo.train.paper_recipes import paper_config

    recipe = paper_recipe_for(network)
    cfg, _, _ = paper_config(network, "folder:/tiny" if recipe.dataset == "imagenet" else "cifar10")
    with torch.device("meta"):
        model = cnnzoo.create_model(network, **cfg.model.options)
    return cfg, model


def _recipe_value(network: str, what: str):
    """The value a run of ``network`` with ``--recipe paper`` gets for ``what`` (a config path or a property)."""
    from cnnzoo.data.augment import PCA_ALPHA_STD
    from cnnzoo.layers import DropPath

    cfg, model = _resolved(network)
    if what == "PCA_ALPHA_STD":
        return PCA_ALPHA_STD
    if what == "aux_weight":
        return cnnzoo.get_card(network).aux_weight
    if what == "dropout":  # every dropout rate in the network
        return sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0})
    if what == "drop_path_rate":  # the reference code's rule: block i of the n MBConv blocks drops at rate x i / n
        blocks = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
        rates = [d.p * len(blocks) / i for i, b in enumerate(blocks) for d in b.modules()
                 if isinstance(d, DropPath) and d.p > 0]  # (blocks without a residual have no DropPath)
        assert rates and rates == pytest.approx([rates[0]] * len(rates))
        return rates[0]
    value = cfg
    for part in what.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize("network, what, expected", [row[1:] for row in PAPER_TABLE],
                         ids=[row[0] for row in PAPER_TABLE])
def test_recipe_value_is_the_papers(network, what, expected):
    got = _recipe_value(network, what)
    if isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9), (network, what, got)
    else:
        assert got == expected, (network, what, got)


def test_the_table_covers_every_recipe():
    assert {paper_recipe_for(row[1]).name for row in PAPER_TABLE} == set(RECIPES)
