"""Run directories: one writer at a time, nothing of the user's overwritten, kill -9 at any moment is harmless."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.cli.main import main
from cnnzoo.train import Trainer, apply_overrides, default_config
from cnnzoo.train.rundir import RunDirBusy

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# lenet5 with dropout (the RNG state matters), a checkpoint after every 3-batch epoch: a kill often lands in a write
TRAIN = ["train", "lenet5", "--epochs", "8", "--limit-batches", "3", "--batch-size", "32", "--device", "cpu",
         "-o", "drop_rate=0.3", "--quiet"]


def _cfg(run_dir, *extra):
    return apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=2", "train.limit_batches=2", "data.batch_size=32", "train.device=cpu",
        f"train.run_dir={run_dir}", *extra])


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    first = Trainer(_cfg(run), verbose=False)  # holds the lock from its first write until it finishes
    with pytest.raises(RunDirBusy, match=rf"being written by another process \(pid {os.getpid()} on "):
        Trainer(_cfg(run), verbose=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "lenet5", "--run-dir", str(run), "--quiet"]) == 2
    assert "being written by another process" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    first.fit()  # the lock goes with the run
    with pytest.raises(ValueError, match="already holds a run; resume it"):
        Trainer(_cfg(run), verbose=False)


def test_two_processes_into_one_run_directory(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cnnzoo", *TRAIN[:3], "200", *TRAIN[4:], "--run-dir", str(run)]
    a = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "run.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        b = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120, check=False)
        assert b.returncode != 0 and "Traceback" not in b.stderr
        assert f"being written by another process (pid {a.pid}" in b.stderr
        r = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--resume", str(run)], env=ENV,
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode != 0 and f"pid {a.pid}" in r.stderr
    finally:
        a.kill()
        a.wait()


@pytest.mark.parametrize("content", ["config.yaml", "metrics.csv", "eval.json", "notes.txt"])
def test_a_non_empty_directory_that_is_not_a_run_is_refused(tmp_path, capsys, content):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / content).write_text("the user's own file\n")
    capsys.readouterr()
    assert main(["train", "lenet5", "--epochs", "1", "--limit-batches", "1", "--run-dir", str(mine), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not empty and is not a cnnzoo run" in err and content in err
    assert sorted(p.name for p in mine.iterdir()) == [content]
    assert (mine / content).read_text() == "the user's own file\n"


def test_a_failed_start_leaves_nothing_behind(tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(run, "optim.lr=1e30")  # diverges at the first step
    from cnnzoo.train import TrainingDiverged

    with pytest.raises(TrainingDiverged):
        Trainer(cfg, verbose=False).fit()
    assert not run.exists()


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last.safetensors"))


def _debris(run: Path) -> list[str]:
    return sorted(p.name for d in (run, run / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp"))


def _kill_storm(run: Path, kills: int, rng: random.Random, from_start: bool = False) -> int:
    """Start (or resume) the run and SIGKILL it at a random moment, ``kills`` times; return how many landed.

    ``from_start``: kills land from the moment the run directory appears, the first checkpoint write included;
    after a kill before the first checkpoint the next start is, at random, the same command again or --resume
    (a user may type either). Otherwise kills land after the first checkpoint.
    """
    landed = 0
    for _ in range(kills):
        resumable = (run / "checkpoints" / "last.json").exists()
        if resumable or (from_start and (run / "run.json").exists() and rng.random() < 0.5):
            args = ["train", "--resume", str(run), "--quiet"]
        else:
            args = [*TRAIN, "--run-dir", str(run)]
        proc = subprocess.Popen([sys.executable, "-m", "cnnzoo", *args], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        marker = run / ("run.json" if from_start else "checkpoints/last.json")
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        proc.wait()
    return landed


def _resume_to_end(run: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--resume", str(run), "--quiet"], env=ENV,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]
    return done


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    done = subprocess.run([sys.executable, "-m", "cnnzoo", *TRAIN, "--run-dir", str(run)], env=ENV,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-1000:]
    return _final_weights(run)


def test_kill_9_then_resume_is_bit_identical_and_cleans_debris(tmp_path, uninterrupted):
    run = tmp_path / "run"
    assert _kill_storm(run, 1, random.Random(0)) == 1
    # debris as a kill inside a write leaves it: a temporary file and a checkpoint pair no pointer names
    (run / "checkpoints" / ".last-e0007-b000000.safetensors.abc123.tmp").write_bytes(b"half a file")
    (run / ".metrics.csv.xyz.tmp").write_bytes(b"epoch,")
    (run / "checkpoints" / "last-e0099-b000000.safetensors").write_bytes(b"orphan")
    _resume_to_end(run)
    assert _debris(run) == [] and not (run / "checkpoints" / "last-e0099-b000000.safetensors").exists()
    final = _final_weights(run)
    assert final.keys() == uninterrupted.keys()
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 9))


@pytest.mark.slow
def test_a_storm_of_20_kills_never_corrupts_the_run(tmp_path, uninterrupted):
    """Kills from the first instant of the run, its first checkpoint write included (issue 23)."""
    run = tmp_path / "run"
    landed = _kill_storm(run, 20, random.Random(1), from_start=True)
    assert landed >= 10  # most kills land while the run is going
    if (run / "config.yaml").exists():
        _resume_to_end(run)
    else:  # killed between run.json and config.yaml: the same command starts it again
        assert subprocess.run([sys.executable, "-m", "cnnzoo", *TRAIN, "--run-dir", str(run)], env=ENV,
                              timeout=300, check=False).returncode == 0
    assert _debris(run) == []
    final = _final_weights(run)
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)
