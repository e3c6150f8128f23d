"""Segmentation datasets: images with per-pixel class masks. The built-in ``digits-segmentation``, a Pascal VOC 2012
reader and a reader for a folder of image/mask pairs.

Masks everywhere in `cnnzoo.segmentation` are integer ``(H, W)`` maps of class indices ``0..n_cl-1``, with 255 (VOC's
"void") marking pixels that count for nothing: no loss, no metric (`cnnzoo.segmentation.metrics`).

``digits-segmentation`` puts real handwritten digits from the built-in ``mnist5k`` on larger canvases (default
64 x 64, 1-3 digits, each 28 x 28 digit scaled by 0.75-1.25) and labels every pixel. Label convention, 11 classes:
**0 is background, 1..10 are the digits 0..9** (label = digit + 1), so ``classes[k]`` is ``"background"`` for k = 0
and ``str(k - 1)`` after. A pixel is stroke when the scaled digit's grey value is at least 128 of 255 (half ink); the
anti-aliased rim around the strokes is the ambiguous part, so, as VOC marks object boundaries with a void band, every
non-stroke pixel within ``ignore_band`` pixels (chessboard distance, default 1) of a stroke is 255. Overlap rule:
digits never overlap nor touch: the box of each digit's non-zero pixels, grown by ``ignore_band + 1``, must not meet
another's (a placement is retried up to 50 times, then the canvas keeps fewer digits). Optional Gaussian pixel noise
(``noise``, default 0) changes the image, never the mask. Train canvases use only mnist5k's train digits and test
canvases only its test digits, each split from its own random stream seeded by ``(seed, split)``: the same settings
give byte-identical images and masks.

A Pascal VOC 2012 folder (``voc:PATH``, e.g. ``VOCdevkit/VOC2012``) has ``JPEGImages/ID.jpg``,
``SegmentationClass/ID.png`` (palette PNGs whose palette *indices* are the labels: 0 background, 1-20 the classes,
255 the void boundary band) and ``ImageSets/Segmentation/{train,val}.txt``. A mask saved as RGB colours is mapped back
through the VOC colour map.

A folder of pairs (``pairs:PATH``) has ``images/NAME.{png,jpg,...}`` and ``masks/NAME.png``, the masks single-channel
(mode L or P) with class indices as values; class names come from ``classes.txt`` (one per line) if present, else
they are ``"0".."K-1"`` with K one more than the largest label found. ``load_segmentation_data("pairs:PATH")`` reads
``PATH/train`` and ``PATH/val`` (or ``PATH/test``), each such a folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import IGNORE_INDEX

__all__ = [
    "DIGITS_SEG_DEFAULTS",
    "SEGMENTATION_DATASETS",
    "VOC_CLASSES",
    "SegmentationDataset",
    "digits_segmentation",
    "load_mask_folder",
    "load_segmentation_data",
    "load_voc_segmentation",
    "voc_colormap",
]

SEGMENTATION_DATASETS = ("digits-segmentation", "voc:PATH", "pairs:PATH")

#: the generator's settings; the same settings rebuild the same canvases.
DIGITS_SEG_DEFAULTS = {"seed": 0, "num_train": 1000, "num_test": 200, "canvas": 64, "min_digits": 1, "max_digits": 3,
                       "min_scale": 0.75, "max_scale": 1.25, "ignore_band": 1, "noise": 0.0}
STROKE = 128  # a scaled digit's pixel at least this grey (of 255) is stroke: labelled with its digit
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


@dataclass
class SegmentationDataset:
    """Images with masks. In memory (``images`` uint8 ``(N, C, H, W)``, ``masks`` uint8 ``(N, H, W)``) or read on
    demand from ``image_paths`` / ``mask_paths``. ``ds[i]`` is ``(image uint8 (C, H, W), mask int64 (H, W))``.

    Attributes:
        classes: class names; label ``k`` is ``classes[k]``.
        ids: per image, a name (``test-000012`` for generated canvases, the file stem for folders).
        in_channels: 1 (grayscale) or 3 (RGB).
        ignore_index: the label of pixels that count for nothing (255).
    """

    classes: list[str]
    ids: list[str]
    in_channels: int
    images: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    image_paths: list[Path] | None = None
    mask_paths: list[Path] | None = None
    ignore_index: int = IGNORE_INDEX
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is not None:
            return self.images[i], self.masks[i].long()
        image = read_image(self.image_paths[i], self.in_channels)
        mask = read_mask(self.mask_paths[i], self.num_classes, self.ignore_index,
                         voc=self.meta.get("format") == "voc")
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise ValueError(f"{self.mask_paths[i]} is {mask.shape[1]}x{mask.shape[0]} but its image "
                             f"{self.image_paths[i]} is {image.shape[2]}x{image.shape[1]}")
        return image, mask

    def fingerprint(self) -> str:
        """sha256 of the ids, masks and images: equal data, equal print."""
        h = hashlib.sha256()
        for i in range(len(self)):
            image, mask = self[i]
            h.update(self.ids[i].encode())
            h.update(image.numpy().tobytes())
            h.update(mask.to(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """An image file as uint8 ``(channels, H, W)`` (1: grayscale, 3: RGB); a clear error for unreadable files."""
    from ..train.checkpoint import _load_pixels

    arr = np.array(_load_pixels(Path(path), channels), dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def voc_colormap(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map, uint8 ``(n, 3)``: label ``k`` is drawn in colour ``cmap[k]`` (the devkit's
    ``labelcolormap``: the bits of k spread over the high bits of R, G, B; 1 aeroplane is (128, 0, 0), 255 void is
    (224, 224, 192))."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def read_mask(path: str | Path, num_classes: int | None, ignore_index: int = IGNORE_INDEX, *,
              voc: bool = False) -> torch.Tensor:
    """A label mask file as int64 ``(H, W)``: the pixel values of a single-channel (L) or palette (P) image are the
    labels; with ``voc=True`` an RGB mask is mapped back through `voc_colormap`. Labels must be ``0..num_classes-1``
    or ``ignore_index``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path} is not a mask image Pillow can read: {e}") from None
    if mode in ("RGB", "RGBA") and voc:
        rgb = arr[..., :3].astype(np.int64)
        cmap = voc_colormap().astype(np.int64)
        keys = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
        wanted = list(range(num_classes or 256)) + [ignore_index]
        lookup = {int(keys[k]): k for k in wanted}
        flat = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        colours, inverse = np.unique(flat, return_inverse=True)
        unknown = [c for c in colours.tolist() if c not in lookup]
        if unknown:
            c = unknown[0]
            raise ValueError(f"{path}: colour {(c >> 16, (c >> 8) & 255, c & 255)} is not a VOC class colour (a VOC "
                             f"mask is a palette PNG whose indices are the labels)")
        arr = np.array([lookup[c] for c in colours.tolist()], dtype=np.int64)[inverse].reshape(flat.shape)
    elif mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"{path} is a {mode} image; a mask must be single-channel (mode L or P) with the class "
                         f"index of each pixel as its value, not colours")
    mask = torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64)))
    if num_classes is not None:
        bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_index)
        if bool(bad.any()):
            values = sorted(set(mask[bad].unique().tolist()))[:10]
            raise ValueError(f"{path} has label(s) {values}; valid: 0..{num_classes - 1} and {ignore_index} (ignored)")
    return mask


# ------------------------------------------------------------------------------------------- digits-segmentation
def _check_digits_params(p: dict) -> dict:
    unknown = sorted(set(p) - set(DIGITS_SEG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown digits-segmentation setting(s) {unknown}; valid: {sorted(DIGITS_SEG_DEFAULTS)}")
    q = {**DIGITS_SEG_DEFAULTS, **p}
    for key in ("seed", "num_train", "num_test", "canvas", "min_digits", "max_digits", "ignore_band"):
        if isinstance(q[key], bool) or not isinstance(q[key], int) or q[key] < 0:
            raise ValueError(f"digits-segmentation {key} must be a non-negative integer, got {q[key]!r}")
    if q["num_train"] < 1 or q["num_test"] < 1:
        raise ValueError("digits-segmentation needs num_train >= 1 and num_test >= 1")
    if not 1 <= q["min_digits"] <= q["max_digits"]:
        raise ValueError(f"digits-segmentation needs 1 <= min_digits <= max_digits, got {q['min_digits']} and "
                         f"{q['max_digits']}")
    if not 0.25 <= float(q["min_scale"]) <= float(q["max_scale"]):
        raise ValueError(f"digits-segmentation needs 0.25 <= min_scale <= max_scale, got {q['min_scale']} and "
                         f"{q['max_scale']}")
    need = int(np.ceil(28 * q["max_scale"]))
    if q["canvas"] < need:
        raise ValueError(f"digits-segmentation canvas {q['canvas']} is too small for digits scaled by "
                         f"{q['max_scale']} (needs at least {need})")
    if float(q["noise"]) < 0:
        raise ValueError(f"digits-segmentation noise must be >= 0, got {q['noise']}")
    return q


def _resize(digit: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _canvas(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, q: dict):
    size, band = q["canvas"], q["ignore_band"]
    image = np.zeros((size, size), dtype=np.uint8)
    label = np.zeros((size, size), dtype=np.uint8)
    occupied = []  # boxes of each digit's non-zero pixels grown by band + 1: digits never touch
    n = int(rng.integers(q["min_digits"], q["max_digits"] + 1))
    for _ in range(n):
        for _attempt in range(50):
            k = int(rng.integers(len(pool)))
            side = round(28 * rng.uniform(q["min_scale"], q["max_scale"]))
            digit = _resize(pool[k], side)
            ys, xs = np.nonzero(digit)
            ox, oy = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            g = band + 1
            box = (ox + xs.min() - g, oy + ys.min() - g, ox + xs.max() + 1 + g, oy + ys.max() + 1 + g)
            if any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in occupied):
                continue
            occupied.append(box)
            window = (slice(oy, oy + side), slice(ox, ox + side))
            image[window] = np.maximum(image[window], digit)
            label[window] = np.where(digit >= STROKE, int(pool_labels[k]) + 1, label[window])  # label = digit + 1
            break
    stroke = torch.from_numpy(label > 0)
    if band > 0:  # VOC-style void band: non-stroke pixels within `band` (chessboard distance) of a stroke
        near = F.max_pool2d(stroke[None, None].float(), 2 * band + 1, 1, band)[0, 0].bool()
        label[(near & ~stroke).numpy()] = IGNORE_INDEX
    if q["noise"] > 0:
        noisy = image.astype(np.float64) + rng.normal(0.0, float(q["noise"]), image.shape)
        image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return image, label


def digits_segmentation(**params) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The ``digits-segmentation`` train and test sets (see the module docstring); same settings, same bytes.

    Args:
        **params: any of `DIGITS_SEG_DEFAULTS` (seed, num_train, num_test, canvas, min_digits, max_digits,
            min_scale, max_scale, ignore_band, noise).
    """
    from ..data import load_dataset

    q = _check_digits_params(params)
    mnist = load_dataset("mnist5k")
    classes = ["background"] + [str(d) for d in range(10)]
    out = []
    for split, split_seed, count in (("train", 0, q["num_train"]), ("test", 1, q["num_test"])):
        part = mnist.train if split == "train" else mnist.test
        pool, pool_labels = part.images[:, 0].numpy(), part.labels.numpy()
        rng = np.random.default_rng([q["seed"], split_seed])  # the two splits never share a stream
        pairs = [_canvas(rng, pool, pool_labels, q) for _ in range(count)]
        out.append(SegmentationDataset(
            classes=classes, ids=[f"{split}-{i:06d}" for i in range(count)], in_channels=1,
            images=torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].contiguous(),
            masks=torch.from_numpy(np.stack([p[1] for p in pairs])),
            meta={"name": "digits-segmentation", "params": q, "split": split}))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------------------- VOC 2012
def load_voc_segmentation(root: str | Path, split: str, *, in_channels: int = 3) -> SegmentationDataset:
    """A split of a Pascal VOC 2012 segmentation folder (``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/SPLIT.txt``); 21 classes (`VOC_CLASSES`), 255 ignored. Images are read on demand."""
    root = Path(root).expanduser()
    for sub in ("JPEGImages", "SegmentationClass"):
        if not (root / sub).is_dir():
            raise ValueError(f"{root} is not a Pascal VOC segmentation folder: {root / sub} does not exist (it holds "
                             f"JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/SPLIT.txt)")
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        folder = listing.parent
        have = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
        raise ValueError(f"VOC folder {root}: no segmentation split {split!r} ({listing} does not exist); splits "
                         f"there: {', '.join(have) or 'none'}")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{listing} lists no image IDs")
    image_paths, mask_paths = [], []
    for image_id in ids:
        mask = root / "SegmentationClass" / f"{image_id}.png"
        if not mask.is_file():
            raise ValueError(f"VOC split {split!r} lists {image_id!r} but {mask} does not exist")
        found = sorted((root / "JPEGImages").glob(f"{image_id}.*"))
        if not found:
            raise ValueError(f"VOC split {split!r} lists {image_id!r} but JPEGImages/ has no {image_id}.jpg")
        image_paths.append(found[0])
        mask_paths.append(mask)
    return SegmentationDataset(classes=list(VOC_CLASSES), ids=ids, in_channels=in_channels,
                               image_paths=image_paths, mask_paths=mask_paths,
                               meta={"name": f"voc:{root}", "format": "voc", "split": split})


# ------------------------------------------------------------------------------------------ folder of image/mask pairs
def load_mask_folder(root: str | Path, *, classes: list[str] | None = None, in_channels: int = 3,
                     ignore_index: int = IGNORE_INDEX) -> SegmentationDataset:
    """A folder of ``images/NAME.*`` with ``masks/NAME.png`` (single-channel class indices); see the module docstring
    for the class names. Every image needs its mask; masks are checked when read."""
    root = Path(root).expanduser()
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise ValueError(f"{root} is not a folder of image/mask pairs: {root / sub} does not exist (it holds "
                             f"images/NAME.png and masks/NAME.png)")
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{root / 'images'} has no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = {p.stem: p for p in (root / "masks").iterdir() if p.suffix.lower() == ".png"}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise ValueError(f"{len(missing)} image(s) in {root / 'images'} have no mask masks/NAME.png: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    mask_paths = [masks[p.stem] for p in images]
    if classes is None and (root / "classes.txt").is_file():
        classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    if classes is None:
        top = max(int(m[m != ignore_index].max()) if bool((m != ignore_index).any()) else 0
                  for m in (read_mask(p, None, ignore_index) for p in mask_paths))
        classes = [str(k) for k in range(top + 1)]
    if not classes:
        raise ValueError(f"{root}: no class names (classes.txt is empty)")
    return SegmentationDataset(classes=list(classes), ids=[p.stem for p in images], in_channels=in_channels,
                               image_paths=images, mask_paths=mask_paths, ignore_index=ignore_index,
                               meta={"name": f"pairs:{root}", "format": "pairs"})


# ------------------------------------------------------------------------------------------------------- by name
def load_segmentation_data(spec: str, params: dict | None = None) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, test) of ``digits-segmentation``, ``voc:PATH`` or ``pairs:PATH``.

    ``params`` for digits-segmentation: see `DIGITS_SEG_DEFAULTS`; for VOC: ``train_split`` (default ``train``),
    ``test_split`` (default ``val``), ``in_channels``; for pairs: ``in_channels``, ``classes``.
    """
    params = dict(params or {})
    head, sep, rest = spec.strip().partition(":")
    if spec.strip().lower().replace("_", "-") in ("digits-segmentation", "digitssegmentation"):
        return digits_segmentation(**params)
    if sep and head.lower() in ("voc", "pairs"):
        if not rest:
            raise ValueError(f"'{head}:' needs a path, e.g. {head}:~/data/"
                             f"{'VOCdevkit/VOC2012' if head.lower() == 'voc' else 'cells'}")
        valid = {"voc": {"train_split", "test_split", "in_channels"}, "pairs": {"classes", "in_channels"}}[head.lower()]
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(f"unknown {head.lower()} setting(s) {unknown}; valid: {', '.join(sorted(valid))}")
        ch = params.get("in_channels", 3)
        if head.lower() == "voc":
            return (load_voc_segmentation(rest, params.get("train_split", "train"), in_channels=ch),
                    load_voc_segmentation(rest, params.get("test_split", "val"), in_channels=ch))
        root = Path(rest).expanduser()
        test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if not (root / "train").is_dir() or test_dir is None:
            raise ValueError(f"pairs:{rest} needs {root / 'train'} and {root / 'val'} (or test/), each holding "
                             f"images/ and masks/")
        train = load_mask_folder(root / "train", classes=params.get("classes"), in_channels=ch)
        return train, load_mask_folder(test_dir, classes=train.classes, in_channels=ch)
    raise ValueError(f"unknown segmentation dataset {spec!r}; valid: {', '.join(SEGMENTATION_DATASETS)}")
