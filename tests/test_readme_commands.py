"""Every command in the README's code blocks runs as written on a fresh clone (issue 31, point 6).

The commands are read from the README itself (indented and fenced code blocks; ``$ `` prompts, ``\\`` line
continuations and ``# comments`` handled), so a command added or changed there is checked without editing this
file. Each runs in a fresh working directory with ``CNNZOO_DATA`` (and ``HOME``) in that temporary directory and
the network blocked (an HTTP(S) proxy on a closed local port), after the substitutions below, which only shrink the
budget or stand in for what a user brings:

=================================================  =============================================================
README has                                          the test runs
=================================================  =============================================================
``--data cifar10|cifar100|mnist|fashion-mnist``     ``--data mnist5k``: the others are downloads, and the test runs
                                                    offline; mnist5k ships inside the package
``cnnzoo train NAME ...``                           ``... --epochs 1 --limit-batches 2`` (appended: the last
                                                    ``--epochs`` wins); ``data.batch_size=N`` -> ``4``
``runs/NAME-YYYYmmdd-HHMMSS`` (placeholder)         the run the README's first ``train NAME`` made: the test adds
                                                    ``--run-dir runs/NAME-...`` to that train command
``cnnzoo train --resume RUN``                       ``... --epochs 2 --limit-batches 2``: one epoch past the run
``folder:~/photos``, ``my.yaml``, ``cat.png``,      files a user brings: made by the test (``HOME`` is the temp
``dog.png``                                         directory; 3 classes x 6 images of 40x40; a one-line recipe)
``cnnzoo compare ...``                              ``--seeds 0``, ``train.epochs=1``, ``--set train.limit_batches=2``
                                                    (segmentation networks: the tiny segmentation budget below)
``cnnzoo bench ...``                                ``--batch 2 --warmup 1 --iters 1`` (``--batch N`` -> 2)
``cnnzoo detect train ...``                         the tiny set of tests/test_detection_cli.py (8 train / 4 test
                                                    canvases, sliding windows, no pre-training, 20 iterations)
``cnnzoo segment train ...``                        ``... --epochs 1 --limit-batches 2``, 16 train / 8 test canvases
=================================================  =============================================================

Skipped, with the reason in the test: ``torchrun`` commands (several processes, and GPUs for ``--sync-bn`` or
several machines for the multi-node one); their cnnzoo part is still parsed. Lines with placeholders (``NAME``,
``[--flag ...]``, ``a|b``) are the synopsis: each subcommand and ``--flag`` they name must exist.

The default suite runs the cheap commands in process (the summary, the CIFAR-stem ResNet's train / resume / eval /
predict chain at two batches, lstm_mnist, ``detect sample``) and checks statically that every file a command reads
is written by an earlier README command or is one a user brings (it fails on a ``detect predict`` of an image no
command writes). ``pytest -m slow tests/test_readme_commands.py`` runs every command, in order, as subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

OFFLINE_DATASETS = {"cifar10", "cifar100", "mnist", "fashion-mnist"}
#: files and folders the README's commands take from the user: the test makes them (see `_user_files`)
USER_FILES = {"cat.png", "dog.png", "my.yaml", "~/photos", "/data/imagenet"}
#: the tiny detection budget (as tests/test_detection_cli.py trains it)
TINY_DETECT = ["--set", "data.params={num_train: 8, num_test: 4, seed: 3}", "--proposals", "sliding_window",
               "--set", "proposals.window_sizes=[20, 40]", "--set", "proposals.stride=0.5",
               "--set", "backbone.pretrain=null", "--iterations", "20", "--set", "svm.init_negatives=200"]
PLACEHOLDER_RUN = re.compile(r"runs/([A-Za-z0-9_]+)-\d{8}-\d{6}")
PLACEHOLDER_WORD = re.compile(r"[A-Z][A-Z0-9_]*(\.\.\.)?|CxHxW|FILE\.\w+|R\.yaml|k=v|KEY=VALUE")
#: the commands the default suite runs (in process): cheap at their budgets
FAST = ("summary", "train resnet20_cifar", "train --resume", "eval runs/", "predict runs/", "train lstm_mnist",
        "detect sample", "segment sample", "segment train", "segment eval", "segment predict")
#: the tiny segmentation budget
TINY_SEGMENT = ["--epochs", "1", "--limit-batches", "2", "--data-param", "num_train=16", "--data-param", "num_test=8"]


@dataclass
class Command:
    text: str  # as the README has it (continuations joined, comment dropped)
    argv: list[str]  # its words
    run: list[str] | None = None  # the cnnzoo arguments the test runs (None: not run)
    skip: str = ""  # why it is not run
    synopsis: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def fast(self) -> bool:
        return self.run is not None and any(" ".join(self.argv[1:]).startswith(f) for f in FAST)


def _code_lines(text: str) -> list[str]:
    """The lines of the README's code blocks: fenced ones (not python) and indented ones after a blank line."""
    out, fence, indented, prev_blank = [], None, False, True
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else (line.strip()[3:] or "text")
            continue
        if fence is not None:
            if fence != "python":
                out.append(line)
            continue
        if line.startswith("    ") and (indented or prev_blank):
            indented = True
            out.append(line[4:])
        elif line.strip():
            indented = False
        prev_blank = not line.strip()
    return out


def readme_commands(text: str | None = None) -> list[Command]:
    """The ``cnnzoo`` and ``torchrun ... -m cnnzoo`` commands of the README's code blocks, in order."""
    lines = _code_lines(README.read_text(encoding="utf-8") if text is None else text)
    joined, buf = [], ""
    for line in lines:
        buf += line.strip()
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip() + " "
            continue
        joined.append(buf)
        buf = ""
    out = []
    for line in joined:
        line = line.removeprefix("$ ")
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # output, not a command
        if words[:1] == ["cnnzoo"] or (words[:1] == ["torchrun"] and "cnnzoo" in words):
            out.append(Command(shlex.join(words), words))
    return out


def _is_synopsis(words: list[str]) -> bool:
    return any(w.startswith("[") or "|" in w or w == "..." or PLACEHOLDER_WORD.fullmatch(w.strip("[]"))
               for w in words[1:])


def _cnnzoo_part(words: list[str]) -> list[str]:
    """The arguments cnnzoo gets: after ``cnnzoo``, or after torchrun's ``-m cnnzoo``."""
    return words[words.index("cnnzoo") + 1:]


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """``flag value`` replaced where present, else appended."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


def _segmenters(argv: list[str]) -> bool:
    """Does a `compare` command name segmentation networks (trained with `segment train`'s flags)?"""
    from cnnzoo.segmentation import list_segmenters

    return any(w.split(":")[0] in list_segmenters() for w in argv[1:])


def plan(text: str | None = None) -> list[Command]:
    """Every README command with what the test runs for it (the module docstring's table) or why it skips it."""
    cmds = readme_commands(text)
    placeholder_runs: dict[str, str] = {}  # network -> the runs/NAME-TIMESTAMP the README uses for its run
    for c in cmds:
        for m in PLACEHOLDER_RUN.finditer(c.text):
            placeholder_runs.setdefault(m.group(1), m.group(0))
    for c in cmds:
        if _is_synopsis(c.argv):
            c.synopsis, c.skip = True, "synopsis (placeholders): its subcommands and flags are checked instead"
            continue
        if c.argv[0] == "torchrun":
            c.skip = ("torchrun: several machines" if "--nnodes=2" in c.argv or any("rdzv" in w for w in c.argv)
                      else "torchrun: several processes" + (" on GPUs (--sync-bn)" if "--sync-bn" in c.argv else ""))
            continue
        a = _cnnzoo_part(c.argv)
        a = ["mnist5k" if w in OFFLINE_DATASETS and i and a[i - 1] == "--data" else w for i, w in enumerate(a)]
        a = [re.sub(r"^data\.batch_size=\d+$", "data.batch_size=4", w) for w in a]
        if a[0] == "train" and "--resume" in a:
            a += ["--epochs", "2", "--limit-batches", "2"]
        elif a[0] == "train":
            a += ["--epochs", "1", "--limit-batches", "2"]
            name = a[1]
            if "--run-dir" not in a and name in placeholder_runs:
                a += ["--run-dir", placeholder_runs.pop(name)]
        elif a[0] == "compare" and _segmenters(a):
            a = _set(a, "--seeds", "0") + TINY_SEGMENT
        elif a[0] == "compare":
            a = _set(a, "--seeds", "0")
            a = [re.sub(r"^train\.epochs=\d+$", "train.epochs=1", w) for w in a]
            a += ["--set", "train.limit_batches=2"]
        elif a[0] == "bench":
            a = _set(_set(_set(a, "--batch", "2"), "--warmup", "1"), "--iters", "1")
        elif a[:2] == ["detect", "train"]:
            a += TINY_DETECT
        elif a[:2] == ["segment", "train"]:
            a += TINY_SEGMENT
        c.run = a
    return cmds


# ------------------------------------------------------------------------------------------------- static checks
def test_readme_has_the_commands_this_test_expects():
    cmds = plan()
    texts = [c.text for c in cmds]
    assert len(cmds) >= 15, texts
    assert all(c.run is not None or c.skip for c in cmds)
    assert sum(c.fast for c in cmds) >= 6, texts  # the default suite runs a real share of them
    assert any(c.text.startswith("cnnzoo detect predict") for c in cmds)


def test_the_extractor_reads_blocks_prompts_continuations_and_comments():
    text = ("Intro.\n\n    make demo\n    cnnzoo list 'vgg*'   # the VGGs\n\nText `cnnzoo inline` is not a command.\n\n"
            "```text\n$ cnnzoo summary lenet5\noutput line\n```\n\n```python\ncnnzoo.list_models()\n```\n\n"
            "    cnnzoo compare a b \\\n        --seeds 0,1 --out x\n- item\n    not code\n")
    assert [c.argv for c in readme_commands(text)] == [
        ["cnnzoo", "list", "vgg*"], ["cnnzoo", "summary", "lenet5"],
        ["cnnzoo", "compare", "a", "b", "--seeds", "0,1", "--out", "x"]]
    p = plan("    cnnzoo train resnet20_cifar --data cifar10\n    cnnzoo eval runs/resnet20_cifar-20261123-153000\n")
    assert p[0].run == ["train", "resnet20_cifar", "--data", "mnist5k", "--epochs", "1", "--limit-batches", "2",
                        "--run-dir", "runs/resnet20_cifar-20261123-153000"]


def _walk(parser, path: list[str]):
    """The subparser at ``path`` (e.g. ["detect", "train"])."""
    import argparse

    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert name in sub.choices, f"`cnnzoo {' '.join(path)}`: no subcommand {name!r}; has {sorted(sub.choices)}"
        parser = sub.choices[name]
    return parser


def test_the_synopsis_names_only_subcommands_and_flags_that_exist():
    import argparse

    from cnnzoo.cli.main import build_parser

    parser = build_parser()
    synopsis = [c for c in plan() if c.synopsis]
    assert len(synopsis) >= 8
    for c in synopsis:
        words = _cnnzoo_part(c.argv)
        for cmd in words[1].split("|") if words[0] in ("detect", "segment") else [None]:
            p = _walk(parser, [words[0]] + ([cmd] if cmd else []))
            flags = {s for a in p._actions for s in a.option_strings}
            has_sub = any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
            assert not has_sub, f"{c.text}: `{words[0]}` needs a subcommand"
            for w in words:
                for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", w):
                    assert flag in flags, f"README synopsis `{c.text}`: `cnnzoo {words[0]}` has no {flag}"


def test_every_readme_command_parses_as_written(capsys):
    """argparse accepts each command exactly as the README writes it (torchrun's included)."""
    from cnnzoo.cli.main import build_parser

    parser = build_parser()
    for c in plan():
        if c.synopsis:
            continue
        try:
            parser.parse_args(_cnnzoo_part(c.argv))
        except SystemExit:
            pytest.fail(f"README command does not parse: {c.text}\n{capsys.readouterr().err}")


def _inputs_and_outputs(run: list[str]) -> tuple[list[str], list[str]]:
    """(files the command reads, files it writes), from the arguments the test runs."""
    ins, outs = [], []
    for flag in ("--run-dir", "--out", "--output"):
        if flag in run:
            outs.append(run[run.index(flag) + 1])
    if "--resume" in run:
        ins.append(run[run.index("--resume") + 1])
    if "--recipe" in run and run[run.index("--recipe") + 1].endswith((".yaml", ".yml")):
        ins.append(run[run.index("--recipe") + 1])
    for w in run:
        if w.startswith("folder:"):
            ins.append(w.removeprefix("folder:"))
    positional = [w for i, w in enumerate(run) if not w.startswith("-") and not (i and run[i - 1].startswith("-"))]
    if run[0] in ("eval", "predict"):
        ins += positional[1:]
    elif run[:2] in (["detect", "eval"], ["detect", "predict"], ["segment", "eval"], ["segment", "predict"]):
        ins += positional[2:]
    elif run[:2] == ["detect", "sample"] and "--out" not in run:
        outs.append(f"digits_{_value(run, '--split', 'test')}{_value(run, '--index', '0')}.png")
    return ins, outs


def _value(argv: list[str], flag: str, default: str) -> str:
    return argv[argv.index(flag) + 1] if flag in argv else default


def check_inputs_exist(cmds: list[Command]) -> list[str]:
    """The README commands reading a file that no earlier command writes and that no user brings."""
    made, problems = set(), []
    for c in cmds:
        if c.run is None:
            continue
        ins, outs = _inputs_and_outputs(c.run)
        problems += [f"`{c.text}` reads {f}, which no earlier README command writes" for f in ins
                     if f not in made and f not in USER_FILES]
        made.update(outs)
    return problems


def test_every_file_a_command_reads_is_written_by_an_earlier_command():
    assert check_inputs_exist(plan()) == []
    # the README before issue 31: `detect predict` of an image that nothing wrote
    old = ("    cnnzoo detect train rcnn --data digits-detection --run-dir rcnn-digits\n"
           "    cnnzoo detect predict rcnn-digits digits_test0.png --output rcnn_predict.png\n")
    assert check_inputs_exist(plan(old)) == [("`cnnzoo detect predict rcnn-digits digits_test0.png --output "
                                              "rcnn_predict.png` reads digits_test0.png, which no earlier README "
                                              "command writes")]


def test_list_has_the_macs_column_the_readme_promises(capsys):
    from cnnzoo.cli.main import main

    assert "cnnzoo list" in README.read_text() and "parameters, MACs" in README.read_text()
    assert main(["list", "lenet*", "--width", "120"]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out.splitlines()[1]
    row = next(line for line in out.splitlines() if line.split()[:1] == ["lenet5"])
    # LeNet-5 by hand: C1 28*28*6*25 + C3 10*10*16*150 + F5 400*120 + F6 120*84 + output 84*10 = 416,520
    assert "417K" in row.split()


def test_an_unknown_name_suggests_the_registered_one_it_begins():
    from cnnzoo.registry import UnknownModelError, create_model

    with pytest.raises(UnknownModelError, match=r"Did you mean: resnet20_cifar,"):
        create_model("resnet20")


def test_train_help_examples_name_registered_networks():
    import cnnzoo
    from cnnzoo.cli.train import EPILOG_TRAIN

    for line in EPILOG_TRAIN.splitlines():
        words = line.split()
        if words[:1] in (["cnnzoo"], ["torchrun"]) and "train" in words and len(words) > words.index("train") + 1:
            name = words[words.index("train") + 1]
            if not name.startswith("-"):
                assert name in cnnzoo.list_models(), f"`cnnzoo train --help` example: {line.strip()}"


# ------------------------------------------------------------------------------------------------ running them
def _user_files(work: Path, home: Path) -> None:
    """What the README's commands take from the user: two pictures, a recipe, a folder of 3 classes."""
    from PIL import Image

    for i, name in enumerate(("cat.png", "dog.png")):
        Image.new("RGB", (40, 40), (60 * i, 120, 200)).save(work / name)
    (work / "my.yaml").write_text("optim: {name: sgd, lr: 0.01, momentum: 0.9}\n")  # a recipe of their own
    for k, cls in enumerate(("circle", "square", "bar")):
        (home / "photos" / cls).mkdir(parents=True)
        for j in range(6):
            Image.new("RGB", (40, 40), (40 * k, 20 * j, 100)).save(home / "photos" / cls / f"{j}.png")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A fresh working directory, data cache and HOME in tmp_path, downloads blocked."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    _user_files(work, home)
    env = {"CNNZOO_DATA": str(tmp_path / "cache"), "HOME": str(home), "OMP_NUM_THREADS": "1",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(work)
    return work


def _run_in_process(args: list[str]) -> tuple[int, str]:
    from cnnzoo.cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(list(args))
    return code, buf.getvalue()


def _run_subprocess(args: list[str]) -> tuple[int, str]:
    exe = Path(sys.executable).with_name("cnnzoo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cnnzoo"]
    p = subprocess.run(cmd + args, check=False, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    return p.returncode, p.stdout + p.stderr


def _check(c: Command, code: int, out: str) -> None:
    assert code == 0, f"README command failed (exit {code}): {c.text}\nran: cnnzoo {shlex.join(c.run)}\n{out[-3000:]}"


def test_the_cheap_readme_commands_run(sandbox):
    ran = []
    for c in plan():
        if c.fast:
            code, out = _run_in_process(c.run)
            _check(c, code, out)
            ran.append(c.run[0])
            if c.run == ["summary", "lenet5"]:  # the README prints its totals: they are what the command prints
                block = README.read_text().split("$ cnnzoo summary lenet5", 1)[1].split("```", 1)[0]
                for line in block.splitlines():
                    if line.startswith(("total parameters", "MACs (", "FLOPs (")):
                        assert line in out, line
    assert {"summary", "train", "eval", "predict", "detect"} <= set(ran), ran
    assert (sandbox / "digits_test0.png").is_file()


@pytest.mark.slow
def test_every_readme_command_runs(sandbox):
    """All of them, in order, as subprocesses (a few minutes on 2 cores)."""
    skipped = []
    for c in plan():
        if c.run is None:
            skipped.append(f"{c.text}: {c.skip}")
            continue
        code, out = _run_subprocess(c.run)
        _check(c, code, out)
    assert (sandbox / "rcnn_predict.png").is_file()
    print("\n".join(["skipped:", *skipped]))


@pytest.mark.parametrize("rank, printed", [(None, True), ("0", True), ("1", False), ("3", False)])
def test_notes_come_from_rank_0_only(capsys, monkeypatch, rank, printed):
    """README: "only rank 0 logs (notes included)". The config is resolved before torchrun's process group
    exists, so the rank is torchrun's RANK variable; a plain process (no RANK) prints."""
    from cnnzoo.cli.main import build_parser
    from cnnzoo.cli.train import build_config

    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    # one epoch of the folder recipe, whose 2-epoch warm-up is longer: a note says it is scaled (no data is read)
    cfg = build_config(build_parser().parse_args(["train", "lenet5", "--data", "folder:photos", "--epochs", "1"]))
    assert cfg.schedule.warmup_epochs < 1
    err = capsys.readouterr().err
    assert ("note: the recipe's" in err) is printed, err


def test_detect_sample_writes_the_pixels_and_boxes_of_the_built_in_data(tmp_path, monkeypatch, capsys):
    """`cnnzoo detect sample` (the README's image for `detect predict`): the very canvas `digits_detection` makes,
    read back from the PNG as `detect predict` reads it; a file cnnzoo did not write is never replaced."""
    import torch

    from cnnzoo.cli.main import main
    from cnnzoo.detection.data import digits_detection, read_image

    monkeypatch.chdir(tmp_path)
    train, test = digits_detection(num_train=2, num_test=3, seed=5)
    assert main(["detect", "sample", "--index", "2", "--data-seed", "5"]) == 0  # default name digits_test2.png
    out = capsys.readouterr().out
    assert torch.equal(read_image(tmp_path / "digits_test2.png", 1), test.images[2])
    for box, label in zip(test.boxes[2].tolist(), test.labels[2].tolist()):
        assert f"{label}  ({box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f})" in out
    assert main(["detect", "sample", "--split", "train", "--index", "1", "--data-seed", "5", "--out", "t.png"]) == 0
    assert torch.equal(read_image(tmp_path / "t.png", 1), train.images[1])
    assert main(["detect", "sample", "--index", "2", "--data-seed", "5"]) == 0  # its own picture: replaced
    (tmp_path / "mine.png").write_bytes(b"a user's file")
    assert main(["detect", "sample", "--out", "mine.png"]) == 2
    assert (tmp_path / "mine.png").read_bytes() == b"a user's file"
    assert main(["detect", "sample", "--index", "150"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "mine.png exists and is not a picture cnnzoo wrote" in err[0] and "0..149" in err[1]
