"""`cnnzoo list` and `cnnzoo info`: what is in the zoo."""

from __future__ import annotations

import argparse
import textwrap

from ..counts import build_meta, count_params, stored
from ..registry import UnknownModelError, _suggest, get_card, list_models, model_options
from .common import add_model_args, check_plot_path, parse_options, resolve_input_size

__all__ = ["build_meta", "cite", "cmd_info", "cmd_list", "count_params", "lookup", "register", "zoo_table"]

CLASSIFICATION, SEGMENTATION, DETECTION = "classification", "segmentation", "detection"


def lookup(name: str):
    """(kind, card) of a registered name: ``"classification"`` (`cnnzoo.registry`), ``"segmentation"``
    (`cnnzoo.segmentation.registry`) or ``"detection"`` (`cnnzoo.detection.registry`); the registries share no name.
    An unknown name is an UnknownModelError suggesting close names from all three (the task registries are only
    loaded when the name is no classifier)."""
    try:
        return CLASSIFICATION, get_card(name)
    except UnknownModelError:
        from ..detection.registry import get_detector_card, list_detectors
        from ..segmentation.registry import get_segmenter_card, list_segmenters

        segmenters = list_segmenters()
        if name in segmenters:
            return SEGMENTATION, get_segmenter_card(name)
        detectors = list_detectors()
        if name in detectors:
            return DETECTION, get_detector_card(name)
        classifiers = list_models()
        close = _suggest(str(name), classifiers + segmenters + detectors)
        tags = {**dict.fromkeys(segmenters, " (segmentation)"), **dict.fromkeys(detectors, " (detection)")}
        hint = " Did you mean: " + ", ".join(n + tags.get(n, "") for n in close) + "?" if close else ""
        raise UnknownModelError(f"unknown network {name!r}.{hint} `cnnzoo list` shows all {len(classifiers)} "
                                f"classification networks, {len(segmenters)} segmentation networks and "
                                f"{len(detectors)} detection networks.") from None


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


def zoo_table(names: list[str], title: str, width: int | None = None, kind: str = CLASSIFICATION):
    """The `cnnzoo list` table (a rich Table). Names are never wrapped or cut (a user copies them); where the
    table is wider than ``width`` the family column (which the names mostly say) is left out, then the paper
    column gives way. The counts are the stored ones (`cnnzoo.counts`, `cnnzoo.segmentation.counts` for ``kind``
    "segmentation", `cnnzoo.detection.counts` for "detection"): nothing is built (a network the store lacks is counted on the meta device)."""
    from rich import box
    from rich.table import Table

    if kind == SEGMENTATION:
        from ..segmentation import counts as seg_counts
        from ..segmentation.registry import get_segmenter_card

        card_of, params_of, stored_of = get_segmenter_card, seg_counts.count_params, seg_counts.stored
    elif kind == DETECTION:
        from ..detection import counts as det_counts
        from ..detection.registry import get_detector_card

        card_of, params_of, stored_of = get_detector_card, det_counts.count_params, det_counts.stored
    else:
        card_of, params_of, stored_of = get_card, count_params, stored
    header = ("name", "family", "params", "MACs", "input", "paper")
    rows = []
    for name in names:
        card = card_of(name)
        c, h, w = card.input_size
        entry = stored_of(name)  # MACs at batch 1 and the card's input size, as `cnnzoo summary` counts them
        if entry is None and kind == SEGMENTATION:  # not stored yet: the meta trace (a second at most)
            from ..segmentation.counts import compute

            entry = compute(name, rf=False)
        elif entry is None and kind == DETECTION:  # not stored yet: a meta forward (a second at most)
            from ..detection.counts import build_meta as det_meta
            from ..detection.counts import card_input, count_forward

            model = det_meta(name)
            try:
                entry = {"macs": count_forward(model, card_input(name, model))[0]}
            except (RuntimeError, NotImplementedError, TypeError):  # no meta kernel: "-" (`cnnzoo summary` counts)
                entry = None
        rows.append((name, card.family, _fmt_params(params_of(name)), _fmt_macs(entry and entry["macs"]),
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
    from ..detection.registry import list_detectors
    from ..segmentation.registry import list_segmenters

    names = list_models(args.pattern)
    segmenters = list_segmenters(args.pattern)
    detectors = list_detectors(args.pattern)
    if not names and not segmenters and not detectors:
        raise ValueError(f"no network matches {args.pattern!r}; `cnnzoo list` shows all (patterns use * and ?, "
                         f"e.g. 'resnet*', 'unet*' or 'yolo*')")
    plot = getattr(args, "plot", None)
    if plot:  # a bad path fails before any work
        from ..analysis.plots import ZOO_SUFFIXES

        check_plot_path(plot, suffixes=ZOO_SUFFIXES)
        if not names:
            kinds = " and ".join(k for k, found in (("segmentation", segmenters), ("detection", detectors)) if found)
            raise ValueError(f"--plot draws classification networks, and {args.pattern!r} matches only {kinds} "
                             f"networks ({', '.join(segmenters + detectors)}); leave out --plot, or give a pattern "
                             f"that matches classification networks")
    from rich.console import Console

    console = Console(width=args.width)
    if names:
        console.print(zoo_table(names, f"cnnzoo networks matching {args.pattern!r} ({len(names)})", console.width))
    if segmenters:
        console.print(zoo_table(segmenters, f"segmentation networks matching {args.pattern!r} ({len(segmenters)})",
                                console.width, kind=SEGMENTATION))
    if detectors:
        console.print(zoo_table(detectors, f"detection networks matching {args.pattern!r} ({len(detectors)})",
                                console.width, kind=DETECTION))
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

    kind, card = lookup(args.name)
    if kind == SEGMENTATION:
        return _info_segmenter(args, card)
    if kind == DETECTION:
        return _info_detector(args, card)
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


def segmenter_shapes(name: str, options: dict, size) -> dict:
    """`cnnzoo info`'s counts of a segmentation network: ``params``, ``macs``, ``input`` (C, H, W), ``output`` shape,
    and ``rf`` (an `OutputField`, or None where only `cnnzoo summary` measures it): the stored ones at the defaults,
    else from the network built on the meta device with ``options`` and traced at ``size`` (which checks the input;
    the field then only where the layer arithmetic gives it for free)."""
    from ..segmentation import counts as seg_counts

    entry = seg_counts.stored(name) if not options and size is None else None
    if entry is not None:
        return {**entry, "rf": seg_counts.stored_field(name)}
    import torch

    from ..analysis.output_field import output_field
    from ..analysis.summary import summarize
    from ..segmentation.registry import get_segmenter_card

    card = get_segmenter_card(name)
    model = seg_counts.build_meta(name, **options)
    c, h, w = resolve_input_size(name, model, size, card.input_size)
    model.check_input(torch.empty(1, c, h, w, device="meta"))  # too small, wrong channels: the network's words
    s = summarize(model, (c, h, w))
    try:
        rf = output_field(model, (c, h, w), method="arithmetic")
    except ValueError:
        rf = None  # the gradient method runs a real forward and backward: `cnnzoo summary` does that
    return {"params": s.total_params, "macs": s.macs, "input": (c, h, w), "output": s._calls[0].output_shape,
            "rf": rf}


def _info_segmenter(args: argparse.Namespace, card) -> int:
    """`cnnzoo info` of a segmentation network: its card, counts, output and receptive field, recipe, notes."""
    from rich.console import Console

    from ..segmentation.registry import get_digits_recipe, segmenter_options

    options = parse_options(args.options) if args.options else {}
    info = segmenter_shapes(card.name, options, args.input)
    c, h, w = info["input"]
    console = Console(width=args.width)
    console.print(f"[bold]{card.name}[/bold] — {card.description} (segmentation)")
    field = info["rf"]
    if field is None:
        rf_text = f"`cnnzoo summary {card.name}" + (f" --input {c}x{h}x{w}" if args.input else "") + \
                  "` measures it (the input gradient of the centre output pixel)"
    else:
        rf_text = field.describe().removeprefix("receptive field at the output: ")
    recipe = get_digits_recipe(card.name)
    rows = [
        ("paper", f"{card.paper.title} ({card.paper.authors}, {card.paper.year})"),
        ("link", card.paper.url),
        ("family", card.family),
        ("dataset", f"{card.dataset}, input {c}x{h}x{w}"),
        ("parameters", f"{info['params']:,}" + (f" with {options}" if options else "")),
        ("MACs", f"{info['macs']:,} = {_fmt_macs(info['macs'])} at batch 1 and {c}x{h}x{w}"),
        ("output", f"{tuple(info['output'])} for input {(1, c, h, w)}"),
        ("receptive field", rf_text),
        ("counterparts", "; ".join(str(cp) for cp in card.counterparts) or "none"),
        ("options", ", ".join(segmenter_options(card.name))),
    ]
    if card.aux_weight is not None:
        rows.append(("aux loss weight", str(card.aux_weight)))
    rows.append(("digits recipe", ", ".join(f"{k}={v}" for k, v in recipe.items()) +
                 " (`cnnzoo segment train` on digits-segmentation)"))
    for key, value in rows:
        console.print(textwrap.fill(f"{key:>15}: {value}", max(40, console.width), subsequent_indent=" " * 17,
                                    break_on_hyphens=False),
                      highlight=False, markup=False)
    console.print(f"{'deviations':>15}:", highlight=False)
    for d in card.deviations or ("none",):
        console.print(textwrap.indent(textwrap.fill(d, 100), " " * 17).replace(" " * 17, " " * 15 + "- ", 1),
                      highlight=False, markup=False)
    if card.notes:
        console.print("\n[bold]Paper notes[/bold]\n")
        console.print(card.notes, highlight=False, markup=False)
    return 0


def detector_shapes(name: str, options: dict, size) -> dict:
    """`cnnzoo info`'s counts of a detector: ``params``, ``macs`` (None where no forward could be counted),
    ``input`` (C, H, W) and ``output`` (`cnnzoo.detection.counts.output_shapes` of the raw head outputs): the stored
    ones at the defaults, else from the detector built on the meta device with ``options`` and run at ``size``."""
    from ..detection import counts as det_counts
    from ..detection.registry import get_detector_card

    entry = det_counts.stored(name) if not options and size is None else None
    if entry is not None:
        return entry
    model = det_counts.build_meta(name, **options)
    c, h, w = resolve_input_size(name, model, size, get_detector_card(name).input_size)
    macs, out = det_counts.checked_forward(name, model, (c, h, w))
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs, "input": (c, h, w), "output": out}


def _detector_recipe(name: str) -> dict:
    """The detector's digits recipe as registered (`cnnzoo.detection.registry`), {} where it registered none."""
    from ..detection import registry as det_registry

    get = getattr(det_registry, "get_digits_recipe", None)  # the registry's accessor, where it has one
    return dict(get(name) if callable(get) else det_registry._REGISTRY.entry(name).digits_recipe or {})


def _info_detector(args: argparse.Namespace, card) -> int:
    """`cnnzoo info` of a detector: its card, counts, raw output shapes, options, digits recipe, notes."""
    from rich.console import Console

    from ..detection.counts import describe_output
    from ..detection.registry import detector_options

    options = parse_options(args.options) if args.options else {}
    info = detector_shapes(card.name, options, args.input)
    c, h, w = info["input"]
    recipe = _detector_recipe(card.name)
    console = Console(width=args.width)
    console.print(f"[bold]{card.name}[/bold] — {card.description} (detection)")
    macs = info["macs"]
    rows = [
        ("paper", f"{card.paper.title} ({card.paper.authors}, {card.paper.year})"),
        ("link", card.paper.url),
        ("family", card.family),
        ("dataset", f"{card.dataset}, input {c}x{h}x{w}"),
        ("parameters", f"{info['params']:,}" + (f" with {options}" if options else "")),
        ("MACs", f"{macs:,} = {_fmt_macs(macs)} at batch 1 and {c}x{h}x{w}, every head" if macs is not None else
         "not counted (the forward has an op the meta device cannot run; `cnnzoo summary` traces it)"),
        ("output", (describe_output(info["output"]) if info["output"] is not None else "-") +
         f" (raw head outputs) for input {(1, c, h, w)}"),
        ("counterparts", "; ".join(str(cp) for cp in card.counterparts) or "none"),
        ("options", ", ".join(detector_options(card.name))),
        ("digits recipe", (", ".join(f"{k}={v}" for k, v in recipe.items()) +
                           " (`cnnzoo detect train` on digits-detection)") if recipe else "none"),
    ]
    for key, value in rows:
        console.print(textwrap.fill(f"{key:>15}: {value}", max(40, console.width), subsequent_indent=" " * 17,
                                    break_on_hyphens=False),
                      highlight=False, markup=False)
    console.print(f"{'deviations':>15}:", highlight=False)
    for d in card.deviations or ("none",):
        console.print(textwrap.indent(textwrap.fill(d, 100), " " * 17).replace(" " * 17, " " * 15 + "- ", 1),
                      highlight=False, markup=False)
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
