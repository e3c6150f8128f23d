"""Receptive field through any graph: a rule per aten op, applied to every tensor as it is made.

Each activation carries a :class:`Field`: its receptive-field size and jump (the distance in input
pixels between neighbouring outputs, i.e. the cumulative stride) along height and width. The
input image starts at size 1, jump 1. Then, for every op the network runs (Dumoulin & Visin 2016,
"A guide to convolution arithmetic", and Araujo et al. 2019, "Computing receptive fields of CNNs"):

- convolution / pooling with kernel K (dilation D), stride S: ``rf += (D*(K-1)) * jump``; ``jump *= S``;
- an op that keeps the spatial size (ReLU, BatchNorm, add, concat, multiply): the largest field over
  its inputs, so a residual sum or an Inception concat takes the longest path that reaches it;
- an op that mixes every position (global pooling, flatten, linear layers after that, attention
  over tokens, the spatial mean of a squeeze-and-excitation): the whole extent of its input,
  ``rf + (H - 1) * jump``, as if it were a kernel the size of the map. An SE gate multiplied back
  onto the map therefore makes every position of the block's output see the whole input, which is
  what the arithmetic says.

Fields are theoretical (they may exceed the image; padding is not subtracted), the convention of
the notes and of the usual tables (VGG-16 pool5 = 212 at a 224 input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Field", "propagate"]

aten = torch.ops.aten


@dataclass(frozen=True)
class Field:
    """Receptive field of one activation, per axis (height, width), in input pixels.

    Attributes:
        rf: receptive-field size (h, w).
        jump: cumulative stride (h, w): how far apart, in input pixels, neighbouring positions are.
        hw: the spatial size (H, W) of the tensor the field belongs to, or None once the tensor has
            lost its spatial layout (flattened features, logits).
    """

    rf: tuple[int, int]
    jump: tuple[int, int]
    hw: tuple[int, int] | None

    def whole(self) -> Field:
        """The field of an op that mixes every position of this tensor (global pool, flatten, attention)."""
        if self.hw is None:
            return self
        rf = tuple(r + (n - 1) * j for r, j, n in zip(self.rf, self.jump, self.hw))
        jump = tuple(j * n for j, n in zip(self.jump, self.hw))
        return Field(rf, jump, None)


def _pair(v, default=None) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _window(field: Field, kernel, stride, dilation, out_hw) -> Field:
    rf = tuple(r + d * (k - 1) * j for r, j, k, d in zip(field.rf, field.jump, kernel, dilation))
    jump = tuple(j * s for j, s in zip(field.jump, stride))
    return Field(rf, jump, out_hw)


_POOLS = {
    aten.max_pool2d.default,
    aten.max_pool2d_with_indices.default,
    aten.avg_pool2d.default,
}
_ADAPTIVE = {
    aten._adaptive_avg_pool2d.default,
    aten.adaptive_max_pool2d.default,
}


def _hw(t) -> tuple[int, int] | None:
    return (int(t.shape[-2]), int(t.shape[-1])) if isinstance(t, torch.Tensor) and t.ndim >= 3 else None


def propagate(func, args, kwargs, inputs: list[Field], out: torch.Tensor) -> Field | None:
    """The field of ``out`` = ``func(*args, **kwargs)``, given the fields of its traced input tensors."""
    if not inputs:
        return None
    out_hw = _hw(out)
    first = inputs[0]
    if func is aten.convolution.default and first.hw is not None:
        # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
        weight, stride, dilation, transposed = args[1], args[3], args[5], args[6]
        if weight.ndim == 4 and not transposed:
            return _window(first, tuple(weight.shape[-2:]), _pair(stride), _pair(dilation), out_hw)
        if weight.ndim == 4:  # transposed: the stride divides the jump; each output sees K/S inputs
            k, s = tuple(weight.shape[-2:]), _pair(stride)
            rf = tuple(r + math.ceil((kk - 1) / ss) * j for r, j, kk, ss in zip(first.rf, first.jump, k, s))
            jump = tuple(max(1, j // ss) for j, ss in zip(first.jump, s))
            return Field(rf, jump, out_hw)
    if func in _POOLS and first.hw is not None:
        kernel = _pair(args[1])
        stride = _pair(args[2] if len(args) > 2 else None, kernel)
        dilation = _pair(args[4] if len(args) > 4 and func is not aten.avg_pool2d.default else 1)
        return _window(first, kernel, stride, dilation, out_hw)
    if func in _ADAPTIVE and first.hw is not None and out_hw is not None:
        if out_hw == first.hw:
            return first
        # adaptive window i/o: the widest window is ceil(i/o), the step floor(i/o) (PyTorch's AdaptiveAvgPool)
        kernel = tuple(math.ceil(i / o) for i, o in zip(first.hw, out_hw))
        stride = tuple(max(1, i // o) for i, o in zip(first.hw, out_hw))
        field = _window(first, kernel, stride, (1, 1), out_hw)
        return field if out_hw != (1, 1) else Field(field.rf, field.jump, None)
    # Everything else: positions kept -> largest field over the inputs; positions mixed -> whole extent.
    spatial = [f for f in inputs if f.hw is not None and f.hw == out_hw]
    if spatial and out_hw is not None:
        rest = [f.rf for f in inputs if f not in spatial]
        rf = tuple(max(v) for v in zip(*(f.rf for f in spatial), *rest))
        jump = tuple(max(v) for v in zip(*(f.jump for f in spatial)))
        return Field(rf, jump, out_hw)
    wholes = [f.whole() for f in inputs]
    rf = tuple(max(v) for v in zip(*(f.rf for f in wholes)))
    jump = tuple(max(v) for v in zip(*(f.jump for f in wholes)))
    return Field(rf, jump, None)
