"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def parse_input_size(text: str) -> tuple[int | None, int, int]:
    """'3x224x224' -> (3, 224, 224); '224' -> (None, 224, 224): the channels then come from the network."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not CxHxW (e.g. 3x224x224) or a single size") from None
    if len(dims) == 1:
        if dims[0] < 1:
            raise argparse.ArgumentTypeError(f"input size {text!r} must be a positive number of pixels, e.g. 224")
        return (None, dims[0], dims[0])
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not CxHxW with positive numbers, e.g. 3x224x224")
    return tuple(dims)


def resolve_input_size(name: str, model, size: tuple[int | None, int, int] | None,
                       card_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (C, H, W) to run ``model`` at: ``--input`` as given (channels from the network when only a size was
    given), else the card's size with the network's channels. A channel count the network cannot take is an
    error that says both ways out."""
    if size is None:
        return (model.in_channels, card_size[1], card_size[2]) if hasattr(model, "in_channels") else card_size
    c, h, w = size
    have = getattr(model, "in_channels", None)
    if c is None:
        c = have if have is not None else card_size[0]
    elif have is not None and c != have:
        raise ValueError(f"{name} takes {have}-channel images but --input asks for {c} channels; use "
                         f"--input {have}x{h}x{w} (or just --input {h}), or build it for {c} channels with "
                         f"-o in_channels={c}")
    return (c, h, w)


def parse_options(pairs: list[str] | None) -> dict:
    """['two_tower=false', 'drop_rate=0.2'] -> {'two_tower': False, 'drop_rate': 0.2} (values read as YAML)."""
    from ..train.config import load_yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-o {pair!r} is not KEY=VALUE (e.g. -o drop_rate=0.2); `cnnzoo info NAME` lists the options")
        out[key.strip()] = load_yaml(value, f"-o {pair!r}")
    return out


def interval_text(low: float | None = None, high: float | None = None, low_open: bool = False,
                  high_open: bool = False) -> str:
    """``(0, 1]``-style words for a range: "in [0, 1]", "> 0", ">= 0", "" (any finite number)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


class FloatArg(argparse.Action):
    """The one argparse action of every float option: a finite number, in its valid range where it has one.

        p.add_argument("--nms", action=FloatArg, low=0, high=1, what="an IoU")
        p.add_argument("--seconds", action=FloatArg, low=0, low_open=True)

    Python's ``float()`` reads ``nan`` and ``inf``, so ``type=float`` lets them through (``--threshold nan`` then
    kept nothing, "scoring above nan"). The error is one line (no usage block) naming the flag, the value as typed
    and what is valid: ``cnnzoo detect predict: error: --threshold must be a finite number, got 'nan'``.

    ``config=True``: a shortcut of a training-config key (``--lr`` is ``optim.lr``). Its value is only read here
    (text that is no number fails at once); finiteness and range are the config's to check, as for the same key
    from ``--set``, a recipe or a resumed run's config.yaml, and its message names the flag
    (``--lr must be a finite number, got 'nan'``): one rule, one wording, wherever the value comes from.
    """

    def __init__(self, option_strings, dest, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, what: str | None = None, config: bool = False,
                 **kwargs) -> None:
        if kwargs.get("nargs") is not None or kwargs.get("type") is not None:
            raise ValueError("FloatArg takes one value and reads it itself (no nargs, no type)")
        if config and (low is not None or high is not None):
            raise ValueError("a config shortcut's range is the config's: give no low/high with config=True")
        super().__init__(option_strings, dest, **kwargs)
        self.low, self.high, self.low_open, self.high_open, self.what = low, high, low_open, high_open, what
        self.config = config

    def valid(self) -> str:
        """What a valid value is, e.g. "a finite number in [0, 1] (an IoU)"."""
        rng = interval_text(self.low, self.high, self.low_open, self.high_open)
        return "a finite number" + (f" {rng}" if rng else "") + (f" ({self.what})" if self.what else "")

    def check(self, text: str, flag: str) -> float:
        """``text`` as a float, or a ValueError whose message is the one error line."""
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"{flag} must be {self.valid()}, got {text!r} (invalid float value)") from None
        if self.config:
            return value  # nan, inf, out of range: the config says so, naming the flag
        bad = not math.isfinite(value)
        bad = bad or (self.low is not None and (value <= self.low if self.low_open else value < self.low))
        bad = bad or (self.high is not None and (value >= self.high if self.high_open else value > self.high))
        if bad:
            raise ValueError(f"{flag} must be {self.valid()}, got {text!r}")
        return value

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            value = self.check(values, option_string or self.dest)
        except ValueError as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")  # one line, as every other error of the CLI
        setattr(namespace, self.dest, value)


def device_arg(text: str) -> str:
    """argparse type of ``--device``: a device this machine has (the message lists the ones it has)."""
    from ..train.config import device_problem

    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def check_plot_path(path: str | os.PathLike, flag: str = "--plot", suffixes: tuple[str, ...] = PLOT_SUFFIXES) -> Path:
    """Where a plot will go, checked before any work: a known suffix, an existing writable directory, not a
    directory itself."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a directory; give a file name inside it, e.g. "
                         f"{p / ('plot' + suffixes[0])}")
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {str(path)!r}: the file must end in {', '.join(suffixes)}")
    _check_writable(p, flag)
    return p


def _check_writable(p: Path, flag: str) -> None:
    parent = p.parent
    if not parent.is_dir():
        what = "is a file, not a directory" if parent.exists() else "does not exist"
        raise ValueError(f"{flag} {str(p)!r}: the directory {str(parent)!r} {what}; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{flag} {str(p)!r}: permission denied (cannot write there); choose a path you can write")


def add_model_args(p: argparse.ArgumentParser, input_default: str | None = None) -> None:
    """NAME, -o KEY=VALUE options and --input CxHxW, for the commands that build a network."""
    p.add_argument("name", help="registered network name (see `cnnzoo list`)")
    p.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE",
                   help="network option, repeatable (e.g. -o two_tower=false); `cnnzoo info NAME` lists them")
    p.add_argument("--input", type=parse_input_size, default=input_default, metavar="CxHxW",
                   help="input size CxHxW, or one size for square inputs with the network's channels "
                        "(default: the paper's, from the card)")
