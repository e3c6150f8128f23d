"""Pictures of segmentations: the predicted class map painted over the image, with a legend of the classes drawn.

Colours are the Pascal VOC palette (`cnnzoo.segmentation.data.voc_colormap`: label k in colour ``cmap[k]``), the
convention VOC's masks and most segmentation tools use. Label 0 is background (VOC's and digits-segmentation's
convention): it is left unpainted, so the image shows through, and is not in the legend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["overlay", "save_overlay"]


def overlay(image: torch.Tensor, mask: torch.Tensor, *, offset: tuple[int, int] = (0, 0), alpha: float = 0.55,
            background: int | None = 0) -> np.ndarray:
    """uint8 ``(H, W, 3)``: the uint8 ``(C, H, W)`` image (grey or RGB) with every pixel of the ``(h, w)`` class map
    (placed at ``offset`` = (top, left)) other than ``background`` blended with its class colour:
    ``(1 - alpha) x image + alpha x colour``."""
    from .data import voc_colormap

    img = image.numpy()
    rgb = np.repeat(img, 3, 0) if img.shape[0] == 1 else img[:3]
    out = rgb.transpose(1, 2, 0).astype(np.float64)
    m = mask.numpy().astype(np.int64)
    top, left = offset
    h, w = m.shape
    region = out[top : top + h, left : left + w]
    colours = voc_colormap()[np.clip(m, 0, 255)].astype(np.float64)
    paint = np.ones_like(m, dtype=bool) if background is None else m != background
    region[paint] = (1 - alpha) * region[paint] + alpha * colours[paint]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_overlay(path: str | Path, image: torch.Tensor, mask: torch.Tensor, classes: list[str], *,
                 offset: tuple[int, int] = (0, 0), alpha: float = 0.55, title: str | None = None) -> list[str]:
    """Save the image and its class map painted over it side by side, with a legend of the classes present, to
    ``path`` (PNG/SVG/PDF, written atomically); returns the names in the legend. A map smaller than the image (a
    valid-convolution network) is outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    from ..fileio import atomic_savefig
    from .data import voc_colormap

    painted = overlay(image, mask, offset=offset, alpha=alpha)
    present = [k for k in torch.unique(mask).tolist() if k != 0 and 0 <= k < len(classes)]
    cmap = voc_colormap()
    h, w = image.shape[-2:]
    side = 3.2 * max(1.0, min(3.0, max(h, w) / 256))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.8, side + 0.6))
    grey = image.shape[0] == 1
    axes[0].imshow(image[0].numpy() if grey else image[:3].permute(1, 2, 0).numpy(), cmap="gray" if grey else None,
                   vmin=0, vmax=255, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(painted, interpolation="nearest")
    axes[1].set_title("predicted classes", fontsize=9)
    if tuple(mask.shape) != (h, w):
        top, left = offset
        axes[1].add_patch(Rectangle((left - 0.5, top - 0.5), mask.shape[1], mask.shape[0], fill=False, lw=1,
                                    ls="--", ec="white"))
        axes[1].set_title(f"predicted classes (the network's {mask.shape[1]}x{mask.shape[0]} output, dashed)",
                          fontsize=8)
    for ax in axes:
        ax.axis("off")
    handles = [Patch(facecolor=cmap[k] / 255.0, edgecolor="black", label=classes[k]) for k in present]
    if handles:
        fig.legend(handles=handles, loc="center right", fontsize=8, title="classes", title_fontsize=8, frameon=False)
    else:
        fig.text(0.99, 0.5, "background only", ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    atomic_savefig(fig, path, dpi=110)
    return [classes[k] for k in present]
