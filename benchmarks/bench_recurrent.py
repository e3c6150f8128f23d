"""Recurrent layers: the from-equations path against torch's fused kernels, images per second, side by side.

For each of rnn_mnist, lstm_mnist and gru_mnist (128 units, MNIST read row by row: 28 steps of 28 pixels), the same
network with the same weights runs with ``fused=False`` (cnnzoo.layers.recurrent's equations, one Python step per
time step) and ``fused=True`` (torch's kernels: oneDNN on the CPU, cuDNN on a GPU), in one process, one after the
other, interleaved over ``--repeats`` rounds; the table gives the median images per second of each, for inference
(eval mode, no gradient) and for a training step (forward, backward, Adam step), and the speed-up of the fused path.
The two paths' logits are checked to agree first (they are the same function).

    python benchmarks/bench_recurrent.py [--batch 128] [--threads 1] [--repeats 5] [--device cpu|cuda]
        [--models rnn_mnist,lstm_mnist,gru_mnist] [--layers 1] [--bidirectional] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import cnnzoo


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(model, x, y, train: bool, iters: int) -> float:
    """Images per second over ``iters`` steps after one warm-up step (the caller takes the median of rounds)."""
    device = x.device
    if train:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    step()  # warm-up (allocations, kernel selection)
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return iters * x.shape[0] / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=5, help="steps per timing")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="rnn_mnist,lstm_mnist,gru_mnist")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        opts = {"num_layers": args.layers, "bidirectional": args.bidirectional}
        eq = cnnzoo.create_model(name, fused=False, **opts).to(device)
        fu = cnnzoo.create_model(name, fused=True, **opts).to(device)
        fu.load_state_dict(eq.state_dict())
        with torch.no_grad():
            a, b = eq.eval()(x), fu.eval()(x)
        err = (a - b).abs().max().item()
        if err > 1e-3:
            raise SystemExit(f"{name}: the two paths disagree by {err:g}; fix that before timing them")
        for mode in ("inference", "train step"):
            times = {"equations": [], "fused": []}
            for _ in range(args.repeats):  # interleaved: both paths see the same machine load
                for label, model in (("equations", eq), ("fused", fu)):
                    times[label].append(images_per_s(model, x, y, mode == "train step", args.iters))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"model": name, "mode": mode, "equations_img_s": round(med["equations"], 1),
                         "fused_img_s": round(med["fused"], 1), "speedup": round(med["fused"] / med["equations"], 2),
                         "max_abs_logit_diff": err})
    where = f"{device}" + (f", {args.threads} thread(s)" if device.type == "cpu" else "")
    print(f"batch {args.batch}, {args.layers} layer(s){', bidirectional' if args.bidirectional else ''}, {where}, "
          f"torch {torch.__version__}; median of {args.repeats} rounds of {args.iters} steps\n")
    print("| network | mode | equations (img/s) | fused (img/s) | fused speed-up |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['mode']} | {r['equations_img_s']:,.0f} | {r['fused_img_s']:,.0f} | "
              f"{r['speedup']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "threads": args.threads, "batch": args.batch, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
