"""YOLOv3. J. Redmon, A. Farhadi, "YOLOv3: An Incremental Improvement", arXiv 2018. https://arxiv.org/abs/1804.02767
-- with the authors' darknet configuration ``cfg/yolov3.cfg`` (github.com/pjreddie/darknet) for the layout the paper
leaves to its Fig./Table 1 and text, and darknet's ``src/yolo_layer.c`` for the loss the paper describes in words.

Key ideas
    Sec. 2.1 "Bounding Box Prediction": as YOLO9000, each prediction is 4 coordinates ``t_x, t_y, t_w, t_h`` relative
    to a grid cell at ``(c_x, c_y)`` and a prior of size ``(p_w, p_h)``: ``b_x = sigma(t_x) + c_x``, ``b_y =
    sigma(t_y) + c_y``, ``b_w = p_w e^{t_w}``, ``b_h = p_h e^{t_h}``; "during training we use sum of squared error
    loss ... our gradient is the ground truth value ... minus our prediction". An objectness score per box by
    logistic regression: "1 if the bounding box prior overlaps a ground truth object by more than any other bounding
    box prior. If the bounding box prior is not the best but does overlap a ground truth object by more than some
    threshold we ignore the prediction ... We use the threshold of .5. Unlike [Faster R-CNN] our system only assigns
    one bounding box prior for each ground truth object. If a bounding box prior is not assigned to a ground truth
    object it incurs no loss for coordinate or class predictions, only objectness."
    Sec. 2.2 "Class Prediction": "independent logistic classifiers" instead of a softmax ("a softmax imposes the
    assumption that each box has exactly one class which is often not the case"; overlapping labels such as Woman
    and Person), trained with binary cross-entropy.
    Sec. 2.3 "Predictions Across Scales": boxes at 3 scales, "a similar concept to feature pyramid networks": from the
    base feature extractor several conv layers end in a 3-d tensor ``N x N x [3 * (4 + 1 + 80)]`` (COCO); then the
    feature map from 2 layers earlier is upsampled 2x and concatenated with an earlier, finer map, a few conv layers
    process it, and the next scale is predicted; once more for the third scale. The 9 priors are k-means clusters
    (YOLO9000's dimension clusters) on COCO, 3 per scale: (10x13), (16x30), (33x23), (30x61), (62x45), (59x119),
    (116x90), (156x198), (373x326).
    Sec. 2.4 "Feature Extractor": Darknet-53 (Table 1), "successive 3x3 and 1x1 convolutional layers but now has some
    shortcut connections as well": 53 convolutional layers, as accurate as ResNet-101/152 on ImageNet (Table 2) but
    faster.

Which table the code reproduces
    Darknet-53, Table 1 (and the first 75 layers of ``cfg/yolov3.cfg``): every convolution is conv (no bias) + BN +
    leaky ReLU 0.1 with ``pad=1`` (padding k // 2). A 3x3 32 conv, then five stages, each a 3x3 stride-2 conv
    (64, 128, 256, 512, 1024; the downsampling, no pooling) followed by 1, 2, 8, 8, 4 residual blocks (1x1 c/2, 3x3 c,
    ``[shortcut] from=-3 activation=linear``: the input added back). 1 + 5 + 2 x (1+2+8+8+4) = 52 convolutions; the
    53rd of Table 1 is the classifier's "Connected" layer (here the first detection convolution takes its place).
    Stage 3 (cfg layer 36, stride 8, 256 channels), stage 4 (layer 61, stride 16, 512) and stage 5 (layer 74, stride
    32, 1024) feed the detection head.
    The detection head of ``cfg/yolov3.cfg`` (layers 75-106), three "scales" in darknet's order:
        stride 32: 1x1 512, 3x3 1024, 1x1 512, 3x3 1024, 1x1 512 (layer 79), 3x3 1024, 1x1 3*(5+C) linear with
            bias (layer 81) -> [yolo] mask 6,7,8 (priors 116x90, 156x198, 373x326);
        stride 16: ``[route] layers=-4`` (back to layer 79), 1x1 256, ``[upsample] stride=2``, ``[route] layers=-1,
            61`` (concatenate with stage 4: 256 + 512 = 768 channels), 1x1 256, 3x3 512, 1x1 256, 3x3 512, 1x1 256
            (layer 91), 3x3 512, 1x1 3*(5+C) -> [yolo] mask 3,4,5 (30x61, 62x45, 59x119);
        stride 8: ``[route] layers=-4`` (layer 91), 1x1 128, upsample 2x, ``[route] layers=-1, 36`` (128 + 256 = 384),
            1x1 128, 3x3 256, 1x1 128, 3x3 256, 1x1 128, 3x3 256, 1x1 3*(5+C) -> [yolo] mask 0,1,2 (10x13, 16x30,
            33x23).
    At 416 x 416 the grids are 13, 26 and 52 (10,647 boxes); at 608, 19, 38, 76. Parameters at C = 80 (derivation
    in tests/test_detection_yolo_v3.py): Darknet-53 without its classifier 40,584,928, the head 21,364,221:
    61,949,149 (BN's scale and shift counted; running statistics are buffers).

Training setup in the paper
    Sec. 2.5: "We still train on full images with no hard negative mining or any of that stuff. We use multi-scale
    training, lots of data augmentation, batch normalization, all the standard stuff." Darknet-53 pretrained on
    ImageNet (256 x 256 for Table 2). ``cfg/yolov3.cfg``: batch 64, momentum 0.9, decay 5e-4, lr 1e-3 with a 1000-
    iteration burn-in, x0.1 at 400k and 450k of 500,200 iterations, saturation / exposure 1.5, hue 0.1, jitter 0.3,
    ``random=1`` (multi-scale: the input resized every 10 batches among multiples of 32), ``ignore_thresh = .7``
    (the paper's text says .5). COCO: 57.9 AP50 at 608 (Table 3).

This implementation
    Output layout: ``forward`` returns a list of three tensors, darknet's order (strides 32, 16, 8), each
    ``(N, S_h, S_w, A, 5 + C)``: ``out[l][n, i, j, a]`` is prior ``a`` of scale ``l`` in row ``i`` (y) and column
    ``j`` (x) with ``[t_x, t_y, t_w, t_h, t_o, class logits ...]``, all raw (before any sigmoid); the last
    convolution's channels are darknet's (anchor-major, ``a * (5 + C) + entry``), so a converted darknet checkpoint
    keeps its order. Priors are ``(w, h)`` in input pixels (darknet's ``anchors=``, the same pixels at every input
    size), the 9 sorted by area and split 3 per scale, smallest on stride 8 (darknet ``mask``). Decoding
    (`decode_outputs`, darknet ``get_yolo_box``): centre ``((j + sigma(t_x)) stride_x, (i + sigma(t_y)) stride_y)``,
    size ``(p_w e^{t_w}, p_h e^{t_h})`` with ``t_w, t_h`` clamped at ``log(1000 / 16)`` (torchvision's clamp; darknet
    has none), score of class c = ``sigma(t_o) sigma(class_c)`` (darknet ``get_yolo_detections``).
    `yolo_v3_loss`, summed over scales, cells and priors, averaged over the images (darknet sums and divides the
    learning rate by the batch):
      - assignment (Sec. 2.1, darknet ``forward_yolo_layer``): each ground truth takes the ONE prior of the 9 whose
        shape has the highest IoU with its box (centres aligned; ties to the first), in the cell of that prior's
        scale holding the box's centre; the target of ``t_o`` there is 1. Two objects on the same cell and prior:
        the later one's box and class targets win (darknet overwrites its deltas);
      - ignored (Sec. 2.1, threshold .5, ``ignore_thresh``): a prediction that is not assigned but overlaps some
        ground truth by more than the threshold has no objectness loss. ``ignore_by="prior"`` (default, the
        paper's words: the prior, centred on its cell, overlaps the object) or ``"prediction"`` (darknet: the
        decoded predicted box, evaluated without gradient). Every other prediction is a negative (``t_o`` -> 0);
      - objectness and classes: binary cross-entropy on the logits, per class independently (Sec. 2.2; no softmax):
        the class targets are 1 for the object's class and 0 for the C - 1 others, on assigned priors only;
      - coordinates, weighted by ``2 - w h`` (w, h as fractions of the image: darknet's ``scale``, more weight on
        small boxes): ``t_w, t_h`` by 0.5 x squared error to ``log(g_w / p_w)``, ``log(g_h / p_h)`` (the loss whose
        gradient is the paper's "ground truth value minus our prediction", darknet's delta); ``t_x, t_y`` by binary
        cross-entropy of ``sigma(t)`` with the centre's offset in its cell (``xy_loss="bce"``, default: darknet
        applies its delta ``offset - sigma(t)`` to the logit without the sigmoid's derivative, which is BCE's
        gradient) or 0.5 x squared error of ``sigma(t)`` (``xy_loss="mse"``, the paper's "sum of squared error").
        The BCE parts do not reach 0 at a fractional target (its entropy); the gradient does.
    Returns ``{"loss", "loss_xy", "loss_wh", "loss_obj" (assigned priors), "loss_noobj" (negatives),
    "loss_class"}``. Boxes of zero width or height are skipped; a centre on the far edge belongs to the last cell.
    `YOLOv3.detect`: scores above ``score_thresh`` (0.5: darknet ``detector test``'s ``-thresh``; the mAP evaluation
    uses darknet ``validate_detector``'s 0.005, `cnnzoo.detection.train.EVAL_DETECT`), at most 1000 candidates
    by score per image (a cap darknet does not have; it bounds the NMS's cost), NMS per class at ``nms_thresh``
    (0.45, darknet), boxes clipped to the image, ``max_detections`` per image; labels 1..C (no background column).
    Initialisation (the paper does not state one; darknet draws uniform +-sqrt(2 / fan_in), BN scale 1): Kaiming-
    normal (fan_in, leaky 0.1) convolutions, BN weight 1 bias 0, the three output convolutions N(0, 0.01) with zero
    bias (darknet's zero bias: every objectness starts at 0.5). BN is PyTorch's (eps 1e-5, momentum 0.1; darknet
    uses 1e-6 and 0.01).
    Options:
        ``num_classes`` (C, 80), ``in_channels`` (3).
        ``input_size`` (416): the nominal square training input (608 also in the paper); any input whose sides are
            multiples of 32 runs (the three upsample + concat steps need exact halvings).
        ``width_mult`` (1.0): scales every convolution's width (backbone and head; rounded, at least 1).
        ``depth`` ((1, 2, 8, 8, 4)): residual blocks per Darknet-53 stage (>= 0 each).
        ``anchors``: 3k priors ``[[w, h], ...]`` in input pixels, in the order of the paper (ascending area: the
            first k on stride 8, the next k on 16, the last k on 32); default the 9 COCO priors.
        ``ignore_thresh`` (0.5), ``ignore_by`` ("prior"), ``xy_loss`` ("bce").
        ``prior_probability`` (None: darknet's zero bias, sigma(t_o) = 0.5 everywhere at the start): every
            objectness bias starts at -log((1 - pi) / pi), RetinaNet's initialisation (Lin et al. 2017, Sec. 3.3),
            not the paper's; the digits recipe uses 0.01 (with 0.5 at the start the ~1,000 negatives per image
            dominate the first epochs: test mAP 0.030 against 0.066 after 30 epochs on 300 canvases).
        ``backbone`` ("darknet53": the network above, built here) or any zoo network with maps at reductions 8, 16
            and 32 through the features API (the last map at each; e.g. ``"resnet18"``), ``backbone_options`` (its
            extra ``create_model`` options), ``backbone_weights``. ``depth`` applies to Darknet-53 only.
    Darknet-53 is built in this module (`Darknet53`) and not registered in the classification zoo (its stored
    counts, layout and published-row checks would be a separate piece of work).
    digits-detection recipe (`DIGITS_RECIPE`): 128 x 128 grayscale canvases (grids 4, 8, 16), 2,000 training
    canvases (``data_params``), width 1/8, one residual block per stage (547,339 parameters at 10 classes), the
    objectness prior 0.01, 9 priors from `cnnzoo.detection.anchors.kmeans_anchors` (k = 9, seed 0, 1 - IoU
    distance) on the (w, h) of the 5,956 boxes of those 2,000 canvases at 128 pixels (`DIGITS_ANCHORS`; mean IoU
    0.843), Adam 1e-3, batch 16, 20 epochs; no ImageNet pretraining, no multi-scale training; YOLO v1's
    random scaling and translation by up to 0.2 (``jitter: 0.2``, in the recipe; ``--jitter 0`` turns it off).
    Why: on the 300 default canvases without augmentation the network memorises them (after 30 epochs train mAP 0.99, test 0.066); with
    ``--jitter 0.2`` on those 300, test mAP 0.175 after 30 epochs (train 0.215: underfitting, 76 CPU s).
    Measured (seed 0, one thread, ``cnnzoo detect train yolo_v3 --threads 1 --seed 0 --jitter 0.2 --eval-every 5``
    with this module imported; evaluation at darknet's score 0.005 and NMS 0.45 on the 150 test canvases): test
    mAP@0.5 0.215 / 0.428 / 0.664 / 0.743 after 5 / 10 / 15 / 20 epochs (11-point 0.726, COCO AP@[.5:.95] 0.391),
    train loss 13.6 at the end; 303 CPU s (7 min wall on a shared 2-core machine). One seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...models.base import check_image_batch
from ...registry import Paper
from ..anchors import wh_iou
from ..bbox import box_iou
from ..coder import BBOX_XFORM_CLIP
from ..nms import batched_nms
from ..registry import register_detector

__all__ = ["COCO_ANCHORS", "DARKNET53_DEPTH", "DIGITS_ANCHORS", "DIGITS_RECIPE", "IGNORE_THRESH", "YOLOV3",
           "Darknet53", "YOLOv3", "YOLOv3Head", "decode_outputs", "yolo_v3", "yolo_v3_loss"]

YOLOV3 = Paper("YOLOv3: An Incremental Improvement", "J. Redmon, A. Farhadi", 2018, "https://arxiv.org/abs/1804.02767")

LEAKY = 0.1
#: Sec. 2.3: the 9 COCO priors (w, h) in input pixels, ascending area
COCO_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
#: Table 1: residual blocks per stage (1, 2, 8, 8, 4); stage widths 64 .. 1024
DARKNET53_DEPTH = (1, 2, 8, 8, 4)
DARKNET53_WIDTHS = (64, 128, 256, 512, 1024)
STRIDES = (32, 16, 8)  # the outputs' order (darknet's [yolo] layers 82, 94, 106)
IGNORE_THRESH = 0.5  # Sec. 2.1 ("We use the threshold of .5"; cfg/yolov3.cfg: ignore_thresh = .7)
PRE_NMS_TOP_N = 1000
XY_LOSSES = ("bce", "mse")
IGNORE_BY = ("prior", "prediction")

#: kmeans_anchors(wh of the 5,956 boxes of 2,000 digits-detection training canvases at 128 px, k=9, seed=0), rounded
DIGITS_ANCHORS = ((6.4, 23.9), (12.2, 19.3), (17.5, 18.9), (14.7, 29.1), (20.5, 24.6), (21.7, 32.9), (28.4, 26.5),
                  (27.6, 36.1), (35.4, 35.9))
DIGITS_RECIPE = {"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 16, "schedule": "none",
                 "input_size": 128, "data_params": {"num_train": 2000}, "jitter": 0.2,
                 "options": {"input_size": 128, "width_mult": 0.125, "depth": [1, 1, 1, 1, 1],
                             "anchors": [list(a) for a in DIGITS_ANCHORS], "prior_probability": 0.01}}


def _check_int(name: str, key: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} option {key} must be an integer >= {low}, got {value!r}")


def _is_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


class ConvBNLeaky(nn.Sequential):
    """darknet's ``[convolutional] batch_normalize=1 activation=leaky pad=1``: conv (no bias), BN, leaky ReLU 0.1."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.LeakyReLU(LEAKY, inplace=True)


class Residual(nn.Module):
    """Darknet-53's residual block (Table 1): 1x1 c/2, 3x3 c, the input added (``[shortcut] activation=linear``)."""

    def __init__(self, chs: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvBNLeaky(chs, hidden, 1)
        self.conv2 = ConvBNLeaky(hidden, chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class Darknet53(nn.Module):
    """Darknet-53 without its classifier (Table 1): stem 3x3 32, five stages of a 3x3/2 conv and residual blocks.
    ``forward`` returns ``[C3, C4, C5]`` (strides 8, 16, 32; 256, 512, 1024 channels at width 1)."""

    def __init__(self, in_channels: int = 3, width_mult: float = 1.0, depth: Sequence[int] = DARKNET53_DEPTH) -> None:
        super().__init__()

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.stem = ConvBNLeaky(in_channels, width(32), 3)
        chs = width(32)
        self.feature_info = []
        for k, (out, n) in enumerate(zip(DARKNET53_WIDTHS, depth), start=1):
            out = width(out)
            stage = nn.Sequential(ConvBNLeaky(chs, out, 3, 2), *[Residual(out, width(DARKNET53_WIDTHS[k - 1] // 2))
                                                                   for _ in range(n)])
            self.add_module(f"stage{k}", stage)
            self.feature_info.append({"num_chs": out, "reduction": 2 ** k, "module": f"stage{k}"})
            chs = out

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info[2:]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage2(self.stage1(self.stem(x)))
        c3 = self.stage3(x)
        c4 = self.stage4(c3)
        return [c3, c4, self.stage5(c4)]


def _five(in_chs: int, mid: int, wide: int) -> nn.Sequential:
    """cfg/yolov3.cfg's 1x1 mid, 3x3 wide, 1x1 mid, 3x3 wide, 1x1 mid before each prediction."""
    return nn.Sequential(ConvBNLeaky(in_chs, mid, 1), ConvBNLeaky(mid, wide, 3), ConvBNLeaky(wide, mid, 1),
                         ConvBNLeaky(mid, wide, 3), ConvBNLeaky(wide, mid, 1))


class YOLOv3Head(nn.Module):
    """cfg/yolov3.cfg layers 75-106 (module docstring): three predictions, upsample + concat between them."""

    def __init__(self, channels: Sequence[int], outputs_per_cell: int, width_mult: float = 1.0) -> None:
        super().__init__()

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        c3, c4, c5 = channels
        self.block5 = _five(c5, width(512), width(1024))
        self.pred5 = nn.Sequential(ConvBNLeaky(width(512), width(1024), 3), nn.Conv2d(width(1024), outputs_per_cell, 1))
        self.lateral4 = ConvBNLeaky(width(512), width(256), 1)
        self.block4 = _five(width(256) + c4, width(256), width(512))
        self.pred4 = nn.Sequential(ConvBNLeaky(width(256), width(512), 3), nn.Conv2d(width(512), outputs_per_cell, 1))
        self.lateral3 = ConvBNLeaky(width(256), width(128), 1)
        self.block3 = _five(width(128) + c3, width(128), width(256))
        self.pred3 = nn.Sequential(ConvBNLeaky(width(128), width(256), 3), nn.Conv2d(width(256), outputs_per_cell, 1))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = feats
        x5 = self.block5(c5)  # cfg layer 79
        up = F.interpolate(self.lateral4(x5), scale_factor=2, mode="nearest")  # [upsample] stride=2
        x4 = self.block4(torch.cat([up, c4], 1))  # [route] layers=-1, 61; layer 91
        up = F.interpolate(self.lateral3(x4), scale_factor=2, mode="nearest")
        x3 = self.block3(torch.cat([up, c3], 1))  # [route] layers=-1, 36
        return [self.pred5(x5), self.pred4(x4), self.pred3(x3)]


def _check_anchors(name: str, anchors) -> tuple[tuple[float, float], ...]:
    try:
        pairs = tuple((float(w), float(h)) for w, h in anchors)
    except (TypeError, ValueError):
        pairs = ()
    if (not pairs or len(pairs) % 3 or any(not (math.isfinite(v) and v > 0) for p in pairs for v in p)
            or not all(_is_number(v) for p in anchors for v in p)):
        raise ValueError(f"{name} option anchors must be 3k positive (w, h) pairs in input pixels, k per scale "
                         f"(the paper's 9: {[list(a) for a in COCO_ANCHORS]}), got {anchors!r}")
    return pairs


class YOLOv3(nn.Module):
    """YOLOv3 (Sec. 2): Darknet-53 and the three-scale head of cfg/yolov3.cfg. See the module docstring."""

    def __init__(self, *, num_classes: int = 80, in_channels: int = 3, input_size: int = 416, width_mult: float = 1.0,
                 depth: list[int] | None = None, anchors: list[list[float]] | None = None,
                 ignore_thresh: float = IGNORE_THRESH, ignore_by: Literal["prior", "prediction"] = "prior",
                 xy_loss: Literal["bce", "mse"] = "bce", prior_probability: float | None = None,
                 backbone: str = "darknet53", backbone_options: dict | None = None,
                 backbone_weights: str | None = None) -> None:
        super().__init__()
        name = "YOLOv3"
        _check_int(name, "num_classes", num_classes)
        _check_int(name, "in_channels", in_channels)
        _check_int(name, "input_size", input_size, 32)
        if input_size % 32:
            raise ValueError(f"{name} option input_size must be a multiple of 32 (416, 608, 128, ...), got {input_size}")
        if not _is_number(width_mult) or not width_mult > 0:
            raise ValueError(f"{name} option width_mult must be a number > 0, got {width_mult!r}")
        if not _is_number(ignore_thresh) or not 0.0 <= ignore_thresh <= 1.0:
            raise ValueError(f"{name} option ignore_thresh must be in [0, 1], got {ignore_thresh!r}")
        if prior_probability is not None and (not _is_number(prior_probability)
                                              or not 0.0 < prior_probability < 1.0):
            raise ValueError(f"{name} option prior_probability must be in (0, 1) or None (darknet's zero bias), got "
                             f"{prior_probability!r}")
        if ignore_by not in IGNORE_BY:
            raise ValueError(f"{name} option ignore_by must be one of {', '.join(IGNORE_BY)}, got {ignore_by!r}")
        if xy_loss not in XY_LOSSES:
            raise ValueError(f"{name} option xy_loss must be one of {', '.join(XY_LOSSES)}, got {xy_loss!r}")
        pairs = _check_anchors(name, COCO_ANCHORS if anchors is None else anchors)
        if not isinstance(backbone, str) or not backbone:
            raise ValueError(f"{name} option backbone must be 'darknet53' or a zoo network's name, got {backbone!r}")
        if backbone == "darknet53":
            depth = DARKNET53_DEPTH if depth is None else depth
            if (isinstance(depth, (str, bytes)) or not hasattr(depth, "__len__") or len(depth) != 5
                    or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depth)):
                raise ValueError(f"{name} option depth must be 5 integers >= 0 (residual blocks per Darknet-53 "
                                 f"stage; the paper's {list(DARKNET53_DEPTH)}), got {depth!r}")
            if backbone_options or backbone_weights:
                raise ValueError(f"{name}: backbone_options / backbone_weights apply to a zoo backbone, not the "
                                 f"built-in darknet53 (use width_mult and depth)")
            body = Darknet53(in_channels, width_mult, depth)
            chans = body.channels()
            self.depth = tuple(int(d) for d in depth)
        else:
            if depth is not None:
                raise ValueError(f"{name} option depth applies to backbone='darknet53' only; give the zoo backbone's "
                                 f"own depth through backbone_options")
            body, chans = _zoo_backbone(name, backbone, in_channels, backbone_options, backbone_weights)
            self.depth = None
        self.backbone = body
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.width_mult = float(width_mult)
        self.num_anchors = len(pairs) // 3  # per scale
        self.anchor_sizes = pairs  # all 3k, ascending scale order (stride 8 first), as given
        # the priors of each output (strides 32, 16, 8): darknet's masks 6,7,8 / 3,4,5 / 0,1,2 for k = 3
        k = self.num_anchors
        self.masks = tuple(tuple(range(s * k, (s + 1) * k)) for s in (2, 1, 0))
        self.ignore_thresh, self.ignore_by, self.xy_loss = float(ignore_thresh), ignore_by, xy_loss
        self.head = YOLOv3Head(chans, self.num_anchors * (5 + num_classes), width_mult)
        self.min_input_size = 32
        self._init_weights(prior_probability)

    def _init_weights(self, prior_probability: float | None = None) -> None:
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=LEAKY, mode="fan_in", nonlinearity="leaky_relu")
        modules = self.backbone.modules() if isinstance(self.backbone, Darknet53) else ()
        for m in modules:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=LEAKY, mode="fan_in", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for pred in (self.head.pred5, self.head.pred4, self.head.pred3):
            nn.init.normal_(pred[-1].weight, std=0.01)
            nn.init.zeros_(pred[-1].bias)
            if prior_probability is not None:  # RetinaNet's prior (Lin et al. 2017, Sec. 3.3) on every t_o
                with torch.no_grad():
                    pred[-1].bias.view(self.num_anchors, -1)[:, 4] = -math.log((1 - prior_probability) /
                                                                                prior_probability)

    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """``num_classes`` and ``in_channels`` (and ``depth`` of a built-in Darknet-53) a state dict implies, for
        ``create_detector("yolo_v3", weights=FILE)``; the priors per scale are taken as 3."""
        out: dict[str, object] = {}
        w = sd.get("head.pred5.1.weight")
        if w is not None and w.shape[0] % 3 == 0 and w.shape[0] // 3 > 5:
            out["num_classes"] = int(w.shape[0] // 3 - 5)
        stem = sd.get("backbone.stem.conv.weight")
        if stem is not None and "backbone.stage1.0.conv.weight" in sd:  # the built-in Darknet-53
            out["in_channels"] = int(stem.shape[1])
            out["depth"] = [len({key.split(".")[2] for key in sd if key.startswith(f"backbone.stage{k}.")
                                 and key.split(".")[2] != "0"}) for k in range(1, 6)]
        return out

    # --------------------------------------------------------------------------------------------- forward
    def check_input(self, x: torch.Tensor) -> None:
        """ValueError naming what the network expects when ``x`` does not fit it."""
        check_image_batch("YOLOv3", x, self.in_channels, self.min_input_size)
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"YOLOv3 needs inputs whose sides are multiples of 32 (its three scales halve exactly), "
                             f"got {h}x{w}; resize to {max(32, round(h / 32) * 32)}x{max(32, round(w / 32) * 32)}")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(N, C, H, W)`` -> ``[(N, H/32, W/32, A, 5 + C), (N, H/16, ...), (N, H/8, ...)]`` raw outputs."""
        self.check_input(images)
        outs = self.head(self.backbone(images))
        n, a, d = len(images), self.num_anchors, 5 + self.num_classes
        return [o.view(n, a, d, o.shape[-2], o.shape[-1]).permute(0, 3, 4, 1, 2) for o in outs]

    # --------------------------------------------------------------------------------------------- priors
    def scale_anchors(self) -> list[torch.Tensor]:
        """Per output (strides 32, 16, 8) its ``(A, 2)`` priors (w, h) in input pixels."""
        all_ = torch.tensor(self.anchor_sizes, dtype=torch.float64)
        return [all_[list(m)] for m in self.masks]

    def anchors(self, image_size=None) -> torch.Tensor:
        """The priors placed on every cell (centred on it), ``(A_total, 4)`` xyxy pixels in the order of
        `decode_outputs` (scale, row, column, prior); ``image_size`` defaults to ``input_size``."""
        height, width = _hw(self.input_size if image_size is None else image_size)
        grids = [(height // s, width // s) for s in STRIDES]
        return _placed_priors(grids, self.scale_anchors(), (height, width)).reshape(-1, 4).float()

    def loss(self, outputs: list[torch.Tensor], targets: list[dict], image_size) -> dict[str, torch.Tensor]:
        """`yolo_v3_loss` with this network's priors and settings."""
        return yolo_v3_loss(outputs, targets, image_size, self.scale_anchors(), ignore_thresh=self.ignore_thresh,
                            ignore_by=self.ignore_by, xy_loss=self.xy_loss)

    def postprocess(self, outputs: list[torch.Tensor], image_size, score_thresh: float = 0.5,
                    nms_thresh: float = 0.45, max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Raw outputs -> per image ``{"boxes", "scores", "labels"}`` (module docstring)."""
        if not _is_number(nms_thresh) or not 0.0 <= nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh!r}")
        _check_int("detect", "max_detections", max_detections, 0)
        height, width = _hw(image_size)
        boxes, obj, cls = decode_outputs(outputs, (height, width), self.scale_anchors())
        scores_all = obj[..., None] * cls  # (N, A_total, C)
        results = []
        for b, s in zip(boxes, scores_all):
            b = b.float()
            b[:, 0::2] = b[:, 0::2].clamp(0, width)
            b[:, 1::2] = b[:, 1::2].clamp(0, height)
            idx, c = torch.nonzero(s > score_thresh, as_tuple=True)
            cand = s[idx, c].float()
            if len(cand) > PRE_NMS_TOP_N:
                top = cand.topk(PRE_NMS_TOP_N).indices
                idx, c, cand = idx[top], c[top], cand[top]
            keep = batched_nms(b[idx], cand, c, nms_thresh)[:max_detections]
            results.append({"boxes": b[idx][keep], "scores": cand[keep], "labels": c[keep] + 1})
        return results

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_thresh: float = 0.5, nms_thresh: float = 0.45,
               max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Detections on ``images`` (N, C, H, W) in eval mode: per image ``{"boxes" (K, 4) xyxy pixels, "scores",
        "labels" (1..C)}``."""
        was_training = self.training
        self.eval()
        try:
            outputs = self(images)
        finally:
            self.train(was_training)
        return self.postprocess([o.cpu() for o in outputs], tuple(images.shape[-2:]), score_thresh, nms_thresh,
                                max_detections)


def _zoo_backbone(name: str, backbone: str, in_channels: int, options: dict | None, weights: str | None):
    from ...models.features import features_only_model
    from ...registry import UnknownModelError, create_model
    from ...segmentation.models.pspnet import _backbone_options

    extra = _backbone_options(name, backbone, options)
    try:
        net = create_model(backbone, in_channels=in_channels, **extra, **({"weights": weights} if weights else {}))
    except UnknownModelError as exc:
        raise UnknownModelError(f"{name} option backbone: {exc.args[0]}") from exc
    if getattr(net, "no_feature_maps", None) or not getattr(net, "feature_info", None):
        raise ValueError(f"{name}: backbone {backbone!r} has no feature maps (features API)")
    last: dict[int, int] = {}
    for i, f in enumerate(net.feature_info):
        last[f["reduction"]] = i
    missing = [r for r in (8, 16, 32) if r not in last]
    if missing:
        raise ValueError(f"{name}: backbone {backbone!r} gives feature maps at reductions {sorted(last)}, but YOLOv3 "
                         f"needs maps at 8, 16 and 32 (missing {missing}); take darknet53, resnet18, mobilenet_v2, ...")
    body = features_only_model(net, [last[r] for r in (8, 16, 32)])
    return body, list(body.feature_info.channels())


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def _grid(sh: int, sw: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(sh, dtype=torch.float64, device=device).view(sh, 1, 1).expand(sh, sw, 1)
    cols = torch.arange(sw, dtype=torch.float64, device=device).view(1, sw, 1).expand(sh, sw, 1)
    return rows, cols  # (Sh, Sw, 1): broadcast over the priors


def _placed_priors(grids, scale_anchors, image_size) -> torch.Tensor:
    """``(sum Sh*Sw*A, 4)`` xyxy float64: each scale's priors centred on each of its cells (scale, row, col, prior)."""
    height, width = image_size
    out = []
    for (sh, sw), anc in zip(grids, scale_anchors):
        rows, cols = _grid(sh, sw)
        cx, cy = (cols + 0.5) * (width / sw), (rows + 0.5) * (height / sh)
        pw, ph = anc[:, 0].view(1, 1, -1), anc[:, 1].view(1, 1, -1)
        out.append(torch.stack(torch.broadcast_tensors(cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2), -1)
                   .reshape(-1, 4))
    return torch.cat(out)


def _decode_scale(out: torch.Tensor, anc: torch.Tensor, image_size) -> torch.Tensor:
    """``(N, Sh, Sw, A, 4)`` xyxy pixels of one scale's raw outputs (Sec. 2.1's b_x, b_y, b_w, b_h)."""
    height, width = image_size
    sh, sw = out.shape[1], out.shape[2]
    p = out[..., :4].to(torch.float64)
    rows, cols = _grid(sh, sw, out.device)
    anc = anc.to(out.device)
    cx = (cols + torch.sigmoid(p[..., 0])) * (width / sw)
    cy = (rows + torch.sigmoid(p[..., 1])) * (height / sh)
    w = anc[:, 0] * torch.exp(p[..., 2].clamp(max=BBOX_XFORM_CLIP))
    h = anc[:, 1] * torch.exp(p[..., 3].clamp(max=BBOX_XFORM_CLIP))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def decode_outputs(outputs: list[torch.Tensor], image_size, scale_anchors: list[torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every prediction's box in input pixels, objectness and class probabilities (Sec. 2.1, 2.2).

    Args:
        outputs: ``forward``'s list, each ``(N, Sh, Sw, A, 5 + C)``.
        image_size: ``(H, W)`` of the input (or one int).
        scale_anchors: per output its ``(A, 2)`` priors (w, h) in input pixels.

    Returns:
        ``boxes (N, T, 4)`` xyxy pixels (not clipped), ``objectness (N, T)`` = sigma(t_o), ``classes (N, T, C)`` =
        sigma(class logits) independently; T = sum of Sh * Sw * A, ordered scale, row, column, prior.
    """
    hw = _hw(image_size)
    n = outputs[0].shape[0]
    boxes, obj, cls = [], [], []
    for out, anc in zip(outputs, scale_anchors):
        boxes.append(_decode_scale(out, anc, hw).reshape(n, -1, 4))
        obj.append(torch.sigmoid(out[..., 4].to(torch.float64)).reshape(n, -1))
        cls.append(torch.sigmoid(out[..., 5:].to(torch.float64)).reshape(n, -1, out.shape[-1] - 5))
    return torch.cat(boxes, 1), torch.cat(obj, 1), torch.cat(cls, 1)


def _targets_of(targets: list[dict], n: int, num_classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if len(targets) != n:
        raise ValueError(f"{n} outputs but {len(targets)} targets")
    out = []
    for k, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError("each target must be a dict with 'boxes' (M, 4) and 'labels' (M,)")
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float64).detach().cpu().reshape(-1, 4)
        labels = torch.as_tensor(t["labels"]).detach().cpu().reshape(-1).long()
        if len(labels) != len(boxes):
            raise ValueError(f"target {k} has {len(boxes)} boxes but {len(labels)} labels")
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"target {k} has labels outside 1..{num_classes}: {sorted(set(labels.tolist()))}")
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # boxes of zero size are skipped
        out.append((boxes[keep], labels[keep]))
    return out


def assign_priors(targets: list[dict], grids: list[tuple[int, int]], scale_anchors: list[torch.Tensor],
                  image_size, num_classes: int) -> list[dict[str, torch.Tensor]]:
    """Sec. 2.1's assignment, per output: ``{"positive" (N, Sh, Sw, A) bool, "box" (N, Sh, Sw, A, 4) targets of
    (t_x offset in the cell, t_y, log(g_w / p_w), log(g_h / p_h)), "weight" (N, Sh, Sw, A) = 2 - w h, "classes"
    (N, Sh, Sw, A, C) one-hot}``. Each ground truth goes to the single prior (of all scales) whose shape overlaps it
    most (centres aligned, ties to the first), in the cell holding its centre."""
    height, width = _hw(image_size)
    n = len(targets)
    anchors_all = torch.cat(scale_anchors)  # the outputs' priors, in output order
    where = [(level, a) for level, anc in enumerate(scale_anchors) for a in range(len(anc))]
    out = []
    for (sh, sw), anc in zip(grids, scale_anchors):
        a = len(anc)
        out.append({"positive": torch.zeros(n, sh, sw, a, dtype=torch.bool),
                    "box": torch.zeros(n, sh, sw, a, 4, dtype=torch.float64),
                    "weight": torch.zeros(n, sh, sw, a, dtype=torch.float64),
                    "classes": torch.zeros(n, sh, sw, a, num_classes, dtype=torch.float64)})
    # ties to the first prior in ascending-scale order (darknet's "iou > best_iou" over anchors 0..8)
    order = sorted(range(len(where)), key=lambda i: (-where[i][0], where[i][1]))
    for k, (boxes, labels) in enumerate(targets):
        if not len(boxes):
            continue
        gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        iou = torch.from_numpy(wh_iou(torch.stack([gw, gh], 1).numpy(), anchors_all[order].numpy()))
        best = [order[i] for i in iou.argmax(1).tolist()]  # argmax: the first maximum
        for m, b in enumerate(best):
            level, a = where[b]
            sh, sw = grids[level]
            cx, cy = float(boxes[m, 0] + boxes[m, 2]) / 2, float(boxes[m, 1] + boxes[m, 3]) / 2
            gx, gy = cx / width * sw, cy / height * sh  # in cells
            j, i = min(max(math.floor(gx), 0), sw - 1), min(max(math.floor(gy), 0), sh - 1)
            t = out[level]
            pw, ph = float(scale_anchors[level][a, 0]), float(scale_anchors[level][a, 1])
            t["positive"][k, i, j, a] = True
            t["box"][k, i, j, a] = torch.tensor([gx - j, gy - i, math.log(float(gw[m]) / pw),
                                                 math.log(float(gh[m]) / ph)], dtype=torch.float64)
            t["weight"][k, i, j, a] = 2.0 - float(gw[m]) / width * float(gh[m]) / height
            t["classes"][k, i, j, a] = 0.0
            t["classes"][k, i, j, a, int(labels[m]) - 1] = 1.0
    return out


def yolo_v3_loss(outputs: list[torch.Tensor], targets: list[dict], image_size, scale_anchors: list[torch.Tensor], *,
                 ignore_thresh: float = IGNORE_THRESH, ignore_by: str = "prior",
                 xy_loss: str = "bce") -> dict[str, torch.Tensor]:
    """YOLOv3's loss (Sec. 2.1-2.2, darknet ``yolo_layer.c``; module docstring for each choice), averaged over the
    images.

    Args:
        outputs: ``forward``'s list of ``(N, Sh, Sw, A, 5 + C)`` raw outputs.
        targets: per image ``{"boxes": (M, 4) xyxy pixels, "labels": (M,) in 1..C}``.
        image_size: ``(H, W)`` of the input (or one int).
        scale_anchors: per output its ``(A, 2)`` priors (w, h) in input pixels.
        ignore_thresh: an unassigned prediction overlapping a ground truth by more than this has no objectness loss.
        ignore_by: "prior" (the prior centred on its cell; the paper) or "prediction" (the decoded box; darknet).
        xy_loss: "bce" (darknet's gradient) or "mse" (0.5 x squared error of sigma(t_x), the paper's words).

    Returns:
        ``{"loss", "loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class"}``, each summed and divided by N.
    """
    if ignore_by not in IGNORE_BY:
        raise ValueError(f"ignore_by must be one of {', '.join(IGNORE_BY)}, got {ignore_by!r}")
    if xy_loss not in XY_LOSSES:
        raise ValueError(f"xy_loss must be one of {', '.join(XY_LOSSES)}, got {xy_loss!r}")
    if len(outputs) != len(scale_anchors) or any(o.ndim != 5 for o in outputs):
        raise ValueError(f"YOLOv3 outputs must be {len(scale_anchors)} tensors (N, Sh, Sw, A, 5 + C)")
    n, depth = outputs[0].shape[0], outputs[0].shape[-1]
    num_classes = depth - 5
    if num_classes < 1:
        raise ValueError(f"outputs of depth {depth} leave no class scores (5 + C per prior)")
    height, width = _hw(image_size)
    gts = _targets_of(targets, n, num_classes)
    grids = [(o.shape[1], o.shape[2]) for o in outputs]
    assigned = assign_priors(gts, grids, [a.to(torch.float64).cpu() for a in scale_anchors], (height, width),
                             num_classes)
    zero = outputs[0].sum() * 0.0
    parts = {key: zero for key in ("loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class")}
    if ignore_by == "prior":
        priors = _placed_priors(grids, [a.to(torch.float64).cpu() for a in scale_anchors], (height, width))
        counts = [sh * sw * len(a) for (sh, sw), a in zip(grids, scale_anchors)]
        priors = list(priors.split(counts))
    for level, (out, t) in enumerate(zip(outputs, assigned)):
        dev, dtype = out.device, out.dtype
        pos = t["positive"].to(dev)
        # ignored: not assigned, best IoU with any ground truth of its image above the threshold
        with torch.no_grad():
            if ignore_by == "prediction":
                cand = _decode_scale(out.detach(), scale_anchors[level].to(torch.float64), (height, width)).cpu()
                cand = cand.reshape(n, -1, 4)
            best = torch.zeros(n, out.shape[1] * out.shape[2] * out.shape[3], dtype=torch.float64)
            for k, (boxes, _) in enumerate(gts):
                if len(boxes):
                    boxes_k = cand[k] if ignore_by == "prediction" else priors[level]
                    best[k] = box_iou(boxes_k, boxes).amax(1)
            ignored = (best > ignore_thresh).view(pos.shape).to(dev) & ~pos
            negative = ~pos & ~ignored
        obj = out[..., 4]
        parts["loss_obj"] = parts["loss_obj"] + F.binary_cross_entropy_with_logits(
            obj[pos], torch.ones_like(obj[pos]), reduction="sum")
        parts["loss_noobj"] = parts["loss_noobj"] + F.binary_cross_entropy_with_logits(
            obj[negative], torch.zeros_like(obj[negative]), reduction="sum")
        if not bool(pos.any()):
            continue
        p = out[pos]  # (P, 5 + C)
        box = t["box"].to(dev, dtype)[pos]
        weight = t["weight"].to(dev, dtype)[pos][:, None]
        if xy_loss == "bce":
            xy = F.binary_cross_entropy_with_logits(p[:, :2], box[:, :2], reduction="none")
        else:
            xy = 0.5 * (torch.sigmoid(p[:, :2]) - box[:, :2]) ** 2
        parts["loss_xy"] = parts["loss_xy"] + (weight * xy).sum()
        parts["loss_wh"] = parts["loss_wh"] + (weight * 0.5 * (p[:, 2:4] - box[:, 2:4]) ** 2).sum()
        parts["loss_class"] = parts["loss_class"] + F.binary_cross_entropy_with_logits(
            p[:, 5:], t["classes"].to(dev, dtype)[pos], reduction="sum")
    parts = {key: value / n for key, value in parts.items()}
    return {"loss": sum(parts.values()), **parts}


_DEVIATIONS = (
    "no ImageNet pretraining of Darknet-53 (random init: Kaiming-normal, not darknet's uniform)",
    ("ignore threshold 0.5 on the prior (the paper's text; darknet's yolov3.cfg: 0.7 on the predicted box, "
     "ignore_by='prediction')"),
    "t_x, t_y by binary cross-entropy (darknet's gradient; the paper says squared error: xy_loss='mse')",
    ("digits recipe: 128x128 grayscale input (paper 416/608 RGB), width 1/8, one residual block per stage, "
     "k-means priors on the digits boxes, Adam, no augmentation or multi-scale training"),
    "at most 1000 candidates per image before NMS (darknet keeps all above the threshold)",
)


@register_detector(YOLOv3, paper=YOLOV3, input_size=(3, 416, 416), dataset="COCO trainval (80 classes)",
                   deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPE)
def yolo_v3(**kwargs) -> YOLOv3:
    """YOLOv3 (cfg/yolov3.cfg): Darknet-53 + three scales x 3 priors; 80 classes -> 13/26/52 x 3 x 85 at 416;
    61,949,149 parameters."""
    return YOLOv3(**kwargs)
