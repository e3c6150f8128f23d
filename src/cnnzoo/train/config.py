"""The typed training configuration: five sections of dataclasses filled from recipes and ``--set`` overrides.

    >>> cfg = default_config("lenet5", "mnist5k")          # the dataset's recipe (recipes/mnist5k.yaml)
    >>> cfg = apply_overrides(cfg, ["optim.lr=0.05", "train.epochs=3"])
    >>> cfg.optim.lr
    0.05

Every key is checked: an unknown one fails listing the valid keys of its section, a value of the wrong type
fails naming the expected type, and the fields with a fixed vocabulary (optimizer, schedule, amp) list it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "Config",
    "OPTIMIZERS",
    "SCHEDULES",
    "AMP_MODES",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "load_recipe",
    "default_config",
    "recipe_path",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "multistep", "plateau", "cosine", "onecycle")
AMP_MODES = ("off", "bf16", "fp16")


@dataclass
class ModelConfig:
    """The network: registered name, constructor options, starting weights, execution options."""

    name: str = "lenet5"
    options: dict = field(default_factory=dict)
    weights: str | None = None
    sync_bn: bool = False
    channels_last: bool = False
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
    input_size: int | None = None
    num_workers: int = 2


@dataclass
class OptimConfig:
    """The optimizer. ``momentum``/``nesterov`` are SGD's (momentum is also RMSprop's); betas are Adam's."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float | None = None


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


@dataclass
class TrainConfig:
    """The loop: length, loss, precision, device, seed, outputs."""

    epochs: int = 10
    label_smoothing: float = 0.0
    amp: str = "off"
    device: str = "auto"
    seed: int = 0
    run_dir: str | None = None
    limit_batches: int | None = None  # train on at most this many batches per epoch (smoke tests)
    log_every: int = 20
    save_every: int = 1  # epochs between "last" checkpoints


@dataclass
class Config:
    """The whole run; what `cnnzoo train` resolves and writes to RUN_DIR/config.yaml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        """Check the values with a fixed vocabulary or range; return self."""
        _choice("optim.name", self.optim.name, OPTIMIZERS)
        _choice("schedule.name", self.schedule.name, SCHEDULES)
        _choice("train.amp", self.train.amp, AMP_MODES)
        for key, value in (("data.batch_size", self.data.batch_size), ("data.eval_batch_size",
                           self.data.eval_batch_size), ("train.epochs", self.train.epochs),
                           ("train.log_every", self.train.log_every), ("train.save_every", self.train.save_every)):
            if value < 1:
                raise ValueError(f"{key} must be at least 1, got {value}")
        if self.optim.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.optim.lr}")
        if not 0.0 <= self.train.label_smoothing < 1.0:
            raise ValueError(f"train.label_smoothing must be in [0, 1), got {self.train.label_smoothing}")
        if self.train.limit_batches is not None and self.train.limit_batches < 1:
            raise ValueError(f"train.limit_batches must be at least 1 or null, got {self.train.limit_batches}")
        if len(self.optim.betas) != 2:
            raise ValueError(f"optim.betas must be two numbers, got {self.optim.betas}")
        if not 0.0 < self.schedule.pct_start < 1.0:
            raise ValueError(f"schedule.pct_start must be in (0, 1), got {self.schedule.pct_start}")
        return self


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{key} must be one of {', '.join(valid)}; got {value!r}")


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_CLASSES = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
                    "train": TrainConfig}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


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
        raise ValueError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list of {_type_name(item)}, got {value!r} ({type(value).__name__})")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r} ({type(value).__name__})")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a bool (true/false), got {value!r} ({type(value).__name__})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an int, got {value!r} ({type(value).__name__})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a float, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a str, got {value!r} ({type(value).__name__})")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module, not user input


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _update(cfg: Config, data: dict, where: str) -> Config:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a recipe is a mapping of sections ({', '.join(SECTIONS)}), got {type(data).__name__}")
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


def _set(cfg: Config, section: str, key: str, value: Any, where: str) -> None:
    obj = getattr(cfg, section)
    hints = _hints(type(obj))
    if key not in hints:
        raise ValueError(f"{where}: unknown key {section}.{key}; valid keys of {section}: {', '.join(hints)}")
    try:
        setattr(obj, key, _coerce(f"{section}.{key}", value, hints[key]))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def config_from_dict(data: dict, where: str = "config") -> Config:
    """A validated `Config` from a nested mapping (missing keys keep their defaults)."""
    return _update(Config(), data, where).validate()


def config_to_dict(cfg: Config) -> dict:
    """The nested plain-data form of ``cfg`` (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: Config, pairs: list[str] | None) -> Config:
    """Apply ``["optim.lr=0.1", "model.options={drop_rate: 0.2}"]`` (values read as YAML); returns ``cfg``."""
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {pair!r} is not SECTION.KEY=VALUE (e.g. optim.lr=0.1)")
        section, dot, name = key.partition(".")
        if not dot or section not in SECTIONS:
            raise ValueError(f"--set {pair!r}: the key must be SECTION.KEY with SECTION one of {', '.join(SECTIONS)}")
        if "." in name:  # model.options.drop_rate=0.2 sets one constructor option
            sub, _, opt = name.partition(".")
            if (section, sub) != ("model", "options"):
                raise ValueError(f"--set {pair!r}: only model.options.NAME nests deeper than SECTION.KEY")
            cfg.model.options[opt] = yaml.safe_load(text)
            continue
        _set(cfg, section, name, yaml.safe_load(text) if text.strip() else None, "--set")
    return cfg.validate()


def load_recipe(path: str | Path, base: Config | None = None) -> Config:
    """Read a YAML recipe onto ``base`` (defaults when None)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    return _update(base or Config(), data, str(path)).validate()


def recipe_path(dataset: str) -> Path | None:
    """The bundled default recipe of a dataset (``folder:`` datasets share ``folder.yaml``), if any."""
    stem = "folder" if dataset.startswith("folder:") else dataset
    p = resources.files("cnnzoo.train").joinpath("recipes", f"{stem}.yaml")
    return Path(str(p)) if p.is_file() else None


def default_config(model: str, dataset: str = "mnist5k") -> Config:
    """The dataset's default recipe with the given network and dataset filled in."""
    cfg = Config()
    path = recipe_path(dataset)
    if path is not None:
        cfg = load_recipe(path, cfg)
    cfg.model.name, cfg.data.name = model, dataset
    return cfg.validate()
