"""AlexNet's PCA colour augmentation: the principal components of the training set's RGB pixel values.

Krizhevsky et al. 2012, Sec. 4.1: "we perform PCA on the set of RGB pixel values throughout the ImageNet training
set. To each training image, we add multiples of the found principal components, with magnitudes proportional to
the corresponding eigenvalues times a random variable drawn from a Gaussian with mean zero and standard deviation
0.1", i.e. every pixel of an image gets ``[p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T``, with ``p_i, l_i`` the i-th
eigenvector and eigenvalue of the 3x3 covariance of RGB values and one draw of ``a_i`` per image.

Here the pixel values are on the 0-1 scale (so the noise is too; it is added before normalisation) and the
covariance is the unbiased one (``numpy.cov``'s). It is computed once per dataset and cached:

- tensor datasets (CIFAR, ...): over every pixel of the train split, cached in ``$CNNZOO_DATA/pca/`` under the
  split's SHA-256;
- folders: over the pixels of `PCA_SAMPLES` training images drawn with a fixed seed and passed through the eval
  transform (shorter side to size/0.875, centre crop), cached beside the folder's index as ``PATH/.cnnzoo-pca.json``
  (or in the cnnzoo cache when the folder is read-only), keyed by the train split's fingerprint and the image size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bundle import DataBundle, FolderSplit

__all__ = ["PCA_SAMPLES", "PCAStats", "dataset_pca", "pca_of_covariance", "rgb_covariance"]

log = logging.getLogger("cnnzoo.data")

PCA_SAMPLES = 1000  # folder images decoded for the covariance (a 3x3 matrix: a thousand images pin it down)
_CACHE_VERSION = 1
_MEMO: dict[str, PCAStats] = {}


@dataclass(frozen=True)
class PCAStats:
    """Eigenvalues (3,), descending, and eigenvectors (3, 3), one per column, of the RGB covariance (0-1 scale)."""

    eigval: tuple[float, float, float]
    eigvec: tuple[tuple[float, float, float], ...]
    pixels: int = 0  # how many pixels the covariance was computed from

    def noise(self, alpha: torch.Tensor) -> torch.Tensor:
        """The RGB shift of each image (B, 3) for alphas (B, 3): ``eigvec @ (alpha * eigval)``, 0-1 scale."""
        vec = torch.tensor(self.eigvec, dtype=torch.float64, device=alpha.device)
        val = torch.tensor(self.eigval, dtype=torch.float64, device=alpha.device)
        return (alpha.to(torch.float64) * val) @ vec.T

    def apply(self, images: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Add each image's shift to all its pixels; ``images`` (B, 3, H, W) on the 0-255 scale -> float32."""
        if images.shape[1] != 3:
            raise ValueError(f"PCA lighting needs 3-channel (RGB) images, got {images.shape[1]} channel(s)")
        shift = (self.noise(alpha.to(images.device)) * 255.0).to(torch.float32)
        return images.float() + shift[:, :, None, None]

    def to_dict(self) -> dict:
        return {"eigval": list(self.eigval), "eigvec": [list(r) for r in self.eigvec], "pixels": self.pixels}


def rgb_covariance(chunks) -> tuple[np.ndarray, int]:
    """Unbiased 3x3 covariance (float64) of the RGB pixels of uint8 image chunks (B, 3, H, W) on the 0-1 scale."""
    total = torch.zeros(3, dtype=torch.float64)
    outer = torch.zeros(3, 3, dtype=torch.float64)
    n = 0
    for chunk in chunks:
        x = chunk.permute(0, 2, 3, 1).reshape(-1, 3).to(torch.float64) / 255.0
        total += x.sum(0)
        outer += x.T @ x
        n += x.shape[0]
    if n < 2:
        raise ValueError("PCA lighting needs at least two pixels of training images")
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
    return cov.numpy(), n


def pca_of_covariance(cov: np.ndarray, pixels: int = 0) -> PCAStats:
    """Eigen-decomposition of a symmetric 3x3 covariance, eigenvalues descending (negative round-off clipped to 0)."""
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    val, vec = np.clip(val[order], 0.0, None), vec[:, order]
    return PCAStats(tuple(float(v) for v in val), tuple(tuple(float(v) for v in row) for row in vec), pixels)


def _tensor_chunks(images: torch.Tensor, chunk: int = 2048):
    for start in range(0, images.shape[0], chunk):
        yield images[start : start + chunk]


def _folder_chunks(samples: list[tuple[str, int]], size: int):
    from .folder import FolderTransform, _read_error, decode

    transform = FolderTransform(size, train=False, augment={})
    rng = np.random.default_rng(0)  # the same images whatever the run's seed: one cache per dataset
    for i in rng.permutation(len(samples))[:PCA_SAMPLES]:
        path = samples[i][0]
        if _read_error(path, transform) is not None:
            continue
        yield transform(decode(path, draft=transform.draft_size), random.Random(0))[None]


def _cache_files(bundle: DataBundle, key: str) -> list[Path]:
    from .download import cache_root

    if bundle.kind == "folder" and bundle.root is not None:
        digest = hashlib.sha256(str(Path(bundle.root).resolve()).encode()).hexdigest()[:16]
        return [Path(bundle.root) / ".cnnzoo-pca.json", cache_root() / "folder-index" / f"{digest}-pca.json"]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle.name)
    return [cache_root() / "pca" / f"{name}-{key[:16]}.json"]


def _read_cache(files: list[Path], key: str) -> PCAStats | None:
    for path in files:
        try:
            data = json.loads(path.read_text())
            if data.get("version") == _CACHE_VERSION and data.get("key") == key:
                return PCAStats(tuple(data["eigval"]), tuple(tuple(r) for r in data["eigvec"]), int(data["pixels"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _write_cache(files: list[Path], key: str, stats: PCAStats) -> None:
    from ..fileio import atomic_write

    blob = json.dumps({"version": _CACHE_VERSION, "key": key, **stats.to_dict()}, indent=1).encode()
    for path in files:
        try:
            atomic_write(path, blob)
            return
        except OSError:
            continue


def dataset_pca(bundle: DataBundle) -> PCAStats:
    """The RGB PCA of ``bundle``'s training split: from the cache when it is there, else computed and cached."""
    if bundle.in_channels != 3:
        raise ValueError(f"augment pca_lighting is AlexNet's RGB colour noise and needs 3-channel images; "
                         f"{bundle.name} has {bundle.in_channels} channel(s): drop pca_lighting")
    folder = isinstance(bundle.train, FolderSplit)
    size = bundle.image_size[0]
    key = f"{bundle.fingerprint('train')}:{size if folder else 'all'}:{PCA_SAMPLES if folder else 'all'}"
    if key in _MEMO:
        return _MEMO[key]
    files = _cache_files(bundle, key)
    stats = _read_cache(files, key)
    if stats is None:
        log.info("%s: computing the RGB PCA of the training images for pca_lighting", bundle.name)
        chunks = _folder_chunks(bundle.train.samples, size) if folder else _tensor_chunks(bundle.train.images)
        cov, n = rgb_covariance(chunks)
        stats = pca_of_covariance(cov, n)
        _write_cache(files, key, stats)
    _MEMO[key] = stats
    return stats
