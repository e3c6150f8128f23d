"""Weight EMA (cnnzoo.train.ema): the update against a hand computation, what a run with EMA evaluates and writes
(metrics columns, eval_ema.json, the separate ema_best/ema_last checkpoints that eval/predict accept), and the
option errors. Its bit-exact resume is in tests/test_mix.py (with mixing on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnzoo.cli.main import main
from cnnzoo.train import Trainer, apply_overrides, default_config
from cnnzoo.train.checkpoint import weights_metadata
from cnnzoo.train.ema import EMA_DECAY, ModelEma, parse_ema


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    from cnnzoo.train import engine

    monkeypatch.setattr(engine, "plot_curves", lambda *a, **k: None)
    monkeypatch.setattr(engine, "plot_confusion", lambda *a, **k: None)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)).double()


def test_update_is_the_exponential_average_of_every_float_tensor():
    model = tiny()
    ema = ModelEma(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(4, 1, 4, 4, dtype=torch.float64))  # BN statistics and counter move too
    now = model.state_dict()
    ema.update(model, step=0)
    got = ema.state_dict()
    for k, v in now.items():
        if v.is_floating_point():
            torch.testing.assert_close(got[k], 0.9 * start[k] + 0.1 * v, rtol=0, atol=1e-12)
        else:  # num_batches_tracked is copied
            assert torch.equal(got[k], v)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_warmup_follows_tensorflows_num_updates_rule():
    ema = ModelEma(tiny(), decay=0.999, warmup=True)
    assert [ema.decay_at(t) for t in (0, 1, 10)] == pytest.approx([1 / 10, 2 / 11, 11 / 20])
    assert ema.decay_at(10**6) == 0.999
    assert ModelEma(tiny(), decay=0.99).decay_at(0) == 0.99


def test_options_are_checked_and_completed():
    assert parse_ema({}) == {"decay": EMA_DECAY, "warmup": False}
    assert parse_ema(None) is None
    for bad, match in [({"decay": 1.0}, r"decay must be a number in \(0, 1\)"), ({"decay": "high"}, "decay must be"),
                       ({"rate": 0.9}, r"unknown key\(s\) \['rate'\]; valid: decay, warmup"),
                       ({"warmup": 1}, "warmup must be true or false"), (0.99, "must be null .* or a mapping")]:
        with pytest.raises(ValueError, match=match):
            parse_ema(bad)
    with pytest.raises(ValueError, match=r"--set: train.ema decay must be a number in \(0, 1\)"):
        apply_overrides(default_config("lenet5", "mnist5k"), ["train.ema={decay: 1.5}"])


def test_a_run_with_ema_evaluates_and_keeps_both_weights(tmp_path, capsys):
    run = tmp_path / "r"
    cfg = apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=2", "train.limit_batches=4", "data.batch_size=32", "data.eval_batch_size=1000",
        "train.device=cpu", f"train.run_dir={run}", "train.ema={decay: 0.7}", "data.holdout_fraction=0.1"])
    trainer = Trainer(cfg, verbose=False)
    avg = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}  # the average starts at the weights

    def fold(tr, epoch, batch):  # called after every optimizer step: the EMA by hand
        for k, v in tr.model.state_dict().items():
            avg[k] = 0.7 * avg[k] + 0.3 * v.detach()

    trainer.callbacks.append(fold)
    trainer.fit()
    ckpt = run / "checkpoints"
    ema_last = load_file(str(ckpt / "ema_last.safetensors"))
    for k, v in avg.items():
        torch.testing.assert_close(ema_last[k], v, rtol=1e-5, atol=1e-6)
    raw = load_file(str(ckpt / "last.safetensors"))
    assert not torch.equal(raw["fc.weight"], ema_last["fc.weight"])  # "last" stays the raw weights
    meta = weights_metadata(ckpt / "ema_best.safetensors")
    assert meta["weights"] == "ema" and meta["ema_decay"] == 0.7 and meta["model"] == "lenet5"
    assert "weights" not in weights_metadata(ckpt / "best.safetensors")
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"ema_test_loss", "ema_test_acc", "ema_test_top5"} <= r.keys() for r in rows)
    assert "ema_test_loss,ema_test_acc,ema_test_top5" in (run / "metrics.csv").read_text().splitlines()[0]
    best_epoch = max(rows, key=lambda r: r["ema_val_acc"])["epoch"]  # chosen on validation, never on test
    assert meta["epoch"] == best_epoch
    # the EMA checkpoint is a complete cnnzoo checkpoint: eval takes it, and finds what the run measured
    final = json.loads((run / "eval_ema.json").read_text())
    assert final["top1"] == pytest.approx(rows[-1]["ema_test_acc"])
    capsys.readouterr()
    assert main(["eval", str(ckpt / "ema_last.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(final["top1"])
    assert main(["eval", str(run), "--json"]) == 0  # the run directory itself: its raw last weights, as reported
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(rows[-1]["test_acc"])


def test_without_ema_nothing_changes(tmp_path):
    run = tmp_path / "r"
    cfg = apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=1", "train.limit_batches=2", "data.batch_size=32", "data.eval_batch_size=1000",
        "train.device=cpu", f"train.run_dir={run}"])
    Trainer(cfg, verbose=False).fit()
    assert not list(Path(run / "checkpoints").glob("ema*")) and not (run / "eval_ema.json").exists()
    assert "ema" not in (run / "metrics.csv").read_text().splitlines()[0]
