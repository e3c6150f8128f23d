"""Network in Network. Lin, Chen, Yan, "Network In Network", ICLR 2014 (arXiv 2013).
https://arxiv.org/abs/1312.4400

Key ideas
    A linear filter followed by a non-linearity is a weak model of a local patch. An "mlpconv"
    layer slides a small multilayer perceptron over the input instead: a KxK convolution followed
    by 1x1 convolutions ("cascaded cross channel parametric pooling"), each with ReLU. The last
    mlpconv outputs one map per class and global average pooling turns them into the class
    scores: no fully-connected layers (fewer parameters, less over-fitting, maps that read as
    class confidence maps).

Which table the code reproduces
    Section 4.1/4.2 and the authors' CIFAR-10 model (Caffe): three mlpconv layers
    192-160-96 (5x5), 192-192-192 (5x5), 192-192-10 (3x3), each of the first two followed by a
    3x3/2 max-pool and dropout 0.5, then global average pooling: 966,986 parameters.
    ``nin`` is the ImageNet model of the Caffe model zoo (not in the paper's tables): four
    mlpconv layers 96-96-96 (11x11/4), 256-256-256 (5x5), 384-384-384 (3x3), 1024-1024-1000
    (3x3), 3x3/2 max-pools after the first three, dropout 0.5 before the last, global average
    pooling.

Training setup in the paper
    Caffe, SGD with momentum, mini-batches of 128, lr reduced by 10 when the training error
    plateaus, weight decay; dropout between mlpconv layers; CIFAR-10 with global contrast
    normalisation and ZCA whitening (10.41% error, 8.81% with translation + flip augmentation).

This implementation
    Every conv is followed by ReLU, including the last 1x1 conv that outputs the class maps (as
    the authors' model does), and the class maps are averaged into logits. ``forward_features``
    returns the map before that last 1x1 conv (192 channels for CIFAR, 1024 for ImageNet), which
    is also what ``forward_head(pre_logits=True)`` averages; the last 1x1 conv is the classifier
    (``head.conv``), rebuilt by ``reset_classifier``. Pools are 3x3/2 in ceil mode (Caffe's
    rounding: 32 -> 16 -> 8 on CIFAR, 54 -> 27 -> 13 -> 6 at 224). ``drop_rate`` sets the
    dropout between mlpconv layers.

    Weights use Glorot (Xavier) uniform init, zero biases (``init="glorot"``; the authors' Caffe files
    use hand-set Gaussians per layer). ``init="he"`` (Kaiming-normal) is available but does not train:
    with no normalisation, He's gain and two dropouts (x2 variance each in training) make the initial
    logits large (loss 5.6, gradient norm 72 on mnist5k) and the first steps drive every class map
    below zero, where the final ReLU lets no gradient through; nin_cifar then stays at 10.0% for 400
    steps of the mnist5k recipe. With Glorot's init and the zoo's SGD recipe it stays on the initial
    plateau (class maps ~0.01, loss ln 10) for the whole of a short run: 10.1% after 1 epoch at 16 px,
    19.7% after 3, 22.2% after 6 (seed 0). The cards therefore carry a recipe hint, Adam (lr 1e-3, no
    weight decay), as highway's do: in a plain loop on 28-px digits Adam leaves the plateau after ~40
    steps; `cnnzoo train nin_cifar --data mnist5k` reaches 43.7% after 2 epochs at 16 px (lr 3e-3) and
    79.8% after 3 epochs at 28 px (lr 1e-3).

    The ImageNet model's hint is Adam at 3e-4: its classifier conv reads 1,024 channels (nin_cifar's 192),
    and one Adam step moves each class map by up to lr x the sum of its |inputs|, so at 1e-3 the first
    steps push every class map below zero, where the final ReLU passes no gradient (10.0%, loss ln 10,
    after 60 steps on 64-px digits). Measured at 60 steps (seed 0): 1e-4 10.0%, 2e-4 17.7%, 3e-4 20.6%,
    5e-4 19.4%; 3 epochs at 3e-4 reach 37.7%.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import global_pool
from ..registry import Paper, register_model
from .base import ZooModel

NINPAPER = Paper("Network In Network", "M. Lin, Q. Chen, S. Yan", 2013, "https://arxiv.org/abs/1312.4400")

# (kernel, stride, padding, widths of the KxK conv and the 1x1 convs, what follows the block).
# The last block's final width is num_classes: its last 1x1 conv is the classifier.
CIFAR_BLOCKS = (
    (5, 1, 2, (192, 160, 96), "pool+drop"),
    (5, 1, 2, (192, 192, 192), "pool+drop"),
    (3, 1, 1, (192, 192), ""),
)
IMAGENET_BLOCKS = (
    (11, 4, 0, (96, 96, 96), "pool"),
    (5, 1, 2, (256, 256, 256), "pool"),
    (3, 1, 1, (384, 384, 384), "pool+drop"),
    (3, 1, 1, (1024, 1024), ""),
)


INITS = ("glorot", "he")


class MlpConv(nn.Sequential):
    """One mlpconv layer (Fig. 2): a KxK conv then 1x1 convs, each followed by ReLU."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], kernel_size: int, stride: int, padding: int):
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            k, s, p = (kernel_size, stride, padding) if i == 0 else (1, 1, 0)
            layers += [nn.Conv2d(in_channels, w, k, s, p), nn.ReLU(inplace=True)]
            in_channels = w
        super().__init__(*layers)


class NinHead(nn.Module):
    """The final 1x1 conv to one map per class, ReLU, global average pooling (Section 3.2)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return global_pool(x)  # (B, C, h, w) -> (B, C)
        return global_pool(self.act(self.conv(x)))  # -> (B, num_classes, h, w) -> (B, num_classes)


class NiN(ZooModel):
    """Network in Network: stacked mlpconv layers and global average pooling over class maps."""

    def __init__(self, blocks: str = "cifar", num_classes: int = 10, in_channels: int = 3, drop_rate: float = 0.5,
                 init: str = "glorot"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown NiN init {init!r}; valid: {', '.join(INITS)}")
        table = {"cifar": CIFAR_BLOCKS, "imagenet": IMAGENET_BLOCKS}
        if blocks not in table:
            raise ValueError(f"unknown NiN blocks {blocks!r}; valid: {', '.join(table)}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.num_classes, self.in_channels = num_classes, in_channels
        # the smallest input that leaves a 1x1 map (ceil-mode pools accept a window hanging off the edge)
        self.min_input_size = 4 if blocks == "cifar" else 39
        layers: list[nn.Module] = []
        self.feature_info = []
        channels, reduction = in_channels, 1
        for k, stride, pad, widths, after in table[blocks]:
            layers.append(MlpConv(channels, widths, k, stride, pad))
            channels, reduction = widths[-1], reduction * stride
            if "pool" in after:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
                reduction *= 2
            self.feature_info.append({"num_chs": channels, "reduction": reduction, "module": f"features.{len(layers) - 1}"})
            if "drop" in after:
                layers.append(nn.Dropout(drop_rate))
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.head = NinHead(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if init == "glorot":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, 32, 32) -> (B, 192, 8, 8)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = NinHead(self.num_features, num_classes).to(self.head.conv.weight.device)


# Adam leaves the initial plateau of the unnormalised network where SGD at the zoo's recipe does not (docstring).
_RECIPE = {"optim.name": "adam", "optim.lr": 0.001, "optim.weight_decay": 0.0}


@register_model(NiN, paper=NINPAPER, input_size=(3, 32, 32), dataset="CIFAR-10",
                deviations=("Glorot-uniform init instead of the authors' hand-set Gaussian per layer",
                            ("short budget: without normalisation it leaves its initial plateau slowly: under "
                             "the card's Adam hint 10.8% after 1 epoch at 28 px, 79.8% after 3 (seed 0); under the "
                             "zoo's SGD recipe 22.2% after 6 epochs at 16 px"),
                            "recipe hint Adam (lr 1e-3, no weight decay) instead of the paper's SGD"),
                recipe=_RECIPE)
def nin_cifar(**kwargs) -> NiN:
    """NiN for CIFAR-10: three mlpconv layers and global average pooling (966,986 parameters)."""
    return NiN(**{"blocks": "cifar", "num_classes": 10, **kwargs})


# The 1,024-wide classifier conv: Adam at 1e-3 kills every class map behind the final ReLU (docstring).
_IMAGENET_RECIPE = {**_RECIPE, "optim.lr": 3e-4}


@register_model(NiN, paper=NINPAPER, input_size=(3, 224, 224), dataset="ImageNet",
                deviations=("the ImageNet network is the Caffe model zoo's NIN-ImageNet, not a table of the paper",
                            "Glorot-uniform init instead of the authors' hand-set Gaussian per layer",
                            "recipe hint Adam (lr 3e-4, no weight decay) instead of the paper's SGD",
                            ("short budget: without normalisation it leaves its initial plateau slowly: the card's "
                             "hint reaches 20.6% after the zoo sweep's 60 steps on 64-px digits (seed 0), 37.7% "
                             "after 3 epochs")),
                recipe=_IMAGENET_RECIPE)
def nin(**kwargs) -> NiN:
    """NiN for ImageNet (Caffe model zoo): four mlpconv layers, 1000 class maps, global average pooling."""
    return NiN(**{"blocks": "imagenet", "num_classes": 1000, **kwargs})
