"""AlexNet's PCA colour augmentation: the eigen-decomposition against NumPy's on the training set, the noise's scale
(alpha ~ N(0, 0.1) times the eigenvalues, Krizhevsky et al. 2012 Sec. 4.1), per-image constancy, determinism, the
cache (tensor datasets and folders), and the clear error on 1-channel data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import DataBundle, TensorSplit, load_dataset, make_loader
from cnnzoo.data import pca as pca_mod
from cnnzoo.data.augment import AugmentPolicy, draw_params
from cnnzoo.data.bundle import channel_stats
from cnnzoo.data.loader import epoch_seed


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test computes (and caches) in its own cache directory."""
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(pca_mod, "_MEMO", {})


def rgb_bundle(n: int = 64, size: int = 8, seed: int = 0) -> DataBundle:
    """Images whose channels are correlated (G follows R, B is independent), so the components are distinct."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 200, (n, 1, size, size), generator=g)
    gch = (r * 0.6 + torch.randint(0, 80, (n, 1, size, size), generator=g)).clamp(0, 255)
    b = torch.randint(100, 140, (n, 1, size, size), generator=g)
    images = torch.cat([r, gch, b], 1).to(torch.uint8)
    labels = torch.arange(n) % 4
    mean, std = channel_stats(images)
    return DataBundle(f"rgb{seed}", list("abcd"), 3, (size, size), mean, std, TensorSplit(images, labels),
                      TensorSplit(images[:8], labels[:8]), kind="tensor")  # fmt: skip


def numpy_pca(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cov = np.cov(pixels.T)  # unbiased, as the module promises
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    return cov, val[order], vec[:, order]


def test_eigen_decomposition_matches_numpy_on_the_train_split():
    bundle = rgb_bundle()
    stats = pca_mod.dataset_pca(bundle)
    pixels = bundle.train.images.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy() / 255
    cov, val, vec = numpy_pca(pixels)
    ours_val, ours_vec = np.array(stats.eigval), np.array(stats.eigvec)
    np.testing.assert_allclose(ours_val, val, rtol=1e-9)
    assert ours_val[0] > ours_val[1] > ours_val[2] > 0
    for i in range(3):  # each eigenvector is numpy's up to its sign
        assert min(np.abs(ours_vec[:, i] - vec[:, i]).max(), np.abs(ours_vec[:, i] + vec[:, i]).max()) < 1e-9
    np.testing.assert_allclose(ours_vec @ np.diag(ours_val) @ ours_vec.T, cov, atol=1e-12)
    assert stats.pixels == pixels.shape[0]


def test_computed_once_then_read_from_the_cache_keyed_by_the_training_images(monkeypatch, tmp_path):
    bundle = rgb_bundle()
    first = pca_mod.dataset_pca(bundle)
    files = list((tmp_path / "cache" / "pca").glob("*.json"))
    assert len(files) == 1 and "rgb0" in files[0].name
    real = pca_mod.rgb_covariance
    monkeypatch.setattr(pca_mod, "_MEMO", {})
    monkeypatch.setattr(pca_mod, "rgb_covariance", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    assert pca_mod.dataset_pca(bundle) == first
    monkeypatch.setattr(pca_mod, "rgb_covariance", real)
    other = rgb_bundle(seed=1)  # other training images: another key, computed afresh
    assert pca_mod.dataset_pca(other).eigval != first.eigval
    assert len(list((tmp_path / "cache" / "pca").glob("*.json"))) == 2


def test_noise_has_the_papers_scale():
    """alpha ~ N(0, 0.1) per image and component; the RGB shift is eigvec @ (alpha * eigval), constant per image."""
    bundle = rgb_bundle()
    stats = pca_mod.dataset_pca(bundle)
    n = 20000
    params = draw_params(AugmentPolicy.from_dict({"pca_lighting": True}), n, torch.Generator().manual_seed(3))
    alpha = params["lighting"]
    assert alpha.shape == (n, 3)
    assert abs(float(alpha.mean())) < 0.003 and abs(float(alpha.std()) - 0.1) < 0.002
    blank = torch.zeros(n, 3, 4, 4)
    out = stats.apply(blank, alpha)
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # the same shift at every pixel of an image
    shift = out[:, :, 0, 0].double() / 255  # back to the 0-1 scale of the eigenvalues
    vec, val = torch.tensor(stats.eigvec, dtype=torch.float64), torch.tensor(stats.eigval, dtype=torch.float64)
    coords = shift @ vec  # the shift in principal-component coordinates: alpha_i * lambda_i
    np.testing.assert_allclose(coords.numpy(), (alpha * val).numpy(), rtol=1e-5, atol=1e-9)
    # spread along component i = 0.1 x lambda_i (the paper's "magnitudes proportional to the eigenvalues")
    np.testing.assert_allclose(coords.std(0).numpy(), 0.1 * val.numpy(), rtol=0.03)
    sigma = AugmentPolicy.from_dict({"pca_lighting": 0.3})
    assert abs(float(draw_params(sigma, n, torch.Generator().manual_seed(3))["lighting"].std()) - 0.3) < 0.006


def test_loader_adds_one_shift_per_image_before_normalising():
    bundle = rgb_bundle()
    stats = pca_mod.dataset_pca(bundle)
    loader = make_loader(bundle, "train", batch_size=16, train=True, augment={"pca_lighting": True}, seed=5)
    loader.set_epoch(2)
    (x, _), *_ = list(loader)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch_seed(5, 2)))  # the loader's shuffle
    raw = bundle.train.images[order[:16]].double()
    mean = torch.tensor(bundle.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, dtype=torch.float64).view(1, 3, 1, 1)
    pixels = x.double() * std * 255 + mean * 255  # undo the normalisation
    delta = (pixels - raw) / 255
    assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta), atol=1e-4)  # constant per image
    coords = delta[:, :, 0, 0] @ torch.tensor(stats.eigvec, dtype=torch.float64)
    alpha = coords / torch.tensor(stats.eigval, dtype=torch.float64)
    assert 0.02 < float(alpha.std()) < 0.3 and float(alpha.abs().max()) < 0.6  # N(0, 0.1) draws
    # determinism: the same epoch gives the same noise, another epoch other noise
    again = make_loader(bundle, "train", batch_size=32, train=True, augment={"pca_lighting": True}, seed=5)
    again.set_epoch(2)
    assert torch.allclose(next(iter(again))[0][:16], x, atol=1e-5)
    again.set_epoch(3)
    assert not torch.allclose(next(iter(again))[0][:16], x, atol=1e-3)


def test_one_channel_data_is_a_clear_error():
    mnist = load_dataset("mnist5k")
    with pytest.raises(ValueError, match=r"pca_lighting .*3-channel images; mnist5k has 1 channel"):
        make_loader(mnist, "train", batch_size=8, train=True, augment={"pca_lighting": True})
    for bad in (-0.1, "lots", [0.1]):
        with pytest.raises(ValueError, match=r"augment\['pca_lighting'\] must be true"):
            AugmentPolicy.from_dict({"pca_lighting": bad})


def test_folder_pca_on_a_seeded_sample_cached_beside_the_index(tmp_path, monkeypatch):
    """Each image one flat colour: resampling leaves it unchanged, so the covariance is NumPy's over those colours."""
    rng = np.random.default_rng(0)
    colours = []
    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(6):
            c = rng.integers(0, 256, 3)
            c[1] = min(255, c[0] // 2 + rng.integers(0, 60))
            colours.append(c)
            Image.fromarray(np.broadcast_to(c.astype(np.uint8), (20, 20, 3)).copy()).save(tmp_path / "f" / cls / f"{i}.png")
    bundle = load_dataset(f"folder:{tmp_path / 'f'}", image_size=16, val_fraction=0.0)
    loader = make_loader(bundle, "train", batch_size=4, train=True, augment={"pca_lighting": True}, num_workers=0)
    stats = loader.lighting
    assert (tmp_path / "f" / ".cnnzoo-pca.json").is_file() and (tmp_path / "f" / ".cnnzoo-index.json").is_file()
    pixels = np.repeat(np.array(colours, dtype=np.float64) / 255, 16 * 16, axis=0)
    _, val, vec = numpy_pca(pixels)
    np.testing.assert_allclose(stats.eigval, val, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.abs(np.array(stats.eigvec)), np.abs(vec), atol=1e-6)
    monkeypatch.setattr(pca_mod, "_MEMO", {})
    monkeypatch.setattr(pca_mod, "rgb_covariance", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    assert pca_mod.dataset_pca(bundle) == stats
    # the noise reaches the batches: one constant shift per image on top of its flat colour
    loader.set_epoch(0)
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, 16, 16) and torch.allclose(x, x[:, :, :1, :1].expand_as(x), atol=1e-5)
    plain = make_loader(bundle, "train", batch_size=4, train=True, augment={}, num_workers=0)
    plain.set_epoch(0)
    assert not torch.allclose(next(iter(plain))[0], x, atol=1e-3)
