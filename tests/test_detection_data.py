"""The digits-detection generator, the Pascal VOC reader (on a folder written here) and the proposers."""

import builtins
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.detection.bbox import box_iou
from cnnzoo.detection.data import INK, digits_detection, load_detection_data, load_voc
from cnnzoo.detection.proposals import MissingExtraError, selective_search, sliding_windows


@pytest.fixture(scope="module")
def small():
    return digits_detection(num_train=6, num_test=40)


def test_digits_are_deterministic_per_seed(small):
    again = digits_detection(num_train=6, num_test=40)
    assert again[0].fingerprint() == small[0].fingerprint() and again[1].fingerprint() == small[1].fingerprint()
    other = digits_detection(seed=1, num_train=6, num_test=40)
    assert other[0].fingerprint() != small[0].fingerprint()
    # the first test canvases do not depend on how many are drawn
    assert torch.equal(digits_detection(num_train=1, num_test=3)[1].image(2), small[1].image(2))


def test_digit_canvases_hold_2_to_4_disjoint_tight_boxes(small):
    train, test = small
    assert train.classes == [str(i) for i in range(10)] and train.in_channels == 1
    for ds in (train, test):
        for i in range(len(ds)):
            img, boxes = ds.image(i)[0].int(), ds.boxes[i]
            assert img.shape == (128, 128) and 2 <= len(boxes) <= 4
            assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128).all())
            iou = box_iou(boxes, boxes) - torch.eye(len(boxes), dtype=torch.float64)
            assert float(iou.max()) == 0.0
            for x1, y1, x2, y2 in boxes.int().tolist():
                # each edge row/column of a tight box holds ink (noise sigma 8: a 5-sigma margin)
                for edge in (img[y1, x1:x2], img[y2 - 1, x1:x2], img[y1:y2, x1], img[y1:y2, x2 - 1]):
                    assert int(edge.max()) > INK - 40
                # and the ring just outside it holds none
                ring = [img[y1 - 1, x1:x2] if y1 > 0 else None, img[y2, x1:x2] if y2 < 128 else None,
                        img[y1:y2, x1 - 1] if x1 > 0 else None, img[y1:y2, x2] if x2 < 128 else None]
                assert all(int(r.max()) < INK + 40 for r in ring if r is not None)


def test_without_clutter_or_noise_all_ink_lies_in_the_boxes():
    _, test = digits_detection(num_train=1, num_test=5, clutter=0, noise=0.0)
    for i in range(len(test)):
        ink = test.image(i)[0] > INK
        inside = torch.zeros_like(ink)
        for x1, y1, x2, y2 in test.boxes[i].int().tolist():
            inside[y1:y2, x1:x2] = True
        assert int(ink.sum()) > 0 and not bool((ink & ~inside).any())


@pytest.mark.parametrize(("params", "match"), [({"colour": 1}, "unknown digits-detection setting"),
                                               ({"min_digits": 5}, "min_digits <= max_digits"),
                                               ({"num_test": 0}, "num_test >= 1"),
                                               ({"canvas": 40}, "too small")])
def test_digits_settings_are_checked(params, match):
    with pytest.raises(ValueError, match=match):
        digits_detection(**params)


def _write_voc(root):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    objects = {"000001": [("dog", (11, 21, 40, 60), 0), ("cat", (50, 5, 70, 30), 1)],
               "000002": [("cat", (1, 1, 64, 48), 0)]}
    for image_id, objs in objects.items():
        Image.fromarray(np.full((48, 64, 3), 100, dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}"
                      f"</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objs)
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation><filename>{image_id}.jpg</filename>"
                                                              f"{xml}</annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000002\n")


def test_voc_reader(tmp_path):
    _write_voc(tmp_path)
    train, test = load_detection_data(f"voc:{tmp_path}")
    assert train.classes == ["cat", "dog"] and test.classes == ["cat", "dog"]
    assert train.ids == ["000001"] and test.ids == ["000002"]
    # VOC's 1-based inclusive (11, 21)-(40, 60) is the continuous box (10, 20, 40, 60): 30 x 40 pixels
    assert train.boxes[0].tolist() == [[10.0, 20.0, 40.0, 60.0], [49.0, 4.0, 70.0, 30.0]]
    assert train.labels[0].tolist() == [1, 0] and train.difficult[0].tolist() == [False, True]
    assert test.boxes[0].tolist() == [[0.0, 0.0, 64.0, 48.0]]  # the whole 64 x 48 image
    img = train.image(0)
    assert img.dtype == torch.uint8 and img.shape == (3, 48, 64)
    assert load_voc(tmp_path, "trainval", in_channels=1).image(0).shape == (1, 48, 64)


def test_voc_reader_errors(tmp_path):
    _write_voc(tmp_path)
    with pytest.raises(ValueError, match=r"no split 'val'.*splits there: test, trainval"):
        load_voc(tmp_path, "val")
    with pytest.raises(ValueError, match=r"not a Pascal VOC folder.*JPEGImages"):
        load_voc(tmp_path / "Annotations", "test")
    (tmp_path / "Annotations" / "000002.xml").write_text(
        "<annotation><object><name>cat</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>3</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"000002.xml: object 'cat' has xmax < xmin"):
        load_voc(tmp_path, "test")
    (tmp_path / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(ValueError, match="JPEGImages/ has no 000001.jpg"):
        load_voc(tmp_path, "trainval")
    with pytest.raises(ValueError, match="valid: digits-detection or voc:PATH"):
        load_detection_data("kitti:/data")


def test_sliding_windows_by_hand():
    # 32 x 32 image, 16 x 16 windows at stride 8: x, y in {0, 8, 16}: 9 windows
    boxes = sliding_windows(32, 32, sizes=(16,), aspect_ratios=(1.0,), stride=0.5)
    assert len(boxes) == 9
    assert {tuple(b) for b in boxes.tolist()} == {(x, y, x + 16, y + 16) for x in (0, 8, 16) for y in (0, 8, 16)}
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(32, 32, stride=0)


def test_selective_search_without_the_extra_names_it(monkeypatch):
    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(MissingExtraError, match=r"pip install 'cnnzoo\[detection\]'"):
        selective_search(torch.zeros(1, 32, 32, dtype=torch.uint8))


def test_selective_search_recalls_90_percent_of_the_digits(small):
    pytest.importorskip("cv2", reason="selective search needs the extra: pip install 'cnnzoo[detection]'")
    _, test = small
    hit = total = n = 0
    count = 30  # of the 40 (0.3 s each)
    for i in range(count):
        props = selective_search(test.image(i), "fast")
        n += len(props)
        total += len(test.boxes[i])
        hit += int((box_iou(test.boxes[i], props).max(1).values >= 0.5).sum())
    recall, per_image = hit / total, n / count
    print(f"selective search (fast) on {count} digits-detection test images: recall {100 * recall:.1f}% of "
          f"{total} boxes at IoU 0.5 with {per_image:.1f} proposals per image")
    assert recall >= 0.9
    assert per_image <= 100  # a recall that a flood of boxes could not buy


def test_selective_search_checks_its_input():
    pytest.importorskip("cv2", reason="selective search needs the extra: pip install 'cnnzoo[detection]'")
    with pytest.raises(ValueError, match="mode must be one of fast, quality, single"):
        selective_search(torch.zeros(1, 32, 32, dtype=torch.uint8), "slow")
    with pytest.raises(ValueError, match=r"uint8 \(C, H, W\)"):
        selective_search(torch.zeros(32, 32), "fast")
