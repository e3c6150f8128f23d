"""Backbone features (issue 25, first section): forward_intermediates and features_only on every registered network,
and the dilated (output stride 16 / 8) ResNets."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.models.base import ZooModel
from cnnzoo.models.features import FeatureListNet, FeaturesUnsupportedError, feature_take_indices

NAMES = cnnzoo.list_models()
NO_MAPS = {"rnn_mnist", "lstm_mnist", "gru_mnist", "highway_fc_mnist"}  # sequences / vectors, no spatial maps
MAP_NAMES = [n for n in NAMES if n not in NO_MAPS]
# Hundreds of blocks: a few seconds per forward even on the meta device; the same classes at lesser depth run by
# default (resnet20_cifar, preact_resnet50, resnest50d, seresnet50, densenet121, efficientnet_b3...): marked slow.
DEEPEST = {
    "resnet1202_cifar", "preact_resnet1001_cifar", "resnest200e", "resnest269e", "senet154",
    # and the deeper or wider members of a family whose class runs by default at a lesser size (seconds each)
    "densenet161", "densenet169", "densenet201", "densenet264", "densenet_bc190_k40_cifar", "densenet_bc250_k24_cifar",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "hardnet68_ds", "hardnet85",
    "inception_resnet_v2", "inception_v4", "preact_resnet101", "preact_resnet152", "preact_resnet164_cifar",
    "resnest101e", "resnet101", "resnet152", "resnet110_cifar", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet101_2", "vit_l_16",
}
# Real values, by family (one cheap network each, the families whose feature_info is not a plain stage list too:
# DenseNet's last map is the ReLU after norm5, GoogLeNet/Inception carry aux heads, ViT's maps are tokens).
REAL = ["lenet5", "resnet18", "resnet20_cifar", "preact_resnet18",
        "wide_resnet16_8_cifar", "densenet40_k12_cifar", "googlenet", "bn_inception", "xception",
        "mobilenet_v1_025", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "ghostnet_100", "hardnet39_ds",
        "shufflenet_v1_g3", "shufflenet_v2_x0_5", "squeezenet1_1", "nin_cifar", "effnet",
        "highway_conv_cifar", "resnest50d", "vit_tiny_patch4_32"]


def _meta(name: str, **options):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **options)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEPEST else n for n in MAP_NAMES])
def test_maps_match_feature_info_and_forward_features(name):
    """Every stage map has feature_info's channels and reduction, the last one has forward_features' shape (its
    values: the REAL tests), features_only returns maps of the same stages (meta device: shapes only)."""
    model = _meta(name).eval()
    c = model.in_channels
    s = max(model.min_input_size, 32)  # LeNet-5 pads anything smaller to 32 (Fig. 2)
    red = max(i["reduction"] for i in model.feature_info)
    final, maps1 = model.forward_intermediates(torch.empty(2, c, s, s, device="meta"))  # final = forward_features
    assert len(maps1) == len(model.feature_info)
    for info, m in zip(model.feature_info, maps1):
        assert m.ndim == 4 and m.shape[:2] == (2, info["num_chs"]), (info, tuple(m.shape))
    last = maps1[-1]
    if final.ndim == 3:  # ViT tokens (B, prefix + h*w, D)
        assert final.shape[1] - model.num_prefix_tokens == last.shape[2] * last.shape[3]
        assert final.shape[2] == last.shape[1]
    else:
        assert final.shape == last.shape
    # features_only (in training mode: nothing it pruned, aux heads or classifier, may run) at a second size
    net = FeatureListNet(model).train()
    assert list(net.feature_info) == [{**info, "index": i} for i, info in enumerate(model.feature_info)]
    maps2 = net(torch.empty(2, c, s + 2 * red, s + red, device="meta"))
    assert [m.shape[1] for m in maps2] == net.feature_info.channels() == [m.shape[1] for m in maps1]
    # The reduction r, whatever the padding: each stride-r map grows by exactly d / r when the input grows by a
    # multiple d of every stride (conv/pool output size floor((n + 2p - k) / s) + 1, Dumoulin & Visin 2016).
    for r, a, b in zip(net.feature_info.reduction(), maps1, maps2):
        assert (b.shape[2] - a.shape[2], b.shape[3] - a.shape[3]) == (2 * red // r, red // r), r


@pytest.mark.parametrize("name", REAL)
def test_real_values_last_map_is_forward_features_and_features_only_agrees(name):
    torch.manual_seed(0)
    model = cnnzoo.create_model(name).eval()
    torch.manual_seed(0)
    net = cnnzoo.create_model(name, features_only=True).eval()  # the same weights: built from the same seed
    s = max(model.min_input_size, 2 * model.feature_info[-1]["reduction"])
    x = torch.randn(2, model.in_channels, s, s)
    with torch.no_grad():
        ff = model.forward_features(x)
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, ff)
        if ff.ndim == 3:  # ViT: with norm=True the last map is forward_features' patch tokens on their grid
            last = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]
            h, w = last.shape[-2:]
            for i, j in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):  # token 1 + i*w + j: row-major patches
                assert torch.equal(last[:, :, i, j], ff[:, model.num_prefix_tokens + i * w + j])
        else:
            assert torch.equal(maps[-1], ff)
        got = net(x)
    assert len(got) == len(maps) and all(torch.equal(a, b) for a, b in zip(got, maps))
    assert net.feature_info.channels() == [m.shape[1] for m in maps]


@pytest.mark.slow
@pytest.mark.parametrize("name", MAP_NAMES)
def test_real_values_every_network(name):
    """The REAL check on every network (the heavy ones take seconds)."""
    model = cnnzoo.create_model(name).eval()
    s = max(model.min_input_size, 2 * model.feature_info[-1]["reduction"])
    x = torch.randn(1, model.in_channels, s, s)
    with torch.no_grad():
        ff = model.forward_features(x)
        final, maps = model.forward_intermediates(x, norm=ff.ndim == 3)
    assert torch.equal(final, ff)
    if ff.ndim == 4:
        assert torch.equal(maps[-1], ff)
    else:
        assert torch.equal(maps[-1].flatten(2).transpose(1, 2), ff[:, model.num_prefix_tokens:])


# --- indices, out_indices, the wrapper ----------------------------------------------------------------------------


def test_indices_follow_timm():
    assert feature_take_indices(4) == ([0, 1, 2, 3], 3)
    assert feature_take_indices(4, 2) == ([2, 3], 3)  # an int: the last n stages
    assert feature_take_indices(4, (1, -1)) == ([1, 3], 3)
    assert feature_take_indices(4, [2, 0, -2]) == ([0, 2], 2)  # sorted, repeats merged


@pytest.mark.parametrize("bad, match", [
    (5, r"last 5 stages, but the network has 4"), (0, r"give 1\.\.4"), ((4,), r"\(4 not a stage index\)"),
    ((-5,), r"\(-5 not a stage index\)"), ((), r"empty"), ("layer4", r"sequence of stage indices"),
    (True, r"got True"), ((1.0,), r"\(1\.0 not a stage index\)"),
])
def test_bad_indices_are_clear_errors(bad, match):
    model = _meta("resnet18")
    x = torch.empty(1, 3, 32, 32, device="meta")
    with pytest.raises(ValueError, match=match) as err:
        model.forward_intermediates(x, indices=bad)
    assert "stage indices are 0..3 (or -4..-1 from the end)" in str(err.value)
    with pytest.raises(ValueError, match=match), torch.device("meta"):
        cnnzoo.create_model("resnet18", features_only=True, out_indices=bad)


def test_out_indices_select_maps_and_feature_info():
    with torch.device("meta"):
        net = cnnzoo.create_model("resnet50", features_only=True, out_indices=(1, -1))
        last2 = cnnzoo.create_model("resnet50", features_only=True, out_indices=2)
    assert net.out_indices == (1, 3) and last2.out_indices == (2, 3)
    info = net.feature_info
    # He et al. Table 1: conv3_x 512 channels at 28 (224/8), conv5_x 2048 at 7 (224/32)
    assert info.channels() == [512, 2048] and info.reduction() == [8, 32] and info.module_name() == ["layer2", "layer4"]
    assert len(info) == 2 and info[1]["num_chs"] == 2048 and info[0]["index"] == 1 and info.channels(-1) == 2048
    assert [d["reduction"] for d in info] == [8, 32]
    out = net(torch.empty(2, 3, 224, 224, device="meta"))
    assert [tuple(o.shape) for o in out] == [(2, 512, 28, 28), (2, 2048, 7, 7)]
    assert net.pretrained_cfg["features_only"] and net.pretrained_cfg["out_indices"] == [1, 3]
    with pytest.raises(ValueError, match="pass features_only=True"):
        cnnzoo.create_model("resnet18", out_indices=(1,))


def test_stop_early_and_output_fmt():
    model = cnnzoo.create_model("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    ran = []
    model.layer4.register_forward_pre_hook(lambda m, a: ran.append("layer4"))
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=(0, 1), stop_early=True)
        assert ran == [] and torch.equal(final, maps[-1]) and final.shape == (1, 128, 8, 8)
        only = model.forward_intermediates(x, indices=(1,), intermediates_only=True)
        assert ran == [] and torch.equal(only[0], maps[1])
        nhwc = model.forward_intermediates(x, indices=(1,), output_fmt="NHWC", intermediates_only=True)
    assert torch.equal(nhwc[0], maps[1].permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="output_fmt must be one of NCHW, NHWC, got 'NLC'"):
        model.forward_intermediates(x, output_fmt="NLC")
    with pytest.raises(ValueError, match="expects a 4-D input"):
        model.forward_intermediates(x[0])


@pytest.mark.parametrize("name", sorted(NO_MAPS))
def test_networks_without_maps_refuse_with_the_reason(name):
    reason = "recurrent network reads the image as a sequence" if "mnist" in name and "highway" not in name else \
        "fully connected network"
    with pytest.raises(FeaturesUnsupportedError, match=f"no spatial feature maps.*{reason}"):
        cnnzoo.create_model(name, features_only=True)
    model = cnnzoo.create_model(name)
    with pytest.raises(FeaturesUnsupportedError, match=reason):
        model.forward_intermediates(torch.randn(1, 1, 28, 28))


def test_features_only_keeps_the_networks_keys_without_the_head():
    model = cnnzoo.create_model("resnet18")
    net = cnnzoo.create_model("resnet18", features_only=True)
    keys = set(model.state_dict())
    assert set(net.state_dict()) == keys - {"fc.weight", "fc.bias"}  # torchvision's backbone keys (layer4.1.bn2...)
    # a classification checkpoint loads with the head left out, and the maps are the network's
    net.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    model.eval(), net.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x)[-1], model.forward_features(x))
    # stages after the last one asked for are not part of it (timm's FeatureListNet)
    short = cnnzoo.create_model("resnet18", features_only=True, out_indices=(0, 1))
    assert not any(k.startswith(("layer3.", "layer4.", "fc.")) for k in short.state_dict())
    # one set of tensors: .to(), .train(), deepcopy act on the network the wrapper runs
    net.to(torch.float64).train()
    assert net.model.conv1.weight.dtype == torch.float64 and net.model.training and net.model.layer1.training
    twin = copy.deepcopy(net)
    assert twin.layer1 is twin.model.layer1 and twin.layer1 is not net.layer1


def test_aux_heads_are_dropped_and_stay_off_in_training():
    net = cnnzoo.create_model("googlenet", features_only=True, out_indices=(-1,)).train()
    assert not any(k.startswith(("aux1.", "aux2.", "fc.")) for k in net.state_dict())
    assert net.model.aux1 is None and net.model.aux2 is None
    out = net(torch.randn(2, 3, 64, 64))
    assert len(out) == 1 and out[0].shape == (2, 1024, 2, 2)  # Szegedy et al. Table 1: inception (5b), 1024 channels


def test_vit_maps_drop_the_class_token():
    model = cnnzoo.create_model("vit_tiny_patch4_32").eval()
    x = torch.randn(1, 3, 32, 24)  # an 8 x 6 patch grid
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=(0, 5))
        tokens = []
        model.encoder.layers.encoder_layer_0.register_forward_hook(lambda m, a, o: tokens.append(o))
        model.forward_features(x)
    assert [tuple(m.shape) for m in maps] == [(1, 192, 8, 6)] * 2 and final.shape == (1, 1 + 48, 192)
    # patch token k (after the class token) is the patch in row k // 6, column k % 6
    assert torch.equal(maps[0][0, :, 2, 5], tokens[0][0, 1 + 2 * 6 + 5])
    assert torch.equal(maps[0][0, :, 7, 0], tokens[0][0, 1 + 7 * 6])


class _Toy(ZooModel):
    """feature_info mistakes the hook implementation must catch rather than return wrong maps."""

    def __init__(self, mistake: str):
        super().__init__()
        self.num_classes, self.num_features, self.mistake = 2, 3, mistake
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.feature_info = [{"num_chs": 3, "reduction": 1, "module": "conv"}]

    def forward_features(self, x):
        x = self.conv(x)
        if self.mistake == "inplace":
            return F.relu_(x)  # the hooked conv output is changed afterwards
        return self.conv(x)  # the hooked module runs twice


@pytest.mark.parametrize("mistake, match", [("inplace", "changed in place by a later layer"),
                                            ("twice", "runs more than once")])
def test_feature_info_mistakes_are_reported(mistake, match):
    with pytest.raises(RuntimeError, match=f"_Toy.feature_info\\[0\\]: .*{match}"):
        _Toy(mistake).forward_intermediates(torch.randn(1, 3, 8, 8))


# --- dilated ResNets --------------------------------------------------------------------------------------------


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def reference_resnet(sd: dict, layers, bottleneck: bool, dilate: tuple[bool, bool, bool], x):
    """torchvision's ResNet forward (eval) written out with F.conv2d, from torchvision/models/resnet.py v0.15:
    ``_make_layer(dilate=True)`` sets ``self.dilation *= stride; stride = 1`` and builds the stage's first block
    with ``previous_dilation``, the others with the new one; a Bottleneck dilates its 3x3 (conv2) by the value it
    is given. For BasicBlock (which torchvision refuses to dilate) timm's rule: conv1 gets the first dilation, conv2
    the stage's."""
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    dilation = 1
    for i, n in enumerate(layers):
        stride, previous = (1 if i == 0 else 2), dilation
        if i > 0 and dilate[i - 1]:
            dilation, stride = dilation * stride, 1
        for j in range(n):
            p, s, d0 = f"layer{i + 1}.{j}", (stride if j == 0 else 1), (previous if j == 0 else dilation)
            if bottleneck:
                out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                out = F.relu(_bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=s, padding=d0, dilation=d0), sd,
                                 f"{p}.bn2"))
                out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            else:
                out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s, padding=d0, dilation=d0), sd,
                                 f"{p}.bn1"))
                out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=dilation, dilation=dilation), sd, f"{p}.bn2")
            short = x
            if f"{p}.downsample.0.weight" in sd:
                short = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd, f"{p}.downsample.1")
            x = F.relu(out + short)
    return x


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


# 35 pixels (odd: the padding of every dilated conv matters) -> 18 (conv1) -> 9 (max-pool) -> 5 (layer2) -> 3 (layer3)
@pytest.mark.parametrize("name, layers, bottleneck, output_stride, dilate, side", [
    ("resnet50", (3, 4, 6, 3), True, 8, (False, True, True), 5),  # DeepLab v3 / PSPNet / torchvision's FCN backbone
    ("resnet50", (3, 4, 6, 3), True, 16, (False, False, True), 3),
    ("resnet18", (2, 2, 2, 2), False, 8, (False, True, True), 5),
])
def test_dilated_resnet_equals_torchvision_semantics(name, layers, bottleneck, output_stride, dilate, side):
    model = _randomise_bn(cnnzoo.create_model(name, output_stride=output_stride))
    x = torch.randn(1, 3, 35, 35)
    with torch.no_grad():
        got = model.forward_features(x)
        want = reference_resnet(model.state_dict(), layers, bottleneck, dilate, x)
    assert got.shape == want.shape == (1, model.num_features, side, side)
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("output_stride, reductions", [(32, [4, 8, 16, 32]), (16, [4, 8, 16, 16]), (8, [4, 8, 8, 8])])
def test_output_stride_sets_the_last_maps_resolution(output_stride, reductions):
    with torch.device("meta"):
        model = cnnzoo.create_model("resnext50_32x4d", output_stride=output_stride)
        net = cnnzoo.create_model("resnext50_32x4d", output_stride=output_stride, features_only=True)
        maps = model.forward_intermediates(torch.empty(1, 3, 224, 224), intermediates_only=True)
    assert [i["reduction"] for i in model.feature_info] == reductions == net.feature_info.reduction()
    assert [m.shape[-1] for m in maps] == [224 // r for r in reductions]  # 1/8 of the input at output stride 8


def test_dilation_changes_no_parameter_and_weights_load(tmp_path):
    plain = cnnzoo.create_model("resnet18")
    dilated = cnnzoo.create_model("resnet18", output_stride=8)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in dilated.state_dict().items()}
    dilated.load_state_dict(plain.state_dict())  # strict
    path = tmp_path / "resnet18.pth"
    torch.save(plain.state_dict(), path)  # torchvision's layout
    net = cnnzoo.create_model("resnet18", weights=str(path), output_stride=8, features_only=True, out_indices=(-1,))
    assert net.feature_info.reduction() == [8] and torch.equal(net.layer4[1].conv2.weight, plain.layer4[1].conv2.weight)
    # layer3 dilates by 2, layer4 by 4; layer4's first conv keeps layer3's 2 (the first-block rule)
    assert [net.layer4[0].conv1.dilation, net.layer4[0].conv2.dilation, net.layer4[1].conv1.dilation] == [
        (2, 2), (4, 4), (4, 4)]


def test_bad_output_stride_is_a_clear_error():
    with pytest.raises(ValueError, match=re.escape("output_stride must be one of 8, 16, 32, got 4")):
        cnnzoo.create_model("resnet18", output_stride=4)
