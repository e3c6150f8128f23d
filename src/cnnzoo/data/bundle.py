"""What `load_dataset` returns: a `DataBundle` of two splits plus everything a loader needs."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch


class DatasetUnavailableError(RuntimeError):
    """A built-in dataset's files are neither on disk nor downloadable (offline, mirror down, bad checksum)."""


@dataclass
class TensorSplit:
    """A split held in memory: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,), both on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class FolderSplit:
    """A split of image files decoded on the fly: ``samples`` is a list of (path, class index)."""

    samples: list[tuple[str, int]]

    @property
    def labels(self) -> torch.Tensor:
        """Class indices of the samples, int64 (N,)."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)


Split = TensorSplit | FolderSplit


@dataclass
class DataBundle:
    """A dataset ready for `make_loader`.

    Attributes:
        name: the spec it was loaded from ("mnist5k", "cifar10", "folder:/path", ...).
        classes: class names; label i is ``classes[i]``.
        in_channels: channels of the images the loader yields.
        image_size: native (H, W) of tensor datasets; for folders the training crop size.
        mean, std: per-channel statistics of the train split on the 0-1 scale, used to normalise.
        train, test: the training split and the val/test split.
        kind: "tensor" (held in memory, augmented per batch on the device) or "folder" (decoded by workers).
        skipped: (path, reason) for every unreadable file that was left out (folders only).
        root: where the files are (folders: the dataset folder).
        split_params: how the splits were made (folders: layout, seed, val_fraction, image size), see `record`.
    """

    name: str
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split
    test: Split
    kind: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    root: Path | None = None
    split_params: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def split(self, name: str) -> Split:
        """The split called ``name`` ("train" or "test"; "val" is accepted for "test")."""
        if name == "train":
            return self.train
        if name in ("test", "val"):
            return self.test
        raise ValueError(f"unknown split {name!r}; valid: 'train', 'test' (alias 'val')")

    def fingerprint(self, name: str) -> str:
        """SHA-256 of split ``name``'s exact contents: (relative path, label) of every file for folders, the image
        and label bytes for tensor datasets. Equal fingerprints mean the same images in the same order."""
        data = self.split(name)
        h = hashlib.sha256()
        if isinstance(data, FolderSplit):
            for path, label in data.samples:
                rel = os.path.relpath(path, self.root) if self.root is not None else path
                h.update(f"{rel}\t{label}\n".encode())
        else:
            h.update(data.images.contiguous().numpy().tobytes())
            h.update(data.labels.contiguous().numpy().tobytes())
        return h.hexdigest()

    def record(self) -> dict:
        """What a run keeps about its data, so that eval, predict and every later command see exactly the same
        split, classes, statistics and image size (`cnnzoo.data.reload_dataset` reads it back)."""
        return {"dataset": self.name, "kind": self.kind, "classes": list(self.classes),
                "in_channels": self.in_channels, "image_size": list(self.image_size), "mean": list(self.mean),
                "std": list(self.std), "split": dict(self.split_params), "train_count": len(self.train),
                "test_count": len(self.test), "train_sha256": self.fingerprint("train"),
                "test_sha256": self.fingerprint("test")}

    def summary(self) -> str:
        """One line describing the bundle, for run logs."""
        h, w = self.image_size
        text = (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test images, {self.num_classes} classes, "
            f"{self.in_channels}x{h}x{w}, {self.kind}"
        )
        if self.skipped:
            text += f", {len(self.skipped)} unreadable files skipped"
        return text


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0-1 scale) of uint8 images (N, C, H, W), in float64 chunks to bound memory."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def carve_validation(bundle: DataBundle, fraction: float, seed: int) -> tuple[DataBundle, DataBundle]:
    """(the bundle whose training split lost ``fraction`` of every class, a bundle whose ``test`` split is what was
    held out): the validation split a run chooses its "best" checkpoint on, never the test split it reports.

    The hold-out is stratified and seeded (`cnnzoo.data.folder.stratified_split`: round(n * fraction) of each class,
    at least 1 of a class with 2+ images), so a resumed run and every later command carve the same images. The
    statistics (mean, std) stay those of the whole training split, as recorded with the run.
    """
    import dataclasses

    from .folder import stratified_split

    labels = bundle.train.labels.tolist()
    keep, held = stratified_split([(i, y) for i, y in enumerate(labels)], bundle.num_classes, fraction, seed)
    keep_idx, held_idx = [i for i, _ in keep], [i for i, _ in held]
    if not held_idx:
        raise ValueError(f"data.holdout_fraction={fraction:g} holds out no image of {bundle.name}'s "
                         f"{len(labels)} training images; use a larger fraction")

    def take(indices: list[int]) -> Split:
        if isinstance(bundle.train, FolderSplit):
            return FolderSplit([bundle.train.samples[i] for i in indices])
        idx = torch.tensor(indices, dtype=torch.long)
        return TensorSplit(bundle.train.images[idx], bundle.train.labels[idx])

    train, val = take(keep_idx), take(held_idx)
    return dataclasses.replace(bundle, train=train), dataclasses.replace(bundle, train=train, test=val)
