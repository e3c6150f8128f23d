"""`cnnzoo summary` and `cnnzoo compare-arch`: where parameters and compute go, and how far layers see."""

from __future__ import annotations

import argparse
import csv
import io
import json

import torch
from rich.console import Console
from rich.table import Table

from ..analysis.summary import LayerRecord, Summary, summarize
from ..registry import create_model, get_card
from .common import add_model_args, check_plot_path, parse_options, resolve_input_size

FORMATS = ("table", "markdown", "csv", "json")
COLUMNS = (
    "layer",
    "type",
    "kernel",
    "stride",
    "pad",
    "dil",
    "groups",
    "input",
    "output",
    "params",
    "MACs",
    "RF",
    "jump",
)


def _shape(s) -> str:
    return "x".join(map(str, s[1:])) if s else "-"


def _pair(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def _cells(r: LayerRecord) -> list[str]:
    return [
        r.name,
        r.type,
        _pair(r.kernel),
        _pair(r.stride),
        _pair(r.padding),
        _pair(r.dilation),
        "" if r.groups in (None, 1) else str(r.groups),
        _shape(r.input_shape),
        _shape(r.output_shape),
        f"{r.params:,}",
        f"{r.macs:,}",
        _pair(r.rf) if r.rf else "-",
        _pair(r.jump) if r.jump else "-",
    ]


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return str(n)


def _totals_lines(s: Summary) -> list[str]:
    steps = [f"recurrent layer {r['name']}: {r['steps']} time steps x {r['macs_per_step']:,} MACs per step = "
             f"{r['macs']:,} MACs; its {r['params']:,} parameters are shared by every step" for r in s.per_step()]
    return [
        f"total parameters: {s.total_params:,} (trainable {s.trainable_params:,})",
        f"MACs (multiply-accumulates, conv + linear + matmul): {s.macs:,} = {_si(s.macs)}",
        *steps,
        f"FLOPs (= 2 x MACs): {s.flops:,} = {_si(s.flops)}",
        f"activation memory at batch 1 (every layer's output): {s.activation_bytes / 2**20:.2f} MiB",
        f"parameter memory: {s.param_bytes / 2**20:.2f} MiB",
    ]


def render(s: Summary, fmt: str, width: int | None = None) -> str:
    """The summary as text in one of FORMATS."""
    if fmt == "json":
        return s.to_json()
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in s.layers:
            cells = _cells(r)
            cells[9], cells[10] = str(r.params), str(r.macs)  # plain numbers for spreadsheets
            w.writerow(cells)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in s.layers]
        return "\n".join(lines + [""] + [f"- {t}" for t in _totals_lines(s)]) + "\n"
    c, h, w = s.input_size
    table = Table(title=f"{s.model_name} at {c}x{h}x{w} (batch 1)")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("params", "MACs", "RF", "jump") else "left")
    for r in s.layers:
        table.add_row(*_cells(r))
    console = Console(width=width or 200, record=True, file=io.StringIO())
    console.print(table)
    for line in _totals_lines(s):
        console.print(line, highlight=False)
    return console.export_text()


def _build(name: str, options: dict):
    with torch.device("meta"):  # shapes and counts without memory or init cost
        return create_model(name, **options)


def cmd_summary(args: argparse.Namespace) -> int:
    card = get_card(args.name)
    if args.plot:  # a path that cannot be written fails before the table is printed
        check_plot_path(args.plot)
    if args.depth is not None and args.depth < 0:
        raise ValueError(f"--depth must be 0 or more (0: one row for the whole network), got {args.depth}")
    model = _build(card.name, parse_options(args.options))
    s = summarize(model, resolve_input_size(card.name, model, args.input, card.input_size), depth=args.depth)
    s.model_name = card.name
    print(render(s, args.format, args.width), end="")
    if args.plot:
        from ..analysis.plots import plot_summary

        plot_summary(s, args.plot)
        print(f"wrote {args.plot}")
    return 0


def compare(names: list[str]) -> list[dict]:
    """The totals of several registered networks at their paper input sizes, and the output of each stage
    (``feature_info``): channels and spatial size (``stages``, see `Summary.stages`)."""
    out = []
    for name in names:
        card = get_card(name)
        model = _build(name, {})
        s = summarize(model, card.input_size)
        out.append({"name": name, "input": "x".join(map(str, card.input_size)), **s.totals(),
                    "stages": s.stages(getattr(model, "feature_info", None) or [])})
    return out


def stages_text(stages: list[dict]) -> str:
    """'64@112 64@56 128@28 256@14 512@7' (channels@resolution per stage); a run of equal stages as '768@14 x12'."""
    cells = []
    for st in stages:
        hw = st["hw"]
        res = "flat" if hw is None else str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"
        cells.append(f"{st['num_chs']}@{res}")
    runs: list[list] = []
    for c in cells:
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    return " ".join(c if n == 1 else f"{c} x{n}" for c, n in runs)


def cmd_compare(args: argparse.Namespace) -> int:
    rows = compare(args.names)
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    cols = [
        ("name", "name"),
        ("input", "input"),
        ("params", "total_params"),
        ("trainable", "trainable_params"),
        ("GMACs", "macs"),
        ("GFLOPs (2xMACs)", "flops (2 x macs)"),
        ("activations MiB", "activation_memory_bytes (batch 1)"),
        ("params MiB", "param_memory_bytes"),
        ("stages (channels@resolution)", "stages"),
    ]

    def cell(key, v):
        if key == "stages":
            return stages_text(v)
        if key in ("macs", "flops (2 x macs)"):
            return f"{v / 1e9:.3f}"
        if key.endswith("bytes") or "bytes" in key:
            return f"{v / 2**20:.1f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    if args.format in ("csv", "markdown"):
        sep = "," if args.format == "csv" else " | "
        lines = [sep.join(h for h, _ in cols)]
        if args.format == "markdown":
            lines.append("|" + "---|" * len(cols))
        lines += [
            sep.join(cell(k, r[k]).replace(",", "") if args.format == "csv" else cell(k, r[k]) for _, k in cols)
            for r in rows
        ]
        print("\n".join(lines))
        return 0
    table = Table(title="networks side by side, at their paper input sizes (batch 1)")
    for h, _ in cols:
        table.add_column(h, justify="left" if h in ("name", "input") or h.startswith("stages") else "right")
    for r in rows:
        table.add_row(*(cell(k, r[k]) for _, k in cols))
    Console(width=args.width or 200).print(table)
    return 0


def _depth(text: str) -> int:
    """argparse type of ``summary --depth``: a whole number >= 0 (checked again, with the same words, in the
    command for callers that build the Namespace themselves)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give 0 or more (0: one row for the whole "
                                         f"network, 1: stem, stages, head)") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive fields of a network")
    add_model_args(p)
    p.add_argument(
        "--depth",
        type=_depth,
        default=None,
        help="fold rows into blocks this many module levels down (1: stem, stages, head)",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw parameters, MACs and receptive field per row "
                                                      "(.png, .svg or .pdf)")
    p.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("compare-arch", help="totals (params, MACs, memory) and per-stage resolution of "
                                           "several networks side by side")
    p.add_argument("names", nargs="+", metavar="NAME", help="registered network names")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_compare)
