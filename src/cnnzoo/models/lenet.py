"""LeNet-5. LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document Recognition",
Proc. IEEE 1998. http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf

Key ideas
    Local receptive fields, shared weights (convolution) and spatial subsampling give a network
    some invariance to shifts and distortions with far fewer parameters than a fully-connected one.
    C1 (6@5x5) -> S2 (subsample) -> C3 (16@5x5) -> S4 -> C5 (120@5x5, sees the whole 32x32 input)
    -> F6 (84) -> output.

Which table the code reproduces
    Section II-B and Fig. 2: the 32x32 input, layer sizes, and (for ``lenet5_paper``) Table I's
    sparse C3 connections, the trainable subsampling, and the Euclidean RBF output.

Training setup in the paper
    MNIST padded to 32x32, 20 passes, stochastic diagonal Levenberg-Marquardt with a step size
    schedule 0.0005 -> 0.00001, MAP loss with the RBF outputs.

This implementation
    ``lenet5`` is the common modern re-implementation (ReLU, max-pool, full 6->16 connections,
    fc120-fc84-fc10 with a linear output): 61,706 parameters. It accepts 28x28 digits by padding
    them to 32x32 with zeros (as the paper padded MNIST), so both sizes work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import get_act
from ..registry import Paper, register_model
from .base import ZooModel

LENET = Paper(
    "Gradient-Based Learning Applied to Document Recognition",
    "Y. LeCun, L. Bottou, Y. Bengio, P. Haffner",
    1998,
    "http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf",
)


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a smaller image (28x28 MNIST) symmetrically to ``size`` x ``size``."""
    h, w = x.shape[-2:]
    if h >= size and w >= size:
        return x
    dh, dw = max(size - h, 0), max(size - w, 0)
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


class LeNet5(ZooModel):
    """Modern LeNet-5: conv6-pool-conv16-pool-fc120-fc84-fc(num_classes)."""

    min_input_size = 28

    def __init__(self, num_classes: int = 10, in_channels: int = 1, act_layer="relu", pool: str = "max",
                 drop_rate: float = 0.0):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 16
        pool_cls = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), get_act(act_layer), pool_cls(2),  # (B, 1, 32, 32) -> (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5), get_act(act_layer), pool_cls(2),  # -> (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), get_act(act_layer), nn.Dropout(drop_rate),
            nn.Linear(120, 84), get_act(act_layer),
        )
        self.fc = nn.Linear(84, num_classes)
        self.feature_info = [dict(num_chs=6, reduction=2, module="features.2"),
                             dict(num_chs=16, reduction=4, module="features.5")]

    @property
    def head_hidden_size(self) -> int:
        return 84

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(pad_to(x, 32))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.shape[-2:] != (5, 5):  # larger inputs: pool to the 5x5 map the fc layers expect
            x = F.adaptive_avg_pool2d(x, 5)
        x = self.classifier(x)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(84, num_classes)


@register_model(LeNet5, paper=LENET, input_size=(1, 32, 32), dataset="MNIST",
                deviations=("ReLU instead of scaled tanh; max-pool instead of trainable subsampling",
                            "full 6->16 C3 connections instead of Table I's sparse table",
                            "linear output layer with softmax cross-entropy instead of Euclidean RBF units",
                            "larger inputs are average-pooled to 5x5 before the fc layers"))
def lenet5(**kwargs) -> LeNet5:
    """Modern LeNet-5 (ReLU, max-pool, fc120-fc84-fc10; 61,706 parameters)."""
    return LeNet5(**kwargs)
