"""`cnnzoo arith animate`: convolution arithmetic drawn frame by frame to a GIF (parse, call
`cnnzoo.analysis.animate`, print)."""

from __future__ import annotations

import argparse

from .common import FloatArg, check_plot_path


def _epilog() -> str:
    from ..analysis.animate import CASES

    width = max(map(len, CASES))
    rows = []
    for name, (what, kw) in CASES.items():
        nums = " ".join(f"{k}={v}" for k, v in kw.items() if k != "transposed") + (" transposed" if kw.get(
            "transposed") else "")
        rows.append(f"  {name:<{width}}  {what} [{nums}]")
    return ("cases (--case NAME; flags given beside it override its numbers):\n" + "\n".join(rows) + "\n"
            "examples:\n"
            "  cnnzoo arith animate --case half-padding --out half.gif\n"
            "  cnnzoo arith animate --kernel 3 --stride 2 --padding 1 --input 6 --out strided.gif --fps 4\n"
            "  cnnzoo arith animate --kernel 3 --stride 2 --transposed --output-padding 1 --input 3 --out up.gif\n"
            "sizes (Dumoulin & Visin 2016, Relationships 6, 14, 15; the same as torch's conv2d/conv_transpose2d):\n"
            "  conv        o = floor((i + 2P - D(K-1) - 1) / S) + 1\n"
            "  transposed  o = (i-1)S - 2P + D(K-1) + A + 1, drawn as its direct equivalent: S-1 zeros between\n"
            "              inputs, padding D(K-1) - P (+A bottom/right), stride 1, the kernel flipped\n")


class IntArg(argparse.Action):
    """A whole number >= ``low`` (``--padding`` also takes valid/half/same/full); a bad one is one error line."""

    def __init__(self, option_strings, dest, low: int = 1, words: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.low, self.words = low, words

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        text = values.strip().lower()
        if text in self.words:
            setattr(namespace, self.dest, text)
            return
        valid = f"a whole number >= {self.low}" + (f" or one of {', '.join(self.words)}" if self.words else "")
        try:
            value = int(text)
        except ValueError:
            parser.exit(2, f"{parser.prog}: error: {option_string} must be {valid}, got {values!r}\n")
        if value < self.low:
            parser.exit(2, f"{parser.prog}: error: {option_string} must be {valid}, got {values!r}\n")
        setattr(namespace, self.dest, value)


class CaseArg(argparse.Action):
    """``--case NAME``: one of the presets; an unknown name is one error line that lists them."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from ..analysis.animate import CASES

        name = values.strip().lower().replace("_", "-")
        if name not in CASES:
            parser.exit(2, f"{parser.prog}: error: {option_string} {values!r} is not a case; the cases: "
                           f"{', '.join(CASES)}\n")
        setattr(namespace, self.dest, name)


def cmd_animate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..analysis.animate import CASES, animate_convolution, gif_bytes
    from ..fileio import atomic_write

    params: dict = dict(CASES[args.case][1]) if args.case else {}
    for key in ("input", "kernel", "stride", "padding", "dilation", "output_padding"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    if args.transposed:
        params["transposed"] = True
    if not args.out:
        raise ValueError("give --out FILE.gif: where to write the animation")
    missing = [f"--{k}" for k in ("kernel", "input") if k not in params]
    if missing:
        raise ValueError(f"give {' and '.join(missing)} (or --case NAME, one of {', '.join(CASES)})")
    out = check_plot_path(args.out, "--out", suffixes=(".gif",))
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists; it is left alone: give --force to replace it, or another --out")
    try:
        frames = animate_convolution(**params, cell=args.cell)
    except ValueError as e:  # the library's words are its own argument names: say the flags
        msg, first = str(e), str(e).split(" ", 1)[0]
        if first in ("output_padding", "padding", "dilation", "stride", "kernel", "input", "cell"):
            msg = f"--{first.replace('_', '-')}{msg[len(first):]}"
        raise ValueError(msg) from None
    data = gif_bytes(frames, args.fps)
    atomic_write(out, data)
    kind = "transposed convolution" if params.get("transposed") else "convolution"
    side = round(len(frames) ** 0.5)
    print(f"wrote {Path(out)}: {kind}, input {params['input']}x{params['input']} -> output {side}x{side}, "
          f"{len(frames)} frames at {args.fps:g} fps, {len(data) / 1024:.1f} KiB")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("arith", help="convolution arithmetic: animate a convolution (padding, strides, dilation, "
                                     "transposed) as a GIF",
                       description="Convolution arithmetic, drawn by cnnzoo from its own formulas "
                                   "(cnnzoo.analysis.arithmetic).")
    asub = a.add_subparsers(dest="arith_command", metavar="ACTION", required=True)
    p = asub.add_parser("animate", help="draw the input grid, the sliding kernel and the output filling in, one frame "
                                        "per output position, to a GIF",
                        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", action=CaseArg, metavar="NAME", help="a preset of note 001 (listed below)")
    p.add_argument("--kernel", action=IntArg, low=1, metavar="K", help="kernel size")
    p.add_argument("--stride", action=IntArg, low=1, metavar="S", help="stride (default 1)")
    p.add_argument("--padding", action=IntArg, low=0, words=("valid", "half", "same", "full"), metavar="P",
                   help="zero padding on each side: a number, or valid (0), half (floor of the kernel span / 2), "
                        "same (half, odd spans only), full (span - 1) (default 0)")
    p.add_argument("--dilation", action=IntArg, low=1, metavar="D", help="dilation (default 1)")
    p.add_argument("--transposed", action="store_true", help="the transposed convolution with these numbers, drawn "
                                                             "as its equivalent stride-1 convolution")
    p.add_argument("--output-padding", dest="output_padding", action=IntArg, low=0, metavar="A",
                   help="transposed only: extra output cells on the bottom and right, smaller than S or D (default 0)")
    p.add_argument("--input", action=IntArg, low=1, metavar="N", help="input size (N x N)")
    p.add_argument("--out", metavar="FILE.gif", help="the GIF to write (its directory must exist); "
                                                                   "never replaces a file without --force")
    p.add_argument("--fps", action=FloatArg, low=0, high=50, low_open=True, help="frames a second (default 2)")
    p.add_argument("--cell", action=IntArg, low=8, metavar="PX", help="pixels per grid cell, 8 to 48 (default 20)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_animate, fps=2.0, cell=20)


__all__ = ["register"]
