"""DenseNet. Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.
https://arxiv.org/abs/1608.06993

Key ideas
    Inside a dense block every layer receives the concatenation of the feature maps of all layers
    before it, x_l = H_l([x_0, x_1, ..., x_{l-1}]) (Section 3, eq. 2), and adds only k new maps (the
    growth rate). Features are reused instead of re-learned, so the nets are narrow (k = 12..48) and
    parameter-efficient, and every layer has a short path to the loss (implicit deep supervision).
    H_l is BN-ReLU-Conv3x3; DenseNet-B puts a BN-ReLU-Conv1x1 bottleneck producing 4k maps in front
    of it; DenseNet-C compresses each transition (BN-Conv1x1-AvgPool2x2 between blocks) to
    floor(theta * m) maps with theta = 0.5; DenseNet-BC does both.

Which table the code reproduces
    Table 1 (ImageNet): DenseNet-121/169/201/264, k = 32, 7x7/2 stem + 3x3/2 max-pool, blocks of
    6-12-24-16, 6-12-32-32, 6-12-48-32 and 6-12-64-48 layers, BC layers. DenseNet-161 (k = 48, stem
    96) is the official repository's extra model, which torchvision also ships. Section 3
    "Implementation Details" and Table 2 (CIFAR): three dense blocks of equal size on 32x32, 16x16
    and 8x8 maps; DenseNet (L = 40, k = 12, 1.0M) with a 16-channel 3x3 first conv and (L-4)/3 plain
    layers per block; DenseNet-BC (L = 100 k = 12 0.8M, L = 250 k = 24 15.3M, L = 190 k = 40 25.6M)
    with a 2k-channel first conv, (L-4)/6 bottleneck layers per block and theta = 0.5.

Training setup in the paper
    CIFAR: SGD, batch 64, 300 epochs, lr 0.1 divided by 10 at 50% and 75% of training, weight decay
    1e-4, Nesterov momentum 0.9 without dampening, dropout 0.2 after each conv (except the first)
    when trained without data augmentation. ImageNet: batch 256, 90 epochs, lr 0.1 divided by 10 at
    epochs 30 and 60, the fb.resnet.torch augmentation; He initialisation (Section 4.2).

This implementation
    ``DenseNet`` uses torchvision's module layout and state-dict keys (features.conv0/norm0,
    features.denseblockN.denselayerM.norm1/conv1/norm2/conv2, features.transitionN.norm/conv,
    features.norm5, classifier), so torchvision checkpoints load directly; the converter also maps
    torchvision's legacy keys (``norm.1`` -> ``norm1``). Options: ``growth_rate``, ``block_config``,
    ``num_init_features``, ``bn_size`` (bottleneck width = bn_size * k; 0 = no bottleneck, the
    plain DenseNet), ``compression`` (theta), ``drop_rate`` (dropout on each layer's new maps, as
    torchvision; the paper's Lua code also drops after the bottleneck and transition convs),
    ``memory_efficient`` (the concatenation + BN-ReLU-Conv1x1 of each layer are recomputed in the
    backward pass with torch.utils.checkpoint instead of stored, after Pleiss et al. 2017,
    "Memory-Efficient Implementation of DenseNets": same outputs and gradients, less training
    memory; unlike torchvision's version the recomputation does not update BatchNorm's running
    statistics a second time). ``stem="cifar"`` builds the CIFAR stem (one 3x3 conv, no norm or
    pool). Convolutions have no bias; Kaiming-normal conv init, BN weight 1 / bias 0, classifier
    bias 0, as torchvision. The final BN-ReLU before global pooling is in the Lua code and in
    torchvision (the paper's text only says "global average pooling"); its ReLU is a module,
    ``features.relu5`` (torchvision applies it functionally; no parameters, the keys are the same), so
    the last ``feature_info`` stage, and ``forward_intermediates``' last map, is ``forward_features``.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from ..registry import Paper, register_converter, register_model
from .base import ZooModel

DENSENET = Paper(
    "Densely Connected Convolutional Networks",
    "G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger",
    2017,
    "https://arxiv.org/abs/1608.06993",
)

STEMS = ("imagenet", "cifar")


class DenseLayer(nn.Module):
    """H_l of Section 3: [BN-ReLU-Conv1x1(bn_size*k)]-BN-ReLU-Conv3x3(k) on the concatenated inputs."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float,
                 memory_efficient: bool = False):
        super().__init__()
        self.bottleneck = bn_size > 0
        if self.bottleneck:  # DenseNet-B: 1x1 conv to bn_size * k maps (the paper's 4k)
            self.norm1 = nn.BatchNorm2d(in_channels)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
            mid = bn_size * growth_rate
        else:
            mid = in_channels
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _concat_bottleneck(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = torch.cat(inputs, 1)  # (B, C0 + (l-1)k, H, W)
        return self.conv1(self.relu1(self.norm1(x))) if self.bottleneck else x

    def _checkpointed(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        # torch.utils.checkpoint runs the function again in backward; BN must not update its running
        # statistics twice, so the recomputation (every call after the first) restores them afterwards.
        # Train-mode outputs do not depend on the running statistics, so the recomputed values are the same.
        calls = [0]

        def fn(*xs: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            if calls[0] == 1 or not self.bottleneck:
                return self._concat_bottleneck(*xs)
            saved = [b.clone() for b in self.norm1.buffers()]
            try:  # checkpoint may stop the recomputation early by raising inside this call
                return self._concat_bottleneck(*xs)
            finally:
                with torch.no_grad():
                    for b, v in zip(self.norm1.buffers(), saved):
                        b.copy_(v)

        return cp.checkpoint(fn, *inputs, use_reentrant=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            x = self._checkpointed(inputs)
        else:
            x = self._concat_bottleneck(*inputs)
        x = self.conv2(self.relu2(self.norm2(x)))  # -> (B, k, H, W): the k new maps
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """A dense block: layer l sees the block input and the k maps of every earlier layer (eq. 2)."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float,
                 memory_efficient: bool = False):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size,
                                                             drop_rate, memory_efficient))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)  # (B, C, H, W) -> (B, C + n*k, H, W)


class Transition(nn.Sequential):
    """Transition layer (Section 3): BN-ReLU-Conv1x1 to floor(theta * m) maps, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(ZooModel):
    """DenseNet of Table 1 (ImageNet stem) or Table 2 (CIFAR stem), torchvision's layout."""

    def __init__(self, *, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, compression: float = 0.5, drop_rate: float = 0.0,
                 num_classes: int = 1000, in_channels: int = 3, memory_efficient: bool = False,
                 stem: str = "imagenet"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}; got {stem!r}")
        if growth_rate < 1 or num_init_features < 1:
            raise ValueError(f"growth_rate and num_init_features must be >= 1, got {growth_rate}, {num_init_features}")
        if not block_config or any(int(n) < 1 for n in block_config):
            raise ValueError(f"block_config must list at least one block of >= 1 layers, got {block_config!r}")
        if bn_size < 0:
            raise ValueError(f"bn_size must be >= 0 (0 = no bottleneck), got {bn_size}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression (theta) must be in (0, 1], got {compression}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.drop_rate = drop_rate
        if stem == "imagenet":  # Table 1: 7x7/2 conv, 3x3/2 max-pool
            layers = [("conv0", nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False)),
                      ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True)),
                      ("pool0", nn.MaxPool2d(3, 2, 1))]
            reduction = 4
            self.feature_info = [{"num_chs": num_init_features, "reduction": 2, "module": "features.relu0"}]
        else:  # Section 3: CIFAR nets start with one 3x3 conv (16 maps, or 2k for BC) on the 32x32 image
            layers = [("conv0", nn.Conv2d(in_channels, num_init_features, 3, 1, 1, bias=False))]
            reduction = 1
            self.feature_info = []
        self.features = nn.Sequential(OrderedDict(layers))
        ch = num_init_features
        for i, n in enumerate(block_config):
            block = DenseBlock(int(n), ch, growth_rate, bn_size, drop_rate, memory_efficient)
            self.features.add_module(f"denseblock{i + 1}", block)
            ch = block.out_channels
            last = i == len(block_config) - 1
            if not last:
                self.feature_info.append({"num_chs": ch, "reduction": reduction, "module": f"features.denseblock{i + 1}"})
                out = int(ch * compression)  # floor(theta * m), Section 3 "Compression"
                self.features.add_module(f"transition{i + 1}", Transition(ch, out))
                ch, reduction = out, reduction * 2
        self.features.add_module("norm5", nn.BatchNorm2d(ch))
        # the ReLU after norm5 that torchvision applies functionally: a module here, so that the last feature_info
        # stage (and forward_intermediates' last map) is what forward_features returns; no parameters, same keys
        self.features.add_module("relu5", nn.ReLU())
        self.feature_info.append({"num_chs": ch, "reduction": reduction, "module": "features.relu5"})
        self.num_features = ch
        self.classifier = nn.Linear(ch, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        # each transition's 2x2 average pool needs a map of at least 2x2, so the first block needs
        # p = 2^(blocks-1) pixels; the ImageNet stem (7x7/2 conv, 3x3/2 pool, both padded) gives that from 4p - 3.
        p = 2 ** (len(block_config) - 1)
        self.min_input_size = 4 * p - 3 if stem == "imagenet" else p

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, num_features, H/32, W/32); ends with norm5, relu5

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes, device=self.classifier.weight.device)
        nn.init.zeros_(self.classifier.bias)


_DEV_161 = ("DenseNet-161 (k=48, 96-channel stem) is from the official repository, not the paper's Table 1",)
_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _from_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision checkpoints: current keys load as they are; legacy ``norm.1``-style keys are renamed."""
    out = {}
    for k, v in sd.items():
        m = _LEGACY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _imagenet(k: int, blocks: tuple[int, ...], init: int, kwargs: dict) -> DenseNet:
    return DenseNet(**{"growth_rate": k, "block_config": blocks, "num_init_features": init, **kwargs})


@register_model(DenseNet, paper=DENSENET, input_size=(3, 224, 224), counterparts={"torchvision": "densenet121"})
def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121 (Table 1: k=32, blocks 6-12-24-16)."""
    return _imagenet(32, (6, 12, 24, 16), 64, kwargs)


@register_model(DenseNet, paper=DENSENET, input_size=(3, 224, 224), counterparts={"torchvision": "densenet161"},
                deviations=_DEV_161)
def densenet161(**kwargs) -> DenseNet:
    """DenseNet-161 (official repository: k=48, stem 96, blocks 6-12-36-24)."""
    return _imagenet(48, (6, 12, 36, 24), 96, kwargs)


@register_model(DenseNet, paper=DENSENET, input_size=(3, 224, 224), counterparts={"torchvision": "densenet169"})
def densenet169(**kwargs) -> DenseNet:
    """DenseNet-169 (Table 1: k=32, blocks 6-12-32-32)."""
    return _imagenet(32, (6, 12, 32, 32), 64, kwargs)


@register_model(DenseNet, paper=DENSENET, input_size=(3, 224, 224), counterparts={"torchvision": "densenet201"})
def densenet201(**kwargs) -> DenseNet:
    """DenseNet-201 (Table 1: k=32, blocks 6-12-48-32)."""
    return _imagenet(32, (6, 12, 48, 32), 64, kwargs)


@register_model(DenseNet, paper=DENSENET, input_size=(3, 224, 224))
def densenet264(**kwargs) -> DenseNet:
    """DenseNet-264 (Table 1: k=32, blocks 6-12-64-48)."""
    return _imagenet(32, (6, 12, 64, 48), 64, kwargs)


for _name in ("densenet121", "densenet161", "densenet169", "densenet201"):
    register_converter(_name, "torchvision")(_from_torchvision)


def _cifar(depth: int, k: int, bc: bool, kwargs: dict) -> DenseNet:
    # Section 3: 3 blocks; depth L counts the first conv, 2 transitions and the fc (hence L - 4), and a
    # bottleneck layer holds 2 convs (hence /6 for BC, /3 for plain layers).
    n = (depth - 4) // (6 if bc else 3)
    opts = {"growth_rate": k, "block_config": (n, n, n), "num_init_features": 2 * k if bc else 16,
                "bn_size": 4 if bc else 0, "compression": 0.5 if bc else 1.0, "stem": "cifar", "num_classes": 10}
    return DenseNet(**{**opts, **kwargs})


_CIFAR = {"paper": DENSENET, "input_size": (3, 32, 32), "dataset": "CIFAR-10"}


@register_model(DenseNet, **_CIFAR)
def densenet40_k12_cifar(**kwargs) -> DenseNet:
    """DenseNet (L=40, k=12) for CIFAR (Table 2, 1.0M)."""
    return _cifar(40, 12, False, kwargs)


@register_model(DenseNet, **_CIFAR)
def densenet_bc100_k12_cifar(**kwargs) -> DenseNet:
    """DenseNet-BC (L=100, k=12) for CIFAR (Table 2, 0.8M)."""
    return _cifar(100, 12, True, kwargs)


@register_model(DenseNet, **_CIFAR)
def densenet_bc250_k24_cifar(**kwargs) -> DenseNet:
    """DenseNet-BC (L=250, k=24) for CIFAR (Table 2, 15.3M)."""
    return _cifar(250, 24, True, kwargs)


@register_model(DenseNet, **_CIFAR)
def densenet_bc190_k40_cifar(**kwargs) -> DenseNet:
    """DenseNet-BC (L=190, k=40) for CIFAR (Table 2, 25.6M)."""
    return _cifar(190, 40, True, kwargs)
