"""The detector registry: one-stage detectors (YOLO v1-v4, SSD, DSSD, RetinaNet) on the zoo's backbones, kept apart
from the classification zoo's registry because their ``forward`` returns per-anchor (or per-cell) predictions, not
class logits. The behaviour is `cnnzoo.task_registry.TaskRegistry`'s: options checked before building, close names on
a typo, ``create_detector(name, weights=FILE)`` loading a peer's checkpoint (torchvision's ``ssd300_vgg16``,
``retinanet_resnet50_fpn``) with no options from the user.

A detector module registers its builders as the segmentation networks do::

    @register_detector(SSD, paper=SSD_PAPER, input_size=(3, 300, 300), dataset="PASCAL VOC 2007+2012")
    def ssd300_vgg16(**kwargs) -> SSD:
        \"\"\"SSD300 on VGG-16 (Liu et al. 2016, Fig. 2): 8,732 default boxes.\"\"\"
        return SSD(**kwargs)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Counterpart, ModelCard, Paper
from ..task_registry import TaskRegistry

__all__ = ["RECIPE_KEYS", "create_detector", "detector_options", "get_detector_card", "list_detectors",
           "register_detector"]

#: what a detector's ``digits_recipe`` may set (how it trains on the built-in digits-detection on 2 CPU cores)
RECIPE_KEYS = ("options", "optimizer", "lr", "epochs", "batch_size", "schedule", "weight_decay", "momentum",
               "data_params", "input_size", "hflip", "jitter", "mosaic")

_REGISTRY = TaskRegistry("detector", f"{__package__}.models", RECIPE_KEYS, checkpoint_format="cnnzoo-detection")


def register_detector(model_cls: type[nn.Module], *, paper: Paper, input_size: tuple[int, int, int], dataset: str,
                      deviations: tuple[str, ...] | list[str] = (), counterparts: tuple[Counterpart, ...] = (),
                      digits_recipe: dict[str, Any] | None = None,
                      ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a detector builder under its function name, with the card fields given here."""
    return _REGISTRY.register(model_cls, paper=paper, input_size=input_size, dataset=dataset, deviations=deviations,
                              counterparts=counterparts, digits_recipe=digits_recipe)


def list_detectors(pattern: str = "*") -> list[str]:
    """Registered detectors matching a shell-style pattern (``"yolo*"``), sorted."""
    return _REGISTRY.names(pattern)


def get_detector_card(name: str) -> ModelCard:
    """The card of a registered detector."""
    return _REGISTRY.card(name)


def detector_options(name: str) -> list[str]:
    """The options ``create_detector(name, ...)`` accepts."""
    return _REGISTRY.options(name)


def create_detector(name: str, weights: str | os.PathLike | None = None, **options: Any) -> nn.Module:
    """Build a registered detector; with ``weights`` (a state-dict file), load it strictly, the options its layout
    implies applied (`cnnzoo.task_registry.TaskRegistry.create`)."""
    return _REGISTRY.create(name, weights, **options)
