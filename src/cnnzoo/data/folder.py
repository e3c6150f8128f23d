"""``folder:PATH`` datasets: one subfolder per class, decoded by Pillow in DataLoader workers.

Layout: ``PATH/train/<class>/*`` and ``PATH/val/<class>/*`` when ``train/`` exists (``val/`` optional), else
``PATH/<class>/*`` with a seeded stratified split holding out ``val_fraction`` of every class. Class folders are
searched recursively; hidden files are ignored; files whose extension Pillow does not read are skipped.

Nothing is decoded up front: the folder is listed once and the listing cached (`folder_index`), so an ImageNet-size
folder starts training in seconds and the second start skips even the listing. The cached listing is checked before
it is used (its structure, and every path a relative one below a class folder that a fresh listing could give: no
``..``, no absolute path, no directory symlink below a class folder) and rebuilt, with a one-line warning, when it is
not one cnnzoo wrote. A file that turns out to be corrupt
is skipped and logged when it is first read: the loader serves the next readable sample of the split in its place,
the same one every epoch, so runs stay deterministic and resumable. ``strict`` decodes every file at load time and
reports all unreadable ones together (decompression bombs included). Grayscale, palette, RGBA/LA, CMYK and 16-bit
images are all converted to 8-bit RGB (alpha is dropped, as torchvision's default loader does), so ``in_channels``
is 3.

Transforms are plain PIL/NumPy (no torchvision), seeded per sample from (seed, epoch, position in the epoch):
train = random-resized crop (scale 0.08-1, aspect 3/4-4/3; Szegedy et al. 2015, "Going deeper with
convolutions", Sec. 6), VGG's scale jitter (shorter side to S ~ U{S_min..S_max}, then a random crop) or resize +
random crop with padding, then horizontal flip, and AlexNet's PCA colour noise added on the device (see
`cnnzoo.data.augment`); eval = resize the shorter side to size/0.875 and centre-crop (the 256 -> 224 protocol of
Krizhevsky et al. 2012 and He et al. 2016).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..fileio import atomic_write
from .augment import parse_central_square, parse_pca_lighting, parse_scale_jitter
from .bundle import DataBundle, FolderSplit
from .loader import _BaseLoader, epoch_seed, rank_slice

log = logging.getLogger("cnnzoo.data")

DEFAULT_IMAGE_SIZE = 224
EVAL_CROP_PCT = 0.875  # 224 / 256: resize the shorter side to 256, centre-crop 224
RRC_SCALE = (0.08, 1.0)  # Szegedy et al. 2015, Sec. 6: "patches ... whose size is distributed evenly between 8%
RRC_RATIO = (3 / 4, 4 / 3)  # and 100% of the image area with aspect ratio constrained to [3/4, 4/3]"
STATS_SAMPLES = 256  # train images decoded to estimate the normalisation mean/std
FOLDER_AUGMENT_KEYS = ("random_resized_crop", "random_crop_padding", "scale_jitter", "central_square", "hflip",
                       "pca_lighting")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; 16-bit and 32-bit integer images are scaled, not clipped."""
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 0..65535 -> 0..255
        elif img.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow asks for this route for palettes with transparency
    return img if img.mode == "RGB" else img.convert("RGB")


def decode(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open and fully decode an image as RGB (``draft``: allow JPEG to decode at a reduced size >= draft)."""
    with Image.open(path) as img:
        if draft is not None:
            img.draft("RGB", draft)
        img.load()
        return to_rgb(img)


class _Bomb(Exception):
    pass


def _check(path: Path) -> str | None:
    """None if the file decodes fully, else the reason it cannot be used; raise _Bomb for decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. EXIF warnings; real failures raise
            decode(path, draft=(64, 64))
    except Image.DecompressionBombError as e:
        raise _Bomb(f"{path}: {e}") from e
    except Image.UnidentifiedImageError:
        return "not an image file Pillow can read"
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated/corrupt data surfaces as these
        return f"corrupt or truncated image ({e})"
    return None


IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in Image.registered_extensions())
"""File suffixes Pillow can decode (``.jpg``, ``.png``, ``.webp``...); other files in class folders are skipped."""
INDEX_VERSION = 1
INDEX_NAME = ".cnnzoo-index.json"


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _walk(base: Path, root: Path) -> tuple[list[str], dict[str, int]]:
    """Files below ``base`` (paths relative to ``root``, sorted, hidden ones left out) and every directory's mtime."""
    files, dirs = [], {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        dirs[rel] = os.stat(dirpath).st_mtime_ns
        files += [os.path.join(rel, f) for f in filenames if not f.startswith(".")]
    return sorted(files), dirs


def _index_paths(root: Path) -> list[Path]:
    """Where the index of ``root`` is cached: in the folder itself, else (read-only folder) in the cnnzoo cache."""
    from .download import cache_root

    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / INDEX_NAME, cache_root() / "folder-index" / f"{digest}.json"]


def _read_index(root: Path) -> dict | None:
    """The cached index of ``root`` if one is valid and up to date, else None (the caller lists the folder again).

    A cache that is stale (another version, a moved folder, a directory changed since) is dropped quietly; one that is
    not an index cnnzoo could have written (damaged, or edited by hand: see `_index_problem`) is never used and is
    rebuilt (written atomically over it), with a one-line warning."""
    for path in _index_paths(root):
        try:
            index = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("%s cannot be read (%s); listing the folder again", path, e.strerror or type(e).__name__)
            continue
        except ValueError as e:  # not JSON, not UTF-8
            log.warning("%s is not a valid cnnzoo folder index (%s); rebuilding it", path,
                        " ".join(str(e).split())[:200] or type(e).__name__)
            return None  # list the folder again: the new index replaces this one
        if isinstance(index, dict) and (index.get("version") != INDEX_VERSION or
                                        index.get("root") != str(root.resolve())):
            continue  # another version's, or the folder was moved: stale, not damaged
        problem = _index_problem(root, index)
        if problem is not None:
            log.warning("%s is not a valid cnnzoo folder index (%s); rebuilding it", path, problem)
            return None
        try:  # a file added, removed or renamed changes its directory's mtime; a new class shows in the listing
            layout = "train/val" if (root / "train").is_dir() and (root / "val").is_dir() else \
                "train" if (root / "train").is_dir() else "split"
            base = root / "train" if layout != "split" else root
            if layout == index.get("dir_layout") and _class_dirs(base) == index["classes"] and \
                    all(os.stat(root / d).st_mtime_ns == m for d, m in index["dirs"].items()):
                return index
        except OSError:
            continue
    return None


def _plain_name(name: str) -> bool:
    """A path component a listing can produce: not empty, not hidden (so never ``.`` or ``..``), no separator."""
    return bool(name) and not name.startswith(".") and "/" not in name


def _index_problem(root: Path, index) -> str | None:
    """Why ``index`` is not a listing `folder_index` could have written for ``root`` (None: it is one).

    Every path must be what a fresh listing could give: relative, made of plain non-hidden names, below a class
    folder of its split (``[train/|val/]CLASS/...``) and labelled with that class; every file's directory is one of
    the recorded ``dirs`` (whose mtimes are checked), and a directory below a class folder is never a symlink (the
    listing does not follow those, so an entry through one would read outside the folder)."""
    if not isinstance(index, dict):
        return f"a {type(index).__name__}, not an object"
    for key, kind in (("classes", list), ("dirs", dict), ("train", list), ("val", list), ("dir_layout", str),
                      ("layout", str)):
        if not isinstance(index.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    classes, dir_layout = index["classes"], index["dir_layout"]
    if not all(isinstance(c, str) and _plain_name(c) for c in classes) or len(set(classes)) != len(classes):
        return "'classes' is not a list of distinct folder names"
    if dir_layout not in ("split", "train", "train/val") or \
            index["layout"] != ("train/val" if dir_layout == "train/val" else "split"):
        return f"unknown layout {dir_layout!r}/{index['layout']!r}"
    label_of = {c: i for i, c in enumerate(classes)}
    prefixes = {"train": () if dir_layout == "split" else ("train",), "val": ("val",)}

    def parts_of(rel) -> list[str] | None:
        if not isinstance(rel, str) or rel.startswith("/") or os.path.isabs(rel):
            return None
        parts = rel.split("/")
        return parts if all(_plain_name(p) for p in parts) else None

    top_dirs = {p for p in prefixes.values() if p}  # the split folders themselves are recorded (train/val layouts)
    for d, mtime in index["dirs"].items():
        parts = parts_of(d)
        if parts is None:
            return f"directory {d!r} is not a relative path inside the folder"
        if isinstance(mtime, bool) or not isinstance(mtime, int):
            return f"directory {d!r} has no integer mtime"
        if tuple(parts) in top_dirs:
            continue
        pre = () if dir_layout == "split" else (parts[0],)
        if dir_layout != "split" and (parts[0] not in ("train", "val") or (parts[0] == "val" and
                                                                            dir_layout != "train/val")):
            return f"directory {d!r} is not below a split folder"
        rest = parts[len(pre):]
        if not rest or rest[0] not in label_of:
            return f"directory {d!r} is not below a class folder"
        for depth in range(len(pre) + 2, len(parts) + 1):  # below the class folder: never a symlink
            if os.path.islink(root.joinpath(*parts[:depth])):
                return f"directory {d!r} goes through a symbolic link"
    if dir_layout != "train/val" and index["val"]:
        return "'val' lists files but the folder has no val/ split"
    for split in ("train", "val"):
        pre = prefixes[split]
        for entry in index[split]:
            if not isinstance(entry, list) or len(entry) != 2:
                return f"{split} entry {entry!r} is not a [path, label] pair"
            rel, label = entry
            parts = parts_of(rel)
            if parts is None or len(parts) < len(pre) + 2 or tuple(parts[:len(pre)]) != pre:
                return f"{split} entry {rel!r} is not a relative path inside a class folder"
            if isinstance(label, bool) or not isinstance(label, int) or label_of.get(parts[len(pre)]) != label:
                return f"{split} entry {rel!r} has label {label!r}, not its class folder's"
            if "/".join(parts[:-1]) not in index["dirs"]:
                return f"{split} entry {rel!r} is in a directory the index does not record"
    return None


def _write_index(root: Path, index: dict) -> Path | None:
    data = json.dumps(index).encode()
    for path in _index_paths(root):
        try:
            atomic_write(path, data)
            return path
        except OSError:
            continue
    return None


def folder_index(root: Path, *, refresh: bool = False) -> dict:
    """The cached listing of a folder dataset: classes, and (relative path, label) of every file per split.

    Listing a folder is the only work done up front (no decoding): the result is cached in ``root/.cnnzoo-index.json``
    (or in the cnnzoo cache directory when the folder is read-only) and reused while no directory's mtime changes.
    """
    root = root.resolve()
    if not refresh:
        cached = _read_index(root)
        if cached is not None:
            log.info("%s: reusing the cached index (%d files)", root, len(cached["train"]) + len(cached["val"]))
            cached["cached"] = True
            return cached
    train_root = root / "train" if (root / "train").is_dir() else root
    val_root = root / "val" if train_root != root and (root / "val").is_dir() else None
    classes = _class_dirs(train_root)
    if not classes:
        raise ValueError(f"no class subfolders in {train_root}; expected {train_root}/<class name>/<image files>")
    if val_root is not None:
        extra = sorted(set(_class_dirs(val_root)) - set(classes))
        if extra:
            raise ValueError(f"{val_root} has class folders {extra} that {train_root} lacks; classes: {classes}")
    # the class folders' mtimes (and those below them) tell whether the listing is still valid; the root's own
    # mtime is not used: writing the index into it changes it (new class folders are checked by name instead)
    dirs: dict[str, int] = {}
    splits: dict[str, list] = {"train": [], "val": []}
    for split, base in (("train", train_root), ("val", val_root)):
        if base is None:
            continue
        if base != root:
            dirs[os.path.relpath(base, root)] = os.stat(base).st_mtime_ns
        for label, name in enumerate(classes):
            if (base / name).is_dir():
                files, seen = _walk(base / name, root)
                splits[split] += [[f, label] for f in files]
                dirs.update(seen)
    dir_layout = "split" if train_root == root else "train/val" if val_root else "train"
    index = {"version": INDEX_VERSION, "root": str(root), "layout": "train/val" if val_root else "split",
             "dir_layout": dir_layout, "classes": classes, "dirs": dirs, **splits}
    where = _write_index(root, index)
    log.info("%s: indexed %d files%s", root, len(splits["train"]) + len(splits["val"]),
             f" (cached in {where})" if where else "")
    index["cached"] = False
    return index


def load_folder(
    path: str | Path, *, strict: bool = False, seed: int = 0, val_fraction: float = 0.1,
    image_size: int | Callable[[int], int] | None = None,
) -> DataBundle:
    """Index and split an image folder (see the module docstring); called by `load_dataset`.

    ``image_size`` is the side of the square crops the network sees: an int; None for DEFAULT_IMAGE_SIZE (224, the
    ImageNet crop); or a function given the images' own size (`native_size`: the median shorter side of a seeded
    sample of the training images, read from their headers) that returns it: `cnnzoo.train.Trainer` passes one
    choosing the network's own input size (see `cnnzoo.train.engine.folder_input_size`)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"folder dataset {str(root)!r} is not a directory")
    if image_size is not None and not callable(image_size):
        _check_size(image_size, image_size)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    index = folder_index(root)
    root = Path(index["root"])
    classes = index["classes"]
    if len(classes) < 2:
        raise ValueError(f"{root} has {len(classes)} class folder ({', '.join(classes)}); classification needs at "
                         f"least 2 (one subfolder per class)")
    skipped: list[tuple[str, str]] = []
    good: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for split in ("train", "val"):
        for rel, label in index[split]:
            full = str(root / rel)
            if os.path.splitext(rel)[1].lower() not in IMAGE_EXTENSIONS:
                skipped.append((full, "not an image file (its extension is not one Pillow reads)"))
            else:
                good[split].append((full, label))
    if strict:
        _verify(root, good["train"] + good["val"], skipped)
    counts = np.bincount([lab for _, lab in good["train"]], minlength=len(classes))
    empty = [str(root / ("train" if index["layout"] == "train/val" else "") / classes[i])
             for i in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(f"class folder(s) with no readable images: {empty}; every class needs at least one image")

    if index["layout"] == "train/val":
        train, test = good["train"], good["val"]
    else:
        train, test = stratified_split(good["train"], len(classes), val_fraction, seed)
    native = native_size(train, seed)
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size(native) if callable(image_size) else image_size
    _check_size(size, image_size)
    bundle = DataBundle(
        f"folder:{root}", classes, 3, (size, size), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
        FolderSplit(train), FolderSplit(test), kind="folder", skipped=skipped, root=root,
    )  # fmt: skip
    bundle.mean, bundle.std = estimate_stats(train, size, seed, bundle.skipped)
    found = {p for p, _ in bundle.skipped}
    if found:  # files the statistics pass could not decode are known bad: leave them out of training
        bundle.train = FolderSplit([s for s in train if s[0] not in found])
        log.warning("%s: skipped %d unreadable file(s):\n  %s", root, len(bundle.skipped),
                    "\n  ".join(f"{p}: {why}" for p, why in bundle.skipped))
    bundle.split_params = {"layout": index["layout"], "seed": seed if index["layout"] == "split" else None,
                           "val_fraction": val_fraction if index["layout"] == "split" else None,
                           "image_size": size}
    return bundle


def _check_size(size, given) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {size!r}"
                         + (f" (from {given!r})" if size is not given else ""))


def native_size(samples: list[tuple[str, int]], seed: int = 0) -> int | None:
    """The images' own size: the median shorter side of up to STATS_SAMPLES seeded training images (the same
    sample `estimate_stats` uses), read from the file headers only (no decoding); None if none can be read."""
    pick = np.random.default_rng(seed).permutation(len(samples))[:STATS_SAMPLES]
    sides = []
    for i in pick:
        try:
            with Image.open(samples[i][0]) as img:
                sides.append(min(img.size))
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
            continue  # unreadable files are reported by the statistics pass
    return int(np.median(sides)) if sides else None


def _verify(root: Path, files: list[tuple[str, int]], skipped: list[tuple[str, str]]) -> None:
    """Strict mode: decode every file now; unreadable files (and those already skipped) are one error listing all."""
    log.info("%s: checking that %d files decode (strict)", root, len(files))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        results = list(pool.map(_safe_check, [Path(f) for f, _ in files]))
    bombs = [r[1] for r in results if r[0] == "bomb"]
    if bombs:
        raise ValueError(
            f"{len(bombs)} image(s) exceed Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS}; refused at twice that) and were not decoded:\n  " + "\n  ".join(bombs)
            + "\nIf these files are trusted, raise PIL.Image.MAX_IMAGE_PIXELS or shrink the images."
        )  # fmt: skip
    bad = skipped + [(f, r[1]) for (f, _), r in zip(files, results, strict=True) if r[0] == "bad"]
    if bad:
        raise ValueError(
            f"{len(bad)} unreadable file(s) in {root} (strict mode):\n  " + "\n  ".join(f"{p}: {why}" for p, why in bad)
        )


def _safe_check(path: Path) -> tuple[str, str]:
    try:
        reason = _check(path)
    except _Bomb as e:
        return "bomb", str(e)
    return ("bad", reason) if reason else ("ok", "")


def stratified_split(
    samples: list[tuple[str, int]], num_classes: int, val_fraction: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Hold out round(n * val_fraction) of each class (at least 1 when the class has 2+ images), seeded."""
    rng = np.random.default_rng(seed)
    by_class: list[list[tuple[str, int]]] = [[] for _ in range(num_classes)]
    for s in samples:
        by_class[s[1]].append(s)
    train, val = [], []
    for items in by_class:
        n_val = round(len(items) * val_fraction)
        if val_fraction > 0 and len(items) >= 2:
            n_val = min(max(n_val, 1), len(items) - 1)
        perm = rng.permutation(len(items))
        val += [items[i] for i in sorted(perm[:n_val])]
        train += [items[i] for i in sorted(perm[n_val:])]
    return train, val


# ----------------------------------------------------------------------------------------------- transforms


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size`` (bilinear; Pillow filters when shrinking)."""
    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img if new == (w, h) else img.resize(new, Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central size x size region (the image must be at least that large)."""
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def random_resized_crop(img: Image.Image, size: int, rng: random.Random, scale=RRC_SCALE, ratio=RRC_RATIO):
    """A random region of area fraction in ``scale`` and aspect ratio in ``ratio``, resized to size x size."""
    w, h = img.size
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            break
    else:  # fall back to the largest central crop within the ratio bounds
        aspect = w / h
        if aspect < ratio[0]:
            cw, ch = w, round(w / ratio[0])
        elif aspect > ratio[1]:
            cw, ch = round(h * ratio[1]), h
        else:
            cw, ch = w, h
        left, top = (w - cw) // 2, (h - ch) // 2
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))


def random_crop(arr: np.ndarray, size: int, padding: int, rng: random.Random) -> np.ndarray:
    """Zero-pad an (H, W, C) array by ``padding`` and cut a random size x size window."""
    if padding:
        arr = np.pad(arr, ((padding, padding), (padding, padding), (0, 0)))
    h, w = arr.shape[:2]
    top, left = rng.randint(0, h - size), rng.randint(0, w - size)
    return arr[top : top + size, left : left + size]


class FolderTransform:
    """Decoded RGB image -> uint8 tensor (3, size, size), with the train or eval pipeline."""

    def __init__(self, size: int, train: bool, augment: dict) -> None:
        unknown = sorted(set(augment) - set(FOLDER_AUGMENT_KEYS))
        if unknown:
            raise ValueError(
                f"unknown augment option(s) {unknown} for a folder dataset; valid: {list(FOLDER_AUGMENT_KEYS)}"
            )
        rrc = augment.get("random_resized_crop", False)
        if rrc is True:
            rrc = RRC_SCALE
        if rrc is not False and rrc is not None:
            if not (isinstance(rrc, list | tuple) and len(rrc) == 2 and 0 < rrc[0] <= rrc[1] <= 1):
                raise ValueError(f"augment['random_resized_crop'] must be true/false or [min_scale, max_scale] "
                                 f"with 0 < min <= max <= 1, got {rrc!r}")  # fmt: skip
            rrc = (float(rrc[0]), float(rrc[1]))
        padding = augment.get("random_crop_padding", 0) or 0
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"augment['random_crop_padding'] must be a non-negative integer, got {padding!r}")
        flip = augment.get("hflip", False)
        if not isinstance(flip, bool):
            raise ValueError(f"augment['hflip'] must be true or false, got {flip!r}")
        self.size, self.train, self.rrc, self.padding, self.hflip = size, train, rrc or None, padding, flip
        # VGG's scale jitter and AlexNet's colour noise (cnnzoo.data.augment; the noise is added by FolderLoader)
        self.jitter = parse_scale_jitter(augment.get("scale_jitter"))
        self.central_square = parse_central_square(augment.get("central_square"), self.jitter)  # AlexNet Sec. 2
        self.pca_lighting = parse_pca_lighting(augment.get("pca_lighting"))
        if self.jitter and self.rrc:
            raise ValueError("augment: random_resized_crop and scale_jitter are two ways of choosing the training "
                             "crop; use one of them")
        if self.jitter and self.jitter[0] < size:
            raise ValueError(f"augment scale_jitter {list(self.jitter)}: S_min must be at least the crop size {size}")

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """Smallest size a JPEG may be decoded at (Pillow's draft mode) without losing detail the crop keeps.

        Random-resized crops can zoom into 8% of the image, so they need the full resolution (None).
        """
        if self.train and self.rrc:
            return None
        side = self.size if self.train else round(self.size / EVAL_CROP_PCT)
        if self.train and self.jitter:
            side = self.jitter[1]
        return side, side

    def __call__(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        s = self.size
        if not self.train:
            arr = np.asarray(center_crop(resize_shorter(img, round(s / EVAL_CROP_PCT)), s))
        elif self.rrc:
            arr = np.asarray(random_resized_crop(img, s, rng, scale=self.rrc))
        elif self.jitter:  # VGG Sec. 3.1: shorter side to S ~ U{S_min..S_max}, then a random crop
            side = rng.randint(*self.jitter)
            img = resize_shorter(img, side)
            if self.central_square:  # AlexNet Sec. 2: the central S x S square, then the random crop inside it
                img = center_crop(img, side)
            arr = random_crop(np.asarray(img), s, 0, rng)
        elif self.padding:
            arr = random_crop(np.asarray(resize_shorter(img, s)), s, self.padding, rng)
        else:
            arr = np.asarray(center_crop(resize_shorter(img, s), s))
        if self.train and self.hflip and rng.random() < 0.5:
            arr = arr[:, ::-1]
        return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()  # (3, S, S)


def estimate_stats(
    samples: list[tuple[str, int]], size: int, seed: int, skipped: list[tuple[str, str]] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std (0-1 scale) of up to STATS_SAMPLES seeded train images through the eval transform.

    Unreadable files met on the way are left out of the estimate and appended to ``skipped``.
    """
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(samples))[:STATS_SAMPLES]
    transform = FolderTransform(size, train=False, augment={})
    total = np.zeros(3)
    total_sq = np.zeros(3)
    used = 0
    for i in pick:
        path = samples[i][0]
        reason = _read_error(path, transform)
        if reason is not None:
            if skipped is not None:
                skipped.append((path, reason))
            continue
        x = transform(decode(path, draft=transform.draft_size), random.Random(0)).double() / 255
        total += x.mean(dim=(1, 2)).numpy()
        total_sq += (x * x).mean(dim=(1, 2)).numpy()
        used += 1
    if used == 0:
        raise ValueError(f"none of the {len(pick)} training images sampled for the normalisation statistics could "
                         f"be decoded (e.g. {samples[pick[0]][0] if len(pick) else 'no images'})")
    mean = total / used
    std = np.sqrt(np.maximum(total_sq / used - mean * mean, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _read_error(path: str, transform: FolderTransform | None = None) -> str | None:
    """None if ``path`` decodes, else why not (decompression bombs included: they are never decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decode(path, draft=transform.draft_size if transform else (64, 64))
    except Image.DecompressionBombError as e:
        return f"refused as a decompression bomb ({e})"
    except Image.UnidentifiedImageError:
        return "not an image file Pillow can read"
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return f"corrupt or truncated image ({e})"
    return None


# -------------------------------------------------------------------------------------------------- loader


class _FolderDataset(torch.utils.data.Dataset):
    """Items are addressed by (sample index, per-sample seed) so augmentation is reproducible in any worker."""

    def __init__(self, samples: list[tuple[str, int]], transform: FolderTransform) -> None:
        self.samples, self.transform = samples, transform
        self.bad: set[str] = set()  # per process: files found unreadable (each is logged once)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, sample_seed = key
        n = len(self.samples)
        for k in range(min(n, 32)):  # a corrupt file: serve the next readable sample, the same one every epoch
            path, label = self.samples[(index + k) % n]
            if path in self.bad:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    img = decode(path, draft=self.transform.draft_size)
            except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as e:
                self.bad.add(path)
                log.warning("skipping unreadable image %s (%s); the next readable sample of the split stands in for "
                            "it", path, e)
                continue
            return self.transform(img, random.Random(sample_seed)), label
        raise RuntimeError(f"{min(n, 32)} consecutive images from {self.samples[index][0]} on could not be decoded; "
                           f"is the folder still readable? (`--set data.strict=true` checks every file up front)")


class _RankBatchSampler:
    """Yields this rank's share of every global batch as (index, seed) lists; empty shares are not yielded."""

    def __init__(self, loader: FolderLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo_ = self.loader
        base = epoch_seed(lo_.seed, lo_.epoch)
        order = lo_._order(torch.Generator().manual_seed(base)).tolist()
        for start, end in lo_._plan:
            lo, hi = rank_slice(start, end, lo_.rank, lo_.world_size)
            if hi > lo:
                # (base, position) -> a distinct integer seeding this sample's own random.Random
                yield [(order[p], base * (1 << 32) + p) for p in range(lo, hi)]


class FolderLoader(_BaseLoader):
    """DataLoader-backed batches of a folder dataset: workers decode and augment, the device normalises."""

    def __init__(
        self, bundle: DataBundle, split: FolderSplit, *, batch_size: int, train: bool, device: torch.device,
        seed: int, rank: int, world_size: int, drop_last: bool, augment: dict, input_size: int | None,
        num_workers: int,
    ) -> None:  # fmt: skip
        super().__init__(len(split), batch_size, train, seed, rank, world_size, drop_last)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.device = device
        size = input_size or bundle.image_size[0]
        self.transform = FolderTransform(size, train, augment)
        self.loader = torch.utils.data.DataLoader(
            _FolderDataset(split.samples, self.transform),
            batch_sampler=_RankBatchSampler(self),
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
        )
        mean = torch.tensor(bundle.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(bundle.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._scale, self._shift = 1.0 / (255.0 * std), -mean / std
        self._size = size
        self.lighting = None  # AlexNet's colour noise, drawn per position from (seed, epoch, 1)
        if train and self.transform.pca_lighting:
            from .pca import dataset_pca

            self.lighting = dataset_pca(bundle)

    def close(self) -> None:
        """Stop the persistent worker processes now (they also stop when the loader is garbage-collected)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        steps = 0
        shares = [s for s in (rank_slice(a, b, self.rank, self.world_size) for a, b in self._plan) if s[1] > s[0]]
        alpha = None
        if self.lighting is not None:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 1))
            alpha = torch.randn(self.dataset_size, 3, generator=g, dtype=torch.float64) * self.transform.pca_lighting
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            if alpha is not None:
                lo, hi = shares[steps]
                x = self.lighting.apply(x, alpha[lo:hi])
            x = x.float() * self._scale + self._shift
            yield x, y.to(self.device, non_blocking=True)
            steps += 1
        for _ in range(len(self) - steps):  # this rank's share of a tiny final batch was empty
            yield (torch.empty(0, 3, self._size, self._size, device=self.device),
                   torch.empty(0, dtype=torch.int64, device=self.device))  # fmt: skip
