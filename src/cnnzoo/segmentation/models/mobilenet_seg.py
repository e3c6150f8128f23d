"""Segmentation on MobileNetV3-Large, as torchvision ships it (``lraspp_mobilenet_v3_large``,
``deeplabv3_mobilenet_v3_large``). LR-ASPP is from A. Howard et al., "Searching for MobileNetV3", ICCV 2019
(https://arxiv.org/abs/1905.02244), Sec. 6.4 and Fig. 10; the DeepLab v3 head is L.-C. Chen et al., "Rethinking
Atrous Convolution for Semantic Image Segmentation", 2017 (see ``deeplabv3.py``). The layouts are torchvision's
``torchvision.models.segmentation.lraspp`` and ``deeplabv3`` (``_deeplabv3_mobilenetv3``).

Key ideas
    Sec. 6.4 turns the classification network into a mobile segmenter in three moves. (1) Atrous convolution in the
    last block: the stride 2 of MobileNetV3's last stage (the 160-wide rows of Table 1) is replaced by dilation 2,
    so the backbone's last map is at 1/16 of the input instead of 1/32 (denser features at no parameter cost).
    (2) Lite R-ASPP (LR-ASPP), a lighter head than MobileNetV2's R-ASPP (a 1x1 conv branch plus a global pooling
    branch): the 1/16 map goes through a 1x1 conv (128 filters) + BN + ReLU, and is *gated* channel-wise as in
    Squeeze-and-Excitation by a second branch - average pooling with a large kernel and stride (49x49, stride
    (16, 20) in Fig. 10, "to save some computation"), one 1x1 conv to 128 channels, a sigmoid - whose output
    multiplies the first. (3) A skip from low-level (1/8) features: the gated map is upsampled bilinearly by 2
    and classified by a 1x1 conv, the 1/8 features are classified by another 1x1 conv, and the two score maps
    are summed, then upsampled to the image. The paper also shows the last block can lose half its channels
    ("reduce the channels in the last block by a factor of 2", RF2) with little loss, since Cityscapes has 19
    classes, not ImageNet's 1000, and ablates 128 vs 256 filters in the head (Table 7).
    ``deeplabv3_mobilenet_v3_large`` is torchvision's pairing of DeepLab v3's ASPP head (image pooling, BN; see
    ``deeplabv3.py``) with the same dilated backbone, plus an auxiliary FCN head on the 1/8 features.

Which table the code reproduces
    Not a table of either paper: torchvision's networks (torchvision 0.29), key for key. ``backbone`` is the zoo's
    ``mobilenet_v3_large(output_stride=16).features`` (Table 1 with the last stage dilated; torchvision's
    ``IntermediateLayerGetter`` on ``.features``: keys ``backbone.0`` ... ``backbone.16``, no classifier). The
    high-level map is ``backbone.16`` (the 1x1 conv to 960, 1/16); the low-level map is ``backbone.4`` (40 channels,
    1/8): torchvision's ``stage_indices[-4]``, where ``stage_indices`` = 0, every block whose table stride is 2
    (features 2, 4, 7, 13), and 16 - i.e. the *first* block of the 1/8 stage (Table 1's row "bneck 5x5, 72, 40,
    SE, RE, s2"), not its last (``features.6``, the map the zoo's ``feature_info`` reports at reduction 8).
    Backbone parameters: mobilenet_v3_large's 5,483,032 (Table 1, torchvision's count) less its classifier
    (960 * 1280 + 1280 + 1280 * 1000 + 1000 = 2,511,080) = 2,971,952; dilation adds none.

    ``lraspp_mobilenet_v3_large`` (``classifier`` = torchvision's ``LRASPPHead(40, 960, classes, 128)``):
    ``cbr`` = 1x1 conv 960 -> 128 without bias + BN + ReLU: 960 * 128 + 2 * 128 = 123,136; ``scale`` = global
    average pooling, 1x1 conv 960 -> 128 without bias, sigmoid: 122,880; ``low_classifier`` 1x1 40 -> 21 with
    bias: 861; ``high_classifier`` 1x1 128 -> 21 with bias: 2,709. Head 249,586; total 3,221,538, torchvision's
    count (21 classes).

    ``deeplabv3_mobilenet_v3_large`` (``classifier`` = ``DeepLabHead(960, classes)``, ``aux_classifier`` =
    ``FCNHead(40, classes)``): ASPP 1x1 branch 960 * 256 + 512 = 246,272; three 3x3 branches (rates 12, 24, 36)
    3 * (960 * 256 * 9 + 512) = 6,637,056; image pooling 246,272; projection 1280 * 256 + 512 = 328,192 (ASPP
    7,457,792); 3x3 conv 256 -> 256 + BN 590,336; 1x1 256 -> 21 5,397: head 8,053,525. Aux: 3x3 conv 40 -> 10
    + BN + 1x1 10 -> 21 = 3,600 + 20 + 231 = 3,851. Total 2,971,952 + 8,053,525 + 3,851 = 11,029,328,
    torchvision's count with the auxiliary head (11,025,477 without).

Training setup in the paper
    Sec. 6.4: Cityscapes, "fine" annotations only, mIOU; the training protocol of DeepLab v3 / MobileNetV2
    (poly learning rate, random scaling and crops); "all our models are trained from scratch without pretraining
    on ImageNet" and evaluated with a single-scale input; output stride 16 with the 1/8 skip. Table 7 ablates
    RF2, R-ASPP vs LR-ASPP, 128 vs 256 head filters and output stride on the validation set; Table 8 compares with
    ESPNet and CCC2 on the test set, at full and half resolution. torchvision's weights (COCO_WITH_VOC_LABELS_V1):
    its reference script on COCO train2017's 20 PASCAL VOC categories from an ImageNet MobileNetV3-Large backbone
    (``weights_backbone``), loss CE(out) (+ 0.5 CE(aux) for DeepLab), as ``fcn_resnet``.

This implementation
    torchvision's networks, with their departures from the paper: the sigmoid gate's pooling is *global* average
    pooling (broadcast over the map), not the paper's 49x49 window with stride (16, 20) followed by bilinear
    upsampling (the two agree when the map is at most 49 x 49 - e.g. 769 x 769 inputs - and differ on Cityscapes'
    1024 x 2048); the gated map is resized bilinearly to the low-level map's size (= the paper's x2 up to
    rounding) *before* its 1x1 classifier, as the paper; the low-level map is ``features.4`` (see above); the last
    block keeps its full width (no RF2: torchvision's ``reduced_tail=False``); BN eps 1e-5 in the heads and 1e-3
    in the backbone (torchvision's). DeepLab v3 on MobileNetV3 is torchvision's, not in either paper: ASPP rates
    12, 24, 36 (DeepLab v3's output-stride-8 rates) although the map is at output stride 16 (the paper's rates
    there are 6, 12, 18), the 3x3 conv-BN-ReLU and Dropout(0.5) of torchvision's ``DeepLabHead``, and the aux
    ``FCNHead`` (40 -> 10 -> classes) on ``features.4``. ``create_segmenter(name, weights=FILE)`` loads a
    torchvision checkpoint with no options and gives torchvision's ``out`` (and ``aux``) to float tolerance
    (tests/test_segmentation_mobilenet.py). Output convention as ``fcn_resnet``: ``forward(x)`` returns the main
    ``(N, classes, H, W)`` map (and ``(main, aux)`` for DeepLab in training mode with ``aux_loss=True``);
    ``forward_dict(x)`` gives torchvision's ``{"out"[, "aux"]}``.
    Options: ``num_classes`` (21), ``in_channels`` (3), ``aux_loss`` (DeepLab: True), ``inter_channels`` (LR-ASPP:
    128, the paper's head filters; Table 7 also tries 256), ``atrous_rates`` and ``aspp_channels`` (DeepLab:
    torchvision's 12, 24, 36 and 256), ``output_stride`` (16, the paper's and torchvision's; 8 also dilates the 1/16
    stage, by 2, and the last by 4: not in Sec. 6.4, DeepLab v3's evaluation setting; no parameter changes),
    ``width_mult`` (1.0: the backbone's Table 3 multiplier, e.g. for the small digits; torchvision's checkpoints
    need 1.0), ``backbone_weights`` (a mobilenet_v3_large
    checkpoint ``create_model`` reads, e.g. ImageNet weights; the heads start at PyTorch's default initialisation,
    as torchvision's, the backbone at the zoo's MobileNetV3 initialisation). The backbone's BN momentum is the zoo
    MobileNetV3's 0.1 (torchvision: 0.01; see ``mobilenet_v3.py``), which only changes training. The image pooling
    of ASPP has a BN on a 1 x 1 map: DeepLab trains with batches of at least 2.
    digits-segmentation (``get_digits_recipe``; 64 x 64, 1 channel, 11 classes, 1,000 training canvases, 200 test):
    ``width_mult=0.5`` and ``output_stride=8`` (at 16 the canvas leaves a 4 x 4 map), Adam, batch 16, 6 epochs
    (DeepLab: 10, with median frequency balancing), the rate decayed by the recipes' poly schedule;
    measured on 1 thread (seed 0, CE loss, + 0.5 CE(aux) for DeepLab, inputs (x / 255 - 0.13) / 0.31), mean IU on
    the test canvases (predicting background everywhere: 0.087): LR-ASPP 0.411 (pixel accuracy 0.966; 0.197 at
    output stride 16); DeepLab: see the next paragraph. Wall times were 2-10 min on a shared 2-core machine.
    Why DeepLab on this backbone does not learn digits-segmentation the way LR-ASPP does (measured, seed 0, one
    thread; no network bug found - the structure is torchvision's key for key, the equality tests pass, and the
    dilations at output stride 8 on the 8 x 8 map are as intended): with the unweighted loss the main head falls
    to "background everywhere" within ~20 steps (main CE 2.44 -> 0.48; it then creeps to 0.20 by step 120 with
    no foreground pixel predicted) and the gradients reaching the ASPP branches and ``backbone.16`` shrink to
    ~0.005 (L2 norm per part), while the aux FCNHead (24 -> 6 -> 11 channels at width 0.5) takes most of the
    backbone's gradient and itself settles on background. The head is not at fault: the same DeepLabHead learns on
    the shallow ResNet (``deeplabv3_resnet50``, ``backbone_layers=[1, 1, 1, 1]``, 0.39) at the same 8 x 8 map, and
    the features at initialisation vary spatially (per-channel spatial std / total std 0.74 at ``backbone.16``,
    0.69 after the ASPP projection; image pooling is constant over the map by design). The deep, narrow
    MobileNetV3 path trained from scratch is what is slow: LR-ASPP with its 1/8 skip classifier zeroed and frozen
    reached only 0.109 after 4 epochs (lr 3e-3, batch 16), i.e. LR-ASPP's 0.411 leans on the shallow skip that
    DeepLab lacks. Recipes tried for DeepLab (width 0.5, output stride 8, ASPP 64 wide with rates 1, 2, 3 unless
    said; mean IU after the last epoch): Adam 3e-3, batch 16, 6 epochs 0.093; aux_loss off, 3 epochs 0.087 (stopped);
    lr 1e-2, 3 epochs 0.087 (stopped); batch 4, lr 1e-3, 3 epochs 0.093 (stopped); median frequency class balancing
    (SegNet Sec. 3.2, the trainer's ``class_weighting``), Adam 3e-3, batch 16, 6 epochs: 0.235 (0.10, 0.10, 0.13,
    0.15, 0.22, 0.24 by epoch, still rising; 141 CPU s); the same for 10 epochs with the rate decayed (cosine):
    0.300 (0.10, 0.11, 0.13, 0.16, 0.20, 0.27, 0.28, 0.30, 0.30, 0.30 by epoch; ~200 s) - the recipe
    (``_DEEPLAB_DIGITS``: 10 epochs, the recipes' poly decay); 10 epochs decayed without the class balancing:
    0.096 at epoch 6 (stopped). Not tried: SGD, width 0.35 or 1.0, dropout off. The seeds 0-2 are in
    docs/segmentation.md.
    The zoo's MobileNetV3 got the ``output_stride`` option for this (default 32, the classification layout
    unchanged); ``create_model("mobilenet_v3_large", features_only=True, output_stride=16)`` gives the same backbone
    through the features API, its last map equal to ``backbone.16``'s here, its ``feature_info`` at reductions
    2, 4, 8, 16.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Counterpart, Paper, create_model
from ..registry import register_segmenter
from .base import Segmenter
from .deeplabv3 import ASPP, ASPP_CHANNELS, ATROUS_RATES, DEEPLABV3
from .fcn_resnet import AUX_WEIGHT, FCNHead

__all__ = ["DeepLabV3MobileNetV3Large", "LRASPPHead", "LRASPPMobileNetV3Large", "MobileNetV3Segmenter",
           "deeplab_head", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]

MOBILENET_V3 = Paper(
    "Searching for MobileNetV3",
    "A. Howard, M. Sandler, G. Chu, L.-C. Chen, B. Chen, M. Tan, W. Wang, Y. Zhu, R. Pang, V. Vasudevan, Q. V. Le, "
    "H. Adam",
    2019,
    "https://arxiv.org/abs/1905.02244",
)

#: torchvision's low-level tap: stage_indices[-4] of [0, 2, 4, 7, 13, 16] = the first block of the 1/8 stage
LOW_INDEX = 4
#: the backbone's output stride (Sec. 6.4: the last block atrous; torchvision's dilated=True)
OUTPUT_STRIDE = 16
#: LR-ASPP's head filters (Fig. 10; Table 7 also tries 256)
LRASPP_CHANNELS = 128


class LRASPPHead(nn.Module):
    """Lite R-ASPP (Sec. 6.4, Fig. 10) in torchvision's layout: ``cbr`` (1x1 conv, BN, ReLU) on the high map,
    gated by ``scale`` (global average pooling, 1x1 conv, sigmoid); the product resized to the low map and
    classified by ``high_classifier``, added to ``low_classifier`` of the low map."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int,
                 inter_channels: int = LRASPP_CHANNELS) -> None:
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high) * self.scale(high)  # (N, 128, H/16, W/16) * (N, 128, 1, 1)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)  # -> (N, 128, H/8, W/8)
        return self.low_classifier(low) + self.high_classifier(x)  # (N, classes, H/8, W/8)


def deeplab_head(in_channels: int, num_classes: int, atrous_rates: tuple[int, ...] = ATROUS_RATES,
                 channels: int = ASPP_CHANNELS) -> nn.Sequential:
    """torchvision's ``DeepLabHead`` (see ``deeplabv3.py``) with the ASPP width as a parameter: ASPP (``0``), 3x3
    conv ``channels`` without bias (``1``), BN (``2``), ReLU (``3``), 1x1 conv -> classes (``4``)."""
    return nn.Sequential(ASPP(in_channels, tuple(atrous_rates), channels),
                         nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                         nn.Conv2d(channels, num_classes, 1))


class MobileNetV3Segmenter(Segmenter):
    """A head on the dilated MobileNetV3-Large's ``features`` (keys ``backbone.0`` ... ``backbone.16``): the low
    map after ``backbone.4`` (1/8) and the high map after ``backbone.16`` (1/16), each prediction resized
    bilinearly to the input. Subclasses build ``classifier`` (and ``aux_classifier``) in ``make_heads``."""

    min_input_size = 1

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, width_mult: float = 1.0,
                 output_stride: Literal[8, 16] = OUTPUT_STRIDE, backbone_weights: str | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} option {key} must be an integer >= 1, got {value!r}")
        if output_stride not in (8, 16):
            raise ValueError(f"{name} option output_stride must be 16 (torchvision's, Sec. 6.4) or 8, "
                             f"got {output_stride!r}")
        self.num_classes, self.in_channels, self.output_stride = num_classes, in_channels, output_stride
        net = create_model("mobilenet_v3_large", in_channels=in_channels, width_mult=width_mult,
                           output_stride=output_stride, weights=backbone_weights)
        # torchvision's IntermediateLayerGetter(mobilenet_v3_large(dilated=True).features): the keys backbone.0 ... 16.
        # The zoo's feature_info reports features.6 at reduction 8, not torchvision's low tap features.4, so the maps
        # are taken here (_maps) rather than by features_only (whose keys would also gain a "features." prefix).
        self.backbone = net.features
        self.low_channels = net.features[LOW_INDEX].out_channels  # 40 at width 1
        self.high_channels = net.num_features  # 960 at width 1
        self.aux_classifier: nn.Module | None = None

    def _maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        low = None
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i == LOW_INDEX:
                low = x  # (N, 40, H/8, W/8)
        return low, x  # x: (N, 960, H/16, W/16)

    def _main(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def output_size(self, size: int) -> int:
        return size  # bilinear resize back to the input

    def forward_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """torchvision's output, in any mode: ``{"out": (N, K, H, W)}``, plus ``"aux"`` with an auxiliary head."""
        low, high = self._maps(x)
        size = x.shape[-2:]
        result = OrderedDict()
        result["out"] = F.interpolate(self._main(low, high), size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(low)
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.aux_classifier is not None:
            y = self.forward_dict(x)
            return y["out"], y["aux"]
        low, high = self._maps(x)
        return F.interpolate(self._main(low, high), size=x.shape[-2:], mode="bilinear", align_corners=False)

    @staticmethod
    def _in_channels_from(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        stem = sd.get("backbone.0.0.weight")
        return {"in_channels": int(stem.shape[1])} if isinstance(stem, torch.Tensor) and stem.ndim == 4 else {}


class DeepLabV3MobileNetV3Large(MobileNetV3Segmenter):
    """torchvision's ``deeplabv3_mobilenet_v3_large``: ``DeepLabHead(960, classes)`` on the 1/16 map, aux
    ``FCNHead(40, classes)`` on the 1/8 map. See the module notes."""

    def __init__(self, *, num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3,
                 atrous_rates: tuple[int, ...] = ATROUS_RATES, aspp_channels: int = ASPP_CHANNELS,
                 width_mult: float = 1.0, output_stride: Literal[8, 16] = OUTPUT_STRIDE,
                 backbone_weights: str | None = None) -> None:
        name = type(self).__name__
        if (not isinstance(atrous_rates, (list, tuple)) or not atrous_rates
                or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in atrous_rates)):
            raise ValueError(f"{name} option atrous_rates must be a non-empty list of integers >= 1 (torchvision: "
                             f"12, 24, 36), got {atrous_rates!r}")
        if isinstance(aspp_channels, bool) or not isinstance(aspp_channels, int) or aspp_channels < 1:
            raise ValueError(f"{name} option aspp_channels must be an integer >= 1 (the paper: 256), "
                             f"got {aspp_channels!r}")
        super().__init__(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult,
                         output_stride=output_stride, backbone_weights=backbone_weights)
        self.aux_loss = bool(aux_loss)
        self.classifier = deeplab_head(self.high_channels, num_classes, tuple(atrous_rates), aspp_channels)
        self.aux_classifier = FCNHead(self.low_channels, num_classes) if aux_loss else None

    def _main(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.classifier(high)

    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """``aux_loss`` (are there ``aux_classifier`` keys?), ``num_classes`` and ``aspp_channels`` (the last conv's
        outputs and inputs) and ``in_channels`` (the stem's inputs) of a checkpoint in this layout."""
        opts: dict[str, object] = {"aux_loss": any(k.startswith("aux_classifier.") for k in sd)}
        last = sd.get("classifier.4.weight")
        if isinstance(last, torch.Tensor) and last.ndim == 4:
            opts["num_classes"], opts["aspp_channels"] = int(last.shape[0]), int(last.shape[1])
        return {**opts, **MobileNetV3Segmenter._in_channels_from(sd)}


class LRASPPMobileNetV3Large(MobileNetV3Segmenter):
    """torchvision's ``lraspp_mobilenet_v3_large``: ``LRASPPHead(40, 960, classes, 128)``. See the module notes."""

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, inter_channels: int = LRASPP_CHANNELS,
                 width_mult: float = 1.0, output_stride: Literal[8, 16] = OUTPUT_STRIDE,
                 backbone_weights: str | None = None) -> None:
        if isinstance(inter_channels, bool) or not isinstance(inter_channels, int) or inter_channels < 1:
            raise ValueError(f"LRASPPMobileNetV3Large option inter_channels must be an integer >= 1, "
                             f"got {inter_channels!r}")
        super().__init__(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult,
                         output_stride=output_stride, backbone_weights=backbone_weights)
        self.classifier = LRASPPHead(self.low_channels, self.high_channels, num_classes, inter_channels)

    def _main(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.classifier(low, high)

    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """``num_classes``, ``inter_channels`` and ``in_channels`` of a checkpoint in this layout."""
        opts: dict[str, object] = {}
        high = sd.get("classifier.high_classifier.weight")
        if isinstance(high, torch.Tensor) and high.ndim == 4:
            opts["num_classes"], opts["inter_channels"] = int(high.shape[0]), int(high.shape[1])
        return {**opts, **MobileNetV3Segmenter._in_channels_from(sd)}


_DATASET = "COCO train2017, the 20 PASCAL VOC categories (torchvision's weights); the paper: Cityscapes"
_COMMON = (
    ("the low-level map is features.4 (the first block of the 1/8 stage, torchvision's stage_indices[-4]), not the "
     "stage's last block"),
    "no RF2: the last block keeps its full width (the paper's models halve it; torchvision's reduced_tail=False)",
    "backbone BN momentum 0.1 (torchvision 0.01), the zoo MobileNetV3's; only training differs",
)
_LRASPP_DEVIATIONS = (
    ("the gate pools globally (torchvision's AdaptiveAvgPool2d(1)), not the paper's 49x49 average pooling with stride "
     "(16, 20) and bilinear upsampling (the same for maps up to 49 x 49)"),
    *_COMMON,
)
_DEEPLAB_DEVIATIONS = (
    ("not in either paper: DeepLab v3's head on MobileNetV3 is torchvision's pairing; ASPP rates 12, 24, 36 (DeepLab "
     "v3's output-stride-8 rates) on the output-stride-16 map (the paper's rates there: 6, 12, 18), no multi-grid"),
    "a 3x3 conv-BN-ReLU after the ASPP projection and Dropout(0.5) in the projection (torchvision's head)",
    "an auxiliary FCNHead (40 -> 10 -> classes) on features.4 (aux_loss=True, loss weight 0.5 in torchvision's recipe)",
    ("forward returns the main map in eval and (main, aux) in training (the zoo's aux convention); forward_dict "
     "gives torchvision's {'out', 'aux'}"),
    *_COMMON,
)
# digits-segmentation (64 x 64, 1 channel, 1,000 training canvases): a half-width backbone (Table 3's multiplier)
# for 2 CPU cores, and output stride 8 (at 16 the 64 x 64 canvas leaves a 4 x 4 map). Measured on 1 thread, seed 0,
# loss CE(out) (+ 0.5 CE(aux)), inputs (x / 255 - 0.13) / 0.31, mean IU on the 200 test canvases: see the module
# notes. DeepLab: also a 64-wide ASPP with rates 1, 2, 3 (the 8 x 8 map; rates 12-36 see only their centre taps),
# and median frequency class balancing: unweighted, its main head collapses to background (see the module notes).
_LRASPP_DIGITS = {"options": {"width_mult": 0.5, "output_stride": 8}, "optimizer": "adam", "lr": 3e-3, "epochs": 6,
                  "batch_size": 16}
_DEEPLAB_DIGITS = {"options": {"width_mult": 0.5, "output_stride": 8, "aspp_channels": 64, "atrous_rates": [1, 2, 3]},
                   "optimizer": "adam", "lr": 3e-3, "epochs": 10, "batch_size": 16, "class_weighting": "median_frequency"}


@register_segmenter(LRASPPMobileNetV3Large, paper=MOBILENET_V3, input_size=(3, 520, 520), dataset=_DATASET,
                    deviations=_LRASPP_DEVIATIONS, digits_recipe=_LRASPP_DIGITS,
                    counterparts=(Counterpart("torchvision", "lraspp_mobilenet_v3_large"),))
def lraspp_mobilenet_v3_large(**kwargs) -> LRASPPMobileNetV3Large:
    """LR-ASPP on MobileNetV3-Large as torchvision: dilated last stage (1/16), sigmoid-gated 128-wide head, 1/8 skip."""
    return LRASPPMobileNetV3Large(**kwargs)


@register_segmenter(DeepLabV3MobileNetV3Large, paper=DEEPLABV3, input_size=(3, 520, 520), dataset=_DATASET,
                    deviations=_DEEPLAB_DEVIATIONS, aux_weight=AUX_WEIGHT, digits_recipe=_DEEPLAB_DIGITS,
                    counterparts=(Counterpart("torchvision", "deeplabv3_mobilenet_v3_large"),))
def deeplabv3_mobilenet_v3_large(**kwargs) -> DeepLabV3MobileNetV3Large:
    """DeepLab v3 on MobileNetV3-Large as torchvision: dilated last stage (1/16), ASPP 12/24/36, aux FCNHead."""
    return DeepLabV3MobileNetV3Large(**kwargs)
