"""`cnnzoo demo`: the README's main job. Until training lands: the zoo table and one card."""

from __future__ import annotations

import argparse

from .models import cmd_info, cmd_list


def cmd_demo(args: argparse.Namespace) -> int:
    cmd_list(argparse.Namespace(pattern="*", width=None, plot=None))
    return cmd_info(argparse.Namespace(name="lenet5", width=None))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job of the README")
    p.set_defaults(func=cmd_demo)
