"""Grad-CAM's cost per 224x224 image on ResNet-50, next to a plain forward and a forward + backward, same run.

For each thread count and batch size, three configurations run in turn (interleaved, ``--repeats`` rounds after
``--warmup`` untimed ones); the table shows the median time of a round divided by the batch size:

- forward: ``model(x)`` under ``torch.inference_mode`` (eval mode);
- forward + backward: ``model(x)``, then the backward pass of the summed target logits to every parameter and the
  input (what a training step or a full input-gradient method such as guided backprop pays);
- Grad-CAM: `cnnzoo.explain.grad_cam` at the default layer (layer4): a forward that keeps the graph, then
  ``torch.autograd.grad`` of the target logits back to layer4's output only, and the weighted sum.

Random-init weights (the timing does not depend on them). The ratio columns are per-image time / forward's.

    python benchmarks/bench_explain.py                          # resnet50, batch 1 and 8, 1 and 2 threads
    OMP_NUM_THREADS=1 python benchmarks/bench_explain.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cnnzoo
from cnnzoo.bench import start_script
from cnnzoo.explain import grad_cam


def _forward(model, x, t):
    with torch.inference_mode():
        model(x)


def _forward_backward(model, x, t):
    x = x.detach().requires_grad_(True)
    logits = model(x)
    logits.gather(1, t[:, None]).sum().backward()
    model.zero_grad(set_to_none=True)


def _grad_cam(model, x, t):
    grad_cam(model, x, t)


CONFIGS = {"forward": _forward, "forward+backward": _forward_backward, "Grad-CAM": _grad_cam}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--size", type=int, default=224, help="square input size")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="intra-op thread counts to measure")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (the median is shown)")
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    if min(args.threads) < 1 or min(args.batches) < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--threads, --batches and --repeats must be positive, --warmup >= 0")
    start_script(args.threads[0], "cpu")
    torch.manual_seed(0)
    model = cnnzoo.create_model(args.model).eval()
    print(f"{args.model}, {args.size}x{args.size}, random init, fp32, CPU; median of {args.repeats} interleaved "
          f"rounds after {args.warmup} warm-up; ms per image\n")
    header = (f"{'threads':>7s} {'batch':>5s} " + " ".join(f"{name:>16s}" for name in CONFIGS)
              + f" {'fwd+bwd/fwd':>11s} {'Grad-CAM/fwd':>12s}")
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            x = torch.randn(batch, model.in_channels, args.size, args.size)
            t = torch.zeros(batch, dtype=torch.long)
            times: dict[str, list[float]] = {name: [] for name in CONFIGS}
            for i in range(args.warmup + args.repeats):
                for name, fn in CONFIGS.items():
                    start = time.perf_counter()
                    fn(model, x, t)
                    if i >= args.warmup:
                        times[name].append(time.perf_counter() - start)
            ms = {name: 1000 * statistics.median(v) / batch for name, v in times.items()}
            print(f"{threads:7d} {batch:5d} " + " ".join(f"{ms[name]:16.1f}" for name in CONFIGS)
                  + f" {ms['forward+backward'] / ms['forward']:11.2f} {ms['Grad-CAM'] / ms['forward']:12.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
