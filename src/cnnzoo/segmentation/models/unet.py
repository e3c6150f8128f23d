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
    digits-segmentation recipes (`DIGITS_RECIPES`, 64x64 grey canvases, 11 classes): the paper's depth 4 needs at
    least 188 pixels (572 -> 388 loses 92 a side), so ``unet`` trains at ``depth=2`` (64 -> 24: the mask's 24x24
    centre is scored; ``depth=1`` gives 48x48), ``base_channels=16``, no norm, as the paper; ``unet_padded`` at
    ``base_channels=16`` with batch norm. Measured (seed 0, one thread, a shared and loaded machine, so CPU seconds
    are given; test split of 200 canvases): unet 10 epochs -> mean IU 0.327 on the centre crop (wall 186 s);
    unet_padded 10 epochs -> 0.580 (197 CPU s); unet_resnet34 3 epochs -> 0.285 (155 CPU s); all-background 0.087.

U-Net on a backbone (``unet_resnet34``, class `BackboneUNet`)
    The paper's encoder is its own; it allows no other. The well-known re-implementation that puts a U-Net decoder
    on a classification network is segmentation_models_pytorch's ``Unet(encoder_name="resnet34")`` (smp), and
    ``unet_resnet34`` follows its layout, with the encoder taken from the zoo through the features API:
    ``encoder`` is ``create_model(backbone, ...)`` as a ``features_only`` network (its classifier dropped, its
    state-dict keys the network's own: ``encoder.conv1.weight``, ``encoder.layer4.2.bn2.bias``), giving maps at
    reductions 2 (if the network has one), 4, 8, 16, 32 -- for each reduction the last map the features API lists.
    The zoo's ResNet lists layer1..layer4 (4..32, torchvision's ``IntermediateLayerGetter`` convention); its stem
    activation (``relu``, reduction 2, 64 channels: timm's ``act1``) is added as the reduction-2 skip, as smp's
    ResNet encoder uses it. The decoder (``decoder.blocks.0`` ... ``.4``, smp's ``UnetDecoder`` with its default
    ``decoder_channels=(256, 128, 64, 32, 16)``; no centre block) upsamples the deepest map by nearest x2,
    concatenates ``[upsampled, skip]`` with the encoder's map at that reduction (16, 8, 4, 2; none for the last
    block, at full resolution), then applies two 3x3 convolutions (padding 1, no bias) + BN + ReLU; the head
    (``segmentation_head.0``) is a 3x3 convolution 16 -> classes with bias. Initialisation as smp: decoder
    convolutions Kaiming-uniform (fan-in), BN 1 / 0, head Xavier-uniform, biases zero; the encoder as its zoo
    network (or ``backbone_weights``).
    Parameters (ResNet-34, K classes, in_channels 3): encoder 21,284,672 (He et al. Table 1, 34-layer: conv1
    7x7x3x64 = 9,408 + BN 128; conv2_x 3 blocks of 2 x (3x3x64x64 + BN) = 221,952; conv3_x 1,116,416, conv4_x
    6,822,400, conv5_x 13,114,368 including the 1x1 projection shortcuts with BN; resnet34's 21,797,672 less fc
    513,000); decoder, 9 x weights + 2 x BN channels per conv:
        block 0 (512 + 256 -> 256, 256 -> 256)   1,769,472 + 512 + 589,824 + 512 = 2,360,320
        block 1 (256 + 128 -> 128, 128 -> 128)     442,368 + 256 + 147,456 + 256 =   590,336
        block 2 (128 +  64 ->  64,  64 ->  64)     110,592 + 128 +  36,864 + 128 =   147,712
        block 3 ( 64 +  64 ->  32,  32 ->  32)      36,864 +  64 +   9,216 +  64 =    46,208
        block 4 ( 32       ->  16,  16 ->  16)       4,608 +  32 +   2,304 +  32 =     6,976
        head 3x3 16 -> K with bias: 145 K; total 24,436,224 + 145 K (24,436,369 for K = 1, smp's count)
    Options: ``backbone`` (any zoo network whose features API gives maps at reductions 4, 8, 16 and 32, with or
    without 2: the resnet/resnext/seresnet, vgg, densenet, efficientnet, mobilenet, inception, xception families;
    `unet_backbones` lists them; another is refused with what it lacks), ``in_channels`` (passed to the backbone),
    ``num_classes`` (2, the paper's), ``decoder_channels`` (five widths), ``backbone_weights`` (anything
    ``create_model(backbone, weights=...)`` reads, e.g. ``"torchvision"`` or a zoo run; for another number of input
    channels the first convolution is adapted as smp's ``patch_first_conv``: summed over the input channels for
    1, else repeated and rescaled).
    Recipe on digits-segmentation (`DIGITS_RECIPES`): ResNet-34 from scratch, Adam 1e-3, 3 epochs of batch 16.
    Deviations from smp: any input size works (each upsampling goes to its skip's size, the last to the input's;
    smp refuses sizes that are not multiples of 32; for multiples the two agree). Not compared live with smp (not
    installed here): the count and the layout are checked against smp's documented structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import get_norm
from ...registry import Paper
from ..registry import register_segmenter
from .base import Segmenter

__all__ = ["BackboneUNet", "DoubleConv", "UNet", "center_crop", "unet", "unet_backbones", "unet_padded", "unet_resnet34"]

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


#: digits-segmentation (64x64, 1 channel, 11 classes; `get_digits_recipe`). The valid ``unet`` cannot run the paper's
#: depth 4 at 64 pixels (it needs >= 188: a 92-pixel border per side); depth 2 gives the 24x24 centre of a 64x64 canvas
#: (the trainer scores the mask's centre crop), depth 1 a 48x48 one. Measured: see the module docstring.
DIGITS_RECIPES = {
    "unet": {"options": {"depth": 2, "base_channels": 16}, "optimizer": "adam", "lr": 1e-3, "epochs": 10,
             "batch_size": 16},
    "unet_padded": {"options": {"base_channels": 16, "norm_layer": "batchnorm"}, "optimizer": "adam", "lr": 1e-3,
                    "epochs": 10, "batch_size": 16},
    "unet_resnet34": {"options": {}, "optimizer": "adam", "lr": 1e-3, "epochs": 3, "batch_size": 16},
}

_DEVIATIONS = ("no overlap-tile inference (mirrored borders) and no elastic-deformation augmentation built in",)


@register_segmenter(UNet, paper=UNET, input_size=(1, 572, 572), dataset="ISBI 2012 EM segmentation",
                    deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPES["unet"])
def unet(**kwargs) -> UNet:
    """The paper's network: valid convolutions, crop-and-concatenate, 572 -> 388, 2 classes."""
    return UNet(**kwargs)


@register_segmenter(UNet, paper=UNET, input_size=(1, 572, 572), dataset="ISBI 2012 EM segmentation",
                    deviations=(*_DEVIATIONS, "padded 3x3 convolutions: the output has the input's size"),
                    digits_recipe=DIGITS_RECIPES["unet_padded"])
def unet_padded(**kwargs) -> UNet:
    """The common re-implementation: padded 3x3 convolutions, output the size of the input."""
    return UNet(**{"padded": True, **kwargs})


# --------------------------------------------------------------------------------------------------------------------
# U-Net on a zoo backbone (segmentation_models_pytorch's ``Unet(encoder_name=...)`` layout)

#: the decoder's channels, deepest block first (segmentation_models_pytorch's Unet default)
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)
#: the encoder reductions the decoder joins, deepest first: the deepest map at 32, skips at 16, 8, 4 and (if any) 2
UNET_REDUCTIONS = (32, 16, 8, 4, 2)
_REQUIRED_REDUCTIONS = (4, 8, 16, 32)
#: a stem map the features API does not list but segmentation_models_pytorch's encoders use as the reduction-2 skip
#: (and timm lists as ``act1``): network class -> (module, the attribute whose ``num_features`` is its channels)
_STEM_TAPS = {"ResNet": ("relu", "bn1")}


def _add_stem_tap(model: nn.Module) -> None:
    """Give a torchvision-layout ResNet's ``feature_info`` the stem activation (reduction 2) in front, as timm's
    ``act1`` and segmentation_models_pytorch's ResNet encoder; a no-op for other networks or when one is listed."""
    tap = _STEM_TAPS.get(type(model).__name__)
    infos = list(getattr(model, "feature_info", []) or [])
    if tap is None or any(f["reduction"] == 2 for f in infos):
        return
    module, norm = tap
    if not isinstance(getattr(model, module, None), nn.Module) or not hasattr(getattr(model, norm, None),
                                                                              "num_features"):
        return
    model.feature_info = [{"num_chs": getattr(model, norm).num_features, "reduction": 2, "module": module}, *infos]


def _backbone_indices(name: str, infos) -> list[int]:
    """The feature_info indices of the maps the decoder uses: the last map at each reduction of `UNET_REDUCTIONS`,
    in network order (reduction 2 first if there is one). ValueError naming what is missing."""
    last = {}
    for i, f in enumerate(infos):
        last[f["reduction"]] = i
    missing = [r for r in _REQUIRED_REDUCTIONS if r not in last]
    if missing:
        reds = sorted({f["reduction"] for f in infos})
        raise ValueError(
            f"backbone {name!r} gives feature maps at reductions {reds}, but the U-Net decoder needs one at each of "
            f"4, 8, 16 and 32 (2 optional), missing {missing}. Valid backbones are the zoo networks whose features "
            f"API has them, e.g. the resnet/resnext/seresnet, vgg, densenet, efficientnet, mobilenet, inception "
            f"and xception families (resnet34, vgg16_bn, densenet121, efficientnet_b0, mobilenet_v2); "
            f"cnnzoo.segmentation.models.unet.unet_backbones() lists them all")
    return sorted(last[r] for r in UNET_REDUCTIONS if r in last)


def unet_backbones(names: list[str] | None = None) -> list[str]:
    """The zoo networks (of ``names``, default all: about a minute) that `BackboneUNet` accepts as ``backbone``:
    their features API gives maps at reductions 4, 8, 16 and 32. Built on the meta device (no memory, no compute)."""
    from ...registry import create_model, list_models

    valid = []
    for name in list_models() if names is None else names:
        try:
            with torch.device("meta"):
                model = create_model(name)
        except Exception:  # noqa: BLE001, S112 (a network that cannot be built here is not a backbone)
            continue
        if getattr(model, "no_feature_maps", None) or not getattr(model, "feature_info", None):
            continue
        try:
            _backbone_indices(name, model.feature_info)
        except ValueError:
            continue
        valid.append(name)
    return valid


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """segmentation_models_pytorch's ``patch_first_conv`` for pretrained weights on another number of input
    channels: the first convolution's weight is summed over its input channels for ``in_channels=1``, else its
    channels are repeated cyclically and scaled by ``C_old / in_channels``. ``model.in_channels`` follows."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    old = getattr(model, "in_channels", None)
    if conv is None or conv.in_channels != old or conv.groups != 1:
        raise ValueError(f"cannot adapt {type(model).__name__}'s first convolution from {old} to {in_channels} input "
                         f"channels; give images with {old} channels or leave backbone_weights out")
    w = conv.weight.detach()
    if in_channels == 1:
        new = w.sum(1, keepdim=True)
    else:
        new = torch.cat([w] * (in_channels // old + 1), dim=1)[:, :in_channels] * (old / in_channels)
    conv.weight = nn.Parameter(new.clone())
    conv.in_channels = in_channels
    model.in_channels = in_channels


class DecoderBlock(nn.Module):
    """segmentation_models_pytorch's Unet ``DecoderBlock``: nearest upsampling (x2, here: to the skip's size),
    concatenation ``[upsampled, skip]``, then two 3x3 conv (no bias) - BN - ReLU."""

    def __init__(self, in_chs: int, skip_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_chs + skip_chs, out_chs, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, size, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")  # (B, C, h, w) -> (B, C, ~2h, ~2w)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # -> (B, C + C_skip, 2h, 2w)
        return self.conv2(self.conv1(x))  # -> (B, out, 2h, 2w)


class UNetDecoder(nn.Module):
    """The five decoder blocks (``blocks.0`` the deepest), as segmentation_models_pytorch's ``UnetDecoder``."""

    def __init__(self, encoder_channels: list[int], decoder_channels: tuple[int, ...]) -> None:
        super().__init__()
        deepest, skips = encoder_channels[-1], list(reversed(encoder_channels[:-1]))  # r16, r8, r4[, r2]
        skips += [0] * (len(decoder_channels) - len(skips))
        ins = [deepest, *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))


class BackboneUNet(Segmenter):
    """U-Net decoder on a zoo backbone through the features API (segmentation_models_pytorch's ``Unet``). See the
    module docstring ("U-Net on a backbone")."""

    def __init__(self, *, backbone: str = "resnet34", num_classes: int = 2, in_channels: int = 3,
                 decoder_channels: list[int] = SMP_DECODER_CHANNELS, backbone_weights: str | None = None) -> None:
        super().__init__()
        from ...models.features import features_only_model
        from ...registry import create_model

        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BackboneUNet option {key} must be an integer >= 1, got {value!r}")
        if not isinstance(backbone, str) or not backbone:
            raise ValueError(f"BackboneUNet option backbone must be a zoo network's name, got {backbone!r}")
        dec = tuple(decoder_channels) if isinstance(decoder_channels, (list, tuple)) else ()
        if len(dec) != len(UNET_REDUCTIONS) or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in dec):
            raise ValueError(f"BackboneUNet option decoder_channels must be {len(UNET_REDUCTIONS)} integers >= 1 (one "
                             f"per upsampling, 32 -> 1), e.g. {list(SMP_DECODER_CHANNELS)}; got {decoder_channels!r}")
        self.num_classes, self.in_channels, self.backbone = num_classes, in_channels, backbone
        if backbone_weights is None:
            model = create_model(backbone, in_channels=in_channels)
        else:
            model = create_model(backbone, weights=backbone_weights)
            if model.in_channels != in_channels:
                _adapt_first_conv(model, in_channels)
        if getattr(model, "no_feature_maps", None) or not getattr(model, "feature_info", None):
            raise ValueError(f"backbone {backbone!r} has no feature maps (features API) for a U-Net decoder")
        _add_stem_tap(model)
        # encoder keys are the network's own (conv1..., layer4...), its classifier dropped
        self.encoder = features_only_model(model, _backbone_indices(backbone, model.feature_info))
        self.reductions = tuple(self.encoder.feature_info.reduction())
        self.decoder = UNetDecoder(self.encoder.feature_info.channels(), dec)
        self.segmentation_head = nn.Sequential(nn.Conv2d(dec[-1], num_classes, 3, padding=1))
        self.min_input_size = getattr(model, "min_input_size", 1)
        for m in [*self.decoder.modules(), *self.segmentation_head.modules()]:  # smp's initialize_decoder / _head
            if isinstance(m, nn.Conv2d):
                if m in set(self.segmentation_head.modules()):
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def output_size(self, size: int) -> int:
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.encoder(x)  # [r2,] r4, r8, r16, r32 maps
        skips = list(reversed(feats[:-1]))  # r16, r8, r4[, r2]
        y = feats[-1]
        n = len(self.decoder.blocks)
        for i, block in enumerate(self.decoder.blocks):
            skip = skips[i] if i < len(skips) else None
            if skip is not None:
                size = skip.shape[-2:]
            elif i == n - 1:
                size = x.shape[-2:]  # the last block returns to the input's size
            else:
                size = (2 * y.shape[-2], 2 * y.shape[-1])
            y = block(y, size, skip)
        return self.segmentation_head(y)  # (B, 16, H, W) -> (B, num_classes, H, W)


_BACKBONE_DEVIATIONS = (
    ("not the paper's network: segmentation_models_pytorch's Unet decoder (padded 3x3 conv-BN-ReLU, nearest "
     "upsampling, decoder channels 256-128-64-32-16) on a zoo backbone (ResNet-34) through the features API"),
    ("inputs of any size: each nearest upsampling goes to its skip's size (the last to the input's), where "
     "segmentation_models_pytorch refuses sizes that are not multiples of 32"),
)


@register_segmenter(BackboneUNet, paper=UNET, input_size=(3, 224, 224), dataset="any (the paper: ISBI 2012 EM)",
                    deviations=_BACKBONE_DEVIATIONS, digits_recipe=DIGITS_RECIPES["unet_resnet34"])
def unet_resnet34(**kwargs) -> BackboneUNet:
    """U-Net decoder on the zoo's ResNet-34 (segmentation_models_pytorch's Unet layout); ``backbone=`` any zoo net."""
    return BackboneUNet(**kwargs)
