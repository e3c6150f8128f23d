"""The comparison's outputs: the per-spec table (mean +- std over seeds), ``results.csv``, ``results.json`` and a
self-contained ``report.html`` (plots embedded as base64 PNG, a few lines of inline JavaScript to sort the table,
print CSS; nothing is fetched from the network).

Accuracies are fractions in [0, 1] in the CSV and JSON files, percentages on screen. ``std`` is the sample standard
deviation over the seeds (n - 1 in the denominator), absent with one seed. "Train time" is the time spent in training
steps, summed over the epochs (evaluation and checkpoints excluded); "train img/s" is images over that time;
"inference img/s" is the network alone in eval mode at batch 64 (see `cnnzoo.compare.runner.inference_speed`), on the
machine's inference fast path (`cnnzoo.evaluate.fastpath`; each row's ``infer_path`` says which).

A comparison of segmentation networks (`cnnzoo.compare.segmentation`) has rows of another column set
(`aggregate_segmentation`, ``"kind": "segmentation"``): the FCN paper's four metrics of each run's last checkpoint on
the test split, mean and min-max over the seeds, in place of the accuracies, protocols and inference speed; the same
table, CSV, JSON and HTML report around them, its plots on mean IU and per-class IoU.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import statistics
from pathlib import Path

from ..fileio import atomic_write

__all__ = ["aggregate", "aggregate_segmentation", "print_table", "render_html", "table_cells", "write_outputs"]


# ---------------------------------------------------------------------------------------------------- numbers
def _stats(values: list[float | None]) -> dict | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def _range(values: list[float | None]) -> dict | None:
    """`_stats` with the lowest and highest value (``min``, ``max``)."""
    s = _stats(values)
    if s is not None:
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        s.update(min=min(vals), max=max(vals))
    return s


def _by_spec(plans, records: list[dict]) -> dict[str, list[tuple]]:
    """(plan, record) pairs of each spec label, in the order given."""
    order: dict[str, list[tuple]] = {}
    for plan, rec in zip(plans, records):
        order.setdefault(plan.spec.label, []).append((plan, rec))
    return order


def _base_row(label: str, pairs: list[tuple]) -> tuple[dict, list[dict]]:
    """(the columns every comparison has: spec, seeds, status, parameters, MACs, ...; the spec's good records)."""
    plan0 = pairs[0][0]
    good = [r for _, r in pairs if r.get("status") == "ok"]
    failed = [{"seed": p.seed, "error": r.get("error", "failed"), "diverged": r.get("status") == "diverged"}
              for p, r in pairs if r.get("status") != "ok"]
    row = {
        "spec": label, "network": plan0.spec.name, "options": list(plan0.spec.options),
        "overrides": list(plan0.spec.overrides), "seeds": [p.seed for p, _ in pairs], "runs": len(pairs),
        "runs_ok": len(good), "failed": failed,
        "status": "ok" if not failed else "partial" if good else
                  "diverged" if all(f["diverged"] for f in failed) else "failed",
        "params": good[0]["params"] if good else plan0.params,
        "macs": good[0]["macs"] if good else plan0.macs,
        "input_size": good[0]["input_size"] if good else list(plan0.input_size),
        "run_dirs": [str(p.run_dir) for p, _ in pairs],
    }
    return row, good


def _confusion(good: list[dict]) -> list[list[int]]:
    """The confusion matrices of the good runs, summed (empty without one)."""
    if not good or not good[0]["confusion"]:
        return []
    n = len(good[0]["confusion"])
    return [[sum(r["confusion"][i][j] for r in good) for j in range(n)] for i in range(n)]


def _curves(good: list[dict], key: str) -> dict:
    """Per epoch: the mean (and spread) over seeds of the history's ``key`` and training loss, and each run's."""
    epochs = max((len(r["history"]) for r in good), default=0)
    return {
        "epoch": list(range(1, epochs + 1)),
        key: [_stats([r["history"][e][key] for r in good if len(r["history"]) > e]) for e in range(epochs)],
        "train_loss": [_stats([r["history"][e]["train_loss"] for r in good if len(r["history"]) > e])
                       for e in range(epochs)],
        f"{key}_runs": [[h[key] for h in r["history"]] for r in good],
        "train_loss_runs": [[h["train_loss"] for h in r["history"]] for r in good],
    }


def epochs_to(history: list[dict], target: float) -> int | None:
    """The first epoch whose test top-1 reaches ``target`` (None: never)."""
    for r in history:
        if r["test_acc"] >= target - 1e-12:
            return int(r["epoch"])
    return None


def aggregate(plans, records: list[dict], protocols: list[str], flip: bool = True,
              target: float | None = None) -> list[dict]:
    """One row per spec (in the order given): costs, speeds and accuracies over its seeds (mean, std, n)."""
    ok = [r for r in records if r.get("status") == "ok"]
    if target is None:  # the accuracy every run reaches: the weakest run's best
        target = min((r["best"]["top1"] for r in ok if r["best"]["top1"] is not None), default=None)
    key = "flip" if flip else "noflip"
    rows: list[dict] = []
    for label, pairs in _by_spec(plans, records).items():
        row, good = _base_row(label, pairs)
        # the precision and memory format inference ran in (`cnnzoo.evaluate.fastpath`)
        row["infer_path"] = (f"{good[0].get('infer_precision', 'fp32')}, "
                             f"{'channels-last' if good[0].get('infer_channels_last') else 'contiguous'}") if good \
            else ""
        for name, get in (("train_time_s", lambda r: r["train_time_s"]),
                          ("train_images_per_s", lambda r: r["train_images_per_s"]),
                          ("infer_images_per_s", lambda r: r["infer_images_per_s"]),
                          ("best_top1", lambda r: r["best"]["top1"]), ("best_top5", lambda r: r["best"]["top5"]),
                          ("final_top1", lambda r: r["final"]["top1"]), ("final_top5", lambda r: r["final"]["top5"])):
            row[name] = _stats([get(r) for r in good])
        row["protocols"] = {}
        for p in protocols:
            if p == "center":
                continue
            res = [r.get("protocols", {}).get(key, {}).get(p) for r in good]
            row["protocols"][p] = {"top1": _stats([x["top1"] for x in res if x]),
                                   "top5": _stats([x["top5"] for x in res if x])}
        reached = [epochs_to(r["history"], target) for r in good] if target is not None else []
        row["epochs_to_target"] = _stats([e for e in reached if e is not None])
        row["target_reached"] = sum(e is not None for e in reached)
        classes = good[0]["classes"] if good else []
        row["classes"] = classes
        row["per_class"] = {c: statistics.fmean(r["per_class"][c] for r in good) for c in classes} if good else {}
        row["confusion"] = _confusion(good)
        row["curves"] = _curves(good, "test_acc")
        row["target_top1"] = target
        rows.append(row)
    return rows


#: the FCN paper's metrics (Sec. 5) a segmentation row reports: (key in eval.json and the row, column heading)
SEG_METRICS = (("mean_iu", "mean IU %"), ("pixel_accuracy", "pixel acc %"), ("mean_accuracy", "mean acc %"),
               ("fw_iu", "f.w. IU %"))


def aggregate_segmentation(plans, records: list[dict]) -> list[dict]:
    """One row per segmentation spec (``"kind": "segmentation"``): costs, training speed, and the FCN paper's four
    metrics of the last checkpoints on the test split (`SEG_METRICS`; mean, std, min and max over the seeds), the
    per-class IoU (mean over the seeds where defined), the summed confusion matrix and the curves (test mean IU,
    training loss per epoch)."""
    rows: list[dict] = []
    for label, pairs in _by_spec(plans, records).items():
        row, good = _base_row(label, pairs)
        row["kind"] = "segmentation"
        row["train_time_s"] = _stats([r["train_time_s"] for r in good])
        row["train_images_per_s"] = _stats([r["train_images_per_s"] for r in good])
        for key, _ in SEG_METRICS:
            row[key] = _range([r["final"][key] for r in good])
        row["best_mean_iu"] = _range([r["best"]["mean_iu"] for r in good])
        classes = good[0]["classes"] if good else []
        row["classes"] = classes
        row["per_class"] = {c: (s["mean"] if (s := _stats([r["per_class"].get(c) for r in good])) else None)
                            for c in classes}
        row["confusion"] = _confusion(good)
        row["curves"] = _curves(good, "test_mean_iu")
        rows.append(row)
    return rows


def _is_segmentation(rows: list[dict]) -> bool:
    return bool(rows) and rows[0].get("kind") == "segmentation"


#: what the plots and the report call the main metric of each kind of comparison
_VIEWS = {
    False: {"final": "final_top1", "curve": "test_acc", "axis": "test top-1 accuracy (%)",
            "curve_title": "test accuracy per epoch", "final_axis": "final test top-1 (%)", "what": "accuracy",
            "per_class": "per-class test accuracy (%), final weights, mean over seeds", "run_final": "top1",
            "run_column": "final top-1 %", "h2": "Per-class accuracy", "curves_alt": "test accuracy",
            "curves_caption": "Test top-1 accuracy", "cost_caption": "Final test top-1",
            "per_class_alt": "per-class accuracy"},
    True: {"final": "mean_iu", "curve": "test_mean_iu", "axis": "test mean IU (%)",
           "curve_title": "test mean IU per epoch", "final_axis": "final test mean IU (%)", "what": "mean IU",
           "per_class": "per-class test IoU (%), last checkpoint, mean over seeds", "run_final": "mean_iu",
           "run_column": "final mean IU %", "h2": "Per-class IoU", "curves_alt": "test mean IU",
           "curves_caption": "Test mean IU", "cost_caption": "Final test mean IU", "per_class_alt": "per-class IoU"},
}


# ---------------------------------------------------------------------------------------------------- text
def _si(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g}"


def _pm(s: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    if s is None:
        return "-"
    text = f"{s['mean'] * scale:.{digits}f}"
    if s.get("std") is not None:
        text += f" ± {s['std'] * scale:.{digits}f}"
    return text


def _errors(row: dict) -> str:
    """The failed runs' errors, each once, with the seeds that hit it."""
    by_error: dict[str, list[int]] = {}
    for f in row["failed"]:
        by_error.setdefault(f["error"], []).append(f["seed"])
    return "; ".join(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: {err}"
                     for err, seeds in by_error.items())


def _status(row: dict) -> str:
    """"ok", "diverged" (every run: a NaN loss or one far above chance), "failed" or "2/3 ok" (the errors are listed
    under the table, see `_errors`)."""
    if row["status"] in ("ok", "diverged", "failed"):
        return row["status"]
    return f"{row['runs_ok']}/{row['runs']} ok"


def _span(s: dict | None, scale: float = 100.0, digits: int = 2) -> str:
    """``mean (min–max)`` of a `_range` (the mean alone for one value)."""
    if s is None:
        return "-"
    text = f"{s['mean'] * scale:.{digits}f}"
    if s["n"] > 1:
        text += f" ({s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f})"
    return text


def columns(rows: list[dict]) -> list[str]:
    if _is_segmentation(rows):
        return ["spec", "params", "MACs", "train time (s)", "train img/s", *(h for _, h in SEG_METRICS), "status"]
    protos = list(rows[0]["protocols"]) if rows else []
    target = rows[0]["target_top1"] if rows else None
    cols = ["spec", "params", "MACs", "train time (s)", "train img/s", "inference img/s", "best top-1 %",
            "best top-5 %", "final top-1 %", "final top-5 %"]
    for p in protos:
        cols += [f"top-1 % ({p})", f"top-5 % ({p})"]
    cols.append(f"epochs to {100 * target:.2f}%" if target is not None else "epochs to target")
    return cols + ["status"]


def table_cells(row: dict) -> list[tuple[str, float | str | None]]:
    """(text, sort key) of each column of ``row``, in the order of `columns`."""
    def m(s):
        return None if s is None else s["mean"]

    cells = [(row["spec"], row["spec"]), (f"{row['params']:,}", row["params"]), (_si(row["macs"]), row["macs"]),
             (_pm(row["train_time_s"], 1, 1), m(row["train_time_s"])),
             (_pm(row["train_images_per_s"], 1, 0), m(row["train_images_per_s"]))]
    if row.get("kind") == "segmentation":  # the metrics: mean (min–max) over the seeds
        return cells + [(_span(row[k]), m(row[k])) for k, _ in SEG_METRICS] + [(_status(row), row["status"])]
    cells.append((_pm(row["infer_images_per_s"], 1, 0), m(row["infer_images_per_s"])))
    for k in ("best_top1", "best_top5", "final_top1", "final_top5"):
        cells.append((_pm(row[k], 100), m(row[k])))
    for p in row["protocols"].values():
        cells += [(_pm(p["top1"], 100), m(p["top1"])), (_pm(p["top5"], 100), m(p["top5"]))]
    e = row["epochs_to_target"]
    text = _pm(e, 1, 1) if e else "-"
    ok = row["runs_ok"]
    if ok and row["target_reached"] < ok:
        text += f" ({row['target_reached']}/{ok} reached)"
    cells.append((text, m(e)))
    cells.append((_status(row), row["status"]))
    return cells


def print_table(rows: list[dict], console=None) -> None:
    """The table on the terminal (rich)."""
    from rich.console import Console
    from rich.markup import escape

    from ..texttable import print_fitted

    # the terminal's width (COLUMNS where set; 80 when there is none): a table wider than that is folded into
    # several, each starting with the spec, every header and number whole
    console = console or Console()
    cols = columns(rows)
    many = any(r["runs"] > 1 for r in rows)
    title = ("cnnzoo compare: segmentation" + (" (mean, min–max over seeds)" if many else "")) \
        if _is_segmentation(rows) else \
        "cnnzoo compare (mean ± std over seeds)" if many else "cnnzoo compare"
    print_fitted(console, title, cols, [[text for text, _ in table_cells(r)] for r in rows],
                 justify=["left" if c in ("spec", "status") else "right" for c in cols])
    for r in rows:
        if r["failed"]:
            console.print(f"[bold red]{escape(r['spec'])}[/] failed: {escape(_errors(r))}", highlight=False)


# ---------------------------------------------------------------------------------------------------- files
def _ms(s: dict | None, keys=("mean", "std")) -> list[str]:
    return ["" if s is None or s.get(k) is None else f"{s[k]:.6g}" for k in keys]


def _csv_segmentation(rows: list[dict]) -> str:
    header = ["spec", "network", "status", "runs", "runs_ok", "seeds", "params", "macs", "input_size"]
    for k in ("train_time_s", "train_images_per_s"):
        header += [f"{k}_mean", f"{k}_std"]
    for k, _ in SEG_METRICS:
        header += [f"{k}_mean", f"{k}_std", f"{k}_min", f"{k}_max"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*header, "error"])
    for r in rows:
        line = [r["spec"], r["network"], r["status"], r["runs"], r["runs_ok"], " ".join(map(str, r["seeds"])),
                r["params"], r["macs"], "x".join(map(str, r["input_size"]))]
        for k in ("train_time_s", "train_images_per_s"):
            line += _ms(r[k])
        for k, _ in SEG_METRICS:
            line += _ms(r[k], ("mean", "std", "min", "max"))
        w.writerow([*line, _errors(r)])
    return buf.getvalue()


def _csv(rows: list[dict]) -> str:
    if _is_segmentation(rows):
        return _csv_segmentation(rows)
    protos = list(rows[0]["protocols"]) if rows else []
    stat_keys = ["train_time_s", "train_images_per_s", "infer_images_per_s", "best_top1", "best_top5", "final_top1",
                 "final_top5", "epochs_to_target"]
    header = ["spec", "network", "status", "runs", "runs_ok", "seeds", "params", "macs", "input_size"]
    for k in stat_keys:
        header += [f"{k}_mean", f"{k}_std"]
    for p in protos:
        header += [f"top1_{p}_mean", f"top1_{p}_std", f"top5_{p}_mean", f"top5_{p}_std"]
    header += ["target_top1", "target_reached", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)

    def ms(s):
        return ["" if s is None else f"{s['mean']:.6g}", "" if s is None or s["std"] is None else f"{s['std']:.6g}"]

    for r in rows:
        line = [r["spec"], r["network"], r["status"], r["runs"], r["runs_ok"], " ".join(map(str, r["seeds"])),
                r["params"], r["macs"], "x".join(map(str, r["input_size"]))]
        for k in stat_keys:
            line += ms(r[k])
        for p in protos:
            line += ms(r["protocols"][p]["top1"]) + ms(r["protocols"][p]["top5"])
        line += ["" if r["target_top1"] is None else f"{r['target_top1']:.6g}", r["target_reached"],
                 _errors(r)]
        w.writerow(line)
    return buf.getvalue()


def write_outputs(out: Path, plans, records: list[dict], rows: list[dict], env: dict, protocols: list[str],
                  flip: bool, target: float | None) -> dict[str, Path]:
    """Write results.json, results.csv, the plots (``plots/*.png``) and report.html, each atomically."""
    out = Path(out)
    plots = make_plots(rows)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        atomic_write(out / "plots" / f"{name}.png", png)
    if _is_segmentation(rows):
        data = {"environment": env, "kind": "segmentation", "specs": rows, "runs": [dict(r) for r in records]}
    else:
        data = {"environment": env, "protocols": protocols, "flip": flip,
                "target_top1": rows[0]["target_top1"] if rows else target, "specs": rows,
                "runs": [{k: v for k, v in r.items()} for r in records]}
    atomic_write(out / "results.json", json.dumps(data, indent=1, default=str).encode())
    atomic_write(out / "results.csv", _csv(rows).encode())
    atomic_write(out / "report.html", render_html(rows, records, env, plots, out).encode())
    return {"report": out / "report.html", "csv": out / "results.csv", "json": out / "results.json",
            "plots": out / "plots"}


# ---------------------------------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def _colors(n: int):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def make_plots(rows: list[dict]) -> dict[str, bytes]:
    """PNG bytes by name: curves, accuracy vs cost, per-class heat map, one confusion matrix per spec."""
    good = [r for r in rows if r["runs_ok"]]
    if not good:
        return {}
    plt = _pyplot()
    from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter

    out: dict[str, bytes] = {}
    colors = dict(zip([r["spec"] for r in good], _colors(len(good))))
    view = _VIEWS[_is_segmentation(rows)]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in good:
        c, ep = colors[r["spec"]], r["curves"]["epoch"]
        for key, ax, scale in ((view["curve"], ax1, 100), ("train_loss", ax2, 1)):
            mean = [s["mean"] * scale if s else math.nan for s in r["curves"][key]]
            ax.plot(ep, mean, "o-", color=c, label=r["spec"], ms=3)
            runs = r["curves"][f"{key}_runs"]
            if len(runs) > 1:  # the band: lowest to highest seed
                lo = [min((x[e] for x in runs if len(x) > e and x[e] is not None), default=math.nan) * scale
                      for e in range(len(ep))]
                hi = [max((x[e] for x in runs if len(x) > e and x[e] is not None), default=math.nan) * scale
                      for e in range(len(ep))]
                ax.fill_between(ep, lo, hi, color=c, alpha=0.15, lw=0)
    ax1.set(xlabel="epoch", ylabel=view["axis"], title=view["curve_title"])
    ax2.set(xlabel="epoch", ylabel="training loss", title="training loss per epoch")
    losses = [s["mean"] for r in good for s in r["curves"]["train_loss"] if s and s["mean"] > 0]
    if losses and max(losses) > 10 * min(losses):  # a loss falling by decades reads best on a log axis
        ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend(fontsize=8)
    many = any(r["runs_ok"] > 1 for r in good)
    fig.suptitle("mean over seeds, band: lowest to highest seed" if many else "", fontsize=9)
    fig.tight_layout()
    out["curves"] = _png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "macs", "MACs per image"), (axes[1], "params", "parameters")):
        points = sorted((r for r in good if r[view["final"]] is not None and r[key]),
                        key=lambda r: r[view["final"]]["mean"])
        for k, r in enumerate(points):
            y, x = r[view["final"]], r[key]
            err = 100 * y["std"] if y["std"] is not None else None
            ax.errorbar([x], [100 * y["mean"]], yerr=[err] if err else None, fmt="o", color=colors[r["spec"]],
                        capsize=3, ms=7)
            # labels alternate above and below their point, so that neighbours in accuracy do not overlap
            ax.annotate(r["spec"], (x, 100 * y["mean"]), textcoords="offset points", fontsize=8,
                        xytext=(7, 5 if k % 2 else -11), color=colors[r["spec"]])
        xs = [r[key] for r in good if r[key]]
        log = bool(xs) and max(xs) > 10 * min(xs)  # networks a decade or more apart: log scale
        if log:
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.25, y=0.15)
        ax.set(xlabel=f"{label}{' (log scale)' if log else ''}", ylabel=view["final_axis"],
               title=f"{view['what']} vs {label}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out["accuracy_vs_cost"] = _png(fig)

    classes = good[0]["classes"]
    if classes:
        import numpy as np

        m = np.array([[100 * v if (v := r["per_class"].get(c)) is not None else np.nan for c in classes]
                      for r in good])
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(classes) + 3), 0.5 * len(good) + 1.8))
        im = ax.imshow(m, cmap="viridis", aspect="auto", vmin=np.nanmin(m), vmax=100)
        ax.set_yticks(range(len(good)), [r["spec"] for r in good])
        ax.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 12 else 0)
        if len(classes) <= 20:
            mid = (np.nanmin(m) + 100) / 2
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=7,
                            color="black" if m[i, j] > mid else "white")
        ax.set(xlabel="class", title=view["per_class"])
        fig.colorbar(im, ax=ax, fraction=0.03)
        fig.tight_layout()
        out["per_class"] = _png(fig)

    for i, r in enumerate(good):
        if not r["confusion"]:
            continue
        import numpy as np

        cm = np.array(r["confusion"])
        n = cm.shape[0]
        size = min(8, 2.5 + 0.35 * n)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(cm, cmap="Blues")
        if n <= 20:
            ax.set_xticks(range(n), r["classes"], rotation=90 if n > 12 else 0)
            ax.set_yticks(range(n), r["classes"])
            thresh = cm.max() / 2
            for a in range(n):
                for b in range(n):
                    ax.text(b, a, str(cm[a, b]), ha="center", va="center", fontsize=6,
                            color="white" if cm[a, b] > thresh else "black")
        seeds = f", {r['runs_ok']} seeds summed" if r["runs_ok"] > 1 else ""
        ax.set(xlabel="predicted", ylabel="true", title=f"{r['spec']}{seeds}")
        ax.title.set_fontsize(9)
        fig.tight_layout()
        out[f"confusion_{i}"] = _png(fig)
    return out


# ---------------------------------------------------------------------------------------------------- HTML
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: .88em; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .3em .55em; text-align: right; vertical-align: top; }
th { background: #f1f3f5; cursor: pointer; user-select: none; }
td { white-space: nowrap; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
td.l, th.l { text-align: left; } #results { width: 100%; }
.wide { overflow-x: auto; } tr:nth-child(even) td { background: #fafafa; }
td.failed, td.diverged, ul.failed { color: #b00020; } td.partial { color: #a05a00; }
figure { margin: 1em 0; page-break-inside: avoid; break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .85em; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { flex: 0 1 360px; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
dl.env { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; font-size: .9em; }
dl.env dt { font-weight: 600; } dl.env dd { margin: 0; }
.hint { color: #777; font-size: .8em; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; } table { font-size: 8pt; } .wide { overflow: visible; }
  .hint { display: none; } th { cursor: auto; } th.asc::after, th.desc::after { content: ""; }
  h2 { page-break-after: avoid; break-after: avoid; } tr { page-break-inside: avoid; break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""

# Sort the table by the clicked column: numbers by their data-v value, text alphabetically; click again to reverse.
JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc"), body = table.tBodies[0];
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _rel(path: str, out: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(out).resolve()))
    except ValueError:
        return str(path)


def render_html(rows: list[dict], records: list[dict], env: dict, plots: dict[str, bytes], out: Path) -> str:
    """The report as one HTML document (plots inline, no external resources)."""
    esc = html.escape
    seg = _is_segmentation(rows)
    view = _VIEWS[seg]
    cols = columns(rows)
    head = "".join(f'<th class="{"l" if c in ("spec", "status") else ""}">{esc(c)}</th>' for c in cols)
    body = []
    for r in rows:
        cells = []
        for c, (text, key) in zip(cols, table_cells(r)):
            klass = "l" if c in ("spec", "status") else ""
            if c == "status" and r["status"] != "ok":
                klass += f" {r['status']}"
            v = "" if key is None else (f"{key:.10g}" if isinstance(key, (int, float)) else str(key))
            cells.append(f'<td class="{klass.strip()}" data-v="{esc(v)}">{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    seeds = sorted({s for r in rows for s in r["seeds"]})
    target = rows[0].get("target_top1") if rows else None
    failures = "".join(f"<li><b>{esc(r['spec'])}</b>: {esc(_errors(r))}</li>" for r in rows if r["failed"])
    target_note = ""
    if target is not None:
        target_note = (f"Epochs to {100 * target:.2f}%: the first epoch whose test top-1 reaches it (by default the "
                       "best accuracy of the weakest run, so that every run reaches it).")
    if seg:
        spread, hint = "Mean (lowest–highest) over seeds.", (
            "Metrics: the FCN paper's (Sec. 5) pixel accuracy, mean accuracy, mean IU and frequency-weighted IU of "
            "each run's last checkpoint on the test split (label 255 ignored), as in its eval.json. Train time: time "
            "in training steps summed over epochs (evaluation and checkpoints excluded).")
    else:
        spread, hint = "Mean ± sample standard deviation over seeds.", (
            "Train time: time in training steps summed over epochs (evaluation and checkpoints excluded). Inference: "
            f"the network alone in eval mode, batch 64. {target_note}")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>cnnzoo compare: {esc(', '.join(r['spec'] for r in rows))}</title>",
        f"<style>{CSS}</style>", "</head>", "<body>",
        "<h1>cnnzoo compare</h1>",
        (f'<p class="sub">{len(rows)} spec(s) x {len(seeds)} seed(s) ({esc(", ".join(map(str, seeds)))}), same data, '
         f"recipe, data order and augmentation per seed; {esc(env.get('date') or '')}</p>"),
        "<h2>Results</h2>",
        f'<p class="hint">Click a column header to sort. {spread}</p>',
        (f'<div class="wide"><table class="sortable" id="results"><thead><tr>{head}</tr></thead>'
         f'<tbody>{"".join(body)}</tbody></table></div>'),
        f'<p>Failed runs:</p><ul class="failed">{failures}</ul>' if failures else "",
        f'<p class="hint">{esc(hint)}</p>',
    ]
    if plots.get("curves"):
        img = _img(plots["curves"], f"{view['curves_alt']} and training loss per epoch")
        parts += ["<h2>Training curves</h2>",
                  (f"<figure>{img}<figcaption>{view['curves_caption']} and training loss per epoch, one line per "
                   "spec "
                   "(the loss is each run's train.loss: specs trained with different losses are not comparable on "
                   "it).</figcaption></figure>")]
    if plots.get("accuracy_vs_cost"):
        img = _img(plots["accuracy_vs_cost"], f"final {view['what']} vs MACs and vs parameters")
        parts += [f"<h2>{esc(view['what'].capitalize())} vs cost</h2>",
                  (f"<figure>{img}<figcaption>{view['cost_caption']} against MACs per image and against "
                   "parameters "
                   "(error bars: standard deviation over seeds).</figcaption></figure>")]
    if plots.get("per_class"):
        parts += [f"<h2>{view['h2']}</h2>",
                  f"<figure>{_img(plots['per_class'], view['per_class_alt'] + ' heat map across specs')}</figure>"]
    confusions = [(r, plots.get(f"confusion_{i}")) for i, r in enumerate(r for r in rows if r["runs_ok"])]
    if any(png for _, png in confusions):
        parts.append('<h2>Confusion matrices</h2><div class="grid">')
        for r, png in confusions:
            if png:
                alt = "confusion matrix of " + r["spec"]
                parts.append(f"<figure>{_img(png, alt)}<figcaption>{esc(r['spec'])} (rows: true class, columns: "
                             "predicted)</figcaption></figure>")
        parts.append("</div>")
    run_rows = []
    for rec in records:
        ok = rec.get("status") == "ok"
        value = rec["final"].get(view["run_final"]) if ok else None
        final = f"{100 * value:.2f}" if value is not None else "-"
        where = esc(_rel(rec.get("run_dir", ""), out))
        status = esc("ok" if ok else rec.get("error", "failed"))
        run_rows.append(
            f'<tr><td class="l">{esc(str(rec.get("spec")))}</td><td>{rec.get("seed")}</td>'
            f'<td class="l"><a href="{where}">{where}</a></td><td>{rec.get("epochs", "-") if ok else "-"}</td>'
            f"<td>{final}</td><td>{'reused' if rec.get('reused') else 'trained'}</td>"
            f'<td class="l{"" if ok else " failed"}">{status}</td></tr>')
    parts += ["<h2>Runs</h2>",
              ('<table class="sortable"><thead><tr><th class="l">spec</th><th>seed</th><th class="l">run directory'
               f'</th><th>epochs</th><th>{view["run_column"]}</th><th>this time</th><th class="l">status</th></tr>'
               "</thead>"
               f"<tbody>{''.join(run_rows)}</tbody></table>")]
    env_rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in env.items()
                       if k != "command" and v is not None)
    parts += ["<h2>Environment</h2>", f'<dl class="env">{env_rows}</dl>',
              "<h2>Command</h2>", f"<pre>{esc(env.get('command') or '')}</pre>",
              ('<p class="hint">Re-running this command in the same directory reuses the finished runs and resumes '
               "interrupted ones.</p>"),
              f"<script>{JS}</script>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"
