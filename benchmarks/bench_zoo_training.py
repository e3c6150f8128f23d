"""Does every network in the zoo learn at its defaults? Each one trained for a fixed small budget on the digits.

Every registered network (``cnnzoo.list_models()``, so a network registered later joins by itself) is trained
as ``cnnzoo train NAME --data mnist5k --epochs 1 --limit-batches STEPS`` trains it: the mnist5k recipe, then
the network card's recipe hints, seed 0, batches of 64 (an epoch of the 4,000 training digits is 62 of them).
MNIST and CIFAR networks see the 28x28 digits for up to 80 steps (so one epoch); ImageNet networks the digits
upsampled to 64x64 (or to the network's smallest input, if larger) for up to 60 steps: the budget of issue 9.
The table gives the steps actually taken. A network whose whole run would cost more than ``--cap`` GMACs (3 passes per
training image, 1 per test image for each of the Trainer's two evaluations, from ``cnnzoo.analysis.summarize``)
runs at a smaller input (16, 12 or 8 px for MNIST/CIFAR networks, 32 px for ImageNet ones, never below its
minimum) and, if that is still too much, for fewer steps (never below ``MIN_STEPS``); the table says which.

Test accuracy is top-1 on the 1,000 test digits (chance: 10%). A row under ``LEARNED`` is flagged; the
network's card must say why (a ``deviations`` entry that starts with "short budget:").

    python benchmarks/bench_zoo_training.py --threads 2 --markdown docs/zoo_training.md   # every network: hours
    python benchmarks/bench_zoo_training.py --only 'resnet*_cifar' --only lenet5_paper  # a few while developing

``--results FILE.jsonl`` keeps one line per finished network and skips those already there on a rerun, so
an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.bench import cpu_model
from cnnzoo.train import Trainer
from cnnzoo.train.config import apply_overrides, default_config
from cnnzoo.train.engine import TrainingInterrupted

BATCH = 64  # the mnist5k recipe's batch size
TEST_IMAGES = 1000  # mnist5k's test split
SMALL_STEPS, IMAGENET_STEPS = 80, 60
SMALL_SIZE, IMAGENET_SIZE = 28, 64
REDUCED_SMALL_SIZES, REDUCED_IMAGENET_SIZES = (16, 12, 8), (32,)  # tried in turn, never below a net's minimum
MIN_STEPS = 20
LEARNED = 0.20  # twice chance: below this a network has not learned in its budget
SHORT_BUDGET = "short budget:"  # how a card's deviations entry explains a row under LEARNED


@dataclass
class Budget:
    size: int
    steps: int
    gmacs: float  # the run's estimated multiply-accumulates, training and evaluation
    note: str = ""


def is_imagenet(name: str) -> bool:
    return cnnzoo.get_card(name).input_size[-1] > 64


@functools.cache
def macs_per_image(name: str, size: int) -> int:
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=10, in_channels=1)
    return summarize(model, (1, size, size)).macs


def run_gmacs(name: str, size: int, steps: int) -> float:
    return macs_per_image(name, size) * (3 * BATCH * steps + 2 * TEST_IMAGES) / 1e9


def budget(name: str, cap: float) -> Budget:
    """The input size and number of steps ``name`` trains for (see the module docstring)."""
    with torch.device("meta"):
        smallest = cnnzoo.create_model(name, num_classes=10, in_channels=1).min_input_size
    imagenet = is_imagenet(name)
    size = max(IMAGENET_SIZE if imagenet else SMALL_SIZE, smallest)
    steps = IMAGENET_STEPS if imagenet else SMALL_STEPS
    gmacs = run_gmacs(name, size, steps)
    if gmacs <= cap:
        return Budget(size, steps, gmacs)
    note = f"{gmacs:,.0f} GMACs at {size} px > cap {cap:,.0f}: "
    for smaller in REDUCED_IMAGENET_SIZES if imagenet else REDUCED_SMALL_SIZES:
        if smaller < smallest or smaller >= size:
            continue
        size = smaller
        gmacs = run_gmacs(name, size, steps)
        if gmacs <= cap:
            break
    if gmacs > cap:
        per_step = run_gmacs(name, size, 1) - run_gmacs(name, size, 0)
        steps = max(MIN_STEPS, min(steps, math.floor((cap - run_gmacs(name, size, 0)) / per_step)))
        gmacs = run_gmacs(name, size, steps)
    return Budget(size, steps, gmacs, note + f"{size} px, {steps} steps")


def train_one(name: str, b: Budget, seed: int) -> dict:
    card = cnnzoo.get_card(name)
    with tempfile.TemporaryDirectory() as d:
        sets = ["train.epochs=1", f"train.limit_batches={b.steps}", f"train.seed={seed}", "train.device=cpu",
                f"train.run_dir={Path(d) / 'run'}"]
        if b.size != SMALL_SIZE:
            sets.append(f"data.input_size={b.size}")
        cfg = apply_overrides(default_config(name, "mnist5k"), sets)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, verbose=False, command=["bench_zoo_training.py", name])
        result = trainer.fit()
        seconds = time.perf_counter() - t0
    row = {"network": name, "family": card.family, "seed": seed, "size": b.size, "steps": trainer.global_step,
           "seconds": round(seconds, 1), "test_acc": result.test.top1, "train_loss": result.history[-1]["train_loss"],
           "gmacs": round(b.gmacs, 1), "budget_note": b.note, "recipe": dict(card.recipe)}
    row["reason"] = next((d for d in card.deviations if d.startswith(SHORT_BUDGET)), "")
    return row


def machine() -> dict:
    cpu = cpu_model()
    root = Path(__file__).resolve().parent.parent
    commit = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=False).stdout.strip() or commit
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        if dirty:
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": f"{cpu}, {os.cpu_count()} logical cores", "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cnnzoo": cnnzoo.__version__, "commit": commit,
            "command": shlex.join(["python", "benchmarks/bench_zoo_training.py", *sys.argv[1:]]),
            "date": datetime.now().isoformat(timespec="minutes")}


def markdown(rows: list[dict], info: dict, cap: float) -> str:
    out = [
        "# Every network in the zoo, trained for a small fixed budget",
        "",
        "Made by `benchmarks/bench_zoo_training.py` (its docstring explains the budget): each registered network",
        "trained as `cnnzoo train NAME --data mnist5k --epochs 1 --limit-batches STEPS` trains it (the mnist5k",
        "recipe, then the card's recipe hints), batches of 64, on 4,000 digits; test top-1 on the 1,000 test",
        f"digits (chance 10%). MNIST/CIFAR networks: 28 px, {SMALL_STEPS} steps; ImageNet networks: {IMAGENET_SIZE} px",
        f"(or their smallest input), {IMAGENET_STEPS} steps; a run over {cap:,.0f} GMACs gets a smaller input, then fewer",
        f"steps. Rows under {LEARNED:.0%} are marked and explained by the network's card.",
        "",
        f"- machine: {info['cpu']}; {info['os']}",
        f"- torch {info['torch']} ({info['threads']} threads), Python {info['python']}, cnnzoo {info['cnnzoo']}",
        f"- commit: {info['commit']}; {info['date']}; rows measured at commit(s): "
        + ", ".join(sorted({r.get("commit", "?") for r in rows if not r.get("pending")})),
        f"- command: `{info['command']}`"
        + (" (this table, from the rows a sweep left in `--results`: `python benchmarks/bench_zoo_training.py "
           "--threads N --results FILE [--only NAME ...]` trains the networks it lacks)" if "--table-only" in
           info["command"] else ""),
        "",
        "| network | family | input px | steps | seconds | test top-1 | card recipe hints | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    pending = [r["network"] for r in rows if r.get("pending")]
    rows = [r for r in rows if not r.get("pending")]
    for r in rows:
        acc = f"{100 * r['test_acc']:.1f}%"
        note = r["budget_note"]
        if r["test_acc"] < LEARNED:
            acc = f"**{acc}**"
            note = "; ".join(x for x in (note, r["reason"] or "NOT EXPLAINED ON THE CARD") if x)
        hints = ", ".join(f"{k}={v}" for k, v in r["recipe"].items())
        out.append(f"| {r['network']} | {r['family']} | {r['size']} | {r['steps']} | {r['seconds']:.0f} | {acc} | "
                   f"{hints} | {note} |")
    total = sum(r["seconds"] for r in rows)
    learned = sum(r["test_acc"] >= LEARNED for r in rows)
    out += ["", f"{learned} of {len(rows)} networks at or above {LEARNED:.0%}; {total / 60:.0f} minutes in all.", ""]
    if pending:
        out += [f"Not measured yet ({len(pending)}; the sweep continues with the same command and `--results`): "
                + ", ".join(pending) + ".", ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="train only networks matching this shell pattern (repeatable); default: every network")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cap", type=float, default=1500.0, help="GMACs a network's run may cost before it is reduced")
    p.add_argument("--results", type=Path, default=None, help="JSON-lines file of finished rows (resumable)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here (e.g. docs/zoo_training.md)")
    p.add_argument("--table-only", action="store_true",
                   help="train nothing: write the table from --results, listing networks not measured yet")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = cnnzoo.list_models()
    if args.only:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in args.only)]
        if not names:
            raise SystemExit(f"no registered network matches {args.only}; `cnnzoo list` shows them")
    done: dict[str, dict] = {}
    if args.results and args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            if row["seed"] == args.seed and not row.get("failed"):
                done[row["network"]] = row
    info = machine()
    print(f"{len(names)} networks; {info['cpu']}; torch {info['torch']}, {info['threads']} threads; "
          f"commit {info['commit']}", flush=True)
    rows = []
    if args.table_only and not args.results:
        raise SystemExit("--table-only needs --results FILE (the rows of an earlier sweep)")
    for name in names:
        if name in done:  # the card's reason as it reads now (it may have been written after the row)
            reasons = (d for d in cnnzoo.get_card(name).deviations if d.startswith(SHORT_BUDGET))
            rows.append({**done[name], "reason": next(reasons, "")})
            continue
        if args.table_only:
            rows.append({"network": name, "family": cnnzoo.get_card(name).family, "pending": True})
            continue
        try:
            b = budget(name, args.cap)
            row = train_one(name, b, args.seed)
        except TrainingInterrupted:  # Ctrl-C or a kill: stop the sweep (finished rows are kept in --results)
            raise SystemExit(f"interrupted during {name}; rerun the same command to continue") from None
        except Exception as e:  # noqa: BLE001  (one broken network must not stop a sweep of hours)
            print(f"{name:28s} FAILED: {type(e).__name__}: {e}", flush=True)
            rows.append({"network": name, "family": cnnzoo.get_card(name).family, "seed": args.seed, "size": 0,
                         "steps": 0, "seconds": 0.0, "test_acc": 0.0, "train_loss": float("nan"), "gmacs": 0.0,
                         "budget_note": f"FAILED: {type(e).__name__}: {e}"[:200], "recipe": {}, "reason": "",
                         "failed": True})
            continue
        row["commit"], row["threads"] = info["commit"], info["threads"]
        rows.append(row)
        flag = "" if row["test_acc"] >= LEARNED else "  <- under {:.0%}: {}".format(LEARNED, row["reason"] or "?")
        print(f"{name:28s} {row['size']:3d} px {row['steps']:3d} steps {row['seconds']:7.1f} s  "
              f"test {100 * row['test_acc']:5.1f}%  {b.note}{flag}", flush=True)
        if args.results:
            with args.results.open("a") as f:
                f.write(json.dumps(row) + "\n")
    text = markdown(rows, info, args.cap)
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
