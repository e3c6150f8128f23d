"""digits-segmentation recipes (issue 25, "Every network trains on digits-segmentation on 2 CPU cores in minutes"):
for every registered segmentation network, ``get_digits_recipe(name)`` is well formed and its options build a network
that runs on the built-in data's shape: (N, 1, 64, 64) images, 11 classes (background + ten digits).

Parametrised over ``list_segmenters()``, so networks registered later are covered as they land.
"""

from __future__ import annotations

import pytest
import torch

from cnnzoo.segmentation import create_segmenter, get_digits_recipe, list_segmenters
from cnnzoo.segmentation.registry import _entry, segmenter_options

DIGITS = {"in_channels": 1, "num_classes": 11, "size": 64}  # digits_segmentation(): 64x64 grey canvases, 11 classes
# the networks of unet.py, fcn.py, segnet.py, deconvnet.py, fcn_resnet.py, deeplabv3.py: each registers a recipe
OWN = ["unet", "unet_padded", "unet_resnet34", "fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "segnet_vgg16",
       "deconvnet_vgg16", "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"]


@pytest.mark.parametrize("name", list_segmenters())
def test_recipe_is_well_formed(name):
    recipe = get_digits_recipe(name)
    assert recipe["optimizer"] in ("adam", "sgd")
    assert isinstance(recipe["lr"], float) and 0 < recipe["lr"] < 1
    for key in ("epochs", "batch_size"):
        assert isinstance(recipe[key], int) and not isinstance(recipe[key], bool) and recipe[key] >= 1, key
    assert recipe["batch_size"] >= 2  # BN layers (and the image-pooling BN of DeepLab v3) need two per batch
    options = recipe["options"]
    assert isinstance(options, dict)
    assert not {"in_channels", "num_classes"} & set(options), "the data decides in_channels and num_classes"
    assert set(options) <= set(segmenter_options(name)), f"not constructor options: {set(options) - set(segmenter_options(name))}"


@pytest.mark.parametrize("name", list_segmenters())
def test_recipe_options_build_a_network_for_the_digits(name):
    options = get_digits_recipe(name)["options"]
    torch.manual_seed(0)
    net = create_segmenter(name, in_channels=DIGITS["in_channels"], num_classes=DIGITS["num_classes"], **options)
    size = DIGITS["size"]
    out_size = net.output_size(size)
    assert out_size > 0, f"{name} with {options} gives no output at {size}x{size}"
    x = torch.randn(2, DIGITS["in_channels"], size, size)
    net.train()  # the trainer's mode: (main, aux) where the network has an auxiliary head
    out = net(x)
    for y in out if isinstance(out, tuple) else (out,):
        assert y.shape == (2, DIGITS["num_classes"], out_size, out_size)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, DIGITS["num_classes"], out_size, out_size)


@pytest.mark.parametrize("name", OWN)
def test_own_networks_register_a_recipe(name):
    assert _entry(name).digits_recipe is not None, f"{name} registers no digits_recipe"


def test_valid_unet_recipe_runs_at_64():
    # the paper's depth 4 needs >= 188 pixels (572 -> 388 has a 92-pixel border per side); the recipe's depth 2 fits:
    # 64 -4 = 60, /2 = 30, -4 = 26, /2 = 13, -4 = 9, x2 = 18, -4 = 14, x2 = 28, -4 = 24
    options = get_digits_recipe("unet")["options"]
    net = create_segmenter("unet", in_channels=1, num_classes=11, **options)
    assert net.output_size(64) == {1: 48, 2: 24}[options["depth"]]
    assert create_segmenter("unet", base_channels=1).output_size(64) == 0  # the paper's depth 4 (any width)
