"""Loaders: `make_loader` turns a `DataBundle` split into an iterable of normalised (images, labels) batches.

Determinism and data parallelism, shared by both loader kinds:

* All randomness of an epoch (the shuffle and every augmentation parameter) comes from a private
  `torch.Generator` (or, in folder workers, a `random.Random`) seeded from (seed, epoch) only, never from
  the global RNG. Epoch k is the same whether or not the process restarted before it.
* With ``world_size`` W and per-rank batch b, step i's *global* batch is positions [i*W*b, (i+1)*W*b) of the
  epoch's order, exactly what a single process with batch size W*b sees, with the same augmentation per
  sample; rank r takes the r-th contiguous slice [r*b, (r+1)*b). A final partial global batch (only when
  ``drop_last`` is false, e.g. evaluation) is split into W near-equal contiguous slices, so the ranks together
  see every sample exactly once, and ``len(loader)`` is the same on every rank (a rank may get an empty last
  batch when fewer than W samples remain).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentPolicy, apply_augment, draw_params
from .bundle import DataBundle, FolderSplit, TensorSplit


def epoch_seed(seed: int, epoch: int, *more: int) -> int:
    """A well-mixed 63-bit seed from (seed, epoch[, more...]) (NumPy's SeedSequence hashing; distinct tuples never
    collide). Extra integers give independent streams, e.g. (seed, epoch, 1) for the folders' colour noise."""
    state = np.random.SeedSequence([int(seed), int(epoch), *map(int, more)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def global_batches(n: int, global_batch: int, drop_last: bool) -> list[tuple[int, int]]:
    """(start, end) positions of each step's global batch in an epoch of ``n`` samples."""
    steps = n // global_batch if drop_last else math.ceil(n / global_batch)
    return [(i * global_batch, min((i + 1) * global_batch, n)) for i in range(steps)]


def rank_slice(start: int, end: int, rank: int, world_size: int) -> tuple[int, int]:
    """This rank's contiguous share of positions [start, end): equal slices, the first ranks one larger if uneven."""
    base, extra = divmod(end - start, world_size)
    lo = start + rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _check_args(batch_size: int, rank: int, world_size: int, seed: int, input_size: int | None) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (per rank), got {batch_size!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if input_size is not None and input_size < 1:
        raise ValueError(f"input_size must be a positive integer or None, got {input_size}")


class _BaseLoader:
    """Shared bookkeeping: epoch, step plan, per-rank sample count."""

    def __init__(
        self, n: int, batch_size: int, train: bool, seed: int, rank: int, world_size: int, drop_last: bool
    ) -> None:
        self.dataset_size = n
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self._plan = global_batches(n, batch_size * world_size, drop_last)
        if train and not self._plan:
            raise ValueError(
                f"the split has {n} samples, fewer than one global batch of {batch_size * world_size} "
                f"(batch_size {batch_size} x world_size {world_size}) with drop_last; lower the batch size"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation the next iteration uses (call before every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._plan)

    def close(self) -> None:
        """Release worker processes (folder loaders); a no-op for tensor loaders."""

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return sum(hi - lo for lo, hi in (rank_slice(s, e, self.rank, self.world_size) for s, e in self._plan))

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        if self.train:
            return torch.randperm(self.dataset_size, generator=generator)
        return torch.arange(self.dataset_size)


class TensorLoader(_BaseLoader):
    """Batches from a dataset held on the device as uint8; augmentation and normalisation run per batch there."""

    def __init__(
        self,
        bundle: DataBundle,
        split: TensorSplit,
        *,
        batch_size: int,
        train: bool,
        device: torch.device,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        policy: AugmentPolicy,
        input_size: int | None,
    ) -> None:
        super().__init__(len(split), batch_size, train, seed, rank, world_size, drop_last)
        self.device = device
        self.policy = policy
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        c = self.images.shape[1]
        mean = torch.tensor(bundle.mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
        std = torch.tensor(bundle.std, dtype=torch.float32, device=device).view(1, c, 1, 1)
        # (x / 255 - mean) / std as one multiply-add.
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std
        native = tuple(self.images.shape[2:])
        self.native = native
        self.input_size = None if input_size is None or (input_size, input_size) == native else input_size
        policy.check_images(c, native, bundle.name)
        self.lighting = None  # AlexNet's colour noise: the training set's RGB PCA (computed once, cached)
        if policy.pca_lighting:
            from .pca import dataset_pca

            self.lighting = dataset_pca(bundle)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = self._order(generator)
        params = draw_params(self.policy, self.dataset_size, generator, self.native) if self.policy.active else {}
        order_dev = order.to(self.device)
        for start, end in self._plan:
            lo, hi = rank_slice(start, end, self.rank, self.world_size)
            idx = order_dev[lo:hi]
            x = apply_augment(self.images[idx], {k: v[lo:hi] for k, v in params.items()}, self.lighting)
            x = x.float() * self._scale + self._shift
            if self.input_size is not None and x.shape[0] > 0:
                x = F.interpolate(
                    x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True
                )
            yield x, self.labels[idx]


def default_policy(bundle: DataBundle) -> dict:
    """The training augmentation a dataset gets when ``augment`` is None."""
    if bundle.kind == "folder":
        return {"random_resized_crop": True, "hflip": True}
    if bundle.image_size == (32, 32) and bundle.in_channels == 3:
        # CIFAR: pad 4 + random 32x32 crop + horizontal flip (He et al. 2016, Sec. 4.2).
        return {"random_crop_padding": 4, "hflip": True}
    # MNIST-like digits: small translations only; a flipped digit is a different (or no) digit.
    return {"translate": 2}


def make_loader(
    bundle: DataBundle,
    split: str,
    *,
    batch_size: int,
    train: bool,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
    augment: dict | None = None,
    input_size: int | None = None,
    num_workers: int = 2,
):
    """An iterable of (images float32 (B, C, H, W) normalised with the bundle's mean/std, labels int64 (B,)).

    Both tensors are on ``device``. Call ``loader.set_epoch(epoch)`` before each epoch; ``len(loader)`` is the
    number of steps per epoch, ``loader.num_samples`` the samples this rank sees, ``loader.batch_size`` the
    per-rank batch size.

    Args:
        bundle: from `load_dataset`.
        split: "train" or "test".
        batch_size: samples per rank per step.
        train: shuffle and augment (else fixed order, no augmentation).
        device: where batches (and, for tensor datasets, the whole split) live.
        seed: base of all randomness; epoch e uses a generator seeded from (seed, e).
        rank, world_size: data-parallel position; see the module docstring for the sharding.
        drop_last: drop the final partial global batch; defaults to ``train``.
        augment: augmentation options; None means the dataset's default policy when training and none otherwise,
            {} means none. Tensor datasets: {"random_crop_padding": int, "translate": int, "hflip": bool,
            "random_resized_crop": bool | [min_area, max_area], "scale_jitter": [S_min, S_max],
            "pca_lighting": bool | sigma} (see `cnnzoo.data.augment`).
            Folders: {"random_resized_crop": bool | [min_scale, max_scale], "random_crop_padding": int,
            "scale_jitter": [S_min, S_max], "hflip": bool, "pca_lighting": bool | sigma}.
        input_size: square size the model wants; batches are resized to it (on the device) when it differs from
            the native size. For folders it is the crop size (default: the bundle's image_size).
        num_workers: decoding processes for folder datasets (ignored for tensor datasets).
    """
    _check_args(batch_size, rank, world_size, seed, input_size)
    data = bundle.split(split)
    device = torch.device(device)
    if drop_last is None:
        drop_last = train
    if augment is None:
        augment = default_policy(bundle) if train else {}
    if isinstance(data, TensorSplit):
        return TensorLoader(
            bundle, data, batch_size=batch_size, train=train, device=device, seed=seed, rank=rank,
            world_size=world_size, drop_last=drop_last, policy=AugmentPolicy.from_dict(augment), input_size=input_size,
        )  # fmt: skip
    if isinstance(data, FolderSplit):
        from .folder import FolderLoader

        return FolderLoader(
            bundle, data, batch_size=batch_size, train=train, device=device, seed=seed, rank=rank,
            world_size=world_size, drop_last=drop_last, augment=augment, input_size=input_size,
            num_workers=num_workers,
        )  # fmt: skip
    raise TypeError(f"unsupported split type {type(data).__name__}")
