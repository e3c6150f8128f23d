"""Pre-activation ResNets (He et al. 2016) and the CIFAR Wide ResNets (Zagoruyko & Komodakis 2016)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers import ATTN_LAYERS
from cnnzoo.models.preact_resnet import PreActBasicBlock, PreActBottleneck, PreActResNet
from cnnzoo.models.wide_resnet import WideResNet


def n_params(name: str, **opts) -> int:
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **opts)
    return sum(p.numel() for p in model.parameters())


# (name, millions as printed, digits): Identity Mappings Table 3 (CIFAR), timm's resnetv2_50 (25.55M), WRN Table 4/5.
PRINTED = [
    ("preact_resnet110_cifar", 1.7, 1),
    ("preact_resnet164_cifar", 1.7, 1),
    ("preact_resnet50", 25.55, 2),
    ("wide_resnet28_10_cifar", 36.5, 1),
    ("wide_resnet16_8_cifar", 11.0, 1),
    ("wide_resnet40_4_cifar", 8.9, 1),
]
# Exact counts of the same networks in osmr/imgclsmob (reference_numbers.json notes, CIFAR-10 heads).
EXACT = [
    ("preact_resnet164_cifar", 1_703_258),
    ("preact_resnet1001_cifar", 10_327_706),
    ("wide_resnet28_10_cifar", 36_479_194),
]


@pytest.mark.parametrize("name,millions,digits", PRINTED)
def test_parameter_counts_as_printed(name, millions, digits):
    assert round(n_params(name) / 1e6, digits) == millions


@pytest.mark.parametrize("name,expected", EXACT)
def test_exact_parameter_counts(name, expected):
    assert n_params(name) == expected


def test_resnet1001_count_as_the_paper_prints_it():
    """Table 3 prints 10.2M; the whole network has 10.33M (as osmr's), its conv weights alone 10.18M.

    The paper's figure is consistent with counting conv weights only (BN and fc left out); for ResNet-164
    both conventions print 1.7M.
    """
    with torch.device("meta"):
        model = cnnzoo.create_model("preact_resnet1001_cifar")
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert round(conv / 1e6, 1) == 10.2
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 10.33


def _leaf_order(module: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    order = []
    hooks = [
        m.register_forward_pre_hook(lambda m, i: order.append(m)) for m in module.modules() if not list(m.children())
    ]
    module(x)
    for h in hooks:
        h.remove()
    return order


@pytest.mark.parametrize("block_cls", [PreActBasicBlock, PreActBottleneck])
def test_unit_starts_with_bn_and_its_sum_is_not_activated(block_cls):
    """Fig. 4(e): BN -> ReLU -> conv ...; with the branch at zero the unit is exactly the identity (no ReLU)."""
    channels = 16 * block_cls.expansion
    block = block_cls(channels, 16).eval()
    x = torch.randn(2, channels, 8, 8)
    order = _leaf_order(block, x)
    assert isinstance(order[0], nn.BatchNorm2d) and isinstance(order[1], nn.ReLU)
    assert isinstance(order[2], nn.Conv2d)
    last_conv = block.conv3 if block_cls is PreActBottleneck else block.conv2
    nn.init.zeros_(last_conv.weight)
    with torch.no_grad():
        assert torch.equal(block(x), x)  # a post-activation unit would give ReLU(x)


def test_projection_reads_the_pre_activated_input():
    """Section 4.1: units with a projection shortcut split after their BN-ReLU."""
    block = PreActBottleneck(16, 16).eval()  # 16 -> 64 channels: projection
    x = torch.randn(2, 16, 8, 8)
    nn.init.zeros_(block.conv3.weight)
    with torch.no_grad():
        assert torch.allclose(block(x), block.downsample(block.act1(block.norm1(x))))


def test_zero_init_last_makes_every_unit_start_as_its_shortcut():
    model = cnnzoo.create_model("preact_resnet164_cifar", layers=(2, 2, 2))
    assert all(not u.conv3.weight.any() for u in model.modules() if isinstance(u, PreActBottleneck))
    model = cnnzoo.create_model("preact_resnet164_cifar", layers=(2, 2, 2), zero_init_last=False)
    assert all(u.conv3.weight.all() for u in model.modules() if isinstance(u, PreActBottleneck))


def test_network_ends_with_bn_relu():
    model = cnnzoo.create_model("preact_resnet110_cifar").eval()
    assert isinstance(model.norm, nn.BatchNorm2d) and isinstance(model.norm.act, nn.ReLU)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, 16, 16))
    assert feats.shape == (2, 64, 4, 4) and (feats >= 0).all()


@pytest.mark.parametrize("depth,n", [(164, 18), (1001, 111)])
def test_cifar_bottleneck_widths(depth, n):
    """Table 3's bottleneck nets: 16/32/64 bottleneck widths, 64/128/256 outputs, n = (depth - 2) / 9 units."""
    with torch.device("meta"):
        model = cnnzoo.create_model(f"preact_resnet{depth}_cifar")
    for i, (width, stage) in enumerate(zip((16, 32, 64), model.stages)):
        units = list(stage.blocks)
        assert len(units) == n
        assert all(u.conv1.out_channels == width and u.conv3.out_channels == 4 * width for u in units)
        assert units[0].conv2.stride == ((1, 1) if i == 0 else (2, 2))  # stride in the 3x3 (osmr, timm)


def test_imagenet_stride_in_3x3_v15():
    """timm resnetv2_50 (the 4.11 GMACs reference) strides in the 3x3 conv, not the first 1x1."""
    with torch.device("meta"):
        model = cnnzoo.create_model("preact_resnet50")
    for stage in list(model.stages)[1:]:
        first = stage.blocks[0]
        assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2) and first.downsample.conv.stride == (2, 2)


def test_drop_path_rates_grow_linearly():
    with torch.device("meta"):
        model = cnnzoo.create_model("preact_resnet164_cifar", drop_path_rate=0.3)
    rates = [m.drop_path.p for m in model.modules() if isinstance(m, PreActBottleneck)]
    assert len(rates) == 54
    assert rates == pytest.approx([0.3 * i / 53 for i in range(54)])


def _small_wrn(**opts) -> WideResNet:
    return cnnzoo.create_model("wide_resnet28_10_cifar", depth=10, widen_factor=1, **opts)


def test_wrn_dropout_sits_between_the_convs():
    block = _small_wrn().stages[1].blocks[0]
    order = _leaf_order(block, torch.randn(2, 16, 8, 8))
    i = order.index(block.drop)
    assert order[i - 1] is block.act2 and order[i - 2] is block.norm2 and order[i + 1] is block.conv2
    assert order.index(block.conv1) < i


def test_wrn_dropout_only_in_training():
    x = torch.randn(4, 3, 16, 16)
    model = _small_wrn(drop_rate=0.3, zero_init_last=False)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model = _small_wrn(drop_rate=0.0, zero_init_last=False).train()
    assert torch.equal(model(x), model(x))


def test_wrn_layout():
    """Table 1: conv1 16, groups of N = (d-4)/6 blocks with 16k/32k/64k; 1x1 projections where the shape changes."""
    with torch.device("meta"):
        model = cnnzoo.create_model("wide_resnet28_10_cifar")
    assert model.stem.conv.out_channels == 16
    assert model.stages[0].blocks[0].drop.p == 0.3
    for width, stage in zip((160, 320, 640), model.stages):
        assert len(stage.blocks) == 4
        assert all(b.conv2.out_channels == width for b in stage.blocks)
        assert stage.blocks[0].downsample.conv.kernel_size == (1, 1)
        assert all(b.downsample is None for b in list(stage.blocks)[1:])


@pytest.mark.parametrize(
    "bad,match", [({"depth": 27}, "6N\\+4"), ({"widen_factor": 0}, "widen_factor"), ({"drop_rate": 1.0}, "drop_rate")]
)
def test_wrn_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("wide_resnet28_10_cifar", **bad)


def test_preact_bad_options():
    with pytest.raises(ValueError, match="'basic', 'bottleneck'"):
        PreActResNet(block="wide")
    with pytest.raises(ValueError, match="'imagenet', 'cifar'"):
        PreActResNet(stem="mnist")


@pytest.mark.parametrize("attn", sorted(ATTN_LAYERS))
@pytest.mark.parametrize(
    "name,opts",
    [
        ("preact_resnet110_cifar", {"layers": (1, 1, 1)}),
        ("preact_resnet164_cifar", {"layers": (1, 1, 1)}),
        ("preact_resnet50", {"layers": (1, 1, 1, 1)}),
        ("wide_resnet28_10_cifar", {"depth": 10, "widen_factor": 2}),
    ],
)
def test_attention_in_every_unit(name, opts, attn):
    model = cnnzoo.create_model(name, attn_layer=attn, **opts).eval()
    units = [m for m in model.modules() if isinstance(m, (PreActBasicBlock, PreActBottleneck))]
    assert units and all(isinstance(u.attn, ATTN_LAYERS[attn]) for u in units)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, model.num_classes)


def test_timm_resnetv2_checkpoint_converts():
    """timm resnetv2_50 keys (read from timm's resnetv2.py; no layout fixture exists) load after conversion."""
    model = cnnzoo.create_model("preact_resnet50", layers=(1, 1, 1, 1))
    sd = model.state_dict()
    for key in (
        "stem.conv.weight",
        "stages.1.blocks.0.downsample.conv.weight",
        "stages.0.blocks.0.norm1.running_var",
        "stages.3.blocks.0.conv3.weight",
        "norm.weight",
        "norm.running_mean",
        "head.fc.bias",
    ):
        assert key in sd, key
    timm_sd = {**sd, "head.fc.weight": sd["head.fc.weight"][:, :, None, None].clone()}  # timm's 1x1-conv head
    converted = cnnzoo.convert_state_dict("preact_resnet50", timm_sd, "timm")
    other = cnnzoo.create_model("preact_resnet50", layers=(1, 1, 1, 1))
    other.load_state_dict(converted, strict=True)
    assert torch.equal(other.head.fc.weight, model.head.fc.weight)
    with pytest.raises(ValueError, match="no timm counterpart"):
        cnnzoo.convert_state_dict("preact_resnet164_cifar", sd, "timm")
