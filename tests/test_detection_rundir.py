"""`cnnzoo detect train` into a run directory a killed R-CNN run left: the same command starts again there, and
nothing that is not the killed run's own is removed (`cnnzoo.train.rundir`, ``extra``; `cnnzoo.detection.rcnn`)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cnnzoo.cli.main import main
from cnnzoo.detection.rcnn import RCNN_EARLY_FILES
from cnnzoo.train.rundir import check_new_run_dir, clear_unstarted_run, is_unstarted_run

# sliding windows (no extra needed), no pre-training: proposals take milliseconds, fine-tuning about a second
TINY = ["--set", "data.params={num_train: 8, num_test: 4, seed: 3}", "--proposals", "sliding_window",
        "--set", "proposals.window_sizes=[20, 40]", "--set", "proposals.stride=0.5",
        "--set", "backbone.pretrain=null", "--iterations", "100", "--set", "svm.init_negatives=200", "-q"]


def _killed_run(run_dir, kind="rcnn", files=("config.yaml", ".lock", "proposals.safetensors", "finetune.csv")):
    """What a `cnnzoo detect train` SIGKILLed before its first checkpoint leaves (its run.json from cnnzoo)."""
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"kind": kind, "cnnzoo_version": "0.1", "command": "cnnzoo ..."}))
    for name in files:
        (run_dir / name).write_bytes(b"x")
    return run_dir


def test_rcnn_early_files_are_the_ones_a_run_writes_before_its_first_checkpoint():
    assert RCNN_EARLY_FILES == {"proposals.safetensors", "finetune.csv"}


def test_unstarted_rcnn_run_is_reused_and_cleared(tmp_path):
    run = _killed_run(tmp_path / "r")
    check_new_run_dir(run, RCNN_EARLY_FILES)  # accepted
    assert is_unstarted_run(run, RCNN_EARLY_FILES)
    removed = {p.name for p in clear_unstarted_run(run, RCNN_EARLY_FILES)}
    assert removed == {"run.json", "config.yaml", "proposals.safetensors", "finetune.csv"}
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the lock file stays (a later holder may use it)


def test_without_the_extra_names_the_directory_check_is_unchanged(tmp_path):
    """The classification runs pass no extra names: a directory with proposals.safetensors is not theirs."""
    run = _killed_run(tmp_path / "r")
    assert not is_unstarted_run(run)
    assert clear_unstarted_run(run) == []
    with pytest.raises(ValueError, match="not a cnnzoo run"):
        check_new_run_dir(run)
    assert len(list(run.iterdir())) == 5


def test_train_rcnn_starts_again_where_a_run_was_killed(tmp_path, monkeypatch):
    """The directory check and the clearing as `train_rcnn` does them (its training stubbed out)."""
    from cnnzoo.detection import rcnn
    from cnnzoo.detection.config import preset_config

    run = _killed_run(tmp_path / "r")
    seen = {}

    def fake_train(cfg, run_dir, *args):
        seen["left"] = sorted(p.name for p in run_dir.iterdir())
        return {"mAP": 0.0}

    monkeypatch.setattr(rcnn, "_train", fake_train)
    cfg = preset_config("digits-detection")
    cfg.proposals.method = "sliding_window"
    assert rcnn.train_rcnn(cfg, run, verbose=False) == {"mAP": 0.0}
    assert seen["left"] == [".lock"]  # the killed run's files went before the new run wrote anything


@pytest.mark.parametrize("case", ["user_file", "classification_run", "extra_name_is_a_folder"])
def test_files_not_the_killed_runs_own_are_never_removed(tmp_path, capsys, case):
    if case == "user_file":  # an unstarted R-CNN run plus a file of the user's
        run = _killed_run(tmp_path / "r", files=("config.yaml", "proposals.safetensors", "notes.txt"))
    elif case == "classification_run":  # a classification run never writes proposals.safetensors
        run = _killed_run(tmp_path / "r", kind="classification", files=("config.yaml", "proposals.safetensors"))
    else:
        run = _killed_run(tmp_path / "r", files=("config.yaml",))
        (run / "finetune.csv").mkdir()
        (run / "finetune.csv" / "mine.txt").write_text("the user's")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["detect", "train", "rcnn", "--data", "digits-detection", "--run-dir", str(run), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run) in err and "Traceback" not in err, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_finished_run_is_refused_naming_it(tmp_path, capsys):
    run = _killed_run(tmp_path / "r", files=("config.yaml", "proposals.safetensors", "finetune.csv", "metrics.json"))
    info = json.loads((run / "run.json").read_text()) | {"finished": "2024-01-01T00:00:00"}
    (run / "run.json").write_text(json.dumps(info))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "backbone.safetensors").write_bytes(b"x")
    assert main(["detect", "train", "rcnn", "--data", "digits-detection", "--run-dir", str(run), *TINY]) == 2
    err = capsys.readouterr().err
    assert "finished R-CNN run" in err and "not a cnnzoo run" not in err
    assert (run / "checkpoints" / "backbone.safetensors").is_file() and (run / "metrics.json").is_file()


@pytest.mark.slow
def test_sigkill_after_proposals_then_the_same_command_succeeds(tmp_path):
    run = tmp_path / "r"
    args = ["detect", "train", "rcnn", "--data", "digits-detection", "--run-dir", str(run), *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnzoo", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "proposals.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, proc.stderr.read().decode()[-1000:]
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stderr.close()
    left = {p.name for p in run.iterdir()}
    assert "proposals.safetensors" in left and "checkpoints" not in left, left  # killed before its first checkpoint
    assert main(args) == 0
    info = json.loads((run / "run.json").read_text())
    assert "finished" in info and (run / "checkpoints" / "detector.safetensors").is_file()
