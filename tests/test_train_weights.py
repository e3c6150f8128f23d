"""`train --weights` starts from a checkpoint (and records what it implies); small inputs are upsampled to the card."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnzoo import registry
from cnnzoo.cli.main import main
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import Counterpart, Paper, register_model
from cnnzoo.train import Trainer, apply_overrides, default_config
from cnnzoo.train.checkpoint import load_trained


class _Tiny(ZooModel):
    """A small convnet whose ``flip`` option changes the logits but not the state-dict layout."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, flip: bool = False):
        super().__init__()
        self.num_classes, self.in_channels, self.num_features, self.flip = num_classes, in_channels, 8, flip
        self.conv = nn.Conv2d(in_channels, 8, 3, 2)
        self.fc = nn.Linear(8, num_classes)
        self.feature_info = [{"num_chs": 8, "reduction": 2, "module": "conv"}]

    def forward_features(self, x):
        x = torch.relu(self.conv(x.flip(-1) if self.flip else x))
        return x

    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes):
        self.num_classes, self.fc = num_classes, nn.Linear(8, num_classes)


@pytest.fixture
def tiny_with_counterpart():
    """Registered for this test only: its 'timm' files need flip=True."""
    name = "_test_tiny_flip"

    def builder(**kwargs):
        return _Tiny(**kwargs)

    builder.__name__ = name
    register_model(_Tiny, paper=Paper("t", "a", 2000, "u"), input_size=(1, 28, 28),
                   counterparts=(Counterpart("timm", "tiny_flip", {"flip": True}),))(builder)
    yield name
    del registry._REGISTRY[name]


def _cfg(run_dir, name="lenet5", *extra):
    return apply_overrides(default_config(name, "mnist5k"), [
        "train.epochs=1", "train.limit_batches=3", "data.batch_size=32", "train.device=cpu",
        f"train.run_dir={run_dir}", *extra])


def test_train_starts_from_a_previous_run(tmp_path):
    first = Trainer(_cfg(tmp_path / "a"), verbose=False)
    first.fit()
    best = load_file(str(tmp_path / "a" / "checkpoints" / "last.safetensors"))
    second = Trainer(_cfg(tmp_path / "b", "lenet5", f"model.weights={tmp_path / 'a'}"), verbose=False)
    start = second.model.state_dict()
    assert all(torch.equal(start[k], best[k]) for k in best)
    assert second.model.pretrained_cfg["weights_source"] == "cnnzoo"


def test_options_a_peer_checkpoint_implies_are_recorded_in_the_run(tmp_path, tiny_with_counterpart):
    name = tiny_with_counterpart
    peer = _Tiny(num_classes=10)
    torch.save(peer.state_dict(), tmp_path / "peer.pth")
    trainer = Trainer(_cfg(tmp_path / "run", name, f"model.weights={tmp_path / 'peer.pth'}"), verbose=False)
    assert trainer.model.flip  # applied from the checkpoint, not passed by the user
    trainer.fit()
    model, meta = load_trained(tmp_path / "run")
    assert meta["options"]["flip"] is True and model.flip  # eval/predict rebuild the same network
    x = torch.randn(2, 1, 28, 28)
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    ref = _Tiny(flip=True)
    ref.load_state_dict(saved)
    torch.testing.assert_close(model(x), ref.eval()(x))


def test_a_small_dataset_is_upsampled_to_the_cards_input_size(tmp_path):
    trainer = Trainer(_cfg(tmp_path / "run", "nin"), verbose=False)  # NiN needs >= 39 pixels; MNIST has 28
    assert trainer.input_size == 224
    trainer.train_loader.set_epoch(0)
    images, _ = next(iter(trainer.train_loader))
    assert images.shape[1:] == (1, 224, 224)
    trainer.test_loader.set_epoch(0)
    assert next(iter(trainer.test_loader))[0].shape[1:] == (1, 224, 224)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["input_size"] == 224 and info["data"]["image_size"] == [28, 28]
    trainer.close()


def test_train_weights_flag_reaches_the_model(tmp_path, capsys):
    first = tmp_path / "a"
    assert main(["train", "lenet5", "--epochs", "1", "--limit-batches", "2", "--run-dir", str(first), "-q"]) == 0
    assert main(["train", "lenet5", "--epochs", "1", "--limit-batches", "2", "--weights", str(first),
                 "--run-dir", str(tmp_path / "b"), "-q"]) == 0
    cfg = (tmp_path / "b" / "config.yaml").read_text()
    assert str(first) in cfg
    capsys.readouterr()
    assert main(["train", "lenet5", "--epochs", "1", "--weights", str(tmp_path / "nowhere"),
                 "--run-dir", str(tmp_path / "c"), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "c").exists()
