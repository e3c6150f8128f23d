"""`cnnzoo detect train NAME | eval RUN | predict RUN IMAGE | list` for the one-stage detectors through
`cnnzoo.cli.main.main`: a train -> eval -> predict round trip for SSD, RetinaNet and YOLO v1 (tiny options), eval's
JSON, resume from the command line, R-CNN's path kept, and the bad-input battery (each case: exit 2, one error line
naming what was wrong and what is valid, every file of the workspace byte-identical afterwards)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

import test_cli_errors
from test_cli_errors import Case, assert_one_clear_error, run_cli, snapshot

ws = test_cli_errors.ws  # the battery's fixture: the user's working directory (cases run from it)

COMMON = ["--data-param", "num_train=16", "--data-param", "num_test=8", "--batch-size", "8", "--limit-batches", "2",
          "--input-size", "64", "-q"]
TINY = {"ssd300_vgg16": ["-o", "width_mult=0.0625", "-o", "levels=3"],
        "retinanet_resnet50_fpn": ["-o", "fpn_channels=16"],
        "yolo_v1": ["-o", "width_mult=0.0625", "-o", "fc_hidden=32"]}


def train_argv(name: str, *more: str) -> list[str]:
    return ["detect", "train", name, *TINY[name], *COMMON, *more]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished 2-epoch run of each family on 16 digits-detection canvases at 64 x 64."""
    out = {}
    for name in TINY:
        run = tmp_path_factory.mktemp(name) / "run"
        code, text, err = run_cli([*train_argv(name), "--epochs", "2", "--run-dir", str(run)])
        assert code == 0, text + err
        assert "mAP@0.5" in text and str(run) in text
        out[name] = run
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_train_eval_predict_round_trip(runs, ws, name):
    run = runs[name]
    assert {p.name for p in run.iterdir()} >= {"run.json", "config.yaml", "metrics.csv", "metrics.jsonl",
                                               "checkpoints", "eval.json"}
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "detection" and info["model"]["name"] == name and info["input_size"] == 64
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    saved = json.loads((run / "eval.json").read_text())
    code, out, err = run_cli(["detect", "eval", str(run), "--format", "json"])
    assert code == 0, err
    r = json.loads(out)
    assert (r["mAP"], r["mAP_11point"]) == (saved["mAP"], saved["mAP_11point"]) and r["num_images"] == 8
    assert list(r["classes"]) == [str(k) for k in range(10)] and r["iou_threshold"] == 0.5
    assert {"ap", "ap_11point", "num_gt", "num_detections"} <= r["classes"]["0"].keys()
    assert sum(c["num_gt"] for c in r["classes"].values()) == info["data"]["num_test_objects"]
    if r.get("coco") is None:
        assert "pycocotools" in r["coco_note"]
    code, out, err = run_cli(["detect", "eval", str(run)])
    assert code == 0, err
    assert "AP 11pt" in out and "all-point, the default" in out and f"{100 * saved['mAP']:.1f}" in out
    code, out, err = run_cli(["detect", "sample", "--index", "0", "--out", "canvas.png"])
    assert code == 0, err
    code, out, err = run_cli(["detect", "predict", str(run), "canvas.png", "--output", "boxes.png", "--threshold", "0"])
    assert code == 0, err
    assert "detections scoring above 0" in out and "drawn to boxes.png" in out
    with Image.open(ws / "boxes.png") as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_eval_plot_and_score_threshold(runs, ws):
    run = runs["retinanet_resnet50_fpn"]
    code, out, err = run_cli(["detect", "eval", str(run), "--format", "json", "--score-thresh", "0.0",
                              "--plot", "dets.png", "--plot-images", "2"])
    assert code == 0, err
    r = json.loads(out.split("\ndetections drawn to")[0])
    assert r["detect"]["score_thresh"] == 0.0 and (ws / "dets.png").is_file()
    assert sum(c["num_detections"] for c in r["classes"].values()) > 0


def test_list_names_every_detector_and_rcnn():
    code, out, err = run_cli(["detect", "list"])
    assert code == 0, err
    for name in ("rcnn", "ssd300_vgg16", "ssd512_vgg16", "retinanet_resnet50_fpn", "yolo_v1", "fast_yolo_v1"):
        assert name in out
    assert "digits recipe" in out


def test_resume_from_the_command_line_is_bit_identical(runs, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli([*train_argv("yolo_v1"), "--epochs", "1", "--run-dir", str(run)])
    assert code == 0, err
    code, out, err = run_cli(["detect", "train", "--resume", str(run), "--epochs", "2", "-q"])
    assert code == 0, err
    assert out.startswith("resuming yolo_v1")
    a, b = load_file(str(run / "checkpoints" / "last.safetensors")), \
        load_file(str(runs["yolo_v1"] / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def _copy(name: str):
    def setup(ws: Path, runs: dict) -> None:
        shutil.copytree(runs[name], ws / "run")

    return setup


def _write(name: str, content: str):
    def setup(ws: Path, runs: dict) -> None:
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(content)

    return setup


CASES = [
    Case("train-unknown-name", ["detect", "train", "ssd300", "-q"],
         ("unknown detection method 'ssd300'", "valid: rcnn", "did you mean", "ssd300_vgg16")),
    Case("train-unknown-data", [*train_argv("yolo_v1"), "--data", "digits"],
         ("unknown detection dataset 'digits'", "digits-detection", "voc:PATH")),
    Case("train-data-empty", [*train_argv("yolo_v1"), "--data", ""], ("--data is empty",)),
    Case("train-voc-missing", ["detect", "train", "yolo_v1", "--data", "voc:nowhere", "-q"], ("nowhere",)),
    Case("train-unknown-data-param", [*train_argv("yolo_v1"), "--data-param", "num_trian=3"],
         ("unknown digits-detection setting", "num_train")),
    Case("train-unknown-option", ["detect", "train", "ssd300_vgg16", "-o", "width=2", "-q"],
         ("unknown option(s) width", "width_mult")),
    Case("train-num-classes-option", ["detect", "train", "ssd300_vgg16", "-o", "num_classes=5", "-q"],
         ("num_classes come(s) from the data",)),
    Case("train-jitter-range", [*train_argv("yolo_v1"), "--jitter", "1.5"], ("--jitter", "[0, 1)")),
    Case("train-rcnn-flag-on-onestage", [*train_argv("yolo_v1"), "--iterations", "5"],
         ("--iterations applies to rcnn only",)),
    Case("train-onestage-flag-on-rcnn", ["detect", "train", "rcnn", "--epochs", "3", "-q"],
         ("--epochs applies to the one-stage detectors only",)),
    Case("train-no-name", ["detect", "train", "-q"], ("give a detection method NAME", "--resume")),
    Case("train-into-user-dir", [*train_argv("yolo_v1"), "--run-dir", "mine"],
         ("is not empty and is not a cnnzoo run", "afile"), setup=_write("mine/afile", "mine\n")),
    Case("train-over-a-finished-run", [*train_argv("yolo_v1"), "--run-dir", "run"],
         ("already holds a run", "cnnzoo detect train --resume run"), setup=_copy("yolo_v1")),
    Case("resume-with-flags", ["detect", "train", "--resume", "run", "--lr", "0.1", "--input-size", "32"],
         ("give only the run directory", "--lr", "--input-size"), setup=_copy("yolo_v1")),
    Case("resume-with-a-name", ["detect", "train", "yolo_v1", "--resume", "run"], ("give only the run directory",
                                                                                  "NAME"), setup=_copy("yolo_v1")),
    Case("resume-missing", ["detect", "train", "--resume", "nowhere"], ("does not exist",)),
    Case("resume-fewer-epochs", ["detect", "train", "--resume", "run", "--epochs", "1", "-q"],
         ("already trained 2 epoch", "--epochs above 1"), setup=_copy("yolo_v1")),
    Case("resume-an-rcnn-run", ["detect", "train", "--resume", "rrun"], ("is an R-CNN run",),
         setup=_write("rrun/run.json", '{"kind": "rcnn", "cnnzoo_version": "0.1.0"}')),
    Case("eval-missing", ["detect", "eval", "nowhere"], ("does not exist",)),
    Case("classification-eval-of-a-detection-run", ["eval", "run"],
         ("is a one-stage detection run", "cnnzoo detect eval"), setup=_copy("yolo_v1")),
    Case("segment-eval-of-a-detection-run", ["segment", "eval", "run"],
         ("is a one-stage detection run", "cnnzoo detect eval"), setup=_copy("yolo_v1")),
    Case("eval-rcnn-flag", ["detect", "eval", "run", "--scorer", "svm"], ("--scorer applies to R-CNN runs only",),
         setup=_copy("ssd300_vgg16")),
    Case("eval-score-thresh-nan", ["detect", "eval", "run", "--score-thresh", "nan"],
         ("--score-thresh must be a finite number",), setup=_copy("ssd300_vgg16")),
    Case("predict-output-suffix", ["detect", "predict", "run", "digit.png", "--output", "o.txt"],
         ("--output", ".png"), setup=_copy("ssd300_vgg16")),
    Case("predict-missing-image", ["detect", "predict", "run", "nope.png", "--output", "o.png"],
         ("nope.png", "does not exist"), setup=_copy("ssd300_vgg16")),
    Case("predict-scorer", ["detect", "predict", "run", "img.png", "--output", "o.png", "--scorer", "svm"],
         ("--scorer applies to R-CNN runs only",), setup=_copy("ssd300_vgg16")),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(case: Case, ws: Path, runs):
    if case.setup:
        case.setup(ws, runs)
    if "img.png" in case.argv:
        Image.new("L", (128, 128)).save(ws / "img.png")
    before = snapshot(ws)
    code, out, err = run_cli(case.argv)
    assert_one_clear_error(code, out, err, case.expect)
    assert snapshot(ws) == before, "the failed command changed the user's files"


def test_mosaic_flag_is_recorded_and_refused_on_resume(tmp_path):
    """--mosaic (YOLOv4 Sec. 3.3) reaches the run: its config and run.json say so, and a resume may not change it."""
    run = tmp_path / "run"
    code, text, err = run_cli([*train_argv("yolo_v1"), "--epochs", "1", "--mosaic", "--run-dir", str(run)])
    assert code == 0, text + err
    assert "mosaic" in text
    assert "mosaic: true" in (run / "config.yaml").read_text()
    code, text, err = run_cli(["detect", "train", "--resume", str(run), "--mosaic"])
    assert code == 2 and "--mosaic" in err
