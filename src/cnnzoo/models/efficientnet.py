"""EfficientNet. Tan, Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019.
https://arxiv.org/abs/1905.11946

Key ideas
    Scaling a ConvNet up along one dimension (depth, width or input resolution) helps, but the gain saturates
    quickly (Fig. 3); the dimensions depend on each other (a larger image needs more layers for the receptive field
    and more channels for the finer patterns, Fig. 4). *Compound scaling* grows all three together with one
    coefficient phi (eq. 3): depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi, subject to
    alpha beta^2 gamma^2 ~= 2 so that FLOPs grow about 2^phi (FLOPs are proportional to d, w^2, r^2). A small grid
    search on the baseline at phi = 1 gave alpha = 1.2, beta = 1.1, gamma = 1.15. The baseline EfficientNet-B0 comes
    from a multi-objective architecture search (MnasNet's space, optimising ACC x (FLOPS/T)^-0.07): mobile inverted
    bottlenecks (MBConv, MobileNet v2's block) with squeeze-and-excitation, and the swish activation.

Which table the code reproduces
    Table 1: EfficientNet-B0, a 3x3/2 conv to 32 channels, seven stages of MBConv (expansion, kernel, stride,
    channels, layers) = (1, 3x3, 1, 16, 1), (6, 3x3, 2, 24, 2), (6, 5x5, 2, 40, 2), (6, 3x3, 2, 80, 3),
    (6, 5x5, 1, 112, 3), (6, 5x5, 2, 192, 4), (6, 3x3, 1, 320, 1), a 1x1 conv to 1280, pooling and the fc: 5,288,548
    parameters, 0.39 GMACs (Table 2: 5.3M, 0.39B). B1-B7 (Table 2) are B0 with the official per-model width, depth,
    resolution and dropout coefficients (width, depth, px, dropout): B1 (1.0, 1.1, 240, 0.2), B2 (1.1, 1.2, 260, 0.3),
    B3 (1.2, 1.4, 300, 0.3), B4 (1.4, 1.8, 380, 0.4), B5 (1.6, 2.2, 456, 0.4), B6 (1.8, 2.6, 528, 0.5),
    B7 (2.0, 3.1, 600, 0.5), the values of the released TF code that torchvision and timm use. They are *not*
    beta^phi / alpha^phi / gamma^phi for integer phi (phi = 7 gives width 1.95, depth 3.58, 596 px for B7); each
    card states both. Compound scaling as the paper writes it is `compound_scaling(phi)` and the ``phi`` option:
    ``create_model("efficientnet_b0", phi=1.5)`` builds B0 scaled by width 1.1^1.5 and depth 1.2^1.5, and the model's
    ``scaled_input_size`` is round(224 x 1.15^1.5) = 276 px. Rounding (ceil of the repeats, widths to multiples
    of 8) makes small phi cost more than the 2^phi of eq. 3: phi = 1 gives 2.57 times B0's MACs at 258 px.

Training setup in the paper
    RMSProp (decay 0.9, momentum 0.9), batch norm momentum 0.99, weight decay 1e-5, initial learning rate 0.256
    decaying by 0.97 every 2.4 epochs, swish, AutoAugment, stochastic depth with survival probability 0.8, dropout
    from 0.2 (B0) to 0.5 (B7), an exponential moving average of the weights.

This implementation
    torchvision's ``efficientnet_b0``-``b7`` layout and keys (``features.0`` stem, ``features.1``-``features.7`` the
    stages of ``block`` units, ``features.8`` the 1x1 head conv, ``classifier.1`` after dropout), so torchvision
    files load directly. The MBConv is the zoo's shared `cnnzoo.layers.InvertedResidual` (as MobileNet v2/v3 use it)
    with `cnnzoo.layers.SEModule` squeezing to (block input channels) / 4 with swish, sigmoid gate. Stochastic depth
    (``drop_path_rate``, 0.2) grows linearly with the block index, rate x i / (number of blocks) as in the TF code and
    torchvision (the last block stays below 0.2). Widths ``make_divisible(c x width, 8)``, repeats
    ceil(n x depth); the head conv is 4x the last stage's width (1280 for B0), as torchvision. BatchNorm eps 1e-5
    for B0-B4 and 1e-3 (TF's) for B5-B7, as torchvision's builders, whose B5-B7 weights are ports of the TF
    checkpoints (``bn_eps``). BatchNorm momentum 0.1 for all; torchvision's B5-B7 (and TF, decay 0.99) use 0.01
    (``bn_momentum=0.01``), which only slows how fast the running statistics follow training (see MobileNet v3's
    notes: a short run then evaluates at chance); checkpoints load the same. Cards give the paper's input sizes
    (B2: 260; torchvision evaluates B2 at 288). He (fan-out) conv init, BN to identity, classifier U(+-1/sqrt(n)),
    zero biases, as torchvision. Options: ``width_mult``, ``depth_mult``, ``phi`` (B0 only), ``drop_rate``,
    ``drop_path_rate``, ``act_layer``, ``bn_eps``, ``bn_momentum``, ``zero_init_last`` (default False; True starts
    the last BN scale of every residual MBConv at zero, so each starts as its shortcut: timm's option).

    Training from scratch: the cards carry the recipe hint ``zero_init_last``. With the torchvision init the deeper
    models do not learn under the zoo's SGD recipe: on mnist5k (seed 0) B2 is at 16.2% after 60 steps at 64 px and
    14.5% after 3 epochs (train loss 2.8), and B4-B7 stay at chance; the sum of 16-55 un-zeroed residual branches
    and a classifier drawn U(+-1/sqrt(10)) for ten classes (ten times the scale it has for 1000) start the logits
    large. Starting each residual block as its shortcut, B2 reaches 89.7% in the same 60 steps; in the zoo sweep
    (benchmarks/bench_zoo_training.py) B0-B3 reach 86.4, 89.5, 89.7, 86.0% at 64 px and B4-B7 (32 px, the sweep's
    cost cap) 45.7, 31.0, 77.3, 34.6%, where they were at 36.5, 22.7, 16.2, 11.6 and 10.1, 9.8, 8.1, 8.9% without it.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (
    InvertedResidual,
    SEModule,
    conv_norm_act,
    get_act,
    init_classifier_uniform,
    init_conv_bn,
    make_divisible,
    strided_feature_info,
)
from ..registry import Paper, register_model
from .base import ZooModel

__all__ = ["EfficientNet", "compound_scaling"]

EFFICIENTNET = Paper(
    "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    "M. Tan, Q. V. Le",
    2019,
    "https://arxiv.org/abs/1905.11946",
)

# Table 1, EfficientNet-B0: (expansion, kernel, stride, output channels, layers) per stage, after a 3x3/2 conv to
# 32 channels; then a 1x1 conv to 1280, pooling and the fc.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, BASE_RESOLUTION = 32, 224
# Section 4, eq. 3: the grid-searched constants of compound scaling (depth, width, resolution).
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


def compound_scaling(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
                     base_resolution: int = BASE_RESOLUTION) -> tuple[float, float, int]:
    """Eq. 3: (depth multiplier alpha^phi, width multiplier beta^phi, input resolution round(base x gamma^phi))."""
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not math.isfinite(phi):
        raise ValueError(f"phi must be a finite number, got {phi!r}")
    if min(alpha, beta, gamma) <= 0:
        raise ValueError(f"alpha, beta and gamma must be > 0, got {alpha}, {beta}, {gamma}")
    return alpha**phi, beta**phi, round(base_resolution * gamma**phi)


class EfficientNet(ZooModel):
    """EfficientNet-B0 (Table 1) scaled in width and depth (B1-B7, or any phi), torchvision's layout."""

    def __init__(self, *, width_mult: float = 1.0, depth_mult: float = 1.0, phi: float | None = None,
                 num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.2, act_layer="silu", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, zero_init_last: bool = False):
        super().__init__()
        if phi is not None:
            if (width_mult, depth_mult) != (1.0, 1.0):
                raise ValueError(f"phi scales the B0 baseline by compound scaling; it cannot be combined with "
                                 f"width_mult={width_mult}, depth_mult={depth_mult} (use efficientnet_b0 with phi, "
                                 f"or width_mult/depth_mult without it)")
            depth_mult, width_mult, self.scaled_input_size = compound_scaling(phi)
        else:
            self.scaled_input_size = None
        if not width_mult > 0 or not depth_mult > 0:
            raise ValueError(f"width_mult and depth_mult must be > 0, got {width_mult}, {depth_mult}")
        if not 0 <= drop_rate < 1 or not 0 <= drop_path_rate < 1:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate}, {drop_path_rate}")
        if not bn_eps > 0 or not 0 <= bn_momentum <= 1:
            raise ValueError(f"bn_eps must be > 0 and bn_momentum in [0, 1], got {bn_eps}, {bn_momentum}")
        get_act(act_layer)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.width_mult, self.depth_mult = width_mult, depth_mult
        norm = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        ch = make_divisible(STEM * width_mult)
        layers: list[nn.Module] = [conv_norm_act(in_channels, ch, 3, 2, norm_layer=norm, act_layer=act_layer)]
        chain = [("features.0", ch, 2)]
        repeats = [math.ceil(n * depth_mult) for *_, n in STAGES]
        total, index = sum(repeats), 0
        for (t, k, s, c, _), n in zip(STAGES, repeats):
            out = make_divisible(c * width_mult)
            stage = []
            for i in range(n):
                # SE squeezes to a quarter of the block's *input* channels, with swish (the TF code's se_ratio 0.25)
                attn = partial(SEModule, hidden_channels=max(1, ch // 4), act_layer=act_layer, gate_layer="sigmoid")
                stage.append(InvertedResidual(ch, out, make_divisible(ch * t), k, s if i == 0 else 1,
                                              act_layer=act_layer, norm_layer=norm, attn_layer=attn,
                                              drop_path_rate=drop_path_rate * index / total))
                ch, index = out, index + 1
            layers.append(nn.Sequential(*stage))
            chain.append((f"features.{len(layers) - 1}", out, s))
        self.num_features = 4 * ch  # 1280 = 4 x 320 for B0
        layers.append(conv_norm_act(ch, self.num_features, 1, norm_layer=norm, act_layer=act_layer))
        chain.append((f"features.{len(layers) - 1}", self.num_features, 1))
        self.features = nn.Sequential(*layers)
        self.feature_info = strided_feature_info(chain)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes))
        init_conv_bn(self)
        for m in self.modules():  # torchvision's init for the rest
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)
        init_classifier_uniform(self.classifier[1])
        if zero_init_last:  # each residual block starts as its shortcut (timm's zero_init_last)
            for m in self.modules():
                if isinstance(m, InvertedResidual) and m.use_res_connect:
                    nn.init.zeros_([b for b in m.block.modules() if isinstance(b, nn.BatchNorm2d)][-1].weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, H, W) -> (B, 1280 w, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier[1] = nn.Linear(self.num_features, num_classes, device=self.classifier[1].weight.device)
        init_classifier_uniform(self.classifier[1])


# Start every residual block as its shortcut when training (module docstring, "Training from scratch").
_RECIPE = {"model.options.zero_init_last": True}


def _card(n: int, width: float, depth: float, size: int) -> dict:
    """The register_model arguments of EfficientNet-Bn: its paper input size, torchvision counterpart and how its
    official coefficients compare with compound scaling at phi = n."""
    deviations = []
    if n:
        d, w, r = compound_scaling(n)
        deviations.append(f"official coefficients width {width}, depth {depth}, {size} px; compound scaling with "
                          f"phi={n} (alpha=1.2, beta=1.1, gamma=1.15) would give width {w:.3f}, depth {d:.3f}, {r} px")
    if n >= 5:
        deviations.append("BatchNorm eps 1e-3 as torchvision's B5-B7 (B0-B4: 1e-5); momentum 0.1 where torchvision's "
                          "B5-B7 train with 0.01 (bn_momentum=0.01)")
    if n == 2:
        deviations.append("card input 260 as the paper; torchvision evaluates B2 at 288")
    return {"paper": EFFICIENTNET, "input_size": (3, size, size), "counterparts": {"torchvision": f"efficientnet_b{n}"},
            "deviations": tuple(deviations), "recipe": _RECIPE}


def _b(width: float, depth: float, dropout: float, kwargs: dict, tf_bn: bool = False) -> EfficientNet:
    tf = {"bn_eps": 1e-3} if tf_bn else {}  # torchvision's B5-B7 (TF-ported weights)
    return EfficientNet(**{"width_mult": width, "depth_mult": depth, "drop_rate": dropout, **tf, **kwargs})


@register_model(EfficientNet, **_card(0, 1.0, 1.0, 224))
def efficientnet_b0(**kwargs) -> EfficientNet:
    """EfficientNet-B0 (Table 1: width 1.0, depth 1.0, 224 px, dropout 0.2; phi=... scales it by eq. 3)."""
    return _b(1.0, 1.0, 0.2, kwargs)


@register_model(EfficientNet, **_card(1, 1.0, 1.1, 240))
def efficientnet_b1(**kwargs) -> EfficientNet:
    """EfficientNet-B1 (width 1.0, depth 1.1, 240 px, dropout 0.2)."""
    return _b(1.0, 1.1, 0.2, kwargs)


@register_model(EfficientNet, **_card(2, 1.1, 1.2, 260))
def efficientnet_b2(**kwargs) -> EfficientNet:
    """EfficientNet-B2 (width 1.1, depth 1.2, 260 px, dropout 0.3)."""
    return _b(1.1, 1.2, 0.3, kwargs)


@register_model(EfficientNet, **_card(3, 1.2, 1.4, 300))
def efficientnet_b3(**kwargs) -> EfficientNet:
    """EfficientNet-B3 (width 1.2, depth 1.4, 300 px, dropout 0.3)."""
    return _b(1.2, 1.4, 0.3, kwargs)


@register_model(EfficientNet, **_card(4, 1.4, 1.8, 380))
def efficientnet_b4(**kwargs) -> EfficientNet:
    """EfficientNet-B4 (width 1.4, depth 1.8, 380 px, dropout 0.4)."""
    return _b(1.4, 1.8, 0.4, kwargs)


@register_model(EfficientNet, **_card(5, 1.6, 2.2, 456))
def efficientnet_b5(**kwargs) -> EfficientNet:
    """EfficientNet-B5 (width 1.6, depth 2.2, 456 px, dropout 0.4)."""
    return _b(1.6, 2.2, 0.4, kwargs, tf_bn=True)


@register_model(EfficientNet, **_card(6, 1.8, 2.6, 528))
def efficientnet_b6(**kwargs) -> EfficientNet:
    """EfficientNet-B6 (width 1.8, depth 2.6, 528 px, dropout 0.5)."""
    return _b(1.8, 2.6, 0.5, kwargs, tf_bn=True)


@register_model(EfficientNet, **_card(7, 2.0, 3.1, 600))
def efficientnet_b7(**kwargs) -> EfficientNet:
    """EfficientNet-B7 (width 2.0, depth 3.1, 600 px, dropout 0.5)."""
    return _b(2.0, 3.1, 0.5, kwargs, tf_bn=True)
