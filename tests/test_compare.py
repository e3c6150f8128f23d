"""`cnnzoo compare`: specs, plan, the three-network comparison of issue 12, reuse, kill + re-run, the report."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cnnzoo.cli.main import main
from cnnzoo.compare import parse_spec, parse_specs

SMALL = ["--set", "train.epochs=1", "--set", "train.limit_batches=2"]
# alexnet_paper's smallest input is 67 pixels (its card's min_input_size); per spec, so the LeNets stay at 28
ALEX = "alexnet_paper:two_tower=false@data.input_size=67"
DIVERGES = "lenet5@optim.lr=1e30"  # NaN loss at the second step: a spec that fails while the others go on
# the README's hand-checked `cnnzoo summary lenet5` (conv 117,600 + 240,000, linear 48,000 + 10,080 + 840 MACs)
LENET5_PARAMS, LENET5_MACS = 61_706, 416_520


# ---------------------------------------------------------------------------------------------------- specs
def test_spec_syntax():
    s = parse_spec("resnet20_cifar:shortcut=B,drop_rate=0.1@train.label_smoothing=0.1@optim.lr=0.05")
    assert (s.name, s.options, s.overrides) == ("resnet20_cifar", ("shortcut=B", "drop_rate=0.1"),
                                                ("train.label_smoothing=0.1", "optim.lr=0.05"))
    assert parse_spec("lenet5").options == () and parse_spec("lenet5").overrides == ()
    # commas inside brackets belong to the value; spaces inside braces are kept (YAML needs them)
    s = parse_spec("resnet18:layers=[2,2,2,2],attn_layer=eca@train.mix={name: mixup, alpha: 0.2}")
    assert s.options == ("layers=[2,2,2,2]", "attn_layer=eca")
    assert s.overrides == ("train.mix={name: mixup, alpha: 0.2}",)
    # directory names: readable, and distinct for distinct specs
    assert parse_spec("lenet5").slug == "lenet5"
    a, b = parse_spec("alexnet_paper:lrn=false"), parse_spec("alexnet_paper_lrn_false")
    assert a.slug.startswith("alexnet_paper_lrn_false") and a.slug != b.slug
    assert a.slug != parse_spec("alexnet_paper:lrn=true").slug
    assert "/" not in parse_spec("lenet5@train.mix={name: mixup}").slug


@pytest.mark.parametrize("text, words", [
    ("lenet5:", ["nothing after ':'"]),
    ("lenet5:drop_rate", ["drop_rate", "OPTION=VALUE"]),
    ("lenet5:drop_rate=0.1,drop_rate=0.2", ["given twice"]),
    ("lenet5@epochs=3", ["SECTION.KEY=VALUE"]),
    ("lenet5@train.seed=3", ["--seeds"]),
    ("lenet5@train.run_dir=x", ["--out"]),
    ("lenet5@model.options.drop_rate=0.1", ["after ':'"]),
    ("le/net5", ["not a network name"]),
])
def test_spec_syntax_errors(text, words):
    with pytest.raises(ValueError) as e:
        parse_spec(text)
    for w in words:
        assert w in str(e.value)


def test_same_spec_twice_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        parse_specs(["lenet5", "lenet5"])


@pytest.mark.parametrize("args, words", [
    (["lenet5", "lenet_5"], ["lenet_5", "unknown network"]),
    (["lenet5", "alexnet_paper:towers=1"], ["alexnet_paper:towers=1", "towers", "valid options", "two_tower"]),
    (["lenet5", "alexnet_paper:two_tower=maybe"], ["alexnet_paper:two_tower=maybe", "two_tower"]),
    (["lenet5", "lenet5@optim.lr=fast"], ["lenet5@optim.lr=fast", "optim.lr"]),
    (["lenet5", "--set", "train.seed=3"], ["train.seed", "--seeds"]),
    (["lenet5", "--seeds", "0,x"], ["--seeds", "0,1,2"]),
    (["lenet5", "--protocol", "11crop"], ["11crop", "10crop"]),
    (["lenet5", "alexnet_paper:two_tower=false@data.input_size=32"], ["67", "data.input_size"]),
])
def test_bad_input_is_one_line_before_any_training(tmp_path, capsys, args, words):
    out = tmp_path / "cmp"
    rc = main(["compare", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("cnnzoo compare: error:")
    for w in words:
        assert w in err
    assert not (out / "runs").exists()


def test_dry_run_plans_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "lenet5", "lenet5@train.label_smoothing=0.1", "--seeds", "0,1", "--out", str(out),
               "--dry-run", *SMALL, "--set", "data.batch_size=32"])
    text = capsys.readouterr().out
    assert rc == 0
    assert not out.exists()
    for spec in ("lenet5", "lenet5@train.label_smoothing=0.1"):
        for seed in (0, 1):
            assert str(out / "runs" / parse_spec(spec).slug / f"seed{seed}") in text
    assert "417 K" in text  # LeNet-5's 416,520 MACs per image
    # cost of one run = MACs x (3 x 2 batches of 32 + 1,000 test images) x 1 epoch; four runs
    total = 4 * LENET5_MACS * (3 * 64 + 1000)
    assert f"{total / 1e9:.3g} GMAC" in text


def test_eta_adds_a_networks_macs_to_the_time_measured_outside_the_macs(tmp_path, monkeypatch):
    """The overall ETA before resnet20_cifar has run: LeNet-5's measured epoch minus its MACs' share is the time any
    network spends outside its MACs (data, augmentation), to which resnet20_cifar's own MACs are added."""
    from cnnzoo.compare import runner

    plans = runner.plan_comparison(["lenet5", "resnet20_cifar"], out=tmp_path / "cmp", seeds=[0],
                                   sets=["train.epochs=2"])
    progress = runner._Progress(plans, verbose=False)
    monkeypatch.setattr(runner, "conv_rate", lambda: 1e10)  # 10 GMAC/s
    progress.epoch_s[0], progress.closed = 3.0, {0}  # LeNet-5 done: 3 s per epoch
    # mnist5k: 4,000 training and 1,000 test images; MACs per image by hand: LeNet-5 416,520 (README), resnet20_cifar
    # at 28x28 30,804,224 (the dry run above prints 30.8 M)
    lenet_s = LENET5_MACS * (3 * 4000 + 1000) / 1e10  # 0.54 s of LeNet-5's 3 s are its MACs
    resnet_s = plans[1].macs * (3 * 4000 + 1000) / 1e10
    assert plans[1].macs == pytest.approx(30.8e6, rel=2e-3)
    assert progress.eta() == pytest.approx(2 * (3.0 - lenet_s + resnet_s))  # two epochs left, about 83 s
    progress.epoch_s[1] = 20.0  # once measured, its own time counts
    assert progress.eta() == pytest.approx(2 * 20.0)


# ---------------------------------------------------------------------------------------------------- the comparison
class _Report(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.scripts, self.cells, self.title = [], [], [], [], ""
        self._in, self._row, self._table = None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if tag in ("a", "link") and "href" in a:
            self.links.append(a["href"])
        if tag == "script":
            self.scripts.append(a)
        if tag == "table":
            self._table = a.get("id")
        if tag == "tr" and self._table == "results":
            self._row = []
        if tag in ("td", "th", "title"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.cells.append(self._row)
            self._row = None
        if tag == "table":
            self._table = None
        if tag in ("td", "th", "title"):
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in in ("td", "th") and self._row is not None:
            self._row.append(data.strip())


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*")
            if p.is_file() and ("checkpoints" in p.parts or p.name in ("metrics.jsonl", "eval.json"))}


def _numbers(runs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "reused"} for r in runs]


def _compare_then_reuse(tmp_path, capsys, trained: list[str]) -> None:
    """`cnnzoo compare TRAINED... DIVERGES --data mnist5k` (one short epoch; the last spec diverges): the table, CSV,
    JSON and report; then the same command again reuses every finished run (nothing retrained, the same numbers); a
    changed setting is refused without touching anything."""
    out = tmp_path / "cmp"
    specs = [*trained, DIVERGES]
    args = ["compare", *specs, "--data", "mnist5k", *SMALL, "--out", str(out)]
    rc1 = main(args)
    first = capsys.readouterr()
    before = _mtimes(out)
    results1 = json.loads((out / "results.json").read_text())
    rc2 = main(args)
    second = capsys.readouterr()
    three = {"out": out, "specs": specs, "trained": trained, "rc1": rc1, "rc2": rc2, "out1": first.out,
             "err1": first.err, "out2": second.out, "before": before, "after": _mtimes(out), "results1": results1}
    _check_table_csv_json(three)
    _check_report_html(three)
    _check_reuse(three)
    rc = main(["compare", "lenet5", "--set", "train.epochs=2", "--set", "train.limit_batches=2", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "train.epochs 1 there, 2 now" in err and "another --out" in err
    assert _mtimes(out) == three["after"]


def test_compare_two_networks_then_reuse(tmp_path, capsys):
    """The default run's version of the issue's comparison (below): the two LeNets and a spec that diverges."""
    _compare_then_reuse(tmp_path, capsys, ["lenet5", "lenet5_paper"])


@pytest.mark.slow
def test_compare_three_networks_then_reuse(tmp_path, capsys):
    """Issue 12: `cnnzoo compare lenet5 lenet5_paper alexnet_paper:two_tower=false --data mnist5k` (one short
    epoch, plus a spec that diverges). Slow (about 25-40 s here): AlexNet's 58 M parameters are checkpointed and its
    119 M MACs per 67x67 image evaluated on the 1,000 test digits twice."""
    _compare_then_reuse(tmp_path, capsys, ["lenet5", "lenet5_paper", ALEX])


def _check_table_csv_json(three):
    out = three["out"]
    assert three["rc1"] == 1, three["err1"]  # one spec failed: status 1, the others went on
    text = three["out1"]
    for spec in three["specs"]:
        assert spec in text
    header = " ".join(text.split())  # the table fits the terminal: long headers wrap onto two lines (issue 31)
    assert all(w in header for w in ("final", "top-1", "inference", "img/s", "status"))
    assert f"{DIVERGES} failed" in text and "loss is nan" in text

    rows = {r["spec"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert list(rows) == three["specs"]
    assert [rows[s]["status"] for s in rows] == ["ok"] * len(three["trained"]) + ["diverged"]  # issue 31
    assert "loss is nan" in rows[DIVERGES]["error"]
    assert int(rows["lenet5"]["params"]) == LENET5_PARAMS and int(rows["lenet5"]["macs"]) == LENET5_MACS
    if ALEX in rows:
        assert rows[ALEX]["input_size"] == "1x67x67"

    data = json.loads((out / "results.json").read_text())
    assert [r["spec"] for r in data["specs"]] == list(rows)
    assert data["environment"]["command"].startswith("cnnzoo compare lenet5 lenet5_paper")
    assert data["environment"]["torch"] and data["environment"]["cnnzoo"]
    for run in data["runs"]:
        if run["spec"] == DIVERGES:
            assert run["status"] == "diverged"  # a NaN loss: "diverged", not "failed" nor "ok" (issue 31)
            continue
        run_dir = Path(run["run_dir"])
        assert run_dir.parent.parent == out / "runs" and run_dir.name == "seed0"
        # the numbers are the Trainer's own: its eval.json and the last row of its metrics.csv
        trainer_eval = json.loads((run_dir / "eval.json").read_text())
        last = list(csv.DictReader((run_dir / "metrics.csv").open()))[-1]
        assert run["final"]["top1"] == trainer_eval["top1"]
        assert run["final"]["top1"] == pytest.approx(float(last["test_acc"]), abs=1e-6)
        assert len(run["history"]) == 1 and run["epochs"] == 1
        assert run["train_time_s"] > 0 and run["train_images_per_s"] > 0 and run["infer_images_per_s"] > 0
        assert sum(map(sum, run["confusion"])) == 1000  # mnist5k's 1,000 test digits
        spec_row = rows[run["spec"]]
        assert float(spec_row["final_top1_mean"]) == pytest.approx(run["final"]["top1"], abs=1e-6)
        assert spec_row["final_top1_std"] == ""  # one seed: no standard deviation


def _check_report_html(three):
    html = (three["out"] / "report.html").read_text()
    p = _Report()
    p.feed(html)
    header, *body = p.cells
    assert header[0] == "spec" and "final top-1 %" in header
    assert [r[0] for r in body] == three["specs"]
    for spec in three["specs"]:
        assert spec in p.title
    # every image is an embedded PNG; one confusion matrix per spec that trained
    assert p.images
    for img in p.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    alts = [img["alt"] for img in p.images]
    for spec in three["trained"]:
        assert f"confusion matrix of {spec}" in alts
    assert f"confusion matrix of {DIVERGES}" not in alts
    for kind in ("test accuracy and training loss per epoch", "final accuracy vs MACs and vs parameters",
                 "per-class accuracy heat map across specs"):
        assert kind in alts
    # self-contained: nothing to fetch (links point into the comparison's own directory)
    assert all(not s.get("src") for s in p.scripts)
    assert not [h for h in p.links if h.startswith(("http:", "https:", "//"))]
    assert "@media print" in html and "cnnzoo compare lenet5 lenet5_paper" in html


def _check_reuse(three):
    assert three["rc2"] == 1
    text = three["out2"]
    for spec in three["trained"]:
        assert f"{spec} seed 0: finished run, reused" in text
    assert three["before"] and three["after"] == three["before"]  # no checkpoint or metric file was rewritten
    again = json.loads((three["out"] / "results.json").read_text())
    assert _numbers(again["runs"]) == _numbers(three["results1"]["runs"])
    # the failed spec is tried again
    assert [r["reused"] for r in again["runs"]] == [True] * len(three["trained"]) + [False]


# ---------------------------------------------------------------------------------------------------- kill, jobs
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnzoo", "compare", *args]


KILL = ["lenet5", "--set", "train.epochs=3", "--set", "train.limit_batches=2", "--threads", "1"]
TIMING = {"epoch_time_s", "images_per_s"}  # wall-clock measurements: the only fields that may differ


def _same_training(a: dict, b: dict) -> None:
    assert a["seed"] == b["seed"]
    assert [{k: v for k, v in h.items() if k not in TIMING} for h in a["history"]] == \
           [{k: v for k, v in h.items() if k not in TIMING} for h in b["history"]]
    assert a["final"] == b["final"] and a["confusion"] == b["confusion"]


def test_killed_comparison_resumes_and_matches_an_uninterrupted_one(tmp_path, capsys):
    """SIGTERM in the middle of the second run; re-running the command reuses the first run untouched and resumes
    the second, which ends with the numbers of the same run trained without interruption."""
    out, ref = tmp_path / "cmp", tmp_path / "ref"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(*KILL, "--seeds", "0,1", "--out", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    pointer = out / "runs" / "lenet5" / "seed1" / "checkpoints" / "last.json"
    deadline = time.time() + 300
    while not pointer.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert "Re-run the same `cnnzoo compare` command" in log
    state = json.loads(pointer.read_text())["tag"]
    assert state != "e0003-b000000"  # stopped before its last epoch
    assert not (out / "results.json").exists()  # nothing was reported for a comparison that did not end
    seed0 = {str(p): p.stat().st_mtime_ns for p in (out / "runs" / "lenet5" / "seed0").rglob("*") if p.is_file()}

    again = subprocess.run(_cli(*KILL, "--seeds", "0,1", "--out", str(out)), capture_output=True, text=True,
                           env=env, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert "lenet5 seed 0: finished run, reused" in again.stdout
    assert "lenet5 seed 1: resuming" in again.stdout
    assert {str(p): p.stat().st_mtime_ns for p in (out / "runs" / "lenet5" / "seed0").rglob("*")
            if p.is_file() and p.name != "compare.json"} == {k: v for k, v in seed0.items()
                                                              if not k.endswith("compare.json")}

    # the same run uninterrupted (in this process, one thread): identical numbers
    assert main(["compare", *KILL, "--seeds", "1", "--out", str(ref), "-q"]) == 0
    capsys.readouterr()
    resumed = json.loads((out / "results.json").read_text())["runs"][1]
    straight = json.loads((ref / "results.json").read_text())["runs"][0]
    assert resumed["seed"] == 1
    _same_training(resumed, straight)


@pytest.mark.slow
def test_jobs_2_gives_the_numbers_of_runs_one_after_another(tmp_path, capsys):
    """``--jobs 2`` (two worker processes of one thread each) ends with the numbers of the same comparison run one
    spec after another in this process."""
    par, seq = tmp_path / "par", tmp_path / "seq"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = ["lenet5_paper", *KILL, "--seeds", "0,1"]
    run = subprocess.run(_cli(*both, "--jobs", "2", "--out", str(par)), capture_output=True, text=True, env=env,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr
    assert main(["compare", *both, "--out", str(seq), "-q"]) == 0
    capsys.readouterr()
    a = json.loads((par / "results.json").read_text())["runs"]
    b = json.loads((seq / "results.json").read_text())["runs"]
    assert [(r["spec"], r["seed"]) for r in a] == [(r["spec"], r["seed"]) for r in b] == \
           [("lenet5_paper", 0), ("lenet5_paper", 1), ("lenet5", 0), ("lenet5", 1)]
    for x, y in zip(a, b):
        _same_training(x, y)


# ---------------------------------------------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or \
    ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    out = tmp_path / "cmp"
    assert main(["compare", "lenet5", "lenet5_paper", *SMALL, "--out", str(out), "-q"]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1600", f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=180, cwd=tmp_path, check=False)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    pixels = np.asarray(img.resize((120, 160))).reshape(-1, 3)
    not_white = (pixels.min(1) < 235).mean()
    assert not_white > 0.05, "the screenshot is (nearly) blank"
    assert len(np.unique(pixels, axis=0)) > 50  # text, table rules and coloured plots, not one flat colour


# ---------------------------------------------------------------------------------------------------- issue 23 (3)
@pytest.mark.parametrize("files", [{"report.html": "<p>mine"}, {"results.csv": "a,b\n"}, {"notes.txt": "x"},
                                   {"results.json": "{\"accuracy\": 0.9}"}])
def test_run_comparison_refuses_a_directory_of_the_users(tmp_path, files):
    """The Python API refuses as the CLI does, before anything is written (no lock, no marker, no runs/)."""
    from cnnzoo.compare import run_comparison

    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    with pytest.raises(ValueError, match="is not empty and is not a cnnzoo comparison"):
        run_comparison(["lenet5"], out=out, sets=["train.epochs=1", "train.limit_batches=2"], verbose=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert all((out / n).read_text() == t for n, t in files.items())
