"""Highway networks. Srivastava, Greff, Schmidhuber, "Training Very Deep Networks", NeurIPS 2015
(extended abstract: "Highway Networks", arXiv:1505.00387). https://arxiv.org/abs/1507.06228

Key ideas
    A highway layer gates between transforming its input and carrying it unchanged:
    y = H(x) * T(x) + x * (1 - T(x)), with the transform gate T(x) = sigmoid(W_T x + b_T) and
    C = 1 - T the carry gate (Section 2, eq. 3). Inspired by LSTM gating, the carry path lets
    information and gradients cross hundreds of layers, so very deep nets train with plain SGD.
    Initialising b_T negative (Section 2.2: "e.g. -1, -3") biases every layer towards carrying,
    so a fresh deep highway net starts close to the identity (the idea of Gers et al.'s LSTM
    forget-gate bias, inverted). Convolutional highway layers share weights and use the same
    receptive field for H and T, zero-padded so that the block output has the input's size.

Which table the code reproduces
    Section 3.1 / Fig. 1 (optimisation on MNIST): thin fully-connected nets in which the first
    layer is a plain fully-connected layer followed by 9, 19, 49 or 99 highway layers of 50 blocks
    (plain nets: 71 units, giving about 5,000 parameters per layer either way), then softmax.
    ``highway_fc_mnist(depth=10|20|50|100)`` builds these (depth counts the plain first layer).
    Section 3.2 / Table 1 (CIFAR-10) compares convolutional highway nets with Fitnets;
    ``highway_conv_cifar`` is a convolutional highway net of that kind (see below).

Training setup in the paper
    MNIST (Section 3.1): SGD with momentum; for every depth the learning rate, momentum,
    learning-rate decay, the activation (ReLU or tanh) and, for highway nets, the initial gate bias
    were chosen by random search, and the best run per depth is plotted (Fig. 1). CIFAR (Section
    3.2): SGD with momentum and the usual crop/flip augmentation. (Recalled from the paper; the
    stored copy available while writing this held only its opening, so exact epoch counts are not
    given here.)

This implementation
    ``HighwayFC``: flatten -> Linear(784, hidden) + act (the plain first layer) -> (depth - 1)
    highway layers (H = act(Linear), T = sigmoid(Linear), both hidden -> hidden) -> Linear to the
    classes (logits for softmax cross-entropy). Options: ``depth`` (>= 1, layers before the
    softmax as the paper counts them), ``hidden_size`` (50), ``gate_bias`` (-2.0, between the
    paper's -1 and -3 examples; the paper tuned it by random search), ``act_layer`` ("relu"; the
    paper searched ReLU and tanh), ``drop_rate`` (dropout before the softmax layer; not in the
    paper), ``input_size`` (28). Deviation: images of any other size are average-pooled
    (adaptively) to ``input_size`` x ``input_size`` before flattening, so the net accepts any
    input; the paper only feeds 28x28 MNIST.

    ``HighwayConv``: the exact CIFAR-10 layouts of Table 1 are in the paper's supplementary
    material, which was not available to check, so this is a reconstruction in the paper's spirit,
    not a reproduction: a plain 3x3 conv stem, then three stages of ``layers`` convolutional
    highway layers (H = act(Conv3x3), T = sigmoid(Conv3x3), "same" padding, as Section 3.2 says
    the same receptive field is used for both) at ``widths`` channels, with a plain 3x3 conv where
    the width changes and 2x2 max-pooling between stages (Fitnet-style), then global average
    pooling and a linear classifier. Highway layers have no normalisation, as in the paper.
    Weights: Kaiming-normal for H and the plain layers; T's weights the same, its bias ``gate_bias``.

    Its card's recipe trains it with Adam (lr 1e-3): without normalisation its globally pooled
    features are nearly the same for every image at first (non-negative, large mean), and plain SGD
    barely moves it: on mnist5k, 80 steps of the SGD recipe leave it at 10-16% test accuracy at
    lr 0.01, 0.03 or 0.1, where Adam reaches 60.1% (seed 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import get_act
from ..registry import Paper, register_model
from .base import ZooModel

HIGHWAY = Paper(
    "Training Very Deep Networks",
    "R. K. Srivastava, K. Greff, J. Schmidhuber",
    2015,
    "https://arxiv.org/abs/1507.06228",
)


class Highway(nn.Module):
    """y = H(x) * T(x) + x * (1 - T(x)) (Section 2, eq. 3); ``transform`` is H, ``gate`` gives W_T x + b_T."""

    def __init__(self, transform: nn.Module, gate: nn.Module):
        super().__init__()
        self.transform, self.gate = transform, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(x))  # transform gate, same shape as x
        return torch.lerp(x, self.transform(x), t)  # x + T * (H - x) = H * T + x * (1 - T)


def highway_linear(width: int, gate_bias: float, act_layer="relu") -> Highway:
    """A fully-connected highway layer of ``width`` blocks (Section 3.1)."""
    h = nn.Sequential(nn.Linear(width, width), get_act(act_layer))
    t = nn.Linear(width, width)
    nn.init.constant_(t.bias, gate_bias)
    return Highway(h, t)


def highway_conv(channels: int, gate_bias: float, act_layer="relu", kernel_size: int = 3) -> Highway:
    """A convolutional highway layer: H and T are k x k convs with the same receptive field (Section 3.2)."""
    pad = kernel_size // 2
    h = nn.Sequential(nn.Conv2d(channels, channels, kernel_size, padding=pad), get_act(act_layer))
    t = nn.Conv2d(channels, channels, kernel_size, padding=pad)
    nn.init.kaiming_normal_(h[0].weight, nonlinearity="relu")
    nn.init.zeros_(h[0].bias)
    nn.init.kaiming_normal_(t.weight, nonlinearity="relu")
    nn.init.constant_(t.bias, gate_bias)
    return Highway(h, t)


def _check(depth: int, gate_bias: float, drop_rate: float, minimum: int, what: str) -> None:
    if int(depth) != depth or depth < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {depth!r}")
    if not 0 <= drop_rate < 1:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if not -1e3 < gate_bias < 1e3:
        raise ValueError(f"gate_bias must be a finite number (the paper uses -1 to -3), got {gate_bias}")


class HighwayFC(ZooModel):
    """The thin fully-connected highway nets of Section 3.1 (MNIST)."""

    min_input_size = 1
    no_feature_maps = "a fully connected network: its features are (B, hidden) vectors, not a spatial map"

    def __init__(self, *, depth: int = 10, hidden_size: int = 50, gate_bias: float = -2.0, act_layer="relu",
                 drop_rate: float = 0.0, input_size: int = 28, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        _check(depth, gate_bias, drop_rate, 1, "depth")
        if hidden_size < 1 or input_size < 1:
            raise ValueError(f"hidden_size and input_size must be >= 1, got {hidden_size}, {input_size}")
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, hidden_size
        self.input_size = input_size
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size**2, hidden_size),
                                  get_act(act_layer))  # the plain first layer
        self.layers = nn.Sequential(*[highway_linear(hidden_size, gate_bias, act_layer) for _ in range(depth - 1)])
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden_size, num_classes)
        self.feature_info = [{"num_chs": hidden_size, "reduction": 1, "module": "layers"}]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):  # deviation: other sizes are pooled to 28x28
            x = F.adaptive_avg_pool2d(x, self.input_size)
        return self.layers(self.stem(x))  # (B, C, 28, 28) -> (B, hidden)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, device=self.fc.weight.device)


class HighwayConv(ZooModel):
    """A convolutional highway net for CIFAR-10 (Section 3.2): three stages of highway conv layers."""

    def __init__(self, *, layers: int = 5, widths: tuple[int, int, int] = (32, 64, 128), gate_bias: float = -2.0,
                 act_layer="relu", drop_rate: float = 0.0, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        _check(layers, gate_bias, drop_rate, 0, "layers")
        if len(widths) != 3 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be three positive channel counts, got {widths!r}")
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, widths[-1]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), get_act(act_layer))
        self.feature_info = []
        prev = widths[0]
        for i, w in enumerate(widths):
            mods: list[nn.Module] = []
            if i > 0:  # halve the map, then a plain conv changes the width (highway layers keep it fixed)
                mods += [nn.MaxPool2d(2), nn.Conv2d(prev, w, 3, padding=1), get_act(act_layer)]
            mods += [highway_conv(w, gate_bias, act_layer) for _ in range(layers)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*mods))
            self.feature_info.append({"num_chs": w, "reduction": 2**i, "module": f"stage{i + 1}"})
            prev = w
        for m in [*self.stem, self.stage2[1], self.stage3[1]]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.min_input_size = 4  # two 2x2 max-pools

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 3, 32, 32) -> (B, w1, 32, 32)
        return self.stage3(self.stage2(self.stage1(x)))  # -> (B, w3, 8, 8)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, device=self.fc.weight.device)


@register_model(HighwayFC, paper=HIGHWAY, input_size=(1, 28, 28), dataset="MNIST",
                deviations=("inputs other than 28x28 are adaptively average-pooled to 28x28 before flattening",))
def highway_fc_mnist(**kwargs) -> HighwayFC:
    """Fully-connected highway net of Section 3.1 (plain first layer + depth-1 highway layers of 50 blocks)."""
    return HighwayFC(**kwargs)


@register_model(HighwayConv, paper=HIGHWAY, input_size=(3, 32, 32), dataset="CIFAR-10",
                deviations=(("stage layout reconstructed (Fitnet-style 3 stages); the supplementary's exact "
                            "Table 1 architectures were not checked"),
                            "trained with Adam (lr 1e-3, card recipe) where the paper used SGD with momentum"),
                recipe={"optim.name": "adam", "optim.lr": 0.001})
def highway_conv_cifar(**kwargs) -> HighwayConv:
    """Convolutional highway net for CIFAR-10 (Section 3.2; reconstructed 3-stage layout)."""
    return HighwayConv(**kwargs)
