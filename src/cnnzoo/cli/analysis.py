"""`cnnzoo summary` and `cnnzoo compare-arch`: where parameters and compute go, and how far layers see."""

from __future__ import annotations

import argparse
import csv
import io
import json

import torch
from rich.console import Console

from ..analysis.summary import COLUMNS, Summary, layer_cells, summarize, totals_lines
from ..registry import create_model, get_card
from .common import add_model_args, check_plot_path, parse_options, resolve_input_size

FORMATS = ("table", "markdown", "csv", "json")


def render(s: Summary, fmt: str, width: int | None = None) -> str:
    """The summary as text in one of FORMATS (table: `Summary.table`, at most ``width`` characters wide)."""
    if fmt == "json":
        return s.to_json()
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in s.layers:
            cells = layer_cells(r)
            cells[9], cells[10] = str(r.params), str(r.macs)  # plain numbers for spreadsheets
            w.writerow(cells)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(layer_cells(r)) + " |" for r in s.layers]
        return "\n".join(lines + [""] + [f"- {t}" for t in totals_lines(s)]) + "\n"
    return s.table(width)


def render_dense(s: Summary, field, fmt: str, width: int | None = None) -> str:
    """`render` for a segmentation network: the same, with its output shape and the receptive field at the output
    (`OutputField`, naming its method) under the totals (in json: ``output_shape`` and ``receptive_field``)."""
    out = s._calls[0].output_shape
    c, h, w = s.input_size
    lines = [f"output: {'x'.join(map(str, out[1:]))} logits for a {c}x{h}x{w} input", field.describe()]
    if fmt == "json":
        d = s.to_dict()
        d["output_shape"] = list(out)
        d["receptive_field"] = field.to_dict()
        return json.dumps(d, indent=1)
    if fmt == "csv":
        return render(s, fmt, width)  # rows only, as for every network
    text = render(s, fmt, width)
    if fmt == "markdown":
        return text + "".join(f"- {line}\n" for line in lines)
    console = Console(width=width, record=True, file=io.StringIO())
    for line in lines:
        console.print(line, highlight=False, markup=False)
    note = ("the RF column above is the layer arithmetic's; after a resampling op (upsampling, unpooling, a crop) it "
            "is only an upper bound") if field.method == "gradient" or field.global_pool else None
    if note:
        console.print(note, highlight=False, markup=False)
    return text + console.export_text()


def render_detector(s: Summary, outputs, fmt: str, width: int | None = None) -> str:
    """`render` for a detector. Its ``forward`` returns several tensors (SSD, DSSD, RetinaNet: a dict of class logits
    and box regressions per anchor; YOLO v3/v4: one tensor per scale); the layer trace follows every module on the
    way to each of them, so the rows and totals (parameters, MACs) cover every head, and the whole network's row
    shows the first output only. The outputs are listed under the totals (in json: ``outputs``, the shapes as
    `cnnzoo.detection.counts.output_shapes` gives them; null where a forward could not be counted on meta)."""
    from ..detection.counts import describe_output

    c, h, w = s.input_size
    shown = describe_output(outputs) if outputs is not None else "not listed (no meta forward)"
    lines = [f"outputs: {shown} (raw head outputs for a {c}x{h}x{w} input; the totals sum over every head)"]
    if fmt == "json":
        d = s.to_dict()
        d["outputs"] = outputs
        return json.dumps(d, indent=1)
    if fmt == "csv":
        return render(s, fmt, width)  # rows only, as for every network
    text = render(s, fmt, width)
    if fmt == "markdown":
        return text + "".join(f"- {line}\n" for line in lines)
    console = Console(width=width, record=True, file=io.StringIO())
    for line in lines:
        console.print(line, highlight=False, markup=False)
    return text + console.export_text()


def _build(name: str, options: dict):
    with torch.device("meta"):  # shapes and counts without memory or init cost
        return create_model(name, **options)


def segmenter_field(name: str, model, size: tuple[int, int, int], options: dict, s: Summary, progress=None):
    """The receptive field at a segmentation network's output (`cnnzoo.analysis.output_field`): the stored one
    (`cnnzoo.segmentation.counts`) at the defaults when the traced network still matches the store (parameters,
    MACs, output shape), else measured now: free by the layer arithmetic, else one forward and backward at ``size``
    on the CPU (``progress(what)`` is told first)."""
    from ..analysis.output_field import arithmetic_output_field, gradient_output_field, output_field
    from ..segmentation import counts as seg_counts

    entry = seg_counts.stored(name) if not options else None
    if entry is not None and entry["input"] == tuple(size) and (entry["params"], entry["macs"], entry["output"]) == (
            s.total_params, s.macs, tuple(s._calls[0].output_shape or ())):
        field = seg_counts.stored_field(name)
        if field is not None:
            return field
    _, _, reason, whole = arithmetic_output_field(model, size)
    if reason is None or whole:
        return output_field(model, size)
    if progress is not None:
        progress(f"measuring the receptive field (a forward and backward at {'x'.join(map(str, size))})")
    return gradient_output_field(model, size, reason=reason)


def cmd_summary(args: argparse.Namespace) -> int:
    from .models import DETECTION, SEGMENTATION, lookup

    kind, card = lookup(args.name)
    if args.plot:  # a path that cannot be written fails before the table is printed
        check_plot_path(args.plot)
    if args.depth is not None and args.depth < 0:
        raise ValueError(f"--depth must be 0 or more (0: one row for the whole network), got {args.depth}")
    from ..status import Steps

    # a big network takes seconds to build and trace: a spinner on a terminal's stderr (no lines in logs)
    with Steps(plain=False) as progress:
        progress(f"building {card.name}")
        options = parse_options(args.options)
        if kind == SEGMENTATION:
            from ..segmentation.counts import build_meta

            model = build_meta(card.name, **options)
        elif kind == DETECTION:
            from ..detection.counts import build_meta as det_meta

            model = det_meta(card.name, **options)
        else:
            model = _build(card.name, options)
        size = resolve_input_size(card.name, model, args.input, card.input_size)
        if kind == SEGMENTATION:  # too small, wrong channels: one line in the network's words, before any work
            model.check_input(torch.empty(1, *size, device="meta"))
        progress(f"tracing {card.name} at {'x'.join(map(str, size))}")
        outputs = None
        if kind == DETECTION:  # output shapes; its check_input, a forward failing on the input: one line
            from ..detection.counts import checked_forward

            outputs = checked_forward(card.name, model, size)[1]
        s = summarize(model, size, depth=args.depth)
        field = segmenter_field(card.name, model, size, options, s, progress) if kind == SEGMENTATION else None
    s.model_name = card.name
    if kind == DETECTION:
        print(render_detector(s, outputs, args.format, args.width), end="")
    elif field is not None:
        print(render_dense(s, field, args.format, args.width), end="")
    else:
        print(render(s, args.format, args.width), end="")
    if args.plot:
        from ..analysis.plots import plot_summary

        plot_summary(s, args.plot)
        print(f"wrote {args.plot}")
    return 0


def compare(names: list[str], progress=None) -> list[dict]:
    """The totals of several registered networks at their paper input sizes, and the output of each stage
    (``feature_info``): channels and spatial size (``stages``, see `Summary.stages`). ``progress(what, done,
    total)``: called before each network is traced."""
    out = []
    for i, name in enumerate(names):
        if progress is not None:
            progress("tracing the networks", i, len(names))
        card = get_card(name)
        model = _build(name, {})
        s = summarize(model, card.input_size)
        out.append({"name": name, "input": "x".join(map(str, card.input_size)), **s.totals(),
                    "stages": s.stages(getattr(model, "feature_info", None) or [])})
    if progress is not None:
        progress("tracing the networks", len(names), len(names))
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
    from ..status import Steps
    from .models import DETECTION, SEGMENTATION, lookup

    for name in args.names:  # an unknown name fails before any work
        kind = lookup(name)[0]
        if kind == SEGMENTATION:
            raise ValueError(f"{name} is a segmentation network; compare-arch compares classification networks "
                             f"(`cnnzoo summary {name}` gives its totals and receptive field)")
        if kind == DETECTION:
            raise ValueError(f"{name} is a detector; compare-arch compares classification networks "
                             f"(`cnnzoo summary {name}` gives its totals and output shapes)")
    with Steps(enabled=len(args.names) > 1) as progress:  # on stderr: stdout holds the table
        rows = compare(args.names, progress)
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
    from ..texttable import print_fitted

    # at the terminal's width (80 when there is none): folded into several tables, each starting with the name,
    # where one does not fit
    print_fitted(Console(width=args.width), "networks side by side, at their paper input sizes (batch 1)",
                 [h for h, _ in cols], [[cell(k, r[k]) for _, k in cols] for r in rows],
                 justify=["left" if h in ("name", "input") or h.startswith("stages") else "right" for h, _ in cols])
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
