"""The segmentation registry: networks that map an image to per-pixel class scores, kept apart from the
classification zoo's registry (`cnnzoo.registry`) because their interface differs: ``forward(x)`` returns
``(N, num_classes, H', W')`` logits, not ``(N, num_classes)``.

A segmentation module registers its builders with :func:`register_segmenter`, as the classification zoo does::

    @register_segmenter(UNet, paper=UNET, input_size=(1, 572, 572), dataset="ISBI 2012 EM segmentation")
    def unet(**kwargs) -> UNet:
        \"\"\"The paper's network: valid convolutions, 572 -> 388.\"\"\"
        return UNet(**kwargs)

`create_segmenter` validates the name and every option against the network class's constructor before anything is
built, so a typo fails at once with the list of what is valid. Cards are the zoo's `ModelCard`.
``create_segmenter(name, weights=FILE)`` loads a state dict (safetensors, or ``torch.load(weights_only=True)``; see
`cnnzoo.weights.read_checkpoint`) strictly; a network class with a static ``options_from_state_dict(sd)`` derives
the options the file needs (torchvision's ``fcn_resnet50``: ``num_classes``, ``aux_loss``), so no options are needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Counterpart, ModelCard, Paper
from ..task_registry import TaskRegistry

__all__ = ["RECIPE_KEYS", "create_segmenter", "get_digits_recipe", "get_segmenter_card", "list_segmenters",
           "register_segmenter", "segmenter_options"]

#: what a ``digits_recipe`` may set (each a `cnnzoo.segmentation.train.SegConfig` field of the same name)
RECIPE_KEYS = ("options", "optimizer", "lr", "epochs", "batch_size", "schedule", "weight_decay", "momentum",
               "class_weighting", "data_params")

_REGISTRY = TaskRegistry("segmentation network", f"{__package__}.models", RECIPE_KEYS,
                         checkpoint_format="cnnzoo-segmentation")


def register_segmenter(
    model_cls: type[nn.Module],
    *,
    paper: Paper,
    input_size: tuple[int, int, int],
    dataset: str,
    deviations: tuple[str, ...] | list[str] = (),
    aux_weight: float | None = None,
    counterparts: tuple[Counterpart, ...] = (),
    digits_recipe: dict[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a segmentation builder under its function name, with the card fields given here.

    ``digits_recipe``: how the network trains on the built-in ``digits-segmentation`` on 2 CPU cores in minutes
    (`get_digits_recipe`): ``{"options": {...}, "optimizer": "adam"|"sgd", "lr": float, "epochs": int,
    "batch_size": int}`` and, where the network needs them, any of ``schedule`` ("none"|"cosine"|"poly"),
    ``weight_decay``, ``momentum``, ``class_weighting`` and ``data_params`` (digits-segmentation parameters such as
    a larger ``canvas``); ``options`` are constructor options besides ``in_channels``/``num_classes`` (a smaller
    width, say), each a documented departure from the paper for the small 64x64 single-channel digits.
    """
    return _REGISTRY.register(model_cls, paper=paper, input_size=input_size, dataset=dataset,
                              deviations=deviations, aux_weight=aux_weight, counterparts=counterparts,
                              digits_recipe=digits_recipe)


def _entry(name: str):
    """The registration of ``name`` (builder, class, card, recipe)."""
    return _REGISTRY.entry(name)


def list_segmenters(pattern: str = "*") -> list[str]:
    """Registered segmentation networks matching a shell-style pattern (``"unet*"``), sorted."""
    return _REGISTRY.names(pattern)


def get_segmenter_card(name: str) -> ModelCard:
    """The card of a registered segmentation network."""
    return _REGISTRY.card(name)


def get_digits_recipe(name: str) -> dict[str, Any]:
    """The network's recipe for ``digits-segmentation`` (see `register_segmenter`); the generic one (its paper
    options, Adam at 1e-3, 8 epochs, batch 16) when it registered none. Every recipe decays the rate by DeepLab's
    "poly" schedule (DeepLab v2 Sec. 4.1, PSPNet Sec. 5.1, torchvision's reference script) unless it names another:
    a constant rate ends a short run wherever the last steps left it (DeepLab-LargeFOV's seed 0 read a mean IU of
    0.44 at epoch 15 and 0.26 at epoch 20 with a constant 3e-3)."""
    recipe = {"options": {}, "optimizer": "adam", "lr": 1e-3, "epochs": 8, "batch_size": 16, "schedule": "poly"}
    recipe.update(_REGISTRY.entry(name).digits_recipe or {})
    recipe["options"] = dict(recipe["options"])
    recipe["data_params"] = dict(recipe.get("data_params") or {})
    return recipe


def segmenter_options(name: str) -> list[str]:
    """The options ``create_segmenter(name, ...)`` accepts."""
    return _REGISTRY.options(name)


def create_segmenter(name: str, weights: str | os.PathLike | None = None, **options: Any) -> nn.Module:
    """Build a registered segmentation network (`cnnzoo.task_registry.TaskRegistry.create`).

    Args:
        name: a registered name (`list_segmenters`).
        weights: a state-dict file (safetensors or a ``torch.save`` file, read with ``weights_only=True``) or a run
            directory, loaded strictly after building. The options the file's layout implies (for a class with
            ``options_from_state_dict``) are applied; an option given that contradicts them is an error.
        **options: keywords of the network's constructor.

    Raises:
        UnknownModelError: ``name`` is not registered (the message suggests close names and lists the valid ones).
        UnknownOptionError: an option the network's constructor does not take (the message lists the valid ones).
        ValueError: an option of the wrong type or an invalid value; a weights file that is not a state dict or does
            not fit the network.
        FileNotFoundError: ``weights`` does not exist.
    """
    return _REGISTRY.create(name, weights, **options)
