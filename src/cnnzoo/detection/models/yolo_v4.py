"""YOLOv4. A. Bochkovskiy, C.-Y. Wang, H.-Y. M. Liao, "YOLOv4: Optimal Speed and Accuracy of Object Detection",
arXiv 2020. https://arxiv.org/abs/2004.10934 -- with the authors' darknet configuration (github.com/AlexeyAB/darknet
``cfg/yolov4.cfg``) and YOLO layer (``src/yolo_layer.c``), which settle what the paper leaves open.

Key ideas
    A one-stage detector assembled from tested parts (Sec. 3.4, "YOLOv4 consists of"): backbone CSPDarknet53
    (Darknet-53's 1-2-8-8-4 residual stages, each made a Cross Stage Partial stage: the stage's input is split in two
    1x1 paths, one goes through the residual blocks, the other around them, and the two are concatenated and fused
    by a 1x1 convolution), Mish activation in the backbone (``x tanh(softplus(x))``); neck: an SPP block (Sec. 3.4:
    max-pooling 5, 9 and 13 with stride 1, concatenated with its input: a larger receptive field at no loss of
    resolution) and PANet path aggregation (a top-down path as FPN, then a bottom-up one), with YOLOv4's
    modification (Fig. 6: concatenation instead of PAN's addition); head: YOLOv3's, at 3 scales (strides 8, 16,
    32), 3 anchors each, logistic objectness and independent logistic class scores. The "bag of freebies" (training
    only) and "bag of specials" (cheap at inference) ablated in Sec. 4 (Tables 2-10) decide the recipe: CIoU loss,
    Mosaic, DropBlock, eliminated grid sensitivity, several anchors per object, label smoothing, CmBN, SAT, ...

Which figure/table the code reproduces
    The network of ``cfg/yolov4.cfg`` (162 layers; darknet ``pad=1`` means padding k // 2; every convolution but the
    three output ones has BN and no bias; Mish in the backbone, leaky ReLU 0.1 in neck and head):

    backbone (layers 0-104)    3x3 32; then five CSP stages, each 3x3/2 down -> C, two 1x1 "split" paths (part 2,
                               kept aside: C -> C/2; part 1, into the blocks: C -> C/2), n residual blocks (1x1 C/2
                               -> C/2, 3x3 C/2 -> C/2, ``shortcut`` add), a 1x1 C/2 -> C/2 transition, the concat
                               [blocks' path, part 2] and a 1x1 fuse -> C. C = 64, 128, 256, 512, 1024 and n = 1, 2,
                               8, 8, 4; the first stage is wider inside (both paths 64, its block 1x1 64 -> 32, 3x3
                               32 -> 64, concat 128 -> 64). Outputs: layer 54 (256, stride 8), 85 (512, stride 16),
                               104 (1024, stride 32).
    SPP (105-116)              1x1 512, 3x3 1024, 1x1 512; max-pool 5, 9, 13 (stride 1, same size); ``route
                               -1,-3,-5,-6`` = concat [pool13, pool9, pool5, input] (2048); 1x1 512, 3x3 1024,
                               1x1 512 -> P5 (116).
    PAN top-down (117-136)     1x1 256 + upsample x2 of P5, concat [1x1 256 of layer 85, upsampled] (512), five
                               convs 1x1 256 / 3x3 512 / 1x1 256 / 3x3 512 / 1x1 256 -> P4 (126); the same at
                               128 / 256 with layer 54 -> N3 (136).
    PAN bottom-up (140-158)    3x3/2 256 of N3, concat [it, P4] (512), five convs (256 / 512) -> N4 (147);
                               3x3/2 512 of N4, concat [it, P5] (1024), five convs (512 / 1024) -> N5 (158).
    heads (137-161)            on N3, N4, N5: 3x3 256 / 512 / 1024 (BN, leaky), 1x1 -> 3 * (5 + C) linear with a
                               bias; ``[yolo]`` layers with masks 0,1,2 / 3,4,5 / 6,7,8 of the 9 anchors (pixels at
                               608): (12,16) (19,36) (40,28) | (36,75) (76,55) (72,146) | (142,110) (192,243)
                               (459,401); ``scale_x_y`` 1.2 / 1.1 / 1.05.

    Parameters at 80 classes: 64,363,101 (backbone 26,617,184; the derivation, layer by layer from the cfg, is in
    tests/test_detection_yolo_v4.py; BN counts 2 per channel, its running statistics are buffers).

Training setup in the paper (Sec. 4.1, and the cfg)
    MS COCO 2017 train (test-dev for Tables 8-10), 500,500 steps, batch 64 (mini-batch 8 or 4), multi-scale
    training; the paper's defaults: SGD, learning rate 0.01, x0.1 at 400k and 450k steps, momentum 0.9, weight
    decay 5e-4; the released cfg (genetic-algorithm hyper-parameters, Table 4 "GA"): learning rate 0.0013 with
    1,000 warm-up steps (``burn_in``), momentum 0.949, ``subdivisions=8``, Mosaic, HSV jitter (hue 0.1, saturation
    and exposure 1.5), ``jitter`` 0.3; the backbone ImageNet-pretrained (Tables 2-3, 6). The YOLO layer's settings:
    ``ignore_thresh`` 0.7, ``iou_thresh`` 0.213, ``iou_normalizer`` 0.07, ``cls_normalizer`` 1.0, ``iou_loss=ciou``,
    ``nms_kind=greedynms`` (greedy NMS in this cfg; Sec. 3.4 lists DIoU-NMS among the specials), ``beta_nms`` 0.6,
    ``max_delta`` 5. Result: 43.5% AP (65.7% AP50) on COCO test-dev at 608, ~65 fps on a Tesla V100 (abstract).

This implementation
    Output: ``forward`` returns a list of three tensors, strides 8, 16, 32 (darknet's order of the ``[yolo]``
    layers), each ``(N, A, H, W, 5 + C)``: per cell and anchor ``[tx, ty, tw, th, objectness, class 1..C]`` (darknet
    keeps each anchor's 5 + C channels together, this is the same layout, permuted to channels last).
    Decoding (`decode_level`, darknet ``get_yolo_box`` with ``scale_x_y``): ``x = (s sigmoid(tx) - (s - 1) / 2 + j)
    * stride``, the same for y; ``w = exp(tw) * anchor_w`` (pixels), ``h`` likewise. ``s`` > 1 is the paper's
    "eliminate grid sensitivity" (Sec. 3.4 / Table 4 "S"): with s = 1 the centre reaches a cell's border only at
    tx = -inf / +inf. ``tw, th`` are clamped at log(1000 / 16) before exp (torchvision's box coder; darknet clips
    gradients instead with ``max_delta``).
    `yolo_v4_loss` (``yolo_layer.c``'s deltas written as a loss, summed over levels, cells, anchors, classes and
    divided by the batch size):
      - anchors for an object: the best of all 9 by the IoU of (w, h) alone (boxes centred together); if it belongs
        to a level, the cell holding the object's centre on that level and that anchor are responsible; every other
        anchor of the level whose shape IoU exceeds ``iou_thresh`` (0.213) is responsible too (Table 4 "IT": "using
        multiple anchors for a single ground truth"; 1.0 turns it off). A later object on the same cell and anchor
        replaces an earlier one (darknet overwrites the deltas);
      - box: ``iou_normalizer`` (0.07) x the CIoU loss (`cnnzoo.detection.losses.ciou_loss`, Zheng et al. Eq. 9-11)
        of each responsible prediction's decoded box against its object (``box_loss``: "ciou", "diou", "giou");
      - objectness: binary cross-entropy (darknet's delta ``t - sigmoid`` is its gradient): 1 for responsible
        predictions, 0 for the others unless their decoded box overlaps some object by more than ``ignore_thresh``
        (0.7; those are ignored);
      - classes: binary cross-entropy per class of the responsible predictions (independent logistic classifiers,
        YOLOv3), targets 1 / 0, or with ``label_smoothing`` eps ``1 - eps / 2`` / ``eps / 2`` (darknet
        ``label_smooth_eps``: ``y (1 - eps) + 0.5 eps``; Table 4 "LS").
    `YOLOv4.detect`: score = objectness x class probability for each box and class, kept above ``score_thresh``
    (0.25, darknet ``detector test``'s default), NMS per class at ``nms_thresh`` (0.45, darknet's), boxes in input
    pixels clipped to the image, at most ``max_detections`` by score; labels 1..C. Greedy IoU NMS, as the cfg's
    ``greedynms`` (not the DIoU-NMS of Sec. 3.4).

Bag of freebies / specials: what is an option here
    Options (the paper's tables): ``activation`` "mish" (default) or "leaky" in the backbone (Table 2-3 "Mish";
    the neck and head stay leaky, as the cfg); ``box_loss`` "ciou" (default) / "diou" / "giou" (Table 4 "loss";
    not darknet's MSE); ``scale_x_y`` (Table 4 "S": (1.2, 1.1, 1.05) per stride 8, 16, 32; (1, 1, 1) turns it off);
    ``iou_thresh`` (Table 4 "IT", 0.213); ``label_smoothing`` (Table 2-4 "LS", 0: off); ``dropblock`` (DropBlock's
    drop probability, 0: off; Sec. 3.4 lists DropBlock in the BoF of both the backbone and the detector)
    with ``dropblock_size`` (7, Ghiasi et al.'s ResNet value, capped at the map's side), applied to the three PAN
    outputs before the heads (the paper does not say where; yolov4.cfg has none); ``sam`` (the modified, point-wise
    SAM of Fig. 5: ``x * sigmoid(BN(conv1x1(x)))``, on the same three maps; Table 5 "SAM", off as in yolov4.cfg);
    Mosaic (Table 2-4 "M") is a training option, `cnnzoo.detection.augment.mosaic`, ``DetConfig(mosaic=True)``;
    cosine annealing (Table 4 "CA") is the trainer's ``--schedule cosine``.
    Not implemented: CutMix, CmBN (Cross mini-Batch Normalisation: plain BN here), SAT (self-adversarial training),
    GA (genetic hyper-parameter search), DM (dynamic mini-batch), OA (optimised anchors: the digits recipe's anchors
    are fixed below), random training shapes, DIoU-NMS, MiWRC, RFB / ASFF / BiFPN (alternatives the paper surveys), Gaussian
    YOLO, the MSE box loss, CSPResNeXt-50 (Table 2's other backbone), ImageNet pretraining.

    Options: ``num_classes`` (C, 80), ``in_channels`` (3), ``input_size`` (608: the square side; any multiple of 32
    is accepted at run time, the anchors are pixels of this size), ``anchors`` (9 (w, h) pairs in input pixels,
    grouped by three per stride 8 / 16 / 32; default the cfg's, scaled by input_size / 608 -- darknet keeps them in
    pixels whatever the input; objects shrink with the image), ``width_mult`` (1.0: every convolution's width,
    rounded, at least 1), ``depth`` (the residual blocks per stage, (1, 2, 8, 8, 4)), and the BoF/BoS options above,
    plus ``ignore_thresh`` (0.7), ``iou_normalizer`` (0.07).
    Initialisation: PyTorch's defaults for the convolutions, BN weight 1 / bias 0; the output convolutions' bias
    sets the objectness prior to 0.01 and the classes to 1 / C (a deviation: darknet initialises them uniformly;
    this keeps the first steps' objectness loss from swamping the rest on small data).

digits-detection recipe (`DIGITS_RECIPE`, deviations on the card): 128x128 grayscale canvases (maps 16 / 8 / 4),
width 1/8, depth (1, 1, 1, 1, 1), anchors chosen for the digits' boxes (3..41 pixels wide, 13..41 tall): the 9 centres
of a k-means over the training boxes with the 1 - IoU distance (YOLOv2's; computed once, rounded), 2,000 training
canvases, Adam 1e-3, batch 16, 7 epochs, no Mosaic, no pretraining (800,747 parameters at 10 classes). Measured
(`cnnzoo detect train yolo_v4 --threads 1`, seed 0; evaluation at score 0.005, NMS 0.45): test mAP@0.5 52.8%
(11-point 52.2%, COCO AP@[.5:.95] 17.4%) on the 150 test canvases after 7 epochs (3.6, 9.9, 27.9, 48.4, 53.0, 53.7,
52.8% per epoch); 69-137 s per epoch on one shared thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...models.base import check_image_batch
from ...registry import Paper
from ..losses import ciou_loss, diou_loss, giou_loss
from ..postprocess import eval_forward, select_per_class
from ..registry import register_detector

__all__ = ["COCO_ANCHORS", "DEPTH", "DIGITS_RECIPE", "SCALE_X_Y", "SPP", "SPP_KERNELS", "CSPStage", "ConvBNAct",
           "DropBlock2d", "SpatialAttention", "YOLOv4", "decode_level", "dropblock_mask", "mish", "yolo_v4",
           "yolo_v4_loss"]

YOLOV4 = Paper("YOLOv4: Optimal Speed and Accuracy of Object Detection", "A. Bochkovskiy, C.-Y. Wang, H.-Y. M. Liao",
               2020, "https://arxiv.org/abs/2004.10934")

LEAKY = 0.1  # darknet's leaky activation
#: yolov4.cfg ``anchors`` (pixels at 608), masks 0,1,2 / 3,4,5 / 6,7,8 for strides 8 / 16 / 32
COCO_ANCHORS = ((12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110), (192, 243), (459, 401))
COCO_SIZE = 608
SCALE_X_Y = (1.2, 1.1, 1.05)  # yolov4.cfg, the [yolo] layers of strides 8, 16, 32
SPP_KERNELS = (5, 9, 13)  # Sec. 3.4 / yolov4.cfg's SPP block
DEPTH = (1, 2, 8, 8, 4)  # Darknet-53's residual blocks per stage
STAGE_WIDTHS = (64, 128, 256, 512, 1024)
STRIDES = (8, 16, 32)
IGNORE_THRESH, IOU_THRESH, IOU_NORMALIZER = 0.7, 0.213, 0.07  # yolov4.cfg's [yolo] settings
BOX_LOSSES = {"ciou": ciou_loss, "diou": diou_loss, "giou": giou_loss}
MAX_LOG_SIZE = math.log(1000.0 / 16)  # clamp of tw, th before exp (torchvision's BoxCoder)

# k-means with the 1 - IoU distance (YOLOv2 Sec. 2; median update, best mean IoU 0.846 of 5 seeds) over the 5,956
# boxes of the 2,000 digits training canvases at 128 px, sorted by area, rounded
DIGITS_ANCHORS = [[7, 22], [13, 19], [17, 19], [15, 26], [21, 23], [21, 30], [27, 31], [28, 38], [35, 36]]
DIGITS_RECIPE = {"optimizer": "adam", "lr": 1e-3, "epochs": 7, "batch_size": 16, "schedule": "none",
                 "input_size": 128, "data_params": {"num_train": 2000},
                 "options": {"input_size": 128, "width_mult": 1 / 8, "depth": [1, 1, 1, 1, 1],
                             "anchors": DIGITS_ANCHORS}}


# ------------------------------------------------------------------------------------------------ building blocks
def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish (Misra 2019): ``x tanh(softplus(x))``; darknet ``activation=mish``."""
    return x * torch.tanh(F.softplus(x))


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


def _activation(name: str) -> nn.Module:
    return Mish() if name == "mish" else nn.LeakyReLU(LEAKY, inplace=True)


class ConvBNAct(nn.Sequential):
    """darknet ``[convolutional] batch_normalize=1 pad=1``: conv k x k (padding k // 2, no bias), BN, activation."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, act: str = "leaky") -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), _activation(act))


class ResBlock(nn.Module):
    """Darknet-53's residual block: 1x1 c -> hidden, 3x3 hidden -> c, ``[shortcut] from=-3`` (add, linear)."""

    def __init__(self, c: int, hidden: int, act: str) -> None:
        super().__init__()
        self.conv1, self.conv2 = ConvBNAct(c, hidden, 1, act=act), ConvBNAct(hidden, c, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class CSPStage(nn.Module):
    """A Cross Stage Partial stage of CSPDarknet53 (module docstring): down 3x3/2, ``split`` (part 2, around the
    blocks) and ``main`` (part 1, into them) 1x1 paths, the residual blocks, a 1x1 transition, concat [part 1, part 2]
    and a 1x1 fuse. ``half`` is the width of both paths, ``hidden`` the blocks' 1x1 width."""

    def __init__(self, cin: int, cout: int, half: int, hidden: int, blocks: int, act: str) -> None:
        super().__init__()
        self.down = ConvBNAct(cin, cout, 3, 2, act)
        self.split = ConvBNAct(cout, half, 1, act=act)
        self.main = ConvBNAct(cout, half, 1, act=act)
        self.blocks = nn.Sequential(*[ResBlock(half, hidden, act) for _ in range(blocks)])
        self.transition = ConvBNAct(half, half, 1, act=act)
        self.fuse = ConvBNAct(2 * half, cout, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        part2 = self.split(x)
        part1 = self.transition(self.blocks(self.main(x)))
        return self.fuse(torch.cat([part1, part2], 1))  # route -1, -k: the blocks' path first


class SPP(nn.Module):
    """YOLOv4's SPP block (Sec. 3.4, yolov4.cfg): max-pool k x k, stride 1, padding k // 2 for each kernel (the
    spatial size is kept), concatenated as ``route -1,-3,-5,-6``: [pool 13, pool 9, pool 5, input]; 4C channels."""

    def __init__(self, kernels: Sequence[int] = SPP_KERNELS) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(x) for pool in reversed(self.pools)] + [x], 1)


def dropblock_mask(seeds: torch.Tensor, block_size: int, size: tuple[int, int]) -> torch.Tensor:
    """Ghiasi et al. Algorithm 1, step 5: the keep mask (1 kept, 0 dropped) of shape ``(..., H, W)`` from ``seeds``
    ``(..., H - b + 1, W - b + 1)`` (1 where a block starts): each seed at (i, j) zeroes the b x b square
    [i, i + b) x [j, j + b) -- the block centred on the seed's position (i + b // 2, j + b // 2) among the centres
    where a whole block fits."""
    h, w = size
    lead = seeds.shape[:-2]
    s = seeds.reshape(-1, 1, *seeds.shape[-2:]).float()
    dropped = F.max_pool2d(F.pad(s, [block_size - 1] * 4), block_size, 1)  # (.., H, W)
    return (1.0 - dropped[..., :h, :w]).reshape(*lead, h, w)


class DropBlock2d(nn.Module):
    """DropBlock (G. Ghiasi, T.-Y. Lin, Q. V. Le, "DropBlock: A regularization method for convolutional networks",
    NeurIPS 2018, https://arxiv.org/abs/1810.12890, Algorithm 1): in training, drop contiguous ``block_size`` x
    ``block_size`` squares of each feature map (a mask per sample and channel) and rescale the kept activations by
    ``count(M) / count_ones(M)``; the identity in eval mode or at ``drop_prob`` 0.

    Block seeds are drawn with probability ``gamma = drop_prob / b^2 * H W / ((H - b + 1)(W - b + 1))`` (Eq. 1) at
    the positions where a whole block fits; ``b`` is capped at the map's shorter side. Deviation: the paper raises
    ``drop_prob`` linearly from 0 during training; here it is constant."""

    def __init__(self, block_size: int = 7, drop_prob: float = 0.1) -> None:
        super().__init__()
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"DropBlock block_size must be an integer >= 1, got {block_size!r}")
        if isinstance(drop_prob, bool) or not isinstance(drop_prob, (int, float)) or not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropBlock drop_prob must be in [0, 1), got {drop_prob!r}")
        self.block_size, self.drop_prob = block_size, float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        h, w = x.shape[-2:]
        b = min(self.block_size, h, w)
        gamma = self.drop_prob / b ** 2 * (h * w) / ((h - b + 1) * (w - b + 1))
        seeds = torch.rand(*x.shape[:-2], h - b + 1, w - b + 1, device=x.device) < gamma
        mask = dropblock_mask(seeds, b, (h, w)).to(x.dtype)
        kept = mask.sum()
        return x * mask * (mask.numel() / kept.clamp(min=1.0))

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, drop_prob={self.drop_prob}"


class SpatialAttention(nn.Module):
    """YOLOv4's modified SAM (Fig. 5): point-wise attention ``x * sigmoid(BN(conv1x1(x)))`` (darknet's ``[sam]``
    after a 1x1 ``activation=logistic`` convolution)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.bn(self.conv(x)))


def _five(cin: int, c: int) -> nn.Sequential:
    """The neck's five convolutions: 1x1 cin -> c, 3x3 c -> 2c, 1x1 2c -> c, 3x3 c -> 2c, 1x1 2c -> c (leaky)."""
    return nn.Sequential(ConvBNAct(cin, c, 1), ConvBNAct(c, 2 * c, 3), ConvBNAct(2 * c, c, 1),
                         ConvBNAct(c, 2 * c, 3), ConvBNAct(2 * c, c, 1))


def _check_int(key: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"YOLOv4 option {key} must be an integer >= {low}, got {value!r}")


def _check_fraction(key: str, value, high: float = 1.0, high_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value and \
        (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"YOLOv4 option {key} must be in [0, {high:g}{')' if high_open else ']'}, got {value!r}")


# ------------------------------------------------------------------------------------------------ the network
class YOLOv4(nn.Module):
    """YOLOv4 (yolov4.cfg): CSPDarknet53, SPP, PAN, three YOLOv3 heads. See the module docstring."""

    min_input_size = 32

    def __init__(self, *, num_classes: int = 80, in_channels: int = 3, input_size: int = COCO_SIZE,
                 width_mult: float = 1.0, depth: Sequence[int] = DEPTH,
                 anchors: Sequence[Sequence[float]] | None = None, activation: str = "mish",
                 scale_x_y: Sequence[float] = SCALE_X_Y, box_loss: str = "ciou", iou_thresh: float = IOU_THRESH,
                 ignore_thresh: float = IGNORE_THRESH, iou_normalizer: float = IOU_NORMALIZER,
                 label_smoothing: float = 0.0, dropblock: float = 0.0, dropblock_size: int = 7,
                 sam: bool = False) -> None:
        super().__init__()
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size),
                           ("dropblock_size", dropblock_size)):
            _check_int(key, value)
        if input_size % 32:
            raise ValueError(f"YOLOv4 option input_size must be a multiple of 32 (five stride-2 stages), got "
                             f"{input_size}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"YOLOv4 option width_mult must be a number > 0, got {width_mult!r}")
        depth = list(depth) if isinstance(depth, (list, tuple)) else depth
        if not isinstance(depth, list) or len(depth) != 5 or any(isinstance(d, bool) or not isinstance(d, int)
                                                                 or d < 1 for d in depth):
            raise ValueError(f"YOLOv4 option depth must be 5 integers >= 1 (residual blocks per stage; the paper's "
                             f"{list(DEPTH)}), got {depth!r}")
        if activation not in ("mish", "leaky"):
            raise ValueError(f"YOLOv4 option activation must be mish or leaky, got {activation!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"YOLOv4 option box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
        scale_x_y = list(scale_x_y) if isinstance(scale_x_y, (list, tuple)) else scale_x_y
        if not isinstance(scale_x_y, list) or len(scale_x_y) != 3 or any(
                isinstance(s, bool) or not isinstance(s, (int, float)) or not 1.0 <= s <= 2.0 for s in scale_x_y):
            raise ValueError(f"YOLOv4 option scale_x_y must be 3 numbers in [1, 2] (strides 8, 16, 32; the cfg's "
                             f"{list(SCALE_X_Y)}), got {scale_x_y!r}")
        _check_fraction("iou_thresh", iou_thresh, high_open=False)
        _check_fraction("ignore_thresh", ignore_thresh, high_open=False)
        _check_fraction("label_smoothing", label_smoothing, high_open=False)
        _check_fraction("dropblock", dropblock)
        if isinstance(iou_normalizer, bool) or not isinstance(iou_normalizer, (int, float)) or iou_normalizer < 0:
            raise ValueError(f"YOLOv4 option iou_normalizer must be a number >= 0, got {iou_normalizer!r}")
        if not isinstance(sam, bool):
            raise ValueError(f"YOLOv4 option sam must be true or false, got {sam!r}")
        if anchors is None:
            anchors = [[w * input_size / COCO_SIZE, h * input_size / COCO_SIZE] for w, h in COCO_ANCHORS]
        try:
            anchors = [[float(w), float(h)] for w, h in anchors]
        except (TypeError, ValueError):
            anchors = None
        if not anchors or len(anchors) % 3 or any(not (math.isfinite(v) and v > 0) for a in anchors for v in a):
            raise ValueError("YOLOv4 option anchors must be (w, h) pairs > 0 in input pixels, a multiple of 3 of them "
                             "(grouped per stride 8, 16, 32; the cfg's 9 at 608)")
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.width_mult, self.depth, self.activation = float(width_mult), depth, activation
        self.scale_x_y, self.box_loss, self.iou_thresh = [float(s) for s in scale_x_y], box_loss, float(iou_thresh)
        self.ignore_thresh, self.iou_normalizer = float(ignore_thresh), float(iou_normalizer)
        self.label_smoothing = float(label_smoothing)
        self.num_anchors = len(anchors) // 3
        self.register_buffer("anchor_sizes", torch.tensor(anchors, dtype=torch.float32), persistent=False)

        def wd(c: int) -> int:
            return max(1, round(c * width_mult))

        act = activation
        # backbone: CSPDarknet53 (layers 0-104)
        self.stem = ConvBNAct(in_channels, wd(32), 3, act=act)
        stages, cin = [], wd(32)
        for k, (c, n) in enumerate(zip(STAGE_WIDTHS, depth)):
            half = wd(c) if k == 0 else wd(c // 2)  # the first stage keeps 64 on both paths
            hidden = wd(c // 2) if k == 0 else half  # ... and its block narrows to 32
            stages.append(CSPStage(cin, wd(c), half, hidden, n, act))
            cin = wd(c)
        self.stages = nn.ModuleList(stages)
        # neck: SPP (105-116)
        self.pre_spp = nn.Sequential(ConvBNAct(wd(1024), wd(512), 1), ConvBNAct(wd(512), wd(1024), 3),
                                     ConvBNAct(wd(1024), wd(512), 1))
        self.spp = SPP(SPP_KERNELS)
        self.post_spp = nn.Sequential(ConvBNAct(4 * wd(512), wd(512), 1), ConvBNAct(wd(512), wd(1024), 3),
                                      ConvBNAct(wd(1024), wd(512), 1))
        # PAN top-down (117-136)
        self.reduce5 = ConvBNAct(wd(512), wd(256), 1)
        self.lateral4 = ConvBNAct(wd(512), wd(256), 1)
        self.td4 = _five(2 * wd(256), wd(256))
        self.reduce4 = ConvBNAct(wd(256), wd(128), 1)
        self.lateral3 = ConvBNAct(wd(256), wd(128), 1)
        self.td3 = _five(2 * wd(128), wd(128))
        # PAN bottom-up (140-158)
        self.down3 = ConvBNAct(wd(128), wd(256), 3, 2)
        self.bu4 = _five(2 * wd(256), wd(256))
        self.down4 = ConvBNAct(wd(256), wd(512), 3, 2)
        self.bu5 = _five(2 * wd(512), wd(512))
        # BoF / BoS options on the three maps before the heads
        widths = (wd(128), wd(256), wd(512))
        self.sam = nn.ModuleList(SpatialAttention(c) for c in widths) if sam else None
        self.dropblock = nn.ModuleList(DropBlock2d(dropblock_size, dropblock) for _ in widths) if dropblock else None
        # heads: 3x3 (BN, leaky), 1x1 linear with bias
        out = self.num_anchors * (5 + num_classes)
        self.heads = nn.ModuleList(nn.Sequential(ConvBNAct(c, 2 * c, 3), nn.Conv2d(2 * c, out, 1)) for c in widths)
        self._init_heads()

    def _init_heads(self) -> None:
        for head in self.heads:
            bias = head[-1].bias.detach().view(self.num_anchors, 5 + self.num_classes)
            bias.zero_()
            bias[:, 4] = math.log(0.01 / 0.99)  # objectness prior 0.01
            bias[:, 5:] = math.log(1 / self.num_classes / (1 - 1 / self.num_classes)) if self.num_classes > 1 else 0.0

    def anchors_per_level(self) -> list[torch.Tensor]:
        """The (A, 2) anchor sizes (pixels) of strides 8, 16, 32."""
        a = self.num_anchors
        return [self.anchor_sizes[k * a : (k + 1) * a] for k in range(3)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(N, in_channels, H, W)`` (H, W multiples of 32) -> ``[(N, A, H/8, W/8, 5 + C), (N, A, H/16, W/16,
        5 + C), (N, A, H/32, W/32, 5 + C)]`` raw outputs (module docstring)."""
        check_image_batch("YOLOv4", x, self.in_channels, 32)
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"YOLOv4 needs inputs whose sides are multiples of 32 (the PAN joins maps of strides 8 "
                             f"to 32), got {x.shape[-2]}x{x.shape[-1]}; resize to e.g. {self.input_size}")
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        c3, c4, c5 = feats[2], feats[3], feats[4]  # layers 54, 85, 104
        p5 = self.post_spp(self.spp(self.pre_spp(c5)))
        up5 = F.interpolate(self.reduce5(p5), scale_factor=2, mode="nearest")
        p4 = self.td4(torch.cat([self.lateral4(c4), up5], 1))
        up4 = F.interpolate(self.reduce4(p4), scale_factor=2, mode="nearest")
        n3 = self.td3(torch.cat([self.lateral3(c3), up4], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), p4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        outs = []
        for k, n in enumerate((n3, n4, n5)):
            if self.sam is not None:
                n = self.sam[k](n)
            if self.dropblock is not None:
                n = self.dropblock[k](n)
            y = self.heads[k](n)
            b, _, h, w = y.shape
            outs.append(y.view(b, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return outs

    def loss(self, outputs: list[torch.Tensor], targets: list[dict], image_size) -> dict[str, torch.Tensor]:
        """`yolo_v4_loss` with this network's anchors and settings."""
        return yolo_v4_loss(outputs, targets, image_size, self.anchors_per_level(), scale_x_y=self.scale_x_y,
                            box_loss=self.box_loss, iou_thresh=self.iou_thresh, ignore_thresh=self.ignore_thresh,
                            iou_normalizer=self.iou_normalizer, label_smoothing=self.label_smoothing)

    def postprocess(self, outputs: list[torch.Tensor], image_size, score_thresh: float = 0.25,
                    nms_thresh: float = 0.45, max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Raw outputs -> per image ``{"boxes", "scores", "labels"}`` (module docstring)."""
        if not 0.0 <= nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh!r}")
        _check_int("max_detections", max_detections, 0)
        height, width = _hw(image_size)
        boxes, scores = [], []
        for out, anchors, s in zip(outputs, self.anchors_per_level(), self.scale_x_y):
            box = decode_level(out.float(), anchors.to(out.device), s, (height, width))
            prob = torch.sigmoid(out[..., 4:5].float()) * torch.sigmoid(out[..., 5:].float())
            boxes.append(box.reshape(len(out), -1, 4))
            scores.append(prob.reshape(len(out), -1, self.num_classes))
        boxes, scores = torch.cat(boxes, 1), torch.cat(scores, 1)
        return select_per_class(boxes, scores, (height, width), score_thresh, nms_thresh, max_detections)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_thresh: float = 0.25, nms_thresh: float = 0.45,
               max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Detections on ``images`` (N, C, H, W) in eval mode: per image ``{"boxes" (K, 4) xyxy pixels, "scores",
        "labels" (1..C)}``."""
        outputs = eval_forward(self, images)
        return self.postprocess([o.cpu() for o in outputs], tuple(images.shape[-2:]), score_thresh, nms_thresh,
                                max_detections)


# ------------------------------------------------------------------------------------------------ decoding, loss
def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def decode_level(out: torch.Tensor, anchors: torch.Tensor, scale_x_y: float, image_size) -> torch.Tensor:
    """One level's boxes, xyxy input pixels ``(N, A, H, W, 4)``, from its raw outputs ``(N, A, H, W, 5 + C)``:
    ``cx = (s sigmoid(tx) - (s - 1) / 2 + j) * W_img / W``, ``w = exp(tw) * anchor_w`` (module docstring)."""
    height, width = _hw(image_size)
    h, w = out.shape[2], out.shape[3]
    stride_y, stride_x = height / h, width / w
    rows = torch.arange(h, device=out.device, dtype=out.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=out.device, dtype=out.dtype).view(1, 1, 1, w)
    s = scale_x_y
    cx = (s * torch.sigmoid(out[..., 0]) - (s - 1) / 2 + cols) * stride_x
    cy = (s * torch.sigmoid(out[..., 1]) - (s - 1) / 2 + rows) * stride_y
    a = anchors.to(out.dtype).view(1, -1, 1, 1, 2)
    bw = torch.exp(out[..., 2].clamp(max=MAX_LOG_SIZE)) * a[..., 0]
    bh = torch.exp(out[..., 3].clamp(max=MAX_LOG_SIZE)) * a[..., 1]
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of xyxy boxes ``a (P, 4)`` and ``b (M, 4)``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def _shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of boxes of sizes ``wh (M, 2)`` and ``anchors (K, 2)`` centred on one point: ``(M, K)``."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(-1) + anchors[None].prod(-1) - inter)


def yolo_v4_loss(outputs: list[torch.Tensor], targets: list[dict], image_size, anchors: list[torch.Tensor], *,
                 scale_x_y: Sequence[float] = SCALE_X_Y, box_loss: str = "ciou", iou_thresh: float = IOU_THRESH,
                 ignore_thresh: float = IGNORE_THRESH, iou_normalizer: float = IOU_NORMALIZER,
                 label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """darknet's YOLO layer (yolov4.cfg settings) as a loss (module docstring), summed and divided by N.

    Args:
        outputs: per level ``(N, A, H, W, 5 + C)`` raw outputs (`YOLOv4.forward`).
        targets: per image ``{"boxes": (M, 4) xyxy pixels, "labels": (M,) in 1..C}``.
        image_size: ``(H, W)`` of the input (or one int).
        anchors: per level ``(A, 2)`` anchor sizes in input pixels.

    Returns:
        ``{"loss", "loss_box", "loss_obj", "loss_noobj", "loss_class"}``; ``loss`` is their sum.
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
    n = outputs[0].shape[0]
    if len(targets) != n:
        raise ValueError(f"{n} outputs but {len(targets)} targets")
    num_classes = outputs[0].shape[-1] - 5
    height, width = _hw(image_size)
    device, dtype = outputs[0].device, outputs[0].dtype
    all_anchors = torch.cat([a.to(device, torch.float32) for a in anchors])  # (L * A, 2)
    first = [0]
    for a in anchors:
        first.append(first[-1] + len(a))
    gts = []
    for k, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError("each target must be a dict with 'boxes' (M, 4) and 'labels' (M,)")
        boxes = torch.as_tensor(t["boxes"]).to(device, torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(t["labels"]).to(device).reshape(-1).long()
        if len(labels) != len(boxes):
            raise ValueError(f"target {k} has {len(boxes)} boxes but {len(labels)} labels")
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"target {k} has labels outside 1..{num_classes}: {sorted(set(labels.tolist()))}")
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # empty boxes are skipped
        boxes, labels = boxes[ok], labels[ok]
        wh = boxes[:, 2:] - boxes[:, :2]
        shape_iou = _shape_iou(wh, all_anchors) if len(boxes) else torch.zeros(0, len(all_anchors), device=device)
        gts.append((boxes, labels, shape_iou, shape_iou.argmax(1) if len(boxes) else None))

    loss_fn = BOX_LOSSES[box_loss]
    zero = outputs[0].sum() * 0
    loss_box, loss_obj, loss_noobj, loss_cls = zero, zero, zero, zero
    for lvl, (out, s) in enumerate(zip(outputs, scale_x_y)):
        _, a_n, h, w, _ = out.shape
        pred = decode_level(out, anchors[lvl].to(device), s, (height, width))  # (N, A, H, W, 4)
        noobj = torch.ones(n, a_n, h, w, dtype=torch.bool, device=device)
        pos = torch.zeros_like(noobj)
        tbox = torch.zeros(n, a_n, h, w, 4, device=device)
        tcls = torch.zeros(n, a_n, h, w, dtype=torch.long, device=device)
        for k, (boxes, labels, shape_iou, best) in enumerate(gts):
            if not len(boxes):
                continue
            with torch.no_grad():  # ignore: predictions overlapping an object by more than ignore_thresh
                best_iou = _box_iou(pred[k].reshape(-1, 4).detach().float(), boxes).amax(1).view(a_n, h, w)
                noobj[k] &= best_iou <= ignore_thresh
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            cols = (centre[:, 0] * w / width).floor().long().clamp(0, w - 1)
            rows = (centre[:, 1] * h / height).floor().long().clamp(0, h - 1)
            for m in range(len(boxes)):  # in order: a later object on the same cell and anchor replaces the earlier
                for a in range(a_n):
                    g = first[lvl] + a
                    if g == int(best[m]) or shape_iou[m, g] > iou_thresh:
                        pos[k, a, rows[m], cols[m]] = True
                        tbox[k, a, rows[m], cols[m]] = boxes[m]
                        tcls[k, a, rows[m], cols[m]] = labels[m] - 1
        obj_logit = out[..., 4]
        if pos.any():
            loss_box = loss_box + iou_normalizer * loss_fn(pred[pos], tbox[pos].to(pred.dtype), reduction="sum")
            loss_obj = loss_obj + F.binary_cross_entropy_with_logits(obj_logit[pos], torch.ones_like(obj_logit[pos]),
                                                                     reduction="sum")
            onehot = F.one_hot(tcls[pos], num_classes).to(dtype)
            if label_smoothing:
                onehot = onehot * (1 - label_smoothing) + 0.5 * label_smoothing
            loss_cls = loss_cls + F.binary_cross_entropy_with_logits(out[..., 5:][pos], onehot, reduction="sum")
        neg = noobj & ~pos
        loss_noobj = loss_noobj + F.binary_cross_entropy_with_logits(obj_logit[neg], torch.zeros_like(obj_logit[neg]),
                                                                     reduction="sum")
    parts = {"loss_box": loss_box / n, "loss_obj": loss_obj / n, "loss_noobj": loss_noobj / n,
             "loss_class": loss_cls / n}
    return {"loss": sum(parts.values()), **parts}


_DEVIATIONS = (
    ("no ImageNet pretraining of CSPDarknet53; PyTorch's default initialisation, head biases set to priors "
     "(objectness 0.01, classes 1/C)"),
    "plain BN, not CmBN; no SAT, CutMix, genetic hyper-parameters, random training shapes, DIoU-NMS (greedy NMS)",
    "anchors default to the cfg's scaled by input_size / 608 (darknet keeps the pixels)",
    "tw, th clamped at log(1000/16) before exp (darknet clips gradients with max_delta 5 instead)",
    ("digits recipe: 128x128 grayscale, width 1/8, depth (1, 1, 1, 1, 1), digits k-means anchors, Adam 1e-3, "
     "7 epochs on 2,000 canvases, no Mosaic, no HSV/jitter augmentation"),
)


@register_detector(YOLOv4, paper=YOLOV4, input_size=(3, 608, 608), dataset="MS COCO 2017",
                   deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPE)
def yolo_v4(**kwargs) -> YOLOv4:
    """YOLOv4 (yolov4.cfg): CSPDarknet53 + SPP + PAN + YOLOv3 heads, 80 classes at 608 -> 76/38/19 x 3 x 85;
    64,363,101 parameters."""
    return YOLOv4(**kwargs)
