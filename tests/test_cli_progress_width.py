"""Issue 31, points 5, 8 and 9: progress of long commands on stderr (never stdout), the Python API as the README's
users expect it (a printed summary is the table; `apply_overrides` scales a warmup that does not fit), and tables
that fit an 80-column terminal with names whole."""

from __future__ import annotations

import io
import json
import warnings

import pytest
import torch

import cnnzoo
from cnnzoo.cli.main import main

# LeNet-5 as registered (C3 fully connected), counted by hand (LeCun et al. 1998, Sec. II-B):
# C1 6 x (5x5 + 1) = 156; C3 16 x (6 x 5x5 + 1) = 2,416; C5 120 x (16 x 5x5 + 1) = 48,120; F6 84 x 121 = 10,164;
# output 10 x 85 = 850: 61,706 in all. C1's MACs: 6 maps x 28x28 positions x 5x5 = 117,600.
LENET_PARAMS, C1_PARAMS, C1_MACS = "61,706", "156", "117,600"


def _lines_fit(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"{len(long)} line(s) wider than {width}: {long[:3]}"
    assert "…" not in text, "a cell was cut"


# --------------------------------------------------------------------------------------------- (5) progress
@pytest.mark.slow  # about 3 s: mnist5k's 1000 test images, twice
def test_eval_protocol_shows_progress_on_stderr_and_keeps_stdout_json(tmp_path, capsys):
    weights = tmp_path / "lenet5.pth"
    torch.save(cnnzoo.create_model("lenet5").state_dict(), weights)
    argv = ["eval", str(weights), "--model", "lenet5", "--data", "mnist5k", "--protocol", "center,10crop",
            "--no-flip", "--format", "json", "--batch-size", "1000"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)  # stdout is the JSON alone
    n = doc["protocols"]["center"]["count"]
    assert "protocol center (1/2)" in err and "protocol 10crop (2/2)" in err, err
    assert f"{n}/{n}" in err, err  # each protocol's progress ends at the split's size
    assert main([*argv, "-q"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["protocols"].keys() == {"center", "10crop"}
    assert "protocol" not in err


@pytest.mark.slow  # about 4 s: matplotlib
def test_list_plot_shows_progress_on_stderr_only(tmp_path, capsys):
    png = tmp_path / "zoo.png"
    assert main(["list", "lenet5*", "--plot", str(png), "--width", "120"]) == 0
    out, err = capsys.readouterr()
    assert png.exists()
    assert "counting parameters and MACs" in err and "placing the names" in err and "writing zoo.png" in err, err
    assert "counting" not in out and "placing" not in out
    assert "lenet5" in out and f"wrote {png}" in out
    assert main(["list", "lenet5*", "--plot", str(png), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_steps_writes_plain_lines_to_its_stream_and_nothing_when_disabled():
    from cnnzoo.status import Steps

    buf = io.StringIO()
    with Steps(stream=buf, every_s=1e9) as progress:
        for done in range(11):
            progress("work", done, 10)
    assert buf.getvalue().splitlines()[0] == "work: 0/10 ..."  # the start, then only the end (every_s is huge)
    assert len(buf.getvalue().splitlines()) == 2 and buf.getvalue().splitlines()[1].startswith("work: 10/10 (")
    quiet = io.StringIO()
    with Steps(enabled=False, stream=quiet) as progress:
        progress("work", 0, 10)
    assert quiet.getvalue() == ""
    with Steps(stream=quiet, plain=False) as progress:  # terminal-only progress: nothing in a log
        progress("work", 0, 10)
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------------------------------------ (8) the API
def _lenet_summary():
    with torch.device("meta"):
        model = cnnzoo.create_model("lenet5")
    return cnnzoo.analysis.summarize(model, (1, 32, 32))


def test_a_printed_summary_is_the_table_with_layer_rows_and_totals(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    s = _lenet_summary()
    text = str(s)
    assert "LayerRecord(" not in text and "Summary(" not in text  # not the dataclass dump
    assert repr(s) == text  # a REPL shows what print() shows
    conv = next(line for line in text.splitlines() if "features.0 " in line)
    assert "Conv2d" in conv and C1_PARAMS in conv.split() and C1_MACS in conv.split()
    assert f"total parameters: {LENET_PARAMS}" in text
    assert "MACs (multiply-accumulates" in text and "parameter memory" in text
    # at 80 columns: the compact table, the same rows and totals
    narrow = s.table(80)
    _lines_fit(narrow)
    conv = next(line for line in narrow.splitlines() if line.startswith("features.0 "))
    assert "Conv2d" in conv and "5/1/0" in conv and C1_PARAMS in conv.split() and "118K" in conv.split()
    assert f"total parameters: {LENET_PARAMS}" in narrow


def test_apply_overrides_scales_a_warmup_that_does_not_fit_the_shorter_run():
    from cnnzoo.train.config import Config, apply_overrides

    def recipe():  # a 100-epoch recipe with a 5-epoch warmup
        return apply_overrides(Config(), ["schedule.name=cosine", "train.epochs=100", "schedule.warmup_epochs=5"])

    notes: list[str] = []
    cfg = apply_overrides(recipe(), ["train.epochs=2"], note=notes.append)
    assert cfg.train.epochs == 2 and cfg.schedule.warmup_epochs == pytest.approx(5 * 2 / 100)  # its share: 0.1
    assert len(notes) == 1 and "scaled to 0.1 epochs" in notes[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warmup that fits stays as the recipe has it, with no note
        assert apply_overrides(recipe(), ["train.epochs=10"]).schedule.warmup_epochs == 5
    with pytest.warns(UserWarning, match="warmup is scaled"):  # the library's default: a warning
        assert apply_overrides(recipe(), ["train.epochs=4"]).schedule.warmup_epochs == pytest.approx(0.2)
    with pytest.raises(ValueError, match="warmup_epochs"):  # a warmup the user sets is never changed
        apply_overrides(recipe(), ["train.epochs=2", "schedule.warmup_epochs=3"])


def test_the_cli_and_the_library_scale_the_folder_recipes_warmup_alike(capsys):
    """folder.yaml: 30 epochs with a 2-epoch warmup; a 1-epoch run keeps its share, 2 x 1 / 30."""
    from cnnzoo.cli.main import build_parser
    from cnnzoo.cli.train import build_config
    from cnnzoo.train.config import apply_overrides, default_config

    lib = apply_overrides(default_config("lenet5", "folder:/x"), ["train.epochs=1"], note=lambda t: None)
    assert lib.schedule.warmup_epochs == pytest.approx(2 / 30)
    args = build_parser().parse_args(["train", "lenet5", "--data", "folder:/x", "--epochs", "1"])
    assert build_config(args).schedule.warmup_epochs == pytest.approx(2 / 30)
    assert "warmup is scaled to 0.0667 epochs" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- (9) width
@pytest.mark.parametrize("name", ["resnet18", "vit_b_16"])
def test_summary_fits_80_columns_with_names_whole(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # as an 80-column terminal says
    assert main(["summary", name]) == 0
    out = capsys.readouterr().out
    _lines_fit(out)
    assert "total parameters:" in out
    if name == "resnet18":
        rows = {line.split()[0] for line in out.splitlines() if line.strip()}
        assert {"conv1", "layer1.0.conv1", "layer4.1.bn2", "fc"} <= rows  # names whole, on one line here


def test_compare_arch_fits_80_columns(capsys):
    assert main(["compare-arch", "resnet18", "vgg16", "--width", "80"]) == 0
    out = capsys.readouterr().out
    _lines_fit(out)
    assert "138,357,544" in out and "64@112 128@56 256@28 512@14 512@7" in out  # VGG-16's count and stages whole


def test_compare_table_fits_80_columns_with_every_cell_whole(monkeypatch):
    from rich.console import Console

    from cnnzoo.compare.report import columns, print_table, table_cells

    def st(m, s):
        return {"mean": m, "std": s, "n": 3}

    def row(spec):
        return {"spec": spec, "params": 61706, "macs": 416_520, "train_time_s": st(63.2, 1.5),
                "train_images_per_s": st(1234.0, 12.0), "infer_images_per_s": st(9876.0, 40.0),
                "best_top1": st(0.9870, 0.0012), "best_top5": st(0.9990, 0.0001), "final_top1": st(0.986, 0.001),
                "final_top5": st(0.999, 0.0002),
                "protocols": {p: {"top1": st(0.988, 0.001), "top5": st(0.999, 0.0)} for p in ("10crop", "dense")},
                "epochs_to_target": st(4.0, 1.0), "runs": 3, "runs_ok": 3, "target_reached": 3, "status": "ok",
                "failed": [], "target_top1": 0.98}

    rows = [row("lenet5"), row("resnet20_cifar:shortcut=B")]
    console = Console(width=80, file=io.StringIO(), record=True)
    print_table(rows, console=console)
    text = console.export_text()
    _lines_fit(text)
    for r in rows:
        for cell, _ in table_cells(r):
            assert cell in text, cell  # every cell whole, on one line
    words = set(text.split())
    assert all(set(c.split()) <= words for c in columns(rows))  # every header, perhaps on two lines
    monkeypatch.setenv("COLUMNS", "80")  # the default console: the terminal's width, not 1000 columns
    default = io.StringIO()
    monkeypatch.setattr("sys.stdout", default)
    print_table(rows)
    _lines_fit(default.getvalue())


def test_recipes_fit_80_columns_with_names_whole(capsys, monkeypatch):
    from cnnzoo.train.paper_recipes import list_paper_recipes

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    _lines_fit(out)
    for r in list_paper_recipes():
        assert r.name in out.split()
        for n in r.networks:
            assert any(n in line for line in out.splitlines()), n  # each network's name whole, on one line
