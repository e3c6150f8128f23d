"""U-Net. O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015. https://arxiv.org/abs/1505.04597

Key ideas
    A contracting path (repeated two 3x3 convolutions + ReLU, then 2x2 max-pooling with stride 2, doubling the
    channels at each downsampling: 64, 128, 256, 512, 1024) captures context; a symmetric expanding path (a 2x2
    "up-convolution" halving the channels, concatenation with the correspondingly *cropped* map of the contracting
    path, two 3x3 convolutions + ReLU) gives precise localisation; a final 1x1 convolution maps the 64 channels to
    the classes. There are no fully connected layers and only *valid* convolutions, so every output pixel sees its
    full context in the input and the output is smaller than the input by a constant border: a 572 x 572 tile gives
    a 388 x 388 map. Large images are segmented seamlessly by the overlap-tile strategy (the border context is
    mirrored at the image edges). Cropping is needed "due to the loss of border pixels in every convolution".
    Heavy elastic deformations let it learn from very few annotated images, and a weighted loss (Eq. 2, see
    `cnnzoo.segmentation.losses.unet_weight_map`) makes it separate touching objects of the same class.

Which table the code reproduces
    Fig. 1 and Sec. 2: the layout, 23 convolutional layers (10 in the contracting path, 4 up-convolutions and 8
    3x3 convolutions in the expanding path, the final 1x1), 572 -> 388 for two output classes. Its parameters
    (with biases, as the paper's Caffe network has them): 31,030,658. Sec. 3's energy (pixel-wise soft-max with
    cross-entropy, Eq. 1) and weight map (Eq. 2).

Training setup in the paper
    Caffe; SGD with a batch of one (large) tile rather than many small ones, and momentum 0.99 so that many earlier
    samples shape each update; weights drawn from a Gaussian with std sqrt(2/N), N the fan-in of a unit (Sec. 3);
    drop-out layers at the end of the contracting path; elastic deformations (random displacements on a coarse
    3 x 3 grid, std 10 pixels, bicubic interpolation) plus shifts, rotations and grey-value variations; the weight
    map of Eq. 2 with w0 = 10, sigma ~ 5 pixels, precomputed per ground-truth mask. Tasks: the ISBI 2012 EM
    segmentation challenge (30 training images of 512 x 512) and the ISBI 2015 cell tracking challenge.

This implementation
    ``unet`` is the paper's network: valid 3x3 convolutions, ReLU, 2x2 max-pooling, ConvTranspose2d(2, stride 2)
    up-convolutions halving the channels (the paper's "upsampling followed by a 2x2 convolution" with learned
    weights: the same 4 * C_in * C_out + C_out parameters), centre crop of the skip map and concatenation (skip
    first, then the upsampled map), a 1x1 classifier. Defaults as the paper: ``in_channels=1``, ``num_classes=2``.
    The paper says no non-linearity follows the up-convolution, so none does. Inputs whose pooled maps are odd
    (the paper picks tiles where none is) are floored by the pooling and the skip is centre-cropped with the
    offset ``floor((H_skip - H) / 2)`` (`center_crop`); ``output_size(s)`` gives the output side.
    Options:
        ``padded=True``: 3x3 convolutions with padding 1, the variant most re-implementations use; the output has
            the input's size. A size not divisible by 2**depth is handled by padding the upsampled map (bottom and
            right) to its skip's size.
        ``base_channels`` (default 64): channels of the first level, doubled at each of the ``depth`` (default 4)
            downsamplings.
        ``norm_layer`` (default None, as the paper): a norm after every 3x3 convolution ("batchnorm"); the
            convolution then has no bias.
        ``drop_rate`` (default 0): drop-out at the end of the contracting path (after the bottom level), where the
            paper puts its drop-out layers; the paper gives no rate, so it is off by default.
    Initialisation: He normal (std sqrt(2/fan_in)) on every convolution, biases zero, as Sec. 3.
    Not here: the overlap-tile inference with mirrored borders, and the elastic deformations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import get_norm
from ...registry import Paper
from ..registry import register_segmenter
from .base import Segmenter

__all__ = ["DoubleConv", "UNet", "center_crop", "unet", "unet_padded"]

UNET = Paper("U-Net: Convolutional Networks for Biomedical Image Segmentation",
             "O. Ronneberger, P. Fischer, T. Brox", 2015, "https://arxiv.org/abs/1505.04597")


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre ``height x width`` window of an ``(..., H, W)`` map (Fig. 1's "copy and crop"); when ``H - height``
    is odd the window starts at ``floor((H - height) / 2)``, one row nearer the top than the bottom."""
    h, w = x.shape[-2:]
    if height > h or width > w:
        raise ValueError(f"cannot crop a {h}x{w} map to {height}x{width}")
    top, left = (h - height) // 2, (w - width) // 2
    return x[..., top : top + height, left : left + width]


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by a ReLU (Fig. 1's blue arrows); valid unless ``padding=1``."""

    def __init__(self, in_chs: int, out_chs: int, padding: int, norm_layer=None) -> None:
        bias = norm_layer is None
        super().__init__(
            nn.Conv2d(in_chs, out_chs, 3, padding=padding, bias=bias), get_norm(norm_layer, out_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_chs, out_chs, 3, padding=padding, bias=bias), get_norm(norm_layer, out_chs),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """One step of the expanding path: 2x2 up-convolution halving the channels, crop-and-concatenate, DoubleConv."""

    def __init__(self, in_chs: int, padding: int, norm_layer=None) -> None:
        super().__init__()
        self.padded = padding > 0
        self.up = nn.ConvTranspose2d(in_chs, in_chs // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_chs, in_chs // 2, padding, norm_layer)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, C, h, w) -> (B, C/2, 2h, 2w)
        h, w = x.shape[-2:]
        hs, ws = skip.shape[-2:]
        if self.padded:  # a size not divisible by 2**depth: the floored pooling lost a row/column; give it back
            x = F.pad(x, (0, ws - w, 0, hs - h))
        else:  # valid convolutions: the skip is larger, take its centre
            skip = center_crop(skip, h, w)
        return self.conv(torch.cat([skip, x], dim=1))  # (B, C/2 + C/2, h', w') -> (B, C/2, h' [-4], w' [-4])


class UNet(Segmenter):
    """U-Net (Fig. 1). See the module docstring for the options."""

    def __init__(self, *, num_classes: int = 2, in_channels: int = 1, padded: bool = False, base_channels: int = 64,
                 depth: int = 4, norm_layer: str | None = None, drop_rate: float = 0.0) -> None:
        super().__init__()
        for key, value, low in (("num_classes", num_classes, 1), ("in_channels", in_channels, 1),
                                ("base_channels", base_channels, 1), ("depth", depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"UNet option {key} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"UNet option drop_rate must be in [0, 1), got {drop_rate!r}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.padded, self.depth = bool(padded), depth
        pad = 1 if padded else 0
        # Fig. 1: channels 64, 128, 256, 512, 1024 (base_channels * 2**level)
        widths = [base_channels * 2**k for k in range(depth + 1)]
        self.down = nn.ModuleList()
        chs = in_channels
        for w in widths:
            self.down.append(DoubleConv(chs, w, pad, norm_layer))
            chs = w
        self.pool = nn.MaxPool2d(2, 2)
        self.drop = nn.Dropout2d(drop_rate) if drop_rate > 0 else nn.Identity()
        self.up = nn.ModuleList(Up(w, pad, norm_layer) for w in reversed(widths[1:]))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        self.min_input_size = next(s for s in range(1, 2**(depth + 4) * 8) if self.output_size(s) >= 1)
        for m in self.modules():  # Sec. 3: Gaussian with std sqrt(2/N), N = fan-in
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight.shape[1 if isinstance(m, nn.Conv2d) else 0] * m.weight[0, 0].numel()
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def output_size(self, size: int) -> int:
        """The output side for an input of side ``size`` (<= 0 when the input is too small)."""
        if self.padded:
            s = size
            for _ in range(self.depth):
                s //= 2
            return size if s >= 1 else 0
        sizes, s = [], size
        for _ in range(self.depth):
            s -= 4  # two valid 3x3 convolutions
            if s < 2:
                return 0
            sizes.append(s)
            s //= 2  # 2x2 max-pool, floored
        s -= 4
        for _ in range(self.depth):
            if s < 1:
                return 0
            s = 2 * s - 4  # up-convolution, two valid 3x3 convolutions
        return max(s, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self.pool(x)  # (B, C, H, W) -> (B, C, H/2, W/2)
            x = block(x)  # (B, C_in, H, W) -> (B, C, H-4, W-4) (H, W when padded)
            skips.append(x)
        x = self.drop(skips.pop())
        for up in self.up:
            x = up(x, skips.pop())
        return self.classifier(x)  # (B, 64, h, w) -> (B, num_classes, h, w)


_DEVIATIONS = ("no overlap-tile inference (mirrored borders) and no elastic-deformation augmentation built in",)


@register_segmenter(UNet, paper=UNET, input_size=(1, 572, 572), dataset="ISBI 2012 EM segmentation",
                    deviations=_DEVIATIONS)
def unet(**kwargs) -> UNet:
    """The paper's network: valid convolutions, crop-and-concatenate, 572 -> 388, 2 classes."""
    return UNet(**kwargs)


@register_segmenter(UNet, paper=UNET, input_size=(1, 572, 572), dataset="ISBI 2012 EM segmentation",
                    deviations=(*_DEVIATIONS, "padded 3x3 convolutions: the output has the input's size"))
def unet_padded(**kwargs) -> UNet:
    """The common re-implementation: padded 3x3 convolutions, output the size of the input."""
    return UNet(**{"padded": True, **kwargs})
