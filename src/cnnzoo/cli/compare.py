"""`cnnzoo compare`: train several networks or paper variants on the same data and seeds, report side by side."""

from __future__ import annotations

import argparse
import sys

from .common import FloatArg

EPILOG = """\
SPEC = NAME[:OPTION=VALUE[,OPTION=VALUE...]][@SECTION.KEY=VALUE...]
  alexnet_paper:lrn=false            a network option, read as `cnnzoo train -o lrn=false`
  resnet20_cifar:shortcut=B          several options: resnet18:attn_layer=eca,drop_rate=0.2
  lenet5@train.label_smoothing=0.1   a config override of this spec only, read as --set
  'resnet20_cifar@train.mix={name: mixup}'   (quote values with spaces for the shell)
examples:
  cnnzoo compare lenet5 lenet5_paper resnet20_cifar --seeds 0,1,2 --set train.epochs=10 --out cmp
  cnnzoo compare alexnet_paper alexnet_paper:lrn=false --data cifar10 --protocol center,10crop --jobs 2
  cnnzoo compare lenet5 lenet5_paper --dry-run        # the plan and its cost; trains nothing
segmentation networks (`cnnzoo segment list`; never mixed with classifiers in one comparison):
  cnnzoo compare unet_padded unet_resnet34 --seeds 0,1,2 --out seg       # digits-segmentation, each digits recipe
  cnnzoo compare unet_padded:base_channels=8 'unet_padded@optim.lr=0.003' --epochs 2 --data-param num_train=200
  they report the FCN paper's mean IU, pixel accuracy, mean accuracy and f.w. IU (mean, min-max over seeds); options
  go over the network's digits recipe options; per spec @train.epochs, @train.limit_batches, @optim.name, @optim.lr,
  @optim.momentum, @optim.weight_decay, @schedule.name, @data.batch_size, @data.input_size, @data.holdout_fraction;
  --data-param/--epochs/--limit-batches are theirs, --recipe/--set/--protocol/--no-flip/--target/--data-dir/
  --no-download classification's.
Re-running a command continues it: finished runs are reused (same numbers), interrupted ones resumed.
Outputs: OUT/report.html (self-contained), OUT/results.csv, OUT/results.json, OUT/runs/SPEC/seedS (run directories).
Exit status: 0 all runs ok, 1 some spec failed (the table says why), 2 a bad argument, 128+N stopped by signal N."""


def _command(args: argparse.Namespace) -> list[str]:
    """The command line, rebuilt from the parsed arguments (what the report records)."""
    cmd = ["cnnzoo", "compare", *args.specs, "--data", args.data]
    for pair in args.data_params or []:
        cmd += ["--data-param", pair]
    for flag, value in (("--epochs", args.epochs), ("--limit-batches", args.limit_batches)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.recipe:
        cmd += ["--recipe", args.recipe]
    for s in args.set or []:
        cmd += ["--set", s]
    cmd += ["--seeds", ",".join(map(str, args.seed_list)), "--out", args.out]
    if args.protocol:
        cmd += ["--protocol", args.protocol]
    if args.no_flip:
        cmd.append("--no-flip")
    if args.target is not None:
        cmd += ["--target", f"{args.target:g}"]
    if args.jobs != 1:
        cmd += ["--jobs", str(args.jobs)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.no_download:
        cmd.append("--no-download")
    return cmd


SEEDS_FORMS = "a seed (3), comma-separated seeds (0,1,2) or an increasing range (0-4), of integers >= 0"


def _check_seeds_text(text: str) -> str:
    """``--seeds`` checked for what `parse_seeds` would misread: a reversed range (``5-2`` is empty there), a
    negative seed (``-1`` reads as an open range) and empty parts; returns ``text``."""
    import re

    parts = [p.strip() for p in str(text).split(",")]
    for part in parts:
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m and int(m[1]) > int(m[2]):
            raise ValueError(f"--seeds {text!r}: the range {part} is reversed (it holds no seed); write it from low "
                             f"to high, --seeds {m[2]}-{m[1]}. Valid forms: {SEEDS_FORMS}")
        if not part or part.startswith("-") or not re.fullmatch(r"\d+(\s*-\s*\d+)?", part):
            what = "an empty seed" if not part else "a negative seed" if re.fullmatch(r"-\d+", part) else \
                f"{part!r}, which is not a seed or a range"
            raise ValueError(f"--seeds {text!r} holds {what}; valid forms: {SEEDS_FORMS}, e.g. --seeds 0,1,2 or "
                             f"--seeds 0-4")
    return text


def _dry_run(result, threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..compare.report import _si
    from ..compare.runner import _fmt_time, conv_rate

    plans = result.plans
    t = Table(title=f"cnnzoo compare: plan ({len(plans)} runs; nothing is trained)")
    for c in ("spec", "seed", "run directory", "state", "params", "MACs/image", "input", "epochs", "images/epoch",
              "cost (MACs)"):
        t.add_column(c, justify="left" if c in ("spec", "run directory", "state") else "right", overflow="fold")
    total = 0.0
    for p in plans:
        left = p.epochs - p.epochs_done if p.state != "finished" else 0
        cost = p.work(left)
        total += cost
        state = {"new": "new", "resume": f"resume from epoch {p.epochs_done}", "finished": "finished: reused"}[p.state]
        t.add_row(p.spec.label, str(p.seed), str(p.run_dir), state, f"{p.params:,}", _si(p.macs),
                  "x".join(map(str, p.input_size)), str(p.epochs), f"{p.train_images:,} + {p.test_images:,} test",
                  _si(cost))
    Console(width=None if sys.stdout.isatty() else 1000).print(t)
    rate = conv_rate()
    print(f"cost = MACs/image x (3 x training images + test images) x epochs still to train = {_si(total)}MAC in all; "
          f"at {_si(rate)}MAC/s (a 3x3 convolution on this machine, {threads} thread(s)) about "
          f"{_fmt_time(total / rate)}: a lower bound (small layers, data and checkpoints run slower)")
    for p in plans:
        for note in p.notes:
            print(f"note: {p.spec.label} seed {p.seed}: {note}")


def cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from ..compare import ComparisonInterrupted, comparison_kind, parse_seeds, print_table, run_comparison
    from .segment import _pairs

    args.seed_list = parse_seeds(_check_seeds_text(args.seeds))
    segmentation = comparison_kind(args.specs) == "segmentation"
    if args.data is not None and not args.data.strip():
        raise ValueError("--data '' names no dataset; give " + (
            "digits-segmentation (the default), voc:PATH or pairs:PATH" if segmentation else
            "mnist5k (the default), mnist, fashion-mnist, cifar10, cifar100 or folder:PATH"))
    args.data = args.data or ("digits-segmentation" if segmentation else "mnist5k")
    if not args.out.strip():
        raise ValueError("--out '' names no directory; give the comparison's directory, e.g. --out compare (the "
                         "default)")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1 (runs trained at once), got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    command = _command(args)
    try:
        result = run_comparison(
            args.specs, args.data, recipe=args.recipe, sets=list(args.set or []), seeds=args.seed_list, out=args.out,
            protocols=args.protocol, flip=not args.no_flip, jobs=args.jobs, threads=args.threads,
            target=None if args.target is None else args.target / 100, download=not args.no_download,
            data_dir=args.data_dir, command=command, verbose=not args.quiet, dry_run=args.dry_run,
            data_params=_pairs(args.data_params, "--data-param"), epochs=args.epochs,
            limit_batches=args.limit_batches)
    except ComparisonInterrupted as e:
        print(f"cnnzoo compare: {e}", file=sys.stderr, flush=True)
        return 128 + int(e.signum)
    if args.dry_run:
        _dry_run(result, args.threads or max(1, torch.get_num_threads() // args.jobs))
        return 0
    print_table(result.rows)
    for key in ("report", "csv", "json"):
        print(f"{key}: {result.files[key]}")
    failed = [r for r in result.rows if r["status"] != "ok"]
    if failed:
        sys.stdout.flush()
        print(f"cnnzoo compare: {len(failed)} of {len(result.rows)} spec(s) failed in some run: "
              f"{', '.join(r['spec'] for r in failed)} (the errors are above)", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .bench import _positive_int

    p = sub.add_parser("compare", help="train networks / paper variants on the same data and seeds; HTML report",
                       description="Train every SPEC once per seed with the same data, recipe, data order and "
                                   "augmentation (each into its own run directory under --out), evaluate each, and "
                                   "write a self-contained report.html, results.csv and results.json.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", metavar="SPEC", help="NAME[:OPTION=VALUE,...][@SECTION.KEY=VALUE...]")
    p.add_argument("--data",
                   help="mnist5k (built in, default), mnist, fashion-mnist, cifar10, cifar100, folder:PATH; for "
                        "segmentation networks digits-segmentation (built in, default), voc:PATH, pairs:PATH")
    p.add_argument("--data-param", dest="data_params", action="append", metavar="KEY=VALUE",
                   help="segmentation only: a dataset setting (repeatable), as `cnnzoo segment train --data-param`: "
                        "digits-segmentation's seed, num_train, num_test, canvas, ...")
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="segmentation only: epochs of every run (default: each network's digits recipe)")
    p.add_argument("--limit-batches", type=_positive_int, metavar="N",
                   help="segmentation only: at most N batches per epoch (smoke tests)")
    p.add_argument("--recipe", metavar="FILE.yaml|paper", help="a YAML recipe for every spec (as `cnnzoo train`)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config key of every spec (repeatable), e.g. --set train.epochs=5")
    p.add_argument("--seeds", default="0", metavar="S[,S...]", help="seeds, e.g. 0,1,2 or 0-4 (default 0)")
    p.add_argument("--out", default="compare", metavar="DIR", help="the comparison's directory (default ./compare): new, "
                   "empty or an earlier comparison (any other directory is refused); run the same command again to "
                   "continue it")
    p.add_argument("--protocol", metavar="NAME[,NAME...]",
                   help="test-time protocols to report besides the centre evaluation: 10crop, 144crop, dense, "
                        "multiscale, or several joined with '+' (see `cnnzoo eval --help`)")
    p.add_argument("--no-flip", action="store_true", help="no reflections in the 10crop/144crop/dense protocols")
    p.add_argument("--target", action=FloatArg, low=0, low_open=True, high=100, what="a top-1 accuracy in percent",
                   metavar="PCT",
                   help="top-1 %% for the 'epochs to target' column (default: the best accuracy of the weakest run)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs trained at once, each in its own process (default 1); one GPU each when there are GPUs")
    p.add_argument("--threads", type=int, metavar="T",
                   help="intra-op threads per run (default: this machine's threads / --jobs); a run's numbers depend "
                        "on it, so equal --threads give equal results whatever --jobs")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost; train nothing")
    p.add_argument("--data-dir", help="where downloaded datasets live (default $CNNZOO_DATA or ~/.cache/cnnzoo)")
    p.add_argument("--no-download", action="store_true", help="never fetch datasets")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output (the table is still printed)")
    p.set_defaults(func=cmd_compare)


__all__ = ["cmd_compare", "register"]
