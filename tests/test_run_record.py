"""What a run was trained with travels with it: eval and predict use the run's split, classes, statistics and size.

The folder fixture is real MNIST digits written as PNG files (4 classes); the run uses seed 3, whose stratified split
differs from the default seed's, so a command that re-split with defaults would score other (partly training) images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.cli.main import main
from cnnzoo.data import load_dataset, make_loader
from cnnzoo.data.record import reload_dataset
from cnnzoo.train.checkpoint import load_trained, preprocess_image

DIGITS = np.load(Path(__import__("cnnzoo.data").data.__path__[0]) / "mnist5k.npz")


def _write_digits(root: Path, per_class: int, offset: int = 0) -> Path:
    x, y = DIGITS["images"], DIGITS["labels"]
    for c in range(4):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(y == c)[offset : offset + per_class]:
            Image.fromarray(x[i]).save(root / str(c) / f"{i:04d}.png")
    return root


def _eval_json(target: str, *extra: str, capsys) -> dict:
    capsys.readouterr()
    assert main(["eval", target, "--json", *extra]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def _train_folder_run(base: Path) -> tuple[Path, Path]:
    data = _write_digits(base / "digits", 40)
    run = base / "run"
    assert main(["train", "lenet5", "--data", f"folder:{data}", "--seed", "3", "--epochs", "3", "--batch-size", "32",
                 "--set", "data.input_size=32", "--set", "data.num_workers=0", "--run-dir", str(run), "-q"]) == 0
    return data, run


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    return _train_folder_run(tmp_path_factory.mktemp("record"))


def test_eval_scores_the_runs_own_test_split(folder_run, capsys):
    data, run = folder_run
    default = load_dataset(f"folder:{data}", image_size=32)
    seed3 = load_dataset(f"folder:{data}", image_size=32, seed=3)
    assert default.test.samples != seed3.test.samples  # re-splitting with the default seed would be wrong
    final = json.loads((run / "eval.json").read_text())
    last = _eval_json(str(run / "checkpoints" / "last.safetensors"), capsys=capsys)
    assert last["count"] == final["count"] == 16  # 10% of 40 per class
    assert last["top1"] == final["top1"] and last["loss"] == pytest.approx(final["loss"], rel=1e-6)
    assert last["confusion"] == final["confusion"]
    whole = _eval_json(str(run), capsys=capsys)  # a run directory is evaluated with its last checkpoint: what it
    assert whole["top1"] == final["top1"]  # reported, never a checkpoint chosen on the test split (issue 31)


def test_a_checkpoint_file_alone_carries_what_eval_needs(folder_run, tmp_path, capsys):
    _data, run = folder_run
    lone = tmp_path / "model.safetensors"
    shutil.copy(run / "checkpoints" / "last.safetensors", lone)
    final = json.loads((run / "eval.json").read_text())
    assert _eval_json(str(lone), capsys=capsys)["top1"] == final["top1"]


def test_eval_of_a_run_keeps_its_split_and_statistics_when_images_are_added(tmp_path, capsys):
    data, run = _train_folder_run(tmp_path)
    before = _eval_json(str(run), capsys=capsys)
    _write_digits(data, 30, offset=200)  # 120 new images: a fresh split and fresh statistics would both change
    grown = load_dataset(f"folder:{data}", image_size=32, seed=3)
    recorded = load_trained(run)[1]["data"]
    assert len(grown.test) != before["count"] and tuple(grown.mean) != tuple(recorded["mean"])
    assert _eval_json(str(run), capsys=capsys) == before  # RUN/split.json lists the test files
    lone = tmp_path / "lone.safetensors"
    shutil.copy(run / "checkpoints" / "last.safetensors", lone)
    capsys.readouterr()
    assert main(["eval", str(lone)]) == 2  # a lone file cannot know which files were its test split: it says so
    assert "no longer gives the test split" in capsys.readouterr().err


def test_added_images_use_split_file_and_removed_test_images_are_an_error(folder_run, tmp_path, capsys):
    data, run = folder_run
    copy_data, copy_run = tmp_path / "digits", tmp_path / "run"
    shutil.copytree(data, copy_data)
    shutil.copytree(run, copy_run)
    final = json.loads((run / "eval.json").read_text())
    record = load_trained(copy_run / "checkpoints" / "last.safetensors")[1]["data"]
    record = {**record, "dataset": f"folder:{copy_data}"}
    _write_digits(copy_data, 30, offset=200)
    with pytest.raises(ValueError, match="no longer gives the test split"):
        reload_dataset(record)  # without the run's split.json there is no way to recover the split: an error
    bundle = reload_dataset(record, split_file=copy_run / "split.json")
    assert len(bundle.test) == final["count"] and bundle.fingerprint("test") == record["test_sha256"]
    assert tuple(bundle.mean) == tuple(record["mean"])  # the recorded statistics, not the grown folder's
    victim = Path(bundle.test.samples[0][0])
    victim.unlink()
    with pytest.raises(ValueError, match="no longer gives the test split"):
        reload_dataset(record, split_file=copy_run / "split.json")


def test_eval_refuses_other_classes_and_a_contradicting_model(folder_run, tmp_path, capsys):
    _data, run = folder_run
    other = tmp_path / "other"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(DIGITS["images"][i]).save(other / name / f"{i}.png")
    capsys.readouterr()
    assert main(["eval", str(run), "--data", f"folder:{other}"]) == 2
    err = capsys.readouterr().err
    assert "trained on 4 classes" in err and "cat" in err
    assert main(["eval", str(run), "--model", "resnet18"]) == 2
    assert "contradicts the checkpoint, which is a lenet5" in capsys.readouterr().err


def test_resume_refuses_data_that_changed(folder_run, tmp_path, capsys):
    data, run = folder_run
    copy_data, copy_run = tmp_path / "digits", tmp_path / "run"
    shutil.copytree(data, copy_data)
    shutil.copytree(run, copy_run)
    cfg = (copy_run / "config.yaml").read_text().replace(str(data), str(copy_data))
    (copy_run / "config.yaml").write_text(cfg)
    info = json.loads((copy_run / "run.json").read_text())
    _write_digits(copy_data, 5, offset=300)
    capsys.readouterr()
    assert main(["train", "--resume", str(copy_run), "--epochs", "4", "-q"]) == 2
    assert "no longer gives the train split" in capsys.readouterr().err
    assert json.loads((copy_run / "run.json").read_text()) == info


@pytest.fixture(scope="module")
def upsampled_run(tmp_path_factory):
    """mnist5k at 40x40: the loader resizes every batch, so predict must resize the same way."""
    run = tmp_path_factory.mktemp("up") / "run"
    assert main(["train", "lenet5", "--epochs", "1", "--limit-batches", "30", "--set", "data.input_size=40",
                 "--run-dir", str(run), "-q"]) == 0
    return run


def _predicted(out: str) -> list[tuple[str, float]]:
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].endswith("%"):
            rows.append((parts[0], float(parts[1][:-1])))
    return rows


def test_predict_reproduces_the_test_pipeline_of_a_tensor_run(upsampled_run, tmp_path, capsys):
    model, meta = load_trained(upsampled_run)
    bundle = reload_dataset(meta["data"])
    loader = make_loader(bundle, "test", batch_size=50, train=False, input_size=meta["input_size"])
    loader.set_epoch(0)
    images, _ = next(iter(loader))
    raw = bundle.test.images[3, 0].numpy()
    Image.fromarray(raw).save(tmp_path / "digit.png")
    x = preprocess_image(tmp_path / "digit.png", meta)
    assert x.shape == (1, 1, 40, 40)
    torch.testing.assert_close(x, images[3:4], atol=1e-5, rtol=0)
    with torch.no_grad():
        expected = model(images[3:4]).softmax(1)[0]
    capsys.readouterr()
    assert main(["predict", str(upsampled_run), str(tmp_path / "digit.png"), "-k", "1"]) == 0
    (name, pct), = _predicted(capsys.readouterr().out)
    assert name == bundle.classes[int(expected.argmax())]
    assert pct == pytest.approx(100 * float(expected.max()), abs=0.006)


def test_predict_reproduces_the_test_pipeline_of_a_folder_run(folder_run):
    _data, run = folder_run
    _model, meta = load_trained(run)
    bundle = reload_dataset(meta["data"])
    loader = make_loader(bundle, "test", batch_size=16, train=False, num_workers=0)
    loader.set_epoch(0)
    images, _ = next(iter(loader))
    x = preprocess_image(bundle.test.samples[5][0], meta)
    torch.testing.assert_close(x, images[5:6], atol=1e-5, rtol=0)


def test_predict_takes_a_folder_and_scales_16_bit_images(upsampled_run, tmp_path, capsys):
    raw = DIGITS["images"][7 * 500 + 450]
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(raw).save(folder / "a8.png")
    Image.fromarray(raw.astype(np.uint16) * 257).save(folder / "b16.png")  # 16-bit: 255 -> 65535
    (folder / "notes.txt").write_text("not an image")
    capsys.readouterr()
    assert main(["predict", str(upsampled_run), str(folder), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "a8.png" in out and "b16.png" in out and "notes.txt" not in out
    rows = _predicted(out)
    assert rows[:2] == rows[2:]  # the 16-bit copy is the same image, not clipped to white
    _, meta = load_trained(upsampled_run)
    a, b = preprocess_image(folder / "a8.png", meta), preprocess_image(folder / "b16.png", meta)
    torch.testing.assert_close(a, b)
