"""Pictures of a summary: where parameters and MACs sit, how the receptive field grows; the zoo at a glance."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .summary import Summary

__all__ = ["ZooPoint", "plot_summary", "plot_zoo", "summary_figure", "zoo_figure", "zoo_html", "zoo_points"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"plot file {str(path)!r} must end in .png, .pdf or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig, path: Path, dpi: int = 110) -> None:
    """Save ``fig`` atomically and close it (`cnnzoo.fileio.atomic_savefig`)."""
    from ..fileio import atomic_savefig

    atomic_savefig(fig, path, dpi)


def plot_summary(summary: Summary, path: str | Path, title: str | None = None) -> Path:
    """Three panels over the rows of ``summary``: parameters, MACs (both as % of the total) and receptive field.

    Rows with neither parameters nor MACs (ReLU, pooling) are left out of the bar panels but kept
    in the receptive-field curve, which is drawn on every row that has a spatial field.
    """
    path = _check_path(path)
    _save(summary_figure(summary, title), path)
    return path


def summary_figure(summary: Summary, title: str | None = None):
    """The matplotlib figure :func:`plot_summary` saves."""
    plt = _pyplot()
    rows = [r for r in summary.layers if r.params or r.macs]
    names = [r.name for r in rows]
    fig_h = max(6.0, 0.18 * len(rows) + 3)
    fig, axes = plt.subplots(1, 3, figsize=(16, fig_h), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    y = range(len(rows))
    tp, tm = max(summary.total_params, 1), max(summary.macs, 1)
    axes[0].barh(y, [100 * r.params / tp for r in rows], color="tab:blue")
    axes[0].set_xlabel(f"% of parameters (total {summary.total_params / 1e6:.2f} M)")
    axes[1].barh(y, [100 * r.macs / tm for r in rows], color="tab:orange")
    axes[1].set_xlabel(f"% of MACs (total {summary.macs / 1e9:.3f} GMACs)")
    for ax in axes[:2]:
        ax.set_yticks(list(y), names, fontsize=7 if len(rows) > 30 else 9)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    spatial = [(i, r) for i, r in enumerate(summary.layers) if r.rf and r.output_shape and len(r.output_shape) == 4]
    ax = axes[2]
    if spatial:
        xs = [i for i, _ in spatial]
        ax.plot(xs, [r.rf[0] for _, r in spatial], marker=".", label="receptive field (pixels)")
        ax.plot(xs, [r.jump[0] for _, r in spatial], marker=".", label="jump = cumulative stride (pixels)")
        ax.axhline(summary.input_size[1], color="grey", ls="--", lw=1, label=f"input height {summary.input_size[1]}")
        last = spatial[-1][1]
        ax.annotate(f"{spatial[-1][1].name}: {last.rf[0]}", (xs[-1], last.rf[0]), fontsize=8, ha="right", va="bottom")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("layer index (execution order)")
    ax.set_ylabel("input pixels")
    ax.set_title("receptive field growth")
    ax.grid(alpha=0.3)
    c, h, w = summary.input_size
    fig.suptitle(title or f"{summary.model_name} at {c}x{h}x{w}: where the parameters and MACs are")
    fig.tight_layout()
    return fig


ZOO_SUFFIXES = (".png", ".pdf", ".svg", ".html")
"""What :func:`plot_zoo` writes: a figure, or one self-contained interactive HTML page."""


@dataclass(frozen=True)
class ZooPoint:
    """One network in the zoo plot."""

    name: str
    params: int
    macs: int
    family: str = ""
    input_size: tuple[int, int, int] | None = None


def zoo_points(names: Sequence[str], progress=None) -> list[ZooPoint]:
    """Parameters and MACs of registered networks at their paper input sizes: the stored counts (`cnnzoo.counts`),
    else traced on the meta device. ``progress(what, done, total)``: called as networks are counted."""
    import torch

    from ..counts import stored
    from ..registry import create_model, get_card
    from .summary import summarize

    if not names:
        raise ValueError("no networks to plot")
    points = []
    for i, name in enumerate(names):
        if progress is not None:
            progress("counting parameters and MACs", i, len(names))
        card = get_card(name)
        entry = stored(name)
        if entry is not None:
            points.append(ZooPoint(name, entry["params"], entry["macs"], card.family, tuple(card.input_size)))
            continue
        with torch.device("meta"):
            model = create_model(name)
        s = summarize(model, card.input_size)
        points.append(ZooPoint(name, s.total_params, s.macs, card.family, tuple(card.input_size)))
    if progress is not None:
        progress("counting parameters and MACs", len(names), len(names))
    return points


def plot_zoo(names: Sequence[str], path: str | Path, progress=None) -> Path:
    """Parameters against MACs (log-log) for registered networks at their paper input sizes, coloured by family.

    ``.png``/``.pdf``/``.svg``: labels where they can be read without overlapping (the rest are named by the
    ``.html`` version). ``.html``: one self-contained page (inline SVG and script, nothing fetched) that names
    each network on hover and shows or hides a family from its legend entry. ``progress(what, done, total)``:
    called as the networks are counted and the figure is drawn (e.g. a `cnnzoo.status.Steps`).
    """
    path = Path(path)
    if path.suffix.lower() not in ZOO_SUFFIXES:
        raise ValueError(f"plot file {str(path)!r} must end in {', '.join(ZOO_SUFFIXES)}")
    points = zoo_points(names, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".html":
        from ..fileio import atomic_write

        if progress is not None:
            progress(f"writing {path.name}", 0, None)
        atomic_write(path, zoo_html(points).encode("utf-8"))
        return path
    fig = zoo_figure(points, progress)
    if progress is not None:
        progress(f"writing {path.name}", 0, None)
    _save(fig, path)
    return path


def _as_point(p) -> ZooPoint:
    return p if isinstance(p, ZooPoint) else ZooPoint(*p)


def _family_colours(families: Sequence[str]) -> dict[str, str]:
    """One colour per family, from matplotlib's 20-colour qualitative palette (tab20: pairs of shades)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    order = sorted(set(families))
    cmap = colormaps["tab20"]
    # even indices first (the saturated shade of each pair), so up to 10 families get clearly distinct hues
    idx = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return {f: to_hex(cmap(idx[i % 20])) for i, f in enumerate(order)}


def _overlaps(a, b, pad: float = 1.0) -> bool:
    return not (a.x1 + pad < b.x0 or b.x1 + pad < a.x0 or a.y1 + pad < b.y0 or b.y1 + pad < a.y0)


def zoo_figure(points: Sequence[ZooPoint | tuple], progress=None):
    """Log-log scatter of parameters against MACs: the figure :func:`plot_zoo` saves.

    Points are coloured by family, with a legend. Labels are placed greedily, most isolated point first, at the
    first of eight spots around the point where the text overlaps no other label and no point; a name with no
    such spot is left out (the title says how many are named), so every label that is drawn can be read.
    ``progress(what, done, total)``: called as the labels are placed.
    """
    from matplotlib.transforms import Bbox

    plt = _pyplot()
    pts = [_as_point(p) for p in points]
    colours = _family_colours([p.family for p in pts])
    fig, ax = plt.subplots(figsize=(12, 8.5))
    xs, ys = [max(p.params, 1) / 1e6 for p in pts], [max(p.macs, 1) / 1e9 for p in pts]
    for family, colour in colours.items():
        sel = [i for i, p in enumerate(pts) if p.family == family]
        ax.scatter([xs[i] for i in sel], [ys[i] for i in sel], color=colour, s=28, zorder=3, edgecolors="white",
                   linewidths=0.5, label=family or None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("GMACs at the paper's input size (batch 1)")
    ax.grid(alpha=0.3, which="both")
    if any(p.family for p in pts):
        ax.legend(title="family", fontsize=8, title_fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False)
    ax.set_title(f"cnnzoo: parameters against compute ({len(pts)} networks)")
    fig.tight_layout()

    renderer = fig.canvas.get_renderer()
    disp = ax.transData.transform(list(zip(xs, ys)))
    frame = ax.get_window_extent(renderer)
    marker = 4.0  # half the marker's size in display pixels, and a little air
    dots = [Bbox([[x - marker, y - marker], [x + marker, y + marker]]) for x, y in disp]

    def isolation(i: int) -> float:
        return min((float(((disp[i] - disp[j]) ** 2).sum()) for j in range(len(pts)) if j != i), default=1e12)

    spots = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
             (-5, -3, "right", "top"), (0, 6, "center", "bottom"), (0, -6, "center", "top"),
             (7, 0, "left", "center"), (-7, 0, "right", "center")]
    placed = []
    for k, i in enumerate(sorted(range(len(pts)), key=isolation, reverse=True)):
        if progress is not None:
            progress("placing the names", k, len(pts))
        for dx, dy, ha, va in spots:
            t = ax.annotate(pts[i].name, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                            ha=ha, va=va, zorder=4)
            box = t.get_window_extent(renderer)
            clash = (box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1
                     or any(_overlaps(box, b) for b in placed)
                     or any(_overlaps(box, d, 0.0) for j, d in enumerate(dots) if j != i))
            if not clash:
                placed.append(box)
                break
            t.remove()
    if progress is not None:
        progress("placing the names", len(pts), len(pts))
    if len(placed) < len(pts):
        ax.set_title(f"cnnzoo: parameters against compute ({len(pts)} networks; {len(placed)} named where the names "
                     f"fit: `--plot FILE.html` names each on hover)", fontsize=10)
    return fig


def _ticks(lo: float, hi: float) -> list[int]:
    return list(range(math.floor(lo), math.ceil(hi) + 1))


def zoo_html(points: Sequence[ZooPoint | tuple]) -> str:
    """The zoo plot as one self-contained HTML page: an inline SVG (log-log axes, one circle per network, coloured
    by family) and a short script for the hover box and the family toggles. Nothing is fetched from a network;
    without the script each circle still names itself in its SVG ``<title>`` tooltip."""
    pts = [_as_point(p) for p in points]
    colours = _family_colours([p.family for p in pts])
    lx = [math.log10(max(p.params, 1) / 1e6) for p in pts]
    ly = [math.log10(max(p.macs, 1) / 1e9) for p in pts]
    xt, yt = _ticks(min(lx), max(lx)), _ticks(min(ly), max(ly))
    w, h, left, right, top, bottom = 900, 620, 70, 20, 20, 55

    def px(v: float) -> float:
        return left + (v - xt[0]) / max(xt[-1] - xt[0], 1) * (w - left - right)

    def py(v: float) -> float:
        return h - bottom - (v - yt[0]) / max(yt[-1] - yt[0], 1) * (h - top - bottom)

    def label(e: int) -> str:
        return f"{10.0 ** e:g}"

    svg = [(f'<svg id="zoo" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="sans-serif" font-size="12">')]
    for e in xt:
        svg.append(f'<line x1="{px(e):.1f}" y1="{top}" x2="{px(e):.1f}" y2="{h - bottom}" stroke="#ddd"/>'
                   f'<text x="{px(e):.1f}" y="{h - bottom + 16}" text-anchor="middle">{label(e)}</text>')
    for e in yt:
        svg.append(f'<line x1="{left}" y1="{py(e):.1f}" x2="{w - right}" y2="{py(e):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{py(e) + 4:.1f}" text-anchor="end">{label(e)}</text>')
    svg.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" '
               f'stroke="#888"/>')
    svg.append(f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">parameters (millions)</text>')
    svg.append(f'<text transform="translate(16 {(top + h - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f"GMACs at the paper's input size (batch 1)</text>")
    for p, x, y in zip(pts, lx, ly):
        size = "x".join(map(str, p.input_size)) if p.input_size else ""
        info = f"{p.name} ({p.family}): {p.params / 1e6:.2f} M parameters, {p.macs / 1e9:.3f} GMACs" + (
            f" at {size}" if size else "")
        svg.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{colours[p.family]}" stroke="white" '
                   f'data-name="{html.escape(p.name)}" data-family="{html.escape(p.family)}" '
                   f'data-info="{html.escape(info)}"><title>{html.escape(info)}</title></circle>')
    svg.append("</svg>")
    legend = "".join(
        f'<label><input type="checkbox" checked data-family="{html.escape(f)}"> '
        f'<span class="sw" style="background:{c}"></span>{html.escape(f or "(none)")}</label>'
        for f, c in colours.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cnnzoo: parameters against compute</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
#wrap {{ display: flex; gap: 16px; align-items: flex-start; }}
#legend label {{ display: block; font-size: 13px; cursor: pointer; }}
.sw {{ display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin: 0 4px; }}
#tip {{ position: fixed; pointer-events: none; background: #fff; border: 1px solid #888; padding: 4px 6px;
        font-size: 13px; display: none; }}
circle:hover {{ stroke: black; stroke-width: 2; }}
</style></head><body>
<h3>cnnzoo: parameters against compute ({len(pts)} networks, log-log; hover a point for its name)</h3>
<div id="wrap">{"".join(svg)}<div id="legend"><b>family</b>{legend}</div></div>
<div id="tip"></div>
<script>
const tip = document.getElementById("tip");
document.querySelectorAll("circle").forEach(c => {{
  c.addEventListener("mousemove", e => {{
    tip.textContent = c.dataset.info; tip.style.display = "block";
    tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
  }});
  c.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
}});
document.querySelectorAll("#legend input").forEach(box => box.addEventListener("change", () => {{
  document.querySelectorAll("circle").forEach(c => {{
    if (c.dataset.family === box.dataset.family) c.style.display = box.checked ? "" : "none";
  }});
}}));
</script>
</body></html>
"""
