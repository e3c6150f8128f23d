"""Highway networks: the gate (eq. 3), its negative bias init, depth, and the MNIST/CIFAR nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.models.highway import Highway, highway_conv, highway_linear


def _force_gate(layer: Highway, value: float) -> None:
    gate = layer.gate
    nn.init.zeros_(gate.weight)
    nn.init.constant_(gate.bias, value)


@pytest.mark.parametrize("make,shape", [
    (lambda: highway_linear(6, -2.0), (4, 6)),
    (lambda: highway_conv(5, -2.0), (2, 5, 7, 7)),
])
def test_gate_closed_is_identity_and_open_is_transform(make, shape):
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    _force_gate(layer, -200.0)  # sigmoid(-200) == 0 in float32: carry only
    torch.testing.assert_close(layer(x), x, rtol=0, atol=0)
    _force_gate(layer, 200.0)  # sigmoid(200) == 1: transform only
    torch.testing.assert_close(layer(x), layer.transform(x), rtol=0, atol=0)
    _force_gate(layer, 0.0)  # T = 1/2: the average of the two paths
    torch.testing.assert_close(layer(x), 0.5 * (x + layer.transform(x)))


@pytest.mark.parametrize("name", ["highway_fc_mnist", "highway_conv_cifar"])
def test_gate_bias_starts_negative_so_layers_carry(name):
    model = cnnzoo.create_model(name)
    layers = [m for m in model.modules() if isinstance(m, Highway)]
    assert layers
    for layer in layers:
        assert torch.all(layer.gate.bias == -2.0)
    # with the gate weights off, T = sigmoid(-2) ~ 0.12: each layer is mostly carry
    layer = layers[0]
    x = torch.randn(3, layer.gate.weight.shape[1]) if name == "highway_fc_mnist" else torch.randn(1, 32, 4, 4)
    nn.init.zeros_(layer.gate.weight)
    t = torch.sigmoid(layer.gate(x))
    assert torch.allclose(t, torch.full_like(t, 0.1192), atol=1e-4)


def test_gate_bias_option():
    model = cnnzoo.create_model("highway_fc_mnist", gate_bias=-3.0)
    assert all(torch.all(m.gate.bias == -3.0) for m in model.layers)


@pytest.mark.parametrize("depth", [1, 10, 20, 50, 100])
def test_depth_counts_the_plain_first_layer_then_highway_layers(depth):
    with torch.device("meta"):
        model = cnnzoo.create_model("highway_fc_mnist", depth=depth)
    assert len(model.layers) == depth - 1 and all(isinstance(m, Highway) for m in model.layers)
    # Section 3.1: 784 -> 50 plain layer, then 2 * (50 * 50 + 50) = 5,100 per highway layer (~5,000 as the
    # paper says, matching a 71-unit plain layer's 71 * 71 + 71 = 5,112), then the 50 -> 10 softmax layer
    expected = (784 * 50 + 50) + (depth - 1) * 5_100 + (50 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_conv_layers_option_builds_that_many_per_stage():
    model = cnnzoo.create_model("highway_conv_cifar", layers=3, widths=(8, 16, 24))
    for i in (1, 2, 3):
        assert sum(isinstance(m, Highway) for m in getattr(model, f"stage{i}")) == 3
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 24, 8, 8)


def test_fc_net_shapes_and_other_input_sizes():
    model = cnnzoo.create_model("highway_fc_mnist", depth=5).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 50)
        assert model(x).shape == (2, 10)
        # other sizes are pooled to 28x28 first: a 56x56 image made of 2x2 copies gives the same logits
        big = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
        torch.testing.assert_close(model(big), model(x))


@pytest.mark.parametrize("name,opts,match", [
    ("highway_fc_mnist", {"depth": 0}, "depth"),
    ("highway_fc_mnist", {"drop_rate": 1.5}, "drop_rate"),
    ("highway_conv_cifar", {"widths": (8, 16)}, "widths"),
    ("highway_conv_cifar", {"layers": -1}, "layers"),
])
def test_bad_options_are_clear_errors(name, opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model(name, **opts)
