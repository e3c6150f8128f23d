"""What a run costs on disk (issue 31, point 7): the weights of a checkpoint are stored once. The stable names
(last.safetensors, best.safetensors) and a "last" and "best" taken at the same step are hard links to one file."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from cnnzoo.train import Trainer, apply_overrides, default_config


def _bytes_on_disk(folder: Path) -> int:
    """Sizes of the distinct files (inodes) in ``folder``: what `du` counts."""
    seen = {}
    for p in folder.iterdir():
        st = p.stat()
        seen[st.st_ino] = st.st_size
    return sum(seen.values())


def test_last_and_best_of_one_step_are_one_file(tmp_path):
    cfg = apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=1", "train.limit_batches=2", "data.batch_size=32", "train.device=cpu",
        f"train.run_dir={tmp_path / 'run'}", "optim.name=sgd", "optim.momentum=0.9", "data.holdout_fraction=0.1"])
    Trainer(cfg, verbose=False).fit()
    ckpt = tmp_path / "run" / "checkpoints"
    names = ["last.safetensors", "last-e0001-b000000.safetensors", "best.safetensors",
             "best-e0001-b000000.safetensors"]
    inodes = {(ckpt / n).stat().st_ino for n in names}
    assert len(inodes) == 1, "epoch 1 is both the best and the last checkpoint: one file on disk"
    weights = (ckpt / "last.safetensors").stat().st_size
    state = (ckpt / "last-e0001-b000000.state.pt").stat().st_size
    assert _bytes_on_disk(ckpt) <= weights + state + 4096  # + the two small pointers
    a, b = load_file(str(ckpt / "best.safetensors")), load_file(str(ckpt / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_later_checkpoint_never_changes_the_bytes_of_a_linked_one(tmp_path):
    """Names are replaced atomically (a new file), never written in place: the best of epoch 1, linked with the
    last of epoch 1, keeps its bytes when the last of epoch 2 is written."""
    from cnnzoo.train.checkpoint import save_checkpoint

    a, b = {"w": torch.ones(4)}, {"w": torch.zeros(4)}
    best = save_checkpoint(tmp_path, "best", "e0001-b000000", a, {"epoch": 1})
    last = save_checkpoint(tmp_path, "last", "e0001-b000000", a, {"epoch": 1}, {"epoch": 1}, same_as=best)
    assert os.stat(best).st_ino == os.stat(last).st_ino
    save_checkpoint(tmp_path, "last", "e0002-b000000", b, {"epoch": 2}, {"epoch": 2}, same_as=best)  # differs
    assert torch.equal(load_file(str(tmp_path / "best.safetensors"))["w"], a["w"])
    assert torch.equal(load_file(str(tmp_path / "last.safetensors"))["w"], b["w"])
    assert not (tmp_path / "last-e0001-b000000.safetensors").exists() and best.exists()
