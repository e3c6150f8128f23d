"""Issue 31 point 3: `cnnzoo train` and `cnnzoo demo` take ``--threads N`` as `compare` and `bench` do; the run
trains with N intra-op threads (torch.get_num_threads() inside the Trainer) and run.json records them.
(Bad values are in the CLI error battery, tests/test_cli_errors.py.)"""

from __future__ import annotations

import json

import pytest
import torch

import cnnzoo.cli.train as cli_train
from cnnzoo.cli.main import main


@pytest.fixture
def restore_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _seen_threads(monkeypatch) -> list[int]:
    """torch's thread count each optimizer step saw (a Trainer callback); the run cut to one step of one epoch."""
    from cnnzoo import train

    seen: list[int] = []
    real = train.Trainer

    def trainer(*a, **kw):
        return real(*a, callbacks=[lambda t, e, b: seen.append(torch.get_num_threads())], **kw)

    monkeypatch.setattr(train, "Trainer", trainer)
    flags = cli_train._flag_overrides
    monkeypatch.setattr(cli_train, "_flag_overrides", lambda args: flags(args) + [
        ("--epochs", "train.epochs=1"), ("--limit-batches", "train.limit_batches=1")])
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("command", [["train", "lenet5"], ["demo"]])
def test_threads_flag_sets_the_training_threads(command, tmp_path, monkeypatch, restore_threads, capsys):
    want = 3 if torch.get_num_threads() != 3 else 2
    seen = _seen_threads(monkeypatch)
    rc = main([*command, "--threads", str(want), "--run-dir", str(tmp_path / "run"), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert seen and set(seen) == {want}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["threads"] == want
    assert f"{want} threads" in capsys.readouterr().out  # on the start line
