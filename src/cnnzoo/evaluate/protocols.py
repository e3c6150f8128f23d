"""The papers' test-time protocols: centre crop, AlexNet's 10 crops, VGG's 50-crop grid, GoogLeNet's 144 crops,
VGG's dense and multi-scale evaluation, on a run's own test split.

Sizes. ``S`` is the side of the square images the network was trained on (the run's input size; else the dataset's
native size, or a folder's crop size). Every protocol starts from the image resized so that its shorter side is a
test scale ``Q`` (aspect ratio kept, bilinear with antialiasing; folders from the original file, built-in datasets
from their stored images). The scales follow how the run was trained (`training_sizes`, from the run's augmentation
record, checkpoint metadata ``train_augment``):

- VGG's scale jitter (``scale_jitter: [S_min, S_max]``; Simonyan & Zisserman 2015, Sec. 4.1-4.2, Tables 3-4): the
  single test scale is Q = (S_min + S_max) / 2 and the multi-scale set {S_min, (S_min + S_max) / 2, S_max}
  (VGG: 384 and {256, 384, 512} for [256, 512]); a fixed training scale S (``scale_jitter: [S, S]``, as AlexNet's
  recipe trains at 256) gives Q = S and {S - 32, S, S + 32}. For built-in data the jitter is in pixels of the stored
  image and is scaled with the whole image to S.
- Built-in data trained at its own size, with no resize step (the digits: 28-pixel images, shifted by up to 2 pixels;
  CIFAR: padded by 4 and cropped): the training scale is S itself and the crops come from the geometry the network
  was trained on, the image at scale Q framed by the zero border its translations or padding had (``pad`` = the
  larger of ``translate`` and ``random_crop_padding``; black, as the training shift fills). So Q = S (a 32-pixel
  canvas for a digit shifted by up to 2), and the multi-scale set is VGG's {S - 32, S, S + 32} at S = 256, scaled:
  round(S * 7/8), S, round(S * 9/8) (24, 28, 32 for the digits), each framed by the same border. The 10 crops of
  a digit are then the centre view and the four largest training shifts, not zoomed-in parts of an enlarged image.
- Everything else (a resize step: folders trained with Inception's crop, built-in images upsampled to a larger
  network; ImageNet conventions): Q = R = round(S / 0.875), 256 for S = 224 (AlexNet's 227 input keeps AlexNet's
  256), 32 at 28, 37 at 32; the multi-scale set round(R * 7/8), R, round(R * 9/8): VGG's {S - 32, S, S + 32} at its
  fixed training scale 256, for a network trained on crops from images of about that scale.

The protocols (``Q`` is the single test scale above unless a protocol is joined with ``multiscale``):

- ``center``: the run's own test pipeline, unchanged (built-in datasets: the whole image resized to S; folders:
  resize to round(S / 0.875), centre crop S). One view.
- ``10crop``: AlexNet, Sec. 4.1: the image at Q, its central Q x Q square ("the central 256x256 patch"), the four
  S x S corner patches and the centre patch, and their horizontal reflections; the softmax outputs of the 10 views
  are averaged.
- ``50crop``: VGG, Sec. 4.3 (Table 5's multi-crop): "50 crops per scale (5 x 5 regular grid with 2 flips)": S x S
  crops at 5 evenly spaced offsets along each side of the whole image at Q (first and last at its edges), and
  their reflections; with ``multiscale`` 150 crops over the three scales.
- ``144crop``: GoogLeNet, Sec. 7: 4 scales, Q * {256, 288, 320, 352} / 256 (256, 288, 320, 352 at Q = 256); the
  left, centre and right squares (top, centre, bottom for portrait images); from each, the 4 corner and the centre
  S x S crops and the square resized to S x S; and their reflections: 4 x 3 x 6 x 2 = 144 views, softmax averaged.
- ``dense``: VGG, Sec. 3.2: the network turned fully convolutional (`cnnzoo.evaluate.to_dense`) on the whole
  uncropped image at Q; the class score map averaged over positions; the softmax of the image and of its
  reflection averaged.
- ``multiscale``: VGG, Sec. 4.2: the same at each scale of the multi-scale set (or any list, ``scales=``), softmax
  outputs averaged. Alone it is dense evaluation at those scales (Table 4); ``10crop+multiscale`` and
  ``50crop+multiscale`` take the crops of each scale; ``dense+50crop+multiscale`` averages dense and multi-crop
  evaluation over the scales: Table 5's "multi-crop & dense".

Any protocols joined with ``+`` average their softmax outputs. ``flip=False`` drops the reflections (for data whose
classes are not mirror-symmetric, such as digits). A protocol that cannot apply is an error saying why: dense
evaluation of a network without a convertible classifier, a crop larger than a scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.bundle import DataBundle, FolderSplit, TensorSplit
from ..data.folder import EVAL_CROP_PCT
from ..models.base import eval_mode
from .dense import DenseNet, _name, feature_shape, to_dense
from .fastpath import InferencePath, inference_path

__all__ = ["PROTOCOLS", "Protocol", "ProtocolResult", "ProtocolSizes", "check_batch_size", "evaluate_protocols",
           "format_table", "googlenet_views", "grid_views", "parse_protocols", "protocol_probs", "ten_crop_views", "training_sizes"]

PROTOCOLS = ("center", "10crop", "50crop", "144crop", "dense", "multiscale")
CROP_PARTS = ("10crop", "50crop")  # the parts multiscale takes at each scale, with dense
GOOGLENET_SCALES = (256, 288, 320, 352)  # Szegedy et al. 2015, Sec. 7: shorter sides, for 224-pixel crops
GOOGLENET_BASE = 256  # ... whose base is the usual 256
MULTISCALE_STEP = 1 / 8  # Simonyan & Zisserman 2015, Sec. 4.2: Q = {S - 32, S, S + 32} at S = 256
VGG_GRID = 5  # Simonyan & Zisserman 2015, Sec. 4.3: "50 crops per scale (5 x 5 regular grid with 2 flips)"
ALEXNET_INPUT, ALEXNET_BASE = 227, 256  # Krizhevsky et al. 2012, Sec. 4.1: crops from "the central 256x256 patch"
VIEWS = {"center": 1, "10crop": 10, "50crop": 2 * VGG_GRID**2, "144crop": 144, "dense": 2}  # inputs per image


@dataclass(frozen=True)
class Protocol:
    """One protocol to report: ``parts`` (among center, 10crop, 50crop, 144crop, dense) whose softmax outputs are
    averaged, each at the multi-scale set of scales when ``multiscale``."""

    name: str
    parts: tuple[str, ...]
    multiscale: bool = False


def imagenet_base(crop: int) -> int:
    """R = S / 0.875 (256 for 224), the usual shorter side for crops of S; AlexNet's 227 keeps AlexNet's 256."""
    return ALEXNET_BASE if crop == ALEXNET_INPUT else round(crop / EVAL_CROP_PCT)


def vgg_fixed_scales(s: int) -> tuple[int, int, int]:
    """VGG's multi-scale set for a fixed training scale S: {S - 32, S, S + 32} at S = 256, scaled."""
    return round(s * (1 - MULTISCALE_STEP)), s, round(s * (1 + MULTISCALE_STEP))


@dataclass(frozen=True)
class ProtocolSizes:
    """The test geometry of networks trained on S x S crops (see the module docstring and `training_sizes`).

    ``crop`` is S; ``base`` the single test scale Q (default R = S / 0.875); ``multiscale`` the default scales of the
    multiscale protocols (default VGG's {S-32, S, S+32} around ``base``); ``pad`` the zero border, in pixels, around
    the image at every scale (the room the run's translations trained in; 0 for resized data); ``rule`` names where
    the scales come from: "imagenet", "native" (trained at its own size), "fixed" (a scale jitter with S_min = S_max,
    AlexNet's recipe) or "jitter" (VGG's scale jitter).
    """

    crop: int  # S
    base: int = 0
    multiscale: tuple[int, ...] = ()
    pad: int = 0
    rule: str = "imagenet"

    def __post_init__(self):
        if not self.base:
            object.__setattr__(self, "base", imagenet_base(self.crop))
        if not self.multiscale:
            object.__setattr__(self, "multiscale", vgg_fixed_scales(self.base))

    @property
    def googlenet(self) -> tuple[int, ...]:
        """GoogLeNet's 256, 288, 320, 352 for a base of 256, scaled to the base scale."""
        return tuple(round(self.base * q / GOOGLENET_BASE) for q in GOOGLENET_SCALES)

    def describe(self) -> str:
        """How the scales were chosen, for the command's header line."""
        border = f", framed by the {self.pad}-pixel border its translations had" if self.pad else ""
        why = {"imagenet": f"R = S / 0.875{' (AlexNet: 256)' if self.crop == ALEXNET_INPUT else ''}",
               "native": f"the run trained at its own size{border}",
               "fixed": "the run's fixed training scale",
               "jitter": f"the middle of the run's scale jitter [{self.multiscale[0]}, {self.multiscale[-1]}]"}
        return f"training size S={self.crop}, test scale Q={self.base} ({why.get(self.rule, self.rule)})"


def training_sizes(bundle: DataBundle, input_size: int | None = None, augment: dict | None = None) -> ProtocolSizes:
    """The test scales of a run from how it was trained (VGG Sec. 4.1-4.2; see the module docstring).

    Args:
        bundle: the run's data.
        input_size: S, the network's input side (default the bundle's image size).
        augment: the run's training augmentation as recorded (checkpoint metadata ``train_augment``); None: the
            dataset's default policy (what a run trains with when its config leaves ``data.augment`` unset).

    Raises:
        ValueError: an augmentation record that is not valid (with what is).
    """
    from ..data.augment import AugmentPolicy, parse_rrc, parse_scale_jitter
    from ..data.loader import default_policy

    s = input_size or bundle.image_size[0]
    if augment is None:
        augment = default_policy(bundle)
    if not isinstance(augment, dict):
        raise ValueError(f"the run's augmentation record must be a dict, got {augment!r}")
    native = min(bundle.image_size)
    tensor = bundle.kind != "folder"
    jitter = parse_scale_jitter(augment.get("scale_jitter"))
    if jitter:  # VGG Sec. 4.2: Q = (S_min + S_max) / 2; multi-scale {S_min, Q, S_max}
        factor = s / native if tensor else 1.0  # built-in data: the jittered crop is then resized to S
        lo, hi = round(jitter[0] * factor), round(jitter[1] * factor)
        mid = round((jitter[0] + jitter[1]) / 2 * factor)
        if lo == hi:  # S_min = S_max: a fixed training scale S (AlexNet's 256), tested at {S-32, S, S+32}
            return ProtocolSizes(s, lo, vgg_fixed_scales(lo), rule="fixed")
        return ProtocolSizes(s, mid, (lo, mid, hi), rule="jitter")
    if tensor and s == native and not parse_rrc(augment.get("random_resized_crop")):
        policy = AugmentPolicy.from_dict(augment)
        return ProtocolSizes(s, s, vgg_fixed_scales(s), max(policy.translate, policy.random_crop_padding), "native")
    return ProtocolSizes(s)


@dataclass
class ProtocolResult:
    """Accuracy of one protocol. ``nll`` is the mean negative log-likelihood of the averaged softmax outputs;
    ``views`` the number of network inputs per image (10 for 10crop, 144 for 144crop, ...)."""

    name: str
    top1: float
    top5: float
    nll: float
    count: int
    views: float

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "nll": self.nll, "count": self.count, "views": self.views}


def parse_protocols(spec: str | Sequence[str]) -> list[Protocol]:
    """``"center,10crop,dense+multiscale"`` (or a list of names) -> protocols; errors name the valid choices."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Protocol] = []
    for item in items:
        name = str(item).strip().lower()
        parts = [p.strip() for p in name.split("+")]
        unknown = [p for p in parts if p not in PROTOCOLS]
        if not name or unknown:
            raise ValueError(f"unknown protocol {item!r}; valid: {', '.join(PROTOCOLS)}, or several joined with '+' "
                             f"(e.g. dense+50crop+multiscale)")
        if len(set(parts)) != len(parts):
            raise ValueError(f"protocol {item!r} names a part twice")
        multiscale = "multiscale" in parts
        parts = [p for p in parts if p != "multiscale"] or ["dense"]
        if multiscale and not set(parts) <= {"dense", *CROP_PARTS}:
            raise ValueError(f"protocol {item!r}: multiscale combines with dense and 10crop or 50crop (VGG's Tables "
                             f"4-5), not with {', '.join(p for p in parts if p not in ('dense', *CROP_PARTS))} "
                             f"(144crop has its own 4 scales; center is one fixed crop)")
        if any(p.name == name for p in out):
            raise ValueError(f"protocol {item!r} is listed twice")
        out.append(Protocol(name, tuple(parts), multiscale))
    if not out:
        raise ValueError(f"no protocol given; valid: {', '.join(PROTOCOLS)}")
    return out


# ------------------------------------------------------------------------------------------------ images


class _Source:
    """A split's images in order, in batches, normalised and resized the ways the protocols need."""

    def __init__(self, bundle: DataBundle, split: str, device: torch.device, crop: int, num_workers: int,
                 pad: int = 0):
        self.bundle, self.data, self.device, self.crop, self.pad = bundle, bundle.split(split), device, crop, pad
        c = bundle.in_channels
        mean = torch.tensor(bundle.mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
        std = torch.tensor(bundle.std, dtype=torch.float32, device=device).view(1, c, 1, 1)
        self._scale, self._shift = 1.0 / (255.0 * std), -mean / std  # as the loaders normalise
        self.num_workers = num_workers

    def batches(self, batch_size: int, draft: int) -> Iterator[tuple[object, torch.Tensor]]:
        """(images, labels): uint8 tensors (B, C, H, W) for built-in datasets, decoded PIL images for folders
        (JPEGs decoded at no less than ``draft`` pixels a side)."""
        if isinstance(self.data, TensorSplit):
            for lo in range(0, len(self.data), batch_size):
                yield self.data.images[lo : lo + batch_size].to(self.device), self.data.labels[lo : lo + batch_size]
            return
        if not isinstance(self.data, FolderSplit):
            raise TypeError(f"unsupported split type {type(self.data).__name__}")
        from ..data.folder import _FolderDataset

        dataset = _FolderDataset(self.data.samples, _Decode(draft))  # unreadable files: the next readable sample
        n = len(dataset)
        sampler = [[(i, 0) for i in range(lo, min(lo + batch_size, n))] for lo in range(0, n, batch_size)]
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                             collate_fn=_as_lists)
        for images, labels in loader:
            yield images, torch.tensor(labels, dtype=torch.int64)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).float() * self._scale + self._shift

    def center(self, images) -> torch.Tensor:
        """The run's own test views, (B, C, S, S), exactly as `cnnzoo.data.make_loader` gives them."""
        s = self.crop
        if isinstance(images, torch.Tensor):
            x = self.normalise(images)
            if tuple(x.shape[-2:]) != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            return x
        import random

        from ..data.folder import FolderTransform

        transform = FolderTransform(s, train=False, augment={})
        return self.normalise(torch.stack([transform(img, random.Random(0)) for img in images]))

    def resized(self, images, q: int) -> list[torch.Tensor]:
        """The images with their shorter side resized to ``q``, normalised, framed by the ``pad``-pixel black border
        (pixel value 0, as the training shifts fill), in order, as runs of equal shape (B_i, C, h_i, w_i): one run
        for a batch of built-in images, one per image for folders."""
        if isinstance(images, torch.Tensor):
            x = self.normalise(images)
            size = _shorter_to(x.shape[-2], x.shape[-1], q)
            if size != tuple(x.shape[-2:]):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            return [self._framed(x)]
        import numpy as np

        from ..data.folder import resize_shorter

        return [self._framed(self.normalise(torch.from_numpy(np.array(resize_shorter(img, q), dtype=np.uint8))
                                            .permute(2, 0, 1)[None])) for img in images]

    def _framed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images with the border of black pixels (normalised 0 is -mean/std) around them."""
        if not self.pad:
            return x
        p, (n, c, h, w) = self.pad, x.shape
        out = self._shift.to(x.dtype).expand(n, c, h + 2 * p, w + 2 * p).clone()
        out[..., p : p + h, p : p + w] = x
        return out


class _Decode:
    """The folder dataset's per-item transform for the protocols: keep the decoded image as it is."""

    def __init__(self, draft: int):
        self.draft_size = (draft, draft)

    def __call__(self, img, rng):
        return img


def _as_lists(batch):
    return [img for img, _ in batch], [label for _, label in batch]


def _shorter_to(h: int, w: int, q: int) -> tuple[int, int]:
    """(h, w) scaled so that the shorter side is ``q`` (the folder transform's rounding)."""
    scale = q / min(h, w)
    return max(q, round(h * scale)), max(q, round(w * scale))


def _resize(x: torch.Tensor, s: int) -> torch.Tensor:
    """(..., C, h, w) -> (..., C, s, s), bilinear with antialiasing (as the loaders resize)."""
    flat = x.reshape(-1, *x.shape[-3:])
    out = F.interpolate(flat, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*x.shape[:-2], s, s)


def _five_crops(square: torch.Tensor, s: int) -> list[torch.Tensor]:
    """The four corner and the centre s x s crops of (..., C, q, q) squares: top-left, top-right, bottom-left,
    bottom-right, centre."""
    q = square.shape[-1]
    c = (q - s) // 2
    return [square[..., :s, :s], square[..., :s, q - s :], square[..., q - s :, :s], square[..., q - s :, q - s :],
            square[..., c : c + s, c : c + s]]


def _squares(img: torch.Tensor) -> list[torch.Tensor]:
    """Left, centre and right squares (top, centre, bottom for portrait images) of (..., C, h, w) images."""
    h, w = img.shape[-2:]
    q = min(h, w)
    if w >= h:
        return [img[..., :q], img[..., (w - q) // 2 : (w - q) // 2 + q], img[..., w - q :]]
    return [img[..., :q, :], img[..., (h - q) // 2 : (h - q) // 2 + q, :], img[..., h - q :, :]]


def ten_crop_views(img: torch.Tensor, s: int, flip: bool = True) -> torch.Tensor:
    """AlexNet's 10 views of an image resized to its base scale: (C, h, w) -> (10, C, s, s) (5 without
    reflections); a batch (B, C, h, w) gives (B, 10, C, s, s)."""
    h, w = img.shape[-2:]
    q = min(h, w)
    square = img[..., (h - q) // 2 : (h - q) // 2 + q, (w - q) // 2 : (w - q) // 2 + q]
    crops = _five_crops(square, s)
    return torch.stack(crops + ([c.flip(-1) for c in crops] if flip else []), dim=-4)


def grid_views(img: torch.Tensor, s: int, flip: bool = True, grid: int = VGG_GRID) -> torch.Tensor:
    """VGG's multi-crop views of an image at one scale: s x s crops on a ``grid`` x ``grid`` regular grid over the
    whole image (offsets round(i (h - s) / (grid - 1)) down and likewise across, first and last at the edges), row
    by row, and their reflections: (C, h, w) -> (50, C, s, s) for the 5 x 5 grid (25 without reflections); a batch
    (B, C, h, w) gives (B, 50, C, s, s)."""
    h, w = img.shape[-2:]
    ys = [round(i * (h - s) / (grid - 1)) for i in range(grid)]
    xs = [round(j * (w - s) / (grid - 1)) for j in range(grid)]
    crops = [img[..., y : y + s, x : x + s] for y in ys for x in xs]
    return torch.stack(crops + ([c.flip(-1) for c in crops] if flip else []), dim=-4)


def googlenet_views(img: torch.Tensor, s: int, flip: bool = True) -> torch.Tensor:
    """GoogLeNet's views of an image at one scale: 3 squares x (4 corners, centre, whole square resized) x 2
    reflections: (C, h, w) -> (36, C, s, s) (18 without reflections); a batch (B, C, h, w) gives (B, 36, C, s, s)."""
    views = []
    for square in _squares(img):
        views += _five_crops(square, s) + [_resize(square, s)]
    return torch.stack(views + ([v.flip(-1) for v in views] if flip else []), dim=-4)


# ----------------------------------------------------------------------------------------------- running


class _Runner:
    """Softmax outputs of the network on batches of views, counting the views it was given."""

    def __init__(self, model: nn.Module, dense: DenseNet | None, batch_size: int, path: InferencePath):
        self.model, self.dense, self.batch_size, self.inputs, self.path = model, dense, batch_size, 0, path

    def _softmax(self, net, v: torch.Tensor) -> torch.Tensor:
        with self.path.autocast():
            out = net(self.path.inputs(v))
        return out.float().softmax(1)

    def probs(self, views: torch.Tensor) -> torch.Tensor:
        """Softmax outputs of views (N, C, s, s) -> (N, K)."""
        self.inputs += views.shape[0]
        return torch.cat([self._softmax(self.model, v) for v in views.split(self.batch_size)])

    def view_probs(self, views: torch.Tensor) -> torch.Tensor:
        """(B, V, C, s, s) views of B images -> (B, K): the softmax outputs averaged over each image's views."""
        b, v = views.shape[:2]
        return self.probs(views.flatten(0, 1)).view(b, v, -1).mean(1)

    def dense_probs(self, runs: list[torch.Tensor], flip: bool) -> torch.Tensor:
        """Class score maps averaged over positions, then softmax; with the reflection's softmax averaged in."""
        out = []
        for x in runs:
            p = []
            for b in [x, x.flip(-1)] if flip else [x]:
                self.inputs += b.shape[0]
                p.append(torch.cat([self._softmax(self.dense.scores, v) for v in b.split(self.batch_size)]))
            out.append(torch.stack(p).mean(0))
        return torch.cat(out)


def _part_probs(part: str, images, source: _Source, runner: _Runner, sizes: ProtocolSizes, scales: tuple[int, ...],
                flip: bool) -> torch.Tensor:
    """(B, K) softmax outputs of one part of a protocol on one batch of images."""
    s = sizes.crop
    if part == "center":
        return runner.probs(source.center(images))
    if part == "144crop":  # the same number of views at each scale: the mean of the scales' means is the mean
        return torch.stack([torch.cat([runner.view_probs(googlenet_views(run, s, flip))
                                       for run in source.resized(images, q)]) for q in sizes.googlenet]).mean(0)
    per_scale = []
    for q in scales:
        runs = source.resized(images, q)
        if part == "10crop":
            per_scale.append(torch.cat([runner.view_probs(ten_crop_views(run, s, flip)) for run in runs]))
        elif part == "50crop":
            per_scale.append(torch.cat([runner.view_probs(grid_views(run, s, flip)) for run in runs]))
        else:
            per_scale.append(runner.dense_probs(runs, flip))
    return torch.stack(per_scale).mean(0)


def _check_scales(protocol: Protocol, scales: tuple[int, ...], sizes: ProtocolSizes) -> None:
    crop, pad = sizes.crop, sizes.pad
    qs = list(scales) if set(protocol.parts) & set(CROP_PARTS) else []
    qs += list(sizes.googlenet) if "144crop" in protocol.parts else []
    if qs and min(qs) + 2 * pad < crop:
        q = min(qs)
        framed = f" and framed by the run's {pad}-pixel translation border ({q + 2 * pad} pixels)" if pad else ""
        raise ValueError(f"protocol {protocol.name}: crops of {crop} pixels (the training size) do not fit in an image "
                         f"resized to {q}{framed}; crops need at least {crop} pixels: every scale must be at least "
                         f"{crop - 2 * pad}")


def _draft(protocol: Protocol, sizes: ProtocolSizes, scales: tuple[int, ...]) -> int:
    """The largest shorter side the protocol resizes to (JPEGs may be decoded at no less)."""
    need = [sizes.base]
    if "144crop" in protocol.parts:
        need += list(sizes.googlenet)
    if set(protocol.parts) & {"dense", *CROP_PARTS}:
        need += list(scales)
    return max(need)


def _resolve_scales(protocol: Protocol, sizes: ProtocolSizes, scales: Sequence[int] | None) -> tuple[int, ...]:
    if not protocol.multiscale:
        return (sizes.base,)
    if scales is None:
        return sizes.multiscale
    return tuple(scales)


def _validate(protocols: list[Protocol], model: nn.Module, sizes: ProtocolSizes, scales, input_size: int
              ) -> DenseNet | None:
    if scales is not None:
        scales = list(scales)
        if not scales or any(isinstance(q, bool) or not isinstance(q, int) or q < 1 for q in scales):
            raise ValueError(f"scales must be a non-empty list of positive integers (shorter sides in pixels), got "
                             f"{scales!r}")
        if not any(p.multiscale for p in protocols):
            raise ValueError("scales apply to the multiscale protocols (multiscale, 50crop+multiscale, "
                             "dense+50crop+multiscale, 10crop+multiscale); none was asked for")
    for p in protocols:
        _check_scales(p, _resolve_scales(p, sizes, scales), sizes)
    if not any("dense" in p.parts for p in protocols):
        return None
    try:
        dense = to_dense(model, input_size=input_size)
    except ValueError as e:
        raise ValueError(f"protocol dense cannot apply: {e}") from None
    for p in protocols:
        q = min(_resolve_scales(p, sizes, scales)) if "dense" in p.parts else None
        if q is None:
            continue
        side = q + 2 * sizes.pad  # the image at scale q in its border
        at = f"{q} ({side} pixels with the run's {sizes.pad}-pixel translation border)" if sizes.pad else f"{q}"
        if side < model.min_input_size:
            raise ValueError(f"protocol {p.name}: {_name(model)} needs images of at least {model.min_input_size} "
                             f"pixels, but the scale {at} is smaller")
        h, w = feature_shape(model, side)[-2:]
        if min(h, w) < dense.window:
            raise ValueError(f"protocol {p.name}: at scale {at} the last feature map of {_name(model)} is {h}x{w}, "
                             f"smaller than the {dense.window}x{dense.window} window its classifier reads; use larger "
                             f"scales (the training size {input_size} works)")
    return dense


def _run(model: nn.Module, bundle: DataBundle, protocol: Protocol, *, dense: DenseNet | None, sizes: ProtocolSizes,
         scales: Sequence[int] | None, flip: bool, batch_size: int, device: torch.device, split: str,
         num_workers: int, path: InferencePath) -> Iterator[tuple[torch.Tensor, torch.Tensor, _Runner]]:
    qs = _resolve_scales(protocol, sizes, scales)
    source = _Source(bundle, split, device, sizes.crop, num_workers, sizes.pad)
    runner = _Runner(model, dense, batch_size, path)
    # images per batch: about batch_size network inputs
    views = sum(VIEWS[p] * (len(qs) if p in ("dense", *CROP_PARTS) else 1) for p in protocol.parts)
    n_images = max(1, batch_size // views)
    with eval_mode(model), torch.no_grad():
        for images, labels in source.batches(n_images, _draft(protocol, sizes, qs)):
            probs = torch.stack([_part_probs(part, images, source, runner, sizes, qs, flip)
                                 for part in protocol.parts]).mean(0)
            yield probs, labels.to(probs.device), runner


def check_batch_size(batch_size, flag: str = "batch_size") -> int:
    """A batch size of network inputs per forward pass: an integer >= 1 (errors name ``flag``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{flag} must be at least 1 (network inputs per forward pass), got {batch_size!r}")
    return batch_size


def _setup(model, bundle, protocols, input_size, scales, device, precision, channels_last, augment, batch_size):
    if not isinstance(bundle, DataBundle):
        raise ValueError(
            f"bundle must be a cnnzoo DataBundle (from load_dataset / reload_dataset), got {type(bundle).__name__}")
    protocols = parse_protocols(protocols)
    check_batch_size(batch_size)
    s = input_size or bundle.image_size[0]
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ValueError(f"input_size must be a positive integer (the training image size), got {input_size!r}")
    sizes = training_sizes(bundle, s, augment)
    dense = _validate(protocols, model, sizes, scales, s)
    if device is None:
        device = next(model.parameters()).device
    path = inference_path(model, device, precision, channels_last)
    path.prepare(model)
    if dense is not None:
        path.prepare(dense)
    return protocols, sizes, dense, torch.device(device), path


def protocol_probs(model: nn.Module, bundle: DataBundle, protocol: str, *, input_size: int | None = None,
                   scales: Sequence[int] | None = None, flip: bool = True, batch_size: int = 100, device=None,
                   split: str = "test", num_workers: int = 0, precision: str = "fp32",
                   channels_last: bool | None = None, augment: dict | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The averaged softmax outputs (N, num_classes) of one protocol on a split, and the labels (N,).

    Arguments as for `evaluate_protocols`.
    """
    (p,), sizes, dense, device, path = _setup(model, bundle, [protocol], input_size, scales, device, precision,
                                              channels_last, augment, batch_size)
    out = list(_run(model, bundle, p, dense=dense, sizes=sizes, scales=scales, flip=flip, batch_size=batch_size,
                    device=device, split=split, num_workers=num_workers, path=path))
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def evaluate_protocols(model: nn.Module, bundle: DataBundle, protocols: str | Sequence[str] = "center", *,
                       input_size: int | None = None, scales: Sequence[int] | None = None, flip: bool = True,
                       batch_size: int = 100, device=None, split: str = "test", num_workers: int = 0,
                       precision: str = "fp32", channels_last: bool | None = None,
                       augment: dict | None = None, progress=None) -> dict[str, ProtocolResult]:
    """Top-1/top-5 of ``model`` on ``bundle``'s test split under each protocol (see the module docstring).

    Args:
        model: a network (in any mode; evaluated in eval mode, its mode restored).
        bundle: the run's data, as `cnnzoo.data.reload_dataset` gives it (statistics and sizes of the run).
        protocols: names, a list or a comma-separated string: center, 10crop, 50crop, 144crop, dense, multiscale,
            or several joined with '+' (softmax outputs averaged), e.g. "dense+50crop+multiscale".
        input_size: S, the side of the images the network was trained on; default the bundle's image size.
        scales: the shorter sides Q of the multiscale protocols (default: from the run's training, see
            `training_sizes`: VGG's {S-32, S, S+32} for a fixed training scale, {S_min, mid, S_max} for a jitter).
        flip: include the horizontal reflections (10crop, 50crop, 144crop, dense).
        batch_size: network inputs per forward pass (about).
        device: where to run; default the model's device.
        split: "test" (default) or "train".
        num_workers: decoding processes for folder datasets.
        precision: auto (the machine's fast path), fp32 (default here; the commands default to auto), bf16 or
            fp16 autocast: see `cnnzoo.evaluate.fastpath`.
        channels_last: the memory format; None: as `cnnzoo.evaluate.fastpath.inference_path` chooses.
        augment: the run's training augmentation (checkpoint metadata ``train_augment``), which sets the test
            scales (`training_sizes`); None: the dataset's default policy.
        progress: called as ``progress(what, done, total)`` when each protocol starts (``done=0``) and after each
            batch, with the images scored of the split's (e.g. a `cnnzoo.status.Steps`, which the commands pass).

    Returns:
        {protocol name: ProtocolResult}, in the order given.

    Raises:
        ValueError: an unknown protocol, or one that cannot apply to this network or these sizes (with the reason).
    """
    parsed, sizes, dense, device, path = _setup(model, bundle, protocols, input_size, scales, device, precision,
                                                channels_last, augment, batch_size)
    results = {}
    total = len(getattr(bundle, split))
    for i, p in enumerate(parsed, 1):
        n = nll = 0.0
        hits = torch.zeros(2, dtype=torch.float64)
        runner = None
        what = f"protocol {p.name}" + (f" ({i}/{len(parsed)})" if len(parsed) > 1 else "")
        if progress is not None:
            progress(what, 0, total)
        for probs, labels, runner in _run(model, bundle, p, dense=dense, sizes=sizes, scales=scales, flip=flip,
                                          batch_size=batch_size, device=device, split=split,
                                          num_workers=num_workers, path=path):
            top = probs.topk(min(5, probs.shape[1]), dim=1).indices
            hits[0] += (top[:, 0] == labels).sum().item()
            hits[1] += (top == labels[:, None]).any(1).sum().item()
            nll -= probs.gather(1, labels[:, None]).clamp_min(1e-12).log().sum().item()
            n += labels.numel()
            if progress is not None:
                progress(what, int(n), total)
        count = max(n, 1)
        results[p.name] = ProtocolResult(p.name, top1=hits[0].item() / count, top5=hits[1].item() / count,
                                         nll=nll / count, count=int(n),
                                         views=(runner.inputs / count) if runner is not None else 0.0)
    return results


def format_table(results: dict[str, ProtocolResult]) -> str:
    """The results side by side, one protocol per row."""
    width = max(8, *(len(k) for k in results))
    lines = [f"{'protocol':<{width}}  {'top-1':>7}  {'top-5':>7}  {'views':>6}"]
    for name, r in results.items():
        views = f"{r.views:g}" if math.isfinite(r.views) else "-"
        lines.append(f"{name:<{width}}  {100 * r.top1:6.2f}%  {100 * r.top5:6.2f}%  {views:>6}")
    return "\n".join(lines)
