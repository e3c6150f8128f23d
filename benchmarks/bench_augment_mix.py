"""The mixing family next to the plain recipe: lenet5 on mnist5k, the same seed and epochs for every row.

Each row is ``cnnzoo train lenet5 --seed SEED --epochs EPOCHS --set 'train.mix={name: METHOD}'`` (the mnist5k
recipe otherwise; the methods' default parameters), run as its own process with ``--threads`` intra-op threads,
``--jobs`` rows at a time. Prints a markdown table of the final test top-1 per method and seed (and the mean when
several seeds run), and the wall time of each run.

    python benchmarks/bench_augment_mix.py                        # the README table: seed 0, 30 epochs
    python benchmarks/bench_augment_mix.py --epochs 1 --seeds 0 1 2 3 4 --jobs 8 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = ("none", "mixup", "cutmix", "manifold_mixup", "patchup", "puzzlemix")

RUN = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from cnnzoo.train import Trainer, apply_overrides, default_config
method, seed, epochs, threads, run_dir, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
sets = [f"train.seed={seed}", f"train.epochs={epochs}", f"train.device={device}", f"train.run_dir={run_dir}"]
if method != "none":
    sets.append("train.mix={name: %s}" % method)
t = time.perf_counter()
result = Trainer(apply_overrides(default_config("lenet5", "mnist5k"), sets), verbose=False).fit()
print(json.dumps({"top1": result.test.top1, "seconds": time.perf_counter() - t}))
"""


def run_one(method: str, seed: int, epochs: int, threads: int, device: str, tmp: Path, log: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    run_dir = tmp / f"{method}-s{seed}-t{threads}"
    out = subprocess.run([sys.executable, "-c", RUN, method, str(seed), str(epochs), str(threads), str(run_dir),
                          device], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        result = {"method": method, "seed": seed, "threads": threads, "error": out.stderr.strip().splitlines()[-1]}
    else:
        result = {"method": method, "seed": seed, "threads": threads, **json.loads(out.stdout.strip().splitlines()[-1])}
    if log:  # one line per finished run, so an interrupted sweep keeps what it measured
        with open(log, "a") as f:
            f.write(json.dumps({**result, "epochs": epochs, "device": device}) + "\n")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", metavar="FILE", help="also append every run to this file as a JSON line")
    args = ap.parse_args()
    jobs = [(m, s, t) for t in args.threads for s in args.seeds for m in args.methods]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: run_one(*j[:2], args.epochs, j[2], args.device, Path(tmp), args.json), jobs))
    cols = [(s, t) for t in args.threads for s in args.seeds]
    head = [f"seed {s}" + (f", {t} thr" if len(args.threads) > 1 else "") for s, t in cols]
    print(f"lenet5 on mnist5k, {args.epochs} epoch(s), test top-1 (%), {args.device}")
    print("| method | " + " | ".join(head) + (" | mean | min" if len(cols) > 1 else "") + " | seconds |")
    print("| --- " * (len(cols) + (3 if len(cols) > 1 else 1) + 1) + "|")
    for m in args.methods:
        rows = {(r["seed"], r["threads"]): r for r in results if r["method"] == m}
        accs = [rows[c].get("top1") for c in cols]
        cells = [f"{100 * a:.2f}" if a is not None else "error" for a in accs]
        ok = [a for a in accs if a is not None]
        extra = [f"{100 * sum(ok) / len(ok):.2f}", f"{100 * min(ok):.2f}"] if len(cols) > 1 and ok else []
        secs = [rows[c].get("seconds", 0.0) for c in cols]
        print(f"| {m if m != 'none' else 'plain recipe'} | " + " | ".join(cells + extra) +
              f" | {sum(secs) / len(secs):.0f} |")
    for r in results:
        if "error" in r:
            print(f"{r['method']} seed {r['seed']}: {r['error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
