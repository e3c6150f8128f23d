"""The pictures and the page of `cnnzoo explain`: labelled PNG panels and one self-contained HTML page.

Everything here turns arrays that the other `cnnzoo.explain` modules computed into pixels and text; nothing is
computed about the network. Plain numpy + PIL (text with PIL's bundled font) + matplotlib colormaps, no figure.

- `panel`: tiles side by side, each with a caption under it, and a title strip on top (the method, the target class
  and its probability, the top-3 predictions).
- `probability_map` / `class_map`: Zeiler & Fergus 2014 Fig. 7 (d) and (e): the occlusion grid of the target
  class's probability (viridis on the absolute scale 0..1, with a colour bar) and of the most likely class (one
  colour per class, tab20 / tab10, with a legend of the class names present).
- `signed_image`: an input-space signal (guided backprop, guided Grad-CAM, deconvnet projection) as an image:
  ``0.5 + 0.5 * x / max|x|`` per image (one scale over all channels), so 0 is mid grey, positive brighter and
  negative darker (the paper's projections are contrast-stretched too, ZF Sec. 2.1 / Fig. 2).
- `topk_grid`: Zeiler & Fergus Fig. 2: the k projections (left) beside the k image patches (right).
- `sanity_grid`: Adebayo et al. 2018 Fig. 2: a row per map, a column per cascading-randomisation step.
- `html_page`: one page, images embedded as ``data:image/png;base64`` URIs, inline CSS, no external resource.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["class_map", "enlarge", "html_page", "panel", "png_bytes", "probability_map", "sanity_grid", "signed_image",
           "stack", "topk_grid", "upscale"]

WHITE = 255
_FONT_SIZE = 12


def _font(size: int = _FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, AttributeError):
        return ImageFont.load_default()


def _text_width(text: str, font) -> int:
    left, _, right, _ = font.getbbox(text)
    return math.ceil(right - left)


def _line_height(font) -> int:
    _, top, _, bottom = font.getbbox("Ag|(]")
    return math.ceil(bottom - top) + 4


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise ValueError(f"pictures must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if a.ndim == 3 and a.shape[2] == 4:
        return a[..., :3]
    return a


def png_bytes(a: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) encoded as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def upscale(a: np.ndarray, min_side: int = 160, max_factor: int = 16) -> np.ndarray:
    """``a`` enlarged by the integer factor that brings its shorter side to at least ``min_side`` (nearest neighbour:
    every pixel stays a visible square; at most ``max_factor``, never shrunk)."""
    a = np.asarray(a)
    f = max(1, min(max_factor, math.ceil(min_side / max(1, min(a.shape[:2])))))
    return a.repeat(f, 0).repeat(f, 1) if f > 1 else a


def enlarge(a: np.ndarray, factor: int) -> np.ndarray:
    """``a`` with every pixel repeated ``factor`` x ``factor`` times (nearest neighbour)."""
    a = np.asarray(a)
    return a.repeat(factor, 0).repeat(factor, 1) if factor > 1 else a


def text_block(lines: Sequence[str], width: int = 0, size: int = _FONT_SIZE, pad: int = 4) -> np.ndarray:
    """White strip with ``lines`` in black, at least ``width`` wide (wider where a line needs it)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    lh = _line_height(font)
    w = max([width] + [_text_width(t, font) + 2 * pad for t in lines])
    h = lh * len(lines) + 2 * pad
    im = Image.new("RGB", (max(w, 1), max(h, 1)), (WHITE, WHITE, WHITE))
    draw = ImageDraw.Draw(im)
    for i, t in enumerate(lines):
        draw.text((pad, pad + i * lh), t, fill=(0, 0, 0), font=font)
    return np.asarray(im)


def _pad_to(a: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.full((h, w, 3), WHITE, dtype=np.uint8)
    out[:a.shape[0], :a.shape[1]] = a
    return out


def stack(parts: Sequence[np.ndarray], axis: int = 0, gap: int = 6) -> np.ndarray:
    """Pictures one under the other (``axis=0``) or side by side (``axis=1``), left/top aligned, ``gap`` white pixels
    between them."""
    parts = [_rgb(p) for p in parts]
    if axis == 0:
        w = max(p.shape[1] for p in parts)
        rows = []
        for i, p in enumerate(parts):
            rows.append(_pad_to(p, p.shape[0], w))
            if i < len(parts) - 1 and gap:
                rows.append(np.full((gap, w, 3), WHITE, dtype=np.uint8))
        return np.concatenate(rows, 0)
    h = max(p.shape[0] for p in parts)
    cols = []
    for i, p in enumerate(parts):
        cols.append(_pad_to(p, h, p.shape[1]))
        if i < len(parts) - 1 and gap:
            cols.append(np.full((h, gap, 3), WHITE, dtype=np.uint8))
    return np.concatenate(cols, 1)


def _border(a: np.ndarray, width: int = 6) -> np.ndarray:
    a = _rgb(a)
    out = np.full((a.shape[0] + 2 * width, a.shape[1] + 2 * width, 3), WHITE, dtype=np.uint8)
    out[width:width + a.shape[0], width:width + a.shape[1]] = a
    return out


def panel(tiles: Sequence[tuple[np.ndarray, str]], title: Sequence[str]) -> np.ndarray:
    """Tiles side by side, each captioned under it, under a title strip of the lines ``title``."""
    cols = [stack([_rgb(t), text_block([c], width=_rgb(t).shape[1], size=11, pad=2)], axis=0, gap=2)
            for t, c in tiles]
    body = stack(cols, axis=1, gap=8)
    head = text_block(title, width=body.shape[1])
    return _border(stack([head, body], axis=0, gap=2))


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def signed_image(x) -> np.ndarray:
    """An input-space signal (C, H, W) as uint8 (H, W, 3): ``0.5 + 0.5 * x / max|x|`` (one scale over all channels;
    0 is mid grey; an all-zero signal is all grey). One channel is drawn grey, three as RGB, any other count as the
    channels' mean."""
    a = np.asarray(x.detach().float().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"signed_image takes one signal (C, H, W), got {a.shape}")
    if a.shape[0] not in (1, 3):
        a = a.mean(0, keepdims=True)
    m = float(np.abs(a).max())
    a = 0.5 + 0.5 * (a / m if m > 0 else a)
    out = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return _rgb(out)


def probability_map(prob, size: int, label: str = "probability") -> np.ndarray:
    """ZF Fig. 7 (d): the occlusion grid of probabilities (gh, gw), viridis on the fixed scale 0..1, enlarged
    (nearest) to about ``size`` pixels, with a colour bar and its ends labelled."""
    p = np.asarray(prob.detach().float().cpu() if hasattr(prob, "detach") else prob, dtype=np.float64)
    cmap = _colormap("viridis")
    colours = np.round(cmap(np.clip(p, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)
    grid = upscale(colours, size, max_factor=64)
    bar_h = grid.shape[0]
    ramp = np.linspace(1.0, 0.0, bar_h)[:, None].repeat(12, 1)
    bar = np.round(cmap(ramp)[..., :3] * 255).astype(np.uint8)
    legend = stack([bar, _end_labels(bar_h, "1.0", "0.0")], axis=1, gap=3)
    return stack([grid, legend], axis=1, gap=6)


def _end_labels(height: int, top: str, bottom: str, size: int = 11) -> np.ndarray:
    """A white column ``height`` pixels high with ``top`` written at its top and ``bottom`` at its bottom."""
    from PIL import Image, ImageDraw

    font = _font(size)
    w = max(_text_width(top, font), _text_width(bottom, font)) + 2
    lh = _line_height(font)
    im = Image.new("RGB", (w, max(height, 2 * lh)), (WHITE, WHITE, WHITE))
    draw = ImageDraw.Draw(im)
    draw.text((0, 0), top, fill=(0, 0, 0), font=font)
    draw.text((0, im.height - lh), bottom, fill=(0, 0, 0), font=font)
    return np.asarray(im)


def _class_colours(n: int) -> np.ndarray:
    cmap = _colormap("tab10" if n <= 10 else "tab20")
    k = 10 if n <= 10 else 20
    return np.round(np.array([cmap(i % k)[:3] for i in range(n)]) * 255).astype(np.uint8)


def class_map(top_class, classes: Sequence[str], size: int, max_legend: int = 12) -> np.ndarray:
    """ZF Fig. 7 (e): the most likely class at each occluder position (gh, gw), one colour per class (tab10 for up to
    10 classes, else tab20, cycling), enlarged to about ``size`` pixels, with a legend of the classes present (the
    most frequent first, at most ``max_legend``)."""
    t = np.asarray(top_class.detach().cpu() if hasattr(top_class, "detach") else top_class, dtype=np.int64)
    colours = _class_colours(len(classes))
    grid = upscale(colours[t], size, max_factor=64)
    present, counts = np.unique(t, return_counts=True)
    order = [int(present[i]) for i in np.argsort(-counts, kind="stable")]
    rows = []
    for c in order[:max_legend]:
        swatch = np.zeros((12, 12, 3), dtype=np.uint8) + colours[c]
        rows.append(stack([swatch, text_block([str(classes[c])], size=11, pad=0)], axis=1, gap=4))
    if len(order) > max_legend:
        rows.append(text_block([f"+{len(order) - max_legend} more"], size=11, pad=0))
    return stack([grid, stack(rows, axis=0, gap=2)], axis=1, gap=6)


def topk_grid(projections: Sequence[np.ndarray], patches: Sequence[np.ndarray], title: Sequence[str],
              tile: int = 48, ncols: int | None = None) -> np.ndarray:
    """ZF Fig. 2: the k projections tiled on the left, the k image patches tiled the same way on the right (tile i
    of both is the same activation), each enlarged to about ``tile`` pixels, under a title strip."""
    from .visual import tile as tile_grid

    n = len(patches)
    ncols = ncols or math.ceil(math.sqrt(n))
    left = tile_grid([upscale(_rgb(p), tile) for p in projections], ncols, padding=2)
    right = tile_grid([upscale(_rgb(p), tile) for p in patches], ncols, padding=2)
    cap_l = text_block(["projections"], width=left.shape[1], size=11, pad=2)
    cap_r = text_block(["image patches"], width=right.shape[1], size=11, pad=2)
    body = stack([stack([left, cap_l], 0, 2), stack([right, cap_r], 0, 2)], axis=1, gap=12)
    return _border(stack([text_block(title, width=body.shape[1]), body], axis=0, gap=2))


def sanity_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], columns: Sequence[str], title: Sequence[str],
                tile: int = 64) -> np.ndarray:
    """Adebayo et al. Fig. 2: one row per (image, method), one column per map (the trained network's, then after each
    randomisation step), column labels on top, row labels on the left."""
    lines = []
    for label, maps in rows:
        tiles = [upscale(_rgb(m), tile) for m in maps]
        lines.append((label, tiles))
    tw = max(t.shape[1] for _, tiles in lines for t in tiles)
    heads = [text_block([c], width=tw, size=10, pad=1)[:, :tw] for c in columns]
    label_w = max(_text_width(lab, _font(11)) for lab, _ in lines) + 8
    header = stack([np.full((heads[0].shape[0], label_w, 3), WHITE, np.uint8)] + heads, axis=1, gap=3)
    body = [header]
    for label, tiles in lines:
        lab = text_block([label], width=label_w, size=11, pad=2)
        body.append(stack([lab] + tiles, axis=1, gap=3))
    grid = stack(body, axis=0, gap=3)
    return _border(stack([text_block(title, width=grid.shape[1]), grid], axis=0, gap=2))


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:6px;vertical-align:top;text-align:left}figure{margin:0}
figcaption{font-size:0.85em;color:#444;max-width:40em}img{image-rendering:pixelated;max-width:100%}
code{background:#f4f4f4;padding:0 3px}"""


def html_page(title: str, intro: Sequence[str], rows: Sequence[str], columns: Sequence[str],
              cells: dict[tuple[int, int], tuple[bytes, str]], sections: Sequence[tuple[str, bytes, str]] = (),
              tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]] = ()) -> str:
    """One self-contained HTML page: ``intro`` lines, the table of ``rows`` (images) x ``columns`` (methods) whose
    cells are (PNG bytes, caption), then ``sections`` (heading, PNG, caption) and ``tables`` (heading, header,
    rows of text). Every picture is a data URI; the page loads nothing else."""
    e = html.escape
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    out += [f"<p>{e(line)}</p>" for line in intro]

    def figure(png: bytes, caption: str, alt: str) -> str:
        return (f"<figure><img src=\"{_uri(png)}\" alt=\"{e(alt)}\"><figcaption>{e(caption)}</figcaption>"
                "</figure>")

    if rows and columns and cells:
        out.append("<table><tr><th>image</th>" + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr>")
        for i, r in enumerate(rows):
            tds = []
            for j, c in enumerate(columns):
                cell = cells.get((i, j))
                tds.append(f"<td>{figure(cell[0], cell[1], f'{c} of {r}')}</td>" if cell else "<td></td>")
            out.append(f"<tr><th>{e(r)}</th>{''.join(tds)}</tr>")
        out.append("</table>")
    for heading, png, caption in sections:
        out.append(f"<h2>{e(heading)}</h2>{figure(png, caption, heading)}")
    for heading, header, body in tables:
        out.append(f"<h2>{e(heading)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in body]
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
