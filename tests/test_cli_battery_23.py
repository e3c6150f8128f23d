"""Issue 23's battery, what a user types: float options, a closed pipe, and messages that say what was wrong and
what is valid.

- (6) every float option of every command is a finite number, in its valid range where it has one (one shared
  argparse action, `cnnzoo.cli.common.FloatArg`); ``--threshold nan`` once reported "0 detections scoring above nan".
- (10) ``cnnzoo ... | head -1``: the reader leaving ends the command quietly (no message), exit 141 = 128 + SIGPIPE,
  the status a shell reports for a Unix tool stopped by a closed pipe.
- (11) unclear messages: each case below once said something that did not tell what was wrong or what is valid
  (e.g. ``--seeds 5-2`` -> "got []", ``--recipe PAPER`` -> "does not exist", ``train.mix=mixup`` -> "must be
  dict | None"); the short forms ``train.mix=NAME`` and ``train.ema=DECAY`` are now accepted.

Each CLI case uses the shared battery's checks (tests/test_cli_errors.py): exit 2, no traceback, one error line
holding the listed words, and every file of the workspace byte-identical afterwards with nothing new.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

import test_cli_errors
from test_cli_errors import Case, assert_one_clear_error, run_cli, snapshot

ws = test_cli_errors.ws  # the battery's fixture: the user's working directory (cases run from it)

SMALL = ["--epochs", "1", "--limit-batches", "1", "-q"]  # if a case ever trains again, it is over in seconds

CASES = [
    # --- (6) float options: finite, in range; the line names the flag, the value as typed, the valid range
    Case("detect-predict-threshold-nan", ["detect", "predict", "empty", "digit.png", "--threshold", "nan"],
         ("--threshold must be a finite number", "'nan'")),
    Case("detect-predict-threshold-inf", ["detect", "predict", "empty", "digit.png", "--threshold=-inf"],
         ("--threshold must be a finite number", "'-inf'")),
    Case("detect-predict-threshold-text", ["detect", "predict", "empty", "digit.png", "--threshold", "high"],
         ("--threshold must be a finite number", "'high'", "invalid float value")),
    Case("detect-eval-nms-nan", ["detect", "eval", "empty", "--nms", "nan"],
         ("--nms must be a finite number in [0, 1] (an IoU)", "'nan'")),
    Case("detect-eval-nms-range", ["detect", "eval", "empty", "--nms", "1.5"], ("--nms", "in [0, 1]", "got '1.5'")),
    Case("bench-seconds-nan", ["bench", "lenet5", "--seconds", "nan"], ("--seconds must be a finite number > 0", "'nan'")),
    Case("bench-seconds-zero", ["bench", "lenet5", "--seconds", "0"], ("--seconds must be a finite number > 0", "'0'")),
    Case("bench-seconds-inf", ["bench", "lenet5", "--seconds", "inf"], ("--seconds must be a finite number > 0", "'inf'")),
    Case("compare-target-inf", ["compare", "lenet5", "--target", "inf", "--dry-run"],
         ("--target must be a finite number in (0, 100] (a top-1 accuracy in percent)", "'inf'")),
    Case("compare-target-nan", ["compare", "lenet5", "--target", "nan", "--dry-run"],
         ("--target must be a finite number in (0, 100]", "'nan'")),
    # --- (11) compare --seeds
    Case("compare-seeds-reversed", ["compare", "lenet5", "--seeds", "5-2", "--dry-run"],
         ("--seeds '5-2'", "the range 5-2 is reversed", "--seeds 2-5", "0,1,2", "0-4")),
    Case("compare-seeds-reversed-in-list", ["compare", "lenet5", "--seeds", "0,9-7", "--dry-run"],
         ("range 9-7 is reversed", "--seeds 7-9")),
    Case("compare-seeds-negative", ["compare", "lenet5", "--seeds=-1", "--dry-run"],
         ("--seeds '-1'", "negative seed", "0,1,2", "0-4")),
    Case("compare-seeds-empty-part", ["compare", "lenet5", "--seeds", "0,,1", "--dry-run"],
         ("--seeds '0,,1'", "empty seed", "0,1,2")),
    # --- (11) --recipe PAPER: read as a file name once
    Case("train-recipe-upper-paper", ["train", "lenet5", "--recipe", "PAPER", *SMALL],
         ("--recipe 'PAPER' is not a file", "did you mean --recipe paper?", "cnnzoo recipes")),
    Case("train-recipe-upper-paper-name", ["train", "lenet5", "--recipe", "Paper:VGG", *SMALL],
         ("did you mean --recipe paper:vgg?",)),
    Case("compare-recipe-upper-paper", ["compare", "lenet5", "--recipe", "PAPER", "--dry-run"],
         ("did you mean --recipe paper?",)),
    # --- (11) train.mix / train.ema: anything but the accepted forms names them
    Case("train-mix-unknown-name", ["train", "lenet5", "--set", "train.mix=mixupp", *SMALL],
         ("train.mix must be a method name (mixup, cutmix, manifold_mixup, patchup, puzzlemix", "{name: mixup",
          "null/none (no mixing)", "'mixupp'")),
    Case("train-mix-number", ["train", "lenet5", "--set", "train.mix=3", *SMALL], ("train.mix must be a method name",)),
    Case("train-ema-word", ["train", "lenet5", "--set", "train.ema=fast", *SMALL],
         ("train.ema must be a decay in (0, 1) such as 0.999", "true (the default decay", "null/false (off)",
          "'fast'")),
    Case("train-ema-decay-short", ["train", "lenet5", "--set", "train.ema=1.5", *SMALL],
         ("train.ema decay must be a number in (0, 1)", "1.5")),
    # --- (11) --set: a key whose type alone ("dict | None") said nothing of what it takes
    Case("train-set-augment-word", ["train", "lenet5", "--set", "data.augment=hflip", *SMALL],
         ("data.augment must be a mapping of augmentation settings", "{hflip: true", "dataset's default policy",
          "'hflip'")),
    Case("train-set-grad-clip-word", ["train", "lenet5", "--set", "optim.grad_clip=big", *SMALL],
         ("optim.grad_clip must be a positive number or null (no clipping)", "'big'")),
    Case("train-set-channels-last", ["train", "lenet5", "--set", "model.channels_last=maybe", *SMALL],
         ("model.channels_last must be true, false or null", "'maybe'")),
    Case("train-set-input-size", ["train", "lenet5", "--set", "data.input_size=big", *SMALL],
         ("data.input_size must be an int >= 1 (pixels) or null",
          "(folders: the network's input size; else the dataset's)", "'big'")),
    Case("train-set-weights-number", ["train", "lenet5", "--set", "model.weights=3", *SMALL],
         ("model.weights must be a checkpoint or weights file", "'torchvision'", "got 3")),
    Case("train-set-init-number", ["train", "lenet5", "--set", "model.init=3", *SMALL],
         ("model.init must be a scheme name (paper, normal, xavier, kaiming)", "{name: normal, std: 0.01}")),
    Case("train-set-betas-number", ["train", "lenet5", "--set", "optim.betas=0.9", *SMALL],
         ("optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999]", "got 0.9")),
    Case("train-set-milestones-number", ["train", "lenet5", "--set", "schedule.milestones=30", *SMALL],
         ("schedule.milestones must be a list of epochs, e.g. [30, 60, 90]", "got 30")),
    Case("train-set-no-value-int", ["train", "lenet5", "--set", "data.batch_size=", *SMALL],
         ("data.batch_size must be an int", "no value")),
    Case("train-set-no-value-device", ["train", "lenet5", "--set", "train.device=", *SMALL],
         ("train.device must be a device: auto, cpu, cuda, cuda:N, mps", "no value")),
    Case("train-set-no-value-choice", ["train", "lenet5", "--set", "schedule.name=", *SMALL],
         ("schedule.name must be one of none, step, multistep, plateau, cosine, onecycle", "no value")),
    Case("train-init-unknown", ["train", "lenet5", "--init", "he", *SMALL],
         ("--init must be a scheme name (paper, normal, xavier, kaiming)", "'he'")),
    # --- (11) values accepted silently, or refused without naming the flag
    Case("train-val-fraction", ["train", "lenet5", "--set", "data.val_fraction=2", *SMALL],
         ("data.val_fraction must be in [0, 1)", "got 2")),
    Case("train-seed-negative", ["train", "lenet5", "--seed", "-1", *SMALL], ("--seed must be at least 0", "-1")),
    Case("train-run-dir-empty", ["train", "lenet5", "--run-dir", "", *SMALL],
         ("--run-dir is an empty path", "./runs/NAME-YYYYmmdd-HHMMSS")),
    Case("train-weights-empty", ["train", "lenet5", "--weights", "", *SMALL],
         ("--weights is an empty path", "'torchvision'")),
    Case("train-init-from-empty", ["train", "lenet5", "--init-from", "", *SMALL],
         ("--init-from is an empty path", "a run directory or checkpoint file")),
    Case("demo-run-dir-empty", ["demo", "--run-dir", "", "-q"], ("--run-dir is an empty path",)),
    Case("train-data-empty", ["train", "lenet5", "--data", "", *SMALL], ("--data is empty", "mnist5k")),
    Case("train-recipe-empty", ["train", "lenet5", "--recipe", "", *SMALL], ("--recipe is empty", "'paper'")),
    Case("predict-image-empty", ["predict", "empty", ""], ("image path is empty", "image files")),
    Case("compare-data-empty", ["compare", "lenet5", "--data", "", "--dry-run"],
         ("--data '' names no dataset", "mnist5k", "folder:PATH")),
    Case("compare-out-empty", ["compare", "lenet5", "--out", "", "--dry-run"],
         ("--out '' names no directory", "--out compare")),
    # --- (11) recipes and summary
    Case("recipes-unknown-name", ["recipes", "vgg17"],
         ("unknown network 'vgg17', and no paper recipe has that name", "did you mean", "vgg16", "resnet_cifar", "cnnzoo list")),
    Case("summary-depth-word", ["summary", "lenet5", "--depth", "deep"],
         ("--depth", "'deep' is not a whole number", "0 or more")),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(case: Case, ws: Path):
    if case.setup:
        case.setup(ws)
    before = snapshot(ws)
    code, out, err = run_cli(case.argv)
    assert_one_clear_error(code, out, err, case.expect)
    assert snapshot(ws) == before, "the failed command changed the user's files"


# ----------------------------------------------------------------------------------------------- (6) every float
def _float_actions():
    """(command words, action) of every option of every (sub)command that takes a float."""
    from cnnzoo.cli.main import build_parser

    out = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*words, name])
            elif action.type is float or type(action).__name__ == "FloatArg":
                out.append((words, action))

    walk(build_parser(), [])
    return out


def test_no_option_reads_a_float_with_plain_float():
    """``type=float`` takes nan and inf: every float option goes through the shared FloatArg instead."""
    from cnnzoo.cli.common import FloatArg

    actions = _float_actions()
    assert len(actions) >= 9  # train's five, detect's two, bench, compare (a walk that finds none is broken)
    plain = [f"{' '.join(w)} {a.option_strings[0]}" for w, a in actions if not isinstance(a, FloatArg)]
    assert not plain, f"float options read with type=float (nan/inf get through): {plain}"


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN", "1e999", "abc", ""])
def test_every_float_option_refuses_non_finite_values(bad, ws):
    """Each float option of each command: exit 2 and one line naming the flag and the value as typed. An option
    that is a training-config shortcut (``--lr``: ``config=True``) is checked by the config, as the same key from
    --set or a recipe is, so it runs through `cnnzoo train`; the others are refused as they are parsed."""
    from cnnzoo.cli.main import build_parser

    for words, action in _float_actions():
        flag = action.option_strings[-1]
        shown = repr(bad)
        if getattr(action, "config", False):
            code, _, err = run_cli([*words, "lenet5", f"{flag}={bad}", *SMALL])
            if bad not in ("abc", ""):  # read as a float first: shown as Python writes it (1e999 -> 'inf')
                shown = repr(repr(float(bad)))
        else:
            code, _, err = run_cli_parse(build_parser(), [*words, f"{flag}={bad}"])
        assert code == 2, (words, flag, bad, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err  # one line: no usage block
        assert f"{flag} must be a finite number" in lines[0] and shown in lines[0], lines[0]


def run_cli_parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[int, str, str]:
    """Only the parsing (positional arguments need not exist: the option is checked as it is read)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            parser.parse_args(argv)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def test_float_ranges_hold_at_their_edges():
    """The edges of each range, as the options' help and the papers define them: an IoU in [0, 1] (both ends
    valid), a time > 0, a top-1 % in (0, 100]."""
    from cnnzoo.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["detect", "eval", "r", "--nms", "0"]).nms == 0.0
    assert p.parse_args(["detect", "eval", "r", "--nms", "1"]).nms == 1.0
    assert p.parse_args(["detect", "predict", "r", "x.png", "--threshold=-1.5"]).threshold == -1.5  # SVM scores
    assert p.parse_args(["bench", "lenet5", "--seconds", "0.25"]).seconds == 0.25
    assert p.parse_args(["compare", "lenet5", "--target", "100"]).target == 100.0
    assert p.parse_args(["train", "lenet5", "--lr", "1e-3"]).lr == 0.001  # 1e-3 as float() reads it
    for argv in (["detect", "eval", "r", "--nms=-0.01"], ["detect", "eval", "r", "--nms", "1.01"],
                 ["compare", "lenet5", "--target", "0"], ["compare", "lenet5", "--target", "100.5"],
                 ["bench", "lenet5", "--seconds", "-2"]):
        code, _, err = run_cli_parse(build_parser(), argv)
        assert code == 2 and "must be a finite number" in err, (argv, err)


# ----------------------------------------------------------------------------------------------- (11) short forms
def test_mix_and_ema_short_forms_mean_the_long_ones():
    """``train.mix=NAME`` is ``{name: NAME}`` with that method's defaults; ``train.ema=D`` is ``{decay: D}``;
    true/false/none switch EMA or mixing on with the defaults, or off. Expected values: the long forms."""
    from cnnzoo.train.config import apply_overrides, default_config

    def cfg(*pairs):
        return apply_overrides(default_config("lenet5"), list(pairs)).train

    for name in ("mixup", "cutmix", "manifold_mixup", "patchup", "puzzlemix"):
        assert cfg(f"train.mix={name}").mix == cfg(f"train.mix={{name: {name}}}").mix
        assert cfg(f"train.mix={name}").mix["name"] == name
    assert cfg("train.mix=none").mix is None and cfg("train.mix=false").mix is None
    assert cfg("train.ema=0.999").ema == {"decay": 0.999, "warmup": False}
    assert cfg("train.ema=0.999").ema == cfg("train.ema={decay: 0.999}").ema
    assert cfg("train.ema=true").ema == cfg("train.ema={}").ema == {"decay": 0.9999, "warmup": False}
    assert cfg("train.ema=off").ema is None and cfg("train.ema=false").ema is None


def test_short_forms_in_a_recipe_file(tmp_path):
    """A recipe file takes the same short forms as --set (config.yaml keeps the full mapping)."""
    from cnnzoo.train.config import config_to_dict, load_recipe

    (tmp_path / "r.yaml").write_text("train: {mix: cutmix, ema: 0.99}\n")
    cfg = load_recipe(tmp_path / "r.yaml")
    assert cfg.train.mix["name"] == "cutmix" and cfg.train.ema == {"decay": 0.99, "warmup": False}
    assert config_to_dict(cfg)["train"]["mix"]["name"] == "cutmix"


def test_recipes_takes_a_recipe_name_in_any_case(ws):
    code, out, err = run_cli(["recipes", "VGG"])
    assert code == 0, err
    assert "(vgg)" in out.splitlines()[0]


# ----------------------------------------------------------------------------------------------- (10) closed pipe
@pytest.mark.parametrize("argv", [["list"], ["recipes", "--format", "json"], ["info", "lenet5"]],
                         ids=["list", "recipes-json", "info"])
def test_a_closed_pipe_ends_the_command_quietly(ws, argv):
    """``cnnzoo ... | head -1``: the reader takes one line and leaves. The command ends with no message at all
    and 141 (128 + SIGPIPE), or 0 when everything was already in the pipe before the reader left (the pipe is
    shrunk to one page so that the output does not fit; some kernels still accept a whole write at once)."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ (Linux): one page, less than each command writes
    except OSError:
        pass
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "cnnzoo", *argv], stdout=w, stderr=subprocess.PIPE, env=env)
    os.close(w)
    line = b""
    while not line.endswith(b"\n"):  # exactly the first line, as head -1 reads it
        c = os.read(r, 1)
        if not c:
            break
        line += c
    os.close(r)
    err = p.stderr.read().decode()
    code = p.wait(timeout=120)
    assert line.strip(), "the command printed nothing"
    assert err == "", f"a closed pipe must end the command quietly; stderr: {err!r}"
    assert code in (141, 0), code
    if argv[0] != "list":  # these write in several pieces (or at exit): the reader leaving is always seen
        assert code == 141, code
