"""`cnnzoo segment train|eval|predict|sample` through `cnnzoo.cli.main.main`: a train -> eval -> predict round trip,
eval's JSON, and the bad-input battery (each case: exit 2, one error line naming what was wrong and what is valid,
every file of the workspace, the run directory included, byte-identical afterwards)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

import test_cli_errors
from test_cli_errors import Case, assert_one_clear_error, run_cli, snapshot

ws = test_cli_errors.ws  # the battery's fixture: the user's working directory (cases run from it)

TINY = ["-o", "base_channels=4", "--data-param", "num_train=16", "--data-param", "num_test=8", "--batch-size", "8",
        "--limit-batches", "2", "--lr", "0.003", "-q"]
TRAIN = ["segment", "train", "unet_padded", *TINY]
METRICS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> Path:
    """A finished 2-epoch run of a 4-channel padded U-Net on 16 digits-segmentation canvases."""
    run = tmp_path_factory.mktemp("seg") / "run"
    code, out, err = run_cli([*TRAIN, "--epochs", "2", "--run-dir", str(run)])
    assert code == 0, out + err
    assert "mean IU" in out and str(run) in out
    return run


def test_train_eval_predict_round_trip(seg_run, ws):
    assert {p.name for p in seg_run.iterdir()} >= {"run.json", "config.yaml", "metrics.csv", "metrics.jsonl",
                                                   "checkpoints", "eval.json"}
    rows = [json.loads(x) for x in (seg_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all({"train_loss", "test_pixel_acc", "test_mean_iu"} <= r.keys()
                                                        for r in rows)
    code, out, err = run_cli(["segment", "eval", str(seg_run)])
    assert code == 0, err
    assert f"checkpoint: {seg_run / 'checkpoints' / 'last-e0002-b000000.safetensors'} (epoch 2" in out
    for word in ("pixel acc", "mean acc", "mean IU", "f.w. IU", "background", "IoU"):
        assert word in out
    mean_iu = json.loads((seg_run / "eval.json").read_text())["mean_iu"]
    assert f"{100 * mean_iu:.2f}%" in out  # the run's own figure
    # an image to segment: test canvas 0, as `segment sample` writes it
    code, out, err = run_cli(["segment", "sample", "--index", "0", "--out", "canvas.png"])
    assert code == 0, err
    assert Image.open(ws / "canvas.png").size == (64, 64)
    code, out, err = run_cli(["segment", "predict", str(seg_run), "canvas.png", "--output", "overlay.png"])
    assert code == 0, err
    assert "drawn to overlay.png" in out and "legend:" in out
    with Image.open(ws / "overlay.png") as im:
        assert im.format == "PNG" and im.size[0] > 400
    first = (ws / "overlay.png").read_bytes()
    before = snapshot(ws)
    code, out, err = run_cli(["segment", "predict", str(seg_run), "canvas.png", "--output", "overlay.png"])
    assert_one_clear_error(code, out, err, ("overlay.png exists", "--force"))
    assert snapshot(ws) == before
    code, out, err = run_cli(["segment", "predict", str(seg_run), "canvas.png", "--output", "overlay.png", "--force"])
    assert code == 0, err
    assert (ws / "overlay.png").read_bytes() == first  # the same run and image: the same picture
    code, out, err = run_cli(["segment", "predict", str(seg_run), "canvas.png"])  # default name, in the cwd
    assert code == 0 and (ws / "canvas_segmentation.png").is_file(), err


def test_eval_json_has_the_four_metrics_and_per_class_iou(seg_run):
    code, out, err = run_cli(["segment", "eval", str(seg_run), "--format", "json"])
    assert code == 0, err
    r = json.loads(out)
    assert set(METRICS) | {"per_class_iou", "per_class_accuracy", "confusion", "classes", "checkpoint", "epoch",
                           "model", "dataset", "num_images"} <= r.keys()
    assert list(r["per_class_iou"]) == ["background"] + [str(k) for k in range(10)]
    saved = json.loads((seg_run / "eval.json").read_text())
    assert all(r[k] == saved[k] for k in METRICS) and r["num_images"] == 8 and r["model"] == "unet_padded"
    # FCN Sec. 5 from the printed confusion matrix, by hand: pixel accuracy = trace / total
    hist = r["confusion"]
    assert r["pixel_accuracy"] == pytest.approx(sum(hist[i][i] for i in range(11)) / sum(map(sum, hist)))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_weights(ws: Path) -> None:
    for f in (ws / "run" / "checkpoints").glob("last-e*.safetensors"):
        _truncate(f)


def _damage_state(ws: Path) -> None:
    for f in (ws / "run" / "checkpoints").glob("last-e*.state.pt"):
        _truncate(f)


def _write(name: str, content: str):
    def setup(ws: Path) -> None:
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(content)

    return setup


CASES = [
    # --- train: names, options, data
    Case("train-unknown-network", ["segment", "train", "unet_paded", *TINY],
         ("unknown segmentation network 'unet_paded'", "Did you mean", "unet_padded")),
    Case("train-unknown-option", ["segment", "train", "unet_padded", "-o", "base_channel=4", "-q"],
         ("unknown option(s) base_channel", "valid:", "base_channels")),
    Case("train-bad-option-value", ["segment", "train", "unet_padded", "-o", "base_channels=-1", "-q"],
         ("base_channels must be an integer >= 1",)),
    Case("train-option-not-pair", ["segment", "train", "unet_padded", "-o", "base_channels", "-q"],
         ("is not KEY=VALUE",)),
    Case("train-unknown-data", ["segment", "train", "unet_padded", "--data", "digits", "-q"],
         ("unknown segmentation dataset 'digits'", "digits-segmentation", "voc:PATH", "pairs:PATH")),
    Case("train-data-empty", ["segment", "train", "unet_padded", "--data", "", "-q"], ("--data is empty",)),
    Case("train-voc-missing", ["segment", "train", "unet_padded", "--data", "voc:nowhere", "-q"],
         ("is not a Pascal VOC segmentation folder",)),
    Case("train-unknown-data-param", ["segment", "train", "unet_padded", "--data-param", "num_trian=3", "-q"],
         ("unknown digits-segmentation setting", "num_train")),
    Case("train-data-param-not-pair", ["segment", "train", "unet_padded", "--data-param", "num_train", "-q"],
         ("--data-param 'num_train' is not KEY=VALUE",)),
    Case("train-lr-nan", ["segment", "train", "unet_padded", "--lr", "nan"], ("--lr must be a finite number",)),
    Case("train-epochs-zero", ["segment", "train", "unet_padded", "--epochs", "0"], ("--epochs", "at least 1")),
    Case("train-too-small-for-valid-unet", ["segment", "train", "unet", "-o", "depth=4", *TINY],
         ("needs inputs of at least 188x188", "--input-size 188")),
    Case("train-no-name", ["segment", "train", "-q"], ("give a segmentation network NAME", "--resume")),
    Case("train-run-dir-empty", ["segment", "train", "unet_padded", "--run-dir", "", "-q"], ("--run-dir is empty",)),
    Case("train-into-user-dir", ["segment", "train", "unet_padded", *TINY, "--run-dir", "empty2"],
         ("is not empty and is not a cnnzoo run", "afile"), setup=_write("empty2/afile", "mine\n")),
    Case("train-over-a-finished-run", [*TRAIN, "--run-dir", "run"],
         ("already holds a run", "cnnzoo segment train --resume run"), run=True),
    # --- resume
    Case("resume-missing", ["segment", "train", "--resume", "nowhere"], ("does not exist",)),
    Case("resume-not-a-run", ["segment", "train", "--resume", "empty"], ("not a cnnzoo run directory",)),
    Case("resume-with-a-name", ["segment", "train", "unet_padded", "--resume", "run"], ("give only the run directory",),
         run=True),
    Case("resume-fewer-epochs", ["segment", "train", "--resume", "run", "--epochs", "1", "-q"],
         ("already trained 2 epoch", "--epochs above 1"), run=True),
    Case("resume-damaged-state", ["segment", "train", "--resume", "run", "--epochs", "3", "-q"],
         ("training state", "truncated or damaged"), run=True, setup=_damage_state),
    # --- eval
    Case("eval-missing", ["segment", "eval", "nowhere"], ("'nowhere' does not exist",)),
    Case("eval-not-a-run", ["segment", "eval", "empty"], ("not a cnnzoo run directory",)),
    Case("eval-classification-run", ["segment", "eval", "crun"], ("is a classification run", "cnnzoo eval"),
         setup=_write("crun/run.json", '{"cnnzoo_version": "0.1.0"}')),
    Case("eval-damaged-weights", ["segment", "eval", "run"], ("not a readable safetensors file",), run=True,
         setup=_damage_weights),
    Case("eval-no-best", ["segment", "eval", "run", "--checkpoint", "best"],
         ("no best checkpoint", "--holdout-fraction"), run=True),
    # --- predict
    Case("predict-unreadable-image", ["segment", "predict", "run", "afile.txt", "--output", "o.png"],
         ("afile.txt is not an image Pillow can read",), run=True),
    Case("predict-missing-image", ["segment", "predict", "run", "nope.png"], ("image 'nope.png' does not exist",),
         run=True),
    Case("predict-output-suffix", ["segment", "predict", "run", "digit.png", "--output", "o.txt"],
         ("--output", "must end in", ".png"), run=True),
    Case("predict-output-exists", ["segment", "predict", "run", "digit.png", "--output", "afile.png"],
         ("afile.png exists", "--force"), run=True, setup=_write("afile.png", "not a picture\n")),
    Case("predict-two-images-one-output", ["segment", "predict", "run", "digit.png", "digit.png", "--output", "o.png"],
         ("--output names one file but 2 images",), run=True),
    Case("predict-not-a-run", ["segment", "predict", "empty", "digit.png"], ("not a cnnzoo run directory",)),
    Case("predict-alpha-range", ["segment", "predict", "run", "digit.png", "--alpha", "2"], ("--alpha", "in [0, 1]")),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(case: Case, ws: Path, request):
    if case.run:
        shutil.copytree(request.getfixturevalue("seg_run"), ws / "run")
    if case.setup:
        case.setup(ws)
    before = snapshot(ws)
    code, out, err = run_cli(case.argv)
    assert_one_clear_error(code, out, err, case.expect)
    assert snapshot(ws) == before, "the failed command changed the user's files"


def test_a_damaged_pointer_is_read_past_by_eval_and_changes_nothing(seg_run, ws):
    """A pointer is only an index: eval finds the newest complete checkpoint from the files and writes nothing."""
    shutil.copytree(seg_run, ws / "run")
    (ws / "run" / "checkpoints" / "last.json").write_text("{not json")
    before = snapshot(ws)
    code, out, err = run_cli(["segment", "eval", "run", "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["mean_iu"] == json.loads((seg_run / "eval.json").read_text())["mean_iu"]
    assert snapshot(ws) == before


@pytest.mark.slow
def test_sigterm_then_resume_from_the_command_line_is_bit_identical(seg_run, tmp_path):
    """A real signal: SIGTERM once epoch 1 is saved, exit 143 (128 + SIGTERM), `--resume` finishes the run; its
    weights equal the uninterrupted run's."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnzoo", *TRAIN, "--epochs", "2", "--threads", "1",
                             "--run-dir", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal landed")
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "Resume with: cnnzoo segment train --resume" in out
    done = subprocess.run([sys.executable, "-m", "cnnzoo", "segment", "train", "--resume", str(run), "-q"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    a, b = load_file(str(run / "checkpoints" / "last.safetensors")), \
        load_file(str(seg_run / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
