"""Region proposals: selective search (the paper's), and sliding windows (the notes' baseline).

Selective search (Uijlings, van de Sande, Gevers, Smeulders, "Selective Search for Object Recognition", IJCV 2013,
http://www.huppelen.nl/publications/selectiveSearchDraft.pdf): over-segment the image with Felzenszwalb and
Huttenlocher's graph-based segmentation, then greedily merge the two most similar neighbouring regions until one
region is left; every region ever formed is a proposal. Similarity sums colour (histogram intersection), texture
(gradient-orientation histograms), size (small regions merge first) and fill (merge regions that fill each other's
bounding box). Diversification runs the grouping over several colour spaces, segmentation scales ``k`` and
similarity combinations: "fast" mode (HSV and Lab, k = 50 and 100, two similarity combinations) is what R-CNN used;
"quality" mode adds colour spaces, k and combinations for higher recall with more proposals; "single" is one
strategy (fastest, lowest recall).

We call OpenCV's implementation (``cv2.ximgproc.segmentation``, from the opencv-contrib wheel), which is the
paper's algorithm with its fast and quality presets, rather than writing our own: install it with
``pip install 'cnnzoo[detection]'``. Its proposals come in the order of the hierarchy, with duplicates; we drop
boxes smaller than ``min_size`` pixels a side and exact duplicates, and keep the first ``max_proposals`` (R-CNN: "~2k").

Sliding windows need nothing extra: boxes of a few sizes and aspect ratios on a regular grid, the exhaustive
search that selective search replaces (the same recall costs many more windows).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["PROPOSAL_METHODS", "SS_MODES", "MissingExtraError", "propose", "selective_search", "sliding_windows"]

PROPOSAL_METHODS = ("selective_search", "sliding_window")
SS_MODES = ("fast", "quality", "single")
EXTRA_HINT = "pip install 'cnnzoo[detection]' (it brings opencv-contrib-python-headless)"


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


def _to_hwc_bgr(image: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"selective search takes a uint8 (C, H, W) image with 1 or 3 channels, got {arr.dtype} "
                         f"{arr.shape}")
    hwc = arr.transpose(1, 2, 0)
    hwc = np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc[:, :, ::-1]  # gray -> 3 equal planes; RGB -> BGR
    return np.ascontiguousarray(hwc)


def _clean(boxes: np.ndarray, min_size: float, max_proposals: int) -> torch.Tensor:
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    boxes = boxes[keep]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)][:max_proposals]  # duplicates out, hierarchy order kept
    return torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4)


def selective_search(image: torch.Tensor | np.ndarray, mode: str = "fast", *, max_proposals: int = 2000,
                     min_size: float = 4, scale: float = 1.0) -> torch.Tensor:
    """Selective-search proposals of one image as float32 ``(N, 4)`` boxes ``(x1, y1, x2, y2)``.

    Args:
        image: uint8 ``(C, H, W)``, C = 1 or 3 (RGB).
        mode: "fast" (R-CNN's choice), "quality" (more strategies, more proposals) or "single".
        max_proposals: keep at most this many (in the hierarchy's order).
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
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(img)
    {"fast": ss.switchToSelectiveSearchFast, "quality": ss.switchToSelectiveSearchQuality,
     "single": ss.switchToSingleStrategy}[mode]()
    rects = np.asarray(ss.process(), dtype=np.float64).reshape(-1, 4)  # (x, y, w, h) in the resized image
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1) / scale
    return _clean(boxes, min_size, max_proposals)


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
