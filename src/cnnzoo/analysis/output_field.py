"""Receptive field at a dense network's output (segmentation): which input pixels an output pixel can see.

Two methods, and `output_field` says which one it used:

- ``arithmetic`` (theoretical, exact): the layer arithmetic of :mod:`cnnzoo.analysis.receptive` (size ``rf`` and
  jump per tensor, ``rf += d (k - 1) jump`` through a convolution or pooling window), traced on the meta device. It
  holds for a network whose every op keeps the positions aligned: convolutions, pooling, element-wise ops and
  concatenations at one resolution, and global pooling broadcast back (a constant map that sees the whole image).
  The field is the same for every output position and, as in the classification tables, may exceed the image.
  Also exact, whatever resampling follows: a global pooling (a map reduced to one value per channel) broadcast back
  onto a map that reaches the output (DeepLab v3's image pooling, PSPNet's 1x1 bin, LR-ASPP's gate) makes every
  output pixel see the whole input.
- ``gradient`` (empirical): the nonzero input gradient of the centre output pixel (index ``(H' // 2, W' // 2)``,
  every class summed), its bounding box in input pixels, clipped to the image. Used where the arithmetic does not
  apply: an op resamples a map to another size (bilinear or nearest upsampling, max-unpooling with switches,
  transposed convolutions, the crop of a skip connection or of FCN's 100-pixel padding). After such an op the field
  is no longer one size with one jump (a 2x2 stride-2 up-convolution's even and odd outputs see different input
  pixels), so the arithmetic's rules would only bound it.

  The gradient is taken so that it shows the *structural* support, which input pixels are connected to the pixel at
  all, rather than what one input and one set of weights happen to pass (Luo et al. 2016's effective field):

  - every parameter is replaced by a random stand-in (N(0, 1/fan_in) for weights, U(0.5, 1.5) for 1-D
    parameters), so a zero-initialised layer (FCN's score layers, a residual branch's zero-init last norm) does not
    hide its connections; the network itself is not changed (`torch.func.functional_call`);
  - max pooling passes its gradient to the whole window (the average pool's), and ReLU-like gates (ReLU, ReLU6,
    hard-tanh, hard-swish, hard-sigmoid) pass it unchanged: the forward values are the network's, only the
    backward is straight-through, so neither the argmax nor a dead unit removes a connection;
  - max-unpooling still places values at the switches of this forward pass (random input, seed 0), so SegNet's and
    DeconvNet's fields are those of one input: what the switches connect.

  On a network on the meta device, the stand-ins are made on the CPU (floating buffers as ones, others as zeros).

Both are in input pixels, per axis (height, width).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from ..models.base import eval_mode
from .receptive import Field, propagate

__all__ = ["OutputField", "arithmetic_output_field", "gradient_output_field", "output_field"]

aten = torch.ops.aten
METHODS = ("auto", "arithmetic", "gradient")


@dataclass(frozen=True)
class OutputField:
    """The receptive field of a dense network's output.

    Attributes:
        method: ``"arithmetic"`` (every output pixel, theoretical) or ``"gradient"`` (the centre pixel, empirical).
        rf: field size (height, width) in input pixels.
        input_hw / output_hw: spatial sizes of the input and of the output map.
        jump: input pixels between neighbouring output pixels (arithmetic only).
        pixel: the output pixel measured (gradient only).
        box: (top, left, bottom, right), inclusive, of the pixels it sees in the input (gradient only).
        reason: why the arithmetic does not apply (gradient only), e.g. "aten.upsample_bilinear2d resamples 65x65
            to 513x513".
        global_pool: a global pooling reaches every output pixel, so each sees the whole input (arithmetic; exact
            whatever resampling follows it: DeepLab v3's image pooling, LR-ASPP's gate).
    """

    method: str
    rf: tuple[int, int]
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    jump: tuple[int, int] | None = None
    pixel: tuple[int, int] | None = None
    box: tuple[int, int, int, int] | None = None
    reason: str | None = None
    global_pool: bool = False

    @property
    def whole(self) -> bool:
        """Whether the field covers the whole input (a gradient field clipped to the image)."""
        return all(r >= s for r, s in zip(self.rf, self.input_hw))

    def size_text(self) -> str:
        h, w = self.rf
        return f"{h}x{w}" if h != w else f"{h}x{h}"

    def describe(self) -> str:
        """One line for `cnnzoo summary`: the field, where, and the method."""
        ih, iw = self.input_hw
        if self.global_pool:
            return (f"receptive field at the output: the whole {ih}x{iw} input for every output pixel (layer "
                    f"arithmetic: a global pooling branch reaches every output pixel)")
        if self.method == "arithmetic":
            return (f"receptive field at the output: {self.size_text()} input pixels for every output pixel, jump "
                    f"{_pair(self.jump)} (layer arithmetic, theoretical: may exceed the {ih}x{iw} input)")
        top, left, bottom, right = self.box
        where = "the whole input" if self.whole else f"rows {top}-{bottom}, columns {left}-{right}"
        return (f"receptive field at the output: {self.size_text()} input pixels ({where} of {ih}x{iw}) for the "
                f"centre output pixel {self.pixel} of {self.output_hw[0]}x{self.output_hw[1]} (empirical: its "
                f"nonzero input gradient, max pooling and ReLU gates straight-through, random weights; the layer "
                f"arithmetic does not apply: {self.reason})")

    def to_dict(self) -> dict:
        return {**asdict(self), "whole_input": self.whole}


def _pair(v) -> str:
    return "-" if v is None else str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def _check_size(input_size) -> tuple[int, int, int]:
    input_size = tuple(input_size)
    if len(input_size) != 3 or not all(isinstance(d, int) and d > 0 for d in input_size):
        raise ValueError(f"input_size must be (C, H, W) with positive integers, got {input_size!r}")
    return input_size


def _main_output(out):
    """The main logits of a forward's result: the tensor, the first of a tuple (main, aux), a dict's "out"."""
    if isinstance(out, dict):
        out = out.get("out", next(iter(out.values())))
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the network's output is not a (N, C, H, W) map but {got}; the output receptive field is "
                         f"for dense (segmentation) networks")
    return out


# ------------------------------------------------------------------------------------------------ arithmetic
_WINDOWS = {aten.convolution.default, aten.max_pool2d.default, aten.max_pool2d_with_indices.default,
            aten.avg_pool2d.default, aten._adaptive_avg_pool2d.default, aten.adaptive_max_pool2d.default}


def _resamples(func, args, tensors: list[torch.Tensor], out: torch.Tensor) -> str | None:
    """Why ``func`` breaks the arithmetic (module notes), or None: a transposed convolution, or any other op that
    turns a traced map into a map of another size (upsampling, unpooling, a crop, a pad)."""
    if func is aten.convolution.default and args[6]:
        return f"a transposed convolution upsamples {_hw_text(tensors[0])} to {_hw_text(out)}"
    if func in _WINDOWS or out.ndim != 4:
        return None
    for t in tensors:
        if t.ndim == 4 and tuple(t.shape[-2:]) != tuple(out.shape[-2:]):
            return f"aten.{func._overloadpacket.__name__} resamples {_hw_text(t)} to {_hw_text(out)}"
    return None


def _hw_text(t: torch.Tensor) -> str:
    return f"{t.shape[-2]}x{t.shape[-1]}"


class _FieldTrace(TorchDispatchMode):
    """The arithmetic's field of every tensor; the first op upstream that made it inapplicable (``broken``); which
    tensors hold a global pooling (``pooled``: one value per channel) and which maps carry one broadcast back
    (``whole``: every position sees the whole input, DeepLab v3's image pooling)."""

    def __init__(self):
        super().__init__()
        self.fields: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.broken: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.pooled: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.whole: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def _field_of(self, t):
        return self.fields.get(t) if isinstance(t, torch.Tensor) else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        traced = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t in self.fields]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not traced or not outs:
            return out
        f = propagate(func, args, kwargs, [self.fields[t] for t in traced], outs[0], field_of=self._field_of)
        if f is None:
            return out
        first = outs[0]
        one_value = first.ndim < 3 or first.shape[-2:].numel() == 1  # per channel: no positions left
        # a global pooling (spatial map -> one value per channel) is exact; so is broadcasting it back
        pooled = f.hw is None and one_value and (
            any(self.fields[t].hw is not None for t in traced) or
            any(t in self.pooled for t in traced))
        whole = not one_value and first.ndim == 4 and any(t in self.pooled or t in self.whole for t in traced)
        spatial = [t for t in traced if self.fields[t].hw is not None]
        reason = next((self.broken[t] for t in traced if t in self.broken), None)
        if reason is None and not pooled:
            reason = _resamples(func, args, spatial, first)
        for t in outs:
            if t.is_floating_point():
                self.fields[t] = f
                for mark, on in ((self.broken, reason), (self.pooled, pooled), (self.whole, whole)):
                    if on:
                        mark[t] = on
        return out


def _stand_ins(model: nn.Module, device, fill) -> dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return {k: fill(k, t) for k, t in tensors.items()}


def arithmetic_output_field(model: nn.Module, input_size) -> tuple[Field | None, tuple[int, int], str | None, bool]:
    """(the output's field by the layer arithmetic, the output's (H, W), why the arithmetic does not apply or None,
    whether a global pooling reaches every output pixel: each then sees the whole input, whatever came after it).

    Traced on the meta device with stand-ins of the model's tensors (nothing is computed, the model is unchanged).
    """
    c, h, w = _check_size(input_size)
    meta = _stand_ins(model, "meta", lambda k, t: torch.empty_like(t, device="meta"))
    trace = _FieldTrace()
    with eval_mode(model):
        x = torch.zeros(1, c, h, w, device="meta")
        with torch.no_grad(), trace:
            trace.fields[x] = Field((1, 1), (1, 1), (h, w))
            out = _main_output(torch.func.functional_call(model, meta, (x,), strict=False))
    out_hw = (int(out.shape[-2]), int(out.shape[-1]))
    field = trace.fields.get(out)
    reason = trace.broken.get(out)
    if reason is None and (field is None or field.hw != out_hw):
        reason = "the output's positions are not traced back to the input's"
    return field, out_hw, reason, out in trace.whole


# -------------------------------------------------------------------------------------------------- gradient
_GATES = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "threshold", "threshold_"}
_MAX_POOLS = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "adaptive_max_pool2d",
              "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}
_POOL_SIG = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in (
    ("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None), ("padding", 0),
    ("dilation", 1), ("ceil_mode", False), ("return_indices", False))])
_ADAPTIVE_SIG = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in (
    ("input", inspect.Parameter.empty), ("output_size", inspect.Parameter.empty), ("return_indices", False))])


def _straight(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` forward, ``surrogate``'s gradient backward."""
    return surrogate + (value - surrogate).detach()


def _ones(v) -> bool:
    return all(int(d) == 1 for d in (v if isinstance(v, (list, tuple)) else (v,)))


class _StraightThrough(TorchFunctionMode):
    """Max pooling with the average pool's gradient, ReLU-like gates with the identity's (module notes)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _GATES and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            x = args[0]
            value = func(x.detach().clone(), *args[1:], **kwargs)  # a copy: an in-place gate leaves x to the surrogate
            return _straight(value, x) if value.shape == x.shape else value
        if name in _MAX_POOLS and args and isinstance(args[0], torch.Tensor) and args[0].ndim in (3, 4):
            out = func(*args, **kwargs)
            value = out[0] if isinstance(out, tuple) else out
            try:
                if "adaptive" in name:
                    b = _ADAPTIVE_SIG.bind(*args, **kwargs).arguments
                    avg = torch.nn.functional.adaptive_avg_pool2d(b["input"], b["output_size"])
                else:
                    b = {**{k: p.default for k, p in _POOL_SIG.parameters.items()},
                         **_POOL_SIG.bind(*args, **kwargs).arguments}
                    if not _ones(b["dilation"]):
                        return out  # a dilated window: no average-pool twin (its own gradient, data dependent)
                    stride = b["stride"] if b["stride"] not in (None, [], ()) else b["kernel_size"]
                    avg = torch.nn.functional.avg_pool2d(b["input"], b["kernel_size"], stride, b["padding"],
                                                         ceil_mode=bool(b["ceil_mode"]), count_include_pad=True)
            except (TypeError, RuntimeError):
                return out
            if avg.shape != value.shape:
                return out
            value = _straight(value, avg)
            return (value, *out[1:]) if isinstance(out, tuple) else value
        return func(*args, **kwargs)


def _random_like(name: str, t: torch.Tensor, gen: torch.Generator, device) -> torch.Tensor:
    shape = t.shape
    if not t.is_floating_point():
        return torch.zeros(shape, dtype=t.dtype, device=device)
    if t.ndim >= 2:
        fan_in = max(1, t.numel() // t.shape[0])
        return (torch.randn(shape, generator=gen, dtype=torch.float32) / fan_in ** 0.5).to(device)
    return (0.5 + torch.rand(shape, generator=gen, dtype=torch.float32)).to(device)


def gradient_output_field(model: nn.Module, input_size, *, seed: int = 0, device=None,
                          reason: str | None = None) -> OutputField:
    """The centre output pixel's empirical field (module notes), from one forward and backward at batch 1.

    Runs on ``device`` (default: the model's device, the CPU for a meta model) on stand-ins of the model's tensors;
    the model is not changed. Costs what one training step of the network at this size costs.
    """
    c, h, w = _check_size(input_size)
    where = {t.device for t in [*model.parameters(), *model.buffers()]}
    own = next(iter(where)) if len(where) == 1 else torch.device("cpu")
    device = torch.device(device) if device is not None else (torch.device("cpu") if own.type == "meta" else own)
    gen = torch.Generator().manual_seed(seed)
    params = {k for k, _ in model.named_parameters(remove_duplicate=False)}

    def fill(k, t):
        if k in params:
            return _random_like(k, t, gen, device)
        if t.device.type == "meta":  # buffers of a meta model: running statistics and the like
            return (torch.ones if t.is_floating_point() else torch.zeros)(t.shape, dtype=t.dtype, device=device)
        return t.to(device)

    tensors = _stand_ins(model, device, fill)
    with eval_mode(model):
        x = torch.randn(1, c, h, w, generator=gen).to(device).requires_grad_(True)
        with torch.enable_grad(), _StraightThrough():
            out = _main_output(torch.func.functional_call(model, tensors, (x,), strict=False))
            ph, pw = out.shape[-2] // 2, out.shape[-1] // 2
            out[0, :, ph, pw].sum().backward()
    grad = x.grad[0].abs().sum(0)
    if not torch.isfinite(grad).all():
        raise ValueError("the input gradient is not finite (the random stand-in weights overflowed); the receptive "
                         "field cannot be measured at this size")
    rows = torch.nonzero(grad.sum(1)).flatten()
    cols = torch.nonzero(grad.sum(0)).flatten()
    if rows.numel() == 0:
        raise ValueError("the centre output pixel does not depend on the input (zero gradient everywhere)")
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return OutputField("gradient", (bottom - top + 1, right - left + 1), (h, w),
                       (int(out.shape[-2]), int(out.shape[-1])), pixel=(int(ph), int(pw)),
                       box=(top, left, bottom, right), reason=reason)


def output_field(model: nn.Module, input_size, *, method: str = "auto", seed: int = 0, device=None) -> OutputField:
    """The receptive field at the output of a dense network at ``input_size`` (C, H, W), batch 1.

    ``method``: ``"auto"`` (the layer arithmetic where it applies, else the gradient of the centre pixel),
    ``"arithmetic"`` (ValueError where it does not apply) or ``"gradient"``. See the module notes.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    c, h, w = _check_size(input_size)
    if method != "gradient":
        field, out_hw, reason, whole = arithmetic_output_field(model, (c, h, w))
        if whole:  # exact whatever resampling follows: a pooled branch reaches every output pixel
            return OutputField("arithmetic", (h, w), (h, w), out_hw, global_pool=True)
        if reason is None:
            return OutputField("arithmetic", field.rf, (h, w), out_hw, jump=field.jump)
    else:
        reason = None
    if method == "arithmetic":
        raise ValueError(f"the layer arithmetic does not apply to this network: {reason}; use method='gradient'")
    return gradient_output_field(model, (c, h, w), seed=seed, device=device,
                                 reason=reason or "asked for the gradient method")
