"""folder:PATH datasets: image-mode conversion, unreadable files, strict mode, bombs, splits, transforms, loader."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import load_dataset, make_loader
from cnnzoo.data.folder import FolderTransform, decode, folder_index, stratified_split


def _rgb(seed: int, size=(24, 20)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _jpeg_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _rgb(hash((name, i)) % 1000).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two classes of images in every awkward mode, plus a truncated JPEG, a text file and a hidden file."""
    root = tmp_path / "mixed"
    a, b = root / "cat", root / "dog"
    a.mkdir(parents=True)
    b.mkdir()
    _rgb(1).convert("L").save(a / "gray.png")
    _rgb(2).convert("P", palette=Image.Palette.ADAPTIVE).save(a / "palette.png", transparency=0)
    _rgb(3).convert("RGBA").save(a / "rgba.png")
    _rgb(4).convert("CMYK").save(a / "cmyk.jpg")
    sixteen = np.full((20, 24), 65535, dtype=np.uint16)
    sixteen[:, 12:] = 32896  # 32896 / 257 = 128
    Image.fromarray(sixteen).save(a / "deep.png")
    (a / "notes.txt").write_text("not an image")
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (b / "sub").mkdir()
    _rgb(5).save(b / "sub" / "nested.jpg")
    _rgb(6).save(b / "ok.jpg")
    data = _jpeg_bytes(_rgb(7, size=(64, 64)))
    (b / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_modes_converted_and_unreadable_files_skipped(mixed):
    bundle = load_dataset(f"folder:{mixed}", image_size=16, val_fraction=0.0)
    assert bundle.kind == "folder" and bundle.classes == ["cat", "dog"] and bundle.in_channels == 3
    assert bundle.image_size == (16, 16) and len(bundle.test) == 0
    names = sorted(Path(p).name for p, _ in bundle.train.samples)
    assert names == ["cmyk.jpg", "deep.png", "gray.png", "nested.jpg", "ok.jpg", "palette.png", "rgba.png"]
    reasons = {Path(p).name: why for p, why in bundle.skipped}
    assert set(reasons) == {"notes.txt", "truncated.jpg"}
    assert "not an image" in reasons["notes.txt"] and "truncated" in reasons["truncated.jpg"]
    assert "2 unreadable files skipped" in bundle.summary()
    for path, _ in bundle.train.samples:
        img = decode(path)
        assert img.mode == "RGB" and img.size == (24, 20)
    deep = np.asarray(decode(mixed / "cat" / "deep.png"))
    assert deep[0, 0].tolist() == [255, 255, 255] and deep[0, 20].tolist() == [128, 128, 128]  # scaled, not clipped
    assert all(0 < m < 1 for m in bundle.mean) and all(s > 0 for s in bundle.std)


def test_strict_mode_lists_unreadable_files(mixed):
    with pytest.raises(ValueError, match="2 unreadable file") as err:
        load_dataset(f"folder:{mixed}", strict=True, image_size=16)
    assert "notes.txt" in str(err.value) and "truncated.jpg" in str(err.value)


def test_empty_class_folder_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images.*empty"):
        load_dataset(f"folder:{root}", image_size=8)
    with pytest.raises(ValueError, match="no class subfolders"):
        load_dataset(f"folder:{root / 'empty'}")
    with pytest.raises(ValueError, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}")


def test_decompression_bombs_are_never_decoded(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    Image.new("RGB", (40, 40)).save(root / "a" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1600 px > 2 * 500: Pillow refuses to decode
    with pytest.raises(ValueError, match="decompression-bomb limit") as err:
        load_dataset(f"folder:{root}", image_size=8, strict=True)
    assert "big.png" in str(err.value) and "MAX_IMAGE_PIXELS" in str(err.value)
    bundle = load_dataset(f"folder:{root}", image_size=8, val_fraction=0.0)  # lazily: skipped, named, not decoded
    reasons = {Path(p).name: why for p, why in bundle.skipped}
    assert "decompression bomb" in reasons["big.png"]
    assert "big.png" not in {Path(p).name for p, _ in bundle.train.samples}


def test_a_file_that_becomes_unreadable_during_training_is_skipped_and_logged(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    bundle = load_dataset(f"folder:{root}", image_size=8, val_fraction=0.0)
    victim = bundle.train.samples[2][0]
    Path(victim).write_bytes(b"no longer an image")
    loader = make_loader(bundle, "train", batch_size=8, train=False, num_workers=0)
    loader.set_epoch(0)
    with caplog.at_level("WARNING", logger="cnnzoo.data"):
        (x, y), = list(loader)
    assert x.shape == (8, 3, 8, 8) and "skipping unreadable image" in caplog.text and victim in caplog.text
    # the next sample of the split stands in for it, the same every epoch
    assert torch.equal(x[2], x[3]) and int(y[2]) == int(y[3])


def test_one_class_is_not_a_classification_dataset(tmp_path):
    root = make_folder(tmp_path / "d", {"only": 3})
    with pytest.raises(ValueError, match="1 class folder.*at least 2"):
        load_dataset(f"folder:{root}", image_size=8)


def test_the_index_is_cached_and_refreshed_when_files_change(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    first = folder_index(root)
    assert not first["cached"] and (root / ".cnnzoo-index.json").is_file()
    again = folder_index(root)
    assert again["cached"] and again["train"] == first["train"]
    time.sleep(0.01)
    _rgb(99).save(root / "b" / "new.png")
    changed = folder_index(root)
    assert not changed["cached"] and len(changed["train"]) == 7
    hidden = [rel for rel, _ in changed["train"] if Path(rel).name.startswith(".")]
    assert hidden == []  # the index file itself is hidden and never a sample


def test_a_10000_image_folder_starts_training_in_seconds(tmp_path, capsys):
    """Issue 15: nothing is decoded up front; the second start reuses the cached listing."""
    from cnnzoo.cli.main import main

    digits = np.load(Path(__import__("cnnzoo.data").data.__path__[0]) / "mnist5k.npz")["images"]
    root = tmp_path / "big"
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
    for i in range(10_000):
        Image.fromarray(digits[i % 5000]).save(root / str(i % 10) / f"{i:05d}.png", compress_level=0)
    for attempt in range(2):
        t0 = time.perf_counter()
        bundle = load_dataset(f"folder:{root}", image_size=28)
        load_s = time.perf_counter() - t0
        assert len(bundle.train) + len(bundle.test) == 10_000
        assert folder_index(root)["cached"]
        assert load_s < 10, f"load took {load_s:.1f} s (attempt {attempt})"
    run = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["train", "lenet5", "--data", f"folder:{root}", "--epochs", "1", "--limit-batches", "2",
                 "--set", "data.input_size=32", "--set", "data.num_workers=0", "--run-dir", str(run), "-q"]) == 0
    assert time.perf_counter() - t0 < 60  # 1,000 test images are evaluated: the start itself takes seconds


def test_stratified_seeded_split(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 10, "b": 20, "c": 5})
    one = load_dataset(f"folder:{root}", val_fraction=0.2, seed=1, image_size=8)
    again = load_dataset(f"folder:{root}", val_fraction=0.2, seed=1, image_size=8)
    other = load_dataset(f"folder:{root}", val_fraction=0.2, seed=2, image_size=8)
    assert torch.bincount(one.test.labels).tolist() == [2, 4, 1]
    assert torch.bincount(one.train.labels).tolist() == [8, 16, 4]
    assert one.test.samples == again.test.samples and one.test.samples != other.test.samples
    assert sorted(one.train.samples + one.test.samples) == sorted(other.train.samples + other.test.samples)
    assert not set(one.train.samples) & set(one.test.samples)
    # Classes of one image stay in train.
    train, val = stratified_split([("x", 0), ("y", 1), ("z", 1)], 2, 0.1, 0)
    assert train == [("x", 0), ("y", 1)] or train == [("x", 0), ("z", 1)]
    assert len(val) == 1


def test_train_val_layout(tmp_path):
    make_folder(tmp_path / "d" / "train", {"a": 3, "b": 2})
    make_folder(tmp_path / "d" / "val", {"a": 1, "b": 1})
    bundle = load_dataset(f"folder:{tmp_path / 'd'}", image_size=8)
    assert (len(bundle.train), len(bundle.test)) == (5, 2)
    assert all("/val/" in p for p, _ in bundle.test.samples)
    make_folder(tmp_path / "d" / "val", {"zebra": 1})
    with pytest.raises(ValueError, match="zebra"):
        load_dataset(f"folder:{tmp_path / 'd'}", image_size=8)


def test_transforms_eval_centre_crop_and_flip():
    img = Image.new("RGB", (40, 20))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    ev = FolderTransform(14, train=False, augment={})
    out = ev(img, random.Random(0))
    # Shorter side 20 -> round(14 / 0.875) = 16, width 32; central 14x14 spans the red/black boundary at x=16.
    assert out.shape == (3, 14, 14) and out.dtype == torch.uint8
    assert out[0, 7, 0] > 200 and out[0, 7, 13] < 50
    flip = FolderTransform(14, train=True, augment={"hflip": True})
    outs = [flip(img, random.Random(s)) for s in range(20)]
    flipped = [o for o in outs if o[0, 7, 0] < 50]
    kept = [o for o in outs if o[0, 7, 0] > 200]
    assert len(flipped) + len(kept) == 20 and 0 < len(flipped) < 20
    assert all(torch.equal(o, kept[0].flip(-1)) for o in flipped)
    rrc = FolderTransform(10, train=True, augment={"random_resized_crop": [0.5, 1.0]})
    assert rrc(img, random.Random(3)).shape == (3, 10, 10)
    assert torch.equal(rrc(img, random.Random(3)), rrc(img, random.Random(3)))
    pad = FolderTransform(20, train=True, augment={"random_crop_padding": 4})
    assert pad(img, random.Random(1)).shape == (3, 20, 20)
    with pytest.raises(ValueError, match="valid"):
        FolderTransform(10, train=True, augment={"translate": 2})


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("f") / "d", {"a": 7, "b": 6, "c": 5})
    return load_dataset(f"folder:{root}", image_size=12, val_fraction=0.2)


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_folder_loader_batches_normalised(small_folder):
    loader = make_loader(small_folder, "test", batch_size=2, train=False, num_workers=0)
    batches = _epoch(loader, 0)
    assert len(batches) == len(loader) == 2 and loader.num_samples == len(small_folder.test) == 3  # 1 per class
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (2, 3, 12, 12) and y.dtype == torch.int64
    path, label = small_folder.test.samples[0]
    raw = FolderTransform(12, train=False, augment={})(decode(path), random.Random(0)).float() / 255
    mean, std = torch.tensor(small_folder.mean).view(3, 1, 1), torch.tensor(small_folder.std).view(3, 1, 1)
    torch.testing.assert_close(x[0], (raw - mean) / std)
    assert int(y[0]) == label


def test_folder_loader_ddp_slicing_and_epoch_determinism(small_folder):
    single = make_loader(small_folder, "train", batch_size=4, train=True, seed=5, num_workers=0)
    ranks = [make_loader(small_folder, "train", batch_size=2, train=True, seed=5, num_workers=0, rank=r,
                         world_size=2) for r in range(2)]  # fmt: skip
    a = _epoch(single, 3)
    per_rank = [_epoch(r, 3) for r in ranks]
    assert len(a) == len(single) == 15 // 4
    for step, (x, y) in enumerate(a):
        assert torch.equal(torch.cat([p[step][0] for p in per_rank]), x)
        assert torch.equal(torch.cat([p[step][1] for p in per_rank]), y)
    fresh = make_loader(small_folder, "train", batch_size=4, train=True, seed=5, num_workers=2)
    b = _epoch(fresh, 3)  # worker processes, restarted loader: same epoch 3
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    c = _epoch(fresh, 4)
    fresh.close()
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c, strict=True))


def test_jpeg_draft_decoding_keeps_eval_crops_faithful(tmp_path):
    """Eval crops may decode big JPEGs at reduced size (fast); the result must match a full decode closely."""
    y, x = np.mgrid[0:512, 0:640]
    smooth = np.stack([x * 255 // 640, y * 255 // 512, (x + y) * 255 // 1152], -1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    t = FolderTransform(32, train=False, augment={})
    assert t.draft_size == (37, 37)
    fast = t(decode(tmp_path / "big.jpg", draft=t.draft_size), random.Random(0)).float()
    full = t(decode(tmp_path / "big.jpg"), random.Random(0)).float()
    assert (fast - full).abs().mean() < 3
    assert FolderTransform(32, train=True, augment={"random_resized_crop": True}).draft_size is None


# ---------------------------------------------------------------------------------------- issue 23 (7): the cache
def _damage_index(root: Path, damage) -> None:
    """Index ``root``, then rewrite its cached index as ``damage(index)`` returns it (the directories' mtimes stay
    those of the real folder, so only the damage can make the cache unusable)."""
    import json

    folder_index(root)
    path = root / ".cnnzoo-index.json"
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    _rgb(42).save(out / "x.png")
    return out


def _add(index: dict, rel: str, label: int = 0, dirs: dict | None = None) -> dict:
    index["train"].append([rel, label])
    index["dirs"].update(dirs or {})
    return index


INDEX_DAMAGE = {
    "empty-list": lambda ix, tmp: [],
    "a-string": lambda ix, tmp: "index",
    "null": lambda ix, tmp: None,
    "no-train": lambda ix, tmp: {k: v for k, v in ix.items() if k != "train"},
    "train-not-a-list": lambda ix, tmp: {**ix, "train": {"a/000.png": 0}},
    "entry-not-a-pair": lambda ix, tmp: {**ix, "train": ["a/000.png"]},
    "label-a-string": lambda ix, tmp: {**ix, "train": [["a/000.png", "0"]]},
    "label-out-of-range": lambda ix, tmp: {**ix, "train": [["a/000.png", 7]]},
    "label-of-another-class": lambda ix, tmp: {**ix, "train": [["a/000.png", 1]]},
    "classes-not-strings": lambda ix, tmp: {**ix, "classes": [1, 2]},
    "dirs-not-a-dict": lambda ix, tmp: {**ix, "dirs": ["a", "b"]},
    "dot-dot": lambda ix, tmp: _add(ix, "../outside/x.png"),
    "dot-dot-inside": lambda ix, tmp: _add(ix, "a/../../outside/x.png"),
    "absolute": lambda ix, tmp: _add(ix, str(tmp / "outside" / "x.png")),
    "absolute-dir": lambda ix, tmp: _add(ix, str(tmp / "outside" / "x.png"),
                                         dirs={str(tmp / "outside"): (tmp / "outside").stat().st_mtime_ns}),
    "not-in-a-class-folder": lambda ix, tmp: _add(ix, "x.png"),
}


@pytest.mark.parametrize("name", list(INDEX_DAMAGE))
def test_a_damaged_index_is_rebuilt_and_never_read_outside_the_folder(tmp_path, name, caplog):
    """Issue 23 (7): the cached listing is validated (structure, types, labels, every path a relative one inside a
    class folder); an invalid one is rebuilt, with a one-line warning, and nothing outside the folder is read."""
    import json

    _outside(tmp_path)
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    _damage_index(root, lambda ix: INDEX_DAMAGE[name](ix, tmp_path))
    with caplog.at_level("WARNING", logger="cnnzoo.data"):
        bundle = load_dataset(f"folder:{root}", image_size=8, val_fraction=0.0)
    samples = sorted((str(Path(p).relative_to(root)), lab) for p, lab in bundle.train.samples)
    assert samples == [(f"{c}/{i:03d}.png", lab) for lab, c in enumerate("ab") for i in range(3)]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and ".cnnzoo-index.json" in warned[0] and "rebuil" in warned[0], warned
    assert "\n" not in warned[0]
    rebuilt = json.loads((root / ".cnnzoo-index.json").read_text())  # rewritten whole: the next start reuses it
    assert sorted(map(tuple, rebuilt["train"])) == samples and folder_index(root)["cached"]


def test_an_index_entry_through_a_symlink_out_of_the_folder_is_refused(tmp_path, caplog):
    """A directory symlinked inside a class folder is not followed by the listing (os.walk), so a cache entry that
    goes through one is not a listing cnnzoo wrote: rebuilt, the file behind the link never read."""
    out = _outside(tmp_path)
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "sub").symlink_to(out, target_is_directory=True)
    _damage_index(root, lambda ix: _add(ix, "a/sub/x.png", dirs={"a/sub": out.stat().st_mtime_ns}))
    with caplog.at_level("WARNING", logger="cnnzoo.data"):
        bundle = load_dataset(f"folder:{root}", image_size=8, val_fraction=0.0)
    assert len(bundle.train) == 6 and not any("sub" in p for p, _ in bundle.train.samples)
    assert any("rebuil" in r.getMessage() for r in caplog.records)


def test_a_valid_index_with_symlinked_class_folders_is_still_reused(tmp_path, caplog):
    """Symlinked class folders (a common way to build a subset) are listed and their cache is reused silently."""
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2})
    root = tmp_path / "d"
    root.mkdir()
    for c in ("a", "b"):
        (root / c).symlink_to(src / c, target_is_directory=True)
    first = folder_index(root)
    with caplog.at_level("WARNING", logger="cnnzoo.data"):
        again = folder_index(root)
    assert again["cached"] and again["train"] == first["train"] and len(first["train"]) == 4
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_stale_index_of_an_older_version_is_rebuilt_quietly(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    _damage_index(root, lambda ix: {**ix, "version": 0})
    with caplog.at_level("WARNING", logger="cnnzoo.data"):
        index = folder_index(root)
    assert not index["cached"] and len(index["train"]) == 4
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
