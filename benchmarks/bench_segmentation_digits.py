"""Does every segmentation network learn digits-segmentation? Each one trained with its digits recipe, seeds 0-2.

Every registered segmentation network (``cnnzoo.segmentation.list_segmenters()``, so a network registered later
joins by itself) is trained exactly as ``cnnzoo segment train NAME --seed S --threads T`` trains it: the network's
``digits_recipe`` (its card: options such as a smaller width, optimizer, learning rate, epochs, batch size) on the
built-in ``digits-segmentation`` (1,000 training canvases of 64x64, 11 classes, the 255 ignore band), then the last
checkpoint is scored on the 200 test canvases with the FCN paper's metrics (Sec. 5). Predicting background
everywhere scores a mean IU of 0.087 (background IU ~0.95, 0 for the ten digits, / 11).

Besides the seeds' mean IU (mean and range) and pixel accuracy, each row gives the parameters and MACs of the network
as trained (1x64x64 input, 11 classes; MACs from ``torch.utils.flop_counter``), the training wall time of one run,
and inference images/s at batch 16 (eval mode, no gradient, the same threads).

    python benchmarks/bench_segmentation_digits.py --threads 1 --results benchmarks/results/segmentation_digits.jsonl
    python benchmarks/bench_segmentation_digits.py --table-only --results ... --markdown docs/segmentation.md

``--results FILE.jsonl`` keeps one line per finished (network, seed) and skips those already there on a rerun, so an
interrupted sweep continues where it stopped (and two processes with disjoint ``--only`` can share the work).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

BEGIN, END = "<!-- table:begin -->", "<!-- table:end -->"


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True,
                               check=False).stdout.strip()
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(name: str, seed: int, threads: int) -> dict:
    """Train ``name`` with its recipe at ``seed`` in a temporary run directory; its scores and costs."""
    from torch.utils.flop_counter import FlopCounterMode

    from cnnzoo.segmentation import create_segmenter, get_digits_recipe
    from cnnzoo.segmentation.train import SegTrainer, default_seg_config

    torch.set_num_threads(threads)
    recipe = get_digits_recipe(name)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = SegTrainer(default_seg_config(name, seed=seed), run_dir=Path(tmp) / "run", threads=threads,
                            command=["bench_segmentation_digits", name], verbose=False).fit()
        seconds = time.perf_counter() - t0
    net = create_segmenter(name, **{**recipe["options"], "in_channels": 1, "num_classes": 11}).eval()
    side = int(recipe["data_params"].get("canvas", 64))  # a recipe may train on larger canvases
    x = torch.zeros(1, 1, side, side)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            net(x)
        batch = torch.randn(16, 1, side, side)
        net(batch)  # warm-up
        n, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < 2.0 or n < 2:
            net(batch)
            n += 1
        ips = 16 * n / (time.perf_counter() - t1)
    return {"network": name, "seed": seed, "threads": threads, "mean_iu": result["mean_iu"],
            "pixel_accuracy": result["pixel_accuracy"], "train_seconds": seconds, "epochs": recipe["epochs"],
            "options": recipe["options"], "optimizer": recipe["optimizer"], "lr": recipe["lr"],
            "schedule": recipe["schedule"], "data_params": recipe["data_params"],
            "batch_size": recipe["batch_size"], "params": sum(p.numel() for p in net.parameters()),
            "macs": fc.get_total_flops() // 2, "images_per_s": ips, "commit": _commit()}


def fingerprint(name: str, seed: int) -> str:
    """What decides a run's result, as a hash: the recipe, the auxiliary-loss weight, the network's module tree
    (``repr``) and forward, and its initial weights under ``seed`` (none of which depends on the thread count). Two
    registered networks the digits recipe makes equal (``deeplabv3_resnet101`` with ``backbone_layers=[1, 1, 1, 1]``
    is ``deeplabv3_resnet50``'s network) share it, and the sweep trains only the first of them."""
    import hashlib

    from cnnzoo.segmentation import create_segmenter, get_digits_recipe, get_segmenter_card

    recipe = get_digits_recipe(name)
    torch.manual_seed(seed)
    net = create_segmenter(name, **{**recipe["options"], "in_channels": 1, "num_classes": 11})
    tree = repr(net).split("(", 1)[1]  # the module tree without the registered class's own name
    h = hashlib.sha256(json.dumps([recipe, get_segmenter_card(name).aux_weight, tree,
                                   type(net).forward.__qualname__], sort_keys=True).encode())
    for key, value in net.state_dict().items():
        h.update(key.encode() + str(tuple(value.shape)).encode() + value.detach().float().numpy().tobytes())
    return h.hexdigest()


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict], seeds: list[int], command: str, names: list[str] | None = None) -> str:
    from cnnzoo.bench import cpu_model

    by: dict[str, list[dict]] = {}
    seen = set()
    for r in rows:
        if r["seed"] in seeds and (r["network"], r["seed"]) not in seen:  # the first row of a (network, seed)
            seen.add((r["network"], r["seed"]))
            by.setdefault(r["network"], []).append(r)
    threads = sorted({r["threads"] for r in rows}) or ["?"]
    lines = [
        (f"- machine: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__} "
         f"({', '.join(map(str, threads))} thread(s)); {datetime.now().isoformat(timespec='minutes')}"),
        f"- rows measured at commit(s): {', '.join(sorted({r['commit'] for r in rows}))}",
        f"- command: `{command}`",
        "",
        ("| network | seeds | mean IU (mean, min-max) | pixel acc. | params | MACs (1x64x64) | train s (1 run) | "
         "infer img/s | recipe |"),
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in sorted(by):
        rs = sorted(by[name], key=lambda r: r["seed"])
        ius = [r["mean_iu"] for r in rs]
        acc = statistics.mean(r["pixel_accuracy"] for r in rs)
        r0 = rs[0]
        opts = ", ".join(f"{k}={v}" for k, v in r0["options"].items())
        data = ", ".join(f"{k}={v}" for k, v in r0.get("data_params", {}).items())
        recipe = f"{r0['optimizer']} lr {r0['lr']:g} {r0.get('schedule', 'none')}, {r0['epochs']} ep, batch " \
            f"{r0['batch_size']}" + (f"; {opts}" if opts else "") + (f"; data {data}" if data else "")
        lines.append(f"| {name} | {len(rs)} | {statistics.mean(ius):.3f} ({min(ius):.3f}-{max(ius):.3f}) | "
                     f"{100 * acc:.1f}% | {r0['params']:,} | {r0['macs'] / 1e6:,.1f} M | "
                     f"{statistics.mean(r['train_seconds'] for r in rs):.0f} | "
                     f"{statistics.mean(r['images_per_s'] for r in rs):,.0f} | {recipe} |")
    twins = sorted({(n, r["same_as"]) for n, rs in by.items() for r in rs if r.get("same_as")})
    if twins:
        lines.append("")
        lines.append("Under the digits recipe these are the same network as another row (same recipe, initial weights "
                     "and outputs; trained once, the row repeated): " + ", ".join(f"{a} = {b}" for a, b in twins) + ".")
    missing = [n for n in names or [] if n not in by]
    short = [n for n in sorted(by) if len(by[n]) < len(seeds)]
    if missing or short:
        lines.append("")
    if missing:
        lines.append(f"Not measured yet: {', '.join(missing)}.")
    if short:
        lines.append(f"Fewer seeds than {','.join(map(str, seeds))} so far: {', '.join(short)}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", default=[], help="network name or pattern (repeatable)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/segmentation_digits.jsonl"))
    p.add_argument("--markdown", type=Path, help="write the table between the markers of this file")
    p.add_argument("--table-only", action="store_true", help="only assemble the table from --results")
    args = p.parse_args(argv)
    from cnnzoo.segmentation import list_segmenters

    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n for n in list_segmenters() if not args.only or any(fnmatch.fnmatchcase(n, pat) for pat in args.only)]
    if not args.table_only:
        for name in names:
            for seed in seeds:
                if any((r["network"], r["seed"]) == (name, seed) for r in _rows(args.results)):
                    continue  # read again each time: another process on the same file may have done it
                print_ = fingerprint(name, seed)
                twin = next((r for r in _rows(args.results) if r["seed"] == seed and r.get("fingerprint") == print_
                             and r["threads"] == args.threads), None)
                if twin is not None:  # the same network and recipe under another name: its run is this one's
                    row = {**twin, "network": name, "same_as": twin.get("same_as", twin["network"])}
                else:
                    row = {**measure(name, seed, args.threads), "fingerprint": print_}
                print(f"{name:28s} seed {seed}  mean IU {row['mean_iu']:.3f}  pixel acc "
                      f"{100 * row['pixel_accuracy']:.1f}%  {row['train_seconds']:.0f} s", flush=True)
                args.results.parent.mkdir(parents=True, exist_ok=True)
                with args.results.open("a") as f:  # one line per finished run: an interrupted sweep goes on
                    f.write(json.dumps(row) + "\n")
    rows = [r for r in _rows(args.results) if r["network"] in names]
    command = "python " + shlex.join(["benchmarks/bench_segmentation_digits.py", *(argv or sys.argv[1:])])
    text = table(rows, seeds, command, names)
    print(text)
    if args.markdown:
        from cnnzoo.fileio import atomic_write

        doc = args.markdown.read_text() if args.markdown.exists() else f"{BEGIN}\n{END}\n"
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{args.markdown} has no {BEGIN} ... {END} markers")
        head, rest = doc.split(BEGIN, 1)
        doc = head + BEGIN + "\n" + text + END + rest.split(END, 1)[1]
        atomic_write(args.markdown, doc.encode())
    print(f"({platform.python_version()})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
