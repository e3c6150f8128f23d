"""train -> eval -> predict end to end through the CLI (in-process) on the built-in mnist5k digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnzoo.cli.main import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lenet5"
    code = main(["train", "lenet5", "--data", "mnist5k", "--epochs", "2", "--batch-size", "64",
                 "--lr", "0.05", "--run-dir", str(run), "--no-download", "--quiet"])
    assert code == 0
    return run


def test_train_leaves_a_complete_run_directory(trained_run):
    names = {p.name for p in trained_run.rglob("*")}
    assert any(n.endswith(".safetensors") for n in names), names
    assert any(n.endswith(".png") for n in names), names
    assert any(n.endswith(".csv") for n in names) and any(n.endswith(".jsonl") for n in names), names


def test_eval_reports_accuracy_of_the_trained_run(trained_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained_run), "--json", "--no-download"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{"):])
    flat = json.dumps(metrics)
    assert "top1" in flat or "acc" in flat
    top1 = metrics.get("top1", metrics.get("accuracy"))
    if top1 is not None:
        top1 = top1 / 100 if top1 > 1 else top1
        assert top1 > 0.8  # two epochs of LeNet-5 on 4,000 digits: far above chance (0.1)


def test_predict_names_the_digit_classes(trained_run, tmp_path, capsys):
    images = np.load(__import__("cnnzoo.data", fromlist=["x"]).__path__[0] + "/mnist5k.npz")["images"]
    path = tmp_path / "seven.png"
    Image.fromarray(images[7 * 500 + 450]).save(path)  # a test-split 7 (the file is sorted by class)
    capsys.readouterr()
    assert main(["predict", str(trained_run), str(path), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "seven.png" in out and "%" in out or "0." in out
    first_line_with_class = [line for line in out.splitlines() if "7" in line]
    assert first_line_with_class, out


def test_train_rejects_unknown_config_key(capsys):
    code = main(["train", "lenet5", "--set", "optim.lrr=0.1", "--no-download", "--quiet"])
    assert code == 2
    assert "lrr" in capsys.readouterr().err


def test_default_lenet5_recipe_reaches_98_percent(tmp_path, capsys):
    """The README's promise: `cnnzoo demo` (= `cnnzoo train lenet5` on mnist5k, defaults) passes 98.0%."""
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("test accuracy:")][-1]
    accuracy = float(line.split()[2].rstrip("%"))
    assert accuracy >= 98.0, line
    assert (tmp_path / "demo" / "confusion_matrix.png").exists()
