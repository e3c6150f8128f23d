"""Inference speed of every registered segmentation network at one input size, next to its MACs and parameters.

Each network runs in eval mode, fp32, batch 1 (`cnnzoo.bench.benchmark`, forward only under inference mode), all
at the same size, built with its default options except ``in_channels`` set to the input's channels (U-Net's paper
default is 1). The baseline, measured in the same rounds and interleaved with it (as bench_inference.py interleaves
its configurations, so a load change hits both alike): the classification network its encoder comes from
(``vgg16`` for ``fcn8s_vgg16``, ``resnet101`` for ``deeplabv3_resnet101``, ...), plain forward at the same size,
head included. ``seg/backbone`` = the segmenter's time over the backbone's: what the decoder, the dilation (the
ResNet segmenters run their last stages at output stride 8 or 16: four to sixteen times the backbone's positions)
and the upsampling cost on top. U-Net has no classification backbone ("-").

    python benchmarks/bench_segmentation.py                      # 3x256x256, 1 thread, 2 rounds of 2
    python benchmarks/bench_segmentation.py --size 3x512x512 --threads 2
    python benchmarks/bench_segmentation.py --digits            # each network's digits recipe options, 1x64x64
    python benchmarks/bench_segmentation.py --models 'unet*' 'fcn*'

Images/s = images over the timed seconds of all rounds. MACs: `cnnzoo.analysis.summarize` (FlopCounterMode's
formulas on the meta device: convolutions, transposed convolutions, matrix products) at the measured size.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections import defaultdict

import torch

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.bench import benchmark, start_script
from cnnzoo.segmentation import create_segmenter, get_digits_recipe, list_segmenters


def backbone_of(name: str) -> str | None:
    """The classification network whose layers a segmenter's encoder is: the longest registered classifier name
    among the runs of its name's parts after the first (``deeplabv3_resnet101_paper`` -> ``resnet101``,
    ``deeplabv3_mobilenet_v3_large`` -> ``mobilenet_v3_large``); None for U-Net's own encoder."""
    classifiers = set(cnnzoo.list_models())
    parts = name.split("_")
    runs = ["_".join(parts[i:j]) for i in range(1, len(parts)) for j in range(i + 1, len(parts) + 1)]
    found = [r for r in runs if r in classifiers]
    return max(found, key=len) if found else None


def fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def parse_size(text: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in text.lower().split("x"))
    return c, h, w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["*"], help="name patterns (default: every segmentation network)")
    p.add_argument("--size", type=parse_size, default=(3, 256, 256), help="CxHxW (default 3x256x256)")
    p.add_argument("--digits", action="store_true", help="each network's digits-segmentation recipe options "
                                                          "(in_channels 1, 11 classes), at 1x64x64")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iters", type=int, default=2, help="timed batches per configuration per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-baseline", action="store_true", help="skip the classification backbones")
    args = p.parse_args()
    start_script(args.threads, "cpu")
    names = [n for n in list_segmenters() if any(fnmatch.fnmatchcase(n, pat) for pat in args.models)]
    size = (1, 64, 64) if args.digits else args.size
    c = size[0]
    print(f"input 1x{'x'.join(map(str, size))} (batch 1), fp32, eval, CPU, {torch.get_num_threads()} thread(s); "
          f"{args.rounds} rounds x {args.iters} timed forwards after {args.warmup} warm-up, interleaved with the "
          f"backbone's; options: {'the digits recipe' if args.digits else f'defaults, in_channels={c}'}\n")
    head = (f"{'network':30s} {'params':>8s} {'MACs':>8s} {'img/s':>8s} {'backbone':>20s} {'bb MACs':>8s} "
            f"{'bb img/s':>9s} {'seg/backbone':>12s}")
    print(head)
    print("-" * len(head))
    for name in names:
        options = {**get_digits_recipe(name)["options"], "in_channels": 1, "num_classes": 11} if args.digits else \
            {"in_channels": c}
        net = create_segmenter(name, **options).eval()
        if size[1] < net.min_input_size or size[2] < net.min_input_size:
            print(f"{name:30s} needs at least {net.min_input_size}x{net.min_input_size}: skipped", flush=True)
            continue
        with torch.device("meta"):
            meta = create_segmenter(name, **options)
        s = summarize(meta, size)
        configs = {"seg": net}
        bb_name = None if args.no_baseline or args.digits else backbone_of(name)
        bb_macs = None
        if bb_name is not None:
            bb = cnnzoo.create_model(bb_name, in_channels=c).eval()
            bb_macs = summarize(bb, size).macs
            configs["backbone"] = bb
        seconds, images = defaultdict(float), defaultdict(int)
        for _ in range(args.rounds):
            for label, model in configs.items():
                r = benchmark(model, mode="infer", batch=1, input_size=size, iters=args.iters, warmup=args.warmup,
                              name=name, threads=args.threads)
                seconds[label] += r.total_time_s
                images[label] += r.iters
        ips = {k: images[k] / seconds[k] for k in seconds}
        line = f"{name:30s} {fmt(s.total_params):>8s} {fmt(s.macs):>8s} {ips['seg']:8.2f}"
        if "backbone" in ips:
            line += (f" {bb_name:>20s} {fmt(bb_macs):>8s} {ips['backbone']:9.2f} "
                     f"{ips['backbone'] / ips['seg']:11.2f}x")
        else:
            line += f" {'-':>20s}"
        print(line, flush=True)
        del net, configs


if __name__ == "__main__":
    main()
