"""The training loop: one `Trainer` for a single process and for every rank under torchrun.

    >>> from cnnzoo.train import Trainer, default_config
    >>> result = Trainer(default_config("lenet5", "mnist5k")).fit()
    >>> result.test.top1

What makes a resumed run bit-identical to an uninterrupted one (on CPU): the data order and augmentation of
epoch e come only from (seed, e) (see `cnnzoo.data.loader`); the learning rate is a pure function of the
global step (`LRSchedule`); the checkpoint holds the weights, the optimizer, the schedule, the loss scaler,
the global RNG state (dropout) and the position inside the epoch; a resumed epoch replays the loader and
skips the batches already done.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
import yaml
from torch import nn

from .. import __version__
from ..bench import is_conv_net
from ..data import default_policy, load_dataset, make_loader
from ..data.record import write_split_file
from ..evaluate.metrics import EvalResult, evaluate, plot_confusion, plot_curves
from ..registry import create_model, get_card
from . import distributed as dist_utils
from .checkpoint import atomic_write, load_checkpoint, repair_pointers, save_checkpoint
from .config import Config, config_from_dict, config_to_dict, load_yaml_file
from .droppath import DropPathSchedule
from .ema import ModelEma
from .init import initialise
from .losses import ClassificationLoss
from .optim import LRSchedule, build_optimizer
from .precise_bn import has_batchnorm, recompute_bn_stats
from .progress import make_progress
from .rundir import (
    RunLock,
    check_new_run_dir,
    clean_debris,
    clear_unstarted_run,
    has_last_checkpoint,
    held_by,
    is_unstarted_run,
)

__all__ = ["FitResult", "Trainer", "TrainingDiverged", "TrainingInterrupted", "divergence_limit", "folder_input_size",
           "is_divergence",
           "resolve_device", "unwrap"]


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a checkpoint was saved; the message says how to resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or an epoch's mean training loss ended far above chance
    (`divergence_limit`); the last good checkpoint is kept."""


DIVERGENCE_FACTOR = 10.0


def divergence_limit(num_classes: int) -> float:
    """The loss above which a run has diverged: 10 x max(ln C, 1) nats for C classes.

    A run has diverged when, at the end of an epoch (the first one included), both its mean training loss and its
    evaluation loss (the validation split's with ``data.holdout_fraction``, else the test split's) are above this
    limit, or either is NaN (`Trainer._check_divergence`). ln C is the cross-entropy of chance (uniform
    predictions), where a freshly initialised network starts (measured: 1.01-1.32 for 3 classes on lenet5, VGG-11
    with and without BN, AlexNet, ZFNet, ResNet-18, SqueezeNet); GoogLeNet's two auxiliary losses weighted 0.3 start it
    at 1.6 ln C. The floor of 1 keeps the margin for two or three classes (ln 2 = 0.69). Both losses are asked for
    because the training loss alone can spike in a run that is not lost: vgg11_bn on 162 64-px shapes with the folder
    recipe's AdamW (lr 1e-3, batch 64) averaged 29.8 over its second epoch while its test loss was 4.4 (eval-mode BN);
    the issue's diverged run (SGD's lr 0.01 on AdamW) had 702 and 882,898, and Adam at lr 5 on lenet5 6e9 and 3e7.
    An overfitted network can have a high test loss, but not with a training loss ten times chance."""
    return DIVERGENCE_FACTOR * max(math.log(max(num_classes, 2)), 1.0)


def is_divergence(train_loss: float | None, eval_loss: float | None, num_classes: int) -> bool:
    """Whether an epoch's losses show divergence (`divergence_limit`); a missing loss does not count as one."""
    limit = divergence_limit(num_classes)

    def above(x) -> bool:
        return isinstance(x, int | float) and not x <= limit  # NaN is above

    nan = any(isinstance(x, float) and math.isnan(x) for x in (train_loss, eval_loss))
    return nan or (above(train_loss) and above(eval_loss))


@dataclass
class FitResult:
    """What `Trainer.fit` returns."""

    run_dir: Path
    test: EvalResult
    history: list[dict]


def resolve_device(name: str) -> torch.device:
    """"auto" -> this rank's GPU when there is one, else the CPU; anything else as torch reads it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_utils.local_rank())
        return torch.device("cpu")
    from .config import check_device

    dev = torch.device(check_device(name))  # a ValueError listing the devices this machine has
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", dist_utils.local_rank())
    return dev


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def default_run_dir(model: str) -> Path:
    """./runs/NAME-YYYYmmdd-HHMMSS, with a suffix if that exists already."""
    base = Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict) and not prefix:
            out += _differences(x, y, f"{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def recorded_config(run_dir: Path) -> tuple[Config, tuple | None, list[str]]:
    """What ``cnnzoo train --resume RUN_DIR`` continues with: (config, (state_dict, metadata, state) of the last
    checkpoint or None when there is none to resume, notes for the user).

    The last checkpoint records the configuration the run trained with; config.yaml is the user's view of it. A
    key config.yaml sets wins (an edit there is honoured, and named in a note); a key it lacks, or an empty or
    missing config.yaml, takes the recorded value, never a library default. A run with no checkpoint yet (killed
    before its first save) is started again from its config.yaml.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a cnnzoo run directory (it does not exist)")
    busy = held_by(run_dir)
    if busy is not None:
        raise ValueError(f"run directory {run_dir} is being written by another process ({busy}); wait for it to "
                         "finish or stop it")
    cfg_path = run_dir / "config.yaml"
    payload = None
    if has_last_checkpoint(run_dir):
        payload = load_checkpoint(run_dir / "checkpoints", "last")  # a damaged pointer is recovered or refused
    elif not is_unstarted_run(run_dir):
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a cnnzoo run directory (no config.yaml in it)")
        raise FileNotFoundError(f"no last checkpoint in {run_dir / 'checkpoints'} (expected "
                                f"{run_dir / 'checkpoints' / 'last.json'}) to resume from")
    recorded = (payload[2].get("config") if payload else None) or None
    written = load_yaml_file(cfg_path, "config") if cfg_path.is_file() else None
    notes = []
    if written is not None and not isinstance(written, dict):
        if recorded is None:
            raise ValueError(f"{cfg_path} does not hold a configuration (a mapping of sections model, data, optim, "
                             "schedule, train); restore it")
        notes.append(f"{cfg_path} does not hold a configuration; resuming with the one the last checkpoint records")
        written = None
    if recorded is None:
        if not written:
            raise ValueError(f"{run_dir} has no checkpoint yet and its config.yaml is "
                             f"{'empty' if cfg_path.is_file() else 'missing'}: nothing records how it was to be "
                             f"trained; start it again with its train command (--run-dir {run_dir} may be reused)")
        return config_from_dict(written, str(cfg_path)), payload, notes
    if not written:
        notes.append(f"{cfg_path} is {'empty' if cfg_path.is_file() else 'missing'}; resuming with the configuration "
                     "the last checkpoint records (config.yaml is written again)")
        merged = recorded
    else:
        merged = {k: ({**v, **written[k]} if isinstance(v, dict) and isinstance(written.get(k), dict)
                      else written.get(k, v)) for k, v in recorded.items()}
        merged.update({k: v for k, v in written.items() if k not in merged})
        changed = [k for k in _differences(recorded, merged) if k != "train.run_dir"]
        if changed:
            notes.append(f"{cfg_path} differs from the configuration the last checkpoint records in "
                         f"{', '.join(changed)}; its values are used")
    cfg = config_from_dict(merged, str(cfg_path))
    if not written:
        atomic_write(cfg_path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
    return cfg, payload, notes


def folder_input_size(name: str, options: dict | None, native: int | None) -> tuple[int, str]:
    """The side of the crops a network trains on from an image folder, when ``data.input_size`` does not say, and why.

    What a timm/torchvision user expects: the network's own input size (its card: 32 for lenet5 and the CIFAR
    networks, 224 for ResNet-50, 299 for Inception v3) - timm's ``resolve_data_config`` and torchvision's reference
    scripts train at it whatever the images. One exception: images smaller than that, for a network that accepts any
    size (a global-pooling head, ``dense_window`` 1, and ``min_input_size`` at most the images' size), are used at
    their own size (``native``: `cnnzoo.data.folder.native_size`): upsampling adds pixels, not detail, at up to
    (card / native)^2 times the compute. A flatten + fc head (lenet5, VGG, AlexNet: ``dense_window`` > 1) reads a
    fixed grid, so it always gets the card's size; so does every network on images larger than that size (they are
    downscaled to it, as the 256 -> 224 ImageNet protocol does). E.g. on 64-pixel images: lenet5 32, resnet20_cifar
    32, resnet50 64, vgg11_bn 224. The network's size limits are read from a copy built on the meta device (no
    memory, no weights)."""
    card = get_card(name).input_size[-1]
    if native is None:
        return card, f"{name}'s input size"
    try:
        with torch.device("meta"):
            probe = create_model(name, num_classes=2, in_channels=3, **dict(options or {}))
        smallest, window = int(getattr(probe, "min_input_size", 1)), int(getattr(probe, "dense_window", 1))
    except Exception:  # noqa: BLE001 (the real build reports bad options; the card's size is then the safe choice)
        return card, f"{name}'s input size"
    if window > 1:
        return card, f"{name}'s input size: its classifier reads a fixed {window}x{window} grid; images {native} px"
    if native >= card:
        return card, f"{name}'s input size; images {native} px"
    if native >= smallest:
        return native, f"the images' own size; {name} accepts any size from {smallest} px (its paper's: {card})"
    return card, f"{name}'s input size: images of {native} px are below its minimum of {smallest}"


METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr", "epoch_time_s",
                 "images_per_s", "grad_norm", "grad_norm_max")  # grad_norm: the epoch's mean global norm before clipping
EMA_FIELDS = ("ema_test_loss", "ema_test_acc", "ema_test_top5")  # with train.ema: the averaged weights' test metrics
VAL_FIELDS = ("val_loss", "val_acc")  # with data.holdout_fraction: the validation split "best" is chosen on


class Trainer:
    """Train ``cfg.model.name`` on ``cfg.data.name`` as the config says, writing everything to a run directory.

    Args:
        cfg: the resolved config (ignored when resuming: the run directory's config.yaml is used).
        resume: a run directory to continue from its last checkpoint.
        command: the command line recorded in run.json (default: sys.argv).
        callbacks: ``fn(trainer, epoch, batch)`` called after every optimizer step (batch is 0-based);
            a callback may call `request_stop`.
        verbose: print progress (rank 0 only in any case).
    """

    def __init__(self, cfg: Config | None = None, *, resume: str | Path | None = None, command: list[str] | None = None,
                 callbacks: list[Callable] | None = None, overrides: Callable[[Config], Config] | None = None,
                 verbose: bool = True) -> None:
        self._resume_payload = None
        self.restarted = False  # --resume of a run stopped before its first checkpoint: it starts again
        if resume is not None:
            resume = Path(resume)
            cfg, self._resume_payload, notes = recorded_config(resume)
            for note in notes if os.environ.get("RANK", "0").strip() in ("", "0") else ():  # rank 0 (torchrun's RANK)
                print(f"note: {note}", file=sys.stderr, flush=True)
            cfg.train.run_dir = str(resume)
            if overrides is not None:
                cfg = overrides(cfg)
            if self._resume_payload is None:  # nothing to resume: the run starts again from its recorded config
                resume, self.restarted = None, True
        if cfg is None:
            raise ValueError("Trainer needs a config or a run directory to resume")
        self.cfg = cfg.validate()
        self.resume_dir = resume
        self.command = list(sys.argv if command is None else command)
        self.callbacks = list(callbacks or [])
        self._stop_signal: int | None = None
        self.device = resolve_device(cfg.train.device)
        if cfg.model.sync_bn and self.device.type not in ("cuda", "xpu", "hpu"):  # torch's SyncBatchNorm: GPUs only
            raise ValueError(f"model.sync_bn (--sync-bn) needs CUDA GPUs under torchrun; SyncBatchNorm does not run "
                             f"on {self.device.type}: drop --sync-bn (or set model.sync_bn=false)")
        self._overridden = resume is not None and overrides is not None
        self.distributed = dist_utils.setup(str(self.device))
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.is_main = self.rank == 0
        self.verbose = verbose and self.is_main
        self._build()

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        is_folder = cfg.data.name.startswith("folder:")
        chosen: dict = {}  # the folder's crop size, when cnnzoo chooses it: (size, why)

        def choose(native: int | None) -> int:
            chosen["size"], chosen["why"] = folder_input_size(cfg.model.name, cfg.model.options, native)
            return chosen["size"]

        image_size = cfg.data.input_size
        if is_folder and image_size is None:
            image_size = self._recorded_image_size() or choose  # a resumed run keeps the size it trained at
        folder = {"val_fraction": cfg.data.val_fraction, "strict": cfg.data.strict, "image_size": image_size}
        self.bundle = load_dataset(cfg.data.name, data_dir=cfg.data.data_dir, download=cfg.data.download,
                                   seed=cfg.train.seed, **(folder if is_folder else {}))
        if len(self.bundle.test) == 0:
            raise ValueError(f"{self.bundle.name} has no test images ({self.bundle.summary()}); a run needs a test "
                             "split to report accuracy: add a val/ folder, or images to the classes with only one")
        self.data_record = self.bundle.record()
        # data.holdout_fraction: the validation split "best" is chosen on, carved from the training split
        self.fit_bundle, self.val_bundle = self.bundle, None
        if cfg.data.holdout_fraction:
            from ..data.bundle import carve_validation

            self.fit_bundle, self.val_bundle = carve_validation(self.bundle, cfg.data.holdout_fraction, cfg.train.seed)
        card = get_card(cfg.model.name)
        self.card = card
        model = create_model(cfg.model.name, num_classes=self.bundle.num_classes,
                             in_channels=self.bundle.in_channels, weights=cfg.model.weights, **cfg.model.options)
        # the options the network was really built with: the user's plus any a checkpoint implied (weights=)
        self.model_options = dict(getattr(model, "pretrained_cfg", {}).get("options", cfg.model.options))
        self.init_report: dict = {}
        if self.resume_dir is None:  # model.init, then model.init_from (train/init.py); a resumed run loads its own
            self.init_report = initialise(model, cfg.model.init, cfg.model.init_from, name=cfg.model.name,
                                          log=(lambda s: print(s, flush=True)) if self.verbose else None)
        self.input_size = cfg.data.input_size
        native = self.bundle.image_size[0]
        if cfg.data.input_size is not None:
            why = "data.input_size"
        elif is_folder:  # the folder's crops are made at the chosen size: recorded as the run's input size
            self.input_size = native
            why = chosen.get("why", "the size this run started with")
        elif getattr(model, "min_input_size", 1) > native:
            self.input_size = card.input_size[-1]  # e.g. a 224-pixel network on 32-pixel CIFAR: upsample
            why = f"{cfg.model.name}'s input size: the {native}-pixel images are upsampled"
        else:
            why = "the dataset's own size"
        size = self.input_size or native
        self.input_description = f"{size}x{size} ({why})"
        self.threads = torch.get_num_threads()
        model.to(self.device)
        self.channels_last = cfg.model.channels_last if cfg.model.channels_last is not None else is_conv_net(model)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        net: nn.Module = model
        if self.distributed:
            if cfg.model.sync_bn:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
                self.model = net
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.model.compile:
            net = torch.compile(net)
        self.net = net

        common = {"device": self.device, "seed": cfg.train.seed, "rank": self.rank, "world_size": self.world,
                      "input_size": self.input_size, "num_workers": cfg.data.num_workers}
        # the training augmentation as applied (the dataset's default when the config leaves it None)
        self.train_augment = dict(cfg.data.augment if cfg.data.augment is not None else default_policy(self.bundle))
        self.train_loader = make_loader(self.fit_bundle, "train", batch_size=cfg.data.batch_size, train=True,
                                        augment=cfg.data.augment, **common)
        self.val_loader = None if self.val_bundle is None else make_loader(
            self.val_bundle, "test", batch_size=cfg.data.eval_batch_size, train=False, **common)
        self.test_loader = make_loader(self.bundle, "test", batch_size=cfg.data.eval_batch_size, train=False,
                                       **common)
        # train.precise_bn: the training images in a fixed order without augmentation, read in this process
        if cfg.train.precise_bn and not has_batchnorm(model):
            raise ValueError(f"train.precise_bn={cfg.train.precise_bn} re-estimates BatchNorm statistics before each "
                             f"evaluation, but {cfg.model.name} has no BatchNorm layer: drop the option (0 is off)")
        self.bn_loader = make_loader(self.fit_bundle, "train", batch_size=cfg.data.batch_size, train=False, augment={},
                                     **{**common, "num_workers": 0}) if cfg.train.precise_bn else None
        steps = len(self.train_loader)
        if cfg.train.limit_batches is not None:
            steps = min(steps, cfg.train.limit_batches)
        self.steps_per_epoch = steps
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.schedule = LRSchedule(cfg.schedule, cfg.optim.lr, steps, cfg.train.epochs)
        self.loss_fn = ClassificationLoss(cfg.train.label_smoothing, card.aux_weight, cfg.train.loss)
        amp = cfg.train.amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        # train.ema, train.mix, train.drop_path_schedule (train/ema.py, data/mix.py, train/droppath.py); the EMA copy
        # is taken before the mixer hooks the network
        self.ema = ModelEma(self.model, **cfg.train.ema) if cfg.train.ema else None
        self.best_ema_acc = -1.0
        from ..data.mix import build_mixer

        size = (self.input_size,) * 2 if self.input_size else tuple(self.bundle.image_size)
        self.mixer = build_mixer(cfg.train.mix, self.model, self.bundle.num_classes, seed=cfg.train.seed,
                                 rank=self.rank, image_size=size, in_channels=self.bundle.in_channels,
                                 compiled=cfg.model.compile)
        self.drop_path = DropPathSchedule(self.model, cfg.train.drop_path_schedule, steps * cfg.train.epochs,
                                          cfg.model.name, compiled=cfg.model.compile)

        # position and history
        self.epoch, self.batch, self.global_step = 0, 0, 0
        self.sums = [0.0, 0.0, 0]  # train loss sum, correct, count of the current epoch
        self.grad_stats = [0.0, 0.0, 0]  # the epoch's sum and max of the gradient norm before clipping, steps
        self.history: list[dict] = []
        self.best_acc = -1.0
        self._compile_time: float | None = None  # torch.compile's first step in this process (model.compile)
        self._compile_epoch = 0.0
        self.lock: RunLock | None = None
        self._created_dir = False
        if self.resume_dir is not None:
            self.run_dir = self.resume_dir
            self.ckpt_dir = self.run_dir / "checkpoints"
            if self.is_main:
                self._lock_and_clean()
            self._check_same_data()
            self._restore()
            if self.is_main and self._overridden:  # e.g. --resume --epochs N: the run now trains to the new config
                atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
        else:
            run_dir = Path(cfg.train.run_dir) if cfg.train.run_dir else default_run_dir(cfg.model.name)
            self.run_dir = Path(dist_utils.broadcast_object(str(run_dir)))
            self.ckpt_dir = self.run_dir / "checkpoints"
            if self.is_main:
                check_new_run_dir(self.run_dir)
                self._created_dir = not self.run_dir.exists()
                self._made_parents = [p for p in self.run_dir.parents if not p.exists()]  # e.g. ./runs (issue 23)
                self._lock_and_clean()
                try:
                    self._start_run_dir()
                except BaseException:
                    self._abandon_if_empty()
                    raise

    def _recorded_image_size(self) -> int | None:
        """The folder crop size a resumed run recorded (run.json's data record), so it goes on at that size."""
        if self.resume_dir is None:
            return None
        try:
            size = json.loads((Path(self.resume_dir) / "run.json").read_text())["data"]["image_size"][0]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None
        return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None

    def _lock_and_clean(self) -> None:
        """Take the run directory's lock (a second writer fails naming the holder), rebuild damaged checkpoint
        pointers from the checkpoint files, then remove debris of kills (never on a damaged pointer's word)."""
        self.lock = RunLock(self.run_dir).acquire(shlex.join(self.command))
        for note in repair_pointers(self.ckpt_dir):
            print(f"note: {note}", file=sys.stderr, flush=True)
        if self.resume_dir is None:  # a run killed before its first checkpoint, started again: its files go
            cleared = clear_unstarted_run(self.run_dir)
            if cleared and self.verbose:
                print(f"starting again in {self.run_dir}: removed {len(cleared)} file(s) of a run stopped before its "
                      "first checkpoint", flush=True)
        removed = clean_debris(self.run_dir)
        if removed and self.verbose:
            print(f"removed {len(removed)} leftover file(s) of an interrupted write in {self.run_dir}", flush=True)

    def _check_same_data(self) -> None:
        """A resumed run must see the data it started on: the same split, file for file."""
        try:
            recorded = json.loads((self.run_dir / "run.json").read_text()).get("data")
        except (OSError, ValueError):
            recorded = None
        if not recorded:
            return
        for split in ("train", "test"):
            if recorded.get(f"{split}_sha256") not in (None, self.data_record[f"{split}_sha256"]):
                raise ValueError(
                    f"{self.bundle.name} no longer gives the {split} split this run started with "
                    f"({recorded.get(f'{split}_count')} images recorded, {self.data_record[f'{split}_count']} now): "
                    "files were added, removed or renamed. Restore the data, or start a new run")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _start_run_dir(self) -> None:
        d = self.run_dir
        d.mkdir(parents=True, exist_ok=True)
        info = {
            "cnnzoo_version": __version__,
            "torch_version": torch.__version__,
            "git_commit": _git_commit(),
            "command": shlex.join(self.command),
            "started": datetime.now().isoformat(timespec="seconds"),
            "device": str(self.device),
            "world_size": self.world,
            "dataset": self.bundle.name,
            "classes": list(self.bundle.classes),
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "input_size": self.input_size,
            "threads": self.threads,  # intra-op threads (--threads): a run's sums depend on them
            "data": self.data_record,
            "init": self.init_report,  # the init scheme's report and what --init-from copied (train/init.py)
        }
        # run.json first: it marks the directory as cnnzoo's, so a kill at any later instant leaves a run that can
        # start again (`rundir.is_unstarted_run`)
        atomic_write(d / "run.json", json.dumps(info, indent=1).encode())
        atomic_write(d / "config.yaml", yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False).encode())
        write_split_file(self.bundle, d)

    # ------------------------------------------------------------------ checkpoints
    def weights_metadata(self) -> dict:
        """What a checkpoint's safetensors metadata holds: enough to rebuild the model and its preprocessing."""
        b = self.bundle
        return {"format": "cnnzoo", "cnnzoo_version": __version__, "model": self.cfg.model.name,
                "options": self.model_options, "num_classes": b.num_classes, "in_channels": b.in_channels,
                "classes": list(b.classes), "mean": list(b.mean), "std": list(b.std), "dataset": b.name,
                "image_size": list(b.image_size), "input_size": self.input_size, "epoch": self.epoch,
                "batch": self.batch, "global_step": self.global_step, "data": self.data_record,
                "train_augment": self.train_augment,
                "holdout_fraction": self.cfg.data.holdout_fraction}

    def _state(self) -> dict:
        state = {
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "sums": list(self.sums), "grad_stats": list(self.grad_stats), "history": self.history,
            "best_acc": self.best_acc,
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
            "config": config_to_dict(self.cfg),
        }
        if self.ema is not None:
            state["ema"], state["best_ema_acc"] = self.ema.state_dict(), self.best_ema_acc
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, kind: str = "last") -> None:
        """Write checkpoint ``kind`` ("last" with full state, "best" weights only, "ema_best" the EMA's) on rank 0;
        with EMA, every "last" also writes the EMA weights as "ema_last"."""
        if not self.is_main:
            return
        tag = f"e{self.epoch:04d}-b{self.batch:06d}"
        saved = getattr(self, "_saved", {})  # (tag, weights file) last written per weights kind: same step, one file
        if kind != "ema_best":
            prev = saved.get("model")
            path = save_checkpoint(self.ckpt_dir, kind, tag, unwrap(self.model).state_dict(), self.weights_metadata(),
                                   self._state() if kind == "last" else None,
                                   same_as=prev[1] if prev and prev[0] == tag else None)
            saved["model"] = (tag, path)
        if self.ema is not None and kind in ("last", "ema_best"):  # the EMA weights: a checkpoint of their own
            meta = {**self.weights_metadata(), "weights": "ema", "ema_decay": self.ema.decay}
            prev = saved.get("ema")
            path = save_checkpoint(self.ckpt_dir, "ema_last" if kind == "last" else kind, tag, self.ema.state_dict(),
                                   meta, same_as=prev[1] if prev and prev[0] == tag else None)
            saved["ema"] = (tag, path)
        self._saved = saved

    def _restore(self) -> None:
        sd, meta, state = self._resume_payload or load_checkpoint(self.run_dir / "checkpoints", "last")
        self._resume_payload = None
        if not state:
            raise FileNotFoundError(f"{self.run_dir}: the last checkpoint has no training state to resume from")
        saved = meta.get("model")
        if saved is not None and saved != self.cfg.model.name:
            raise ValueError(f"{self.run_dir}/config.yaml names {self.cfg.model.name}, but the run's checkpoint holds "
                             f"{saved} weights; set model.name back to {saved} in config.yaml")
        try:
            unwrap(self.model).load_state_dict(sd)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
            raise ValueError(f"the checkpoint in {self.run_dir} does not fit the network its config.yaml describes "
                             f"(was config.yaml edited?): {first}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.epoch, self.batch, self.global_step = state["epoch"], state["batch"], state["global_step"]
        done = self.epoch + (1 if self.batch else 0)  # epochs begun
        if self.cfg.train.epochs < done:
            recorded = (state.get("config") or {}).get("train", {}).get("epochs")
            raise ValueError(
                f"{self.run_dir} has already trained {self.epoch} epoch(s)" + (f" and {self.batch} step(s) of the "
                f"next" if self.batch else "") + f", so train.epochs={self.cfg.train.epochs} cannot be its length; "
                f"to train further give --epochs above {done - 1}" + (f", or leave --epochs out to finish its "
                f"{recorded} epochs" if recorded and recorded >= done else "") + " (nothing was changed)")
        self.sums = list(state["sums"])
        self.grad_stats = list(state.get("grad_stats", [0.0, 0.0, 0]))  # runs saved before it: none recorded
        self.history = list(state["history"])
        self.best_acc = float(state["best_acc"])
        if self.ema is not None:  # the average goes on; switched on at --resume, it starts from the weights
            self.ema.load_state_dict(state.get("ema", unwrap(self.model).state_dict()))
            self.best_ema_acc = float(state.get("best_ema_acc", -1.0))

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
            if self._stop_signal is not None:  # second Ctrl-C: stop now
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

    # ------------------------------------------------------------------ loop
    def fit(self) -> FitResult:
        """Train to ``train.epochs``; evaluate, save and plot after every epoch; return the final test metrics."""
        cfg = self.cfg
        progress = make_progress(self.verbose, cfg.train.log_every)
        try:
            try:
                with self._signals(), progress:
                    while self.epoch < cfg.train.epochs:
                        self._train_epoch(progress)
                        self._end_epoch()
            finally:
                self.train_loader.close()
            final = self._final_eval()
        except BaseException as e:
            if not isinstance(e, TrainingInterrupted):
                self._abandon_if_empty()
            raise
        finally:
            self.close()
        if self.distributed:
            dist_utils.teardown()
        return FitResult(self.run_dir, final, self.history)

    def close(self) -> None:
        """Release the run directory's lock (also released when the process exits, however it exits)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _abandon_if_empty(self) -> None:
        """A run that failed before its first checkpoint leaves nothing behind (its files would only mislead)."""
        if not self.is_main or self.resume_dir is not None or any(self.ckpt_dir.glob("*.json")):
            return
        for name in ("config.yaml", "run.json", "split.json", "metrics.csv", "metrics.jsonl", "curves.png"):
            (self.run_dir / name).unlink(missing_ok=True)
        self.close()
        (self.run_dir / ".lock").unlink(missing_ok=True)
        if self._created_dir:
            with contextlib.suppress(OSError):
                (self.run_dir / "checkpoints").rmdir()
            for d in (self.run_dir, *getattr(self, "_made_parents", ())):  # deepest first; only empty ones go
                with contextlib.suppress(OSError):
                    d.rmdir()

    def _flags(self, loss: torch.Tensor) -> tuple[bool, bool]:
        """(stop requested, loss not finite), agreed across ranks."""
        bad = not torch.isfinite(loss.detach()).item()
        stop = self._stop_signal is not None
        if self.distributed:
            t = torch.tensor([float(stop), float(bad)], device=self.device)
            dist_utils.all_reduce_sum(t)
            stop, bad = bool(t[0] > 0), bool(t[1] > 0)
            if stop and self._stop_signal is None:
                self._stop_signal = signal.SIGTERM
        return stop, bad

    def _train_epoch(self, progress) -> None:
        cfg = self.cfg
        loader = self.train_loader
        loader.set_epoch(self.epoch)
        self.net.train()
        start_batch = self.batch
        if start_batch == 0:
            self.sums = [0.0, 0.0, 0]
            self.grad_stats = [0.0, 0.0, 0]
        task = progress.start_epoch(self.epoch, cfg.train.epochs, self.steps_per_epoch, start_batch)
        t0, seen = time.perf_counter(), 0
        compiling = self.cfg.model.compile and self._compile_time is None  # the first step compiles
        for i, (images, labels) in enumerate(loader):
            if i >= self.steps_per_epoch:
                break
            if i < start_batch:  # resumed mid-epoch: the loader replays the epoch; skip what was done
                continue
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if compiling:
                t_compile = time.perf_counter()
            lr = self.schedule.apply(self.optimizer, self.global_step)
            self.drop_path.apply(self.global_step)
            target, mixing = labels, contextlib.nullcontext()
            if self.mixer is not None:  # mixed inputs (or hooks that mix inside) and soft targets, from (seed, e, i)
                mixed = self.mixer(images, labels, self.epoch, i)
                images, target, mixing = mixed.images, mixed.target, mixed.context
            with self.autocast(), mixing:
                output = self.net(images)
            loss, logits = self.loss_fn(output, target)
            stop, bad = self._flags(loss)
            if bad:
                self._diverged(loss, i)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self._clip_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model, self.global_step)
            if compiling:  # torch.compile's time (with that one step) is reported apart, not as epoch time
                self._compile_time = self._compile_epoch = time.perf_counter() - t_compile
                t0 += self._compile_time
                compiling = False
                if self.verbose:
                    print(f"torch.compile: {self._compile_time:.1f} s (the first step, not counted in epoch time)",
                          flush=True)
            self.global_step += 1
            self.batch = i + 1
            n = labels.numel()
            seen += n
            self.sums[0] += loss.item() * n
            self.sums[1] += (logits.detach().argmax(1) == labels).sum().item()
            self.sums[2] += n
            elapsed = time.perf_counter() - t0
            self._epoch_time, self._epoch_seen, self._last_lr = elapsed, seen * self.world, lr
            progress.update(task, self.batch, loss=self.sums[0] / self.sums[2], acc=self.sums[1] / self.sums[2],
                            ips=seen * self.world / max(elapsed, 1e-9), lr=lr)
            for cb in self.callbacks:
                cb(self, self.epoch, i)
            stop = stop or self._stop_signal is not None
            if stop:
                self._interrupted()

    def _clip_gradients(self) -> None:
        """``optim.grad_clip``/``grad_clip_mode`` (note 002: g <- g v / ||g|| when ||g|| > v, or each component
        clamped to [-v, v]), on the unscaled gradient; the global L2 norm before clipping goes into the epoch's
        ``grad_norm`` (mean over the steps whose norm is finite) and ``grad_norm_max``."""
        o = self.cfg.optim
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16; step() would unscale the same way
        params = [p for p in self.model.parameters() if p.grad is not None]
        if o.grad_clip is not None and o.grad_clip_mode == "norm":
            norm = nn.utils.clip_grad_norm_(params, o.grad_clip)  # returns the norm before clipping
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
            if o.grad_clip is not None:
                nn.utils.clip_grad_value_(params, o.grad_clip)
        value = float(norm)
        if math.isfinite(value):  # fp16 steps with inf/NaN gradients are skipped by the scaler: not counted
            stats = self.grad_stats
            stats[0], stats[1], stats[2] = stats[0] + value, max(stats[1], value), stats[2] + 1

    def _diverged(self, loss: torch.Tensor, batch: int) -> None:
        last = "no checkpoint was written yet"
        if (self.ckpt_dir / "last.json").exists():
            last = f"the last good checkpoint (epoch {self.epoch}, batch {self.batch}) is kept in {self.ckpt_dir}"
        value = loss.detach().float().item() if loss.numel() == 1 else float("nan")
        raise TrainingDiverged(
            f"loss is {value} at epoch {self.epoch + 1} step {batch + 1} (global step {self.global_step + 1}); "
            f"stopped, {last}. Try a lower optim.lr (now {self.cfg.optim.lr}), optim.grad_clip or train.amp=off.")

    def _check_divergence(self, row: dict) -> None:
        """Stop (`TrainingDiverged`) when the epoch's training and evaluation losses are far above chance
        (`divergence_limit`), agreed across ranks; the epoch's metrics are written, its weights are not saved."""
        limit = divergence_limit(self.bundle.num_classes)
        loss, split = (row["val_loss"], "validation") if "val_loss" in row else (row["test_loss"], "test")
        bad = is_divergence(row["train_loss"], loss, self.bundle.num_classes)
        if self.distributed:
            t = torch.tensor([float(bad)], device=self.device)
            dist_utils.all_reduce_sum(t)
            bad = bool(t[0] > 0)
        if not bad:
            return
        if self.is_main:
            self._write_metrics()  # the user sees the epoch that diverged (metrics.csv; the checkpoint lacks it)
        last = "no checkpoint was written yet"
        if (self.ckpt_dir / "last.json").exists():
            last = f"the last good checkpoint (epoch {self.epoch}) is kept in {self.ckpt_dir}"
        c = self.bundle.num_classes
        raise TrainingDiverged(
            f"diverged: in epoch {self.epoch + 1} the mean training loss is {row['train_loss']:.4g} and the {split} "
            f"loss {loss:.4g}, far above chance (ln {c} = {math.log(c):.3g}; the limit is 10 x max(ln C, 1) = "
            f"{limit:.3g}); stopped, {last}. Try a lower optim.lr "
            f"(now {self.cfg.optim.lr:g} with {self.cfg.optim.name}), optim.grad_clip or train.amp=off.")

    def _interrupted(self) -> None:
        signum = self._stop_signal or signal.SIGINT
        if self.batch >= self.steps_per_epoch:  # the epoch's steps are done: finish it cleanly first
            self._end_epoch(save_last=False)
        self.save("last")
        name = signal.Signals(signum).name
        where = f"at epoch {self.epoch + 1} step {self.batch}" if self.batch else f"after epoch {self.epoch}"
        raise TrainingInterrupted(
            f"{name}: stopped {where}; "
            f"checkpoint saved in {self.ckpt_dir}. Resume with: cnnzoo train --resume {self.run_dir}", signum)

    def _precise_bn(self) -> None:
        """``train.precise_bn``: re-estimate the BN statistics of the current weights before they are evaluated."""
        if self.bn_loader is None:
            return

        def forward(x: torch.Tensor) -> torch.Tensor:  # the bare network: DDP would broadcast rank 0's buffers
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                return self.model(x)

        def mean(t: torch.Tensor) -> None:
            dist_utils.all_reduce_sum(t).div_(self.world)

        recompute_bn_stats(self.model, self.bn_loader, self.cfg.train.precise_bn, forward=forward,
                           all_reduce_mean=mean if self.distributed else None)

    def _end_epoch(self, save_last: bool = True) -> None:
        self._precise_bn()
        test = evaluate(self.net, self.test_loader, self.bundle.num_classes, self.bundle.classes,
                        autocast=self.autocast(), channels_last=self.channels_last)
        self.schedule.end_epoch(test.loss)
        self._last_eval = (self.global_step, test)  # _final_eval reuses it when no step was taken since
        loss_sum, correct, count = self.sums
        row = {"epoch": self.epoch + 1, "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
               "test_loss": test.loss, "test_acc": test.top1, "test_top5": test.top5,
               "lr": getattr(self, "_last_lr", self.cfg.optim.lr), "epoch_time_s": getattr(self, "_epoch_time", 0.0),
               "images_per_s": getattr(self, "_epoch_seen", 0) / max(getattr(self, "_epoch_time", 0.0), 1e-9),
               "grad_norm": self.grad_stats[0] / self.grad_stats[2] if self.grad_stats[2] else None,
               "grad_norm_max": self.grad_stats[1] if self.grad_stats[2] else None}  # None: no finite norm
        if self.cfg.model.compile:  # compilation in this epoch (its first step, or a resumed run's), seconds
            row["compile_time_s"], self._compile_epoch = self._compile_epoch, 0.0
        ema = val = ema_val = None
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.test_loader, self.bundle.num_classes, self.bundle.classes,
                           autocast=self.autocast(), channels_last=self.channels_last)
            row.update(ema_test_loss=ema.loss, ema_test_acc=ema.top1, ema_test_top5=ema.top5)
        if self.val_loader is not None:  # "best" is chosen here, never on the test split
            val = evaluate(self.net, self.val_loader, self.bundle.num_classes, self.bundle.classes,
                           autocast=self.autocast(), channels_last=self.channels_last)
            row.update(val_loss=val.loss, val_acc=val.top1)
            if self.ema is not None:
                ema_val = evaluate(self.ema.module, self.val_loader, self.bundle.num_classes, self.bundle.classes,
                                   autocast=self.autocast(), channels_last=self.channels_last)
                row.update(ema_val_acc=ema_val.top1)
        self.history.append(row)
        if self.verbose:
            print(f"epoch {row['epoch']}/{self.cfg.train.epochs}  train loss {row['train_loss']:.4f} "
                  f"acc {100 * row['train_acc']:.2f}%  |  test loss {test.loss:.4f} top-1 {100 * test.top1:.2f}% "
                  f"top-5 {100 * test.top5:.2f}%  |  lr {row['lr']:.3g}  {row['epoch_time_s']:.1f} s "
                  f"({row['images_per_s']:.0f} img/s)" + (f"  |  val top-1 {100 * val.top1:.2f}%" if val else "") +
                  (f"  |  EMA top-1 {100 * ema.top1:.2f}%" if ema else ""),
                  flush=True)
        self._check_divergence(row)
        self.epoch += 1
        self.batch = 0
        self.sums = [0.0, 0.0, 0]
        self.grad_stats = [0.0, 0.0, 0]
        if self.is_main:
            self._write_metrics()
            if val is not None and val.top1 > self.best_acc:  # chosen on the validation split only
                self.best_acc = val.top1
                self.save("best")
            if ema_val is not None and ema_val.top1 > self.best_ema_acc:
                self.best_ema_acc = ema_val.top1
                self.save("ema_best")
            if save_last and (self.epoch % self.cfg.train.save_every == 0 or self.epoch == self.cfg.train.epochs):
                self.save("last")

    def _write_metrics(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS + (EMA_FIELDS if self.ema is not None else ()) +
                           (VAL_FIELDS + (("ema_val_acc",) if self.ema is not None else ())
                            if self.val_loader is not None else ()) +
                           (("compile_time_s",) if self.cfg.model.compile else ()))
        w.writeheader()
        for row in self.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write(self.run_dir / "metrics.csv", buf.getvalue().encode())
        atomic_write(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history).encode())
        try:
            plot_curves(self.history, self.run_dir / "curves.png")
        except Exception as e:  # noqa: BLE001  (a plotting failure must never lose a training run)
            print(f"warning: could not draw curves.png: {e}", file=sys.stderr)

    def _final_eval(self) -> EvalResult:
        last = getattr(self, "_last_eval", None)  # the last epoch's evaluation of these very weights: not run twice
        if last is not None and last[0] == self.global_step:
            test = last[1]
        else:
            self._precise_bn()
            test = evaluate(self.net, self.test_loader, self.bundle.num_classes, self.bundle.classes,
                            autocast=self.autocast(), channels_last=self.channels_last)
        if self.is_main:
            atomic_write(self.run_dir / "eval.json", json.dumps(test.to_dict(), indent=1).encode())
        if self.ema is not None:  # every rank evaluates (the sums are all-reduced); rank 0 writes
            ema = evaluate(self.ema.module, self.test_loader, self.bundle.num_classes, self.bundle.classes,
                           autocast=self.autocast(), channels_last=self.channels_last)
            if self.is_main:
                atomic_write(self.run_dir / "eval_ema.json", json.dumps(ema.to_dict(), indent=1).encode())
        if self.is_main:
            try:
                plot_confusion(test, self.run_dir / "confusion_matrix.png")
            except Exception as e:  # noqa: BLE001
                print(f"warning: could not draw confusion_matrix.png: {e}", file=sys.stderr)
        return test

