"""YOLO v2. J. Redmon, A. Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017. https://arxiv.org/abs/1612.08242
-- with the authors' darknet configuration for PASCAL VOC (github.com/pjreddie/darknet: ``cfg/yolo-voc.cfg``) and
region layer (``src/region_layer.c``), which the paper's Sec. 2 describes only in words.

Key ideas (Sec. 2 "Better", Sec. 3 "Faster")
    - Batch normalisation after every convolution, no dropout (+2% mAP).
    - Anchor boxes: the fully connected layers of YOLO v1 go; a fully convolutional net predicts, at each cell of a
      13x13 map of a 416x416 input (stride 32, an odd number of cells so that one cell holds the centre), 5 boxes,
      each with its own objectness and class probabilities.
    - Dimension clusters: the 5 priors are k-means centroids of the training boxes' (w, h) with the distance
      d(box, centroid) = 1 - IoU(box, centroid) (Table 1: 5 centroids reach 61.0 average IoU, 9 hand-picked anchor
      boxes 60.9); `cnnzoo.detection.anchors.kmeans_anchors` computes them.
    - Direct location prediction (Sec. 2, Eq. above Fig. 3): for the cell with top-left corner (c_x, c_y) (in cells)
      and a prior of width and height (p_w, p_h)::

          b_x = sigmoid(t_x) + c_x,   b_y = sigmoid(t_y) + c_y,   b_w = p_w e^(t_w),   b_h = p_h e^(t_h),
          Pr(object) * IoU(b, object) = sigmoid(t_o)

      The sigmoid keeps each predicted centre inside its cell, which stabilises early training (+5% with clusters).
    - Fine-grained features: the passthrough layer brings the 26x26x512 map to 13x13x2048 by stacking adjacent
      features into channels (space-to-depth, "reorg") and concatenates it with the 13x13 features (+1%).
    - Multi-scale training: every 10 batches the input size is drawn from {320, 352, ..., 608} (multiples of 32);
      one network runs at any of them (288: 91 fps / 69.0 mAP, 416: 76.8, 544: 78.6 mAP on VOC 2007, Table 3).
    - Darknet-19 (Sec. 3, Table 6): 19 convolutions (3x3, with 1x1 ones between them to compress, channels doubled
      after each pooling step, as VGG and NIN) and 5 maxpools; 5.58 billion operations at 224x224, 72.9% top-1.

Which table / figure the code reproduces
    Darknet-19 of Table 6 (``Darknet19``): conv 3x3 32, maxpool, 3x3 64, maxpool, 3x3 128, 1x1 64, 3x3 128, maxpool,
    3x3 256, 1x1 128, 3x3 256, maxpool, 3x3 512, 1x1 256, 3x3 512, 1x1 256, 3x3 512, maxpool, 3x3 1024, 1x1 512,
    3x3 1024, 1x1 512, 3x3 1024, [1x1 1000, global average pool, softmax: the classifier]. Every convolution is
    followed by BN (no convolution bias) and leaky ReLU 0.1 (darknet ``activation=leaky``), "same" padding.
    The detector of Sec. 3 "Training for detection" exactly as ``cfg/yolo-voc.cfg`` lays it out: Darknet-19 without
    its last convolution (18 convolutions, 416 -> 13x13x1024), then two 3x3 1024 convolutions; the route back to the
    26x26x512 output of the 13th convolution (the last before the 5th maxpool), **a 1x1 64 convolution there** (the
    cfg has it, the paper does not mention it: followed here), the reorg (stride 2: 26x26x64 -> 13x13x256, not the
    paper's 13x13x2048, because of that 1x1 64 convolution), the concatenation [reorg, 13x13x1024] (the cfg's
    ``route layers=-1,-4``: the passthrough's 256 channels first) -> 1280 channels, one 3x3 1024 convolution (the third
    of the paper's "three 3x3 convolutional layers with 1024 filters"), and the final 1x1 convolution to
    5 * (5 + 20) = 125 outputs per cell, linear, with a bias (no BN). 416 -> 13x13x125.
    Parameters (derivation from yolo-voc.cfg in tests/test_detection_yolo_v2.py): 50,655,389 at 20 classes =
    convolution weights 50,634,592 + BN scales and shifts 20,672 + the final convolution's 125 biases; the BN running
    means and variances (20,672 more numbers, darknet stores them in the weights file) are buffers here -- with them
    50,676,061. Darknet-19 with its classifier at 1000 classes: 20,842,376 (19,802,976 + 14,400 BN + 1,025,000).

    Priors: yolo-voc.cfg's ``anchors = 1.3221, 1.73145, 3.19275, 4.00944, 5.05587, 8.09892, 9.47112, 4.84053,
    11.2364, 10.0071`` (`VOC_ANCHORS`, (w, h) pairs in grid cells of 32 pixels; darknet's k-means on VOC).

Training setup in the paper (Sec. 3 "Training for classification", "Training for detection")
    Darknet-19 pretrained on ImageNet (160 epochs at 224, then 10 epochs at 448); detection: 160 epochs, learning
    rate 1e-3 divided by 10 at epochs 60 and 90, weight decay 5e-4, momentum 0.9, random crops, colour shifting
    (data augmentation "similar to YOLO and SSD"), multi-scale training. yolo-voc.cfg: batch 64, burn-in 1000
    batches, 80,200 batches, steps at 40,000 and 60,000 (x0.1), jitter .3, saturation/exposure 1.5, hue .1.

    The loss: the paper gives none. darknet's region layer (``forward_region_layer``; yolo-voc.cfg: object_scale 5,
    noobject_scale 1, class_scale 1, coord_scale 1, thresh .6, bias_match 1, rescore 1, softmax 1) writes a
    "delta" (minus the gradient) per output; each term below is the function whose gradient is that delta
    (hence the 1/2 of the squared errors), summed over the batch's cells, anchors and objects, divided by the batch
    size (darknet sums and divides its learning rate by the batch):
      - no-object: noobject_scale / 2 * sigmoid(t_o)^2 for every prediction, except those whose decoded box has an
        IoU above ``thresh`` (0.6) with some ground truth of its image: those are ignored (delta 0);
      - prior matching (only while fewer than 12,800 images have been seen, ``seen < 12800``): 0.01 / 2 *
        [(sigmoid(t_x) - 0.5)^2 + (sigmoid(t_y) - 0.5)^2 + t_w^2 + t_h^2] for every prediction that is not
        responsible for an object: pulls each box to its prior centred in its cell;
      - for each ground truth: the responsible prediction is in the cell of its centre, with the prior of the best
        IoU with the truth's (w, h), both centred at the origin (``bias_match``; ties: the first prior). There:
        coordinates coord_scale / 2 * [(sigmoid(t_x) - t*_x)^2 + (sigmoid(t_y) - t*_y)^2 + (t_w - t*_w)^2 +
        (t_h - t*_h)^2], t*_x = x * W - c_x, t*_w = log(w * W / p_w) (x, w as image fractions, W cells across);
        objectness object_scale / 2 * (sigmoid(t_o) - IoU)^2 with the IoU of the decoded box and the truth, a constant
        (``rescore``; without it, target 1); classes class_scale * cross-entropy of the softmax (darknet's delta
        ``onehot - p`` is the softmax cross-entropy's gradient). Responsible predictions get no no-object or prior
        term (darknet overwrites those deltas); a second truth on the same cell and prior overwrites the first.
    All five terms are kept. Not kept: darknet's later ``(2 - w*h)`` scale of the coordinate term (added with
    YOLO v3's code, not in the region layer of the v2 release) and the hierarchical softmax of YOLO9000 (Sec. 4).

This implementation
    ``forward`` returns ``(N, H, W, A * (5 + C))`` (13x13x125 at 416): ``out[n, i, j]`` is the cell in row i (y),
    column j (x), anchor-major per cell as ``[t_x, t_y, t_w, t_h, t_o, class logits (C)] * A`` -- darknet's order (the
    final convolution's channel a * (5 + C) + e is entry e of anchor a), raw (before sigmoid / exp / softmax).
    The reorg's channel order (`reorg`): output channel ``(dy * s + dx) * C + c`` at (y, x) is input channel c at
    (s*y + dy, s*x + dx) -- TensorFlow's ``space_to_depth`` and darknet's ``reorg_cpu(..., forward=0)`` called with the
    output's sizes (as AlexeyAB's darknet calls it). pjreddie's darknet calls the same loop with the input's sizes,
    which reads the 26x26x64 map as if it were 52x52x16: another permutation of the same numbers (its released
    yolo-voc.weights would need that permutation; not reproduced). torch's ``pixel_unshuffle`` orders channels
    ``c * s * s + dy * s + dx``: also different.
    Anchors (the ``anchors`` option, darknet's flat list w1, h1, w2, h2, ...) are in grid cells of 32 input pixels,
    so a prior keeps its size in pixels at every input size (darknet: ``b.w = exp(t_w) * bias / l.w``).
    `YOLOv2.detect`: boxes decoded by the equations above, class-specific scores sigmoid(t_o) * softmax(class)
    (darknet ``get_region_boxes``), kept above ``score_thresh`` (0.24, darknet's ``-thresh`` default of the v2
    release), NMS per class at ``nms_thresh`` (0.45, darknet ``validate_detector``; its VOC evaluation keeps scores
    above 0.005), clipped to the image, at most ``max_detections`` per image; labels 1..C.
    Initialisation as darknet: convolution weights U(-sqrt(2 / fan_in), +sqrt(2 / fan_in)), BN scale 1, shift 0, the
    final convolution's bias 0. BN as darknet: eps 1e-5, running statistics updated with momentum 0.01
    (``rolling = .99 rolling + .01 batch``).
    Options:
        ``num_classes`` (C, 20), ``in_channels`` (3), ``anchors`` (`VOC_ANCHORS`; k-means priors for another data set,
            `anchors_from_boxes`), ``width_mult`` (1.0: scales every convolution's width but the last, for 2 CPU
            cores), ``passthrough`` (True; False drops the route/reorg: the paper's ablation without "passthrough"),
            ``thresh`` (0.6), ``prior_images`` (12,800: the images during which the prior-matching term is on),
        ``multiscale`` (False): True, or a list of sizes (multiples of 32), resizes each training batch (bilinear) to a
            size drawn every 10 training forwards -- True draws from the batch's side - 96 to side + 192 in steps of
            32 (416: the paper's 320 ... 608). The draw is seeded by the index of the 10-batch period (darknet calls
            ``rand()``), and the network counts its training forwards and images in buffers (``iterations``,
            ``seen``, darknet's ``net.seen``), so a resumed run draws the same sizes and knows when the prior term
            stops. Boxes need no change (the loss works in image fractions). The model resizes the batch itself
            because the trainer feeds one size; darknet loads the images at the new size instead.
    digits-detection recipe (`DIGITS_RECIPE`): 128x128 grayscale canvases (a 4x4 grid; the paper's 416 gives 13x13),
    2,000 training canvases, width 1/8 (801,447 parameters at 10 classes), the priors k-means (k = 5) of the digits
    training boxes in 32-pixel cells, recorded in the recipe (`DIGITS_ANCHORS`; recomputed by a test), Adam 1e-3,
    batch 16, 20 epochs, constant rate, no augmentation, no multi-scale (the option works with the trainer, but
    sizes up to 320 cost several times the CPU budget), no ImageNet pretraining. Measured once (seed 0, one thread,
    `cnnzoo detect train yolo_v2 --threads 1`): train loss 9.23 (epoch 1) -> 0.51 (20); test mAP@0.5 **0.531**
    (11-point 0.529, COCO AP@[.5:.95] 0.173) on the 150 test canvases after 20 epochs; the per-epoch test mAP swings
    (0.28 - 0.53 over epochs 10-20, constant rate). About 23 s per epoch on an idle core (755 s of epochs on a
    shared, busy machine).
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from ...models.base import check_image_batch
from ...registry import Paper
from ..postprocess import eval_forward, select_per_class
from ..registry import register_detector

__all__ = ["DARKNET19_CFG", "DIGITS_RECIPE", "LEAKY", "VOC_ANCHORS", "Darknet19", "YOLOv2", "anchors_from_boxes",
           "decode_boxes", "reorg", "yolo_v2", "yolo_v2_loss"]

YOLO9000 = Paper("YOLO9000: Better, Faster, Stronger", "J. Redmon, A. Farhadi", 2017, "https://arxiv.org/abs/1612.08242")

LEAKY = 0.1
STRIDE = 32  # five 2x2/2 maxpools
BN_MOMENTUM = 0.01  # darknet: rolling = .99 * rolling + .01 * batch statistic
#: darknet cfg/yolo-voc.cfg [region] anchors: (w, h) pairs in grid cells (32 pixels)
VOC_ANCHORS: tuple[float, ...] = (1.3221, 1.73145, 3.19275, 4.00944, 5.05587, 8.09892, 9.47112, 4.84053,
                                  11.2364, 10.0071)
# yolo-voc.cfg [region]
OBJECT_SCALE, NOOBJECT_SCALE, CLASS_SCALE, COORD_SCALE = 5.0, 1.0, 1.0, 1.0
IGNORE_THRESH = 0.6
PRIOR_SCALE = 0.01  # delta_region_box(..., .01) while seen < 12800
PRIOR_IMAGES = 12_800
MULTISCALE_EVERY = 10

# Table 6: (out_channels, kernel) per convolution, "M" = 2x2/2 maxpool; the 19th (1x1 1000) is the classifier.
DARKNET19_CFG: list = [
    (32, 3), "M", (64, 3), "M", (128, 3), (64, 1), (128, 3), "M", (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
]
_SPLIT = DARKNET19_CFG.index("M", 12)  # the 5th maxpool: stage1 ends at the 26x26x512 map (13 convolutions)


def _check_int(name: str, key: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} option {key} must be an integer >= {low}, got {value!r}")


def conv_bn(in_ch: int, out_ch: int, k: int) -> nn.Sequential:
    """darknet's ``[convolutional] batch_normalize=1 activation=leaky pad=1``: conv (no bias), BN, leaky 0.1."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, k, 1, k // 2, bias=False),
                         nn.BatchNorm2d(out_ch, eps=1e-5, momentum=BN_MOMENTUM), nn.LeakyReLU(LEAKY, inplace=True))


def _layers(cfg: list, in_ch: int, width) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out, k = item
            layers.append(conv_bn(in_ch, width(out), k))
            in_ch = width(out)
    return nn.Sequential(*layers), in_ch


def _darknet_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            bound = math.sqrt(2.0 / fan_in)  # darknet make_convolutional_layer: scale * rand_uniform(-1, 1)
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Darknet19(nn.Module):
    """Darknet-19 (Table 6). ``stage1``: the 13 convolutions and 4 maxpools up to the 26x26x512 map (at 416);
    ``stage2``: the 5th maxpool and the 5 convolutions to 13x13x1024; ``classifier`` (``num_classes`` > 0): the 19th
    convolution (1x1, with a bias, no BN, linear) and the global average pool -> logits. Kept inside this module,
    not registered in the classification zoo."""

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.stage1, ch1 = _layers(DARKNET19_CFG[:_SPLIT], in_channels, width)
        self.stage2, ch2 = _layers(DARKNET19_CFG[_SPLIT:], ch1, width)
        self.channels = (ch1, ch2)
        self.classifier = nn.Conv2d(ch2, num_classes, 1) if num_classes else None
        _darknet_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(x))
        if self.classifier is None:
            return x
        return self.classifier(x).mean((2, 3))


def reorg(x: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """The passthrough layer's space-to-depth: ``(N, C, H, W) -> (N, s*s*C, H/s, W/s)``, output channel
    ``(dy * s + dx) * C + c`` at (y, x) holding input channel c at (s*y + dy, s*x + dx) (module docstring)."""
    n, c, h, w = x.shape
    if h % stride or w % stride:
        raise ValueError(f"reorg with stride {stride} needs a map whose sides are multiples of {stride}, got {h}x{w}")
    x = x.view(n, c, h // stride, stride, w // stride, stride)  # (n, c, y, dy, x, dx)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n, stride * stride * c, h // stride, w // stride)


def _flat_anchors(anchors, name: str = "YOLOv2") -> torch.Tensor:
    """``(A, 2)`` float64 priors from darknet's flat list ``w1, h1, w2, h2, ...`` (or pairs), checked."""
    if isinstance(anchors, torch.Tensor):
        anchors = anchors.detach().cpu().reshape(-1).tolist()
    flat: list[float] = []
    try:
        for item in anchors:
            flat += [float(v) for v in item] if isinstance(item, (list, tuple)) else [float(item)]
    except (TypeError, ValueError):
        flat = []
    if len(flat) < 2 or len(flat) % 2 or not all(math.isfinite(v) and v > 0 for v in flat):
        raise ValueError(f"{name} option anchors must be positive (w, h) pairs in grid cells, w1, h1, w2, h2, ... "
                         f"(yolo-voc.cfg has {len(VOC_ANCHORS) // 2}), got {anchors!r}")
    return torch.tensor(flat, dtype=torch.float64).view(-1, 2)


class YOLOv2(nn.Module):
    """YOLO v2 (Sec. 2, darknet yolo-voc.cfg): Darknet-19, passthrough, 5 priors -> (N, H/32, W/32, A*(5 + C))."""

    min_input_size = STRIDE

    def __init__(self, *, num_classes: int = 20, in_channels: int = 3, anchors: list[float] | None = None,
                 width_mult: float = 1.0, passthrough: bool = True, thresh: float = IGNORE_THRESH,
                 prior_images: int = PRIOR_IMAGES, multiscale: bool | list[int] = False) -> None:
        super().__init__()
        name = type(self).__name__
        _check_int(name, "num_classes", num_classes)
        _check_int(name, "in_channels", in_channels)
        _check_int(name, "prior_images", prior_images, 0)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"{name} option width_mult must be a number > 0, got {width_mult!r}")
        if isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not 0 <= thresh <= 1:
            raise ValueError(f"{name} option thresh must be in [0, 1] (yolo-voc.cfg: 0.6), got {thresh!r}")
        if not isinstance(passthrough, bool):
            raise ValueError(f"{name} option passthrough must be true or false, got {passthrough!r}")
        if not isinstance(multiscale, bool):
            sizes = list(multiscale) if isinstance(multiscale, (list, tuple)) else None
            if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < STRIDE or s % STRIDE
                                for s in sizes):
                raise ValueError(f"{name} option multiscale must be true, false or a list of input sides that are "
                                 f"multiples of {STRIDE} (the paper's 320, 352, ..., 608), got {multiscale!r}")
            multiscale = sizes
        self.num_classes, self.in_channels = num_classes, in_channels
        self.width_mult, self.passthrough, self.thresh = float(width_mult), passthrough, float(thresh)
        self.prior_images, self.multiscale = prior_images, multiscale
        self.register_buffer("anchors", _flat_anchors(VOC_ANCHORS if anchors is None else anchors, name).float())
        self.num_anchors = len(self.anchors)
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))  # darknet net.seen: training images
        self.register_buffer("iterations", torch.zeros((), dtype=torch.int64))  # training forwards (multi-scale)

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.backbone = Darknet19(num_classes=0, in_channels=in_channels, width_mult=width_mult)
        ch26, ch13 = self.backbone.channels
        self.head = nn.Sequential(conv_bn(ch13, width(1024), 3), conv_bn(width(1024), width(1024), 3))
        extra = 0
        if passthrough:
            self.route = conv_bn(ch26, width(64), 1)  # yolo-voc.cfg: [route] layers=-9, then 1x1 64, then [reorg]
            extra = 4 * width(64)
        self.fuse = conv_bn(extra + width(1024), width(1024), 3)  # after [route] layers=-1,-4
        self.pred = nn.Conv2d(width(1024), self.num_anchors * (5 + num_classes), 1)  # linear, with a bias
        _darknet_init(self)

    def _multiscale(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        sizes = self.multiscale if isinstance(self.multiscale, list) else \
            [s for s in range(side - 3 * STRIDE, side + 6 * STRIDE + 1, STRIDE) if s >= STRIDE]
        period = int(self.iterations) // MULTISCALE_EVERY
        size = sizes[random.Random(period).randrange(len(sizes))]
        if (size, size) == tuple(x.shape[-2:]):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, in_channels, H, W)``, H and W multiples of 32 -> ``(N, H/32, W/32, A * (5 + C))``."""
        name = type(self).__name__
        check_image_batch(name, x, self.in_channels)
        h, w = x.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"{name} needs inputs whose sides are multiples of {STRIDE} (five 2x2 poolings and the "
                             f"passthrough), got {h}x{w}; resize them (e.g. --input-size {max(1, round(h / 32)) * 32})")
        if self.training and x.device.type != "meta":
            if self.multiscale:
                x = self._multiscale(x)
            self.iterations += 1
            self.seen += len(x)
        f26 = self.backbone.stage1(x)
        f13 = self.head(self.backbone.stage2(f26))
        if self.passthrough:
            f13 = torch.cat([reorg(self.route(f26), 2), f13], 1)  # the cfg's route -1 (reorg), -4 (head) order
        out = self.pred(self.fuse(f13))  # (N, A * (5 + C), H/32, W/32)
        return out.permute(0, 2, 3, 1)

    def loss(self, outputs: torch.Tensor, targets: list[dict], image_size) -> dict[str, torch.Tensor]:
        """darknet's region-layer loss (`yolo_v2_loss`); the prior-matching term while fewer than ``prior_images``
        images have been seen in training."""
        return yolo_v2_loss(outputs, targets, image_size, self.anchors, thresh=self.thresh,
                            prior_term=int(self.seen) < self.prior_images)

    def postprocess(self, outputs: torch.Tensor, image_size, score_thresh: float = 0.24, nms_thresh: float = 0.45,
                    max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Raw outputs -> per image ``{"boxes", "scores", "labels"}`` (module docstring)."""
        if not 0.0 <= nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh!r}")
        _check_int("detect", "max_detections", max_detections, 0)
        height, width = _hw(image_size)
        boxes, scores = decode_boxes(outputs, (height, width), self.anchors)
        return select_per_class(boxes, scores, (height, width), score_thresh, nms_thresh, max_detections)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_thresh: float = 0.24, nms_thresh: float = 0.45,
               max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Detections on ``images`` (N, C, H, W) in eval mode: per image ``{"boxes" (K, 4) xyxy pixels, "scores",
        "labels" (1..C)}``."""
        outputs = eval_forward(self, images)
        return self.postprocess(outputs.cpu(), tuple(images.shape[-2:]), score_thresh, nms_thresh, max_detections)


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def _split(outputs: torch.Tensor, num_anchors: int):
    if outputs.ndim != 4 or outputs.shape[-1] % num_anchors or outputs.shape[-1] // num_anchors < 6:
        raise ValueError(f"YOLO v2 outputs must be (N, H, W, A * (5 + C)) with A = {num_anchors} and C >= 1, got "
                         f"{tuple(outputs.shape)}")
    n, gh, gw, depth = outputs.shape
    return outputs.reshape(n, gh, gw, num_anchors, depth // num_anchors)


def _grid(gh: int, gw: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(gh, device=device, dtype=torch.float64).view(gh, 1, 1).expand(gh, gw, 1)
    cols = torch.arange(gw, device=device, dtype=torch.float64).view(1, gw, 1).expand(gh, gw, 1)
    return rows, cols  # (H, W, 1): c_y, c_x of each cell


def _boxes_fractions(pred: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Direct location prediction: ``(N, H, W, A, >=4)`` raw -> (cx, cy, w, h) as image fractions (float64)."""
    gh, gw = pred.shape[1], pred.shape[2]
    p = pred[..., :4].to(torch.float64)
    rows, cols = _grid(gh, gw, pred.device)
    a = anchors.to(device=pred.device, dtype=torch.float64)
    cx = (torch.sigmoid(p[..., 0]) + cols) / gw  # b_x = sigmoid(t_x) + c_x, in cells, / W
    cy = (torch.sigmoid(p[..., 1]) + rows) / gh
    w = a[:, 0] * torch.exp(p[..., 2]) / gw  # b_w = p_w e^(t_w)
    h = a[:, 1] * torch.exp(p[..., 3]) / gh
    return torch.stack([cx, cy, w, h], -1)


def _xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


def decode_boxes(outputs: torch.Tensor, image_size, anchors) -> tuple[torch.Tensor, torch.Tensor]:
    """Every prediction's box in input pixels and its class-specific scores (Sec. 2's equations).

    Args:
        outputs: ``(N, H, W, A * (5 + C))`` raw (module docstring's layout).
        image_size: ``(height, width)`` of the input (or one int).
        anchors: ``(A, 2)`` priors (w, h) in grid cells (or darknet's flat list).

    Returns:
        ``boxes (N, H*W*A, 4)`` xyxy pixels, not clipped, cell by cell in row-major order, anchors in order;
        ``scores (N, H*W*A, C)``: sigmoid(t_o) * softmax(class logits).
    """
    anchors = _flat_anchors(anchors) if not isinstance(anchors, torch.Tensor) or anchors.ndim != 2 else anchors
    height, width = _hw(image_size)
    pred = _split(outputs, len(anchors))
    n = pred.shape[0]
    b = _xyxy(_boxes_fractions(pred, anchors))
    b = b * torch.tensor([width, height, width, height], dtype=torch.float64, device=b.device)
    p = pred.to(torch.float64)
    scores = torch.sigmoid(p[..., 4:5]) * torch.softmax(p[..., 5:], -1)
    return b.reshape(n, -1, 4), scores.reshape(n, -1, scores.shape[-1])


def _truths(targets: list[dict], n: int, num_classes: int, height: int, width: int) -> list[tuple[torch.Tensor, list]]:
    """Per image: ground truths (M, 4) as (cx, cy, w, h) image fractions (float64) and their 0-based classes;
    boxes of zero width or height are skipped."""
    if len(targets) != n:
        raise ValueError(f"{n} outputs but {len(targets)} targets")
    out = []
    for k, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError("each target must be a dict with 'boxes' (M, 4) and 'labels' (M,)")
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float64).detach().cpu().reshape(-1, 4)
        labels = torch.as_tensor(t["labels"]).detach().cpu().reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError(f"target {k} has {len(boxes)} boxes but {len(labels)} labels")
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"target {k} has labels outside 1..{num_classes}: {sorted(set(labels.tolist()))}")
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh > 0).all(1)
        boxes, labels, wh = boxes[keep], labels[keep], wh[keep]
        scale = torch.tensor([width, height], dtype=torch.float64)
        frac = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2 / scale, wh / scale], 1)
        out.append((frac, (labels - 1).tolist()))
    return out


def _iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU ``(..., P, Q)`` of boxes a ``(..., P, 4)`` and b ``(Q, 4)``, both (cx, cy, w, h)."""
    a, b = _xyxy(a), _xyxy(b)
    lt = torch.maximum(a[..., :, None, :2], b[:, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(-1)[..., :, None]
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def yolo_v2_loss(outputs: torch.Tensor, targets: list[dict], image_size, anchors, *, thresh: float = IGNORE_THRESH,
                 prior_term: bool = False, object_scale: float = OBJECT_SCALE,
                 noobject_scale: float = NOOBJECT_SCALE, class_scale: float = CLASS_SCALE,
                 coord_scale: float = COORD_SCALE, prior_scale: float = PRIOR_SCALE,
                 rescore: bool = True) -> dict[str, torch.Tensor]:
    """darknet's region-layer loss for YOLO v2 (module docstring: every term, and which darknet details are kept).

    Args:
        outputs: ``(N, H, W, A * (5 + C))`` raw network outputs.
        targets: per image ``{"boxes": (M, 4) xyxy pixels, "labels": (M,) in 1..C}``.
        image_size: ``(height, width)`` of the input the boxes are in (or one int).
        anchors: ``(A, 2)`` priors in grid cells (or darknet's flat list).
        thresh: predictions whose box has an IoU above this with a truth get no no-object term (0.6).
        prior_term: add the prior-matching term (darknet: while ``seen < 12800``).

    Returns:
        ``{"loss", "loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class", "loss_prior"}``, each summed over
        the batch and divided by N; ``loss`` is their sum.
    """
    anchors = _flat_anchors(anchors) if not isinstance(anchors, torch.Tensor) or anchors.ndim != 2 else anchors
    A = len(anchors)
    pred = _split(outputs, A)
    n, gh, gw = pred.shape[:3]
    C = pred.shape[-1] - 5
    height, width = _hw(image_size)
    truths = _truths(targets, n, C, height, width)
    dev, dtype = outputs.device, outputs.dtype
    a64 = anchors.to(torch.float64).cpu()

    with torch.no_grad():
        boxes = _boxes_fractions(pred.detach(), anchors).cpu()  # (N, H, W, A, 4)
        ignore = torch.zeros(n, gh, gw, A, dtype=torch.bool)
        resp = torch.zeros(n, gh, gw, A, dtype=torch.bool)
        t_xy = torch.zeros(n, gh, gw, A, 2, dtype=torch.float64)
        t_wh = torch.zeros(n, gh, gw, A, 2, dtype=torch.float64)
        t_obj = torch.zeros(n, gh, gw, A, dtype=torch.float64)
        t_cls = torch.zeros(n, gh, gw, A, dtype=torch.int64)
        prior_wh = torch.stack([a64[:, 0] / gw, a64[:, 1] / gh], 1)  # priors as image fractions
        for k, (gt, labels) in enumerate(truths):
            if not len(gt):
                continue
            ignore[k] = _iou_cxcywh(boxes[k].reshape(-1, 4), gt).amax(-1).reshape(gh, gw, A) > thresh
            for (cx, cy, w, h), label in zip(gt.tolist(), labels):
                i, j = min(max(int(cy * gh), 0), gh - 1), min(max(int(cx * gw), 0), gw - 1)
                inter = torch.minimum(prior_wh[:, 0], torch.tensor(w)) * torch.minimum(prior_wh[:, 1], torch.tensor(h))
                shape_iou = inter / (prior_wh.prod(1) + w * h - inter)  # bias_match: both centred at the origin
                a = int(shape_iou.argmax())  # the first of equal maxima (darknet: strictly greater replaces)
                resp[k, i, j, a] = True  # a later truth on the same cell and prior overwrites (darknet)
                t_xy[k, i, j, a] = torch.tensor([cx * gw - j, cy * gh - i], dtype=torch.float64)
                t_wh[k, i, j, a] = torch.log(torch.tensor([w * gw, h * gh], dtype=torch.float64) / a64[a])
                t_cls[k, i, j, a] = label
                iou = _iou_cxcywh(boxes[k, i, j, a][None], torch.tensor([[cx, cy, w, h]], dtype=torch.float64))
                t_obj[k, i, j, a] = float(iou) if rescore else 1.0

    resp_d, noobj = resp.to(dev), (~resp & ~ignore).to(dev)
    r = resp_d.to(dtype)
    sig_xy = torch.sigmoid(pred[..., :2])
    t_wh_raw = pred[..., 2:4]
    conf = torch.sigmoid(pred[..., 4])
    loss_xy = coord_scale / 2 * (r[..., None] * (sig_xy - t_xy.to(dev, dtype)) ** 2).sum()
    loss_wh = coord_scale / 2 * (r[..., None] * (t_wh_raw - t_wh.to(dev, dtype)) ** 2).sum()
    loss_obj = object_scale / 2 * (r * (conf - t_obj.to(dev, dtype)) ** 2).sum()
    loss_noobj = noobject_scale / 2 * (noobj.to(dtype) * conf ** 2).sum()
    ce = F.cross_entropy(pred[..., 5:].reshape(-1, C), t_cls.to(dev).reshape(-1), reduction="none")
    loss_class = class_scale * (r.reshape(-1) * ce).sum()
    if prior_term:
        keep = (1 - r)[..., None]
        loss_prior = prior_scale / 2 * (keep * ((sig_xy - 0.5) ** 2 + t_wh_raw ** 2)).sum()
    else:
        loss_prior = outputs.new_zeros(())
    parts = {"loss_xy": loss_xy / n, "loss_wh": loss_wh / n, "loss_obj": loss_obj / n, "loss_noobj": loss_noobj / n,
             "loss_class": loss_class / n, "loss_prior": loss_prior / n}
    return {"loss": sum(parts.values()), **parts}


def anchors_from_boxes(wh_pixels, k: int = 5, stride: int = STRIDE, seed: int = 0) -> list[float]:
    """YOLO v2 priors for a data set (Sec. 2 "Dimension Clusters"): k-means with the 1 - IoU distance
    (`cnnzoo.detection.anchors.kmeans_anchors`) over the training boxes' ``(w, h)`` in input pixels, returned in
    grid cells of ``stride`` pixels as darknet's flat list ``[w1, h1, ...]`` (sorted by area), rounded to 5 digits."""
    from ..anchors import kmeans_anchors

    wh = torch.as_tensor(wh_pixels, dtype=torch.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(1)]
    centroids = kmeans_anchors(wh / stride, k, seed=seed)
    return [round(float(v), 5) for v in centroids.reshape(-1)]


# digits-detection: the priors are k-means (k=5, seed 0) over the 5,956 boxes of the 2,000 training canvases at the
# recipe's 128 input, in 32-pixel cells -- computed once and recorded here (tests/test_detection_yolo_v2.py recomputes
# them with `anchors_from_boxes`); a data set of your own: `anchors_from_boxes(its training boxes' (w, h))`.
DIGITS_ANCHORS = [0.38731, 0.59574, 0.3102, 0.94053, 0.59082, 0.68754, 0.70052, 0.97266, 0.99018, 1.08799]
DIGITS_RECIPE = {"options": {"width_mult": 0.125, "anchors": DIGITS_ANCHORS},
                 "optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 16, "schedule": "none",
                 "input_size": 128, "data_params": {"num_train": 2000}}

_DEVIATIONS = (
    "no ImageNet pretraining of Darknet-19 (random init as darknet: U(+-sqrt(2/fan_in)))",
    "yolo-voc.cfg's 1x1 64 convolution before the reorg (13x13x256 passthrough, not the paper's 13x13x2048)",
    "reorg channel order (dy*2+dx)*C+c (TensorFlow space_to_depth; AlexeyAB darknet), not pjreddie's permutation",
    "loss: darknet's region layer (the paper states none); no (2 - w*h) coordinate scale",
    "multiscale (an option, off in the digits recipe): the batch is resized inside the network, bilinear",
    ("digits recipe: 128x128 grayscale input (4x4 grid), width_mult 1/8, k-means priors of the digits boxes, Adam "
     "1e-3, 20 epochs, no augmentation (paper: 416, random crops, colour shifts, multi-scale); test mAP@0.5 0.531 "
     "(seed 0)"),
)


@register_detector(YOLOv2, paper=YOLO9000, input_size=(3, 416, 416), dataset="PASCAL VOC 2007+2012",
                   deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPE)
def yolo_v2(**kwargs) -> YOLOv2:
    """YOLO v2 (yolo-voc.cfg): Darknet-19 + passthrough, 5 priors, 20 classes -> 13x13x125 at 416; 50,655,389
    parameters (BN running statistics not counted)."""
    return YOLOv2(**kwargs)
