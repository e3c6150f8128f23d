"""Pictures of what a network holds: first-layer filters, feature maps, heat-map overlays, and PNG files.

- `filter_grid`: the first convolution's kernels tiled in a grid, each min-max scaled to 0-255, as Krizhevsky et al.
  2012 (AlexNet) Fig. 3 shows the 96 11x11x3 kernels of conv1 (and Zeiler & Fergus 2014 Fig. 5/6 compare them
  with ZFNet's). Deviations: the paper's figure puts the two GPUs' 48 kernels in two rows; here the grid is as
  close to square as the count allows (``ncols`` sets it). A 3-channel kernel is drawn in RGB, scaled by one
  min and max over its three channels so its colours keep their balance; a 1-channel kernel is grey; any other
  count (a stem on 4-channel input, a grouped conv) is drawn as the mean over its input channels, in grey. A
  constant kernel (max == min) is drawn mid grey (128). "First" is the first ``nn.Conv2d`` in
  ``named_modules()`` order, which is the first one applied in every zoo network.
- `feature_maps` / `feature_grid`: each ``feature_info`` stage's maps for one image (Zeiler & Fergus Sec. 2 show the
  layers' activations; the notes draw them as a grid), each map min-max scaled on its own (``per_map=False``: one
  scale for all); a constant map is black. A network without ``feature_info`` gives each ``nn.Conv2d``'s output.
- `overlay`: a heat map in [0, 1] coloured by a matplotlib colormap (no pyplot: the colormap's lookup table,
  ``matplotlib.colormaps[cmap]``, 256 levels) and alpha-blended onto the image: ``(1 - alpha) * image +
  alpha * colour``, rounded to uint8, as Grad-CAM's figures (Selvaraju et al. 2017, Fig. 1) show it.
- `to_uint8_image`: a preprocessed tensor back to pixels (``x * std + mean``, clipped to [0, 1], times 255,
  rounded); `save_png`: an atomic PNG write (`cnnzoo.fileio.atomic_write`; PIL encodes).

Plain numpy + PIL + matplotlib colormaps; no figure is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import atomic_write

__all__ = ["feature_grid", "feature_maps", "filter_grid", "overlay", "save_png", "tile", "to_uint8_image"]


def _scale01(a: np.ndarray, constant: float) -> np.ndarray:
    """``a`` min-max scaled to [0, 1] (as a whole); a constant array becomes ``constant``."""
    lo, hi = float(a.min()), float(a.max())
    if not hi > lo:
        return np.full(a.shape, constant, dtype=np.float64)
    return (a.astype(np.float64) - lo) / (hi - lo)


def _to_u8(a01: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a01 * 255.0), 0, 255).astype(np.uint8)


def tile(tiles: Sequence[np.ndarray], ncols: int | None = None, padding: int = 1, pad_value: int = 255) -> np.ndarray:
    """Equal-sized uint8 tiles (h, w) or (h, w, 3) in a grid, row by row, ``padding`` pixels of ``pad_value``
    between and around them; ``ncols`` defaults to ``ceil(sqrt(n))``."""
    if not tiles:
        raise ValueError("nothing to tile")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    n = len(tiles)
    ncols = math.ceil(math.sqrt(n)) if ncols is None else ncols
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    h, w = tiles[0].shape[:2]
    grid = np.full((padding + nrows * (h + padding), padding + ncols * (w + padding), *tiles[0].shape[2:]),
                   pad_value, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = t
    return grid


def filter_grid(model: nn.Module, padding: int = 1, *, ncols: int | None = None, scale: int = 1,
                pad_value: int = 255) -> np.ndarray:
    """AlexNet Fig. 3: the first ``nn.Conv2d``'s kernels, each min-max scaled to 0-255, tiled (module notes).

    Args:
        model: any ``nn.Module`` with an ``nn.Conv2d``.
        padding: pixels between (and around) the kernels; pad_value: their grey level.
        ncols: kernels per row (default: as square as possible).
        scale: each kernel pixel drawn as ``scale x scale`` pixels (nearest), for small kernels.

    Returns:
        uint8 (H, W, 3).
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d: no filters to draw")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    weight = conv.weight.detach().float().cpu().numpy()  # (out, in / groups, kh, kw)
    tiles = []
    for k in weight:
        if k.shape[0] == 3:
            rgb = _to_u8(_scale01(k, 0.5)).transpose(1, 2, 0)  # one scale over the three channels
        else:
            grey = _to_u8(_scale01(k.mean(0) if k.shape[0] != 1 else k[0], 0.5))
            rgb = np.repeat(grey[..., None], 3, axis=2)
        tiles.append(rgb.repeat(scale, 0).repeat(scale, 1))
    return tile(tiles, ncols, padding, pad_value)


def _one_image(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (3, 4) or (
            x.ndim == 4 and x.shape[0] != 1):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be one preprocessed float image (C, H, W) or (1, C, H, W), got {got}")
    return x if x.ndim == 4 else x[None]


def feature_maps(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The feature maps of one image at each ``feature_info`` stage, as (module name, (C, h, w)), shallow first.

    Uses ``model.forward_intermediates`` where the network has it (a zoo network; ViT's tokens come back as maps),
    else forward hooks on the ``feature_info`` modules, else on every ``nn.Conv2d``. Runs in eval mode without
    gradients; each module's mode is restored.
    """
    x = _one_image(x)
    info = [i for i in getattr(model, "feature_info", None) or [] if isinstance(i, dict)]
    names = [i["module"] for i in info]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            if hasattr(model, "forward_intermediates") and (info or getattr(model, "no_feature_maps", None)):
                maps = model.forward_intermediates(x, intermediates_only=True)
                return [(n, m[0]) for n, m in zip(names, maps)]
            if not names:
                names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
                if not names:
                    raise ValueError(f"{type(model).__name__} has no feature_info and no nn.Conv2d: no feature maps")
            captured: dict[str, torch.Tensor] = {}

            def hook_for(name):
                def hook(module, args, out):
                    captured.setdefault(name, out)
                return hook

            handles = [model.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
            try:
                model(x)
            finally:
                for h in handles:
                    h.remove()
    finally:
        for m, mode in modes:
            m.training = mode
    out = []
    for n in names:
        t = captured.get(n)
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            got = "nothing (it did not run)" if t is None else (
                tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__)
            raise ValueError(f"module {n!r} gives {got}, not a (1, C, h, w) feature map")
        out.append((n, t[0]))
    return out


def feature_grid(maps: torch.Tensor, max_maps: int = 64, *, per_map: bool = True, ncols: int | None = None,
                 padding: int = 1, pad_value: int = 255) -> np.ndarray:
    """The first ``max_maps`` channels of ``maps`` (C, h, w) as grey tiles, uint8 (H, W) (module notes)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be one image's feature maps (C, h, w), got {got}")
    if isinstance(max_maps, bool) or not isinstance(max_maps, int) or max_maps < 1:
        raise ValueError(f"max_maps must be a positive integer, got {max_maps!r}")
    a = maps[:max_maps].detach().float().cpu().numpy()
    if per_map:
        tiles = [_to_u8(_scale01(m, 0.0)) for m in a]
    else:
        tiles = list(_to_u8(_scale01(a, 0.0)))
    return tile(tiles, ncols, padding, pad_value)


def overlay(image: np.ndarray, heat, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """``heat`` (H, W) in [0, 1], coloured by matplotlib's ``cmap``, blended onto ``image`` uint8 (H, W, 3) or (H, W):
    ``round((1 - alpha) * image + alpha * cmap(heat))``, uint8 (H, W, 3).

    A heat map of another size is resized to the image's (bilinear); values outside [0, 1] are clipped.
    """
    import matplotlib

    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"image must be uint8 (H, W, 3) or (H, W), got {image.dtype} {image.shape}")
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; e.g. jet, viridis, inferno, magma, turbo") from None
    heat = torch.as_tensor(heat).detach().float().cpu()
    if heat.ndim != 2:
        raise ValueError(f"heat must be one map (H, W), got {tuple(heat.shape)}")
    if tuple(heat.shape) != image.shape[:2]:
        heat = F.interpolate(heat[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    h = np.nan_to_num(heat.numpy().astype(np.float64), nan=0.0).clip(0.0, 1.0)
    colour = colormap(h)[..., :3] * 255.0
    return np.clip(np.round((1.0 - alpha) * image + alpha * colour), 0, 255).astype(np.uint8)


def _per_channel(v, c: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(c)
    if t.numel() != c:
        raise ValueError(f"{what} has {t.numel()} values for an image of {c} channels")
    return t.view(c, 1, 1)


def to_uint8_image(x: torch.Tensor, mean, std) -> np.ndarray:
    """A preprocessed image (C, H, W) (or (1, C, H, W)) back to uint8 (H, W, 3): ``x * std + mean`` per channel,
    clipped to [0, 1], times 255, rounded. A 1-channel image comes back grey in all three channels."""
    x = _one_image(x)[0].detach().float().cpu()
    c = x.shape[0]
    if c not in (1, 3):
        raise ValueError(f"to_uint8_image draws 1- or 3-channel images, got {c} channels")
    s = _per_channel(std, c, "std")
    if not bool((s != 0).all()):
        raise ValueError("std must be nonzero")
    img = (x * s + _per_channel(mean, c, "mean")).clamp(0.0, 1.0)
    out = torch.round(img * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(out, 3, axis=2) if c == 1 else out


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write uint8 (H, W), (H, W, 3) or (H, W, 4) to ``path`` as a PNG, atomically (never half-written)."""
    from PIL import Image

    a = np.asarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or 0 in a.shape:
        raise ValueError(f"save_png takes a non-empty uint8 (H, W), (H, W, 3) or (H, W, 4) array, got {a.dtype} "
                         f"{a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    path = Path(path)
    atomic_write(path, buf.getvalue())
    return path
