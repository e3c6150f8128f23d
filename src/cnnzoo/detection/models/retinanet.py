"""RetinaNet. T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollar, "Focal Loss for Dense Object Detection", ICCV 2017
(https://arxiv.org/abs/1708.02002); the layout is torchvision's ``retinanet_resnet50_fpn`` (torchvision 0.29), and
the authors' Detectron configs (``configs/12_2017_baselines/retinanet_R-50-FPN_1x.yaml``) settle what the paper
leaves open.

Key ideas
    One-stage detectors evaluate ~100k dense candidate locations per image, almost all easy background; with the
    cross entropy loss, their many small losses swamp the few hard examples (Sec. 3, Fig. 1). The focal loss
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) (Sec. 3.2, Eq. 5) down-weights the well-classified examples by the
    modulating factor (1 - p_t)^gamma, so the training concentrates on the hard ones without sampling or hard
    negative mining; alpha = 0.25, gamma = 2 work best (Table 1a/1b). The loss of an image is the focal loss summed
    over all anchors (those ignored excepted) and classes, divided by the number of anchors assigned to an object
    (Sec. 3.3: "normalized by the number of anchors assigned to a ground-truth box ... not total anchors, since the
    vast majority of anchors are easy negatives"). The classifier's last bias starts at b = -log((1 - pi) / pi) with
    pi = 0.01 (Sec. 3.3 "Class Imbalance and Model Initialization", Sec. 4.1 "Initialization"): every anchor then
    says "foreground with confidence 0.01", so the background anchors' loss is small in the first iteration
    (with b = 0 they "generate a large, destabilizing loss value"; Table 1a: pi = 0 "diverges").
    RetinaNet (Sec. 4, Fig. 3) is a ResNet with an FPN on top (P3 to P7, 256 channels; P6 a 3x3 stride-2 conv on
    C5, P7 ReLU then 3x3 stride-2 on P6; no P2) and two small fully convolutional subnets shared by all levels:
    the class subnet (four 3x3 conv-ReLU of 256 channels, then a 3x3 conv to K*A outputs with a sigmoid per class)
    and the box subnet (the same, ending in 4*A class-agnostic offsets). A = 9 anchors per location: sizes 32^2 to
    512^2 on P3 to P7, scales {2^0, 2^(1/3), 2^(2/3)} and aspect ratios {1:2, 1:1, 2:1}. An anchor is assigned to the
    object box it overlaps most if IoU >= 0.5, to background if IoU < 0.4, and ignored in between (Sec. 4
    "Anchors"). Inference (Sec. 4 "Inference"): per level the top 1000 predictions scoring above 0.05, decoded, then
    all levels merged and NMS at 0.5.

Which table the code reproduces
    ``retinanet_resnet50_fpn``: torchvision's network key for key (its 0.29 state dict):
        backbone.body.*              the zoo's ``resnet50`` (torchvision's conv1, bn1, layer1..layer4; no fc)
                                     with every BatchNorm2d a `FrozenBatchNorm2d` (buffers weight, bias,
                                     running_mean, running_var; no num_batches_tracked), as torchvision builds it
                                     with weights;
        backbone.fpn.inner_blocks.i.0 / layer_blocks.i.0    1x1 lateral and 3x3 output convs on C3, C4, C5;
        backbone.fpn.extra_blocks.p6 / .p7                  P6 and P7;
        head.classification_head.conv.i.0 (i = 0..3), .cls_logits; head.regression_head.conv.i.0, .bbox_reg.
    ``forward(x)`` returns torchvision's raw head outputs ``{"cls_logits": (N, A, K), "bbox_regression": (N, A, 4)}``
    in its order: level P3 ... P7, then position (row-major), then anchor (aspect ratio major, scale minor);
    `RetinaNet.anchors` gives the (A, 4) anchors in that order (tests/test_detection_retinanet.py compares both with
    torchvision's). Parameters at K = 91 (COCO's ids, torchvision), by hand:
        body: resnet50 less its fc = 25,557,032 - 2,049,000 = 23,508,032, of which BN weight+bias 2 * 26,560 =
              53,120 (BN channels: stem 64, layer1 1,408, layer2 3,584, layer3 10,240, layer4 11,264)
        fpn:  laterals (512 + 1024 + 2048) * 256 + 3 * 256 = 918,272; outputs 3 * 590,080; P6, P7 2 * 590,080
              (590,080 = 256 * 256 * 9 + 256), 2,950,400 in all
        head: 8 * 590,080 + (256 * 9 * 819 + 819) + (256 * 9 * 36 + 36) = 4,720,640 + 1,887,795 + 82,980
    34,068,119 with trainable BN (``frozen_bn=False``: torchvision's count when built without any weights, when it
    uses plain BatchNorm2d), 34,014,999 with the frozen BN (torchvision's count with weights: FrozenBatchNorm2d keeps
    gamma and beta as buffers, so the 53,120 are not parameters).

Training setup in the paper
    Sec. 4.1: ImageNet-1k pre-trained ResNet-50/101 ("FPN ... the same as [20]"), SGD over 8 GPUs, 16 images per
    minibatch, 90k iterations, lr 0.01 divided by 10 at 60k and 80k, weight decay 1e-4, momentum 0.9; horizontal
    flip only; images resized to a shorter side of 800 (600 for the ablations); loss = focal loss + "the standard
    smooth L1 loss used for box regression". COCO trainval35k; test-dev AP 39.1 (ResNet-101-FPN, 800). Detectron's
    config adds what the text omits: smooth L1 beta 0.11 (RETINANET.BBOX_REG_BETA), box offsets unweighted
    (1, 1, 1, 1), at most 100 detections per image, frozen BN ("AffineChannel") and conv1 + res2 frozen.

This implementation
    Deliberate differences from the paper, all on the card:
    - P6 from P5 by default (``p6_from="p5"``), as torchvision's v1 builder (``LastLevelP6P7(256, 256)``: its
      ``use_P5`` is in_channels == out_channels); the paper computes P6 from C5 (``p6_from="c5"``, 2048 inputs:
      4,128,768 more parameters; torchvision's ``retinanet_resnet50_fpn_v2`` does this).
    - anchors as torchvision's ``AnchorGenerator``: the scales are ``int(s * 2^(1/3))``, ``int(s * 2^(2/3))``
      (32, 40, 50 on P3, not 40.3, 50.8), the half-sizes rounded, each anchor centred on the top-left corner of its
      cell ``(x * stride, y * stride)``, and a level's stride ``image_size // grid_size`` (8 ... 128 for inputs
      that are multiples of 128; torchvision's transform pads to multiples of 32 only, so for other sizes its
      strides, and these, are not all the powers of 2 the paper implies).
    - low-quality matches (``low_quality_matches=True``, torchvision's ``allow_low_quality_matches`` and
      Detectron's ``_get_retinanet_blobs``): each object box is also matched to the anchor(s) it overlaps most,
      even below 0.5, so no object is left without a positive; the paper's text has only the two thresholds
      (``low_quality_matches=False``).
    - box loss: smooth L1 with beta 1/9 (``box_loss="smooth_l1"``: the paper's "standard smooth L1" with about
      Detectron's beta 0.11); torchvision's retinanet_resnet50_fpn uses plain L1 (``box_loss="l1"``). Both are
      summed over the positive anchors and divided by their number, per image, as the classification loss; the
      image losses are averaged (the paper: "the total focal loss of an image").
    - ``detect`` never reports class column 0 (the contract's labels are 1..K-1; torchvision's COCO weights never
      make index 0 positive) and keeps at most ``max_detections=100`` per image (the paper's Detectron; torchvision
      keeps 300). Images are not resized or normalised here (the caller's pipeline does that), so the raw outputs
      compare with torchvision's backbone + head.
    - the FPN convs start as torchvision's (Kaiming uniform with a = 1, i.e. Caffe2's XavierFill that Detectron
      uses, zero bias); the subnets N(0, 0.01) with zero bias, the class subnet's last bias at -log(99) (Sec. 4.1).
      The body starts as the zoo's resnet50 (He fan-out) unless ``backbone_weights`` gives a checkpoint (the
      paper's ImageNet start: ``backbone_weights="torchvision"``). torchvision (and Detectron) also freeze conv1
      and layer1 when they load weights (``trainable_backbone_layers=3``); not done here (no parameter changes).
    - torchvision's published COCO weights run with FrozenBatchNorm2d eps = 0 (its builder's ``overwrite_eps``);
      ``bn_eps`` sets it (default 1e-5, torchvision's class default and what its networks built without weights
      use). That file also has pre-0.13 key names (``head.classification_head.conv.0.weight``,
      ``backbone.fpn.inner_blocks.0.weight``); `upgrade_legacy_keys` renames them to this layout.
    Options: ``num_classes`` (91: torchvision's COCO ids, column 0 unused), ``in_channels`` (3), ``backbone``
    ("resnet50"; any zoo network with maps at reductions 8, 16 and 32 through the features API: the last map at
    each feeds the FPN; ``backbone_options`` are its extra ``create_model`` options, e.g. ``{"layers": [1, 1, 1,
    1]}`` for resnet18), ``backbone_weights``, ``fpn_channels`` (256; also the subnets' width), ``frozen_bn``
    (True; False keeps the backbone's BatchNorm2d, trained with the batch statistics: what training from scratch
    needs), ``bn_eps``, ``p6_from``, ``anchor_sizes`` (the base size on P3..P7, (32, 64, 128, 256, 512)),
    ``prior_probability`` (0.01), ``focal_alpha`` (0.25), ``focal_gamma`` (2.0), ``box_loss``,
    ``low_quality_matches``. ``create_detector(name, weights=FILE)`` derives ``num_classes``,
    ``fpn_channels``, ``p6_from``, ``in_channels`` and ``frozen_bn`` from the file (a file with
    ``num_batches_tracked`` keys, torchvision's network built without weights, loads with ``frozen_bn=False``).
    The shared detection core does the arithmetic: `cnnzoo.detection.anchors.retinanet_anchors` (on the grid
    sizes the backbone gives), `cnnzoo.detection.matching.Matcher` (0.5 / 0.4), `cnnzoo.detection.losses`
    (``retinanet_loss``, ``sigmoid_focal_loss``), `cnnzoo.detection.coder.BoxCoder` with weights (1, 1, 1, 1) and
    `cnnzoo.detection.nms.batched_nms`.
    digits-detection recipe (`DIGITS_RECIPE`): ResNet-18 with one block per stage, trainable BN (from scratch),
    64-channel FPN, anchors 16..256 (the digits are 17-42 pixels on a 128 canvas), Adam 1e-3, batch 16, 30
    epochs. Measured with a plain loop (not the CLI trainer; seed 0, one thread, the 300 default train canvases,
    inputs / 255, labels digit + 1, ``detect`` defaults, VOC all-point AP at IoU 0.5 on the 150 test canvases):
    ~9 CPU s per epoch; loss 3.82 (epoch 1) -> 1.30 (8) -> 0.58 (20) -> 0.39 (30); no score above 0.05 until
    epoch ~15 (mAP 0 after 5 and 10 epochs: the class scores sit at the prior pi = 0.01 that long), then mAP 0.016
    (15), 0.094 (20), 0.127 (25), 0.132 (30 epochs, 274 CPU s). Through `cnnzoo detect train
    retinanet_resnet50_fpn` (`cnnzoo.detection.train`: inputs normalised with the training split's mean and std,
    as every cnnzoo run; seed 0, one thread): mAP@0.5 0.098 / 0.112 / 0.142 / 0.241 after 5 / 10 / 15 / 20 epochs,
    0.457 after 30 (11-point 0.455, COCO AP@[.5:.95] 0.308; 316 CPU s). One seed; the seeds 0-2 table is to come.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...models.base import check_image_batch
from ...registry import Counterpart, Paper
from ..anchors import RETINANET_RATIOS, RETINANET_SCALES, RETINANET_SIZES, RETINANET_STRIDES, retinanet_anchors
from ..coder import RETINANET_WEIGHTS, BoxCoder
from ..losses import retinanet_loss
from ..matching import Matcher
from ..nms import batched_nms
from ..registry import register_detector

__all__ = ["DIGITS_RECIPE", "RETINANET_PAPER", "FPNBackbone", "FeaturePyramid", "FrozenBatchNorm2d", "LastLevelP6P7",
           "RetinaNet", "RetinaNetHead", "freeze_batchnorm", "retinanet_resnet50_fpn", "upgrade_legacy_keys"]

RETINANET_PAPER = Paper("Focal Loss for Dense Object Detection", "T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollar",
                        2017, "https://arxiv.org/abs/1708.02002")

PRIOR_PROBABILITY = 0.01  # Sec. 4.1 "Initialization": pi
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # Sec. 3.2 / Table 1b: alpha = 0.25, gamma = 2
FG_IOU, BG_IOU = 0.5, 0.4  # Sec. 4 "Anchors": IoU >= 0.5 object, [0, 0.4) background, in between ignored
SCORE_THRESH, NMS_THRESH, TOPK_CANDIDATES = 0.05, 0.5, 1000  # Sec. 4 "Inference"
DETECTIONS_PER_IMG = 100  # Detectron's TEST.DETECTIONS_PER_IM (torchvision: 300)
NUM_CONVS = 4  # the subnets' 3x3 conv-ReLU layers
BACKBONE_REDUCTIONS = (8, 16, 32)  # C3, C4, C5


# ------------------------------------------------------------------------------------------- frozen BatchNorm
class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all buffers (torchvision's ``FrozenBatchNorm2d``
    layout: ``weight``, ``bias``, ``running_mean``, ``running_var``; no ``num_batches_tracked``): ``y = (x - mean) /
    sqrt(var + eps) * weight + bias`` in training and evaluation alike."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, float(eps)
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module, eps: float | None = None) -> nn.Module:
    """Every ``nn.BatchNorm2d`` in ``module`` replaced (in place) by a `FrozenBatchNorm2d` holding its affine
    parameters and running statistics (its eps, or ``eps``); returns ``module`` (or the frozen layer when
    ``module`` itself is a BatchNorm2d)."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, module.eps if eps is None else eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen.to(module.running_mean.device if module.running_mean is not None else "cpu")
    for name, child in module.named_children():
        new = freeze_batchnorm(child, eps)
        if new is not child:
            setattr(module, name, new)
    return module


def _set_bn_eps(module: nn.Module, eps: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            m.eps = float(eps)


# --------------------------------------------------------------------------------------------------- the FPN
class LastLevelP6P7(nn.Module):
    """P6 = 3x3 stride-2 conv on P5 (torchvision's v1) or on C5 (the paper, Sec. 4); P7 = 3x3 stride-2 conv on
    ReLU(P6). Kaiming-uniform (a = 1) weights and zero biases, as torchvision."""

    def __init__(self, in_channels: int, out_channels: int, from_c5: bool) -> None:
        super().__init__()
        self.from_c5 = bool(from_c5)
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, p5: torch.Tensor, c5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p6 = self.p6(c5 if self.from_c5 else p5)
        return p6, self.p7(F.relu(p6))


class FeaturePyramid(nn.Module):
    """The FPN of Lin et al. 2017 (CVPR) as RetinaNet uses it: a 1x1 lateral conv on each of C3, C4, C5
    (``inner_blocks.i.0``), the top-down sum with the nearest-neighbour upsampled coarser level, a 3x3 output conv
    (``layer_blocks.i.0``), then P6 and P7 (``extra_blocks``). Returns [P3, P4, P5, P6, P7]."""

    def __init__(self, in_channels: Sequence[int], channels: int, p6_from_c5: bool) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, channels, 1)) for c in in_channels)
        self.layer_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1))
                                          for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)
        self.extra_blocks = LastLevelP6P7(in_channels[-1] if p6_from_c5 else channels, channels, p6_from_c5)

    def forward(self, c: list[torch.Tensor]) -> list[torch.Tensor]:
        last = self.inner_blocks[-1](c[-1])
        out = [self.layer_blocks[-1](last)]
        for i in range(len(c) - 2, -1, -1):
            lateral = self.inner_blocks[i](c[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            out.insert(0, self.layer_blocks[i](last))
        p6, p7 = self.extra_blocks(out[-1], c[-1])
        return [*out, p6, p7]


class FPNBackbone(nn.Module):
    """``body`` (the zoo network's C3, C4, C5 through the features API) and ``fpn``: torchvision's
    ``BackboneWithFPN`` keys."""

    def __init__(self, body: nn.Module, fpn: FeaturePyramid) -> None:
        super().__init__()
        self.body, self.fpn = body, fpn

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(list(self.body(x)))


# -------------------------------------------------------------------------------------------------- the head
def _subnet(channels: int) -> nn.Sequential:
    """Four 3x3 conv-ReLU layers of ``channels`` (keys ``i.0``: torchvision's Conv2dNormActivation without norm)."""
    return nn.Sequential(*(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
                           for _ in range(NUM_CONVS)))


def _flatten_level(y: torch.Tensor, width: int) -> torch.Tensor:
    """(N, A * width, H, W) -> (N, H * W * A, width): position-major, anchor-minor (torchvision's order)."""
    n, _, h, w = y.shape
    return y.view(n, -1, width, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, width)


class RetinaNetClassificationHead(nn.Module):
    """The class subnet (Fig. 3c): ``conv`` (4 x 3x3 conv-ReLU), ``cls_logits`` (3x3 conv to A * K)."""

    def __init__(self, channels: int, num_anchors: int, num_classes: int, prior_probability: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = _subnet(channels)
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        for m in self.modules():  # Sec. 4.1: N(0, 0.01) weights, zero biases ...
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # ... but the last: b = -log((1 - pi) / pi), so sigmoid(b) = pi
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([_flatten_level(self.cls_logits(self.conv(f)), self.num_classes) for f in features], 1)


class RetinaNetRegressionHead(nn.Module):
    """The box subnet (Fig. 3d): ``conv`` (4 x 3x3 conv-ReLU), ``bbox_reg`` (3x3 conv to A * 4)."""

    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = _subnet(channels)
        self.bbox_reg = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([_flatten_level(self.bbox_reg(self.conv(f)), 4) for f in features], 1)


class RetinaNetHead(nn.Module):
    """``classification_head`` and ``regression_head``, shared by all pyramid levels."""

    def __init__(self, channels: int, num_anchors: int, num_classes: int, prior_probability: float) -> None:
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(channels, num_anchors, num_classes, prior_probability)
        self.regression_head = RetinaNetRegressionHead(channels, num_anchors)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"cls_logits": self.classification_head(features),
                "bbox_regression": self.regression_head(features)}


# ----------------------------------------------------------------------------------------------- the network
def _check_int(owner: str, key: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner} option {key} must be an integer >= {low}, got {value!r}")


class RetinaNet(nn.Module):
    """RetinaNet (Sec. 4, Fig. 3): a zoo backbone with an FPN (P3-P7) and the class and box subnets. See the
    module notes for the layout, the options and the deviations."""

    def __init__(self, *, num_classes: int = 91, in_channels: int = 3, backbone: str = "resnet50",
                 backbone_options: dict | None = None, backbone_weights: str | None = None, fpn_channels: int = 256,
                 frozen_bn: bool = True, bn_eps: float = 1e-5, p6_from: Literal["p5", "c5"] = "p5",
                 anchor_sizes: list[int] | None = None, prior_probability: float = PRIOR_PROBABILITY,
                 focal_alpha: float = FOCAL_ALPHA, focal_gamma: float = FOCAL_GAMMA,
                 box_loss: Literal["smooth_l1", "l1"] = "smooth_l1", low_quality_matches: bool = True) -> None:
        super().__init__()
        from ...registry import UnknownModelError, create_model
        from ...segmentation.models.pspnet import _backbone_options

        name = "RetinaNet"
        _check_int(name, "num_classes", num_classes, 2)
        _check_int(name, "in_channels", in_channels)
        _check_int(name, "fpn_channels", fpn_channels)
        if p6_from not in ("p5", "c5"):
            raise ValueError(f"{name} option p6_from must be 'p5' (torchvision) or 'c5' (the paper), got {p6_from!r}")
        if box_loss not in ("smooth_l1", "l1"):
            raise ValueError(f"{name} option box_loss must be 'smooth_l1' (the paper) or 'l1' (torchvision), "
                             f"got {box_loss!r}")
        if not 0.0 < float(prior_probability) < 1.0:
            raise ValueError(f"{name} option prior_probability must be in (0, 1), got {prior_probability!r}")
        if not float(focal_gamma) >= 0.0 or not float(focal_alpha) <= 1.0:
            raise ValueError(f"{name}: focal_gamma must be >= 0 and focal_alpha <= 1 (negative: no alpha weighting), "
                             f"got {focal_gamma!r}, {focal_alpha!r}")
        if not float(bn_eps) >= 0.0:
            raise ValueError(f"{name} option bn_eps must be >= 0, got {bn_eps!r}")
        sizes = RETINANET_SIZES if anchor_sizes is None else anchor_sizes
        if (isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) != 5
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)):
            raise ValueError(f"{name} option anchor_sizes must be 5 integers >= 1 (the base anchor size on P3 .. P7; "
                             f"the paper's {list(RETINANET_SIZES)}), got {anchor_sizes!r}")
        if not isinstance(backbone, str) or not backbone:
            raise ValueError(f"{name} option backbone must be a zoo network's name ('resnet50', 'resnet18', "
                             f"'mobilenet_v2', ...), got {backbone!r}")
        extra = _backbone_options(name, backbone, backbone_options)
        try:
            if backbone_weights is None:
                net = create_model(backbone, in_channels=in_channels, **extra)
            else:
                net = create_model(backbone, in_channels=in_channels, weights=backbone_weights, **extra)
        except UnknownModelError as exc:
            raise UnknownModelError(f"{name} option backbone: {exc.args[0]}") from exc
        if getattr(net, "no_feature_maps", None) or not getattr(net, "feature_info", None):
            raise ValueError(f"{name}: backbone {backbone!r} has no feature maps (features API) for an FPN")
        from ...models.features import features_only_model

        last: dict[int, int] = {}
        for i, f in enumerate(net.feature_info):  # the last map at each reduction: C3, C4, C5
            last[f["reduction"]] = i
        missing = [r for r in BACKBONE_REDUCTIONS if r not in last]
        if missing:
            raise ValueError(f"{name}: backbone {backbone!r} gives feature maps at reductions {sorted(last)}, but the "
                             f"FPN needs C3, C4, C5 at reductions 8, 16, 32 (missing {missing}); take a network "
                             f"with maps at strides 8, 16 and 32 (resnet18, resnet50, mobilenet_v2, ...)")
        body = features_only_model(net, [last[r] for r in BACKBONE_REDUCTIONS])  # keys: the network's own
        if frozen_bn:
            freeze_batchnorm(body)
        _set_bn_eps(body, bn_eps)
        chans = body.feature_info.channels()
        self.backbone = FPNBackbone(body, FeaturePyramid(chans, fpn_channels, p6_from == "c5"))
        self.num_anchors_per_location = len(RETINANET_RATIOS) * len(RETINANET_SCALES)  # 9
        self.head = RetinaNetHead(fpn_channels, self.num_anchors_per_location, num_classes, float(prior_probability))
        self.num_classes, self.in_channels = num_classes, in_channels
        self.min_input_size = max(1, getattr(net, "min_input_size", 1))
        self.anchor_sizes = tuple(int(s) for s in sizes)
        self.coder = BoxCoder(RETINANET_WEIGHTS)
        self.matcher = Matcher(FG_IOU, BG_IOU, allow_low_quality_matches=bool(low_quality_matches))
        self.focal_alpha, self.focal_gamma, self.box_loss = float(focal_alpha), float(focal_gamma), box_loss
        self._grid_cache: dict[tuple[int, int], list[tuple[int, int]]] = {}

    # --------------------------------------------------------------------------------------------- forward
    def check_input(self, x: torch.Tensor) -> None:
        """ValueError naming what the network expects when ``x`` does not fit it."""
        check_image_batch("RetinaNet", x, self.in_channels, self.min_input_size)

    def pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[P3, P4, P5, P6, P7] of ``images`` (N, C, H, W)."""
        self.check_input(images)
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head outputs ``{"cls_logits": (N, A, K), "bbox_regression": (N, A, 4)}`` (torchvision's order)."""
        return self.head(self.pyramid(images))

    # --------------------------------------------------------------------------------------------- anchors
    def grid_sizes(self, image_size: tuple[int, int] | int) -> list[tuple[int, int]]:
        """The (h, w) of P3 .. P7 for an input of ``image_size`` (H, W), from a forward pass on the meta device
        (no arithmetic), cached per size."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        if (h, w) not in self._grid_cache:
            from torch.func import functional_call

            meta = {k: torch.empty_like(v, device="meta")
                    for k, v in [*self.backbone.named_parameters(), *self.backbone.named_buffers()]}
            self.check_input(torch.empty(1, self.in_channels, h, w, device="meta"))
            with torch.no_grad():
                maps = functional_call(self.backbone, meta, (torch.empty(1, self.in_channels, h, w, device="meta"),))
            self._grid_cache[(h, w)] = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        return list(self._grid_cache[(h, w)])

    def _anchors_for(self, image_size: tuple[int, int], grids: list[tuple[int, int]]) -> list[torch.Tensor]:
        anchors = retinanet_anchors(image_size, RETINANET_STRIDES, self.anchor_sizes, feature_sizes=grids)
        return list(anchors.split([g[0] * g[1] * self.num_anchors_per_location for g in grids]))

    def anchors(self, image_size: tuple[int, int] | int) -> torch.Tensor:
        """The (A, 4) xyxy anchors of an input of ``image_size`` (H, W) in the order of the head outputs: level,
        position (row-major), anchor (ratio-major, scale-minor); torchvision's ``AnchorGenerator`` values."""
        size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        return torch.cat(self._anchors_for(size, self.grid_sizes(size)))

    # ------------------------------------------------------------------------------------------------ loss
    def loss(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
             image_size: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        """The focal loss and the box loss of ``outputs`` (``forward`` of images of ``image_size``) against
        ``targets`` (per image {"boxes": (M, 4) xyxy pixels, "labels": (M,) in 1..K-1}): per image the focal loss
        summed over every anchor not ignored and every class, and the box loss summed over the positive anchors,
        each divided by the number of positive anchors (at least 1); both averaged over the images
        (`cnnzoo.detection.losses.retinanet_loss`). Returns {"classification", "bbox_regression", "loss"}."""
        cls_logits, deltas = outputs["cls_logits"], outputs["bbox_regression"]
        anchors = self.anchors(image_size)
        n, a, k = cls_logits.shape
        if a != len(anchors):
            raise ValueError(f"RetinaNet loss: the outputs have {a} anchors but an input of {image_size} has "
                             f"{len(anchors)}; pass the image size the outputs were computed for")
        if len(targets) != n:
            raise ValueError(f"RetinaNet loss: {n} images of outputs but {len(targets)} targets")
        clean = []
        for i, t in enumerate(targets):
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4)
            labels = torch.as_tensor(t["labels"], dtype=torch.int64).reshape(-1)
            if len(labels) != len(boxes):
                raise ValueError(f"RetinaNet loss: image {i} has {len(boxes)} boxes but {len(labels)} labels")
            if len(labels) and (int(labels.min()) < 1 or int(labels.max()) >= k):
                raise ValueError(f"RetinaNet loss: image {i} has labels {sorted(set(labels.tolist()))}; valid: "
                                 f"1..{k - 1} (the classifier's {k} columns; column 0 is never an object)")
            clean.append({"boxes": boxes, "labels": labels})
        return retinanet_loss(cls_logits, deltas, anchors, clean, self.coder, self.matcher, alpha=self.focal_alpha,
                              gamma=self.focal_gamma, box_loss=self.box_loss)

    # ------------------------------------------------------------------------------------------- inference
    def detect(self, images: torch.Tensor, score_thresh: float = SCORE_THRESH, nms_thresh: float = NMS_THRESH,
               max_detections: int = DETECTIONS_PER_IMG, topk_candidates: int = TOPK_CANDIDATES,
               ) -> list[dict[str, torch.Tensor]]:
        """Sec. 4 "Inference", in eval mode without gradients: per level, the class scores (sigmoid) above
        ``score_thresh``, at most ``topk_candidates`` of them, decoded at their anchors and clipped to the image;
        then all levels merged, NMS at ``nms_thresh`` per class, the best ``max_detections``. Returns per image
        {"boxes": (D, 4), "scores": (D,), "labels": (D,) in 1..K-1}, by decreasing score."""
        if not 0.0 <= float(nms_thresh) <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh!r}")
        _check_int("detect", "max_detections", max_detections, 0)
        _check_int("detect", "topk_candidates", topk_candidates, 1)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                features = self.pyramid(images)
                out = self.head(features)
        finally:
            self.train(was_training)
        h, w = int(images.shape[-2]), int(images.shape[-1])
        grids = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        anchors = [a.to(images.device) for a in self._anchors_for((h, w), grids)]
        per_level = [len(a) for a in anchors]
        k = self.num_classes - 1  # column 0 is never an object
        results = []
        for i in range(images.shape[0]):
            boxes_all, scores_all, labels_all = [], [], []
            logits = out["cls_logits"][i].split(per_level)
            deltas = out["bbox_regression"][i].split(per_level)
            for lg, dl, an in zip(logits, deltas, anchors):
                scores = torch.sigmoid(lg[:, 1:]).flatten()
                idx = torch.nonzero(scores > score_thresh).flatten()
                scores = scores[idx]
                top = scores.topk(min(topk_candidates, len(idx)))
                idx, scores = idx[top.indices], top.values
                anchor_idx = torch.div(idx, k, rounding_mode="floor")
                boxes = self.coder.decode(dl[anchor_idx], an[anchor_idx])
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
                boxes_all.append(boxes)
                scores_all.append(scores)
                labels_all.append(idx % k + 1)
            boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
            keep = batched_nms(boxes.cpu(), scores.cpu(), labels.cpu(), float(nms_thresh))[:max_detections]
            keep = keep.to(boxes.device)
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results

    # -------------------------------------------------------------------------------------------- weights
    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """The options a state dict in this layout needs: ``num_classes`` and ``fpn_channels`` (``cls_logits``),
        ``p6_from`` (P6's inputs: the FPN width means P5), ``in_channels`` (a ResNet body's conv1) and
        ``frozen_bn`` (False when the body's BN has ``num_batches_tracked``: torchvision built without weights)."""
        opts: dict[str, object] = {}
        cls, reg = sd.get("head.classification_head.cls_logits.weight"), sd.get("head.regression_head.bbox_reg.weight")
        if isinstance(cls, torch.Tensor) and isinstance(reg, torch.Tensor) and cls.ndim == 4 and reg.ndim == 4:
            anchors = reg.shape[0] // 4
            if anchors and cls.shape[0] % anchors == 0:
                opts["num_classes"] = int(cls.shape[0] // anchors)
            opts["fpn_channels"] = int(cls.shape[1])
            p6 = sd.get("backbone.fpn.extra_blocks.p6.weight")
            if isinstance(p6, torch.Tensor) and p6.ndim == 4:
                opts["p6_from"] = "p5" if p6.shape[1] == cls.shape[1] else "c5"
        conv1 = sd.get("backbone.body.conv1.weight")
        if isinstance(conv1, torch.Tensor) and conv1.ndim == 4:
            opts["in_channels"] = int(conv1.shape[1])
        body_bn = [k for k in sd if k.startswith("backbone.body.") and k.endswith(".running_var")]
        if body_bn:
            opts["frozen_bn"] = not any(k.startswith("backbone.body.") and k.endswith(".num_batches_tracked")
                                        for k in sd)
        return opts


def upgrade_legacy_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision RetinaNet state dict with pre-0.13 key names (the published ``retinanet_resnet50_fpn_coco``
    file: ``backbone.fpn.inner_blocks.0.weight``, ``head.classification_head.conv.2.weight``) renamed to this
    layout (``backbone.fpn.inner_blocks.0.0.weight``, ``head.classification_head.conv.1.0.weight``), as
    torchvision's own ``_load_from_state_dict`` upgrades them; other keys unchanged."""
    import re

    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)", key)
        if m:
            key = f"{m.group(1)}.0.{m.group(2)}"
        m = re.fullmatch(r"(head\.(?:classification|regression)_head\.conv)\.(\d+)\.(weight|bias)", key)
        if m:
            key = f"{m.group(1)}.{int(m.group(2)) // 2}.0.{m.group(3)}"
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ registration
#: digits-detection (1 channel, 128 x 128 canvases, digits 17-42 pixels): see the module notes (mAP@0.5 0.457, seed 0).
DIGITS_RECIPE = {"options": {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]},
                             "frozen_bn": False, "fpn_channels": 64, "anchor_sizes": [16, 32, 64, 128, 256]},
                 "optimizer": "adam", "lr": 1e-3, "epochs": 30, "batch_size": 16}
_DEVIATIONS = (
    "P6 from P5 (torchvision's v1 LastLevelP6P7(256, 256)); the paper's P6 from C5 is p6_from='c5'",
    ("anchors as torchvision's AnchorGenerator: scales int(s * 2^(i/3)) (32, 40, 50), rounded half-sizes, centred "
     "on the cell's top-left corner, stride image_size // grid"),
    ("low-quality matches (each box's best anchor is positive, torchvision and Detectron); the paper's text has "
     "only the 0.5 / 0.4 thresholds: low_quality_matches=False"),
    "box loss smooth L1, beta 1/9 (the paper, Detectron); torchvision's L1 is box_loss='l1'",
    "detect skips class column 0 and keeps 100 detections per image (Detectron; torchvision 300)",
    ("BatchNorm frozen by default (torchvision with weights, Detectron's AffineChannel); conv1 and layer1 are not "
     "frozen (torchvision and Detectron freeze them when they load weights)"),
    "no resizing or normalisation inside the network (torchvision's GeneralizedRCNNTransform is the caller's)",
)


@register_detector(RetinaNet, paper=RETINANET_PAPER, input_size=(3, 800, 800), dataset="COCO trainval35k",
                   deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPE,
                   counterparts=(Counterpart("torchvision", "retinanet_resnet50_fpn"),))
def retinanet_resnet50_fpn(**kwargs) -> RetinaNet:
    """RetinaNet on ResNet-50-FPN (P3-P7, 9 anchors per location, focal loss), torchvision's layout."""
    return RetinaNet(**kwargs)
