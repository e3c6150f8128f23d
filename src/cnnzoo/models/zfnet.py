"""ZFNet. Zeiler, Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
(arXiv 2013). https://arxiv.org/abs/1311.2901

Key ideas
    A deconvolutional network projects feature activations back to pixel space, showing what
    each layer responds to. The visualisations of AlexNet's first layers revealed dead filters and
    aliasing from the large stride, so conv1 shrinks from 11x11/4 to 7x7/2 and conv2 gets stride
    2; the model beats AlexNet and transfers well to Caltech-101/256 and PASCAL.

Which table the code reproduces
    Fig. 3: 224x224 input -> conv1 96@7x7/2 (110x110) -> 3x3/2 max-pool (55x55) -> contrast norm
    -> conv2 256@5x5/2 (26x26) -> 3x3/2 max-pool (13x13) -> contrast norm -> conv3 384@3x3 ->
    conv4 384@3x3 -> conv5 256@3x3 -> 3x3/2 max-pool (6x6) -> fc6 4096 -> fc7 4096 -> 1000-way
    softmax. All layers are dense (one GPU): 62,357,608 parameters.

Training setup in the paper
    SGD, batch 128, lr 0.01 with manual annealing, momentum 0.9, dropout 0.5 in fc6 and fc7,
    weights initialised to 1e-2 and biases to 0, conv filters whose RMS exceeds 0.1 renormalised
    to 0.1, 70 epochs; 224x224 crops (corners + centre, with flips) of 256-sized images.

This implementation
    Padding 1 on conv1 and ceil-mode pooling (as Caffe pools) reproduce Fig. 3's map sizes
    (110, 55, 26, 13, 6). The contrast normalisation after pool1/pool2 is the AlexNet LRN
    (``cnnzoo.layers.LocalResponseNorm``, AlexNet's constants, ``lrn=False`` removes it); the
    paper does not print its constants. Inputs other than 224 are average-pooled to 6x6 before fc6
    (the identity at 224).

    Initialisation: ``init="he"`` (default) draws the convs from He et al.'s normal (fan-out, as
    ``cnnzoo.layers.init_conv_bn`` does for the ResNets) and keeps PyTorch's default for the fc
    layers; ``init="paper"`` is the paper's N(0, 0.01) weights and zero biases. With the paper's
    init and no normalisation each layer shrinks the signal (8 layers: logits ~4e-4 on mnist5k
    digits, conv gradients ~1e-3 of the weights), which only the paper's 70 epochs and its RMS
    renormalisation (a training-loop step, not part of the model) overcome. Either way ZFNet needs
    more than a short run: with the mnist5k recipe at 64 px it is still at chance after 60 steps
    (10.0%), and with He's init reaches 19.6% after 200 steps, 77.1% after 300 and 91.6% after 400
    (a 400-step run, seed 0).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import LocalResponseNorm, init_conv_bn
from ..registry import Paper, register_model
from .base import ZooModel

ZFNET = Paper(
    "Visualizing and Understanding Convolutional Networks",
    "M. D. Zeiler, R. Fergus",
    2013,
    "https://arxiv.org/abs/1311.2901",
)


INITS = ("he", "paper")


class ZFNet(ZooModel):
    """ZFNet of Fig. 3: conv1 96@7x7/2, conv2 256@5x5/2, 384-384-256, fc 4096-4096."""

    min_input_size = 47
    dense_window = 6  # fc6 reads a 6x6 map: a 6x6 convolution in dense evaluation

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, lrn: bool = True, drop_rate: float = 0.5,
                 init: str = "he"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
        if not isinstance(lrn, bool):
            raise ValueError(f"lrn must be True or False, got {lrn!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 256

        def norm() -> list[nn.Module]:
            return [LocalResponseNorm()] if lrn else []

        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 96, 7, stride=2, padding=1), nn.ReLU(inplace=True),  # 224 -> 110
            nn.MaxPool2d(3, 2, ceil_mode=True), *norm(),  # -> 55
        ]
        i1 = len(layers) - 1
        layers += [nn.Conv2d(96, 256, 5, stride=2), nn.ReLU(inplace=True),  # -> 26
                   nn.MaxPool2d(3, 2, ceil_mode=True), *norm()]  # -> 13
        i2 = len(layers) - 1
        layers += [nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
                   nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
                   nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                   nn.MaxPool2d(3, 2, ceil_mode=True)]  # -> 6
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),  # fc6
            nn.Dropout(drop_rate), nn.Linear(4096, 4096), nn.ReLU(inplace=True),  # fc7
            nn.Linear(4096, num_classes),
        )
        self.feature_info = [{"num_chs": 96, "reduction": 4, "module": f"features.{i1}"},
                             {"num_chs": 256, "reduction": 16, "module": f"features.{i2}"},
                             {"num_chs": 256, "reduction": 32, "module": f"features.{len(layers) - 1}"}]
        if init == "paper":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.normal_(m.weight, 0.0, 0.01)  # Section 3: "weights initialized to 1e-2"
                    nn.init.zeros_(m.bias)
        else:
            init_conv_bn(self)  # He et al. 2015 for the convs; PyTorch's default for the fc layers

    @property
    def head_hidden_size(self) -> int:
        return 4096

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, 224, 224) -> (B, 256, 6, 6)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier[-1] = nn.Linear(4096, num_classes).to(self.classifier[-1].weight.device)


@register_model(ZFNet, paper=ZFNET, input_size=(3, 224, 224), dataset="ImageNet",
                deviations=("contrast normalisation = AlexNet's LRN constants (the paper prints none)",
                            "He init for the convs (init='he'); init='paper' gives the paper's N(0, 0.01)",
                            ("recipe hint Adam (lr 3e-4, no weight decay) instead of the paper's SGD (lr 0.01): "
                             "a plain 8-layer net without normalisation, it stays near chance for ~250 steps of the "
                             "zoo's SGD recipe (17.1% after 60 steps on 64-px digits) and reaches 60.0% in those 60 "
                             "steps with Adam (seed 0)"),
                            "adaptive 6x6 average pool before fc6 (the identity at 224x224) so other sizes run"),
                recipe={"optim.name": "adam", "optim.lr": 0.0003, "optim.weight_decay": 0.0})
def zfnet(**kwargs) -> ZFNet:
    """ZFNet of Fig. 3 (62,357,608 parameters)."""
    return ZFNet(**kwargs)
