"""Parsers for the canonical formats of MNIST, Fashion-MNIST (IDX) and CIFAR-10/100 (python pickle tarballs).

* MNIST (LeCun, Cortes, Burges; http://yann.lecun.com/exdb/mnist/) and Fashion-MNIST (Xiao, Rasul, Vollgraf
  2017; https://github.com/zalandoresearch/fashion-mnist): four gzip'd IDX files. IDX = 2 zero bytes, a type
  byte (0x08 = uint8, ...), the number of dimensions, then each dimension as a big-endian int32, then the data.
* CIFAR-10/100 (Krizhevsky 2009; https://www.cs.toronto.edu/~kriz/cifar.html): a tar.gz of pickled dicts;
  ``data`` is uint8 (N, 3072) = 3 channel planes of 32x32 in row-major order. CIFAR-10 has ``data_batch_1..5``,
  ``test_batch`` and ``batches.meta`` (label_names); CIFAR-100 has ``train``, ``test`` and ``meta``
  (fine_label_names; the 100 fine labels are used).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .bundle import DataBundle, TensorSplit, channel_stats
from .download import cache_root, fetch

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]  # fmt: skip
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CIFAR = {
    "cifar10": {"archive": "cifar-10-python.tar.gz", "folder": "cifar-10-batches-py", "label_key": "labels",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta",
                "names_key": "label_names"},
    "cifar100": {"archive": "cifar-100-python.tar.gz", "folder": "cifar-100-python", "label_key": "fine_labels",
                 "train": ["train"], "test": ["test"], "meta": "meta", "names_key": "fine_label_names"},
}  # fmt: skip


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Decode one IDX file (already decompressed) into an array of its declared type and shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError(f"{source} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source} is truncated (header of {ndim} dimensions incomplete)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{source}: shape {shape} needs {expected} data bytes, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzip'd or not (detected from the gzip magic bytes)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path} is a damaged gzip file: {e}") from e
    return parse_idx(raw, str(path))


def _idx_split(images: np.ndarray, labels: np.ndarray, what: str) -> TensorSplit:
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{what}: expected uint8 images (N, H, W) and N labels, got {images.shape} and {labels.shape}")
    return TensorSplit(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds dicts, lists, strings and NumPy arrays (the CIFAR files need nothing else)."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR pickle refers to {module}.{name}, which a CIFAR file never does")
        return super().find_class(module, name)


def _unpickle(data: bytes, source: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # any decoding failure means a damaged or foreign file
        raise ValueError(f"{source} is not a CIFAR python pickle: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{source} is not a CIFAR python pickle (holds {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batches(spec: dict, read) -> tuple[TensorSplit, TensorSplit, list[str]]:
    def split(names: list[str]) -> TensorSplit:
        xs, ys = [], []
        for n in names:
            d = _unpickle(read(n), n)
            if "data" not in d or spec["label_key"] not in d:
                raise ValueError(f"{n} lacks 'data' or {spec['label_key']!r} (keys: {sorted(d)})")
            data = np.asarray(d["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise ValueError(f"{n}: 'data' has shape {data.shape}, expected (N, 3072)")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[spec["label_key"]], dtype=np.int64))
        return TensorSplit(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

    meta = _unpickle(read(spec["meta"]), spec["meta"])
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec["names_key"]]]
    return split(spec["train"]), split(spec["test"]), classes


def _load_cifar(name: str, data_dir, download: bool) -> tuple[TensorSplit, TensorSplit, list[str]]:
    spec = CIFAR[name]
    root = cache_root(data_dir)
    # An already extracted folder (as the tarball unpacks) is used as is.
    for d in (root / name / spec["folder"], root / spec["folder"]):
        if (d / spec["meta"]).is_file():
            return _cifar_batches(spec, lambda n, d=d: (d / n).read_bytes())
    archive = fetch(name, data_dir, download)[spec["archive"]]
    try:
        with tarfile.open(archive, "r:gz") as tar:

            def read(n: str) -> bytes:
                try:
                    member = tar.extractfile(f"{spec['folder']}/{n}")
                except KeyError:
                    member = None
                if member is None:
                    raise ValueError(f"{archive} has no member {spec['folder']}/{n}")
                return member.read()

            return _cifar_batches(spec, read)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{archive} is not a readable tar.gz archive: {e}") from e


def load_builtin(name: str, *, data_dir=None, download: bool = True) -> DataBundle:
    """Load mnist, fashion-mnist, cifar10 or cifar100 (see `cnnzoo.data.load_dataset`)."""
    if name in ("mnist", "fashion-mnist"):
        alternatives = {gz: [gz[: -len(".gz")]] for gz in IDX_FILES.values()}
        files = fetch(name, data_dir, download, alternatives)
        arrays = {key: read_idx(files[fn]) for key, fn in IDX_FILES.items()}
        train = _idx_split(arrays["train_images"], arrays["train_labels"], f"{name} train")
        test = _idx_split(arrays["test_images"], arrays["test_labels"], f"{name} test")
        classes = [str(i) for i in range(10)] if name == "mnist" else list(FASHION_CLASSES)
    else:
        train, test, classes = _load_cifar(name, data_dir, download)
    for split, what in ((train, "train"), (test, "test")):
        if len(split) and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < len(classes):
            raise ValueError(f"{name} {what} labels fall outside 0..{len(classes) - 1}")
    mean, std = channel_stats(train.images)
    c, h, w = train.images.shape[1:]
    return DataBundle(name, classes, c, (h, w), mean, std, train, test, kind="tensor", root=cache_root(data_dir))
