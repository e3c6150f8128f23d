"""Time to 97.4% test accuracy: cnnzoo's trainer vs a plain PyTorch DataLoader loop, same process.

Both train cnnzoo's lenet5 on the built-in mnist5k split (4,000 train / 1,000 test) with the same
optimizer, schedule, loss and augmentation, read from the mnist5k default recipe
(src/cnnzoo/train/recipes/mnist5k.yaml: SGD Nesterov, one-cycle, label smoothing, random rotations, zooms
and shifts), and the same seed. What differs is the input pipeline: cnnzoo keeps the uint8 dataset in
memory on the device and augments whole batches with tensor ops; the baseline is the usual
Dataset.__getitem__ + DataLoader with per-sample augmentation.

Timed: training time only (the per-epoch test evaluation is excluded from both), summed over epochs
until the first epoch whose test accuracy reaches 97.4%. The demo's final accuracy across seeds and
thread counts is benchmarks/bench_demo_seeds.py's table.

    python benchmarks/bench_train_lenet.py [--epochs N]     # default: the recipe's epochs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import cnnzoo
from cnnzoo.bench import time_to_accuracy
from cnnzoo.cli.main import main as cnnzoo_main
from cnnzoo.data.augment import rotate_zoom
from cnnzoo.train.config import default_config

TARGET = 0.974
RECIPE = default_config("lenet5", "mnist5k")


def time_to_target(epoch_times: list[float], accs: list[float]) -> tuple[float | None, int | None]:
    return time_to_accuracy(epoch_times, accs, TARGET)


def run_cnnzoo(epochs: int) -> tuple[float | None, int | None]:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        cnnzoo_main(["train", "lenet5", "--data", "mnist5k", "--epochs", str(epochs), "--run-dir", str(run),
                     "--no-download", "--quiet", "--device", "cpu", "--seed", "0"])
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return time_to_target([r["epoch_time_s"] for r in rows], [r["test_acc"] for r in rows])


class Digits(Dataset):
    """mnist5k as a classic map-style dataset with the recipe's augmentation drawn per sample: a random rotation
    and zoom (``rotate`` degrees, ``zoom`` range), then a shift of up to ``translate`` pixels, zero fill."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: dict, mean: float, std: float):
        self.images, self.labels, self.augment, self.mean, self.std = images, labels, augment, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).float()[None]  # (1, 28, 28), 0-255, zero is the background
        rotate, (z_lo, z_hi) = self.augment.get("rotate", 0), self.augment.get("zoom", (1.0, 1.0))
        if rotate or (z_lo, z_hi) != (1.0, 1.0):
            params = torch.tensor([[np.random.uniform(-rotate, rotate), np.random.uniform(z_lo, z_hi)]])
            x = rotate_zoom(x[None], params)[0]
        s = self.augment.get("translate", 0)
        if s:
            dx, dy = np.random.randint(-s, s + 1, size=2)
            x = torch.roll(F.pad(x, (s, s, s, s)), shifts=(int(dy), int(dx)), dims=(1, 2))[:, s:-s, s:-s]
        return x.div(255).sub(self.mean).div(self.std), int(self.labels[i])


def run_plain(epochs: int) -> tuple[float | None, int | None]:
    torch.manual_seed(0)
    np.random.seed(0)
    data = np.load(Path(cnnzoo.data.__file__).parent / "mnist5k.npz")
    images, labels = data["images"], data["labels"].astype(np.int64)
    idx = np.arange(5000).reshape(10, 500)
    tr, te = idx[:, :400].ravel(), idx[:, 400:].ravel()
    mean, std = images[tr].mean() / 255, images[tr].std() / 255
    o, c = RECIPE.optim, RECIPE.schedule
    if o.name != "sgd" or c.name != "onecycle":
        raise SystemExit(f"the plain loop mirrors SGD + one-cycle; the recipe has {o.name} + {c.name}")
    augment = RECIPE.data.augment or {}
    unknown = sorted(set(augment) - {"translate", "rotate", "zoom"})
    if unknown:
        raise SystemExit(f"the plain loop mirrors translate/rotate/zoom; the recipe also has {unknown}")
    train = DataLoader(Digits(images[tr], labels[tr], augment, mean, std), batch_size=RECIPE.data.batch_size,
                       shuffle=True, drop_last=True)
    test = DataLoader(Digits(images[te], labels[te], {}, mean, std), batch_size=500)
    model = cnnzoo.create_model("lenet5")
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    # cnnzoo's one-cycle schedules the learning rate only (fixed momentum)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=epochs * len(train),
                                                pct_start=c.pct_start, div_factor=c.div_factor,
                                                final_div_factor=c.final_div_factor, cycle_momentum=False)
    times, accs = [], []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in train:
            loss = F.cross_entropy(model(x), y, label_smoothing=RECIPE.train.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        times.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
        accs.append(correct / len(te))
    return time_to_target(times, accs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=RECIPE.train.epochs)
    args = p.parse_args()
    results = {"cnnzoo (in-memory, batched on-device augmentation)": run_cnnzoo(args.epochs),
               "plain DataLoader (per-sample augmentation)": run_plain(args.epochs)}
    print(f"time to {TARGET:.1%} test accuracy, lenet5 on mnist5k, {torch.get_num_threads()} threads")
    for name, (t, ep) in results.items():
        print(f"  {name:55s} " + (f"{t:7.2f} s (epoch {ep})" if t is not None else "not reached"))
    (tz, _), (tp, _) = results.values()
    if tz and tp:
        print(f"  ratio plain / cnnzoo: {tp / tz:.2f}x")


if __name__ == "__main__":
    main()
