"""Time to 97.4% test accuracy on mnist5k: `cnnzoo train lenet5` (its default recipe) vs a plain PyTorch loop.

The main job of cnnzoo today. Both in one process, one after the other, on the built-in mnist5k split (4,000 train
/ 1,000 test):

- cnnzoo: ``cnnzoo train lenet5 --data mnist5k`` with its defaults (src/cnnzoo/train/recipes/mnist5k.yaml and
  lenet5's card hint: a one-cycle schedule from lr/2 peaking after 5% of the run); epoch times from its
  metrics.jsonl (training only, the test evaluation excluded). The plain loop stops at the target; a seed on which
  it never gets there gives a lower bound (its whole time over cnnzoo's).
- plain: the 20-line loop a user would write: LeNet-5 built by hand with nn.Sequential (the same layers as
  cnnzoo's lenet5: 5x5 convolutions with ReLU and 2x2 max-pools, 120-84-10 fully connected; the zero padding of
  28x28 digits to LeCun's 32x32 done by the first convolution's padding=2), Adam lr 1e-3, batch 64, shuffled
  TensorDataset + DataLoader, no augmentation, inputs normalised by the train split's mean and std.

Timed: training time per epoch, summed until the first epoch whose test accuracy reaches 97.4%. Issue 13's target:
cnnzoo >= 2x sooner than the plain loop.

    python benchmarks/bench_time_to_accuracy.py --seeds 0-4         # cnnzoo: the recipe's epochs; plain: up to 30
    python benchmarks/bench_time_to_accuracy.py --epochs 2 --plain-epochs 2 --threads 1     # a quick check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnzoo.bench import start_script, time_to_accuracy
from cnnzoo.cli.main import main as cnnzoo_main
from cnnzoo.compare import parse_seeds
from cnnzoo.data import load_dataset
from cnnzoo.train.config import default_config

TARGET = 0.974


def time_to_target(epoch_times: list[float], accs: list[float]) -> tuple[float | None, int | None]:
    return time_to_accuracy(epoch_times, accs, TARGET)


def run_cnnzoo(epochs: int | None, device: str, seed: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        argv = ["train", "lenet5", "--data", "mnist5k", "--run-dir", str(run), "--no-download", "--quiet",
                "--device", device, "--seed", str(seed)]
        if epochs:
            argv += ["--epochs", str(epochs)]
        code = cnnzoo_main(argv)
        if code:
            raise SystemExit(f"cnnzoo train failed with status {code}")
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch_time_s"] for r in rows], [r["test_acc"] for r in rows]


def run_plain(max_epochs: int, device: str, seed: int) -> tuple[list[float], list[float]]:
    torch.manual_seed(seed)
    data = load_dataset("mnist5k")  # the same split cnnzoo trains on
    mean, std = data.mean[0], data.std[0]

    def prep(split):
        return TensorDataset(((split.images.float() / 255 - mean) / std).to(device), split.labels.to(device))

    train = DataLoader(prep(data.train), batch_size=64, shuffle=True)
    test = DataLoader(prep(data.test), batch_size=500)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times, accs = [], []
    for _ in range(max_epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
        accs.append(correct / len(test.dataset))
        if accs[-1] >= TARGET:
            break
    return times, accs


def describe(times: list[float], accs: list[float]) -> str:
    t, ep = time_to_target(times, accs)
    when = f"{t:7.2f} s (epoch {ep:2d})" if t is not None else f"not in {len(accs)} epochs ({sum(times):.1f} s)"
    best = max(range(len(accs)), key=accs.__getitem__)
    return (f"{when}; final {accs[-1]:.2%}, best {accs[best]:.2%} (epoch {best + 1}); "
            f"mean epoch {sum(times) / len(times):.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=None, help="cnnzoo's epochs (default: the recipe's)")
    p.add_argument("--plain-epochs", type=int, default=30, help="the plain loop stops at the target or after these")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-4 (default 0): each seed runs both, in turn")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    start_script(args.threads, args.device)
    epochs = args.epochs or default_config("lenet5", "mnist5k").train.epochs
    print(f"time to {TARGET:.1%} test accuracy, lenet5 on mnist5k, {torch.get_num_threads()} threads (training time "
          f"summed over epochs); cnnzoo: `cnnzoo train lenet5` (default recipe, {epochs} epochs); plain: Adam 1e-3, "
          f"batch 64, up to {args.plain_epochs} epochs")
    ratios, bounds = [], []
    for seed in parse_seeds(args.seeds):
        zoo = run_cnnzoo(args.epochs, args.device, seed)
        plain = run_plain(args.plain_epochs, args.device, seed)
        print(f"seed {seed}  cnnzoo {describe(*zoo)}")
        print(f"        plain  {describe(*plain)}")
        tz, tp = time_to_target(*zoo)[0], time_to_target(*plain)[0]
        if tz is None:
            print("        ratio: cnnzoo did not reach the target")
        elif tp is not None:
            ratios.append(tp / tz)
            print(f"        ratio plain / cnnzoo: {tp / tz:.2f}x (target >= 2x)")
        else:  # the plain loop never got there: its whole time is a lower bound on its time to the target
            bounds.append(sum(plain[0]) / tz)
            print(f"        ratio plain / cnnzoo: > {sum(plain[0]) / tz:.2f}x (the plain loop never reached it)")
        sys.stdout.flush()
    if ratios or bounds:
        print(f"summary: ratios {', '.join(f'{r:.2f}x' for r in ratios) or '-'}; lower bounds (plain never reached "
              f"{TARGET:.1%}) {', '.join(f'> {b:.2f}x' for b in bounds) or '-'}; smallest {min(ratios + bounds):.2f}x")


if __name__ == "__main__":
    main()
