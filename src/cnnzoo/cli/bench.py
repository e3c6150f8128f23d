"""`cnnzoo bench`: images/s, latency and peak memory of networks on this machine (the work is cnnzoo.bench's)."""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import sys

from .. import bench
from ..registry import create_model, get_card
from .common import FloatArg, device_arg, parse_input_size, parse_options, resolve_input_size

EPILOG = """examples:
  cnnzoo bench resnet50                                 inference, batch 16, the default path, at 3x224x224
  cnnzoo bench resnet50 --precision fp32                the plain fp32 path (contiguous)
  cnnzoo bench resnet50 mobilenet_v2 --precision bf16 --channels-last --batch 1
  cnnzoo bench resnet18 --mode train --input 3x32x32 -o num_classes=10 --batch 128
  cnnzoo bench resnet50 --matrix --format json          every precision x memory format; fastest marked
  cnnzoo bench resnet50 --matrix --emulated --seconds 10   bf16 too on a CPU without native BF16 (emulated, slow)

Each configuration is measured for 3 s after its warm-up (--seconds S; at least one iteration; a slow warm-up is
cut short at S too) unless --iters N asks for a count. Progress, one line per configuration, goes to stderr.
  cnnzoo bench resnet50 --against torchvision           the same network from torchvision, when installed
"""

CSV_FIELDS = ("name", "source", "mode", "device", "batch", "input_size", "precision", "channels_last", "compile",
              "threads", "warmup", "iters", "images_per_s", "latency_ms_median", "latency_ms_p90", "latency_ms_min",
              "latency_ms_max", "total_time_s", "peak_memory_mb", "memory_increase_mb", "memory_measure", "params",
              "step", "compile_time_s", "fastest", "emulated", "time_budget_s")


def _device(text: str) -> str:
    if text == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (text == "cpu" or text.startswith("cuda")):
        raise argparse.ArgumentTypeError(f"{text!r}: cnnzoo bench runs on cpu or cuda (e.g. cuda:0)")
    return device_arg(text)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return n


def _configs(args: argparse.Namespace) -> list[tuple[str | None, bool | None, bool]]:
    """(precision, channels_last, compile) to measure; None: the default path, resolved per network by `_resolve`."""
    if args.matrix:
        if args.precision is not None or args.channels_last is not None:
            raise ValueError("--matrix runs every precision and memory format (add --emulated for bf16 on a CPU "
                             "without native BF16); drop --precision / --channels-last (or drop --matrix to measure "
                             "one configuration)")
        return bench.matrix_configs(args.device, args.compile, emulated=args.emulated)
    if args.emulated:
        raise ValueError("--emulated adds the precisions this machine only emulates to --matrix; without --matrix "
                         "give --precision bf16 to measure bf16 (it is labelled emulated where it is)")
    return [(args.precision, args.channels_last, args.compile)]


def _resolve(net, mode: str, device: str, precision: str | None, channels_last: bool | None) -> tuple[str, bool]:
    """The default paths the commands use: inference as `cnnzoo eval` runs it (the machine's fast path,
    `cnnzoo.evaluate.fastpath`), training as `cnnzoo train` does (fp32, channels-last for conv nets)."""
    if mode == "infer":
        from ..evaluate.fastpath import inference_path  # here, not at the top: `cnnzoo --help` stays quick

        path = inference_path(net, device, precision or "auto", channels_last)
        return path.precision, path.channels_last
    if precision is None:
        precision = "fp32"
    return precision, bench.is_conv_net(net) if channels_last is None else channels_last


def cmd_bench(args: argparse.Namespace) -> int:
    cards = [get_card(n) for n in args.names]  # an unknown name fails before any work
    options = parse_options(args.options)
    if args.precision == "auto":
        args.precision = None
    configs = _configs(args)
    for precision, _, _ in configs:  # a bad configuration fails before any work too
        bench.check_config(mode=args.mode, precision=precision or "fp32", device=args.device, batch=args.batch,
                           threads=args.threads, iters=args.iters, seconds=args.seconds, warmup=args.warmup)
    notes: list[str] = []
    left_out = [p for p in bench.PRECISIONS if args.matrix and not args.emulated and bench.is_emulated(p, args.device)]
    if left_out:
        notes.append(f"{', '.join(left_out)} left out: this CPU has no native BF16, so {' and '.join(left_out)} "
                     f"would be emulated (several times slower than fp32); add --emulated to measure it anyway")
    if args.against and not bench.library_available(args.against):
        notes.append(f"{args.against} is not installed: no {args.against} networks measured "
                     f"(pip install {args.against} to compare)")
    results: list[bench.BenchResult] = []
    common = {"mode": args.mode, "batch": args.batch, "threads": args.threads, "device": args.device,
              "iters": args.iters, "seconds": args.seconds, "warmup": args.warmup}
    against = args.against if args.against and bench.library_available(args.against) else None
    total = sum(len(configs) * (1 + (against is not None and card.counterpart(against) is not None)) for card in cards)
    write = None if args.quiet else _stderr_line
    done = 0
    for card in cards:
        net = create_model(card.name, **options)
        size = resolve_input_size(card.name, net, args.input, card.input_size)
        nets = [("cnnzoo", net)]
        if against:
            theirs = bench.build_counterpart(card.name, against,
                                             **({"num_classes": net.num_classes} if "num_classes" in options else {}))
            if theirs is None:
                notes.append(f"{card.name} has no {against} counterpart; measured cnnzoo's only")
                total -= len(configs) if card.counterpart(against) is not None else 0
            else:
                nets.append((against, theirs))
        for asked, asked_cl, compile_ in configs:
            precision, channels_last = _resolve(net, args.mode, args.device, asked, asked_cl)
            for source, model in nets:  # interleaved: each configuration measures every library in turn
                done += 1
                label = f"[{done}/{total}] " + bench.config_label(card.name, precision, channels_last, compile_, source,
                                                                  bench.is_emulated(precision, args.device))
                measure = functools.partial(bench.benchmark, model, name=card.name, source=source, input_size=size,
                                            aux_weight=card.aux_weight, precision=precision,
                                            channels_last=channels_last, compile=compile_, **common)
                results.append(bench.with_progress(label, measure, write))
    if args.matrix:
        bench.mark_fastest(results)
    _print(results, notes, args)
    return 0


def _stderr_line(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _print(results: list[bench.BenchResult], notes: list[str], args: argparse.Namespace) -> None:
    if args.format == "json":
        doc = {"machine": bench.machine_info(args.device, args.threads), "results": [r.to_dict() for r in results],
               "notes": notes}
        print(json.dumps(doc, indent=2))
        return
    if args.format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in results:
            w.writerow(r.to_dict())
        print(buf.getvalue(), end="")
        for note in notes:  # not in the CSV: a parser reads rows only
            print(f"note: {note}", file=sys.stderr)
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    first = results[0]
    step = "inference (forward)" if first.mode == "infer" else "training step (forward, loss, backward, SGD)"
    table = Table(title=f"{step}, batch {first.batch}, {first.device}, {first.threads} threads",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for col, justify in (("network", "left"), ("precision", "left"), ("memory", "left"), ("input", "left"),
                         ("img/s", "right"), ("median ms", "right"), ("p90 ms", "right"), ("peak MiB", "right"),
                         ("+MiB", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    if any(r.compile for r in results):
        table.add_column("compile s", justify="right", no_wrap=True)
    for r in results:
        name = r.name if r.source == "cnnzoo" else f"{r.name} ({r.source})"
        precision = r.precision + (" (emulated)" if r.emulated else "")
        row = [name + (" *" if r.fastest else ""), precision, "channels-last" if r.channels_last else "contiguous",
               "x".join(map(str, r.input_size)), f"{r.images_per_s:.1f}", f"{r.latency_ms_median:.2f}",
               f"{r.latency_ms_p90:.2f}", f"{r.peak_memory_mb:.0f}", f"{r.memory_increase_mb:.0f}"]
        if any(x.compile for x in results):
            row.append(f"{r.compile_time_s:.1f}" if r.compile_time_s is not None else "-")
        table.add_row(*row)
    console = Console(width=160)
    console.print(table)
    if any(r.fastest for r in results):
        print("* fastest configuration of the network")
    print(f"memory: {first.memory_measure}; +MiB is the peak less the memory in use before warm-up")
    if any(r.emulated for r in results):
        print("emulated: this CPU has no native BF16; PyTorch emulates bf16, slower than fp32 here")
    print(f"machine: {bench.machine_kind(args.threads)}")
    for note in notes:
        print(f"note: {note}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="images/s, latency and peak memory of networks for inference or training",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", metavar="NAME", help="registered network names (see `cnnzoo list`)")
    p.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE",
                   help="network option for every NAME, repeatable (e.g. -o num_classes=10)")
    p.add_argument("--mode", choices=bench.MODES, default="infer",
                   help="infer: forward in eval mode; train: forward, loss, backward and SGD step (default: infer)")
    p.add_argument("--batch", type=_positive_int, default=16, help="images per batch (default: 16)")
    p.add_argument("--input", type=parse_input_size, metavar="CxHxW",
                   help="input size CxHxW, or one size (default: the card's)")
    p.add_argument("--precision", choices=("auto", *bench.PRECISIONS), default=None,
                   help="auto (default): the path the commands use - for inference this machine's fast path (bf16 "
                        "autocast only on a CPU with native BF16, bf16/fp16 on CUDA, else fp32; channels-last for "
                        "conv nets), for training fp32 channels-last; fp32: plain fp32; bf16/fp16 (CUDA): autocast")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="force the memory format (default: channels-last for conv nets, except with --precision fp32 "
                        "in infer mode)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (its compile time is reported apart; slow to start)")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (default: torch's, usually the cores)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or auto (cuda when there is one) (default: cpu)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output (default: table)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=_positive_int,
                        help="timed iterations instead of a time budget (default: as many as fit in 3 s per "
                             "configuration, at least one; see --seconds)")
    length.add_argument("--seconds", action=FloatArg, low=0, low_open=True,
                        help="time to measure, in seconds, instead of --iters")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed iterations first (default: 3; under a time budget fewer when they take longer "
                        "than it)")
    p.add_argument("--matrix", action="store_true",
                   help="every precision (fp16 on CUDA only) x memory format (x compile with --compile); "
                        "marks the fastest; bf16 on a CPU without native BF16 (emulated) only with --emulated")
    p.add_argument("--emulated", action="store_true",
                   help="with --matrix: also measure precisions this machine only emulates (bf16 on a CPU without "
                        "native BF16: several times slower than fp32); labelled emulated")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--against", choices=bench.SOURCES[1:],
                   help="also measure the same network from torchvision or timm, when installed")
    p.set_defaults(func=cmd_bench)
