"""BN-Inception. Ioffe, Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", ICML 2015. https://arxiv.org/abs/1502.03167
SE-BN-Inception: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018. https://arxiv.org/abs/1709.01507

Key ideas
    Batch Normalization normalises each activation over the mini-batch before the non-linearity
    and learns a scale and shift back (Algorithm 1), so the distribution each layer sees stays
    stable during training: much higher learning rates, less care with initialisation, dropout can
    go, and LRN is unnecessary. BN-Inception is GoogLeNet with BN before every ReLU and a few
    architectural changes (section 4.2.1): the 5x5 convolutions become two stacked 3x3 (up to 128
    filters), 28x28 gets a third module, pooling is average or max per module, and the grid is
    reduced inside the modules 3c and 4e (stride-2 convs beside a max pool, no pooling layer
    between stages). SE-BN-Inception (SENet, Fig. 2) adds a Squeeze-and-Excitation block (r = 16)
    on the output of every Inception module.

Which table the code reproduces
    Figure 5 of the BN paper (appendix): per module #1x1, #3x3 reduce, #3x3, double #3x3 reduce,
    double #3x3, pool type + pool projection; "pass through" max pool and stride 2 in 3c and 4e.

Training setup in the paper
    Section 4.2: SGD with momentum, the learning rate raised 5x (or 30x for BN-x30) and decayed 6x
    faster, dropout removed, L2 weight decay reduced 5x, LRN removed, training examples shuffled
    more thoroughly, fewer photometric distortions; Inception's other settings. SENet trains SE-BN-
    Inception with SGD momentum 0.9, batch 1024, lr 0.6 / 10 every 30 epochs, 100 epochs.

This implementation
    ``bn_inception`` follows Figure 5 with conv biases before each BatchNorm, as the released
    Caffe model and osmr's port (whose 11,295,240 parameters are the published count) have them,
    ceil-mode stem pools (Caffe's rounding), max pools padded like the stride-2 convs beside them in 3c
    and 4e (so every input size works), and no dropout (section 4.2.1 removes it; ``drop_rate``
    adds it back). ``attn_layer`` ("se" or None) puts an attention block on every Inception module's
    output; ``se_bn_inception`` registers it with SE blocks of reduction 16 (SENet Fig. 2).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..layers import ConvNormAct, get_attn, init_conv_bn
from ..registry import Paper, register_model
from .base import ZooModel
from .resnet import SENET

BN_PAPER = Paper(
    "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
    "S. Ioffe, C. Szegedy",
    2015,
    "https://arxiv.org/abs/1502.03167",
)

# Figure 5: name -> (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj).
# #1x1 = 0 and pool proj = 0 mark the stride-2 modules ("max + pass through").
CFG = [
    ("inception_3a", (64, 64, 64, 64, 96, "avg", 32)),
    ("inception_3b", (64, 64, 96, 64, 96, "avg", 64)),
    ("inception_3c", (0, 128, 160, 64, 96, "max", 0)),
    ("inception_4a", (224, 64, 96, 96, 128, "avg", 128)),
    ("inception_4b", (192, 96, 128, 96, 128, "avg", 128)),
    ("inception_4c", (160, 128, 160, 128, 160, "avg", 128)),
    ("inception_4d", (96, 128, 192, 160, 192, "avg", 128)),
    ("inception_4e", (0, 128, 192, 192, 256, "max", 0)),
    ("inception_5a", (352, 192, 320, 160, 224, "avg", 128)),
    ("inception_5b", (352, 192, 320, 192, 224, "max", 128)),
]

# Conv (with bias, as the released Caffe model) -> BatchNorm -> ReLU.
Conv = partial(ConvNormAct, bias=True)


class InceptionModule(nn.Module):
    """A Figure 5 Inception module: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool (-> 1x1), concatenated."""

    def __init__(
        self, in_chs: int, c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: str, proj: int, attn_layer=None
    ):
        super().__init__()
        stride = 2 if c1 == 0 else 1  # 3c and 4e reduce the grid inside the module
        self.branch1x1 = Conv(in_chs, c1, 1) if c1 else None
        self.branch3x3 = nn.Sequential(Conv(in_chs, c3r, 1), Conv(c3r, c3, 3, stride=stride))
        self.branch3x3dbl = nn.Sequential(Conv(in_chs, d3r, 1), Conv(d3r, d3, 3), Conv(d3, d3, 3, stride=stride))
        if pool == "max":
            # Padded like the stride-2 convs beside it so the branches agree on every input size (the Caffe
            # model's unpadded ceil-mode pool does so only on even maps).
            pool_layer = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            pool_layer = nn.AvgPool2d(3, stride=1, padding=1)
        self.branch_pool = nn.Sequential(pool_layer, Conv(in_chs, proj, 1)) if proj else pool_layer
        self.out_chs = c1 + c3 + d3 + (proj or in_chs)
        self.attn = attn_layer(self.out_chs) if attn_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, out_chs, H / stride, W / stride)
        outs = [self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)]
        if self.branch1x1 is not None:
            outs.insert(0, self.branch1x1(x))
        return self.attn(torch.cat(outs, 1))


class BNInception(ZooModel):
    """BN-Inception (BN paper, Figure 5), optionally with an attention block on every module (SE-BN-Inception).

    Args:
        drop_rate: dropout before the classifier (0: section 4.2.1 removes dropout).
        attn_layer: None, "se" (or another name of ``cnnzoo.layers.ATTN_LAYERS``, or a class taking
            channels) applied to each Inception module's concatenated output.
    """

    min_input_size = 7

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.0, attn_layer=None):
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        attn = get_attn(attn_layer)
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 1024
        self.stem = nn.Sequential(
            Conv(in_channels, 64, 7, stride=2),  # (B, 3, 224, 224) -> (B, 64, 112, 112)
            nn.MaxPool2d(3, stride=2, ceil_mode=True),  # -> 56
            Conv(64, 64, 1),
            Conv(64, 192, 3),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),  # -> (B, 192, 28, 28)
        )
        in_chs = 192
        for name, widths in CFG:
            block = InceptionModule(in_chs, *widths, attn_layer=attn)
            setattr(self, name, block)
            in_chs = block.out_chs
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(1024, num_classes)
        self.feature_info = [
            {"num_chs": 64, "reduction": 2, "module": "stem.0"},
            {"num_chs": 192, "reduction": 4, "module": "stem.3"},
            {"num_chs": 320, "reduction": 8, "module": "inception_3b"},
            {"num_chs": 608, "reduction": 16, "module": "inception_4d"},
            {"num_chs": 1024, "reduction": 32, "module": "inception_5b"},
        ]
        init_conv_bn(self)  # He (fan-out) for the convs; the BNs keep their (1, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name, _ in CFG:
            x = getattr(self, name)(x)  # 28x28 -> 14x14 at 3c -> 7x7 at 4e
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(1024, num_classes, device=self.fc.weight.device)


@register_model(
    BNInception,
    paper=BN_PAPER,
    input_size=(3, 224, 224),
    dataset="ImageNet",
    deviations=("conv biases before BatchNorm, as in the released Caffe model",),
)
def bn_inception(**kwargs) -> BNInception:
    """BN-Inception (Figure 5 of the Batch Normalization paper)."""
    return BNInception(**kwargs)


@register_model(
    BNInception,
    paper=SENET,
    input_size=(3, 224, 224),
    dataset="ImageNet",
    deviations=("conv biases before BatchNorm, as in the released Caffe model",),
)
def se_bn_inception(**kwargs) -> BNInception:
    """SE-BN-Inception (SENet Fig. 2): an SE block (r = 16) on every Inception module's output."""
    return BNInception(**{"attn_layer": "se", **kwargs})
