"""Pre-activation ResNet (ResNet v2). He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks",
ECCV 2016. https://arxiv.org/abs/1603.05027

Key ideas
    If both the shortcut and the after-addition function are identities, a signal passes directly
    from any unit to any other, forward and backward: x_L = x_l + sum F(x_i), and the gradient of
    the loss reaches every x_l through an additive term that cannot vanish (eq. 4-5). Scaling,
    gating or 1x1-conv shortcuts all hurt (Table 1), and so does a ReLU after the addition. Moving
    BN and ReLU *before* each weight layer ("pre-activation", Fig. 4(e)) makes the after-addition
    map an identity, eases optimisation of 1000-layer networks and regularises through BN on every
    branch input: ResNet-1001 reaches 4.92% CIFAR-10 error (Table 3; 4.62% with mini-batch 64, Table 4).

Which table the code reproduces
    The full pre-activation unit of Fig. 4(e): BN -> ReLU -> conv (-> BN -> ReLU -> conv ...), the sum
    is left as is. "For the first Residual Unit (that follows a stand-alone convolutional layer,
    conv1), we adopt the first activation right after conv1 and before splitting into two paths",
    likewise for units with a projection shortcut, and an extra BN-ReLU after the last unit
    (section 4.1). CIFAR (Table 3 / 4): a 3x3 conv16 stem and three stages; ResNet-110 uses basic
    units (16/32/64, n=18), ResNet-164 and ResNet-1001 bottleneck units with 16/32/64 bottleneck
    widths and 64/128/256 outputs (n=18 and n=111): 1.7M and 10.2M parameters. ImageNet: Table 5
    reports pre-activation ResNet-152 and -200; the registered 18...152 use the first paper's stacks.

Training setup in the paper
    CIFAR: as in the first ResNet paper (batch 128, lr 0.1 with a short 0.01 warm-up for the deepest
    nets, divided by 10 at 32k and 48k iterations, stop at 64k; weight decay 1e-4, momentum 0.9;
    4-pixel padding, 32x32 crops, flips). ImageNet: the fb.resnet.torch recipe (scale and
    aspect-ratio augmentation), 224 single-crop and 320 evaluation (Table 5).

This implementation
    Names follow timm's ``resnetv2`` (stem.conv, stages.N.blocks.M.norm1/conv1/..., downsample.conv,
    norm, head.fc); ``convert_state_dict("preact_resnet50", sd, "timm")`` (also 101/152) takes a timm
    ``resnetv2_*`` checkpoint, whose only difference is the classifier stored as a 1x1 conv. The
    ImageNet networks follow timm ``resnetv2_50``: 7x7/2 conv and 3x3/2 max-pool stem without BN
    (the first unit's BN-ReLU pre-activates it), stride in the 3x3 conv ("ResNet v1.5"; 4.11 GMACs
    for ResNet-50 against 3.88 with the stride in the first 1x1), 1x1 projection
    shortcuts (option B) taking the pre-activated input where the shape changes. The shortcut of the
    network's first unit also takes the pre-activated input, as section 4.1 says. Options: attn_layer
    (after the branch's last conv, before the sum), drop_path_rate (stochastic depth on the branch,
    growing linearly), drop_rate (dropout before each unit's last conv: between the two convs of a
    basic unit, as WRN uses it; no classifier dropout), act_layer, zero_init_last (default False: the
    paper's He initialisation everywhere; True is timm's option, the branch's last conv starts at zero so
    each unit starts as its shortcut). Adaptive global pooling, so any input size runs.

    BN running statistics come from data (``cnnzoo.layers.FreshBatchNorm2d``): until a BN has seen a
    training batch it normalises with the batch's own statistics in eval mode too, and its first training
    batch sets its running statistics. With PyTorch's placeholders (mean 0, variance 1) an untrained BN is
    the identity in eval mode, each unit about doubles the signal's variance, and ResNet-1001's 333 units
    overflow float32 (NaN logits at initialisation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..layers import ClassifierHead, DropPath, FreshBatchNorm2d, drop_path_rates, get_act, get_attn, init_conv_bn
from ..registry import Paper, register_converter, register_model
from .base import ZooModel

PREACT = Paper(
    "Identity Mappings in Deep Residual Networks",
    "K. He, X. Zhang, S. Ren, J. Sun",
    2016,
    "https://arxiv.org/abs/1603.05027",
)


class _PreActUnit(nn.Module):
    """Shared head and tail of the pre-activation units: BN-ReLU on the input, the shortcut, attention and drop
    path on the branch, the sum (no ReLU after it). A unit builds its branch in ``_build_branch``.

    Args:
        in_channels: input channels; width: the branch's width (output: ``width * expansion``).
        stride: stride of the unit's 3x3 conv.
        drop_rate: dropout before the branch's last conv (WRN, Zagoruyko & Komodakis 2016, Fig. 1(d)).
        drop_path: stochastic-depth rate of this unit.
        attn_layer: None or a factory ``channels -> module``, after the branch's last conv, before the sum.
        preact_shortcut: the shortcut reads the pre-activated input (always so for a projection shortcut).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        drop_rate: float = 0.0,
        drop_path: float = 0.0,
        act_layer="relu",
        attn_layer: Callable[[int], nn.Module] | None = None,
        preact_shortcut: bool = False,
    ):
        super().__init__()
        out_channels = width * self.expansion
        self.norm1 = FreshBatchNorm2d(in_channels)
        self.act1 = get_act(act_layer, inplace=True)
        self._build_branch(in_channels, width, stride, drop_rate, act_layer)
        self.attn = attn_layer(out_channels) if attn_layer is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.downsample = _projection(in_channels, out_channels, stride)
        self.preact_shortcut = preact_shortcut or self.downsample is not None

    def _build_branch(self, in_channels: int, width: int, stride: int, drop_rate: float, act_layer) -> None:
        raise NotImplementedError

    def branch(self, x_pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_conv(self) -> nn.Conv2d:
        raise NotImplementedError

    def zero_init_last(self) -> None:
        """Zero the branch's last conv (timm resnetv2's zero_init_last): the unit starts as its shortcut."""
        nn.init.zeros_(self.last_conv().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_pre = self.act1(self.norm1(x))
        shortcut = x_pre if self.preact_shortcut else x
        if self.downsample is not None:
            shortcut = self.downsample(x_pre)  # (B, C, H, W) -> (B, C', H/s, W/s)
        return self.drop_path(self.attn(self.branch(x_pre))) + shortcut  # no ReLU after the sum


class PreActBasicBlock(_PreActUnit):
    """Full pre-activation basic unit (Fig. 4(e)): (BN-ReLU-conv3x3) x 2, identity after the sum.

    ``drop_rate`` puts dropout between the two convs (Wide ResNet, Zagoruyko & Komodakis 2016, Fig. 1(d)).
    """

    expansion = 1

    def _build_branch(self, in_channels: int, width: int, stride: int, drop_rate: float, act_layer) -> None:
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.norm2 = FreshBatchNorm2d(width)
        self.act2 = get_act(act_layer, inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)

    def last_conv(self) -> nn.Conv2d:
        return self.conv2

    def branch(self, x_pre: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x_pre)  # (B, C, H, W) -> (B, w, H/s, W/s)
        return self.conv2(self.drop(self.act2(self.norm2(out))))


class PreActBottleneck(_PreActUnit):
    """Full pre-activation bottleneck unit (Fig. 4(e)): BN-ReLU-1x1, BN-ReLU-3x3 (stride), BN-ReLU-1x1 (x4)."""

    expansion = 4

    def _build_branch(self, in_channels: int, width: int, stride: int, drop_rate: float, act_layer) -> None:
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = FreshBatchNorm2d(width)
        self.act2 = get_act(act_layer, inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.norm3 = FreshBatchNorm2d(width)
        self.act3 = get_act(act_layer, inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)

    def last_conv(self) -> nn.Conv2d:
        return self.conv3

    def branch(self, x_pre: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x_pre)  # (B, C, H, W) -> (B, w, H, W)
        out = self.conv2(self.act2(self.norm2(out)))  # -> (B, w, H/s, W/s)
        return self.conv3(self.drop(self.act3(self.norm3(out))))  # -> (B, 4w, H/s, W/s)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 conv shortcut where the shape changes (option B); no BN: it reads the pre-activated input."""
    if stride == 1 and in_channels == out_channels:
        return None
    proj = nn.Sequential()
    proj.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))
    return proj


class BatchNormAct(FreshBatchNorm2d):
    """BN followed by an activation in one module, so its state-dict keys are ``norm.weight``... as timm's."""

    def __init__(self, channels: int, act_layer="relu"):
        super().__init__(channels)
        self.act = get_act(act_layer, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


BLOCKS = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}
STEMS = ("imagenet", "cifar")


class PreActResNet(ZooModel):
    """Pre-activation ResNet: a stem, stages of pre-activation units, a final BN-ReLU, pooling and fc."""

    # All convs pad to ceil(H/s), and the max-pool (3x3/2, pad 1) keeps a 1x1 map: any size runs.
    min_input_size = 1

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        *,
        block: str = "bottleneck",
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem: str = "imagenet",
        stem_width: int = 64,
        num_classes: int = 1000,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer="relu",
        attn_layer=None,
        zero_init_last: bool = False,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(map(repr, BLOCKS))}, got {block!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(map(repr, STEMS))}, got {stem!r}")
        if not layers or len(layers) != len(widths) or min(layers) < 1 or min(widths) < 1:
            raise ValueError(
                f"layers and widths must be equally long lists of positive numbers, got {layers!r} and {widths!r}"
            )
        block_cls = BLOCKS[block]
        attn = get_attn(attn_layer)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.stem = nn.Sequential()
        if stem == "imagenet":
            self.stem.add_module("conv", nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False))
            self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))  # (B, 3, 224, 224) -> (B, 64, 56, 56)
            reduction = 4
        else:
            self.stem.add_module("conv", nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False))  # CIFAR: 32x32
            reduction = 1
        dpr = iter(drop_path_rates(drop_path_rate, sum(layers)))
        self.stages = nn.Sequential()
        self.feature_info = []
        cin = stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stage = nn.Sequential()
            for j in range(n):
                # Section 4.1: the first unit after conv1 splits after its BN-ReLU.
                stage.add_module(
                    str(j),
                    block_cls(
                        cin,
                        w,
                        stride if j == 0 else 1,
                        drop_rate=drop_rate,
                        drop_path=next(dpr),
                        act_layer=act_layer,
                        attn_layer=attn,
                        preact_shortcut=(i == 0 and j == 0),
                    ),
                )
                cin = w * block_cls.expansion
            self.stages.add_module(str(i), nn.Sequential())
            self.stages[i].add_module("blocks", stage)
            self.feature_info.append({"num_chs": cin, "reduction": reduction, "module": f"stages.{i}"})
        self.num_features = cin
        # The extra BN-ReLU after the last unit (section 4.1): the sums are never activated otherwise.
        self.norm = BatchNormAct(cin, act_layer)
        self.feature_info[-1]["module"] = "norm"
        self.head = ClassifierHead(cin, num_classes)
        init_conv_bn(self)  # He et al. 2015 (fan-out) for every conv, BN (1, 0)
        if zero_init_last:
            # Each unit starts as its shortcut (timm resnetv2's zero_init_last; Goyal et al. 2017 zero the last BN;
            # a pre-activation branch ends in a conv).
            for m in self.modules():
                if isinstance(m, _PreActUnit):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # ImageNet (B, 3, H, W) -> (B, 2048, H/32, W/32); CIFAR -> (B, 256, H/4, W/4)
        return self.norm(x)


_ZERO = (
    "BN running statistics start from the first training batch, and an untrained BN normalises with the "
    "batch's statistics in eval mode (FreshBatchNorm2d), not PyTorch's (0, 1) placeholders"
)
_IMAGENET = {
    "paper": PREACT,
    "input_size": (3, 224, 224),
    "dataset": "ImageNet",
    "deviations": (_ZERO, "timm resnetv2 layout: no BN-ReLU between the stem conv and the max-pool"),
}
_CIFAR = {
    "paper": PREACT,
    "input_size": (3, 32, 32),
    "dataset": "CIFAR-10",
    "deviations": (_ZERO, "adaptive global average pooling instead of the fixed 8x8 pool (identical at 32x32)"),
}


@register_model(PreActResNet, **_IMAGENET)
def preact_resnet18(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-18 (basic units, [2, 2, 2, 2])."""
    return PreActResNet(**{"layers": (2, 2, 2, 2), "block": "basic", **kwargs})


@register_model(PreActResNet, **_IMAGENET)
def preact_resnet34(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-34 (basic units, [3, 4, 6, 3])."""
    return PreActResNet(**{"layers": (3, 4, 6, 3), "block": "basic", **kwargs})


@register_model(PreActResNet, **_IMAGENET, counterparts={"timm": "resnetv2_50"})
def preact_resnet50(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-50 (bottleneck units, [3, 4, 6, 3]; timm resnetv2_50's layout)."""
    return PreActResNet(**{"layers": (3, 4, 6, 3), **kwargs})


@register_model(PreActResNet, **_IMAGENET, counterparts={"timm": "resnetv2_101"})
def preact_resnet101(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-101 (bottleneck units, [3, 4, 23, 3])."""
    return PreActResNet(**{"layers": (3, 4, 23, 3), **kwargs})


# The deepest one re-estimates its BN statistics before each evaluation (train.precise_bn, as the deep ResNet cards):
# at the sweep's budget (32 px, 23 steps, seed 0) 10.3% -> 28.8% (on 16-px digits 60 steps without it: 21.4%).
_HINT_152 = "recipe hint: BN statistics re-estimated over 16 training batches before each evaluation (train.precise_bn)"


@register_model(PreActResNet, **{**_IMAGENET, "deviations": (*_IMAGENET["deviations"], _HINT_152)},
                counterparts={"timm": "resnetv2_152"}, recipe={"train.precise_bn": 16})
def preact_resnet152(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-152 (bottleneck units, [3, 8, 36, 3]; Table 5)."""
    return PreActResNet(**{"layers": (3, 8, 36, 3), **kwargs})


def _cifar(depth: int, block: str, kwargs: dict) -> PreActResNet:
    per_block = 2 if block == "basic" else 3  # weighted layers per unit; + the stem conv and the fc
    n = (depth - 2) // (3 * per_block)
    return PreActResNet(
        **{
            "layers": (n, n, n),
            "block": block,
            "widths": (16, 32, 64),
            "stem": "cifar",
            "stem_width": 16,
            "num_classes": 10,
            **kwargs,
        }
    )


@register_model(PreActResNet, **_CIFAR)
def preact_resnet110_cifar(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-110 for CIFAR-10 (basic units, n=18; Table 3)."""
    return _cifar(110, "basic", kwargs)


@register_model(PreActResNet, **_CIFAR)
def preact_resnet164_cifar(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-164 for CIFAR-10 (bottleneck units 16/32/64 -> 64/128/256, n=18; Table 3)."""
    return _cifar(164, "bottleneck", kwargs)


@register_model(PreActResNet, **_CIFAR)
def preact_resnet1001_cifar(**kwargs) -> PreActResNet:
    """Pre-activation ResNet-1001 for CIFAR-10 (bottleneck units, n=111; Table 3)."""
    return _cifar(1001, "bottleneck", kwargs)


def _from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``resnetv2_*``: same keys; its classifier is a 1x1 conv (BiT heritage), ours a Linear."""
    w = sd.get("head.fc.weight")
    if w is not None and w.ndim == 4:
        sd["head.fc.weight"] = w.flatten(1)  # (classes, C, 1, 1) -> (classes, C)
    return sd


for _name in ("preact_resnet50", "preact_resnet101", "preact_resnet152"):
    register_converter(_name, "timm")(_from_timm)
