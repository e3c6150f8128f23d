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

Token sequences (a Vision Transformer's patches): a map flattened to (B, C, H*W) or (B, H*W, C) keeps
its field as a sequence of H*W positions, followed through ops that keep a dimension of that length
(transposes, reshapes into heads, LayerNorm, linear layers over channels, residual sums; a concatenated
class token or a sliced-off prefix changes the length). A patch token therefore sees its P x P patch
(rf P, jump P), until an op mixes positions: a product of two activations (attention's Q K^T and
A V), a matrix product whose contracted dimension is the tokens (an MLP-Mixer's token MLP), or a fused
scaled-dot-product attention kernel. After that every token sees the same pixels, the union of all
tokens' fields (``rf + (n - 1) * jump`` over the patch grid: the whole image), which mixing again does
not enlarge; so every Transformer layer reports the whole image while the tokens stay a patch apart
(jump P). Reshaping the tokens back to an H x W map makes it a map again. The rules find
the token dimension by its length, so a tensor with another dimension of the same length could be
misread; it affects the reported field only.

Fields are theoretical (they may exceed the image; padding is not subtracted), the convention of
the notes and of the usual tables (VGG-16 pool5 = 212 at a 224 input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
            lost its spatial layout (flattened features, logits, token sequences).
        tokens: for a token sequence (a map flattened to H*W positions, plus any class token), its length;
            None for anything else.
        grid: for a token sequence, the (H, W) map its patch tokens came from (for `whole`).
        shared: every token sees the same pixels (after attention has mixed them): ``rf`` is then that one
            field, which mixing the tokens again does not enlarge.
    """

    rf: tuple[int, int]
    jump: tuple[int, int]
    hw: tuple[int, int] | None
    tokens: int | None = None
    grid: tuple[int, int] | None = None
    shared: bool = False

    def whole(self) -> Field:
        """The field of an op that mixes every position of this tensor (global pool, flatten, attention)."""
        extent = self.hw or self.grid
        if extent is None:
            return self
        # the union of every position's field: shifted copies a jump apart, or one field they all share
        rf = self.rf if self.shared else tuple(r + (n - 1) * j for r, j, n in zip(self.rf, self.jump, extent))
        jump = tuple(j * n for j, n in zip(self.jump, extent))
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


def propagate(func, args, kwargs, inputs: list[Field], out: torch.Tensor,
              field_of: Callable[[object], Field | None] | None = None) -> Field | None:
    """The field of ``out`` = ``func(*args, **kwargs)``, given the fields of its traced input tensors.

    ``field_of(tensor)`` (the field of any argument, None if untraced) lets the token rules tell a product of
    two activations (attention) from a linear layer's product with its weight; without it, matrix products
    of token sequences mix positions only through a fused attention kernel.
    """
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
    seq = _sequence(func, args, inputs, out, field_of)
    if seq is not None:
        return seq
    wholes = [f.whole() for f in inputs]
    rf = tuple(max(v) for v in zip(*(f.rf for f in wholes)))
    jump = tuple(max(v) for v in zip(*(f.jump for f in wholes)))
    return Field(rf, jump, None)


# Ops that mix the positions of a token sequence whatever their operands (fused attention kernels).
_ATTENTION = {
    getattr(aten, n).default
    for n in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
              "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps",
              "_native_multi_head_attention")
    if hasattr(aten, n)
}
# Matrix products: (index of the first matrix, index of the second) in the op's arguments.
_PRODUCTS = {aten.mm.default: (0, 1), aten.bmm.default: (0, 1), aten.addmm.default: (1, 2),
             aten.baddbmm.default: (1, 2)}


def _mixes_tokens(func, args, tokens: int, field_of) -> bool:
    """Whether ``func`` mixes the positions of a token sequence of length ``tokens`` (see the module notes)."""
    if func in _ATTENTION:
        return True
    if func not in _PRODUCTS or field_of is None:
        return False
    i, j = _PRODUCTS[func]
    a, b = args[i], args[j]
    fa, fb = field_of(a), field_of(b)
    if fa is not None and fb is not None:  # activation x activation: Q K^T, A V
        return True
    # one traced operand: mixes when the product sums over its token dimension
    return (fa is not None and fa.tokens == tokens and a.shape[-1] == tokens) or (
        fb is not None and fb.tokens == tokens and b.shape[-2] == tokens)


def _sequence(func, args, inputs: list[Field], out: torch.Tensor, field_of) -> Field | None:
    """The field of ``out`` under the token-sequence rules (module notes), or None when they do not apply."""
    shape = tuple(out.shape)
    seqs = [f for f in inputs if f.tokens is not None]
    if not seqs:  # a map flattened into a sequence: (B, C, H, W) -> (B, C, H*W) or (B, H*W, C)
        maps = [f for f in inputs if f.hw is not None and f.hw[0] * f.hw[1] > 1 and len(shape) == 3
                and f.hw[0] * f.hw[1] in shape[1:]]
        if not maps:
            return None
        f = maps[0]
        return Field(f.rf, f.jump, None, tokens=f.hw[0] * f.hw[1], grid=f.hw)
    first = seqs[0]
    n, grid = first.tokens, first.grid
    if func in (aten.cat.default, aten.slice.Tensor) and field_of is not None:
        # a class token concatenated or a prefix sliced off: the sequence's length changes along that dimension
        tensors = args[0] if func is aten.cat.default else [args[0]]
        dim = args[1] if len(args) > 1 else 0
        src = next((t for t in tensors if isinstance(t, torch.Tensor) and field_of(t) is first), None)
        if src is not None and -len(shape) <= dim < len(shape) and src.shape[dim] == n:
            n = shape[dim]
    mixing = _mixes_tokens(func, args, first.tokens, field_of)
    fields = [f.whole() if mixing else f for f in inputs]
    rf = tuple(max(v) for v in zip(*(f.rf for f in fields)))
    jump = tuple(max(v) for v in zip(*(f.jump for f in seqs)))
    # after mixing every token sees the union of all fields; a sum with such a token sees it too
    shared = mixing or any(f.shared for f in seqs)
    if n > 1 and n in shape:
        return Field(rf, jump, None, tokens=n, grid=grid, shared=shared)
    hw = _hw(out)
    if hw is not None and hw[0] * hw[1] == n and len(shape) == 4:  # tokens reshaped back into a map
        return Field(rf, jump, hw)
    return None
