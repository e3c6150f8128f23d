"""SqueezeNet. Iandola, Han, Moskewicz, Ashraf, Dally, Keutzer, "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size", arXiv 2016. https://arxiv.org/abs/1602.07360

Key ideas
    Three strategies for a small network (Section 3.1): (1) replace most 3x3 filters by 1x1 filters (9x fewer
    parameters each); (2) feed the remaining 3x3 filters few input channels; (3) downsample late, so that the
    convolutions work on large activation maps. The Fire module (Section 3.2, Fig. 1) implements (1) and (2): a
    *squeeze* layer of s1x1 1x1 filters feeds an *expand* layer of e1x1 1x1 and e3x3 3x3 filters whose outputs are
    concatenated, with s1x1 < e1x1 + e3x3. ReLU follows the squeeze and both expand convolutions. There is no
    fully connected layer: a 1x1 conv10 produces one map per class, averaged over the image (after NiN).

Which table the code reproduces
    Table 1 (SqueezeNet v1.0): conv1 96 7x7/2, max-pool 3x3/2, fire2-fire4, max-pool, fire5-fire8, max-pool,
    fire9, dropout 50%, conv10 1x1 (1000), global average pool. The Fire widths follow Section 5's metaparameters:
    the i-th Fire module (i = 0..7) expands to e_i = base_e + incr_e * floor(i / freq) channels, of which
    pct_3x3 * e_i are 3x3, and squeezes to SR * e_i, with base_e = incr_e = 128, freq = 2, pct_3x3 = 0.5 and
    SR = 0.125 for SqueezeNet (Fig. 2 of Section 5 varies SR from 0.125 to 1 and pct_3x3 from 1% to 99%).
    Section 6 / Fig. 2 (right) / Table 3: *simple bypass* adds each Fire module's input to its output where the
    widths agree (Fire 3, 5, 7, 9: no parameters); *complex bypass* adds, on the other Fire modules (2, 4, 6, 8), a
    1x1 convolution with as many filters as the module outputs. v1.1 is the DeepScale release that torchvision ships:
    conv1 64 3x3/2 and the max-pools moved earlier (after conv1, fire3, fire5): same accuracy, 2.4x less compute.

Training setup in the paper
    Caffe, ImageNet, 227x227 crops; dropout 0.5 after fire9; learning rate 0.04 decreased linearly over training
    (Section 3.3 and the released solver); no fully connected layers. Table 2: 4.8MB (32-bit) for v1.0, 57.5% top-1
    / 80.3% top-5; Table 3: simple bypass 60.4% / 82.5% (4.8MB), complex bypass 58.8% / 82.0% (7.7MB).

This implementation
    torchvision's module layout and state-dict keys (``features.N`` with ``squeeze``, ``expand1x1``, ``expand3x3``
    in each Fire module; ``classifier.1`` is conv10), so torchvision checkpoints load unchanged, and its init
    (Kaiming-uniform convs, N(0, 0.01) for conv10, zero biases). The card's input is 224x224 as in torchvision (the
    Caffe model used 227): conv1 then gives 109x109 instead of 111x111. Options: ``squeeze_ratio`` (SR),
    ``pct_3x3``, ``base_e``, ``incr_e``, ``freq`` (Section 5; widths are rounded to the nearest integer, at least one
    channel each, which the paper does not specify), ``bypass`` ("none", "simple", "complex"; the bypass convs are
    ``features.N.bypass`` with a bias, like every conv of the network) and ``drop_rate`` (0.5 in the paper).
    Deviation: Table 3 lists 7.7MB for the complex-bypass model, which Section 6's description does not give: its
    four 1x1 bypass convs add 96*128 + 128*256 + 256*384 + 384*512 weights + 1,280 biases = 341,248 parameters
    (1.3 MiB), 6.1 MiB in all; we build what Section 6 describes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Paper, register_model
from .base import ZooModel

SQUEEZENET = Paper(
    "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size",
    "F. N. Iandola, S. Han, M. W. Moskewicz, K. Ashraf, W. J. Dally, K. Keutzer",
    2016,
    "https://arxiv.org/abs/1602.07360",
)

BYPASSES = ("none", "simple", "complex")

# Table 1 (v1.0) and the DeepScale v1.1 release: conv1 (filters, kernel, stride 2, no padding), then "M" for a
# 3x3/2 max-pool (Caffe's ceil mode) or the number of a Fire module (2..9), whose widths come from Section 5.
LAYOUTS: dict[str, tuple[int, int, list]] = {
    "1_0": (96, 7, ["M", 2, 3, 4, "M", 5, 6, 7, 8, "M", 9]),
    "1_1": (64, 3, ["M", 2, 3, "M", 4, 5, "M", 6, 7, 8, 9]),
}


class Fire(nn.Module):
    """Fire module (Fig. 1): squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU -> concat (+ bypass, Fig. 2)."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int, bypass: str = "none"):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.out_channels = expand1x1 + expand3x3
        # Section 6: a simple bypass where the widths agree, a 1x1 conv on the bypass (complex) where they do not
        self.simple_bypass = bypass in ("simple", "complex") and in_channels == self.out_channels
        if bypass == "complex" and in_channels != self.out_channels:
            self.bypass = nn.Conv2d(in_channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze(x))  # (B, C, H, W) -> (B, s1x1, H, W)
        out = torch.cat([self.expand1x1_activation(self.expand1x1(s)),
                         self.expand3x3_activation(self.expand3x3(s))], 1)  # -> (B, e1x1 + e3x3, H, W)
        if self.simple_bypass:
            out = out + x
        elif hasattr(self, "bypass"):
            out = out + self.bypass(x)
        return out


def fire_widths(i: int, *, base_e: int, incr_e: int, freq: int, pct_3x3: float,
                squeeze_ratio: float) -> tuple[int, int, int]:
    """(s1x1, e1x1, e3x3) of the i-th Fire module (i = 0 for fire2), Section 5's metaparameters."""
    e = base_e + incr_e * (i // freq)
    e3 = min(max(round(pct_3x3 * e), 1), e - 1)
    return max(round(squeeze_ratio * e), 1), e - e3, e3


def _ceil_pool(n: int) -> int:
    """Output size of a 3x3/2 max-pool in ceil mode (PyTorch's rule: the last window must start inside the map)."""
    out = -(-(n - 3) // 2) + 1
    return out - 1 if (out - 1) * 2 >= n else out


class SqueezeNet(ZooModel):
    """SqueezeNet v1.0 (Table 1) or v1.1, with Section 5's metaparameters and Section 6's bypasses."""

    def __init__(self, *, version: str = "1_0", squeeze_ratio: float = 0.125, pct_3x3: float = 0.5,
                 base_e: int = 128, incr_e: int = 128, freq: int = 2, bypass: str = "none",
                 num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5):
        super().__init__()
        if version not in LAYOUTS:
            raise ValueError(f"version must be one of {', '.join(LAYOUTS)}; got {version!r}")
        if bypass not in BYPASSES:
            raise ValueError(f"bypass must be one of {', '.join(BYPASSES)}; got {bypass!r}")
        if not 0 < squeeze_ratio <= 1:
            raise ValueError(f"squeeze_ratio (SR) must be in (0, 1], got {squeeze_ratio}")
        if not 0 < pct_3x3 < 1:
            raise ValueError(f"pct_3x3 must be strictly between 0 and 1 (the paper tries 0.01 to 0.99), got {pct_3x3}")
        if base_e < 2 or incr_e < 0 or freq < 1:
            raise ValueError(f"need base_e >= 2, incr_e >= 0, freq >= 1; got {base_e}, {incr_e}, {freq}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels, self.version = num_classes, in_channels, version
        stem, kernel, layout = LAYOUTS[version]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, kernel, stride=2), nn.ReLU(inplace=True)]
        self.feature_info = [{"num_chs": stem, "reduction": 2, "module": "features.1"}]
        ch, reduction = stem, 2
        for item in layout:
            if item == "M":
                if len(layers) > 2:  # the stage before this pool ends here
                    self.feature_info.append({"num_chs": ch, "reduction": reduction,
                                              "module": f"features.{len(layers) - 1}"})
                layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
                reduction *= 2
            else:
                s, e1, e3 = fire_widths(item - 2, base_e=base_e, incr_e=incr_e, freq=freq, pct_3x3=pct_3x3,
                                        squeeze_ratio=squeeze_ratio)
                layers.append(Fire(ch, s, e1, e3, bypass))
                ch = e1 + e3
        self.features = nn.Sequential(*layers)
        self.feature_info.append({"num_chs": ch, "reduction": reduction, "module": f"features.{len(layers) - 1}"})
        self.num_features = ch
        self.drop_rate = drop_rate
        # conv10 + ReLU + global average pool (Table 1), torchvision's classifier.1
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), self._final_conv(num_classes), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1))
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d) and m is not self.classifier[1]:
                nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # the smallest input conv1 and the three ceil-mode pools reduce to at least one pixel
        self.min_input_size = next(n for n in range(1, 1024) if self._map_size(n, kernel, layout) >= 1)

    @staticmethod
    def _map_size(n: int, kernel: int, layout: list) -> int:
        if n < kernel:
            return 0
        n = (n - kernel) // 2 + 1
        for item in layout:
            if item == "M":
                if n < 2:
                    return 0
                n = _ceil_pool(n)
        return n

    def _final_conv(self, num_classes: int) -> nn.Conv2d:
        conv = nn.Conv2d(self.num_features, num_classes, 1)
        nn.init.normal_(conv.weight, mean=0.0, std=0.01)
        nn.init.zeros_(conv.bias)
        return conv

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, 512, ~H/16, ~W/16)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:  # the pooled fire9 features (what the classifier sees, before dropout)
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x).flatten(1)  # conv10 -> ReLU -> average: (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        device = self.classifier[1].weight.device
        self.classifier[1] = self._final_conv(num_classes).to(device)


_CARD = {"paper": SQUEEZENET, "input_size": (3, 224, 224)}
# Measured by direct runs of `cnnzoo train NAME --data mnist5k` (seed 0; see docs/zoo_training.md for the sweep).
# Under the zoo's mnist5k SGD recipe (lr 0.05, Nesterov, batch 64) squeezenet1_1 stays at 10.0% after 2 epochs at
# 32 px, and at lr 0.01 too: the first updates shrink the Fire features and conv10's ReLU class maps die (loss
# ln 10 = 2.3026). Adam (lr 1e-3, no weight decay) does not let them die: 25.6% after 1 epoch, 40.5% after 2.
_RECIPE = {"optim.name": "adam", "optim.lr": 0.001, "optim.weight_decay": 0.0}
_SHORT_BUDGET = ("short budget: without BatchNorm it starts slowly even with the card's Adam hint (the zoo's SGD "
                 "recipe leaves it at chance: conv10's ReLU class maps die): squeezenet1_1 on 32-px digits reaches "
                 "25.6% after 1 epoch and 40.5% after 2, while the zoo sweep's 60 steps on 64-px digits leave it at "
                 "10.0% (seed 0); the paper trained on ImageNet (lr 0.04 decayed linearly) for far longer")


@register_model(SqueezeNet, counterparts={"torchvision": "squeezenet1_0"}, **_CARD,
                deviations=("224x224 input as torchvision (the Caffe model used 227x227)", _SHORT_BUDGET),
                recipe=_RECIPE)
def squeezenet1_0(**kwargs) -> SqueezeNet:
    """SqueezeNet v1.0 (Table 1: conv1 96 7x7/2, pools after conv1, fire4, fire8)."""
    return SqueezeNet(**{"version": "1_0", **kwargs})


@register_model(SqueezeNet, counterparts={"torchvision": "squeezenet1_1"}, **_CARD,
                deviations=("v1.1 is DeepScale's later release (conv1 64 3x3/2, earlier pools), not in the paper",
                            _SHORT_BUDGET), recipe=_RECIPE)
def squeezenet1_1(**kwargs) -> SqueezeNet:
    """SqueezeNet v1.1 (DeepScale: conv1 64 3x3/2, pools after conv1, fire3, fire5)."""
    return SqueezeNet(**{"version": "1_1", **kwargs})
