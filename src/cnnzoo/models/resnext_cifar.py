"""ResNeXt for CIFAR. Xie, Girshick, Dollar, Tu, He, "Aggregated Residual Transformations for Deep Neural
Networks", CVPR 2017. https://arxiv.org/abs/1611.05431

Key ideas
    A residual block can be seen as split-transform-merge: C parallel low-dimensional paths
    (1x1 -> 3x3 -> 1x1, width d each) whose outputs are summed. With identical paths this is
    exactly a bottleneck whose 3x3 conv is a grouped conv with C groups (Fig. 3(c)). The number of
    paths, the *cardinality*, is a new dimension besides depth and width: at equal parameters and
    FLOPs, raising C improves accuracy more than going deeper or wider.

Which table the code reproduces
    Section 5.1 / Table 7 (CIFAR): a 3x3 conv with 64 filters, then three stages of three
    bottleneck blocks on 32x32, 16x16 and 8x8 maps with 256, 512 and 1024 output channels, global
    average pooling and the fc: 29 layers. The bottleneck width d is 64 at the first stage and
    doubles with the resolution halving, so the grouped 3x3 has C*d = 512/1024/2048 channels for
    ResNeXt-29, 8x64d (34.4M parameters) and 1024/2048/4096 for 16x64d (68.1M).

Training setup in the paper
    Batch 128 on 8 GPUs, lr 0.1 divided by 10 at epochs 150 and 225, 300 epochs, weight decay 5e-4,
    momentum 0.9; the augmentation of the ResNet paper (4-pixel padding, 32x32 crops, flips). Table 7
    reports CIFAR-10 / CIFAR-100 test error: 3.65% / 17.77% for 8x64d, 3.58% / 17.31% for 16x64d.

This implementation
    Blocks follow the authors' Torch code (template C): 1x1 conv - BN - ReLU, 3x3 grouped conv
    (stride 2 in the first block of stages 2 and 3) - BN - ReLU, 1x1 conv - BN, sum with the shortcut,
    ReLU: ``resnet.py``'s :class:`~cnnzoo.models.resnet.Bottleneck` (the ImageNet ResNeXt's block) with
    ``groups`` = C and ``base_width`` = d, whose grouped 3x3 has C * d * 2^stage channels. Shortcuts are identities where the shape is kept, else 1x1 conv + BN (option B). The
    paper's parameter counts come out with a 10-way classifier (CIFAR-10); the CIFAR-100 nets have
    92,160 more. Options: cardinality, base_width, attn_layer (on the branch after its last BN),
    drop_path_rate (stochastic depth, linear over the blocks), drop_rate (dropout before the fc),
    act_layer, zero_init_last (default False, the paper's initialisation; True starts the last BN of each
    branch at zero, as timm does). Adaptive global pooling (the paper's 8x8 average pool at 32x32).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ClassifierHead, drop_path_rates, get_act, get_attn
from ..registry import register_model
from .base import ZooModel
from .resnet import RESNEXT, Bottleneck, init_resnet


class CifarResNeXt(ZooModel):
    """ResNeXt-29 for CIFAR (section 5.1): conv64, 3 stages x 3 blocks (256/512/1024 outputs), pool, fc."""

    # Stride-2 3x3 convs (pad 1) and 1x1 projections keep ceil(H/2) pixels: a 1x1 image runs.
    min_input_size = 1

    def __init__(
        self,
        cardinality: int = 8,
        base_width: int = 64,
        *,
        layers: tuple[int, ...] = (3, 3, 3),
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer="relu",
        attn_layer=None,
        zero_init_last: bool = False,
    ):
        super().__init__()
        for key, value in (("cardinality", cardinality), ("base_width", base_width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if not layers or min(layers) < 1:
            raise ValueError(f"layers must be positive block counts per stage, got {layers!r}")
        opts = {"groups": cardinality, "base_width": base_width, "attn_layer": get_attn(attn_layer),
                "act_layer": act_layer, "attn_key": "attn"}
        self.num_classes, self.in_channels = num_classes, in_channels
        self.cardinality, self.base_width = cardinality, base_width
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)  # (B, 3, 32, 32) -> (B, 64, 32, 32)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = get_act(act_layer, inplace=True)
        dpr = iter(drop_path_rates(drop_path_rate, sum(layers)))
        self.feature_info = []
        cin = 64
        for i, n in enumerate(layers):
            # Table 7: d = base_width at the first stage, doubled per stage; outputs 256, 512, 1024 (4 x 64 * 2^i).
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(cin, 64 * 2**i, stride if j == 0 else 1, drop_path=next(dpr), **opts))
                cin = blocks[-1].out_channels
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": cin, "reduction": 2**i, "module": f"layer{i + 1}"})
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        init_resnet(self, zero_init_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (B, 3, H, W) -> (B, 64, H, W)
        for i in range(1, len(self.feature_info) + 1):
            x = getattr(self, f"layer{i}")(x)
        return x  # -> (B, 1024, H/4, W/4)


_CARD = {
    "paper": RESNEXT,
    "input_size": (3, 32, 32),
    "dataset": "CIFAR-10",
    "deviations": ("adaptive global average pooling instead of the fixed 8x8 pool (identical at 32x32)",),
}


def _short(steps: int, acc: float, more: int, acc_more: float) -> dict:
    """The card with a short-budget note: the sweep shrinks these (71,588 and 142,053 GMACs a run at 28 px) to
    8-px digits."""
    return {**_CARD, "deviations": (*_CARD["deviations"], (
        f"short budget: the zoo sweep trains it on 8-px digits for only {steps} steps (its cost cap), where it "
        f"reaches {acc:.1f}% (seed 0); {more} steps reach {acc_more:.1f}%"))}


@register_model(CifarResNeXt, **_short(20, 13.3, 60, 37.6))
def resnext29_8x64d_cifar(**kwargs) -> CifarResNeXt:
    """ResNeXt-29, 8x64d for CIFAR-10 (Table 7)."""
    return CifarResNeXt(**{"cardinality": 8, "base_width": 64, **kwargs})


@register_model(CifarResNeXt, **_short(20, 10.1, 60, 72.0))
def resnext29_16x64d_cifar(**kwargs) -> CifarResNeXt:
    """ResNeXt-29, 16x64d for CIFAR-10 (Table 7)."""
    return CifarResNeXt(**{"cardinality": 16, "base_width": 64, **kwargs})
