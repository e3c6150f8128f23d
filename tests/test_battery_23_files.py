"""Issue 23's battery, the files a user has: commands that write into a directory the user names never overwrite
files they do not own, and a command that fails early leaves nothing behind.

- (3) `cnnzoo compare --out DIR` refuses a non-empty DIR that is not a comparison (as `train --run-dir` refuses one
  that is not a run); a comparison directory is recognised by the marker cnnzoo writes there (``comparison.json``),
  or, for one written before the marker existed, by its layout and cnnzoo's own results.json.
- (9) a `cnnzoo detect train` that fails before its first checkpoint leaves no ``runs/rcnn-*`` directory (and never
  deletes a directory the user had).
- (7) a damaged folder-dataset index is rebuilt (tests/test_data_folder.py has the unit cases; here, the CLI).

Each case uses the shared battery's checks (tests/test_cli_errors.py): exit 2, no traceback, one error line naming
what was wrong and what to do, and every file of the workspace byte-identical afterwards with nothing new.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import test_cli_errors
from test_cli_errors import Case, _write, assert_one_clear_error, run_cli, snapshot

ws = test_cli_errors.ws  # the battery's fixtures: the user's working directory, a tiny trained run
base_run = test_cli_errors.base_run

SMALL = ["--set", "train.epochs=1", "--set", "train.limit_batches=2"]
# R-CNN on a few generated digits, sliding windows (no extra needed), no pre-training: a run of a few seconds
TINY_RCNN = ["--set", "data.params={num_train: 4, num_test: 2, seed: 3}", "--proposals", "sliding_window",
             "--set", "proposals.window_sizes=[20, 40]", "--set", "proposals.stride=0.5",
             "--set", "backbone.pretrain=null", "--iterations", "5", "--set", "svm.init_negatives=50", "-q"]
TINY_VOC = TINY_RCNN[2:]  # a VOC folder takes no generator settings


def _legacy_results(ws: Path) -> None:
    """A user's own results.json (not a comparison's: no cnnzoo environment record) next to a report."""
    _write("mine/results.json", json.dumps({"accuracy": 0.9}))(ws)
    _write("mine/report.html", "<h1>my report</h1>")(ws)


def _user_runs(ws: Path) -> None:
    """A folder of the user's own `cnnzoo train` runs (./runs/NAME-DATE/...), not a comparison's runs/SLUG/seedS."""
    _write("mine/runs/lenet5-20240101-120000/config.yaml", "model: {name: lenet5}\n")(ws)


COMPARE = ["compare", "lenet5", *SMALL, "--out", "mine"]
OUT_WORDS = ("--out mine", "not a cnnzoo comparison", "new or empty directory")

CASES = [
    # --- (3) compare --out: a directory of the user's
    Case("compare-out-user-report", COMPARE, (*OUT_WORDS, "report.html"), setup=_write("mine/report.html", "<p>mine")),
    Case("compare-out-user-csv", COMPARE, (*OUT_WORDS, "results.csv"), setup=_write("mine/results.csv", "a,b\n1,2\n")),
    Case("compare-out-user-files", COMPARE, (*OUT_WORDS, "notes.txt"), setup=_write("mine/notes.txt", "my notes\n")),
    Case("compare-out-user-results-json", COMPARE, (*OUT_WORDS, "results.json"), setup=_legacy_results),
    Case("compare-out-user-runs", COMPARE, (*OUT_WORDS, "runs"), setup=_user_runs),
    Case("compare-out-user-plots", COMPARE, (*OUT_WORDS, "plots"), setup=_write("mine/plots/curves.png", b"\x89PNG")),
    Case("compare-out-dry-run", [*COMPARE, "--dry-run"], (*OUT_WORDS, "report.html"),
         setup=_write("mine/report.html", "<p>mine")),
    Case("compare-out-jobs", [*COMPARE, "--jobs", "2"], (*OUT_WORDS, "results.csv"),
         setup=_write("mine/results.csv", "a,b\n")),
    # --- (9) detect train: failures after the run directory was created leave nothing
    Case("detect-train-input-size", ["detect", "train", "rcnn", "--set", "backbone.input_size=8", *TINY_RCNN],
         ("backbone.input_size 8", "lenet5's smallest input (28)")),
    Case("detect-train-voc-empty", ["detect", "train", "rcnn", "--data", "voc:empty", *TINY_VOC],
         ("empty is not a Pascal VOC folder", "JPEGImages")),
    Case("detect-train-voc-missing", ["detect", "train", "rcnn", "--data", "voc:nothere", *TINY_VOC],
         ("nothere", "JPEGImages")),
    Case("detect-train-weights-not-a-file", ["detect", "train", "rcnn", "--weights", "empty", *TINY_RCNN],
         ("empty", "not a cnnzoo run")),
    Case("detect-train-weights-junk", ["detect", "train", "rcnn", "--weights", "junk.safetensors", *TINY_RCNN],
         ("junk.safetensors",), setup=_write("junk.safetensors", b"\x00" * 64)),
    Case("detect-train-users-empty-dir", ["detect", "train", "rcnn", "--run-dir", "empty",
                                          "--set", "backbone.input_size=8", *TINY_RCNN],
         ("backbone.input_size 8",)),  # the user's (empty) directory stays: the snapshot has it
    Case("detect-train-nested-run-dir", ["detect", "train", "rcnn", "--run-dir", "a/b/run",
                                         "--set", "backbone.input_size=8", *TINY_RCNN],
         ("backbone.input_size 8",)),  # a/ and a/b/ were made for the run: they go too
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(case: Case, ws: Path):
    if case.setup:
        case.setup(ws)
    before = snapshot(ws)
    code, out, err = run_cli(case.argv)
    assert_one_clear_error(code, out, err, case.expect)
    assert snapshot(ws) == before, "the failed command changed the user's files"


# ------------------------------------------------------------------------------------------ (3) compare --out
def test_an_earlier_comparison_without_the_marker_is_still_a_comparison(ws):
    """A comparison directory written before the marker existed (runs/SLUG/seedS, logs/, plots/, results.json with
    cnnzoo's environment record, report.html, results.csv) is planned as before (dry run: nothing written)."""
    (ws / "cmp" / "runs" / "lenet5" / "seed0").mkdir(parents=True)
    (ws / "cmp" / "logs").mkdir()
    (ws / "cmp" / "plots").mkdir()
    (ws / "cmp" / "plots" / "curves.png").write_bytes(b"\x89PNG")
    (ws / "cmp" / "results.json").write_text(json.dumps({"environment": {"cnnzoo": "0.1.0"}, "specs": []}))
    (ws / "cmp" / "results.csv").write_text("spec\n")
    (ws / "cmp" / "report.html").write_text("<html>")
    before = snapshot(ws)
    code, out, err = run_cli(["compare", "lenet5", *SMALL, "--out", "cmp", "--dry-run"])
    assert code == 0, err
    assert "lenet5" in out and snapshot(ws) == before
    # ... and so is one killed before its report (only runs/, logs/ and a lock)
    for name in ("results.json", "results.csv", "report.html", "plots/curves.png"):
        (ws / "cmp" / name).unlink()
    (ws / "cmp" / "plots").rmdir()
    (ws / "cmp" / ".lock").write_text("")
    code, _, err = run_cli(["compare", "lenet5", *SMALL, "--out", "cmp", "--dry-run"])
    assert code == 0, err


def test_a_comparison_marks_its_directory_and_an_empty_or_new_one_is_fine(ws):
    (ws / "cmp").mkdir()
    code, _, err = run_cli(["compare", "lenet5", *SMALL, "--out", "cmp", "-q"])
    assert code == 0, err
    marker = json.loads((ws / "cmp" / "comparison.json").read_text())
    assert "cnnzoo_version" in marker
    assert {p.name for p in (ws / "cmp").iterdir()} >= {"comparison.json", "report.html", "results.csv",
                                                       "results.json", "runs"}
    # the same command again: its own directory, its own report rewritten, the run reused
    report = (ws / "cmp" / "report.html").stat().st_mtime_ns
    code, out, err = run_cli(["compare", "lenet5", *SMALL, "--out", "cmp"])
    assert code == 0, err
    assert "finished run, reused" in out and (ws / "cmp" / "report.html").stat().st_mtime_ns != report
    # a user's file put into a comparison directory is left alone (the comparison writes only its own names)
    (ws / "cmp" / "my-notes.txt").write_text("notes")
    code, _, err = run_cli(["compare", "lenet5", *SMALL, "--out", "cmp", "-q"])
    assert code == 0, err
    assert (ws / "cmp" / "my-notes.txt").read_text() == "notes"


# ------------------------------------------------------------------------------------------ (9) detect train
def test_detect_train_interrupted_before_its_first_checkpoint_leaves_nothing(ws, monkeypatch):
    """Ctrl-C while the proposals are computed: exit 130, no runs/ directory left."""
    from cnnzoo.detection import rcnn

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rcnn, "compute_proposals", interrupted)
    before = snapshot(ws)
    code, out, err = run_cli(["detect", "train", "rcnn", *TINY_RCNN])
    assert code == 130 and "Traceback" not in out + err
    assert snapshot(ws) == before


def test_detect_train_failing_after_its_first_checkpoint_keeps_the_run(ws, monkeypatch):
    """After the fine-tuned backbone is saved the run directory is kept (what it holds is worth keeping)."""
    from cnnzoo.detection import rcnn

    def broken(*args, **kwargs):
        raise ValueError("the SVMs failed")

    monkeypatch.setattr(rcnn, "_train_svms", broken)
    code, _, err = run_cli(["detect", "train", "rcnn", "--run-dir", "run", *TINY_RCNN])
    assert code == 2 and "the SVMs failed" in err
    assert (ws / "run" / "checkpoints" / "backbone.safetensors").is_file() and (ws / "run" / "run.json").is_file()


# ------------------------------------------------------------------------------------------ (7) folder index
def test_a_damaged_folder_index_is_rebuilt_with_one_line(ws, caplog):
    """`[]` in a folder's .cnnzoo-index.json was an internal error; now a warning and a rebuilt index (the warning
    goes through the ``cnnzoo.data`` logger: a user sees it as one line on stderr)."""
    from PIL import Image

    for c in ("a", "b"):
        (ws / "d" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(ws / "d" / c / f"{i}.png")
    (ws / "d" / ".cnnzoo-index.json").write_text("[]")
    caplog.set_level("WARNING", logger="cnnzoo.data")
    code, out, err = run_cli(["train", "lenet5", "--data", "folder:d", "--set", "data.input_size=32", "--epochs", "1",
                              "--limit-batches", "1", "--batch-size", "2", "--set", "data.num_workers=0",
                              "--set", "data.eval_batch_size=2", "--run-dir", "run", "-q"])
    assert code == 0, err
    assert "Traceback" not in out + err
    lines = [r.getMessage() for r in caplog.records if ".cnnzoo-index.json" in r.getMessage()]
    assert len(lines) == 1 and "rebuilding it" in lines[0] and "\n" not in lines[0], lines
    assert isinstance(json.loads((ws / "d" / ".cnnzoo-index.json").read_text()), dict)


# ------------------------------------------------------------------------------------------ neighbours: named files
@pytest.mark.parametrize("argv", [
    ["summary", "lenet5", "--plot", "mine.png"],
    ["list", "lenet5", "--plot", "mine.png"],
    ["list", "lenet5", "--plot", "mine.html"],
    ["eval", "run", "--plot", "mine.png"],
], ids=["summary-plot", "list-plot-png", "list-plot-html", "eval-plot"])
def test_a_plot_over_an_existing_file_is_written_whole_or_not_at_all(argv, ws, monkeypatch, request):
    """`--plot FILE` replaces the file the user named, but atomically: a disk that fills up mid-write leaves the old
    file as it was (one clear line, exit 2), never a truncated one."""
    import errno
    import os
    import shutil

    if argv[0] == "eval":
        shutil.copytree(request.getfixturevalue("base_run"), ws / "run")
    (ws / argv[-1]).write_bytes(b"the user's old picture")

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    before = snapshot(ws)
    code, out, err = run_cli(argv)
    assert_one_clear_error(code, out, err, ("no space left",))
    assert snapshot(ws) == before


def test_train_failing_before_its_first_checkpoint_leaves_no_runs_folder(ws, monkeypatch):
    """The neighbour of (9) in `cnnzoo train`: the default ./runs/NAME-DATE directory went, but the ./runs folder the
    run had created stayed behind, empty."""
    from cnnzoo.train.engine import Trainer

    def broken(self, *args, **kwargs):
        raise ValueError("the first epoch failed")

    monkeypatch.setattr(Trainer, "_train_epoch", broken)
    before = snapshot(ws)
    code, out, err = run_cli(["train", "lenet5", "--epochs", "1", "--limit-batches", "1", "-q"])
    assert_one_clear_error(code, out, err, ("the first epoch failed",))
    assert snapshot(ws) == before
