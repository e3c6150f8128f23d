"""`cnnzoo compare` of segmentation networks (issue 25): the table over specs x seeds, its numbers against each run's
eval.json, reuse and resume of runs, U-Net on ResNet-34 next to the paper's U-Net, and the errors."""

from __future__ import annotations

import csv
import json
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cnnzoo.cli.main import main
from cnnzoo.compare import parse_spec

SMALL_A = "unet_padded:base_channels=4,depth=2"
SMALL_B = "unet_padded:base_channels=8,depth=2"
# 32 training canvases (two batches of the recipe's 16), 16 test canvases, one epoch, one thread
TINY = ["--data-param", "num_train=32", "--data-param", "num_test=16", "--epochs", "1", "--threads", "1"]
METRICS = ("mean_iu", "pixel_accuracy", "mean_accuracy", "fw_iu")
TIMING = {"epoch_time_s", "images_per_s"}  # wall-clock measurements: the only fields that may differ


def _unet_padded_params(base: int, depth: int, in_ch: int = 1, classes: int = 11) -> int:
    """U-Net (Ronneberger et al. 2015, Fig. 1) with padded 3x3 convolutions, batch norm after each (no conv bias: the
    digits recipe's norm_layer=batchnorm), widths base * 2**k for k = 0..depth: every contracting level two 3x3
    convolutions (+ 2 x 2C BN parameters), every expanding level a 2x2 up-convolution C -> C/2 with bias and two 3x3
    convolutions (C -> C/2, C/2 -> C/2), and the 1x1 classifier with bias."""
    widths = [base * 2**k for k in range(depth + 1)]
    total, c_in = 0, in_ch
    for w in widths:
        total += 9 * c_in * w + 2 * w + 9 * w * w + 2 * w
        c_in = w
    for w in reversed(widths[1:]):
        h = w // 2
        total += 4 * w * h + h  # up-convolution
        total += 9 * w * h + 2 * h + 9 * h * h + 2 * h
    return total + widths[0] * classes + classes


def test_hand_count_of_the_small_unet():
    # base 4, depth 2 by hand: down 196 + 896 + 3,520; up 520 + 1,760 and 132 + 448; classifier 55
    assert _unet_padded_params(4, 2) == 196 + 896 + 3520 + 520 + 1760 + 132 + 448 + 55 == 7527


class _Table(HTMLParser):
    """The cells of report.html's results table."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._in_results, self._cell = [], None, False, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._in_results = dict(attrs).get("id") == "results"
        elif tag == "tr" and self._in_results:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = True
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag in ("td", "th"):
            self._cell = False
        elif tag == "table":
            self._in_results = False

    def handle_data(self, data):
        if self._cell and self._row is not None:
            self._row[-1] += data.strip()


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*")
            if p.is_file() and ("checkpoints" in p.parts or p.name in ("metrics.jsonl", "eval.json", "run.json"))}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def test_two_specs_two_seeds_then_reuse(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", SMALL_A, SMALL_B, "--seeds", "0,1", *TINY, "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    for spec in (SMALL_A, SMALL_B):
        assert spec in first
    header = " ".join(first.split())
    assert all(w in header for w in ("mean IU %", "pixel acc %", "params", "status"))

    # every run: a segmentation run directory of its own, trained for the one epoch asked
    evals = {}
    for spec in (SMALL_A, SMALL_B):
        for seed in (0, 1):
            run = out / "runs" / parse_spec(spec).slug / f"seed{seed}"
            info = json.loads((run / "run.json").read_text())
            assert info["kind"] == "segmentation" and info["data"]["num_train"] == 32
            assert info["data"]["params"]["num_test"] == 16
            evals[spec, seed] = json.loads((run / "eval.json").read_text())
            assert evals[spec, seed]["epoch"] == 1

    # the CSV's numbers are the runs' eval.json: the mean, lowest and highest over the two seeds
    rows = {r["spec"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert list(rows) == [SMALL_A, SMALL_B]
    for spec, row in rows.items():
        assert row["status"] == "ok" and row["runs"] == "2" and row["seeds"] == "0 1"
        for key in METRICS:
            values = [evals[spec, s][key] for s in (0, 1)]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values), rel=1e-5)
            assert float(row[f"{key}_min"]) == pytest.approx(min(values), rel=1e-5)
            assert float(row[f"{key}_max"]) == pytest.approx(max(values), rel=1e-5)
        assert float(row["train_time_s_mean"]) > 0 and row["input_size"] == "1x64x64"
    # parameters derived by hand from the U-Net layout (not from the module)
    assert int(rows[SMALL_A]["params"]) == _unet_padded_params(4, 2) == 7527
    assert int(rows[SMALL_B]["params"]) == _unet_padded_params(8, 2)

    data = json.loads((out / "results.json").read_text())
    assert data["kind"] == "segmentation" and [r["spec"] for r in data["specs"]] == [SMALL_A, SMALL_B]
    for run in data["runs"]:
        ev = evals[run["spec"], run["seed"]]
        assert {k: run["final"][k] for k in METRICS} == {k: ev[k] for k in METRICS}
        assert run["confusion"] == ev["confusion"] and run["reused"] is False
        assert sum(map(sum, run["confusion"])) > 0
    assert data["environment"]["command"].startswith(f"cnnzoo compare {SMALL_A} {SMALL_B} --data "
                                                     "digits-segmentation --data-param num_train=32")

    # the report: the same table, each metric as mean (lowest–highest) in percent
    html = (out / "report.html").read_text()
    table = _Table()
    table.feed(html)
    head, *body = table.rows
    assert head[0] == "spec" and "mean IU %" in head and "pixel acc %" in head
    assert [r[0] for r in body] == [SMALL_A, SMALL_B]
    col = head.index("mean IU %")
    for r in body:
        values = [evals[r[0], s]["mean_iu"] for s in (0, 1)]
        assert r[col] == f"{_pct(statistics.fmean(values))} ({_pct(min(values))}–{_pct(max(values))})"
    assert "data:image/png;base64," in html and "mean IU" in html

    # the same command again: every run reused (no checkpoint, metric or eval file rewritten), the same numbers
    before = _mtimes(out)
    assert main(args) == 0
    again = capsys.readouterr().out
    for spec in (SMALL_A, SMALL_B):
        for seed in (0, 1):
            assert f"{spec} seed {seed}: finished run, reused" in again
    assert before and _mtimes(out) == before
    second = json.loads((out / "results.json").read_text())
    assert [r["reused"] for r in second["runs"]] == [True] * 4
    assert [{k: v for k, v in r.items() if k != "reused"} for r in second["runs"]] == \
           [{k: v for k, v in r.items() if k != "reused"} for r in data["runs"]]

    # other settings for the same directory are refused, nothing touched
    rc = main(["compare", SMALL_A, "--seeds", "0", *TINY[:-4], "--epochs", "2", "--threads", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "epochs 1 there, 2 now" in err and "another --out" in err
    assert _mtimes(out) == before


def test_an_interrupted_run_is_resumed_and_ends_as_an_uninterrupted_one(tmp_path, capsys):
    """A run stopped in its second epoch (as Ctrl-C stops it: a checkpoint mid-epoch) is resumed by the next compare
    (`SegTrainer(resume=...)`) and ends with the numbers of the same run trained straight through."""
    from cnnzoo.compare import plan_segmentation
    from cnnzoo.segmentation.train import SegTrainer
    from cnnzoo.train import TrainingInterrupted

    out, ref = tmp_path / "cmp", tmp_path / "ref"
    params = {"num_train": 32, "num_test": 16}
    (plan,) = plan_segmentation([SMALL_A], data_params=params, seeds=[0], out=out, epochs=2)
    assert plan.state == "new" and plan.epochs == 2

    def stop(trainer, epoch, batch):
        if epoch == 1 and batch == 0:
            trainer.request_stop()

    with pytest.raises(TrainingInterrupted):
        SegTrainer(plan.cfg, run_dir=plan.run_dir, threads=1, callbacks=[stop], verbose=False).fit()
    assert json.loads((plan.run_dir / "checkpoints" / "last.json").read_text())["tag"] == "e0001-b000001"
    assert plan_segmentation([SMALL_A], data_params=params, seeds=[0], out=out, epochs=2)[0].state == "resume"

    args = [SMALL_A, "--data-param", "num_train=32", "--data-param", "num_test=16", "--epochs", "2", "--threads", "1"]
    assert main(["compare", *args, "--out", str(out)]) == 0
    assert f"{SMALL_A} seed 0: resuming (epoch 1/2 done)" in capsys.readouterr().out
    assert main(["compare", *args, "--out", str(ref), "-q"]) == 0
    capsys.readouterr()
    resumed = json.loads((out / "results.json").read_text())["runs"][0]
    straight = json.loads((ref / "results.json").read_text())["runs"][0]
    assert [{k: v for k, v in h.items() if k not in TIMING} for h in resumed["history"]] == \
           [{k: v for k, v in h.items() if k not in TIMING} for h in straight["history"]]
    assert resumed["final"] == straight["final"] and resumed["confusion"] == straight["confusion"]


def test_spec_overrides_and_options_go_over_the_digits_recipe(tmp_path):
    from cnnzoo.compare import plan_segmentation
    from cnnzoo.segmentation import get_digits_recipe

    recipe = get_digits_recipe("unet_padded")
    plans = plan_segmentation([f"{SMALL_A}@optim.lr=0.003@data.batch_size=8", "unet_padded"],
                              data_params={"num_train": 32, "num_test": 16}, seeds=[0], out=tmp_path / "cmp",
                              limit_batches=3)
    a, b = plans
    assert a.cfg.options == {**recipe["options"], "base_channels": 4, "depth": 2}  # norm_layer kept from the recipe
    assert (a.cfg.lr, a.cfg.batch_size, a.cfg.limit_batches) == (0.003, 8, 3)
    assert (b.cfg.lr, b.cfg.batch_size, b.cfg.epochs) == (recipe["lr"], recipe["batch_size"], recipe["epochs"])
    assert a.train_images == 3 * 8 and b.train_images == 32 and a.test_images == 16
    assert a.command[:4] == ["cnnzoo", "segment", "train", "unet_padded"]
    assert "--lr" in a.command and a.command[a.command.index("--lr") + 1] == "0.003"
    assert not (tmp_path / "cmp").exists()  # planning writes nothing


@pytest.mark.parametrize("args, words", [
    # classifiers and segmenters together: one error naming each
    (["lenet5", SMALL_A], ["cannot mix", "lenet5 is a classification network", f"{SMALL_A} is a segmentation"]),
    # the classification-only options, named
    ([SMALL_A, "--protocol", "10crop", "--set", "train.epochs=1"], ["--set, --protocol apply only to classification",
                                                                   "--epochs"]),
    ([SMALL_A, "--recipe", "paper"], ["--recipe applies only to classification"]),
    ([SMALL_A, "--target", "50"], ["--target applies only to classification"]),
    ([SMALL_A, "--no-flip", "--no-download"], ["--no-flip, --no-download apply only to classification"]),
    # and the other way round
    (["lenet5", "--epochs", "1", "--data-param", "num_train=8"], ["--data-param, --epochs apply only to segmentation",
                                                                  "--set train.epochs=N"]),
    (["lenet5", "--data", "digits-segmentation"], ["segmentation dataset", "mnist5k"]),
    ([SMALL_A, "--data", "mnist5k"], ["not a segmentation dataset", "digits-segmentation"]),
    ([SMALL_A, "unet_paddded"], ["unet_paddded", "unet_padded"]),
    (["unet_padded:widht=4"], ["unet_padded:widht=4", "widht"]),
    (["unet_padded:in_channels=3"], ["in_channels", "from the data"]),
    (["unet_padded@train.label_smoothing=0.1"], ["train.label_smoothing", "optim.lr"]),
    (["unet_padded@optim.lr=-1"], ["unet_padded@optim.lr=-1", "lr must be"]),
    (["unet_padded", "--data-param", "num_trian=8"], ["num_trian"]),
])
def test_bad_input_is_one_line_before_any_training(tmp_path, capsys, args, words):
    out = tmp_path / "cmp"
    rc = main(["compare", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cnnzoo compare: error:")
    for w in words:
        assert w in err
    assert not out.exists()


@pytest.mark.slow
def test_unet_on_resnet34_next_to_the_papers_unet(tmp_path, capsys):
    """Issue 25: "a U-Net on ResNet-34 next to the paper's" (about 15 s: ResNet-34's 21 M parameters checkpointed)."""
    out = tmp_path / "cmp"
    rc = main(["compare", "unet_resnet34", SMALL_A, "--data-param", "num_train=16", "--data-param", "num_test=16",
               "--epochs", "1", "--limit-batches", "1", "--threads", "1", "--out", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    rows = {r["spec"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert list(rows) == ["unet_resnet34", SMALL_A]
    # segmentation_models_pytorch's Unet("resnet34") has 24,436,369 parameters for 3 input channels and 1 class
    # (its card's derivation); one input channel takes 2 x 64 x 7 x 7 = 6,272 off the first convolution, 11 classes add
    # 10 x (16 x 3 x 3 + 1) = 1,450 to the head
    assert int(rows["unet_resnet34"]["params"]) == 24_436_369 - 6_272 + 1_450
    for spec in rows:
        run = out / "runs" / parse_spec(spec).slug / "seed0"
        ev = json.loads((run / "eval.json").read_text())
        assert float(rows[spec]["mean_iu_mean"]) == pytest.approx(ev["mean_iu"], rel=1e-5)


@pytest.mark.slow
def test_jobs_2_gives_the_numbers_of_runs_one_after_another(tmp_path, capsys):
    """Each run in its own process (``--jobs 2``, the worker given a segmentation job) ends with the numbers of the same
    runs trained one after another in this process (about 20 s: two worker processes start)."""
    args = [SMALL_A, "--seeds", "0,1", *TINY, "-q"]
    assert main(["compare", *args, "--jobs", "2", "--out", str(tmp_path / "par")]) == 0
    assert main(["compare", *args, "--out", str(tmp_path / "seq")]) == 0
    capsys.readouterr()
    par, seq = (json.loads((tmp_path / d / "results.json").read_text())["runs"] for d in ("par", "seq"))
    assert [r["status"] for r in par] == ["ok", "ok"]
    assert [(r["seed"], r["final"], r["confusion"]) for r in par] == [(r["seed"], r["final"], r["confusion"])
                                                                      for r in seq]
