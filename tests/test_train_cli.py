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
    metrics = json.loads(capsys.readouterr().out)  # --json prints the metrics and nothing else
    classes = [str(d) for d in range(10)]
    assert metrics["classes"] == classes and list(metrics["per_class"]) == classes
    assert metrics["count"] == 1000  # mnist5k's test split: the last 100 images of each digit
    confusion = metrics["confusion"]
    assert [sum(row) for row in confusion] == [100] * 10  # rows are the true classes
    assert metrics["top1"] == sum(confusion[i][i] for i in range(10)) / 1000
    assert all(metrics["per_class"][c] == confusion[i][i] / 100 for i, c in enumerate(classes))
    # two epochs of LeNet-5 on 4,000 digits: 93.3% at seed 0 (chance is 10%)
    assert 0.8 < metrics["top1"] <= metrics["top5"] <= 1.0
    # the same network on the same split gives the number the training run reported
    final = json.loads((trained_run / "eval.json").read_text())
    assert metrics["top1"] == final["top1"] and metrics["confusion"] == final["confusion"]


def test_predict_names_the_digit_classes(trained_run, tmp_path, capsys):
    images = np.load(__import__("cnnzoo.data", fromlist=["x"]).__path__[0] + "/mnist5k.npz")["images"]
    path = tmp_path / "seven.png"
    Image.fromarray(images[7 * 500 + 450]).save(path)  # a test-split 7 (the file is sorted by class)
    capsys.readouterr()
    assert main(["predict", str(trained_run), str(path), "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(path) and len(lines) == 4, lines  # the image, then one line per class
    rows = [line.split() for line in lines[1:]]
    assert all(len(r) == 2 and r[1].endswith("%") for r in rows), lines
    names, percents = [r[0] for r in rows], [float(r[1].rstrip("%")) for r in rows]
    assert len(set(names)) == 3 and set(names) <= {str(d) for d in range(10)}
    assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.01
    assert names[0] == "7" and percents[0] > 90.0, lines  # 99.9% at seed 0: a clear seven


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
