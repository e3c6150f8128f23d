"""Pictures of a summary: where parameters and MACs sit, how the receptive field grows; the zoo at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .summary import Summary

__all__ = ["plot_summary", "plot_zoo", "summary_figure", "zoo_figure"]


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


def plot_summary(summary: Summary, path: str | Path, title: str | None = None) -> Path:
    """Three panels over the rows of ``summary``: parameters, MACs (both as % of the total) and receptive field.

    Rows with neither parameters nor MACs (ReLU, pooling) are left out of the bar panels but kept
    in the receptive-field curve, which is drawn on every row that has a spatial field.
    """
    path = _check_path(path)
    fig = summary_figure(summary, title)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
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


def plot_zoo(names: Sequence[str], path: str | Path) -> Path:
    """Parameters against MACs (log-log) for registered networks at their paper input sizes, each labelled."""
    import torch

    from ..registry import create_model, get_card
    from .summary import summarize

    path = _check_path(path)
    if not names:
        raise ValueError("no networks to plot")
    points = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name)
        s = summarize(model, get_card(name).input_size)
        points.append((name, s.total_params, s.macs))
    fig = zoo_figure(points)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def zoo_figure(points: Sequence[tuple[str, int, int]]):
    """Labelled log-log scatter of (name, parameters, MACs): the figure :func:`plot_zoo` saves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 8))
    ax.scatter([p / 1e6 for _, p, _ in points], [m / 1e9 for _, _, m in points], color="tab:blue")
    for name, p, m in points:
        ax.annotate(name, (p / 1e6, m / 1e9), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("GMACs at the paper's input size (batch 1)")
    ax.set_title(f"cnnzoo: parameters against compute ({len(points)} networks)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
