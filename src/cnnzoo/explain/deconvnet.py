"""ZFNet's deconvnet: one feature activation projected back to pixel space.

Zeiler, Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014 (arXiv 1311.2901).

What the paper does (Sec. 2.1, "Visualization with a Deconvnet")
    To examine one activation, every other activation of the layer is set to zero and the map is passed down a
    deconvnet attached to each layer below, which repeats three operations until it reaches the pixels:

    - Unpooling: max pooling is not invertible, but the positions of the maxima within each pooling region,
      recorded on the forward pass as *switch* variables, place the reconstruction from the layer above at the
      right positions (`unpool_with_switches`).
    - Rectification: the reconstruction signal is passed through a ReLU ("to obtain valid feature reconstructions
      at each layer, which also should be positive"). The gate is the sign of the *signal*, not of the forward
      activation: this is what distinguishes the deconvnet from backpropagation (gated by the forward activation)
      and from guided backpropagation (gated by both; Springenberg et al. 2015, Sec. 3.4).
    - Filtering: the transposed filters ("flipping each filter vertically and horizontally"), applied to the
      rectified maps.

    Fig. 2 shows, for a feature map of each layer, the 9 strongest activations over the validation set (each in a
    different image), their projections and the corresponding image patches (`top_activations`).

This implementation
    The projection is the input gradient of ``activation * mask`` (the chosen activation's value at its position,
    zero elsewhere) under a torch-function mode that changes two backward rules and leaves everything else to
    autograd:

    - max pooling (``F.max_pool2d`` / ``nn.MaxPool2d``, any kernel, stride, padding, dilation, ceil mode) runs with
      ``return_indices=True`` and its backward is `unpool_with_switches` with those indices: the switches are the
      ones recorded on this forward pass. (Autograd's own max-pool backward is the same operation; routing it
      through `unpool_with_switches` makes the function the tests check the one the projection uses.) Where
      overlapping windows (AlexNet's and ZFNet's 3x3 stride-2 pools) share a maximum, the contributions are summed,
      the adjoint of max pooling; the paper does not say what its code did there. Adaptive max pooling keeps
      autograd's backward, which is also unpooling with its switches.
    - every ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms) computes the
      same forward value, and its backward is ``relu(signal)``, ungated by the forward activation. An in-place call
      still writes its result into its input (a copy), so the forward is the network's. A mode rather than
      backward hooks on ``nn.ReLU`` modules: it also reaches the ReLUs a forward calls as functions, and no module's
      ``inplace`` flag has to be changed. Other activations (ReLU6, GELU, SiLU, ...) keep their gradient: the paper
      only defines the ReLU's rule.
    - convolutions keep autograd's input gradient, which *is* the transposed convolution with the same weights
      (``conv_transpose2d``): the paper's "transposed versions of the same filters". Biases do not enter the
      projection (the paper's deconvnet filters the signal and adds nothing).

    The network runs in eval mode (each module's own mode restored after), so dropout is the identity and
    batch norm is its fixed per-channel affine map, passed through by its gradient (scaled by
    gamma / sqrt(var + eps)); local response / contrast normalisation passes through its Jacobian. The paper
    names contrast normalisation in its network but does not say how the deconvnet inverts it; its Fig. 3 net
    has no batch norm.

    The activation kept has its value, so the projection is in units of the network's preprocessed input
    (the paper shows projections contrast-stretched: scale them for display, e.g. min-max per image). The
    strongest activation is the largest value of the channel (ties: the first in row-major order); with
    ``channel=None``, the largest over all channels, per image.

    Patches (`top_activations`) are cropped at the receptive field of the unit: its size and jump by the layer
    arithmetic (`cnnzoo.analysis.receptive`), its offset (where the field of unit (0, 0) starts, negative with
    padding) from the structural input gradient of one unit (`cnnzoo.analysis.output_field`). Parts of the field
    outside the image are zero (the dataset mean in preprocessed space); so are the projections there.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..analysis.output_field import arithmetic_output_field, gradient_output_field
from ..models.base import eval_mode
from .attribution import resolve_layer

__all__ = ["LayerField", "TopK", "deconvnet_projection", "layer_field", "top_activations", "unpool_with_switches"]


# ------------------------------------------------------------------------------------------------ unpooling
def unpool_with_switches(y: torch.Tensor, indices: torch.Tensor, output_size) -> torch.Tensor:
    """Max-unpooling (ZF Sec. 2.1): each value of ``y`` goes to the input position its switch recorded.

    Args:
        y: the pooled map (or the signal at it), (N, C, h, w) or (C, h, w).
        indices: the switches, as ``F.max_pool2d(..., return_indices=True)`` gives them: for each output position,
            the flat index ``row * W + col`` of its maximum in the (H, W) input plane; same shape as ``y``.
        output_size: the input's (H, W) (a longer size: its last two entries).

    Returns:
        (N, C, H, W) (or (C, H, W)): zero everywhere except at the switches. Equal to ``F.max_unpool2d`` whenever no
        two windows share a maximum (always with non-overlapping windows); where overlapping windows share one, the
        values are summed (the adjoint of max pooling, what autograd's max-pool backward does), where
        ``F.max_unpool2d`` keeps one of them.
    """
    if not isinstance(y, torch.Tensor) or not isinstance(indices, torch.Tensor):
        raise TypeError("y and indices must be tensors")
    if y.ndim not in (3, 4) or y.shape != indices.shape:
        raise ValueError(f"y and indices must have the same (N, C, h, w) or (C, h, w) shape, got {tuple(y.shape)} "
                         f"and {tuple(indices.shape)}")
    if indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"indices must be integer switches (int64, from return_indices=True), got {indices.dtype}")
    size = tuple(int(s) for s in output_size)[-2:]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"output_size must end with the input's (H, W), got {tuple(output_size)!r}")
    plane = size[0] * size[1]
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= plane):
        raise ValueError(f"a switch lies outside the {size[0]}x{size[1]} output: indices must be in [0, {plane})")
    flat_y, flat_i = y.flatten(-2), indices.flatten(-2).long()
    out = flat_y.new_zeros((*flat_y.shape[:-1], plane))
    return out.scatter_add(-1, flat_i, flat_y).unflatten(-1, size)


# ------------------------------------------------------------------------------------------------ backward rules
class _RectifiedReLU(torch.autograd.Function):
    """ReLU forward; backward ``relu(signal)``, not gated by the forward activation (ZF Sec. 2.1)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, signal):
        return signal.clamp(min=0)


class _SwitchedMaxPool(torch.autograd.Function):
    """Max pooling that records its switches; backward = `unpool_with_switches` with them (ZF Sec. 2.1)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, idx = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
        ctx.save_for_backward(idx)
        ctx.in_size = tuple(x.shape[-2:])
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx, signal, _):
        (idx,) = ctx.saved_tensors
        return unpool_with_switches(signal, idx, ctx.in_size), None, None, None, None, None


_RELUS = {"relu", "relu_"}
_MAX_POOLS = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices"}
_POOL_SIG = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in (
    ("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None), ("padding", 0),
    ("dilation", 1), ("ceil_mode", False), ("return_indices", False))])


class _DeconvRules(TorchFunctionMode):
    """ReLU -> `_RectifiedReLU`, max pooling -> `_SwitchedMaxPool`; every other op unchanged (module notes)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        x = args[0] if args else kwargs.get("input")
        if name in _RELUS and isinstance(x, torch.Tensor) and x.is_floating_point():
            inplace = name.endswith("_") or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            out = _RectifiedReLU.apply(x)
            return x.copy_(out) if inplace else out
        if name in _MAX_POOLS and isinstance(x, torch.Tensor) and x.ndim == 4:
            try:
                b = {**{k: p.default for k, p in _POOL_SIG.parameters.items()},
                     **_POOL_SIG.bind(*args, **kwargs).arguments}
            except TypeError:
                return func(*args, **kwargs)
            stride = b["stride"] if b["stride"] not in (None, [], ()) else b["kernel_size"]
            y, idx = _SwitchedMaxPool.apply(b["input"], b["kernel_size"], stride, b["padding"], b["dilation"],
                                            bool(b["ceil_mode"]))
            return (y, idx) if name == "max_pool2d_with_indices" or b["return_indices"] else y
        return func(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ the layer
def _resolve(model: nn.Module, layer: str | None) -> str:
    """The layer's dotted name: `cnnzoo.explain.attribution.resolve_layer`'s rule (None: the last feature_info stage,
    else the last nn.Conv2d; an unknown name a ValueError with close valid names)."""
    return resolve_layer(model, layer)[0]


class _Stop(Exception):
    """Raised by the hook once the layer has run: the rest of the network is not needed."""


def _forward_to(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The output of module ``name`` when ``model(x)`` runs (its first call), without running what follows."""
    box: dict[str, torch.Tensor] = {}

    def hook(module, args, out):
        box["out"] = out
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "out" not in box:
        raise ValueError(f"layer {name!r} did not run in {type(model).__name__}'s forward")
    out = box["out"]
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"layer {name!r} gives {got}, not a (N, C, h, w) feature map; the deconvnet projects maps")
    return out


def _check_images(x) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a preprocessed float batch (N, C, H, W), got {got}")


def _check_channel(channel, num: int, name: str) -> None:
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < num:
        raise ValueError(f"channel must be an integer in [0, {num}) (layer {name!r} has {num} feature maps), got "
                         f"{channel!r}")


def _project(model: nn.Module, x: torch.Tensor, name: str, channels: torch.Tensor | None,
             positions: torch.Tensor | None):
    """(projections (N, C, H, W), channels (N,), positions (N, 2), values (N,)): the deconvnet projection of one
    activation per image, at the given channel and position, else at the strongest (module notes)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), _DeconvRules():
        act = _forward_to(model, x, name)
        n, _, h, w = act.shape
        a = act.detach()
        if channels is None:  # per image, the channel holding the largest activation
            channels = a.flatten(1).argmax(1) // (h * w)
        rows = torch.arange(n, device=a.device)
        per_map = a[rows, channels].flatten(1)  # (N, h*w)
        flat = per_map.argmax(1) if positions is None else positions[:, 0] * w + positions[:, 1]
        values = per_map[rows, flat]
        signal = torch.zeros_like(a)
        signal[rows, channels, flat // w, flat % w] = values  # every other activation of the layer set to zero
        (proj,) = torch.autograd.grad(act, x, grad_outputs=signal, allow_unused=True)
    if proj is None:  # the layer does not depend on the input
        proj = torch.zeros_like(x)
    return proj.detach(), channels, torch.stack([flat // w, flat % w], 1), values


def deconvnet_projection(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                         channel: int | None = None) -> torch.Tensor:
    """ZF Sec. 2.1: the strongest activation of feature map ``channel`` at ``layer``, projected to pixel space.

    Args:
        model: any ``nn.Module`` (the module notes say which layers get the deconvnet's rules); not changed.
        x: a preprocessed float batch (N, C, H, W).
        layer: a module name from ``model.named_modules()``; None: the last ``feature_info`` stage (else the last
            ``nn.Conv2d``).
        channel: the feature map; None: per image, the channel with the largest activation.

    Returns:
        (N, C, H, W): per image, the projection of its one kept activation (its value at its position in the map,
        every other activation of the layer zero) down through unpooling with this forward pass's switches,
        rectification of the signal and the transposed filters. Zero outside the activation's receptive field.
    """
    _check_images(x)
    name = _resolve(model, layer)
    with eval_mode(model):
        if channel is not None:
            with torch.no_grad():
                _check_channel(channel, _forward_to(model, x[:1], name).shape[1], name)
            channels = torch.full((x.shape[0],), channel, dtype=torch.long, device=x.device)
        else:
            channels = None
        return _project(model, x, name, channels, None)[0]


# ------------------------------------------------------------------------------------------------ receptive fields
@dataclass(frozen=True)
class LayerField:
    """Where the receptive field of each unit of a layer's map lies in the input, per axis (height, width).

    Unit (i, j) sees input rows ``offset[0] + i * jump[0]`` to that ``+ rf[0] - 1`` (columns likewise); the
    offset is negative where padding puts part of the field outside the image.
    """

    rf: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[int, int]
    map_hw: tuple[int, int]

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), inclusive, of unit (row, col)'s field; may extend past the image."""
        top, left = self.offset[0] + row * self.jump[0], self.offset[1] + col * self.jump[1]
        return top, left, top + self.rf[0] - 1, left + self.rf[1] - 1


class _UpTo(nn.Module):
    """``model`` run up to module ``layer``: its output is the wrapper's (for the receptive-field tools)."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, x):
        return _forward_to(self.model, x, self.layer)


def layer_field(model: nn.Module, layer: str | None, input_size) -> LayerField:
    """The receptive field of every unit of ``layer``'s map at ``input_size`` (C, H, W) (module notes).

    Size and jump by the layer arithmetic (theoretical, may exceed the image); the offset from the structural input
    gradient of the centre unit (`cnnzoo.analysis.output_field.gradient_output_field`: random stand-in weights,
    max pooling and ReLU straight-through), read at a side of its box that the image does not clip. Where the image
    clips both sides (a field larger than the image), the offset is measured again on an input larger by twice the
    field (the offset of a chain of convolutions and poolings does not depend on the input size); where the network
    refuses that size, the fields are centred on the image. The model is not changed.
    """
    name = _resolve(model, layer)
    c, h, w = (int(v) for v in input_size)
    with eval_mode(model):  # the tools below restore the wrapper's mode to all modules: each is restored here
        wrapper = _UpTo(model, name).eval()
        try:
            field, map_hw, reason, whole = arithmetic_output_field(wrapper, (c, h, w))
        except Exception as e:  # a network that does not run on the meta device
            raise ValueError(f"the receptive field of layer {name!r} cannot be traced by the layer arithmetic: "
                             f"{type(e).__name__}: {e}") from e
        if whole:
            return LayerField((h, w), (h, w), (0, 0), map_hw)
        if reason is not None:
            raise ValueError(f"the receptive field of layer {name!r} does not follow the layer arithmetic: {reason}")
        offset = _offset(wrapper, (c, h, w), field.rf, field.jump)
        if offset is None:  # the centre unit's field covers the image: measure where it does not (a larger input)
            try:
                offset = _offset(wrapper, (c, h + 2 * field.rf[0], w + 2 * field.rf[1]), field.rf, field.jump)
            except (ValueError, RuntimeError):  # the network refuses that size
                offset = None
        if offset is None:  # still clipped: the units' fields centred on the image
            offset = tuple(((size - 1) - (n - 1) * j - (rf - 1)) // 2
                           for size, n, j, rf in zip((h, w), map_hw, field.jump, field.rf))
    return LayerField(tuple(field.rf), tuple(field.jump), tuple(offset), tuple(map_hw))


def _offset(wrapper: nn.Module, size, rf, jump) -> tuple[int, int] | None:
    """Where unit (0, 0)'s field starts, from the structural field of the centre unit at input ``size`` (read at a
    side of its box that the image does not clip); None when the image clips both sides on an axis."""
    g = gradient_output_field(wrapper, size)
    top, left, bottom, right = g.box
    offset = []
    for lo, hi, p, r, j, s in ((top, bottom, g.pixel[0], rf[0], jump[0], size[1]),
                               (left, right, g.pixel[1], rf[1], jump[1], size[2])):
        if lo > 0:
            offset.append(lo - p * j)
        elif hi < s - 1:
            offset.append(hi - r + 1 - p * j)
        else:
            return None
    return tuple(offset)


def _crop(t: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """``t`` (C, H, W) cut at the inclusive box, zero where the box leaves the image."""
    top, left, bottom, right = box
    _, h, w = t.shape
    out = t.new_zeros((t.shape[0], bottom - top + 1, right - left + 1))
    r0, r1, c0, c1 = max(top, 0), min(bottom, h - 1), max(left, 0), min(right, w - 1)
    if r0 <= r1 and c0 <= c1:
        out[:, r0 - top:r1 - top + 1, c0 - left:c1 - left + 1] = t[:, r0:r1 + 1, c0:c1 + 1]
    return out


# ------------------------------------------------------------------------------------------------ top-k (Fig. 2)
@dataclass
class TopK:
    """The strongest activations of one feature map over a data set, as in ZF Fig. 2.

    Attributes:
        indices: (k,) long, the images (one activation per image), strongest first.
        values: (k,) their activations, descending.
        positions: (k, 2) long, (row, col) of each activation in the layer's map.
        boxes: (k, 4) long, (top, left, bottom, right) inclusive of each receptive field in input pixels (may extend
            past the image).
        patches: (k, C, p, p) the images cut at those fields (zero outside the image).
        projections: (k, C, p, p) the deconvnet projections of the activations, cut the same way.
        layer, channel: what was ranked; field: the layer's receptive-field geometry.
    """

    indices: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    patches: torch.Tensor
    projections: torch.Tensor
    layer: str
    channel: int
    field: LayerField


def top_activations(model: nn.Module, images: torch.Tensor, layer: str | None, channel: int, k: int = 9,
                    batch_size: int = 64) -> TopK:
    """ZF Fig. 2: the ``k`` strongest activations of feature map ``channel`` at ``layer`` over ``images``.

    Each image contributes at most one activation, its strongest in that map (the figure's 9 patches come from 9
    different images); they are ranked by value, strongest first. With fewer than ``k`` images, all of them.

    Args:
        model: any ``nn.Module``; not changed (run in eval mode).
        images: the data set as one preprocessed float tensor (N, C, H, W), all of one size.
        layer: a module name; None: the last ``feature_info`` stage.
        channel: the feature map ranked.
        k: how many; batch_size: images per forward pass.
    """
    _check_images(images)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    name = _resolve(model, layer)
    best_values, best_flat = [], []
    with eval_mode(model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            act = _forward_to(model, images[start:start + batch_size], name)
            if start == 0:
                _check_channel(channel, act.shape[1], name)
                map_w = act.shape[-1]
            v, i = act[:, channel].flatten(1).max(1)  # one activation per image: its strongest in the map
            best_values.append(v)
            best_flat.append(i)
    values, flat = torch.cat(best_values), torch.cat(best_flat)
    order = torch.argsort(values, descending=True, stable=True)[:k]
    values, flat = values[order], flat[order]
    positions = torch.stack([flat // map_w, flat % map_w], 1)
    field = layer_field(model, name, tuple(images.shape[1:]))
    boxes, patches, projections = [], [], []
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            sel = order[start:start + batch_size]
            pos = positions[start:start + batch_size]
            chans = torch.full((len(sel),), channel, dtype=torch.long, device=images.device)
            proj = _project(model, images[sel], name, chans, pos)[0]
            for img, p, (r, c) in zip(images[sel], proj, pos.tolist()):
                box = field.box(r, c)
                boxes.append(box)
                patches.append(_crop(img, box))
                projections.append(_crop(p, box))
    return TopK(indices=order, values=values, positions=positions, boxes=torch.tensor(boxes, dtype=torch.long),
                patches=torch.stack(patches), projections=torch.stack(projections), layer=name, channel=channel,
                field=field)
