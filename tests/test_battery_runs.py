"""Issue 23's battery for a run's own files: a damaged pointer, a kill during the first save, an emptied
config.yaml, a shorter --epochs. Whatever is damaged, no checkpoint is lost and nothing trains with settings the run
was not trained with; every case either continues exactly as an undamaged run would or refuses in one line,
changing nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_cli_errors import assert_one_clear_error, run_cli, snapshot

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["train", "lenet5", "--epochs", "2", "--limit-batches", "2", "--batch-size", "32", "--lr", "0.02",
         "-o", "drop_rate=0.3", "--device", "cpu", "--set", "data.holdout_fraction=0.1", "-q"]


def _train(run: Path, *extra: str) -> None:
    code, out, err = run_cli([*TRAIN, "--run-dir", str(run), *extra])
    assert code == 0, out + err


def _resume(run: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["train", "--resume", str(run), "-q", *extra])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _checkpoint_files(run: Path) -> set[str]:
    return {p.name for p in (run / "checkpoints").iterdir() if not p.name.endswith(".tmp")}


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished 2-epoch lenet5 run (2 batches an epoch, dropout on: the RNG state matters)."""
    run = tmp_path_factory.mktemp("base") / "run"
    _train(run)
    return run


@pytest.fixture(scope="module")
def extended(base, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The undamaged run resumed to 3 epochs: what every repaired run must reach, bit for bit."""
    run = tmp_path_factory.mktemp("ext") / "run"
    shutil.copytree(base, run)
    code, out, err = _resume(run, "--epochs", "3")
    assert code == 0, out + err
    return _weights(run)


@pytest.fixture
def run(base, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base, copy)
    return copy


# ------------------------------------------------------------------ 1. a damaged pointer never costs a checkpoint
@pytest.mark.parametrize("pointer", ["last.json", "best.json"])
@pytest.mark.parametrize("content", ["{not json", "[]", "{}", '{"weights": "last-e0009-b000000.safetensors"}'])
def test_a_damaged_pointer_is_rebuilt_from_the_checkpoint_files(run, extended, pointer, content, capsys):
    before = _checkpoint_files(run)
    original = (run / "checkpoints" / pointer).read_text()
    (run / "checkpoints" / pointer).write_text(content)
    code, out, err = _resume(run, "--epochs", "2")  # the run is complete: nothing to train, nothing to delete
    assert code == 0, out + err
    assert f"{pointer}" in err and "rebuilt it from" in err
    assert _checkpoint_files(run) == before
    assert json.loads((run / "checkpoints" / pointer).read_text()) == json.loads(original)
    code, out, err = _resume(run, "--epochs", "3")
    assert code == 0, out + err
    assert _same(_weights(run), extended) and _epochs(run) == [1, 2, 3]


def test_a_damaged_pointer_with_no_complete_checkpoint_is_refused_deleting_nothing(run, tmp_path):
    (run / "checkpoints" / "last.json").write_text("{}")
    for f in (run / "checkpoints").glob("last-e*.state.pt"):
        f.write_bytes(f.read_bytes()[:100])  # the only training state is truncated: nothing complete to resume
    before = snapshot(run)
    code, out, err = _resume(run, "--epochs", "3")
    assert_one_clear_error(code, out, err, ("last.json", "does not hold a checkpoint pointer", "no complete"))
    assert snapshot(run) == before


# ------------------------------------------------------------------ 2. a kill during the first save
def _stopped_in_first_save(run: Path, stage: str) -> None:
    """Make ``run`` (a run that finished epoch 1 of 2) look like one killed during its first checkpoint: the
    metrics written but no checkpoint; the best checkpoint written but not the last; the last pair written but
    not its pointer."""
    ckpt = run / "checkpoints"
    for f in ckpt.iterdir():
        keep = (stage == "best" and f.name.startswith("best")) or \
               (stage == "last-pair" and (f.name.startswith("best") or f.name.startswith("last-e")))
        if not keep:
            f.unlink()
    for name in ("eval.json", "confusion_matrix.png"):
        (run / name).unlink(missing_ok=True)
    if stage == "metrics":
        ckpt.rmdir()


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    _train(run, "--epochs", "1")
    return run


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("two") / "run"
    _train(run)
    return _weights(run)


@pytest.mark.parametrize("stage", ["metrics", "best", "last-pair"])
@pytest.mark.parametrize("how", ["resume", "same-command"])
def test_a_run_killed_in_its_first_save_resumes_or_starts_again(one_epoch, two_epochs, tmp_path, stage, how):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    _stopped_in_first_save(run, stage)
    if how == "same-command" and stage == "last-pair":  # a complete pair is a run to resume, never overwritten
        before = snapshot(run)
        code, out, err = run_cli([*TRAIN, "--run-dir", str(run)])
        assert_one_clear_error(code, out, err, ("already holds a run", "--resume"))
        assert snapshot(run) == before
    if how == "resume" or stage == "last-pair":
        code, out, err = _resume(run, "--epochs", "2")
        assert code == 0, out + err
    else:
        _train(run)  # the command that was killed, typed again
    assert _same(_weights(run), two_epochs) and _epochs(run) == [1, 2]


@pytest.mark.parametrize("again", ["same-command", "resume"])
def test_kill_9_as_the_first_checkpoint_file_appears(tmp_path, two_epochs, again):
    """The issue's reproduction: SIGKILL as soon as the first file appears in checkpoints/, then the same command
    again or --resume; both end in the uninterrupted run's weights."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cnnzoo", *TRAIN, "--run-dir", str(run)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    resumable = (run / "checkpoints" / "last.json").exists()  # a kill that came late: the run is resumable
    argv = [*TRAIN, "--run-dir", str(run)] if again == "same-command" and not resumable else \
        ["train", "--resume", str(run), "-q"]
    done = subprocess.run([sys.executable, "-m", "cnnzoo", *argv], env=ENV, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]
    assert _same(_weights(run), two_epochs) and _epochs(run) == [1, 2]


# ------------------------------------------------------------------ 4. an emptied config.yaml
@pytest.mark.parametrize("content", ["", "# nothing\n", "train: {epochs: 3}\n"])
def test_resume_uses_the_recorded_config_not_library_defaults(run, extended, content, capsys):
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(content)
    code, out, err = _resume(run, "--epochs", "3")
    assert code == 0, out + err
    assert "config.yaml" in err  # a note says what was used
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["batch_size"] == recorded["data"]["batch_size"] == 32
    assert saved["optim"] == recorded["optim"] and saved["model"] == recorded["model"]
    assert _same(_weights(run), extended)


def test_an_edited_config_key_is_used_and_named(run, capsys):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["optim"]["lr"] = 0.01
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = _resume(run, "--epochs", "3")
    assert code == 0, out + err
    assert "optim.lr" in err and "differs" in err


# ------------------------------------------------------------------ 5. --epochs below what the run holds
@pytest.mark.parametrize("epochs", ["1"])
def test_resume_with_fewer_epochs_than_trained_is_refused(run, epochs):
    before = snapshot(run)
    code, out, err = _resume(run, "--epochs", epochs)
    assert_one_clear_error(code, out, err, ("already trained 2 epoch", "--epochs above 1"))
    assert snapshot(run) == before


# ------------------------------------------------------------------ issue 31.4: "best" is never chosen on the test split
def test_best_is_chosen_on_a_validation_split_carved_from_training_data(tmp_path):
    from cnnzoo.data import load_dataset
    from cnnzoo.train import Trainer, apply_overrides, default_config
    from cnnzoo.train.checkpoint import load_checkpoint

    cfg = apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=3", "train.limit_batches=2", "data.batch_size=32", "train.device=cpu", "optim.lr=0.02",
        f"train.run_dir={tmp_path / 'run'}", "data.holdout_fraction=0.1"])
    trainer = Trainer(cfg, verbose=False)
    full = load_dataset("mnist5k").train
    train, val = trainer.fit_bundle.train, trainer.val_bundle.test
    assert len(val) == 400 and len(train) + len(val) == len(full) == 4000  # 10% of each class's 400
    assert torch.bincount(val.labels, minlength=10).tolist() == [40] * 10
    # every image is in exactly one part; the test split is untouched
    assert torch.equal(torch.cat([train.images, val.images]).flatten(1).sum(1).sort()[0],
                       full.images.flatten(1).sum(1).sort()[0])
    assert trainer.test_loader.num_samples == 1000
    trainer.fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all({"val_acc", "val_loss"} <= r.keys() for r in rows)
    _, meta, _ = load_checkpoint(tmp_path / "run" / "checkpoints", "best")
    best_val = max(range(3), key=lambda i: (rows[i]["val_acc"], -i))  # the first epoch reaching the best
    assert meta["epoch"] == rows[best_val]["epoch"]


def test_eval_of_a_run_scores_the_weights_it_reported(tmp_path):
    """No validation split: no "best"; `eval RUN` scores the last checkpoint and finds the run's own figure."""
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "lenet5", "--epochs", "2", "--limit-batches", "2", "--batch-size", "32",
                              "--run-dir", str(run), "-q"])
    assert code == 0, err
    assert not (run / "checkpoints" / "best.json").exists()
    code, out, err = run_cli(["eval", str(run), "--json", "--precision", "fp32"])
    assert code == 0, err
    assert json.loads(out)["top1"] == json.loads((run / "eval.json").read_text())["top1"]


def test_eval_names_the_checkpoint_it_scored(base):
    code, out, err = run_cli(["eval", str(base), "--precision", "fp32"])
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("checkpoint: "))
    assert str(base / "checkpoints" / "last.safetensors") in line and "epoch 2" in line and "reported" in line
    code, out, err = run_cli(["eval", str(base / "checkpoints" / "best.safetensors"), "--json"])
    assert code == 0, err
    assert json.loads(out)["checkpoint"].endswith("best.safetensors")
