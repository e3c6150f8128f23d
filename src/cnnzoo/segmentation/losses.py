"""U-Net's weighted loss: Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, Sec. 3, Eq. 1 and 2.

The energy is a pixel-wise soft-max over the final map combined with a weighted cross-entropy (Eq. 1)::

    E = sum_x w(x) log(p_l(x)(x))

with a weight map precomputed for each ground-truth mask (Eq. 2)::

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies, ``d1`` and ``d2`` are the distances to the border of the nearest and the
second nearest object ("cell"); the paper sets ``w0 = 10`` and ``sigma ~ 5`` pixels. The second term makes the thin
background gaps between touching objects expensive to get wrong, so the network learns to separate them.

Choices the paper leaves open, made here:

- objects are the connected components (8-connected) of each non-background class of the mask, or the ids of an
  explicit ``instances`` map when one is given (the paper's cells are instances);
- ``d_k(x)`` is the Euclidean distance from pixel ``x`` to the nearest pixel of object ``k`` (so a background pixel
  next to an object is at distance 1); the border term is added on background pixels only (inside an object the
  distance to its "border" is not defined by the paper, and the paper's Fig. 3d shows the weight in the gaps), and
  it is 0 where fewer than two objects exist;
- ``w_c(x) = N / (K n_c)`` for the class ``c`` of pixel ``x`` (``class_weights="balanced"``): ``N`` labelled pixels,
  ``K`` classes present, ``n_c`` pixels of class ``c``, so the mean of ``w_c`` over the labelled pixels is 1;
  ``class_weights=None`` makes ``w_c = 1``; a sequence gives one weight per class;
- pixels with the ignore label get weight 0;
- object distances are computed exactly within ``6 sigma`` of each object; beyond it the border term is below
  ``w0 exp(-18) < 2e-7`` and is taken as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .metrics import IGNORE_INDEX

__all__ = ["connected_components", "unet_weight_map", "weighted_cross_entropy"]


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of a boolean ``(H, W)`` mask: int64 ids 1..K (0 off the mask), in raster order of
    each component's first pixel."""
    fg = mask.bool()
    h, w = fg.shape
    idx = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(h, w)
    lab = torch.where(fg, idx, torch.zeros_like(idx))
    while True:  # propagate the largest id through each component until nothing changes
        grown = F.max_pool2d(lab[None, None], 3, 1, 1)[0, 0] * fg
        if torch.equal(grown, lab):
            break
        lab = grown
    ids = lab[fg]
    out = torch.zeros(h, w, dtype=torch.int64)
    if ids.numel():
        first = {}
        for v in ids.tolist():  # raster order: the first time each id is met
            first.setdefault(v, len(first) + 1)
        out[fg] = torch.tensor([first[v] for v in ids.tolist()], dtype=torch.int64)
    return out


def _object_distances(objects: torch.Tensor, reach: float) -> torch.Tensor:
    """``(K, H, W)`` Euclidean distance of every pixel to the nearest pixel of object k (inf beyond ``reach``)."""
    h, w = objects.shape
    k = int(objects.max())
    out = torch.full((k, h, w), math.inf, dtype=torch.float64)
    r = math.ceil(reach)
    for obj in range(1, k + 1):
        ys, xs = torch.nonzero(objects == obj, as_tuple=True)
        y0, y1 = max(int(ys.min()) - r, 0), min(int(ys.max()) + r + 1, h)
        x0, x1 = max(int(xs.min()) - r, 0), min(int(xs.max()) + r + 1, w)
        gy, gx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
        grid = torch.stack([gy.reshape(-1), gx.reshape(-1)], 1).to(torch.float64)
        pts = torch.stack([ys, xs], 1).to(torch.float64)
        d = torch.cat([torch.cdist(chunk, pts).min(1).values for chunk in grid.split(4096)])
        d = d.reshape(y1 - y0, x1 - x0)
        out[obj - 1, y0:y1, x0:x1] = torch.where(d <= reach, d, torch.full_like(d, math.inf))
    return out


def unet_weight_map(mask: torch.Tensor, *, w0: float = 10.0, sigma: float = 5.0,
                    class_weights: str | Sequence[float] | None = "balanced", background: int = 0,
                    ignore_index: int | None = IGNORE_INDEX, instances: torch.Tensor | None = None) -> torch.Tensor:
    """U-Net's weight map (Eq. 2) of an integer ``(H, W)`` label mask, float32 ``(H, W)``; see the module docstring.

    Args:
        mask: class per pixel; ``background`` is the background class, ``ignore_index`` pixels get weight 0.
        w0, sigma: Eq. 2's constants (the paper: 10 and about 5 pixels).
        class_weights: ``"balanced"`` (w_c = N / (K n_c)), None (w_c = 1) or one weight per class.
        instances: optional ``(H, W)`` object ids (0: no object); default: connected components of each class.
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.is_floating_point():
        raise ValueError(f"mask must be an integer (H, W) tensor, got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    if sigma <= 0 or w0 < 0:
        raise ValueError(f"need sigma > 0 and w0 >= 0, got sigma={sigma}, w0={w0}")
    mask = mask.long().cpu()
    labelled = mask != ignore_index if ignore_index is not None else torch.ones_like(mask, dtype=torch.bool)
    classes = mask[labelled].unique()
    if class_weights is None:
        wc = labelled.to(torch.float64)
    elif isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced', None or one weight per class, got {class_weights!r}")
        wc = torch.zeros(mask.shape, dtype=torch.float64)
        n = int(labelled.sum())
        for c in classes.tolist():
            sel = labelled & (mask == c)
            wc[sel] = n / (len(classes) * int(sel.sum()))
    else:
        table = torch.tensor([float(v) for v in class_weights], dtype=torch.float64)
        if len(classes) and int(classes.max()) >= len(table):
            raise ValueError(f"class_weights has {len(table)} entries but the mask has class {int(classes.max())}")
        wc = torch.where(labelled, table[mask.clamp(0, len(table) - 1)], torch.zeros((), dtype=torch.float64))
    if instances is None:
        objects = torch.zeros_like(mask)
        for c in classes.tolist():
            if c == background:
                continue
            comp = connected_components(labelled & (mask == c))
            objects = torch.where(comp > 0, comp + objects.max(), objects)
    else:
        if instances.shape != mask.shape:
            raise ValueError(f"instances shape {tuple(instances.shape)} differs from the mask's {tuple(mask.shape)}")
        ids = instances.long().cpu()
        objects = torch.zeros_like(mask)
        for j, v in enumerate(v for v in ids.unique().tolist() if v != 0):
            objects[ids == v] = j + 1
    border = torch.zeros(mask.shape, dtype=torch.float64)
    if int(objects.max()) >= 2 and w0 > 0:
        d = _object_distances(objects, 6.0 * sigma)
        d1, d2 = torch.topk(d, 2, dim=0, largest=False).values
        term = w0 * torch.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))  # inf distances give 0
        border = torch.where(labelled & (mask == background) & (objects == 0), term, border)
    return (wc + border).to(torch.float32)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor, *,
                           ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """Eq. 1: the pixel-wise soft-max cross-entropy weighted by ``weight_map``, averaged over the labelled pixels.

    Args:
        logits: ``(N, C, H, W)``; target: ``(N, H, W)`` class indices; weight_map: ``(N, H, W)`` (`unet_weight_map`
            of each mask, cropped like the target for the valid-convolution network).
    """
    if weight_map.shape != target.shape:
        raise ValueError(f"weight_map shape {tuple(weight_map.shape)} differs from the target's {tuple(target.shape)}")
    ignore = -100 if ignore_index is None else ignore_index
    loss = F.cross_entropy(logits, target.long(), reduction="none", ignore_index=ignore)
    keep = target != ignore
    return (loss * weight_map * keep).sum() / keep.sum().clamp(min=1)
