"""digits-segmentation (built in, deterministic) and the readers for Pascal VOC 2012 and folders of image/mask pairs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo.data import load_dataset
from cnnzoo.segmentation.data import (
    digits_segmentation,
    load_mask_folder,
    load_segmentation_data,
    load_voc_segmentation,
    voc_colormap,
)

SMALL = {"num_train": 40, "num_test": 20}


def test_same_seed_gives_byte_identical_masks_and_images_other_seed_differs():
    a_train, a_test = digits_segmentation(**SMALL)
    b_train, b_test = digits_segmentation(**SMALL)
    assert a_train.masks.numpy().tobytes() == b_train.masks.numpy().tobytes()
    assert a_test.masks.numpy().tobytes() == b_test.masks.numpy().tobytes()
    assert a_train.images.numpy().tobytes() == b_train.images.numpy().tobytes()
    c_train, _ = digits_segmentation(seed=1, **SMALL)
    assert not torch.equal(a_train.masks, c_train.masks)
    assert not torch.equal(a_train.masks[:20], a_test.masks)  # the splits have their own streams


def test_label_convention_ignore_band_and_no_touching():
    train, _ = digits_segmentation(**SMALL)
    assert train.classes == ["background", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert train.images.shape == (40, 1, 64, 64) and train.masks.shape == (40, 64, 64)
    m = train.masks.long()
    assert set(m.unique().tolist()) <= set(range(11)) | {255}
    stroke = (m >= 1) & (m <= 10)
    assert torch.equal(stroke, train.images[:, 0] >= 128)  # stroke = at least half ink (noise 0)
    near = F.max_pool2d(stroke[:, None].float(), 3, 1, 1)[:, 0].bool()  # within one pixel (chessboard)
    assert torch.equal(m == 255, near & ~stroke)  # the band: exactly the non-stroke pixels next to a stroke
    for mask in m:  # strokes of different digits are more than band + 1 pixels apart
        labels = [v for v in mask.unique().tolist() if 1 <= v <= 10]
        for v in labels:
            grown = F.max_pool2d((mask == v)[None, None].float(), 5, 1, 2)[0, 0].bool()
            other = (mask >= 1) & (mask <= 10) & (mask != v)
            assert not bool((grown & other).any())


def _ink_crop(img: np.ndarray) -> bytes:
    ys, xs = np.nonzero(img)
    return img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].tobytes()


def test_train_canvases_use_train_digits_and_labels_are_digit_plus_one():
    # scale 1 and one digit per canvas: each canvas holds one mnist5k digit unchanged, found by its ink
    mnist = load_dataset("mnist5k")
    index = {}
    for split, part in (("train", mnist.train), ("test", mnist.test)):
        for img, label in zip(part.images[:, 0].numpy(), part.labels.tolist(), strict=True):
            index.setdefault(_ink_crop(img), set()).add((split, label))
    train, test = digits_segmentation(num_train=15, num_test=15, min_digits=1, max_digits=1, min_scale=1.0,
                                      max_scale=1.0)
    for ds, split in ((train, "train"), (test, "test")):
        for img, mask in zip(ds.images[:, 0].numpy(), ds.masks.long(), strict=True):
            found = index[_ink_crop(img)]
            assert {s for s, _ in found} == {split}
            digit = next(iter(found))[1]
            assert set(mask.unique().tolist()) == {0, digit + 1, 255}


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="unknown digits-segmentation setting"):
        digits_segmentation(canvass=64)
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        digits_segmentation(min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="unknown segmentation dataset"):
        load_segmentation_data("digits-segmentaton")


def _palette_png(path, labels: np.ndarray) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(voc_colormap().reshape(-1).tolist())
    im.save(path)


def _voc_folder(root):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    masks = {"2007_000032": np.array([[0, 0, 1, 1, 255], [0, 15, 15, 255, 0], [20, 20, 0, 0, 0], [0, 0, 0, 0, 1]]),
             "2007_000039": np.array([[255, 255, 0, 0, 0], [7, 7, 7, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 3, 3]])}
    for image_id, labels in masks.items():
        Image.fromarray(np.full((4, 5, 3), 100, dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        _palette_png(root / "SegmentationClass" / f"{image_id}.png", labels)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000039\n")
    return masks


def test_voc_reader_reads_palette_indices_as_labels(tmp_path):
    masks = _voc_folder(tmp_path)
    train, val = load_segmentation_data(f"voc:{tmp_path}")
    assert len(train.classes) == 21 and train.classes[0] == "background" and train.classes[15] == "person"
    assert train.ids == ["2007_000032"] and val.ids == ["2007_000039"]
    image, mask = train[0]
    assert image.shape == (3, 4, 5) and image.dtype == torch.uint8
    assert mask.tolist() == masks["2007_000032"].tolist()
    assert val[0][1].tolist() == masks["2007_000039"].tolist()
    # the same mask saved as RGB colours reads back to the same labels
    rgb = Image.open(tmp_path / "SegmentationClass" / "2007_000032.png").convert("RGB")
    rgb.save(tmp_path / "SegmentationClass" / "2007_000032.png")
    assert train[0][1].tolist() == masks["2007_000032"].tolist()


def test_voc_reader_errors(tmp_path):
    _voc_folder(tmp_path)
    with pytest.raises(ValueError, match="no segmentation split 'trainval'.*train, val"):
        load_voc_segmentation(tmp_path, "trainval")
    _palette_png(tmp_path / "SegmentationClass" / "2007_000032.png", np.full((4, 5), 30))
    with pytest.raises(ValueError, match=r"label\(s\) \[30\]; valid: 0..20 and 255"):
        load_voc_segmentation(tmp_path, "train")[0]
    with pytest.raises(ValueError, match="not a Pascal VOC segmentation folder"):
        load_voc_segmentation(tmp_path / "JPEGImages", "train")


def _pairs_folder(root, masks: dict):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, labels in masks.items():
        Image.fromarray(np.full((*labels.shape, 3), 50, dtype=np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(labels.astype(np.uint8), mode="L").save(root / "masks" / f"{name}.png")


def test_pairs_folder_reader(tmp_path):
    a = np.array([[0, 1, 1], [2, 255, 0]])
    b = np.array([[0, 0, 0], [0, 0, 3]])
    _pairs_folder(tmp_path / "train", {"a": a, "b": b})
    _pairs_folder(tmp_path / "val", {"c": a})
    train, val = load_segmentation_data(f"pairs:{tmp_path}")
    assert train.ids == ["a", "b"] and train.classes == ["0", "1", "2", "3"]  # largest label 3 (255 ignored)
    assert train[0][1].tolist() == a.tolist() and train[1][1].tolist() == b.tolist()
    assert val.classes == train.classes and val[0][1].tolist() == a.tolist()
    (tmp_path / "train" / "classes.txt").write_text("sky\nroad\ncar\nperson\n")
    assert load_mask_folder(tmp_path / "train").classes == ["sky", "road", "car", "person"]


def test_pairs_folder_errors(tmp_path):
    _pairs_folder(tmp_path, {"a": np.zeros((2, 3))})
    Image.fromarray(np.zeros((2, 3, 3), dtype=np.uint8)).save(tmp_path / "images" / "lonely.png")
    with pytest.raises(ValueError, match="1 image.*no mask.*lonely.png"):
        load_mask_folder(tmp_path)
    (tmp_path / "images" / "lonely.png").unlink()
    Image.fromarray(np.zeros((2, 3, 3), dtype=np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match="RGB image; a mask must be single-channel"):
        load_mask_folder(tmp_path, classes=["x", "y"])[0]
