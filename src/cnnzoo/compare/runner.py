"""Planning and running a comparison: one run directory per spec x seed, trained by the ordinary `Trainer`.

Layout of ``--out DIR``::

    DIR/comparison.json      the marker: cnnzoo wrote this directory (written before anything else)
    DIR/runs/SLUG/seedS/     a cnnzoo run directory (as `cnnzoo train --run-dir` writes it) + compare.json
    DIR/logs/SLUG-seedS.log  the output of a run trained in a subprocess (--jobs N)
    DIR/report.html, DIR/results.csv, DIR/results.json, DIR/plots/*.png

What makes re-running a comparison safe:

- A run whose last checkpoint has reached ``train.epochs`` (and whose final evaluation is written) is finished: it is
  reused as it is, and its measurements (inference speed, protocol accuracies) are read back from its
  ``compare.json``, so the numbers are the same.
- A run with a checkpoint short of that is resumed (`Trainer(resume=...)`, bit-identical on CPU); a run killed before
  its first checkpoint starts again.
- A run directory whose config differs from what the command now asks for (e.g. another ``train.epochs``) is never
  touched: the command fails before training anything, naming the difference.
- One comparison at a time writes DIR (a lock, as for run directories); each run has its own lock besides.
- DIR must be new, empty or a comparison (`check_comparison_dir`): a directory holding anything else (a report.html
  or results.csv of the user's) is refused before anything is written, as `cnnzoo train` refuses a --run-dir that
  is not a run.

Specs naming segmentation networks are planned as `cnnzoo.compare.segmentation.SegRunPlan` (trained by
`SegTrainer`) and go through the same directory checks, locks, reuse and resume, sequential or parallel running.

Runs of one spec x seed are independent, so ``jobs`` runs them in subprocesses side by side; each gets ``threads``
intra-op threads (a run's floating-point sums depend on its thread count, so a comparison equals another one run
with the same ``threads``, whatever ``jobs``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..bench import fastest_inference_config
from ..evaluate.fastpath import InferencePath, inference_path
from ..fileio import atomic_write
from .spec import RESERVED_KEYS, Spec, parse_specs

__all__ = ["Comparison", "ComparisonInterrupted", "RunPlan", "check_comparison_dir", "execute_run", "plan_comparison",
           "run_comparison"]

#: config keys that may differ between a run directory and the command now (they do not change what is trained)
IGNORED_KEYS = {"train.run_dir", "train.device", "train.log_every", "data.num_workers", "data.download",
                "data.data_dir"}
RECORD = "compare.json"
MARKER = "comparison.json"  # in --out: cnnzoo wrote this directory
#: what a comparison writes in --out (besides the marker and the lock): a directory holding only these is one
COMPARISON_FILES = frozenset({"runs", "logs", "plots", "report.html", "results.csv", "results.json"})
INFER_BATCH = 64  # inference speed: images per forward pass
INFER_BUDGET_S = 2.0  # ... and about this long a measurement (after one warm-up batch)
INFER_MAX_IMAGES = 512


class ComparisonInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the running runs saved checkpoints; re-running the same command continues."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class RunPlan:
    """One spec x seed: its resolved config, its run directory and what is left to do there."""

    spec: Spec
    seed: int
    run_dir: Path
    cfg: object  # cnnzoo.train.Config
    state: str  # "new", "resume" (from epochs_done), "finished"
    epochs_done: int
    params: int
    macs: int
    input_size: tuple[int, int, int]
    train_images: int  # per epoch (train.limit_batches applied)
    test_images: int
    command: list[str]
    notes: list[str] = field(default_factory=list)

    kind = "classification"  # a class attribute (not a field); `cnnzoo.compare.segmentation.SegRunPlan`'s differs

    @property
    def epochs(self) -> int:
        return self.cfg.train.epochs

    def config_dict(self) -> dict:
        """The resolved config as a plain mapping (what a ``--jobs`` worker is given)."""
        from ..train.config import config_to_dict

        return config_to_dict(self.cfg)

    @property
    def device_setting(self) -> str:
        return str(self.cfg.train.device)

    def work(self, epochs: float | None = None) -> float:
        """MACs of ``epochs`` epochs (default all): a training image costs about 3 forward passes (forward, and a
        backward twice as costly), each epoch evaluates the test split once."""
        n = self.epochs if epochs is None else epochs
        return float(self.macs) * (3 * self.train_images + self.test_images) * n

    @property
    def name(self) -> str:
        return f"{self.spec.label} seed {self.seed}"


@dataclass
class Comparison:
    """What `run_comparison` returns: the plan, one record per run (in plan order) and the files written."""

    out: Path
    plans: list[RunPlan]
    records: list[dict]
    rows: list[dict]
    files: dict[str, Path]
    env: dict


# ---------------------------------------------------------------------------------------------------- planning
def _namespace(spec: Spec, data: str, recipe: str | None, sets: list[str], seed: int, run_dir: Path,
               download: bool, data_dir: str | None) -> argparse.Namespace:
    """The arguments `cnnzoo train` would get for this spec x seed (so the config is resolved exactly as there)."""
    extra = [f"train.seed={seed}", f"train.run_dir={json.dumps(str(run_dir))}"]
    if data_dir is not None:
        extra.append(f"data.data_dir={json.dumps(str(data_dir))}")
    return argparse.Namespace(name=spec.name, data=data, recipe=recipe, options=list(spec.options),
                              set=list(sets) + list(spec.overrides) + extra, no_download=not download)


def train_command(spec: Spec, data: str, recipe: str | None, sets: list[str], seed: int, run_dir: Path) -> list[str]:
    """The `cnnzoo train` command line equivalent to this run (recorded in its run.json)."""
    cmd = ["cnnzoo", "train", spec.name, "--data", data]
    if recipe:
        cmd += ["--recipe", recipe]
    for o in spec.options:
        cmd += ["-o", o]
    for s in list(sets) + list(spec.overrides):
        cmd += ["--set", s]
    return cmd + ["--seed", str(seed), "--run-dir", str(run_dir)]


def _resolve(spec: Spec, data: str, recipe: str | None, sets: list[str], seed: int, run_dir: Path, download: bool,
             data_dir: str | None):
    """(config, notes) of one spec x seed, as `cnnzoo train` builds it; errors name the spec."""
    from ..cli.train import build_config

    args = _namespace(spec, data, recipe, sets, seed, run_dir, download, data_dir)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            cfg = build_config(args)
    except ValueError as e:
        raise ValueError(f"spec {spec.text!r}: {e}") from None
    notes = [line.removeprefix("note: ") for line in buf.getvalue().splitlines() if line.strip()]
    return cfg, notes


def _check_sets(sets: list[str]) -> None:
    for s in sets:
        key = s.partition("=")[0].strip()
        if key in RESERVED_KEYS:
            raise ValueError(f"--set {s!r}: {key} is the comparison's own ({RESERVED_KEYS[key]})")


def _model_cost(spec: Spec, cfg, bundle) -> tuple[int, int, tuple[int, int, int]]:
    """(parameters, MACs per image, (C, S, S)) of the network this spec trains, built on the meta device; an
    unknown option or a value the network refuses is an error naming the spec."""
    from ..analysis import summarize
    from ..registry import UnknownModelError, UnknownOptionError, create_model, get_card

    try:
        card = get_card(spec.name)
    except UnknownModelError as e:
        raise UnknownModelError(f"spec {spec.text!r}: {e}") from None
    in_ch = bundle.in_channels if bundle is not None else card.input_size[0]
    classes = bundle.num_classes if bundle is not None else None
    try:
        with torch.device("meta"):
            model = create_model(spec.name, num_classes=classes, in_channels=in_ch, **cfg.model.options)
    except UnknownOptionError as e:
        raise UnknownOptionError(f"spec {spec.text!r}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"spec {spec.text!r}: {e}") from None
    native = bundle.image_size[0] if bundle is not None else card.input_size[-1]
    size = cfg.data.input_size
    if size is None:  # as the Trainer decides: upsample to the card's size when the data is too small
        size = card.input_size[-1] if getattr(model, "min_input_size", 1) > native else native
    if size < getattr(model, "min_input_size", 1):
        raise ValueError(f"spec {spec.text!r}: {spec.name} needs inputs of at least {model.min_input_size} pixels, "
                         f"but data.input_size is {size}; set {spec.text}@data.input_size={model.min_input_size} "
                         f"(or --set data.input_size=...)")
    shape = (in_ch, size, size)
    params = sum(p.numel() for p in model.parameters())
    try:
        macs = summarize(model, shape).macs
    except Exception:  # noqa: BLE001 (the cost estimate must never stop a comparison)
        macs = 0
    return params, macs, shape


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and prefix == "":
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(run_dir: Path, cfg) -> list[str]:
    """How the config in ``run_dir/config.yaml`` differs from ``cfg`` ("key: there -> now"), ignoring the keys
    that do not change what is trained."""
    from ..train.config import config_from_dict, config_to_dict, load_yaml_file

    there = config_from_dict(load_yaml_file(run_dir / "config.yaml", "config") or {}, str(run_dir / "config.yaml"))
    a = _flat(yaml.safe_load(yaml.safe_dump(config_to_dict(there))))
    b = _flat(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in IGNORED_KEYS or a.get(key) == b.get(key):
            continue
        diffs.append(f"{key} {a.get(key)!r} there, {b.get(key)!r} now")
    return diffs


def _epochs_done(run_dir: Path) -> int | None:
    """The epoch the last checkpoint was taken at (None: no checkpoint)."""
    from ..train.checkpoint import latest_pointer

    try:
        pointer = latest_pointer(run_dir / "checkpoints", "last")
    except (OSError, ValueError):
        return None
    if not pointer:
        return None
    tag = str(pointer.get("tag", ""))
    try:
        return int(tag.split("-")[0].lstrip("e"))
    except ValueError:
        return None


def _state(run_dir: Path, cfg, spec: Spec) -> tuple[str, int]:
    """("new" | "resume" | "finished", epochs done); a ValueError when the directory holds another run."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "new", 0
    done = _epochs_done(run_dir)
    if done is None:
        return "new", 0  # started, killed before its first checkpoint: it starts again (`train.rundir.clear_unstarted_run`)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} holds a checkpoint but no config.yaml; it is not a run this comparison can "
                         "reuse: move it away or choose another --out")
    diffs = config_differences(run_dir, cfg)
    if diffs:
        raise ValueError(f"{run_dir} holds a run of {spec.text!r} trained with other settings ({'; '.join(diffs)}); "
                         "nothing was changed: choose another --out for the new settings, or delete that directory "
                         "to train it again")
    if done >= cfg.train.epochs and (run_dir / "eval.json").is_file():
        return "finished", done
    return "resume", done


def plan_comparison(specs: list[str] | list[Spec], data: str = "mnist5k", *, recipe: str | None = None,
                    sets: list[str] | tuple[str, ...] = (), seeds: list[int] | tuple[int, ...] = (0,),
                    out: str | Path = "compare", download: bool = True, data_dir: str | None = None,
                    load_data: bool = True) -> list[RunPlan]:
    """Parse and check every spec (names, options, config) and find each spec x seed's run directory and state.

    Nothing is written. Raises a ValueError (naming the spec) for anything that would fail before training.
    """
    from ..data import load_dataset
    from .segmentation import comparison_kind

    parsed = [s if isinstance(s, Spec) else None for s in specs]
    if any(p is None for p in parsed):
        parsed = parse_specs([s.text if isinstance(s, Spec) else s for s in specs])
    if comparison_kind(parsed) == "segmentation":
        raise ValueError("these specs name segmentation networks; plan them with "
                         "cnnzoo.compare.segmentation.plan_segmentation (run_comparison chooses by itself)")
    sets = list(sets)
    _check_sets(sets)
    seeds = _check_seeds(seeds)
    out = Path(out).expanduser()
    check_comparison_dir(out)
    plans: list[RunPlan] = []
    bundle = None
    for spec in parsed:
        for seed in seeds:
            run_dir = out / "runs" / spec.slug / f"seed{seed}"
            cfg, notes = _resolve(spec, data, recipe, sets, seed, run_dir, download, data_dir)
            if bundle is None and load_data:
                bundle = load_dataset(cfg.data.name, data_dir=cfg.data.data_dir, download=download and
                                      cfg.data.download, seed=seed)
            params, macs, shape = _model_cost(spec, cfg, bundle)
            state, done = _state(run_dir, cfg, spec)
            if bundle is not None:
                steps = math.ceil(len(bundle.train) / cfg.data.batch_size)  # at most; the loader may drop the last
                if cfg.train.limit_batches is not None:
                    steps = min(steps, cfg.train.limit_batches)
                train_images, test_images = min(len(bundle.train), steps * cfg.data.batch_size), len(bundle.test)
            else:
                train_images = test_images = 0
            plans.append(RunPlan(spec, seed, run_dir, cfg, state, done, params, macs, shape, train_images,
                                 test_images, train_command(spec, data, recipe, sets, seed, run_dir), notes))
    return plans


def check_comparison_dir(out: Path) -> None:
    """Refuse an ``--out`` a comparison must not write into: a file, or a non-empty directory that is not a comparison.

    A comparison directory carries `MARKER` (written by cnnzoo before anything else). One written before the marker
    existed is recognised by its layout: nothing but `COMPARISON_FILES`, its results.json cnnzoo's (it records the
    cnnzoo version) or, killed before its report, only runs/ (and logs/); runs/ holding only ``SLUG/seedS``
    directories. Anything else is the user's: the report, CSV and plots would overwrite their files."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory (it is created when missing)")
    if not out.is_dir():
        return
    from ..train.rundir import LOCK_NAME

    names = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if not names or _is_comparison(out, names):
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise ValueError(f"--out {out} is not empty and is not a cnnzoo comparison (it holds {shown}); the comparison "
                     "would overwrite files there (report.html, results.csv, results.json, plots/, runs/). Choose a "
                     "new or empty directory")


def _is_comparison(out: Path, names: list[str]) -> bool:
    marker = _read_json(out / MARKER)
    if isinstance(marker, dict) and "cnnzoo_version" in marker:
        return True
    if not set(names) <= COMPARISON_FILES:
        return False
    if (out / "results.json").exists():
        results = _read_json(out / "results.json")
        env = results.get("environment") if isinstance(results, dict) else None
        if not isinstance(env, dict) or "cnnzoo" not in env:
            return False
    elif not set(names) <= {"runs", "logs"} or "runs" not in names:
        return False  # killed before its report, a comparison holds runs/ (and logs/); results.json comes first
    for name in ("runs", "logs", "plots"):
        if (out / name).exists() and not (out / name).is_dir():
            return False
    runs = out / "runs"
    if runs.is_dir():
        for spec in runs.iterdir():
            if not spec.is_dir() or any(not (d.is_dir() and d.name.startswith("seed") and d.name[4:].isdigit())
                                        for d in spec.iterdir()):
                return False
    return True


def _mark_comparison(out: Path) -> None:
    """Write the marker that says cnnzoo owns ``out`` (kept when it is already there)."""
    from .. import __version__

    marker = _read_json(out / MARKER)
    if isinstance(marker, dict) and "cnnzoo_version" in marker:
        return
    info = {"kind": "comparison", "cnnzoo_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write(out / MARKER, json.dumps(info, indent=1).encode())


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, e.g. --seeds 0,1,2; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seed {next(s for s in seeds if seeds.count(s) > 1)} is given twice in --seeds")
    return seeds


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> [0, 1, 2] / [0, 1, 2, 3, 4]."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if dash and lo else [int(part)]
        except ValueError:
            raise ValueError(f"--seeds {text!r}: give non-negative integers, comma-separated (0,1,2) or a range "
                             f"(0-4)") from None
    return _check_seeds(out)


# ---------------------------------------------------------------------------------------------------- one run
def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def inference_speed(model: torch.nn.Module, bundle, input_size: int, device: torch.device,
                    path: InferencePath | None = None) -> float:
    """Images per second of ``model`` in eval mode on test images at batch `INFER_BATCH` (after a warm-up batch;
    about `INFER_BUDGET_S` seconds or `INFER_MAX_IMAGES` images; data loading not counted), run on ``path`` (the
    precision and memory format; default plain fp32)."""
    from ..data import make_loader

    loader = make_loader(bundle, "test", batch_size=INFER_BATCH, train=False, device=device, input_size=input_size,
                         num_workers=0)
    batches = []
    try:
        for images, _ in loader:
            batches.append(path.inputs(images) if path is not None else images)
            if len(batches) * INFER_BATCH >= INFER_MAX_IMAGES:
                break
    finally:
        if hasattr(loader, "close"):
            loader.close()
    if not batches:
        return float("nan")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.eval()
    if path is not None:
        path.prepare(model)
    with torch.inference_mode(), path.autocast() if path is not None else contextlib.nullcontext():
        model(batches[0])  # warm-up (allocations, kernel selection)
        sync()
        n, t0 = 0, time.perf_counter()
        for images in batches:
            model(images)
            n += images.shape[0]
            if time.perf_counter() - t0 > INFER_BUDGET_S:
                break
        sync()
        elapsed = time.perf_counter() - t0
    return n / max(elapsed, 1e-9)


def measure_run(plan_or_dir, protocols: list[str], flip: bool = True, threads: int | None = None,
                device: str | None = None, precision: str = "auto") -> dict:
    """The record of a finished run: its metrics per epoch, final and best accuracy, per-class accuracy and confusion
    matrix (from the run's files), parameters and MACs, training speed, inference speed and the accuracy under each
    protocol (measured on its final weights). Inference runs on the inference path ``precision`` selects
    (`cnnzoo.evaluate.fastpath`; default auto, the machine's fast path). Cached in ``RUN_DIR/compare.json`` against the
    checkpoint and inference path it measured: measured again when either changed or a protocol is missing."""
    from ..analysis import summarize
    from ..data.record import reload_dataset
    from ..evaluate import evaluate_protocols
    from ..train.checkpoint import latest_pointer, load_trained
    from ..train.engine import resolve_device

    run_dir = Path(plan_or_dir.run_dir if isinstance(plan_or_dir, RunPlan) else plan_or_dir)
    pointer = latest_pointer(run_dir / "checkpoints", "last") or {}
    tag = pointer.get("tag")
    cached = _read_json(run_dir / RECORD)
    extra = [p for p in protocols if p != "center"]
    key = "flip" if flip else "noflip"
    cfg_dict = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    dev = resolve_device(device or (cfg_dict.get("train") or {}).get("device", "auto"))
    # the measurements hold for these weights on this inference path (auto: what the probe picks on this machine)
    asked = {"precision": precision, "probe": fastest_inference_config(dev)[0] if precision == "auto" else None}
    if cached and cached.get("weights_tag") == tag and cached.get("infer_asked") == asked and \
            all(p in cached.get("protocols", {}).get(key, {}) for p in extra):
        return _mark_divergence(cached, len(cached.get("classes") or []) or 2)
    final = _read_json(run_dir / "eval.json") or {}
    history = _history(run_dir)
    run_info = _read_json(run_dir / "run.json") or {}
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model, meta = load_trained(run_dir / "checkpoints" / "last.safetensors", device=dev)
        data_dir = (cfg_dict.get("data") or {}).get("data_dir")
        bundle = reload_dataset(meta["data"], data_dir=data_dir, download=False, split_file=run_dir / "split.json",
                                where=str(run_dir))
        size = meta.get("input_size") or bundle.image_size[0]
        shape = (bundle.in_channels, size, size)
        same = cached and cached.get("weights_tag") == tag and cached.get("infer_asked") == asked
        record = cached if same else {}
        path = inference_path(model, dev, precision)
        if "infer_images_per_s" not in record:
            record["infer_images_per_s"] = inference_speed(model, bundle, size, dev, path)
            record["infer_threads"] = torch.get_num_threads()
            record["infer_device"] = str(dev)
            record["infer_asked"] = asked
            record["infer_precision"], record["infer_channels_last"] = path.precision, path.channels_last
        done = dict((record.get("protocols") or {}).get(key, {}))
        missing = [p for p in extra if p not in done]
        if missing:
            res = evaluate_protocols(model, bundle, missing, input_size=size, flip=flip, device=dev,
                                     batch_size=(cfg_dict.get("data") or {}).get("eval_batch_size", 100),
                                     precision=path.precision, channels_last=path.channels_last,
                                     augment=meta.get("train_augment"))  # the test scales follow the training
            done.update({k: r.to_dict() for k, r in res.items()})
        record.setdefault("protocols", {})[key] = done
        params = sum(p.numel() for p in model.parameters())
        macs = summarize(model, shape).macs
    finally:
        torch.set_num_threads(old_threads)
    train_time = sum(float(r.get("epoch_time_s", 0.0)) for r in history)
    train_images = sum(float(r.get("epoch_time_s", 0.0)) * float(r.get("images_per_s", 0.0)) for r in history)
    best = max(history, key=lambda r: r["test_acc"]) if history else {}
    record.update({
        "weights_tag": tag,
        "run_dir": str(run_dir),
        "model": meta.get("model"),
        "options": meta.get("options", {}),
        "input_size": list(shape),
        "params": params,
        "macs": macs,
        "epochs": len(history),
        "history": history,
        "final": {"top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("loss")},
        "best": {"top1": max((r["test_acc"] for r in history), default=None),
                 "top5": max((r["test_top5"] for r in history), default=None),
                 "epoch": best.get("epoch")},
        "per_class": final.get("per_class", {}),
        "confusion": final.get("confusion", []),
        "classes": final.get("classes", []),
        "train_time_s": train_time,
        "train_images_per_s": train_images / train_time if train_time > 0 else None,
        "train_device": run_info.get("device"),
        "git_commit": run_info.get("git_commit"),
        "cnnzoo_version": run_info.get("cnnzoo_version"),
    })
    _mark_divergence(record, bundle.num_classes)
    atomic_write(run_dir / RECORD, json.dumps(record, indent=1).encode())
    return record


def _mark_divergence(record: dict, num_classes: int) -> dict:
    """``record`` with status "diverged" (and why, as its error) when its history shows divergence, else "ok": a run
    that finished with a loss far above chance (one trained before cnnzoo stopped such runs) is never "ok"."""
    why = _diverged_epoch(record.get("history") or [], num_classes)
    record.pop("error", None)
    record["status"] = "ok" if why is None else "diverged"
    if why is not None:
        record["error"] = why
    return record


def _diverged_epoch(history: list[dict], num_classes: int) -> str | None:
    """Why a run's history shows divergence (`cnnzoo.train.engine.is_divergence`: an epoch's training and evaluation
    losses far above chance), or None."""
    from ..train.engine import divergence_limit, is_divergence

    for row in history:
        train, other = row.get("train_loss"), row.get("val_loss", row.get("test_loss"))
        if is_divergence(train, other, num_classes):
            train, other = (float(x) if isinstance(x, int | float) else math.nan for x in (train, other))
            return (f"diverged: in epoch {row.get('epoch')} the training loss is {train:.4g} and the evaluation loss "
                    f"{other:.4g}, above 10 x max(ln {num_classes}, 1) = {divergence_limit(num_classes):.3g}")
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, (ValueError, OSError)) or type(e).__name__ in ("TrainingDiverged",):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def execute_run(plan: RunPlan, protocols: list[str], flip: bool = True, threads: int | None = None,
                verbose: bool = True, device: str | None = None) -> dict:
    """Train (or resume) one run to its end with the Trainer, then measure it (`measure_run`).

    Returns its record; a run that diverged (`cnnzoo.train.TrainingDiverged`: a NaN loss, or a loss far above
    chance) returns ``{"status": "diverged", "error": ...}``, one that fails otherwise (refused by the network, ...)
    ``{"status": "failed", "error": ...}``. Ctrl-C / SIGTERM raise `cnnzoo.train.TrainingInterrupted` after the Trainer saved a checkpoint.
    """
    from ..train import Trainer, TrainingDiverged, TrainingInterrupted

    if plan.kind == "segmentation":
        from .segmentation import execute_segmentation_run

        return execute_segmentation_run(plan, threads, verbose, device)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if plan.state != "finished":
            if plan.state == "new":  # a run killed before its first checkpoint: the Trainer clears it under its lock
                cfg = plan.cfg
                if device is not None:
                    cfg.train.device = device
                trainer = Trainer(cfg, command=plan.command, verbose=verbose)
            else:
                trainer = Trainer(resume=plan.run_dir, command=plan.command, verbose=verbose)
            trainer.fit()
        record = measure_run(plan, protocols, flip, threads, device)
    except TrainingInterrupted:
        raise
    except TrainingDiverged as e:  # NaN, or a loss far above chance: "diverged", not "ok" nor a crash
        return {"status": "diverged", "error": _one_line(e), "run_dir": str(plan.run_dir)}
    except Exception as e:  # noqa: BLE001 (a failed spec is reported; the others go on)
        return {"status": "failed", "error": _one_line(e), "run_dir": str(plan.run_dir)}
    finally:
        torch.set_num_threads(old)
    record["threads"] = threads or old
    return record


# ---------------------------------------------------------------------------------------------------- many runs
def conv_rate() -> float:
    """MACs per second of a mid-sized 3x3 convolution (forward) on this machine's CPU, at the current threads."""
    x, w = torch.randn(8, 32, 32, 32), torch.randn(32, 32, 3, 3)
    torch.nn.functional.conv2d(x, w, padding=1)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        torch.nn.functional.conv2d(x, w, padding=1)
        n += 1
    return n * 8 * 32 * 32 * 32 * 32 * 9 / (time.perf_counter() - t0)


def _fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Progress:
    """The overall line: runs done of N and an ETA. A spec's epochs take the wall time measured on its runs so far;
    a spec not measured yet is estimated as the measured runs' time per epoch outside their MACs (data loading,
    augmentation, small layers: the same for every spec on the same data) plus its own MACs at the rate of a 3x3
    convolution on this machine (`conv_rate`). Scaling the measured time by MACs alone would make a network 70x
    LeNet-5's MACs 70x slower, when LeNet-5's epoch is mostly data handling."""

    def __init__(self, plans: list[RunPlan], verbose: bool, jobs: int = 1, threads: int | None = None) -> None:
        self.plans, self.verbose, self.jobs, self.threads = plans, verbose, jobs, threads
        self.finished = 0
        self.closed: set[int] = set()  # runs done or failed: nothing left of them
        self.started: dict[int, tuple[float, int]] = {}  # run -> (time, epochs done) when it started
        self.epoch_s: dict[int, float] = {}  # run -> measured wall seconds per epoch
        self._rate: float | None = None

    def epochs_now(self, plan: RunPlan) -> int:
        return max(len(_history(plan.run_dir)), plan.epochs_done) if plan.run_dir.is_dir() else 0

    def start(self, i: int) -> None:
        self.started[i] = (time.perf_counter(), self.epochs_now(self.plans[i]))

    def observe(self, i: int, done: bool = False) -> None:
        """Measure run ``i``'s seconds per epoch from what it did since it started (``done``: it has ended)."""
        if i not in self.started:
            return
        t, e0 = self.started[i]
        e = self.epochs_now(self.plans[i])
        if e > e0:
            self.epoch_s[i] = (time.perf_counter() - t) / (e - e0)
        if done:
            self.closed.add(i)

    def rate(self) -> float:
        """MACs per second of one run (measured once, at a run's threads)."""
        if self._rate is None:
            old = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                self._rate = conv_rate()
            finally:
                torch.set_num_threads(old)
        return self._rate

    def eta(self) -> float | None:
        per_spec: dict[str, list[float]] = {}
        for i, sec in self.epoch_s.items():
            per_spec.setdefault(self.plans[i].spec.label, []).append(sec)
        if not per_spec:
            return None
        left, overhead = 0.0, None
        for i, p in enumerate(self.plans):
            if i in self.closed or p.state == "finished":
                continue
            epochs_left = p.epochs - min(self.epochs_now(p), p.epochs)
            known = per_spec.get(p.spec.label)
            if known:
                left += epochs_left * sum(known) / len(known)
                continue
            if overhead is None:
                rate = self.rate()
                overhead = sum(max(0.0, sec - self.plans[j].work(1) / rate) for j, sec in self.epoch_s.items()) \
                    / len(self.epoch_s)
            left += epochs_left * (overhead + p.work(1) / self.rate())
        return left / max(1, min(self.jobs, len(self.plans)))

    def line(self, index: int | None, what: str) -> str:
        n = len(self.plans)
        head = f"[compare {index}/{n}]" if index is not None else f"[compare {self.finished}/{n} done]"
        return f"{head} {what} | ETA {_fmt_time(self.eta())}"

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)


def _run_sequential(plans, protocols, flip, threads, verbose, progress: _Progress) -> list[dict]:
    records: list[dict] = []
    for i, plan in enumerate(plans, 1):
        what = {"new": "training", "resume": f"resuming (epoch {plan.epochs_done}/{plan.epochs} done)",
                "finished": "finished run, reused"}[plan.state]
        progress.say(progress.line(i, f"{plan.name}: {what}; {plan.run_dir}"))
        progress.start(i - 1)
        record = execute_run(plan, protocols, flip, threads, verbose)
        progress.observe(i - 1, done=True)
        record.update(spec=plan.spec.label, seed=plan.seed, reused=plan.state == "finished")
        if record["status"] != "ok":
            progress.say(f"[compare {i}/{len(plans)}] {plan.name} FAILED: {record['error']}")
        records.append(record)
        progress.finished = i
    return records


def _job_paths(out: Path, plan: RunPlan) -> tuple[Path, Path, Path]:
    stem = f"{plan.spec.slug}-seed{plan.seed}"
    logs = out / "logs"
    return logs / f"{stem}.job.json", logs / f"{stem}.result.json", logs / f"{stem}.log"


def _run_parallel(plans, protocols, flip, threads, jobs, verbose, progress: _Progress, out: Path) -> list[dict]:
    """Each run in a subprocess (``python -m cnnzoo.compare.worker``), at most ``jobs`` at a time."""
    records: dict[int, dict] = {}
    queue = list(range(len(plans)))
    running: dict[int, tuple[subprocess.Popen, int, object]] = {}
    stop: list[int] = []
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0

    def on_signal(signum, frame):
        if not stop:
            stop.append(signum)
            for proc, _, _ in running.values():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)  # each saves a checkpoint and exits

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if _main_thread() else {}
    free_slots = list(range(jobs))
    last_line = ""
    try:
        while queue or running:
            while queue and len(running) < jobs and not stop:
                i = queue.pop(0)
                plan = plans[i]
                slot = free_slots.pop(0)
                job, result, log = _job_paths(out, plan)
                device = None
                if gpus and plan.device_setting in ("auto", "cuda"):
                    device = f"cuda:{slot % gpus}"
                payload = {"kind": plan.kind, "run_dir": str(plan.run_dir), "state": plan.state,
                           "config": plan.config_dict(),
                           "command": plan.command, "protocols": protocols, "flip": flip, "threads": threads,
                           "device": device, "result": str(result), "spec": plan.spec.text, "seed": plan.seed,
                           "epochs_done": plan.epochs_done}
                atomic_write(job, json.dumps(payload, indent=1).encode())
                result.unlink(missing_ok=True)
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                with open(log, "ab") as f:
                    proc = subprocess.Popen([sys.executable, "-m", "cnnzoo.compare.worker", str(job)], stdout=f,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
                running[i] = (proc, slot, result)
                progress.start(i)
                what = {"new": "training", "resume": f"resuming from epoch {plan.epochs_done}",
                        "finished": "measuring"}[plan.state]
                progress.say(progress.line(i + 1, f"{plan.name}: {what} in a subprocess (log {log})"))
            time.sleep(0.2)
            for i in list(running):
                proc, slot, result = running[i]
                if proc.poll() is None:
                    continue
                del running[i]
                free_slots.append(slot)
                progress.observe(i, done=True)
                plan = plans[i]
                rec = _read_json(Path(result))
                if rec is None or proc.returncode not in (0, 1):
                    if stop or proc.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM):
                        continue  # interrupted: checkpoint saved, resumed next time
                    log = _job_paths(out, plan)[2]
                    rec = {"status": "failed", "error": f"the run's process ended with status {proc.returncode} "
                                                        f"(see {log})", "run_dir": str(plan.run_dir)}
                rec.update(spec=plan.spec.label, seed=plan.seed, reused=plan.state == "finished")
                records[i] = rec
                progress.finished += 1
                status = "done" if rec["status"] == "ok" else f"FAILED: {rec['error']}"
                progress.say(progress.line(None, f"{plan.name} {status}"))
            for j in running:
                progress.observe(j)
            if running:
                parts = [f"{plans[j].name} epoch {min(progress.epochs_now(plans[j]) + 1, plans[j].epochs)}/"
                         f"{plans[j].epochs}" for j in sorted(running)]
                line = progress.line(None, "running: " + ", ".join(parts))
                if line.split(" | ")[0] != last_line:
                    progress.say(line)
                    last_line = line.split(" | ")[0]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop:
        name = signal.Signals(stop[0]).name
        raise ComparisonInterrupted(f"{name}: stopped; the running runs saved checkpoints. Re-run the same command "
                                    f"to continue where it stopped", stop[0])
    return [records[i] for i in range(len(plans))]


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def environment(threads: int, jobs: int, command: list[str] | None, plans: list[RunPlan]) -> dict:
    import platform

    from .. import __version__
    from ..train.engine import _git_commit, resolve_device

    devices = sorted({p.device_setting for p in plans}) or ["auto"]
    return {
        "cnnzoo": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": ", ".join(str(resolve_device(d)) if d == "auto" else d for d in devices),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads_per_run": threads,
        "jobs": jobs,
        "git_commit": _git_commit(),
        "command": shlex.join(command) if command else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run_comparison(specs: list[str], data: str | None = None, *, recipe: str | None = None,
                   sets: list[str] | tuple[str, ...] = (), seeds=(0,), out: str | Path = "compare",
                   protocols: str | list[str] | None = None, flip: bool = True, jobs: int = 1,
                   threads: int | None = None, target: float | None = None, download: bool = True,
                   data_dir: str | None = None, command: list[str] | None = None, verbose: bool = True,
                   dry_run: bool = False, data_params: dict | None = None, epochs: int | None = None,
                   limit_batches: int | None = None) -> Comparison:
    """Train every spec x seed under ``out`` (reusing finished runs, resuming interrupted ones), measure each and
    write ``report.html``, ``results.csv`` and ``results.json`` there.

    Specs naming segmentation networks (all of them: the two kinds are never mixed) train as segmentation runs and
    report the FCN paper's metrics (`cnnzoo.compare.segmentation`); ``data_params``, ``epochs`` and
    ``limit_batches`` are theirs, ``recipe``, ``sets``, ``protocols``, ``flip``, ``target``, ``download`` and
    ``data_dir`` only classification's.

    Args:
        specs: ``NAME[:OPTION=VALUE,...][@SECTION.KEY=VALUE...]`` strings (see `cnnzoo.compare.spec`).
        data, recipe, sets: as for `cnnzoo train` (``--data``, ``--recipe``, ``--set``), the same for every spec;
            data defaults to mnist5k (classification) or digits-segmentation (segmentation).
        seeds: one run per seed per spec; the seed fixes the initial weights, data order and augmentation.
        out: the comparison's directory.
        protocols: test-time protocols to report besides the centre evaluation (`cnnzoo.evaluate.protocols`;
            default none).
        flip: reflections in the 10crop/144crop/dense protocols.
        jobs: runs trained at once, each in its own process.
        threads: intra-op threads of each run (default: this process's threads divided by ``jobs``).
        target: top-1 accuracy (fraction) for "epochs to target" (default: the best accuracy the weakest run
            reaches, so that every run has a value).
        download, data_dir: where the data comes from.
        command: the command line to record in the report.
        verbose: print progress and the per-epoch output of the runs.
        dry_run: plan only: parse and check everything, write nothing (``Comparison.records`` is empty).
        data_params, epochs, limit_batches: segmentation only: the dataset's settings (``--data-param``), every
            run's epochs and batches per epoch (default: each network's digits recipe, all batches).

    Raises:
        ValueError: a bad spec, option, config key or seed, or a run directory holding another run (before
            anything trains).
        ComparisonInterrupted: Ctrl-C or SIGTERM; the runs in progress saved checkpoints.
    """
    from ..evaluate import parse_protocols
    from ..train.rundir import RunDirBusy, RunLock
    from .report import aggregate, aggregate_segmentation, write_outputs
    from .segmentation import (
        CLASSIFICATION_ONLY,
        SEGMENTATION_ONLY,
        check_segmentation_arguments,
        comparison_kind,
        is_segmentation_data,
        plan_segmentation,
    )

    kind = comparison_kind(specs)
    if kind == "segmentation":
        given = (recipe is not None, bool(sets), protocols is not None, not flip, target is not None,
                 data_dir is not None, not download)  # in the order of CLASSIFICATION_ONLY's flags
        check_segmentation_arguments([flag for flag, g in zip(CLASSIFICATION_ONLY, given) if g])
        proto = []
    else:
        given = [flag for flag, v in zip(SEGMENTATION_ONLY, (data_params, epochs, limit_batches)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} only to segmentation "
                             "networks; with classification networks write --epochs N as --set train.epochs=N and "
                             "--limit-batches N as --set train.limit_batches=N (their datasets take no --data-param)")
        if data and is_segmentation_data(data):
            raise ValueError(f"--data {data} is a segmentation dataset, for segmentation networks (`cnnzoo segment "
                             "list`); compare classification networks on mnist5k (the default), mnist, "
                             "fashion-mnist, cifar10, cifar100 or folder:PATH")
        proto = [p.name for p in parse_protocols(protocols or "center")]
        if "center" not in proto:
            proto = ["center", *proto]
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer (runs trained at once), got {jobs!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer (intra-op threads of each run), got {threads!r}")
    if target is not None and not (0 < target <= 1):
        raise ValueError(f"target must be a top-1 accuracy in (0, 100] percent, got {100 * target:g}%")
    threads = threads or max(1, torch.get_num_threads() // jobs)
    out = Path(out).expanduser()
    if kind == "segmentation":
        plans = plan_segmentation(specs, data or "digits-segmentation", data_params=data_params, seeds=seeds,
                                  out=out, epochs=epochs, limit_batches=limit_batches)
    else:
        plans = plan_comparison(specs, data or "mnist5k", recipe=recipe, sets=sets, seeds=seeds, out=out,
                                download=download, data_dir=data_dir, load_data=True)
    env = environment(threads, jobs, command, plans)
    if dry_run:
        return Comparison(out, plans, [], [], {}, env)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(out).acquire(env["command"] or "cnnzoo compare")
    except RunDirBusy as e:
        raise RunDirBusy(str(e).replace("run directory", "comparison directory").replace("--run-dir", "--out")) \
            from None
    try:
        check_comparison_dir(out)  # again, under the lock: nothing slipped in since planning
        _mark_comparison(out)
        progress = _Progress(plans, verbose, jobs, threads)
        for note in dict.fromkeys(f"{p.spec.label}: {n}" for p in plans for n in p.notes):
            progress.say(f"note: {note}")
        if jobs == 1:
            try:
                records = _run_sequential(plans, proto, flip, threads, verbose, progress)
            except BaseException as e:
                from ..train import TrainingInterrupted

                if isinstance(e, TrainingInterrupted):
                    what = str(e).split(" Resume with:")[0].rstrip(". ")
                    raise ComparisonInterrupted(f"{what}. Re-run the same `cnnzoo compare` command to continue where "
                                                "it stopped", e.signum) from None
                raise
        else:
            (out / "logs").mkdir(parents=True, exist_ok=True)
            records = _run_parallel(plans, proto, flip, threads, jobs, verbose, progress, out)
        rows = aggregate(plans, records, proto, flip, target) if kind == "classification" else \
            aggregate_segmentation(plans, records)
        files = write_outputs(out, plans, records, rows, env, proto, flip, target)
    finally:
        lock.release()
    return Comparison(out, plans, records, rows, files, env)
