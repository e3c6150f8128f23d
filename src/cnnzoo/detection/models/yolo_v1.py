"""YOLO v1. J. Redmon, S. Divvala, R. Girshick, A. Farhadi, "You Only Look Once: Unified, Real-Time Object Detection",
CVPR 2016. https://arxiv.org/abs/1506.02640 -- with the authors' darknet configurations (github.com/pjreddie/darknet:
``cfg/yolov1/yolo.cfg``, ``cfg/yolo-tiny.cfg`` of the v1 era) and detection layer (``src/detection_layer.c``).

Key ideas
    Detection as one regression (Sec. 2): the image is divided into an S x S grid; the cell that holds an object's
    centre is responsible for it. Each cell predicts B boxes (x, y, w, h) with a confidence each, and one set of C
    conditional class probabilities Pr(Class_i | Object). (x, y) are the box centre's offsets within its cell, w and h
    fractions of the image; the confidence is trained towards Pr(Object) * IoU(pred, truth): zero where no object is,
    "otherwise we want the confidence score to equal the intersection over union (IOU) between the predicted box and
    the ground truth". At test time the class-specific confidence of a box is Pr(Class_i | Object) * confidence
    (Eq. 1), thresholded, and non-maximum suppression (Sec. 2.4: "adds 2-3% in mAP") removes duplicates. One network
    evaluation per image, reasoning over the whole image: 45 fps (Fast YOLO 155 fps) on a Titan X.

Which figure the code reproduces
    The network of Fig. 3 (Sec. 2.1), as ``cfg/yolov1/yolo.cfg`` lays it out (darknet ``pad=1``: padding k // 2):

        7x7/2 64, maxpool 2/2, 3x3 192, maxpool, 1x1 128, 3x3 256, 1x1 256, 3x3 512, maxpool,
        4 x (1x1 256, 3x3 512), 1x1 512, 3x3 1024, maxpool, 2 x (1x1 512, 3x3 1024),
        3x3 1024, 3x3/2 1024, 3x3 1024, 3x3 1024           -- 24 convolutions, 448 -> 7x7x1024
        FC 7*7*1024 -> 4096, leaky, dropout 0.5, FC 4096 -> S*S*(B*5+C) linear  -- 7x7x30 for S=7, B=2, C=20

    Leaky ReLU 0.1 after every layer but the last (Sec. 2.2). The paper's convolutions have biases and no batch
    normalisation (BN arrives with YOLO v2; darknet's later ``yolov1.cfg`` adds BN and a locally connected layer: not
    the paper's network). Parameters (derivation in tests/test_detection_yolo_v1.py): convolution weights 60,142,784
    + their biases 13,184 + FC 205,524,992 + FC 6,022,590 = 271,703,550 (every layer with a bias).
    Fast YOLO (Sec. 2.2 / 4.1: "fewer convolutional layers (9 instead of 24) and fewer filters in those layers";
    "Other than the size of the network, all training and testing parameters are the same"): darknet's v1-era
    ``cfg/yolo-tiny.cfg``, the net of the released ``yolo-tiny.weights``: nine 3x3 convolutions 16, 32, 64, 128, 256,
    512 (each followed by maxpool 2/2), 1024, 1024, 1024, then FC 50,176 -> 256 (linear), FC 256 -> 4096 (leaky),
    dropout 0.5, FC 4096 -> 1470: 45,089,374 parameters at 20 classes. (darknet's later ``yolov1-tiny.cfg`` has eight
    BN convolutions and one FC: not the paper's.)

Training setup in the paper
    First 20 convolutions pretrained on ImageNet 1000-class at 224x224 (88% top-5) with average pooling and an FC;
    then 4 convolutions and 2 FCs added (random init), input raised to 448x448. PASCAL VOC 2007+2012, 135 epochs,
    batch 64, momentum 0.9, weight decay 5e-4; learning rate 1e-3 raised slowly to 1e-2, 1e-2 for 75 epochs, 1e-3
    for 30, 1e-4 for 30. Dropout 0.5 after the first FC; random scaling and translation up to 20% of the image,
    exposure and saturation up to 1.5x in HSV. The loss (Sec. 2.2, Eq. 3), sum-squared error:

        lambda_coord sum_ij 1obj_ij [(x_i - x^_i)^2 + (y_i - y^_i)^2]
      + lambda_coord sum_ij 1obj_ij [(sqrt w_i - sqrt w^_i)^2 + (sqrt h_i - sqrt h^_i)^2]
      + sum_ij 1obj_ij (C_i - C^_i)^2 + lambda_noobj sum_ij 1noobj_ij (C_i - C^_i)^2
      + sum_i 1obj_i sum_c (p_i(c) - p^_i(c))^2,     lambda_coord = 5, lambda_noobj = 0.5

    where 1obj_ij marks the predictor j of cell i "responsible" for the object whose centre is in cell i: the one
    "which has the highest current IOU with the ground truth"; class errors count only in cells holding an object.

This implementation
    Output layout: ``forward`` returns ``(N, S, S, B*5 + C)``; ``out[n, i, j]`` is the cell in row i (y) and column j
    (x), ordered per cell as ``[x, y, sqrt(w), sqrt(h), conf] * B + [p(1) ... p(C)]`` (the layout of the common torch
    re-implementations; darknet orders the S*S*(B*5+C) outputs as all cells' class probabilities, then all
    confidences, then all boxes -- the same numbers in another order). All outputs are linear, as in the paper:
    x, y are the centre's offsets in the cell (cell units), sqrt(w), sqrt(h) the square roots of the box's width and
    height as fractions of the image (``sqrt=1`` in darknet: the network predicts the roots; decoding squares them),
    conf and p(c) are raw regressions. `yolo_v1_loss` (Eq. 3, terms as above):
      - coordinates: lambda_coord * [(x - x*)^2 + (y - y*)^2 + (sqrt(w) - sqrt(w*))^2 + (sqrt(h) - sqrt(h*))^2] on the
        responsible predictor;
      - responsible predictor: the one of the B whose decoded box has the highest IoU with the ground truth, ties to
        the lower index; if every IoU is 0, the one with the least RMSE over (x, y, w, h) (darknet's
        ``detection_layer.c`` fallback; the paper does not say);
      - confidence target of the responsible predictor: its IoU with the ground truth, a constant (no gradient through
        it) -- the paper's definition (darknet ``rescore=1``), not 1; every other predictor, in object cells too, is
        pulled to 0 with weight lambda_noobj (1noobj_ij = 1 - 1obj_ij, as darknet);
      - class probabilities: squared error to the one-hot class, only in cells holding an object's centre;
      - one object per cell: the first object of a target whose centre falls in an occupied cell is kept, later ones
        are ignored (darknet ``fill_truth_region``: ``if (truth[index]) continue``, after shuffling the list);
        boxes of zero width or height are skipped;
      - the sum over cells and predictors, averaged over the images of the batch (darknet sums over the batch and
        divides the learning rate by it: the same step).
    Targets are torchvision's: per image ``{"boxes": (M, 4) xyxy pixels, "labels": (M,) in 1..C}``; a centre on the
    far edge belongs to the last cell. `YOLOv1.detect`: class-specific confidences p(c) * conf for every box and
    class, kept above ``score_thresh`` (0.2, darknet ``yolo test``'s default), NMS per class at ``nms_thresh`` (0.4,
    darknet ``test_yolo``; its VOC evaluation uses 0.5 and threshold 0.001), boxes in input pixels clipped to the
    image, at most ``max_detections`` per image by score; labels 1..C.
    Initialisation (the paper does not state one; darknet draws U(+-sqrt(2 / fan_in))): Kaiming-normal (fan_in,
    leaky ReLU 0.1 gain) convolutions and hidden FCs, N(0, 0.01) for the output FC, zero biases -- a deviation that
    keeps a 24-layer net without BN trainable from scratch.
    Options:
        ``S`` (7), ``B`` (2), ``num_classes`` (C, 20), ``in_channels`` (3).
        ``input_size`` (448): the square input side; the FC reads the final map, ceil(input_size / 64) on a side
            (six halvings; darknet pools round up), so 448 -> 7, 128 -> 2, 112 -> 2. The map's side need not equal S.
        ``width_mult`` (1.0): scales every convolution's width (and Fast YOLO's 256-wide FC; rounded, at least 1),
            for training on 2 CPU cores; ``fc_hidden`` (4096): the hidden FC's width; ``drop_rate`` (0.5).
    digits-detection recipes (`DIGITS_RECIPES`; deviations on the card): 128x128 grayscale canvases (not 448: the
    final map is 2x2), 2,000 training canvases (``data_params``), FC 256 wide, width 1/4 (Fast YOLO) or 1/8 (YOLO),
    Adam 1e-3, batch 16, 20 epochs; no ImageNet pretraining, no augmentation. Measured (one thread, seed 0, a loop
    of `YOLOv1.loss` + Adam; mAP@0.5 of `detect` at threshold 0.001, NMS 0.5, on the 150 test canvases): Fast YOLO
    at 1/4 on the default 300 canvases, 60 epochs (64 CPU s): train loss 11.1 -> 2.0, *train* mAP 0.65 but test mAP
    0.001 -- the FCs memorise 300 images; on 2,000 canvases, 20 epochs (162 CPU s): loss 7.2 -> 4.2, train mAP 0.05,
    test 0.013. A known shortfall, not solved here: the paper's global FC over a coarse map needs its data
    augmentation (random scaling and translation) and ImageNet pretraining; the YOLO recipe (1/8) is not measured.
    Through `cnnzoo detect train fast_yolo_v1` (normalised inputs): 0.011 (178 CPU s); with ``--jitter 0.2``
    (random scaling and translation by up to 20%): 0.014. Not solved: a larger input (224: a 4x4 map) is next.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...models.base import check_image_batch
from ...registry import Paper
from ..postprocess import eval_forward, select_per_class
from ..registry import register_detector

__all__ = ["DIGITS_RECIPES", "FAST_YOLO_CFG", "LAMBDA_COORD", "LAMBDA_NOOBJ", "YOLO_CFG", "FastYOLOv1", "YOLOv1",
           "decode_boxes", "fast_yolo_v1", "yolo_v1", "yolo_v1_loss"]

YOLO = Paper("You Only Look Once: Unified, Real-Time Object Detection",
             "J. Redmon, S. Divvala, R. Girshick, A. Farhadi", 2016, "https://arxiv.org/abs/1506.02640")

#: Sec. 2.2: "we use two parameters, lambda_coord and lambda_noobj ... We set lambda_coord = 5 and lambda_noobj = .5"
LAMBDA_COORD = 5.0
LAMBDA_NOOBJ = 0.5
LEAKY = 0.1  # Sec. 2.2: phi(x) = x if x > 0, 0.1x otherwise

# Fig. 3: (out_channels, kernel, stride) per convolution, "M" = 2x2/2 maxpool. 24 convolutions.
YOLO_CFG: list = [
    (64, 7, 2), "M",
    (192, 3, 1), "M",
    (128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1), "M",
    *[(256, 1, 1), (512, 3, 1)] * 4, (512, 1, 1), (1024, 3, 1), "M",
    *[(512, 1, 1), (1024, 3, 1)] * 2, (1024, 3, 1), (1024, 3, 2),
    (1024, 3, 1), (1024, 3, 1),
]
# darknet cfg/yolo-tiny.cfg (v1): Fast YOLO's 9 convolutions, all 3x3/1
FAST_YOLO_CFG: list = [
    (16, 3, 1), "M", (32, 3, 1), "M", (64, 3, 1), "M", (128, 3, 1), "M", (256, 3, 1), "M", (512, 3, 1), "M",
    (1024, 3, 1), (1024, 3, 1), (1024, 3, 1),
]
FAST_YOLO_BOTTLENECK = 256  # yolo-tiny.cfg: [connected] output=256 activation=linear, before the 4096 FC

_DIGITS = {"optimizer": "adam", "lr": 1e-3, "epochs": 20, "batch_size": 16, "schedule": "none", "input_size": 128,
           "data_params": {"num_train": 2000}}
DIGITS_RECIPES = {"yolo_v1": {**_DIGITS, "options": {"input_size": 128, "width_mult": 1 / 8, "fc_hidden": 256}},
                  "fast_yolo_v1": {**_DIGITS, "options": {"input_size": 128, "width_mult": 1 / 4, "fc_hidden": 256}}}


def _check_int(name: str, key: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} option {key} must be an integer >= {low}, got {value!r}")


class YOLOv1(nn.Module):
    """YOLO v1 (Fig. 3): 24 convolutions, 2 FCs, output (N, S, S, B*5 + C). See the module docstring."""

    cfg: list = YOLO_CFG
    bottleneck: int | None = None  # Fast YOLO's linear FC before the hidden one

    def __init__(self, *, num_classes: int = 20, in_channels: int = 3, S: int = 7, B: int = 2,
                 input_size: int = 448, width_mult: float = 1.0, drop_rate: float = 0.5, fc_hidden: int = 4096,
                 ) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("S", S), ("B", B),
                           ("input_size", input_size), ("fc_hidden", fc_hidden)):
            _check_int(name, key, value)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"{name} option width_mult must be a number > 0, got {width_mult!r}")
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"{name} option drop_rate must be in [0, 1), got {drop_rate!r}")
        self.num_classes, self.in_channels, self.S, self.B = num_classes, in_channels, S, B
        self.input_size, self.width_mult = input_size, float(width_mult)

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        layers: list[nn.Module] = []
        chs, side = in_channels, input_size
        for item in self.cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # darknet's maxpool rounds up
            else:
                out, k, s = item
                layers += [nn.Conv2d(chs, width(out), k, s, padding=k // 2), nn.LeakyReLU(LEAKY, inplace=True)]
                chs = width(out)
            if item == "M" or item[2] == 2:
                side = -(-side // 2)  # 7x7/2 pad 3, 3x3/2 pad 1 and ceil-mode pooling all give ceil(n / 2)
        self.features = nn.Sequential(*layers)  # (N, C, 448, 448) -> (N, 1024, 7, 7)
        self.feature_side = side
        head: list[nn.Module] = [nn.Flatten()]
        flat = chs * side * side
        if self.bottleneck is not None:
            head.append(nn.Linear(flat, width(self.bottleneck)))  # linear: no activation
            flat = width(self.bottleneck)
        head += [nn.Linear(flat, fc_hidden), nn.LeakyReLU(LEAKY, inplace=True), nn.Dropout(drop_rate),
                 nn.Linear(fc_hidden, S * S * (B * 5 + num_classes))]  # linear output
        self.head = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        gain_init = {"a": LEAKY, "mode": "fan_in", "nonlinearity": "leaky_relu"}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, **gain_init)
                nn.init.zeros_(m.bias)
        last = self.head[-1]
        nn.init.normal_(last.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, in_channels, input_size, input_size)`` -> ``(N, S, S, B*5 + C)`` (module docstring)."""
        name = type(self).__name__
        check_image_batch(name, x, self.in_channels)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            hint = f"build it with input_size={x.shape[-1]}" if x.shape[-1] == x.shape[-2] else "resize the images"
            raise ValueError(f"{name} was built for {self.input_size}x{self.input_size} inputs (its FC reads a fixed "
                             f"map), got {x.shape[-2]}x{x.shape[-1]}; {hint}")
        out = self.head(self.features(x))  # (N, S*S*(B*5+C))
        return out.view(len(x), self.S, self.S, self.B * 5 + self.num_classes)

    def loss(self, outputs: torch.Tensor, targets: list[dict], image_size) -> dict[str, torch.Tensor]:
        """Eq. 3 on ``forward``'s outputs (`yolo_v1_loss`)."""
        return yolo_v1_loss(outputs, targets, image_size, num_boxes=self.B)

    def postprocess(self, outputs: torch.Tensor, image_size, score_thresh: float = 0.2, nms_thresh: float = 0.4,
                    max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Raw outputs -> per image ``{"boxes", "scores", "labels"}`` (module docstring: class-specific confidence,
        threshold, NMS per class, boxes clipped to the image, labels 1..C)."""
        if not 0.0 <= nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh!r}")
        _check_int("detect", "max_detections", max_detections, 0)
        height, width = _hw(image_size)
        boxes, scores = decode_boxes(outputs, (height, width), num_boxes=self.B)  # (N, S*S*B, 4), (N, S*S*B, C)
        return select_per_class(boxes, scores, (height, width), score_thresh, nms_thresh, max_detections)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_thresh: float = 0.2, nms_thresh: float = 0.4,
               max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Detections on ``images`` (N, C, H, W) in eval mode: per image ``{"boxes" (K, 4) xyxy pixels, "scores",
        "labels" (1..C)}``."""
        outputs = eval_forward(self, images)
        return self.postprocess(outputs.cpu(), tuple(images.shape[-2:]), score_thresh, nms_thresh, max_detections)


class FastYOLOv1(YOLOv1):
    """Fast YOLO (Sec. 2.2, darknet ``yolo-tiny.cfg``): 9 convolutions, FC 256 (linear), FC 4096, FC S*S*(B*5+C)."""

    cfg = FAST_YOLO_CFG
    bottleneck = FAST_YOLO_BOTTLENECK


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def _cell_grid(S: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(S, device=device, dtype=torch.float64).view(S, 1).expand(S, S)
    return rows, rows.t()  # (row i, column j) of each cell


def decode_boxes(outputs: torch.Tensor, image_size, num_boxes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Every predictor's box in input pixels and its class-specific confidences (Sec. 2, Eq. 1).

    Args:
        outputs: ``(N, S, S, B*5 + C)`` (module docstring's per-cell layout).
        image_size: ``(H, W)`` of the input (or one int for a square).
        num_boxes: B.

    Returns:
        ``boxes (N, S*S*B, 4)`` xyxy pixels (not clipped), cell by cell in row-major order, predictors in order;
        ``scores (N, S*S*B, C)``: p(c) of the box's cell times the box's confidence.
    """
    height, width = _hw(image_size)
    n, S = outputs.shape[0], outputs.shape[1]
    B = num_boxes
    pred = outputs[..., : B * 5].reshape(n, S, S, B, 5).to(torch.float64)
    probs = outputs[..., B * 5 :].to(torch.float64)  # (N, S, S, C)
    rows, cols = _cell_grid(S, outputs.device)
    cx = (cols[..., None] + pred[..., 0]) / S * width
    cy = (rows[..., None] + pred[..., 1]) / S * height
    w, h = pred[..., 2] ** 2 * width, pred[..., 3] ** 2 * height  # the network predicts square roots
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    scores = probs[..., None, :] * pred[..., 4:5]  # (N, S, S, B, C)
    return boxes.reshape(n, S * S * B, 4), scores.reshape(n, S * S * B, -1)


def _cell_targets(targets: list[dict], S: int, num_classes: int, height: int, width: int, device):
    """Per cell: object mask (N, S, S), the box (cx, cy, w, h) as image fractions (N, S, S, 4), the one-hot class
    (N, S, S, C). The first object whose centre falls in a cell owns it."""
    n = len(targets)
    obj = torch.zeros(n, S, S, dtype=torch.bool)
    box = torch.zeros(n, S, S, 4, dtype=torch.float64)
    cls = torch.zeros(n, S, S, num_classes, dtype=torch.float64)
    for k, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError("each target must be a dict with 'boxes' (M, 4) and 'labels' (M,)")
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float64).cpu().reshape(-1, 4)
        labels = torch.as_tensor(t["labels"]).cpu().reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError(f"target {k} has {len(boxes)} boxes but {len(labels)} labels")
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"target {k} has labels outside 1..{num_classes}: {sorted(set(labels.tolist()))}")
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
            w, h = (x2 - x1) / width, (y2 - y1) / height
            if w <= 0 or h <= 0:
                continue
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            i, j = min(max(math.floor(cy * S), 0), S - 1), min(max(math.floor(cx * S), 0), S - 1)
            if obj[k, i, j]:
                continue  # one object per cell (module docstring)
            obj[k, i, j] = True
            box[k, i, j] = torch.tensor([cx, cy, w, h], dtype=torch.float64)
            cls[k, i, j, label - 1] = 1.0
    return obj.to(device), box.to(device), cls.to(device)


def _xyxy(cx, cy, w, h) -> torch.Tensor:
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a[..., :]`` and ``b[..., :]`` pair by pair (xyxy, same shape ``(..., 4)``); 0 for empty unions."""
    inter = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def yolo_v1_loss(outputs: torch.Tensor, targets: list[dict], image_size, *, num_boxes: int = 2,
                 lambda_coord: float = LAMBDA_COORD, lambda_noobj: float = LAMBDA_NOOBJ) -> dict[str, torch.Tensor]:
    """The loss of Sec. 2.2, Eq. 3 (module docstring for each choice), averaged over the batch.

    Args:
        outputs: ``(N, S, S, B*5 + C)`` raw network outputs.
        targets: per image ``{"boxes": (M, 4) xyxy pixels, "labels": (M,) in 1..C}``.
        image_size: ``(H, W)`` of the input the boxes are in (or one int).

    Returns:
        ``{"loss", "loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class"}``, each summed over cells and
        predictors and divided by N; ``loss`` is their sum.
    """
    if outputs.ndim != 4 or outputs.shape[1] != outputs.shape[2]:
        raise ValueError(f"YOLO v1 outputs must be (N, S, S, B*5 + C), got {tuple(outputs.shape)}")
    n, S, depth = outputs.shape[0], outputs.shape[1], outputs.shape[3]
    B = num_boxes
    C = depth - 5 * B
    if C < 1:
        raise ValueError(f"outputs of depth {depth} leave no class scores for B={B} boxes per cell")
    if len(targets) != n:
        raise ValueError(f"{n} outputs but {len(targets)} targets")
    height, width = _hw(image_size)
    obj, gt, onehot = _cell_targets(targets, S, C, height, width, outputs.device)
    dtype = outputs.dtype
    pred = outputs[..., : 5 * B].reshape(n, S, S, B, 5)
    probs = outputs[..., 5 * B :]
    rows, cols = _cell_grid(S, outputs.device)

    # the responsible predictor: highest IoU of its decoded box with the cell's ground truth (no gradient)
    with torch.no_grad():
        p = pred.to(torch.float64)
        pcx, pcy = (cols[..., None] + p[..., 0]) / S, (rows[..., None] + p[..., 1]) / S
        pw, ph = p[..., 2] ** 2, p[..., 3] ** 2
        gcx, gcy, gw, gh = (gt[..., k, None].expand(n, S, S, B) for k in range(4))
        iou = _paired_iou(_xyxy(pcx, pcy, pw, ph), _xyxy(gcx, gcy, gw, gh))  # (N, S, S, B)
        rmse = ((pcx - gcx) ** 2 + (pcy - gcy) ** 2 + (pw - gw) ** 2 + (ph - gh) ** 2).sqrt()
        best = torch.where(iou.amax(-1) > 0, iou.argmax(-1), rmse.argmin(-1))  # darknet's fallback when all IoU 0
        resp = nn.functional.one_hot(best, B).bool() & obj[..., None]  # 1obj_ij: (N, S, S, B)
        conf_target = iou.to(dtype)  # "we want the confidence score to equal the IOU"

    r = resp.to(dtype)
    offset_x = (gt[..., 0] * S - cols).to(dtype)[..., None]  # the centre's offset within its cell
    offset_y = (gt[..., 1] * S - rows).to(dtype)[..., None]
    sqrt_w, sqrt_h = gt[..., 2].sqrt().to(dtype)[..., None], gt[..., 3].sqrt().to(dtype)[..., None]
    loss_xy = lambda_coord * (r * ((pred[..., 0] - offset_x) ** 2 + (pred[..., 1] - offset_y) ** 2)).sum()
    loss_wh = lambda_coord * (r * ((pred[..., 2] - sqrt_w) ** 2 + (pred[..., 3] - sqrt_h) ** 2)).sum()
    loss_obj = (r * (pred[..., 4] - conf_target) ** 2).sum()
    loss_noobj = lambda_noobj * ((1 - r) * pred[..., 4] ** 2).sum()
    loss_class = (obj[..., None].to(dtype) * (probs - onehot.to(dtype)) ** 2).sum()
    parts = {"loss_xy": loss_xy / n, "loss_wh": loss_wh / n, "loss_obj": loss_obj / n, "loss_noobj": loss_noobj / n,
             "loss_class": loss_class / n}
    return {"loss": sum(parts.values()), **parts}


_DEVIATIONS = (
    "no ImageNet pretraining of the first 20 convolutions (random init: Kaiming-normal, not darknet's uniform)",
    "digits recipe: 128x128 grayscale input (paper 448x448 RGB), width_mult 1/8 (Fast YOLO 1/4), FC 256 (paper 4096)",
    "no data augmentation (paper: random scaling/translation up to 20%, exposure/saturation up to 1.5x)",
    "responsible predictor when every IoU is 0: least RMSE of (x, y, w, h) (darknet; the paper does not say)",
)


@register_detector(YOLOv1, paper=YOLO, input_size=(3, 448, 448), dataset="PASCAL VOC 2007+2012",
                   deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPES["yolo_v1"])
def yolo_v1(**kwargs) -> YOLOv1:
    """YOLO v1 (Fig. 3): 24 convolutions + 2 FCs, S=7, B=2, 20 classes -> 7x7x30; 271,703,550 parameters."""
    return YOLOv1(**kwargs)


@register_detector(FastYOLOv1, paper=YOLO, input_size=(3, 448, 448), dataset="PASCAL VOC 2007+2012",
                   deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPES["fast_yolo_v1"])
def fast_yolo_v1(**kwargs) -> FastYOLOv1:
    """Fast YOLO (darknet yolo-tiny.cfg v1): 9 convolutions + 3 FCs -> 7x7x30; 45,089,374 parameters."""
    return FastYOLOv1(**kwargs)
