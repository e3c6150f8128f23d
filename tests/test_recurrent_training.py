"""Gradient clipping (note 002: by value, and by norm g <- g v / ||g|| when ||g|| > v) with the norm logged per epoch,
the exploding gradients it tames in a recurrent network, and the sequential-MNIST classifiers learning."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.train import Trainer, TrainingDiverged, TrainingInterrupted, apply_overrides, default_config
from cnnzoo.train.config import Config, ConfigError


def rnn_cfg(run_dir, *extra, steps=4, epochs=2):
    """rnn_mnist (32 units) on mnist5k, a few batches: seconds on a CPU."""
    return apply_overrides(default_config("rnn_mnist", "mnist5k"), [
        f"train.epochs={epochs}", f"train.limit_batches={steps}", "data.batch_size=32", "train.device=cpu",
        "data.num_workers=0", f"train.run_dir={run_dir}", "model.options={hidden_size: 32, drop_rate: 0.3}", *extra])


# --- the config ---------------------------------------------------------------------------------------------------


def test_clip_mode_is_norm_by_default_and_checked():
    assert Config().optim.grad_clip_mode == "norm"
    cfg = apply_overrides(Config(), ["optim.grad_clip=0.5", "optim.grad_clip_mode=value"])
    assert (cfg.optim.grad_clip, cfg.optim.grad_clip_mode) == (0.5, "value")
    with pytest.raises(ConfigError, match="optim.grad_clip_mode must be one of norm, value; got 'l2'"):
        apply_overrides(Config(), ["optim.grad_clip_mode=l2"])


# --- one step, by hand ------------------------------------------------------------------------------------------


def _trainer_with_grads(tmp_path, mode, clip, grads):
    trainer = Trainer(rnn_cfg(tmp_path / "r", f"optim.grad_clip={clip}", f"optim.grad_clip_mode={mode}"),
                      verbose=False)
    params = list(trainer.model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    params[0].grad.view(-1)[:2] = torch.tensor(grads[:2])  # a gradient whose only non-zeros are these, by hand
    params[-1].grad.view(-1)[:1] = torch.tensor(grads[2:])
    trainer.grad_stats = [0.0, 0.0, 0]
    trainer._clip_gradients()
    return trainer, params


def test_clip_by_norm_rescales_to_v_over_the_norm(tmp_path):
    """g = (3, 4, 12): ||g|| = 13 > v = 2.6, so g <- g v / ||g|| = g / 5 = (0.6, 0.8, 2.4); the norm logged is 13."""
    trainer, params = _trainer_with_grads(tmp_path, "norm", 2.6, [3.0, 4.0, 12.0])
    got = params[0].grad.view(-1)[:2].tolist() + params[-1].grad.view(-1)[:1].tolist()
    assert got == pytest.approx([0.6, 0.8, 2.4], rel=1e-6)  # torch's epsilon (1e-6 added to the norm) is all
    assert trainer.grad_stats == pytest.approx([13.0, 13.0, 1])
    assert sum(float(p.grad.count_nonzero()) for p in params) == 3
    trainer.close()


def test_clip_by_norm_leaves_a_small_gradient_alone(tmp_path):
    trainer, params = _trainer_with_grads(tmp_path, "norm", 20.0, [3.0, 4.0, 12.0])
    assert params[0].grad.view(-1)[:2].tolist() == [3.0, 4.0] and params[-1].grad.view(-1)[0].item() == 12.0
    trainer.close()


def test_clip_by_value_clamps_each_component(tmp_path):
    """by value v = 3.5: (3, 4, -12) -> (3, 3.5, -3.5); the norm logged is the one before clipping, 13."""
    trainer, params = _trainer_with_grads(tmp_path, "value", 3.5, [3.0, 4.0, -12.0])
    assert params[0].grad.view(-1)[:2].tolist() == [3.0, 3.5] and params[-1].grad.view(-1)[0].item() == -3.5
    assert trainer.grad_stats == pytest.approx([13.0, 13.0, 1])
    trainer.close()


# --- exploding gradients ------------------------------------------------------------------------------------------


def _exploding(run_dir, clip: str, mode: str = "norm") -> Trainer:
    """A ReLU RNN whose recurrent matrix is 1.1 I (Le et al.'s identity initialisation, scaled past 1): over 28 steps
    the state grows by up to 1.1^28 ~ 14 and the gradient with it; plain SGD at lr 0.01, no momentum."""
    cfg = rnn_cfg(run_dir, "optim.name=sgd", "optim.lr=0.01", "optim.momentum=0", "optim.weight_decay=0",
                  "schedule.name=none", f"optim.grad_clip={clip}", f"optim.grad_clip_mode={mode}",
                  "model.options={hidden_size: 32, nonlinearity: relu}", steps=20, epochs=1)
    trainer = Trainer(cfg, verbose=False)
    with torch.no_grad():
        trainer.model.rnn.weight_hh_l0.copy_(1.1 * torch.eye(32))
    return trainer


def test_without_clipping_the_rnn_explodes_and_with_clipping_it_stays_finite(tmp_path):
    trainer = _exploding(tmp_path / "off", "null")
    with pytest.raises(TrainingDiverged, match="loss is nan"):
        trainer.fit()
    assert trainer.grad_stats[1] > 1e3  # the gradients before the NaN were exploding

    for mode, clip in (("norm", "1.0"), ("value", "0.01")):
        run = tmp_path / mode
        result = _exploding(run, clip, mode).fit()
        (row,) = result.history
        assert row["grad_norm_max"] > 100  # the same explosion (a norm of 0.3-1 at the default init), cut each step
        assert all(torch.isfinite(v).all() for v in load_file(str(run / "checkpoints" / "last.safetensors")).values())
        assert torch.isfinite(torch.tensor([row["train_loss"], row["test_loss"]])).all()


# --- the norm in metrics.csv, resume --------------------------------------------------------------------------------


def test_norm_before_clipping_is_logged_per_epoch_and_resume_is_bit_identical(tmp_path):
    extra = ("optim.grad_clip=0.05", "optim.grad_clip_mode=value")
    full = Trainer(rnn_cfg(tmp_path / "full", *extra), verbose=False).fit()

    def stop(trainer, epoch, batch):
        if (epoch, batch) == (1, 1):
            trainer.request_stop()

    with pytest.raises(TrainingInterrupted):
        Trainer(rnn_cfg(tmp_path / "cut", *extra), callbacks=[stop], verbose=False).fit()
    resumed = Trainer(resume=tmp_path / "cut", verbose=False).fit()
    a, b = (load_file(str(tmp_path / r / "checkpoints" / "last.safetensors")) for r in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s")} for r in rows]
    assert strip(resumed.history) == strip(full.history)  # the mid-epoch resume keeps the epoch's norm statistics
    with open(tmp_path / "full" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(0 < float(r["grad_norm"]) <= float(r["grad_norm_max"]) for r in rows)
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["grad_norm"] for x in lines] == [r["grad_norm"] for r in full.history]


# --- learning -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm_mnist", "gru_mnist"])
def test_sequential_mnist_learns_well_above_chance_in_a_short_run(name, tmp_path):
    """`cnnzoo train NAME` (the mnist5k recipe and the card's Adam + clipping hints), 60 steps of 32 images."""
    cfg = apply_overrides(default_config(name, "mnist5k"), [
        "train.epochs=1", "train.limit_batches=60", "train.seed=0", "train.device=cpu", "data.num_workers=0",
        f"train.run_dir={tmp_path / 'r'}"])
    result = Trainer(cfg, verbose=False).fit()
    assert result.test.top1 >= 0.5, f"{name}: {100 * result.test.top1:.1f}% after 60 steps (chance is 10%)"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_lstm_mnist_reaches_95_percent_with_its_recipe(seed, tmp_path):
    """The README's figure: `cnnzoo train lstm_mnist --data mnist5k` (the recipe as the card sets it)."""
    cfg = apply_overrides(default_config("lstm_mnist", "mnist5k"), [
        f"train.seed={seed}", "train.device=cpu", f"train.run_dir={tmp_path / 'r'}"])
    result = Trainer(cfg, verbose=False).fit()
    assert result.test.top1 >= 0.95, f"seed {seed}: {100 * result.test.top1:.1f}%"
