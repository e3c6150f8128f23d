"""The typed training configuration: five sections of dataclasses filled from recipes and ``--set`` overrides.

    >>> cfg = default_config("lenet5", "mnist5k")          # the dataset's recipe (recipes/mnist5k.yaml)
    >>> cfg = apply_overrides(cfg, ["optim.lr=0.05", "train.epochs=3"])
    >>> cfg.optim.lr
    0.05

Every key is checked: an unknown one fails listing the valid keys of its section, a value of the wrong type
fails naming the expected type, and the fields with a fixed vocabulary (optimizer, schedule, amp) list it.
Values are read as YAML, except that every number Python's ``float()`` reads is a number (``1e-3``, ``1E5``,
``.5``; YAML 1.1 reads ``1e-3`` as a string), and NaN or infinity is refused for every float key.
An override may carry the flag the user typed (``("--lr", "optim.lr=1e-05")``), and errors then name that flag.

Two keys take short forms, in ``--set`` and in recipe files alike (config.yaml records the full mapping):
``train.mix=mixup`` (any method name: that method with its defaults; ``none``/false: off) and ``train.ema=0.999``
(the decay; true: the default decay; ``off``/false: off).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .losses import LOSSES

__all__ = [
    "AMP_MODES",
    "OPTIMIZERS",
    "SCHEDULES",
    "CardHint",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_card_hints",
    "apply_overrides",
    "check_device",
    "config_from_dict",
    "config_to_dict",
    "default_config",
    "device_problem",
    "load_recipe",
    "load_yaml",
    "load_yaml_file",
    "recipe_path",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "multistep", "plateau", "cosine", "onecycle", "poly")
AMP_MODES = ("off", "bf16", "fp16")
GRAD_CLIP_MODES = ("norm", "value")
DEVICES = "auto, cpu, cuda, cuda:N, mps"


class ConfigError(ValueError):
    """A bad config value; ``key`` is the ``section.key`` it concerns, so a caller can name the flag that set it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe YAML 1.1 reader, plus the float spellings YAML 1.1 misses but ``float()`` reads."""


# YAML 1.1 reads on/off/yes/no as booleans, so `train.amp=off` would arrive as False: like YAML 1.2, only
# true/false (any case) are booleans here; the other words stay strings (bool keys then say "true/false").
_YamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))
# YAML 1.1 wants a dot and a signed exponent (1.0e-3); YAML 1.2 and Python also read 1e-3, 1E5, 1.0e5, -.5.
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+|\.[0-9][0-9_]*)$"),
    list("-+0123456789."),
)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A one-line description of a YAML error: the problem and where it is."""
    mark, context, cmark = (getattr(e, k, None) for k in ("problem_mark", "context", "context_mark"))
    out = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is not None:
        out += f" at line {mark.line + 1}, column {mark.column + 1}"
    if context and cmark is not None and (mark is None or cmark.line != mark.line):
        out += f", {context} that starts at line {cmark.line + 1}, column {cmark.column + 1}"
    return out


def load_yaml(text: str, where: str) -> Any:
    """``text`` read as YAML (numbers as `float` reads them); ValueError naming ``where`` if it is not YAML."""
    try:
        return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({_yaml_problem(e)})") from None


def load_yaml_file(path: str | Path, what: str = "recipe") -> Any:
    """A YAML file's content, or a ValueError/FileNotFoundError naming the file and what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give a YAML file (e.g. {path / 'recipe.yaml'})")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; give a YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not a text (UTF-8) YAML file: byte {e.start} is "
                         f"{e.object[e.start:e.start + 1]!r}") from None
    return load_yaml(text, f"{what} {str(path)!r}")


def device_problem(name: str) -> str | None:
    """Why the device ``name`` cannot be used on this machine (None if it can): the list of valid ones included."""
    import torch

    if name == "auto":
        return None
    here = ["auto", "cpu"]
    if torch.cuda.is_available():
        here += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        here.append("mps")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return f"{name!r} is not a device; valid: {DEVICES} (here: {', '.join(here)})"
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"{name!r}: no CUDA GPU is available on this machine; valid here: {', '.join(here)}"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"{name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); valid here: {', '.join(here)}"
        return None
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            return f"{name!r}: Apple's MPS backend is not available on this machine; valid here: {', '.join(here)}"
        return None
    return f"{name!r} is not a device cnnzoo trains on; valid: {DEVICES} (here: {', '.join(here)})"


def check_device(name: str, key: str = "train.device") -> str:
    """``name`` if this machine has that device, else a `ConfigError` listing the ones it has."""
    problem = device_problem(name)
    if problem:
        raise ConfigError(key, f"{key} {problem}")
    return name


@dataclass
class ModelConfig:
    """The network: registered name, constructor options, starting weights, execution options."""

    name: str = "lenet5"
    options: dict = field(default_factory=dict)
    weights: str | None = None
    # the initialisation scheme (cnnzoo.train.init): paper | normal | xavier | kaiming, or {name: ..., PARAM: ...};
    # config.yaml records the mapping with every parameter filled in
    init: str | dict = field(default_factory=lambda: {"name": "paper"})
    init_from: str | None = None  # a trained run/checkpoint whose matching layers start this one (VGG Sec. 3.1)
    sync_bn: bool = False
    # None: channels-last for networks with 2-D convolutions (faster steps on CPU and GPU: measured in
    # benchmarks/bench_train.py), the default memory format for the others; true/false forces it
    channels_last: bool | None = None
    compile: bool = False


@dataclass
class DataConfig:
    """The dataset and how batches are drawn from it."""

    name: str = "mnist5k"
    data_dir: str | None = None
    download: bool = True
    batch_size: int = 128
    eval_batch_size: int = 500
    augment: dict | None = None  # None: the dataset's default policy; {}: none
    # the side of the square inputs; None: a folder's crops at the network's input size (the images' own where they
    # are smaller and the network takes any size: cnnzoo.train.engine.folder_input_size), other datasets their own
    # size (upsampled to the network's where it needs more)
    input_size: int | None = None
    num_workers: int = 2
    val_fraction: float = 0.1  # folders without train/ and val/: the share of every class held out for testing
    # the share of every class of the training split held out (seeded) as a validation split on which the "best"
    # checkpoint is chosen; 0: no validation split and no "best" (choosing on the test split would be a leak)
    holdout_fraction: float = 0.0
    strict: bool = False  # folders: decode every file before training and fail listing the unreadable ones


@dataclass
class OptimConfig:
    """The optimizer. ``momentum``/``nesterov`` are SGD's (momentum is also RMSprop's); betas are Adam's."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    alpha: float = 0.99  # RMSprop's smoothing constant (TensorFlow's "decay"); torch's default
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # gradient clipping (note 002), every step after backward: "norm" rescales the whole gradient g to g v / ||g||
    # when its global L2 norm ||g|| exceeds v = grad_clip (torch's clip_grad_norm_); "value" clamps each component to
    # [-v, v] (clip_grad_value_). The norm before clipping is logged per epoch (metrics: grad_norm, grad_norm_max).
    grad_clip: float | None = None
    grad_clip_mode: str = "norm"


@dataclass
class ScheduleConfig:
    """The learning-rate schedule, stepped every iteration (``plateau``: every epoch, on the test loss)."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 30  # step: epochs between decays
    milestones: list[int] = field(default_factory=lambda: [30, 60, 90])  # multistep: epochs of the decays
    gamma: float = 0.1
    patience: int = 5  # plateau: epochs without improvement before lr x gamma
    min_lr: float = 0.0
    pct_start: float = 0.25  # onecycle: fraction of the run spent warming up
    div_factor: float = 25.0  # onecycle: initial lr = lr / div_factor (Smith & Topin 2019; torch's default)
    final_div_factor: float = 1e4  # onecycle: final lr = initial lr / final_div_factor
    power: float = 0.9  # poly: lr x (1 - t)^power (DeepLab v2 Sec. 4.1, PSPNet Sec. 5.1: 0.9)


@dataclass
class TrainConfig:
    """The loop: length, loss, precision, device, seed, outputs."""

    epochs: int = 10
    label_smoothing: float = 0.0
    loss: str = "cross_entropy"  # or "lenet_map": LeCun et al. 1998's eq. 9 for RBF outputs (see train.losses)
    amp: str = "off"
    device: str = "auto"
    seed: int = 0
    run_dir: str | None = None
    limit_batches: int | None = None  # train on at most this many batches per epoch (smoke tests)
    log_every: int = 20
    save_every: int = 1  # epochs between "last" checkpoints
    mix: dict | None = None  # {name: mixup|cutmix|manifold_mixup|patchup|puzzlemix, ...} (see cnnzoo.data.mix)
    ema: dict | None = None  # weight EMA {decay: 0.9999, warmup: false} (see cnnzoo.train.ema)
    drop_path_schedule: str = "constant"  # or "linear": NASNet's ScheduledDropPath (see cnnzoo.train.droppath)
    precise_bn: int = 0  # before each evaluation, BN statistics re-estimated over this many training batches (0: off)


@dataclass
class Config:
    """The whole run; what `cnnzoo train` resolves and writes to RUN_DIR/config.yaml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        """Check every value and how they fit together (and normalise the dataset name); return self.

        Raises:
            ConfigError: naming the key, the value and what is valid.
        """
        self.check_values()
        m = self.model
        if m.weights and (m.init["name"] != "paper" or m.init_from):
            key = "model.init_from" if m.init_from else "model.init"
            raise ConfigError(key, f"{key} starts a network from scratch, but model.weights (--weights) loads all of "
                                   f"its weights from {m.weights}: drop one of them")
        # Warmup longer than the run is refused rather than clamped: the rate would never reach optim.lr nor decay,
        # and any clamped length would be a schedule nobody asked for. (onecycle and none ignore warmup_epochs.)
        s, t = self.schedule, self.train
        if s.name not in ("onecycle", "none") and s.warmup_epochs >= t.epochs:
            raise ConfigError("schedule.warmup_epochs",
                              f"schedule.warmup_epochs ({s.warmup_epochs:g}) must be shorter than the run "
                              f"(train.epochs = {t.epochs}): the learning rate would never reach optim.lr and decay; "
                              f"use fewer warmup epochs (--warmup-epochs / --set schedule.warmup_epochs=0) or more "
                              f"epochs")
        return self

    def check_values(self) -> Config:
        """Check each value on its own (a layer of a recipe may be completed by the next); return self."""
        _choice("optim.name", self.optim.name, OPTIMIZERS)
        _choice("schedule.name", self.schedule.name, SCHEDULES)
        _choice("train.amp", self.train.amp, AMP_MODES)
        _choice("optim.grad_clip_mode", self.optim.grad_clip_mode, GRAD_CLIP_MODES)
        _choice("train.loss", self.train.loss, LOSSES)
        o, s, d, t = self.optim, self.schedule, self.data, self.train
        for key, value in (("data.batch_size", d.batch_size), ("data.eval_batch_size", d.eval_batch_size),
                           ("train.epochs", t.epochs), ("train.log_every", t.log_every),
                           ("train.save_every", t.save_every), ("schedule.step_size", s.step_size)):
            _at_least(key, value, 1)
        for key, value in (("data.num_workers", d.num_workers), ("schedule.patience", s.patience),
                           ("train.precise_bn", t.precise_bn), ("train.seed", t.seed)):
            _at_least(key, value, 0)
        if not 0.0 <= d.val_fraction < 1.0:
            raise ConfigError("data.val_fraction", f"data.val_fraction must be in [0, 1) (the share of every class a "
                                                   f"folder without train/ and val/ holds out for testing), got "
                                                   f"{d.val_fraction:g}")
        if isinstance(d.holdout_fraction, bool) or not 0.0 <= d.holdout_fraction < 1.0:
            raise ConfigError("data.holdout_fraction", f"data.holdout_fraction must be in [0, 1) (the share of every "
                                                       f"class of the training split held out to choose the best "
                                                       f"checkpoint on; 0: none), got {d.holdout_fraction!r}")
        for key, (what, unset) in _PATH_KEYS.items():
            section, _, name = key.partition(".")
            value = getattr(getattr(self, section), name)
            if isinstance(value, str) and not value.strip():
                raise ConfigError(key, f"{key} is an empty path {value!r}; give {what}, or leave it unset (null) "
                                       f"for {unset}")
        if d.input_size is not None:
            _at_least("data.input_size", d.input_size, 1, "or null (the default size)")
        if t.limit_batches is not None:
            _at_least("train.limit_batches", t.limit_batches, 1, "or null (every batch)")
        for key, value in (("optim.lr", o.lr), ("optim.eps", o.eps), ("schedule.gamma", s.gamma),
                           ("schedule.div_factor", s.div_factor), ("schedule.final_div_factor", s.final_div_factor),
                           ("schedule.power", s.power)):
            if value <= 0:
                raise ConfigError(key, f"{key} must be positive, got {value}")
        if o.grad_clip is not None and o.grad_clip <= 0:
            raise ConfigError("optim.grad_clip", f"optim.grad_clip must be positive (the largest gradient norm "
                                                 f"allowed, or with optim.grad_clip_mode=value the largest "
                                                 f"absolute component) or null (no clipping), got {o.grad_clip}")
        for key, value in (("optim.weight_decay", o.weight_decay), ("schedule.min_lr", s.min_lr),
                           ("schedule.warmup_epochs", s.warmup_epochs)):
            if value < 0:
                raise ConfigError(key, f"{key} must be 0 or more, got {value}")
        if not 0.0 <= o.momentum < 1.0:
            raise ConfigError("optim.momentum", f"optim.momentum must be in [0, 1), got {o.momentum}")
        if not 0.0 <= o.alpha < 1.0:
            raise ConfigError("optim.alpha",
                              f"optim.alpha (RMSprop's smoothing constant) must be in [0, 1), got {o.alpha}")
        from .init import init_spec

        try:
            self.model.init = init_spec(self.model.init)
        except ValueError as e:
            if isinstance(self.model.init, str):  # `--init foo`: say what --init takes, not what a mapping's name does
                raise ConfigError("model.init", f"model.init must be {_KEY_HINTS['model.init']}; got "
                                                f"{self.model.init!r}") from None
            raise ConfigError("model.init", str(e)) from None
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            raise ConfigError("optim.betas", f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        if not 0.0 <= t.label_smoothing < 1.0:
            raise ConfigError("train.label_smoothing", f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
        if not 0.0 < s.pct_start < 1.0:
            raise ConfigError("schedule.pct_start", f"schedule.pct_start must be in (0, 1), got {s.pct_start}")
        if any(m < 1 for m in s.milestones):
            raise ConfigError("schedule.milestones", f"schedule.milestones must be epochs >= 1, got {s.milestones}")
        _device_syntax(t.device)
        _choice("train.drop_path_schedule", t.drop_path_schedule, ("constant", "linear"))
        from ..data.mix import parse_mix
        from .ema import parse_ema

        for key, parse in (("mix", parse_mix), ("ema", parse_ema)):  # completed with the defaults: config.yaml says
            try:                                                      # exactly what the run used
                spec = parse(getattr(t, key))
            except ValueError as e:
                raise ConfigError(f"train.{key}", str(e)) from None
            setattr(t, key, spec.to_dict() if hasattr(spec, "to_dict") else spec)
        from ..data.datasets import dataset_name

        try:
            d.name = dataset_name(d.name)
        except ValueError as e:
            raise ConfigError("data.name", f"data.name: {e}") from None
        return self


def _at_least(key: str, value: int, low: int, extra: str = "") -> None:
    if value < low:
        raise ConfigError(key, f"{key} must be at least {low}{' ' + extra if extra else ''}, got {value}")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(key, f"{key} must be one of {', '.join(valid)}; got {value!r}")


def _device_syntax(name: str) -> None:
    """A device name torch reads and cnnzoo trains on (whether this machine has it is checked when it is set)."""
    import torch

    if name == "auto":
        return
    try:
        kind = torch.device(name).type
    except (RuntimeError, ValueError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError("train.device", f"train.device {name!r} is not a device; valid: {DEVICES}")


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_CLASSES = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
                    "train": TrainConfig}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


_WORDS = {int: "an int", float: "a float", bool: "a bool (true/false)", str: "a str", dict: "a mapping",
          type(None): "null"}

#: what a key whose annotation alone says little ("dict | None") takes, in a user's words
_KEY_HINTS = {
    "model.options": "a mapping of network options, e.g. {drop_rate: 0.2} (`cnnzoo info NAME` lists them)",
    "model.weights": "a checkpoint or weights file, a run directory or 'torchvision', or null (none)",
    "model.init": "a scheme name (paper, normal, xavier, kaiming) or a mapping such as {name: normal, std: 0.01}",
    "model.init_from": "a run directory or checkpoint file, or null (none)",
    "model.channels_last": "true, false or null (automatic: channels-last for convolutional networks)",
    "data.data_dir": "a directory or null ($CNNZOO_DATA or ~/.cache/cnnzoo)",
    "data.augment": "a mapping of augmentation settings, e.g. {hflip: true, random_crop_padding: 4}, {} (none) or "
                    "null (the dataset's default policy)",
    "data.input_size": "an int >= 1 (pixels) or null (folders: the network's input size; else the dataset's)",
    "optim.betas": "two numbers in [0, 1), e.g. [0.9, 0.999]",
    "optim.grad_clip": "a positive number or null (no clipping)",
    "schedule.milestones": "a list of epochs, e.g. [30, 60, 90]",
    "train.run_dir": "a directory or null (./runs/NAME-YYYYmmdd-HHMMSS)",
    "train.limit_batches": "an int >= 1 or null (every batch)",
    "train.device": f"a device: {DEVICES}",
    "data.name": "a dataset: mnist5k, mnist, fashion-mnist, cifar10, cifar100 or folder:PATH",
    "optim.name": f"one of {', '.join(OPTIMIZERS)}",
    "optim.grad_clip_mode": f"one of {', '.join(GRAD_CLIP_MODES)}",
    "schedule.name": f"one of {', '.join(SCHEDULES)}",
    "train.amp": f"one of {', '.join(AMP_MODES)}",
    "train.loss": f"one of {', '.join(LOSSES)}",
    "train.drop_path_schedule": "constant or linear",
}
#: the keys that name a file or directory: an empty string there is no path (null means "none"/the default)
_PATH_KEYS = {
    "model.weights": ("a checkpoint or weights file, a run directory or 'torchvision'", "none"),
    "model.init_from": ("a run directory or checkpoint file", "none"),
    "data.data_dir": ("a directory", "$CNNZOO_DATA or ~/.cache/cnnzoo"),
    "train.run_dir": ("a directory", "./runs/NAME-YYYYmmdd-HHMMSS"),
}


def _mix_short(value: Any) -> Any:
    """``train.mix``'s short forms: a method name (``mixup``) is that method with its defaults; ``none``/``off``/
    false is no mixing. Anything else but a mapping or null is refused, naming the accepted spellings."""
    from ..data.mix import MIX_METHODS

    if value is None or isinstance(value, dict):
        return value
    if value is False or (isinstance(value, str) and value.strip().lower() in ("none", "off", "null", "")):
        return None
    if isinstance(value, str) and value.strip() in MIX_METHODS:
        return {"name": value.strip()}
    names = ", ".join(MIX_METHODS)
    hint = ""
    if isinstance(value, str) and value.strip().lower() in MIX_METHODS:
        hint = f" (did you mean {value.strip().lower()}?)"
    raise ValueError(f"train.mix must be a method name ({names}: that method with its defaults), a mapping such as "
                     f"{{name: mixup, alpha: 0.2}}, or null/none (no mixing); got {value!r}{hint}")


def _ema_short(value: Any) -> Any:
    """``train.ema``'s short forms: a number is the decay (``0.999`` = {decay: 0.999}), true is the default decay,
    false/``off``/``none`` is no EMA. Anything else but a mapping or null is refused, naming the accepted spellings."""
    if value is None or isinstance(value, dict):
        return value
    if value is False or (isinstance(value, str) and value.strip().lower() in ("none", "off", "null", "")):
        return None
    if value is True:
        return {}
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        return {"decay": number}  # parse_ema checks it is in (0, 1)
    raise ValueError(f"train.ema must be a decay in (0, 1) such as 0.999 (read as {{decay: 0.999}}), true (the "
                     f"default decay, 0.9999), a mapping such as {{decay: 0.9999, warmup: false}}, or null/false "
                     f"(off); got {value!r}")


_SHORT_FORMS = {"train.mix": _mix_short, "train.ema": _ema_short}


def _shown(value: Any) -> str:
    """A value in an error: as typed, with its YAML type (``'ten' (str)``); None as what the user typed."""
    return "no value (empty, or null)" if value is None else f"{value!r} ({type(value).__name__})"


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats); raise ValueError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ValueError:
                pass
        hint = _KEY_HINTS.get(key) or " or ".join(_WORDS.get(a, _type_name(a)) for a in args)
        raise ValueError(f"{key} must be {hint}, got {_shown(value)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            hint = _KEY_HINTS.get(key) or f"a list of {_type_name(item)}"
            raise ValueError(f"{key} must be {hint}, got {_shown(value)}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be {_KEY_HINTS.get(key, 'a mapping')}, got {_shown(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a bool (true/false), got {_shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an int, got {_shown(value)}")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):  # any spelling float() reads: 1e-3, 1E5, .5 (YAML 1.1 leaves some as text)
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{key} must be a float (a number), got {_shown(value)}")
        if not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return float(number)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be {_KEY_HINTS.get(key, 'a str')}; got {_shown(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module, not user input


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _update(cfg: Config, data: dict, where: str) -> Config:
    if not isinstance(data, dict):
        raise ValueError(
            f"{where}: a recipe is a mapping of sections ({', '.join(SECTIONS)}), got {type(data).__name__}")
    for section, values in data.items():
        if section not in SECTIONS:
            raise ValueError(f"{where}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"{where}: section {section!r} must be a mapping of keys, got {values!r}")
        for key, value in values.items():
            _set(cfg, section, key, value, where)
    return cfg


def _set(cfg: Config, section: str, key: str, value: Any, where: str | None) -> None:
    obj = getattr(cfg, section)
    hints = _hints(type(obj))
    prefix = f"{where}: " if where else ""
    if key not in hints:
        raise ConfigError(f"{section}.{key}",
                          f"{prefix}unknown key {section}.{key}; valid keys of {section}: {', '.join(hints)}")
    try:
        short = _SHORT_FORMS.get(f"{section}.{key}")
        setattr(obj, key, _coerce(f"{section}.{key}", short(value) if short else value, hints[key]))
    except ValueError as e:
        raise ConfigError(f"{section}.{key}", f"{prefix}{e}") from None


def config_from_dict(data: dict, where: str = "config") -> Config:
    """A validated `Config` from a nested mapping (missing keys keep their defaults)."""
    return _update(Config(), data, where).validate()


def config_to_dict(cfg: Config) -> dict:
    """The nested plain-data form of ``cfg`` (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def _relabel(e: ConfigError, label: str) -> ConfigError:
    """``e`` told in terms of the flag the user typed: "optim.lr must be ..." -> "--lr must be ..."."""
    msg = str(e)
    if label == "--set":
        return ConfigError(e.key, f"--set: {msg}")
    return ConfigError(e.key, label + msg[len(e.key):] if msg.startswith(e.key) else f"{label}: {msg}")


def apply_overrides(cfg: Config, pairs: list[str | tuple[str, str]] | None, validate: bool = True,
                    note=None) -> Config:
    """Apply ``["optim.lr=0.1", "model.options={drop_rate: 0.2}"]`` (values read as YAML); returns ``cfg``.

    An item may be ``(flag, pair)``, e.g. ``("--lr", "optim.lr=0.1")``: errors about that key, from reading the
    value or from validating the result, then name ``flag`` (what the user typed) instead of ``--set``.
    ``validate=False`` checks each value but not how they fit together (a caller that adjusts the result first,
    e.g. a paper recipe scaled to the run, validates it afterwards).

    A shorter run than the recipe's (``train.epochs=2`` on a 30-epoch recipe with a 2-epoch warmup) keeps the
    recipe's warmup where it fits; where it does not, and ``schedule.warmup_epochs`` is not among ``pairs``, the
    warmup keeps its share of the recipe's run (2 x 2 / 30 = 0.133 epochs), as `cnnzoo train --epochs` does, and
    ``note`` (default: `warnings.warn`) is told so.
    """
    recipe_warmup, recipe_epochs = cfg.schedule.warmup_epochs, cfg.train.epochs
    labels: dict[str, str] = {}  # section.key -> the flag that set it last
    for item in pairs or []:
        label, pair = item if isinstance(item, tuple) else ("--set", item)
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {pair!r} is not SECTION.KEY=VALUE (e.g. optim.lr=0.1)")
        section, dot, name = key.partition(".")
        if not dot or section not in SECTIONS:
            raise ValueError(f"--set {pair!r}: the key must be SECTION.KEY with SECTION one of {', '.join(SECTIONS)}")
        where = f"--set {pair!r}" if label == "--set" else f"{label} {text}"
        if "." in name:  # model.options.drop_rate=0.2 sets one constructor option
            sub, _, opt = name.partition(".")
            if (section, sub) != ("model", "options"):
                raise ValueError(f"--set {pair!r}: only model.options.NAME nests deeper than SECTION.KEY")
            cfg.model.options[opt] = load_yaml(text, where)
            continue
        try:
            _set(cfg, section, name, load_yaml(text, where) if text.strip() else None, None)
            if key == "train.device":  # the user asks for it now, on this machine (a resumed run's may differ)
                check_device(cfg.train.device)
        except ConfigError as e:
            raise _relabel(e, label) from None
        labels[key] = label
    if not validate:
        return cfg.check_values()
    try:
        return cfg.validate()
    except ConfigError as e:
        if e.key == "schedule.warmup_epochs" and e.key not in labels and cfg.train.epochs < recipe_epochs:
            return _scale_warmup(cfg, recipe_warmup, recipe_epochs, note)
        if e.key in labels:
            raise _relabel(e, labels[e.key]) from None
        raise


def _scale_warmup(cfg: Config, recipe_warmup: float, recipe_epochs: int, note) -> Config:
    """The recipe's warmup does not fit the shorter run asked for: keep its share of the run, and say so."""
    cfg.schedule.warmup_epochs = recipe_warmup * cfg.train.epochs / recipe_epochs
    text = (f"the recipe's {recipe_warmup:g}-epoch warmup is scaled to {cfg.schedule.warmup_epochs:.3g} epochs for "
            f"this {cfg.train.epochs}-epoch run (--warmup-epochs / schedule.warmup_epochs sets it)")
    if note is None:
        import warnings

        warnings.warn(text, stacklevel=3)
    else:
        note(text)
    return cfg.validate()


def load_recipe(path: str | Path, base: Config | None = None) -> Config:
    """Read a YAML recipe onto ``base`` (defaults when None)."""
    text = str(path).strip()
    head, colon, name = text.partition(":")
    if head.lower() == "paper" and not Path(path).expanduser().exists():  # `--recipe PAPER`, `Paper:VGG`
        meant = "paper" + (f":{name.strip().lower()}" if colon else "")
        raise ValueError(f"--recipe {text!r} is not a file; did you mean --recipe {meant}? (the shipped paper "
                         f"recipes are spelled in lower case: paper for the network's own, paper:NAME for a named "
                         f"one, see `cnnzoo recipes`; anything else is read as a YAML file)")
    data = load_yaml_file(path, "recipe") or {}
    cfg = _update(base or Config(), data, str(path))
    # on a base, each value is checked now and the whole when the last layer (flags, --set) is on
    return cfg.check_values() if base is not None else cfg.validate()


def recipe_path(dataset: str) -> Path | None:
    """The bundled default recipe of a dataset (``folder:`` datasets share ``folder.yaml``), if any."""
    from ..data.datasets import dataset_name

    dataset = dataset_name(dataset)  # "MNIST5K" finds mnist5k's recipe
    stem = "folder" if dataset.startswith("folder:") else dataset
    p = resources.files("cnnzoo.train").joinpath("recipes", f"{stem}.yaml")
    return Path(str(p)) if p.is_file() else None


def default_config(model: str, dataset: str = "mnist5k", *, optimizer: str | None = None,
                   hints: list[CardHint] | None = None) -> Config:
    """The dataset's default recipe, then the network card's recipe hints, with the network and dataset filled in.

    A card's hints (``get_card(model).recipe``, e.g. ``{"optim.lr": 0.005}``) are what the network needs on top
    of any dataset's recipe (the paper's learning rate or loss); ``--recipe``, flags and ``--set`` applied
    afterwards still override them. The optimizer hints are applied whole or skipped (see `apply_card_hints`):
    ``optimizer`` is the optimizer the user chose (None: the recipe's), ``hints`` collects what was decided.
    """
    from ..data.datasets import dataset_name

    cfg = Config()
    dataset = dataset_name(dataset)
    path = recipe_path(dataset)
    if path is not None:
        cfg = load_recipe(path, cfg)
    cfg.model.name, cfg.data.name = model, dataset
    return apply_card_hints(cfg, model, optimizer=optimizer, hints=hints).check_values()


@dataclass
class CardHint:
    """One group of a card's recipe hints and what a run did with it (`apply_card_hints`)."""

    settings: dict  # {"optim.lr": 0.01, ...}
    optimizer: str | None  # the optimizer they were made for (None: they hold whatever the optimizer)
    applied: bool
    why: str = ""  # why they were skipped

    def describe(self) -> str:
        text = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        if self.optimizer is not None and "optim.name" not in self.settings:
            text += f" (for {self.optimizer})"
        return text if self.applied else f"{text}: skipped, {self.why}"


def apply_card_hints(cfg: Config, model: str, *, optimizer: str | None = None,
                     hints: list[CardHint] | None = None) -> Config:
    """The network card's recipe hints (``get_card(model).recipe``) set on ``cfg``; returns it (unvalidated).

    The hints that hold whatever the optimizer (`ModelCard.network_hints`: options, loss, epochs...) are applied.
    The optimizer hints (`ModelCard.optimizer_hints`) were made for one optimizer (`ModelCard.recipe_optimizer`:
    VGG's ``optim.lr=0.01`` is SGD's, the paper's) and are applied whole or not at all:

    - hints that set ``optim.name`` themselves (e.g. AlexNet's Adam settings) replace the recipe's optimizer, unless
      the user chose another one (``optimizer``);
    - hints that do not set it apply only when the run's optimizer (``optimizer``, else the recipe's ``optim.name``)
      is theirs: a learning rate made for SGD is never given to AdamW (it diverged: issue 31).

    ``optimizer``: the optimizer the user asked for (``--optimizer``, ``--set optim.name=``, ``--recipe``), None when
    they did not. ``hints``: a list the decisions are appended to (`CardHint`), for the log.
    """
    from ..registry import get_card

    card = get_card(model)
    decided = []
    network = card.network_hints()
    if network:
        decided.append(CardHint(network, None, True))
    for key, value in network.items():
        section, _, name = key.partition(".")
        if name.startswith("options."):  # a constructor option, e.g. model.options.zero_init_last
            cfg.model.options.setdefault(name.partition(".")[2], value)
            continue
        if section not in SECTIONS:
            raise ConfigError(key, f"{model}'s card recipe: unknown section {section!r} in {key!r}; "
                                   f"valid sections: {', '.join(SECTIONS)}")
        _set(cfg, section, name, value, f"{model}'s card recipe")
    bound, theirs = card.optimizer_hints(), card.recipe_optimizer
    if bound:
        if "optim.name" in bound:
            why = None if optimizer in (None, theirs) else f"the run uses {optimizer} (as asked)"
        else:
            used = optimizer or cfg.optim.name
            whose = "as asked" if optimizer else "the recipe's"
            why = None if used == theirs else f"the run uses {used} ({whose})"
        decided.append(CardHint(bound, theirs, why is None, why or ""))
        if why is None:
            for key, value in bound.items():
                _set(cfg, "optim", key.partition(".")[2], value, f"{model}'s card recipe")
    if hints is not None:
        hints += decided
    return cfg
