"""MACs are not speed: the efficient networks' multiply-accumulates next to their measured CPU inference speed.

Note 003 (and ShuffleNet v2's first guideline) makes the point that FLOPs are an indirect measure of speed: memory
access, the degree of parallelism and element-wise operations cost time that MACs do not count. This script puts
both side by side for the mobile networks at their card's input size: MACs per image (``cnnzoo.analysis``), measured
inference images/s at batch 1 and batch 16 (``cnnzoo.bench.benchmark``: eval mode, fp32, after a warm-up), and
"MMACs per ms", how many multiply-accumulates the network turns into each millisecond of this CPU. The networks are
measured in interleaved rounds so that a change in the machine's load touches all of them alike; the median over
rounds is printed.

    python benchmarks/bench_mobile_speed.py --threads 2
    python benchmarks/bench_mobile_speed.py --models mobilenet_v2 shufflenet_v2_x1_0 --rounds 5 --markdown
"""

from __future__ import annotations

import argparse
import statistics

import torch

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.bench import benchmark, start_script

MODELS = ["squeezenet1_1", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
          "shufflenet_v1_g3", "shufflenet_v2_x1_0", "efficientnet_b0", "ghostnet_100", "hardnet39_ds", "resnet18"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=5, help="timed batches per network per round")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args()
    start_script(args.threads, "cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} interleaved rounds x "
          f"{args.iters} batches; median images/s\n")
    macs = {}
    for name in args.models:
        c, h, w = cnnzoo.get_card(name).input_size
        with torch.device("meta"):
            macs[name] = summarize(cnnzoo.create_model(name), (c, h, w)).macs
    speed: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for batch in args.batches:
            for name in args.models:
                r = benchmark(name, mode="infer", batch=batch, iters=args.iters, warmup=1)
                speed.setdefault((name, batch), []).append(r.images_per_s)
    cols = [f"img/s b{b}" for b in args.batches]
    header = ["network", "input", "MMACs", *cols, f"MMACs/ms b{args.batches[-1]}"]
    rows = []
    for name in sorted(args.models, key=macs.get):
        ips = [statistics.median(speed[(name, b)]) for b in args.batches]
        size = "x".join(map(str, cnnzoo.get_card(name).input_size[1:]))
        rows.append([name, size, f"{macs[name] / 1e6:,.0f}", *(f"{v:,.1f}" for v in ips),
                     f"{macs[name] / 1e6 * ips[-1] / 1e3:,.1f}"])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for row in [header, *rows]:
            print("  ".join(str(x).rjust(wd) if i else str(x).ljust(wd) for i, (x, wd) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    main()
