"""Turning a region of any shape into the CNN's fixed input (Girshick et al. 2014, Section 2.1 and Appendix A).

Appendix A compares three ways, each with or without context padding ``p``:

- **warp** (the paper's choice): scale the box anisotropically to S x S, whatever its aspect ratio.
- **tightest square with context** (``square``): take the tightest square around the box (same centre, side
  max(w, h)) and scale it isotropically to S x S; what lies around the box in that square is image context.
- **tightest square without context** (``square_no_context``): the same square, but everything outside the box is
  replaced by the image mean (zero after mean subtraction).

Context padding ``p`` is a border in the *warped* frame: the box is dilated so that, at the warped size, exactly
``p`` pixels of image surround the original box (p = 16 at S = 227 in the paper, worth 3-5 mAP). Where the dilated
box leaves the image, the missing pixels take the image mean, which the mean subtraction then turns to zero, as in
R-CNN's released code (rcnn_im_crop.m). Sampling is bilinear without anti-aliasing, as there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PAPER_PADDING", "PAPER_SIZE", "WARP_MODES", "sampling_boxes", "warp_regions"]

WARP_MODES = ("warp", "square", "square_no_context")
PAPER_PADDING, PAPER_SIZE = 16, 227  # Appendix A: p = 16 at AlexNet's 227 x 227 input
CHUNK = 256  # regions warped per grid_sample call (bounds the sampling grid's memory)


def _check(size: int, padding: int, mode: str) -> None:
    if mode not in WARP_MODES:
        raise ValueError(f"warp mode must be one of {', '.join(WARP_MODES)}, got {mode!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"warp size must be a positive integer, got {size!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= 2 * padding < size:
        raise ValueError(f"context padding must be an integer with 0 <= 2 * padding < size ({size}), got {padding!r}")


def sampling_boxes(boxes: torch.Tensor, size: int, padding: int = PAPER_PADDING, mode: str = "warp"):
    """The image regions that become the S x S inputs: ``(sample, keep)``, both ``(K, 4)``.

    ``sample`` is the region scaled to S x S: the box (``warp``) or its tightest square (``square*``), dilated by
    the factor ``S / (S - 2p)`` about its centre so that ``p`` warped pixels of context surround it. ``keep`` is
    the part whose pixels are kept: everything for ``warp``/``square``; for ``square_no_context`` the box dilated
    the same way (so p pixels of context remain), the rest becoming the mean.
    """
    _check(size, padding, mode)
    b = boxes.to(torch.float64)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
    scale = size / (size - 2 * padding)
    keep = torch.stack([cx - hw * scale, cy - hh * scale, cx + hw * scale, cy + hh * scale], 1)
    if mode != "warp":
        hw = hh = torch.maximum(hw, hh)
    sample = torch.stack([cx - hw * scale, cy - hh * scale, cx + hw * scale, cy + hh * scale], 1)
    return sample, keep if mode == "square_no_context" else sample


def warp_regions(image: torch.Tensor, boxes: torch.Tensor, size: int, padding: int = PAPER_PADDING,
                 mode: str = "warp") -> torch.Tensor:
    """The regions ``boxes`` (K, 4) of ``image`` (C, H, W), mean-subtracted (normalised) float, as ``(K, C, S, S)``
    network inputs (see the module docstring). Pixels outside the image, and for ``square_no_context`` outside the
    box, are 0 (the mean). ``image`` may also be ``(K, C, H, W)``: region k is cut from image k (one call for
    windows of many same-size images)."""
    sample, keep = sampling_boxes(boxes, size, padding, mode)
    per_region = image.ndim == 4
    if per_region and len(image) != len(boxes):
        raise ValueError(f"{len(image)} images for {len(boxes)} boxes: give one image, or one per box")
    c, h, w = image.shape[-3:]
    if len(boxes) == 0:
        return image.new_zeros(0, c, size, size)
    steps = (torch.arange(size, dtype=torch.float64) + 0.5) / size  # output pixel centres, 0..1
    outs = []
    for k0 in range(0, len(boxes), CHUNK):
        s, kp = sample[k0 : k0 + CHUNK], keep[k0 : k0 + CHUNK]
        u = s[:, 0:1] + steps[None] * (s[:, 2:3] - s[:, 0:1])  # (k, S) image x of each output column
        v = s[:, 1:2] + steps[None] * (s[:, 3:4] - s[:, 1:2])  # (k, S) image y of each output row
        k = len(s)
        # grid_sample with align_corners=False maps -1..1 onto the image's outer edges 0..W: x -> 2x / W - 1
        gx = (2 * u / w - 1)[:, None, :].expand(k, size, size)
        gy = (2 * v / h - 1)[:, :, None].expand(k, size, size)
        grid = torch.stack([gx, gy], -1).to(image.dtype)  # (k, S, S, 2)
        if per_region:
            out = F.grid_sample(image[k0 : k0 + k], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        else:  # all regions of one image: one grid of k*S rows, so the image is not copied k times
            out = F.grid_sample(image[None], grid.reshape(1, k * size, size, 2), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
            out = out.reshape(c, k, size, size).permute(1, 0, 2, 3)  # (1, C, k*S, S) -> (k, C, S, S)
        if mode == "square_no_context":
            inside_x = (u >= kp[:, 0:1]) & (u <= kp[:, 2:3])
            inside_y = (v >= kp[:, 1:2]) & (v <= kp[:, 3:4])
            out = out * (inside_y[:, :, None] & inside_x[:, None, :])[:, None].to(out.dtype)
        outs.append(out)
    return torch.cat(outs).contiguous()
