"""Convolution arithmetic as animations: the input grid, the kernel sliding over it, the output filling in.

Drawn by cnnzoo from the arithmetic of :mod:`cnnzoo.analysis.arithmetic` (the sizes come from
:func:`~cnnzoo.analysis.arithmetic.conv_output_size`), in the spirit of the figures of Dumoulin & Visin,
"A guide to convolution arithmetic for deep learning" (2016). Their GIFs are licensed for non-commercial use only;
nothing of them is copied here: every frame is drawn with ``PIL.ImageDraw`` from the numbers.

One frame per output position (row by row), so an animation has ``out * out`` frames. Each frame shows

- the input grid, padding cells drawn distinctly (light, dashed borders); for a transposed convolution the
  zeros inserted between input cells are drawn as well (grey, dashed);
- the kernel's footprint at that position: its outline spans ``D(K - 1) + 1`` cells, its ``K x K`` taps are
  filled dark, the cells a dilated kernel skips keep their own colour;
- the output grid, the positions computed so far filled, the current one dark.

Direct convolution (Dumoulin & Visin Sec. 2, Relationship 6; dilation Sec. 5.1, Relationship 15; PyTorch's
``conv2d``): the kernel slides over the input padded by ``P`` on each side, ``S`` cells per step, and

    o = floor((i + 2P - D(K - 1) - 1) / S) + 1.

Transposed convolution (Dumoulin & Visin Sec. 4.6, Relationship 14; PyTorch's ``conv_transpose2d`` with
``output_padding`` A in the role of the paper's ``a``) is drawn as its equivalent direct convolution: the
transposed convolution of an ``i x i`` input with kernel K, stride S, padding P, dilation D and output padding A
equals a stride-1 direct convolution, with the same dilation D and the kernel flipped (rotated 180 degrees), of the
grid made by

1. inserting ``S - 1`` zeros between neighbouring input cells (the "stretched" input, ``(i - 1)S + 1`` cells),
2. padding it with ``P' = D(K - 1) - P`` zero cells on the top and left and ``P' + A`` on the bottom and right
   (for D = 1 the paper's ``P' = K - P - 1``; a negative ``P'`` crops ``-P'`` cells instead),

so that its output size is

    o = (i - 1)S - 2P + D(K - 1) + A + 1.

The relation holds value for value, not only in size (``tests/test_arith_animate.py`` checks it against
``conv_transpose2d`` on random tensors). The dilation generalises the paper's ``K - P - 1`` (the paper treats
transposed convolutions without dilation); ``A`` must be smaller than S or than D, as PyTorch requires.

Use :func:`animate_convolution` for the frames, :func:`save_gif` to write them; :data:`CASES` holds the presets of
the notes (note 001's table of convolution animations, plus dilation and transposed), ``cnnzoo arith animate``
is the command line.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from .arithmetic import conv_output_size

__all__ = [
    "CASES",
    "Layout",
    "animate_convolution",
    "conv_layout",
    "gif_bytes",
    "resolve_padding",
    "save_gif",
    "transposed_output_size",
]

PADDING_WORDS = ("valid", "half", "same", "full")
MAX_GRID = 64  # cells per side of the drawn (padded, stretched) input
MAX_FRAMES = 1600  # 40 x 40 output positions

#: note 001's animations (Dumoulin & Visin's cases, their sizes), plus dilation and the transposed convolution.
#: name -> (what it shows, keyword arguments of :func:`animate_convolution`)
CASES: dict[str, tuple[str, dict]] = {
    "no-padding-no-strides": ("no padding, no strides", {"input": 4, "kernel": 3}),
    "arbitrary-padding": ("arbitrary padding, no strides", {"input": 5, "kernel": 4, "padding": 2}),
    "half-padding": ("half (same) padding, no strides: output = input",
                     {"input": 5, "kernel": 3, "padding": "half"}),
    "full-padding": ("full padding, no strides: output = input + K - 1", {"input": 5, "kernel": 3, "padding": "full"}),
    "no-padding-strides": ("no padding, strides", {"input": 5, "kernel": 3, "stride": 2}),
    "padding-strides": ("padding, strides", {"input": 5, "kernel": 3, "stride": 2, "padding": 1}),
    "padding-strides-odd": ("padding, strides (odd): the last padding row and column are never read",
                            {"input": 6, "kernel": 3, "stride": 2, "padding": 1}),
    "dilation": ("dilation 2, no padding, no strides", {"input": 7, "kernel": 3, "dilation": 2}),
    "transposed": ("transposed: no padding, strides 2 (zeros inserted between inputs)",
                   {"input": 2, "kernel": 3, "stride": 2, "transposed": True}),
}

# palette indices (the frames are "P" images with this fixed palette: crisp cells, small GIFs)
BACKGROUND, LINE, INPUT, PAD, ZERO, TAP, TAP_PAD, OUTLINE, DONE, CURRENT, TEXT, DASH, KEY_DONE = range(13)
_PALETTE = [
    (255, 255, 255),  # background
    (90, 90, 90),  # solid cell border
    (166, 206, 227),  # input cell
    (248, 248, 248),  # padding cell
    (222, 222, 222),  # zero inserted between inputs (transposed)
    (31, 90, 160),  # kernel tap over an input cell
    (130, 150, 190),  # kernel tap over padding or an inserted zero
    (8, 30, 80),  # kernel footprint outline
    (178, 223, 138),  # output computed
    (51, 140, 44),  # output being computed
    (0, 0, 0),  # text
    (160, 160, 160),  # dashed border
    (178, 223, 138),  # the legend's "output" swatch (DONE's colour; its own index, so DONE marks only the grid)
]


def resolve_padding(padding: int | str, kernel: int, dilation: int = 1) -> int:
    """Padding in cells: an int as it is, or a word of Dumoulin & Visin Sec. 2.2 for a kernel spanning
    ``E = D(K - 1) + 1`` cells: ``valid`` 0; ``half`` floor(E / 2) (Sec. 2.2.1); ``same`` the same, for an odd span
    only (where output = input at stride 1); ``full`` E - 1 (Sec. 2.2.2)."""
    if isinstance(padding, bool):
        raise ValueError(f"padding must be a non-negative integer or one of {', '.join(PADDING_WORDS)}, got {padding!r}")
    if isinstance(padding, int):
        return padding
    word = str(padding).strip().lower()
    span = dilation * (kernel - 1) + 1
    if word == "valid":
        return 0
    if word == "half":
        return span // 2
    if word == "same":
        if span % 2 == 0:
            raise ValueError(f"padding 'same' needs a kernel spanning an odd number of cells; K={kernel}, "
                             f"dilation={dilation} span {span}: use 'half' ({span // 2}) or a number")
        return span // 2
    if word == "full":
        return span - 1
    try:
        return int(word)
    except ValueError:
        raise ValueError(f"padding must be a non-negative integer or one of {', '.join(PADDING_WORDS)}, "
                         f"got {padding!r}") from None


def _check(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def transposed_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                           output_padding: int = 0) -> int:
    """Output length of a transposed convolution: ``(i - 1)S - 2P + D(K - 1) + A + 1``, computed as the output of
    its equivalent direct convolution (module docstring) with :func:`conv_output_size`: stride 1, dilation D, over the
    stretched input ``(i - 1)S + 1`` padded by ``P' = D(K - 1) - P`` before and ``P' + A`` after.

    Raises:
        ValueError: a bad number, an output padding neither smaller than S nor than D, or an output size < 1.
    """
    for name, value, low in (("input", size, 1), ("kernel", kernel, 1), ("stride", stride, 1),
                             ("padding", padding, 0), ("dilation", dilation, 1), ("output_padding", output_padding, 0)):
        _check(name, value, low)
    if output_padding and output_padding >= stride and output_padding >= dilation:
        raise ValueError(f"output_padding must be smaller than the stride or the dilation (PyTorch's rule), got "
                         f"output_padding={output_padding} with stride={stride}, dilation={dilation}")
    stretched = (size - 1) * stride + 1
    pad = dilation * (kernel - 1) - padding  # P' before; P' + A after (negative: a crop)
    length = stretched + output_padding + 2 * min(pad, 0)  # the asymmetric A and any crop folded into the length
    try:
        if length < 1:
            raise ValueError("nothing left after the crop")
        return conv_output_size(length, kernel, 1, max(pad, 0), dilation)
    except ValueError:
        out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
        raise ValueError(f"a transposed convolution of a {size}-cell input with kernel={kernel}, stride={stride}, "
                         f"padding={padding}, dilation={dilation}, output_padding={output_padding} has output size "
                         f"(i-1)S - 2P + D(K-1) + A + 1 = {out} < 1; use less padding") from None


@dataclass(frozen=True)
class Layout:
    """What one axis of an animation holds (both axes are the same: square inputs).

    ``cells``: the drawn input grid along an axis, each ``"in"`` (an input cell), ``"zero"`` (a zero inserted between
    input cells, transposed only) or ``"pad"`` (padding); ``step``: cells the kernel moves per output position
    (S, or 1 for a transposed convolution, drawn as its direct equivalent); ``output``: output cells per axis.
    """

    input: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    transposed: bool
    output_padding: int
    cells: tuple[str, ...]
    step: int
    output: int

    @property
    def span(self) -> int:
        """Cells the (dilated) kernel covers along an axis: D(K - 1) + 1."""
        return self.dilation * (self.kernel - 1) + 1

    @property
    def frames(self) -> int:
        return self.output * self.output

    def describe(self) -> list[str]:
        """One or two lines for the animation's title."""
        d = f", dilation {self.dilation}" if self.dilation > 1 else ""
        if not self.transposed:
            return [(f"conv: input {self.input}, kernel {self.kernel}, stride {self.stride}, "
                     f"padding {self.padding}{d} -> output {self.output}")]
        a = f", output_padding {self.output_padding}" if self.output_padding else ""
        pad = self.dilation * (self.kernel - 1) - self.padding
        return [(f"transposed conv: input {self.input}, kernel {self.kernel}, stride {self.stride}, "
                 f"padding {self.padding}{d}{a} -> output {self.output}"),
                f"= stride-1 conv: {self.stride - 1} zero(s) between inputs, padding {pad}"
                + (f" (+{self.output_padding} bottom/right)" if self.output_padding else "")]


def conv_layout(input: int, kernel: int, stride: int = 1, padding: int | str = 0, dilation: int = 1,
                transposed: bool = False, output_padding: int = 0) -> Layout:
    """The grid an animation draws and its output size (module docstring), every number checked.

    Raises:
        ValueError: a number out of range (one line: what was wrong, what is valid), an output size < 1, an
            output padding without ``transposed`` or not smaller than the stride or the dilation, or an animation
            too large to draw (over 64 grid cells per side or 1600 frames).
    """
    for name, value, low in (("input", input, 1), ("kernel", kernel, 1), ("stride", stride, 1),
                             ("dilation", dilation, 1), ("output_padding", output_padding, 0)):
        _check(name, value, low)
    padding = resolve_padding(padding, kernel, dilation)
    _check("padding", padding, 0)
    if output_padding and not transposed:
        raise ValueError(f"output_padding ({output_padding}) only applies to a transposed convolution; add "
                         f"transposed (--transposed) or leave it out")
    if transposed:
        out = transposed_output_size(input, kernel, stride, padding, dilation, output_padding)
        stretched = (input - 1) * stride + 1
        pad = dilation * (kernel - 1) - padding
        cells = tuple("pad" if not 0 <= t < stretched else "in" if t % stride == 0 else "zero"
                      for t in range(-pad, stretched + pad + output_padding))
        step = 1
    else:
        out = conv_output_size(input, kernel, stride, padding, dilation)
        cells = ("pad",) * padding + ("in",) * input + ("pad",) * padding
        step = stride
    if len(cells) > MAX_GRID or out * out > MAX_FRAMES:
        raise ValueError(f"this animation would draw a {len(cells)}x{len(cells)} grid and {out * out} frames; at "
                         f"most {MAX_GRID} cells per side and {MAX_FRAMES} frames (use a smaller input)")
    return Layout(input, kernel, stride, padding, dilation, transposed, output_padding, cells, step, out)


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the bitmap font only
        return ImageFont.load_default()


def _dashed_rect(draw, x0: int, y0: int, x1: int, y1: int, fill: int, dash: int = 3) -> None:
    for x in range(x0, x1 + 1, 2 * dash):
        draw.line([(x, y0), (min(x + dash - 1, x1), y0)], fill=fill)
        draw.line([(x, y1), (min(x + dash - 1, x1), y1)], fill=fill)
    for y in range(y0, y1 + 1, 2 * dash):
        draw.line([(x0, y), (x0, min(y + dash - 1, y1))], fill=fill)
        draw.line([(x1, y), (x1, min(y + dash - 1, y1))], fill=fill)


def _cell_kind(layout: Layout, r: int, c: int) -> str:
    a, b = layout.cells[r], layout.cells[c]
    if a == "in" and b == "in":
        return "in"
    return "pad" if "pad" in (a, b) else "zero"


def animate_convolution(input: int, kernel: int, stride: int = 1, padding: int | str = 0, dilation: int = 1,
                        transposed: bool = False, output_padding: int = 0, cell: int = 20) -> list:
    """The frames (``PIL.Image`` in mode "P") of one convolution, one per output position, row by row.

    Args:
        input: input size i (square, i x i).
        kernel: kernel size K.
        stride: stride S.
        padding: P cells, or ``valid``/``half``/``same``/``full`` (:func:`resolve_padding`).
        dilation: D: the taps lie D cells apart.
        transposed: draw the transposed convolution as its equivalent direct convolution (module docstring).
        output_padding: A, transposed only: extra cells on the bottom and right of the output.
        cell: pixels per grid cell (8 to 48).

    Raises:
        ValueError: as :func:`conv_layout`, or a cell size out of range.
    """
    from PIL import Image, ImageDraw

    layout = conv_layout(input, kernel, stride, padding, dilation, transposed, output_padding)
    _check("cell", cell, 8)
    if cell > 48:
        raise ValueError(f"cell must be 8 to 48 pixels, got {cell}")
    g, o = len(layout.cells), layout.output
    font = _font()
    lines = layout.describe()
    margin, gap, line_h = 10, 3 * cell, 14
    top = margin + line_h * len(lines) + 6
    probe = ImageDraw.Draw(Image.new("P", (1, 1)))
    text_w = max(int(probe.textlength(t, font=font)) for t in lines)
    legend = [(INPUT, "input"), (PAD, "padding")] + ([(ZERO, "inserted zero")] if transposed else []) + [
        (TAP, "kernel tap"), (KEY_DONE, "output")]
    sw = 10  # legend swatch
    legend_w = sum(sw + 4 + int(probe.textlength(t, font=font)) + 12 for _, t in legend)
    grid_w, out_w = g * cell, o * cell
    width = max(margin + grid_w + gap + out_w + margin, margin + max(text_w, legend_w) + margin)
    legend_y = top + max(grid_w, out_w) + 8
    height = legend_y + line_h + margin
    gx, gy = margin, top
    ox, oy = margin + grid_w + gap, top + max(0, (grid_w - out_w) // 2)

    base = Image.new("P", (width, height), BACKGROUND)
    base.putpalette([v for rgb in _PALETTE for v in rgb])
    draw = ImageDraw.Draw(base)
    for i, t in enumerate(lines):
        draw.text((margin, margin + i * line_h), t, fill=TEXT, font=font)

    def box(x: int, y: int, r: int, c: int) -> tuple[int, int, int, int]:
        return x + c * cell, y + r * cell, x + (c + 1) * cell - 1, y + (r + 1) * cell - 1

    tiles: dict[tuple[str, bool], Image.Image] = {}  # one drawn cell per (kind, under a kernel tap), pasted

    def tile(kind: str, tap: bool) -> Image.Image:
        if (kind, tap) not in tiles:
            t = Image.new("P", (cell, cell), BACKGROUND)
            t.putpalette(base.getpalette())
            td = ImageDraw.Draw(t)
            fill = (TAP if kind == "in" else TAP_PAD) if tap else {"in": INPUT, "pad": PAD, "zero": ZERO}[kind]
            td.rectangle([0, 0, cell - 1, cell - 1], fill=fill)
            if kind == "in":
                td.rectangle([0, 0, cell - 1, cell - 1], outline=LINE)
            else:
                _dashed_rect(td, 0, 0, cell - 1, cell - 1, DASH)
            tiles[kind, tap] = t
        return tiles[kind, tap]

    def input_cell(im, r: int, c: int, tap: bool = False) -> None:
        im.paste(tile(_cell_kind(layout, r, c), tap), box(gx, gy, r, c)[:2])

    for r in range(g):
        for c in range(g):
            input_cell(base, r, c)
    for r in range(o):
        for c in range(o):
            draw.rectangle(box(ox, oy, r, c), fill=BACKGROUND, outline=LINE)
    lx = margin
    for colour, label in legend:
        draw.rectangle([lx, legend_y + 2, lx + sw - 1, legend_y + 1 + sw], fill=colour)
        if colour in (PAD, ZERO):
            _dashed_rect(draw, lx, legend_y + 2, lx + sw - 1, legend_y + 1 + sw, DASH, dash=2)
        else:
            draw.rectangle([lx, legend_y + 2, lx + sw - 1, legend_y + 1 + sw], outline=LINE)
        draw.text((lx + sw + 4, legend_y), label, fill=TEXT, font=font)
        lx += sw + 4 + int(probe.textlength(label, font=font)) + 12
    ay = gy + grid_w // 2  # an arrow from the input grid to the output grid
    ax0, ax1 = gx + grid_w + cell // 2, ox - cell // 2
    draw.line([(ax0, ay), (ax1, ay)], fill=LINE, width=2)
    draw.polygon([(ax1, ay), (ax1 - 6, ay - 4), (ax1 - 6, ay + 4)], fill=LINE)

    frames = []
    done = base.copy()  # the output cells computed so far accumulate here
    done_draw = ImageDraw.Draw(done)
    for r in range(o):
        for c in range(o):
            frame = done.copy()
            d = ImageDraw.Draw(frame)
            r0, c0 = r * layout.step, c * layout.step
            for i in range(kernel):
                for j in range(kernel):
                    rr, cc = r0 + i * dilation, c0 + j * dilation
                    input_cell(frame, rr, cc, tap=True)
            x0, y0, _, _ = box(gx, gy, r0, c0)
            _, _, x1, y1 = box(gx, gy, r0 + layout.span - 1, c0 + layout.span - 1)
            d.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=OUTLINE, width=2)
            d.rectangle(box(ox, oy, r, c), fill=CURRENT, outline=LINE)
            frames.append(frame)
            done_draw.rectangle(box(ox, oy, r, c), fill=DONE, outline=LINE)
    return frames


def gif_bytes(frames: list, fps: float = 2.0) -> bytes:
    """The frames as an endlessly looping GIF, ``fps`` frames a second, the last one held three times as long."""
    if not frames:
        raise ValueError("no frames to write")
    if not 0 < fps <= 50:
        raise ValueError(f"fps must be a number in (0, 50], got {fps!r}")
    ms = max(20, round(1000 / fps))
    durations = [ms] * (len(frames) - 1) + [3 * ms]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False, disposal=1)
    return buf.getvalue()


def save_gif(frames: list, path: str | Path, fps: float = 2.0) -> Path:
    """Write the frames to ``path`` as a looping GIF, atomically (the old file or the new one, never half of one)."""
    from ..fileio import atomic_write

    path = Path(path)
    atomic_write(path, gif_bytes(frames, fps))
    return path
