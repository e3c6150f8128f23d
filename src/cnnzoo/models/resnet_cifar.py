"""The CIFAR-10 residual networks and their plain counterparts. He, Zhang, Ren, Sun, "Deep Residual Learning for
Image Recognition", CVPR 2016. https://arxiv.org/abs/1512.03385

Key ideas
    Deeper plain networks train *worse* than shallower ones (the degradation problem, Fig. 1 and
    Fig. 6 left): the solver struggles to fit even the identity with a stack of nonlinear layers.
    A residual block lets its layers fit F(x) = H(x) - x and adds the input back through a
    shortcut, y = F(x) + x, so an unneeded layer only has to push its weights towards zero. With
    shortcuts, accuracy keeps improving from 20 to 110 layers (Fig. 6 middle); 1202 layers still
    train but overfit (7.93% error vs 6.43% for 110).

Which table the code reproduces
    Section 4.2 and the table in it: a 3x3 conv with 16 filters, then three stages of n basic
    blocks (two 3x3 convs each) on 32x32, 16x16 and 8x8 maps with 16, 32 and 64 filters, then
    global average pooling and a 10-way fc; 6n+2 weighted layers. n = 3, 5, 7, 9, 18, 200 give
    ResNet-20/32/44/56/110/1202 (0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M parameters). Down-sampling
    is by stride-2 convolutions in the first block of stages 2 and 3, and "we use identity
    shortcuts in all cases (i.e., option A)": the shortcut subsamples the input and pads the new
    channels with zeros, so the residual and plain networks have exactly the same parameters.
    The plain-20/32/44/56 networks of Fig. 6 (left) are the same stacks without any shortcut.

Training setup in the paper
    45k/5k train/val split for tuning, then the full 50k training set; 4-pixel zero padding, random
    32x32 crops and horizontal flips; per-pixel mean subtraction. SGD momentum 0.9, weight decay
    1e-4, batch 128 on two GPUs, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k.
    ResNet-110 starts at lr 0.01 until training error falls below 80% (about 400 iterations) and
    then goes back to 0.1. BN after every conv, no dropout, He initialisation.

This implementation
    The blocks are ``resnet.py``'s :class:`~cnnzoo.models.resnet.BasicBlock` (one block for the ImageNet and
    CIFAR ResNets). ``shortcut`` selects the paper's options (section 3.3): "A" (default, the paper's CIFAR
    choice) zero-pads the extra channels (identity channels first, zeros after, as in fb.resnet.torch) after
    taking every other pixel; "B" uses a 1x1 stride-2 conv + BN only where the shape changes; "C" uses a 1x1
    conv + BN on every block; "none" removes the shortcut: the ``plain*_cifar`` networks.
    Options: attn_layer (a channel attention module on the residual branch after its last BN, as in
    SE-ResNet; stored as ``attn``), drop_path_rate (stochastic depth on the residual branch, growing linearly
    over the blocks; refused for plain networks, which have no shortcut to keep the signal), act_layer,
    zero_init_last (default False, the paper's initialisation; True starts the last BN of each residual
    branch at zero, so each block starts as its shortcut, as timm does: on mnist5k in 80 steps that
    leaves ResNet-20 near chance, benchmarks/bench_zoo_training.py).
    Global pooling is adaptive, so any input size runs (the paper's 8x8 average pool equals it on
    32x32). Convs are initialised with He's fan-out normal, BN with (1, 0).

    BN running statistics come from data (``cnnzoo.layers.FreshBatchNorm2d``): until a BN has seen a
    training batch it normalises with the batch's own statistics in eval mode too, and its first
    training batch sets its running statistics. With PyTorch's placeholders (mean 0, variance 1) an
    untrained BN is the identity in eval mode, so each He-initialised block about doubles the signal's
    variance and ResNet-1202's 600 blocks overflow float32 (NaN logits at initialisation).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..layers import ClassifierHead, FreshBatchNorm2d, drop_path_rates, get_act, get_attn
from ..registry import register_model
from .base import ZooModel
from .resnet import RESNET, SHORTCUTS, BasicBlock, init_resnet


class CifarResNet(ZooModel):
    """ResNet-(6n+2) for CIFAR (section 4.2): 3x3 conv16, 3 stages of n basic blocks (16/32/64), pool, fc."""

    # Every conv pads to keep ceil(H/s) pixels, so a 1x1 image runs through the whole network.
    min_input_size = 1

    def __init__(
        self,
        depth: int = 20,
        *,
        shortcut: str = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer="relu",
        attn_layer=None,
        zero_init_last: bool = False,
    ):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, 1202...), got {depth!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid: 'A', 'B', 'C' or 'none' (plain network)")
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be 3 positive channel counts, got {widths!r}")
        if shortcut == "none" and drop_path_rate > 0:
            raise ValueError(
                "drop_path_rate needs shortcuts: a plain network (shortcut='none') would drop its whole "
                "signal; use drop_path_rate=0 or shortcut 'A', 'B' or 'C'"
            )
        if shortcut == "A" and any(b < a for a, b in itertools.pairwise(widths)):
            raise ValueError(f"shortcut 'A' zero-pads channels, so widths must not decrease, got {widths!r}")
        n = (depth - 2) // 6
        opts = {"shortcut": shortcut, "attn_layer": get_attn(attn_layer), "norm_layer": FreshBatchNorm2d,
                "act_layer": act_layer, "attn_key": "attn"}
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, widths[-1]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)  # (B, 3, 32, 32) -> (B, 16, 32, 32)
        self.bn1 = FreshBatchNorm2d(widths[0])
        self.act1 = get_act(act_layer, inplace=True)
        dpr = iter(drop_path_rates(drop_path_rate, 3 * n))
        self.feature_info = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2  # stages on 32x32, 16x16, 8x8 maps
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, stride if j == 0 else 1, drop_path=next(dpr), **opts))
                cin = w
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": w, "reduction": 2**i, "module": f"layer{i + 1}"})
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        init_resnet(self, zero_init_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (B, 3, H, W) -> (B, 16, H, W)
        return self.layer3(self.layer2(self.layer1(x)))  # -> (B, 64, H/4, W/4)


_CARD = {
    "paper": RESNET,
    "input_size": (3, 32, 32),
    "dataset": "CIFAR-10",
    "deviations": (
        "adaptive global average pooling instead of the fixed 8x8 pool (identical at 32x32)",
        ("BN running statistics start from the first training batch, and an untrained BN normalises with "
         "the batch's statistics in eval mode (FreshBatchNorm2d), not PyTorch's (0, 1) placeholders"),
    ),
}


@register_model(CifarResNet, **_CARD)
def resnet20_cifar(**kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR-10 (n=3, option A shortcuts)."""
    return CifarResNet(**{"depth": 20, **kwargs})


@register_model(CifarResNet, **_CARD)
def resnet32_cifar(**kwargs) -> CifarResNet:
    """ResNet-32 for CIFAR-10 (n=5, option A shortcuts)."""
    return CifarResNet(**{"depth": 32, **kwargs})


@register_model(CifarResNet, **_CARD)
def resnet44_cifar(**kwargs) -> CifarResNet:
    """ResNet-44 for CIFAR-10 (n=7, option A shortcuts)."""
    return CifarResNet(**{"depth": 44, **kwargs})


@register_model(CifarResNet, **_CARD)
def resnet56_cifar(**kwargs) -> CifarResNet:
    """ResNet-56 for CIFAR-10 (n=9, option A shortcuts)."""
    return CifarResNet(**{"depth": 56, **kwargs})


# Card recipe hint of the 110- and 1202-layer networks: the paper's lr 0.01 start ("0.1 is slightly too large to
# start converging", Sec. 4.2), held for the whole (short) run rather than raised back to 0.1 after ~400 iterations.
# Measured on mnist5k at the zoo sweep's budget (16 px, 80 steps, seed 0): resnet110_cifar 15.5% at the digits
# recipe's lr 0.05, 66.3% at 0.01.
_DEEP_RECIPE = {"optim.lr": 0.01}
# ResNet-1202 also starts each residual branch at zero (the last BN's scale; the model's default stays the paper's
# He init). Measured at 8 px, 100 steps, seed 0: 10.0% (train loss 6.5) with the paper's init, 49.9% (2.2) with it.
_DEEPEST_RECIPE = {**_DEEP_RECIPE, "model.options.zero_init_last": True}


@register_model(CifarResNet, recipe=_DEEP_RECIPE, **_CARD)
def resnet110_cifar(**kwargs) -> CifarResNet:
    """ResNet-110 for CIFAR-10 (n=18, option A shortcuts)."""
    return CifarResNet(**{"depth": 110, **kwargs})


@register_model(CifarResNet, recipe=_DEEPEST_RECIPE, **_CARD)
def resnet1202_cifar(**kwargs) -> CifarResNet:
    """ResNet-1202 for CIFAR-10 (n=200, option A shortcuts; overfits in the paper)."""
    return CifarResNet(**{"depth": 1202, **kwargs})


@register_model(CifarResNet, **_CARD)
def plain20_cifar(**kwargs) -> CifarResNet:
    """Plain-20 for CIFAR-10: ResNet-20's layers without shortcuts (Fig. 6 left)."""
    return CifarResNet(**{"depth": 20, "shortcut": "none", **kwargs})


@register_model(CifarResNet, **_CARD)
def plain32_cifar(**kwargs) -> CifarResNet:
    """Plain-32 for CIFAR-10: ResNet-32's layers without shortcuts (Fig. 6 left)."""
    return CifarResNet(**{"depth": 32, "shortcut": "none", **kwargs})


@register_model(CifarResNet, **_CARD)
def plain44_cifar(**kwargs) -> CifarResNet:
    """Plain-44 for CIFAR-10: ResNet-44's layers without shortcuts (Fig. 6 left)."""
    return CifarResNet(**{"depth": 44, "shortcut": "none", **kwargs})


@register_model(CifarResNet, **_CARD)
def plain56_cifar(**kwargs) -> CifarResNet:
    """Plain-56 for CIFAR-10: ResNet-56's layers without shortcuts (Fig. 6 left)."""
    return CifarResNet(**{"depth": 56, "shortcut": "none", **kwargs})
