"""One-stage detection runs (`cnnzoo.detection.train`): a resumed run is bit-identical to an uninterrupted one, the
run and its checkpoints record what eval/predict and `create_detector(name, weights=FILE)` need, targets are the
dataset's boxes (scaled with the image) with labels + 1, and the metrics are the VOC AP of the detections, computed
here independently of the trainer's evaluation path."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.detection.data import DetectionDataset, digits_detection
from cnnzoo.detection.registry import create_detector
from cnnzoo.detection.train import (
    DetConfig,
    DetTrainer,
    _augment,
    default_det_config,
    evaluate_det_run,
    load_det_run,
    materialise,
)
from cnnzoo.detection.voc_eval import evaluate_detections
from cnnzoo.registry import UnknownModelError
from cnnzoo.train.engine import TrainingInterrupted

DATA = {"num_train": 16, "num_test": 8}
#: tiny variants of each family (the recipe's options, then these)
TINY = {"yolo_v1": {"width_mult": 1 / 16, "fc_hidden": 32},
        "ssd300_vgg16": {"width_mult": 0.0625, "levels": 3},
        "retinanet_resnet50_fpn": {"fpn_channels": 16}}


def tiny(name: str = "yolo_v1", **over) -> DetConfig:
    """2 epochs of 2 batches of 8 on 16 canvases; YOLO keeps its dropout (the global RNG state matters on resume)
    and is given flips and jitter (the augmentation's draws must repeat on resume too)."""
    kw = {"options": TINY[name], "data_params": DATA, "epochs": 2, "batch_size": 8, "limit_batches": 2,
          "input_size": 128}
    if name == "yolo_v1":
        kw.update(hflip=True, jitter=0.2)
    return default_det_config(name, **{**kw, **over})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last.safetensors"))


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def epochs(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, DetTrainer]:
    """An uninterrupted 2-epoch YOLO v1 run, and its trainer (the trained network in memory)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    trainer = DetTrainer(tiny(), run_dir=run, verbose=False)
    trainer.fit()
    return run, trainer


@pytest.fixture(scope="module")
def retina(tmp_path_factory) -> tuple[Path, DetTrainer]:
    run = tmp_path_factory.mktemp("retina") / "run"
    trainer = DetTrainer(tiny("retinanet_resnet50_fpn", epochs=1, lr=3e-3), run_dir=run, verbose=False)
    trainer.fit()
    return run, trainer


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("stop_at", [(0, 0), pytest.param((1, 0), marks=pytest.mark.slow)],
                         ids=["mid-epoch-1", "mid-epoch-2"])
def test_a_run_stopped_mid_epoch_resumes_bit_identically(straight, tmp_path, stop_at):
    run = tmp_path / "run"

    def stop(trainer, epoch, batch):
        if (epoch, batch) == stop_at:
            trainer.request_stop()  # what the SIGINT/SIGTERM handler does

    with pytest.raises(TrainingInterrupted, match="detect train --resume"):
        DetTrainer(tiny(), run_dir=run, callbacks=[stop], verbose=False).fit()
    e, b = stop_at
    assert json.loads((run / "checkpoints" / "last.json").read_text())["tag"] == f"e{e:04d}-b{b + 1:06d}"
    DetTrainer(resume=run, verbose=False).fit()
    assert same(weights(run), weights(straight[0]))
    assert [r["epoch"] for r in epochs(run)] == [1, 2]
    assert epochs(run)[1]["train_loss"] == epochs(straight[0])[1]["train_loss"]


@pytest.mark.slow
def test_resume_with_more_epochs_is_bit_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    DetTrainer(tiny(), run_dir=a, verbose=False).fit()
    DetTrainer(tiny(epochs=1), run_dir=b, verbose=False).fit()
    DetTrainer(resume=b, epochs=2, verbose=False).fit()  # a constant rate: the recipe's schedule "none"
    assert same(weights(a), weights(b))


def test_a_finished_run_is_never_overwritten(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight[0], run)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ValueError, match="already holds a run; resume it with `cnnzoo detect train --resume"):
        DetTrainer(tiny(), run_dir=run, verbose=False)
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before


# ------------------------------------------------------------------------------------------------ the record
def test_the_run_and_checkpoint_record_what_eval_and_predict_need(straight):
    run, _ = straight
    info = json.loads((run / "run.json").read_text())
    train, test = digits_detection(**DATA)
    px = np.stack([im.numpy() for im in train.images]).astype(np.float64) / 255.0  # statistics recomputed
    assert info["normalisation"]["mean"] == pytest.approx([px.mean()], rel=1e-9)
    assert info["normalisation"]["std"] == pytest.approx([px.std(ddof=1)], rel=1e-9)
    assert info["kind"] == "detection" and info["input_size"] == 128
    # YOLO v1's classifier has the 10 classes themselves (no background column); its input size is the run's
    assert info["model"]["options"] == {"input_size": 128, "width_mult": 1 / 16, "fc_hidden": 32, "in_channels": 1,
                                        "num_classes": 10}
    d = info["data"]
    assert d["classes"] == [str(k) for k in range(10)] and d["test_fingerprint"] == test.fingerprint()
    assert (d["num_train"], d["num_test"], d["params"]["seed"]) == (16, 8, 0)
    assert info["augmentation"] == {"hflip": True, "jitter": 0.2, "ssd_paper_augmentation": False}
    # darknet's VOC evaluation settings for YOLO v1, not its detect() default of 0.2
    assert info["evaluation"]["detect"] == {"score_thresh": 0.001, "nms_thresh": 0.5, "max_detections": 100}
    meta = load_det_run(run).meta
    assert meta["format"] == "cnnzoo-detection" and meta["model"] == "yolo_v1" and meta["epoch"] == 2
    assert (meta["num_classes"], meta["in_channels"], meta["input_size"]) == (10, 1, 128)
    assert meta["classes"] == d["classes"] and meta["mean"] == info["normalisation"]["mean"]
    assert meta["std"] == info["normalisation"]["std"] and meta["options"] == info["model"]["options"]


@pytest.mark.parametrize("name, columns", [("ssd300_vgg16", 11), ("retinanet_resnet50_fpn", 11)])
def test_background_column_families_get_c_plus_1_classes(tmp_path, name, columns):
    """SSD's softmax has the background at column 0 and RetinaNet's sigmoid an unused column 0 (torchvision): 10
    digits -> 11 columns."""
    t = DetTrainer(tiny(name, input_size=64), run_dir=tmp_path / "r", verbose=False)
    t.close()
    assert t.options["num_classes"] == columns and t.model.num_classes == columns


def test_a_checkpoint_rebuilds_the_trained_detector_with_no_options(straight, retina):
    for run, trainer in (straight, retina):
        name = trainer.cfg.model
        net = create_detector(name, weights=str(run / "checkpoints" / "last.safetensors")).eval()
        x = torch.randn(2, 1, 128, 128)
        trainer.model.eval()
        with torch.no_grad():
            a, b = net(x), trainer.model(x)
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)


def test_targets_are_the_boxes_scaled_with_the_image_and_labels_plus_1(tmp_path):
    t = DetTrainer(tiny("ssd300_vgg16", input_size=64, hflip=False, jitter=0.0), run_dir=tmp_path / "r",
                   verbose=False)
    t.close()
    train, _ = digits_detection(**DATA)
    idx = torch.tensor([3, 0])
    x, targets = t._targets(idx)
    assert x.shape == (2, 1, 64, 64)
    for k, i in enumerate(idx.tolist()):
        assert torch.equal(targets[k]["labels"], train.labels[i] + 1)  # the detectors' 1..C
        assert torch.allclose(targets[k]["boxes"], train.boxes[i] / 2)  # 128 -> 64


def test_materialise_scales_boxes_by_each_side():
    img = torch.zeros(1, 50, 100, dtype=torch.uint8)  # H 50, W 100
    ds = DetectionDataset(classes=["a"], boxes=[torch.tensor([[10.0, 5.0, 60.0, 25.0]])],
                          labels=[torch.tensor([0])], difficult=[torch.tensor([False])], ids=["x"], in_channels=1,
                          images=[img])
    images, boxes, _, scale = materialise(ds, 20)
    assert images.shape == (1, 1, 20, 20) and scale == [(0.2, 0.4)]
    assert boxes[0].tolist() == [[2.0, 2.0, 12.0, 10.0]]  # x by 20/100, y by 20/50, by hand


def test_augmentation_moves_the_boxes_with_the_pixels():
    """A white rectangle drawn at its box: after scaling/translation and flips the white pixels' extent is the
    transformed box (to a pixel), for any draw."""
    s = 64
    x = torch.zeros(4, 1, s, s)
    box = torch.tensor([[20.0, 12.0, 40.0, 30.0]])
    x[:, :, 12:30, 20:40] = 255.0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        y, boxes, _ = _augment(x, [box] * 4, [torch.tensor([0])] * 4, rng, hflip=True, jitter=0.2)
        for k in range(4):
            if len(boxes[k]) == 0:
                continue
            ys, xs = torch.nonzero(y[k, 0] > 127.5, as_tuple=True)
            ink = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            assert boxes[k][0].tolist() == pytest.approx(ink, abs=1.01)


def test_hflip_alone_mirrors_the_box():
    x = torch.arange(100.0).view(1, 1, 10, 10)
    for seed in range(20):  # find a draw that flips
        y, boxes, _ = _augment(x, [torch.tensor([[1.0, 2.0, 4.0, 6.0]])], [torch.tensor([0])],
                               np.random.default_rng(seed), hflip=True, jitter=0.0)
        if boxes[0][0, 0] != 1.0:
            assert boxes[0].tolist() == [[6.0, 2.0, 9.0, 6.0]]  # x -> 10 - x, by hand
            assert torch.equal(y, x.flip(-1))
            return
        assert torch.equal(y, x)
    pytest.fail("no flip in 20 draws of p = 0.5")


# ------------------------------------------------------------------------------------------------ evaluation
def test_eval_metrics_equal_voc_eval_on_detections_computed_here(retina):
    """The run's mAP (both AP variants) equals `voc_eval` on detections made here by hand: the checkpoint rebuilt by
    the registry, the test canvases normalised with the recorded statistics, labels - 1."""
    run, _ = retina
    r = evaluate_det_run(run, score_thresh=0.0)  # everything the detector keeps: a non-trivial AP
    info = json.loads((run / "run.json").read_text())
    net = create_detector("retinanet_resnet50_fpn", weights=str(run / "checkpoints" / "last.safetensors")).eval()
    _, test = digits_detection(**DATA)
    mean, std = info["normalisation"]["mean"][0], info["normalisation"]["std"][0]
    x = (torch.stack(test.images).float() / 255.0 - mean) / std
    dets = net.detect(x, score_thresh=0.0)
    want = evaluate_detections([(d["boxes"], d["scores"], d["labels"] - 1) for d in dets], test.boxes, test.labels,
                               test.difficult, test.classes)
    assert want.map > 0
    assert r["mAP"] == pytest.approx(want.map, abs=1e-12) and r["mAP_11point"] == pytest.approx(want.map11, abs=1e-12)
    for c, ap in zip(test.classes, want.ap):
        got = r["classes"][c]["ap"]
        assert (got is None and math.isnan(ap)) or got == pytest.approx(ap, abs=1e-12)
    # the run's own evaluation (RetinaNet Sec. 4: score 0.05) is what eval.json holds
    saved = json.loads((run / "eval.json").read_text())
    assert evaluate_det_run(run)["mAP"] == saved["mAP"] and saved["detect"]["score_thresh"] == 0.05
    pytest.importorskip("pycocotools")
    assert 0.0 <= r["coco"]["AP"] <= r["coco"]["AP50"] <= 1.0


# ------------------------------------------------------------------------------------------------ config errors
def test_config_errors_name_the_setting_and_what_is_valid():
    with pytest.raises(UnknownModelError, match="Did you mean: ssd300_vgg16"):
        default_det_config("ssd300_vgg")
    with pytest.raises(ValueError, match="jitter must be a fraction in"):
        tiny(jitter=1.5)
    with pytest.raises(ValueError, match="schedule must be one of none, cosine, poly"):
        tiny(schedule="step")
    with pytest.raises(ValueError, match="unknown detection setting 'holdout_fraction'"):
        default_det_config("yolo_v1", holdout_fraction=0.1)
    with pytest.raises(ValueError, match="must equal the run's input size"):
        default_det_config("yolo_v1", input_size=96, options={"input_size": 128})
    assert default_det_config("yolo_v1", options={"input_size": 96}).input_size == 96  # -o alone sets both
    assert default_det_config("yolo_v1", input_size=96).options["input_size"] == 96
    with pytest.raises(ValueError, match="num_classes come"):
        DetTrainer(tiny(options={"num_classes": 3}), run_dir="/nonexistent/never", verbose=False)


def test_without_pycocotools_coco_ap_is_left_out_with_a_note(retina, monkeypatch):
    from cnnzoo.detection import coco
    from cnnzoo.detection.proposals import MissingExtraError

    def missing():
        raise MissingExtraError("COCO AP needs pycocotools, which is not installed")

    monkeypatch.setattr(coco, "_pycocotools", missing)
    r = evaluate_det_run(retina[0])
    assert r["coco"] is None and "pycocotools" in r["coco_note"]
    assert r["mAP"] == json.loads((retina[0] / "eval.json").read_text())["mAP"]  # VOC AP unchanged
