"""The COCO-format reader on a tiny folder written here, and COCO AP against pycocotools run the standard way."""

import builtins
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.detection.coco import coco_ap, load_coco
from cnnzoo.detection.data import load_detection_data
from cnnzoo.detection.proposals import MissingExtraError

# two 128 x 128 images, categories with COCO's id gaps (3 = cat, 7 = dog), three annotations, one of them a crowd.
# Areas are the annotated (segmentation) areas, which COCO's small / medium / large ranges use, not w * h.
INSTANCES = {
    "images": [{"id": 10, "file_name": "a.png", "width": 128, "height": 128},
               {"id": 11, "file_name": "b.png", "width": 128, "height": 128}],
    "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [2, 3, 10, 5], "area": 45.0, "iscrowd": 0},  # small
        {"id": 2, "image_id": 10, "category_id": 7, "bbox": [20, 20, 100, 100], "area": 9800.0, "iscrowd": 0},  # large
        {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 60, 60], "area": 3000.0, "iscrowd": 1},
    ],
}


def write_coco(folder, images="images", name="instances.json", instances=INSTANCES):
    images = folder / images
    images.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(instances["images"]):
        Image.fromarray(np.full((128, 128, 3), 40 * k, dtype=np.uint8)).save(images / im["file_name"])
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(instances))
    return images, path


def test_reader_boxes_labels_and_crowds(tmp_path):
    images, ann = write_coco(tmp_path)
    ds = load_coco(images, ann)
    assert len(ds) == 2 and ds.ids == ["10", "11"] and ds.in_channels == 3
    assert ds.classes == ["cat", "dog"]  # by increasing category id: 3 -> label 0, 7 -> label 1
    # [x, y, w, h] -> (x, y, x + w, y + h)
    assert torch.equal(ds.boxes[0], torch.tensor([[2.0, 3, 12, 8], [20, 20, 120, 120]]))
    assert ds.labels[0].tolist() == [0, 1] and ds.difficult[0].tolist() == [False, False]
    assert torch.equal(ds.boxes[1], torch.tensor([[0.0, 0, 60, 60]]))
    assert ds.labels[1].tolist() == [0] and ds.difficult[1].tolist() == [True]  # the crowd: kept, ignored
    assert ds.image(1).shape == (3, 128, 128) and int(ds.image(1)[0, 0, 0]) == 40
    assert load_coco(images, ann, in_channels=1).image(0).shape == (1, 128, 128)
    assert ds.meta["coco"]["category_ids"] == [3, 7] and ds.meta["coco"]["areas"][0] == [45.0, 9800.0]


def test_reader_errors_are_one_clear_line(tmp_path):
    images, ann = write_coco(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_coco(images, tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="lack annotations, categories"):
        load_coco(images, tmp_path / "partial.json")
    broken = json.loads(json.dumps(INSTANCES))
    broken["annotations"][0]["category_id"] = 99
    (tmp_path / "cat.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="category 99"):
        load_coco(images, tmp_path / "cat.json")
    (images / "b.png").unlink()
    with pytest.raises(ValueError, match="b.png.* does not exist"):
        load_coco(images, ann)


def test_coco_folder_through_load_detection_data(tmp_path):
    root = tmp_path / "coco"
    for split in ("train2017", "val2017"):  # the COCO 2017 layout
        write_coco(root, images=split, name=f"annotations/instances_{split}.json")
    train, test = load_detection_data(f"coco:{root}")
    assert len(train) == len(test) == 2 and train.classes == test.classes == ["cat", "dog"]
    assert train.meta["split"] == "train2017" and test.meta["split"] == "val2017"
    with pytest.raises(ValueError, match="no split 'test2017'.*splits there: train2017, val2017"):
        load_detection_data(f"coco:{root}", {"test_split": "test2017"})
    with pytest.raises(ValueError, match="unknown COCO setting"):
        load_detection_data(f"coco:{root}", {"classes": ["cat"]})
    with pytest.raises(ValueError, match="valid: digits-detection or voc:PATH .* coco:PATH"):
        load_detection_data("cocoa")


def _hand_detections():
    # dataset labels: 0 = cat, 1 = dog
    img10 = (torch.tensor([[2.0, 3, 12, 8],  # the cat exactly
                           [3.0, 3, 12, 8],  # IoU 0.9 with it, scored higher: the match up to IoU 0.9, then false
                           [25.0, 25, 120, 120],  # the dog, IoU 9025 / 10000 = 0.9025
                           [60.0, 60, 80, 80]]),  # a false dog (IoU 0.04), scored above the true one
             torch.tensor([0.9, 0.95, 0.8, 0.85]), torch.tensor([0, 0, 1, 1]))
    img11 = (torch.tensor([[0.0, 0, 50, 50],  # on the crowd: ignored
                           [5.0, 5, 30, 30]]),  # a dog where there is none
             torch.tensor([0.7, 0.5]), torch.tensor([0, 1]))
    return [img10, img11]


def _standard_stats(ann_path, results):
    """pycocotools the way its README runs it: COCO(json file), loadRes, COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_coco_ap_equals_pycocotools_run_the_standard_way(tmp_path):
    pytest.importorskip("pycocotools")
    images, ann = write_coco(tmp_path)
    ds = load_coco(images, ann)
    dets = _hand_detections()
    cat_id = {0: 3, 1: 7}
    results = [{"image_id": image_id, "category_id": cat_id[int(lab)], "score": float(s),
                "bbox": [x1, y1, x2 - x1, y2 - y1]}
               for image_id, (boxes, scores, labels) in zip((10, 11), dets)
               for (x1, y1, x2, y2), s, lab in zip(boxes.tolist(), scores.tolist(), labels.tolist())]
    stats = _standard_stats(ann, results)
    ours = coco_ap(dets, ds)
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert list(ours) == names
    for name, ref in zip(names, stats):
        if ref < 0:  # no ground truth in that range (no medium objects here): COCOeval's -1
            assert math.isnan(ours[name]), name
        else:
            assert ours[name] == pytest.approx(ref, abs=1e-12), name
    assert 0 < ours["AP"] < ours["AP50"] < 1 and math.isnan(ours["APm"])
    # a detector's dicts with labels 1..C give the same numbers
    as_dicts = [{"boxes": b, "scores": s, "labels": lab + 1} for b, s, lab in dets]
    assert coco_ap(as_dicts, ds, label_offset=1) == pytest.approx(ours, nan_ok=True)


def test_coco_ap_perfect_and_empty_detections(tmp_path):
    pytest.importorskip("pycocotools")
    images, ann = write_coco(tmp_path)
    ds = load_coco(images, ann)
    perfect = [(ds.boxes[i], torch.ones(len(ds.boxes[i])), ds.labels[i]) for i in range(len(ds))]
    out = coco_ap(perfect, ds)
    assert [out[k] for k in ("AP", "AP50", "AP75", "APs", "APl")] == pytest.approx([1.0] * 5, abs=1e-12)
    empty = [(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))] * 2
    assert coco_ap(empty, ds)["AP"] == 0.0
    with pytest.raises(ValueError, match="labels of image 0 must be 0..1"):
        coco_ap([(torch.zeros(1, 4), torch.ones(1), torch.tensor([2]))] + empty[:1], ds)


def test_reader_works_and_ap_names_the_extra_without_pycocotools(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_pycocotools(name, *args, **kwargs):
        if name.startswith("pycocotools"):
            raise ImportError("No module named 'pycocotools'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pycocotools)
    images, ann = write_coco(tmp_path)
    ds = load_coco(images, ann)
    assert len(ds) == 2
    with pytest.raises(MissingExtraError, match=r"pip install 'cnnzoo\[coco\]'"):
        coco_ap(_hand_detections(), ds)


def test_coco_folder_records_params_that_read_it_again(tmp_path):
    root = tmp_path / "coco"
    for split in ("train2017", "val2017"):
        write_coco(root, images=split, name=f"annotations/instances_{split}.json")
    train, test = load_detection_data(f"coco:{root}")
    again = load_detection_data(train.meta["name"], train.meta["params"])
    assert again[0].fingerprint() == train.fingerprint() and again[1].fingerprint() == test.fingerprint()
