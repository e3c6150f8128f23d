"""Pre-activation ResNets (He et al. 2016) and the CIFAR Wide ResNets (Zagoruyko & Komodakis 2016)."""

from __future__ import annotations

import math

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
    """The default is the paper's He init everywhere; zero_init_last=True (timm's option) zeroes each last conv."""
    model = cnnzoo.create_model("preact_resnet164_cifar", layers=(2, 2, 2))
    assert all(u.conv3.weight.all() for u in model.modules() if isinstance(u, PreActBottleneck))
    model = cnnzoo.create_model("preact_resnet164_cifar", layers=(2, 2, 2), zero_init_last=True)
    assert all(not u.conv3.weight.any() for u in model.modules() if isinstance(u, PreActBottleneck))


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


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def timm_resnetv2_layout(layers: tuple[int, ...], num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of a timm ``resnetv2_50/101/152`` checkpoint, written from timm's ResNetV2 naming.

    timm (resnetv2.py): ``stem.conv`` (7x7, no norm: pre-activation); ``stages.i.blocks.j`` are
    PreActBottlenecks ``norm1, conv1 (1x1), norm2, conv2 (3x3), norm3, conv3 (1x1)`` with the bottleneck at a
    quarter of the stage width (256, 512, 1024, 2048); the first block of every stage, the first stage's included,
    has a ``downsample.conv`` (1x1, its norm an Identity under pre-activation); a final ``norm``; the classifier
    ``head.fc`` is a 1x1 conv with bias. Norms are BatchNormAct2d: BatchNorm2d's five entries.
    """
    shapes: dict[str, tuple[int, ...]] = {"stem.conv.weight": (64, 3, 7, 7)}
    cin = 64
    for i, (depth, out) in enumerate(zip(layers, (256, 512, 1024, 2048))):
        mid = out // 4
        for j in range(depth):
            p = f"stages.{i}.blocks.{j}."
            if j == 0:
                shapes[p + "downsample.conv.weight"] = (out, cin, 1, 1)
            shapes |= _bn(p + "norm1", cin) | _bn(p + "norm2", mid) | _bn(p + "norm3", mid)
            shapes |= {p + "conv1.weight": (mid, cin, 1, 1), p + "conv2.weight": (mid, mid, 3, 3),
                       p + "conv3.weight": (out, mid, 1, 1)}
            cin = out
    return shapes | _bn("norm", 2048) | {"head.fc.weight": (num_classes, 2048, 1, 1), "head.fc.bias": (num_classes,)}


def test_timm_resnetv2_checkpoint_converts():
    """A checkpoint in timm's resnetv2_50 layout loads strictly, every tensor where timm keeps it."""
    def learnable(layout):
        return sum(math.prod(s) for k, s in layout.items() if not k.endswith(("running_mean", "running_var", "_tracked")))

    full = learnable(timm_resnetv2_layout((3, 4, 6, 3)))
    assert round(full / 1e6, 2) == 25.55 and n_params("preact_resnet50") == full  # timm's param_count: 25.55M
    layers = (2, 1, 1, 1)  # a shallower stack keeps the test fast; every kind of key is there
    layout = timm_resnetv2_layout(layers)
    g = torch.Generator().manual_seed(0)
    timm_sd = {k: torch.randint(0, 5, s, generator=g) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
               for k, s in layout.items()}
    converted = cnnzoo.convert_state_dict("preact_resnet50", dict(timm_sd), "timm", layers=layers)
    model = cnnzoo.create_model("preact_resnet50", layers=layers)
    model.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in model.parameters()) == learnable(layout)
    ours = model.state_dict()
    for key, value in timm_sd.items():
        expected = value.flatten(1) if key == "head.fc.weight" else value  # the 1x1-conv classifier as a Linear
        assert torch.equal(ours[key], expected), key
    # the tensors sit in the modules timm's names say, e.g. the stride-2 3x3 of stage 2's first unit
    assert torch.equal(model.stages[1].blocks[0].conv2.weight, timm_sd["stages.1.blocks.0.conv2.weight"])
    assert model.stages[1].blocks[0].conv2.stride == (2, 2)
    with pytest.raises(ValueError, match="no timm counterpart"):
        cnnzoo.convert_state_dict("preact_resnet164_cifar", timm_sd, "timm")
