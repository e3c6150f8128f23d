"""The model registry: one entry per network, each with a card that says where it comes from.

A family module registers its builders with :func:`register_model`::

    ALEXNET = Paper("ImageNet Classification with Deep Convolutional Neural Networks",
                    "Krizhevsky, Sutskever, Hinton", 2012, "https://papers.nips.cc/...")

    @register_model(AlexNet, paper=ALEXNET, input_size=(3, 224, 224), dataset="ImageNet",
                    counterparts={"torchvision": "alexnet"})
    def alexnet(**kwargs) -> AlexNet:
        \"\"\"torchvision's single tower (One weird trick).\"\"\"
        return AlexNet(**{"widths": (64, 192, 384, 256, 256), **kwargs})

`create_model` validates the name and every option against the model class's constructor
before anything is built, so a typo fails at once with the list of what is valid.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "Paper",
    "ModelCard",
    "register_model",
    "register_converter",
    "create_model",
    "list_models",
    "get_card",
    "convert_state_dict",
    "UnknownModelError",
    "UnknownOptionError",
]

SOURCES = ("torchvision", "timm")


class UnknownModelError(KeyError, ValueError):
    """Raised for a network name that is not registered."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class UnknownOptionError(TypeError, ValueError):
    """Raised for an option the network's constructor does not take."""


@dataclass(frozen=True)
class Paper:
    """The publication a network comes from."""

    title: str
    authors: str
    year: int
    url: str


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know about a registered network before using it.

    Attributes:
        name: registered name.
        family: the family module's short name (``alexnet``, ``resnet``...).
        paper: the paper the network comes from.
        dataset: the dataset the paper trained it on.
        input_size: (C, H, W) the paper used.
        counterparts: names of the same network in other libraries, e.g. {"torchvision": "alexnet"}.
        deviations: every deliberate difference from the paper.
        aux_weight: weight of each auxiliary loss in training, for networks with aux heads.
        notes: the family module's paper notes (its docstring).
        description: one line naming the variant (the builder's docstring).
        default_options: options the builder fixes, shown for reference.
    """

    name: str
    family: str
    paper: Paper
    dataset: str
    input_size: tuple[int, int, int]
    counterparts: Mapping[str, str] = field(default_factory=dict)
    deviations: tuple[str, ...] = ()
    aux_weight: float | None = None
    notes: str = ""
    description: str = ""


@dataclass
class _Entry:
    builder: Callable[..., nn.Module]
    model_cls: type[nn.Module]
    card: ModelCard

    @property
    def options(self) -> list[str]:
        params = inspect.signature(self.model_cls.__init__).parameters
        return sorted(
            n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )


_REGISTRY: dict[str, _Entry] = {}
# (name, source) -> fn(state_dict) -> state_dict. Kept apart from the entries so a family module may
# register a converter for a network another module defines, whatever the import order.
_CONVERTERS: dict[tuple[str, str], Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {}
_LOADED = False


def register_model(
    model_cls: type[nn.Module],
    *,
    paper: Paper,
    input_size: tuple[int, int, int],
    dataset: str = "ImageNet",
    counterparts: Mapping[str, str] | None = None,
    deviations: tuple[str, ...] | list[str] = (),
    aux_weight: float | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name, with the card fields given here."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        module = sys.modules.get(fn.__module__)
        card = ModelCard(
            name=name,
            family=fn.__module__.rsplit(".", 1)[-1],
            paper=paper,
            dataset=dataset,
            input_size=tuple(input_size),
            counterparts=dict(counterparts or {}),
            deviations=tuple(deviations),
            aux_weight=aux_weight,
            notes=inspect.cleandoc(module.__doc__ or "") if module else "",
            description=inspect.cleandoc(fn.__doc__ or "").split("\n")[0],
        )
        _REGISTRY[name] = _Entry(builder=fn, model_cls=model_cls, card=card)
        return fn

    return decorator


def register_converter(name: str, source: str):
    """Register ``fn(state_dict) -> state_dict`` turning ``source``'s checkpoint layout of ``name`` into ours."""
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; valid: {', '.join(SOURCES)}")

    def decorator(fn):
        if (name, source) in _CONVERTERS:
            raise RuntimeError(f"a {source} converter for {name!r} is registered twice")
        _CONVERTERS[(name, source)] = fn
        return fn

    return decorator


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import models  # noqa: F401  (imports every family module, which registers its builders)


def _entry(name: str) -> _Entry:
    _load_all()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown network {name!r}.{hint} `cnnzoo list` shows all {len(_REGISTRY)} networks.")
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern (``"resnet*"``), sorted."""
    _load_all()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_card(name: str) -> ModelCard:
    """The card of a registered network."""
    return _entry(name).card


def model_options(name: str) -> list[str]:
    """The options ``create_model(name, ...)`` accepts (besides ``weights``)."""
    return _entry(name).options


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    weights: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered network.

    Args:
        name: registered name (see :func:`list_models`).
        num_classes: classifier outputs (the network's default, usually 1000, when None).
        in_channels: input image channels (the network's default, usually 3, when None).
        weights: a checkpoint path (ours, torchvision's or timm's) or ``"torchvision"`` for published weights.
        **options: any keyword of the network's constructor; anything else is an error listing the valid ones.
    """
    entry = _entry(name)
    valid = entry.options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UnknownOptionError(
            f"{name} has no option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid)}"
        )
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            options[key] = value
    model = entry.builder(**options)
    model.pretrained_cfg = {"name": name, "options": dict(options)}
    if weights is not None:
        from .weights import load_weights

        load_weights(model, name, weights)
    return model


def convert_state_dict(name: str, state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Turn a torchvision or timm checkpoint of ``name`` into a state dict ``create_model(name)`` loads strictly.

    Args:
        name: our registered name.
        state_dict: the other library's state dict.
        source: ``"torchvision"`` or ``"timm"``.
    """
    entry = _entry(name)
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; valid: {', '.join(SOURCES)}")
    fn = _CONVERTERS.get((name, source))
    if source not in entry.card.counterparts and fn is None:
        have = sorted(set(entry.card.counterparts) | {s for n, s in _CONVERTERS if n == name})
        raise ValueError(
            f"{name} has no {source} counterpart; its checkpoints convert from: {', '.join(have) or 'none'}"
        )
    sd = dict(state_dict)
    return fn(sd) if fn else sd
