"""Training-step speed: cnnzoo vs a plain fp32 PyTorch loop, same network, same process, interleaved.

One training step is forward, cross-entropy, backward and an SGD update (lr 0.01, momentum 0.9) on a fixed batch
of random images (the data path is not timed). Per network, in turn, ``--rounds`` times:

- plain: a hand-written fp32 loop over the cnnzoo network, contiguous, eager;
- cnnzoo default: the precision (``train.amp``) and memory format (``model.channels_last``; unset means
  channels-last for conv nets) `cnnzoo train` uses by default for this network and dataset;
- cnnzoo fast: bf16 autocast where the CPU has native BF16 (bf16 on CUDA), channels-last for conv nets
  (`cnnzoo.bench.fastest_inference_config`'s choice, applied to training).

Images/s is the total images over the total timed seconds of all rounds; ratios are over plain.
Issue 13's target: >= 1.5x on ResNet-18. cnnzoo registers no ResNet-18 with a CIFAR stem, so "resnet18" here is
the ImageNet network (7x7/2 stem and max-pool) at 32x32 with 10 classes, batch 128.

    python benchmarks/bench_train.py                       # resnet18 (3x32x32, batch 128) and lenet5 (batch 64)
    python benchmarks/bench_train.py --rounds 5 --iters 10
    python benchmarks/bench_train.py --device cuda
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

import cnnzoo
from cnnzoo.bench import benchmark, fastest_inference_config, is_conv_net, start_script
from cnnzoo.train.config import default_config

# network, dataset whose default recipe it trains with, (C, H, W), batch
JOBS = [("resnet18", "cifar10", (3, 32, 32), 128), ("lenet5", "mnist5k", (1, 32, 32), 64)]
TARGET = {"resnet18": 1.5}


def plain_steps(model: torch.nn.Module, batch: int, size: tuple[int, int, int], iters: int, warmup: int,
                device: str) -> float:
    """Seconds of ``iters`` plain fp32 training steps (after ``warmup`` untimed ones)."""
    model = model.to(device, memory_format=torch.contiguous_format).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    total = 0.0
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            total += time.perf_counter() - t0
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=[j[0] for j in JOBS], choices=[j[0] for j in JOBS])
    p.add_argument("--batch", type=int, default=None, help="override the batch size of every network")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=5, help="timed steps per configuration per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    start_script(args.threads, args.device)
    print(f"{args.rounds} rounds x {args.iters} steps per configuration, interleaved; train step img/s\n")
    print(f"{'network':10s} {'batch':>5s} {'plain':>9s} {'default':>9s} {'fast':>9s} {'default/plain':>14s} "
          f"{'fast/plain':>11s}  configurations")
    for name, dataset, size, batch in JOBS:
        if name not in args.models:
            continue
        batch = args.batch or batch
        cfg = default_config(name, dataset)
        model = cnnzoo.create_model(name, num_classes=10)
        channels_last = cfg.model.channels_last if cfg.model.channels_last is not None else is_conv_net(model)
        default = ("fp32" if cfg.train.amp == "off" else cfg.train.amp, channels_last)
        fast = fastest_inference_config(args.device, model)
        seconds, images = defaultdict(float), defaultdict(int)
        for _ in range(args.rounds):
            seconds["plain"] += plain_steps(model, batch, size, args.iters, args.warmup, args.device)
            images["plain"] += batch * args.iters
            for label, (precision, cl) in (("default", default), ("fast", fast)):
                r = benchmark(model, mode="train", batch=batch, input_size=size, precision=precision,
                              channels_last=cl, device=args.device, iters=args.iters, warmup=args.warmup, name=name)
                seconds[label] += r.total_time_s
                images[label] += batch * r.iters
        ips = {k: images[k] / seconds[k] for k in seconds}
        what = (f"default {default[0]}{', channels-last' if default[1] else ''}; "
                f"fast {fast[0]}{', channels-last' if fast[1] else ''}")
        print(f"{name:10s} {batch:5d} {ips['plain']:9.1f} {ips['default']:9.1f} {ips['fast']:9.1f} "
              f"{ips['default'] / ips['plain']:13.2f}x {ips['fast'] / ips['plain']:10.2f}x  {what}", flush=True)
        if name in TARGET:
            print(f"  target: cnnzoo default >= {TARGET[name]}x plain")


if __name__ == "__main__":
    main()
