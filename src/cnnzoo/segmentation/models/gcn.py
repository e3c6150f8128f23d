"""GCN, "Large Kernel Matters": C. Peng, X. Zhang, G. Yu, G. Luo, J. Sun, "Large Kernel Matters -- Improve Semantic
Segmentation by Global Convolutional Network", CVPR 2017 (https://arxiv.org/abs/1703.02719).

Key ideas
    Segmentation has to classify (which wants invariance, a large view) and localise (which wants per-pixel
    precision) at once. Pulling the classifier's kernel up to the size of the feature map ("global convolution")
    gives every pixel a dense connection to the whole map without fully connected layers (Sec. 3.1). A k x k kernel
    is made affordable by a symmetric, separable pair: (k x 1 then 1 x k) + (1 x k then k x 1), summed, with no
    nonlinearity after the convolutions (Fig. 2B), O(2k) weights instead of O(k^2) (Table 2). Boundary Refinement
    (Sec. 3.2, Fig. 2C) is a residual block on the score map: S~ = S + R(S), R = conv3x3, ReLU, conv3x3. The whole
    network (Fig. 2A) is an FCN-4 on ResNet: the res-2..res-5 maps each go through a GCN (C -> classes) and a BR;
    from the coarsest, a deconvolution upsamples x2, the next finer score map is added and a BR refines the sum;
    after the res-2 fusion two more deconvolution + BR steps reach the input's resolution.

Which table the code reproduces
    The layout of Fig. 2 with k = 15 (the largest and best kernel of Table 1, the final network's) on the
    ResNet-152 "pretrained on ImageNet" the paper uses as its feature network (Sec. 4.1). Keys: ``backbone`` (the
    zoo's network through the features API, its last four stages: res-2..res-5 = layer1..layer4, strides 4..32);
    ``gcn.i`` (i = 0..3 for res-2..res-5): ``left`` = (k x 1, 1 x k), ``right`` = (1 x k, k x 1), C -> K -> K,
    without bias; ``br_lateral.i`` (the BR after each GCN), ``deconv.j`` / ``br_fuse.j`` (j = 0..2: res-5 -> res-4,
    res-4 -> res-3, res-3 -> res-2: deconv x2, add the finer score map, BR), ``deconv_final.j`` / ``br_final.j``
    (j = 0, 1: 1/4 -> 1/2 -> 1/1, deconv x2 then BR). Each BR is two 3x3 convs K -> K with bias and a ReLU between;
    each deconv a 4x4 transposed convolution, stride 2, padding 1, K -> K without bias, initialised to bilinear
    interpolation (FCN Sec. 3.3) and learned. Parameters by hand (K classes, k = 15):
        backbone: resnet152 less its fc = 60,192,808 - (2048 * 1000 + 1000) = 58,143,808
        GCN:      per module 2 * (k * C * K + k * K * K) = 2k K (C + K); over C = 256, 512, 1024, 2048:
                  2k K (3840 + 4K)
        BR:       9 modules * 2 * (9 K^2 + K)
        deconv:   5 * 16 K^2
    K = 21: GCN 630 * 3924 = 2,472,120; BR 9 * 7,980 = 71,820; deconv 35,280; total 60,723,028. Table 2 counts the
    res-5 GCN alone (2048 -> 21) as 260K, 434K, 608K, 782K for k = 3, 5, 7, 9: 2k * 21 * (2048 + 21) = 86,898 k =
    260,694 / 434,490 / 608,286 / 782,082, weights only (the k x k convolution it compares with: 43,008 k^2).

Training setup in the paper
    Sec. 4: ResNet-152 pretrained on ImageNet; SGD with batch size 1, momentum 0.99, weight decay 5e-4; mean
    subtraction and horizontal flips; the ablations train on the augmented VOC 2012 (SBD + VOC train, 10,582 images)
    with 512 x 512 inputs. The final VOC model trains in three stages (COCO + SBD + VOC at 640 x 640, then SBD + VOC,
    then VOC alone, 512 x 512) and reaches 82.2% mIoU on VOC 2012 test; Cityscapes test 76.9%.

This implementation
    ``gcn_resnet152``: the paper's network, 21 classes. Deliberate choices where the paper is silent, on the card:
    no bias in the GCN convolutions (Table 2's counts are weights only; a bias before the sum of the branches is
    redundant), biases in the BR convolutions, 4x4/2 deconvolutions initialised bilinear. Maps whose sizes are not
    multiples of 32 (a deconvolution doubles 8 to 16 where the finer map has 15) are cropped at the bottom/right
    before the sum, and the last map to the input, so any input size >= 1 gives an output of its size (a backbone
    whose maps round down is padded by replicating its edge instead).
    Options: ``backbone`` (a zoo network name with ``features_only``; its last four maps must have strides r, 2r,
    4r, 8r with r a power of two; log2(r) final deconv + BR steps), ``backbone_options`` (extra ``create_model``
    options for it, e.g. ``{"layers": [1, 1, 1, 1]}``), ``kernel_size`` (k, odd, 15), ``in_channels``,
    ``num_classes``, ``backbone_weights`` (a checkpoint ``create_model`` reads, e.g. ``"torchvision"``).
    digits-segmentation recipe (``get_digits_recipe``; 64x64, 1 channel, 11 classes, 1,000 training / 200 test
    images), deviations for CPU training only: ``backbone="resnet18"`` with one BasicBlock per stage
    (``backbone_options={"layers": [1, 1, 1, 1]}``, 5,260,320 parameters with K = 11; the paper's ResNet-152 is far
    too slow for 2 CPU cores), from scratch (the paper: ImageNet-pretrained), Adam 1e-3 (the paper: SGD, batch 1,
    momentum 0.99), 4 epochs of batch 16, no augmentation; k = 15 and the whole Fig. 2 head kept (k covers the
    whole 16x16 res-2 map). Measured with ``SegTrainer(default_seg_config("gcn_resnet152", seed=s), threads=1)``
    (process CPU seconds on a shared 2-core machine, which stand for one idle thread; all-background scores mean
    IU 0.087): seed 0 test mean IU 0.613, pixel accuracy 0.985 (67 s); seed 1 0.492, 0.976 (72 s). Two blocks per
    stage (the full ResNet-18) reached 0.577 (seed 0) but cost about 1.6x per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...models.features import FeaturesUnsupportedError
from ...registry import Paper, UnknownModelError, create_model
from ..registry import register_segmenter
from .base import Segmenter
from .fcn import bilinear_kernel
from .pspnet import _backbone_options

__all__ = ["GCN", "BoundaryRefinement", "GlobalConv", "gcn_resnet152"]

GCNPAPER = Paper("Large Kernel Matters -- Improve Semantic Segmentation by Global Convolutional Network",
                 "C. Peng, X. Zhang, G. Yu, G. Luo, J. Sun", 2017, "https://arxiv.org/abs/1703.02719")

#: Table 1's best kernel size (the final network's)
KERNEL_SIZE = 15


class GlobalConv(nn.Module):
    """The Global Convolutional Network block (Sec. 3.1, Fig. 2B): ``left`` = k x 1 then 1 x k, ``right`` =
    1 x k then k x 1, both C -> K -> K, summed; no nonlinearity, no bias; padding keeps the size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = KERNEL_SIZE) -> None:
        super().__init__()
        k, p = kernel_size, kernel_size // 2
        self.left = nn.Sequential(nn.Conv2d(in_channels, out_channels, (k, 1), padding=(p, 0), bias=False),
                                  nn.Conv2d(out_channels, out_channels, (1, k), padding=(0, p), bias=False))
        self.right = nn.Sequential(nn.Conv2d(in_channels, out_channels, (1, k), padding=(0, p), bias=False),
                                   nn.Conv2d(out_channels, out_channels, (k, 1), padding=(p, 0), bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)


class BoundaryRefinement(nn.Module):
    """Boundary Refinement (Sec. 3.2, Fig. 2C): ``x + conv2(relu(conv1(x)))``, two 3x3 convs K -> K with bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


def deconv2x(channels: int) -> nn.ConvTranspose2d:
    """A learned x2 deconvolution (4x4, stride 2, padding 1, no bias) starting as bilinear interpolation of each
    channel on its own (weight[c, c] = the 4x4 bilinear kernel, FCN Sec. 3.3; zero across channels)."""
    up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.zero_()
        kernel = bilinear_kernel(4).to(up.weight.device)
        for c in range(channels):
            up.weight[c, c] = kernel
    return up


def _fit(x: torch.Tensor, size) -> torch.Tensor:
    """``x`` cropped at the bottom/right to ``size`` (or padded by replicating its edge where smaller)."""
    h, w = size
    x = x[..., :h, :w]
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (0, dw, 0, dh), mode="replicate") if dh or dw else x


class GCN(Segmenter):
    """GCN (Fig. 2A): GCN + BR on res-2..res-5, deconv x2 + add + BR from res-5 down to res-2, then deconv + BR
    twice to the input. See the module notes."""

    min_input_size = 1

    def __init__(self, *, backbone: str = "resnet152", num_classes: int = 21, in_channels: int = 3,
                 kernel_size: int = KERNEL_SIZE, backbone_weights: str | None = None,
                 backbone_options: dict | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("kernel_size", kernel_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} option {key} must be an integer >= 1, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"{name} option kernel_size must be odd (k x 1 and 1 x k kernels centred on the pixel; "
                             f"the paper's is {KERNEL_SIZE}), got {kernel_size}")
        self.num_classes, self.in_channels, self.kernel_size = num_classes, in_channels, kernel_size
        extra = _backbone_options(name, backbone, backbone_options)
        try:
            self.backbone = create_model(backbone, features_only=True, out_indices=4, in_channels=in_channels,
                                         weights=backbone_weights, **extra)
        except UnknownModelError as exc:
            raise UnknownModelError(f"{name} option backbone: {exc.args[0]}") from exc
        except FeaturesUnsupportedError:
            raise
        except ValueError as exc:
            if "stages" not in str(exc):
                raise
            raise ValueError(f"{name}: backbone {backbone!r} does not fit Fig. 2: GCN reads its last four stage maps "
                             f"(a ResNet's res-2..res-5); {exc}") from exc
        info = self.backbone.feature_info
        chans, strides = info.channels(), info.reduction()
        r = strides[0]
        if len(chans) != 4 or strides != [r, 2 * r, 4 * r, 8 * r] or r < 1 or r & (r - 1):
            raise ValueError(f"{name}: backbone {backbone!r} does not fit Fig. 2: its last four maps have strides "
                             f"{strides}; GCN needs r, 2r, 4r, 8r with r a power of two (a ResNet's 4, 8, 16, 32)")
        self.min_input_size = max(1, getattr(self.backbone.model, "min_input_size", 1))
        k = num_classes
        self.gcn = nn.ModuleList(GlobalConv(c, k, kernel_size) for c in chans)  # res-2 .. res-5
        self.br_lateral = nn.ModuleList(BoundaryRefinement(k) for _ in chans)
        self.deconv = nn.ModuleList(deconv2x(k) for _ in range(3))  # res-5 -> 4, 4 -> 3, 3 -> 2
        self.br_fuse = nn.ModuleList(BoundaryRefinement(k) for _ in range(3))
        steps = r.bit_length() - 1  # log2(r): 1/4 -> 1/2 -> 1/1 on a ResNet
        self.deconv_final = nn.ModuleList(deconv2x(k) for _ in range(steps))
        self.br_final = nn.ModuleList(BoundaryRefinement(k) for _ in range(steps))

    def output_size(self, size: int) -> int:
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.backbone(x)  # res-2 .. res-5: (N, C_i, H/4 .. H/32, ...)
        scores = [br(gcn(f)) for gcn, br, f in zip(self.gcn, self.br_lateral, feats)]
        y = scores[3]
        for up, br, finer in zip(self.deconv, self.br_fuse, (scores[2], scores[1], scores[0])):
            y = br(_fit(up(y), finer.shape[-2:]) + finer)
        for up, br in zip(self.deconv_final, self.br_final):
            y = br(up(y))
        return _fit(y, x.shape[-2:])


_DEVIATIONS = (
    ("where the paper is silent: GCN convolutions without bias (Table 2 counts weights only), BR convolutions with "
     "bias, deconvolutions 4x4/2 without bias initialised to bilinear interpolation and learned"),
    ("maps of sizes not multiples of 32 are cropped at the bottom/right after each deconvolution (and the output to "
     "the input's size), so any input size works"),
    ("the digits-segmentation recipe (CPU training) is not the paper's network: ResNet-18 with one block per stage "
     "from scratch instead of ImageNet ResNet-152, Adam 1e-3 for 4 epochs of batch 16 instead of SGD (batch 1, "
     "momentum 0.99)"),
)
#: digits-segmentation (CPU training; measured in the module notes): ResNet-18 with one block per stage
_DIGITS = {"options": {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]}}, "optimizer": "adam",
           "lr": 1e-3, "epochs": 4, "batch_size": 16}


class GCNResNet152(GCN):
    """GCN on ResNet-152, 21 classes (PASCAL VOC 2012)."""

    def __init__(self, *, backbone: str = "resnet152", num_classes: int = 21, in_channels: int = 3,
                 kernel_size: int = KERNEL_SIZE, backbone_weights: str | None = None,
                 backbone_options: dict | None = None) -> None:
        super().__init__(backbone=backbone, num_classes=num_classes, in_channels=in_channels,
                         kernel_size=kernel_size, backbone_weights=backbone_weights, backbone_options=backbone_options)


@register_segmenter(GCNResNet152, paper=GCNPAPER, input_size=(3, 512, 512), dataset="PASCAL VOC 2012 (+ SBD)",
                    deviations=_DEVIATIONS, digits_recipe=_DIGITS)
def gcn_resnet152(**kwargs) -> GCNResNet152:
    """GCN on ResNet-152 (the paper's feature network): k = 15 global convolutions and boundary refinement on
    res-2..res-5, deconvolution fusion (FCN-4), 21 classes."""
    return GCNResNet152(**kwargs)
