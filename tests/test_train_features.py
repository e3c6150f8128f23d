"""Training features a user switches on from the config or the command line, each against what it promises:
optimizers, weight decay, gradient clipping, mixed precision (and its resume), label smoothing, channels-last,
torch.compile, sync BN, extending a run with --resume --epochs, --recipe, and the evaluation metrics (by hand,
and under DDP)."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from cnnzoo.cli.main import main
from cnnzoo.evaluate import evaluate
from cnnzoo.train import Trainer, TrainingInterrupted, apply_overrides, default_config
from cnnzoo.train.checkpoint import load_checkpoint
from cnnzoo.train.config import OptimConfig
from cnnzoo.train.losses import ClassificationLoss
from cnnzoo.train.optim import build_optimizer

HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    """The PNGs (checked in test_train_engine.py) are most of a short run's time: not drawn here."""
    from cnnzoo.train import engine

    monkeypatch.setattr(engine, "plot_curves", lambda *a, **k: None)
    monkeypatch.setattr(engine, "plot_confusion", lambda *a, **k: None)


def small_cfg(run_dir, *extra):
    """lenet5 on mnist5k, 2 epochs of 3 batches of 32, one 1,000-image evaluation batch: seconds on a CPU."""
    return apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=2", "train.limit_batches=3", "data.batch_size=32", "data.eval_batch_size=1000",
        "train.device=cpu", f"train.run_dir={run_dir}", *extra])


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "checkpoints" / "last.safetensors"))


def stop_at(epoch, batch):
    def cb(trainer, e, b):
        if (e, b) == (epoch, batch):
            trainer.request_stop(signal.SIGTERM)
    return cb


def tiny() -> nn.Module:
    """Every kind of parameter: conv weight and bias, BN scale and shift, linear weight and bias (float64)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).double()


def set_grads(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


# ----------------------------------------------------------------- optimizers

HYPER = {"lr": 0.01, "momentum": 0.8, "weight_decay": 0.05, "betas": [0.8, 0.95], "eps": 1e-6}


def first_step_by_hand(name: str, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """One step from fresh state, from the algorithms' definitions (all moment buffers start at 0)."""
    lr, m, wd, eps = HYPER["lr"], HYPER["momentum"], HYPER["weight_decay"], HYPER["eps"]  # betas cancel in step 1
    if name == "sgd":  # Nesterov: buf = g + wd p; step along g' + m buf = (1 + m) g'
        return p - lr * (1 + m) * (g + wd * p)
    if name == "adam":  # L2 in the gradient; bias-corrected m_hat = g', v_hat = g'^2 (Kingma & Ba, Alg. 1)
        g2 = g + wd * p
        return p - lr * g2 / (g2.abs() + eps)
    if name == "adamw":  # decoupled decay (Loshchilov & Hutter, Alg. 2), then the Adam step on g
        return p * (1 - lr * wd) - lr * g / (g.abs() + eps)
    if name == "rmsprop":  # v = (1 - alpha) g'^2 with torch's alpha 0.99; momentum buffer = g' / (sqrt(v) + eps)
        g2 = g + wd * p
        return p - lr * g2 / (math.sqrt(1 - 0.99) * g2.abs() + eps)
    raise AssertionError(name)


TORCH_CLASS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "rmsprop": torch.optim.RMSprop}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_optimizer_is_the_one_asked_with_the_configs_hyperparameters(name):
    cfg = OptimConfig(name=name, nesterov=True, **HYPER)
    model = tiny()
    opt = build_optimizer(model, cfg)
    assert type(opt) is TORCH_CLASS[name]
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (HYPER["lr"], HYPER["weight_decay"])
    if name in ("adam", "adamw"):
        assert tuple(group["betas"]) == (0.8, 0.95) and group["eps"] == 1e-6
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == 0.8
    # the first step, by hand
    before = [p.detach().clone() for p in model.parameters()]
    set_grads(model, 1)
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), first_step_by_hand(name, p0, g), rtol=1e-12, atol=1e-12)
    # three more steps match torch's optimizer built by hand with the same hyper-parameters
    reference = tiny()
    reference.load_state_dict(model.state_dict())
    kwargs = {"lr": 0.01, "weight_decay": 0.05}
    kwargs |= {"sgd": {"momentum": 0.8, "nesterov": True}, "rmsprop": {"momentum": 0.8, "eps": 1e-6}}.get(
        name, {"betas": (0.8, 0.95), "eps": 1e-6})
    ref_opt = TORCH_CLASS[name](reference.parameters(), **kwargs)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # its own moment buffers, not opt's
    for seed in (2, 3, 4):
        set_grads(model, seed)
        set_grads(reference, seed)
        opt.step()
        ref_opt.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def test_trainer_builds_the_configured_optimizer(tmp_path):
    trainer = Trainer(small_cfg(tmp_path / "r", "optim.name=adamw", "optim.lr=0.002", "optim.weight_decay=0.03",
                                "optim.betas=[0.85, 0.9]", "optim.eps=1e-7"), verbose=False)
    opt = trainer.optimizer
    assert type(opt) is torch.optim.AdamW
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], tuple(group["betas"]), group["eps"]) == (0.002, 0.03, (0.85, 0.9), 1e-7)
    assert {id(p) for p in group["params"]} == {id(p) for p in trainer.model.parameters()}


def test_weight_decay_applies_to_every_trainable_parameter():
    """build_optimizer's policy: one group, every trainable parameter decays (conv and linear weights, biases,
    BN scales and shifts alike, as the papers' Caffe/Torch recipes did); frozen parameters are left out."""
    model = tiny()
    model[0].bias.requires_grad_(False)
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.01))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.01
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no loss gradient: the step is the decay alone, p <- p (1 - lr wd)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] if n == "0.bias" else before[n] * (1 - 0.1 * 0.01)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=0, msg=n)


# ----------------------------------------------------------------- clipping, precision, loss

@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_gradient_clipping_bounds_the_norm_of_every_step(tmp_path, amp):
    """optim.grad_clip=c: the gradient that updates the weights has norm c (LeNet-5's is ~1 at init), so plain
    SGD moves the weights by exactly lr x c; under fp16 the clip applies to the unscaled gradient."""
    clip, lr = 0.05, 0.5
    trainer = Trainer(small_cfg(tmp_path / "r", "train.epochs=1", "optim.name=sgd", "optim.momentum=0",
                                "optim.weight_decay=0", "schedule.name=none", f"optim.lr={lr}",
                                f"optim.grad_clip={clip}", f"train.amp='{amp}'"), verbose=False)
    seen = []
    last = [torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])]

    def after_step(tr, epoch, batch):
        params = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
        grad = torch.cat([p.grad.flatten() for p in tr.model.parameters()])
        seen.append((grad.norm().item(), (params - last[0]).norm().item()))
        last[0] = params.clone()

    trainer.callbacks.append(after_step)
    trainer.fit()
    assert len(seen) == 3
    for grad_norm, step_norm in seen:
        assert grad_norm == pytest.approx(clip, rel=1e-4)
        assert step_norm == pytest.approx(lr * clip, rel=1e-3)


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_runs_in_half_and_resumes_bit_identically(tmp_path, amp, dtype):
    seen = set()
    full = Trainer(small_cfg(tmp_path / "full", f"train.amp={amp}"), verbose=False)
    full.model.features[0].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    full.fit()
    assert seen == {dtype}  # the convs run in half precision, in training and in evaluation
    if amp == "fp16":
        assert full.scaler.is_enabled() and full.scaler.get_scale() > 1  # the loss scaler is on
    with pytest.raises(TrainingInterrupted):
        Trainer(small_cfg(tmp_path / "cut", f"train.amp={amp}"), callbacks=[stop_at(1, 0)], verbose=False).fit()
    _, _, saved = load_checkpoint(tmp_path / "cut" / "checkpoints")
    resumed = Trainer(resume=tmp_path / "cut", verbose=False)
    assert resumed.scaler.state_dict() == saved["scaler"]  # the loss scale and its growth tracker come back
    resumed.fit()
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _, _, sa = load_checkpoint(tmp_path / "full" / "checkpoints")
    _, _, sb = load_checkpoint(tmp_path / "cut" / "checkpoints")
    assert sa["scaler"] == sb["scaler"]


def test_label_smoothing_loss_is_the_papers(tmp_path):
    """Szegedy et al. 2016, Sec. 7: q' = (1 - eps) one_hot + eps / K; the loss is the cross-entropy with q'."""
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0]], dtype=torch.float64)
    target = torch.tensor([0, 3])
    eps, k = 0.1, 4
    expected = 0.0
    for row, y in zip(logits.tolist(), target.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        q = [eps / k + (1 - eps) * (c == y) for c in range(k)]
        expected += -sum(qc * (v - log_z) for qc, v in zip(q, row)) / 2
    loss, _ = ClassificationLoss(label_smoothing=eps)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    trainer = Trainer(small_cfg(tmp_path / "r", "train.label_smoothing=0.1"), verbose=False)
    assert trainer.loss_fn(logits, target)[0].item() == pytest.approx(expected, rel=1e-6)


def test_channels_last_feeds_nhwc_and_trains_like_nchw(tmp_path):
    # (checked at conv2: with one input channel, an NCHW tensor is also NHWC, so conv1 would prove nothing)
    cl = Trainer(small_cfg(tmp_path / "cl", "model.channels_last=true"), verbose=False)
    nhwc = set()
    cl.model.features[3].register_forward_pre_hook(
        lambda m, args: nhwc.add(args[0].is_contiguous(memory_format=torch.channels_last)
                                 and not args[0].is_contiguous()))
    w = cl.model.features[3].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    cl.fit()
    assert nhwc == {True}  # in training and in evaluation
    Trainer(small_cfg(tmp_path / "plain"), verbose=False).fit()
    a, b = weights(tmp_path / "cl"), weights(tmp_path / "plain")
    for k in a:  # the same arithmetic in another memory order: equal up to float32 summation order
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def _compiled_run(tmp_path, monkeypatch, backend: str | None):
    from cnnzoo.train import engine

    if backend is not None:
        real = torch.compile
        monkeypatch.setattr(engine.torch, "compile", lambda model, **kw: real(model, backend=backend))
    trainer = Trainer(small_cfg(tmp_path / "compiled", "model.compile=true"), verbose=False)
    assert hasattr(trainer.net, "_orig_mod") and trainer.net._orig_mod is trainer.model
    trainer.fit()
    Trainer(small_cfg(tmp_path / "eager"), verbose=False).fit()
    a, b = weights(tmp_path / "compiled"), weights(tmp_path / "eager")
    assert a.keys() == b.keys() == set(trainer.model.state_dict())  # no "_orig_mod." prefixes in the checkpoint
    return a, b


def test_compile_wraps_the_network_and_checkpoints_plain_keys(tmp_path, monkeypatch):
    """model.compile=true through dynamo's graph capture ("eager" backend: the inductor codegen, tens of seconds
    of C++ compilation, runs in the slow test below): same training, plain checkpoint keys."""
    a, b = _compiled_run(tmp_path, monkeypatch, "eager")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_compile_with_inductor_trains_like_eager(tmp_path, monkeypatch):
    try:
        torch.compile(nn.Linear(2, 2))(torch.randn(1, 2))
    except Exception as e:  # noqa: BLE001  (no C++ compiler or no inductor support on this machine)
        pytest.skip(f"torch.compile cannot run here: {type(e).__name__}: {e}")
    a, b = _compiled_run(tmp_path, monkeypatch, None)
    for k in a:  # fused kernels sum in another order
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_sync_bn_on_cpu_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"(?s)sync.bn.*CUDA"):
        Trainer(small_cfg(tmp_path / "r", "model.sync_bn=true"), verbose=False)
    assert not (tmp_path / "r").exists()
    run = tmp_path / "cli"
    assert main(["train", "lenet5", "--sync-bn", "--device", "cpu", "--run-dir", str(run), "--quiet",
                 "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "--sync-bn" in err and "CUDA" in err and not run.exists()


# ----------------------------------------------------------------- extending a run, recipes

def test_resume_with_more_epochs_extends_the_run(tmp_path):
    """`cnnzoo train --resume RUN --epochs 3` on a finished 2-epoch run trains epoch 3 only; the run directory
    then says 3 epochs, so an interruption during the extension resumes to the end of epoch 3."""
    Trainer(small_cfg(tmp_path / "a"), verbose=False).fit()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    extend = lambda c: apply_overrides(c, ["train.epochs=3"])  # what --epochs 3 does on --resume
    result = Trainer(resume=tmp_path / "a", overrides=extend, verbose=False).fit()
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[:2] == first  # epochs 1-2 untouched
    _, meta, state = load_checkpoint(tmp_path / "a" / "checkpoints")
    assert (meta["epoch"], state["global_step"]) == (3, 9)
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["train"]["epochs"] == 3
    # the same extension, interrupted in epoch 3 and resumed with no options: the same weights
    with pytest.raises(TrainingInterrupted):
        Trainer(resume=tmp_path / "b", overrides=extend, callbacks=[stop_at(2, 0)], verbose=False).fit()
    again = Trainer(resume=tmp_path / "b", verbose=False).fit()
    assert [r["epoch"] for r in again.history] == [1, 2, 3]
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_values_reach_the_run(tmp_path):
    recipe = tmp_path / "my.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"options": {"drop_rate": 0.25}},
        "data": {"batch_size": 16, "augment": {}},
        "optim": {"name": "adamw", "lr": 0.00123, "weight_decay": 0.0456, "betas": [0.85, 0.97]},
        "schedule": {"name": "step", "step_size": 7, "gamma": 0.3},
        "train": {"epochs": 1, "label_smoothing": 0.07, "seed": 5},
    }))
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--recipe", str(recipe), "--weight-decay", "0.01", "--limit-batches", "2",
                 "--run-dir", str(run), "--device", "cpu", "--quiet", "--no-download"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["options"] == {"drop_rate": 0.25}
    assert (cfg["data"]["batch_size"], cfg["data"]["augment"]) == (16, {})
    assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["optim"]["betas"]) == ("adamw", 0.00123, [0.85, 0.97])
    assert cfg["optim"]["weight_decay"] == 0.01  # a flag overrides the recipe
    assert (cfg["schedule"]["name"], cfg["schedule"]["step_size"], cfg["schedule"]["gamma"]) == ("step", 7, 0.3)
    assert (cfg["train"]["epochs"], cfg["train"]["label_smoothing"], cfg["train"]["seed"]) == (1, 0.07, 5)
    assert cfg["optim"]["nesterov"] is True  # keys the recipe does not set keep mnist5k's recipe under it
    _, _, state = load_checkpoint(run / "checkpoints")
    group = state["optimizer"]["param_groups"][0]  # and the training used them
    assert (tuple(group["betas"]), group["weight_decay"]) == ((0.85, 0.97), 0.01)
    assert "exp_avg" in next(iter(state["optimizer"]["state"].values()))  # an Adam-family optimizer


# ----------------------------------------------------------------- evaluation metrics

class TableModel(nn.Module):
    """Returns row ``i`` of a fixed logits table for input ``i``: evaluate sees exactly these logits."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.anchor = nn.Parameter(torch.zeros(()))  # evaluate reads the device from a parameter

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx.long()] + 0 * self.anchor


# 8 samples of 6 classes (distinct values per row, so the ranking is unambiguous); label of each row.
LOGITS = [
    [5.0, 1.0, 0.5, 0.2, 0.1, 0.0],  # y=0 predicted 0
    [0.3, 4.0, 1.0, 0.2, 0.1, 0.0],  # y=1 predicted 1
    [3.0, 0.5, 1.0, 0.2, 0.1, -1.0],  # y=2 predicted 0; the label is 2nd: a top-5 hit
    [0.5, 0.4, 0.3, 0.0, 0.2, -0.1],  # y=3 predicted 0; the label is 5th: a top-5 hit (not a top-4 one)
    [0.1, 0.2, 0.3, 0.4, 2.0, 0.5],  # y=4 predicted 4
    [0.1, 0.2, 3.0, 0.4, 0.5, 1.0],  # y=5 predicted 2; top-5 hit
    [0.0, 2.0, 0.1, 0.2, 0.3, 0.4],  # y=0 predicted 1; the label is last: a top-5 miss
    [0.2, 0.3, 0.1, 0.0, 2.5, 1.0],  # y=1 predicted 4; the label is 3rd: a top-5 hit
]
LABELS = [0, 1, 2, 3, 4, 5, 0, 1]


def test_evaluate_top1_top5_per_class_confusion_and_loss_by_hand():
    model = TableModel(torch.tensor(LOGITS)).train()
    idx, labels = torch.arange(8), torch.tensor(LABELS)
    loader = [(idx[:3], labels[:3]), (idx[3:3], labels[3:3]), (idx[3:6], labels[3:6]), (idx[6:], labels[6:])]
    r = evaluate(model, loader, 6, classes=list("abcdef"))
    assert model.training  # evaluate puts the model back in the mode it found it in
    assert r.count == 8
    assert r.top1 == 3 / 8 and r.top5 == 7 / 8
    assert r.confusion.tolist() == [  # rows: true class, columns: predicted
        [1, 1, 0, 0, 0, 0],
        [0, 1, 0, 0, 1, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 0],
        [0, 0, 1, 0, 0, 0],
    ]
    assert r.per_class == {"a": 0.5, "b": 0.5, "c": 0.0, "d": 0.0, "e": 1.0, "f": 0.0}
    nll = [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(LOGITS, LABELS)]
    assert r.loss == pytest.approx(sum(nll) / 8, rel=1e-6)
    assert r.to_dict()["per_class"] == r.per_class and r.to_dict()["confusion"] == r.confusion.tolist()


def test_evaluation_under_ddp_equals_one_process(tmp_path):
    """Two gloo ranks, each on its shard of mnist5k's test split: the all-reduced result is the whole split's."""
    import cnnzoo
    from cnnzoo.data import load_dataset, make_loader

    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           str(HELPERS / "ddp_eval_features.py"), str(out)], env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["num_samples"] + ranks[1]["num_samples"] == 1000  # the shards partition the split
    assert ranks[0]["num_samples"] < 1000 and ranks[0]["result"] == ranks[1]["result"]  # every rank gets the total
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5")  # the helper's network: the same seed, the same weights
    bundle = load_dataset("mnist5k", download=False)
    # batches of 150 are exactly the ranks' batches (a global batch of 300 split in two), so logits are bit-equal
    single = evaluate(model, make_loader(bundle, "test", batch_size=150, train=False), 10, bundle.classes)
    ddp = ranks[0]["result"]
    assert ddp["count"] == single.count == 1000
    assert ddp["confusion"] == single.confusion.tolist()
    assert (ddp["top1"], ddp["top5"]) == (single.top1, single.top5)
    assert ddp["loss"] == pytest.approx(single.loss, rel=1e-9)
