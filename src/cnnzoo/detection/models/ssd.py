"""SSD. W. Liu, D. Anguelov, D. Erhan, C. Szegedy, S. Reed, C.-Y. Fu, A. C. Berg, "SSD: Single Shot MultiBox
Detector", ECCV 2016. https://arxiv.org/abs/1512.02325

Key ideas
    One network, one pass, no proposals: small 3x3 convolutional predictors on several feature maps of decreasing
    resolution each score, at every location, a fixed set of *default boxes* (anchors) of a few scales and aspect
    ratios: C + 1 class scores (softmax, 0 = background) and 4 offsets per box, ``(c + 4) k`` filters for k boxes per
    location (Sec. 2.1, Fig. 2). Maps of many resolutions handle objects of many sizes (early maps, small boxes; late
    maps, large ones). Training matches each ground-truth box to its best default box, then every default box with
    jaccard overlap > 0.5 (Sec. 2.2 "Matching strategy"), and minimises ``(L_conf + alpha L_loc) / N`` (Eq. 1, alpha
    1, N matched boxes): softmax cross-entropy over the positives and the *hard negatives*, the highest-loss
    background boxes at most 3 per positive, and smooth L1 on the offsets of the positives (Eq. 2, the centre
    offsets and log sizes of Faster R-CNN, with the Caffe code's "variances" 0.1 / 0.2).

Which table the code reproduces
    SSD300 of Fig. 2 and Sec. 3: VGG-16 (pre-trained on ILSVRC CLS-LOC) "Similar to DeepLab-LargeFOV, we convert fc6
    and fc7 to convolutional layers, subsample parameters from fc6 and fc7, change pool5 from 2x2-s2 to 3x3-s1, and
    use the a trous algorithm to fill the 'holes'" (fc6: 3x3, 1024 channels, dilation 6; fc7: 1x1, 1024); dropout and
    fc8 removed. Prediction maps: conv4_3 (38x38, L2-normalised with a learned per-channel scale initialised to 20,
    ParseNet, Sec. 3.1), fc7 (19x19), and the extra layers of Fig. 2, each a 1x1 reduction then a 3x3:
    conv8_1 1x1x256, conv8_2 3x3x512 stride 2 (10x10); conv9_1 1x1x128, conv9_2 3x3x256 stride 2 (5x5); conv10_1
    1x1x128, conv10_2 3x3x256 valid (3x3); conv11_1 1x1x128, conv11_2 3x3x256 valid (1x1). 4, 6, 6, 6, 4, 4 default
    boxes per location (conv4_3, conv10_2 and conv11_2 omit ratios 3 and 1/3, Sec. 3.1): 38^2 x 4 + 19^2 x 6 +
    10^2 x 6 + 5^2 x 6 + 3^2 x 4 + 4 = 8,732 boxes (Table 7). SSD512 (Sec. 3, footnote: "we add extra conv12_2 for
    prediction"; the authors' ssd_pascal_512.py): conv10_2 and conv11_2 become 3x3 stride 2 (padding 1), conv12_1
    1x1x128, conv12_2 4x4x256 (padding 1); maps 64, 32, 16, 8, 4, 2, 1 with 4, 6, 6, 6, 6, 4, 4 boxes: 24,564
    (Table 7). Parameters at 91 classes (COCO; torchvision's count): SSD300 35,641,826, SSD512 37,513,116 (derivations in
    tests/test_detection_ssd.py).

Training setup in the paper
    SGD, lr 1e-3, momentum 0.9, weight decay 5e-4, batch 32; VOC: 40k iterations at 1e-3 then 10k at 1e-4 and 1e-5
    (Sec. 3.1); new layers "xavier"-initialised. Default box scales s_k from s_min 0.2 to s_max 0.9 (Sec. 2.2 Eq. 4),
    0.1 on conv4_3 for VOC; COCO (Sec. 3.4) and SSD512: s_min 0.15 and 0.07 on conv4_3. Data augmentation
    (Sec. 2.2): the whole image, a patch with minimum jaccard overlap 0.1, 0.3, 0.5, 0.7 or 0.9 with the objects, or a
    random patch (size 0.1-1 of the image, aspect 1/2-2), resized, flipped with probability 0.5, with photometric
    distortions; Sec. 3.6 adds the "zoom out" expansion (canvas up to 16x the image) for small objects. Inference:
    per class a confidence threshold of 0.01, NMS at jaccard 0.45, the top 200 detections per image (Sec. 3.7).
    VOC2007 test mAP (07+12 training): SSD300 74.3, SSD512 76.8 (Table 1).

This implementation
    Layout and arithmetic are torchvision's ``ssd300_vgg16`` (torchvision/models/detection/ssd.py), so a torchvision
    checkpoint loads through ``create_detector("ssd300_vgg16", weights=FILE)`` with no options and gives its raw head
    outputs (tests/test_detection_ssd.py, on the layout fixture): keys ``backbone.features.N`` (conv1_1 ... conv4_3's
    ReLU: the zoo's / torchvision's ``vgg16`` ``features.0`` ... ``features.22``; pool3 rounds up, so 300 gives 38),
    ``backbone.scale_weight`` (the L2Norm scale), ``backbone.extra.0`` (pool4, conv5_1..conv5_3 at
    ``extra.0.1/3/5``, i.e. vgg16's ``features.24/26/28``, then ``extra.0.7`` = pool5 3x3/1, fc6 ``extra.0.7.1``,
    fc7 ``extra.0.7.3``), ``backbone.extra.1..4`` (conv8 ... conv11, each ``.0`` 1x1 and ``.2`` 3x3),
    ``head.classification_head.module_list.k`` and ``head.regression_head.module_list.k``. ``forward(images)``
    returns ``{"cls_logits": (N, A, num_classes), "bbox_regression": (N, A, 4)}`` ordered as torchvision's: by map,
    then row, column, then box; the boxes of a location in the order ``s_k``, ``s'_k``, then ``(r, 1/r)`` per ratio
    (`cnnzoo.detection.anchors.ssd_default_boxes`). ``num_classes`` counts the background (91 for COCO, 21 for VOC;
    labels 1..num_classes-1). The images go in as given: torchvision's transform (resize to 300x300, subtract
    ``[0.48235, 0.45882, 0.40784]`` and multiply by 255, the Caffe model's input) is the caller's.
    Default boxes (`anchors`): `ssd_default_boxes` with the scales of `ssd_scales` (Caffe's integer-percent rule):
    the default s_min 0.15 gives torchvision's COCO scales ``[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]``
    (``s_min=0.2``: the paper's VOC setting, 0.1 on conv4_3). At the design size (300, or 512 for ``ssd512_vgg16``)
    centres follow the Caffe ``steps`` (8, 16, 32, 64, 100, 300), as torchvision; at any other size the feature
    maps' actual sizes ``|f_k|`` (the paper's ``((i + 0.5) / |f_k|, (j + 0.5) / |f_k|)``), so a smaller input gets
    default boxes on the maps it really has. Loss: `cnnzoo.detection.losses.ssd_multibox_loss` (matching at 0.5,
    hard negatives 3:1, smooth L1 + softmax cross-entropy over the number of positives, weights (10, 10, 5, 5)).
    ``detect``: softmax, decode (`cnnzoo.detection.coder.BoxCoder`, (10, 10, 5, 5)), clip to the image, per class
    scores above ``score_thresh`` (0.01), at most 400 candidates per class, NMS per class at 0.45, the top 200 --
    torchvision's ``postprocess_detections`` (its ``topk_candidates`` 400 is not in the paper).
    Init as torchvision: VGG convolutions Kaiming-normal (fan-out, the zoo's vgg16), fc6/fc7, the extra layers and
    the predictors Xavier-uniform with zero biases (Sec. 3.1 "xavier"), L2Norm scale 20.
    Options:
        ``num_classes`` (91), ``in_channels`` (3).
        ``backbone_weights``: a vgg16 checkpoint (anything ``create_model("vgg16", weights=...)`` reads): its
            convolutions are copied and its fc6 / fc7 subsampled into the dilated fc6 and fc7 (`load_vgg16`):
            fc6's 4096 x 25088 weight read as 4096 x 512 x 7 x 7 keeps every 4th output and the taps 0, 3, 6 of each
            7 (1024 x 512 x 3 x 3), fc7 every 4th output and input (1024 x 1024): our reading of "subsample
            parameters" (the paper gives no indices; DeepLab-LargeFOV, which it follows, "subsample[s] (by
            decimation)"). Only at ``width_mult=1``; another ``in_channels`` adapts the first convolution
            (summed over RGB for 1 channel, as ``unet_resnet34``).
        ``width_mult`` (1.0): scales every VGG width, fc6/fc7's 1024 and the extra layers' widths (rounded, at least
            1) -- a deviation for training on 2 CPU cores.
        ``levels``: use only the first ``levels`` prediction maps (3 .. 6, or 7 for SSD512) and build only the extra
            layers they need -- for inputs too small for the full pyramid (the valid 3x3 conv10_2 / conv11_2 need
            a 5x5 conv9_2: 268 pixels at least): a 128-pixel input has 16, 8, 4, 2 maps, ``levels=4``. The
            scales are then `ssd_scales` over the maps kept.
        ``s_min`` (0.15), ``s_max`` (0.9): the scale range of `ssd_scales`.
        ``highres``: the SSD512 layout (``ssd512_vgg16`` sets it).
    ``ssd512_vgg16`` is a builder of its own (not an option of ``ssd300_vgg16``): the paper reports it as a separate
    model (Tables 1, 7), with its own input size, extra layers and default boxes on its card. Its layout is the
    paper's (Caffe's), not torchvision's ``highres`` extractor, which keeps conv10_2 / conv11_2 valid and stride 1
    (64, 32, 16, 8, 6, 4, 1 maps, 24,732 boxes); the state-dict shapes are the same, the outputs differ.
    Not here: the data augmentation of Sec. 2.2 / 3.6 (the training loop's), the Caffe input scaling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...models.base import check_image_batch
from ...registry import Counterpart, Paper
from ..anchors import SSD300, SSD512, ssd_default_boxes, ssd_num_boxes_per_location, ssd_scales
from ..coder import SSD_WEIGHTS, BoxCoder
from ..losses import ssd_multibox_loss
from ..nms import batched_nms
from ..registry import register_detector

__all__ = ["EXTRA_300", "EXTRA_512", "FC6_DILATION", "L2NORM_SCALE", "SSD", "SSD_PAPER", "VGG16_D", "load_vgg16",
           "ssd300_vgg16", "ssd512_vgg16"]

SSD_PAPER = Paper("SSD: Single Shot MultiBox Detector",
                  "W. Liu, D. Anguelov, D. Erhan, C. Szegedy, S. Reed, C.-Y. Fu, A. C. Berg", 2016,
                  "https://arxiv.org/abs/1512.02325")

# VGG-16, configuration D (the zoo's vgg.CONFIGS["D"]): channels, "M" = 2x2/2 max-pool
VGG16_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
CONV4_3_END = 23  # features.0 .. features.22: conv1_1 ... conv4_3's ReLU; features.23 is pool4
POOL3 = 16  # its index in VGG-16's features: rounds up (Caffe), so 75 -> 38
FC_WIDTH = 1024  # fc6 / fc7 after subsampling (Sec. 3, DeepLab-LargeFOV)
FC6_DILATION = 6  # Sec. 3: "use the a trous algorithm"; pool5 3x3/1 keeps stride 16, so 3 taps of 7 spaced 6
L2NORM_SCALE = 20.0  # Sec. 3.1: "scale the feature norm at each location in the feature map to 20"
# Fig. 2 extra layers: (1x1 width, 3x3 width, kernel, stride, padding) of conv8 .. conv11 (SSD300)
EXTRA_300 = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0), (128, 256, 3, 1, 0))
# SSD512 (Caffe ssd_pascal_512.py): conv10_2 / conv11_2 stride 2 with padding, conv12_2 4x4 with padding 1
EXTRA_512 = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 4, 1, 1))
S_MIN, S_MAX = 0.15, 0.9  # COCO (Sec. 3.4) and SSD512 (Sec. 3 footnote); torchvision's ssd300_vgg16 scales
TOPK_CANDIDATES = 400  # torchvision's SSD postprocess: at most 400 boxes per class before NMS


def _check_int(name: str, key: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} option {key} must be an integer >= {low}, got {value!r}")


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class SSDVGG16(nn.Module):
    """SSD's VGG-16 feature extractor (torchvision's ``SSDFeatureExtractorVGG`` layout): ``forward`` gives the
    prediction maps, conv4_3 L2-normalised and scaled, then fc7 and the extra layers' outputs."""

    def __init__(self, in_channels: int, width, extra: tuple, num_extra: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chs = in_channels
        for item in VGG16_D:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=len(layers) == POOL3))
            else:
                layers += [nn.Conv2d(chs, width(item), 3, padding=1), nn.ReLU(inplace=True)]
                chs = width(item)
        self.features = nn.Sequential(*layers[:CONV4_3_END])
        self.scale_weight = nn.Parameter(torch.full((width(512),), L2NORM_SCALE))
        fc = nn.Sequential(
            nn.MaxPool2d(3, 1, 1),  # pool5: 3x3/1 instead of 2x2/2 (Sec. 3)
            nn.Conv2d(chs, width(FC_WIDTH), 3, padding=FC6_DILATION, dilation=FC6_DILATION),  # fc6 (atrous)
            nn.ReLU(inplace=True),
            nn.Conv2d(width(FC_WIDTH), width(FC_WIDTH), 1),  # fc7
            nn.ReLU(inplace=True),
        )
        blocks = [nn.Sequential(*layers[CONV4_3_END:-1], fc)]  # pool4, conv5_1 .. conv5_3 (pool5 replaced), fc6, fc7
        chs = width(FC_WIDTH)
        for mid, out, k, s, p in extra[:num_extra]:
            blocks.append(nn.Sequential(nn.Conv2d(chs, width(mid), 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(width(mid), width(out), k, stride=s, padding=p),
                                        nn.ReLU(inplace=True)))
            chs = width(out)
        self.extra = nn.ModuleList(blocks)
        for m in self.features.modules():  # the zoo's / torchvision's vgg16 init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for m in self.extra[0][:-1].modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        _xavier(fc)
        _xavier(self.extra[1:])

    def out_channels(self) -> list[int]:
        chs = [self.scale_weight.shape[0]]
        for block in self.extra:
            chs.append([m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels)
        return chs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.features(x)
        out = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x, dim=1)]  # ParseNet L2 norm, learned scale
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


class _Predictors(nn.Module):
    """One 3x3 convolution per map with ``boxes x columns`` outputs; ``forward`` gives ``(N, sum H W boxes, columns)``
    in torchvision's order (map, row, column, box)."""

    def __init__(self, in_channels: list[int], boxes: list[int], columns: int) -> None:
        super().__init__()
        self.columns = columns
        self.module_list = nn.ModuleList(nn.Conv2d(c, a * columns, 3, padding=1) for c, a in zip(in_channels, boxes))
        _xavier(self)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for conv, f in zip(self.module_list, feats):
            y = conv(f)
            n, _, h, w = y.shape
            out.append(y.view(n, -1, self.columns, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.columns))
        return torch.cat(out, 1)


class SSDHead(nn.Module):
    """The class and box predictors of all maps (``classification_head``, ``regression_head``)."""

    def __init__(self, in_channels: list[int], boxes: list[int], num_classes: int) -> None:
        super().__init__()
        self.classification_head = _Predictors(in_channels, boxes, num_classes)
        self.regression_head = _Predictors(in_channels, boxes, 4)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"cls_logits": self.classification_head(feats), "bbox_regression": self.regression_head(feats)}


def _out_size(n: int, m: nn.Module) -> int:
    """The output length along one axis of a Conv2d / MaxPool2d for an input of length ``n`` (PyTorch's rule)."""
    pair = (lambda v: v if isinstance(v, int) else v[0])
    k, s, p = pair(m.kernel_size), pair(m.stride), pair(m.padding)
    d = pair(m.dilation)
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    if isinstance(m, nn.MaxPool2d) and m.ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p:  # the last window must start inside the input or its left padding
            out -= 1
        return out
    return span // s + 1


class SSD(nn.Module):
    """SSD300 / SSD512 on VGG-16 (module docstring: layout, options, deviations)."""

    def __init__(self, *, num_classes: int = 91, in_channels: int = 3, width_mult: float = 1.0, highres: bool = False,
                 levels: int | None = None, s_min: float = S_MIN, s_max: float = S_MAX,
                 backbone_weights: str | None = None) -> None:
        super().__init__()
        name = "ssd512_vgg16" if highres else "ssd300_vgg16"
        _check_int(name, "num_classes", num_classes, 2)
        _check_int(name, "in_channels", in_channels)
        if not isinstance(highres, bool):
            raise ValueError(f"{name} option highres must be true or false, got {highres!r}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"{name} option width_mult must be a number > 0, got {width_mult!r}")
        preset, extra = (SSD512, EXTRA_512) if highres else (SSD300, EXTRA_300)
        full = len(preset["feature_sizes"])
        if levels is None:
            levels = full
        _check_int(name, "levels", levels, 3)
        if levels > full:
            raise ValueError(f"{name} option levels must be 3 .. {full} (its prediction maps), got {levels}")
        for key, value in (("s_min", s_min), ("s_max", s_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} option {key} must be a number, got {value!r}")
        if not 0 < s_min < s_max <= 1:
            raise ValueError(f"{name} needs 0 < s_min < s_max <= 1, got s_min={s_min} and s_max={s_max}")
        self.num_classes, self.in_channels, self.width_mult = num_classes, in_channels, float(width_mult)
        self.highres, self.levels = highres, levels
        self.design_size = 512 if highres else 300
        self.aspect_ratios = tuple(preset["aspect_ratios"][:levels])
        self.steps = tuple(preset["steps"][:levels])
        self.scales = ssd_scales(levels, float(s_min), float(s_max))
        self.boxes_per_location = ssd_num_boxes_per_location(self.aspect_ratios)
        self.coder = BoxCoder(SSD_WEIGHTS)

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.backbone = SSDVGG16(in_channels, width, extra, levels - 2)
        self.head = SSDHead(self.backbone.out_channels(), self.boxes_per_location, num_classes)
        self.min_input_size = self._min_input_size()
        if backbone_weights is not None:
            if self.width_mult != 1.0:
                raise ValueError(f"{name}: backbone_weights are a vgg16 checkpoint, which fits only width_mult=1.0, "
                                 f"got width_mult={width_mult!r}")
            from ...registry import create_model

            vgg = create_model("vgg16", weights=backbone_weights)
            if in_channels != vgg.in_channels:
                from ...segmentation.models.unet import _adapt_first_conv

                _adapt_first_conv(vgg, in_channels)
            load_vgg16(self, vgg)

    # ------------------------------------------------------------------------------------------------ geometry
    def feature_sizes(self, image_size) -> list[tuple[int, int]]:
        """The ``(h, w)`` of each prediction map for an input of ``image_size`` (``S`` or ``(H, W)``), by the
        layers' arithmetic; a map of size 0 means the input is too small."""
        h, w = _hw(image_size)
        sizes = []

        def walk(module: nn.Module, h: int, w: int) -> tuple[int, int]:
            for m in module.modules():
                if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and h > 0 and w > 0:
                    h, w = _out_size(h, m), _out_size(w, m)
            return h, w

        h, w = walk(self.backbone.features, h, w)
        sizes.append((h, w))
        for block in self.backbone.extra:
            h, w = walk(block, h, w)
            sizes.append((h, w))
        return sizes

    def _min_input_size(self) -> int:
        for s in range(1, 4096):
            if all(h > 0 and w > 0 for h, w in self.feature_sizes(s)):
                return s
        raise ValueError("no input up to 4095 pixels fits this SSD")  # pragma: no cover

    def check_input(self, x: torch.Tensor) -> None:
        hint = "" if self.levels <= 3 else "; fewer prediction maps (levels=...) take smaller inputs"
        check_image_batch(f"{type(self).__name__} with {self.levels} prediction maps", x, self.in_channels,
                          self.min_input_size, hint)

    def anchors(self, image_size) -> torch.Tensor:
        """The default boxes ``(A, 4)`` xyxy pixels for an input of ``image_size``, in ``forward``'s order (module
        docstring: Caffe steps at the design size, the maps' own sizes otherwise)."""
        h, w = _hw(image_size)
        sizes = self.feature_sizes((h, w))
        if any(fh <= 0 or fw <= 0 for fh, fw in sizes):
            raise ValueError(f"a {h}x{w} input is too small for this SSD (at least {self.min_input_size}x"
                             f"{self.min_input_size})")
        steps = self.steps if (h, w) == (self.design_size, self.design_size) else None
        return ssd_default_boxes((h, w), feature_sizes=sizes, steps=steps, aspect_ratios=self.aspect_ratios,
                                 scales=self.scales)

    def num_anchors(self, image_size) -> int:
        return sum(fh * fw * a for (fh, fw), a in zip(self.feature_sizes(image_size), self.boxes_per_location))

    # -------------------------------------------------------------------------------------------------- network
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images ``(N, in_channels, H, W)`` -> ``{"cls_logits": (N, A, num_classes), "bbox_regression": (N, A, 4)}``
        (A default boxes, `anchors` order)."""
        self.check_input(x)
        return self.head(self.backbone(x))

    def loss(self, outputs: dict[str, torch.Tensor], targets: list[dict], image_size) -> dict[str, torch.Tensor]:
        """Eq. 1-3 (`ssd_multibox_loss`): {"classification", "bbox_regression", "loss"}; targets' labels in
        1 .. num_classes - 1."""
        for t in targets:
            labels = t["labels"]
            if len(labels) and (int(labels.min()) < 1 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"SSD target labels must be 1..{self.num_classes - 1} (0 is the background), got "
                                 f"{sorted(set(labels.tolist()))}")
        anchors = self.anchors(image_size).to(outputs["bbox_regression"].device)
        return ssd_multibox_loss(outputs["cls_logits"], outputs["bbox_regression"], anchors, targets, self.coder,
                                 neg_pos_ratio=3.0, iou_threshold=0.5)

    def postprocess(self, outputs: dict[str, torch.Tensor], image_size, score_thresh: float = 0.01,
                    nms_thresh: float = 0.45, max_detections: int = 200) -> list[dict[str, torch.Tensor]]:
        """Raw outputs -> per image ``{"boxes", "scores", "labels"}`` (torchvision's SSD postprocess, module
        docstring)."""
        if not 0.0 <= nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh!r}")
        _check_int("detect", "max_detections", max_detections, 0)
        h, w = _hw(image_size)
        anchors = self.anchors((h, w)).to(outputs["bbox_regression"].device)
        scores_all = F.softmax(outputs["cls_logits"].float(), dim=-1)
        boxes_all = self.coder.decode(outputs["bbox_regression"].float(), anchors)
        results = []
        for boxes, scores in zip(boxes_all, scores_all):
            boxes = boxes.clone()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            cand_boxes, cand_scores, cand_labels = [], [], []
            for label in range(1, scores.shape[1]):
                s = scores[:, label]
                keep = torch.nonzero(s > score_thresh).flatten()
                s = s[keep]
                top = s.topk(min(TOPK_CANDIDATES, len(s))).indices
                cand_boxes.append(boxes[keep[top]])
                cand_scores.append(s[top])
                cand_labels.append(torch.full((len(top),), label, dtype=torch.int64, device=s.device))
            b, s, lab = torch.cat(cand_boxes), torch.cat(cand_scores), torch.cat(cand_labels)
            keep = batched_nms(b.cpu(), s.cpu(), lab.cpu(), nms_thresh)[:max_detections].to(b.device)
            results.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep]})
        return results

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_thresh: float = 0.01, nms_thresh: float = 0.45,
               max_detections: int = 200) -> list[dict[str, torch.Tensor]]:
        """Detections on ``images`` (N, C, H, W) in eval mode: per image ``{"boxes" (K, 4) xyxy pixels inside the
        image, "scores", "labels" (1 .. num_classes - 1)}``, at most ``max_detections``, best first."""
        was_training = self.training
        self.eval()
        try:
            outputs = self(images)
        finally:
            self.train(was_training)
        return self.postprocess(outputs, tuple(images.shape[-2:]), score_thresh, nms_thresh, max_detections)

    @staticmethod
    def options_from_state_dict(sd: dict) -> dict:
        """The options a state dict in this layout needs (a torchvision checkpoint has none of cnnzoo's metadata):
        ``num_classes`` and ``in_channels`` from the first predictor and convolution, ``levels`` from the number of
        predictors (below the SSD300 pyramid's 6), ``highres`` for 7."""
        out = {}
        cls0, reg0 = "head.classification_head.module_list.0.weight", "head.regression_head.module_list.0.weight"
        if cls0 in sd and reg0 in sd:
            boxes = sd[reg0].shape[0] // 4
            if boxes and sd[cls0].shape[0] % boxes == 0:
                out["num_classes"] = sd[cls0].shape[0] // boxes
        if "backbone.features.0.weight" in sd:
            out["in_channels"] = sd["backbone.features.0.weight"].shape[1]
        n = sum(1 for k in sd if k.startswith("head.classification_head.module_list.") and k.endswith(".weight"))
        if n == len(SSD512["feature_sizes"]):
            out["highres"] = True
        elif 3 <= n < len(SSD300["feature_sizes"]):
            out["levels"] = n
        return out


def load_vgg16(ssd: SSD, vgg: nn.Module) -> None:
    """Copy a zoo / torchvision ``vgg16`` into SSD's backbone (module docstring, ``backbone_weights``): conv1_1 ..
    conv4_3 (``features.0`` .. ``features.21``), conv5_1 .. conv5_3 (``features.24/26/28`` -> ``extra.0.1/3/5``), fc6
    and fc7 subsampled into the dilated fc6 and fc7."""
    src = vgg.state_dict()
    bb = ssd.backbone
    mine = bb.state_dict()
    new = {}
    for key in mine:
        if key.startswith("features."):
            new[key] = src[key]
    for theirs, ours in ((24, 1), (26, 3), (28, 5)):
        for p in ("weight", "bias"):
            new[f"extra.0.{ours}.{p}"] = src[f"features.{theirs}.{p}"]
    fc6_w, fc6_b = src["classifier.0.weight"], src["classifier.0.bias"]
    c5 = fc6_w.shape[1] // 49
    new["extra.0.7.1.weight"] = fc6_w.view(-1, c5, 7, 7)[::4, :, ::3, ::3].clone()
    new["extra.0.7.1.bias"] = fc6_b[::4].clone()
    fc7_w, fc7_b = src["classifier.3.weight"], src["classifier.3.bias"]
    new["extra.0.7.3.weight"] = fc7_w[::4, ::4].reshape(fc7_w.shape[0] // 4, -1, 1, 1).clone()
    new["extra.0.7.3.bias"] = fc7_b[::4].clone()
    for key, value in new.items():
        if tuple(value.shape) != tuple(mine[key].shape):
            raise ValueError(f"backbone_weights: vgg16's {key} has shape {tuple(value.shape)}, SSD's backbone "
                             f"{tuple(mine[key].shape)}")
    bb.load_state_dict(new, strict=False)


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


_DEVIATIONS = (
    ("layout, default-box scales and steps as torchvision's ssd300_vgg16 (COCO: s_min 0.15, conv4_3 0.07; the paper's "
     "VOC SSD300 uses s_min=0.2)"),
    ("no ImageNet pretraining unless backbone_weights is given (fc6/fc7 subsampled from vgg16 by decimation, our "
     "reading of 'subsample parameters')"),
    ("no data augmentation in the model (the paper's crops, expansion and photometric distortions are the training "
     "loop's); the Caffe input scaling (mean subtraction, x255) is the caller's"),
    "detect keeps at most 400 candidates per class before NMS (torchvision; not in the paper)",
    ("digits recipe: 128x128 grayscale input, width_mult 1/8, levels=4 (maps 16, 8, 4, 2), s_min 0.2 -- the full "
     "pyramid needs at least 268 pixels; `cnnzoo detect train ssd300_vgg16`, seed 0, one thread: mAP@0.5 0.409 "
     "after 20 epochs (11-point 0.417, COCO AP 0.182; 96 CPU s), no augmentation"),
)
_DEVIATIONS_512 = (
    ("SSD512 layout as the paper's Caffe ssd_pascal_512.py (conv10_2/conv11_2 stride 2, conv12_2 4x4): state-dict "
     "shapes equal torchvision's highres extractor, outputs differ (torchvision keeps conv10_2/conv11_2 valid)"),
    *_DEVIATIONS[1:4],
)
DIGITS_RECIPE = {"options": {"width_mult": 0.125, "levels": 4, "s_min": 0.2},
                 "optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 16, "schedule": "none",
                 "input_size": 128}


@register_detector(SSD, paper=SSD_PAPER, input_size=(3, 300, 300), dataset="COCO (torchvision); PASCAL VOC 2007+2012",
                   deviations=_DEVIATIONS, counterparts=(Counterpart("torchvision", "ssd300_vgg16"),),
                   digits_recipe=DIGITS_RECIPE)
def ssd300_vgg16(**kwargs) -> SSD:
    """SSD300 on VGG-16 (Fig. 2): 6 prediction maps, 8,732 default boxes; 35,641,826 parameters at 91 classes."""
    return SSD(**kwargs)


@register_detector(SSD, paper=SSD_PAPER, input_size=(3, 512, 512), dataset="PASCAL VOC 2007+2012",
                   deviations=_DEVIATIONS_512, digits_recipe=DIGITS_RECIPE)
def ssd512_vgg16(**kwargs) -> SSD:
    """SSD512 on VGG-16 (Sec. 3 footnote, conv12_2): 7 prediction maps, 24,564 default boxes."""
    return SSD(**{"highres": True, **kwargs})
