"""Training, evaluating and applying the one-stage detectors (SSD, RetinaNet, YOLO v1, ...) in run directories
(`cnnzoo detect train NAME | eval RUN | predict RUN IMAGE`).

    >>> from cnnzoo.detection.train import DetTrainer, default_det_config, evaluate_det_run
    >>> result = DetTrainer(default_det_config("ssd300_vgg16"), run_dir="runs/ssd").fit()
    >>> evaluate_det_run("runs/ssd")["mAP"]

A detection run directory is a segmentation run directory with detection's record, from the same code: the run
directory's lock, refusal of foreign directories, restart of a run killed before its first checkpoint, the safetensors
+ state checkpoint pairs and their pointers, the signal handling and `save` / `_restore` are
`cnnzoo.segmentation.train.SegTrainer`'s (`DetTrainer` inherits them), as are the normalisation statistics
(`_stats`, `normalise`)::

    RUN/run.json        kind "detection"; the detector, its family and options (num_classes and in_channels
                        included); the data (spec, params, classes, split sizes and fingerprints); the normalisation
                        statistics of the training images; the input size; the augmentation; how it is evaluated
    RUN/config.yaml     what ``--resume`` continues with (`DetConfig`, flat)
    RUN/metrics.csv     one row per epoch: train loss, test mAP (all-point and 11-point; epochs skipped by
    RUN/metrics.jsonl   ``eval_every`` have none), lr, time
    RUN/checkpoints/    last.json -> last-eEEEE-bBBBBBB.safetensors + .state.pt (every epoch and on SIGINT/SIGTERM);
                        metadata format "cnnzoo-detection" (model, options, num_classes, in_channels, classes, mean,
                        std, input_size): ``create_detector(name, weights=FILE)`` rebuilds the network with no options
    RUN/eval.json       the final test metrics of the last checkpoint

Training. Every image is resized to ``input_size`` x ``input_size`` (bilinear, antialiased; the digits canvases are
already 128 x 128) and its boxes scaled with it; pixels are normalised with the mean and standard deviation (of
pixel / 255, per channel) of the training split, recorded. Targets are the dataset's boxes with labels + 1 (the
detectors' 1..C; `cnnzoo.detection.data` labels are 0-based). The loss is the detector's own ``loss(outputs,
targets, image_size)["loss"]`` (SSD's multibox loss, RetinaNet's focal loss, YOLO v1's Eq. 3); the optimizer, its
learning rate, momentum and weight decay and the schedule (constant ``none``, ``cosine``, DeepLab's ``poly``, stepped
every iteration by `cnnzoo.train.optim.LRSchedule`) come from the config, which `default_det_config` fills from the
detector's ``digits_recipe``. Augmentation is off by default and only three cheap options exist: ``hflip`` (horizontal
flip with probability 0.5: wrong for digits, whose mirror images are not digits) and ``jitter`` = f (YOLO v1 Sec. 2.2's
"random scaling and translations of up to 20% of the original image size": scale in [1 - f, 1 + f] about the centre
and shift by up to f of the side, black fill, boxes transformed, clipped, and dropped when less than half of their
area stays in view); ``mosaic`` (YOLOv4 Sec. 3.3: four images of the batch around a random centre,
`cnnzoo.detection.augment.mosaic`; applied first; `--mosaic`). SSD's own
augmentation (photometric distortions, zoom-out expansion, IoU-constrained crops;
Sec. 2.2 of the SSD paper) is NOT implemented here: a deviation for every SSD run. There is no validation holdout
and no "best" checkpoint.

Classes. A detector whose classifier has a column for the background (SSD's softmax, column 0) or an unused column 0
(RetinaNet's sigmoid in torchvision's convention) is built with ``num_classes = C + 1``; YOLO v1's class scores are
the C classes themselves (``num_classes = C``); `NO_BACKGROUND_COLUMN` lists those families.

Evaluation (`evaluate_detector`): the detector's ``detect`` on the test images (resized as in training) with the
family's evaluation settings (`EVAL_DETECT`: SSD's score 0.01, NMS 0.45, top 200, SSD Sec. 3 "Inference time";
RetinaNet's 0.05, 0.5, 100, Sec. 4 "Inference"; YOLO v1's 0.001 and 0.5, darknet's ``validate_yolo``, not the 0.2 of
its ``detect`` default), the boxes mapped back to the original image's pixels, then Pascal VOC AP at IoU 0.5 per class
(`cnnzoo.detection.voc_eval`): **mAP is the all-point AP** (VOC2010 onwards), the default everywhere here;
``mAP_11point`` (VOC2007) is reported beside it. COCO's AP@[.5:.95] (and AP50, AP75, ...) by pycocotools
(`cnnzoo.detection.coco.coco_ap`) is added where the ``coco`` extra is installed, else left out with a note.

Determinism (what makes a resumed run bit-identical to an uninterrupted one on the CPU): the batches of epoch e are
a permutation drawn from a generator seeded by ``(seed, e)`` only, the augmentation of step i of epoch e from one
seeded by ``(seed, e, i)``; the checkpoint holds the weights, the optimizer, the global RNG state (dropout) and the
position in the epoch; a resumed epoch skips the batches already done; a resumed run uses the threads it recorded.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import atomic_write
from ..segmentation.train import (
    OPTIMIZERS,
    SCHEDULES,
    SegTrainer,
    _run_record,
    _stats,
    _threads,
    normalise,
    steps_per_epoch,
)

__all__ = ["EVAL_DETECT", "KIND", "NO_BACKGROUND_COLUMN", "DetConfig", "DetTrainer", "LoadedDetRun",
           "default_det_config", "detect_images", "evaluate_det_run", "evaluate_detector", "load_det_run",
           "materialise", "predict_detections"]

KIND = "detection"  # run.json's "kind" (R-CNN's runs are "rcnn")
FORMAT = "cnnzoo-detection"  # the checkpoints' metadata "format" (`cnnzoo.detection.registry`)
#: families (detector module names) whose classifier has exactly C columns, no background / unused column 0
NO_BACKGROUND_COLUMN = frozenset({"yolo_v1", "yolo_v2", "yolo_v3", "yolo_v4"})
#: per family, the ``detect`` settings of the mAP evaluation where they differ from its ``detect`` defaults
EVAL_DETECT: dict[str, dict] = {"yolo_v1": {"score_thresh": 0.001, "nms_thresh": 0.5},
                               "yolo_v2": {"score_thresh": 0.005, "nms_thresh": 0.45},
                               "yolo_v3": {"score_thresh": 0.005, "nms_thresh": 0.45},
                               "yolo_v4": {"score_thresh": 0.005, "nms_thresh": 0.45}}  # darknet validate_detector
#: per family, the score above which `cnnzoo detect predict` draws a detection (default 0.5)
DRAW_THRESHOLD: dict[str, float] = {"yolo_v1": 0.2}
METRIC_FIELDS = ("epoch", "train_loss", "test_mAP", "test_mAP_11point", "lr", "epoch_time_s", "images_per_s")


# ------------------------------------------------------------------------------------------------ config
@dataclass
class DetConfig:
    """Everything a one-stage detection run trains with (config.yaml, flat). `default_det_config` fills it from the
    detector's ``digits_recipe``."""

    model: str
    options: dict = field(default_factory=dict)
    data: str = "digits-detection"
    data_params: dict = field(default_factory=dict)
    input_size: int | None = None  # None: the images' own size (they must all be one square size)
    hflip: bool = False
    jitter: float = 0.0  # YOLO v1's random scaling and translation, as a fraction of the side (paper: 0.2)
    mosaic: bool = False  # YOLOv4's Mosaic (Sec. 3.3, `cnnzoo.detection.augment.mosaic`), before hflip / jitter
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    epochs: int = 20
    batch_size: int = 16
    eval_batch_size: int = 50
    eval_every: int = 1  # the test mAP after every N epochs (and always after the last)
    seed: int = 0
    limit_batches: int | None = None
    device: str = "cpu"

    def check(self) -> DetConfig:
        """Raise ValueError naming the first invalid setting and what is valid."""
        for key in ("model", "data"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise ValueError(f"{key} must be a non-empty name, got {getattr(self, key)!r}")
        for key in ("options", "data_params"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{key} must be a mapping of KEY: VALUE, got {getattr(self, key)!r}")
        for key, low, none in (("epochs", 1, False), ("batch_size", 1, False), ("eval_batch_size", 1, False),
                               ("eval_every", 1, False), ("seed", 0, False), ("limit_batches", 1, True),
                               ("input_size", 1, True)):
            v = getattr(self, key)
            if not (none and v is None) and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ValueError(f"{key} must be a whole number >= {low}{' or null' if none else ''}, got {v!r}")
        for key, low_open in (("lr", True), ("momentum", False), ("weight_decay", False)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or \
                    (low_open and v == 0):
                raise ValueError(f"{key} must be a finite number {'> 0' if low_open else '>= 0'}, got {v!r}")
        for key in ("hflip", "mosaic"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false, got {getattr(self, key)!r}")
        j = self.jitter
        if isinstance(j, bool) or not isinstance(j, int | float) or not 0 <= j < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1) (YOLO v1's 0.2), got {j!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if "input_size" in self.options and self.options["input_size"] != self.input_size:
            raise ValueError(f"{self.model}'s option input_size ({self.options['input_size']!r}) must equal the run's "
                             f"input size ({self.input_size!r}); give --input-size only")
        from ..train.config import device_problem

        problem = device_problem(self.device) if isinstance(self.device, str) else f"device {self.device!r}"
        if problem:
            raise ValueError(problem)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> DetConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{where} does not hold a detection configuration (a mapping with model, data, ...)")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid), key=str)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(valid)}")
        if "model" not in data:
            raise ValueError(f"{where} names no detector (key 'model')")
        return cls(**data).check()


def _recipe(name: str) -> dict:
    from .registry import _REGISTRY

    return dict(_REGISTRY.entry(name).digits_recipe or {})  # an unknown name: UnknownModelError with close names


def default_det_config(name: str, data: str = "digits-detection", **overrides) -> DetConfig:
    """The detector's ``digits_recipe`` (options, optimizer, lr, epochs, batch size, schedule, weight decay, momentum,
    digits-detection parameters, input size, augmentation; `cnnzoo.detection.registry.RECIPE_KEYS`) as a config, then
    ``overrides`` (any `DetConfig` field; ``options`` and ``data_params`` are merged into the recipe's; None leaves
    the recipe's value). The recipe's ``data_params`` apply to ``digits-detection`` only. A detector built for one
    input size (YOLO v1's ``input_size`` option) gets the run's: ``-o input_size=S`` alone sets both."""
    from .registry import detector_options

    recipe = _recipe(name)
    digits = data.strip().lower().replace("_", "-") in ("digits-detection", "digitsdetection")
    cfg = DetConfig(model=name, options=dict(recipe.get("options") or {}), data=data,
                    optimizer=recipe.get("optimizer", "adam"), lr=float(recipe.get("lr", 1e-3)),
                    epochs=int(recipe.get("epochs", 20)), batch_size=int(recipe.get("batch_size", 16)),
                    schedule=recipe.get("schedule", "none"), weight_decay=float(recipe.get("weight_decay", 0.0)),
                    momentum=float(recipe.get("momentum", 0.9)), input_size=recipe.get("input_size"),
                    data_params=dict(recipe.get("data_params") or {}) if digits else {},
                    hflip=bool(recipe.get("hflip", False)), jitter=float(recipe.get("jitter", 0.0)),
                    mosaic=bool(recipe.get("mosaic", False)))
    valid = {f.name for f in fields(DetConfig)}
    for key, value in overrides.items():
        if key not in valid:
            raise ValueError(f"unknown detection setting {key!r}; valid: {', '.join(sorted(valid))}")
        if value is None:
            continue
        if key == "options":
            cfg.options.update(value)
        elif key == "data_params":
            cfg.data_params.update(value)
        else:
            setattr(cfg, key, value)
    if "input_size" in detector_options(name):  # one size for the run and the network
        top, given = overrides.get("input_size"), (overrides.get("options") or {}).get("input_size")
        if top is None and given is not None:
            cfg.input_size = given
        if cfg.input_size is not None and (top is None or given is None):
            cfg.options["input_size"] = cfg.input_size
    return cfg.check()


# ------------------------------------------------------------------------------------------------ data
def materialise(ds, size: int | None, what: str = "training") -> tuple[torch.Tensor, list, list, list]:
    """(images uint8 (N, C, S, S), boxes per image in S x S pixels, labels per image (0-based), (sx, sy) per image:
    the factors that took the original boxes to S x S). Images are resized bilinear (antialiased) when their size is
    not S x S; without ``size`` they must all be one square size."""
    images, boxes, scale = [], [], []
    for i in range(len(ds)):
        img = ds.image(i)
        h, w = img.shape[-2:]
        if size is None:
            if h != w:
                raise ValueError(f"the {what} images of {ds.meta.get('name', 'the dataset')} are not square ({w}x{h});"
                                 f" give an input size (--input-size S) to resize them to S x S")
            size = int(h)
        sx, sy = size / w, size / h
        if (h, w) != (size, size):
            img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
        images.append(img)
        boxes.append(ds.boxes[i].float() * torch.tensor([sx, sy, sx, sy], dtype=torch.float32))
        scale.append((sx, sy))
    return torch.stack(images), boxes, [lab.long() for lab in ds.labels], scale


def _augment(x: torch.Tensor, boxes: list, labels: list, rng: np.random.Generator, hflip: bool,
             jitter: float) -> tuple[torch.Tensor, list, list]:
    """Random scaling and translation (``jitter``, then) horizontal flips of a float batch (N, C, S, S) in pixel
    values, its boxes moved with it (module docstring)."""
    n, _, h, w = x.shape
    if jitter > 0:
        s = 1.0 + rng.uniform(-jitter, jitter, n)
        t = rng.uniform(-jitter, jitter, (n, 2)) * np.array([w, h])
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)  # output -> input, normalised coordinates (align_corners False)
        theta[:, 0, 0] = theta[:, 1, 1] = torch.tensor(1.0 / s, dtype=x.dtype)
        theta[:, 0, 2] = torch.tensor(-2.0 * t[:, 0] / w / s, dtype=x.dtype)
        theta[:, 1, 2] = torch.tensor(-2.0 * t[:, 1] / h / s, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out_b, out_l = [], []
        for k, (b, lab) in enumerate(zip(boxes, labels)):
            centre = torch.tensor([w / 2, h / 2, w / 2, h / 2])
            shift = torch.tensor([t[k, 0], t[k, 1], t[k, 0], t[k, 1]], dtype=torch.float32)
            moved = (b - centre) * float(s[k]) + centre + shift
            clipped = moved.clone()
            clipped[:, 0::2] = clipped[:, 0::2].clamp(0, w)
            clipped[:, 1::2] = clipped[:, 1::2].clamp(0, h)
            area = (moved[:, 2:] - moved[:, :2]).prod(1)
            kept = (clipped[:, 2:] - clipped[:, :2]).clamp(min=0).prod(1)
            keep = kept >= 0.5 * area
            out_b.append(clipped[keep])
            out_l.append(lab[keep])
        boxes, labels = out_b, out_l
    if hflip:
        flip = rng.random(n) < 0.5
        if flip.any():
            idx = torch.from_numpy(np.flatnonzero(flip))
            x = x.clone()
            x[idx] = x[idx].flip(-1)
            boxes = [torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1) if f else b
                     for b, f in zip(boxes, flip)]
    return x, boxes, labels


# ------------------------------------------------------------------------------------------------ evaluation
def _family(name: str) -> str:
    from .registry import get_detector_card

    return get_detector_card(name).family


def eval_settings(model: nn.Module, name: str) -> dict:
    """The ``detect`` keyword arguments of the mAP evaluation: the detector's defaults, with `EVAL_DETECT`'s."""
    params = inspect.signature(model.detect).parameters
    out = {k: p.default for k, p in params.items() if k in ("score_thresh", "nms_thresh", "max_detections")
           and p.default is not inspect.Parameter.empty}
    return out | EVAL_DETECT.get(_family(name), {})


@torch.no_grad()
def detect_images(model: nn.Module, images: torch.Tensor, mean, std, *, batch_size: int = 50,
                  device: torch.device | str = "cpu", scale: list | None = None, **detect_kwargs) -> list[dict]:
    """The detector's detections (eval mode, on the CPU) on uint8 ``images`` (N, C, S, S) normalised with
    ``mean``/``std``; with ``scale`` (per image (sx, sy)), boxes mapped back to the original image's pixels."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = normalise(images[i : i + batch_size], mean, std, device)
            out += [{k: v.detach().cpu() for k, v in d.items()} for d in model.detect(x, **detect_kwargs)]
    finally:
        model.train(was_training)
    if scale is not None:
        for d, (sx, sy) in zip(out, scale):
            d["boxes"] = d["boxes"].float() / torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
    return out


def _none(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def voc_metrics(detections: list[dict], dataset) -> dict:
    """VOC AP at IoU 0.5 of 1..C-labelled detections on ``dataset`` (0-based labels): {"mAP" (all-point),
    "mAP_11point", "iou_threshold", "classes": {name: {ap, ap_11point, num_gt, num_detections}}}, NaN as None."""
    from .voc_eval import evaluate_detections

    dets = [(d["boxes"], d["scores"], d["labels"] - 1) for d in detections]
    r = evaluate_detections(dets, dataset.boxes, dataset.labels, dataset.difficult, dataset.classes).to_dict()
    r["mAP"], r["mAP_11point"] = _none(r["mAP"]), _none(r["mAP_11point"])
    r["classes"] = {c: {k: _none(v) for k, v in row.items()} for c, row in r["classes"].items()}
    return r


def evaluate_detector(model: nn.Module, images: torch.Tensor, dataset, scale: list, mean, std, *,
                      batch_size: int = 50, device: torch.device | str = "cpu", coco: bool = True,
                      detect_kwargs: dict | None = None, keep_detections: bool = False) -> dict:
    """VOC mAP (all-point, the default, and 11-point) at IoU 0.5 and, with ``coco`` where pycocotools imports,
    COCO AP@[.5:.95] of ``model`` on ``images`` (``dataset``'s images resized, `materialise`), the detections
    mapped back to ``dataset``'s pixels."""
    dets = detect_images(model, images, mean, std, batch_size=batch_size, device=device, scale=scale,
                         **(detect_kwargs or {}))
    out = voc_metrics(dets, dataset) | {"ap_default": "all-point (VOC2010+); mAP_11point: VOC2007",
                                        "num_images": len(dets), "detect": dict(detect_kwargs or {})}
    if coco:
        from .coco import coco_ap
        from .proposals import MissingExtraError

        try:
            out["coco"] = {k: _none(v) for k, v in coco_ap(dets, dataset, label_offset=1).items()}
        except MissingExtraError as e:
            out["coco"], out["coco_note"] = None, str(e)
    if keep_detections:
        out["detections"] = dets
    return out


# ------------------------------------------------------------------------------------------------ run directories
def _other_kind(run_dir: Path, info: dict) -> str | None:
    """Why ``run_dir`` is not a one-stage detection run (None when it is one)."""
    if info.get("kind") == KIND:
        return None
    if info.get("kind") == "rcnn":
        return f"{run_dir} is an R-CNN run (`cnnzoo detect eval` reads it; `cnnzoo detect train rcnn` trains a new " \
               f"one), not a one-stage detection run"
    if info.get("kind") == "segmentation":
        return f"{run_dir} is a segmentation run (`cnnzoo segment eval` reads it), not a detection run"
    if "cnnzoo_version" in info:
        return f"{run_dir} is a classification run (`cnnzoo eval` reads it), not a detection run"
    return f"{run_dir} is not a cnnzoo run directory (no readable run.json in it); give a directory `cnnzoo detect " \
           f"train` wrote"


def _check_new_dir(run_dir: Path) -> None:
    from ..train.rundir import RunDirBusy, check_new_run_dir, has_last_checkpoint

    try:
        check_new_run_dir(run_dir)
    except RunDirBusy:
        raise
    except ValueError as e:
        if run_dir.is_dir() and has_last_checkpoint(run_dir):
            how = f"resume it with `cnnzoo detect train --resume {run_dir}` or" \
                if _run_record(run_dir).get("kind") == KIND else "a new run would overwrite it:"
            raise ValueError(f"--run-dir {run_dir} already holds a run; {how} choose another --run-dir") from None
        raise e from None


def _recorded(run_dir: Path) -> tuple[DetConfig, tuple | None, dict]:
    """What ``--resume RUN`` continues with: (config, the last checkpoint's (state_dict, metadata, state) or None
    for a run killed before its first one, run.json)."""
    from ..train.checkpoint import load_checkpoint
    from ..train.config import load_yaml_file
    from ..train.rundir import has_last_checkpoint, held_by, is_unstarted_run

    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist (give the directory `cnnzoo detect "
                                f"train` wrote)")
    info = _run_record(run_dir)
    why = _other_kind(run_dir, info)
    if why:
        raise ValueError(why)
    busy = held_by(run_dir)
    if busy is not None:
        raise ValueError(f"run directory {run_dir} is being written by another process ({busy}); wait for it to "
                         "finish or stop it")
    if has_last_checkpoint(run_dir):
        payload = load_checkpoint(run_dir / "checkpoints", "last")
        if not payload[2]:
            raise ValueError(f"{run_dir}: the last checkpoint has no training state to resume from")
        return DetConfig.from_dict(payload[2].get("config"), f"the last checkpoint of {run_dir}"), payload, info
    if not is_unstarted_run(run_dir):
        raise FileNotFoundError(f"no last checkpoint in {run_dir / 'checkpoints'} to resume from")
    written = load_yaml_file(run_dir / "config.yaml", "config") if (run_dir / "config.yaml").is_file() else None
    if not written:
        raise ValueError(f"{run_dir} has no checkpoint yet and its config.yaml is missing or empty: start it again "
                         f"with its train command (--run-dir {run_dir} may be reused)")
    return DetConfig.from_dict(written, str(run_dir / "config.yaml")), None, info


def _classifier_columns(name: str, num_classes: int) -> int:
    return num_classes if _family(name) in NO_BACKGROUND_COLUMN else num_classes + 1


def _check_options(name: str, options: dict) -> None:
    """Refuse what the detector cannot be built with before the data is generated (a copy on the meta device)."""
    from ..registry import UnknownOptionError
    from .registry import create_detector

    fixed = sorted({"in_channels", "num_classes"} & set(options))
    if fixed:
        raise ValueError(f"{name}: {', '.join(fixed)} come(s) from the data (its channels and classes); drop "
                         f"-o {fixed[0]}")
    try:
        with torch.device("meta"):
            create_detector(name, **options, in_channels=1, num_classes=3)
    except (UnknownOptionError, ValueError):
        raise
    except Exception:  # noqa: BLE001, S110  (a detector that cannot be built on the meta device: the real build checks)
        pass


class DetTrainer(SegTrainer):
    """Train a one-stage detector as ``cfg`` says into ``run_dir``, or continue the run ``resume``. The run
    directory, checkpoints, signals and resume are `SegTrainer`'s (arguments as there); the data, loss, metrics and
    record are detection's (module docstring)."""

    def __init__(self, cfg: DetConfig | None = None, *, run_dir: str | Path | None = None,
                 resume: str | Path | None = None, epochs: int | None = None, threads: int | None = None,
                 callbacks: list | None = None, command: list[str] | None = None, verbose: bool = True) -> None:
        from ..train.config import OptimConfig, ScheduleConfig
        from ..train.engine import default_run_dir, resolve_device
        from ..train.optim import LRSchedule, build_optimizer
        from .data import load_detection_data
        from .registry import create_detector

        self.verbose, self.callbacks = verbose, list(callbacks or [])
        self.command = list(sys.argv if command is None else command)
        self._stop_signal: int | None = None
        self._payload, self.restarted, self.lock = None, False, None
        self.resumed = resume is not None
        recorded_info: dict = {}
        if resume is not None:
            self.run_dir = Path(resume)
            cfg, self._payload, recorded_info = _recorded(self.run_dir)
            if epochs is not None:
                cfg.epochs = epochs
                cfg.check()
            if self._payload is None:
                self.resumed, self.restarted = False, True
            if threads is None and self.resumed:
                threads = recorded_info.get("threads")
        elif cfg is None:
            raise ValueError("DetTrainer needs a config or a run directory to resume")
        else:
            cfg.check()
            self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg.model)
        self.cfg, self.threads = cfg, threads or torch.get_num_threads()
        self.family = _family(cfg.model)  # an unknown detector fails before any work
        _check_options(cfg.model, cfg.options)
        if not self.resumed:
            _check_new_dir(self.run_dir)
        self.device = resolve_device(cfg.device)

        train, test = load_detection_data(cfg.data, cfg.data_params)
        if train.classes != test.classes or train.in_channels != test.in_channels:
            raise ValueError(f"{cfg.data}: the train and test splits differ in classes or channels")
        self.classes, self.in_channels = list(train.classes), train.in_channels
        self.test_set = test
        self.images, self.boxes, self.labels, _ = materialise(train, cfg.input_size, "training")
        self.input_size = int(self.images.shape[-1])
        self.test_images, _, _, self.test_scale = materialise(test, self.input_size, "test")
        self.mean, self.std = _stats(self.images)
        self.data_record = {
            "spec": cfg.data, "params": train.meta.get("params") or dict(cfg.data_params),
            "classes": self.classes, "in_channels": self.in_channels, "num_train": len(train), "num_test": len(test),
            "num_train_objects": train.num_objects(), "num_test_objects": test.num_objects(),
            "train_fingerprint": train.fingerprint(), "test_fingerprint": test.fingerprint(),
            "resized_to": self.input_size}
        if self.resumed:
            for split in ("train", "test"):
                was = (recorded_info.get("data") or {}).get(f"{split}_fingerprint")
                if was not in (None, self.data_record[f"{split}_fingerprint"]):
                    raise ValueError(f"{cfg.data} no longer gives the {split} split this run started with; restore "
                                     "the data, or start a new run")

        torch.manual_seed(cfg.seed)  # the same initial weights
        self.options = {**cfg.options, "in_channels": self.in_channels,
                        "num_classes": _classifier_columns(cfg.model, len(self.classes))}
        model = create_detector(cfg.model, **self.options)
        smallest = int(getattr(model, "min_input_size", 1))
        if self.input_size < smallest:
            raise ValueError(f"{cfg.model} with these options needs inputs of at least {smallest}x{smallest} pixels "
                             f"but the images are {self.input_size}x{self.input_size}; give --input-size {smallest} "
                             f"or more")
        self.model = model.to(self.device)
        self.detect_kwargs = eval_settings(model, cfg.model)
        self.optimizer = build_optimizer(self.model, OptimConfig(name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                                                                 weight_decay=cfg.weight_decay))
        n = len(self.images)
        self.steps_per_epoch = steps_per_epoch(n, cfg.batch_size, cfg.limit_batches)
        self.schedule = LRSchedule(ScheduleConfig(name=cfg.schedule), cfg.lr, self.steps_per_epoch, cfg.epochs)
        self.epoch = self.batch = self.global_step = 0
        self.sums = [0.0, 0.0, 0]  # the epoch's loss x images, (unused), images
        self.history: list[dict] = []
        self.best_iu = -1.0  # SegTrainer's checkpoint state field; no "best" here
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._made: list[Path] = []
        self._start()

    # ------------------------------------------------------------------ record, checkpoints
    def _record(self) -> dict:
        from .. import __version__
        from ..train.engine import _git_commit

        return {"kind": KIND, "cnnzoo_version": __version__, "torch_version": torch.__version__,
                "git_commit": _git_commit(), "command": shlex.join(self.command),
                "started": datetime.now().isoformat(timespec="seconds"), "device": str(self.device),
                "threads": self.threads,
                "model": {"name": self.cfg.model, "family": self.family, "options": self.options,
                          "background_column": self.family not in NO_BACKGROUND_COLUMN},
                "num_params": sum(p.numel() for p in self.model.parameters()), "data": self.data_record,
                "normalisation": {"mean": self.mean, "std": self.std, "from": "the training split: mean and std of "
                                  "pixel / 255 per channel"},
                "input_size": self.input_size, "labels": "the dataset's 0-based labels + 1 (1..C)",
                "augmentation": {"hflip": self.cfg.hflip, "jitter": self.cfg.jitter, "ssd_paper_augmentation": False,
                                 **({"mosaic": True} if self.cfg.mosaic else {})},
                "evaluation": {"iou_threshold": 0.5, "mAP": "VOC all-point AP (VOC2010+); mAP_11point: VOC2007",
                               "detect": self.detect_kwargs, "coco": "pycocotools COCOeval where installed"}}

    def weights_metadata(self) -> dict:
        from .. import __version__

        return {"format": FORMAT, "cnnzoo_version": __version__, "model": self.cfg.model, "options": self.options,
                "num_classes": self.options["num_classes"], "in_channels": self.in_channels,
                "classes": self.classes, "mean": self.mean, "std": self.std, "input_size": self.input_size,
                "dataset": self.cfg.data, "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step}

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train to ``epochs`` (saving "last" after every epoch), then evaluate the last weights on the test split;
        returns those metrics (eval.json) with ``run_dir``."""
        try:
            with _threads(self.threads), self._signals():
                while self.epoch < self.cfg.epochs:
                    self._train_epoch()
                    self._end_epoch()
                return self._final()
        except BaseException as e:
            from ..train.engine import TrainingInterrupted

            if not isinstance(e, TrainingInterrupted):
                self._fail()
            raise
        finally:
            self.close()

    def _targets(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        cfg = self.cfg
        x = self.images[idx].float()
        boxes, labels = [self.boxes[i] for i in idx.tolist()], [self.labels[i] for i in idx.tolist()]
        if cfg.hflip or cfg.jitter or cfg.mosaic:
            from ..data.loader import epoch_seed

            rng = np.random.default_rng(epoch_seed(cfg.seed, self.epoch, self.batch, 11))
            if cfg.mosaic:
                from .augment import mosaic

                x, boxes, labels = mosaic(x, boxes, labels, rng)
            x, boxes, labels = _augment(x, boxes, labels, rng, cfg.hflip, float(cfg.jitter))
        targets = [{"boxes": b.to(self.device), "labels": (lab + 1).to(self.device)} for b, lab in zip(boxes, labels)]
        return normalise(x, self.mean, self.std, self.device), targets

    def _train_epoch(self) -> None:
        from ..data.loader import epoch_seed
        from ..train.engine import TrainingDiverged

        cfg, n = self.cfg, len(self.images)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, self.epoch)))
        self.model.train()
        if self.batch == 0:
            self.sums = [0.0, 0.0, 0]
        t0, seen = time.perf_counter(), 0
        size = (self.input_size, self.input_size)
        for i in range(self.batch, self.steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x, targets = self._targets(idx)
            lr = self.schedule.apply(self.optimizer, self.global_step)
            loss = self.model.loss(self.model(x), targets, size)["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss.item()} at epoch {self.epoch + 1} step {i + 1}; stopped (the "
                                       f"last good checkpoint is kept in {self.ckpt_dir}); try a lower --lr "
                                       f"(now {cfg.lr:g})")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.global_step, self.batch = self.global_step + 1, i + 1
            self.sums[0] += loss.item() * len(idx)
            self.sums[2] += len(idx)
            seen += len(idx)
            self._epoch_time, self._epoch_seen, self._lr = time.perf_counter() - t0, seen, lr
            if self.verbose and (self.batch % 20 == 0 or self.batch == self.steps_per_epoch):
                print(f"epoch {self.epoch + 1}/{cfg.epochs} step {self.batch}/{self.steps_per_epoch} loss "
                      f"{self.sums[0] / max(self.sums[2], 1):.4f} {seen / max(self._epoch_time, 1e-9):.0f} img/s lr "
                      f"{lr:.3g}", flush=True)
            for cb in self.callbacks:
                cb(self, self.epoch, i)
            if self._stop_signal is not None:
                self._interrupted()

    def _interrupted(self) -> None:
        from ..train.engine import TrainingInterrupted

        signum = self._stop_signal or signal.SIGINT
        if self.batch >= self.steps_per_epoch:  # the epoch's steps are done: finish it first
            self._end_epoch(save_last=False)
        self.save("last")
        where = f"at epoch {self.epoch + 1} step {self.batch}" if self.batch else f"after epoch {self.epoch}"
        raise TrainingInterrupted(f"{signal.Signals(signum).name}: stopped {where}; checkpoint saved in "
                                  f"{self.ckpt_dir}. Resume with: cnnzoo detect train --resume {self.run_dir}", signum)

    def _evaluate(self, coco: bool = False) -> dict:
        return evaluate_detector(self.model, self.test_images, self.test_set, self.test_scale, self.mean, self.std,
                                 batch_size=self.cfg.eval_batch_size, device=self.device, coco=coco,
                                 detect_kwargs=self.detect_kwargs)

    def _end_epoch(self, save_last: bool = True) -> None:
        last = self.epoch + 1 == self.cfg.epochs
        test = self._evaluate() if last or (self.epoch + 1) % self.cfg.eval_every == 0 else None
        elapsed = getattr(self, "_epoch_time", 0.0)
        row = {"epoch": self.epoch + 1, "train_loss": self.sums[0] / max(self.sums[2], 1),
               "test_mAP": test["mAP"] if test else None, "test_mAP_11point": test["mAP_11point"] if test else None,
               "lr": getattr(self, "_lr", self.cfg.lr), "epoch_time_s": elapsed,
               "images_per_s": getattr(self, "_epoch_seen", 0) / max(elapsed, 1e-9)}
        self.history.append(row)
        if self.verbose:
            m = "-" if row["test_mAP"] is None else f"{100 * row['test_mAP']:.2f}%"
            print(f"epoch {row['epoch']}/{self.cfg.epochs}  train loss {row['train_loss']:.4f}  |  test mAP@0.5 {m}  "
                  f"|  {elapsed:.1f} s", flush=True)
        self.epoch, self.batch, self.sums = self.epoch + 1, 0, [0.0, 0.0, 0]
        self._write_metrics()
        if save_last:
            self.save("last")

    def _write_metrics(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
        w.writeheader()
        for row in self.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v) for k, v in row.items()})
        atomic_write(self.run_dir / "metrics.csv", buf.getvalue().encode())
        atomic_write(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history).encode())

    def _final(self) -> dict:
        test = self._evaluate(coco=True)
        result = test | {"checkpoint": str(self.ckpt_dir / "last.safetensors"), "epoch": self.epoch,
                         "model": self.cfg.model, "dataset": self.cfg.data}
        atomic_write(self.run_dir / "eval.json", json.dumps(result, indent=1).encode())
        self._write_record(finished=datetime.now().isoformat(timespec="seconds"), test_mAP=test["mAP"],
                           test_mAP_11point=test["mAP_11point"], test_coco_AP=(test.get("coco") or {}).get("AP"))
        return result | {"run_dir": str(self.run_dir)}


# ------------------------------------------------------------------------------------------------ eval, predict
@dataclass
class LoadedDetRun:
    """A trained one-stage detection run: its network (eval mode), run.json, the checkpoint's metadata and file."""

    model: nn.Module
    info: dict
    meta: dict
    checkpoint: Path


def is_detection_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a one-stage detection run (its run.json's kind)."""
    return _run_record(Path(run_dir).expanduser()).get("kind") == KIND


def load_det_run(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedDetRun:
    """The detector of a run's last checkpoint, rebuilt by ``create_detector(name, weights=FILE)`` from the
    checkpoint's own metadata (no options)."""
    from ..train.checkpoint import DamagedPointer, latest_pointer, weights_metadata
    from .registry import create_detector

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise FileNotFoundError(f"run directory {str(run_dir)!r} {what} (give the directory `cnnzoo detect train` "
                                "wrote)")
    info = _run_record(run_dir)
    why = _other_kind(run_dir, info)
    if why:
        raise ValueError(why)
    ckpt = run_dir / "checkpoints"
    try:
        pointer = latest_pointer(ckpt, "last")
    except DamagedPointer as e:
        raise ValueError(f"{e}; nothing was changed") from None
    if pointer is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet (expected {ckpt / 'last.json'})")
    file = ckpt / pointer["weights"]
    from ..weights import read_checkpoint

    read_checkpoint(file)  # a ValueError naming the file when it is damaged
    meta = weights_metadata(file)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file} is not a detection checkpoint written by `cnnzoo detect train`")
    model = create_detector(meta["model"], weights=file)
    return LoadedDetRun(model.to(device).eval(), info, meta, file)


def evaluate_det_run(run_dir: str | Path, *, device: torch.device | str = "cpu", batch_size: int = 50,
                     score_thresh: float | None = None, nms_thresh: float | None = None,
                     keep_detections: bool = False) -> dict:
    """The metrics of a run's last checkpoint on its own test split (rebuilt from the record, checked against its
    fingerprint, resized as in training), with the run's evaluation settings unless ``score_thresh`` /
    ``nms_thresh`` are given; plus ``checkpoint``/``epoch``/``model``/``dataset``."""
    from .data import load_detection_data

    run = load_det_run(run_dir, device)
    d = run.info["data"]
    _, test = load_detection_data(d["spec"], d.get("params") or {})
    if test.fingerprint() != d["test_fingerprint"]:
        raise ValueError(f"the test data of {d['spec']} no longer matches the run's record (its images or boxes "
                         f"changed since training); evaluate on the data the run was trained with")
    images, _, _, scale = materialise(test, int(run.meta["input_size"]), "test")
    kwargs = dict((run.info.get("evaluation") or {}).get("detect") or eval_settings(run.model, run.meta["model"]))
    if score_thresh is not None:
        kwargs["score_thresh"] = score_thresh
    if nms_thresh is not None:
        kwargs["nms_thresh"] = nms_thresh
    n = run.meta
    out = evaluate_detector(run.model, images, test, scale, n["mean"], n["std"], batch_size=batch_size,
                            device=device, detect_kwargs=kwargs, keep_detections=keep_detections)
    return out | {"run_dir": str(run_dir), "checkpoint": str(run.checkpoint), "epoch": run.meta.get("epoch"),
                  "model": run.meta["model"], "dataset": d["spec"], "input_size": run.meta["input_size"]}


def draw_threshold(model_name: str) -> float:
    """The score above which `cnnzoo detect predict` draws a detection by default (`DRAW_THRESHOLD`)."""
    return DRAW_THRESHOLD.get(_family(model_name), 0.5)


@torch.no_grad()
def predict_detections(run: LoadedDetRun, image: torch.Tensor, device: torch.device | str = "cpu",
                       **detect_kwargs) -> dict:
    """Detections ``{"boxes" (in the image's pixels), "scores", "labels" (1..C)}`` of a uint8 ``(C, H, W)`` image,
    resized to the run's input size and normalised with its statistics (the detector's ``detect`` defaults unless
    ``detect_kwargs`` say otherwise)."""
    c = int(run.meta["in_channels"])
    if image.shape[0] != c:
        raise ValueError(f"the run's detector takes {c}-channel images, got {image.shape[0]}")
    s = int(run.meta["input_size"])
    h, w = image.shape[-2:]
    x = image[None]
    if (h, w) != (s, s):
        x = F.interpolate(x.float(), size=(s, s), mode="bilinear", align_corners=False,
                          antialias=True).round().clamp(0, 255).to(torch.uint8)
    return detect_images(run.model, x, run.meta["mean"], run.meta["std"], device=device, scale=[(s / w, s / h)],
                         **detect_kwargs)[0]

