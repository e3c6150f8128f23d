"""GoogLeNet (Inception v1). Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke, Rabinovich,
"Going Deeper with Convolutions", CVPR 2015 (arXiv 2014). https://arxiv.org/abs/1409.4842

Key ideas
    The Inception module runs 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool side by side on the
    same input and concatenates them, so the network chooses its receptive field per layer. 1x1
    "reduction" convolutions before the 3x3 and 5x5 convolutions (and after the pool) keep the
    channel count, hence the compute, in check: 22 layers deep for ~1.5 G multiply-adds and about
    12x fewer parameters than AlexNet. Two auxiliary classifiers on 4a and 4d add gradient signal
    to the middle of the network during training (their losses weighted by 0.3, section 5) and are
    thrown away at inference. Global average pooling replaces the big fully-connected layers.

Which table the code reproduces
    Table 1 (every module's #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) and section 5's
    auxiliary classifier: 5x5/3 average pool, 1x1 conv 128, fc 1024, 70% dropout, linear + softmax.

Training setup in the paper
    DistBelief, asynchronous SGD with momentum 0.9, learning rate decreased by 4% every 8 epochs,
    Polyak averaging for the final model; photometric distortions and crops of 8%-100% area with
    aspect ratio 3/4-4/3; 40% dropout before the classifier; aux losses weighted 0.3.

This implementation
    ``googlenet`` is torchvision's GoogLeNet, state-dict compatible with its checkpoints: BatchNorm
    (eps 1e-3) after every conv and no conv bias, ceil-mode max pools, aux heads that average-pool
    adaptively to 4x4, dropout 0.2 before the classifier, and, as in torchvision, a 3x3 conv in the
    "5x5" branch (a slip in torchvision kept for checkpoint compatibility). ``transform_input``
    re-normalises ImageNet-normalised inputs to the [-1, 1] range Google's weights expect.
    ``googlenet_paper`` (``layout="paper", norm_layer=None, drop_rate=0.4``) is the network of the
    paper and its Caffe release: conv biases, no BatchNorm,
    LRN after the stem's first pool and after its 3x3 conv, real 5x5 convs, aux heads with the
    paper's 5x5/3 average pool, and 40% dropout. Both take ``aux_logits`` (default True): in
    training mode forward returns ``(main, aux1, aux2)``, in eval mode only the main logits.
    For inputs other than 224 the aux heads adapt their pooled map to 4x4 so the fc sizes hold.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvNormAct, LocalResponseNorm
from ..registry import Counterpart, Paper, register_model
from .base import AuxLogitsModel

GOOGLENET = Paper(
    "Going Deeper with Convolutions",
    "C. Szegedy, W. Liu, Y. Jia, P. Sermanet, S. Reed, D. Anguelov, D. Erhan, V. Vanhoucke, A. Rabinovich",
    2014,
    "https://arxiv.org/abs/1409.4842",
)

LAYOUTS = ("torchvision", "paper")

# Table 1: name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj). None marks a max-pool 3x3/2.
CFG = [
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    None,
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    None,
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
]


def _transform_input(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std-normalised input -> the (x - 0.5) / 0.5 normalisation Google's weights were trained on."""
    mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x * std + mean - 0.5) / 0.5


class Inception(nn.Module):
    """The Inception module with dimension reductions (Fig. 2b); children named as torchvision's."""

    def __init__(
        self, in_chs: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int, conv, k5: int, ceil_mode: bool
    ):
        super().__init__()
        self.branch1 = conv(in_chs, c1, 1)
        self.branch2 = nn.Sequential(conv(in_chs, c3r, 1), conv(c3r, c3, 3))
        self.branch3 = nn.Sequential(conv(in_chs, c5r, 1), conv(c5r, c5, k5))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=ceil_mode), conv(in_chs, pool_proj, 1)
        )
        self.out_chs = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, c1 + c3 + c5 + pool_proj, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier (section 5): avg-pool -> 1x1 conv 128 -> fc 1024 -> ReLU -> dropout 0.7 -> fc."""

    def __init__(self, in_chs: int, num_classes: int, conv, paper_pool: bool, drop_rate: float = 0.7):
        super().__init__()
        self.paper_pool = paper_pool
        self.conv = conv(in_chs, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(drop_rate)  # section 5: "dropout layer with 70% ratio of dropped outputs"
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.paper_pool and min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, stride=3)  # (B, C, 14, 14) -> (B, C, 4, 4) at 224 input, as the paper
        x = F.adaptive_avg_pool2d(x, 4)  # torchvision's pooling; a no-op after the paper's pool at 224
        x = torch.flatten(self.conv(x), 1)  # -> (B, 2048)
        x = self.dropout(F.relu(self.fc1(x), inplace=True))
        return self.fc2(x)


class GoogLeNet(AuxLogitsModel):
    """GoogLeNet (Table 1) in torchvision's layout, with or without BatchNorm.

    Args:
        aux_logits: build the two auxiliary classifiers (on 4a and 4d); used in training mode only.
        transform_input: re-normalise ImageNet mean/std inputs to Google's (x - 0.5) / 0.5.
        drop_rate: dropout before the classifier (torchvision 0.2, the paper 0.4).
        norm_layer: "batchnorm" (eps 1e-3, no conv bias), another norm, or None (conv biases).
        layout: "torchvision" (3x3 "5x5" branch, 2x2 pool before 5a, adaptive aux pooling) or "paper"
            (5x5 branch, 3x3 pool, LRN in the stem, 5x5/3 aux pooling).
    """

    min_input_size = 15

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
        drop_rate: float = 0.2,
        norm_layer="batchnorm",
        layout: str = "torchvision",
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}")
        paper = layout == "paper"
        # Smallest input that survives the pools (ceil mode); the paper's 3x3 pool before 5a needs more.
        self.min_input_size = 31 if paper else 15
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if transform_input and in_channels != 3:
            raise ValueError(f"transform_input needs RGB input (in_channels=3), got in_channels={in_channels}")
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 1024
        self.aux_logits, self.transform_input = aux_logits, transform_input
        if norm_layer == "batchnorm":
            norm_layer = partial(nn.BatchNorm2d, eps=1e-3)  # torchvision's BasicConv2d (TF-style eps)
        conv = partial(ConvNormAct, norm_layer=norm_layer)
        ceil = True  # torchvision pools in ceil mode; Caffe, which the paper's model ran on, always rounds up
        self.conv1 = conv(in_channels, 64, 7, stride=2)  # (B, 3, 224, 224) -> (B, 64, 112, 112)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=ceil)  # -> 56x56
        # The paper's Caffe model normalises (LRN) after pool1 and after conv2/3x3.
        # Caffe's alpha (1e-4) is divided by the window size n=5, ours is not: alpha = 1e-4 / 5, k = 1.
        self.lrn1 = LocalResponseNorm(5, alpha=2e-5, beta=0.75, k=1.0) if paper else nn.Identity()
        self.conv2 = conv(64, 64, 1)
        self.conv3 = conv(64, 192, 3)
        self.lrn2 = LocalResponseNorm(5, alpha=2e-5, beta=0.75, k=1.0) if paper else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=ceil)  # -> (B, 192, 28, 28)
        in_chs, pools = 192, iter(("maxpool3", "maxpool4"))
        for entry in CFG:
            if entry is None:
                name = next(pools)
                # Table 1: max pool 3x3/2 before 5a too; torchvision uses a 2x2/2 pool there (same 7x7 output).
                k = 3 if name == "maxpool3" or paper else 2
                setattr(self, name, nn.MaxPool2d(k, stride=2, ceil_mode=ceil))
                continue
            name, widths = entry
            block = Inception(in_chs, *widths, conv=conv, k5=5 if paper else 3, ceil_mode=ceil)
            setattr(self, name, block)
            in_chs = block.out_chs
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, conv, paper_pool=paper)
            self.aux2 = InceptionAux(528, num_classes, conv, paper_pool=paper)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(1024, num_classes)
        self.feature_info = [
            {"num_chs": 64, "reduction": 2, "module": "conv1"},
            {"num_chs": 192, "reduction": 4, "module": "conv3"},
            {"num_chs": 480, "reduction": 8, "module": "inception3b"},
            {"num_chs": 832, "reduction": 16, "module": "inception4e"},
            {"num_chs": 1024, "reduction": 32, "module": "inception5b"},
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision: truncated normal, std 0.01, for every conv and linear; BN 1/0.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.transform_input:
            x = _transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(self.lrn1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # -> (B, 480, 14, 14)
        x = self.inception4a(x)  # -> (B, 512, 14, 14)
        use_aux = self.training and self.aux1 is not None
        aux1 = self.aux1(x) if use_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # -> (B, 528, 14, 14)
        aux2 = self.aux2(x) if use_aux else None
        x = self.maxpool4(self.inception4e(x))  # -> (B, 832, 7, 7)
        x = self.inception5b(self.inception5a(x))  # -> (B, 1024, 7, 7)
        return x, aux1, aux2

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        device = self.fc.weight.device
        self.fc = nn.Linear(1024, num_classes, device=device)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = nn.Linear(1024, num_classes, device=device)


# Section 5: "During training, their loss gets added to the total loss of the network with a discount weight
# (the losses of the auxiliary classifiers were weighted by 0.3)."
AUX_WEIGHT = 0.3


@register_model(
    GoogLeNet,
    paper=GOOGLENET,
    input_size=(3, 224, 224),
    dataset="ImageNet",
    # torchvision's published weights were trained on (x - 0.5) / 0.5 inputs: torchvision sets transform_input=True
    # when it loads them; its checkpoints carry the aux heads, which a network built without them drops.
    counterparts=(Counterpart("torchvision", "googlenet", weights_options={"transform_input": True},
                              optional=("aux1.", "aux2.")),),
    aux_weight=AUX_WEIGHT,
    deviations=(
        "BatchNorm after every conv, no conv bias, no LRN (torchvision)",
        "3x3 instead of 5x5 conv in the 5x5 branch (torchvision's layout)",
        "aux heads pool adaptively to 4x4 instead of 5x5/3 average pooling",
        "2x2/2 max pool before 5a; dropout 0.2 instead of 0.4",
    ),
)
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet as torchvision builds it (BatchNorm; loads torchvision's checkpoints)."""
    return GoogLeNet(**kwargs)


@register_model(
    GoogLeNet,
    paper=GOOGLENET,
    input_size=(3, 224, 224),
    dataset="ImageNet",
    aux_weight=AUX_WEIGHT,
    deviations=("ceil-mode pooling (Caffe's rounding) reproduces Table 1's output sizes",
                ("recipe hints Adam (lr 3e-4, no weight decay) and He (kaiming) init instead of the paper's "
                 "asynchronous SGD (momentum 0.9) and torchvision's N(0, 0.01) init (which create_model keeps): "
                 "without BatchNorm, 22 layers of std-0.01 weights leave the network dead; after 60 steps of 32-px "
                 "digits (seed 0) it is at 10.0% with the loss at exactly 1.6 ln 10 (main and two aux heads at "
                 "chance) under the zoo's SGD recipe and under Adam at lr 1e-3 or 3e-4, 18.8% with He init alone, "
                 "55.2% with both hints")),
    recipe={"optim.name": "adam", "optim.lr": 0.0003, "optim.weight_decay": 0.0, "model.init": "kaiming"},
)
def googlenet_paper(**kwargs) -> GoogLeNet:
    """GoogLeNet of the paper and its Caffe model (conv biases, LRN, no BatchNorm, 5x5 convs, dropout 0.4)."""
    return GoogLeNet(**{"norm_layer": None, "layout": "paper", "drop_rate": 0.4, **kwargs})
