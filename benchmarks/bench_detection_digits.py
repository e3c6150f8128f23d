"""Every detector on digits-detection, R-CNN included, side by side: each trained with its digits recipe, seeds 0-2.

Every registered one-stage detector (``cnnzoo.detection.registry.list_detectors()``, so a detector registered later
joins by itself) is trained exactly as ``cnnzoo detect train NAME --seed S --threads T`` trains it: the detector's
``digits_recipe`` (its card: options such as a narrower width or a smaller backbone, optimizer, learning rate, epochs,
batch size, input size, digits-detection parameters) through ``default_det_config(NAME, seed=S)`` and
``DetTrainer(...).fit()``; the last checkpoint is scored on the test split (150 canvases of 128x128, 2-4 digits
each) with Pascal VOC AP at IoU 0.5, all-point (VOC2010+, the default) and 11-point (VOC2007) beside it, and COCO's
AP@[.5:.95] through pycocotools where the ``coco`` extra is installed (None otherwise). R-CNN is one more row, trained
as ``cnnzoo detect train rcnn --seed S`` trains it: ``train_rcnn(preset_config("digits-detection"))`` with
``seed`` = S (LeNet-5 pre-trained on mnist5k, selective search, per-class SVMs, box regression; the data seed stays
0 as for every row).

Besides the mAP (mean and range over the seeds) each row gives the parameters and multiply-accumulates of the network
as trained (1 image at the recipe's input size, 1 channel; MACs from ``torch.utils.flop_counter``, the forward pass to
the raw head outputs, no decoding or NMS), the training wall time of one run, and inference images/s: the trained
detector's ``detect`` at batch 8 on test images at the recipe's input (eval mode, no gradient, the mAP evaluation's
score / NMS settings, the same threads). For R-CNN the MACs are the backbone's per region (1x32x32 warped region;
an image costs that times its ~84 proposals) and images/s is its whole detector one image at a time, selective
search proposals included.

    python benchmarks/bench_detection_digits.py --threads 1 --results benchmarks/results/detection_digits.jsonl
    python benchmarks/bench_detection_digits.py --table-only --results ... --markdown docs/detection.md

``--results FILE.jsonl`` keeps one line per finished (network, seed) and skips those already there on a rerun (the
file is read again before each run), so an interrupted sweep continues where it stopped and two processes with
disjoint ``--only`` can share the work. ``--only rcnn`` selects R-CNN alone; ``--no-rcnn`` leaves it out.
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
RCNN = "rcnn"
INFER_BATCH = 8
#: --smoke: a tiny budget that only checks this script end to end (rows marked "smoke"; never a real figure)
SMOKE_DATA = {"num_train": 16, "num_test": 8}


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True,
                               check=False).stdout.strip()
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _macs(net: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    return fc.get_total_flops() // 2


def _rate(fn, items_per_call: int, min_seconds: float = 2.0, min_calls: int = 2) -> float:
    """Items per second of ``fn()`` after one warm-up call, over at least ``min_seconds`` and ``min_calls`` calls."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds or n < min_calls:
        fn()
        n += 1
    return items_per_call * n / (time.perf_counter() - t0)


def measure(name: str, seed: int, threads: int, smoke: bool = False) -> dict:
    """Train the one-stage detector ``name`` with its recipe at ``seed`` in a temporary run directory (as `cnnzoo
    detect train NAME --seed S --threads T`); its scores and costs."""
    from cnnzoo.detection.registry import get_detector_card
    from cnnzoo.detection.train import DetTrainer, default_det_config, normalise

    torch.set_num_threads(threads)
    extra = {"limit_batches": 2, "epochs": 1, "data_params": dict(SMOKE_DATA)} if smoke else {}
    cfg = default_det_config(name, seed=seed, **extra)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer = DetTrainer(cfg, run_dir=Path(tmp) / "run", threads=threads,
                             command=["bench_detection_digits", name], verbose=False)
        result = trainer.fit()
        seconds = time.perf_counter() - t0
    net, side = trainer.model.eval(), trainer.input_size
    coco = result.get("coco") or {}
    with torch.no_grad():
        macs = _macs(net, torch.zeros(1, trainer.in_channels, side, side))
        batch = trainer.test_images[:INFER_BATCH]
        if len(batch) < INFER_BATCH:  # a smoke test split: repeat its images
            batch = batch.repeat((INFER_BATCH + len(batch) - 1) // len(batch), 1, 1, 1)[:INFER_BATCH]
        x = normalise(batch, trainer.mean, trainer.std, "cpu")
        ips = _rate(lambda: net.detect(x, **trainer.detect_kwargs), INFER_BATCH, 0.2 if smoke else 2.0)
    return {"network": name, "family": get_detector_card(name).family, "seed": seed, "threads": threads,
            "mAP": result["mAP"], "mAP_11point": result["mAP_11point"], "coco_ap": coco.get("AP"),
            "coco_note": result.get("coco_note"), "num_test_images": result["num_images"],
            "train_seconds": seconds, "params": sum(p.numel() for p in net.parameters()), "macs": macs,
            "macs_input": [trainer.in_channels, side, side], "macs_note": "1 image, raw head outputs",
            "images_per_s": ips, "infer_note": f"detect() at batch {INFER_BATCH}, {trainer.detect_kwargs}",
            "recipe": cfg.to_dict(), "commit": _commit(), **({"smoke": True} if smoke else {})}


def measure_rcnn(seed: int, threads: int, smoke: bool = False) -> dict:
    """Train R-CNN as `cnnzoo detect train rcnn --seed S` does (the digits-detection preset) in a temporary run
    directory; its scores and costs (MACs per region, images/s with selective search)."""
    from cnnzoo.detection.coco import coco_ap
    from cnnzoo.detection.config import config_to_dict, preset_config, set_value
    from cnnzoo.detection.proposals import MissingExtraError
    from cnnzoo.detection.rcnn import evaluate_run, train_rcnn

    torch.set_num_threads(threads)
    cfg = preset_config("digits-detection")
    set_value(cfg, "seed", seed)
    if smoke:
        set_value(cfg, "finetune.iterations", 20)
        set_value(cfg, "backbone.pretrain_epochs", 1)
        cfg.data.params = {**cfg.data.params, **SMOKE_DATA}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        result = train_rcnn(cfg, run_dir, command=["bench_detection_digits", RCNN], verbose=False)
        seconds = time.perf_counter() - t0
        # the trained detector as `cnnzoo detect eval` loads it, and its test detections (cached proposals)
        _, detector, test, dets = evaluate_run(run_dir)
    try:
        coco, coco_note = coco_ap(dets, test, label_offset=0)["AP"], None
    except MissingExtraError as e:
        coco, coco_note = None, str(e)
    b = detector.backbone
    net = detector.model.eval()
    with torch.no_grad():
        macs = _macs(net, torch.zeros(1, b["in_channels"], b["input_size"], b["input_size"]))
        images = [test.image(i) for i in range(min(len(test), INFER_BATCH))]
        ips = _rate(lambda: [detector.detect(img) for img in images], len(images), 0.2 if smoke else 2.0)
    return {"network": RCNN, "family": "rcnn", "seed": seed, "threads": threads, "mAP": result["mAP"],
            "mAP_11point": result["mAP_11point"], "coco_ap": coco, "coco_note": coco_note,
            "num_test_images": len(test), "train_seconds": seconds,
            "params": sum(p.numel() for p in net.parameters()), "macs": macs,
            "macs_input": [b["in_channels"], b["input_size"], b["input_size"]],
            "macs_note": "the backbone per warped region",
            "proposals_per_image": result["proposal_recall"]["test"]["proposals_per_image"],
            "images_per_s": ips, "infer_note": "detect() one image at a time, selective search included",
            "recipe": config_to_dict(cfg), "commit": _commit(), **({"smoke": True} if smoke else {})}


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _short(v) -> str:
    if isinstance(v, list) and len(v) > 6:
        return f"[{len(v)} values]"
    return str(v)


def recipe_text(r: dict) -> str:
    c = r["recipe"]
    if r["network"] == RCNN:
        b, f, p = c["backbone"], c["finetune"], c["proposals"]
        return (f"{b['name']} at {b['input_size']}x{b['input_size']} pre-trained on {b['pretrain']} "
                f"({b['pretrain_epochs']} ep), fine-tuned {f['iterations']} it lr {f['lr']:g}; selective search "
                f"{p['mode']} at {p.get('scale', 1)}x ({r.get('proposals_per_image', 0):.0f}/image); "
                f"{c['test']['scorer']} scores, box regression {'on' if c['bbox']['enabled'] else 'off'}")
    opts = ", ".join(f"{k}={_short(v)}" for k, v in c["options"].items() if k != "input_size")
    data = ", ".join(f"{k}={v}" for k, v in c.get("data_params", {}).items())
    aug = [a for a, on in (("mosaic", c.get("mosaic")), ("hflip", c.get("hflip")),
                           (f"jitter {c.get('jitter')}", c.get("jitter"))) if on]
    return (f"{c['optimizer']} lr {c['lr']:g} {c.get('schedule', 'none')}, {c['epochs']} ep, batch {c['batch_size']}"
            + (f"; {opts}" if opts else "") + (f"; data {data}" if data else "")
            + (f"; {', '.join(aug)}" if aug else ""))


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
        f"- rows measured at commit(s): {', '.join(sorted({r['commit'] for r in rows})) or '-'}",
        f"- command: `{command}`",
        "",
        ("| network | family | seeds | mAP@0.5 %, all-point (mean, min-max) | 11-point % | COCO AP % | params | "
         "MACs (input) | train s (1 run) | infer img/s | recipe |"),
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    for name in sorted(by, key=lambda n: (n == RCNN, n)):  # R-CNN last
        rs = sorted(by[name], key=lambda r: r["seed"])
        maps = [r["mAP"] if r["mAP"] is not None else float("nan") for r in rs]
        m11 = [r["mAP_11point"] for r in rs if r["mAP_11point"] is not None]
        coco = [r["coco_ap"] for r in rs if r.get("coco_ap") is not None]
        r0 = rs[0]
        c, h, w = r0["macs_input"]
        per = " per region" if name == RCNN else ""
        smoke = " (smoke)" if any(r.get("smoke") for r in rs) else ""
        lines.append(
            f"| {name}{smoke} | {r0['family']} | {len(rs)} | {pct(statistics.mean(maps))} ({pct(min(maps))}-"
            f"{pct(max(maps))}) | {pct(statistics.mean(m11)) if m11 else '-'} | "
            f"{pct(statistics.mean(coco)) if coco else '-'} | {r0['params']:,} | {r0['macs'] / 1e6:,.1f} M{per} "
            f"({c}x{h}x{w}) | {statistics.mean(r['train_seconds'] for r in rs):.0f} | "
            f"{statistics.mean(r['images_per_s'] for r in rs):,.1f} | {recipe_text(r0)} |")
    missing = [n for n in names or [] if n not in by]
    short = [n for n in sorted(by) if len(by[n]) < len(seeds)]
    notes = [r.get("coco_note") for rs in by.values() for r in rs if r.get("coco_note")]
    if missing or short or notes:
        lines.append("")
    if missing:
        lines.append(f"Not measured yet: {', '.join(missing)}.")
    if short:
        lines.append(f"Fewer seeds than {','.join(map(str, seeds))} so far: {', '.join(short)}.")
    if notes:
        lines.append(f"COCO AP left out where pycocotools was missing: {notes[0]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", default=[], help="network name or pattern (repeatable); rcnn: R-CNN")
    p.add_argument("--no-rcnn", action="store_true", help="leave R-CNN out")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/detection_digits.jsonl"))
    p.add_argument("--markdown", type=Path, help="write the table between the markers of this file")
    p.add_argument("--table-only", action="store_true", help="only assemble the table from --results")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # a tiny budget: checks the script only
    args = p.parse_args(argv)
    from cnnzoo.detection.registry import list_detectors

    if args.smoke and args.results == p.get_default("results"):
        p.error("--smoke writes throw-away rows: give --results a temporary file, not the real results")
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n for n in [*list_detectors(), *([] if args.no_rcnn else [RCNN])]
             if not args.only or any(fnmatch.fnmatchcase(n, pat) for pat in args.only)]
    if not args.table_only:
        for name in names:
            for seed in seeds:
                if any((r["network"], r["seed"]) == (name, seed) for r in _rows(args.results)):
                    continue  # read again each time: another process on the same file may have done it
                row = measure_rcnn(seed, args.threads, args.smoke) if name == RCNN else \
                    measure(name, seed, args.threads, args.smoke)
                coco = "-" if row["coco_ap"] is None else f"{100 * row['coco_ap']:.1f}%"
                print(f"{name:24s} seed {seed}  mAP@0.5 {100 * (row['mAP'] or 0):.1f}% (11-point "
                      f"{100 * (row['mAP_11point'] or 0):.1f}%)  COCO AP {coco}  {row['train_seconds']:.0f} s",
                      flush=True)
                args.results.parent.mkdir(parents=True, exist_ok=True)
                with args.results.open("a") as f:  # one line per finished run: an interrupted sweep goes on
                    f.write(json.dumps(row) + "\n")
    rows = [r for r in _rows(args.results) if r["network"] in names]
    command = "python " + shlex.join(["benchmarks/bench_detection_digits.py", *(argv or sys.argv[1:])])
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
