"""Anchors of the one-stage detectors: SSD's default boxes, RetinaNet's anchors and YOLOv2's k-means priors.

All boxes are float32 ``(x1, y1, x2, y2)`` in input-image pixels, in torchvision's order, so a torchvision
checkpoint's per-anchor outputs line up with them.

**SSD default boxes** (Liu et al. 2016, "SSD: Single Shot MultiBox Detector", https://arxiv.org/abs/1512.02325,
Sec. 2.2 "Choosing scales and aspect ratios for default boxes"). Feature map ``k`` of ``m`` has scale

    s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1),   s_min = 0.2, s_max = 0.9,

aspect ratios ``a_r`` in {1, 2, 3, 1/2, 1/3} with ``w = s_k sqrt(a_r)``, ``h = s_k / sqrt(a_r)``, one extra box of
ratio 1 and scale ``s'_k = sqrt(s_k s_{k+1})``, centres ``((i + 0.5) / |f_k|, (j + 0.5) / |f_k|)``; layers with 4
boxes drop ratios 3 and 1/3. Sec. 3.1 (PASCAL VOC): "we set default box with scale 0.1 on conv4_3"; SSD512
(Sec. 3 footnote): "set s_min to 0.15, and 0.07 on conv4_3"; COCO (Sec. 3.4) likewise s_min 0.15, conv4_3 0.07.
The arithmetic follows the authors' Caffe scripts (ssd_pascal.py), which torchvision reproduces: in integer
percent, conv4_3 at ``s_min // 2``, then ``s_min, s_min + step, ...`` with ``step = (s_max - s_min) // (m - 2)``
(floored), the last extra box using ``s_{m+1} = s_m + step``. For SSD300 on VOC that is 0.1, 0.2, 0.37, 0.54, 0.71,
0.88 (and 1.05), not the formula's unfloored 0.375, 0.55, ...; with s_min 0.15 it is torchvision's ssd300_vgg16
``scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]``. Centres use the Caffe ``steps`` (8, 16, 32, 64, 100, 300:
centre ``(i + 0.5) * step`` pixels) rather than ``|f_k|``; widths and heights (not centres) are clipped to [0, 1]
of the image while in ``(cx, cy, w, h)`` form, as torchvision's ``clip=True``. Per location the order is
``s_k``, ``s'_k``, then for each ratio ``r`` the pair ``(r, 1/r)``. 38x38x4 + 19x19x6 + 10x10x6 + 5x5x6 + 3x3x4 +
1x1x4 = 8,732 boxes for SSD300 (the paper's "8732 default boxes", Sec. 3 / Fig. 2); 24,564 for SSD512.

**RetinaNet anchors** (Lin et al. 2017, "Focal Loss for Dense Object Detection", https://arxiv.org/abs/1708.02002,
Sec. 4 "Anchors"): on P3-P7 (strides 8-128) areas 32^2 to 512^2, at each level sizes ``{2^0, 2^(1/3), 2^(2/3)}``
times the base and aspect ratios {1:2, 1:1, 2:1}: 9 anchors per location. As torchvision's ``AnchorGenerator``
(retinanet_resnet50_fpn): sizes truncated to integers (32, 40, 50; 64, 80, 101; ...), ratio ``r = h / w``, half
sizes rounded to whole pixels (round half to even), centred on the top-left corner ``(x * stride, y * stride)`` of
each feature-map cell (not the cell centre), stride = ``image_size // feature_size``; per location ratio-major
(ratio 0.5 with its three sizes first).

**k-means priors** (Redmon & Farhadi 2017, "YOLO9000: Better, Faster, Stronger", https://arxiv.org/abs/1612.08242,
Sec. 2 "Dimension Clusters"): k-means over the training boxes' (w, h) with ``d(box, centroid) = 1 - IoU(box,
centroid)``, boxes and centroids aligned at a common corner, because Euclidean distance makes "larger boxes generate
more error than smaller boxes". Centroids are the mean (w, h) of their boxes (darknet's ``gen_anchors``).
Deviations: k-means++ seeding with the same distance and ``n_init`` restarts keep the result independent of unlucky
seeds (the paper does not say how it seeds); the run with the highest mean IoU (Table 1's "Avg IoU") wins; an empty
cluster takes the box farthest from its centroid; centroids are returned sorted by area.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["RETINANET_RATIOS", "RETINANET_SCALES", "RETINANET_SIZES", "RETINANET_STRIDES", "SSD300", "SSD512",
           "kmeans_anchors", "mean_iou_wh", "retinanet_anchors", "retinanet_cell_anchors", "ssd_default_boxes",
           "ssd_num_boxes_per_location", "ssd_scales", "wh_iou"]

#: SSD300 (Fig. 2, Caffe ssd_pascal.py): conv4_3, fc7, conv8_2, conv9_2, conv10_2, conv11_2
SSD300 = {"feature_sizes": (38, 19, 10, 5, 3, 1), "steps": (8, 16, 32, 64, 100, 300),
          "aspect_ratios": ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)), "s_min": 0.2, "s_max": 0.9}
#: SSD512 (Sec. 3 footnote, Caffe ssd_pascal_512.py): one more map (conv12_2), ratio 3 also on conv11_2
SSD512 = {"feature_sizes": (64, 32, 16, 8, 4, 2, 1), "steps": (8, 16, 32, 64, 128, 256, 512),
          "aspect_ratios": ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)), "s_min": 0.15, "s_max": 0.9}

RETINANET_STRIDES = (8, 16, 32, 64, 128)
RETINANET_SIZES = (32, 64, 128, 256, 512)
RETINANET_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
RETINANET_RATIOS = (0.5, 1.0, 2.0)


# ------------------------------------------------------------------------------------------------------------ SSD
def ssd_scales(num_maps: int, s_min: float = 0.2, s_max: float = 0.9) -> tuple[float, ...]:
    """The ``num_maps + 1`` scales ``s_1 .. s_{m+1}`` of SSD (see the module docstring): conv4_3 at half of
    ``s_min``, then ``s_min`` to about ``s_max`` in floored integer-percent steps (Caffe's arithmetic)."""
    if num_maps < 3:
        raise ValueError(f"SSD's scale rule needs at least 3 feature maps, got {num_maps}; pass scales= instead")
    if not 0 < s_min < s_max <= 1:
        raise ValueError(f"SSD scales need 0 < s_min < s_max <= 1, got s_min {s_min} and s_max {s_max}")
    lo, hi = round(100 * s_min), round(100 * s_max)
    step = (hi - lo) // (num_maps - 2)
    centiles = [lo // 2] + [lo + step * k for k in range(num_maps)]
    return tuple(c / 100 for c in centiles)


def ssd_num_boxes_per_location(aspect_ratios) -> list[int]:
    """2 boxes of ratio 1 plus 2 per listed ratio (r and 1/r): [4, 6, 6, 6, 4, 4] for SSD300."""
    return [2 + 2 * len(r) for r in aspect_ratios]


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def ssd_default_boxes(image_size: int | tuple[int, int] = 300, feature_sizes=None, steps=None, aspect_ratios=None,
                      s_min: float | None = None, s_max: float | None = None, scales=None,
                      clip: bool = True) -> torch.Tensor:
    """SSD's default boxes ``(A, 4)`` xyxy pixels in torchvision's ``DefaultBoxGenerator`` order.

    Args:
        image_size: the input size, ``S`` or ``(H, W)``. 300 and 512 fill in the paper's layouts (`SSD300`,
            `SSD512`) for every argument left out; other sizes need ``feature_sizes`` and ``aspect_ratios``.
        feature_sizes: ``|f_k|`` per map (an int for square maps, or ``(h, w)``).
        steps: pixels between neighbouring centres per map; ``None``: the map's own size (the paper's
            ``(i + 0.5) / |f_k|``).
        aspect_ratios: per map the ratios besides 1 (each also used inverted).
        s_min, s_max: the scale range (`ssd_scales`); default 0.2 / 0.9 (SSD300 on VOC), or 0.15 / 0.9 with 7 maps
            (SSD512). 0.15 with SSD300's layout gives torchvision's ssd300_vgg16 (COCO) boxes.
        scales: ``m + 1`` explicit scales instead (e.g. torchvision's ``[0.07, 0.15, 0.33, 0.51, 0.69, 0.87,
            1.05]``).
        clip: clip widths and heights to the image (torchvision's ``clip=True``).
    """
    h_img, w_img = _hw(image_size)
    preset = {300: SSD300, 512: SSD512}.get(h_img) if h_img == w_img else None
    if feature_sizes is None or aspect_ratios is None:
        if preset is None:
            raise ValueError(f"SSD default boxes for a {h_img}x{w_img} input need feature_sizes and aspect_ratios "
                             f"(only 300 and 512 have the paper's layouts)")
        feature_sizes = preset["feature_sizes"] if feature_sizes is None else feature_sizes
        aspect_ratios = preset["aspect_ratios"] if aspect_ratios is None else aspect_ratios
        steps = preset["steps"] if steps is None else steps
    m = len(feature_sizes)
    if len(aspect_ratios) != m or (steps is not None and len(steps) != m):
        raise ValueError(f"SSD default boxes: {m} feature maps but {len(aspect_ratios)} aspect-ratio lists"
                         + ("" if steps is None else f" and {len(steps)} steps"))
    if scales is None:
        base = preset if preset is not None and len(preset["feature_sizes"]) == m else SSD300 if m < 7 else SSD512
        scales = ssd_scales(m, base["s_min"] if s_min is None else s_min, base["s_max"] if s_max is None else s_max)
    if len(scales) != m + 1:
        raise ValueError(f"SSD default boxes need {m + 1} scales for {m} feature maps, got {len(scales)}")
    out = []
    for k, f in enumerate(feature_sizes):
        fh, fw = (f, f) if isinstance(f, int) else f
        s, s_next = float(scales[k]), float(scales[k + 1])
        wh = [(s, s), (math.sqrt(s * s_next),) * 2]
        for r in aspect_ratios[k]:
            q = math.sqrt(r)
            wh += [(s * q, s / q), (s / q, s * q)]
        wh = torch.tensor(wh, dtype=torch.float64)
        if clip:
            wh = wh.clamp(0, 1)
        # centres in fractions of the image: (i + 0.5) / (image / step), or (i + 0.5) / |f_k| without steps
        nx, ny = (fw, fh) if steps is None else (w_img / steps[k], h_img / steps[k])
        cy, cx = torch.meshgrid((torch.arange(fh, dtype=torch.float64) + 0.5) / ny,
                                (torch.arange(fw, dtype=torch.float64) + 0.5) / nx, indexing="ij")
        centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)  # (fh*fw, 2), row-major: y outer, x inner
        c = centres[:, None, :].expand(-1, len(wh), 2)
        size = wh[None].expand(len(centres), -1, 2)
        out.append(torch.cat([c - 0.5 * size, c + 0.5 * size], -1).reshape(-1, 4))
    boxes = torch.cat(out)
    boxes[:, 0::2] *= w_img
    boxes[:, 1::2] *= h_img
    return boxes.to(torch.float32)


# ----------------------------------------------------------------------------------------------------- RetinaNet
def retinanet_cell_anchors(size: float, scales=RETINANET_SCALES, ratios=RETINANET_RATIOS) -> torch.Tensor:
    """The ``len(ratios) * len(scales)`` zero-centred anchors of one level, ratio-major, torchvision's integer
    sizes and rounded half sizes: for size 32 the first is ``(-23, -11, 23, 11)``."""
    sizes = torch.tensor([float(int(size * s)) for s in scales], dtype=torch.float32)
    ratios = torch.as_tensor(ratios, dtype=torch.float32)
    h_ratio = torch.sqrt(ratios)  # ratio = h / w, area kept
    w_ratio = 1 / h_ratio
    ws = (w_ratio[:, None] * sizes[None, :]).reshape(-1)
    hs = (h_ratio[:, None] * sizes[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], 1) / 2).round()


def retinanet_anchors(image_size: int | tuple[int, int], strides=RETINANET_STRIDES, sizes=RETINANET_SIZES,
                      scales=RETINANET_SCALES, ratios=RETINANET_RATIOS, feature_sizes=None) -> torch.Tensor:
    """RetinaNet's anchors ``(A, 4)`` xyxy pixels over P3-P7 in torchvision's ``AnchorGenerator`` order.

    Args:
        image_size: the (padded) input size ``S`` or ``(H, W)``.
        strides: the levels' nominal strides; feature maps are ``ceil(S / stride)`` (ResNet-FPN with padded
            stride-2 convolutions) unless ``feature_sizes`` gives them.
        sizes: each level's base size (paper: 32^2 .. 512^2 areas).
        scales, ratios: the octave scales and the h / w ratios: 9 anchors per location.
        feature_sizes: per level ``(h, w)`` or an int, overriding the computed sizes.
    """
    h_img, w_img = _hw(image_size)
    if len(sizes) != len(strides):
        raise ValueError(f"RetinaNet anchors: {len(strides)} strides but {len(sizes)} sizes")
    if feature_sizes is None:
        feature_sizes = [(-(-h_img // s), -(-w_img // s)) for s in strides]
    if len(feature_sizes) != len(sizes):
        raise ValueError(f"RetinaNet anchors: {len(sizes)} levels but {len(feature_sizes)} feature sizes")
    out = []
    for size, f in zip(sizes, feature_sizes):
        fh, fw = (f, f) if isinstance(f, int) else f
        sy, sx = h_img // fh, w_img // fw  # torchvision: image_size // grid_size
        ys, xs = torch.meshgrid(torch.arange(fh, dtype=torch.float32) * sy,
                                torch.arange(fw, dtype=torch.float32) * sx, indexing="ij")
        shifts = torch.stack([xs.reshape(-1), ys.reshape(-1)] * 2, 1)  # (x, y, x, y) per location
        cell = retinanet_cell_anchors(size, scales, ratios)
        out.append((shifts[:, None, :] + cell[None]).reshape(-1, 4))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------- k-means
def wh_iou(wh: torch.Tensor | np.ndarray, centroids: torch.Tensor | np.ndarray) -> np.ndarray:
    """IoU ``(N, K)`` of boxes ``(N, 2)`` and centroids ``(K, 2)`` given as (w, h), aligned at a corner (YOLO9000
    Sec. 2): ``min(w) min(h) / (w h + w_c h_c - min(w) min(h))``."""
    a = np.asarray(wh, dtype=np.float64)
    b = np.asarray(centroids, dtype=np.float64)
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None, 0] * a[:, None, 1] + b[None, :, 0] * b[None, :, 1] - inter)


def _distance(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return 1.0 - wh_iou(wh, centroids)  # YOLO9000 Sec. 2: d(box, centroid) = 1 - IOU(box, centroid)


def mean_iou_wh(wh, centroids) -> float:
    """YOLO9000 Table 1's "Avg IoU": the mean over boxes of the IoU with their closest centroid."""
    return float(wh_iou(wh, centroids).max(1).mean())


def _kmeans_once(wh: np.ndarray, k: int, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    n = len(wh)
    centroids = [wh[rng.integers(n)]]  # k-means++ seeding with the 1 - IoU distance
    for _ in range(1, k):
        d = _distance(wh, np.asarray(centroids)).min(1) ** 2
        total = d.sum()
        centroids.append(wh[rng.choice(n, p=d / total)] if total > 0 else wh[rng.integers(n)])
    centroids = np.asarray(centroids, dtype=np.float64)
    assign = None
    for _ in range(max_iter):
        dist = _distance(wh, centroids)
        new = dist.argmin(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centroids[j] = members.mean(0)
            else:  # an empty cluster takes the box farthest from its own centroid
                far = int(dist[np.arange(n), assign].argmax())
                centroids[j] = wh[far]
                assign[far] = j
    return centroids


def kmeans_anchors(wh, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300) -> torch.Tensor:
    """YOLOv2's anchor priors: ``(k, 2)`` float32 (w, h) centroids of k-means with the ``1 - IoU`` distance,
    sorted by area (see the module docstring). The same ``wh``, ``k`` and ``seed`` give the same answer.

    Args:
        wh: ``(N, 2)`` box widths and heights (any unit; YOLOv2 uses grid cells), all positive.
        k: number of clusters (the paper picks 5), at most the number of distinct boxes.
        seed: seeds the k-means++ draws.
        n_init: restarts; the one with the highest mean IoU is kept.
        max_iter: iterations per run (stops early when the assignment no longer changes).
    """
    wh = np.asarray(wh.detach().cpu().numpy() if isinstance(wh, torch.Tensor) else wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"k-means anchors need (N, 2) widths and heights, got shape {wh.shape}")
    if not np.all(np.isfinite(wh)) or np.any(wh <= 0):
        raise ValueError("k-means anchors need positive, finite widths and heights")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k-means anchors need an integer k >= 1, got {k!r}")
    distinct = len(np.unique(wh, axis=0))
    if k > distinct:
        raise ValueError(f"k-means anchors: k={k} clusters but only {distinct} distinct boxes")
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"k-means anchors need n_init >= 1 and max_iter >= 1, got {n_init} and {max_iter}")
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(n_init):
        c = _kmeans_once(wh, k, rng, max_iter)
        score = mean_iou_wh(wh, c)
        if score > best_iou + 1e-12:
            best, best_iou = c, score
    best = best[np.argsort(best[:, 0] * best[:, 1], kind="stable")]
    return torch.from_numpy(best).to(torch.float32)
