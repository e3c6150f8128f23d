"""FCN. J. Long, E. Shelhamer, T. Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.
https://arxiv.org/abs/1411.4038 -- and the journal version, E. Shelhamer, J. Long, T. Darrell, "Fully Convolutional
Networks for Semantic Segmentation", IEEE TPAMI 2017 (https://arxiv.org/abs/1605.06211), with the authors' reference
Caffe nets ``voc-fcn32s``, ``voc-fcn16s``, ``voc-fcn8s`` and ``voc-fcn8s-atonce`` (github.com/shelhamer/
fcn.berkeleyvision.org).

Key ideas
    A classification net becomes a dense predictor by reading its fully connected layers as convolutions covering
    their whole input (Sec. 3.1, Fig. 2): VGG-16's fc6 (25,088 -> 4,096 over a 7x7x512 pool5) is a 7x7 convolution
    with 4,096 outputs, fc7 a 1x1 one, so the net takes any input size and gives a coarse map of class scores
    (stride 32) in one pass, whose every position equals the classifier evaluated on one window. A 1x1 convolution
    ``score_fr`` gives the class scores; in-network upsampling by a transposed ("backwards strided") convolution
    initialised to bilinear interpolation brings them back to pixels (Sec. 3.3), and the whole net is trained
    end to end with a per-pixel loss. The skip architecture (Sec. 4.2, Fig. 3) fuses the coarse, semantic
    prediction with finer, shallower ones: FCN-16s predicts from pool4 with a 1x1 ``score_pool4``, upsamples the
    stride-32 scores 2x and *sums* the two before a 16x upsampling; FCN-8s adds pool3 the same way and upsamples 8x.
    Each step sharpens the output (Fig. 4) and raises mean IU.

Which table the code reproduces
    The VGG-16 nets of Sec. 4 (CVPR Table 2 / PAMI Table 3: FCN-32s, FCN-16s, FCN-8s), in the layout of the
    authors' reference nets: conv1_1 pads by 100 pixels; pooling rounds up (Caffe); fc6 7x7/4096 and fc7 1x1/4096
    with ReLU and dropout 0.5; ``score_fr``, ``score_pool4``, ``score_pool3`` 1x1 convolutions with bias; upsampling
    by bias-free transposed convolutions, one bilinear kernel per class: ``upscore`` 64/32 (32s); ``upscore2`` 4/2
    and ``upscore16`` 32/16 (16s); ``upscore2`` 4/2, ``upscore_pool4`` 4/2 and ``upscore8`` 16/8 (8s); and the
    crops that align each map to the next, at the offsets the reference nets' ``crop`` layers compute:

        layer -> input coordinate (centre of its receptive field, in the *unpadded* input; x = a * i + b)
        conv1_1 (3x3, pad 100): i - 99;  each 3x3/pad 1: + 0;  each 2x2/2 max-pool: 2i + 0.5
        pool3: 8i - 95.5    pool4: 16i - 91.5    pool5: 32i - 83.5    fc6 (7x7, pad 0), fc7, score_fr: 32i + 12.5
        a transposed conv (k, s) maps its output z to its input (z - (k - 1) / 2) / s, so
        32s: upscore(64/32) -> z - 19                                            crop 19
        16s: upscore2(4/2) -> 16z - 11.5; score_pool4 16(z + c) - 91.5 = 16z - 11.5  crop 5;  upscore16 -> z - 27
        8s:  upscore_pool4(4/2) -> 8z - 23.5; score_pool3 8(z + c) - 95.5 = 8z - 23.5  crop 9;  upscore8 -> z - 31

    Parameters for the 21 PASCAL classes (the derivation is in tests/test_segmentation_fcn.py): FCN-32s
    136,152,917; FCN-16s 134,815,994; FCN-8s 134,489,759 (the bilinear kernels included, as the Caffe models store
    them; without them 134,346,581, 134,357,354, 134,362,751 are trained).

Training setup in the paper
    Fine-tuned from the ILSVRC VGG-16 (fc6/fc7 converted), class scoring layers zero-initialised ("random
    initialization yielded neither better performance nor faster convergence"), SGD with momentum, biases at twice
    the learning rate. CVPR: minibatches of 20 images, fixed lr 1e-4 for VGG-16, momentum 0.9, weight decay 5e-4 or
    2e-4, dropout kept in fc6/fc7. The reference nets (PAMI, "heavy" online learning): one image per step, momentum
    0.99, the loss summed (not averaged) over pixels with a fixed lr of 1e-10 (32s) or 1e-12 (16s), weight decay 5e-4.
    Staged: FCN-16s starts from a trained FCN-32s with ``score_pool4`` zero-initialised, FCN-8s from FCN-16s. The
    "at-once" FCN-8s (PAMI) trains all three streams from VGG-16 in one go, scaling pool4 by 0.01 and pool3 by 1e-4
    before their score layers "to better condition optimization" (the reference net's fixed Scale layers). CVPR: the
    upsampling is initialised to bilinear and learned; the reference nets fix it (lr_mult 0; the README's FAQ: "no
    significant difference in accuracy ... fixing these parameters gives a slight speed-up"). Data: PASCAL VOC 2011
    train + SBD (Hariharan et al.), images at their size (up to 500x500), loss summed over pixels, label 255 ignored.

This implementation
    ``fcn32s_vgg16``, ``fcn16s_vgg16``, ``fcn8s_vgg16`` are the reference (staged) nets: no skip scaling, bilinear
    upsampling fixed (its weights are parameters with ``requires_grad=False``: they are in the state dict and in
    ``parameters()``, as Caffe stores them, and no optimiser moves them). ``features`` is VGG-16 (configuration D)
    with the zoo's ``vgg16`` keys and shapes (``features.0`` ... ``features.28``), so a classification checkpoint
    loads into it; only conv1_1's padding (100) and the pools' rounding (up, as Caffe's: with floor pooling the
    ``upscore`` output is too small to crop for some sizes) differ, neither has parameters. Every input size from 1
    pixel up gives an output of the input's size. Class scoring layers start at zero (Sec. 4.3), the VGG layers as
    the zoo's vgg16 (Kaiming-normal convolutions, N(0, 0.01) for fc6/fc7, zero biases). Staged training is a recipe
    (``init_from`` a trained coarser net), not built in. Defaults: ``in_channels=3``, ``num_classes=21`` (PASCAL).
    Options:
        ``backbone_weights``: a vgg16 checkpoint (anything ``create_model("vgg16", weights=...)`` reads, e.g.
            ``"torchvision"``); its convolutions are copied and its fc6/fc7 converted to convolutions
            (`load_classifier`, fc6's 4096 x 25088 weight reshaped to 4096 x 512 x 7 x 7), as Sec. 3.1/4.1 start.
            `from_classifier(vgg)` does the same from a network in memory.
        ``at_once`` (16s, 8s): the "at-once" net: pool4 x 0.01 and pool3 x 1e-4 before their score layers
            (fixed constants, not parameters: the Caffe Scale layers' fixed 512 + 256 blobs are not counted).
        ``learn_upsampling``: the transposed convolutions learn (bilinear at the start), as the CVPR experiments.
        ``drop_rate`` (0.5): dropout after fc6 and fc7's ReLUs (element-wise, as Caffe's Dropout).
        ``width_mult`` (1.0): scales every VGG width (64 ... 512 and fc 4096; rounded, at least 1) -- a deviation for
            training on 2 CPU cores: at 1.0 a 64x64 digit canvas costs VGG-16 on 262x262 pixels (the 100-pixel pad)
            and ~22 GMACs; 1/8 costs 1/64 of that. Checkpoints of vgg16 load only at 1.0. Measured (2 CPU threads,
            seed 0): ``fcn8s_vgg16`` at 1/8 from random weights, SGD lr 0.01 momentum 0.9, batch 16 of 64x64
            digits-segmentation: 0.44 s/step, loss 2.40 -> 0.19 in 300 steps (133 s), yet test mean IU 0.098 (pixel
            accuracy 0.953: background only) -- VGG-16 without normalisation from scratch sits on its plateau, as
            the zoo's vgg16 card says; the paper starts from ImageNet weights (``backbone_weights``).
            1/16 width, ``drop_rate=0``, Adam 1e-3, 3 epochs of batch 16 (the earlier digits recipe) is no better:
            fcn16s_vgg16 mean IU 0.087 (104 CPU s; also 0.087 with dropout 0.5 at lr 5e-4), fcn8s_vgg16 0.087 (103
            CPU s): all-background; with ``batch_norm`` alone fcn32s_vgg16 stays at 0.087 too (132 CPU s).
        ``batch_norm`` (False): BN after each of the 13 VGG convolutions (conv with its bias, BN, ReLU: the zoo's and
            torchvision's ``vgg16_bn`` layout, keys ``features.0`` ... ``features.43``, so ``backbone_weights`` is
            then a vgg16_bn checkpoint); fc6/fc7 have none (vgg16_bn's classifier has none). Not in the paper (it
            predates BN): a deviation used only by the digits recipe, for training VGG-16 from scratch; it adds 2
            parameters per convolution channel (2 * 4,224 = 8,448 at full width).
        ``backbone`` (``"vgg16"``, the paper's path above) and ``backbone_options``: another encoder; next section.
    digits-segmentation recipe (`DIGITS_RECIPES`; FCN-32s also ``learn_upsampling=True``): 1/16 width, ``drop_rate=0``,
    ``batch_norm=True``, SegNet's median frequency class balancing in the loss (``class_weighting:
    median_frequency``, Badrinarayanan et al. Sec. 3.2; the FCN paper's loss is unweighted), Adam 1e-3, 4 epochs of
    batch 8 -- two deviations, both on the card. Measured with `SegTrainer` (one thread, test split of 200
    canvases; seconds are the process's CPU time, what an idle thread takes, on a loaded shared machine):
        fcn8s_vgg16:  seed 0 mean IU 0.296 (pixel accuracy 0.933), 152 CPU s;  seed 1 0.354 (0.928), 142 CPU s
        fcn16s_vgg16: seed 0 mean IU 0.247 (0.895), 153 CPU s;  seed 1 0.121 (0.855), 151 CPU s
        fcn32s_vgg16: seed 0 mean IU 0.097 (0.827), 162 CPU s;  seed 1 0.105 (0.846), 166 CPU s
    (500 steps of batch 8, ~0.3 s each; fcn16s seed 0 was trained 3 epochs, then resumed to 4: bit-identical to
    one run.) The skips decide it, as in the paper's Table 2 (PAMI Table 3): on a 64x64 canvas the stride-32 net
    scores a 3x3 grid (pool5 of the padded 262x262 input is 9x9, fc6 7x7 leaves 3x3), one cell per ~32 pixels,
    about one digit, and its upsampling can only paint blobs. With the fixed bilinear kernel fcn32s_vgg16 reads
    0.082 (seed 0, 4 epochs; below all-background: the class weights make it paint digit blobs, pixel accuracy
    0.77); learning the upsampling (the recipe) lifts it to 0.10 only -- a known shortfall, not solved here (a
    larger canvas, ``--data-param canvas=128``, would give it a 5x5 grid; not measured). pool4 (stride 16) and
    pool3 (stride 8) add the detail. Without the class weights, with BN: 0.087 (fcn32s, 3 epochs of batch 16).
    Not here: the Caffe BGR mean subtraction (inputs are normalised as the zoo's vgg16 expects) and the staged
    solver schedule.

FCN on another backbone (``backbone=``)
    The paper converts three classifiers (CVPR Sec. 4.1, Table 1: FCN-AlexNet, FCN-VGG16, FCN-GoogLeNet; "we discard
    the final average pooling layer of GoogLeNet" and its classifier, so GoogLeNet's scores come from a 1x1 layer on
    its stride-32 map, while AlexNet's and VGG's fc6/fc7 become convolutions) and builds the skips on the best of
    them. ``backbone="vgg16"`` (the default) is the paper's path above, unchanged. Any other zoo network is taken
    through the features API (``create_model(backbone, **backbone_options)`` as a ``features_only`` network:
    ``encoder``, its classifier dropped, state-dict keys the network's own, ``encoder.layer4.1.conv2.weight``),
    reading the last map it lists at each reduction the FCN needs: 32 (all), 16 (16s, 8s), 8 (8s). A network
    without one of them is refused with a ValueError naming the reductions it has (``vit_b_16`` has only 16;
    ``densenet40_k12_cifar`` 1, 2, 4). The head is FCN-GoogLeNet's for every network: a 1x1 ``score_fr`` on the
    stride-32 map after a ``drop_rate`` dropout (where fc7's dropout sits in the VGG and AlexNet nets and GoogLeNet's
    own before its classifier), no fc6/fc7 convolutions (a generic backbone has no fully connected layers whose
    shape says how to convolve them: so ``alexnet`` or ``vgg19`` here are *not* the paper's FCN-AlexNet / an
    FCN-VGG19); the skips as the paper's (1x1 ``score_pool4`` on the stride-16 map, ``score_pool3`` on the stride-8
    one, each summed with the 2x bilinear ``upscore2`` / ``upscore_pool4`` of the coarser scores), the final
    ``upscore`` 64/32, ``upscore16`` 32/16, ``upscore8`` 16/8; all bilinear, fixed unless ``learn_upsampling``;
    ``at_once`` scales the stride-16 / -8 maps by 0.01 / 1e-4 as on VGG. Score layers start at zero (Sec. 4.3), the
    encoder as its zoo network, or ``backbone_weights`` (any checkpoint ``create_model(backbone, weights=...)``
    reads; another number of input channels adapts the first convolution as ``unet_resnet34`` does).
    Alignment: zoo networks pad "same" (no 100-pixel pad, no ``fc6`` shrinking the map), so the reference nets'
    crops do not apply. Taking cell i of a reduction-r map to cover pixels [r i, r i + r), centre r i + (r - 1) / 2
    (2x2/2 pooling's convention; a 3x3/2 convolution with padding 1 centres it at r i, up to half a cell off),
    and a transposed convolution (kernel 2f, stride f) mapping its output z to input (z - f + 0.5) / f:
        2x of a reduction-r map: z -> r (z - 1.5) / 2 + (r - 1) / 2 = (r / 2)(z - 1) + (r / 2 - 1) / 2, i.e.
            cell z - 1 of the reduction-r/2 skip: the upsampled map is cut to the skip's size from offset 1;
        f x of a reduction-f map: z -> (z - f + 0.5) + (f - 1) / 2 = z - f / 2: cut to the input's size from
            offset f / 2 (16 for 32s, 8 for 16s, 4 for 8s).
    A map of s = ceil(H / r) cells (what same padding gives) always covers that window ((s + 1) f >= H + f); a
    backbone whose maps shrink faster (valid convolutions, floor pooling: ``alexnet`` at its 63-pixel minimum) can
    fall short, and the last row / column is then repeated. Every input from the backbone's ``min_input_size`` (1
    for resnet18 and mobilenet_v2) gives an output of the input's size. The outermost half cell of the output
    holds the nearest cell's scores faded by the bilinear kernel's tail (no neighbour beyond the border).
    ``width_mult`` and ``batch_norm`` shape the VGG-16 path only: another network's widths and normalisation are
    its own (``backbone_options``, e.g. ``{"width_mult": 0.5}`` for mobilenet_v2, ``{"layers": [1, 1, 1, 1]}`` for
    resnet18), so with another backbone they are ignored (the digits recipe, which sets them, then applies to
    ``cnnzoo compare fcn8s_vgg16 'fcn8s_vgg16:backbone=resnet18'`` unchanged); ``backbone_options`` with the VGG-16
    path is an error, and so is ``backbone="vgg16_bn"`` (the paper's path with ``batch_norm=True`` is that).
    Parameters, with the bilinear kernels counted as on VGG (tests/test_segmentation_fcn_backbone.py): FCN-8s on
    resnet18, K = 11: resnet18's 11,689,512 less its fc 513,000 = 11,176,512; score layers (512 + 256 + 128) K + 3K
    = 9,889; kernels K^2 (16 + 16 + 256) = 34,848; 11,221,249 in all.
    The options travel with the weights: the FCN's state dict holds ``backbone_spec._extra_state`` (`BackboneSpec`:
    backbone, backbone_options, in_channels, num_classes, at_once as JSON in a uint8 tensor), from which
    ``create_segmenter(name, weights=FILE)`` rebuilds the network with no options; the VGG-16 path's state dict is
    as before (no such key).
"""

from __future__ import annotations

import json
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Paper
from ..registry import register_segmenter
from .base import Segmenter

__all__ = ["FCN", "FCN_REDUCTIONS", "BackboneSpec", "FCN8s", "FCN16s", "FCN32s", "bilinear_kernel",
           "bilinear_upsampling", "fc_to_conv", "fcn8s_vgg16", "fcn16s_vgg16", "fcn32s_vgg16", "from_classifier"]

FCNPAPER = Paper("Fully Convolutional Networks for Semantic Segmentation", "J. Long, E. Shelhamer, T. Darrell", 2015,
                 "https://arxiv.org/abs/1411.4038")

# VGG-16, configuration D of Simonyan & Zisserman's Table 1 (the zoo's vgg.CONFIGS["D"]): channels, "M" = 2x2/2 pool.
VGG16_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
FC_WIDTH = 4096  # fc6 / fc7
FIRST_PAD = 100  # conv1_1's padding in the reference nets: "guarantees that the network output can be aligned"
AT_ONCE_SCALE = {"pool4": 0.01, "pool3": 1e-4}  # voc-fcn8s-atonce: "scale pool4/pool3 skip for compatibility"
PAPER_BACKBONE = "vgg16"  # backbone= default: the paper's VGG-16 path (fc6/fc7, 100-pixel pad, Caffe crops)
#: backbone= another zoo network: the reductions of the maps each FCN scores (stride 32, and its skips)
FCN_REDUCTIONS = {32: (32,), 16: (16, 32), 8: (8, 16, 32)}


def bilinear_kernel(size: int) -> torch.Tensor:
    """The ``size x size`` bilinear interpolation kernel of Sec. 3.3 (the reference ``surgery.interp`` filler):
    the outer product of the tent ``1 - |i - c| / f`` with ``f = ceil(size / 2)`` and ``c`` the kernel's centre
    (``f - 1`` for odd sizes, ``f - 0.5`` for even). Size 4 gives the outer product of [0.25, 0.75, 0.75, 0.25]."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 else factor - 0.5
    tent = 1.0 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    return torch.outer(tent, tent).float()


def bilinear_upsampling(channels: int, factor: int, learn: bool = False) -> nn.ConvTranspose2d:
    """A bias-free transposed convolution (kernel ``2 * factor``, stride ``factor``) that interpolates each channel
    bilinearly on its own: weight[c, c] is `bilinear_kernel`, weight[c, d != c] zero (one kernel per class)."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, bias=False)
    with torch.no_grad():
        up.weight.zero_()
        kernel = bilinear_kernel(2 * factor).to(up.weight.device)
        for c in range(channels):
            up.weight[c, c] = kernel
    up.weight.requires_grad_(learn)
    return up


def fc_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """Sec. 3.1: a fully connected layer reading a flattened ``(in_channels, k, k)`` map as a ``k x k`` convolution
    with the same numbers (the weight ``(out, C * k * k)`` reshaped to ``(out, C, k, k)``, PyTorch's C, H, W order)."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected an nn.Linear to convert, got {type(linear).__name__}")
    if linear.in_features != in_channels * kernel_size**2:
        raise ValueError(f"a Linear with {linear.in_features} inputs cannot read a {in_channels}x{kernel_size}x"
                         f"{kernel_size} map ({in_channels * kernel_size**2} values)")
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(conv.weight.shape))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _crop(x: torch.Tensor, offset: int, height: int, width: int) -> torch.Tensor:
    """The reference nets' ``crop`` layer: the ``height x width`` window starting ``offset`` pixels in."""
    return x[..., offset : offset + height, offset : offset + width]


def _align(x: torch.Tensor, offset: int, height: int, width: int) -> torch.Tensor:
    """The ``height x width`` window of ``x`` from ``offset`` (the crop of a same-padded backbone's upsampled scores,
    module docstring); where a backbone's maps shrink faster than ``ceil(H / r)`` (valid convolutions, floor
    pooling) and the window runs past ``x``'s end, the last row / column is repeated to fill it."""
    x = x[..., offset : offset + height, offset : offset + width]
    short_h, short_w = height - x.shape[-2], width - x.shape[-1]
    if short_h > 0 or short_w > 0:
        x = F.pad(x, (0, max(0, short_w), 0, max(0, short_h)), mode="replicate")
    return x


BACKBONE_SPEC_KEY = "backbone_spec._extra_state"


class BackboneSpec(nn.Module):
    """Carries an FCN's backbone and the options its weights need in its state dict (``backbone_spec._extra_state``:
    their JSON as a uint8 tensor, which safetensors and ``torch.load(weights_only=True)`` both store), so that
    ``create_segmenter(name, weights=FILE)`` rebuilds an FCN on another backbone with no options
    (`FCN.options_from_state_dict`). Loading a state dict of another backbone is an error naming both."""

    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.spec = json.loads(json.dumps(spec, sort_keys=True))  # as it comes back from a file (lists, not tuples)

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(list(json.dumps(self.spec, sort_keys=True).encode()), dtype=torch.uint8)

    @staticmethod
    def decode(state: torch.Tensor) -> dict:
        try:
            spec = json.loads(bytes(state.cpu().to(torch.uint8).tolist()).decode())
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{BACKBONE_SPEC_KEY} of the weights is not an FCN backbone record") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("backbone"), str):
            raise ValueError(f"{BACKBONE_SPEC_KEY} of the weights is not an FCN backbone record")
        return spec

    def set_extra_state(self, state: torch.Tensor) -> None:
        theirs = self.decode(state)
        for key in ("backbone", "backbone_options"):
            if theirs.get(key) != self.spec[key]:
                raise ValueError(f"the weights are an FCN on {key}={theirs.get(key)!r}, this FCN has "
                                 f"{key}={self.spec[key]!r}")

    def extra_repr(self) -> str:
        return f"backbone={self.spec['backbone']!r}, backbone_options={self.spec['backbone_options']!r}"


class FCN(Segmenter):
    """FCN on VGG-16 (Sec. 4); the subclasses fix the output stride. See the module docstring for the options."""

    output_stride = 32
    crop_offsets: ClassVar[dict[str, int]] = {}  # the crop layers' offsets (module docstring)
    min_input_size = 1  # the 100-pixel pad and the ceil pooling leave fc6 at least 1x1 for any input

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, drop_rate: float = 0.5, at_once: bool = False,
                 learn_upsampling: bool = False, width_mult: float = 1.0, batch_norm: bool = False,
                 backbone_weights: str | None = None, backbone: str = PAPER_BACKBONE,
                 backbone_options: dict | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} option {key} must be an integer >= 1, got {value!r}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"{name} option drop_rate must be in [0, 1), got {drop_rate!r}")
        if not float(width_mult) > 0.0:
            raise ValueError(f"{name} option width_mult must be > 0, got {width_mult!r}")
        if at_once and self.output_stride == 32:
            raise ValueError(f"{name} has no skips for at_once to scale (it applies to fcn16s_vgg16 and fcn8s_vgg16)")
        if not isinstance(batch_norm, bool):
            raise ValueError(f"{name} option batch_norm must be true or false, got {batch_norm!r}")
        if not isinstance(backbone, str) or not backbone:
            raise ValueError(f"{name} option backbone must be a zoo network's name ({PAPER_BACKBONE!r}, the paper's, "
                             f"or e.g. 'resnet18', 'mobilenet_v2', 'googlenet'), got {backbone!r}")
        self.num_classes, self.in_channels, self.at_once = num_classes, in_channels, bool(at_once)
        self.backbone, self.backbone_options = backbone, None
        self.batch_norm = batch_norm if backbone == PAPER_BACKBONE else None  # the VGG path's (module docstring)
        if backbone != PAPER_BACKBONE:
            self._build_on_backbone(num_classes, in_channels, drop_rate, bool(at_once), bool(learn_upsampling),
                                    backbone, backbone_options, backbone_weights)
            return
        if backbone_options:
            raise ValueError(f"{name}: backbone_options are for another backbone; the paper's VGG-16 path "
                             f"(backbone={PAPER_BACKBONE!r}) takes width_mult and batch_norm, got {backbone_options!r}")
        vgg = "vgg16_bn" if batch_norm else "vgg16"
        if backbone_weights is not None and float(width_mult) != 1.0:
            raise ValueError(f"{name}: backbone_weights are a {vgg} checkpoint, which fits only width_mult=1.0, "
                             f"got width_mult={width_mult!r}")

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        # VGG-16's convolutions, keys as the zoo's / torchvision's vgg16 (features.0 ... features.30), or with
        # batch_norm vgg16_bn's (conv with bias, BN, ReLU: features.0 ... features.43)
        layers: list[nn.Module] = []
        chs = in_channels
        for item in VGG16_D:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # Caffe's pooling rounds up
            else:
                layers += [nn.Conv2d(chs, width(item), 3, padding=FIRST_PAD if not layers else 1),
                           *([nn.BatchNorm2d(width(item))] if batch_norm else []), nn.ReLU(inplace=True)]
                chs = width(item)
        self.features = nn.Sequential(*layers)
        self._pool_ends = [i + 1 for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]  # pool1 ... pool5
        pool3_chs, pool4_chs, fc = width(256), width(512), width(FC_WIDTH)
        # Sec. 3.1: fc6 / fc7 as convolutions
        self.fc6 = nn.Conv2d(chs, fc, 7)  # pool5 (B, 512, h, w) -> (B, 4096, h - 6, w - 6)
        self.drop6 = nn.Dropout(drop_rate)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.drop7 = nn.Dropout(drop_rate)
        self.score_fr = nn.Conv2d(fc, num_classes, 1)
        learn = bool(learn_upsampling)
        if self.output_stride == 32:
            self.upscore = bilinear_upsampling(num_classes, 32, learn)
        else:
            self.score_pool4 = nn.Conv2d(pool4_chs, num_classes, 1)
            self.upscore2 = bilinear_upsampling(num_classes, 2, learn)
            if self.output_stride == 16:
                self.upscore16 = bilinear_upsampling(num_classes, 16, learn)
            else:
                self.score_pool3 = nn.Conv2d(pool3_chs, num_classes, 1)
                self.upscore_pool4 = bilinear_upsampling(num_classes, 2, learn)
                self.upscore8 = bilinear_upsampling(num_classes, 8, learn)
        self._init_weights()
        if backbone_weights is not None:
            from ...registry import create_model

            self.load_classifier(create_model(vgg, weights=backbone_weights))

    def _build_on_backbone(self, num_classes: int, in_channels: int, drop_rate: float, at_once: bool, learn: bool,
                           backbone: str, backbone_options: dict | None, backbone_weights: str | None) -> None:
        """The FCN head on a zoo network's features (module docstring, "backbone="): 1x1 score layers on the maps
        at reductions 32 (``score_fr``), 16 (``score_pool4``) and 8 (``score_pool3``), the paper's upsampling."""
        from ...models.features import features_only_model
        from ...registry import UnknownModelError, create_model
        from .pspnet import _backbone_options
        from .unet import _adapt_first_conv

        name = f"fcn{self.output_stride}s_vgg16"
        if backbone == "vgg16_bn":
            raise ValueError(f"{name}: VGG-16 with BN is the paper's path with batch_norm=True (backbone="
                             f"{PAPER_BACKBONE!r}, the vgg16_bn layout); backbone='vgg16_bn' is not a generic backbone")
        extra = _backbone_options(name, backbone, backbone_options)
        spec = {"backbone": backbone, "backbone_options": extra or None, "in_channels": in_channels,
                "num_classes": num_classes, "at_once": at_once}
        try:
            json.dumps(spec)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: backbone_options must hold plain values (names, numbers, lists) to travel "
                             f"with the weights, got {backbone_options!r}") from None
        self.backbone_options = extra or None
        try:
            if backbone_weights is None:
                model = create_model(backbone, in_channels=in_channels, **extra)
            else:
                model = create_model(backbone, weights=backbone_weights, **extra)
                if model.in_channels != in_channels:
                    _adapt_first_conv(model, in_channels)  # as unet_resnet34 (smp's patch_first_conv)
        except UnknownModelError as exc:
            raise UnknownModelError(f"{name} option backbone: {exc.args[0]}") from exc
        if getattr(model, "no_feature_maps", None) or not getattr(model, "feature_info", None):
            raise ValueError(f"{name}: backbone {backbone!r} has no feature maps (features API) for an FCN head")
        needed = FCN_REDUCTIONS[self.output_stride]
        last: dict[int, int] = {}
        for i, f in enumerate(model.feature_info):  # the last map at each reduction (pool3, pool4, pool5 on VGG)
            last[f["reduction"]] = i
        missing = [r for r in needed if r not in last]
        if missing:
            raise ValueError(f"{name}: backbone {backbone!r} gives feature maps at reductions {sorted(last)}, but "
                             f"FCN-{self.output_stride}s needs one at each of {list(needed)} (missing {missing}); "
                             f"take a network with maps at strides 8, 16 and 32 (resnet18, mobilenet_v2, googlenet, "
                             f"vgg19...) or the FCN whose skips it has")
        self.encoder = features_only_model(model, sorted(last[r] for r in needed))  # keys: the network's own
        self.reductions = tuple(self.encoder.feature_info.reduction())  # (8,) (16,) 32
        chans = dict(zip(self.reductions, self.encoder.feature_info.channels()))
        self.min_input_size = max(1, getattr(model, "min_input_size", 1))
        self.backbone_spec = BackboneSpec(spec)
        self.drop = nn.Dropout(drop_rate)  # where fc7's dropout (VGG, AlexNet) / GoogLeNet's 0.4 sit: before scoring
        self.score_fr = nn.Conv2d(chans[32], num_classes, 1)
        if self.output_stride == 32:
            self.upscore = bilinear_upsampling(num_classes, 32, learn)
        else:
            self.score_pool4 = nn.Conv2d(chans[16], num_classes, 1)
            self.upscore2 = bilinear_upsampling(num_classes, 2, learn)
            if self.output_stride == 16:
                self.upscore16 = bilinear_upsampling(num_classes, 16, learn)
            else:
                self.score_pool3 = nn.Conv2d(chans[8], num_classes, 1)
                self.upscore_pool4 = bilinear_upsampling(num_classes, 2, learn)
                self.upscore8 = bilinear_upsampling(num_classes, 8, learn)
        for layer in ("score_fr", "score_pool4", "score_pool3"):  # Sec. 4.3: class scoring layers start at zero
            if hasattr(self, layer):
                nn.init.zeros_(getattr(self, layer).weight)
                nn.init.zeros_(getattr(self, layer).bias)

    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """The options a weights file of an FCN on another backbone was built with (``backbone``,
        ``backbone_options``, ``in_channels``, ``num_classes``, ``at_once``: its ``backbone_spec._extra_state``);
        nothing for the paper's VGG-16 path (its options are passed as before)."""
        state = sd.get(BACKBONE_SPEC_KEY)
        return BackboneSpec.decode(state) if isinstance(state, torch.Tensor) else {}

    def _init_weights(self) -> None:
        for m in [*self.features.modules(), self.fc6, self.fc7]:  # as the zoo's vgg16 (torchvision's VGG init)
            if isinstance(m, nn.Conv2d):
                if m is self.fc6 or m is self.fc7:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name in ("score_fr", "score_pool4", "score_pool3"):  # Sec. 4.3 / 4.2: class scoring layers start at zero
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)

    def load_classifier(self, vgg: nn.Module) -> None:
        """Copy a classification VGG-16's convolutions and convert its fc6/fc7 (``classifier.0`` / ``classifier.3``,
        the zoo's and torchvision's layout) into ``fc6``/``fc7`` (Sec. 3.1). fc8 is dropped: ``score_fr`` starts at
        zero, as Sec. 4.1 "discards the final classifier layer"."""
        if self.backbone != PAPER_BACKBONE:
            raise ValueError(f"load_classifier converts a VGG-16 into the paper's path; this FCN is on {self.backbone!r}"
                             f" (give its weights as backbone_weights when building it)")
        theirs, mine = vgg.features.state_dict(), self.features.state_dict()
        wrong = [k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape]
        if wrong or len(theirs) != len(mine):
            shown = ", ".join(f"features.{k} {tuple(mine[k].shape)} vs "
                              f"{tuple(theirs[k].shape) if k in theirs else 'missing'}"
                              for k in wrong[:3])
            raise ValueError(f"the classifier's features are not this FCN's VGG-16 convolutions ({shown or 'extra keys'}"
                             f"); build the FCN with that network's in_channels and width")
        classifier = getattr(vgg, "classifier", None)
        if not isinstance(classifier, nn.Sequential) or len(classifier) < 4:
            raise ValueError("the classifier has no VGG head (classifier.0 = fc6, classifier.3 = fc7) to convert")
        fc6 = fc_to_conv(classifier[0], self.fc6.in_channels, 7)
        fc7 = fc_to_conv(classifier[3], self.fc7.in_channels, 1)
        if fc6.weight.shape != self.fc6.weight.shape or fc7.weight.shape != self.fc7.weight.shape:
            raise ValueError(f"the classifier's fc6/fc7 {tuple(fc6.weight.shape)}/{tuple(fc7.weight.shape)} do not fit "
                             f"this FCN's {tuple(self.fc6.weight.shape)}/{tuple(self.fc7.weight.shape)}")
        with torch.no_grad():
            self.features.load_state_dict(theirs)
            self.fc6.load_state_dict(fc6.state_dict())
            self.fc7.load_state_dict(fc7.state_dict())

    def output_size(self, size: int) -> int:
        return size  # the crops align the output to the input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h, w = x.shape[-2:]
        if self.backbone != PAPER_BACKBONE:
            return self._forward_backbone(x)
        p3, p4, p5 = self._pool_ends[2:]
        pool3 = self.features[:p3](x)  # (B, C, H, W) -> (B, 256, ~(H + 198) / 8, ...)
        pool4 = self.features[p3:p4](pool3)  # -> (B, 512, ~(H + 198) / 16, ...)
        pool5 = self.features[p4:p5](pool4)  # -> (B, 512, ~(H + 198) / 32, ...)
        x = self.drop6(F.relu(self.fc6(pool5), inplace=True))  # -> (B, 4096, h5 - 6, w5 - 6)
        x = self.drop7(F.relu(self.fc7(x), inplace=True))
        score = self.score_fr(x)  # -> (B, num_classes, h5 - 6, w5 - 6)
        off = self.crop_offsets
        if self.output_stride == 32:
            return _crop(self.upscore(score), off["score"], h, w)  # (B, K, 32 (h5 - 5), ...) -> (B, K, H, W)
        if self.at_once:
            pool4 = pool4 * AT_ONCE_SCALE["pool4"]
        up = self.upscore2(score)  # (B, K, s, s) -> (B, K, 2s + 2, 2s + 2)
        fuse = up + _crop(self.score_pool4(pool4), off["score_pool4"], *up.shape[-2:])  # skip fusion by summation
        if self.output_stride == 16:
            return _crop(self.upscore16(fuse), off["score"], h, w)
        if self.at_once:
            pool3 = pool3 * AT_ONCE_SCALE["pool3"]
        up = self.upscore_pool4(fuse)
        fuse = up + _crop(self.score_pool3(pool3), off["score_pool3"], *up.shape[-2:])
        return _crop(self.upscore8(fuse), off["score"], h, w)  # (B, K, t, t) -> (B, K, 8t + 8, ...) -> (B, K, H, W)


    def _forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Another backbone (module docstring, "backbone="): same-padded maps, so each 2x upsampled map is cut to
        its skip's size from offset 1 and the last upsampling (by f) to the input's from offset f / 2."""
        h, w = x.shape[-2:]
        maps = dict(zip(self.reductions, self.encoder(x)))  # {8: (B, C8, ~H/8, ~W/8), 16: ..., 32: ...}
        score = self.score_fr(self.drop(maps[32]))  # (B, K, ~H/32, ~W/32)
        if self.output_stride == 32:
            return _align(self.upscore(score), 16, h, w)  # (B, K, 32 (s + 1), ...) -> (B, K, H, W)
        pool4 = maps[16] * AT_ONCE_SCALE["pool4"] if self.at_once else maps[16]
        skip = self.score_pool4(pool4)  # (B, K, t, t), t ~ H / 16
        fuse = _align(self.upscore2(score), 1, *skip.shape[-2:]) + skip  # (B, K, 2s + 2, ...) -> t x t, summed
        if self.output_stride == 16:
            return _align(self.upscore16(fuse), 8, h, w)
        pool3 = maps[8] * AT_ONCE_SCALE["pool3"] if self.at_once else maps[8]
        skip = self.score_pool3(pool3)
        fuse = _align(self.upscore_pool4(fuse), 1, *skip.shape[-2:]) + skip
        return _align(self.upscore8(fuse), 4, h, w)  # (B, K, 8 (u + 1), ...) -> (B, K, H, W)


class FCN32s(FCN):
    """FCN-32s (Sec. 4.1): the stride-32 scores upsampled 32x in one step."""

    output_stride = 32
    crop_offsets: ClassVar[dict[str, int]] = {"score": 19}


class FCN16s(FCN):
    """FCN-16s (Sec. 4.2, Fig. 3): 2x-upsampled stride-32 scores plus pool4's scores, upsampled 16x."""

    output_stride = 16
    crop_offsets: ClassVar[dict[str, int]] = {"score_pool4": 5, "score": 27}


class FCN8s(FCN):
    """FCN-8s (Sec. 4.2, Fig. 3): FCN-16s's fused scores upsampled 2x plus pool3's scores, upsampled 8x."""

    output_stride = 8
    crop_offsets: ClassVar[dict[str, int]] = {"score_pool4": 5, "score_pool3": 9, "score": 31}


def from_classifier(vgg: nn.Module, name: str = "fcn8s_vgg16", **options) -> FCN:
    """Build the FCN ``name`` (with ``options``) for ``vgg``'s input channels and load `FCN.load_classifier`."""
    from ..registry import create_segmenter

    options.setdefault("in_channels", vgg.features[0].in_channels)
    net = create_segmenter(name, **options)
    if not isinstance(net, FCN):
        raise ValueError(f"{name!r} is not an FCN; use fcn32s_vgg16, fcn16s_vgg16 or fcn8s_vgg16")
    net.load_classifier(vgg)
    return net


_DATASET = "PASCAL VOC 2011 segmentation + SBD"
#: digits-segmentation (64x64, 1 channel, 11 classes; `get_digits_recipe`): VGG at 1/16 width (a 64x64 canvas runs
#: VGG-16 on 262x262 pixels, the 100-pixel pad) without fc6/fc7 dropout (at 1/16 they have 256 channels), with BN
#: after each VGG convolution and median frequency class weights (two deviations: without them it stays
#: all-background), Adam from scratch (measured: module docstring). The paper's start is ImageNet VGG-16 weights
#: (``backbone_weights``), which fit only width 1.0 and 3 channels.
_DIGITS_FCN = {"options": {"width_mult": 0.0625, "drop_rate": 0.0, "batch_norm": True}, "optimizer": "adam",
               "lr": 1e-3, "epochs": 4, "batch_size": 8, "class_weighting": "median_frequency"}
#: FCN-32s also learns its 32x upsampling (``learn_upsampling``, as the CVPR experiments): its fixed bilinear one
#: paints a 3x3 score grid over the 64x64 canvas (module docstring)
DIGITS_RECIPES = {"fcn32s_vgg16": {**_DIGITS_FCN, "options": {**_DIGITS_FCN["options"], "learn_upsampling": True}},
                  "fcn16s_vgg16": _DIGITS_FCN, "fcn8s_vgg16": _DIGITS_FCN}
_DEVIATIONS = (("upsampling fixed to bilinear as the authors' reference nets (the CVPR experiments learned it: "
                "learn_upsampling=True)"),
               "inputs normalised as the zoo's vgg16 expects, not Caffe's BGR mean subtraction",
               "staged training (32s -> 16s -> 8s) is a recipe (init_from), not built in",
               ("backbone= another zoo network (Table 1 converts AlexNet, VGG-16, GoogLeNet): FCN-GoogLeNet's head for "
                "all, a 1x1 score layer on the stride-32 map without fc6/fc7 convolutions; same-padded maps aligned "
                "by centre-aligned crops (offset 1 per 2x, f/2 at the end) instead of the 100-pixel pad and Caffe "
                "crops; width_mult and batch_norm are the VGG-16 path's and ignored there"))


def _deviations(name: str) -> tuple[str, ...]:
    return (*_DEVIATIONS, "digits recipe only: batch_norm=True (BN after each VGG convolution, as torchvision's "
            "vgg16_bn; the paper fine-tunes a BN-free ImageNet VGG-16) and median frequency class weights in the loss "
            "(SegNet Sec. 3.2; the paper's loss is unweighted): from scratch without them it stays all-background "
            "(mean IU 0.087); " + _MEASURED[name])


_MEASURED = {  # the digits recipe's test mean IU, seeds 0 and 1 (module docstring)
    "fcn32s_vgg16": ("with them (and learn_upsampling) mean IU 0.097 / 0.105 (seeds 0 / 1), only just above: a 3x3 "
                     "score grid on a 64x64 canvas"),
    "fcn16s_vgg16": "with them mean IU 0.247 / 0.121 (seeds 0 / 1)",
    "fcn8s_vgg16": "with them mean IU 0.296 / 0.354 (seeds 0 / 1)",
}


@register_segmenter(FCN32s, paper=FCNPAPER, input_size=(3, 500, 500), dataset=_DATASET,
                    deviations=_deviations("fcn32s_vgg16"), digits_recipe=DIGITS_RECIPES["fcn32s_vgg16"])
def fcn32s_vgg16(**kwargs) -> FCN32s:
    """FCN-32s on VGG-16 (voc-fcn32s): one stream, 32x bilinear upsampling."""
    return FCN32s(**kwargs)


@register_segmenter(FCN16s, paper=FCNPAPER, input_size=(3, 500, 500), dataset=_DATASET,
                    deviations=_deviations("fcn16s_vgg16"), digits_recipe=DIGITS_RECIPES["fcn16s_vgg16"])
def fcn16s_vgg16(**kwargs) -> FCN16s:
    """FCN-16s on VGG-16 (voc-fcn16s): pool4 skip, 16x upsampling."""
    return FCN16s(**kwargs)


@register_segmenter(FCN8s, paper=FCNPAPER, input_size=(3, 500, 500), dataset=_DATASET,
                    deviations=_deviations("fcn8s_vgg16"), digits_recipe=DIGITS_RECIPES["fcn8s_vgg16"])
def fcn8s_vgg16(**kwargs) -> FCN8s:
    """FCN-8s on VGG-16 (voc-fcn8s): pool4 and pool3 skips, 8x upsampling."""
    return FCN8s(**kwargs)
