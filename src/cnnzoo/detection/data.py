"""Detection datasets: images with boxes. The built-in ``digits-detection`` and a Pascal VOC reader.

Boxes everywhere in `cnnzoo.detection` are float ``(x1, y1, x2, y2)`` in continuous pixel coordinates: pixel
column ``i`` covers ``[i, i + 1)``, so a box's width is ``x2 - x1`` and the whole W x H image is ``(0, 0, W, H)``.
VOC's annotations are 1-based and inclusive (``xmin..xmax`` pixels); the reader turns them into ``(xmin - 1,
ymin - 1, xmax, ymax)``, so areas and IoUs equal the VOC devkit's ``+1`` formulas exactly.

``digits-detection`` puts real handwritten digits from the built-in ``mnist5k`` on larger canvases: 2-4 digits per
128 x 128 image at heights of about 17-42 pixels (each 28 x 28 MNIST digit scaled by 0.8-2.0), never overlapping,
on a noisy background with clutter (8-15 pixel stroke fragments cut from other digits, and line segments), all drawn from a
seed. The boxes are the tight boxes of each digit's ink. Train canvases use only mnist5k's train digits and test
canvases only its test digits, so a detector is scored on writers' digits it never saw.

A Pascal VOC folder (``voc:PATH``) has ``JPEGImages/ID.jpg``, ``Annotations/ID.xml`` and, optionally,
``ImageSets/Main/SPLIT.txt`` listing the IDs of each split; objects marked ``difficult`` are kept and flagged (the
evaluation ignores them, as the VOC protocol does).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DETECTION_DATASETS",
    "DIGITS_DEFAULTS",
    "DetectionDataset",
    "digits_detection",
    "digits_detection_image",
    "load_detection_data",
    "load_voc",
]

DETECTION_DATASETS = ("digits-detection", "voc:PATH", "coco:PATH")

#: the generator's settings; a run records them, and `load_detection_data` rebuilds the same canvases from them.
DIGITS_DEFAULTS = {"seed": 0, "num_train": 300, "num_test": 150, "canvas": 128, "min_digits": 2, "max_digits": 4,
                   "min_scale": 0.8, "max_scale": 2.0, "clutter": 4, "noise": 8.0}
INK = 64  # a digit pixel brighter than this (of 255) is ink: it defines the tight box


@dataclass
class DetectionDataset:
    """Images with boxes. Images are uint8 ``(C, H, W)`` tensors: in memory (``images``) or decoded on demand
    from ``paths``.

    Attributes:
        classes: object class names; label ``k`` is ``classes[k]`` (background is not a class here).
        boxes: per image, float32 ``(K, 4)`` boxes (see the module docstring for the coordinates).
        labels: per image, int64 ``(K,)`` class indices.
        difficult: per image, bool ``(K,)``: VOC's "difficult" flag (ignored by the evaluation).
        ids: per image, a name (VOC's image ID, or ``test-000012`` for generated canvases).
        in_channels: 1 (grayscale) or 3 (RGB).
    """

    classes: list[str]
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    difficult: list[torch.Tensor]
    ids: list[str]
    in_channels: int
    images: list[torch.Tensor] | None = None
    paths: list[Path] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as uint8 ``(C, H, W)``."""
        if self.images is not None:
            return self.images[i]
        return read_image(self.paths[i], self.in_channels)

    def num_objects(self) -> int:
        return int(sum(len(b) for b in self.boxes))

    def fingerprint(self) -> str:
        """sha256 of the ids, boxes and labels (and, for in-memory images, the pixels): equal data, equal print."""
        h = hashlib.sha256()
        for i in range(len(self)):
            h.update(self.ids[i].encode())
            h.update(self.boxes[i].numpy().astype(np.float32).tobytes())
            h.update(self.labels[i].numpy().astype(np.int64).tobytes())
            if self.images is not None:
                h.update(self.images[i].numpy().tobytes())
        return h.hexdigest()


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """An image file as uint8 ``(channels, H, W)`` (1: grayscale, 3: RGB); a clear error for unreadable files."""
    from ..train.checkpoint import _load_pixels

    img = _load_pixels(Path(path), channels)
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


# ----------------------------------------------------------------------------------------------- digits-detection
def _check_digits_params(p: dict) -> dict:
    unknown = sorted(set(p) - set(DIGITS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown digits-detection setting(s) {unknown}; valid: {sorted(DIGITS_DEFAULTS)}")
    q = {**DIGITS_DEFAULTS, **p}
    for key in ("seed", "num_train", "num_test", "canvas", "min_digits", "max_digits", "clutter"):
        if isinstance(q[key], bool) or not isinstance(q[key], int) or q[key] < 0:
            raise ValueError(f"digits-detection {key} must be a non-negative integer, got {q[key]!r}")
    if q["num_train"] < 1 or q["num_test"] < 1:
        raise ValueError("digits-detection needs num_train >= 1 and num_test >= 1")
    if not 1 <= q["min_digits"] <= q["max_digits"]:
        raise ValueError(f"digits-detection needs 1 <= min_digits <= max_digits, got {q['min_digits']} and "
                         f"{q['max_digits']}")
    if not 0.25 <= float(q["min_scale"]) <= float(q["max_scale"]):
        raise ValueError(f"digits-detection needs 0.25 <= min_scale <= max_scale, got {q['min_scale']} and "
                         f"{q['max_scale']}")
    if q["canvas"] < int(np.ceil(28 * q["max_scale"])) + 4:
        raise ValueError(f"digits-detection canvas {q['canvas']} is too small for digits scaled by {q['max_scale']} "
                         f"(needs at least {int(np.ceil(28 * q['max_scale'])) + 4})")
    if float(q["noise"]) < 0:
        raise ValueError(f"digits-detection noise must be >= 0, got {q['noise']}")
    return q


def _resize(digit: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _canvas(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, q: dict):
    size = q["canvas"]
    canvas = np.zeros((size, size), dtype=np.float64)
    boxes, labels = [], []
    occupied = []  # tight boxes grown by a 2-pixel margin: digits never touch
    n = int(rng.integers(q["min_digits"], q["max_digits"] + 1))
    for _ in range(n):
        for _attempt in range(50):
            k = int(rng.integers(len(pool)))
            side = round(28 * rng.uniform(q["min_scale"], q["max_scale"]))
            digit = _resize(pool[k], side)
            ys, xs = np.nonzero(digit > INK)
            if len(xs) == 0:
                continue
            ox, oy = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            box = (ox + xs.min(), oy + ys.min(), ox + xs.max() + 1, oy + ys.max() + 1)
            grown = (box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2)
            if any(grown[0] < o[2] and o[0] < grown[2] and grown[1] < o[3] and o[1] < grown[3] for o in occupied):
                continue
            canvas[oy : oy + side, ox : ox + side] = np.maximum(canvas[oy : oy + side, ox : ox + side], digit)
            occupied.append(grown)
            boxes.append(box)
            labels.append(int(pool_labels[k]))
            break
    for _ in range(q["clutter"]):  # clutter where no digit is: fragments of other digits, or line segments
        for _attempt in range(20):
            if rng.random() < 0.6:
                piece = _resize(pool[int(rng.integers(len(pool)))], int(rng.integers(28, 48)))
                ph = int(rng.integers(8, 16))
                ys, xs = np.nonzero(piece > INK)  # centre the cut on an ink pixel: a stroke, not blank paper
                j = int(rng.integers(len(ys)))
                py = int(np.clip(ys[j] - ph // 2, 0, piece.shape[0] - ph))
                px = int(np.clip(xs[j] - ph // 2, 0, piece.shape[1] - ph))
                patch = piece[py : py + ph, px : px + ph].astype(np.float64)
            else:
                ph = int(rng.integers(8, 18))
                patch = np.zeros((ph, ph))
                t = np.linspace(0, 1, 4 * ph)
                (x0, y0), (x1, y1) = rng.uniform(0, ph - 1, size=(2, 2))
                patch[np.rint(y0 + t * (y1 - y0)).astype(int), np.rint(x0 + t * (x1 - x0)).astype(int)] = \
                    rng.uniform(120, 255)
            ox, oy = int(rng.integers(0, size - ph + 1)), int(rng.integers(0, size - ph + 1))
            if any(ox < o[2] and o[0] < ox + ph and oy < o[3] and o[1] < oy + ph for o in occupied):
                continue
            canvas[oy : oy + ph, ox : ox + ph] = np.maximum(canvas[oy : oy + ph, ox : ox + ph], patch)
            break
    canvas += rng.normal(0.0, float(q["noise"]), canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)


def digits_detection(**params) -> tuple[DetectionDataset, DetectionDataset]:
    """The ``digits-detection`` train and test sets (see the module docstring); same settings, same pixels.

    Args:
        **params: any of `DIGITS_DEFAULTS` (seed, num_train, num_test, canvas, min_digits, max_digits, min_scale,
            max_scale, clutter, noise).
    """
    from ..data import load_dataset

    q = _check_digits_params(params)
    mnist = load_dataset("mnist5k")
    out = []
    for split, split_seed, count in (("train", 0, q["num_train"]), ("test", 1, q["num_test"])):
        part = mnist.train if split == "train" else mnist.test
        pool, pool_labels = part.images[:, 0].numpy(), part.labels.numpy()
        rng = np.random.default_rng([q["seed"], split_seed])  # the two splits never share a stream
        images, boxes, labels = [], [], []
        for _ in range(count):
            img, b, lab = _canvas(rng, pool, pool_labels, q)
            images.append(torch.from_numpy(img)[None])
            boxes.append(torch.from_numpy(b))
            labels.append(torch.from_numpy(lab))
        out.append(DetectionDataset(
            classes=list(mnist.classes), boxes=boxes, labels=labels,
            difficult=[torch.zeros(len(b), dtype=torch.bool) for b in boxes],
            ids=[f"{split}-{i:06d}" for i in range(count)], in_channels=1, images=images,
            meta={"name": "digits-detection", "params": q, "split": split}))
    return out[0], out[1]


def digits_detection_image(split: str = "test", index: int = 0, **params) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """Image ``index`` of a ``digits-detection`` split, without generating the rest of the set: ``(image uint8
    (1, H, W), boxes (K, 4), labels (K,))``, the pixels and boxes `digits_detection` gives for it with the same
    settings (each split draws its canvases in order from its own seeded stream, so the first ``index + 1`` suffice).
    `cnnzoo detect sample` writes it as a PNG for `cnnzoo detect predict`.

    Args:
        split: "train" or "test".
        index: 0-based, below the split's size (``num_train`` / ``num_test``: 300 / 150 by default).
        **params: the generator's settings, as for `digits_detection` (a run's are in its run.json).
    """
    from ..data import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"unknown digits-detection split {split!r}; valid: train, test")
    q = _check_digits_params(params)
    count = q[f"num_{split}"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ValueError(f"digits-detection {split} image index must be 0..{count - 1} (its {count} images), "
                         f"got {index!r}")
    mnist = load_dataset("mnist5k")
    part = mnist.train if split == "train" else mnist.test
    pool, pool_labels = part.images[:, 0].numpy(), part.labels.numpy()
    rng = np.random.default_rng([q["seed"], 0 if split == "train" else 1])  # as digits_detection seeds each split
    for _ in range(index + 1):
        img, b, lab = _canvas(rng, pool, pool_labels, q)
    return torch.from_numpy(img)[None], torch.from_numpy(b), torch.from_numpy(lab)


# ------------------------------------------------------------------------------------------------------- VOC
def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{where}: <{tag}> is missing")
    return child.text.strip()


def _read_annotation(path: Path) -> list[tuple[str, tuple[float, float, float, float], bool]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path} is not valid XML ({e}); VOC annotations are <annotation><object>... files") from None
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name", str(path))
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{path}: object {name!r} has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bb, t, f"{path}: object {name!r}"))
                                      for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            if "missing" in str(e):
                raise
            raise ValueError(f"{path}: object {name!r} has a non-numeric box coordinate") from None
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{path}: object {name!r} has xmax < xmin or ymax < ymin ({xmin}, {ymin}, {xmax}, "
                             f"{ymax}); VOC boxes are 1-based inclusive pixel ranges")
        diff = obj.find("difficult")
        difficult = diff is not None and (diff.text or "0").strip() == "1"
        objects.append((name, (xmin - 1.0, ymin - 1.0, xmax, ymax), difficult))  # 1-based inclusive -> continuous
    return objects


def _split_ids(root: Path, split: str) -> list[str]:
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if listing.is_file():
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"{listing} lists no image IDs")
        return ids
    main = root / "ImageSets" / "Main"
    have = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
    raise ValueError(f"VOC folder {root}: no split {split!r} ({listing} does not exist); splits there: "
                     f"{', '.join(have) or 'none (ImageSets/Main/SPLIT.txt lists the IDs of a split)'}")


def load_voc(root: str | Path, split: str, classes: list[str] | None = None, *, in_channels: int = 3) -> DetectionDataset:
    """A split of a Pascal VOC-layout folder (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/SPLIT.txt``).

    Args:
        root: the folder holding ``JPEGImages`` and ``Annotations`` (e.g. ``VOCdevkit/VOC2007``).
        split: a file name in ``ImageSets/Main`` without ``.txt`` (``trainval``, ``test``, ``train``, ``val``).
        classes: the class names, in label order; default the sorted names found in this split's annotations.
            Objects of other classes are an error naming them.
        in_channels: 3 (RGB, default) or 1 (grayscale).
    """
    root = Path(root).expanduser()
    for sub in ("JPEGImages", "Annotations"):
        if not (root / sub).is_dir():
            raise ValueError(f"{root} is not a Pascal VOC folder: {root / sub} does not exist (a VOC folder holds "
                             f"JPEGImages/, Annotations/ and ImageSets/Main/SPLIT.txt)")
    ids = _split_ids(root, split)
    records, paths = [], []
    for image_id in ids:
        ann = root / "Annotations" / f"{image_id}.xml"
        if not ann.is_file():
            raise ValueError(f"VOC split {split!r} lists {image_id!r} but {ann} does not exist")
        found = sorted((root / "JPEGImages").glob(f"{image_id}.*"))
        if not found:
            raise ValueError(f"VOC split {split!r} lists {image_id!r} but JPEGImages/ has no {image_id}.jpg")
        paths.append(found[0])
        records.append(_read_annotation(ann))
    names = sorted({name for objs in records for name, _, _ in objs})
    if classes is None:
        classes = names
        if not classes:
            raise ValueError(f"VOC split {split!r} of {root} has no annotated objects")
    else:
        extra = sorted(set(names) - set(classes))
        if extra:
            raise ValueError(f"VOC split {split!r} of {root} has objects of classes {extra} not among the run's "
                             f"classes {classes}")
    index = {c: k for k, c in enumerate(classes)}
    boxes = [torch.tensor([b for _, b, _ in objs], dtype=torch.float32).reshape(-1, 4) for objs in records]
    labels = [torch.tensor([index[n] for n, _, _ in objs], dtype=torch.int64) for objs in records]
    difficult = [torch.tensor([d for _, _, d in objs], dtype=torch.bool) for objs in records]
    return DetectionDataset(classes=list(classes), boxes=boxes, labels=labels, difficult=difficult, ids=list(ids),
                            in_channels=in_channels, paths=paths,
                            meta={"name": f"voc:{root}", "params": {"root": str(root)}, "split": split})


# ------------------------------------------------------------------------------------------------------- by name
def load_detection_data(spec: str, params: dict | None = None) -> tuple[DetectionDataset, DetectionDataset]:
    """(train, test) of ``digits-detection``, ``voc:PATH`` or ``coco:PATH``.

    ``params`` for digits-detection: see `DIGITS_DEFAULTS`; for VOC: ``train_split`` (default ``trainval``),
    ``test_split`` (default ``test``), ``classes`` (default: the names found in the train split), ``in_channels``;
    for COCO (`cnnzoo.detection.coco`, the 2017 layout ``annotations/instances_SPLIT.json`` + ``SPLIT/``):
    ``train_split`` (default ``train2017``), ``test_split`` (default ``val2017``), ``in_channels``.
    """
    params = dict(params or {})
    head, sep, rest = spec.partition(":")
    if spec.strip().lower().replace("_", "-") in ("digits-detection", "digitsdetection"):
        return digits_detection(**params)
    if sep and head.lower() == "voc":
        if not rest:
            raise ValueError("'voc:' needs a path, e.g. voc:~/data/VOCdevkit/VOC2007")
        unknown = sorted(set(params) - {"train_split", "test_split", "classes", "in_channels"})
        if unknown:
            raise ValueError(f"unknown VOC setting(s) {unknown}; valid: train_split, test_split, classes, in_channels")
        ch = params.get("in_channels", 3)
        train = load_voc(rest, params.get("train_split", "trainval"), params.get("classes"), in_channels=ch)
        test = load_voc(rest, params.get("test_split", "test"), train.classes, in_channels=ch)
        return train, test
    if sep and head.lower() == "coco":
        if not rest:
            raise ValueError("'coco:' needs a path, e.g. coco:~/data/coco (holding annotations/ and train2017/)")
        from .coco import load_coco_folder

        return load_coco_folder(rest, params)
    raise ValueError(f"unknown detection dataset {spec!r}; valid: digits-detection or voc:PATH (a Pascal VOC folder) "
                     f"or coco:PATH (a COCO folder)")
