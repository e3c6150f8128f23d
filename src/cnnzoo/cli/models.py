"""`cnnzoo list` and `cnnzoo info`: what is in the zoo."""

from __future__ import annotations

import argparse
import textwrap

from ..counts import build_meta, count_params, stored
from ..registry import get_card, list_models, model_options
from .common import add_model_args, check_plot_path, parse_options, resolve_input_size

__all__ = ["build_meta", "cite", "cmd_info", "cmd_list", "count_params", "register", "zoo_table"]


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def _fmt_macs(n: int | None) -> str:
    """Multiply-accumulates, short: 417K, 30.8M, 1.82G ("-" where none are stored)."""
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return str(n)


def cite(paper) -> str:
    """A short citation, first author's surname and year: "Krizhevsky, 2012" (the title is in `cnnzoo info`)."""
    first = paper.authors.split(",")[0].strip()
    surname = " ".join(w for w in first.split() if not w.endswith(".")) or first  # drop initials
    return f"{surname}, {paper.year}"


def zoo_table(names: list[str], title: str, width: int | None = None):
    """The `cnnzoo list` table (a rich Table). Names are never wrapped or cut (a user copies them); where the
    table is wider than ``width`` the family column (which the names mostly say) is left out, then the paper
    column gives way. The counts are the stored ones (`cnnzoo.counts`): nothing is built."""
    from rich import box
    from rich.table import Table

    header = ("name", "family", "params", "MACs", "input", "paper")
    rows = []
    for name in names:
        card = get_card(name)
        c, h, w = card.input_size
        entry = stored(name)  # MACs at batch 1 and the card's input size, as `cnnzoo summary` counts them
        rows.append((name, card.family, _fmt_params(count_params(name)), _fmt_macs(entry and entry["macs"]),
                     f"{c}x{h}x{w}", cite(card.paper)))
    keep = list(range(len(header)))
    full = sum(max(len(r[i]) for r in [header, *rows]) for i in keep) + 2 * (len(keep) - 1)
    if width is not None and full > width:
        keep.remove(1)
    # two characters between columns, no outer edge
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for i in keep:
        if header[i] == "name":
            table.add_column("name", no_wrap=True, min_width=max(len(n) for n in names))
        elif header[i] in ("params", "MACs"):
            table.add_column(header[i], justify="right", no_wrap=True)
        else:
            table.add_column(header[i], no_wrap=header[i] == "input")
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


def cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no network matches {args.pattern!r}; `cnnzoo list` shows all (patterns use * and ?, "
                         f"e.g. 'resnet*')")
    plot = getattr(args, "plot", None)
    if plot:  # a bad path fails before any work
        from ..analysis.plots import ZOO_SUFFIXES

        check_plot_path(plot, suffixes=ZOO_SUFFIXES)
    from rich.console import Console

    console = Console(width=args.width)
    console.print(zoo_table(names, f"cnnzoo networks matching {args.pattern!r} ({len(names)})", console.width))
    if plot:
        from ..analysis.plots import plot_zoo
        from ..status import Steps

        with Steps(enabled=not getattr(args, "quiet", False)) as progress:  # on stderr: stdout holds the table
            plot_zoo(names, plot, progress)
        print(f"wrote {plot}")
    return 0


def _shapes(name: str, options: dict, size) -> tuple[int, tuple[int, int, int], tuple[int, ...]]:
    """(parameters, input (C, H, W), output shape) for `cnnzoo info`: the stored ones at the defaults, else from the
    network built on the meta device with ``options`` and run at ``size`` (which checks the input)."""
    entry = stored(name) if not options and size is None else None
    if entry is not None:
        return entry["params"], entry["input"], entry["output"]
    import torch

    card = get_card(name)
    model = build_meta(name, **options)
    c, h, w = resolve_input_size(name, model, size, card.input_size)
    with torch.no_grad():  # meta forward: checks the input and gives the output shape at no cost
        out = model.eval()(torch.empty(1, c, h, w, device="meta"))
    return sum(p.numel() for p in model.parameters()), (c, h, w), tuple(out.shape)


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console

    card = get_card(args.name)
    options = parse_options(args.options) if args.options else {}  # (reads YAML: only when there are some)
    params, (c, h, w), out_shape = _shapes(card.name, options, args.input)
    console = Console(width=args.width)
    console.print(f"[bold]{card.name}[/bold] — {card.description}")
    rows = [
        ("paper", f"{card.paper.title} ({card.paper.authors}, {card.paper.year})"),
        ("link", card.paper.url),
        ("family", card.family),
        ("dataset", f"{card.dataset}, input {c}x{h}x{w}"),
        ("parameters", f"{params:,}" + (f" with {options}" if options else "")),
        ("output", f"{out_shape} for input {(1, c, h, w)}"),
        ("counterparts", "; ".join(str(cp) for cp in card.counterparts) or "none"),
        ("options", ", ".join(model_options(card.name))),
    ]
    if card.aux_weight is not None:
        rows.append(("aux loss weight", str(card.aux_weight)))
    # what `cnnzoo train` adds over the dataset's recipe (the reasons are in the notes and deviations below)
    rows.append(("training hints", ", ".join(f"{k}={v}" for k, v in card.recipe.items()) or "none"))
    for key, value in rows:
        console.print(f"{key:>15}: {value}", highlight=False)
    console.print(f"{'deviations':>15}:", highlight=False)
    for d in card.deviations or ("none",):
        console.print(textwrap.indent(textwrap.fill(d, 100), " " * 17).replace(" " * 17, " " * 15 + "- ", 1),
                      highlight=False)
    if card.notes:
        console.print("\n[bold]Paper notes[/bold]\n")
        console.print(card.notes, highlight=False, markup=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="table of the registered networks with parameters, MACs, paper and year")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'resnet*'")
    p.add_argument("--plot", metavar="FILE", help="also plot parameters against MACs for these networks, coloured by "
                                                  "family: .png/.svg/.pdf, or .html for an interactive page (hover "
                                                  "for names; one self-contained file)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr while --plot draws")
    p.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="a network's card and paper notes")
    add_model_args(p)
    p.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_info)
