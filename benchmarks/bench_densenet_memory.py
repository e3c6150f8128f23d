"""Peak training memory of DenseNet-121 with and without ``memory_efficient=True``, side by side.

Method. One training step (forward, loss, backward) of ``densenet121`` at the given batch size and
resolution, once per configuration, each in a fresh Python subprocess so that neither run sees
memory the other left behind (allocator caches, freed-but-kept pages).

- On CUDA: ``torch.cuda.max_memory_allocated()`` after the step, minus the bytes allocated before it
  (the weights and the input): the peak of live tensor memory the step itself needed.
- On CPU: the process's peak resident set size (``resource.getrusage(...).ru_maxrss``, KiB on Linux)
  read after the step, minus the resident size just before it (after the model, the input and a
  warm-up no-grad forward at batch 1 have been made, so library code and kernels are already paged in).
  RSS is what the operating system had to provide, which is what runs out on a CPU box; it includes
  allocator slack, so it is an upper bound on live tensor bytes, but both runs carry the same slack.

The memory-efficient variant does not store each dense layer's concatenated input and bottleneck
output; it recomputes them in backward (torch.utils.checkpoint), so its peak should be far lower
for a little more compute; the step time is printed too.

    .venv/bin/python benchmarks/bench_densenet_memory.py --batch-size 8 --size 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(memory_efficient: bool, batch_size: int, size: int, device: str) -> dict:
    """One forward+backward step in this process; returns the peak memory it needed, in MiB."""
    import resource

    import torch

    import cnnzoo

    torch.manual_seed(0)
    model = cnnzoo.create_model("densenet121", memory_efficient=memory_efficient).to(device).train()
    x = torch.randn(batch_size, 3, size, size, device=device)
    target = torch.randint(0, 1000, (batch_size,), device=device)
    with torch.no_grad():  # warm-up: page in kernels and code before the baseline is taken
        model.eval()(x[:1])
    model.train()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib() * 1024
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"memory_efficient": memory_efficient, "peak_mib": (peak - base) / 2**20, "seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--child", choices=("0", "1"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_size < 1 or args.size < 29:
        parser.error("--batch-size must be >= 1 and --size >= 29 (DenseNet-121's smallest input)")
    if args.child is not None:
        print(json.dumps(measure(args.child == "1", args.batch_size, args.size, args.device)))
        return
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rows = []
    for flag in ("0", "1"):
        cmd = [sys.executable, __file__, "--child", flag, "--batch-size", str(args.batch_size),
               "--size", str(args.size), "--device", device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    what = "max_memory_allocated" if device == "cuda" else "peak RSS increase"
    print(f"densenet121, batch {args.batch_size}, {args.size}x{args.size}, {device}, one forward+backward ({what})")
    print(f"{'memory_efficient':>17} {'peak MiB':>10} {'step s':>8}")
    for r in rows:
        print(f"{r['memory_efficient']!s:>17} {r['peak_mib']:>10.0f} {r['seconds']:>8.1f}")
    print(f"saving: {1 - rows[1]['peak_mib'] / rows[0]['peak_mib']:.0%} of the default's peak")


if __name__ == "__main__":
    main()
