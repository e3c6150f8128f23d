"""Batch augmentation of uint8 image tensors on the training device, with no per-sample Python.

The random parameters (offsets, flips, crop boxes, colour noise) are drawn on the CPU from a `torch.Generator`
owned by the loader, for the whole epoch at once, and indexed by position in the epoch's order. A sample's
augmentation therefore depends only on (seed, epoch, position): not on the batch size, the number of ranks, the
device, or whether the process restarted. New kinds of draw come after the older ones, so adding an option never
changes what an existing policy draws.

The papers' operations (``data.augment`` of a tensor dataset, e.g. ``{scale_jitter: [32, 48], hflip: true}``):

- ``random_crop_padding``: pad and crop (He et al. 2016, Sec. 4.2); ``translate``: shift with zero fill.
- ``hflip``: horizontal flip with probability 1/2.
- ``random_resized_crop``: Inception's crop (Szegedy et al. 2015, Sec. 6): a region of 8%-100% of the area with
  aspect ratio in [3/4, 4/3], resized to the native size (``true``, or ``[min_area, max_area]``).
- ``scale_jitter``: VGG's multi-scale training (Simonyan & Zisserman 2015, Sec. 3.1): each image is rescaled so
  that its shorter side is S, an integer drawn uniformly from [S_min, S_max], then a crop of the native size is
  taken at a random position. S is in pixels of the native image (VGG: [256, 512] for 224 crops; for 32-pixel
  CIFAR the same ratio is [37, 73]).
- ``central_square``: with ``scale_jitter``, the random crop is taken inside the central S x S square of the
  rescaled image instead of anywhere in it: AlexNet's training patches (Krizhevsky et al. 2012, Sec. 2: "we first
  rescaled the image such that the shorter side was of length 256, and then cropped out the central 256x256 patch";
  Sec. 4.1: random 224x224 patches of those 256x256 images), the same square its 10-crop test reads. On square
  images the two are the same.
- ``pca_lighting``: AlexNet's colour noise (Krizhevsky et al. 2012, Sec. 4.1): to every pixel of an image add
  ``eigvec @ (alpha * eigval)``, the principal components of the training set's RGB covariance scaled by their
  eigenvalues and by alpha ~ N(0, sigma^2) per image and component (``true`` means the paper's sigma = 0.1; a number
  sets sigma). The eigen-decomposition is computed once per dataset and cached (`cnnzoo.data.pca`). RGB only.
- ``rotate``, ``zoom``: random affine distortions about the image centre, the kind LeCun et al. 1998 (Sec. III)
  and Simard et al. 2003 train digit recognisers on: a rotation by an angle uniform in [-rotate, rotate] degrees
  (positive turns the content counter-clockwise, as torchvision's RandomAffine) and a magnification uniform in
  ``zoom: [min, max]`` (below 1 shrinks), bilinear with zero fill. The mnist5k recipe uses them.

Resampling (the two crops) is bilinear at the sampled positions (``grid_sample``); the crops only ever enlarge, so
no anti-aliasing is needed. After a resampling or the colour noise the batch is float on the 0-255 scale (no
clipping: the paper adds the noise linearly), otherwise it stays uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENT_KEYS = ("random_crop_padding", "translate", "hflip", "random_resized_crop", "scale_jitter", "central_square",
                "pca_lighting", "rotate", "zoom")
"""Keys accepted in a tensor dataset's ``augment`` dict."""

RRC_SCALE = (0.08, 1.0)  # Szegedy et al. 2015, Sec. 6: "patches ... whose size is distributed evenly between 8%
RRC_RATIO = (3 / 4, 4 / 3)  # and 100% of the image area with aspect ratio constrained to [3/4, 4/3]"
RRC_TRIES = 10  # attempts per image before falling back to a central crop (torchvision's count)
PCA_ALPHA_STD = 0.1  # Krizhevsky et al. 2012, Sec. 4.1: "a Gaussian with mean zero and standard deviation 0.1"


def parse_rrc(value, key: str = "augment['random_resized_crop']") -> tuple[float, float] | None:
    """``true`` -> Inception's (0.08, 1.0); ``[lo, hi]`` with 0 < lo <= hi <= 1; false/None -> None."""
    if value is None or value is False:
        return None
    if value is True:
        return RRC_SCALE
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)
            and 0 < value[0] <= value[1] <= 1):
        raise ValueError(f"{key} must be true/false or [min_area, max_area] with 0 < min <= max <= 1 (fractions of "
                         f"the image area; Inception: [0.08, 1]), got {value!r}")
    return float(value[0]), float(value[1])


def parse_scale_jitter(value, key: str = "augment['scale_jitter']") -> tuple[int, int] | None:
    """``[S_min, S_max]``: integers with 1 <= S_min <= S_max (pixels of the shorter side); None -> None."""
    if value is None or value is False:
        return None
    if not (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and 1 <= value[0] <= value[1]):
        raise ValueError(f"{key} must be [S_min, S_max], integers with S_min <= S_max (the shorter side in pixels, "
                         f"VGG: [256, 512] for 224-pixel crops), got {value!r}")
    return int(value[0]), int(value[1])


def parse_central_square(value, jitter, key: str = "augment['central_square']") -> bool:
    """``true`` (only with ``scale_jitter``: AlexNet's crops from the central S x S square) or false/None."""
    if value is None or value is False:
        return False
    if value is not True:
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if not jitter:
        raise ValueError(f"{key} restricts scale_jitter's random crop to the central S x S square; give scale_jitter "
                         "too (AlexNet: {scale_jitter: [256, 256], central_square: true})")
    return True


def parse_pca_lighting(value, key: str = "augment['pca_lighting']") -> float:
    """``true`` -> the paper's 0.1; a number >= 0 -> that standard deviation of alpha; false/None/0 -> 0 (off)."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return PCA_ALPHA_STD
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be true (AlexNet's alpha ~ N(0, 0.1)), false, or the standard deviation of "
                         f"alpha (a number >= 0), got {value!r}")
    return float(value)


def parse_rotate(value, key: str = "augment['rotate']") -> float:
    """The largest rotation in degrees, a number in [0, 180]; false/None -> 0 (off)."""
    if value is None or value is False:
        return 0.0
    if not _is_number(value) or not math.isfinite(value) or not 0 <= value <= 180:
        raise ValueError(f"{key} must be the largest rotation in degrees, a number in [0, 180] (digits: 10), "
                         f"got {value!r}")
    return float(value)


def parse_zoom(value, key: str = "augment['zoom']") -> tuple[float, float] | None:
    """``[min, max]`` magnification factors with 0 < min <= max; false/None -> None (off)."""
    if value is None or value is False:
        return None
    if not (isinstance(value, list | tuple) and len(value) == 2
            and all(_is_number(v) and math.isfinite(v) for v in value) and 0 < value[0] <= value[1]):
        raise ValueError(f"{key} must be [min, max] magnification factors with 0 < min <= max (digits: [0.9, 1.1]), "
                         f"got {value!r}")
    return float(value[0]), float(value[1])


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class AugmentPolicy:
    """Batch augmentation for tensor datasets (see the module docstring for each operation and its paper).

    Attributes:
        random_crop_padding: zero-pad by this many pixels, then crop the native size at a random position
            (the CIFAR recipe of He et al. 2016, Sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop
            is randomly sampled").
        translate: shift by a random integer in [-translate, translate] pixels along each axis, zero fill.
        hflip: flip horizontally with probability 1/2.
        random_resized_crop: (min, max) area fraction of Inception's crop, or None.
        scale_jitter: (S_min, S_max) of VGG's scale jitter, or None.
        central_square: take scale_jitter's crop inside the central S x S square (AlexNet, Sec. 2).
        pca_lighting: standard deviation of AlexNet's alpha (0: off).
        rotate: the largest rotation in degrees (0: off).
        zoom: (min, max) magnification, or None.
    """

    random_crop_padding: int = 0
    translate: int = 0
    hflip: bool = False
    random_resized_crop: tuple[float, float] | None = None
    scale_jitter: tuple[int, int] | None = None
    central_square: bool = False
    pca_lighting: float = 0.0
    rotate: float = 0.0
    zoom: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, augment: dict | None) -> AugmentPolicy:
        """Build from a user dict, rejecting unknown keys and bad values."""
        if augment is None:
            return cls()
        if not isinstance(augment, dict):
            raise ValueError(f"augment must be a dict with keys from {AUGMENT_KEYS} or None, got {augment!r}")
        unknown = sorted(set(augment) - set(AUGMENT_KEYS))
        if unknown:
            raise ValueError(f"unknown augment option(s) {unknown} for a tensor dataset; valid: {list(AUGMENT_KEYS)}")
        values = {}
        for key in ("random_crop_padding", "translate"):
            v = augment.get(key, 0) or 0
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"augment[{key!r}] must be a non-negative integer (pixels), got {v!r}")
            values[key] = v
        flip = augment.get("hflip", False)
        if not isinstance(flip, bool):
            raise ValueError(f"augment['hflip'] must be true or false, got {flip!r}")
        rrc = parse_rrc(augment.get("random_resized_crop"))
        jitter = parse_scale_jitter(augment.get("scale_jitter"))
        if rrc and jitter:
            raise ValueError("augment: random_resized_crop and scale_jitter are two ways of choosing the training "
                             "crop; use one of them")
        return cls(hflip=flip, random_resized_crop=rrc, scale_jitter=jitter,
                   central_square=parse_central_square(augment.get("central_square"), jitter),
                   pca_lighting=parse_pca_lighting(augment.get("pca_lighting")),
                   rotate=parse_rotate(augment.get("rotate")), zoom=parse_zoom(augment.get("zoom")), **values)

    @property
    def active(self) -> bool:
        """Whether the policy changes anything."""
        return bool(self.random_crop_padding or self.translate or self.hflip or self.random_resized_crop
                    or self.scale_jitter or self.pca_lighting or self.rotate or self.zoom)

    def check_images(self, in_channels: int, size: tuple[int, int], dataset: str = "the dataset") -> None:
        """Refuse options the images cannot take (one clear line naming the dataset and what would work)."""
        if self.pca_lighting and in_channels != 3:
            raise ValueError(f"augment pca_lighting is AlexNet's RGB colour noise and needs 3-channel images; "
                             f"{dataset} has {in_channels} channel(s): drop pca_lighting")
        if self.scale_jitter and self.scale_jitter[0] < min(size):
            raise ValueError(f"augment scale_jitter {list(self.scale_jitter)}: S_min must be at least the native "
                             f"shorter side ({min(size)} for {dataset}'s {size[0]}x{size[1]} images), since a "
                             f"{size[0]}x{size[1]} crop is taken from the rescaled image")
        if self.central_square and size[0] != size[1]:
            raise ValueError(f"augment central_square takes the {size[0]}x{size[1]} crop inside the central S x S "
                             f"square, which cannot hold it: {dataset}'s images are not square; drop central_square")


def draw_params(policy: AugmentPolicy, n: int, generator: torch.Generator,
                size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Random parameters for ``n`` samples, each indexed by the sample's position (first dimension).

    Integer offsets (n, 2) per shift op, a flip mask (n,), a crop box (n, 4) = (top, left, height, width) in
    source pixels for the two crops ("box" for Inception's, "scale_box" for VGG's; ``size`` = the native (H, W) is
    then needed), and alpha (n, 3) for the colour noise.
    """
    params: dict[str, torch.Tensor] = {}
    if policy.random_crop_padding:
        p = policy.random_crop_padding
        params["crop"] = torch.randint(-p, p + 1, (n, 2), generator=generator)
    if policy.translate:
        t = policy.translate
        params["translate"] = torch.randint(-t, t + 1, (n, 2), generator=generator)
    if policy.hflip:
        params["hflip"] = torch.rand(n, generator=generator) < 0.5
    if policy.random_resized_crop or policy.scale_jitter:
        if size is None:
            raise ValueError("draw_params needs the native image size for random_resized_crop/scale_jitter")
        if policy.random_resized_crop:
            params["box"] = rrc_boxes(n, size, policy.random_resized_crop, generator)
        else:
            params["scale_box"] = jitter_boxes(n, size, policy.scale_jitter, generator, policy.central_square)
    if policy.pca_lighting:
        params["lighting"] = torch.randn(n, 3, generator=generator, dtype=torch.float64) * policy.pca_lighting
    if policy.rotate or policy.zoom:
        angle = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * policy.rotate
        zoom = torch.empty(n, dtype=torch.float64).uniform_(*(policy.zoom or (1.0, 1.0)), generator=generator)
        params["affine"] = torch.stack([angle, zoom], 1)  # (n, 2): degrees, magnification
    return params


def rrc_boxes(n: int, size: tuple[int, int], scale: tuple[float, float], generator: torch.Generator,
              ratio: tuple[float, float] = RRC_RATIO) -> torch.Tensor:
    """Inception crop boxes (top, left, h, w), integers as float64 (n, 4): the first of RRC_TRIES draws that fits.

    Each try draws the area fraction uniformly in ``scale`` and the log aspect ratio uniformly in log(``ratio``);
    when none of the tries fits, the largest central box within the ratio bounds (torchvision's fallback).
    """
    h, w = size
    area = torch.empty(n, RRC_TRIES, dtype=torch.float64).uniform_(*scale, generator=generator) * (h * w)
    log_r = torch.empty(n, RRC_TRIES, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                    generator=generator)
    aspect = log_r.exp()
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    pick = first.clamp(min=0)[:, None]
    bh, bw = ch.gather(1, pick)[:, 0], cw.gather(1, pick)[:, 0]
    # fallback: whole image, narrowed to the nearest allowed aspect ratio, centred
    img_r = w / h
    fb_w = round(h * ratio[1]) if img_r > ratio[1] else w
    fb_h = round(w / ratio[0]) if img_r < ratio[0] else h
    ok = first >= 0
    bh = torch.where(ok, bh, torch.full_like(bh, fb_h))
    bw = torch.where(ok, bw, torch.full_like(bw, fb_w))
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.where(ok, (u[:, 0] * (h - bh + 1)).floor(), ((h - bh) / 2).floor())
    left = torch.where(ok, (u[:, 1] * (w - bw + 1)).floor(), ((w - bw) / 2).floor())
    return torch.stack([top, left, bh, bw], 1)


def jitter_boxes(n: int, size: tuple[int, int], smin_smax: tuple[int, int], generator: torch.Generator,
                 central_square: bool = False) -> torch.Tensor:
    """VGG's scale jitter as crop boxes of the native image (top, left, h, w) in source pixels, float64 (n, 4).

    S is uniform over the integers [S_min, S_max]; the image rescaled to shorter side S measures
    (round(H S / min), round(W S / min)); the crop of the native size sits at integer offsets of the rescaled image,
    uniform over all positions, or (``central_square``, AlexNet Sec. 2) over the positions inside the central S x S
    square, which starts at ((Hs - S) // 2, (Ws - S) // 2). In source pixels that is a box of (H, W) x (H / Hs,
    W / Ws) at (top H / Hs, ...). The draws are the same with and without ``central_square``.
    """
    h, w = size
    s = torch.randint(smin_smax[0], smin_smax[1] + 1, (n,), generator=generator, dtype=torch.int64).double()
    hs, ws = (h * s / min(h, w)).round(), (w * s / min(h, w)).round()
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    if central_square:  # the region the crop may come from: the central s x s square of the (hs, ws) image
        top0, left0 = ((hs - s) / 2).floor(), ((ws - s) / 2).floor()
        rh, rw = torch.minimum(hs, s), torch.minimum(ws, s)
    else:
        top0, left0, rh, rw = torch.zeros_like(hs), torch.zeros_like(ws), hs, ws
    top, left = top0 + (u[:, 0] * (rh - h + 1)).floor(), left0 + (u[:, 1] * (rw - w + 1)).floor()
    fy, fx = h / hs, w / ws  # source pixels per rescaled pixel (F.interpolate's scale for size=(hs, ws))
    return torch.stack([top * fy, left * fx, h * fy, w * fx], 1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, within: str = "box") -> torch.Tensor:
    """Resample each image's box (top, left, h, w in source pixels) to the image's own size, bilinearly.

    Output pixel centre (i + 0.5) maps to source position top + (i + 0.5) h / H, the convention of
    ``F.interpolate(..., align_corners=False)``, and positions are clamped to the centres of the outermost pixels of
    the box (``within="box"``: crop, then resize, as Inception's crop is defined) or of the image (``"image"``:
    resize the whole image, then crop, as VGG's scale jitter is). Returns float32 on the images' scale.
    """
    b, _, h, w = images.shape
    if b == 0:
        return images.float()
    boxes = boxes.to(images.device, torch.float64)
    top, left, bh, bw = (v[:, None] for v in boxes.unbind(1))
    iy = torch.arange(h, dtype=torch.float64, device=images.device)[None] + 0.5
    ix = torch.arange(w, dtype=torch.float64, device=images.device)[None] + 0.5
    y = top + iy * bh / h - 0.5  # (B, H) source positions in pixel-centre coordinates
    x = left + ix * bw / w - 0.5
    if within == "box":
        y = torch.minimum(torch.maximum(y, top), top + bh - 1)
        x = torch.minimum(torch.maximum(x, left), left + bw - 1)
    y, x = y.clamp(0, h - 1), x.clamp(0, w - 1)
    gy = 2 * y / max(h - 1, 1) - 1  # align_corners=True: -1 and 1 are the centres of the outermost pixels
    gx = 2 * x / max(w - 1, 1) - 1
    grid = torch.stack([gx[:, None, :].expand(b, h, w), gy[:, :, None].expand(b, h, w)], -1)
    return F.grid_sample(images.float(), grid.float(), mode="bilinear", padding_mode="border", align_corners=True)


def rotate_zoom(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``params[:, 0]`` degrees (counter-clockwise) and magnify it by ``params[:, 1]`` about its
    centre, bilinearly with zero fill. Returns float32 on the images' scale.

    Output pixel p (x right, y down, from the centre) samples the source at R p / zoom, R = [[cos, -sin], [sin, cos]]
    of the angle; ``affine_grid`` takes that map in coordinates normalised to [-1, 1] per axis, hence the h/w factors.
    """
    b, c, h, w = images.shape
    if b == 0:
        return images.float()
    p = params.to(images.device, torch.float64)
    angle, zoom = torch.deg2rad(p[:, 0]), p[:, 1]
    cos, sin, zero = torch.cos(angle) / zoom, torch.sin(angle) / zoom, torch.zeros_like(zoom)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.float(), [b, c, h, w], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def shift(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Shift each image by integer (dy, dx) with zero fill: out[y, x] = in[y - dy, x - dx].

    A random crop of the native size from an image zero-padded by p is exactly a shift by (dy, dx) in
    [-p, p]^2, so both ops share this gather. Works on any dtype and device.

    Args:
        images: (B, C, H, W).
        offsets: (B, 2) integer (dy, dx) with |d| <= the padding used.
    """
    b, c, h, w = images.shape
    if b == 0:
        return images
    pad = int(offsets.abs().max())
    if pad == 0:
        return images
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    offsets = offsets.to(images.device)
    rows = (pad - offsets[:, 0:1]) + torch.arange(h, device=images.device)  # (B, H)
    cols = (pad - offsets[:, 1:2]) + torch.arange(w, device=images.device)  # (B, W)
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def apply_augment(images: torch.Tensor, params: dict[str, torch.Tensor], lighting=None) -> torch.Tensor:
    """Apply drawn parameters (already sliced to this batch) to uint8 images (B, C, H, W) on their device.

    Order: the crop box (Inception / VGG), rotation and zoom, pad-and-crop, translation, flip, then the colour noise,
    which needs ``lighting`` (a `cnnzoo.data.pca.PCAStats` of the training set) when ``params`` holds alphas.
    """
    if "box" in params:  # Inception: crop, then resize
        images = crop_resize(images, params["box"], within="box")
    if "scale_box" in params:  # VGG: resize, then crop
        images = crop_resize(images, params["scale_box"], within="image")
    if "affine" in params:
        images = rotate_zoom(images, params["affine"])
    if "crop" in params:
        images = shift(images, params["crop"])
    if "translate" in params:
        images = shift(images, params["translate"])
    if "hflip" in params:
        mask = params["hflip"].to(images.device)[:, None, None, None]
        images = torch.where(mask, images.flip(-1), images)
    if "lighting" in params:
        if lighting is None:
            raise ValueError("pca_lighting needs the training set's PCA (cnnzoo.data.pca.dataset_pca)")
        images = lighting.apply(images, params["lighting"])
    return images
