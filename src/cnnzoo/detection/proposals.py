"""Region proposals: selective search (the paper's), and sliding windows (the notes' baseline).

Selective search (Uijlings, van de Sande, Gevers, Smeulders, "Selective Search for Object Recognition", IJCV 2013,
http://www.huppelen.nl/publications/selectiveSearchDraft.pdf): over-segment the image with Felzenszwalb and
Huttenlocher's graph-based segmentation, then greedily merge the two most similar neighbouring regions until one
region is left; every region ever formed is a proposal. Similarity sums colour (C, histogram intersection), texture
(T, gradient-orientation histograms), size (S, small regions merge first) and fill (F, merge regions that fill each
other's bounding box). Diversification runs the grouping over several colour spaces, segmentation thresholds ``k``
and similarity combinations (Sec. 3.2, Table 5); boxes are ordered by their level in each hierarchy times a random
number in [0, 1] (Sec. 3.3's pseudo-random ranking).

Modes, as Uijlings et al.'s Table 5 and their released code (``demoPascal2007.m``; R-CNN's
``selective_search/selective_search_boxes.m`` is the same code) define them; every mode uses sigma = 0.8 and
minSize = k for the segmentation ("by default, we set minSize = k, and sigma = 0.8"):

    =========  ==================================  =====================  ======================
    mode       colour spaces                       k                      similarities
    =========  ==================================  =====================  ======================
    single     HSV                                 100                    C+T+S+F
    fast       HSV, Lab                            50, 100                C+T+S+F, T+S+F
    quality    HSV, Lab, rgI, H, I                 50, 100, 150, 300      C+T+S+F, T+S+F, F, S
    =========  ==================================  =====================  ======================

"fast" is R-CNN's choice (Girshick et al. 2014: Sec. 2.1 picks selective search, Sec. 2.2 "we use selective
search's 'fast mode' in all experiments"): 2 x 2 x 2 = 8 hierarchies. We call OpenCV's implementation of the grouping and of the four similarities
(``cv2.ximgproc.segmentation``, from the opencv-contrib wheel; install it with ``pip install 'cnnzoo[detection]'``)
but configure it ourselves through its image / graph-segmentation / strategy API, because OpenCV's presets are not
the paper's: ``switchToSelectiveSearchFast()`` (defaults base_k = 150, inc_k = 150, sigma = 0.8) segments at k = 150,
300 and 450 (its loop runs to base_k + 2 inc_k) with OpenCV's default minSize 100, in HSV with hue on 0-179 (so only
18 of the colour histogram's 25 hue bins are used), and ``switchToSelectiveSearchQuality()`` at k = 150 ... 750 with
rgI built from raw R, G (not the normalised r, g); the colour spaces and similarity pairs of its fast preset are the
paper's. Here HSV is OpenCV's full-range 8-bit HSV (hue on 0-255, as the paper's hue on [0, 1] fills all 25 bins),
Lab OpenCV's 8-bit Lab, rgI = (255 R / (R+G+B), 255 G / (R+G+B), grey), H the hue plane, I the grey image.
Measured on the built-in digits-detection test split (150 images, 457 boxes; recall at IoU 0.5, ``min_size`` 4):

    * the paper's fast mode (this module's "fast"):          recall 92.1%, 17.3 proposals per image, 0.14 s/image
    * the same on the image enlarged 1.5x (``scale=1.5``):    recall 99.3%, 84.0 proposals per image, 0.31 s/image
    * OpenCV's ``switchToSelectiveSearchFast()`` preset:      recall 98.9%, 24.1 proposals per image, 0.13 s/image

(the paper's k were chosen for VOC's ~500 x 375 images; the digits canvases are 128 x 128, so the same k makes
relatively coarser segments: ``scale`` enlarges the image instead of changing the paper's k).

Determinism: OpenCV's ranking draws its random numbers from the C library's ``rand()`` (``hierarchicalGrouping``:
``rank = rand() / RAND_MAX * level``; not ``cv::theRNG()``, so ``cv2.setRNGSeed`` does not reach it), a generator
shared by every thread of the process. We seed it with ``srand(SS_SEED)`` right before each image's ``process()``, and
hold a process-wide lock from the seeding to the end of the call, so an image's proposals, in their order, are the
same on every call, in every process, whatever other threads run (the price: selective search runs one image at a
time per process). Where the C library cannot be reached through ctypes, the proposals are put in a fixed
(lexicographic) order instead, losing the paper's ranking but not the determinism. Of the ranked boxes we
drop those smaller than ``min_size`` pixels a side and exact duplicates (the first kept), and keep the first
``max_proposals`` (R-CNN: "~2k"). R-CNN's code also drops boxes narrower than 20 pixels (``minBoxWidth``, for
VOC-sized images); ``min_size`` is that filter, at 4 pixels by default for small images.

Sliding windows need nothing extra: boxes of a few sizes and aspect ratios on a regular grid, the exhaustive
search that selective search replaces (the same recall costs many more windows).
"""

from __future__ import annotations

import functools
import itertools
import sys
import threading

import numpy as np
import torch

__all__ = ["PROPOSAL_METHODS", "SS_MODES", "SS_STRATEGIES", "MissingExtraError", "propose", "selective_search",
           "sliding_windows"]

PROPOSAL_METHODS = ("selective_search", "sliding_window")
SS_MODES = ("fast", "quality", "single")
EXTRA_HINT = "pip install 'cnnzoo[detection]' (it brings opencv-contrib-python-headless)"

#: Uijlings et al. 2013, Table 5, and their code: (colour spaces, segmentation thresholds k, similarity sets)
SS_STRATEGIES: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]] = {
    "single": (("hsv",), (100,), ("CTSF",)),
    "fast": (("hsv", "lab"), (50, 100), ("CTSF", "TSF")),
    "quality": (("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), ("CTSF", "TSF", "F", "S")),
}
SS_SIGMA = 0.8  # Felzenszwalb-Huttenlocher smoothing; minSize = k (Uijlings et al.'s code)
SS_SEED = 1  # the C library's srand() seed before each image (1 is C's own default)
_SS_LOCK = threading.Lock()  # rand() is one generator per process: one selective search at a time


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def _cv2():
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is None or not hasattr(cv2, "ximgproc"):
        what = "OpenCV is not installed" if cv2 is None else "the installed OpenCV lacks the contrib module ximgproc"
        raise MissingExtraError(f"selective search needs OpenCV's contrib module ({what}); install the extra: "
                                f"{EXTRA_HINT}, or use the sliding-window proposer (proposals.method=sliding_window)")
    return cv2


@functools.cache
def _c_srand():
    """The C library's ``srand`` (the one OpenCV's ``rand()`` reads), or None where ctypes cannot reach it."""
    import ctypes

    for name in (("ucrtbase", "msvcrt") if sys.platform == "win32" else (None,)):
        try:
            fn = ctypes.CDLL(name).srand
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_uint], None
        return fn
    return None


def _to_hwc_bgr(image: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"selective search takes a uint8 (C, H, W) image with 1 or 3 channels, got {arr.dtype} "
                         f"{arr.shape}")
    hwc = arr.transpose(1, 2, 0)
    hwc = np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc[:, :, ::-1]  # gray -> 3 equal planes; RGB -> BGR
    return np.ascontiguousarray(hwc)


def _colour_space(cv2, bgr: np.ndarray, name: str) -> np.ndarray:
    """The 8-bit image of one of the paper's colour spaces (see the module docstring)."""
    if name == "hsv":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV_FULL)
    if name == "lab":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)
    if name == "h":
        return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV_FULL)[:, :, 0])
    if name == "i":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if name == "rgi":
        f = bgr.astype(np.float32)
        total = np.maximum(f.sum(2), 1.0)
        rg = [np.clip(np.rint(255.0 * f[:, :, c] / total), 0, 255).astype(np.uint8) for c in (2, 1)]
        return np.ascontiguousarray(np.dstack([*rg, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)]))
    raise ValueError(f"unknown colour space {name!r}")


def _strategy(seg, letters: str):
    """OpenCV's similarity measure for a combination like "CTSF" (equal weights, as the paper sums them)."""
    make = {"C": seg.createSelectiveSearchSegmentationStrategyColor,
            "T": seg.createSelectiveSearchSegmentationStrategyTexture,
            "S": seg.createSelectiveSearchSegmentationStrategySize,
            "F": seg.createSelectiveSearchSegmentationStrategyFill}
    parts = [make[c]() for c in letters]
    return parts[0] if len(parts) == 1 else seg.createSelectiveSearchSegmentationStrategyMultiple(*parts)


def _segmentation(cv2, bgr: np.ndarray, mode: str):
    """An OpenCV SelectiveSearchSegmentation set up with the paper's strategies of ``mode``."""
    seg = cv2.ximgproc.segmentation
    colours, ks, sims = SS_STRATEGIES[mode]
    ss = seg.createSelectiveSearchSegmentation()
    for name in colours:
        ss.addImage(_colour_space(cv2, bgr, name))
    for k in ks:
        gs = seg.createGraphSegmentation()
        gs.setK(float(k))
        gs.setMinSize(int(k))
        gs.setSigma(SS_SIGMA)
        ss.addGraphSegmentation(gs)
    for letters in sims:
        ss.addStrategy(_strategy(seg, letters))
    return ss


def _process(ss) -> tuple[np.ndarray, bool]:
    """(rects (N, 4) x, y, w, h in OpenCV's ranked order, whether that order is seeded): one call at a time, with
    the C library's rand() seeded right before it."""
    srand = _c_srand()
    with _SS_LOCK:
        if srand is not None:
            srand(SS_SEED)
        rects = ss.process()
    return np.asarray(rects, dtype=np.float64).reshape(-1, 4), srand is not None


def _clean(boxes: np.ndarray, min_size: float, max_proposals: int, *, ranked: bool = True) -> torch.Tensor:
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    boxes = boxes[keep]
    _, first = np.unique(boxes, axis=0, return_index=True)
    # duplicates out (the first kept), the ranked order kept; unranked: np.unique's fixed lexicographic order
    boxes = (boxes[np.sort(first)] if ranked else boxes[first])[:max_proposals]
    return torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4)


def selective_search(image: torch.Tensor | np.ndarray, mode: str = "fast", *, max_proposals: int = 2000,
                     min_size: float = 4, scale: float = 1.0) -> torch.Tensor:
    """Selective-search proposals of one image as float32 ``(N, 4)`` boxes ``(x1, y1, x2, y2)``; the same boxes in
    the same order on every call (see the module docstring).

    Args:
        image: uint8 ``(C, H, W)``, C = 1 or 3 (RGB).
        mode: "fast" (R-CNN's choice), "quality" (more strategies, more proposals) or "single": the paper's
            (`SS_STRATEGIES`).
        max_proposals: keep at most this many (in the ranked order).
        min_size: drop boxes narrower or shorter than this (pixels of the original image).
        scale: run on the image resized by this factor (small images segment better enlarged); boxes are mapped
            back to the original pixels.
    """
    if mode not in SS_MODES:
        raise ValueError(f"selective search mode must be one of {', '.join(SS_MODES)}, got {mode!r}")
    if scale <= 0:
        raise ValueError(f"selective search scale must be > 0, got {scale}")
    cv2 = _cv2()
    img = _to_hwc_bgr(image)
    if scale != 1.0:
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    rects, ranked = _process(_segmentation(cv2, img, mode))  # (x, y, w, h) in the resized image
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1) / scale
    return _clean(boxes, min_size, max_proposals, ranked=ranked)


def sliding_windows(height: int, width: int, *, sizes: tuple[int, ...] = (16, 24, 32, 48, 64),
                    aspect_ratios: tuple[float, ...] = (0.5, 1.0), stride: float = 0.25,
                    max_proposals: int = 100_000) -> torch.Tensor:
    """Windows of every ``size`` (the side of a square of the same area) and ``aspect_ratio`` (width / height),
    stepped by ``stride`` times the window's side over the image; float32 ``(N, 4)``."""
    if not sizes or min(sizes) <= 0 or not aspect_ratios or min(aspect_ratios) <= 0 or not 0 < stride <= 1:
        raise ValueError(f"sliding windows need positive sizes and aspect ratios and a stride in (0, 1], got sizes "
                         f"{sizes}, aspect_ratios {aspect_ratios}, stride {stride}")
    out = []
    for size, ratio in itertools.product(sizes, aspect_ratios):
        w, h = min(size * ratio**0.5, width), min(size / ratio**0.5, height)
        xs = np.arange(0.0, width - w + 1e-6, max(1.0, stride * w))
        ys = np.arange(0.0, height - h + 1e-6, max(1.0, stride * h))
        gx, gy = np.meshgrid(xs, ys)
        out.append(np.stack([gx.ravel(), gy.ravel(), gx.ravel() + w, gy.ravel() + h], 1))
    return _clean(np.concatenate(out), 1.0, max_proposals)


def propose(image: torch.Tensor, settings: dict) -> torch.Tensor:
    """Proposals for ``image`` as the run's ``settings`` say (see `cnnzoo.detection.rcnn.ProposalConfig`)."""
    method = settings["method"]
    if method == "selective_search":
        return selective_search(image, settings["mode"], max_proposals=settings["max_proposals"],
                                min_size=settings["min_size"], scale=settings["scale"])
    if method == "sliding_window":
        return sliding_windows(image.shape[-2], image.shape[-1], sizes=tuple(settings["window_sizes"]),
                               aspect_ratios=tuple(settings["aspect_ratios"]), stride=settings["stride"],
                               max_proposals=settings["max_proposals"])
    raise ValueError(f"proposal method must be one of {', '.join(PROPOSAL_METHODS)}, got {method!r}")
