"""`cnnzoo.evaluate.to_dense`: every registered network with fc layers after its last feature map, turned fully
convolutional (VGG Sec. 3.2), gives its own logits at the training size and a class score map at larger sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.evaluate import to_dense
from cnnzoo.evaluate.dense import feature_shape
from test_models import HEAVY

# No dense form, and why: features that are not a spatial map (ViT's tokens, the fully-connected highway net, the
# recurrent nets: found by the test from the shape of their features), or a head that is not linear after its
# global pooling (MobileNet v3's and GhostNet's 1280-unit layer + activation between the pool and the classifier,
# Howard et al. 2019 Fig. 5; Han et al. 2020 Table 7).
NO_MAP = {"vit_tiny_patch4_32", "highway_fc_mnist"}  # examples; the parametrised test checks every network
NONLINEAR_HEAD = {"mobilenet_v3_large", "mobilenet_v3_small", "ghostnet_100"}
# Flatten + fc heads and the k x k grid their first fc reads (the papers' figures): AlexNet Fig. 2 and ZF Fig. 3
# (6x6x256 into fc6), VGG Sec. 3.2 ("the first FC layer to a 7x7 conv. layer"), LeNet-5 Fig. 2 (C5 over S4's
# 5x5 maps), EffNet (three halvings of 32: 4x4).
WINDOWS = {"alexnet": 6, "alexnet_paper": 6, "zfnet": 6, "lenet5": 5, "lenet5_paper": 5, "effnet": 4,
           **{n: 7 for n in cnnzoo.list_models() if n.startswith("vgg")}}
# The default run checks one network per head design (the others of a family share its forward_head); every
# eligible network runs with -m slow. vgg11 costs ~3 s (two 224-pixel forwards): VGG is the paper of dense evaluation.
DEFAULT = {"alexnet", "zfnet", "vgg11", "lenet5", "lenet5_paper", "effnet", "nin_cifar", "squeezenet1_1", "resnet18",
           "resnet20_cifar", "preact_resnet18", "wide_resnet16_8_cifar", "densenet40_k12_cifar", "efficientnet_b0",
           "googlenet", "hardnet39_ds", "highway_conv_cifar", "mobilenet_v1_025", "mobilenet_v2", "shufflenet_v1_g3",
           "shufflenet_v2_x0_5", "xception", "vit_tiny_patch4_32", "highway_fc_mnist", "mobilenet_v3_small",
           "ghostnet_100"}


def _param(name: str):
    return pytest.param(name, marks=[] if name in DEFAULT and name not in HEAVY else [pytest.mark.slow])


def _pooled_size(model) -> int:
    """A small input whose last feature map is at least 2x2 (so the per-position scores are not one value)."""
    s = max(model.min_input_size, 2 * model.feature_info[-1]["reduction"])
    while min(feature_shape(model, s)[-2:]) < 2:
        s += 8
    return s


@pytest.mark.parametrize("name", [_param(n) for n in cnnzoo.list_models()])
def test_dense_equals_the_logits_at_the_training_size(name):
    model = cnnzoo.create_model(name, num_classes=10).eval()
    card_size = cnnzoo.get_card(name).input_size[-1]
    if len(feature_shape(model, card_size)) != 4 or name in NONLINEAR_HEAD:  # no dense form: refused, saying why
        reason = "dense form: its head is not linear after the global pooling" if name in NONLINEAR_HEAD else \
            "spatial feature map"
        with pytest.raises(ValueError, match=f"{name} has no {reason}"):
            to_dense(model)
        return
    dense = to_dense(model)
    k = WINDOWS.get(name, 1)
    assert dense.window == k
    if k > 1:  # flatten + fc: at the card's size the map is 1x1 and is the logits
        x = torch.randn(2, model.in_channels, card_size, card_size)
        with torch.no_grad():
            logits, scores = model(x), dense(x)
        assert scores.shape == (2, 10, 1, 1)
        scores = scores[:, :, 0, 0]
    else:  # a globally pooled head: one score per position, whose mean is the logits at any size
        size = _pooled_size(model)
        x = torch.randn(2, model.in_channels, size, size)
        with torch.no_grad():
            logits, score_map = model(x), dense(x)
        assert score_map.shape[:2] == (2, 10) and score_map.shape[2] * score_map.shape[3] >= 4
        scores = score_map.mean((2, 3))
    tol = 1e-4 * max(1.0, logits.abs().max().item())
    torch.testing.assert_close(scores, logits, rtol=1e-4, atol=tol)


def test_networks_without_a_dense_form_are_refused_with_the_reason():
    for name in sorted(NO_MAP):
        with pytest.raises(ValueError, match=f"{name} has no spatial feature map .* needs a convolutional network"):
            to_dense(cnnzoo.create_model(name))


def test_other_refusals_name_the_problem():
    with pytest.raises(ValueError, match="ZooModel"):
        to_dense(nn.Conv2d(3, 3, 1))
    headless = cnnzoo.create_model("resnet20_cifar")
    headless.reset_classifier(0)
    with pytest.raises(ValueError, match="num_classes=0"):
        to_dense(headless)
    # EffNet's fc reads a 4x4 map: trained on 16-pixel images its map is 2x2 (resampled to 4x4), no dense form
    with pytest.raises(ValueError, match=r"reads a 4x4 window.*2x2"):
        to_dense(cnnzoo.create_model("effnet"), input_size=16)
    dense = to_dense(cnnzoo.create_model("effnet").eval())
    with pytest.raises(ValueError, match=r"reads a 4x4 window.*24x24 input gives a 3x3 map"):
        dense(torch.randn(1, 3, 24, 24))


def _conv(linear: nn.Linear, k: int) -> nn.Conv2d:
    """A fully connected layer as the k x k convolution with the same weights (VGG Sec. 3.2), built by hand."""
    conv = nn.Conv2d(linear.in_features // (k * k), linear.out_features, k)
    conv.weight.data = linear.weight.data.view(linear.out_features, -1, k, k).clone()
    conv.bias.data = linear.bias.data.clone()
    return conv


def test_lenet5_dense_map_is_its_fc_layers_as_convolutions():
    model = cnnzoo.create_model("lenet5").eval()
    fc1, fc2 = model.classifier[1], model.classifier[4]
    by_hand = nn.Sequential(model.features, _conv(fc1, 5), nn.ReLU(), _conv(fc2, 1), nn.ReLU(), _conv(model.fc, 1))
    x = torch.randn(3, 1, 44, 44)  # 44 -> 20 -> 8: a 4x4 score map
    with torch.no_grad():
        expected, got = by_hand(x), to_dense(model)(x)
    assert got.shape == (3, 10, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_alexnet_dense_map_is_its_fc_layers_as_convolutions():
    model = cnnzoo.create_model("alexnet", num_classes=10).eval()
    fc6, fc7, fc8 = (m for m in model.classifier if isinstance(m, nn.Linear))
    by_hand = nn.Sequential(model.features, _conv(fc6, 6), nn.ReLU(), _conv(fc7, 1), nn.ReLU(), _conv(fc8, 1))
    x = torch.randn(1, 3, 288, 320)  # pool5 maps of 8x9: a 3x4 score map
    with torch.no_grad():
        expected, got = by_hand(x), to_dense(model)(x)
    assert got.shape == (1, 10, 3, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_pooled_head_dense_map_is_the_fc_as_a_1x1_convolution():
    model = cnnzoo.create_model("resnet18", num_classes=10).eval()
    x = torch.randn(2, 3, 96, 128)  # 3x4 last feature map
    with torch.no_grad():
        expected = F.conv2d(model.forward_features(x), model.fc.weight[:, :, None, None], model.fc.bias)
        got = to_dense(model)(x)
    assert got.shape == (2, 10, 3, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # the shared ClassifierHead's own conv mode (layers/head.py, use_conv=True) gives the same map
    cifar = cnnzoo.create_model("resnet20_cifar").eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        got = to_dense(cifar)(x)
        cifar.head.use_conv = True
        expected = cifar.forward_head(cifar.forward_features(x))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,size,grid", [("lenet5_paper", 40, (3, 3)), ("effnet", 48, (3, 3)),
                                            ("zfnet", 288, (3, 3))])
def test_flatten_heads_give_a_score_map_at_a_larger_size(name, size, grid):
    model = cnnzoo.create_model(name, num_classes=10).eval()
    x = torch.randn(1, model.in_channels, size, size)
    with torch.no_grad():
        got = to_dense(model)(x)
    assert got.shape == (1, 10, *grid)
    assert got.flatten(2).std(-1).min() > 0  # the positions see different windows


def test_dense_shares_the_networks_weights_and_leaves_its_mode_alone():
    model = cnnzoo.create_model("lenet5")
    model.train()
    dense = to_dense(model)
    assert model.training  # the checks ran in eval mode and restored the mode
    assert {id(p) for p in dense.parameters()} == {id(p) for p in model.parameters()}
    with torch.no_grad():
        model.fc.bias += 1.0  # a change to the network is a change to its dense form
        x = torch.randn(1, 1, 32, 32)
        model.eval()
        torch.testing.assert_close(dense(x)[:, :, 0, 0], model(x))
