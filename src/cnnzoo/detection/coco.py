"""COCO-format detection data and COCO-style AP (Lin et al. 2014, "Microsoft COCO: Common Objects in Context",
https://arxiv.org/abs/1405.0312; the evaluation of cocodataset.org/#detection-eval).

**Reader.** A COCO "instances" JSON holds ``images`` ({id, file_name, width, height}), ``annotations`` ({id, image_id,
category_id, bbox [x, y, w, h], area, iscrowd}) and ``categories`` ({id, name}). `load_coco` turns it into a
`cnnzoo.detection.data.DetectionDataset`: boxes ``(x, y, x + w, y + h)`` (COCO's coordinates are already continuous
pixels, the convention of `cnnzoo.detection.data`), category ids (1..90 with gaps in COCO) mapped to contiguous
labels in increasing id order with the categories' names as ``classes``, crowd regions (``iscrowd`` 1) kept and
flagged ``difficult`` (every evaluation here ignores them, as COCO's does). As every `DetectionDataset`, labels are
0-based (``classes[k]``); the one-stage detectors' 1..C labels are ``label + 1``. ``meta["coco"]`` keeps what the
COCO evaluation needs back: the image ids, the category id of each label and each box's annotated ``area``.
Deviations: boxes with zero width or height are dropped (torchvision's reference reader does the same; their count is
in ``meta["coco"]["dropped_degenerate"]``); images without annotations are kept (torchvision's training reader drops
them: a model helper may filter).

``load_detection_data("coco:ROOT")`` reads the COCO 2017 layout: ``ROOT/annotations/instances_SPLIT.json`` with the
images in ``ROOT/SPLIT/``, splits ``train2017`` and ``val2017`` unless ``train_split`` / ``test_split`` say otherwise.

**COCO AP.** `coco_ap` runs pycocotools' ``COCOeval`` (the reference implementation) on in-memory ground truth built
from the dataset and the detections: AP averaged over IoU 0.50:0.05:0.95 (the primary metric), AP at 0.5 and 0.75,
AP of small (< 32^2), medium and large (> 96^2) objects by annotated area, and the average recalls at 1, 10 and 100
detections, with COCOeval's defaults (at most 100 detections per image, 101-point interpolated precision). It needs
the optional extra: ``pip install 'cnnzoo[coco]'``. For a dataset that is not COCO-format (digits-detection, VOC),
image ids are 1..N, category ids 1..C, areas are box areas, and VOC's "difficult" boxes are passed as crowd regions
(COCO's only way to ignore a box: a detection on one is neither a true nor a false positive, matched by COCO's crowd
IoU, intersection over the detection's area).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import torch

from .data import DetectionDataset
from .proposals import MissingExtraError

__all__ = ["COCO_EXTRA_HINT", "COCO_STATS", "coco_ap", "coco_ground_truth", "coco_results", "load_coco",
           "load_coco_folder"]

COCO_EXTRA_HINT = "pip install 'cnnzoo[coco]' (it brings pycocotools)"
#: the 12 numbers COCOeval.summarize() prints, in its order
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"COCO annotations {path} do not exist (an instances JSON: images, annotations, categories)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO annotations {path} are not valid JSON ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"COCO annotations {path} lack {', '.join(missing)}; an instances JSON has images, "
                         f"annotations and categories")
    return data


def load_coco(images_dir: str | Path, instances_json: str | Path, in_channels: int = 3, *,
              category_ids: list[int] | None = None, split: str | None = None) -> DetectionDataset:
    """A COCO-format set (see the module docstring) as a `DetectionDataset`; images are read on demand.

    Args:
        images_dir: the folder the images' ``file_name`` are relative to.
        instances_json: the instances annotation file.
        in_channels: 3 (RGB, default) or 1 (grayscale).
        category_ids: the category ids in label order (a train set's ``meta["coco"]["category_ids"]``, so a test
            set gets the same labels); default every category of this file, by increasing id.
        split: a name for ``meta["split"]``.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    images_dir, instances_json = Path(images_dir).expanduser(), Path(instances_json).expanduser()
    data = _read_json(instances_json)
    if not images_dir.is_dir():
        raise ValueError(f"COCO images folder {images_dir} does not exist")
    try:
        cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = [(int(im["id"]), str(im["file_name"])) for im in data["images"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{instances_json}: a category needs id and name, an image id and file_name ({e!r})") from None
    if category_ids is None:
        category_ids = sorted(cats)
        if not category_ids:
            raise ValueError(f"{instances_json} lists no categories")
    else:
        category_ids = [int(c) for c in category_ids]
        extra = sorted(set(cats) - set(category_ids))
        if extra:
            raise ValueError(f"{instances_json} has categories {extra} not among the run's category ids "
                             f"{category_ids}")
    names = [cats.get(c, str(c)) for c in category_ids]
    label_of = {c: k for k, c in enumerate(category_ids)}
    index_of = {}
    for i, (image_id, _) in enumerate(images):
        if image_id in index_of:
            raise ValueError(f"{instances_json} lists image id {image_id} twice")
        index_of[image_id] = i
    per_image = [[] for _ in images]
    dropped = 0
    for ann in data["annotations"]:
        try:
            image_id, cat = int(ann["image_id"]), int(ann["category_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
            crowd = bool(int(ann.get("iscrowd", 0)))
            area = float(ann["area"]) if "area" in ann else w * h
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{instances_json}: annotation {ann.get('id', '?') if isinstance(ann, dict) else ann!r} "
                             f"needs image_id, category_id and bbox [x, y, w, h] ({e!r})") from None
        if image_id not in index_of:
            raise ValueError(f"{instances_json}: annotation {ann.get('id', '?')} is of image {image_id}, which is not "
                             f"in images")
        if cat not in label_of:
            raise ValueError(f"{instances_json}: annotation {ann.get('id', '?')} has category {cat}, not among "
                             f"{category_ids}")
        if not (math.isfinite(x + y + w + h)) or w < 0 or h < 0:
            raise ValueError(f"{instances_json}: annotation {ann.get('id', '?')} has bbox {[x, y, w, h]}; COCO boxes "
                             f"are [x, y, width, height] with width and height >= 0")
        if w == 0 or h == 0:
            dropped += 1
            continue
        per_image[index_of[image_id]].append(((x, y, x + w, y + h), label_of[cat], crowd, area))
    paths = []
    for image_id, name in images:
        p = images_dir / name
        if not p.is_file():
            raise ValueError(f"{instances_json} lists image {image_id} as {name!r} but {p} does not exist")
        paths.append(p)
    boxes = [torch.tensor([b for b, _, _, _ in objs], dtype=torch.float32).reshape(-1, 4) for objs in per_image]
    labels = [torch.tensor([lab for _, lab, _, _ in objs], dtype=torch.int64) for objs in per_image]
    crowd = [torch.tensor([c for _, _, c, _ in objs], dtype=torch.bool) for objs in per_image]
    areas = [[a for _, _, _, a in objs] for objs in per_image]
    return DetectionDataset(
        classes=names, boxes=boxes, labels=labels, difficult=crowd, ids=[str(i) for i, _ in images],
        in_channels=in_channels, paths=paths,
        meta={"name": f"coco:{instances_json}", "split": split or instances_json.stem,
              "params": {"images_dir": str(images_dir), "annotations": str(instances_json)},
              "coco": {"image_ids": [i for i, _ in images], "category_ids": list(category_ids), "areas": areas,
                       "dropped_degenerate": dropped}})


def load_coco_folder(root: str | Path, params: dict) -> tuple[DetectionDataset, DetectionDataset]:
    """(train, test) of the COCO 2017 layout under ``root`` (see the module docstring); ``params``: train_split,
    test_split, in_channels. The test set takes the train set's category ids."""
    unknown = sorted(set(params) - {"train_split", "test_split", "in_channels"})
    if unknown:
        raise ValueError(f"unknown COCO setting(s) {unknown}; valid: train_split, test_split, in_channels")
    root = Path(root).expanduser()
    if not (root / "annotations").is_dir():
        raise ValueError(f"{root} is not a COCO folder: {root / 'annotations'} does not exist (a COCO folder holds "
                         f"annotations/instances_SPLIT.json and SPLIT/ with the images)")
    ch = params.get("in_channels", 3)
    splits = (params.get("train_split", "train2017"), params.get("test_split", "val2017"))
    out = []
    for split in splits:
        ann = root / "annotations" / f"instances_{split}.json"
        if not ann.is_file():
            have = sorted(p.stem.removeprefix("instances_") for p in (root / "annotations").glob("instances_*.json"))
            raise ValueError(f"COCO folder {root}: no split {split!r} ({ann} does not exist); splits there: "
                             f"{', '.join(have) or 'none'}")
        ds = load_coco(root / split, ann, ch, split=split,
                       category_ids=out[0].meta["coco"]["category_ids"] if out else None)
        ds.meta["name"] = f"coco:{root}"
        # what load_detection_data("coco:ROOT", params) needs to read the same sets again
        ds.meta["params"] = {"train_split": splits[0], "test_split": splits[1], "in_channels": ch}
        out.append(ds)
    return out[0], out[1]


# -------------------------------------------------------------------------------------------------------- AP
def coco_ground_truth(dataset: DetectionDataset) -> dict:
    """The dataset as a COCO instances dict (images, annotations, categories) for pycocotools' ``COCO``."""
    info = dataset.meta.get("coco") or {}
    image_ids = info.get("image_ids") or list(range(1, len(dataset) + 1))
    cat_ids = info.get("category_ids") or list(range(1, len(dataset.classes) + 1))
    areas = info.get("areas")
    anns = []
    for i in range(len(dataset)):
        for j, (box, lab, crowd) in enumerate(zip(dataset.boxes[i].tolist(), dataset.labels[i].tolist(),
                                                  dataset.difficult[i].tolist())):
            x1, y1, x2, y2 = box
            area = float(areas[i][j]) if areas is not None else (x2 - x1) * (y2 - y1)
            anns.append({"id": len(anns) + 1, "image_id": int(image_ids[i]), "category_id": int(cat_ids[lab]),
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": int(crowd)})
    return {"images": [{"id": int(i)} for i in image_ids], "annotations": anns,
            "categories": [{"id": int(c), "name": n} for c, n in zip(cat_ids, dataset.classes)]}


def _unpack(det) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(det, dict):
        return det["boxes"], det["scores"], det["labels"]
    boxes, scores, labels = det
    return boxes, scores, labels


def coco_results(detections, dataset: DetectionDataset, label_offset: int = 0) -> list[dict]:
    """Detections in COCO's results format ({image_id, category_id, bbox [x, y, w, h], score}).

    Args:
        detections: per image of ``dataset``, ``(boxes (K, 4), scores (K,), labels (K,))`` or a detector's
            ``{"boxes", "scores", "labels"}``.
        label_offset: what the detections' labels add to the dataset's 0-based labels (1 for the one-stage
            detectors' 1..C).
    """
    if len(detections) != len(dataset):
        raise ValueError(f"{len(detections)} images of detections for {len(dataset)} images of ground truth")
    info = dataset.meta.get("coco") or {}
    image_ids = info.get("image_ids") or list(range(1, len(dataset) + 1))
    cat_ids = info.get("category_ids") or list(range(1, len(dataset.classes) + 1))
    out = []
    for i, det in enumerate(detections):
        boxes, scores, labels = _unpack(det)
        labels = labels.reshape(-1).to(torch.int64) - label_offset
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(cat_ids)):
            raise ValueError(f"detection labels of image {i} must be {label_offset}..{len(cat_ids) - 1 + label_offset}"
                             f" (label_offset {label_offset}, {len(cat_ids)} classes), got {labels.add(label_offset).unique().tolist()}")
        for (x1, y1, x2, y2), s, lab in zip(boxes.reshape(-1, 4).tolist(), scores.reshape(-1).tolist(), labels.tolist()):
            out.append({"image_id": int(image_ids[i]), "category_id": int(cat_ids[lab]),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
    return out


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingExtraError(f"COCO AP needs pycocotools, which is not installed; install the extra: "
                                f"{COCO_EXTRA_HINT}") from None
    return COCO, COCOeval


def coco_ap(detections, dataset: DetectionDataset, label_offset: int = 0) -> dict[str, float]:
    """COCO's detection metrics by pycocotools' COCOeval (see the module docstring): {"AP", "AP50", "AP75", "APs",
    "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"} in [0, 1], NaN where undefined (no ground truth in
    that area range; COCOeval's -1). Arguments as `coco_results`."""
    COCO, COCOeval = _pycocotools()
    results = coco_results(detections, dataset, label_offset)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = coco_ground_truth(dataset)
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list: no detections at all
            dt = COCO()
            dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                          "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (math.nan if float(v) < 0 else float(v)) for name, v in zip(COCO_STATS, ev.stats)}
