"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse

import yaml


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'3x224x224' -> (3, 224, 224); '224' -> (3, 224, 224)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not CxHxW (e.g. 3x224x224) or a single size")
    if len(dims) == 1:
        dims = [3, dims[0], dims[0]]
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not CxHxW with positive numbers, e.g. 3x224x224")
    return tuple(dims)


def parse_options(pairs: list[str] | None) -> dict:
    """['two_tower=false', 'drop_rate=0.2'] -> {'two_tower': False, 'drop_rate': 0.2} (values read as YAML)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"model option {pair!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_model_args(p: argparse.ArgumentParser, input_default: str | None = None) -> None:
    """NAME, -o KEY=VALUE options and --input CxHxW, for the commands that build a network."""
    p.add_argument("name", help="registered network name (see `cnnzoo list`)")
    p.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE",
                   help="network option, repeatable (e.g. -o two_tower=false); `cnnzoo info NAME` lists them")
    p.add_argument("--input", type=parse_input_size, default=input_default, metavar="CxHxW",
                   help="input size (default: the paper's, from the card)")
