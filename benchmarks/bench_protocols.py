"""The test-time protocols on the demo's network: docs/evaluation.md's table (issue 24).

Trains `cnnzoo train lenet5` (the demo: mnist5k, its default 60-epoch recipe, CPU) for each seed, or reuses a run
directory that already finished, then evaluates every protocol with and without reflections through the CLI
(`cnnzoo eval RUN --protocol ... [--flip] --format json`, the run's own fp32 path), and prints one row per protocol:
seed 0 and the mean [min, max] over the seeds, both ways. Thread count: OMP_NUM_THREADS as set (the doc's figures
use 1).

    OMP_NUM_THREADS=1 python benchmarks/bench_protocols.py --runs /tmp/protocol-runs            # seeds 0-4
    OMP_NUM_THREADS=1 python benchmarks/bench_protocols.py --runs DIR --seeds 0,1 --epochs 20   # a shorter budget
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

PROTOCOLS = ["center", "10crop", "50crop", "144crop", "dense", "multiscale", "10crop+multiscale",
             "50crop+multiscale", "dense+50crop+multiscale"]


def _cli(argv: list[str]) -> str:
    """Run the CLI in this process; its stdout."""
    import io

    from cnnzoo.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"cnnzoo {' '.join(argv)} exited {code}")
    return out.getvalue()


def train(run: Path, seed: int, epochs: int | None) -> float:
    """Train the demo's network with ``seed`` into ``run`` unless it already finished; the wall seconds taken."""
    if (run / "eval.json").is_file():
        return 0.0
    argv = ["train", "lenet5", "--data", "mnist5k", "--device", "cpu", "--seed", str(seed), "--run-dir", str(run),
            "--no-download", "--quiet"]
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        _cli(argv)
    return time.perf_counter() - t0


def evaluate(run: Path, flip: bool) -> dict:
    out = _cli(["eval", str(run), "--protocol", ",".join(PROTOCOLS), "--flip" if flip else "--no-flip",
                "--format", "json"])
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="directory for the run directories (kept, reused when finished)")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--epochs", type=int, help="default: the recipe's 60")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.runs)
    root.mkdir(parents=True, exist_ok=True)
    table: dict[tuple[str, bool], list[float]] = {}
    header = None
    for seed in seeds:
        run = root / f"lenet5-seed{seed}"
        took = train(run, seed, args.epochs)
        reported = json.loads((run / "eval.json").read_text())["top1"]
        epochs = sum(1 for _ in (run / "metrics.jsonl").read_text().splitlines())
        print(f"seed {seed}: {epochs} epochs, eval.json top-1 {100 * reported:.1f}%"
              + (f", trained in {took:.0f} s" if took else " (reused)"), flush=True)
        for flip in (True, False):
            res = evaluate(run, flip)
            header = header or res
            for name, r in res["protocols"].items():
                table.setdefault((name, flip), []).append(100 * r["top1"])
    print(f"\nOMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}; seeds {seeds}; test scale Q="
          f"{header['base_scale']}, border {header['border']}, multiscale {header['multiscale']}; "
          f"inference {header['precision']}")
    print("| protocol | `--flip`, seed 0 | seeds mean [min, max] | default (no reflections: as trained), seed 0 | "
          "seeds mean [min, max] |")
    print("|---|---|---|---|---|")
    for name in PROTOCOLS:
        cells = []
        for flip in (True, False):
            v = table[(name, flip)]
            cells += [f"{v[0]:.1f}", f"{sum(v) / len(v):.1f} [{min(v):.1f}, {max(v):.1f}]"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
