"""`cnnzoo` entry point. Each subcommand module here has ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ..registry import UnknownModelError, UnknownOptionError

# Subcommand modules, in help order. A module lists its own subcommands in ``register``.
SUBCOMMAND_MODULES = ("models", "analysis", "train", "demo")


class CLIError(Exception):
    """An error the CLI reports as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="cnnzoo",
        description="The landmark image-classification CNNs: build, explain, train, compare.",
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(f"{__package__}.{mod}") is not None:
            importlib.import_module(f"{__package__}.{mod}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UnknownModelError, UnknownOptionError, CLIError, ValueError, FileNotFoundError) as e:
        print(f"cnnzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
