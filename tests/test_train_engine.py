"""The training loop: run directory contents, bit-exact resume, NaN stop, atomic checkpoints, aux losses."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cnnzoo import get_card
from cnnzoo.train import Trainer, TrainingDiverged, TrainingInterrupted, apply_overrides, default_config
from cnnzoo.train.checkpoint import load_checkpoint, save_checkpoint
from cnnzoo.train.losses import ClassificationLoss


def small_cfg(run_dir, *extra):
    """lenet5 on mnist5k, 3 epochs of 4 batches: seconds on a CPU."""
    return apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=3", "train.limit_batches=4", "data.batch_size=32", "train.device=cpu",
        f"train.run_dir={run_dir}", "model.options={drop_rate: 0.3}", *extra])  # dropout: the RNG state matters


def weights(run_dir):
    return load_file(str(run_dir / "checkpoints" / "last.safetensors"))


def stop_at(epoch, batch):
    def cb(trainer, e, b):
        if (e, b) == (epoch, batch):
            trainer.request_stop(signal.SIGTERM)
    return cb


def test_run_directory_holds_everything(tmp_path):
    run = tmp_path / "run"
    result = Trainer(small_cfg(run), command=["cnnzoo", "train", "lenet5"], verbose=False).fit()
    assert result.run_dir == run and len(result.history) == 3
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["name"] == "lenet5" and cfg["train"]["epochs"] == 3
    info = json.loads((run / "run.json").read_text())
    assert info["cnnzoo_version"] and info["command"] == "cnnzoo train lenet5" and "git_commit" in info
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_acc,test_loss,test_acc") and len(lines) == 4
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for png in ("curves.png", "confusion_matrix.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ev = json.loads((run / "eval.json").read_text())
    assert ev["top1"] == pytest.approx(result.test.top1) and sum(map(sum, ev["confusion"])) == 1000
    assert not (run / "checkpoints" / "best.json").exists()  # no validation split: no "best" (never chosen on test)
    _, meta, state = load_checkpoint(run / "checkpoints", "last")
    assert meta["epoch"] == 3 and state["global_step"] == 12


@pytest.mark.parametrize("where", [(0, 3), (1, 1)], ids=["after-epoch-1", "mid-epoch-2"])
def test_resume_is_bit_identical(tmp_path, where):
    Trainer(small_cfg(tmp_path / "full"), verbose=False).fit()
    with pytest.raises(TrainingInterrupted, match=r"stopped .*Resume with: cnnzoo train --resume "):
        Trainer(small_cfg(tmp_path / "cut"), callbacks=[stop_at(*where)], verbose=False).fit()
    resumed = Trainer(resume=tmp_path / "cut", verbose=False).fit()
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full_rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s")} for r in rows]
    assert strip(resumed.history) == strip(full_rows)


def test_interrupt_message_names_epoch_and_step(tmp_path):
    with pytest.raises(TrainingInterrupted) as e:
        Trainer(small_cfg(tmp_path / "r"), callbacks=[stop_at(1, 1)], verbose=False).fit()
    assert e.value.signum == signal.SIGTERM
    assert "epoch 2 step 2" in str(e.value) and str(tmp_path / "r") in str(e.value)
    _, _meta, state = load_checkpoint(tmp_path / "r" / "checkpoints")
    assert (state["epoch"], state["batch"], state["global_step"]) == (1, 2, 6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ClassificationLoss.__call__

    def poisoned(self, output, target):
        loss, logits = real(self, output, target)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 6 else loss), logits  # the 6th step: epoch 2, step 2

    monkeypatch.setattr(ClassificationLoss, "__call__", poisoned)
    run = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2 step 2 \(global step 6\).*last good"):
        Trainer(small_cfg(run), verbose=False).fit()
    sd, _meta, state = load_checkpoint(run / "checkpoints")
    assert (state["epoch"], state["batch"]) == (1, 0)  # the end of epoch 1, the last good one
    assert all(torch.isfinite(v).all() for v in sd.values())


def test_checkpoint_survives_a_kill_while_writing(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    first = {"w": torch.ones(3)}
    save_checkpoint(d, "last", "e0001-b000000", first, {"epoch": 1}, {"epoch": 1})
    real_replace = os.replace

    def dies_on_pointer(src, dst):  # the new pair is written, then the process dies before the pointer moves
        if str(dst).endswith("last.json"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_pointer)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(d, "last", "e0002-b000000", {"w": torch.zeros(3)}, {"epoch": 2}, {"epoch": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    sd, meta, state = load_checkpoint(d)
    assert torch.equal(sd["w"], first["w"]) and meta["epoch"] == 1 and state["epoch"] == 1
    assert not list(d.glob("*.tmp"))  # no temporary file left behind


def test_aux_losses_use_the_card_weight():
    w = get_card("googlenet").aux_weight
    assert w == 0.3  # Szegedy et al. 2015, Sec. 5
    torch.manual_seed(0)
    main, a1, a2 = (torch.randn(4, 10) for _ in range(3))
    y = torch.tensor([1, 2, 3, 4])
    ce = torch.nn.functional.cross_entropy
    loss, logits = ClassificationLoss(aux_weight=w)((main, a1, a2), y)
    assert torch.allclose(loss, ce(main, y) + 0.3 * (ce(a1, y) + ce(a2, y))) and logits is main
    with pytest.raises(ValueError, match="aux_weight"):
        ClassificationLoss()((main, a1), y)


def test_existing_run_dir_is_not_overwritten(tmp_path):
    Trainer(small_cfg(tmp_path / "r", "train.epochs=1"), verbose=False).fit()
    with pytest.raises(ValueError, match="--resume"):
        Trainer(small_cfg(tmp_path / "r", "train.epochs=1"), verbose=False)
