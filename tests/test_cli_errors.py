"""The bad-input battery (issue 15): every error a user can cause, across every command.

Each case asserts what a user relies on when they get something wrong:
- the exit status is not 0 (2: a usage error the user can fix);
- no Python traceback, in stdout or stderr;
- the error line names what was wrong and what is valid (the substrings each case lists);
- nothing the user had is changed: every file and directory of the case's workspace (inputs, an existing run
  directory) is byte-identical afterwards, and no file or directory appeared.

Cases run the CLI in-process through ``cnnzoo.cli.main.main(argv)``; a few run ``python -m cnnzoo`` as a
subprocess, as a user would.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from cnnzoo.cli.main import main

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not torch.backends.mps.is_available()


# ----------------------------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    """Every file (sha256 of its bytes) and directory under ``root``, except cnnzoo's own run-directory lock file
    (``.lock``: each process that takes the lock writes its name there)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name == ".lock":
            continue
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def png_bytes(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A greyscale 8-bit PNG of the given header size (the pixel data need not match it: PIL checks the size first)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    if idat is None:
        idat = zlib.compress(b"".join(b"\0" + bytes(range(width)) for _ in range(height)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_one_clear_error(code: int, out: str, err: str, expect: tuple[str, ...]) -> str:
    """The checks every case shares; returns the error line."""
    assert code != 0, f"exit status 0 for a bad input; stdout: {out[-500:]}"
    assert code == 2, f"a user's error should exit 2 (usage), got {code}: {err}"
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error message at all"
    last = lines[-1]
    assert last.startswith("cnnzoo") and "error:" in last, last
    assert "internal error" not in last, last
    for s in expect:
        assert s in last, f"{s!r} not in the error line: {last}"
    return last


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny trained lenet5 run (1 epoch of 2 batches) that cases copy and then damage."""
    d = tmp_path_factory.mktemp("base") / "run"
    code, _, err = run_cli(["train", "lenet5", "--epochs", "1", "--limit-batches", "2", "--batch-size", "32",
                            "--run-dir", str(d), "-q"])
    assert code == 0, err
    return d


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """The user's working directory: cases run from it, and everything in it must survive untouched."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path / "data-cache"))  # never the real cache
    (tmp_path / "data-cache").mkdir()
    (tmp_path / "digit.png").write_bytes(png_bytes(28, 28))
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile.txt").write_text("the user's notes\n")
    return tmp_path


def _ckpt(run: Path, kind: str, key: str = "weights") -> Path:
    import json

    return run / "checkpoints" / json.loads((run / "checkpoints" / f"{kind}.json").read_text())[key]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------------------------- the battery
@dataclass
class Case:
    id: str
    argv: list[str]  # "{ws}" and "{run}" are replaced by the workspace and the copied run directory
    expect: tuple[str, ...]  # substrings of the error line: what was wrong, what is valid
    setup: Callable[[Path], None] | None = None
    run: bool = False  # copy the trained run into the workspace as ./run
    marks: list = field(default_factory=list)


def _write(name: str, content: bytes | str):
    def setup(ws: Path) -> None:
        p = ws / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def _edit_config(old: str, new: str):
    def setup(ws: Path) -> None:
        p = ws / "run" / "config.yaml"
        text = p.read_text()
        assert old in text
        p.write_text(text.replace(old, new, 1))

    return setup


CASES = [
    # --- list
    Case("list-no-match", ["list", "nosuchnet*"], ("no network matches 'nosuchnet*'", "cnnzoo list")),
    Case("list-plot-suffix", ["list", "lenet5", "--plot", "zoo.txt"], ("zoo.txt", ".png", ".html")),
    Case("list-plot-no-dir", ["list", "lenet5", "--plot", "nodir/zoo.png"], ("nodir", "does not exist")),
    Case("list-plot-is-dir", ["list", "lenet5", "--plot", "empty"], ("empty", "is a directory")),
    # --- info: names, options, input sizes
    Case("info-unknown-name", ["info", "lenet"], ("unknown network 'lenet'", "Did you mean", "lenet5")),
    Case("info-option-type", ["info", "lenet5", "-o", "drop_rate=high"],
         ("drop_rate must be a number", "'high'")),
    Case("info-option-yaml", ["info", "lenet5", "-o", "widths=[1,2"], ("-o 'widths=[1,2'", "not valid YAML", "line 1")),
    Case("info-option-unknown", ["info", "lenet5", "-o", "poo=avg"], ("no option 'poo'", "valid options", "pool")),
    Case("info-option-not-pair", ["info", "lenet5", "-o", "drop_rate"], ("not KEY=VALUE", "cnnzoo info NAME")),
    Case("info-option-value", ["info", "lenet5", "-o", "pool=median"], ("pool must be 'max' or 'avg'", "median")),
    Case("info-option-bool", ["info", "resnet18", "-o", "zero_init_last=3"],
         ("zero_init_last must be true/false", "3")),
    Case("info-channels", ["info", "lenet5", "--input", "3x32x32"],
         ("takes 1-channel images", "--input 1x32x32", "-o in_channels=3")),
    Case("info-too-small", ["info", "lenet5", "--input", "1x20x20"], ("at least 28x28 pixels", "20x20")),
    Case("info-input-syntax", ["info", "lenet5", "--input", "big"], ("--input", "CxHxW", "3x224x224")),
    # --- summary
    Case("summary-plot-suffix", ["summary", "lenet5", "--plot", "x.txt"], ("x.txt", ".png", ".svg", ".pdf")),
    Case("summary-plot-no-dir", ["summary", "lenet5", "--plot", "nodir/x.png"], ("nodir", "does not exist")),
    Case("summary-plot-dir", ["summary", "lenet5", "--plot", "empty"], ("is a directory",)),
    Case("summary-depth", ["summary", "lenet5", "--depth", "-1"], ("--depth must be 0 or more", "-1")),
    Case("summary-format", ["summary", "lenet5", "--format", "xml"], ("invalid choice", "'xml'", "markdown")),
    Case("summary-zero-size", ["summary", "lenet5", "--input", "0"], ("positive", "224")),
    # --- compare-arch
    Case("compare-unknown", ["compare-arch", "lenet5", "vgg99"], ("unknown network 'vgg99'", "vgg19")),
    # --- train: the config (recipe, --set, flags)
    Case("train-set-yaml", ["train", "lenet5", "--set", "optim.betas=[0.9,"], ("--set", "not valid YAML", "line 1")),
    Case("train-recipe-yaml", ["train", "lenet5", "--recipe", "bad.yaml"], ("bad.yaml", "not valid YAML", "line 2"),
         setup=_write("bad.yaml", "optim:\n  lr: [0.1\n")),
    Case("train-recipe-dir", ["train", "lenet5", "--recipe", "empty"], ("'empty' is a directory", "YAML file")),
    Case("train-recipe-binary", ["train", "lenet5", "--recipe", "r.yaml"], ("r.yaml", "not a text (UTF-8) YAML file"),
         setup=_write("r.yaml", bytes(range(256)) * 4)),
    Case("train-recipe-missing", ["train", "lenet5", "--recipe", "nope.yaml"], ("nope.yaml", "does not exist")),
    Case("train-recipe-section", ["train", "lenet5", "--recipe", "r.yaml"], ("unknown section 'optimizer'", "optim"),
         setup=_write("r.yaml", "optimizer: {lr: 0.1}\n")),
    Case("train-set-unknown-key", ["train", "lenet5", "--set", "optim.lrate=0.1"],
         ("unknown key optim.lrate", "valid keys of optim", "lr")),
    Case("train-set-nan", ["train", "lenet5", "--set", "optim.lr=.nan"], ("optim.lr must be a finite number",)),
    Case("train-flag-inf", ["train", "lenet5", "--lr", "inf"], ("--lr must be a finite number", "'inf'")),
    Case("train-flag-negative", ["train", "lenet5", "--weight-decay=-1e-4"], ("--weight-decay must be 0 or more",)),
    Case("train-flag-type", ["train", "lenet5", "--lr", "fast"], ("--lr", "invalid float value", "'fast'")),
    Case("train-grad-clip", ["train", "lenet5", "--set", "optim.grad_clip=-1"],
         ("optim.grad_clip must be positive", "null (no clipping)")),
    Case("train-warmup", ["train", "lenet5", "--schedule", "cosine", "--warmup-epochs", "5", "--epochs", "2"],
         ("--warmup-epochs (5) must be shorter than the run", "train.epochs = 2")),
    Case("train-workers", ["train", "lenet5", "--set", "data.num_workers=-1"], ("data.num_workers must be at least 0",)),
    Case("train-epochs", ["train", "lenet5", "--epochs", "0"], ("--epochs must be at least 1", "got 0")),
    Case("train-choice", ["train", "lenet5", "--set", "optim.name=lamb"], ("optim.name must be one of sgd", "'lamb'")),
    Case("train-device-mps", ["train", "lenet5", "--device", "mps"], ("--device 'mps'", "not available", "cpu"),
         marks=[pytest.mark.skipif(not NO_MPS, reason="this machine has MPS")]),
    Case("train-device-cuda", ["train", "lenet5", "--device", "cuda"], ("--device 'cuda'", "no CUDA", "cpu"),
         marks=[pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")]),
    Case("train-device-name", ["train", "lenet5", "--device", "gpu0"], ("'gpu0' is not a device", "cuda:N")),
    Case("train-option-type", ["train", "lenet5", "-o", "drop_rate=high", "--no-download"],
         ("drop_rate must be a number", "'high'")),
    Case("train-no-name", ["train"], ("give a network NAME", "--resume RUN_DIR")),
    # --- --threads (issue 31): a whole number >= 1, as bench takes it
    Case("train-threads-zero", ["train", "lenet5", "--threads", "0"], ("--threads", "'0'", "at least 1")),
    Case("train-threads-word", ["train", "lenet5", "--threads", "two"], ("--threads", "'two'", "not a whole number")),
    Case("train-threads-float", ["train", "lenet5", "--threads", "1.5"], ("--threads", "'1.5'", "not a whole number")),
    Case("demo-threads-negative", ["demo", "--threads=-2"], ("--threads", "'-2'", "at least 1")),
    # --- train: augmentation and regularisation (data/augment.py, data/mix.py, train/ema.py, train/droppath.py)
    Case("train-mix-method", ["train", "lenet5", "--set", "train.mix={name: mixupp}"],
         ("train.mix name must be one of mixup, cutmix, manifold_mixup, patchup, puzzlemix", "'mixupp'")),
    Case("train-mix-param", ["train", "lenet5", "--set", "train.mix={name: cutmix, beta: 1}"],
         ("unknown parameter(s) ['beta'] for cutmix", "valid: alpha, prob")),
    Case("train-mix-layers", ["train", "lenet5", "--set", "train.mix={name: manifold_mixup, layers: [3]}"],
         ("train.mix layers [3]", "2 feature_info stage(s)", "features.2")),
    Case("train-pca-gray", ["train", "lenet5", "--set", "data.augment={pca_lighting: true}"],
         ("pca_lighting", "3-channel", "mnist5k has 1 channel")),
    Case("train-scale-jitter", ["train", "lenet5", "--set", "data.augment={scale_jitter: [20, 32]}"],
         ("scale_jitter [20, 32]", "at least the native shorter side (28")),
    Case("train-ema-decay", ["train", "lenet5", "--set", "train.ema={decay: 1.5}"],
         ("train.ema decay must be a number in (0, 1)", "1.5")),
    Case("train-drop-path-schedule", ["train", "lenet5", "--set", "train.drop_path_schedule=linear"],
         ("drop_path_schedule=linear", "lenet5 has no DropPath", "drop_path_rate")),
    Case("train-precise-bn-without-bn", ["train", "lenet5", "--set", "train.precise_bn=8"],
         ("train.precise_bn=8 re-estimates BatchNorm statistics", "lenet5 has no BatchNorm layer")),
    Case("train-precise-bn-negative", ["train", "resnet20_cifar", "--set", "train.precise_bn=-1"],
         ("train.precise_bn must be at least 0", "-1")),
    # --- train: data
    Case("train-data-unknown", ["train", "lenet5", "--data", "imagenet"],
         ("unknown dataset 'imagenet'", "mnist5k", "folder:PATH")),
    Case("train-data-dir-not-folder", ["train", "lenet5", "--data", "empty"],
         ("unknown dataset 'empty'", "folder:empty")),
    Case("train-data-offline", ["train", "lenet5", "--data", "mnist", "--no-download", "--data-dir", "empty"],
         ("not available", "downloading is disabled", "train-images-idx3-ubyte.gz")),
    Case("train-data-checksum", ["train", "lenet5", "--data", "cifar10", "--no-download", "--data-dir", "dd"],
         ("cifar-10-python.tar.gz", "corrupt or not the canonical file", "expected"),
         setup=_write("dd/cifar10/cifar-10-python.tar.gz", b"not an archive")),
    Case("train-data-folder-missing", ["train", "lenet5", "--data", "folder:nothere"], ("nothere", "not a directory")),
    # --- train: run directory, weights, resume
    Case("train-run-dir-file", ["train", "lenet5", "--run-dir", "afile.txt", "--epochs", "1"],
         ("afile.txt", "--run-dir")),
    Case("train-run-dir-taken", ["train", "lenet5", "--run-dir", "run"], ("run", "already holds a run", "--resume"),
         run=True),
    Case("train-weights-junk", ["train", "lenet5", "--weights", "junk.safetensors"], ("junk.safetensors", "safetensors"),
         setup=_write("junk.safetensors", b"\x00" * 64)),
    Case("train-weights-missing", ["train", "lenet5", "--weights", "nope.safetensors"],
         ("nope.safetensors", "does not exist")),
    Case("resume-not-a-run", ["train", "--resume", "empty"], ("empty", "not a cnnzoo run directory")),
    Case("resume-with-name", ["train", "lenet5", "--resume", "run"], ("--resume", "only the run directory"), run=True),
    Case("resume-config-yaml", ["train", "--resume", "run"], ("config.yaml", "not valid YAML", "line"),
         run=True, setup=_edit_config("model:", "model: [\n")),
    Case("resume-config-value", ["train", "--resume", "run"], ("config.yaml", "train.epochs must be an int"),
         run=True, setup=_edit_config("epochs: 1", "epochs: one")),
    Case("resume-other-network", ["train", "--resume", "run"], ("lenet5", "config.yaml"), run=True,
         setup=_edit_config("name: lenet5", "name: lenet5_paper")),
    Case("resume-truncated-state", ["train", "--resume", "run", "--epochs", "2"], ("run", "truncated or damaged"),
         run=True, setup=lambda ws: _truncate(_ckpt(ws / "run", "last", "state"))),
    Case("resume-junk-weights", ["train", "--resume", "run", "--epochs", "2"], ("run", "safetensors"), run=True,
         setup=lambda ws: _ckpt(ws / "run", "last").write_bytes(b"junk" * 10)),
    # --- eval
    Case("eval-missing", ["eval", "nothere"], ("nothere", "does not exist", "run directory")),
    Case("eval-junk-file", ["eval", "junk.safetensors"], ("junk.safetensors", "safetensors"),
         setup=_write("junk.safetensors", b"{not safetensors}")),
    Case("eval-truncated-last", ["eval", "run"], ("last.safetensors", "truncated"), run=True,
         setup=lambda ws: _truncate(ws / "run" / "checkpoints" / "last.safetensors")),
    Case("eval-device-cuda", ["eval", "run", "--device", "cuda"], ("--device", "no CUDA", "cpu"), run=True,
         marks=[pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")]),
    Case("eval-device-name", ["eval", "run", "--device", "tpu"], ("--device", "'tpu' is not a device", "cpu"),
         run=True),
    Case("eval-data-unknown", ["eval", "run", "--data", "imagenet"], ("unknown dataset 'imagenet'", "mnist5k"),
         run=True),
    Case("eval-data-offline", ["eval", "run", "--data", "mnist", "--no-download", "--data-dir", "empty"],
         ("not available", "train-images-idx3-ubyte.gz"), run=True),
    Case("eval-protocol-unknown", ["eval", "run", "--protocol", "center,5crop"],
         ("unknown protocol '5crop'", "10crop, 50crop, 144crop, dense, multiscale"), run=True),
    Case("eval-protocol-multiscale-center", ["eval", "run", "--protocol", "center+multiscale"],
         ("multiscale combines with dense and 10crop",), run=True),
    Case("eval-scales-without-multiscale", ["eval", "run", "--protocol", "dense", "--scales", "32"],
         ("--scales", "--protocol multiscale"), run=True),
    Case("eval-scales-junk", ["eval", "run", "--protocol", "multiscale", "--scales", "big"],
         ("--scales big", "comma-separated positive integers"), run=True),
    Case("eval-scales-below-the-crop", ["eval", "run", "--protocol", "10crop+multiscale", "--scales", "20,32"],
         ("crops of 28 pixels", "at least 28"), run=True),
    Case("eval-protocol-plot", ["eval", "run", "--protocol", "10crop", "--plot", "cm.png"],
         ("--plot", "--protocol"), run=True),
    # issue 23 (8): every protocol path refuses a bad batch size before any loading, as plain eval does
    Case("eval-batch-size-0", ["eval", "run", "--batch-size", "0"], ("--batch-size", "at least 1", "got 0"),
         run=True),
    Case("eval-10crop-batch-size-0", ["eval", "run", "--protocol", "10crop", "--batch-size", "0"],
         ("--batch-size", "at least 1", "got 0"), run=True),
    Case("eval-dense-batch-size-negative", ["eval", "run", "--protocol", "dense", "--batch-size", "-5"],
         ("--batch-size", "at least 1", "got -5"), run=True),
    Case("eval-144crop-batch-size-0", ["eval", "run", "--protocol", "144crop", "--batch-size", "0"],
         ("--batch-size", "at least 1", "got 0"), run=True),
    Case("eval-batch-size-missing-run", ["eval", "nothere", "--protocol", "dense", "--batch-size", "0"],
         ("--batch-size", "at least 1", "got 0")),  # refused before any loading: the run is not even looked for
    # --- predict
    Case("predict-missing-image", ["predict", "run", "nothere.png"], ("nothere.png", "does not exist"), run=True),
    Case("predict-not-an-image", ["predict", "run", "afile.txt"], ("afile.txt", "not an image"), run=True),
    Case("predict-bomb", ["predict", "run", "bomb.png"], ("bomb.png", "decompression bomb", "MAX_IMAGE_PIXELS"),
         run=True, setup=_write("bomb.png", png_bytes(30_000, 30_000, idat=zlib.compress(b"\0" * 1000)))),
    Case("predict-top-k", ["predict", "run", "digit.png", "-k", "0"], ("--top-k must be at least 1",), run=True),
    Case("predict-device-cuda", ["predict", "run", "digit.png", "--device", "cuda"], ("--device", "no CUDA"),
         run=True, marks=[pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")]),
    Case("predict-junk-weights", ["predict", "junk.safetensors", "digit.png"], ("junk.safetensors", "safetensors"),
         setup=_write("junk.safetensors", b"\xff" * 100)),
    # --- demo
    Case("demo-run-dir-taken", ["demo", "--run-dir", "run"], ("already holds a run", "--resume"), run=True),
    Case("demo-run-dir-file", ["demo", "--run-dir", "afile.txt"], ("afile.txt", "--run-dir")),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(case: Case, ws: Path, request):
    if case.run:
        shutil.copytree(request.getfixturevalue("base_run"), ws / "run")
    if case.setup:
        case.setup(ws)
    before = snapshot(ws)
    code, out, err = run_cli(case.argv)
    assert_one_clear_error(code, out, err, case.expect)
    assert snapshot(ws) == before, "the failed command changed the user's files"


def test_the_battery_covers_every_command_and_family():
    commands = {c.argv[0] for c in CASES}
    assert commands >= {"list", "info", "summary", "compare-arch", "train", "eval", "predict", "demo"}
    assert len(CASES) >= 40


def test_summary_checks_the_plot_path_before_printing(ws):
    code, out, err = run_cli(["summary", "lenet5", "--plot", "nodir/lenet.png"])
    assert code == 2 and out == "" and "nodir" in err  # nothing printed before the error


def test_debug_flag_shows_the_traceback_of_a_user_error(ws):
    for argv in (["--debug", "info", "lenet5", "-o", "drop_rate=high"], ["info", "lenet5", "-o", "drop_rate=high",
                                                                          "--debug"]):
        code, _, err = run_cli(argv)
        assert code == 2 and "Traceback" in err and "drop_rate must be a number" in err.splitlines()[-1]


# ----------------------------------------------------------------------------------------------- environment failures
def test_permission_denied_on_the_run_directory(ws, monkeypatch):
    locked = ws / "locked"
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):  # what a directory the user cannot write does (tests may run as root)
        if os.path.abspath(path).startswith(str(locked)):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    before = snapshot(ws)
    code, out, err = run_cli(["train", "lenet5", "--run-dir", "locked/run", "--epochs", "1", "-q"])
    assert_one_clear_error(code, out, err, ("permission denied", "locked/run", "--run-dir"))
    assert snapshot(ws) == before


def test_disk_full_while_writing_the_run(ws, monkeypatch):
    (ws / "out").mkdir()  # the user's (empty) run directory

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    before = snapshot(ws)
    code, out, err = run_cli(["train", "lenet5", "--run-dir", "out", "--epochs", "1", "-q"])
    assert_one_clear_error(code, out, err, ("no space left", "free some space"))
    assert snapshot(ws) == before  # the half-written file was removed


# ----------------------------------------------------------------------------------------------- internal errors
def test_an_internal_error_is_one_line_with_the_traceback_in_a_file(ws, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom: an invariant cnnzoo broke")

    monkeypatch.setattr("cnnzoo.cli.models.get_card", broken)
    code, out, err = run_cli(["info", "lenet5"])
    assert code == 1 and "Traceback" not in out + err
    (line,) = err.strip().splitlines()
    assert "internal error (RuntimeError: boom" in line and "--debug" in line
    path = Path(line.split("the full traceback is in ")[1].split(" ")[0])
    text = path.read_text()
    assert "Traceback (most recent call last)" in text and "boom: an invariant cnnzoo broke" in text
    assert "cnnzoo info lenet5" in text  # the command line, for the report
    path.unlink()
    code, _, err = run_cli(["--debug", "info", "lenet5"])
    assert code == 1 and "Traceback (most recent call last)" in err and "boom" in err


def test_ctrl_c_outside_training_is_one_line(ws, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("cnnzoo.cli.models.get_card", interrupted)
    code, out, err = run_cli(["info", "lenet5"])
    assert code == 130 and err.strip() == "cnnzoo info: interrupted" and "Traceback" not in out + err


# ----------------------------------------------------------------------------------------------- as a user runs it
@pytest.mark.parametrize("argv, expect", [
    (["info", "lenet5", "-o", "drop_rate=high"], "drop_rate must be a number"),
    (["train", "lenet5", "--recipe", "bad.yaml"], "not valid YAML"),
    (["train", "lenet5", "--set", "optim.lr=1e-3", "--lr", "nan"], "--lr must be a finite number"),
], ids=["option-type", "recipe-yaml", "flag-nan"])
def test_subprocess_errors_are_one_line(ws, argv, expect):
    (ws / "bad.yaml").write_text("optim: {lr: 0.1\n")
    before = snapshot(ws)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "cnnzoo", *argv], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert_one_clear_error(p.returncode, p.stdout, p.stderr, (expect,))
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert snapshot(ws) == before
