"""HarDNet. Chao, Kao, Ruan, Huang, Lin, "HarDNet: A Low Memory Traffic Network", ICCV 2019.
https://arxiv.org/abs/1909.00948

Key ideas
    Inference time follows memory traffic (reading and writing feature maps: the "CIO" of Sec. 3.1) as much as MACs.
    A DenseNet block re-reads every earlier map at every layer; the Harmonic Dense Block (HDB, Sec. 3.2, Fig. 2)
    keeps only the links from layer k to layers k - 2^n (for every n with 2^n dividing k), so most layers read one or
    two maps and only every other layer's output must be kept. Layers with many inputs get more output channels:
    layer k, with n the largest such power, has k * m^n channels (growth rate k, channel weighting factor m = 1.6 to
    1.7), which balances each layer's input/output ratio (MACs over CIO). A block outputs the concatenation of its
    odd layers and its last layer (not its input: no global dense connection). A 1x1 conv follows each block as its
    transition; Sec. 3.3 also proposes an "inverted transition" that concatenates the block output's 2x2 max- and
    average-pooled maps before the 1x1 conv, so the conv runs at the lower resolution.

Which table the code reproduces
    The paper's ImageNet models as the official repository (PingoLH/Pytorch-HarDNet) defines them. HarDNet-68:
    stem conv 3x3/2 + conv 3x3 + max-pool 3x3/2, then HDBs of 8-16-16-16-4 layers, k = 14, 16, 20, 40, 160,
    m = 1.7, transitions to 128, 256, 320, 640, 1024 channels; HarDNet-85: stem 48/96, 8-16-16-16-16-4 layers,
    k = 24, 24, 28, 36, 48, 256, transitions 192 ... 1280. 17.6M and 36.7M parameters, 4.3 and 9.1 GMACs (README).
    The depthwise-separable (DS) models of the repository: the stem's second conv is 1x1, the max-pools become
    3x3/2 depthwise convs, and each HDB layer is a 1x1 conv followed by a 3x3 depthwise conv (HarDNet-39DS:
    4-16-8-4 layers, k = 16, 20, 64, 160, m = 1.6; HarDNet-68DS), 3.5M and 4.2M parameters.

Training setup in the paper
    ImageNet at 224x224, with the training procedure of the PyTorch ImageNet example (official repository);
    dropout before the fc: 0.1 for HarDNet-68 (and 39), 0.2 for 85, 0.05 for the DS models (official code).

This implementation
    The official repository's layers: Conv-BN-ReLU6 everywhere (the paper writes ReLU; ``act_layer`` changes it),
    no conv biases, HDB widths rounded to an even number (int((w + 1) / 2) * 2 of the official ``get_link``),
    2x2/2 max-pool after the transitions of the down-sampling stages (3x3/2 depthwise conv + BN for DS).
    Module names are ours (``stem``, ``stages.N.block`` / ``.transition`` / ``.downsample``, ``fc``); the official
    ``base.N`` keys have no converter. Options: ``transition`` ("conv", the released models' 1x1 conv then pool;
    "inverted", Sec. 3.3's max- and average-pool concatenated before the 1x1 conv, which doubles that conv's input
    channels on the down-sampling stages), ``act_layer``, ``drop_rate``. Kaiming-normal (fan-out) conv init, BN
    weight 1 / bias 0 (the official code keeps PyTorch's defaults). Deviation: HarDNet-85's extra Dropout(0.1)
    before its last transition (official code) is left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import get_act, init_conv_bn
from ..registry import Paper, register_model
from .base import PooledFcModel

HARDNET = Paper(
    "HarDNet: A Low Memory Traffic Network",
    "P. Chao, C.-Y. Kao, Y.-S. Ruan, C.-H. Huang, Y.-L. Lin",
    2019,
    "https://arxiv.org/abs/1909.00948",
)

TRANSITIONS = ("conv", "inverted")

# The official models: stem widths, then per HDB (layers, growth rate k, transition width, down-sample after it).
ARCHS: dict[str, dict] = {
    "39": {"stem": (24, 48), "m": 1.6, "stages": [(4, 16, 96, True), (16, 20, 320, True), (8, 64, 640, True),
                                                  (4, 160, 1024, False)]},
    "68": {"stem": (32, 64), "m": 1.7, "stages": [(8, 14, 128, True), (16, 16, 256, False), (16, 20, 320, True),
                                                  (16, 40, 640, True), (4, 160, 1024, False)]},
    "85": {"stem": (48, 96), "m": 1.7, "stages": [(8, 24, 192, True), (16, 24, 256, False), (16, 28, 320, True),
                                                  (16, 36, 480, False), (16, 48, 720, True), (4, 256, 1280, False)]},
}


def harmonic_links(layer: int) -> list[int]:
    """The earlier layers layer k reads: k - 2^n for every n with 2^n dividing k (layer 0 is the block input)."""
    links, n = [], 0
    while layer % 2**n == 0 and layer - 2**n >= 0:
        links.append(layer - 2**n)
        n += 1
    return links


def harmonic_width(layer: int, growth_rate: int, m: float) -> int:
    """Output channels of layer k: growth_rate * m^n (n = the largest power with 2^n | k), rounded up to even."""
    n = len(harmonic_links(layer)) - 1
    return int((growth_rate * m**n + 1) / 2) * 2  # the official rounding


def conv_layer(cin: int, cout: int, kernel: int = 3, stride: int = 1, act_layer="relu6") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         get_act(act_layer, inplace=True))


def dw_conv_layer(channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 depthwise conv + BN, no activation (the official DWConvLayer)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
                         nn.BatchNorm2d(channels))


class HarDBlock(nn.Module):
    """Harmonic Dense Block (Fig. 2 / Sec. 3.2): layer k reads layers k - 2^n, has k * m^n channels."""

    def __init__(self, in_channels: int, growth_rate: int, m: float, num_layers: int, dwconv: bool = False,
                 act_layer="relu6"):
        super().__init__()
        widths = [in_channels] + [harmonic_width(k, growth_rate, m) for k in range(1, num_layers + 1)]
        self.links = [harmonic_links(k) for k in range(1, num_layers + 1)]
        layers = []
        for k, link in enumerate(self.links, start=1):
            cin = sum(widths[i] for i in link)
            if dwconv:  # DS models: 1x1 conv-BN-act, then 3x3 depthwise conv-BN
                layers.append(nn.Sequential(conv_layer(cin, widths[k], 1, act_layer=act_layer),
                                            dw_conv_layer(widths[k])))
            else:
                layers.append(conv_layer(cin, widths[k], 3, act_layer=act_layer))
        self.layers = nn.ModuleList(layers)
        # the block's output: its odd layers and its last layer (not its input)
        self.outputs = [k for k in range(1, num_layers + 1) if k % 2 == 1 or k == num_layers]
        self.out_channels = sum(widths[k] for k in self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for layer, link in zip(self.layers, self.links):
            inp = maps[link[0]] if len(link) == 1 else torch.cat([maps[i] for i in link], 1)
            maps.append(layer(inp))
        return torch.cat([maps[k] for k in self.outputs], 1)  # (B, C_in, H, W) -> (B, out_channels, H, W)


class InvertedTransition(nn.Module):
    """Sec. 3.3's inverted transition: [2x2 max-pool, 2x2 avg-pool] of the block output, concatenated, then 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, act_layer="relu6"):
        super().__init__()
        self.conv = conv_layer(2 * in_channels, out_channels, 1, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([F.max_pool2d(x, 2), F.avg_pool2d(x, 2)], 1)  # (B, C, H, W) -> (B, 2C, H/2, W/2)
        return self.conv(x)


class HarDNet(PooledFcModel):
    """HarDNet-39DS / 68 / 68DS / 85 of the official repository (``arch``, ``depthwise``)."""

    def __init__(self, *, arch: str = "68", depthwise: bool = False, transition: str = "conv", act_layer="relu6",
                 num_classes: int = 1000, in_channels: int = 3, drop_rate: float | None = None):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {arch!r}")
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {', '.join(TRANSITIONS)}; got {transition!r}")
        if drop_rate is None:  # the official dropout before the fc
            drop_rate = 0.05 if depthwise else {"39": 0.1, "68": 0.1, "85": 0.2}[arch]
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels, self.drop_rate = num_classes, in_channels, drop_rate
        cfg = ARCHS[arch]
        c0, c1 = cfg["stem"]
        # stem: conv 3x3/2, conv 3x3 (1x1 for DS), then 3x3/2 max-pool (3x3/2 depthwise conv for DS)
        self.stem = nn.Sequential(conv_layer(in_channels, c0, 3, 2, act_layer),
                                  conv_layer(c0, c1, 1 if depthwise else 3, act_layer=act_layer))
        self.stem_pool = dw_conv_layer(c1, 2) if depthwise else nn.MaxPool2d(3, 2, 1)
        self.feature_info = [{"num_chs": c1, "reduction": 2, "module": "stem"}]
        stages, ch, reduction = [], c1, 4
        for i, (n, k, width, down) in enumerate(cfg["stages"]):
            stage = nn.Sequential()
            stage.add_module("block", HarDBlock(ch, k, cfg["m"], n, depthwise, act_layer))
            ch = stage.block.out_channels
            if down and transition == "inverted":  # pools the block output, then the 1x1 conv at half resolution
                self.feature_info.append({"num_chs": ch, "reduction": reduction, "module": f"stages.{i}.block"})
                stage.add_module("transition", InvertedTransition(ch, width, act_layer))
            else:
                stage.add_module("transition", conv_layer(ch, width, 1, act_layer=act_layer))
                if down:
                    self.feature_info.append({"num_chs": width, "reduction": reduction,
                                              "module": f"stages.{i}.transition"})
                    stage.add_module("downsample", dw_conv_layer(width, 2) if depthwise else nn.MaxPool2d(2, 2))
            ch, reduction = width, reduction * 2 if down else reduction
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.feature_info.append({"num_chs": ch, "reduction": reduction, "module": f"stages.{len(stages) - 1}"})
        self.num_features = ch
        self.fc = nn.Linear(ch, num_classes)
        init_conv_bn(self)
        # every 2x2/2 pool (max-pool, or the inverted transition's) needs a 2x2 map: 2^pools pixels after the
        # stem's /4, whose padded convs and pool give that from 4 * 2^pools - 3 pixels; stride-2 dw convs need none
        pools = sum(down for *_, down in cfg["stages"]) if not depthwise or transition == "inverted" else 0
        self.min_input_size = 4 * 2**pools - 3 if pools else 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(self.stem(x))  # (B, 3, H, W) -> (B, C, H/4, W/4)
        return self.stages(x)  # -> (B, num_features, H/32, W/32)


_CARD = {"paper": HARDNET, "input_size": (3, 224, 224)}
_OFFICIAL = ("the released models' 1x1-conv-then-pool transition (transition='inverted' for Sec. 3.3's)",
             "ReLU6 as the official code (the paper: ReLU)")


@register_model(HarDNet, deviations=_OFFICIAL, **_CARD)
def hardnet39_ds(**kwargs) -> HarDNet:
    """HarDNet-39DS (official repository: depthwise-separable, 4-16-8-4 layers, m = 1.6)."""
    return HarDNet(**{"arch": "39", "depthwise": True, **kwargs})


@register_model(HarDNet, deviations=_OFFICIAL, **_CARD)
def hardnet68(**kwargs) -> HarDNet:
    """HarDNet-68 (8-16-16-16-4 layers, k = 14..160, m = 1.7)."""
    return HarDNet(**{"arch": "68", **kwargs})


@register_model(HarDNet, deviations=_OFFICIAL, **_CARD)
def hardnet68_ds(**kwargs) -> HarDNet:
    """HarDNet-68DS (official repository: HarDNet-68 with depthwise-separable layers)."""
    return HarDNet(**{"arch": "68", "depthwise": True, **kwargs})


_SHORT_85 = ("short budget: the zoo sweep trains it on 32-px digits (64 px is over its cost cap), where 60 SGD steps "
             "at the mnist5k recipe's lr 0.03 reach only 17% (seed 0) / 20% (seed 1); lr 0.01 reaches 35%, and "
             "HarDNet-68 68% at 32 px and 91% at 64 px: the 85-layer network needs a lower rate or more steps; in "
             "the sweep's 31 steps it is at 10.0% with the running BN statistics and 22.6% with the card's hint "
             "train.precise_bn (statistics re-estimated before each evaluation)")


# The deepest HarDNet re-estimates its BN statistics before each evaluation (train.precise_bn, as the deep ResNet
# cards): the sweep's 31 steps at 32 px (seed 0) 10.0% -> 22.6%.
@register_model(HarDNet, deviations=_OFFICIAL + ("no Dropout(0.1) before the last transition", _SHORT_85),
                recipe={"train.precise_bn": 16}, **_CARD)
def hardnet85(**kwargs) -> HarDNet:
    """HarDNet-85 (8-16-16-16-16-4 layers, k = 24..256, m = 1.7)."""
    return HarDNet(**{"arch": "85", **kwargs})
