"""SENet-154 and the released SENet checkpoints. Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks",
CVPR 2018 / TPAMI 2019. https://arxiv.org/abs/1709.01507

Key ideas
    A convolution mixes channels only implicitly. The SE block makes channel interdependence
    explicit: *squeeze* each channel to one number by global average pooling, *excite* with a
    bottleneck MLP (C -> C/r -> C, ReLU then sigmoid) and rescale the channels by the result.
    It costs a few percent more parameters and almost no compute, and improved every backbone it
    was added to (Table 2). SENet-154, a ResNeXt-style 64x4d network with SE blocks and a few
    tweaks, won ILSVRC 2017 classification (2.25% top-5 error, ensemble).

Which table the code reproduces
    SENet-154 from section 6.1 / Appendix (Table 14 of the TPAMI version): the 64x4d ResNeXt-152
    with SE blocks, the first 7x7 conv replaced by three 3x3 convs, 1x1 down-sampling projections
    replaced by 3x3 stride-2 convolutions, halved bottleneck width before the grouped conv, and
    dropout 0.2 before the classifier: 115,088,984 parameters. The block layouts of the released
    Caffe models (SE-ResNet-50, SE-ResNeXt-50) are reproduced as checkpoint conversions onto
    ``seresnet50`` / ``seresnext50_32x4d`` of ``resnet.py``.

Training setup in the paper
    SGD momentum 0.9, batch 1024 on 64 GPUs, lr 0.6 decayed x0.1 every 30 epochs, 100 epochs (the
    ILSVRC 2017 entry longer), 224x224 random-size crops with flips, balanced data sampling, label
    smoothing for SENet-154; single 224 (and 320) centre crop evaluation.

This implementation
    ``senet154`` keeps the released model's module names (layer0, layer1..4, se_module: timm's
    ``legacy_senet154``); only its classifier ``last_linear`` is renamed to ``head.fc`` by
    ``convert_state_dict("senet154", sd, "timm")``. The SE fcs are 1x1 convs with
    bias, reduction r=16. Max-pooling after the stem uses ceil mode as the Caffe model does.
    Global pooling is adaptive (any input size; the Caffe model's fixed 7x7 average pool equals it
    at 224). Options: drop_rate, attn reduction, drop_path_rate (stochastic depth, linear),
    zero_init_last (default False; True starts each bottleneck's last BN scale at zero, so a block starts as its
    shortcut).
    ``convert_state_dict("seresnet50" | "seresnext50_32x4d", sd, "timm")`` accepts both timm's native
    layout (loaded unchanged) and its ``legacy_*`` layout of the released Caffe weights (renamed:
    layer0.conv1 -> conv1, se_module -> se, last_linear -> fc). The legacy SE-ResNet-50 strides in its
    first 1x1 conv: ``seresnet50``'s default (stride_in_1x1=True) already matches it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ClassifierHead, DropPath, SEModule, drop_path_rates, init_conv_bn
from ..registry import register_converter, register_model
from .base import ZooModel
from .resnet import SENET


class SEBottleneck(nn.Module):
    """SENet-154 bottleneck: 1x1 (2x planes) -> grouped 3x3 (4x planes, stride) -> 1x1 -> SE, + shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, groups: int, reduction: int, stride: int = 1,
                 downsample: nn.Module | None = None, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes * 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes * 2)
        self.conv2 = nn.Conv2d(planes * 2, planes * 4, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(planes * 4)
        self.conv3 = nn.Conv2d(planes * 4, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(planes * 4, reduction=reduction)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))  # (B, 2p, H, W) -> (B, 4p, H/s, W/s), groups=64
        out = self.se_module(self.bn3(self.conv3(out)))
        return self.relu(self.drop_path(out) + shortcut)


class SENet(ZooModel):
    """SENet-154 (section 6.1): 64x4d SE-ResNeXt-152 with a 3x3 stem and 3x3 down-sampling projections."""

    # Stem: 3x3/2 conv (H -> ceil(H/2)) then a 3x3/2 max-pool without padding needs >= 3 pixels.
    min_input_size = 5

    def __init__(self, layers: tuple[int, ...] = (3, 8, 36, 3), groups: int = 64, reduction: int = 16,
                 num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.2, drop_path_rate: float = 0.0,
                 zero_init_last: bool = False):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {layers}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.layer0 = nn.Sequential()
        # Three 3x3 convs replace the 7x7 stem (section 6.1); children named as in the Caffe model.
        for i, (cin, cout, stride) in enumerate(((in_channels, 64, 2), (64, 64, 1), (64, 128, 1)), 1):
            self.layer0.add_module(f"conv{i}", nn.Conv2d(cin, cout, 3, stride, 1, bias=False))
            self.layer0.add_module(f"bn{i}", nn.BatchNorm2d(cout))
            self.layer0.add_module(f"relu{i}", nn.ReLU(inplace=True))
        self.layer0.add_module("pool", nn.MaxPool2d(3, stride=2, ceil_mode=True))
        dpr = iter(drop_path_rates(drop_path_rate, sum(layers)))
        inplanes = 128
        self.feature_info = [{"num_chs": 128, "reduction": 4, "module": "layer0"}]
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), 1):
            stride = 1 if i == 1 else 2
            # 3x3 stride-2 projections in layers 2-4 (the paper's "down-sampling projection" tweak).
            k = 1 if i == 1 else 3
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, k, stride, k // 2, bias=False), nn.BatchNorm2d(planes * 4))
            blocks = [SEBottleneck(inplanes, planes, groups, reduction, stride, downsample, next(dpr))]
            inplanes = planes * 4
            blocks += [SEBottleneck(inplanes, planes, groups, reduction, drop_path=next(dpr)) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": inplanes, "reduction": 4 * 2 ** (i - 1), "module": f"layer{i}"})
        self.num_features = inplanes
        self.head = ClassifierHead(inplanes, num_classes, drop_rate=drop_rate)
        init_conv_bn(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, SEBottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer0(x)  # (B, 3, H, W) -> (B, 128, H/4, W/4)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # -> (B, 2048, H/32, W/32)


# The deep ResNet cards' hint (resnet.py: lr 0.0125, each block starting as its shortcut). Measured on mnist5k
# (seed 0, 16 px, 60 steps): 10.1% at the digits recipe's lr 0.03, 12.2% at 0.0125 alone (train loss 3.1); with both
# hints the zoo sweep's budget (32 px, 20 steps) reaches 31.8%, where the recipe alone left it at 10.0%.
_RECIPE = {"optim.lr": 0.0125, "model.options.zero_init_last": True}


@register_model(SENet, paper=SENET, input_size=(3, 224, 224), counterparts={"timm": "legacy_senet154"},
                recipe=_RECIPE, deviations=(("adaptive global average pooling instead of the fixed 7x7 average pool "
                             "(identical at 224, works at other sizes)"),))
def senet154(**kwargs) -> SENet:
    """SENet-154: the ILSVRC 2017 winning single model (115.1M parameters)."""
    return SENet(**kwargs)


def _from_legacy_resnet(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``legacy_se*`` (Caffe release) keys -> torchvision-style ResNet keys with ``se`` blocks."""
    if not any(k.startswith("layer0.") for k in sd):
        return sd  # timm's native layout already matches
    out = {}
    for k, v in sd.items():
        k = k.replace("layer0.conv1.", "conv1.").replace("layer0.bn1.", "bn1.")
        k = k.replace(".se_module.", ".se.")
        if k.startswith("last_linear."):
            k = "fc." + k[len("last_linear."):]
        out[k] = v
    return out


@register_converter("senet154", "timm")
def _from_legacy_senet(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``legacy_senet154``: the classifier ``last_linear`` is our ``head.fc``."""
    return {("head.fc." + k[len("last_linear."):] if k.startswith("last_linear.") else k): v for k, v in sd.items()}


register_converter("seresnet50", "timm")(_from_legacy_resnet)
register_converter("seresnext50_32x4d", "timm")(_from_legacy_resnet)
