"""Issue 31 point 1: a user's own image folder is trained at the network's own input size, not 224 whatever the
network; the size is on the start line and recorded in the run, and eval reads it back.

Expected sizes come from the papers, not from the code: LeNet-5's input is 32x32 (LeCun et al. 1998, Sec. II-B:
"The input is a 32x32 pixel image"); the CIFAR ResNets take 32x32 images (He et al. 2016, Sec. 4.2); VGG's
ConvNet input is 224x224 (Simonyan & Zisserman 2015, Sec. 2.1) and its first FC layer reads a fixed 7x7 grid.
ResNet-18 ends in global average pooling (He et al. 2016, Sec. 3.4 / Table 1), so it takes the 64-pixel images as
they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnzoo.cli.main import main
from cnnzoo.train import Trainer, default_config
from cnnzoo.train.config import apply_overrides
from cnnzoo.train.engine import folder_input_size


def write_folder(root: Path, side: int = 64, classes: int = 3, per_class: int = 6) -> Path:
    """``root/<class>/<i>.png``: ``side`` x ``side`` RGB images, a bright square of the class's colour on noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            a = (rng.random((side, side, 3)) * 60).astype(np.uint8)
            a[side // 4: 3 * side // 4, side // 4: 3 * side // 4, c % 3] = 220
            Image.fromarray(a).save(d / f"{i}.png")
    return root


def train_on_folder(tmp_path: Path, name: str, *sets: str) -> dict:
    """One step of ``name`` on a folder of 64-pixel images; returns the run's run.json."""
    data = write_folder(tmp_path / "shapes")
    cfg = default_config(name, f"folder:{data}")
    cfg = apply_overrides(cfg, ["train.epochs=1", "train.limit_batches=1", "data.batch_size=4",
                                "data.eval_batch_size=4", "data.num_workers=0", "schedule.warmup_epochs=0",
                                f"train.run_dir={tmp_path / 'run'}", *sets])
    Trainer(cfg, verbose=False).fit()
    return json.loads((tmp_path / "run" / "run.json").read_text())


@pytest.mark.parametrize("name, native, size", [
    ("lenet5", 64, 32),  # a fixed 5x5 grid before fc: the card's 32 (LeCun 1998 Sec. II-B)
    ("vgg11_bn", 64, 224),  # a fixed 7x7 grid before fc6 (VGG Sec. 2.1, 3.2)
    ("resnet20_cifar", 64, 32),  # images larger than the card's size: downscaled to it (He 2016 Sec. 4.2)
    ("resnet18", 64, 64),  # global pooling, images smaller than 224: their own size, no upsampling
    ("resnet18", 500, 224),  # large photos: the card's 224
    ("inception_v3", 64, 299),  # below its 75-pixel minimum: the card's 299
    ("resnet18", None, 224),  # the images' size unknown: the card's
])
def test_folder_input_size_rule(name, native, size):
    assert folder_input_size(name, {}, native)[0] == size


@pytest.mark.slow
def test_lenet5_on_64px_folder_trains_at_32_and_eval_reads_it(tmp_path):
    info = train_on_folder(tmp_path, "lenet5")
    assert info["input_size"] == 32
    assert info["data"]["image_size"] == [32, 32]
    # eval and predict rebuild the data from the checkpoint's record: the same 32-pixel crops
    from cnnzoo.data.record import reload_dataset
    from cnnzoo.train.checkpoint import load_trained

    _, meta = load_trained(str(tmp_path / "run"))
    assert meta["input_size"] == 32
    bundle = reload_dataset(meta["data"], download=False)
    assert tuple(bundle.image_size) == (32, 32)


@pytest.mark.slow
def test_any_size_network_trains_at_the_images_size(tmp_path):
    info = train_on_folder(tmp_path, "resnet18")
    assert info["input_size"] == 64
    assert info["data"]["image_size"] == [64, 64]


@pytest.mark.slow
def test_data_input_size_wins(tmp_path):
    info = train_on_folder(tmp_path, "lenet5", "data.input_size=48")
    assert info["input_size"] == 48 and info["data"]["image_size"] == [48, 48]


@pytest.mark.slow
def test_start_line_names_the_input_size(tmp_path, capsys, monkeypatch):
    data = write_folder(tmp_path / "shapes")
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "lenet5", "--data", f"folder:{data}", "--epochs", "1", "--limit-batches", "1",
               "--batch-size", "4", "--warmup-epochs", "0", "--run-dir", "run", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    start = next(line for line in out.splitlines() if line.startswith("training lenet5"))
    assert "input 32x32 (lenet5's input size" in start and "images 64 px" in start
    # the eval of the run scores it at that size (the run's own test split, as trained)
    rc = main(["eval", "run", "--format", "json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    # predict too: lenet5's fc reads a 5x5 grid, so only 32-pixel crops go through it
    assert main(["predict", "run", str(next((data / "class0").glob("*.png")))]) == 0
    assert "class0" in capsys.readouterr().out
