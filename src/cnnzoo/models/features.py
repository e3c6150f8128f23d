"""Backbone features: the multi-scale maps of any zoo network, in the conventions of timm.

Segmentation and detection heads read a backbone's stage outputs, not its logits. Every registered convolutional
network gives them two ways, both driven by the network's ``feature_info`` (one dict per stage: ``num_chs``,
``reduction``, ``module``):

- ``model.forward_intermediates(x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
  intermediates_only=False)`` returns ``(final, maps)``: ``final`` is what ``forward_features(x)`` returns (or the
  last map computed when ``stop_early``), ``maps`` one (B, C, H/r, W/r) tensor per selected stage. ``indices``: None
  for every stage, an int n for the last n, or a sequence of stage indices (negative ones count from the end), as
  timm's ``feature_take_indices``. With ``intermediates_only=True`` only the list comes back and the network stops
  after the last selected stage.
- ``create_model(name, features_only=True, out_indices=(...))`` gives a :class:`FeatureListNet`: its forward returns
  the list of maps; its ``feature_info`` (a :class:`FeatureInfo`) describes each returned map (``.channels()``,
  ``.reduction()``, ``.module_name()``, ``info[i]["num_chs"]``...). The classifier head is dropped; every other
  parameter keeps the network's own state-dict key (``layer1.0.conv1.weight``), as torchvision's
  ``IntermediateLayerGetter`` keeps them, so a torchvision or cnnzoo checkpoint of the backbone loads into it.

The generic implementation (:func:`forward_intermediates_by_hooks`, used by ``ZooModel``) runs ``forward_features``
with forward hooks on the ``feature_info`` modules; a family whose maps are not a module's output overrides
``forward_intermediates`` (ViT: its tokens are reshaped to maps). ``norm`` is accepted everywhere for timm's
signature; only ViT has a final norm to apply to the intermediates (the CNNs' last stage output is already what
``forward_features`` returns). Networks without spatial maps (the recurrent networks, the fully connected highway
network) set ``no_feature_maps`` to the reason, and both calls refuse them with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = [
    "OUTPUT_FORMATS",
    "FeatureInfo",
    "FeatureListNet",
    "FeaturesUnsupportedError",
    "check_output_fmt",
    "feature_take_indices",
    "features_only_model",
    "forward_intermediates_by_hooks",
]

#: layouts of the returned maps: channels first (the zoo's, torchvision's) or channels last.
OUTPUT_FORMATS = ("NCHW", "NHWC")


class FeaturesUnsupportedError(ValueError):
    """Raised for ``features_only`` / ``forward_intermediates`` on a network that has no spatial feature maps."""


def _refuse_if_no_maps(model: nn.Module) -> None:
    reason = getattr(model, "no_feature_maps", None)
    if reason:
        raise FeaturesUnsupportedError(
            f"{type(model).__name__} has no spatial feature maps to return ({reason}); features_only and "
            f"forward_intermediates need a convolutional network or a ViT")


def check_output_fmt(output_fmt: str) -> None:
    if output_fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output_fmt must be one of {', '.join(OUTPUT_FORMATS)}, got {output_fmt!r}")


def _to_fmt(t: torch.Tensor, output_fmt: str) -> torch.Tensor:
    return t.permute(0, 2, 3, 1) if output_fmt == "NHWC" else t


def feature_take_indices(num_stages: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """The stage indices to return and the largest of them (timm's ``feature_take_indices``).

    Args:
        num_stages: len(feature_info).
        indices: None (every stage), an int n (the last n stages), or a sequence of stage indices, each in
            [-num_stages, num_stages) (negative ones count from the end). Returned sorted, without repeats.
    """
    valid = f"stage indices are 0..{num_stages - 1} (or -{num_stages}..-1 from the end)"
    if indices is None:
        return list(range(num_stages)), num_stages - 1
    if isinstance(indices, bool) or not isinstance(indices, (int, Sequence)) or isinstance(indices, str):
        raise ValueError(f"indices must be None, an int n (the last n stages) or a sequence of stage indices; "
                         f"got {indices!r}. {valid}")
    if isinstance(indices, int):
        if not 1 <= indices <= num_stages:
            raise ValueError(f"indices={indices} asks for the last {indices} stages, but the network has "
                             f"{num_stages}; give 1..{num_stages}, or a sequence: {valid}")
        return list(range(num_stages - indices, num_stages)), num_stages - 1
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not -num_stages <= i < num_stages]
    if bad or not indices:
        what = f"{', '.join(map(repr, bad))} not a stage index" if bad else "an empty list"
        raise ValueError(f"bad stage indices {list(indices)!r} ({what}): the network has {num_stages} stages; {valid}")
    take = sorted({i % num_stages for i in indices})
    return take, take[-1]


class _StopForward(Exception):
    """Raised by a hook once the last wanted stage has run (``stop_early``); caught at once below."""


def forward_intermediates_by_hooks(
    model: nn.Module,
    x: torch.Tensor,
    indices: int | Sequence[int] | None = None,
    *,
    stop_early: bool = False,
    output_fmt: str = "NCHW",
    intermediates_only: bool = False,
):
    """``forward_intermediates`` of a network whose ``feature_info`` modules output its stage maps: runs
    ``forward_features`` with a forward hook on each wanted module (see the module notes for the arguments).

    A hook that sees something other than one (B, C, h, w) tensor, a module that runs twice, or a map that a later
    layer modified in place is an error in the family's ``feature_info`` (tests/test_features.py checks every
    registered network), reported as a RuntimeError naming the module.
    """
    _refuse_if_no_maps(model)
    check_output_fmt(output_fmt)
    model.check_input(x)
    infos = model.feature_info
    take, max_index = feature_take_indices(len(infos), indices)
    stop_at = max_index if stop_early or intermediates_only else None
    family = type(model).__name__
    captured: dict[int, tuple[torch.Tensor, int | None]] = {}

    def hook_for(i: int, name: str):
        def hook(module, args, out):
            if not isinstance(out, torch.Tensor) or out.ndim != 4:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise RuntimeError(f"{family}.feature_info[{i}]: module {name!r} gives {got}, not a (B, C, H, W) map")
            if i in captured:
                raise RuntimeError(f"{family}.feature_info[{i}]: module {name!r} runs more than once in "
                                   f"forward_features, so its output is no single stage map")
            captured[i] = (out, None if out.is_inference() else out._version)
            if i == stop_at:
                raise _StopForward

        return hook

    handles = [model.get_submodule(infos[i]["module"]).register_forward_hook(hook_for(i, infos[i]["module"]))
               for i in take]
    final = None
    try:
        final = model.forward_features(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [infos[i]["module"] for i in take if i not in captured]
    if missing:
        raise RuntimeError(f"{family}: feature_info module(s) {missing} did not run in forward_features")
    for i in take:
        out, version = captured[i]
        if final is not None and version is not None and out._version != version:
            raise RuntimeError(f"{family}.feature_info[{i}]: the output of {infos[i]['module']!r} was changed in "
                               f"place by a later layer; feature_info must name that later layer")
    maps = [_to_fmt(captured[i][0], output_fmt) for i in take]
    if intermediates_only:
        return maps
    if final is None:  # stopped early: the last map computed is the final one (timm)
        final = captured[max_index][0]
    return final, maps


class FeatureInfo(Sequence):
    """What each map a :class:`FeatureListNet` returns holds: a list of dicts (``num_chs``, ``reduction``,
    ``module``, and ``index``: the stage's position in the network's ``feature_info``), with timm's accessors."""

    def __init__(self, feature_info: Sequence[dict], out_indices: Sequence[int]):
        self.out_indices = tuple(out_indices)
        self.info = [{**feature_info[i], "index": i} for i in self.out_indices]

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        """``key`` of every returned map (idx None), of map ``idx``, or of the maps in the list ``idx``."""
        if idx is None:
            return [f[key] for f in self.info]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self.get("module", idx)

    def __getitem__(self, i):
        return self.info[i]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info!r})"


def _children_used(model: nn.Module, out_indices: Sequence[int]) -> set[str]:
    """The top-level children that computing the maps ``out_indices`` runs, themselves or through a submodule (a
    forward in eval mode at the network's smallest input, on its own device; on the meta device no arithmetic)."""
    used: set[str] = set()

    def mark(top: str):
        return lambda module, args: used.add(top)

    handles = [module.register_forward_pre_hook(mark(name.split(".")[0]))
               for name, module in model.named_modules() if name]
    p = next(model.parameters())
    s = model.min_input_size
    modes = {m: m.training for m in model.modules()}  # restored one by one (a backbone may hold frozen BNs)
    try:
        model.eval()
        with torch.no_grad():
            model.forward_intermediates(torch.zeros(1, model.in_channels, s, s, device=p.device, dtype=p.dtype),
                                        indices=list(out_indices), intermediates_only=True)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for h in handles:
            h.remove()
    return used


class FeatureListNet(nn.Module):
    """A network as a backbone: ``forward(x)`` returns the list of its maps ``out_indices`` (timm's
    ``features_only`` model); ``feature_info`` describes each map.

    It takes the network over (as timm's ``FeatureGetterNet``): the top-level children that the maps do not need
    (the classifier, auxiliary heads) are set to None in it, and the wrapper shares the network's parameters,
    buffers and submodules under the network's own names, so ``state_dict()`` keys are the network's
    (``layer4.2.conv3.weight``, as in torchvision's segmentation backbones) and ``.to()``/``.train()`` act on both.

    Args:
        model: a zoo network with ``forward_intermediates`` and ``feature_info``.
        out_indices: the stages to return: None (all), an int n (the last n) or a sequence of stage indices.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None):
        super().__init__()
        _refuse_if_no_maps(model)
        take, _ = feature_take_indices(len(model.feature_info), out_indices)
        used = _children_used(model, take)
        for name in [n for n, m in model.named_children() if n not in used]:
            setattr(model, name, None)  # the aux heads' `is not None` checks then skip them in training too
        self.__dict__["_model"] = model  # plain attribute: registering it would prefix every key with "model."
        for registry in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules"):
            self.__dict__[registry] = model.__dict__[registry]  # the very same dicts: one set of tensors
        self.out_indices = tuple(take)
        self.feature_info = FeatureInfo(model.feature_info, take)

    @property
    def model(self) -> nn.Module:
        """The wrapped network (its ``min_input_size``, ``in_channels``, options)."""
        return self._model

    def train(self, mode: bool = True) -> FeatureListNet:
        super().train(mode)
        self._model.training = mode  # the network's own flag (aux heads, for instance, read it)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)

    def extra_repr(self) -> str:
        return f"network={type(self._model).__name__}, out_indices={self.out_indices}"


def features_only_model(model: nn.Module, out_indices: int | Sequence[int] | None = None) -> FeatureListNet:
    """``create_model(name, features_only=True, out_indices=...)``: ``model`` as a :class:`FeatureListNet`, its
    ``pretrained_cfg`` kept with ``features_only`` and the ``out_indices`` taken."""
    net = FeatureListNet(model, out_indices)
    net.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "features_only": True,
                          "out_indices": list(net.out_indices)}
    return net
