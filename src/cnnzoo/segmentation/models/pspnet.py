"""PSPNet: H. Zhao, J. Shi, X. Qi, X. Wang, J. Jia, "Pyramid Scene Parsing Network", CVPR 2017
(https://arxiv.org/abs/1612.01105); the authors' Caffe models (``pspnet50_ADE20K``, ``pspnet101_VOC2012``) and their
PyTorch re-implementation (hszhao/semseg) settle what the paper leaves open.

Key ideas
    An FCN on a dilated ResNet sees too little of the scene: its empirical receptive field is much smaller than the
    theoretical one, so it confuses look-alike classes and misses context (Sec. 3.1, Fig. 2). The pyramid pooling
    module (Sec. 3.2, Fig. 3) adds a global prior: the last feature map is average-pooled to 1x1, 2x2, 3x3 and 6x6
    bins ("B1236"); each level is reduced by a 1x1 convolution to 1/N of the channels (N = 4 levels, so 2048 -> 512,
    "DR"), upsampled back to the map by bilinear interpolation, and concatenated with the map itself; a convolution
    then predicts the classes. The backbone is a ResNet "with the dilated network strategy" (Sec. 3.2): the last two
    stages keep their resolution with dilation 2 and 4, so the features are 1/8 of the input. Deep supervision
    (Sec. 3.3, Fig. 4): an auxiliary classifier on res4b22 (the last block of the third stage, ``layer3``) adds a
    second loss, weighted alpha = 0.4 (Table 3), used in training only.

Which table the code reproduces
    The layout of Fig. 3 with the ablation winner of Table 1 (B1236, average pooling, dimension reduction). Layers,
    as the released Caffe models and semseg: ``backbone`` = the zoo's network through the features API (default
    ``resnet50`` at ``output_stride=8``; the stage before the last feeds the aux head); ``ppm.stages.i`` =
    AdaptiveAvgPool(bin), 1x1 conv C -> C/4 without bias, BN, ReLU, for bins 1, 2, 3, 6, each upsampled bilinearly
    to the map and concatenated after it (2C channels); ``classifier`` = 3x3 conv 2C -> 512 without bias (index 0),
    BN (1), ReLU (2), Dropout(0.1) (3), 1x1 conv 512 -> classes with bias (4); ``aux_classifier`` the same on layer3
    (3x3 conv 1024 -> 256 without bias, BN, ReLU, Dropout(0.1), 1x1 -> classes). Both maps are upsampled bilinearly
    (x8) to the input. Parameters by hand (ResNet-50, K classes; BN = 2 per channel):
        backbone: resnet50 less its fc = 25,557,032 - (2048 * 1000 + 1000) = 23,508,032
        pyramid:  4 * (2048 * 512 + 2 * 512) = 4,198,400
        head:     4096 * 512 * 9 + 2 * 512 + 512 * K + K = 18,875,392 + 513 K
        aux:      1024 * 256 * 9 + 2 * 256 + 256 * K + K = 2,359,808 + 257 K
    K = 150 (ADE20K, ``pspnet_resnet50``'s default): 49,057,132. ``pspnet_resnet101`` (backbone 44,549,160 -
    2,049,000 = 42,500,160), K = 21 (VOC 2012): 42,500,160 + 4,198,400 + 18,886,165 + 2,365,205 = 67,949,930.

Training setup in the paper
    Sec. 4.1: ImageNet-pretrained dilated ResNet; "poly" learning rate, base 0.01, power 0.9; momentum 0.9, weight
    decay 1e-4; 150K iterations on ImageNet scene parsing (ADE20K), 30K on VOC, 90K on Cityscapes; batch 16 (BN
    statistics over the batch); random mirror, resize 0.5-2, rotation -10 to 10 degrees, Gaussian blur (ADE20K,
    VOC); crops 473 (713 on Cityscapes); the aux loss weighted 0.4. The ablations (Tables 1-4) use ResNet-50 on
    ADE20K; VOC 2012 test 82.6% (85.4% with COCO pre-training) on ResNet-101; Cityscapes test 80.2% (with the
    coarse data).

This implementation
    ``pspnet_resnet50`` (150 classes, ADE20K: the paper's ablation network and the released pspnet50_ADE20K) and
    ``pspnet_resnet101`` (21 classes, VOC 2012: pspnet101_VOC2012). Deliberate differences, on the card:
    - the stem: the authors' ResNets (Caffe and semseg's ``deep_base``) start with three 3x3 convs (64, 64, 128
      channels, the first stride 2; "conv1_1_3x3_s2" ... "conv1_3_3x3") and feed 128 channels to res2; the zoo has
      no deep-stem ResNet (its registry has none: only ResNeSt, with split attention, has such a stem), so the
      backbone is the zoo's (torchvision's) resnet50/101 with its 7x7 stem. By hand, the deep stem would add
      (3 * 64 + 64 * 64 + 64 * 128) * 9 + 2 * 256 - (3 * 64 * 49 + 2 * 64) = 103,296 parameters, and res2's first
      block 64 * 64 + 64 * 256 = 20,480 more (128 inputs to its 1x1 reduce and projection): 123,776 in all. The
      bottleneck strides in its 3x3 (torchvision's v1.5), as the authors' models (conv3_1_3x3 has the stride).
    - dilation as the authors': every 3x3 conv of layer3 has dilation 2 and every one of layer4 dilation 4 (the
      Caffe models; semseg sets all ``conv2`` of the stage). The zoo's dilated ResNet (torchvision's rule) keeps
      the previous dilation in a dilated stage's first block; this module sets it (no parameter changes), for a
      backbone of the zoo's ResNet family (for other backbones the zoo's own ``output_stride`` behaviour stays).
    - the pooled maps and the logits are upsampled with ``align_corners=True`` (Caffe's Interp layer and semseg's
      calls); adaptive average pooling replaces Caffe's fixed pooling windows (the same bins on the 60x60 maps of
      a 473 input).
    Options: ``backbone`` (a zoo network name with ``features_only``; ``output_stride`` is passed to it, 8 by
    default, None to keep the network's own stride when it has no such option), ``backbone_options`` (extra
    ``create_model`` options for it, e.g. ``{"layers": [1, 1, 1, 1]}``), ``bins`` (the pyramid, (1, 2, 3, 6); each
    level reduced to C / len(bins)), ``channels`` (512, the head's width), ``aux_loss`` (True; the aux head on
    the stage before the last), ``in_channels``, ``num_classes``, ``backbone_weights`` (a checkpoint ``create_model``
    reads, e.g. ``"torchvision"`` for the ImageNet weights). Output convention as ``fcn_resnet``: ``forward`` gives
    the main map in eval and ``(main, aux)`` in training (card ``aux_weight`` 0.4); ``forward_dict`` gives
    ``{"out", "aux"}``. The pyramid's BN on 1x1 maps needs a batch of at least 2 in training (as the paper's BN,
    which needs large batches).
    digits-segmentation recipe (``get_digits_recipe``; 64x64, 1 channel, 11 classes, 1,000 training / 200 test
    images), deviations for CPU training only: ``backbone="resnet18"`` with one BasicBlock per stage
    (``backbone_options={"layers": [1, 1, 1, 1]}``) instead of ResNet-50/101, so both networks' recipes build the
    same network (``pspnet_resnet101`` seed 0 gave the identical run); output stride 8 kept (an 8x8 map, so the 6x6
    bin still pools distinct regions; at output stride 16, a 4x4 map, head 64, batch 8, it stayed near
    all-background: mean IU 0.15 after 6 epochs, 123 s); the pyramid as the paper (C/4 = 128 per level) and the aux
    loss 0.4; a head of 256 channels instead of 512; from scratch (the paper: ImageNet), Adam 1e-3 (the paper: SGD
    0.01 poly), 2 epochs of batch 8 (the paper: batch 16), no augmentation. Measured with
    ``SegTrainer(default_seg_config("pspnet_resnet50", seed=s), threads=1)`` (process CPU seconds on a shared
    2-core machine, which stand for one idle thread; all-background scores mean IU 0.087): seed 0 test mean IU
    0.412, pixel accuracy 0.963 (70 s); seed 1 0.342, 0.962 (72 s). What moved it (seed 0 unless said): the full
    ResNet-18, head 64, batch 16: 0.26 after 6 epochs (~47 s an epoch); one block per stage, head 64, batch 16:
    0.25 after 4 (lr 5e-4 and 3e-3 no better); batch 8: 0.44 after 4 (~30 s an epoch); head 128, batch 8: 0.296 /
    0.372 after 2 / 3 epochs (seed 1: 0.225 / 0.240); head 256: seed 1 0.342 after 2 epochs, 0.303 after 3; head
    512 (the paper's): seed 1 0.281 after 2 epochs (91 s).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Paper, UnknownModelError, UnknownOptionError, create_model
from ..registry import register_segmenter
from .base import Segmenter
from .fcn_resnet import FCNHead

__all__ = ["BINS", "PSPNet", "PyramidPooling", "pspnet_resnet50", "pspnet_resnet101"]

PSPNET = Paper("Pyramid Scene Parsing Network", "H. Zhao, J. Shi, X. Qi, X. Wang, J. Jia", 2017,
               "https://arxiv.org/abs/1612.01105")

#: Sec. 3.2: "bin sizes of 1x1, 2x2, 3x3 and 6x6 respectively"
BINS = (1, 2, 3, 6)
#: Sec. 3.3 / Table 3: the auxiliary loss weight alpha
AUX_WEIGHT = 0.4
#: Sec. 3.2: "the final feature map size is 1/8 of the input image"
OUTPUT_STRIDE = 8
HEAD_CHANNELS = 512


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)  # Caffe's Interp, semseg's


class PyramidPooling(nn.Module):
    """The pyramid pooling module (Sec. 3.2, Fig. 3): per bin, adaptive average pooling to ``bin x bin``, a 1x1 conv
    C -> C / len(bins) without bias, BN, ReLU, bilinear upsampling to the map; the input map and the upsampled levels
    concatenated: (N, C, h, w) -> (N, 2C, h, w) for 4 levels."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = BINS) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.bins = tuple(bins)
        self.out_channels = in_channels + reduced * len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, reduced, 1, bias=False),
                          nn.BatchNorm2d(reduced), nn.ReLU(inplace=True))
            for b in self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(_resize(stage(x), size) for stage in self.stages)], dim=1)


def _backbone_options(owner: str, backbone: str, options: dict | None) -> dict:
    """A copy of ``backbone_options`` (extra ``create_model`` options for the backbone, e.g. ``{"layers": [1, 1, 1,
    1]}``), refusing the ones the network sets itself."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"{owner} option backbone_options must be a dict of {backbone} options, got {options!r}")
    clash = sorted(set(options) & {"output_stride", "in_channels", "weights", "features_only", "out_indices"})
    if clash:
        raise ValueError(f"{owner}: backbone_options may not set {', '.join(clash)} (the network sets them)")
    return dict(options)


def _authors_dilation(net: nn.Module) -> None:
    """Every 3x3 conv of a dilated stage at the stage's dilation, as the authors' models (see the module notes); the
    zoo's ResNet keeps the previous stage's dilation in the first block of a dilated stage (torchvision's rule)."""
    for name in ("layer3", "layer4"):
        stage = getattr(net, name, None)
        if stage is None:
            continue
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        rate = max(m.dilation[0] for m in convs)
        if rate > 1 and all(m.stride == (1, 1) for m in convs):
            for m in convs:
                m.dilation, m.padding = (rate, rate), (rate, rate)


class PSPNet(Segmenter):
    """PSPNet (Fig. 3): dilated backbone, pyramid pooling, 3x3 conv-BN-ReLU, dropout, 1x1 classifier, bilinear
    upsampling; the auxiliary head on the stage before the last. See the module notes."""

    min_input_size = 1

    def __init__(self, *, backbone: str = "resnet50", num_classes: int = 150, in_channels: int = 3,
                 bins: tuple[int, ...] = BINS, channels: int = HEAD_CHANNELS, output_stride: int | None = OUTPUT_STRIDE,
                 aux_loss: bool = True, backbone_weights: str | None = None,
                 backbone_options: dict | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} option {key} must be an integer >= 1, got {value!r}")
        if (not isinstance(bins, (tuple, list)) or not bins
                or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bins)):
            raise ValueError(f"{name} option bins must be a non-empty list of integers >= 1 (the paper's "
                             f"{list(BINS)}), got {bins!r}")
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"{name} option output_stride must be 8 (the paper), 16, 32 or None (the backbone's "
                             f"own), got {output_stride!r}")
        self.num_classes, self.in_channels, self.aux_loss = num_classes, in_channels, bool(aux_loss)
        extra = _backbone_options(name, backbone, backbone_options)
        if output_stride is not None:
            extra["output_stride"] = output_stride
        try:
            self.backbone = create_model(backbone, features_only=True, out_indices=(-2, -1) if aux_loss else (-1,),
                                         in_channels=in_channels, weights=backbone_weights, **extra)
        except UnknownModelError as exc:
            raise UnknownModelError(f"{name} option backbone: {exc.args[0]}") from exc
        except UnknownOptionError as exc:
            raise ValueError(f"{name}: backbone {backbone!r} cannot be dilated to output_stride={output_stride} "
                             f"({exc}); pass output_stride=None to keep its own stride") from exc
        _authors_dilation(self.backbone.model)
        self.min_input_size = max(1, getattr(self.backbone.model, "min_input_size", 1))
        chans = self.backbone.feature_info.channels()
        if chans[-1] < len(bins):
            raise ValueError(f"{name}: backbone {backbone!r} gives {chans[-1]} channels, fewer than the "
                             f"{len(bins)} pyramid levels")
        self.ppm = PyramidPooling(chans[-1], tuple(bins))
        self.classifier = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(channels, num_classes, 1),
        )
        self.aux_classifier = FCNHead(chans[0], num_classes) if aux_loss else None

    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """``aux_loss`` (are there ``aux_classifier`` keys?) and ``num_classes`` (the classifier's outputs)."""
        opts: dict[str, object] = {"aux_loss": any(k.startswith("aux_classifier.") for k in sd)}
        last = sd.get("classifier.4.weight")
        if isinstance(last, torch.Tensor) and last.ndim == 4:
            opts["num_classes"] = int(last.shape[0])
        return opts

    def output_size(self, size: int) -> int:
        return size  # upsampled back to the input

    def forward_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"out": (N, K, H, W), "aux": (N, K, H, W)}`` in any mode (no ``aux`` without the auxiliary head)."""
        self.check_input(x)
        feats = self.backbone(x)  # [layer3 (N, 1024, H/8, W/8),] layer4 (N, 2048, H/8, W/8)
        result = OrderedDict()
        result["out"] = _resize(self.classifier(self.ppm(feats[-1])), x.shape[-2:])
        if self.aux_classifier is not None:
            result["aux"] = _resize(self.aux_classifier(feats[0]), x.shape[-2:])
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.aux_classifier is not None:
            y = self.forward_dict(x)
            return y["out"], y["aux"]
        self.check_input(x)
        feats = self.backbone(x)
        return _resize(self.classifier(self.ppm(feats[-1])), x.shape[-2:])


_DEVIATIONS = (
    ("the zoo's ResNet with torchvision's 7x7 stem: the authors' ResNets have a deep stem of three 3x3 convs "
     "(64, 64, 128) feeding 128 channels to res2 (123,776 parameters more, by hand); the zoo has no deep-stem ResNet"),
    ("pooled levels and logits upsampled with align_corners=True (Caffe's Interp, semseg); adaptive average pooling "
     "instead of Caffe's fixed windows (identical on the 60x60 maps of a 473 input)"),
    ("forward returns the main map in eval and (main, aux) in training (the zoo's aux convention); forward_dict "
     "gives {'out', 'aux'}"),
    ("the digits-segmentation recipe (CPU training) is not the paper's network: ResNet-18 with one block per stage "
     "from scratch instead of ImageNet ResNet-50/101, a 256-channel head instead of 512, Adam 1e-3 for 2 epochs of "
     "batch 8 instead of SGD 0.01 poly with batch 16"),
)
#: digits-segmentation (CPU training; measured in the module notes): ResNet-18 with one block per stage at output
#: stride 8, a 256-channel head
_DIGITS = {"options": {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]}, "channels": 256},
           "optimizer": "adam", "lr": 1e-3, "epochs": 2, "batch_size": 8,
           "schedule": "none"}  # 2 epochs: a decaying rate halves the learning (see fcn_resnet.DIGITS_RECIPE)


class PSPNetResNet50(PSPNet):
    """PSPNet on a dilated ResNet-50, 150 classes (ADE20K; the paper's ablation network)."""

    def __init__(self, *, backbone: str = "resnet50", num_classes: int = 150, in_channels: int = 3,
                 bins: tuple[int, ...] = BINS, channels: int = HEAD_CHANNELS, output_stride: int | None = OUTPUT_STRIDE,
                 aux_loss: bool = True, backbone_weights: str | None = None,
                 backbone_options: dict | None = None) -> None:
        super().__init__(backbone=backbone, num_classes=num_classes, in_channels=in_channels, bins=bins,
                         channels=channels, output_stride=output_stride, aux_loss=aux_loss,
                         backbone_weights=backbone_weights, backbone_options=backbone_options)


class PSPNetResNet101(PSPNet):
    """PSPNet on a dilated ResNet-101, 21 classes (PASCAL VOC 2012)."""

    def __init__(self, *, backbone: str = "resnet101", num_classes: int = 21, in_channels: int = 3,
                 bins: tuple[int, ...] = BINS, channels: int = HEAD_CHANNELS, output_stride: int | None = OUTPUT_STRIDE,
                 aux_loss: bool = True, backbone_weights: str | None = None,
                 backbone_options: dict | None = None) -> None:
        super().__init__(backbone=backbone, num_classes=num_classes, in_channels=in_channels, bins=bins,
                         channels=channels, output_stride=output_stride, aux_loss=aux_loss,
                         backbone_weights=backbone_weights, backbone_options=backbone_options)


@register_segmenter(PSPNetResNet50, paper=PSPNET, input_size=(3, 473, 473),
                    dataset="ADE20K (ImageNet scene parsing challenge 2016), 150 classes",
                    deviations=_DEVIATIONS, aux_weight=AUX_WEIGHT, digits_recipe=_DIGITS)
def pspnet_resnet50(**kwargs) -> PSPNetResNet50:
    """PSPNet on a dilated ResNet-50 (stride 8), pyramid bins 1, 2, 3, 6, aux head on layer3; 150 classes."""
    return PSPNetResNet50(**kwargs)


@register_segmenter(PSPNetResNet101, paper=PSPNET, input_size=(3, 473, 473), dataset="PASCAL VOC 2012 (+ SBD)",
                    deviations=_DEVIATIONS, aux_weight=AUX_WEIGHT, digits_recipe=_DIGITS)
def pspnet_resnet101(**kwargs) -> PSPNetResNet101:
    """PSPNet on a dilated ResNet-101 (stride 8), pyramid bins 1, 2, 3, 6, aux head on layer3; 21 classes."""
    return PSPNetResNet101(**kwargs)
