"""`cnnzoo demo` (what `make demo` runs): train lenet5 on the built-in mnist5k digits, end with the test accuracy.

No network needed: mnist5k ships inside the package. The run directory (./runs/lenet5-<time>) keeps the config,
metrics, curves, confusion matrix and checkpoints.
"""

from __future__ import annotations

import argparse

from .train import add_threads_arg, cmd_train


def cmd_demo(args: argparse.Namespace) -> int:
    ns = argparse.Namespace(
        name="lenet5", data="mnist5k", recipe=None, set=None, options=None, resume=None, quiet=args.quiet,
        epochs=None, batch_size=None, optimizer=None, lr=None, momentum=None, nesterov=None, weight_decay=None,
        schedule=None, warmup_epochs=None, label_smoothing=None, amp=None, channels_last=None, compile=None,
        sync_bn=None, device="cpu", seed=None, run_dir=args.run_dir, weights=None, limit_batches=None,
        data_dir=None, no_download=True, threads=args.threads,
    )
    return cmd_train(ns)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train lenet5 on the built-in MNIST digits and print the test accuracy")
    p.add_argument("--run-dir", help="default: ./runs/lenet5-YYYYmmdd-HHMMSS")
    add_threads_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only the final lines")
    p.set_defaults(func=cmd_demo)
