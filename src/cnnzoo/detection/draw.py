"""Pictures of detections: boxes with class and score over the image (and the ground truth, dashed)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["default_threshold", "drawn_by_cnnzoo", "save_detections"]

SOFTWARE = "cnnzoo detect"  # the PNG "Software" text of every picture save_detections draws


def drawn_by_cnnzoo(path: str | Path) -> bool:
    """Whether ``path`` is a PNG `save_detections` drew (its "Software" text says so): a default output name may be
    drawn over only then, never over a file of the user's."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return str(im.info.get("Software", "")).startswith(SOFTWARE)
    except (OSError, ValueError, SyntaxError):
        return False


def default_threshold(scorer: str) -> float:
    """The score above which a detection is drawn: the SVM's decision boundary 0, or softmax probability 0.5."""
    return 0.5 if scorer == "softmax" else 0.0


def save_detections(path: str | Path, items: list[dict], classes: list[str], *, threshold: float,
                    cols: int = 4, title: str | None = None, max_drawn: int = 30) -> Path:
    """Save a grid of images with their detections above ``threshold`` (at most ``max_drawn`` per image, the
    highest-scoring) to ``path`` (PNG/SVG/PDF).

    Each item: ``image`` uint8 (C, H, W), ``boxes``/``scores``/``labels`` of the detections, optionally ``gt_boxes``
    and ``name``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..fileio import atomic_write

    n = len(items)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        img = item["image"]
        arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        ax.imshow(arr, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        for g in item.get("gt_boxes", torch.zeros(0, 4)).tolist():
            ax.add_patch(Rectangle((g[0] - 0.5, g[1] - 0.5), g[2] - g[0], g[3] - g[1], fill=False, lw=1,
                                   ls="--", ec="white", alpha=0.7))
        keep = torch.nonzero(item["scores"] > threshold).flatten()
        keep = keep[torch.argsort(item["scores"][keep], descending=True, stable=True)][:max_drawn]
        for b, s, c in zip(item["boxes"][keep].tolist(), item["scores"][keep].tolist(), item["labels"][keep].tolist()):
            colour = colours(c % 10)
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, lw=1.8, ec=colour))
            ax.text(b[0] - 0.5, b[1] - 1.5, f"{classes[c]} {s:.2f}", color="black", fontsize=7,
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8, "alpha": 0.9})
        if item.get("name"):
            ax.set_title(item["name"], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    import io

    buf = io.BytesIO()
    fmt = path.suffix.lstrip(".").lower() or "png"
    fig.savefig(buf, format=fmt, dpi=110, metadata={"Software": SOFTWARE} if fmt == "png" else None)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path
