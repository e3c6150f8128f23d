"""Built-in mnist5k, tensor loaders, batch augmentation, determinism and data-parallel sharding."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch

from cnnzoo.data import DATASETS, DataBundle, TensorSplit, load_dataset, make_loader
from cnnzoo.data.augment import AugmentPolicy, apply_augment, draw_params, shift
from cnnzoo.data.bundle import channel_stats


@pytest.fixture(scope="module")
def mnist5k() -> DataBundle:
    return load_dataset("mnist5k")


def _tiny_bundle(n: int = 37, c: int = 3, size: int = 8) -> DataBundle:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 5
    train = TensorSplit(images, labels)
    mean, std = channel_stats(images)
    return DataBundle("tiny", list("abcde"), c, (size, size), mean, std, train, TensorSplit(images[:9], labels[:9]),
                      kind="tensor")  # fmt: skip


def _epoch(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_mnist5k_split_and_stats(mnist5k):
    assert DATASETS[0] == "mnist5k"
    assert mnist5k.classes == [str(i) for i in range(10)]
    assert (len(mnist5k.train), len(mnist5k.test)) == (4000, 1000)
    assert mnist5k.in_channels == 1 and mnist5k.image_size == (28, 28) and mnist5k.kind == "tensor"
    assert torch.equal(torch.bincount(mnist5k.train.labels), torch.full((10,), 400))
    assert torch.equal(torch.bincount(mnist5k.test.labels), torch.full((10,), 100))
    # Statistics are the train split's own, and close to the well-known full-MNIST values (0.1307, 0.3081).
    x = mnist5k.train.images.float() / 255
    assert mnist5k.mean[0] == pytest.approx(x.mean().item(), abs=1e-5)
    assert mnist5k.std[0] == pytest.approx(x.std().item(), abs=1e-4)
    assert mnist5k.mean[0] == pytest.approx(0.13, abs=0.02)
    # The file is sorted by class: within class c, train is the first 400 and test the last 100 of the file.
    with np.load(resources.files("cnnzoo.data").joinpath("mnist5k.npz")) as npz:
        raw = torch.from_numpy(npz["images"])
    assert torch.equal(mnist5k.train.images[:400, 0], raw[:400])
    assert torch.equal(mnist5k.test.images[:100, 0], raw[400:500])


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="valid: mnist5k, mnist, fashion-mnist, cifar10, cifar100 or folder:PATH"):
        load_dataset("mnist6k")


def test_loader_yields_normalised_float_on_device(mnist5k):
    loader = make_loader(mnist5k, "test", batch_size=256, train=False, device="cpu")
    batches = _epoch(loader, 0)
    assert len(loader) == len(batches) == 4 and loader.num_samples == 1000 and loader.batch_size == 256
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (256, 1, 28, 28)
    assert x.device.type == "cpu" and y.device.type == "cpu"
    expected = (mnist5k.test.images[:256].float() / 255 - mnist5k.mean[0]) / mnist5k.std[0]
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, mnist5k.test.labels[:256])
    # Every test sample exactly once, last batch partial (1000 = 3 * 256 + 232).
    assert batches[-1][0].shape[0] == 232
    assert torch.equal(torch.cat([b[1] for b in batches]), mnist5k.test.labels)


def test_train_loader_drops_last_and_resizes(mnist5k):
    loader = make_loader(mnist5k, "train", batch_size=300, train=True, input_size=32, augment={})
    assert len(loader) == 4000 // 300 and loader.num_samples == 13 * 300
    x, _ = next(iter(loader))
    assert x.shape == (300, 1, 32, 32)


def test_set_epoch_determinism_and_independence_from_global_rng():
    bundle = _tiny_bundle()
    a = make_loader(bundle, "train", batch_size=4, train=True, seed=3, augment={"translate": 2, "hflip": True})
    torch.manual_seed(123)
    first = _epoch(a, 5)
    torch.manual_seed(999)  # the global RNG must not matter
    b = make_loader(bundle, "train", batch_size=4, train=True, seed=3, augment={"translate": 2, "hflip": True})
    _epoch(b, 0)  # a "restarted" process that ran other epochs before
    again = _epoch(b, 5)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = _epoch(b, 6)
    assert not torch.equal(torch.cat([y for _, y in other]), torch.cat([y for _, y in first]))
    c = make_loader(bundle, "train", batch_size=4, train=True, seed=4, augment={"translate": 2, "hflip": True})
    assert not torch.equal(torch.cat([y for _, y in _epoch(c, 5)]), torch.cat([y for _, y in first]))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_concatenate_to_single_process_batch(train, world_size):
    bundle = _tiny_bundle(n=37)
    aug = {"random_crop_padding": 2, "translate": 1, "hflip": True} if train else None
    b = 4
    single = _epoch(make_loader(bundle, "train", batch_size=world_size * b, train=train, seed=7, augment=aug), 2)
    kw = {"train": train, "seed": 7, "augment": aug, "world_size": world_size}
    ranks = [_epoch(make_loader(bundle, "train", batch_size=b, rank=r, **kw), 2) for r in range(world_size)]
    assert all(len(r) == len(single) for r in ranks)
    for step, (xs, ys) in enumerate(single):
        assert torch.equal(torch.cat([r[step][0] for r in ranks]), xs)
        assert torch.equal(torch.cat([r[step][1] for r in ranks]), ys)
    if train:  # full global batches only, each rank b per step
        assert all(x.shape[0] == b for r in ranks for x, _ in r)
    else:  # evaluation: the ranks together see every sample exactly once
        loaders = [make_loader(bundle, "train", batch_size=b, train=False, rank=r, world_size=world_size)
                   for r in range(world_size)]  # fmt: skip
        assert sum(lo.num_samples for lo in loaders) == 37


def test_shift_moves_content_with_zero_fill():
    img = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
    img[0, 0, 2, 3] = 200
    out = shift(img, torch.tensor([[1, -2]]))  # down 1, left 2
    assert out[0, 0, 3, 1] == 200 and int(out.sum()) == 200
    edge = torch.full((1, 1, 4, 4), 7, dtype=torch.uint8)
    out = shift(edge, torch.tensor([[0, 2]]))
    assert torch.equal(out[0, 0, :, :2], torch.zeros(4, 2, dtype=torch.uint8))
    assert torch.equal(out[0, 0, :, 2:], edge[0, 0, :, :2])


def test_augment_translate_hflip_and_crop_ranges():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (200, 3, 8, 8), dtype=torch.uint8, generator=g)
    flip = draw_params(AugmentPolicy(hflip=True), 200, torch.Generator().manual_seed(0))
    out = apply_augment(images, flip)
    m = flip["hflip"]
    assert 50 < int(m.sum()) < 150
    assert torch.equal(out[m], images[m].flip(-1)) and torch.equal(out[~m], images[~m])
    params = draw_params(AugmentPolicy(random_crop_padding=4, translate=2), 200, torch.Generator().manual_seed(0))
    assert int(params["crop"].abs().max()) == 4 and int(params["translate"].abs().max()) == 2
    out = apply_augment(images, {"crop": params["crop"]})
    for i in range(5):  # every output is the input shifted by its drawn offset
        assert torch.equal(out[i], shift(images[i : i + 1], params["crop"][i : i + 1])[0])


def test_default_policies(mnist5k):
    from cnnzoo.data import default_policy

    assert default_policy(mnist5k) == {"translate": 2}
    cifar_like = _tiny_bundle(size=32)
    assert default_policy(cifar_like) == {"random_crop_padding": 4, "hflip": True}
    # train=False means no augmentation: the same batch every epoch.
    ev = make_loader(mnist5k, "train", batch_size=64, train=False)
    assert torch.equal(_epoch(ev, 0)[0][0], _epoch(ev, 1)[0][0])


def test_bad_loader_arguments(mnist5k):
    with pytest.raises(ValueError, match="unknown augment option"):
        make_loader(mnist5k, "train", batch_size=8, train=True, augment={"vflip": True})
    with pytest.raises(ValueError, match="unknown split"):
        make_loader(mnist5k, "validation", batch_size=8, train=False)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(mnist5k, "train", batch_size=0, train=True)
    with pytest.raises(ValueError, match="rank"):
        make_loader(mnist5k, "train", batch_size=8, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        make_loader(mnist5k, "test", batch_size=2000, train=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_loader_matches_cpu_loader():
    bundle = _tiny_bundle()
    aug = {"random_crop_padding": 2, "hflip": True}
    cpu = _epoch(make_loader(bundle, "train", batch_size=8, train=True, augment=aug, seed=1), 1)
    gpu = _epoch(make_loader(bundle, "train", batch_size=8, train=True, augment=aug, seed=1, device="cuda"), 1)
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.is_cuda and yg.is_cuda
        torch.testing.assert_close(xg.cpu(), xc)
        assert torch.equal(yg.cpu(), yc)
