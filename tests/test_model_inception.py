"""What is specific to the Inception line: aux heads, the paper variants' layers, SE, residual scaling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers import LocalResponseNorm, SEModule
from cnnzoo.models.inception_v4 import InceptionResNetBlock


def meta(name: str, **opts) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def kernels(model: nn.Module) -> set[tuple[int, int]]:
    return {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)}


# ---- auxiliary classifiers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,size,n_aux", [("googlenet", 32, 2), ("googlenet_paper", 32, 2), ("inception_v3", 75, 1)])
def test_aux_outputs_only_in_training(name, size, n_aux):
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=5)
    x = torch.randn(2, 3, size, size)
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 1 + n_aux
    assert all(o.shape == (2, 5) for o in out)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 5)


@pytest.mark.parametrize("name,size", [("googlenet", 32), ("inception_v3", 75)])
def test_aux_logits_false_returns_plain_logits_in_training(name, size):
    model = cnnzoo.create_model(name, aux_logits=False, num_classes=3).train()
    out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_reset_classifier_resets_aux_heads_too():
    model = cnnzoo.create_model("googlenet").train()
    model.reset_classifier(4)
    assert all(o.shape == (2, 4) for o in model(torch.randn(2, 3, 32, 32)))


def test_inception_v3_aux_head_at_paper_size_uses_5x5_over_3_pool():
    """At 299 the aux head sees the 17x17 grid (Fig. 8): 5x5/3 pooling leaves 5x5, which its 5x5 conv takes to 1x1."""
    aux = meta("inception_v3").AuxLogits
    seen = {}
    aux.conv0.register_forward_hook(lambda m, i, o: seen.update(pooled=tuple(o.shape)))
    aux.conv1.register_forward_hook(lambda m, i, o: seen.update(conv=tuple(o.shape)))
    assert aux(torch.empty(2, 768, 17, 17, device="meta")).shape == (2, 1000)
    assert seen == {"pooled": (2, 128, 5, 5), "conv": (2, 768, 1, 1)}


@pytest.mark.parametrize("name,weight", [("googlenet", 0.3), ("googlenet_paper", 0.3), ("inception_v3", 0.4)])
def test_aux_weight_on_the_card(name, weight):
    assert cnnzoo.get_card(name).aux_weight == weight


@pytest.mark.parametrize("name", ["bn_inception", "se_bn_inception", "inception_v4", "inception_resnet_v2"])
def test_no_aux_weight_without_aux_heads(name):
    assert cnnzoo.get_card(name).aux_weight is None


# ---- GoogLeNet ---------------------------------------------------------------------------------------------------


def test_googlenet_paper_has_lrn_conv_biases_and_no_batchnorm():
    model = meta("googlenet_paper")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(isinstance(m, LocalResponseNorm) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(c.bias is not None for c in convs)
    assert (5, 5) in kernels(model)  # Table 1's 5x5 branch
    assert model.dropout.p == 0.4


def test_googlenet_torchvision_layout_has_batchnorm_no_bias_no_lrn():
    model = meta("googlenet")
    assert not any(isinstance(m, LocalResponseNorm) for m in model.modules())
    assert all(c.bias is None for c in model.modules() if isinstance(c, nn.Conv2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == sum(
        isinstance(m, nn.Conv2d) for m in model.modules()
    )
    assert (5, 5) not in kernels(model)  # torchvision's 3x3 in the "5x5" branch


def test_googlenet_transform_input_renormalises():
    torch.manual_seed(0)
    plain = cnnzoo.create_model("googlenet", aux_logits=False).eval()
    moved = cnnzoo.create_model("googlenet", aux_logits=False, transform_input=True).eval()
    moved.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(moved(x), plain((x * std + mean - 0.5) / 0.5))
        y = plain(x)
        assert (moved(x) - y).abs().max() > 1e-3 * y.abs().max()  # the option does change the input


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"layout": "caffe"}, "layout"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"transform_input": True, "in_channels": 1}, "transform_input"),
    ],
)
def test_googlenet_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("googlenet", **opts)


# ---- BN-Inception / SE-BN-Inception ------------------------------------------------------------------------------

# Figure 5's output widths of the ten Inception modules (3a ... 5b).
FIG5_OUTPUTS = (256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024)


def test_bn_inception_has_no_5x5_convs_and_batchnorm_everywhere():
    model = meta("bn_inception")
    assert (5, 5) not in kernels(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == sum(
        isinstance(m, nn.Conv2d) for m in model.modules()
    )
    outs = [
        getattr(model, f"inception_{n}").out_chs for n in ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    ]
    assert tuple(outs) == FIG5_OUTPUTS


def test_bn_inception_grid_reductions_in_3c_and_4e():
    model = meta("bn_inception")
    x = model.stem(torch.empty(1, 3, 224, 224, device="meta"))
    assert x.shape[-1] == 28
    x = model.inception_3c(model.inception_3b(model.inception_3a(x)))
    assert x.shape[-2:] == (14, 14)


@pytest.mark.parametrize("size", [223, 225, 97])
def test_bn_inception_odd_sizes_run(size):
    model = meta("bn_inception")
    assert model(torch.empty(1, 3, size, size, device="meta")).shape == (1, 1000)


def test_se_bn_inception_adds_exactly_the_se_parameters():
    plain, se = meta("bn_inception"), meta("se_bn_inception")
    blocks = [m for m in se.modules() if isinstance(m, SEModule)]
    assert len(blocks) == 10  # one per Inception module (SENet Fig. 2)
    assert [b.fc1.in_channels for b in blocks] == list(FIG5_OUTPUTS)
    expected = sum(2 * c * (c // 16) + c // 16 + c for c in FIG5_OUTPUTS)  # r = 16: two 1x1 convs with biases
    assert n_params(se) - n_params(plain) == expected
    assert cnnzoo.get_card("se_bn_inception").paper.title == "Squeeze-and-Excitation Networks"


def test_bn_inception_attn_layer_validated():
    with pytest.raises(ValueError, match="attn_layer"):
        cnnzoo.create_model("bn_inception", attn_layer="sse")


# ---- Inception v3 ------------------------------------------------------------------------------------------------


def test_inception_v3_has_asymmetric_convs():
    ks = kernels(meta("inception_v3"))
    assert {(1, 7), (7, 1), (1, 3), (3, 1)} <= ks


# ---- Inception-v4 / Inception-ResNet -----------------------------------------------------------------------------


def _block(scale: float, activate: bool = True) -> InceptionResNetBlock:
    torch.manual_seed(0)
    return InceptionResNetBlock(16, [[(8, 1)], [(8, 1), (8, 3)]], scale=scale, activate=activate).eval()


def test_residual_scale_zero_leaves_the_activated_shortcut():
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        assert torch.equal(_block(0.0)(x), torch.relu(x))
        assert not torch.equal(_block(0.2)(x), torch.relu(x))


def test_residual_scale_scales_the_branch_linearly():
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        r1 = _block(0.1, activate=False)(x) - x
        r3 = _block(0.3, activate=False)(x) - x
    torch.testing.assert_close(r3, 3 * r1)


def _scales(model) -> list[float]:
    return [m.scale for m in model.modules() if isinstance(m, InceptionResNetBlock)]


def test_residual_scale_defaults_and_option():
    v2 = meta("inception_resnet_v2")
    assert _scales(v2) == [0.17] * 10 + [0.10] * 20 + [0.20] * 9 + [1.0]  # TF-slim's repeats and scales
    v1 = meta("inception_resnet_v1")
    assert _scales(v1) == [0.17] * 5 + [0.10] * 10 + [0.20] * 5 + [1.0]
    assert set(_scales(meta("inception_resnet_v2", residual_scale=0.0))) == {0.0}
    assert _scales(meta("inception_resnet_v1", residual_scale=(0.3, 0.2, 0.1)))[-2:] == [0.1, 0.1]


def test_inception_resnet_model_with_zero_scale_is_the_shortcut_path():
    torch.manual_seed(0)
    model = cnnzoo.create_model("inception_resnet_v2", residual_scale=0.0).eval()
    x = torch.randn(1, 320, 9, 9)
    with torch.no_grad():
        assert torch.equal(model.repeat(x), torch.relu(x))


@pytest.mark.parametrize("bad", ["0.1", (0.1, 0.2), True])
def test_residual_scale_validated(bad):
    with pytest.raises(ValueError, match="residual_scale"):
        cnnzoo.create_model("inception_resnet_v2", residual_scale=bad)


def test_inception_resnet_v1_plain_head_without_bottleneck():
    with_b, without = meta("inception_resnet_v1"), meta("inception_resnet_v1", bottleneck=0)
    assert with_b.head_hidden_size == 512 and without.head_hidden_size == 1792
    # fc 1792->512 (no bias) + BN(512) + fc 512->1000  vs  fc 1792->1000
    assert n_params(with_b) - n_params(without) == (1792 * 512 + 2 * 512 + 512 * 1000 + 1000) - (1792 * 1000 + 1000)


def test_inception_v4_block_counts():
    from cnnzoo.models.inception_v4 import Inception, InceptionC

    model = meta("inception_v4")
    n_a = sum(isinstance(m, Inception) and m.branch0.conv.in_channels == 384 for m in model.features)
    n_b = sum(isinstance(m, Inception) and m.branch0.conv.in_channels == 1024 for m in model.features)
    n_c = sum(isinstance(m, InceptionC) for m in model.features)
    assert (n_a, n_b, n_c) == (4, 7, 3)  # Fig. 9


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v1", "inception_resnet_v2"])
def test_paper_size_feature_map_is_8x8(name):
    model = meta(name)
    assert model.forward_features(torch.empty(1, 3, 299, 299, device="meta")).shape[-2:] == (8, 8)


def test_inception_v3_notes_record_label_smoothing_and_aux_weight_source():
    notes = cnnzoo.get_card("inception_v3").notes
    assert "label smoothing" in notes.lower()
    assert "train_image_classifier.py" in notes  # where the 0.4 comes from
