"""Segmentation networks in ``cnnzoo compare``: when every SPEC names a registered segmenter
(`cnnzoo.segmentation.list_segmenters`), each spec x seed trains as a segmentation run (`cnnzoo.segmentation.train.
SegTrainer`, what ``cnnzoo segment train`` runs) into ``OUT/runs/SLUG/seedS``, and the report gives the FCN paper's
metrics (Sec. 5: mean IU, pixel accuracy, mean accuracy, frequency-weighted IU) of each run's last checkpoint on the
test split, mean and min-max over the seeds.

    >>> from cnnzoo.compare import run_comparison
    >>> run_comparison(["unet_padded", "unet_resnet34"], seeds=[0, 1, 2], out="seg", epochs=3)

What differs from a classification comparison, and what does not:

- A SPEC is the same ``NAME[:OPTION=VALUE,...][@SECTION.KEY=VALUE...]``. The options go over the network's digits
  recipe options (`cnnzoo.segmentation.get_digits_recipe`), as ``cnnzoo segment train -o`` does. The per-spec
  overrides are the settings of a segmentation run, named as the classification config names them
  (`SEG_KEYS`: ``unet_padded@optim.lr=0.003``, ``@train.epochs=2``, ``@data.batch_size=8``).
- The data is ``--data digits-segmentation`` (the default), ``voc:PATH`` or ``pairs:PATH``, its settings
  ``--data-param KEY=VALUE``; ``--epochs`` and ``--limit-batches`` apply to every spec. The classification-only
  options (`CLASSIFICATION_ONLY`: a recipe, ``--set``, test-time protocols, a target accuracy, the downloaded
  datasets' directory) are refused with segmenters, and classifiers and segmenters are never mixed in one comparison.
- Runs are planned, reused, resumed and refused exactly as classification runs (`cnnzoo.compare.runner`): a finished
  run (its last checkpoint at the run's epochs and its eval.json written) is reused as it is, an interrupted one
  resumed with ``SegTrainer(resume=...)``, one holding other settings refused before anything trains.
- What is reported of a run (its ``compare.json``) is read from its files: the test metrics from eval.json (the
  numbers ``cnnzoo segment eval`` gives), the curves and training time from metrics.jsonl, the parameters from
  run.json; the MACs per image are counted on the meta device. No inference speed is measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .runner import (
    RECORD,
    RunPlan,
    _check_seeds,
    _epochs_done,
    _history,
    _mark_divergence,
    _one_line,
    _read_json,
    check_comparison_dir,
)
from .spec import Spec, parse_specs

__all__ = [
    "CLASSIFICATION_ONLY",
    "SEGMENTATION_ONLY",
    "SEG_KEYS",
    "SegRunPlan",
    "check_segmentation_arguments",
    "comparison_kind",
    "execute_segmentation_run",
    "is_segmentation_data",
    "measure_segmentation_run",
    "plan_segmentation",
]

#: per-spec ``@SECTION.KEY=VALUE`` of a segmentation spec -> the `SegConfig` field it sets (the classification
#: config's names for the same settings)
SEG_KEYS = {
    "train.epochs": "epochs", "train.limit_batches": "limit_batches", "train.device": "device",
    "optim.name": "optimizer", "optim.lr": "lr", "optim.momentum": "momentum", "optim.weight_decay": "weight_decay",
    "schedule.name": "schedule", "data.batch_size": "batch_size", "data.input_size": "input_size",
    "data.holdout_fraction": "holdout_fraction",
}
#: `SegConfig` field -> the ``cnnzoo segment train`` flag that sets it (for the run's equivalent command)
_FLAGS = {"epochs": "--epochs", "limit_batches": "--limit-batches", "device": "--device", "optimizer": "--optimizer",
          "lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay", "schedule": "--schedule",
          "batch_size": "--batch-size", "input_size": "--input-size", "holdout_fraction": "--holdout-fraction"}
#: the comparison's options that only classification runs have (refused with segmenters)
CLASSIFICATION_ONLY = ("--recipe", "--set", "--protocol", "--no-flip", "--target", "--data-dir", "--no-download")
#: ... and those only segmentation runs have (refused with classifiers)
SEGMENTATION_ONLY = ("--data-param", "--epochs", "--limit-batches")
SEGMENTATION_OPTIONS = "--data, --data-param, --epochs, --limit-batches, --seeds, --out, --jobs, --threads, --dry-run"


def _segmenters() -> set[str]:
    from ..segmentation import list_segmenters

    return set(list_segmenters())


def comparison_kind(specs: list[str] | list[Spec]) -> str:
    """"segmentation" when a spec names a registered segmentation network and none a classification network,
    else "classification"; a ValueError when both kinds are named (one comparison trains one kind of run)."""
    from ..registry import list_models

    parsed = [s if isinstance(s, Spec) else None for s in specs]
    if any(p is None for p in parsed):
        parsed = parse_specs([s.text if isinstance(s, Spec) else s for s in specs])
    segmenters = _segmenters()
    seg = [s.text for s in parsed if s.name in segmenters]
    if not seg:
        return "classification"
    classifiers = set(list_models())
    cls = [s.text for s in parsed if s.name in classifiers and s.name not in segmenters]
    if cls:
        def kind(names: list[str], what: str) -> str:
            return f"{', '.join(names)} {'is a' if len(names) == 1 else 'are'} {what} network{'s' * (len(names) > 1)}"

        raise ValueError(f"cannot mix classification and segmentation networks in one comparison: "
                         f"{kind(cls, 'classification')} but {kind(seg, 'segmentation')}; compare each kind in its "
                         "own command (`cnnzoo list` and `cnnzoo segment list` name them)")
    return "segmentation"


def is_segmentation_data(data: str) -> bool:
    """Whether ``data`` names a segmentation dataset (`cnnzoo.segmentation.load_segmentation_data`)."""
    text = str(data).strip()
    head, sep, _ = text.partition(":")
    return text.lower().replace("_", "-") in ("digits-segmentation", "digitssegmentation") or \
        bool(sep and head.lower() in ("voc", "pairs"))


def check_segmentation_arguments(given: list[str]) -> None:
    """Refuse the classification-only options ``given`` (flags) in a comparison of segmentation networks."""
    if given:
        raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} only to classification "
                         f"networks; a comparison of segmentation networks takes {SEGMENTATION_OPTIONS} (per spec: "
                         f"NAME:OPTION=VALUE and NAME@optim.lr=..., see `cnnzoo compare --help`)")


@dataclass
class SegRunPlan(RunPlan):
    """One spec x seed of a segmentation comparison: ``cfg`` is its `cnnzoo.segmentation.train.SegConfig`."""

    kind = "segmentation"  # a class attribute, as RunPlan's

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    @property
    def device_setting(self) -> str:
        return str(self.cfg.device)


# ---------------------------------------------------------------------------------------------------- planning
def _config(spec: Spec, data: str, data_params: dict, seed: int, epochs: int | None, limit_batches: int | None):
    """The `SegConfig` of one spec x seed: the network's digits recipe, the spec's options over the recipe's, then
    ``--epochs``/``--limit-batches``, then the spec's own overrides. Errors name the spec."""
    from ..cli.common import parse_options
    from ..registry import UnknownModelError
    from ..segmentation.train import default_seg_config
    from ..train.config import load_yaml

    settings: dict = {"epochs": epochs, "limit_batches": limit_batches}
    for item in spec.overrides:
        key, _, value = item.partition("=")
        if key not in SEG_KEYS:
            raise ValueError(f"spec {spec.text!r}: {key} is not a setting of a segmentation run; valid per spec: "
                             f"{', '.join(SEG_KEYS)} (e.g. {spec.name}@optim.lr=0.003)")
        settings[SEG_KEYS[key]] = load_yaml(value, f"spec {spec.text!r}: {key}")
    try:
        return default_seg_config(spec.name, data, options=parse_options(list(spec.options)),
                                  data_params=dict(data_params), seed=seed, **settings)
    except UnknownModelError as e:
        raise UnknownModelError(f"spec {spec.text!r}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"spec {spec.text!r}: {e}") from None


def _command(spec: Spec, cfg, run_dir: Path) -> list[str]:
    """The `cnnzoo segment train` command line equivalent to this run (recorded in its run.json)."""
    from ..segmentation.train import default_seg_config

    cmd = ["cnnzoo", "segment", "train", spec.name, "--data", cfg.data]
    for k, v in cfg.data_params.items():
        cmd += ["--data-param", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
    for o in spec.options:
        cmd += ["-o", o]
    recipe = default_seg_config(cfg.model, cfg.data)
    for key, flag in _FLAGS.items():
        if getattr(cfg, key) != getattr(recipe, key):
            cmd += [flag, str(getattr(cfg, key))]
    return cmd + ["--seed", str(cfg.seed), "--run-dir", str(run_dir)]


def _check(spec: Spec, options: dict) -> None:
    """`cnnzoo.segmentation.train._check_options` (what SegTrainer refuses before any work), naming the spec."""
    from ..registry import UnknownOptionError
    from ..segmentation.train import _check_options

    try:
        _check_options(spec.name, options)
    except UnknownOptionError as e:
        raise UnknownOptionError(f"spec {spec.text!r}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"spec {spec.text!r}: {e}") from None


def _cost(spec: Spec, cfg, in_channels: int, num_classes: int, size: int) -> tuple[int, int]:
    """(parameters, MACs per image) of the network, built on the meta device; a value it refuses, or an input too
    small for it, is an error naming the spec."""
    from ..analysis import summarize
    from ..registry import UnknownOptionError
    from ..segmentation import create_segmenter

    try:
        with torch.device("meta"):
            model = create_segmenter(spec.name, **{**cfg.options, "in_channels": in_channels,
                                                   "num_classes": num_classes})
    except UnknownOptionError as e:
        raise UnknownOptionError(f"spec {spec.text!r}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"spec {spec.text!r}: {e}") from None
    except Exception:  # noqa: BLE001 (not buildable on the meta device, e.g. weights read from a file: uncounted here,
        return 0, 0  # the run itself builds it, or fails with its own error)
    smallest = int(getattr(model, "min_input_size", 1))
    if size < smallest:
        raise ValueError(f"spec {spec.text!r}: {spec.name} needs inputs of at least {smallest} pixels, but the "
                         f"images are {size}; set {spec.text}@data.input_size={smallest}")
    params = sum(p.numel() for p in model.parameters())
    try:
        macs = summarize(model, (in_channels, size, size)).macs
    except Exception:  # noqa: BLE001 (the cost estimate must never stop a comparison)
        macs = 0
    return params, macs


def _differences(run_dir: Path, cfg) -> list[str]:
    """How ``run_dir/config.yaml`` differs from ``cfg`` ("key there, now"), the device left out."""
    from ..train.config import load_yaml_file

    there = load_yaml_file(run_dir / "config.yaml", "config") or {}
    now = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    return [f"{key} {there.get(key)!r} there, {now.get(key)!r} now" for key in sorted(set(there) | set(now), key=str)
            if key != "device" and there.get(key) != now.get(key)]


def _state(run_dir: Path, cfg, spec: Spec) -> tuple[str, int]:
    """("new" | "resume" | "finished", epochs done), as `cnnzoo.compare.runner._state` for a segmentation run."""
    from ..segmentation.train import _other_kind, _run_record

    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "new", 0
    done = _epochs_done(run_dir)
    if done is None:
        return "new", 0  # killed before its first checkpoint: SegTrainer starts it again (`clear_unstarted_run`)
    why = _other_kind(run_dir, _run_record(run_dir))
    if why or not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{why or f'{run_dir} holds a checkpoint but no config.yaml'}; it is not a run this "
                         "comparison can reuse: move it away or choose another --out")
    diffs = _differences(run_dir, cfg)
    if diffs:
        raise ValueError(f"{run_dir} holds a run of {spec.text!r} trained with other settings ({'; '.join(diffs)}); "
                         "nothing was changed: choose another --out for the new settings, or delete that directory "
                         "to train it again")
    if done >= cfg.epochs and (run_dir / "eval.json").is_file():
        return "finished", done
    return "resume", done


def plan_segmentation(specs: list[str] | list[Spec], data: str = "digits-segmentation", *,
                      data_params: dict | None = None, seeds=(0,), out: str | Path = "compare",
                      epochs: int | None = None, limit_batches: int | None = None) -> list[SegRunPlan]:
    """Parse and check every segmentation spec (names, options, settings, the data) and find each spec x seed's run
    directory and state. Nothing is written; a ValueError (naming the spec) for anything that would fail before
    training."""
    from ..segmentation.data import load_segmentation_data

    if not is_segmentation_data(data):
        raise ValueError(f"--data {data!r} is not a segmentation dataset; segmentation networks train on "
                         "digits-segmentation (the default, built in), voc:PATH (Pascal VOC 2012) or pairs:PATH "
                         "(folders of image/mask pairs)")
    parsed = parse_specs([s.text if isinstance(s, Spec) else s for s in specs])
    seeds = _check_seeds(seeds)
    out = Path(out).expanduser()
    check_comparison_dir(out)
    data_params = dict(data_params or {})
    configs = {(s.text, seed): _config(s, data, data_params, seed, epochs, limit_batches) for s in parsed
               for seed in seeds}
    for spec in parsed:  # every spec's options checked (on the meta device) before the data is made
        _check(spec, configs[(spec.text, seeds[0])].options)
    train, test = load_segmentation_data(data, data_params)
    in_channels, num_classes = train.in_channels, len(train.classes)
    native = int(train.images.shape[-1]) if train.images is not None else None
    plans: list[SegRunPlan] = []
    for spec in parsed:
        for seed in seeds:
            cfg = configs[(spec.text, seed)]
            size = cfg.input_size or native
            if size is None:
                raise ValueError(f"spec {spec.text!r}: the images of {data} differ in size; give every spec "
                                 f"@data.input_size=S to resize them to S x S")
            params, macs = _cost(spec, cfg, in_channels, num_classes, size)
            run_dir = out / "runs" / spec.slug / f"seed{seed}"
            state, done = _state(run_dir, cfg, spec)
            fit = len(train) - (round(cfg.holdout_fraction * len(train)) if cfg.holdout_fraction else 0)
            steps = min(math.ceil(fit / cfg.batch_size), cfg.limit_batches or fit)
            plans.append(SegRunPlan(spec, seed, run_dir, cfg, state, done, params, macs, (in_channels, size, size),
                                    min(fit, steps * cfg.batch_size), len(test), _command(spec, cfg, run_dir)))
    return plans


# ---------------------------------------------------------------------------------------------------- one run
def measure_segmentation_run(run_dir: str | Path) -> dict:
    """The record of a finished segmentation run, read from its files: the final test metrics (eval.json), the
    metrics per epoch (metrics.jsonl), parameters and input size (run.json), training time; MACs per image counted
    on the meta device (kept in ``RUN_DIR/compare.json`` for the same checkpoint)."""
    from ..analysis import summarize
    from ..segmentation import create_segmenter
    from ..segmentation.train import _run_record
    from ..train.checkpoint import latest_pointer

    run_dir = Path(run_dir)
    final = _read_json(run_dir / "eval.json")
    if not isinstance(final, dict) or "mean_iu" not in final:
        raise ValueError(f"{run_dir} has no readable eval.json (the run's final test metrics); train it again "
                         "(delete the directory) or evaluate it with `cnnzoo segment eval`")
    tag = (latest_pointer(run_dir / "checkpoints", "last") or {}).get("tag")
    info = _run_record(run_dir)
    model = info.get("model") or {}
    shape = [int(info["data"]["in_channels"]), int(info["input_size"]), int(info["input_size"])]
    cached = _read_json(run_dir / RECORD) or {}
    macs = cached.get("macs") if cached.get("weights_tag") == tag else None
    if macs is None:
        try:
            with torch.device("meta"):
                net = create_segmenter(model["name"], **model["options"])
            macs = summarize(net, shape).macs
        except Exception:  # noqa: BLE001 (a count that cannot be made is left out, never a failure)
            macs = 0
    history = _history(run_dir)
    train_time = sum(float(r.get("epoch_time_s", 0.0)) for r in history)
    train_images = sum(float(r.get("epoch_time_s", 0.0)) * float(r.get("images_per_s", 0.0)) for r in history)
    best = max(history, key=lambda r: r.get("test_mean_iu") or -1.0) if history else {}
    record = {
        "weights_tag": tag, "run_dir": str(run_dir), "model": model.get("name"), "options": model.get("options", {}),
        "dataset": (info.get("data") or {}).get("spec"), "input_size": shape, "output_size": info.get("output_size"),
        "params": int(info.get("num_params") or 0), "macs": macs, "epochs": len(history), "history": history,
        "final": {k: final.get(k) for k in ("mean_iu", "pixel_accuracy", "mean_accuracy", "fw_iu", "loss")},
        "best": {"mean_iu": best.get("test_mean_iu"), "epoch": best.get("epoch")},
        "per_class": final.get("per_class_iou", {}), "per_class_accuracy": final.get("per_class_accuracy", {}),
        "confusion": final.get("confusion", []), "classes": final.get("classes", []),
        "train_time_s": train_time, "train_images_per_s": train_images / train_time if train_time > 0 else None,
        "train_device": info.get("device"), "train_threads": info.get("threads"), "git_commit": info.get("git_commit"),
        "cnnzoo_version": info.get("cnnzoo_version"),
    }
    _mark_divergence(record, len(record["classes"]) or 2)
    from ..fileio import atomic_write

    atomic_write(run_dir / RECORD, json.dumps(record, indent=1).encode())
    return record


def execute_segmentation_run(plan: SegRunPlan, threads: int | None = None, verbose: bool = True,
                             device: str | None = None) -> dict:
    """Train (or resume) one segmentation run to its end with `SegTrainer`, then read its record
    (`measure_segmentation_run`); as `cnnzoo.compare.runner.execute_run`: "diverged" / "failed" records for runs that
    end so, `cnnzoo.train.TrainingInterrupted` on Ctrl-C / SIGTERM after the checkpoint."""
    from ..segmentation.train import SegTrainer
    from ..train import TrainingDiverged, TrainingInterrupted

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if plan.state == "new":
            cfg = plan.cfg
            if device is not None:
                cfg.device = device
            SegTrainer(cfg, run_dir=plan.run_dir, threads=threads, command=plan.command, verbose=verbose).fit()
        elif plan.state == "resume":
            SegTrainer(resume=plan.run_dir, threads=threads, command=plan.command, verbose=verbose).fit()
        record = measure_segmentation_run(plan.run_dir)
    except TrainingInterrupted:
        raise
    except TrainingDiverged as e:
        return {"status": "diverged", "error": _one_line(e), "run_dir": str(plan.run_dir)}
    except Exception as e:  # noqa: BLE001 (a failed spec is reported; the others go on)
        return {"status": "failed", "error": _one_line(e), "run_dir": str(plan.run_dir)}
    finally:
        torch.set_num_threads(old)
    record["threads"] = threads or old
    return record
