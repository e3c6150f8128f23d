"""Dense evaluation: a network's classifier applied as convolutions over the whole feature map (VGG, Section 3.2).

Simonyan & Zisserman 2015, Sec. 3.2: "the fully-connected layers are first converted to convolutional layers (the
first FC layer to a 7x7 conv. layer, the last two FC layers to 1x1 conv. layers). The resulting fully-convolutional
net is then applied to the whole (uncropped) image. The result is a class score map with the number of channels
equal to the number of classes, and a variable spatial resolution, dependent on the input image size."

`to_dense` does this for every network whose classifier reads its last feature map through a fixed window:

- a flatten + fc head reads a k x k grid (``ZooModel.dense_window``: AlexNet and ZFNet 6, VGG 7, LeNet-5 5,
  EffNet 4): its first fc is a k x k convolution, the others 1 x 1 convolutions;
- a head that pools globally (ResNet, GoogLeNet, DenseNet, MobileNet v1/v2, ...; ``dense_window`` 1) is applied at
  every position, its fc a 1 x 1 convolution before the pooling (He et al. 2016, Sec. 3.4: "the fully-
  convolutional form"); NiN and SqueezeNet, whose classifiers are convolutions already, give their class maps.

The convolutions are the head's own layers run on every window of the feature map (the im2col form of the same
convolution: weights shared with the network, never copied), so anything the head does per window (dropout,
BatchNorm, LeNet-5's RBF units) comes along unchanged. At the training size the k x k heads see one window: the
score map is 1 x 1 and is the network's logits. The pooled heads give one score per position whose spatial mean
is the logits, at any size; a pooled head that is not linear after its pooling (MobileNet v3's and GhostNet's
1280-unit layer after the pool) has no such form and is refused, as are networks without a spatial feature map
(ViT's tokens, the fully-connected highway nets).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..models.base import ZooModel, eval_mode

__all__ = ["DenseNet", "to_dense"]


def _name(model: nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("name") or type(model).__name__


class _Features(nn.Module):
    def __init__(self, model: ZooModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def feature_shape(model: ZooModel, size: int) -> tuple[int, ...]:
    """Shape of ``model.forward_features`` for one ``size`` x ``size`` image, computed on the meta device (no
    arithmetic, no memory: the network's parameters are replaced by meta tensors for the call)."""
    meta = {f"model.{n}": torch.empty_like(t, device="meta")
            for n, t in itertools.chain(model.named_parameters(), model.named_buffers())}
    x = torch.empty(1, model.in_channels, size, size, device="meta")
    with eval_mode(model), torch.no_grad():
        return tuple(torch.func.functional_call(_Features(model), meta, (x,), strict=False).shape)


class DenseNet(nn.Module):
    """The fully-convolutional form of a network (see `to_dense`); shares the network's parameters.

    ``forward(x)`` returns the class score map (B, num_classes, h, w); ``scores(x)`` its spatial mean (B, num_classes).
    """

    def __init__(self, model: ZooModel, window: int):
        super().__init__()
        self.model = model
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, k = self.model, self.window
        m.check_input(x)
        f = m.forward_features(x)  # (B, C, H, W)
        b, c, h, w = f.shape
        if h < k or w < k:
            raise ValueError(
                f"dense evaluation of {_name(m)}: its classifier reads a {k}x{k} window of the last feature map, but "
                f"a {x.shape[-2]}x{x.shape[-1]} input gives a {h}x{w} map; use a larger image (at least the "
                f"training size)")
        if k == 1:  # the head at every position: (B, C, H, W) -> (B*H*W, C, 1, 1) -> (B*H*W, K)
            cols = f.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
            return m.forward_head(cols).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        rows = []
        for i in range(h - k + 1):  # one output row at a time bounds the memory of the unfolded windows
            band = f[:, :, i : i + k].unfold(3, k, 1)  # (B, C, k, W', k): the k x k windows of this row
            cols = band.permute(0, 3, 1, 2, 4).reshape(-1, c, k, k)  # -> (B*W', C, k, k)
            rows.append(m.forward_head(cols).reshape(b, w - k + 1, -1))  # -> (B, W', K)
        return torch.stack(rows, 1).permute(0, 3, 1, 2)  # (B, H', W', K) -> (B, K, H', W')

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The score map averaged over positions (VGG: "spatially averaged (sum-pooled)"), (B, num_classes)."""
        return self(x).mean((2, 3))


def to_dense(model: nn.Module, input_size: int | None = None) -> DenseNet:
    """The network turned fully convolutional: its classifier as convolutions with the same weights.

    Args:
        model: a cnnzoo network (`ZooModel`) with a classifier.
        input_size: the side of the square images it was trained on, to check that its last feature map there
            covers the classifier's window; default: the card's input size (when the network came from
            `create_model`), else the smallest input it accepts.

    Returns:
        A `DenseNet` sharing ``model``'s parameters: ``dense(x)`` is the class score map (B, num_classes, h, w);
        at the training size of a flatten + fc network it is 1 x 1 and equal to ``model(x)``; for a globally pooled
        head its spatial mean (``dense.scores(x)``) equals ``model(x)`` at any size.

    Raises:
        ValueError: the network has no dense form, with the reason (no spatial feature map, no classifier, a head
            that is not linear after its global pooling, a feature map smaller than the classifier's window).
    """
    name = _name(model)
    if not isinstance(model, ZooModel):
        raise ValueError(
            f"to_dense needs a cnnzoo network (a ZooModel with forward_features / forward_head), got "
            f"{type(model).__name__}")
    if model.num_classes == 0:
        raise ValueError(f"{name} has no classifier (num_classes=0): there are no class scores to make dense")
    k = model.dense_window
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{type(model).__name__}.dense_window must be a positive integer, got {k!r}")
    if input_size is None:
        from ..registry import get_card

        card_name = (getattr(model, "pretrained_cfg", None) or {}).get("name")
        input_size = get_card(card_name).input_size[-1] if card_name else max(model.min_input_size, k)
    shape = feature_shape(model, input_size)
    if len(shape) != 4:
        raise ValueError(f"{name} has no spatial feature map to slide its classifier over (forward_features gives "
                         f"shape {shape} for a {input_size}x{input_size} image): dense evaluation needs a "
                         f"convolutional network")
    if min(shape[-2:]) < k:
        raise ValueError(f"{name}: its classifier reads a {k}x{k} window of the last feature map, but at the "
                         f"training size {input_size}x{input_size} that map is {shape[-2]}x{shape[-1]} (the network "
                         f"resamples it to {k}x{k}); dense evaluation needs a training size whose map is at least "
                         f"{k}x{k}")
    dense = DenseNet(model, k)
    if k == 1:
        _check_linear_after_pool(model, dense, name)
    return dense


def _check_linear_after_pool(model: ZooModel, dense: DenseNet, name: str) -> None:
    """A globally pooled head is dense-convertible when pooling commutes with it: the mean of its scores at every
    position equals its output on the pooled map. Checked on a random feature map (any nonlinearity after the
    pooling breaks the equality by far more than the tolerance)."""
    p = next(itertools.chain(model.parameters(), model.buffers()))
    g = torch.Generator().manual_seed(0)
    f = (torch.randn(2, model.num_features, 2, 3, generator=g) * 2 + 0.5).to(p.device, p.dtype)
    with eval_mode(model), torch.no_grad():
        pooled = model.forward_head(f)
        cols = f.permute(0, 2, 3, 1).reshape(-1, model.num_features, 1, 1)
        per_position = model.forward_head(cols).reshape(2, 6, -1).mean(1)
    tol = 1e-3 if p.dtype in (torch.float32, torch.float64) else 5e-2  # bfloat16 / float16 networks
    if pooled.shape != per_position.shape or not torch.allclose(
            per_position.float(), pooled.float(), rtol=tol, atol=tol * float(pooled.abs().max().clamp_min(1))):
        raise ValueError(
            f"{name} has no dense form: its head is not linear after the global pooling (the class scores at each "
            f"position would not average to its logits, e.g. {type(model).__name__}'s layers between the pool and "
            f"the classifier); dense evaluation applies to flatten + fc heads (AlexNet, VGG, ...) and to heads that "
            f"pool then apply one fc (ResNet, GoogLeNet, ...)")
