"""What bf16 inference costs in accuracy: top-1 agreement of bf16 autocast with fp32 on the mnist5k test set.

For each seed, lenet5 (3 epochs) and resnet20_cifar (1 epoch: a ResNet still far from converged, whose many
borderline predictions make it the harder case) are trained with the mnist5k recipe, then the 1,000 test digits
are classified in fp32 and under bf16 autocast; the share of unchanged predictions is printed with both
accuracies. tests/test_fastpath.py asserts >= 99.5% at seed 0; this script measures the spread.

    python benchmarks/bench_bf16_agreement.py --seeds 0-4 --threads 1 2

On a CPU without native BF16 the bf16 path is emulated (slow, same numerics): the figures hold for either kind.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from cnnzoo.bench import machine_kind
from cnnzoo.compare import parse_seeds
from cnnzoo.data import make_loader
from cnnzoo.data.record import reload_dataset
from cnnzoo.evaluate.fastpath import inference_path
from cnnzoo.train import Trainer, apply_overrides, default_config
from cnnzoo.train.checkpoint import load_trained

NETWORKS = {"lenet5": 3, "resnet20_cifar": 1}  # name: epochs


def predictions(model, loader, path) -> torch.Tensor:
    path.prepare(model)
    out = []
    with torch.no_grad():
        for images, _ in loader:
            with path.autocast():
                out.append(model(path.inputs(images)).float().argmax(1))
    return torch.cat(out)


def measure(name: str, epochs: int, seed: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        cfg = apply_overrides(default_config(name, "mnist5k"), [
            f"train.epochs={epochs}", "data.num_workers=0", f"train.seed={seed}", "train.device=cpu",
            f"train.run_dir={run}"])
        Trainer(cfg, verbose=False).fit()
        model, meta = load_trained(run)
        bundle = reload_dataset(meta["data"], split_file=run / "split.json")
    loader = make_loader(bundle, "test", batch_size=250, train=False, device=torch.device("cpu"), num_workers=0)
    labels = torch.cat([y for _, y in loader])
    fp32 = predictions(model, loader, inference_path(model, "cpu", "fp32"))
    bf16 = predictions(model, loader, inference_path(model, "cpu", "bf16"))
    return ((fp32 == bf16).double().mean().item(), (fp32 == labels).double().mean().item(),
            (bf16 == labels).double().mean().item())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    print(machine_kind())
    print(f"{'network':16s} {'seed':>4s} {'threads':>7s} {'fp32 top-1':>10s} {'bf16 top-1':>10s} {'agreement':>9s}")
    for name, epochs in NETWORKS.items():
        agreements = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            for seed in parse_seeds(args.seeds):
                agree, acc32, acc16 = measure(name, epochs, seed)
                agreements.append(agree)
                print(f"{name:16s} {seed:4d} {threads:7d} {100 * acc32:9.1f}% {100 * acc16:9.1f}% {100 * agree:8.2f}%",
                      flush=True)
        print(f"{name}: agreement min {100 * min(agreements):.2f}%, mean {100 * statistics.mean(agreements):.2f}% "
              f"over {len(agreements)} runs")


if __name__ == "__main__":
    main()
