"""VGG. Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015. https://arxiv.org/abs/1409.1556

Key ideas
    Depth matters: stacks of 3x3 convolutions (stride 1, padding 1) between five 2x2 max-pools
    reach 16-19 weight layers. Two stacked 3x3 convs see 5x5 and three see 7x7 with fewer
    parameters (27C^2 vs 49C^2) and more non-linearities. 1x1 convs (configuration C) add
    non-linearity without changing the receptive field; LRN (A-LRN) does not help.

Which table the code reproduces
    Table 1, configurations A (11 weight layers), A-LRN, B (13), C (16, with three 1x1 convs),
    D (16) and E (19), written in the table's own notation ("conv3-64", "maxpool", "LRN"), then
    fc 4096 -> fc 4096 -> fc 1000. Table 2's parameter counts (133, 133, 134, 138, 144 million).

Training setup in the paper
    SGD, batch 256, momentum 0.9, weight decay 5e-4, dropout 0.5 in fc6/fc7, lr 0.01 divided by
    10 three times (74 epochs); the deeper nets start from configuration A's weights (random
    init N(0, 0.01) for the rest; later Glorot init). Training scale S = 256, 384 or jittered in
    [256, 512]; dense (fully convolutional) and multi-crop evaluation (Section 3.2).

This implementation
    Keys and layers are torchvision's (``features.N``, ``avgpool`` adaptive 7x7,
    ``classifier.0/3/6``), so torchvision checkpoints load unchanged, and so is the init
    (Kaiming-normal fan-out convs, N(0, 0.01) linears, zero biases). ``vgg*_bn`` are torchvision's
    BatchNorm variants (conv, BN, ReLU; not in the paper). ``vgg16_c`` is configuration C and
    ``vgg11_lrn`` configuration A-LRN (AlexNet's LRN constants, as the paper cites); neither has a
    torchvision counterpart. The adaptive 7x7 pool is the identity at 224x224 and lets other sizes
    run through the fc layers; the paper instead converts the fc layers to convolutions for
    dense evaluation.

    Every VGG's card recipe sets the paper's learning rate, 0.01: fc6 reads 25,088 features, so a
    step moves its output by lr x |x|^2 and at the mnist5k recipe's 0.03 vgg11_bn diverges (train loss
    6.5, 14.6% test accuracy after 60 steps at 64 px); at 0.01 it reaches 54.2% after 60 steps at 32 px.

    Without BatchNorm the deeper configurations (B, C, D, E) sit on their initial plateau (loss ln 10) for
    the first epochs of a run from random weights, the longer the deeper: Section 3.1's reason for starting
    them from a trained configuration A, which ``model.init_from`` does (the first four convs and the three
    fc layers, as the paper). Each card's "short budget" note gives the measured figures.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..layers import LocalResponseNorm, get_norm
from ..registry import Paper, register_model
from .base import ZooModel

VGGPAPER = Paper(
    "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    "K. Simonyan, A. Zisserman",
    2014,
    "https://arxiv.org/abs/1409.1556",
)

# Table 1, in the paper's notation: "convK-C" = KxK conv with C output channels (stride 1,
# 'same' padding) followed by ReLU; "maxpool" = 2x2 max-pool, stride 2; "LRN" = local response norm.
CONFIGS: dict[str, list[str]] = {
    "A": ["conv3-64", "maxpool", "conv3-128", "maxpool", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool", "conv3-512", "conv3-512", "maxpool"],
    "A-LRN": ["conv3-64", "LRN", "maxpool", "conv3-128", "maxpool", "conv3-256", "conv3-256", "maxpool",
              "conv3-512", "conv3-512", "maxpool", "conv3-512", "conv3-512", "maxpool"],
    "B": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool", "conv3-512", "conv3-512", "maxpool"],
    "C": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv1-256", "maxpool", "conv3-512", "conv3-512", "conv1-512", "maxpool",
          "conv3-512", "conv3-512", "conv1-512", "maxpool"],
    "D": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "maxpool", "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "maxpool"],
    "E": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool"],
}
_CONV = re.compile(r"conv(\d+)-(\d+)")


class VGG(ZooModel):
    """VGG of Table 1: ``cfg`` is a configuration letter ("A", "A-LRN", "B", "C", "D", "E")."""

    min_input_size = 32  # five 2x2/2 pools
    dense_window = 7  # Sec. 3.2: "the first FC layer to a 7x7 conv. layer" in dense evaluation

    def __init__(self, cfg: str = "D", num_classes: int = 1000, in_channels: int = 3, norm_layer=None,
                 drop_rate: float = 0.5):
        super().__init__()
        if cfg not in CONFIGS:
            raise ValueError(f"unknown VGG configuration {cfg!r}; valid: {', '.join(CONFIGS)}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.cfg, self.num_classes, self.in_channels = cfg, num_classes, in_channels
        layers: list[nn.Module] = []
        self.feature_info = []
        channels, reduction = in_channels, 1
        for item in CONFIGS[cfg]:
            if item == "maxpool":
                layers.append(nn.MaxPool2d(2, 2))
                reduction *= 2
                self.feature_info.append({"num_chs": channels, "reduction": reduction, "module": f"features.{len(layers) - 1}"})
            elif item == "LRN":
                layers.append(LocalResponseNorm())  # Section 2.3 uses Krizhevsky et al.'s LRN
            else:
                k, out = map(int, _CONV.fullmatch(item).groups())
                layers.append(nn.Conv2d(channels, out, k, padding=k // 2))
                if norm_layer is not None:
                    layers.append(get_norm(norm_layer, out))
                layers.append(nn.ReLU(inplace=True))
                channels = out
        self.num_features = channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(drop_rate),  # fc6
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(drop_rate),  # fc7
            nn.Linear(4096, num_classes),  # fc8
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG init (the paper's N(0, 0.01) + pre-training from A does not train deep nets alone)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def head_hidden_size(self) -> int:
        return 4096

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, 224, 224) -> (B, 512, 7, 7)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # -> (B, 25088)
        x = self.classifier[:-1](x)  # -> (B, 4096)
        return x if pre_logits else self.classifier[-1](x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        fc = nn.Linear(4096, num_classes).to(self.classifier[-1].weight.device)
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)
        self.classifier[-1] = fc


_POOL_DEV = "adaptive 7x7 average pool before fc6 (the identity at 224x224) instead of the paper's dense evaluation"
_BN_DEV = "BatchNorm after every conv (torchvision's variant; the paper predates BN)"
# Section 3.1's learning rate: the mnist5k recipe's 0.03 makes vgg11_bn diverge (module docstring).
_RECIPE = {"optim.lr": 0.01}
_PLAIN = {"paper": VGGPAPER, "input_size": (3, 224, 224), "dataset": "ImageNet", "deviations": (_POOL_DEV,), "recipe": _RECIPE}
_BN = {"paper": VGGPAPER, "input_size": (3, 224, 224), "dataset": "ImageNet", "deviations": (_POOL_DEV, _BN_DEV),
           "recipe": _RECIPE}


def _vgg(cfg: str, bn: bool, kwargs: dict) -> VGG:
    return VGG(**{"cfg": cfg, **({"norm_layer": "batchnorm"} if bn else {}), **kwargs})


@register_model(VGG, counterparts={"torchvision": "vgg11"}, **_PLAIN)
def vgg11(**kwargs) -> VGG:
    """VGG-11, configuration A of Table 1."""
    return _vgg("A", False, kwargs)


@register_model(VGG, counterparts={"torchvision": "vgg11_bn"}, **_BN)
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 (configuration A) with BatchNorm, as torchvision."""
    return _vgg("A", True, kwargs)


# Section 3.1: "bad initialisation can stall learning ... in deep nets", so the paper trained configuration A from
# random weights and started the deeper ones from A's layers (``model.init_from``; cnnzoo.train.init).
_SHORT_13 = ("short budget: without normalisation the 13-layer net leaves its initial plateau late (Sec. 3.1: bad "
             "initialisation stalls deep nets; the paper starts B-E from A's layers, model.init_from): on 32-px digits "
             "(seed 0) the zoo sweep's 60 steps leave it at 10.0% (loss 2.30), 2 epochs reach 60.1%")


@register_model(VGG, counterparts={"torchvision": "vgg13"}, **{**_PLAIN, "deviations": (_POOL_DEV, _SHORT_13)})
def vgg13(**kwargs) -> VGG:
    """VGG-13, configuration B of Table 1."""
    return _vgg("B", False, kwargs)


@register_model(VGG, counterparts={"torchvision": "vgg13_bn"}, **_BN)
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 (configuration B) with BatchNorm, as torchvision."""
    return _vgg("B", True, kwargs)


_SHORT_16 = ("short budget: without normalisation the 16-layer net leaves its initial plateau late (Sec. 3.1, as "
             "vgg13): on 32-px digits (seed 0) the zoo sweep's 60 steps leave it at 18.3% (loss 2.30); 4 epochs reach "
             "89.2% (14.7% after the first, 37.3% after the second)")


@register_model(VGG, counterparts={"torchvision": "vgg16"}, **{**_PLAIN, "deviations": (_POOL_DEV, _SHORT_16)})
def vgg16(**kwargs) -> VGG:
    """VGG-16, configuration D of Table 1."""
    return _vgg("D", False, kwargs)


@register_model(VGG, counterparts={"torchvision": "vgg16_bn"}, **_BN)
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 (configuration D) with BatchNorm, as torchvision."""
    return _vgg("D", True, kwargs)


_SHORT_19 = ("short budget: the zoo sweep's cost cap trains it on 32-px digits for 50 steps (17.2%, seed 0), where "
             "the last block works on 2x2 maps and zero padding drops 5/9 of each 3x3 conv's inputs: at initialisation "
             "the logits are 3x smaller than at 64 px (std 0.016 vs 0.051) and 4 epochs at 32 px still leave it at "
             "14.0%; at the sweep's own 64 px, 60 steps reach 24.8%, and started as the paper starts it, from a "
             "trained configuration A (model.init_from a 4-epoch vgg11 run, 93.5%), 50 steps at 32 px reach 74.5%")


@register_model(VGG, counterparts={"torchvision": "vgg19"}, **{**_PLAIN, "deviations": (_POOL_DEV, _SHORT_19)})
def vgg19(**kwargs) -> VGG:
    """VGG-19, configuration E of Table 1."""
    return _vgg("E", False, kwargs)


@register_model(VGG, counterparts={"torchvision": "vgg19_bn"}, **_BN)
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 (configuration E) with BatchNorm, as torchvision."""
    return _vgg("E", True, kwargs)


_SHORT_C = ("short budget: without normalisation configuration C leaves its initial plateau later still (Sec. 3.1): "
            "the zoo sweep's 60 steps on 32-px digits leave it at 14.2% (seed 0), 4 epochs at 16.6%, 60 steps at 64 px "
            "at 15.2%; started as the paper starts it, from a trained configuration A (model.init_from a 4-epoch "
            "vgg11 run, 93.5%), 60 steps reach 32.5%")


@register_model(VGG, **{**_PLAIN, "deviations": (_POOL_DEV, _SHORT_C)})
def vgg16_c(**kwargs) -> VGG:
    """VGG-16 configuration C of Table 1 (a 1x1 conv closes each of the last three stages)."""
    return _vgg("C", False, kwargs)


_SHORT_LRN = ("short budget: on 32-px digits (seed 0) the zoo sweep's 60 steps leave it at 16.7% (vgg11, the same net "
              "without LRN: 25.1%); 2 epochs reach 37.7%")


@register_model(VGG, **{**_PLAIN, "deviations": (_POOL_DEV, _SHORT_LRN)})
def vgg11_lrn(**kwargs) -> VGG:
    """VGG-11 configuration A-LRN of Table 1 (LRN after the first conv)."""
    return _vgg("A-LRN", False, kwargs)
