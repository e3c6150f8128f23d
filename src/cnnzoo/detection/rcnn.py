"""R-CNN. Girshick, Donahue, Darrell, Malik, "Rich feature hierarchies for accurate object detection and semantic
segmentation", CVPR 2014. https://arxiv.org/abs/1311.2524

Key ideas
    Detection as classification of regions: ~2000 class-independent region proposals per image (selective search),
    each warped to the CNN's fixed input and turned into a 4096-d feature vector (fc7), scored by one linear SVM per
    class, then greedy non-maximum suppression per class (Section 2). What makes it work with little detection data
    is supervised pre-training on a large auxiliary task (ILSVRC classification) followed by domain-specific
    fine-tuning of the whole network on warped proposals, with the 1000-way classifier replaced by an (N+1)-way
    one, N classes plus background (Section 2.3). A class-specific linear regression from pool5 features refines
    the boxes (Appendix C).

Which table the code reproduces
    The method of Section 2 and Appendices A-C, and VOC's evaluation (Table 2 reports 11-point VOC 2007 test AP
    per class and mAP: 54.2% for R-CNN with fine-tuning, 58.5% with bounding-box regression, AlexNet fc7; Table 1
    is VOC 2010 test).
    We reproduce the pipeline, not the VOC numbers (no ILSVRC-pretrained weights ship with cnnzoo, and VOC training
    takes GPU-days); the built-in ``digits-detection`` set runs it end to end on a CPU in minutes.

Training setup in the paper
    Pre-training: Caffe's AlexNet on ILSVRC 2012. Fine-tuning: SGD at lr 0.001, mini-batches of 32 positive windows
    (IoU >= 0.5 with a ground-truth box, labelled with its class) and 96 background windows, on warped proposals with
    context padding p = 16 (Section 2.3, Appendix A). SVMs: per class, positives = the ground-truth boxes only,
    negatives = proposals with IoU < 0.3 to every box of the class (grid-searched, Appendix B), standard hard negative
    mining (Section 2.3); fc7 features. Box regression: ridge regression from pool5, lambda = 1000, on proposals with
    IoU > 0.6 (Appendix C). Test: NMS per class with IoU 0.3 (released code).

This implementation
    `train_rcnn` runs the stages in order: proposals (cached in the run directory), pre-training (a classification
    dataset named by ``backbone.pretrain``, or ``backbone.weights``), fine-tuning on (N+1) classes, fc7 features,
    SVMs with hard negative mining (`cnnzoo.detection.svm`, liblinear's solver and R-CNN's settings), box regression
    (`cnnzoo.detection.bbox`), and the VOC evaluation of the test split (`cnnzoo.detection.voc_eval`). Any zoo
    network is the backbone: "fc7" is its pre-logit vector (``forward_head(x, pre_logits=True)``) and "pool5" its
    last feature map (``forward_features``), flattened. Deviations: the paper's network is Caffe's AlexNet; the
    default ``alexnet`` here is torchvision's (whose ImageNet checkpoint ``backbone.weights`` loads), and the
    ``digits-detection`` preset uses LeNet-5 at 32 x 32 with pre-training on mnist5k's train digits (see
    `cnnzoo.detection.config.PRESETS`). Fine-tuning draws the 32 + 96 windows of each batch uniformly at random
    from all positive and all background windows of the training set (Caffe's window data layer), without
    mirroring. Proposals come from selective search in the paper's fast mode (Section 2.2; Uijlings et al.'s k = 50,
    100, sigma 0.8, HSV and Lab, two similarity sets, through OpenCV's ``ximgproc``, the extra ``cnnzoo[detection]``;
    see `cnnzoo.detection.proposals`), or sliding windows. The ``digits-detection`` preset runs selective search on the
    canvas enlarged 1.5x (``proposals.scale``), not on the image as it is: at scale 1 the paper's k, set for VOC-sized
    images, recall 92.1% of the test boxes and the default run reaches mAP 79.5-82.3% (seeds 0-2), at 1.5 99.3% and
    86.4-86.8% (`cnnzoo.detection.config.PRESETS` has the figures). A re-run of a killed ``cnnzoo detect train``
    into the same run directory starts again if the run died before its first checkpoint (the fine-tuned backbone):
    its own files (`RCNN_EARLY_FILES` and what every cnnzoo run writes first) are removed, nothing else.
    ``test.scorer=softmax`` scores with the fine-tuned network's softmax instead of the SVMs (Appendix B's
    comparison).
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import atomic_write
from ..train.engine import default_run_dir as _train_run_dir
from .bbox import BoxRegressor, box_iou, clip_boxes, fit_box_regressor, regression_pairs
from .config import RCNNConfig, config_to_dict
from .data import DetectionDataset, load_detection_data
from .nms import nms
from .proposals import propose
from .svm import feature_scale, svm_examples, train_with_hard_negatives
from .voc_eval import EvalResult, evaluate_detections
from .warp import warp_regions

__all__ = ["FINETUNE_FG_IOU", "RCNNDetector", "default_run_dir", "evaluate_run", "finetune_labels", "load_detector",
           "proposal_recall", "train_rcnn"]

FEATURE_BATCH = 256
#: Section 2.3: "We treat all region proposals with >= 0.5 IoU overlap with a ground-truth box as positives for that
#: box's class and the rest as negatives"; R-CNN's Caffe window layer: ``overlap >= fg_threshold`` (0.5) is
#: foreground, ``overlap < bg_threshold`` (0.5) background
FINETUNE_FG_IOU = 0.5


def _log(msg: str, verbose: bool = True) -> None:
    if verbose:
        print(msg, flush=True)


def default_run_dir(data: str) -> Path:
    """./runs/rcnn-DATA-YYYYmmdd-HHMMSS (the Trainer's naming), with a suffix if that exists already."""
    return _train_run_dir("rcnn-" + ("voc" if data.startswith("voc:") else data))


# ------------------------------------------------------------------------------------------------ proposals
def compute_proposals(ds: DetectionDataset, settings: dict, verbose: bool = True, what: str = "") -> list[torch.Tensor]:
    """Proposals of every image, computed by as many threads as torch uses; selective search itself runs one image at a
    time (its ranking reads the C library's one rand() generator, seeded per image: `cnnzoo.detection.proposals`), so
    an image's proposals do not depend on the threads."""
    from concurrent.futures import ThreadPoolExecutor

    out, t0 = [], time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        for i, boxes in enumerate(pool.map(lambda k: propose(ds.image(k), settings), range(len(ds)))):
            out.append(boxes)
            if verbose and (i + 1) % 100 == 0:
                _log(f"  proposals {what}: {i + 1}/{len(ds)} images ({time.perf_counter() - t0:.1f} s)")
    return out


def proposal_recall(proposals: list[torch.Tensor], gt_boxes: list[torch.Tensor], iou: float = 0.5) -> dict:
    """Fraction of ground-truth boxes covered by some proposal with IoU >= ``iou``, and proposals per image."""
    hit = total = 0
    for p, g in zip(proposals, gt_boxes):
        total += len(g)
        if len(g) and len(p):
            hit += int((box_iou(g, p).max(1).values >= iou).sum())
    return {"recall": hit / total if total else math.nan, "iou": iou, "num_gt": total,
            "proposals_per_image": float(np.mean([len(p) for p in proposals])) if proposals else 0.0}


def _pack(boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.int64)
    return {"boxes": torch.cat(boxes) if boxes else torch.zeros(0, 4), "counts": counts}


def _unpack(boxes: torch.Tensor, counts: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(boxes, counts.tolist()))


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
    atomic_write(path, data)


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is this an R-CNN run directory written by `cnnzoo detect "
                                f"train` that finished?")
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118


# ------------------------------------------------------------------------------------------------ features
class _Images:
    """Normalised float images ``(x / 255 - mean) / std`` of a dataset, cached when the dataset is in memory."""

    def __init__(self, ds: DetectionDataset, mean: list[float], std: list[float], device: torch.device):
        self.ds, self.device = ds, device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]
        self.cache: dict[int, torch.Tensor] = {}
        self._stack: torch.Tensor | None = None

    def stack(self) -> torch.Tensor | None:
        """All images as one (N, C, H, W) tensor when they are in memory and of one size (else None)."""
        if self._stack is None and self.ds.images is not None and len({tuple(im.shape) for im in self.ds.images}) == 1:
            self._stack = torch.stack([self[i] for i in range(len(self.ds))])
        return self._stack

    def normalise(self, img: torch.Tensor) -> torch.Tensor:
        return (img.to(self.device, torch.float32) / 255.0 - self.mean) / self.std

    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self.cache:
            return self.cache[i]
        x = self.normalise(self.ds.image(i))
        if self.ds.images is not None:
            self.cache[i] = x
        return x


def _warp_windows(images: _Images, image_idx: torch.Tensor, boxes: torch.Tensor, b: dict) -> torch.Tensor:
    """Warped inputs of windows from several images, in the order given."""
    stack = images.stack()
    if stack is not None:  # one grid_sample call for the whole batch
        return warp_regions(stack[image_idx.to(stack.device)], boxes.to(stack.device), b["input_size"],
                            b["context_padding"], b["warp_mode"])
    out = torch.empty(len(boxes), images.mean.shape[0], b["input_size"], b["input_size"], device=images.device)
    for i in torch.unique(image_idx).tolist():
        sel = torch.nonzero(image_idx == i).flatten()
        out[sel.to(out.device)] = warp_regions(images[i], boxes[sel].to(images.device), b["input_size"],
                                               b["context_padding"], b["warp_mode"])
    return out


@torch.no_grad()
def region_features(model: nn.Module, image: torch.Tensor, boxes: torch.Tensor, b: dict, *, logits: bool = False):
    """(pool5 (K, D5), fc7 (K, D7), logits (K, N+1) or None) of the regions ``boxes`` of a normalised image."""
    p5, f7, lg = [], [], []
    for k0 in range(0, len(boxes), FEATURE_BATCH):
        x = warp_regions(image, boxes[k0 : k0 + FEATURE_BATCH].to(image.device), b["input_size"],
                         b["context_padding"], b["warp_mode"])
        fm = model.forward_features(x)
        fc7 = model.forward_head(fm, pre_logits=True)
        p5.append(fm.flatten(1).float().cpu())
        f7.append(fc7.float().cpu())
        if logits:
            lg.append(model.forward_head(fm).float().cpu())
    d5 = p5[0].shape[1] if p5 else 0
    return (torch.cat(p5) if p5 else torch.zeros(0, d5), torch.cat(f7) if f7 else torch.zeros(0, 0),
            torch.cat(lg) if lg else None)


# ------------------------------------------------------------------------------------------------ the detector
@dataclass
class RCNNDetector:
    """A trained R-CNN: backbone, per-class SVMs, box regressors, and the settings they were trained with."""

    model: nn.Module
    svm_weight: torch.Tensor  # (N, D7)
    svm_bias: torch.Tensor  # (N,)
    fc7_scale: float
    box_scale: float
    box: BoxRegressor | None
    classes: list[str]
    backbone: dict  # input_size, context_padding, warp_mode, in_channels, mean, std
    proposals: dict
    test: dict
    bbox_features: str = "pool5"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def normalise(self, img: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.backbone["mean"], device=self.device)[:, None, None]
        std = torch.tensor(self.backbone["std"], device=self.device)[:, None, None]
        return (img.to(self.device, torch.float32) / 255.0 - mean) / std

    def score_regions(self, image_u8: torch.Tensor, boxes: torch.Tensor, scorer: str = "svm"):
        """(scores (K, N), box features (K, D)) of regions of a uint8 image."""
        p5, f7, lg = region_features(self.model, self.normalise(image_u8), boxes, self.backbone,
                                     logits=scorer == "softmax")
        if scorer == "softmax":
            scores = lg.softmax(1)[:, 1:].double()
        else:
            scores = (f7.double() * self.fc7_scale) @ self.svm_weight.double().T + self.svm_bias.double()
        feats = (p5 if self.bbox_features == "pool5" else f7).double() * self.box_scale
        return scores, feats

    def detect(self, image_u8: torch.Tensor, proposals: torch.Tensor | None = None, *, scorer: str | None = None,
               nms_iou: float | None = None, bbox_reg: bool = True, max_per_image: int | None = None):
        """Detections of one uint8 ``(C, H, W)`` image: ``(boxes (K, 4), scores (K,), labels (K,))``, by decreasing
        score, after box regression and per-class NMS."""
        scorer = scorer or self.test["scorer"]
        nms_iou = self.test["nms_iou"] if nms_iou is None else nms_iou
        max_per_image = max_per_image or self.test["max_per_image"]
        if proposals is None:
            proposals = propose(image_u8, self.proposals)
        h, w = image_u8.shape[-2:]
        if len(proposals) == 0:
            return torch.zeros(0, 4), torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64)
        scores, feats = self.score_regions(image_u8, proposals, scorer)
        out_b, out_s, out_l = [], [], []
        for c in range(len(self.classes)):
            boxes = proposals
            if bbox_reg and self.box is not None:
                boxes = clip_boxes(self.box.predict(feats, proposals, c), h, w)
            keep = nms(boxes, scores[:, c], nms_iou)[:max_per_image]
            out_b.append(boxes[keep])
            out_s.append(scores[keep, c])
            out_l.append(torch.full((len(keep),), c, dtype=torch.int64))
        b, s, lab = torch.cat(out_b), torch.cat(out_s), torch.cat(out_l)
        order = torch.sort(s, descending=True, stable=True).indices
        return b[order], s[order], lab[order]


def _build_backbone(b: dict, num_outputs: int, in_channels: int) -> nn.Module:
    from ..registry import create_model

    return create_model(b["name"], num_classes=num_outputs, in_channels=in_channels, **b["options"])


def load_detector(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[RCNNDetector, dict]:
    """The detector of a finished R-CNN run directory, and its run.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist (give the directory `cnnzoo detect "
                                f"train` wrote)")
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir} has no run.json: not an R-CNN run directory") from None
    if info.get("kind") != "rcnn":
        raise ValueError(f"{run_dir} is not an R-CNN run (its run.json is not from `cnnzoo detect train`); for a "
                         f"classification run use `cnnzoo eval`")
    if "finished" not in info:
        raise ValueError(f"{run_dir}: the R-CNN run did not finish (no trained detector); train again")
    b = info["backbone"]
    model = _build_backbone(b, len(info["classes"]) + 1, b["in_channels"])
    sd, _ = _load_tensors(run_dir / "checkpoints" / "backbone.safetensors")
    model.load_state_dict(sd, strict=True)
    model = model.to(device).eval()
    det, meta = _load_tensors(run_dir / "checkpoints" / "detector.safetensors")
    box = BoxRegressor(det["box_weight"], det["box_mean"], det["box_trained"].bool()) if "box_weight" in det else None
    detector = RCNNDetector(model, det["svm_weight"], det["svm_bias"], meta["fc7_scale"], meta["box_scale"], box,
                            list(info["classes"]), b, info["proposals"], info["test"], meta["bbox_features"])
    return detector, info


# ------------------------------------------------------------------------------------------------ training stages
def _pretrain(model: nn.Module, cfg: RCNNConfig, mean, std, device, verbose: bool) -> dict:
    """Supervised pre-training on a classification dataset (the paper's ILSVRC step, on a small scale)."""
    from ..data import load_dataset

    b = cfg.backbone
    bundle = load_dataset(b.pretrain)
    if bundle.kind != "tensor":
        raise ValueError(f"backbone.pretrain {b.pretrain!r}: only built-in datasets held in memory can be used for "
                         f"pre-training here (mnist5k, mnist, fashion-mnist, cifar10, cifar100)")
    if bundle.in_channels != model.in_channels:
        raise ValueError(f"backbone.pretrain {b.pretrain!r} has {bundle.in_channels}-channel images but the detection "
                         f"data has {model.in_channels}; choose a pre-training dataset with the same channels")
    model.reset_classifier(len(bundle.classes))
    model.to(device).train()
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=b.pretrain_lr, momentum=0.9, weight_decay=5e-4)
    m = torch.tensor(mean, device=device)[None, :, None, None]
    s = torch.tensor(std, device=device)[None, :, None, None]
    x_all, y_all = bundle.train.images, bundle.train.labels
    n, t0 = len(y_all), time.perf_counter()
    for epoch in range(b.pretrain_epochs):
        perm = torch.randperm(n, generator=g)
        correct = total = 0
        loss_sum = 0.0
        for k0 in range(0, n, b.pretrain_batch_size):
            idx = perm[k0 : k0 + b.pretrain_batch_size]
            x = (x_all[idx].to(device, torch.float32) / 255.0 - m) / s
            x = F.interpolate(x, size=(b.input_size, b.input_size), mode="bilinear", align_corners=False)
            y = y_all[idx].to(device)
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y).sum())
            total += len(idx)
        _log(f"  pre-train epoch {epoch + 1}/{b.pretrain_epochs}: loss {loss_sum / total:.4f}, train accuracy "
             f"{100 * correct / total:.1f}%", verbose)
    # test accuracy of the pre-trained network on the dataset's own test split (what pre-training achieved)
    model.eval()
    with torch.no_grad():
        x = (bundle.test.images.to(device, torch.float32) / 255.0 - m) / s
        x = F.interpolate(x, size=(b.input_size, b.input_size), mode="bilinear", align_corners=False)
        acc = float((torch.cat([model(x[k : k + 500]).argmax(1) for k in range(0, len(x), 500)]).cpu()
                     == bundle.test.labels).float().mean())
    _log(f"  pre-trained on {bundle.name}: test accuracy {100 * acc:.2f}% ({time.perf_counter() - t0:.1f} s)", verbose)
    return {"dataset": bundle.name, "epochs": b.pretrain_epochs, "test_accuracy": acc,
            "seconds": time.perf_counter() - t0}


def finetune_labels(boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                    fg_iou: float = FINETUNE_FG_IOU) -> torch.Tensor:
    """Fine-tuning labels of windows (Section 2.3): class + 1 of the ground-truth box a window overlaps most when that
    IoU is >= ``fg_iou``, else 0 (background): (N,) int64."""
    y = torch.zeros(len(boxes), dtype=torch.int64)
    if len(gt_boxes) and len(boxes):
        best, arg = box_iou(boxes, gt_boxes).max(1)
        y = torch.where(best >= fg_iou, gt_labels[arg] + 1, y)
    return y


def _windows(ds: DetectionDataset, proposals: list[torch.Tensor], fg_iou: float):
    """All fine-tuning windows: (image index, box, label) with label = class + 1 for IoU >= fg_iou, 0 = background.
    The ground-truth boxes are windows too (positives)."""
    idx, boxes, labels = [], [], []
    for i, (p, g, lab) in enumerate(zip(proposals, ds.boxes, ds.labels)):
        cand = torch.cat([g, p])
        y = finetune_labels(cand, g, lab, fg_iou)
        idx.append(torch.full((len(cand),), i, dtype=torch.int64))
        boxes.append(cand)
        labels.append(y)
    return torch.cat(idx), torch.cat(boxes), torch.cat(labels)


def _finetune(model: nn.Module, images: _Images, ds: DetectionDataset, proposals, cfg: RCNNConfig, rec: dict,
              run_dir: Path, verbose: bool) -> dict:
    f = cfg.finetune
    model.reset_classifier(len(ds.classes) + 1)  # Section 2.3: (N + 1)-way classification layer, randomly initialised
    model.to(images.device).train()
    idx, boxes, labels = _windows(ds, proposals, f.fg_iou)
    pos, bg = torch.nonzero(labels > 0).flatten(), torch.nonzero(labels == 0).flatten()
    if len(pos) == 0:
        raise ValueError("fine-tuning found no positive window (no ground-truth box in the training images)")
    _log(f"  fine-tuning windows: {len(pos)} positive, {len(bg)} background", verbose)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay)
    rows, t0 = ["iteration,loss,accuracy"], time.perf_counter()
    loss_sum = acc_sum = 0.0
    for it in range(1, f.iterations + 1):
        take = [pos[torch.randint(len(pos), (f.batch_positives,), generator=g)]]
        if len(bg) and f.batch_background:
            take.append(bg[torch.randint(len(bg), (f.batch_background,), generator=g)])
        sel = torch.cat(take)
        x = _warp_windows(images, idx[sel], boxes[sel], rec)
        y = labels[sel].to(images.device)
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
        acc_sum += float((out.argmax(1) == y).float().mean())
        if it % 100 == 0 or it == f.iterations:
            k = 100 if it % 100 == 0 else it % 100
            rows.append(f"{it},{loss_sum / k:.5f},{acc_sum / k:.5f}")
            _log(f"  fine-tune {it}/{f.iterations}: loss {loss_sum / k:.4f}, window accuracy {100 * acc_sum / k:.1f}%",
                 verbose)
            loss_sum = acc_sum = 0.0
    atomic_write(run_dir / "finetune.csv", ("\n".join(rows) + "\n").encode())
    model.eval()
    return {"iterations": f.iterations, "positives": len(pos), "background": len(bg),
            "seconds": time.perf_counter() - t0}


def _train_svms(model, images, ds, proposals, cfg: RCNNConfig, rec: dict, verbose: bool):
    """fc7 features of the training set, per-class SVMs with hard negative mining, and the box regressors."""
    s, bx = cfg.svm, cfg.bbox
    t0 = time.perf_counter()
    gt_f7, prop_f7, prop_p5, prop_iou = [], [], [], []
    for i in range(len(ds)):
        img = images[i]
        _, f7g, _ = region_features(model, img, ds.boxes[i], rec)
        p5, f7, _ = region_features(model, img, proposals[i], rec)
        gt_f7.append(f7g)
        prop_f7.append(f7)
        prop_p5.append(p5 if bx.features == "pool5" else f7)
        prop_iou.append(box_iou(proposals[i], ds.boxes[i]).float())
    _log(f"  features of {sum(len(p) for p in proposals)} proposals and {ds.num_objects()} ground-truth boxes "
         f"({time.perf_counter() - t0:.1f} s)", verbose)
    gt_x = torch.cat(gt_f7)
    all_f7 = torch.cat(prop_f7)
    scale = feature_scale(torch.cat([gt_x, all_f7]), s.feat_norm_mean)
    n = len(ds.classes)
    weight = torch.zeros(n, gt_x.shape[1], dtype=torch.float64)
    bias = torch.zeros(n, dtype=torch.float64)
    mining = {}
    t1 = time.perf_counter()
    for c in range(n):
        # positives of class c: its ground-truth boxes; negatives: proposals with IoU < 0.3 to every box of class c
        examples = [svm_examples(p, g, lab, c, s.neg_iou, iou=iou)
                    for p, g, lab, iou in zip(proposals, ds.boxes, ds.labels, prop_iou)]
        pos = gt_x[torch.cat([e[0] for e in examples])] * scale
        neg = all_f7[torch.cat([e[1] for e in examples])] * scale
        if len(pos) == 0:
            bias[c] = -10.0  # no example of the class: it never fires
            mining[ds.classes[c]] = {"positives": 0, "negatives": len(neg), "rounds": []}
            continue
        svm, rounds = train_with_hard_negatives(
            pos.double(), neg.double(), C=s.C, pos_weight=s.pos_weight, bias_mult=s.bias_mult,
            init_negatives=s.init_negatives, max_rounds=s.max_rounds, hard_threshold=s.hard_threshold,
            evict_threshold=s.evict_threshold, tol=s.tol, seed=cfg.seed + c)
        weight[c], bias[c] = svm.weight, svm.bias
        mining[ds.classes[c]] = {"positives": len(pos), "negatives": len(neg), "rounds": [
            {"cache": len(r.cache), "added": len(r.added), "evicted": len(r.evicted),
             "hard_after": int(r.hard_after)} for r in rounds]}
    _log(f"  SVMs for {n} classes with hard negative mining ({time.perf_counter() - t1:.1f} s)", verbose)
    box, box_scale = None, 1.0
    if bx.enabled:
        feats, props, gts, labs = [], [], [], []
        for i in range(len(ds)):
            if len(ds.boxes[i]) == 0 or len(proposals[i]) == 0:
                continue
            # Appendix C: pairs with IoU > 0.6, each with the box it overlaps most
            sel, arg = regression_pairs(proposals[i], ds.boxes[i], bx.min_iou, iou=prop_iou[i])
            feats.append(prop_p5[i][sel])
            props.append(proposals[i][sel])
            gts.append(ds.boxes[i][arg[sel]])
            labs.append(ds.labels[i][arg[sel]])
        if feats and sum(len(f) for f in feats):
            x = torch.cat(feats)
            box_scale = feature_scale(x, s.feat_norm_mean)
            box = fit_box_regressor(x * box_scale, torch.cat(props), torch.cat(gts), torch.cat(labs), n, lam=bx.lam)
            _log(f"  box regression on {len(x)} proposal/ground-truth pairs (IoU > {bx.min_iou})", verbose)
    return weight.float(), bias.float(), scale, box, box_scale, mining, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ the run
def _normalisation(cfg: RCNNConfig, train: DetectionDataset) -> tuple[list[float], list[float], str]:
    """The mean/std the network sees its inputs with: the pre-training data's (the network learnt them there)."""
    from ..data import load_dataset
    from ..train.checkpoint import IMAGENET_MEAN, IMAGENET_STD

    c = train.in_channels
    if cfg.backbone.pretrain:
        bundle = load_dataset(cfg.backbone.pretrain)
        return list(bundle.mean), list(bundle.std), f"pre-training data ({bundle.name})"
    if cfg.backbone.weights:
        from ..weights import read_checkpoint

        _, meta = read_checkpoint(cfg.backbone.weights)
        if meta.get("mean") and meta.get("std"):
            return list(meta["mean"]), list(meta["std"]), f"the checkpoint's ({cfg.backbone.weights})"
        return list(IMAGENET_MEAN[:c]), list(IMAGENET_STD[:c]), "ImageNet's (a torchvision/timm checkpoint)"
    n = min(len(train), 200)
    px = torch.cat([train.image(i).reshape(c, -1).float() / 255.0 for i in range(n)], 1)
    return px.mean(1).tolist(), px.std(1).clamp(min=1e-3).tolist(), f"training images ({n})"


def train_rcnn(cfg: RCNNConfig, run_dir: str | Path | None = None, *, command: list[str] | None = None,
               verbose: bool = True) -> dict:
    """Train R-CNN as ``cfg`` says, writing everything to ``run_dir``; returns the test metrics (`EvalResult` dict)
    with the run directory under ``"run_dir"``."""
    from .. import __version__
    from ..registry import get_card
    from ..train.engine import _git_commit, resolve_device
    from ..train.rundir import RunDirBusy, RunLock, check_new_run_dir, clear_unstarted_run
    from .config import check_config

    check_config(cfg)
    get_card(cfg.backbone.name)  # an unknown network fails before any work
    if cfg.proposals.method == "selective_search":
        from .proposals import _cv2

        _cv2()  # a missing extra fails before any work too
    device = resolve_device(cfg.device)
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg.data.name)
    extra = _own_early_files(run_dir)
    try:
        check_new_run_dir(run_dir, extra)
    except RunDirBusy:
        raise
    except ValueError:
        if extra:  # an R-CNN run's directory, past its first checkpoint (or with files of the user's added)
            raise ValueError(_holds_rcnn_run(run_dir)) from None
        raise
    made = _missing_dirs(run_dir)  # the directories this run creates (removed again if it fails early)
    lock = RunLock(run_dir).acquire(shlex.join(command or sys.argv))
    try:
        cleared = clear_unstarted_run(run_dir, extra)  # a run killed before its first checkpoint: its files go
        if cleared:
            _log(f"starting again in {run_dir}: removed {len(cleared)} file(s) of a run stopped before its first "
                 "checkpoint", verbose)
        return _train(cfg, run_dir, device, command or sys.argv, verbose, __version__, _git_commit)
    except BaseException:
        _abandon_if_unstarted(run_dir, made, lock)
        raise
    finally:
        lock.release()


#: what a run writes before its first checkpoint (checkpoints/backbone.safetensors, after fine-tuning)
EARLY_FILES = ("config.yaml", "run.json", "proposals.safetensors", "finetune.csv")
#: of those, the ones a classification run does not write (`cnnzoo.train.rundir.is_unstarted_run`'s ``extra``)
RCNN_EARLY_FILES = frozenset(EARLY_FILES) - {"config.yaml", "run.json"}


def _run_record(run_dir: Path) -> dict:
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _own_early_files(run_dir: Path) -> frozenset[str]:
    """`RCNN_EARLY_FILES` where ``run_dir`` holds an R-CNN run's run.json (only then can those files be a killed
    run's own, to be removed when the same command starts again there), else nothing."""
    info = _run_record(run_dir)
    return RCNN_EARLY_FILES if info.get("kind") == "rcnn" and "cnnzoo_version" in info else frozenset()


def _holds_rcnn_run(run_dir: Path) -> str:
    if "finished" in _run_record(run_dir):
        what = f"a finished R-CNN run (`cnnzoo detect eval {run_dir}` evaluates it)"
    elif (run_dir / "checkpoints" / "backbone.safetensors").is_file():
        what = "an R-CNN run stopped after fine-tuning (R-CNN runs cannot be resumed)"
    else:
        what = "an R-CNN run and files a run does not write"
    return f"--run-dir {run_dir} already holds {what}; a new run would overwrite it. Choose another --run-dir"


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    out = []
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            break
        out.append(p)
    return out


def _abandon_if_unstarted(run_dir: Path, made: list[Path], lock) -> None:
    """A run that failed (or was stopped) before its first checkpoint leaves nothing behind, as `cnnzoo train`'s:
    its own files go, and the directories it created if they are empty then; a directory the user had stays."""
    from ..fileio import TMP_GLOB
    from ..train.rundir import LOCK_NAME

    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir() and any(ckpt.glob("*.safetensors")):
        return
    for name in EARLY_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (run_dir, ckpt):
        if folder.is_dir():
            for tmp in folder.glob(TMP_GLOB):  # an atomic write cut short
                tmp.unlink(missing_ok=True)
    lock.release()
    (run_dir / LOCK_NAME).unlink(missing_ok=True)
    for d in (ckpt, *made):  # deepest first; rmdir refuses a directory that is not empty
        with contextlib.suppress(OSError):
            d.rmdir()


def _train(cfg, run_dir: Path, device, command, verbose, version, git_commit) -> dict:
    import yaml

    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    atomic_write(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
    info: dict = {"kind": "rcnn", "cnnzoo_version": version, "torch_version": torch.__version__,
                  "git_commit": git_commit(), "command": shlex.join(command),
                  "started": datetime.now().isoformat(timespec="seconds"), "device": str(device)}
    atomic_write(run_dir / "run.json", json.dumps(info, indent=1).encode())

    _log(f"R-CNN on {cfg.data.name}: backbone {cfg.backbone.name} at {cfg.backbone.input_size}x"
         f"{cfg.backbone.input_size}, proposals {cfg.proposals.method}; run directory {run_dir}", verbose)
    train, test = load_detection_data(cfg.data.name, cfg.data.params)
    params = dict(cfg.data.params) if cfg.data.name.startswith("voc:") else train.meta.get("params", {})
    info["data"] = {"name": cfg.data.name, "params": params, "train_fingerprint":
                    train.fingerprint(), "test_fingerprint": test.fingerprint(), "num_train": len(train),
                    "num_test": len(test), "train_objects": train.num_objects(), "test_objects": test.num_objects()}
    info["classes"] = list(train.classes)
    mean, std, norm_from = _normalisation(cfg, train)
    model = _build_backbone(config_to_dict(cfg)["backbone"], len(train.classes) + 1, train.in_channels) \
        if not cfg.backbone.weights else None
    if cfg.backbone.weights:
        from ..registry import create_model

        model = create_model(cfg.backbone.name, weights=cfg.backbone.weights, **cfg.backbone.options)
        if model.in_channels != train.in_channels:
            raise ValueError(f"backbone.weights {cfg.backbone.weights} take {model.in_channels}-channel images but "
                             f"{cfg.data.name} has {train.in_channels}-channel images")
    if cfg.backbone.input_size < model.min_input_size:
        raise ValueError(f"backbone.input_size {cfg.backbone.input_size} is below {cfg.backbone.name}'s smallest "
                         f"input ({model.min_input_size}); use --set backbone.input_size={model.min_input_size} or more")
    options = {**model.pretrained_cfg.get("options", {})} if cfg.backbone.weights else dict(cfg.backbone.options)
    options = {k: v for k, v in options.items() if k not in ("num_classes", "in_channels")}
    rec = {"name": cfg.backbone.name, "options": options, "input_size": cfg.backbone.input_size,
           "context_padding": cfg.backbone.context_padding, "warp_mode": cfg.backbone.warp_mode,
           "in_channels": train.in_channels, "mean": mean, "std": std, "normalisation_from": norm_from,
           "weights": cfg.backbone.weights}
    info.update(backbone=rec, proposals=config_to_dict(cfg)["proposals"], test=config_to_dict(cfg)["test"],
                svm=config_to_dict(cfg)["svm"], bbox=config_to_dict(cfg)["bbox"], timings={})
    timings = info["timings"]

    # 1. proposals (cached: eval reuses the test split's)
    t0 = time.perf_counter()
    props_train = compute_proposals(train, info["proposals"], verbose, "train")
    props_test = compute_proposals(test, info["proposals"], verbose, "test")
    timings["proposals_s"] = time.perf_counter() - t0
    packed = {f"train_{k}": v for k, v in _pack(props_train).items()} | \
             {f"test_{k}": v for k, v in _pack(props_test).items()}
    _save_tensors(run_dir / "proposals.safetensors", packed, {"settings": info["proposals"],
                                                              "test_fingerprint": info["data"]["test_fingerprint"]})
    info["proposal_recall"] = {"train": proposal_recall(props_train, train.boxes),
                               "test": proposal_recall(props_test, test.boxes)}
    r = info["proposal_recall"]["test"]
    _log(f"proposals: {r['proposals_per_image']:.1f} per test image, recall {100 * r['recall']:.1f}% of "
         f"{r['num_gt']} test boxes at IoU 0.5 ({timings['proposals_s']:.1f} s)", verbose)
    atomic_write(run_dir / "run.json", json.dumps(info, indent=1).encode())

    # 2. pre-training, 3. fine-tuning on (N + 1) classes
    if cfg.backbone.pretrain:
        info["pretrain"] = _pretrain(model, cfg, mean, std, device, verbose)
        timings["pretrain_s"] = info["pretrain"]["seconds"]
    elif not cfg.backbone.weights:
        _log("  warning: no pre-training (backbone.weights / backbone.pretrain unset): the network starts from "
             "random weights, which R-CNN's Section 3.1 shows costs most of its accuracy", verbose)
    images = _Images(train, mean, std, device)
    info["finetune"] = _finetune(model, images, train, props_train, cfg, rec, run_dir, verbose)
    timings["finetune_s"] = info["finetune"]["seconds"]
    _save_tensors(run_dir / "checkpoints" / "backbone.safetensors", model.state_dict(),
                  {"format": "cnnzoo-rcnn-backbone", "model": cfg.backbone.name, "options": rec["options"],
                   "num_classes": len(train.classes) + 1, "in_channels": train.in_channels})

    # 4. SVMs with hard negative mining, 5. box regression
    weight, bias, scale, box, box_scale, mining, secs = _train_svms(model, images, train, props_train, cfg, rec,
                                                                      verbose)
    timings["svm_bbox_s"] = secs
    det = {"svm_weight": weight, "svm_bias": bias}
    if box is not None:
        det |= {"box_weight": box.weight, "box_mean": box.target_mean, "box_trained": box.trained.to(torch.uint8)}
    _save_tensors(run_dir / "checkpoints" / "detector.safetensors", det,
                  {"fc7_scale": scale, "box_scale": box_scale, "bbox_features": cfg.bbox.features})
    atomic_write(run_dir / "svm.json", json.dumps(mining, indent=1).encode())
    images.cache.clear()
    images._stack = None

    # 6. test
    detector = RCNNDetector(model, weight, bias, scale, box_scale, box, list(train.classes), rec, info["proposals"],
                            info["test"], cfg.bbox.features)
    t0 = time.perf_counter()
    result = _evaluate(detector, test, props_test, scorer=cfg.test.scorer, bbox_reg=cfg.bbox.enabled,
                       nms_iou=cfg.test.nms_iou)
    timings["test_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    metrics = result.to_dict() | {"scorer": cfg.test.scorer, "bbox_reg": cfg.bbox.enabled}
    atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=1).encode())
    info["finished"] = datetime.now().isoformat(timespec="seconds")
    info["test_map"] = {"all_point": result.map, "11point": result.map11}
    atomic_write(run_dir / "run.json", json.dumps(info, indent=1).encode())
    return metrics | {"run_dir": str(run_dir), "timings": timings, "proposal_recall": info["proposal_recall"]}


def _detect_all(detector: RCNNDetector, test: DetectionDataset, proposals: list[torch.Tensor], *, scorer: str,
                bbox_reg: bool, nms_iou: float, progress=None) -> list[tuple]:
    """(boxes, scores, labels) of every test image; ``progress(what, done, total)`` as it goes."""
    dets = []
    for i in range(len(test)):
        if progress is not None:
            progress("detecting", i, len(test))
        dets.append(detector.detect(test.image(i), proposals[i], scorer=scorer, nms_iou=nms_iou, bbox_reg=bbox_reg))
    if progress is not None:
        progress("detecting", len(test), len(test))
    return dets


def _evaluate(detector: RCNNDetector, test: DetectionDataset, proposals: list[torch.Tensor], *, scorer: str,
              bbox_reg: bool, nms_iou: float) -> EvalResult:
    dets = _detect_all(detector, test, proposals, scorer=scorer, bbox_reg=bbox_reg, nms_iou=nms_iou)
    return evaluate_detections(dets, test.boxes, test.labels, test.difficult, detector.classes)


def reload_test_split(info: dict) -> DetectionDataset:
    """The run's test split, rebuilt from its record and checked against the recorded fingerprint."""
    d = info["data"]
    params = dict(d.get("params") or {})
    if not d["name"].startswith("voc:"):
        _, test = load_detection_data(d["name"], params)
    else:  # the run's splits, classes and channels
        params |= {"classes": info["classes"], "in_channels": info["backbone"]["in_channels"]}
        _, test = load_detection_data(d["name"], params)
    if test.fingerprint() != d["test_fingerprint"]:
        raise ValueError(f"the test data of {d['name']} no longer matches the run's record (its images or "
                         f"annotations changed since training); evaluate on the data the run was trained with")
    return test


def evaluate_run(run_dir: str | Path, *, scorer: str | None = None, bbox_reg: bool | None = None,
                 nms_iou: float | None = None, device: str = "cpu", verbose: bool = False, progress=None):
    """(EvalResult, detector, test split, detections) of a finished run on its own test split; ``progress(what,
    done, total)`` (`cnnzoo.status.Steps`) is told how far the detection has gone."""
    run_dir = Path(run_dir)
    detector, info = load_detector(run_dir, device)
    test = reload_test_split(info)
    props = None
    cache = run_dir / "proposals.safetensors"
    if cache.is_file():
        tensors, meta = _load_tensors(cache)
        if meta.get("settings") == info["proposals"] and meta.get("test_fingerprint") == info["data"]["test_fingerprint"]:
            props = _unpack(tensors["test_boxes"], tensors["test_counts"])
    if props is None:
        props = compute_proposals(test, info["proposals"], verbose, "test")
    scorer = scorer or info["test"]["scorer"]
    bbox_reg = info["bbox"]["enabled"] if bbox_reg is None else bbox_reg
    nms_iou = info["test"]["nms_iou"] if nms_iou is None else nms_iou
    dets = _detect_all(detector, test, props, scorer=scorer, bbox_reg=bbox_reg, nms_iou=nms_iou, progress=progress)
    result = evaluate_detections(dets, test.boxes, test.labels, test.difficult, detector.classes)
    return result, detector, test, dets
