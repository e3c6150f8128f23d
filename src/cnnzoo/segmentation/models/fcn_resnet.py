"""FCN on a dilated ResNet, as torchvision ships it (``fcn_resnet50``, ``fcn_resnet101``). The idea is J. Long,
E. Shelhamer, T. Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015
(https://arxiv.org/abs/1411.4038); the layout is torchvision's ``torchvision.models.segmentation.fcn``.

Key ideas
    A classification network read as a fully convolutional one gives a dense map of class scores that is
    upsampled back to pixels (Long et al. Sec. 3.1, 3.3; see ``fcn.py`` for the VGG-16 nets of the paper). The
    ResNet variant keeps more resolution instead of adding skips: the last two ResNet stages replace their stride
    2 by dilation 2 and 4 (the atrous trick of DeepLab, Chen et al.), so the features stay at 1/8 of the input
    ("output stride 8"), a small head scores them, and one bilinear interpolation restores the input size. An
    auxiliary head on the stride-8 ``layer3`` features adds a second loss during training (as PSPNet's
    "deep supervision").

Which table the code reproduces
    Not a table of the paper: torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` (torchvision 0.29), key for key.
    ``backbone`` is the zoo's ``resnet50`` / ``resnet101`` (torchvision's layout) at ``output_stride=8`` without its
    fc (torchvision's ``IntermediateLayerGetter`` keys: ``backbone.conv1`` ... ``backbone.layer4``); ``classifier``
    is torchvision's ``FCNHead(2048, classes)``: 3x3 conv 2048 -> 512 without bias (index 0), BN (1), ReLU (2),
    dropout 0.1 (3), 1x1 conv 512 -> classes with bias (4); ``aux_classifier`` is ``FCNHead(1024, classes)`` on
    ``layer3`` (1024 -> 256 -> classes). Both maps are resized to the input by bilinear interpolation with
    ``align_corners=False``. Parameters for 21 classes (ResNet-50): backbone 23,508,032 (resnet50's 25,557,032
    less its fc 2048 * 1000 + 1000); head 2048 * 512 * 9 + 2 * 512 + 512 * 21 + 21 = 9,448,981; aux head
    1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21 = 2,365,205; total 35,322,218, torchvision's count.

Training setup in the paper
    Long et al. fine-tune VGG-16 (see ``fcn.py``). torchvision's published weights (COCO_WITH_VOC_LABELS_V1) were
    trained by its reference script (references/segmentation): the 20 PASCAL VOC categories of COCO train2017
    (+ background = 21 classes), random resize 260-1040 and 480 crop, flip, SGD lr 0.02, momentum 0.9, weight
    decay 1e-4, poly schedule (power 0.9), 30 epochs, batch 32 on 8 GPUs, loss = CE(out) + 0.5 * CE(aux), label 255
    ignored; evaluation resizes the shorter side to 520.

This implementation
    ``fcn_resnet50``, ``fcn_resnet101``: torchvision's networks (defaults ``num_classes=21``, ``aux_loss=True``,
    as torchvision builds them with its weights), so ``create_segmenter(name, weights=FILE)`` loads a torchvision
    checkpoint with no options and gives torchvision's ``out`` (and ``aux``) to float tolerance
    (tests/test_segmentation_torchvision.py). A file without ``aux_classifier`` keys (``aux_loss=False``) or with
    another number of classes is recognised and built to fit.
    Output: the zoo's convention for auxiliary heads (as GoogLeNet/Inception v3 here), not torchvision's dict:
    ``forward(x)`` returns the main ``(N, classes, H, W)`` map in eval mode (and always when ``aux_loss=False``),
    and ``(main, aux)`` in training mode, both ``(N, classes, H, W)``; the card's ``aux_weight`` is 0.5, the
    weight of torchvision's reference script. ``forward_dict(x)`` returns torchvision's ``{"out", "aux"}`` in any
    mode for code written against torchvision (``aux`` absent when built without it).
    Options: ``in_channels`` (3), ``backbone_weights`` (a resnet50/101 checkpoint that ``create_model`` reads,
    e.g. ``"torchvision"`` for the ImageNet weights torchvision's ``weights_backbone`` uses; the heads start at
    PyTorch's default initialisation as torchvision's, the backbone at the zoo's resnet initialisation = He
    fan-out, as torchvision's), ``backbone_layers`` (None: the depth's bottleneck blocks per stage, 3-4-6-3 or
    3-4-23-3; a list of four counts builds a shallower trunk -- a deviation for training on 2 CPU cores, where the
    trunk at output stride 8 dominates; with it ResNet-50 and -101 coincide; checkpoints load only at the default).
    digits-segmentation recipe (`DIGITS_RECIPE`, also DeepLab v3's): ``backbone_layers=[1, 1, 1, 1]``, Adam 1e-3,
    2 epochs of batch 16, loss CE(out) + 0.5 CE(aux). Measured (seed 0, one thread, a loaded shared machine; test
    split of 200 canvases): fcn_resnet50 mean IU 0.275, pixel accuracy 0.961, 175 CPU s of training (all-background
    0.087); fcn_resnet101 builds the very same network and weights under this recipe, so the same figures.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Counterpart, Paper, create_model
from ..registry import register_segmenter
from .base import Segmenter

__all__ = ["DilatedResNetSegmenter", "FCNHead", "FCNResNet", "FCNResNet50", "FCNResNet101", "fcn_resnet50",
           "fcn_resnet101"]

FCNPAPER = Paper("Fully Convolutional Networks for Semantic Segmentation", "J. Long, E. Shelhamer, T. Darrell", 2015,
                 "https://arxiv.org/abs/1411.4038")

#: torchvision's reference training script: loss = CE(out) + 0.5 * CE(aux)
AUX_WEIGHT = 0.5
#: torchvision's dilated backbone: replace_stride_with_dilation=[False, True, True]
OUTPUT_STRIDE = 8
#: bottleneck blocks per stage (He et al., Table 1)
RESNET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class FCNHead(nn.Sequential):
    """torchvision's ``FCNHead``: 3x3 conv C -> C/4 (no bias), BN, ReLU, Dropout(0.1), 1x1 conv C/4 -> classes."""

    def __init__(self, in_channels: int, channels: int) -> None:
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter, channels, 1),
        )


class DilatedResNetSegmenter(Segmenter):
    """torchvision's ``_SimpleSegmentationModel`` on a dilated ResNet: ``backbone`` (layer3 and layer4 at stride 8),
    ``classifier`` on layer4, optional ``aux_classifier`` on layer3, each map resized bilinearly to the input.
    Subclasses implement ``make_head(in_channels, num_classes)``."""

    min_input_size = 1

    def __init__(self, *, depth: int = 50, num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3,
                 backbone_weights: str | None = None, backbone_layers: list[int] | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} option {key} must be an integer >= 1, got {value!r}")
        if depth not in (50, 101):
            raise ValueError(f"{name} depth must be 50 or 101 (torchvision's ResNet backbones), got {depth!r}")
        extra = {}
        if backbone_layers is not None:  # fewer bottleneck blocks per stage: a deviation for CPU training
            bad = (isinstance(backbone_layers, (str, bytes)) or not hasattr(backbone_layers, "__len__")
                   or len(backbone_layers) != 4
                   or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in backbone_layers))
            if bad:
                raise ValueError(f"{name} option backbone_layers must be 4 integers >= 1 (bottleneck blocks in layer1 "
                                 f"... layer4; ResNet-{depth} has {list(RESNET_LAYERS[depth])}), got {backbone_layers!r}")
            if backbone_weights is not None and tuple(backbone_layers) != RESNET_LAYERS[depth]:
                raise ValueError(f"{name}: backbone_weights are a resnet{depth} checkpoint, which fits only "
                                 f"backbone_layers={list(RESNET_LAYERS[depth])}, got {list(backbone_layers)}")
            extra["layers"] = tuple(backbone_layers)
        self.num_classes, self.in_channels, self.aux_loss = num_classes, in_channels, bool(aux_loss)
        # keys as torchvision's IntermediateLayerGetter: conv1, bn1, layer1..layer4 (no fc)
        self.backbone = create_model(f"resnet{depth}", features_only=True, out_indices=(2, 3) if aux_loss else (3,),
                                     in_channels=in_channels, weights=backbone_weights, output_stride=OUTPUT_STRIDE,
                                     **extra)
        self.classifier = self.make_head(2048, num_classes)
        self.aux_classifier = FCNHead(1024, num_classes) if aux_loss else None

    def make_head(self, in_channels: int, num_classes: int) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """The options a checkpoint in this layout needs: ``aux_loss`` (are there ``aux_classifier`` keys?) and
        ``num_classes`` (the last classifier conv's outputs)."""
        opts: dict[str, object] = {"aux_loss": any(k.startswith("aux_classifier.") for k in sd)}
        last = sd.get("classifier.4.weight")
        if isinstance(last, torch.Tensor) and last.ndim == 4:
            opts["num_classes"] = int(last.shape[0])
        return opts

    def output_size(self, size: int) -> int:
        return size  # bilinear resize back to the input

    def forward_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """torchvision's output, in any mode: ``{"out": (N, K, H, W), "aux": (N, K, H, W)}`` (no ``aux`` without
        the auxiliary head)."""
        self.check_input(x)
        size = x.shape[-2:]
        feats = self.backbone(x)  # [layer3 (N, 1024, H/8, W/8),] layer4 (N, 2048, H/8, W/8)
        result = OrderedDict()
        result["out"] = F.interpolate(self.classifier(feats[-1]), size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(feats[0])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.aux_classifier is not None:
            y = self.forward_dict(x)
            return y["out"], y["aux"]
        self.check_input(x)
        feats = self.backbone(x)
        return F.interpolate(self.classifier(feats[-1]), size=x.shape[-2:], mode="bilinear", align_corners=False)


class FCNResNet(DilatedResNetSegmenter):
    """torchvision's FCN: ``FCNHead(2048, classes)`` on the stride-8 layer4. See the module notes."""

    def make_head(self, in_channels: int, num_classes: int) -> nn.Module:
        return FCNHead(in_channels, num_classes)


_DATASET = "COCO train2017, the 20 PASCAL VOC categories (torchvision's weights); the paper: PASCAL VOC 2011"
#: digits-segmentation (64x64, 1 channel, 11 classes; `get_digits_recipe`): one bottleneck block per stage (ResNet-50
#: and -101 then coincide: they differ only in layer3's depth), Adam from scratch, loss CE(out) + 0.5 CE(aux).
#: Measured: see the module docstring.
# a constant rate (not the recipes' poly decay): over only 2 epochs the decay halves the learning done, measured
# with deeplabv3_resnet101 seed 0: mean IU 0.204 with poly, 0.387 constant
DIGITS_RECIPE = {"options": {"backbone_layers": [1, 1, 1, 1]}, "optimizer": "adam", "lr": 1e-3, "epochs": 2,
                 "batch_size": 16, "schedule": "none"}
_DEVIATIONS = (
    ("torchvision's ResNet variant, not the paper's VGG-16 nets (those are fcn8s/16s/32s_vgg16): a dilated ResNet "
     "at output stride 8 (layer3/layer4 dilated 2/4) instead of skip fusion, a 3x3 conv-BN-ReLU head, and one "
     "fixed bilinear resize (align_corners=False) instead of learned deconvolution"),
    "an auxiliary FCNHead on layer3 (aux_loss=True, loss weight 0.5 in torchvision's recipe), not in the paper",
    ("forward returns the main map in eval and (main, aux) in training (the zoo's aux convention); forward_dict "
     "gives torchvision's {'out', 'aux'}"),
)


class FCNResNet50(FCNResNet):
    """FCN on a dilated ResNet-50 (torchvision's ``fcn_resnet50``)."""

    def __init__(self, *, num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3,
                 backbone_weights: str | None = None, backbone_layers: list[int] | None = None) -> None:
        super().__init__(depth=50, num_classes=num_classes, aux_loss=aux_loss, in_channels=in_channels,
                         backbone_weights=backbone_weights, backbone_layers=backbone_layers)


class FCNResNet101(FCNResNet):
    """FCN on a dilated ResNet-101 (torchvision's ``fcn_resnet101``)."""

    def __init__(self, *, num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3,
                 backbone_weights: str | None = None, backbone_layers: list[int] | None = None) -> None:
        super().__init__(depth=101, num_classes=num_classes, aux_loss=aux_loss, in_channels=in_channels,
                         backbone_weights=backbone_weights, backbone_layers=backbone_layers)


@register_segmenter(FCNResNet50, paper=FCNPAPER, input_size=(3, 520, 520), dataset=_DATASET,
                    deviations=_DEVIATIONS, aux_weight=AUX_WEIGHT, digits_recipe=DIGITS_RECIPE,
                    counterparts=(Counterpart("torchvision", "fcn_resnet50"),))
def fcn_resnet50(**kwargs) -> FCNResNet50:
    """FCN-ResNet-50 as torchvision: dilated ResNet-50 (stride 8), FCNHead, aux FCNHead on layer3."""
    return FCNResNet50(**kwargs)


@register_segmenter(FCNResNet101, paper=FCNPAPER, input_size=(3, 520, 520), dataset=_DATASET,
                    deviations=_DEVIATIONS, aux_weight=AUX_WEIGHT, digits_recipe=DIGITS_RECIPE,
                    counterparts=(Counterpart("torchvision", "fcn_resnet101"),))
def fcn_resnet101(**kwargs) -> FCNResNet101:
    """FCN-ResNet-101 as torchvision: dilated ResNet-101 (stride 8), FCNHead, aux FCNHead on layer3."""
    return FCNResNet101(**kwargs)
