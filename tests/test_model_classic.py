"""What is specific to the classic networks: LeNet-5 (paper), AlexNet, ZFNet, VGG, NiN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.layers import LocalResponseNorm


def build(name: str, **opts) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, **opts).eval()


def meta(name: str, **opts) -> nn.Module:
    """Structure only (no weights computed): fast even for the 130M-parameter networks."""
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


def shapes_through(seq: nn.Sequential, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for m in seq:
        x = m(x)
        out.append((type(m).__name__, tuple(x.shape[1:])))
    return out


# ---------------------------------------------------------------- LeNet-5 (paper)

# LeCun et al. 1998, Table I as printed: row = S2 map, column = C3 map, X = connected.
TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def test_lenet5_paper_c3_connects_exactly_table_one():
    c3 = build("lenet5_paper").features.c3
    expected = torch.tensor([[ch == "X" for ch in row] for row in TABLE_I.split()]).T  # (C3 map, S2 map)
    x = torch.randn(1, 6, 14, 14)
    with torch.no_grad():
        base = c3(x)
        for i in range(6):  # perturb one S2 map: exactly the C3 maps Table I connects to it change
            y = x.clone()
            y[:, i] += 1.0
            changed = (c3(y) - base).abs().amax(dim=(0, 2, 3)) > 0
            assert torch.equal(changed, expected[:, i]), f"S2 map {i}"
    assert sum(p.numel() for p in c3.parameters()) == 1516  # 60 kernels of 5x5 + 16 biases


def test_lenet5_paper_layer_parameters_are_the_papers():
    m = build("lenet5_paper")
    per_layer = {name: sum(p.numel() for p in mod.parameters())
                 for name, mod in [("C1", m.features.c1), ("S2", m.features.s2), ("C3", m.features.c3),
                                   ("S4", m.features.s4), ("C5", m.c5), ("F6", m.f6), ("RBF", m.rbf)]}
    assert per_layer == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164, "RBF": 0}


def test_lenet5_paper_subsampling_is_coefficient_times_sum_plus_bias():
    s2 = build("lenet5_paper").features.s2
    params = dict(s2.named_parameters())
    assert {k: v.shape for k, v in params.items()} == {"weight": (6,), "bias": (6,)}  # 2 per map
    x = torch.randn(2, 6, 28, 28)
    window_sums = x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2))  # (2, 6, 14, 14)
    expected = window_sums * params["weight"][:, None, None] + params["bias"][:, None, None]
    torch.testing.assert_close(s2(x), expected)


def test_lenet5_paper_squashing_is_scaled_tanh():
    act = build("lenet5_paper").features.act1
    a = torch.tensor([-1.0, 0.0, 1.0, 100.0])
    torch.testing.assert_close(act(a), 1.7159 * torch.tanh(2 / 3 * a))
    assert act(torch.tensor(1.0)).item() == pytest.approx(1.0, abs=1e-3)  # the paper's f(1) = 1


def test_lenet5_paper_rbf_centres_are_fixed_pm1_and_logits_are_negative_distances():
    m = build("lenet5_paper")
    centres = m.rbf.centres
    assert "rbf.centres" in m.state_dict() and "rbf.centres" not in dict(m.named_parameters())
    assert not centres.requires_grad
    assert centres.shape == (10, 84) and set(centres.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(r.tolist()) for r in centres}) == 10  # one distinct code per class
    torch.testing.assert_close(build("lenet5_paper").rbf.centres, centres)  # deterministic
    f6 = torch.randn(3, 84)
    logits = m.rbf(f6)
    torch.testing.assert_close(logits, -torch.cdist(f6, centres).square(), rtol=1e-4, atol=1e-4)
    # an F6 output equal to class 7's code is classified as 7, with distance 0
    out = m.rbf(centres[7:8])
    assert out.argmax().item() == 7 and out[0, 7].item() == 0.0
    # training does not move the centres: a real optimizer step over everything the model exposes for training
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    F.cross_entropy(m(torch.randn(4, 1, 32, 32)), torch.arange(4)).backward()
    opt.step()
    assert not torch.equal(m.f6.weight, before["f6.weight"])  # the step did train the layer feeding the RBF
    assert torch.equal(m.rbf.centres, before["rbf.centres"])


def test_lenet5_paper_reset_classifier_and_28x28_padding():
    m = build("lenet5_paper")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(F.pad(x, (2, 2, 2, 2))))  # 28x28 is zero-padded to 32x32
    m.reset_classifier(5)
    assert m.rbf.centres.shape == (5, 84) and m(x).shape == (2, 5)


# ---------------------------------------------------------------- AlexNet

# Section 3.5 / Fig. 2 at 227x227 (channels, height, width), pools and fc layers in order.
ALEXNET_PAPER_MAPS = [(96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13), (384, 13, 13), (384, 13, 13),
                      (256, 13, 13), (256, 6, 6)]


def test_alexnet_paper_layer_shapes_at_227():
    with torch.device("meta"):
        m = cnnzoo.create_model("alexnet_paper")
        x = torch.empty(1, 3, 227, 227)
        feats = shapes_through(m.features, x)
        head = shapes_through(m.classifier, torch.empty(1, 256 * 6 * 6))
    after_conv_or_pool = [s for t, s in feats if t in ("Conv2d", "MaxPool2d")]
    assert after_conv_or_pool == ALEXNET_PAPER_MAPS
    assert [s for t, s in head if t == "Linear"] == [(4096,), (4096,), (1000,)]
    # Section 4.2 (and Caffe's fc6-relu6-drop6-fc7-relu7-drop7-fc8): dropout 0.5 on fc6's and fc7's outputs
    kinds = [type(mod).__name__ for mod in m.classifier]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert all(d.p == 0.5 for d in m.classifier if isinstance(d, nn.Dropout))


def _fc_inputs_and_outputs(name: str, x: torch.Tensor, train: bool) -> tuple[torch.Tensor, list, list]:
    """pool5 (flattened), and the inputs and outputs of the three fc layers in one forward pass."""
    m = build(name, num_classes=10).train(train)
    ins, outs = [], []

    def record(mod, args, out) -> None:  # clone: the in-place ReLU after each fc overwrites its output
        ins.append(args[0].detach().clone())
        outs.append(out.detach().clone())

    for fc in [mod for mod in m.modules() if isinstance(mod, nn.Linear)]:
        fc.register_forward_hook(record)
    with torch.no_grad():
        pool5 = torch.flatten(m.avgpool(m.features(x)), 1)  # no dropout in the features
        m(x)
    return pool5, ins, outs


def _dropped_fraction(seen: torch.Tensor, kept: torch.Tensor) -> float:
    """Check that ``seen`` is inverted dropout (p=0.5) of ``kept``: each unit 0 or 2x; return the share zeroed."""
    live = kept > 0
    zeroed = seen[live] == 0
    torch.testing.assert_close(seen[live][~zeroed], 2 * kept[live][~zeroed])
    assert (seen[~live] == 0).all()
    return zeroed.float().mean().item()


def test_alexnet_paper_drops_out_the_outputs_of_fc6_and_fc7():
    """Section 4.2: dropout "in the first two fully-connected layers" sets the output of each hidden
    neuron to zero with probability 0.5 (Caffe: drop6 after relu6, drop7 after relu7). fc6 sees pool5
    untouched; fc7 and fc8 see the dropped-out ReLU outputs of fc6 and fc7. At eval, no dropout anywhere."""
    x = torch.randn(2, 3, 67, 67)
    pool5, ins, outs = _fc_inputs_and_outputs("alexnet_paper", x, train=True)
    torch.testing.assert_close(ins[0], pool5, rtol=0, atol=0)  # nothing before fc6
    assert 0.4 < _dropped_fraction(ins[1], outs[0].relu()) < 0.6  # fc6's output, about half dropped
    assert 0.4 < _dropped_fraction(ins[2], outs[1].relu()) < 0.6  # fc7's output, about half dropped
    pool5, ins, outs = _fc_inputs_and_outputs("alexnet_paper", x, train=False)
    torch.testing.assert_close(ins[0], pool5, rtol=0, atol=0)
    torch.testing.assert_close(ins[1], outs[0].relu(), rtol=0, atol=0)
    torch.testing.assert_close(ins[2], outs[1].relu(), rtol=0, atol=0)


def test_alexnet_keeps_torchvision_dropout_before_fc6_and_fc7():
    """torchvision's layout: Dropout-fc6-ReLU-Dropout-fc7-ReLU-fc8, so fc8 sees fc7's output undropped."""
    x = torch.randn(2, 3, 63, 63)
    pool5, ins, outs = _fc_inputs_and_outputs("alexnet", x, train=True)
    assert 0.4 < _dropped_fraction(ins[0], pool5) < 0.6
    assert 0.4 < _dropped_fraction(ins[1], outs[0].relu()) < 0.6
    torch.testing.assert_close(ins[2], outs[1].relu(), rtol=0, atol=0)


def test_alexnet_paper_lrn_follows_relu_of_conv1_and_conv2_only():
    kinds = [type(mod).__name__ for mod in meta("alexnet_paper").features]
    assert kinds == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
                     "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
                     "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"]
    lrn = next(mod for mod in meta("alexnet_paper").features if isinstance(mod, LocalResponseNorm))
    assert (lrn.k, lrn.size, lrn.alpha, lrn.beta) == (2, 5, 1e-4, 0.75)  # Section 3.3
    assert not any(isinstance(mod, LocalResponseNorm) for mod in meta("alexnet_paper", lrn=False).modules())


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [mod for mod in model.modules() if isinstance(mod, nn.Conv2d)]


@pytest.mark.parametrize("layer", [1, 3, 4])  # conv2, conv4, conv5
def test_alexnet_paper_towers_do_not_mix(layer):
    conv = _convs(build("alexnet_paper"))[layer]
    assert conv.groups == 2
    c_in, c_out = conv.in_channels, conv.out_channels
    x = torch.randn(1, c_in, 7, 7)
    y = x.clone()
    y[:, c_in // 2:] += torch.randn(1, c_in - c_in // 2, 7, 7)  # change only tower 2's inputs
    with torch.no_grad():
        a, b = conv(x), conv(y)
    torch.testing.assert_close(a[:, :c_out // 2], b[:, :c_out // 2], rtol=0, atol=0)  # tower 1 unaffected
    assert not torch.allclose(a[:, c_out // 2:], b[:, c_out // 2:])  # tower 2 sees the change


def test_alexnet_paper_conv3_and_single_tower_are_dense():
    assert [c.groups for c in _convs(meta("alexnet_paper"))] == [1, 2, 1, 2, 2]
    assert [c.groups for c in _convs(meta("alexnet_paper", two_tower=False))] == [1, 1, 1, 1, 1]


def test_alexnet_paper_overlapping_pool_option():
    def pools(**opts):
        return [(p.kernel_size, p.stride) for p in meta("alexnet_paper", **opts).modules()
                if isinstance(p, nn.MaxPool2d)]

    assert pools() == [(3, 2)] * 3  # Section 3.4: z = 3, s = 2
    assert pools(overlapping_pool=False) == [(2, 2)] * 3
    with torch.device("meta"):
        m = cnnzoo.create_model("alexnet_paper", overlapping_pool=False)
        assert m.forward_features(torch.empty(1, 3, 227, 227)).shape == (1, 256, 6, 6)  # same fc6 input


def test_alexnet_paper_init_biases():
    m = build("alexnet_paper")
    layers = _convs(m) + [mod for mod in m.classifier if isinstance(mod, nn.Linear)]
    biases = [torch.unique(layer.bias).tolist() for layer in layers]
    # Section 5: 1 in conv2, conv4, conv5, fc6, fc7; 0 in conv1, conv3, fc8
    assert biases == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]
    assert layers[4].weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_alexnet_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="two_tower"):
        cnnzoo.create_model("alexnet_paper", two_tower="yes")
    with pytest.raises(ValueError, match="drop_rate"):
        cnnzoo.create_model("alexnet", drop_rate=1.5)


# ---------------------------------------------------------------- ZFNet

def test_zfnet_map_sizes_follow_fig3():
    with torch.device("meta"):
        m = cnnzoo.create_model("zfnet")
        feats = shapes_through(m.features, torch.empty(1, 3, 224, 224))
    convs_pools = [s for t, s in feats if t in ("Conv2d", "MaxPool2d")]
    assert convs_pools == [(96, 110, 110), (96, 55, 55), (256, 26, 26), (256, 13, 13),
                           (384, 13, 13), (384, 13, 13), (256, 13, 13), (256, 6, 6)]
    assert [(c.kernel_size, c.stride) for c in _convs(m)[:2]] == [((7, 7), (2, 2)), ((5, 5), (2, 2))]
    assert sum(isinstance(mod, LocalResponseNorm) for mod in m.modules()) == 2
    assert all(c.groups == 1 for c in _convs(m))  # one GPU: dense layers 3-5


# ---------------------------------------------------------------- VGG

def _conv_kernels(name: str) -> list[int]:
    with torch.device("meta"):
        return [c.kernel_size[0] for c in _convs(cnnzoo.create_model(name))]


def test_vgg16_c_has_three_1x1_convs_closing_the_last_stages():
    assert _conv_kernels("vgg16_c") == [3] * 6 + [1] + [3, 3, 1] * 2
    assert _conv_kernels("vgg16") == [3] * 13
    with torch.device("meta"):
        n = sum(p.numel() for p in cnnzoo.create_model("vgg16_c").parameters())
    assert n == pytest.approx(134e6, rel=0.004)  # Table 2: C has 134 million parameters


def test_vgg11_lrn_has_one_lrn_after_the_first_conv():
    kinds = [type(mod).__name__ for mod in meta("vgg11_lrn").features]
    assert kinds[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert kinds.count("LocalResponseNorm") == 1
    assert not any(isinstance(mod, LocalResponseNorm) for mod in meta("vgg11").modules())
    assert _conv_kernels("vgg11_lrn") == _conv_kernels("vgg11")  # otherwise configuration A


def test_vgg_bn_puts_batchnorm_between_conv_and_relu():
    with torch.device("meta"):
        kinds = [type(mod).__name__ for mod in cnnzoo.create_model("vgg11_bn").features][:4]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]


def test_vgg_dense_head_at_other_sizes_and_bad_cfg():
    m = build("vgg11", num_classes=3)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError, match="valid: A, A-LRN, B, C, D, E"):
        cnnzoo.create_model("vgg11", cfg="F")


# ---------------------------------------------------------------- Network in Network

def test_nin_cifar_mlpconv_layout_and_global_average_pooling():
    m = build("nin_cifar")
    convs = _convs(m)
    assert [(c.kernel_size[0], c.out_channels) for c in convs] == [
        (5, 192), (1, 160), (1, 96), (5, 192), (1, 192), (1, 192), (3, 192), (1, 192), (1, 10)]
    assert not any(isinstance(mod, nn.Linear) for mod in m.modules())  # no fully-connected layer
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (2, 192, 8, 8)
        class_maps = F.relu(m.head.conv(feats))
        torch.testing.assert_close(m(x), class_maps.mean((2, 3)))  # logits = averaged class maps


def test_nin_reset_classifier_rebuilds_last_1x1_conv():
    m = build("nin_cifar")
    m.reset_classifier(100)
    assert m.head.conv.out_channels == 100 and m.head.conv.kernel_size == (1, 1)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 100)


# The authors' CIFAR-10 Caffe model (Caffe model zoo gist e56253735ef32c3c296d, cifar10_nin.prototxt, as ported
# by jiecaoyu/pytorch-nin-cifar10): every conv weight_filler is "gaussian" with std 0.05, every bias_filler
# "constant" (0). Typed here from that file, one entry per conv in order (conv1, cccp1, cccp2, conv2, cccp3,
# cccp4, conv3, cccp5, cccp6).
NIN_CIFAR_CAFFE_STD = {"conv1": 0.05, "cccp1": 0.05, "cccp2": 0.05, "conv2": 0.05, "cccp3": 0.05, "cccp4": 0.05,
                       "conv3": 0.05, "cccp5": 0.05, "cccp6": 0.05}


@pytest.mark.parametrize("layer", range(9), ids=list(NIN_CIFAR_CAFFE_STD))
def test_nin_cifar_default_init_is_the_authors_caffe_gaussian(layer):
    conv = _convs(build("nin_cifar"))[layer]
    w, std = conv.weight.detach(), list(NIN_CIFAR_CAFFE_STD.values())[layer]
    # >= 9,600 draws per layer: the sample std is within 3% of the true one, the mean within 3 std / sqrt(n)
    assert w.std().item() == pytest.approx(std, rel=0.03)
    assert abs(w.mean().item()) < 3 * std / w.numel() ** 0.5
    assert torch.equal(conv.bias.detach(), torch.zeros_like(conv.bias))


def test_nin_cifar_reset_classifier_keeps_the_init_and_other_inits_stay_available():
    m = build("nin_cifar")
    m.reset_classifier(100)
    assert m.head.conv.weight.std().item() == pytest.approx(0.05, rel=0.05)  # cccp6's std, not torch's default
    assert not m.head.conv.bias.detach().any()
    glorot = _convs(build("nin_cifar", init="glorot"))[1]  # cccp1, 192 -> 160: U(-a, a), a = sqrt(6 / 352)
    assert glorot.weight.abs().max().item() <= (6 / (192 + 160)) ** 0.5
    assert glorot.weight.std().item() == pytest.approx((2 / (192 + 160)) ** 0.5, rel=0.03)
    with pytest.raises(ValueError, match="valid: caffe, glorot, he"):
        cnnzoo.create_model("nin_cifar", init="xavier")


def test_nin_cifar_trains_from_glorot_with_adam_and_keeps_the_authors_init_and_solver_as_options():
    """The card's hints (nin.py docstring, issue 24 point 10): in the zoo's short budgets the authors' N(0, 0.05)
    init and SGD solver keep the loss at ln 10, so `cnnzoo train` starts from Glorot-uniform (zero biases) with
    Adam lr 1e-3 and no weight decay; create_model keeps the authors' init, --set brings back their setup."""
    from cnnzoo.train import apply_overrides, default_config

    cfg = default_config("nin_cifar", "mnist5k")
    assert cfg.model.options == {"init": "glorot"}
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 0.001, 0.0)
    conv = _convs(build("nin_cifar", **cfg.model.options))[1]  # cccp1, 192 -> 160: std sqrt(2 / 352)
    assert conv.weight.std().item() == pytest.approx((2 / (192 + 160)) ** 0.5, rel=0.03)
    assert _convs(build("nin_cifar"))[1].weight.std().item() == pytest.approx(0.05, rel=0.03)
    authors = apply_overrides(default_config("nin_cifar", "mnist5k"), [
        "model.options.init=caffe", "model.options.caffe_lr_mult=true", "optim.name=sgd", "optim.lr=0.1"])
    assert authors.model.options == {"init": "caffe", "caffe_lr_mult": True}
    card = cnnzoo.get_card("nin_cifar")
    assert any(d.startswith("recipe hints Glorot-uniform init") for d in card.deviations)
    assert any(d.startswith("short budget:") for d in card.deviations)


def test_nin_imagenet_maps():
    with torch.device("meta"):
        m = cnnzoo.create_model("nin")
        feats = shapes_through(m.features, torch.empty(1, 3, 224, 224))
    assert [s for t, s in feats if t in ("MlpConv", "MaxPool2d")] == [
        (96, 54, 54), (96, 27, 27), (256, 27, 27), (256, 13, 13), (384, 13, 13), (384, 6, 6), (1024, 6, 6)]
    assert m.head.conv.out_channels == 1000
