"""train.precise_bn: BN statistics re-estimated with the trained weights before each evaluation."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnzoo import create_model
from cnnzoo.data import load_dataset, make_loader
from cnnzoo.train import Trainer, TrainingInterrupted, apply_overrides, default_config
from cnnzoo.train.config import ConfigError
from cnnzoo.train.precise_bn import recompute_bn_stats


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    from cnnzoo.train import engine

    monkeypatch.setattr(engine, "plot_curves", lambda *a, **k: None)
    monkeypatch.setattr(engine, "plot_confusion", lambda *a, **k: None)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(),
                         nn.Flatten(), nn.LazyLinear(3))


def batches(n=3, b=5):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(b, 1, 6, 6, generator=g) * (i + 1) + i, torch.zeros(b, dtype=torch.long)) for i in range(n)]


def test_statistics_are_the_plain_mean_over_the_batches_with_dropout_off():
    model, data = net(), batches()
    model(data[0][0])  # materialise the lazy layer
    model.train()
    conv, bn = model[0], model[2]
    rng = torch.get_rng_state()
    assert recompute_bn_stats(model, data, 2) == 2
    # by hand: each batch's conv output (no dropout), per-channel mean and unbiased variance, averaged over 2 batches
    outs = [conv(x).detach() for x, _ in data[:2]]
    mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.transpose(0, 1).reshape(4, -1).var(1, unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.momentum == 0.3 and model.training and model[1].training  # restored
    assert torch.equal(torch.get_rng_state(), rng)  # dropout off: no random numbers drawn
    assert recompute_bn_stats(model, data, 0) == 0 and recompute_bn_stats(nn.Linear(2, 2), data, 5) == 0
    with pytest.raises(ValueError, match="batches must be >= 0"):
        recompute_bn_stats(model, data, -1)


def cfg(run_dir, *extra):
    return apply_overrides(default_config("resnet20_cifar", "mnist5k"), [
        "train.epochs=2", "train.limit_batches=3", "data.batch_size=32", "data.eval_batch_size=1000",
        "train.device=cpu", f"train.run_dir={run_dir}", *extra])


def test_trainer_evaluates_statistics_of_the_first_n_unaugmented_training_batches(tmp_path):
    Trainer(cfg(tmp_path / "r", "train.precise_bn=2"), verbose=False).fit()
    weights = load_file(str(tmp_path / "r" / "checkpoints" / "last.safetensors"))
    model = create_model("resnet20_cifar", num_classes=10, in_channels=1)
    model.load_state_dict(weights)
    model.eval()
    seen = []
    name, first_bn = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    first_bn.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    bundle = load_dataset("mnist5k")
    loader = make_loader(bundle, "train", batch_size=32, train=False)  # fixed order, no augmentation
    with torch.no_grad():
        for k, (x, _) in enumerate(loader):
            if k == 2:
                break
            model(x)
    mean = torch.stack([s.mean((0, 2, 3)) for s in seen]).mean(0)
    torch.testing.assert_close(weights[f"{name}.running_mean"], mean, rtol=1e-3, atol=1e-4)
    # without precise BN the same weights carry the running average of augmented batches: a different value
    Trainer(cfg(tmp_path / "plain"), verbose=False).fit()
    plain = load_file(str(tmp_path / "plain" / "checkpoints" / "last.safetensors"))
    assert not torch.allclose(plain[f"{name}.running_mean"], weights[f"{name}.running_mean"], rtol=1e-2)


def test_resume_with_precise_bn_is_bit_identical(tmp_path):
    Trainer(cfg(tmp_path / "full", "train.precise_bn=2"), verbose=False).fit()

    def stop(trainer, e, b):
        if (e, b) == (1, 1):
            trainer.request_stop(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        Trainer(cfg(tmp_path / "cut", "train.precise_bn=2"), callbacks=[stop], verbose=False).fit()
    resumed = Trainer(resume=tmp_path / "cut", verbose=False).fit()
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full = [json.loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_acc"] for r in resumed.history] == [r["test_acc"] for r in full]


def test_precise_bn_must_be_a_count_of_batches(tmp_path):
    with pytest.raises(ConfigError, match="train.precise_bn must be at least 0"):
        cfg(tmp_path / "r", "train.precise_bn=-1")
