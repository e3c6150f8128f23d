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

import collections.abc
import difflib
import fnmatch
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "Counterpart",
    "ModelCard",
    "Paper",
    "UnknownModelError",
    "UnknownOptionError",
    "convert_state_dict",
    "create_model",
    "get_card",
    "list_models",
    "register_converter",
    "register_model",
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
class Counterpart:
    """The same network in another library, and what it takes to reproduce that library's outputs here.

    Attributes:
        library: "torchvision" or "timm".
        name: the network's name in that library (``torchvision.models.NAME`` / ``timm.create_model(NAME)``).
        options: our constructor options that reproduce that network (e.g. timm's native ``seresnet50`` is
            v1.5: ``{"stride_in_1x1": False}``). Applied by ``create_model(name, weights=FILE)`` when the file has
            this counterpart's layout; a user option that contradicts one of them is an error.
        weights_options: further options the library applies with its *published* weights only (torchvision's
            GoogLeNet and Inception v3 weights expect ``transform_input=True``): used for ``weights="torchvision"``
            and for a file that is byte-for-byte the published one.
        marker: a state-dict key only this counterpart's files have (tells apart two layouts of one library, e.g.
            ``layer0.conv1.weight`` of timm's ``legacy_seresnet50``); None when the library has one layout.
        optional: key prefixes the library's files carry that a network built without them may drop (the aux
            heads of torchvision's GoogLeNet/Inception v3 checkpoints, as torchvision drops them).
    """

    library: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    weights_options: Mapping[str, Any] = field(default_factory=dict)
    marker: str | None = None
    optional: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [", ".join(f"{k}={v!r}" for k, v in self.options.items())]
        if self.weights_options:
            parts.append("published weights: " + ", ".join(f"{k}={v!r}" for k, v in self.weights_options.items()))
        detail = "; ".join(p for p in parts if p)
        return f"{self.library}:{self.name}" + (f" ({detail})" if detail else "")


def _counterparts(value: Mapping[str, str] | list | tuple | None) -> tuple[Counterpart, ...]:
    """``{"torchvision": "alexnet"}`` or a sequence of `Counterpart` -> a validated tuple."""
    if value is None:
        return ()
    items = [Counterpart(lib, n) for lib, n in value.items()] if isinstance(value, Mapping) else list(value)
    for cp in items:
        if not isinstance(cp, Counterpart) or cp.library not in SOURCES:
            raise ValueError(f"counterparts must name a library in {SOURCES}, got {cp!r}")
    return tuple(items)


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know about a registered network before using it.

    Attributes:
        name: registered name.
        family: the family module's short name (``alexnet``, ``resnet``...).
        paper: the paper the network comes from.
        dataset: the dataset the paper trained it on.
        input_size: (C, H, W) the paper used.
        counterparts: the same network in other libraries (`Counterpart`), with the options each needs.
        deviations: every deliberate difference from the paper.
        aux_weight: weight of each auxiliary loss in training, for networks with aux heads.
        recipe: training-config hints for this network, ``{"section.key": value}`` (e.g. the paper's
            ``{"optim.lr": 0.01}``); `cnnzoo.train.default_config` applies them over the dataset's recipe. The
            optimizer settings among them (`optimizer_hints`) belong to one optimizer, ``recipe_optimizer``, and
            are applied whole or not at all; the others (`network_hints`) hold whatever the optimizer.
        recipe_optimizer: the optimizer the recipe's optimizer settings were made for: the ``optim.name`` the
            recipe sets, else the one given at registration, else ``"sgd"`` (the papers' optimizer, whose learning
            rates such hints carry: VGG Sec. 3.1, ResNet Sec. 3.4); None when the recipe has no optimizer settings.
        notes: the family module's paper notes (its docstring).
        description: one line naming the variant (the builder's docstring).
        default_options: options the builder fixes, shown for reference.
    """

    name: str
    family: str
    paper: Paper
    dataset: str
    input_size: tuple[int, int, int]
    counterparts: tuple[Counterpart, ...] = ()
    deviations: tuple[str, ...] = ()
    aux_weight: float | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""
    description: str = ""
    recipe_optimizer: str | None = None

    def optimizer_hints(self) -> dict[str, Any]:
        """The recipe's optimizer settings (``optim.*`` but gradient clipping): they hold for
        ``recipe_optimizer`` only, so a run applies all of them or none (`cnnzoo.train.config.apply_card_hints`)."""
        return {k: v for k, v in self.recipe.items() if _optimizer_bound(k)}

    def network_hints(self) -> dict[str, Any]:
        """The recipe's other hints (model options, loss, epochs, BN re-estimation...): whatever the optimizer."""
        return {k: v for k, v in self.recipe.items() if not _optimizer_bound(k)}

    def counterpart(self, library: str) -> Counterpart | None:
        """The first counterpart in ``library`` (None if there is none)."""
        return next((cp for cp in self.counterparts if cp.library == library), None)


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
    counterparts: Mapping[str, str] | list[Counterpart] | tuple[Counterpart, ...] | None = None,
    deviations: tuple[str, ...] | list[str] = (),
    aux_weight: float | None = None,
    recipe: Mapping[str, Any] | None = None,
    recipe_optimizer: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name, with the card fields given here (``recipe_optimizer``: the
    optimizer a recipe's ``optim.*`` hints were made for when the recipe does not set ``optim.name``; default sgd)."""

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
            counterparts=_counterparts(counterparts),
            deviations=tuple(deviations),
            aux_weight=aux_weight,
            recipe=_recipe(name, recipe),
            recipe_optimizer=_recipe_optimizer(name, recipe, recipe_optimizer),
            notes=inspect.cleandoc(module.__doc__ or "") if module else "",
            description=inspect.cleandoc(fn.__doc__ or "").split("\n")[0],
        )
        _REGISTRY[name] = _Entry(builder=fn, model_cls=model_cls, card=card)
        return fn

    return decorator


def _recipe(name: str, recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    """A card's recipe hints: ``"section.key"`` or ``"model.options.NAME"`` strings (checked against the config when a run uses them)."""
    recipe = dict(recipe or {})
    bad = [k for k in recipe if not isinstance(k, str)
           or not (k.count(".") == 1 or (k.startswith("model.options.") and k.count(".") == 2))]
    if bad:
        raise ValueError(f"{name}: recipe keys must be 'section.key' (e.g. 'optim.lr') or 'model.options.NAME', "
                         f"got {bad}")
    return recipe


def _optimizer_bound(key: str) -> bool:
    """Whether a recipe key is an optimizer setting (gradient clipping is not: it acts on the gradient)."""
    return key.startswith("optim.") and key not in ("optim.grad_clip", "optim.grad_clip_mode")


def _recipe_optimizer(name: str, recipe: Mapping[str, Any] | None, given: str | None) -> str | None:
    """`ModelCard.recipe_optimizer`: the recipe's own ``optim.name``, else ``given``, else sgd (None: no such hint)."""
    recipe = dict(recipe or {})
    own = recipe.get("optim.name")
    if own is not None and given is not None and own != given:
        raise ValueError(f"{name}: the recipe sets optim.name={own!r} but recipe_optimizer={given!r}")
    if not any(_optimizer_bound(k) for k in recipe):
        return None
    return own or given or "sgd"


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


def _suggest(name: str, names: list[str], n: int = 5) -> list[str]:
    """Names to offer for an unknown one: those it begins or is part of (``resnet20`` -> ``resnet20_cifar``,
    shortest first), then difflib's closest spellings."""
    key = name.lower()
    contains = sorted((m for m in names if key and key in m.lower()), key=lambda m: (not m.lower().startswith(key),
                                                                                      len(m), m))
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    return list(dict.fromkeys(contains + close))[:n]


def _entry(name: str) -> _Entry:
    _load_all()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = _suggest(str(name), list(_REGISTRY))
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown network {name!r}.{hint} `cnnzoo list` shows all {len(_REGISTRY)} networks.")
    return _REGISTRY[name]


def _task_builder(name: str):
    """The ``create`` function of the task registry (segmentation, ...) that has ``name``, else None."""
    from .detection.registry import create_detector, list_detectors
    from .segmentation import create_segmenter, list_segmenters

    for names, create in ((list_segmenters, create_segmenter), (list_detectors, create_detector)):
        if name in names():
            return create
    return None


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


_SIMPLE = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _describe(tp: Any) -> str | None:
    """'a number', 'a list of integers'... for annotations made of plain types; None for anything else
    (a class, a callable: such options are the constructor's to check)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SIMPLE:
        return _SIMPLE[tp]
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args]
        return None if None in parts else " or ".join(parts)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list, collections.abc.Sequence) and args:
        item = _PLURAL.get(args[0])
        return None if item is None or any(a not in (args[0], Ellipsis) for a in args) else f"a list of {item}"
    return None


def _fits(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, type(None)):
        return isinstance(value, tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list, collections.abc.Sequence):
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    return True


def _check_option_types(name: str, entry: _Entry, options: dict[str, Any]) -> None:
    """A clear error for an option of the wrong type (``-o drop_rate=high``), judged by the constructor's
    annotation when it is made of plain types (bool, int, float, str, None, lists, Literal), else by a bool or
    float default. Anything else (classes, callables) is left to the constructor."""
    init = entry.model_cls.__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 (an annotation this module cannot resolve: judge by the defaults only)
        hints = {}
    params = inspect.signature(init).parameters
    for key, value in options.items():
        tp, default = hints.get(key), params[key].default if key in params else inspect.Parameter.empty
        if tp is None and isinstance(default, (bool, float)):
            tp = type(default)
        want = _describe(tp) if tp is not None else None
        if want is not None and not _fits(value, tp):
            raise ValueError(f"{name}: option {key} must be {want}, got {value!r} ({type(value).__name__})")


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    weights: str | None = None,
    weights_source: str | None = None,
    features_only: bool = False,
    out_indices: int | collections.abc.Sequence[int] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered network.

    Args:
        name: registered name (see :func:`list_models`).
        num_classes: classifier outputs (the network's default, usually 1000, when None). With ``weights``, a number
            other than the checkpoint's keeps every weight but the classifier, which starts fresh (fine-tuning).
        in_channels: input image channels (the network's default, usually 3, when None).
        weights: a checkpoint (a cnnzoo run directory or weights file, or a torchvision/timm file) or
            ``"torchvision"`` for the published weights. The checkpoint decides the options it needs: a timm or
            torchvision file gives that library's logits with no options from you (see `cnnzoo.weights`), and
            ``model.pretrained_cfg`` says what was applied. Options that contradict the checkpoint are an error.
        weights_source: force the file's layout ("cnnzoo", "torchvision", "timm") instead of detecting it, e.g.
            for a plain ``torch.save(model.state_dict())`` of a cnnzoo network whose keys equal a peer's.
        features_only: return the network as a backbone (`cnnzoo.models.features.FeatureListNet`): its forward gives
            the list of stage maps ``out_indices``, its ``feature_info`` each map's channels and reduction.
        out_indices: with ``features_only``, the stages to return: None (all), an int n (the last n) or indices.
        **options: any keyword of the network's constructor; anything else is an error listing the valid ones.

    A segmentation network's or a detector's name (`cnnzoo.segmentation.list_segmenters`,
    `cnnzoo.detection.registry.list_detectors`) builds it through `cnnzoo.segmentation.create_segmenter` or
    `cnnzoo.detection.registry.create_detector` with the same ``weights`` and options (one entry point for every network;
    ``weights_source``, ``features_only`` and ``out_indices`` are classification-only).
    """
    _load_all()
    if isinstance(name, str) and name not in _REGISTRY:
        task_create = _task_builder(name)
        if task_create is not None:
            if weights_source is not None or features_only or out_indices is not None:
                raise ValueError(f"{name} is not a classification network: weights_source, features_only and "
                                 "out_indices do not apply to it")
            for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
                if value is not None:
                    options[key] = value
            return task_create(name, weights=weights, **options)
    if out_indices is not None and not features_only:
        raise ValueError("out_indices selects the maps of a features_only model; pass features_only=True as well")
    if features_only:
        from .models.features import features_only_model

        return features_only_model(create_model(name, num_classes=num_classes, in_channels=in_channels,
                                                weights=weights, weights_source=weights_source, **options), out_indices)
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
    _check_option_types(name, entry, options)
    if weights is None:
        model = entry.builder(**options)
        model.pretrained_cfg = {"name": name, "options": dict(options)}
        return model
    return _create_with_weights(name, entry, options, weights, weights_source)


def _create_with_weights(name: str, entry: _Entry, options: dict, weights, weights_source) -> nn.Module:
    from .weights import resolve_weights

    want_classes, want_channels = options.pop("num_classes", None), options.pop("in_channels", None)
    plan = resolve_weights(name, weights, options, source=weights_source)
    if want_channels is not None and want_channels != plan.in_channels:
        raise ValueError(f"the weights were trained on {plan.in_channels}-channel input, but in_channels={want_channels} "
                         f"was asked for; drop in_channels (or convert the images to {plan.in_channels} channels)")
    build = {**options, **plan.options, "num_classes": plan.num_classes, "in_channels": plan.in_channels}
    model = entry.builder(**build)
    model.load_state_dict(plan.state_dict, strict=True)
    reset = want_classes is not None and want_classes != plan.num_classes
    if reset:
        model.reset_classifier(want_classes)
    model.pretrained_cfg = {
        "name": name,
        "options": {**options, **plan.options},
        "weights": str(weights),
        "weights_source": plan.source,
        "counterpart": f"{plan.counterpart.library}:{plan.counterpart.name}" if plan.counterpart else None,
        "applied_options": dict(plan.options),
        "published_weights": plan.published,
        "checkpoint_num_classes": plan.num_classes,
        "classifier_reset": reset,
        "dropped_keys": list(plan.dropped),
        "metadata": dict(plan.metadata),
    }
    return model


def convert_state_dict(name: str, state_dict: Mapping[str, torch.Tensor], source: str, *, strict: bool = True,
                       **options: Any) -> dict[str, torch.Tensor]:
    """Turn a torchvision or timm checkpoint of ``name`` into a state dict ``create_model(name, **options)`` loads.

    Args:
        name: our registered name.
        state_dict: the other library's state dict.
        source: ``"torchvision"`` or ``"timm"``.
        strict: check that the result has exactly the keys of ``name`` built with ``options`` (a dict of another
            network, or with foreign keys, is an error naming them).
        **options: the options the network will be built with (only keys matter; num_classes is irrelevant).
    """
    entry = _entry(name)
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; valid: {', '.join(SOURCES)}")
    fn = _CONVERTERS.get((name, source))
    libraries = {cp.library for cp in entry.card.counterparts}
    if source not in libraries and fn is None:
        have = sorted(libraries | {s for n, s in _CONVERTERS if n == name})
        raise ValueError(
            f"{name} has no {source} counterpart; its checkpoints convert from: {', '.join(have) or 'none'}"
        )
    sd = dict(state_dict)
    out = fn(sd) if fn else sd
    if strict:
        with torch.device("meta"):
            keys = set(entry.builder(**options).state_dict())
        optional = tuple(p for cp in entry.card.counterparts if cp.library == source for p in cp.optional)
        missing = sorted(keys - set(out))
        unexpected = sorted(k for k in set(out) - keys if not (optional and k.startswith(optional)))
        if missing or unexpected:
            raise ValueError(f"the {source} state dict does not fit {name}"
                             f"{' built with ' + str(options) if options else ''}: {len(missing)} missing keys "
                             f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}")
        out = {k: v for k, v in out.items() if k in keys}
    return out
