"""The interface every cnnzoo network shares (timm's, so tools written once work on the whole zoo).

- ``forward(x)``: logits; in training mode, networks with enabled aux heads return ``(main, aux1, ...)``.
- ``forward_features(x)``: the last feature map (B, num_features, h, w) (or (B, num_features) for FC nets).
- ``forward_head(x, pre_logits=False)``: pooled features -> logits, or the pre-logit vector of
  ``head_hidden_size`` values.
- ``reset_classifier(num_classes)``: a fresh classifier with another number of classes; 0 removes it (as in
  timm): ``forward`` then returns the pre-logit features, ``(B, head_hidden_size)``.
- ``num_classes``, ``num_features``, ``head_hidden_size``, ``in_channels``, ``min_input_size``.
- ``feature_info``: one dict per stage, ``{"num_chs": C, "reduction": stride, "module": "layer1"}``,
  naming the submodule whose output is that stage.
- ``forward_intermediates(x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
  intermediates_only=False)``: ``(forward_features(x), [one NCHW map per selected feature_info stage])``, timm's
  backbone interface (`cnnzoo.models.features`); ``no_feature_maps`` names why a network has none (recurrent, FC).
- ``dense_window``: the side of the window of the last feature map that ``forward_head`` reads: 1 for a head that
  pools globally, k for a flatten + fc head built for a k x k map (`cnnzoo.evaluate.to_dense` slides it).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .features import forward_intermediates_by_hooks

__all__ = ["AuxLogitsModel", "PooledFcModel", "ZooModel"]


def _check_num_classes(model: nn.Module, num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            f"num_classes must be an integer >= 1, or 0 to remove the classifier (forward then returns the "
            f"{model.head_hidden_size} pre-logit features), got {num_classes!r}")


def _checked_reset(fn):
    """Wrap a family's ``reset_classifier``: validate ``num_classes``; 0 removes the classifier."""

    @functools.wraps(fn)
    def reset_classifier(self, num_classes: int, *args, **kwargs) -> None:
        _check_num_classes(self, num_classes)
        # With 0 the family's classifier is built 0 outputs wide (so a later reset finds the layer it replaces)
        # and forward_head skips it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            fn(self, num_classes, *args, **kwargs)
        self.num_classes = num_classes

    return reset_classifier


def _headless_aware(fn):
    """Wrap a family's ``forward_head``: with the classifier removed (0 classes), give the pre-logit features."""

    @functools.wraps(fn)
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return fn(self, x, pre_logits=pre_logits or self.num_classes == 0)

    return forward_head



@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module of ``model`` in eval mode for the block; each module's own training flag restored afterwards
    (a frozen BatchNorm in a training model stays frozen; ``model.train(was_training)`` would unfreeze it)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def check_image_batch(name: str, x, in_channels: int, min_input_size: int = 1, hint: str = "") -> None:
    """The input check of every network (classifiers, segmenters, detectors): ValueError naming what ``name``
    expects when ``x`` is not an (N, in_channels, H, W) tensor of at least ``min_input_size`` pixels a side
    (``hint`` is appended to the size message)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} expects a tensor of shape (N, {in_channels}, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D input (N, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{name} was built for {in_channels} input channel(s) but got {x.shape[1]} (input shape "
                         f"{tuple(x.shape)}); build it with in_channels={x.shape[1]} to accept these images")
    h, w = x.shape[-2:]
    if h < min_input_size or w < min_input_size:
        raise ValueError(f"{name} needs inputs of at least {min_input_size}x{min_input_size} pixels, got {h}x{w}"
                         f"{hint}")

class ZooModel(nn.Module):
    """Base class: input checking and the shared forward. Subclasses set the attributes in ``__init__``.

    A family that overrides ``reset_classifier`` or ``forward_head`` gets the shared behaviour around its own
    (wrapped when the class is defined): ``num_classes`` is validated, and 0 removes the classifier, after which
    ``forward_head`` returns the pre-logit features.
    """

    num_classes: int
    num_features: int
    in_channels: int = 3
    #: smallest square input (pixels) the network accepts; smaller raises ValueError.
    min_input_size: int = 1
    feature_info: list[dict]
    #: window of the last feature map the classifier reads (dense evaluation): 1 = global pooling; a flatten + fc
    #: head overrides it with the k of its k x k grid (VGG: 7).
    dense_window: int = 1
    #: why the network has no spatial feature maps (forward_intermediates / features_only refuse it with this
    #: reason), or None for one that has them.
    no_feature_maps: str | None = None

    @property
    def head_hidden_size(self) -> int:
        return self.num_features

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError naming what the network expects when ``x`` does not fit it."""
        check_image_batch(type(self).__name__, x, self.in_channels, self.min_input_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """The stage maps named by ``feature_info`` (timm's backbone interface; `cnnzoo.models.features`).

        Args:
            x: (B, in_channels, H, W) images.
            indices: None (every stage), an int n (the last n stages) or a sequence of stage indices (negative ones
                count from the end).
            norm: timm's flag for applying the final norm to the maps; a CNN has none apart from its last stage, so
                it changes nothing here (ViT applies its final LayerNorm).
            stop_early: stop after the last selected stage; the final features are then that stage's map.
            output_fmt: "NCHW" or "NHWC".
            intermediates_only: return only the list of maps (and stop after the last selected stage).

        Returns:
            ``(final, maps)``: ``final`` is ``forward_features(x)``, ``maps`` a list of (B, C, H/r, W/r) tensors with
            the ``num_chs`` C and ``reduction`` r of each selected stage; only ``maps`` with ``intermediates_only``.
        """
        del norm  # no norm after the last stage outside forward_features in a CNN
        return forward_intermediates_by_hooks(self, x, indices, stop_early=stop_early, output_fmt=output_fmt,
                                              intermediates_only=intermediates_only)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "reset_classifier" in cls.__dict__:
            cls.reset_classifier = _checked_reset(cls.__dict__["reset_classifier"])
        if "forward_head" in cls.__dict__:
            cls.forward_head = _headless_aware(cls.__dict__["forward_head"])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits or self.num_classes == 0)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier with ``num_classes`` outputs; 0 removes it (forward returns pre-logit features)."""
        _check_num_classes(self, num_classes)
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


class PooledFcModel(ZooModel):
    """A network whose head is global average pooling, dropout (``drop_rate``) and one linear layer ``fc`` over
    ``num_features`` channels: the head of HarDNet, Xception and ShuffleNet v1/v2 (their checkpoints name it ``fc``)."""

    drop_rate: float
    fc: nn.Linear

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # global average pool
        if pre_logits:
            return x
        return self.fc(nn.functional.dropout(x, self.drop_rate, self.training))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes, device=self.fc.weight.device)


class AuxLogitsModel(ZooModel):
    """An Inception-line network in torchvision's layout: ``_features(x)`` returns the last map and the auxiliary
    classifiers' logits (None when they are off or in eval mode); the head is ``avgpool``, ``dropout``, ``fc``.
    In training with aux heads ``forward`` returns ``(logits, *aux_logits)``."""

    avgpool: nn.Module
    dropout: nn.Module
    fc: nn.Linear

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        x, *aux = self._features(x)
        x = self.forward_head(x)
        return (x, *aux) if aux and aux[0] is not None else x

