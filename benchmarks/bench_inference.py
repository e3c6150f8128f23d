"""Inference speed: cnnzoo's fast path vs plain fp32 eager PyTorch, same network, same process, interleaved.

For each network and batch size, three configurations (two when torchvision is not installed) run in turn,
``--rounds`` times, each round ``--iters`` timed batches after ``--warmup`` untimed ones:

- plain: the cnnzoo network in fp32, contiguous memory format, eager, under ``torch.inference_mode`` (what a
  20-line PyTorch script does);
- cnnzoo fast path: the precision and memory format `cnnzoo.bench.fastest_inference_config` picks for this machine
  (bf16 autocast only on a CPU with native BF16; channels-last for convolutional networks);
- torchvision: torchvision's network of the same name in plain fp32 (when torchvision is installed).

Images/s is the total images over the total timed seconds of all rounds. The ratio printed is fast path / plain.
Issue 13's targets for ResNet-50 at batch 16: >= 2.5x on a CPU with native BF16, >= 1.35x on one without.

    python benchmarks/bench_inference.py                               # ResNet-50, MobileNet v2, VGG-16; batch 1, 16
    python benchmarks/bench_inference.py --models resnet50 --batches 16 --rounds 5
    python benchmarks/bench_inference.py --device cuda
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import cnnzoo
from cnnzoo.bench import benchmark, build_counterpart, fastest_inference_config, library_available, start_script

TARGETS = {True: 2.5, False: 1.35}  # ResNet-50 batch 16, fast path / plain; key: the CPU has native BF16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2", "vgg16"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--input", type=int, default=None, help="square input size (default: the card's)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=5, help="timed batches per configuration per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    start_script(args.threads, args.device)
    tv = library_available("torchvision")
    if not tv:
        print("torchvision is not installed: its networks are not measured")
    precision, _ = fastest_inference_config(args.device)
    print(f"fast path on this machine: {precision}, channels-last for conv nets "
          f"(plain: fp32, contiguous, eager); {args.rounds} rounds x {args.iters} batches, interleaved\n")
    header = f"{'network':14s} {'batch':>5s} {'input':>9s} {'plain img/s':>12s} {'fast img/s':>11s} {'ratio':>6s}"
    print(header + (f" {'torchvision img/s':>18s}" if tv else ""))
    for name in args.models:
        card = cnnzoo.get_card(name)
        model = cnnzoo.create_model(name)
        size = (model.in_channels, args.input or card.input_size[1], args.input or card.input_size[2])
        fast_precision, fast_cl = fastest_inference_config(args.device, model)
        configs = {"plain": (model, "fp32", False), "fast": (model, fast_precision, fast_cl)}
        if tv:
            theirs = build_counterpart(name, "torchvision")
            if theirs is not None:
                configs["torchvision"] = (theirs, "fp32", False)
        for batch in args.batches:
            seconds, images = defaultdict(float), defaultdict(int)
            for _ in range(args.rounds):
                for label, (net, prec, cl) in configs.items():  # interleaved: load changes hit all alike
                    r = benchmark(net, mode="infer", batch=batch, input_size=size, precision=prec, channels_last=cl,
                                  device=args.device, iters=args.iters, warmup=args.warmup, name=name)
                    seconds[label] += r.total_time_s
                    images[label] += r.iters * batch
            ips = {k: images[k] / seconds[k] for k in seconds}
            line = (f"{name:14s} {batch:5d} {'x'.join(map(str, size)):>9s} {ips['plain']:12.1f} {ips['fast']:11.1f} "
                    f"{ips['fast'] / ips['plain']:5.2f}x")
            if "torchvision" in ips:
                line += f" {ips['torchvision']:18.1f}"
            print(line, flush=True)
            if name == "resnet50" and batch == 16 and args.device == "cpu" and size[1:] == (224, 224):
                native = fast_precision == "bf16"
                target = TARGETS[native]
                verdict = "meets" if ips["fast"] / ips["plain"] >= target else "BELOW"
                print(f"  target for this machine kind ({'native' if native else 'no native'} BF16): >= {target}x; "
                      f"{verdict}")


if __name__ == "__main__":
    main()
