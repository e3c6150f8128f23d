"""Training, evaluating and applying segmentation networks in run directories (`cnnzoo segment train|eval|predict`).

    >>> from cnnzoo.segmentation.train import SegTrainer, default_seg_config, evaluate_run
    >>> result = SegTrainer(default_seg_config("unet_padded"), run_dir="runs/unet").fit()
    >>> evaluate_run("runs/unet")["mean_iu"]

A segmentation run directory is a classification run directory with segmentation's record (the same guarantees,
from the same code: `cnnzoo.train.rundir` for the lock, the refusal of a directory holding anything else, the restart
of a run killed before its first checkpoint and the removal of interrupted writes; `cnnzoo.train.checkpoint` for
the safetensors + state pairs, their pointers and the repair of damaged pointers)::

    RUN/run.json        kind "segmentation"; network and its options; the data (spec, params, classes, split
                        sizes, fingerprints of the train and test splits, the holdout's ids); the normalisation
                        statistics of the training images; input and output size; loss; version, commit, command
    RUN/config.yaml     what ``--resume`` continues with (`SegConfig`, flat)
    RUN/metrics.csv     one row per epoch: train loss and pixel accuracy, test loss, the four FCN metrics (and the
    RUN/metrics.jsonl   validation split's when one is carved), lr, time
    RUN/checkpoints/    last.json -> last-eEEEE-bBBBBBB.safetensors + .state.pt (every epoch, and on SIGINT/SIGTERM);
                        best.* only with a validation holdout (``holdout_fraction``), chosen on its mean IU
    RUN/eval.json       the final test metrics of the last checkpoint

Training. Loss: per-pixel cross-entropy averaged over the labelled pixels, the ignore label 255 left out
(``class_weighting: none``), or weighted by class (``median_frequency``, `median_frequency_weights`: SegNet Sec. 3.2
after Eigen & Fergus, ``w_c = median_freq / freq_c`` from the training split's masks, recorded in run.json; the loss
is then ``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` over the labelled pixels, PyTorch's weighted mean, and the test loss
in metrics.csv / eval.json is weighted the same way); a network
whose forward returns ``(main, aux)`` in training adds ``aux_weight`` (its card's) x the auxiliary head's loss (no
weight on the card: the auxiliary output is not trained). A network whose output is smaller than its input (the
paper's valid-convolution U-Net: ``output_size(s) < s``) is trained and scored on the centre crop of the mask that
its output covers (`cnnzoo.segmentation.models.unet.center_crop`), as the paper's overlap-tile scheme pairs each
output pixel with its input context. Images are normalised with the mean and standard deviation of the training
split (without the holdout), recorded in run.json and in every checkpoint. Datasets whose images differ in size
(VOC) need ``input_size``: images are resized to it (bilinear) and masks with nearest neighbour, a deviation from
the papers' random crops; nothing else is augmented. The learning rate is constant (``schedule: none``), cosine, or
DeepLab's "poly" (``(1 - t)^0.9``, DeepLab v2 Sec. 4.1; what the digits recipes use).

Determinism (what makes a resumed run bit-identical to an uninterrupted one on the CPU): the batches of epoch e are
a permutation drawn from a generator seeded by ``(seed, e)`` only; the checkpoint holds the weights, the optimizer,
the global RNG state (dropout) and the position in the epoch; a resumed epoch skips the batches already done; a
resumed run uses the threads it recorded unless told otherwise (a sum's order depends on them).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import atomic_write
from .metrics import IGNORE_INDEX, ConfusionMatrix

__all__ = ["OPTIMIZERS", "SCHEDULES", "LoadedRun", "SegConfig", "SegTrainer", "check_new_segmentation_dir", "default_seg_config",
           "evaluate_run", "evaluate_segmenter", "fit_target", "load_run", "median_frequency_weights",
           "predict_image", "reload_split", "segmentation_loss"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "cosine", "poly")
CLASS_WEIGHTINGS = ("none", "median_frequency")
KIND = "segmentation"  # run.json's "kind"
METRIC_FIELDS = ("epoch", "train_loss", "train_pixel_acc", "test_loss", "test_pixel_acc", "test_mean_acc",
                 "test_mean_iu", "test_fw_iu", "lr", "epoch_time_s", "images_per_s")
VAL_FIELDS = ("val_pixel_acc", "val_mean_iu")


# ------------------------------------------------------------------------------------------------ config
@dataclass
class SegConfig:
    """Everything a segmentation run trains with (config.yaml, flat). `default_seg_config` fills it from the
    network's ``digits_recipe``."""

    model: str
    options: dict = field(default_factory=dict)
    data: str = "digits-segmentation"
    data_params: dict = field(default_factory=dict)
    input_size: int | None = None  # None: the images' own size (they must all have one)
    holdout_fraction: float = 0.0  # > 0: a validation split carved from training; "best" is chosen on it
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    class_weighting: str = "none"  # "median_frequency": SegNet Sec. 3.2's class balancing (`median_frequency_weights`)
    epochs: int = 8
    batch_size: int = 16
    eval_batch_size: int = 50
    seed: int = 0
    limit_batches: int | None = None
    device: str = "cpu"

    def check(self) -> SegConfig:
        """Raise ValueError naming the first invalid setting and what is valid."""

        def whole(key: str, low: int, none: bool = False) -> None:
            v = getattr(self, key)
            if none and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{key} must be a whole number >= {low}{' or null' if none else ''}, got {v!r}")

        for key in ("model", "data"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise ValueError(f"{key} must be a non-empty name, got {getattr(self, key)!r}")
        for key in ("options", "data_params"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{key} must be a mapping of KEY: VALUE, got {getattr(self, key)!r}")
        whole("epochs", 1)
        whole("batch_size", 1)
        whole("eval_batch_size", 1)
        whole("seed", 0)
        whole("limit_batches", 1, none=True)
        whole("input_size", 1, none=True)
        for key, low_open in (("lr", True), ("momentum", False), ("weight_decay", False)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or \
                    (low_open and v == 0):
                raise ValueError(f"{key} must be a finite number {'> 0' if low_open else '>= 0'}, got {v!r}")
        h = self.holdout_fraction
        if isinstance(h, bool) or not isinstance(h, int | float) or not 0 <= h < 1:
            raise ValueError(f"holdout_fraction must be a number in [0, 1), got {h!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(f"class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}; got "
                             f"{self.class_weighting!r}")
        from ..train.config import device_problem

        problem = device_problem(self.device) if isinstance(self.device, str) else f"device {self.device!r}"
        if problem:
            raise ValueError(problem)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> SegConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{where} does not hold a segmentation configuration (a mapping with model, data, ...)")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid), key=str)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(valid)}")
        if "model" not in data:
            raise ValueError(f"{where} names no network (key 'model')")
        return cls(**data).check()


def default_seg_config(name: str, data: str = "digits-segmentation", **overrides) -> SegConfig:
    """The network's ``digits_recipe`` (`cnnzoo.segmentation.get_digits_recipe`: options, optimizer, lr, epochs,
    batch size, and the schedule, weight decay, momentum, class weighting and digits-segmentation parameters where
    the recipe names them) as a config, then ``overrides`` (any `SegConfig` field; ``options`` and ``data_params``
    are merged into the recipe's). The recipe's ``data_params`` apply to ``digits-segmentation`` only."""
    from .registry import get_digits_recipe

    recipe = get_digits_recipe(name)  # an unknown network: UnknownModelError with the close names
    cfg = SegConfig(model=name, options=dict(recipe["options"]), data=data, optimizer=recipe["optimizer"],
                    lr=float(recipe["lr"]), epochs=int(recipe["epochs"]), batch_size=int(recipe["batch_size"]),
                    class_weighting=recipe.get("class_weighting", "none"), schedule=recipe.get("schedule", "none"),
                    weight_decay=float(recipe.get("weight_decay", 0.0)), momentum=float(recipe.get("momentum", 0.9)),
                    data_params=dict(recipe["data_params"]) if data == "digits-segmentation" else {})
    valid = {f.name for f in fields(SegConfig)}
    for key, value in overrides.items():
        if key not in valid:
            raise ValueError(f"unknown segmentation setting {key!r}; valid: {', '.join(sorted(valid))}")
        if value is None:
            continue
        if key == "options":
            cfg.options.update(value)
        elif key == "data_params":
            cfg.data_params.update(value)
        else:
            setattr(cfg, key, value)
    return cfg.check()


# ------------------------------------------------------------------------------------------------ data
def _materialise(ds, size: int | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, S, S), masks uint8 (N, S, S)) of a dataset, resized to ``size`` when given (images
    bilinear, masks nearest neighbour); without ``size`` every image must have one size."""
    if ds.images is not None and (size is None or tuple(ds.images.shape[-2:]) == (size, size)):
        return ds.images, ds.masks.to(torch.uint8)
    images, masks = [], []
    for i in range(len(ds)):
        img, mask = ds[i]
        if size is not None and tuple(img.shape[-2:]) != (size, size):
            img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
            mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
        images.append(img)
        masks.append(mask.to(torch.uint8))
    shapes = sorted({tuple(m.shape) for m in masks})
    if len(shapes) > 1:
        raise ValueError(f"the {what} images of {ds.meta.get('name', 'the dataset')} differ in size ({shapes[0]}, "
                         f"{shapes[-1]}, ...); give an input size (--input-size S) to resize them to S x S")
    return torch.stack(images), torch.stack(masks)


def reload_split(info: dict, split: str):
    """The run's ``split`` ("train" or "test") rebuilt from its record and checked against its fingerprint."""
    from .data import load_segmentation_data

    d = info["data"]
    train, test = load_segmentation_data(d["spec"], d.get("params") or {})
    ds = train if split == "train" else test
    if ds.fingerprint() != d[f"{split}_fingerprint"]:
        raise ValueError(f"the {split} data of {d['spec']} no longer matches the run's record (its images or masks "
                         f"changed since training); evaluate on the data the run was trained with")
    return ds


def _holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of ``n`` training images: ``round(fraction n)`` drawn by ``seed``."""
    k = round(fraction * n) if fraction else 0
    if fraction and not 1 <= k < n:
        raise ValueError(f"holdout_fraction {fraction} of {n} training images leaves {k} for validation and {n - k} "
                         f"for training; both need at least one")
    order = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def _stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (of pixel / 255) of uint8 (N, C, H, W) images."""
    c = images.shape[1]
    x = images.transpose(0, 1).reshape(c, -1).to(torch.float64) / 255.0
    return x.mean(1).tolist(), x.std(1).clamp(min=1e-3).tolist()


def normalise(images: torch.Tensor, mean, std, device=None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std``."""
    x = images.to(device, torch.float32) / 255.0
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


# ------------------------------------------------------------------------------------------------ loss, evaluation
def fit_target(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The mask a ``height x width`` output is scored on: the mask itself, or its centre crop when the output is
    smaller (valid convolutions); a larger output is an error."""
    from .models.unet import center_crop

    if tuple(mask.shape[-2:]) == (height, width):
        return mask
    if height > mask.shape[-2] or width > mask.shape[-1]:
        raise ValueError(f"the network's output ({height}x{width}) is larger than its target mask "
                         f"({mask.shape[-2]}x{mask.shape[-1]})")
    return center_crop(mask, height, width)


def median_frequency_weights(masks: torch.Tensor, num_classes: int) -> list[float]:
    """SegNet's class balancing (Badrinarayanan et al., Sec. 3.2, after Eigen & Fergus 2015, Sec. 4.1):
    ``w_c = median_freq / freq(c)``, where ``freq(c)`` is the number of pixels of class ``c`` divided by the number
    of pixels of the images in which ``c`` is present, and ``median_freq`` the median of those frequencies.

    ``masks``: integer ``(N, H, W)`` labels; the ignore label 255 is left out of every count (a pixel of an image is a
    labelled one). The median is over the classes present in some image (numpy's median: the mean of the two middle
    values for an even number); a class present in none gets weight 0 (it has no pixel to weigh)."""
    m = masks.reshape(len(masks), -1).long()
    labelled = m != IGNORE_INDEX
    counts = torch.zeros(len(m), num_classes, dtype=torch.float64)  # (image, class) pixel counts
    for k in range(num_classes):
        counts[:, k] = ((m == k) & labelled).sum(1).to(torch.float64)
    if bool((m[labelled] >= num_classes).any()) or bool((m[labelled] < 0).any()):
        raise ValueError(f"the masks hold labels outside 0..{num_classes - 1} (and the ignore label {IGNORE_INDEX})")
    image_pixels = labelled.sum(1).to(torch.float64)
    present = counts > 0
    area = (present * image_pixels[:, None]).sum(0)  # pixels of the images where each class is present
    have = area > 0
    freq = torch.where(have, counts.sum(0) / area.clamp(min=1), torch.zeros_like(area))
    if not bool(have.any()):
        raise ValueError("the masks have no labelled pixel to compute class frequencies from")
    median = float(np.median(freq[have].numpy()))
    return [median / float(f) if h else 0.0 for f, h in zip(freq, have)]


def _ce(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """(sum of the per-pixel cross-entropy over the labelled pixels, their count); with per-class ``weight``: (the
    sum of ``w_{y_i} CE_i``, the sum of ``w_{y_i}``) over them."""
    target = fit_target(mask, *logits.shape[-2:]).long()
    if weight is None:
        loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, int((target != IGNORE_INDEX).sum())
    w = weight.to(logits.device, torch.float32)
    loss = F.cross_entropy(logits.float(), target, weight=w, ignore_index=IGNORE_INDEX, reduction="sum")
    labelled = target != IGNORE_INDEX
    return loss, float(w[target[labelled]].sum())


def segmentation_loss(output, mask: torch.Tensor, aux_weight: float | None,
                      class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, main logits): mean cross-entropy over the labelled pixels (255 ignored), plus ``aux_weight`` x the
    auxiliary head's when ``output`` is ``(main, aux, ...)``. ``class_weights`` (one per class): each pixel's
    cross-entropy is weighted by its class's weight and the sum divided by the sum of those weights (PyTorch's
    ``F.cross_entropy(weight=...)`` mean)."""
    outs = tuple(output) if isinstance(output, tuple | list) else (output,)
    total, n = _ce(outs[0], mask, class_weights)
    loss = total / n if n > 0 else total * 0.0
    for aux in outs[1:]:
        if aux_weight:
            s, m = _ce(aux, mask, class_weights)
            loss = loss + aux_weight * (s / m if m > 0 else s * 0.0)
    return loss, outs[0]


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, num_classes: int, mean, std, *,
                       batch_size: int = 50, device: torch.device | str = "cpu",
                       keep_predictions: bool = False, class_weights=None) -> dict:
    """The FCN paper's four metrics, per-class IoU and accuracy, the confusion matrix and the mean loss of
    ``model`` (put in eval mode) on uint8 ``images`` (N, C, H, W) and ``masks`` (N, H, W), 255 ignored; a smaller
    output is scored on the masks' centre crops (`fit_target`). ``keep_predictions``: also the argmax maps.
    ``class_weights``: the loss is the class-weighted mean (as `segmentation_loss`), the metrics are unchanged."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    loss_sum, count, preds = 0.0, 0, []
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    try:
        for i in range(0, len(images), batch_size):
            logits = model(normalise(images[i : i + batch_size], mean, std, device))
            target = fit_target(masks[i : i + batch_size].to(logits.device).long(), *logits.shape[-2:])
            s, n = _ce(logits, target, weight)
            loss_sum, count = loss_sum + float(s), count + n
            pred = logits.argmax(1)
            cm.update(pred.cpu(), target.cpu())
            if keep_predictions:
                preds.append(pred.cpu())
    finally:
        model.train(was_training)
    out = cm.compute() | {"loss": loss_sum / count if count > 0 else 0.0, "confusion": cm.hist.tolist(), "num_images": len(images)}
    if keep_predictions:
        out["predictions"] = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return out


# ------------------------------------------------------------------------------------------------ run directories
def _run_record(run_dir: Path) -> dict:
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _other_kind(run_dir: Path, info: dict) -> str | None:
    """Why ``run_dir`` is not a segmentation run (None when it is one)."""
    if info.get("kind") == KIND:
        return None
    if info.get("kind") == "rcnn":
        return f"{run_dir} is an R-CNN detection run (`cnnzoo detect eval` reads it), not a segmentation run"
    if info.get("kind") == "detection":
        return f"{run_dir} is a one-stage detection run (`cnnzoo detect eval` reads it), not a segmentation run"
    if "cnnzoo_version" in info:
        return f"{run_dir} is a classification run (`cnnzoo eval` / `cnnzoo train --resume` read it), not a " \
               f"segmentation run"
    return f"{run_dir} is not a cnnzoo run directory (no readable run.json in it); give a directory `cnnzoo segment " \
           f"train` wrote"


def check_new_segmentation_dir(run_dir: Path) -> None:
    """`cnnzoo.train.rundir.check_new_run_dir`, with the resume command of a segmentation run in its message."""
    from ..train.rundir import RunDirBusy, check_new_run_dir, has_last_checkpoint

    try:
        check_new_run_dir(run_dir)
    except RunDirBusy:
        raise
    except ValueError as e:
        if run_dir.is_dir() and has_last_checkpoint(run_dir):
            info = _run_record(run_dir)
            how = f"resume it with `cnnzoo segment train --resume {run_dir}` or" if info.get("kind") == KIND else \
                "a new run would overwrite it:"
            raise ValueError(f"--run-dir {run_dir} already holds a run; {how} choose another --run-dir") from None
        raise e from None


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    out = []
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            break
        out.append(p)
    return out


def _abandon(run_dir: Path, made: list[Path]) -> None:
    """A run that failed before its first checkpoint leaves nothing behind: its own files go (`clear_unstarted_run`,
    which removes only what a run writes), then the directories it created if they are empty."""
    from ..train.rundir import LOCK_NAME, clear_unstarted_run

    clear_unstarted_run(run_dir)
    if (run_dir / LOCK_NAME).exists() and not (run_dir / "checkpoints").exists():
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
    for d in made:  # deepest first; rmdir refuses a directory that is not empty
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _recorded(run_dir: Path) -> tuple[SegConfig, tuple | None, dict]:
    """What ``--resume RUN`` continues with: (config, (state_dict, metadata, state) of the last checkpoint or None
    for a run killed before its first one, run.json). The checkpoint's recorded config is the run's; config.yaml
    is only read for a run that has no checkpoint yet."""
    from ..train.checkpoint import load_checkpoint
    from ..train.config import load_yaml_file
    from ..train.rundir import has_last_checkpoint, held_by, is_unstarted_run

    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist (give the directory `cnnzoo segment "
                                f"train` wrote)")
    info = _run_record(run_dir)
    why = _other_kind(run_dir, info)
    if why:
        raise ValueError(why)
    busy = held_by(run_dir)
    if busy is not None:
        raise ValueError(f"run directory {run_dir} is being written by another process ({busy}); wait for it to "
                         "finish or stop it")
    if has_last_checkpoint(run_dir):
        payload = load_checkpoint(run_dir / "checkpoints", "last")  # a damaged pointer is recovered or refused
        if not payload[2]:
            raise ValueError(f"{run_dir}: the last checkpoint has no training state to resume from")
        return SegConfig.from_dict(payload[2].get("config"), f"the last checkpoint of {run_dir}"), payload, info
    if not is_unstarted_run(run_dir):
        raise FileNotFoundError(f"no last checkpoint in {run_dir / 'checkpoints'} (expected "
                                f"{run_dir / 'checkpoints' / 'last.json'}) to resume from")
    written = load_yaml_file(run_dir / "config.yaml", "config") if (run_dir / "config.yaml").is_file() else None
    if not written:
        raise ValueError(f"{run_dir} has no checkpoint yet and its config.yaml is missing or empty: start it again "
                         f"with its train command (--run-dir {run_dir} may be reused)")
    return SegConfig.from_dict(written, str(run_dir / "config.yaml")), None, info


def _check_options(name: str, options: dict) -> None:
    """Refuse what the network cannot be built with before the data is generated: the options are tried on a copy
    built on the meta device (no memory, no weights); ``in_channels``/``num_classes`` come from the data."""
    from .registry import create_segmenter

    fixed = sorted({"in_channels", "num_classes"} & set(options))
    if fixed:
        raise ValueError(f"{name}: {', '.join(fixed)} come(s) from the data (its channels and classes); drop "
                         f"-o {fixed[0]}")
    from ..registry import UnknownOptionError

    try:
        with torch.device("meta"):
            create_segmenter(name, **options, in_channels=1, num_classes=2)
    except (UnknownOptionError, ValueError):
        raise
    except Exception:  # noqa: BLE001, S110  (a network that cannot be built on the meta device: the real build checks)
        pass


def steps_per_epoch(n: int, batch_size: int, limit: int | None = None) -> int:
    """Optimizer steps in an epoch of ``n`` training images: every batch, the last one possibly smaller, except a
    last batch of a single image, which is dropped (BatchNorm cannot normalise one value per channel, as on the
    1x1 image-pooling map of ASPP or DSSD's last map; torch raises there); at most ``limit``."""
    steps = math.ceil(n / batch_size)
    if n > batch_size and n % batch_size == 1:
        steps -= 1
    return min(steps, limit or steps)


class SegTrainer:
    """Train a segmentation network as ``cfg`` says into ``run_dir``, or continue the run ``resume``.

    Args:
        cfg: the config of a new run (`default_seg_config`).
        run_dir: where the new run goes (default ``./runs/NAME-YYYYmmdd-HHMMSS``).
        resume: a run directory to continue from its last checkpoint (or to start again if it has none yet).
        epochs: with ``resume``: the run's new length. A decaying schedule (poly, cosine) is then spread over the
            new length from the step the run reached, so a lengthened run equals an uninterrupted run of the new
            length only with ``schedule: none``; resuming at the same length is always bit-identical.
        threads: torch's intra-op threads while training (default: a new run the process's, a resumed run the
            ones it recorded).
        callbacks: ``fn(trainer, epoch, batch)`` after every optimizer step; may call `request_stop`.
        command: recorded in run.json (default sys.argv).
    """

    def __init__(self, cfg: SegConfig | None = None, *, run_dir: str | Path | None = None,
                 resume: str | Path | None = None, epochs: int | None = None, threads: int | None = None,
                 callbacks: list | None = None, command: list[str] | None = None, verbose: bool = True) -> None:
        from ..train.engine import default_run_dir, resolve_device
        from .registry import create_segmenter, get_segmenter_card

        self.verbose, self.callbacks = verbose, list(callbacks or [])
        self.command = list(sys.argv if command is None else command)
        self._stop_signal: int | None = None
        self._payload, self.restarted, self.lock = None, False, None
        self.resumed = resume is not None
        recorded_info: dict = {}
        if resume is not None:
            self.run_dir = Path(resume)
            cfg, self._payload, recorded_info = _recorded(self.run_dir)
            if epochs is not None:
                cfg.epochs = epochs
                cfg.check()
            if self._payload is None:
                self.resumed, self.restarted = False, True
            if threads is None and self.resumed:
                threads = recorded_info.get("threads")
        elif cfg is None:
            raise ValueError("SegTrainer needs a config or a run directory to resume")
        else:
            cfg.check()
            self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg.model)
        self.cfg, self.threads = cfg, threads or torch.get_num_threads()
        card = get_segmenter_card(cfg.model)  # an unknown network fails before any work
        self.aux_weight = card.aux_weight
        _check_options(cfg.model, cfg.options)  # and so do unknown or invalid options
        if not self.resumed:
            check_new_segmentation_dir(self.run_dir)
        self.device = resolve_device(cfg.device)

        # data: the splits, the holdout, the statistics of the training images
        from .data import load_segmentation_data

        train, test = load_segmentation_data(cfg.data, cfg.data_params)
        if train.classes != test.classes or train.in_channels != test.in_channels:
            raise ValueError(f"{cfg.data}: the train and test splits differ in classes or channels")
        self.classes, self.in_channels = list(train.classes), train.in_channels
        images, masks = _materialise(train, cfg.input_size, "training")
        self.test_images, self.test_masks = _materialise(test, cfg.input_size, "test")
        if tuple(images.shape[-2:]) != tuple(self.test_images.shape[-2:]):
            raise ValueError(f"{cfg.data}: the training images are {tuple(images.shape[-2:])} but the test images "
                             f"{tuple(self.test_images.shape[-2:])}; give --input-size S to resize both")
        self.input_size = int(images.shape[-1])
        fit_idx, val_idx = _holdout(len(train), cfg.holdout_fraction, cfg.seed)
        self.images, self.masks = images[fit_idx], masks[fit_idx]
        self.val = (images[val_idx], masks[val_idx]) if len(val_idx) else None
        self.mean, self.std = _stats(self.images)
        self.class_weights = median_frequency_weights(self.masks, len(self.classes)) \
            if cfg.class_weighting == "median_frequency" else None
        self._weight = None if self.class_weights is None else torch.tensor(self.class_weights, dtype=torch.float32,
                                                                             device=self.device)
        self.data_record = {
            "spec": cfg.data, "params": train.meta.get("params") or dict(cfg.data_params),  # digits: every setting
            "classes": self.classes, "in_channels": self.in_channels,
            "num_train": len(fit_idx), "num_val": len(val_idx), "num_test": len(test),
            "val_ids": [train.ids[i] for i in val_idx], "train_fingerprint": train.fingerprint(),
            "test_fingerprint": test.fingerprint(), "image_size": list(train.images.shape[-2:])
            if train.images is not None else None, "resized_to": cfg.input_size}
        if self.resumed:
            for split in ("train", "test"):
                was = (recorded_info.get("data") or {}).get(f"{split}_fingerprint")
                if was not in (None, self.data_record[f"{split}_fingerprint"]):
                    raise ValueError(f"{cfg.data} no longer gives the {split} split this run started with; restore "
                                     "the data, or start a new run")

        # the network (seeded: the same initial weights), its output size and the optimizer
        torch.manual_seed(cfg.seed)
        model = create_segmenter(cfg.model, **{**cfg.options, "in_channels": self.in_channels,
                                               "num_classes": len(self.classes)})
        smallest = int(getattr(model, "min_input_size", 1))
        if self.input_size < smallest:
            raise ValueError(f"{cfg.model} needs inputs of at least {smallest}x{smallest} pixels but the images are "
                             f"{self.input_size}x{self.input_size}; give --input-size {smallest} or more")
        self.output_size = self._output_size(model)
        self.model = model.to(self.device)
        self.options = {**cfg.options, "in_channels": self.in_channels, "num_classes": len(self.classes)}
        from ..train.config import OptimConfig, ScheduleConfig
        from ..train.optim import LRSchedule, build_optimizer

        self.optimizer = build_optimizer(self.model, OptimConfig(name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                                                                 weight_decay=cfg.weight_decay))
        n = len(self.images)
        self.steps_per_epoch = steps_per_epoch(n, cfg.batch_size, cfg.limit_batches)
        self.schedule = LRSchedule(ScheduleConfig(name=cfg.schedule), cfg.lr, self.steps_per_epoch, cfg.epochs)
        self.epoch = self.batch = self.global_step = 0
        self.sums = [0.0, 0.0, 0]  # the epoch's loss x pixels, correct pixels, labelled pixels
        self.history: list[dict] = []
        self.best_iu = -1.0
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._made: list[Path] = []
        self._start()

    def _output_size(self, model: nn.Module) -> int:
        try:
            out = int(model.output_size(self.input_size))
        except (NotImplementedError, AttributeError):
            model.eval()
            with torch.no_grad():
                out = int(model(torch.zeros(1, self.in_channels, self.input_size, self.input_size)).shape[-1])
            model.train()
        if not 1 <= out <= self.input_size:
            raise ValueError(f"{self.cfg.model} gives a {out}x{out} output for {self.input_size}x{self.input_size} "
                             f"inputs; it can be trained only where the output fits the mask")
        return out

    # ------------------------------------------------------------------ the run directory
    def _start(self) -> None:
        from ..train.checkpoint import repair_pointers
        from ..train.rundir import RunLock, clean_debris, clear_unstarted_run

        if not self.resumed:
            self._made = _missing_dirs(self.run_dir)
        self.lock = RunLock(self.run_dir).acquire(shlex.join(self.command))
        try:
            for note in repair_pointers(self.ckpt_dir):
                print(f"note: {note}", file=sys.stderr, flush=True)
            if not self.resumed:
                cleared = clear_unstarted_run(self.run_dir)  # a run killed before its first checkpoint starts again
                if cleared and self.verbose:
                    print(f"starting again in {self.run_dir}: removed {len(cleared)} file(s) of a run stopped before "
                          "its first checkpoint", flush=True)
            clean_debris(self.run_dir)
            if self.resumed:
                self._restore()
                self._write_config()  # --epochs N: the run's new length
            else:
                self._write_record()
                self._write_config()
        except BaseException:
            self._fail()
            raise

    def _record(self) -> dict:
        from .. import __version__
        from ..train.engine import _git_commit

        return {"kind": KIND, "cnnzoo_version": __version__, "torch_version": torch.__version__,
                "git_commit": _git_commit(), "command": shlex.join(self.command),
                "started": datetime.now().isoformat(timespec="seconds"), "device": str(self.device),
                "threads": self.threads, "model": {"name": self.cfg.model, "options": self.options},
                "num_params": sum(p.numel() for p in self.model.parameters()), "data": self.data_record,
                "normalisation": {"mean": self.mean, "std": self.std, "from": "the training split (without the "
                                  "validation holdout): mean and std of pixel / 255 per channel"},
                "input_size": self.input_size, "output_size": self.output_size,
                "target": "centre crop of the mask" if self.output_size < self.input_size else "the whole mask",
                "loss": {"name": "cross-entropy", "ignore_index": IGNORE_INDEX, "aux_weight": self.aux_weight,
                         "class_weighting": self.cfg.class_weighting, "class_weights": self.class_weights}}

    def _write_record(self, **more) -> None:
        info = (_run_record(self.run_dir) if self.resumed or more else {}) or self._record()
        info.update(more)
        atomic_write(self.run_dir / "run.json", json.dumps(info, indent=1).encode())  # first: marks the run as ours

    def _write_config(self) -> None:
        import yaml

        atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False).encode())

    def _fail(self) -> None:
        """Failed or stopped by an error: a run without a checkpoint leaves nothing; the lock is released."""
        if not self.resumed and not (self.ckpt_dir / "last.json").exists():
            _abandon(self.run_dir, self._made)
        self.close()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ------------------------------------------------------------------ checkpoints
    def weights_metadata(self) -> dict:
        from .. import __version__

        return {"format": "cnnzoo-segmentation", "cnnzoo_version": __version__, "model": self.cfg.model,
                "options": self.options, "num_classes": len(self.classes), "in_channels": self.in_channels,
                "classes": self.classes, "mean": self.mean, "std": self.std, "input_size": self.input_size,
                "output_size": self.output_size, "dataset": self.cfg.data, "epoch": self.epoch, "batch": self.batch,
                "global_step": self.global_step, "holdout_fraction": self.cfg.holdout_fraction}

    def save(self, kind: str = "last") -> None:
        from ..train.checkpoint import save_checkpoint

        tag = f"e{self.epoch:04d}-b{self.batch:06d}"
        prev = getattr(self, "_saved", None)
        state = None
        if kind == "last":
            state = {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step, "sums": list(self.sums),
                     "history": self.history, "best_iu": self.best_iu, "optimizer": self.optimizer.state_dict(),
                     "schedule": self.schedule.state_dict(), "rng_cpu": torch.get_rng_state(),
                     "config": self.cfg.to_dict()}
        path = save_checkpoint(self.ckpt_dir, kind, tag, self.model.state_dict(), self.weights_metadata(), state,
                               same_as=prev[1] if prev and prev[0] == tag else None)
        self._saved = (tag, path)

    def _restore(self) -> None:
        sd, meta, state = self._payload
        self._payload = None
        if meta.get("model") not in (None, self.cfg.model):
            raise ValueError(f"{self.run_dir}: the checkpoint holds {meta.get('model')} weights but its recorded "
                             f"config names {self.cfg.model}")
        try:
            self.model.load_state_dict(sd)
        except RuntimeError as e:
            raise ValueError(f"the checkpoint in {self.run_dir} does not fit {self.cfg.model} built with its recorded "
                             f"options: {str(e).splitlines()[-1].strip()}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng_cpu"])
        self.epoch, self.batch, self.global_step = int(state["epoch"]), int(state["batch"]), int(state["global_step"])
        begun = self.epoch + (1 if self.batch else 0)
        if self.cfg.epochs < begun:
            raise ValueError(f"{self.run_dir} has already trained {self.epoch} epoch(s)"
                             + (f" and {self.batch} step(s) of the next" if self.batch else "")
                             + f", so --epochs {self.cfg.epochs} cannot be its length; give --epochs above "
                             f"{begun - 1} (nothing was changed)")
        self.sums, self.history = list(state["sums"]), list(state["history"])
        self.best_iu = float(state.get("best_iu", -1.0))

    # ------------------------------------------------------------------ signals
    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop after the current step, saving a checkpoint (what Ctrl-C and SIGTERM do)."""
        self._stop_signal = signum

    @contextlib.contextmanager
    def _signals(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {}

        def handler(signum, frame):
            if self._stop_signal is not None:  # a second Ctrl-C: stop now
                signal.signal(signum, old[signum])
                raise KeyboardInterrupt
            self.request_stop(signum)

        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train to ``epochs`` (evaluating and saving "last" after every epoch), then evaluate the last weights on
        the test split; returns those metrics (eval.json) with ``run_dir``."""
        from ..train.progress import make_progress

        progress = make_progress(self.verbose)
        try:
            with _threads(self.threads), self._signals(), progress:
                while self.epoch < self.cfg.epochs:
                    self._train_epoch(progress)
                    self._end_epoch()
                return self._final()
        except BaseException as e:
            from ..train.engine import TrainingInterrupted

            if not isinstance(e, TrainingInterrupted):
                self._fail()
            raise
        finally:
            self.close()

    def _train_epoch(self, progress) -> None:
        from ..data.loader import epoch_seed
        from ..train.engine import TrainingDiverged

        cfg, n = self.cfg, len(self.images)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, self.epoch)))
        self.model.train()
        if self.batch == 0:
            self.sums = [0.0, 0.0, 0]
        task = progress.start_epoch(self.epoch, cfg.epochs, self.steps_per_epoch, self.batch)
        t0, seen = time.perf_counter(), 0
        for i in range(self.batch, self.steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = normalise(self.images[idx], self.mean, self.std, self.device)
            mask = self.masks[idx].to(self.device).long()
            lr = self.schedule.apply(self.optimizer, self.global_step)
            loss, logits = segmentation_loss(self.model(x), mask, self.aux_weight, self._weight)  # forward, loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss.item()} at epoch {self.epoch + 1} step {i + 1}; stopped (the "
                                       f"last good checkpoint is kept in {self.ckpt_dir}); try a lower --lr "
                                       f"(now {cfg.lr:g})")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # backward
            self.optimizer.step()  # step
            self.global_step, self.batch = self.global_step + 1, i + 1
            target = fit_target(mask, *logits.shape[-2:])
            labelled = target != IGNORE_INDEX
            count = int(labelled.sum())
            self.sums[0] += loss.item() * count
            self.sums[1] += int(((logits.detach().argmax(1) == target) & labelled).sum())
            self.sums[2] += count
            seen += len(idx)
            self._epoch_time, self._epoch_seen, self._lr = time.perf_counter() - t0, seen, lr
            progress.update(task, self.batch, loss=self.sums[0] / max(self.sums[2], 1),
                            acc=self.sums[1] / max(self.sums[2], 1), ips=seen / max(self._epoch_time, 1e-9), lr=lr)
            for cb in self.callbacks:
                cb(self, self.epoch, i)
            if self._stop_signal is not None:
                self._interrupted()

    def _interrupted(self) -> None:
        from ..train.engine import TrainingInterrupted

        signum = self._stop_signal or signal.SIGINT
        if self.batch >= self.steps_per_epoch:  # the epoch's steps are done: finish it first
            self._end_epoch(save_last=False)
        self.save("last")
        where = f"at epoch {self.epoch + 1} step {self.batch}" if self.batch else f"after epoch {self.epoch}"
        raise TrainingInterrupted(f"{signal.Signals(signum).name}: stopped {where}; checkpoint saved in "
                                  f"{self.ckpt_dir}. Resume with: cnnzoo segment train --resume {self.run_dir}", signum)

    def _evaluate(self, images, masks) -> dict:
        return evaluate_segmenter(self.model, images, masks, len(self.classes), self.mean, self.std,
                                  batch_size=self.cfg.eval_batch_size, device=self.device,
                                  class_weights=self.class_weights)

    def _end_epoch(self, save_last: bool = True) -> None:
        test = self._evaluate(self.test_images, self.test_masks)
        self._last_eval = (self.global_step, test)
        loss_sum, correct, count = self.sums
        elapsed = getattr(self, "_epoch_time", 0.0)
        row = {"epoch": self.epoch + 1, "train_loss": loss_sum / max(count, 1),
               "train_pixel_acc": correct / max(count, 1),
               "test_loss": test["loss"], "test_pixel_acc": test["pixel_accuracy"],
               "test_mean_acc": test["mean_accuracy"], "test_mean_iu": test["mean_iu"], "test_fw_iu": test["fw_iu"],
               "lr": getattr(self, "_lr", self.cfg.lr), "epoch_time_s": elapsed,
               "images_per_s": getattr(self, "_epoch_seen", 0) / max(elapsed, 1e-9)}
        val = self._evaluate(*self.val) if self.val is not None else None
        if val is not None:  # "best" is chosen here, never on the test split
            row.update(val_pixel_acc=val["pixel_accuracy"], val_mean_iu=val["mean_iu"])
        self.history.append(row)
        if self.verbose:
            print(f"epoch {row['epoch']}/{self.cfg.epochs}  train loss {row['train_loss']:.4f}  |  test pixel acc "
                  f"{100 * row['test_pixel_acc']:.2f}%  mean IU {100 * row['test_mean_iu']:.2f}%"
                  + (f"  |  val mean IU {100 * val['mean_iu']:.2f}%" if val else "")
                  + f"  |  {elapsed:.1f} s", flush=True)
        self.epoch, self.batch, self.sums = self.epoch + 1, 0, [0.0, 0.0, 0]
        self._write_metrics()
        if val is not None and val["mean_iu"] > self.best_iu:
            self.best_iu = val["mean_iu"]
            self.save("best")
        if save_last:
            self.save("last")

    def _write_metrics(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS + (VAL_FIELDS if self.val is not None else ()))
        w.writeheader()
        for row in self.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write(self.run_dir / "metrics.csv", buf.getvalue().encode())
        atomic_write(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history).encode())

    def _final(self) -> dict:
        last = getattr(self, "_last_eval", None)
        test = last[1] if last and last[0] == self.global_step else self._evaluate(self.test_images, self.test_masks)
        result = _public(test, self.classes) | {"checkpoint": str(self.ckpt_dir / "last.safetensors"),
                                                "epoch": self.epoch}
        atomic_write(self.run_dir / "eval.json", json.dumps(result, indent=1).encode())
        self._write_record(finished=datetime.now().isoformat(timespec="seconds"),
                           test_mean_iu=test["mean_iu"], test_pixel_accuracy=test["pixel_accuracy"])
        return result | {"run_dir": str(self.run_dir)}


def _nan_none(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _public(scores: dict, classes: list[str]) -> dict:
    """The metrics as eval.json and ``--format json`` give them: NaN (a class absent and never predicted) as null."""
    return {"pixel_accuracy": _nan_none(scores["pixel_accuracy"]), "mean_accuracy": _nan_none(scores["mean_accuracy"]),
            "mean_iu": _nan_none(scores["mean_iu"]), "fw_iu": _nan_none(scores["fw_iu"]),
            "loss": scores["loss"], "num_images": scores["num_images"],
            "per_class_iou": {c: _nan_none(v) for c, v in zip(classes, scores["per_class_iou"])},
            "per_class_accuracy": {c: _nan_none(v) for c, v in zip(classes, scores["per_class_accuracy"])},
            "classes": list(classes), "confusion": scores["confusion"]}


# ------------------------------------------------------------------------------------------------ eval, predict
@dataclass
class LoadedRun:
    """A trained run: its network (eval mode), run.json, the checkpoint's metadata and file."""

    model: nn.Module
    info: dict
    meta: dict
    checkpoint: Path
    kind: str


def load_run(run_dir: str | Path, kind: str = "last", device: torch.device | str = "cpu") -> LoadedRun:
    """The network of checkpoint ``kind`` ("last", or "best" with a validation holdout) of a segmentation run."""
    from ..train.checkpoint import DamagedPointer, latest_pointer, weights_metadata
    from ..weights import read_checkpoint
    from .registry import create_segmenter

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise FileNotFoundError(f"run directory {str(run_dir)!r} {what} (give the directory `cnnzoo segment train` "
                                "wrote)")
    info = _run_record(run_dir)
    why = _other_kind(run_dir, info)
    if why:
        raise ValueError(why)
    ckpt = run_dir / "checkpoints"
    try:
        pointer = latest_pointer(ckpt, kind)
    except DamagedPointer as e:
        raise ValueError(f"{e}; nothing was changed") from None
    if pointer is None:
        other = "" if kind == "last" else " (a best checkpoint exists only for runs with a validation holdout: " \
                                          "--holdout-fraction)"
        raise FileNotFoundError(f"{run_dir} has no {kind} checkpoint yet (expected {ckpt / (kind + '.json')}){other}")
    file = ckpt / pointer["weights"]
    sd, _ = read_checkpoint(file)  # a ValueError naming the file when it is damaged
    meta = weights_metadata(file)
    if meta.get("format") != "cnnzoo-segmentation":
        raise ValueError(f"{file} is not a segmentation checkpoint written by `cnnzoo segment train`")
    model = create_segmenter(meta["model"], **meta["options"])
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"{file} does not fit {meta['model']} with the options it records: "
                         f"{str(e).splitlines()[-1].strip()}") from None
    return LoadedRun(model.to(device).eval(), info, meta, file, kind)


def evaluate_run(run_dir: str | Path, kind: str = "last", *, device: torch.device | str = "cpu",
                 batch_size: int = 50, keep_predictions: bool = False) -> dict:
    """The metrics of a run's checkpoint on its own test split (rebuilt from the record, checked against its
    fingerprint, resized as in training), with ``checkpoint``/``epoch``/``model``/``dataset``; NaN as None."""
    run = load_run(run_dir, kind, device)
    test = reload_split(run.info, "test")
    images, masks = _materialise(test, run.info["data"].get("resized_to"), "test")
    n = run.info["normalisation"]
    weights = (run.info.get("loss") or {}).get("class_weights")  # the loss the run trained with
    scores = evaluate_segmenter(run.model, images, masks, len(run.meta["classes"]), n["mean"], n["std"],
                                batch_size=batch_size, device=device, keep_predictions=keep_predictions,
                                class_weights=weights)
    out = _public(scores, run.meta["classes"]) | {
        "run_dir": str(run_dir), "checkpoint": str(run.checkpoint), "checkpoint_kind": kind,
        "epoch": run.meta.get("epoch"), "model": run.meta["model"], "dataset": run.info["data"]["spec"],
        "output_size": run.info.get("output_size"), "input_size": run.info.get("input_size")}
    if keep_predictions:
        out["predictions"] = scores["predictions"]
    return out


@torch.no_grad()
def predict_image(run: LoadedRun, image: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor,
                                                                                                    tuple[int, int]]:
    """(class map, (top, left) of the map in the image) of a uint8 ``(C, H, W)`` image, normalised with the run's
    statistics. A run trained on images resized to S x S sees the image resized so, the map resized back (nearest);
    a valid-convolution network's smaller map covers the centre of the image (the offset says where)."""
    info, model = run.info, run.model  # the offset follows `center_crop`'s convention: floor((H - h) / 2)
    c = int(info["data"]["in_channels"])
    if image.shape[0] != c:
        raise ValueError(f"the run's network takes {c}-channel images, got {image.shape[0]}")
    h, w = image.shape[-2:]
    size = info["data"].get("resized_to")
    x = image[None]
    if size:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True).round().clamp(0, 255).to(torch.uint8)
    smallest = int(getattr(model, "min_input_size", 1))
    if min(x.shape[-2:]) < smallest:
        raise ValueError(f"the image is {w}x{h} pixels; {info['model']['name']} needs at least "
                         f"{smallest}x{smallest}")
    n = info["normalisation"]
    pred = model(normalise(x, n["mean"], n["std"], device)).argmax(1)[0].cpu()
    if size:
        pred = F.interpolate(pred[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
    return pred, ((h - pred.shape[0]) // 2, (w - pred.shape[1]) // 2)
