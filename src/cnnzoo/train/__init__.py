"""Training: typed config, the loop (single process or torchrun), checkpoints, schedules, losses."""

from .config import (
    AMP_MODES,
    OPTIMIZERS,
    SCHEDULES,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
    load_recipe,
)
from .engine import FitResult, Trainer, TrainingDiverged, TrainingInterrupted

__all__ = [
    "AMP_MODES",
    "OPTIMIZERS",
    "SCHEDULES",
    "Config",
    "DataConfig",
    "FitResult",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "default_config",
    "load_recipe",
]
