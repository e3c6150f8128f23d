"""The demo's accuracy across seeds and thread counts: `cnnzoo train lenet5` on mnist5k, default recipe.

The README promises that `cnnzoo demo` ends at >= 98.5% test accuracy (and tests/test_train_cli.py
asserts 98.0%, a margin below). Results change with the seed and, through the order of floating-point
reductions, with the number of intra-op threads. This script trains every seed in one process per
thread count (OMP_NUM_THREADS and torch.set_num_threads set before the first op, as a user's shell would)
and prints one row per run (final test accuracy, wall time of the whole `cnnzoo train` call, and the
training part of it), then min / mean / max per thread count, plus what the machine is. Wall times
depend on what else the machine runs; the accuracies do not.

    python benchmarks/bench_demo_seeds.py                       # seeds 0-4 x threads 1, 2
    python benchmarks/bench_demo_seeds.py --model nin_cifar --seeds 0 --threads 2
    python benchmarks/bench_demo_seeds.py --recipe candidate.yaml --set train.epochs=20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMISE = 98.5  # the README's figure for lenet5, in %
RESULT = "result:"  # prefix of the worker's result lines


def machine() -> str:
    import torch

    from cnnzoo.bench import cpu_model  # imports torch: only in the parent, after the workers' threads are set

    return (f"{cpu_model()}; {os.cpu_count()} logical CPUs; Python {platform.python_version()}; "
            f"torch {torch.__version__}; {platform.system()} {platform.release()}")


def worker(args: argparse.Namespace) -> None:
    """Train every seed with this process's thread count; print one JSON line per run."""
    import torch

    (threads,) = args.threads
    torch.set_num_threads(threads)
    from cnnzoo.cli.main import main as cnnzoo_main

    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as d:
            run = Path(d) / "run"
            argv = ["train", args.model, "--data", "mnist5k", "--seed", str(seed), "--device", "cpu",
                    "--run-dir", str(run), "--no-download", "--quiet"]
            if args.recipe:
                argv += ["--recipe", args.recipe]
            for kv in args.set or []:
                argv += ["--set", kv]
            t0, c0 = time.perf_counter(), time.process_time()
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the result lines
                code = cnnzoo_main(argv)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if code != 0:
                raise SystemExit(f"training {args.model} seed {seed} failed with exit code {code}")
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            final = json.loads((run / "eval.json").read_text())
        print(RESULT, json.dumps({"seed": seed, "threads": torch.get_num_threads(), "acc": 100 * final["top1"],
                          "wall_s": wall, "cpu_s": cpu, "train_s": sum(r["epoch_time_s"] for r in rows),
                          "train_acc": 100 * rows[-1]["train_acc"],
                          "curve": [round(100 * r["test_acc"], 1) for r in rows]}), flush=True)


def stats(values: list[float]) -> str:
    return f"{min(values):6.2f} {sum(values) / len(values):6.2f} {max(values):6.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lenet5")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--recipe", help="a candidate recipe (default: the mnist5k default recipe)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key")
    p.add_argument("--curves", action="store_true", help="also print each run's test accuracy per epoch")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    print(f"{args.model} on mnist5k, {'recipe ' + args.recipe if args.recipe else 'default recipe'}"
          + (f", --set {' '.join(args.set)}" if args.set else ""))
    print(f"machine: {machine()}")
    print(f"{'seed':>4} {'threads':>7} {'test acc %':>10} {'time s':>7} {'train s':>7} {'cpu s':>7}")
    results = []
    for threads in args.threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--threads", str(threads),
               "--seeds", *map(str, args.seeds)]
        if args.recipe:
            cmd += ["--recipe", args.recipe]
        for kv in args.set or []:
            cmd += ["--set", kv]
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                if not line.startswith(RESULT):
                    continue
                r = json.loads(line[len(RESULT):])
                results.append(r)
                print(f"{r['seed']:>4} {r['threads']:>7} {r['acc']:>10.2f} {r['wall_s']:>7.1f} {r['train_s']:>7.1f} "
                      f"{r['cpu_s']:>7.1f}", flush=True)
                if args.curves:
                    print(f"     last epoch's training accuracy {r['train_acc']:.2f}%; test accuracy per epoch:",
                          " ".join(f"{a:.1f}" for a in r["curve"]))
        if proc.returncode:
            raise SystemExit(f"worker with {threads} thread(s) failed (exit code {proc.returncode})")
    print(f"{'':>16} {'min':>6} {'mean':>6} {'max':>6}")
    for threads in args.threads:
        rs = [r for r in results if r["threads"] == threads]
        print(f"{threads} thread(s) acc {stats([r['acc'] for r in rs])}   time s {stats([r['wall_s'] for r in rs])}"
              f"   cpu s {stats([r['cpu_s'] for r in rs])}")
    accs = [r["acc"] for r in results]
    print(f"all {len(accs)} runs  acc {stats(accs)}   time s {stats([r['wall_s'] for r in results])}")
    if args.model == "lenet5":
        print(f"runs below the README's {PROMISE}%: {sum(a < PROMISE for a in accs)} of {len(accs)}")


if __name__ == "__main__":
    main()
