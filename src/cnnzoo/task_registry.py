"""Registries of the chapters beyond classification (segmentation, detection, ...): one `TaskRegistry` per task.

A task's networks differ from the classification zoo's in what ``forward`` returns (per-pixel scores, box
predictions), so each task keeps its own registry, with the zoo's cards (`cnnzoo.registry.ModelCard`) and the same
behaviour a user of `cnnzoo.create_model` relies on:

- a builder registers under its function name with its card fields (`TaskRegistry.register`);
- `TaskRegistry.create` validates the name and every option against the network class's constructor before anything
  is built, so a typo fails at once with the close names and the list of what is valid;
- ``create(name, weights=FILE)`` loads a state dict (safetensors, or ``torch.load(weights_only=True)``; see
  `cnnzoo.weights.read_checkpoint`) strictly; a network class with a static ``options_from_state_dict(sd)`` derives
  the options the file needs (torchvision's ``fcn_resnet50``: ``num_classes``, ``aux_loss``), so a peer's checkpoint
  loads with no options from the user, and an option that contradicts the file is an error naming both;
- each network may carry a ``digits_recipe``: how it trains on the task's built-in digits dataset on 2 CPU cores,
  with the keys the task allows (``recipe_keys``).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .registry import (
    Counterpart,
    ModelCard,
    Paper,
    UnknownModelError,
    UnknownOptionError,
    _check_option_types,
    _suggest,
)

__all__ = ["TaskRegistry"]


@dataclass
class _Entry:
    builder: Callable[..., nn.Module]
    model_cls: type[nn.Module]
    card: ModelCard
    digits_recipe: dict[str, Any] | None = None

    @property
    def options(self) -> list[str]:
        params = inspect.signature(self.model_cls.__init__).parameters
        return sorted(n for n, p in params.items()
                      if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


class TaskRegistry:
    """The registered networks of one task.

    Args:
        noun: what a network is called in messages ("segmentation network", "detector").
        models_package: the package whose import registers every builder (imported on first lookup).
        recipe_keys: the keys a ``digits_recipe`` may have.
        checkpoint_format: the ``format`` of the task's own checkpoints' metadata (``"cnnzoo-segmentation"``); such a
            file names its network and the options, classes and channels it was built with, and ``create`` rebuilds
            it from them with no options from the user.
    """

    def __init__(self, noun: str, models_package: str, recipe_keys: Sequence[str] = (),
                 checkpoint_format: str | None = None) -> None:
        self.noun, self.models_package, self.recipe_keys = noun, models_package, tuple(recipe_keys)
        self.checkpoint_format = checkpoint_format
        self._entries: dict[str, _Entry] = {}
        self._loaded = False

    def register(self, model_cls: type[nn.Module], *, paper: Paper, input_size: tuple[int, int, int], dataset: str,
                 deviations: Sequence[str] = (), aux_weight: float | None = None,
                 counterparts: tuple[Counterpart, ...] = (), digits_recipe: dict[str, Any] | None = None,
                 ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
        """A decorator registering a builder under its function name, with these card fields."""
        unknown = set(digits_recipe or {}) - set(self.recipe_keys)
        if unknown:
            raise ValueError(f"digits_recipe has unknown keys {sorted(unknown)}; valid: {', '.join(self.recipe_keys)}")

        def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            name = fn.__name__
            if name in self._entries:
                raise RuntimeError(f"{self.noun} {name!r} is registered twice")
            module = sys.modules.get(fn.__module__)
            card = ModelCard(
                name=name, family=fn.__module__.rsplit(".", 1)[-1], paper=paper, dataset=dataset,
                input_size=tuple(input_size), deviations=tuple(deviations), aux_weight=aux_weight,
                counterparts=tuple(counterparts),
                notes=inspect.cleandoc(module.__doc__ or "") if module else "",
                description=inspect.cleandoc(fn.__doc__ or "").split("\n")[0],
            )
            self._entries[name] = _Entry(builder=fn, model_cls=model_cls, card=card,
                                         digits_recipe=dict(digits_recipe) if digits_recipe else None)
            return fn

        return decorator

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.models_package)  # imports every module, which registers its builders

    def entry(self, name: str) -> _Entry:
        """The registration of ``name``; `UnknownModelError` with the close names when there is none."""
        self._load()
        if not isinstance(name, str) or name not in self._entries:
            close = _suggest(str(name), list(self._entries))
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownModelError(f"unknown {self.noun} {name!r}.{hint} Valid: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def card(self, name: str) -> ModelCard:
        return self.entry(name).card

    def options(self, name: str) -> list[str]:
        """The options ``create(name, ...)`` accepts."""
        return self.entry(name).options

    def create(self, name: str, weights: str | os.PathLike | None = None, **options: Any) -> nn.Module:
        """Build ``name`` with ``options``; with ``weights``, load that state dict strictly (see the module doc).

        Raises:
            UnknownModelError: ``name`` is not registered (the message suggests close names, lists the valid ones).
            UnknownOptionError: an option the network's constructor does not take (the message lists the valid ones).
            ValueError: an option of the wrong type or an invalid value; a weights file that is not a state dict or
                does not fit the network.
            FileNotFoundError: ``weights`` does not exist.
        """
        entry = self.entry(name)
        unknown = sorted(set(options) - set(entry.options))
        if unknown:
            raise UnknownOptionError(f"{name}: unknown option(s) {', '.join(unknown)}; valid: "
                                     f"{', '.join(entry.options)}")
        _check_option_types(name, entry, options)
        if weights is None:
            return entry.builder(**options)
        from .weights import read_checkpoint

        sd, _meta = read_checkpoint(weights)
        implied = self._recorded_options(name, weights)
        derive = getattr(entry.model_cls, "options_from_state_dict", None)
        if callable(derive):
            implied.update(derive(sd))
        if implied:
            for key, value in implied.items():
                if key in options and options[key] != value:
                    raise ValueError(f"{name}: option {key}={options[key]!r} contradicts the weights file "
                                     f"{str(weights)!r}, which needs {key}={value!r}; leave the option out")
                options[key] = value
            _check_option_types(name, entry, options)
        model = entry.builder(**options)
        mine = model.state_dict()
        missing = [k for k in mine if k not in sd]
        unexpected = [k for k in sd if k not in mine]
        wrong = [k for k in mine if k in sd and tuple(sd[k].shape) != tuple(mine[k].shape)]
        if missing or unexpected or wrong:
            parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if keys]
            raise ValueError(f"{name}: the weights file {str(weights)!r} does not fit the network: {'; '.join(parts)}")
        model.load_state_dict(sd, strict=True)
        return model

    def _recorded_options(self, name: str, weights) -> dict[str, Any]:
        """The constructor options a checkpoint of this task records (its metadata's ``options``, ``num_classes``,
        ``in_channels``); {} for any other file. A checkpoint of another network is an error naming both."""
        import json
        from pathlib import Path

        path = Path(weights)
        if self.checkpoint_format is None or not path.is_file() or path.suffix != ".safetensors":
            return {}
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
        except Exception:  # noqa: BLE001  (read_checkpoint has already named what is wrong with an unreadable file)
            return {}
        if raw.get("format") != json.dumps(self.checkpoint_format) and raw.get("format") != self.checkpoint_format:
            return {}
        meta = {}
        for key in ("model", "options", "num_classes", "in_channels"):
            if key in raw:
                try:
                    meta[key] = json.loads(raw[key])
                except (json.JSONDecodeError, TypeError):
                    meta[key] = raw[key]
        if meta.get("model") not in (None, name):
            raise ValueError(f"{str(path)!r} is a checkpoint of {meta['model']}, not {name}; use "
                             f"create(\"{meta['model']}\", weights=...)")
        out = dict(meta["options"]) if isinstance(meta.get("options"), dict) else {}
        valid = set(self.entry(name).options)
        for key in ("num_classes", "in_channels"):
            if key in meta and key in valid:
                out[key] = meta[key]
        return {k: v for k, v in out.items() if k in valid}
