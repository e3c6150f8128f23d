"""The papers' own training recipes, shipped in ``cnnzoo/train/recipes/paper/*.yaml``.

    cnnzoo recipes                                   # the list: network patterns, paper section, key settings
    cnnzoo train resnet20_cifar --data cifar10 --recipe paper
    cnnzoo train resnext29_8x64d_cifar --recipe paper:resnet_cifar   # a named recipe for any network

    >>> cfg, recipe, notes = paper_config("resnet20_cifar", "cifar10")
    >>> cfg = apply_overrides(cfg, [("--batch-size", "data.batch_size=64")], validate=False)
    >>> notes += scale_to_run(cfg, recipe, {"data.batch_size"})        # lr 0.1 -> 0.05, and a note saying so
    >>> cfg.validate()

A recipe file holds the config sections (model, data, optim, schedule, train: the paper's values, each with a
comment citing its section) and a ``recipe`` section describing it: ``title``, ``paper`` (authors, year,
sections), ``year``, ``networks`` (shell patterns of the registered names it is for), ``dataset`` (the kind of
data the paper trained on: ``imagenet`` or ``cifar``), optionally ``per_network`` (``{PATTERN: {section: {key:
value}}}``, e.g. the warm-up that only ResNet-110 needs), ``not_applied`` (what the paper did that cnnzoo has
no option for; logged when the recipe is used) and ``crops`` (the crop sizes its scale jitter is written for,
default [224]; AlexNet's [224, 227]: the paper's 224-pixel patches are 227 pixels by its own arithmetic).

The run adapts a recipe to the data the user has, and says so in the log:

* The dataset is the user's (``--data``). The recipe's ``data.augment`` is the paper's augmentation for its own
  kind of images and applies only to that kind: ``imagenet`` recipes to image folders (``folder:PATH``),
  ``cifar`` recipes to cifar10 / cifar100. Any other dataset keeps its own default augmentation (a flipped digit
  is another digit; a 4-pixel pad-and-crop means nothing at 224 pixels). VGG's and ResNet's scale jitter (shorter
  side in [256, 512] for 224-pixel crops) is scaled to the run's crop size (``data.input_size``) when it is not one the recipe is written for.
* ``--epochs`` (or ``train.epochs``) shortens or lengthens the run and the schedule keeps its shape:
  ``multistep`` milestones, ``step`` sizes (with gamma adjusted so the whole run decays by the paper's total
  factor), warm-up length and plateau patience are scaled by new epochs / paper epochs, unless set explicitly.
* ``--batch-size`` (or ``data.batch_size``) changes the batch and the learning rate follows the linear scaling
  rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD", Sec. 2.1): lr x (batch x processes) / paper batch,
  unless ``--lr`` / ``optim.lr`` is given. The paper's batch is the global batch; under torchrun the global batch
  is ``--batch-size`` x the number of processes.

Everything else (optimizer, schedule, epochs, loss, init) starts from cnnzoo's defaults, not from the dataset's
recipe, so nothing of another recipe leaks in; the network card's hints apply beneath the paper's values.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .config import Config, _update, apply_card_hints, default_config, load_yaml_file

__all__ = [
    "DATASET_KINDS",
    "PaperRecipe",
    "get_paper_recipe",
    "is_paper_spec",
    "list_paper_recipes",
    "paper_config",
    "paper_recipe_for",
    "resolve_paper_recipe",
    "scale_to_run",
]

DATASET_KINDS = {"imagenet": "image folders (folder:PATH)", "cifar": "cifar10, cifar100"}
REFERENCE_CROP = 224  # the crop size the ImageNet recipes' scale-jitter ranges are written for
_META_KEYS = {"title", "paper", "year", "networks", "dataset", "per_network", "not_applied", "crops"}
_REQUIRED = (("data", "batch_size"), ("optim", "name"), ("optim", "lr"), ("train", "epochs"))


@dataclass(frozen=True)
class PaperRecipe:
    """One shipped recipe: its description and its config values (see the module docstring for the format)."""

    name: str
    title: str
    paper: str
    year: int
    networks: tuple[str, ...]
    dataset: str
    values: dict[str, dict[str, Any]]
    per_network: dict[str, dict[str, dict[str, Any]]]
    not_applied: tuple[str, ...]
    path: Path
    crops: tuple[int, ...] = (REFERENCE_CROP,)  # the crop sizes its scale-jitter range is written for

    def matches(self, network: str) -> bool:
        return any(fnmatch.fnmatchcase(network, p) for p in self.networks)

    def registered(self) -> list[str]:
        """The registered networks the recipe is for."""
        from ..registry import list_models

        return [n for n in list_models() if self.matches(n)]

    def settings_for(self, network: str) -> dict[str, dict[str, Any]]:
        """The config values for ``network``: the recipe's, with its ``per_network`` entries merged in."""
        out = {section: dict(values) for section, values in self.values.items()}
        for pattern, sections in self.per_network.items():
            if fnmatch.fnmatchcase(network, pattern):
                for section, values in sections.items():
                    out.setdefault(section, {}).update(values)
        return out

    def key_settings(self, network: str | None = None) -> str:
        """A one-line summary: optimizer, lr, batch, schedule, epochs (and init when not the network's own)."""
        v = self.settings_for(network) if network else self.values
        o, s, d, t, m = (v.get(k, {}) for k in ("optim", "schedule", "data", "train", "model"))
        opt = {"sgd": "SGD", "rmsprop": "RMSprop", "adamw": "AdamW", "adam": "Adam"}.get(o["name"], o["name"])
        parts = [f"{opt}{' Nesterov' if o.get('nesterov') else ''} lr {o['lr']:g}"]
        if o.get("alpha") is not None and o["name"] == "rmsprop":
            parts.append(f"alpha {o['alpha']:g}")
        if o.get("momentum") is not None and o["name"] in ("sgd", "rmsprop"):
            parts.append(f"momentum {o['momentum']:g}")
        if o.get("weight_decay"):
            parts.append(f"wd {o['weight_decay']:g}")
        parts.append(f"batch {d['batch_size']}")
        name = s.get("name", "cosine")
        if name == "multistep":
            parts.append(f"x{s.get('gamma', 0.1):g} at epochs {s['milestones']}")
        elif name == "step":
            parts.append(f"x{s.get('gamma', 0.1):g} every {s.get('step_size', 30)} epoch(s)")
        elif name == "plateau":
            parts.append(f"x{s.get('gamma', 0.1):g} on plateau")
        else:
            parts.append(name)
        if s.get("warmup_epochs"):
            parts.append(f"warmup {s['warmup_epochs']:g} ep")
        parts.append(f"{t['epochs']} epochs")
        if o.get("grad_clip"):
            parts.append(f"grad clip {o['grad_clip']:g}")
        if t.get("ema"):
            parts.append(f"EMA {t['ema'].get('decay', 0.9999):g}")
        aug = d.get("augment")
        if aug:
            parts.append("augment " + " + ".join(k if v is True else f"{k} {v}" for k, v in aug.items()))
        if m.get("options"):
            parts.append(" ".join(f"-o {k}={v}" for k, v in m["options"].items()))
        init = m.get("init")
        if init and init != "paper" and init != {"name": "paper"}:
            spec = init if isinstance(init, dict) else {"name": init}
            parts.append("init " + spec["name"] + "".join(f" {k} {v}" for k, v in spec.items() if k != "name"))
        return ", ".join(parts)


def _recipe_dir() -> Path:
    return Path(str(resources.files("cnnzoo.train").joinpath("recipes", "paper")))


def _load(path: Path) -> PaperRecipe:
    """Read and check one recipe file (a shipped file that fails here is a bug in cnnzoo)."""
    data = load_yaml_file(path, "paper recipe") or {}
    where = f"paper recipe {path.name}"
    meta = data.pop("recipe", None)
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: no 'recipe' section describing it")
    unknown = sorted(set(meta) - _META_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} in its 'recipe' section; valid: {sorted(_META_KEYS)}")
    for key in ("title", "paper", "year", "networks", "dataset"):
        if key not in meta:
            raise ValueError(f"{where}: its 'recipe' section lacks {key!r}")
    if meta["dataset"] not in DATASET_KINDS:
        raise ValueError(f"{where}: recipe.dataset must be one of {', '.join(DATASET_KINDS)}, got {meta['dataset']!r}")
    for section, key in _REQUIRED:
        if key not in (data.get(section) or {}):
            raise ValueError(f"{where}: a paper recipe must set {section}.{key}")
    recipe = PaperRecipe(
        name=path.stem, title=str(meta["title"]), paper=str(meta["paper"]), year=int(meta["year"]),
        networks=tuple(meta["networks"]), dataset=meta["dataset"], values={k: dict(v or {}) for k, v in data.items()},
        per_network={p: {s: dict(v) for s, v in (sections or {}).items()}
                     for p, sections in (meta.get("per_network") or {}).items()},
        not_applied=tuple(meta.get("not_applied") or ()), path=path,
        crops=tuple(int(c) for c in meta.get("crops") or (REFERENCE_CROP,)))
    for network in [None, *recipe.per_network]:  # the values validate, alone and with each per-network entry
        settings = recipe.settings_for(network) if network else recipe.values
        _update(Config(), settings, where).validate()
    return recipe


def list_paper_recipes() -> list[PaperRecipe]:
    """Every shipped recipe, in the order of the papers (year, then name)."""
    recipes = [_load(p) for p in sorted(_recipe_dir().glob("*.yaml"))]
    return sorted(recipes, key=lambda r: (r.year, r.name))


def get_paper_recipe(name: str) -> PaperRecipe:
    """The recipe named ``name`` (its file's stem); a ValueError listing the names otherwise."""
    recipes = {r.name: r for r in list_paper_recipes()}
    if name not in recipes:
        raise ValueError(f"no paper recipe named {name!r}; valid: {', '.join(recipes)} (see `cnnzoo recipes`)")
    return recipes[name]


def paper_recipe_for(network: str) -> PaperRecipe | None:
    """The recipe of ``network``'s paper, or None when cnnzoo ships none for it."""
    for recipe in list_paper_recipes():
        if recipe.matches(network):
            return recipe
    return None


def is_paper_spec(text: str | None) -> bool:
    """Whether a ``--recipe`` value names a shipped recipe (``paper`` or ``paper:NAME``) rather than a file."""
    return text is not None and (text == "paper" or text.startswith("paper:"))


def resolve_paper_recipe(spec: str, network: str) -> PaperRecipe:
    """``paper``: ``network``'s own recipe; ``paper:NAME``: that recipe, whatever the network.

    Raises:
        ValueError: no recipe for ``network`` (listing the networks that have one), or an unknown NAME.
    """
    if spec.startswith("paper:"):
        return get_paper_recipe(spec.partition(":")[2])
    from ..registry import get_card

    get_card(network)  # an unknown network fails here, with its own message
    recipe = paper_recipe_for(network)
    if recipe is None:
        have = [f"{r.name}: {', '.join(r.registered())}" for r in list_paper_recipes()]
        raise ValueError(f"--recipe paper: {network} has no paper recipe; the networks that have one are "
                         f"{'; '.join(have)}. Use --recipe paper:NAME to train {network} with one of them anyway, "
                         f"or a recipe file of your own")
    return recipe


def dataset_kind(dataset: str) -> str | None:
    """``imagenet`` for image folders, ``cifar`` for cifar10/cifar100, None for other datasets."""
    if dataset.startswith("folder:"):
        return "imagenet"
    return "cifar" if dataset in ("cifar10", "cifar100") else None


def paper_config(network: str, dataset: str = "mnist5k", spec: str = "paper") -> tuple[Config, PaperRecipe, list[str]]:
    """The config of ``network`` trained on ``dataset`` with its paper's recipe, before the user's flags.

    Returns (config, recipe, notes for the log). The config is checked value by value; scale it with
    `scale_to_run` once the flags are on, then validate it.
    """
    recipe = resolve_paper_recipe(spec, network)
    base = default_config(network, dataset)  # the dataset's data section (batch, augmentation, folder split)
    cfg = Config()
    cfg.data = base.data
    cfg.model.name = network
    apply_card_hints(cfg, network)
    settings = recipe.settings_for(network)
    notes = [f"paper recipe {recipe.name!r} ({recipe.paper}) for {network}: {recipe.key_settings(network)}"]
    data = dict(settings.get("data", {}))
    if "augment" in data and dataset_kind(cfg.data.name) != recipe.dataset:
        paper_aug = data.pop("augment")
        own = cfg.data.augment if cfg.data.augment is not None else "the dataset's default"
        notes.append(f"the paper's augmentation {paper_aug} is for {DATASET_KINDS[recipe.dataset]}; "
                     f"{cfg.data.name} keeps its own ({own})")
    _update(cfg, {**settings, "data": data}, f"paper recipe {recipe.name}")
    if recipe.not_applied:
        notes.append(f"the paper also used what cnnzoo does not apply: {'; '.join(recipe.not_applied)}")
    return cfg.check_values(), recipe, notes


def scale_to_run(cfg: Config, recipe: PaperRecipe, explicit: set[str] | frozenset[str] = frozenset(),
                 world_size: int | None = None) -> list[str]:
    """Adapt ``cfg`` (a paper recipe's config with the user's flags on) to the run; returns notes for the log.

    ``explicit``: the ``section.key`` names the user set (flags, ``--set``); those are never changed.
    ``world_size``: processes sharing the global batch (default: torchrun's ``WORLD_SIZE``, else 1).
    """
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    settings = recipe.settings_for(cfg.model.name)
    notes: list[str] = []
    # epochs: the schedule keeps its shape
    paper_epochs, epochs = settings["train"]["epochs"], cfg.train.epochs
    s, sched = cfg.schedule, settings.get("schedule", {})
    if epochs != paper_epochs and "schedule.name" not in explicit:
        f = epochs / paper_epochs
        changed = []
        if s.name == "multistep" and "schedule.milestones" not in explicit:
            old, s.milestones = list(s.milestones), [max(1, round(m * f)) for m in s.milestones]
            changed.append(f"milestones {old} -> {s.milestones}")
        if s.name == "step" and not {"schedule.step_size", "schedule.gamma"} & set(explicit):
            old_size, old_gamma = s.step_size, s.gamma
            s.step_size = max(1, round(old_size * f))
            # the same total decay over the run: gamma^(E/size) == old_gamma^(E_paper/old_size)
            s.gamma = old_gamma ** ((paper_epochs / old_size) / (epochs / s.step_size))
            changed.append(f"x{old_gamma:g} every {old_size} -> x{s.gamma:.4g} every {s.step_size} epoch(s) "
                           f"(the same total decay, x{old_gamma ** (paper_epochs / old_size):.3g})")
        if s.warmup_epochs and s.name not in ("onecycle", "none") and "schedule.warmup_epochs" not in explicit:
            old = s.warmup_epochs
            s.warmup_epochs = old * f
            changed.append(f"warmup {old:g} -> {s.warmup_epochs:.3g} epochs")
        if s.name == "plateau" and "schedule.patience" not in explicit and "patience" in sched:
            old, s.patience = s.patience, max(1, round(s.patience * f))
            changed.append(f"plateau patience {old} -> {s.patience} epochs")
        if changed:
            notes.append(f"the recipe's schedule is scaled to this {epochs}-epoch run (the paper's: {paper_epochs}): "
                         f"{'; '.join(changed)}")
    # batch: the linear scaling rule
    paper_batch, batch = settings["data"]["batch_size"], cfg.data.batch_size * world_size
    if batch != paper_batch:
        procs = f" ({cfg.data.batch_size} x {world_size} processes)" if world_size > 1 else ""
        if "optim.lr" in explicit:
            notes.append(f"batch {batch}{procs} instead of the paper's {paper_batch}; optim.lr {cfg.optim.lr:g} "
                         f"as given (not scaled)")
        else:
            old = cfg.optim.lr
            cfg.optim.lr = old * batch / paper_batch
            notes.append(f"linear scaling rule (Goyal et al. 2017): batch {batch}{procs} instead of the paper's "
                         f"{paper_batch}, so optim.lr {old:g} x {batch}/{paper_batch} = {cfg.optim.lr:.4g} "
                         f"(--lr sets it)")
    # scale jitter: written for 224-pixel crops
    aug = cfg.data.augment
    paper_aug = settings.get("data", {}).get("augment") or {}
    if (isinstance(aug, dict) and aug.get("scale_jitter") and aug == paper_aug and "data.augment" not in explicit
            and cfg.data.name.startswith("folder:")):
        crop, ref = cfg.data.input_size or recipe.crops[0], recipe.crops[0]
        if crop not in recipe.crops:
            old = list(aug["scale_jitter"])
            new = [max(crop, round(v * crop / ref)) for v in old]
            cfg.data.augment = {**aug, "scale_jitter": new}
            notes.append(f"scale jitter {old} (for {ref}-pixel crops) -> {new} for this run's {crop}-pixel crops")
    return notes
