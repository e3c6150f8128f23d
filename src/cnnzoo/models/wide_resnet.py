"""Wide Residual Networks for CIFAR. Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016.
https://arxiv.org/abs/1605.07146

Key ideas
    Very deep thin residual networks suffer from diminishing feature reuse: many blocks learn
    little, and each extra percent costs twice the depth. Widening the residual blocks by a factor
    k instead (more filters per 3x3 conv) trains faster on GPUs and is more accurate: a 16-layer
    WRN-16-8 beats the 1001-layer thin pre-activation ResNet, and WRN-28-10 (36.5M parameters)
    gets about 4% CIFAR-10 error (3.89% with dropout). Dropout *between* the two convs of a block
    (not on the identity path) regularises the wide blocks and helps consistently.

Which table the code reproduces
    Table 1: WRN-d-k is conv1 (3x3, 16) then three groups of N = (d-4)/6 blocks B(3,3) with
    16k, 32k, 64k filters on 32x32, 16x16 and 8x8 maps, then BN-ReLU, 8x8 average pooling and the
    classifier. Blocks use the pre-activation order BN-ReLU-conv (He et al. 2016, Fig. 1(c)/(d) of
    the WRN paper) with dropout between the convs; where the width or resolution changes the
    shortcut is a 1x1 convolution. The registered depths/widths are the paper's Table 4/5 rows:
    WRN-28-10 (36.5M), WRN-16-8 (11.0M) and WRN-40-4 (8.9M).

Training setup in the paper
    SGD with Nesterov momentum 0.9, weight decay 5e-4, batch 128, lr 0.1 divided by 5 at epochs
    60, 120 and 160, 200 epochs; dropout 0.3 on CIFAR (0.4 on SVHN); horizontal flips and random
    crops from 4-pixel reflection-padded images, per-channel mean/std normalisation (ZCA in some
    rows).

This implementation
    ``WideResNet`` is the pre-activation network of ``preact_resnet.py`` with basic units, 16k/32k/64k
    widths and the dropout between the two convs (``drop_rate``, default 0.3 as the paper uses on
    CIFAR; 0 gives the rows without dropout). The 1x1 projection shortcuts read the pre-activated
    input (as the authors' code does) and have no BN; the network's first unit splits after its
    BN-ReLU. Options: drop_rate, drop_path_rate (stochastic depth, not in the paper, off by
    default), attn_layer (after the second conv, before the sum), act_layer, zero_init_last (default
    False: the paper's He initialisation everywhere; True starts each block's second conv at zero, like
    timm resnetv2's option of that name). Adaptive global pooling instead of the fixed 8x8 one
    (identical at 32x32). BN running statistics come from data, as in ``preact_resnet.py``
    (``cnnzoo.layers.FreshBatchNorm2d``).
"""

from __future__ import annotations

from ..registry import register_model
from .preact_resnet import PreActResNet
from .resnet import WRN


class WideResNet(PreActResNet):
    """WRN-d-k for CIFAR (Table 1): conv16, 3 groups of (d-4)/6 wide pre-activation blocks (16k/32k/64k)."""

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.3,
        drop_path_rate: float = 0.0,
        act_layer="relu",
        attn_layer=None,
        zero_init_last: bool = False,
    ):
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6N+4 with N >= 1 (10, 16, 22, 28, 40...), got {depth!r}")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError(f"widen_factor must be a positive integer, got {widen_factor!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        n = (depth - 4) // 6  # blocks per group, as the paper and its code define depth
        super().__init__(
            (n, n, n),
            block="basic",
            widths=(16 * widen_factor, 32 * widen_factor, 64 * widen_factor),
            stem="cifar",
            stem_width=16,
            num_classes=num_classes,
            in_channels=in_channels,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            act_layer=act_layer,
            attn_layer=attn_layer,
            zero_init_last=zero_init_last,
        )
        self.depth, self.widen_factor = depth, widen_factor


_CARD = {
    "paper": WRN,
    "input_size": (3, 32, 32),
    "dataset": "CIFAR-10",
    "deviations": (
        ("BN running statistics start from the first training batch, and an untrained BN normalises with "
         "the batch's statistics in eval mode (FreshBatchNorm2d), not PyTorch's (0, 1) placeholders"),
        "adaptive global average pooling instead of the fixed 8x8 pool (identical at 32x32)",
    ),
}


@register_model(WideResNet, **_CARD)
def wide_resnet28_10_cifar(**kwargs) -> WideResNet:
    """WRN-28-10 for CIFAR-10 (N=4, widths 160/320/640, dropout 0.3)."""
    return WideResNet(**{"depth": 28, "widen_factor": 10, **kwargs})


@register_model(WideResNet, **_CARD)
def wide_resnet16_8_cifar(**kwargs) -> WideResNet:
    """WRN-16-8 for CIFAR-10 (N=2, widths 128/256/512, dropout 0.3)."""
    return WideResNet(**{"depth": 16, "widen_factor": 8, **kwargs})


@register_model(WideResNet, **_CARD)
def wide_resnet40_4_cifar(**kwargs) -> WideResNet:
    """WRN-40-4 for CIFAR-10 (N=6, widths 64/128/256, dropout 0.3)."""
    return WideResNet(**{"depth": 40, "widen_factor": 4, **kwargs})
