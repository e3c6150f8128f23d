"""Batch augmentation of uint8 image tensors on the training device, with no per-sample Python.

The random parameters (offsets, flips) are drawn on the CPU from a `torch.Generator` owned by the loader,
for the whole epoch at once, and indexed by position in the epoch's order. A sample's augmentation
therefore depends only on (seed, epoch, position): not on the batch size, the number of ranks, the device,
or whether the process restarted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AUGMENT_KEYS = ("random_crop_padding", "translate", "hflip")
"""Keys accepted in a tensor dataset's ``augment`` dict."""


@dataclass(frozen=True)
class AugmentPolicy:
    """Batch augmentation for tensor datasets.

    Attributes:
        random_crop_padding: zero-pad by this many pixels, then crop the native size at a random position
            (the CIFAR recipe of He et al. 2016, Sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop
            is randomly sampled").
        translate: shift by a random integer in [-translate, translate] pixels along each axis, zero fill.
        hflip: flip horizontally with probability 1/2.
    """

    random_crop_padding: int = 0
    translate: int = 0
    hflip: bool = False

    @classmethod
    def from_dict(cls, augment: dict | None) -> AugmentPolicy:
        """Build from a user dict, rejecting unknown keys and bad values."""
        if augment is None:
            return cls()
        if not isinstance(augment, dict):
            raise ValueError(f"augment must be a dict with keys from {AUGMENT_KEYS} or None, got {augment!r}")  # noqa: TRY004 (user input)
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
            raise ValueError(f"augment['hflip'] must be true or false, got {flip!r}")  # noqa: TRY004 (user input)
        return cls(hflip=flip, **values)

    @property
    def active(self) -> bool:
        """Whether the policy changes anything."""
        return bool(self.random_crop_padding or self.translate or self.hflip)


def draw_params(policy: AugmentPolicy, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random parameters for ``n`` samples: integer offsets (n, 2) per shift op and a flip mask (n,)."""
    params: dict[str, torch.Tensor] = {}
    if policy.random_crop_padding:
        p = policy.random_crop_padding
        params["crop"] = torch.randint(-p, p + 1, (n, 2), generator=generator)
    if policy.translate:
        t = policy.translate
        params["translate"] = torch.randint(-t, t + 1, (n, 2), generator=generator)
    if policy.hflip:
        params["hflip"] = torch.rand(n, generator=generator) < 0.5
    return params


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


def apply_augment(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply drawn parameters (already sliced to this batch) to uint8 images (B, C, H, W) on their device."""
    if "crop" in params:
        images = shift(images, params["crop"])
    if "translate" in params:
        images = shift(images, params["translate"])
    if "hflip" in params:
        mask = params["hflip"].to(images.device)[:, None, None, None]
        images = torch.where(mask, images.flip(-1), images)
    return images
