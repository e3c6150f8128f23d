"""Detection data augmentation on whole batches: Mosaic (YOLOv4).

**Mosaic** (A. Bochkovskiy, C.-Y. Wang, H.-Y. M. Liao, "YOLOv4: Optimal Speed and Accuracy of Object Detection",
arXiv 2004.10934, Sec. 3.3, Fig. 3): "Mosaic represents a new data augmentation method that mixes 4 training
images ... This allows detection of objects outside their normal context", and batch normalisation sees four images
per image. The canvas (the images' own H x W) is cut at a random centre (xc, yc); the four images fill the four
quadrants, each placed with its corner at the centre:

    top-left     image 0, its bottom-right corner at (xc, yc): canvas [0, yc) x [0, xc) = image [H - yc, H) x [W - xc, W)
    top-right    image 1, its bottom-left corner at (xc, yc):  canvas [0, yc) x [xc, W) = image [H - yc, H) x [0, W - xc)
    bottom-left  image 2, its top-right corner at (xc, yc):    canvas [yc, H) x [0, xc) = image [0, H - yc) x [W - xc, W)
    bottom-right image 3, its top-left corner at (xc, yc):     canvas [yc, H) x [xc, W) = image [0, H - yc) x [0, W - xc)

so image k's boxes move by (xc - W, yc - H), (xc, yc - H), (xc - W, yc), (xc, yc) and are clipped to their
quadrant; a box left narrower or lower than ``min_size`` pixels (darknet: 1 pixel), or with less than
``min_visible`` of its area, is dropped. The centre is drawn uniformly in [0.2, 0.8] of each side (darknet
``data.c``: ``min_offset = 0.2``). Deviation from darknet: its four images are first each randomly cropped, scaled
and jittered (``jitter=.3``) before being placed; here they are placed unscaled (the trainer's ``jitter`` may follow).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MOSAIC_CENTRE_RANGE", "mosaic", "mosaic4"]

MOSAIC_CENTRE_RANGE = (0.2, 0.8)  # darknet data.c min_offset = 0.2


def _check_batch(images: torch.Tensor, boxes: list, labels: list, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"{what} needs images (N, C, H, W), got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if len(boxes) != len(images) or len(labels) != len(images):
        raise ValueError(f"{what}: {len(images)} images but {len(boxes)} box sets and {len(labels)} label sets")


def mosaic4(images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor], centre: tuple[int, int], *,
            min_size: float = 1.0, min_visible: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine four images ``(4, C, H, W)`` around ``centre = (xc, yc)`` (pixels, 0 <= xc <= W, 0 <= yc <= H) into one
    ``(C, H, W)``; their boxes (xyxy pixels, one ``(M_k, 4)`` per image) are moved, clipped to their quadrant and
    filtered (module docstring); returns ``(image, boxes (M, 4), labels (M,))``, images 0-3 in order."""
    _check_batch(images, boxes, labels, "mosaic4")
    if len(images) != 4:
        raise ValueError(f"mosaic4 combines 4 images, got {len(images)}")
    _, _, h, w = images.shape
    xc, yc = (int(v) for v in centre)
    if not (0 <= xc <= w and 0 <= yc <= h):
        raise ValueError(f"mosaic centre {centre} must lie in the {w}x{h} image")
    out = images.new_zeros(images.shape[1:])
    # (canvas rows, canvas cols, image rows, image cols, box shift (dx, dy), quadrant (x1, y1, x2, y2))
    places = (
        (slice(0, yc), slice(0, xc), slice(h - yc, h), slice(w - xc, w), (xc - w, yc - h), (0, 0, xc, yc)),
        (slice(0, yc), slice(xc, w), slice(h - yc, h), slice(0, w - xc), (xc, yc - h), (xc, 0, w, yc)),
        (slice(yc, h), slice(0, xc), slice(0, h - yc), slice(w - xc, w), (xc - w, yc), (0, yc, xc, h)),
        (slice(yc, h), slice(xc, w), slice(0, h - yc), slice(0, w - xc), (xc, yc), (xc, yc, w, h)),
    )
    out_boxes, out_labels = [], []
    for k, (cr, cc, ir, ic, (dx, dy), (qx1, qy1, qx2, qy2)) in enumerate(places):
        out[:, cr, cc] = images[k][:, ir, ic]
        b = torch.as_tensor(boxes[k], dtype=torch.float32).reshape(-1, 4)
        lab = torch.as_tensor(labels[k]).reshape(-1)
        moved = b + torch.tensor([dx, dy, dx, dy], dtype=torch.float32)
        clipped = torch.stack([moved[:, 0].clamp(qx1, qx2), moved[:, 1].clamp(qy1, qy2),
                               moved[:, 2].clamp(qx1, qx2), moved[:, 3].clamp(qy1, qy2)], 1)
        bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp(min=1e-12)
        keep = (bw >= min_size) & (bh >= min_size) & (bw * bh >= min_visible * area)
        out_boxes.append(clipped[keep])
        out_labels.append(lab[keep])
    return out, torch.cat(out_boxes), torch.cat(out_labels)


def mosaic(images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor], rng: np.random.Generator, *,
           centre_range: tuple[float, float] = MOSAIC_CENTRE_RANGE, min_size: float = 1.0, min_visible: float = 0.0,
           ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Mosaic a batch (YOLOv4 Sec. 3.3): output image i combines image i and three others of the batch (drawn with
    replacement) in a random order of quadrants around a random centre (module docstring).

    Args:
        images: ``(N, C, H, W)`` (any dtype; pixels are copied).
        boxes: per image ``(M_i, 4)`` xyxy pixels.
        labels: per image ``(M_i,)``.
        rng: the draws (partners, quadrant order, centre) come from it only.
        centre_range: the centre's range as fractions of W and H (darknet's [0.2, 0.8]).

    Returns ``(images (N, C, H, W), boxes per image, labels per image)``.
    """
    _check_batch(images, boxes, labels, "mosaic")
    lo, hi = centre_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"mosaic centre_range must be 0 <= low <= high <= 1, got {centre_range!r}")
    n, _, h, w = images.shape
    out, out_boxes, out_labels = torch.empty_like(images), [], []
    for i in range(n):
        four = np.concatenate([[i], rng.integers(0, n, 3)])[rng.permutation(4)]
        xc = int(rng.integers(round(lo * w), round(hi * w) + 1))
        yc = int(rng.integers(round(lo * h), round(hi * h) + 1))
        idx = four.tolist()
        out[i], b, lab = mosaic4(images[idx], [boxes[j] for j in idx], [labels[j] for j in idx], (xc, yc),
                                 min_size=min_size, min_visible=min_visible)
        out_boxes.append(b)
        out_labels.append(lab)
    return out, out_boxes, out_labels
