"""The convolution arithmetic of the notes, as small functions to call and read.

- :func:`conv_output_size`: o = floor((W - D*(K-1) - 1 + 2P) / S) + 1 (D = 1: floor((W - K + 2P) / S) + 1).
- :func:`receptive_field` (forwards, layer by layer) and :func:`receptive_field_backward`
  (the notes' recurrence F(i) = (F(i+1) - 1) * S + K, from one output pixel back to the input).
- :func:`im2col` / :func:`col2im` and :func:`conv2d_im2col` / :func:`conv2d_im2col_backward`:
  convolution as one matrix product, with its backward through col2im (the adjoint of im2col).
- Cost identities: stacked 3x3 versus one KxK, depthwise-separable cost, MobileNet's width and
  resolution multipliers, an Inception module with and without 1x1 reductions.

References: Dumoulin & Visin, "A guide to convolution arithmetic for deep learning" (2016);
Simonyan & Zisserman 2015 (VGG, Sec. 2.3); Howard et al. 2017 (MobileNets, Sec. 3);
Szegedy et al. 2015 (GoogLeNet, Sec. 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "col2im",
    "conv2d_im2col",
    "conv2d_im2col_backward",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "depthwise_separable_macs",
    "depthwise_separable_ratio",
    "im2col",
    "inception_module_macs",
    "mobilenet_macs",
    "receptive_field",
    "receptive_field_backward",
    "stacked_conv_params",
]


def _check_positive(**values: int) -> None:
    for key, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{key} must be a positive integer, got {v!r}")


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output length of a convolution or pooling along one axis: floor((W - D(K-1) - 1 + 2P) / S) + 1.

    Args:
        size: input length W.
        kernel: kernel size K.
        stride: stride S.
        padding: zero padding P on each side.
        dilation: dilation D (the kernel then spans D*(K-1)+1 pixels).
        ceil_mode: round up instead of down (Caffe-style pooling), as PyTorch's ``ceil_mode``.

    Raises:
        ValueError: a non-positive size/kernel/stride/dilation, negative padding, or a kernel that
            does not fit the padded input (the configuration is impossible).
    """
    _check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    span = dilation * (kernel - 1) + 1
    padded = size + 2 * padding
    if span > padded:
        raise ValueError(
            f"impossible configuration: the kernel spans {span} pixels (K={kernel}, dilation={dilation}) "
            f"but the padded input has only {padded} (W={size}, padding={padding}); "
            "use a smaller kernel or more padding"
        )
    n = padded - span
    out = (-(-n // stride) if ceil_mode else n // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # PyTorch: the last window must start inside the input or left padding
    return out


def receptive_field(layers: Sequence[tuple[int, int] | tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(receptive field, jump) after each layer, forwards: rf += D(K-1) * jump; jump *= S.

    Args:
        layers: (K, S) or (K, S, D) per layer, input first.
    """
    rf, jump, out = 1, 1, []
    for layer in layers:
        k, s, d = (*layer, 1)[:3]
        _check_positive(kernel=k, stride=s, dilation=d)
        rf += d * (k - 1) * jump
        jump *= s
        out.append((rf, jump))
    return out


def receptive_field_backward(layers: Sequence[tuple[int, int] | tuple[int, int, int]], f: int = 1) -> int:
    """The notes' recurrence F(i) = (F(i+1) - 1) * S + K, from ``f`` pixels of the last layer back to the input.

    A dilated kernel (dilation D) spans D(K - 1) + 1 pixels, which takes K's place. Groups (depthwise, grouped
    convolutions) do not enter: they change which channels a kernel reads, not which pixels.

    Args:
        layers: (K, S) or (K, S, D) per layer, input first (the recurrence walks them last to first).
        f: how many neighbouring pixels of the last layer's output (1: one pixel).
    """
    _check_positive(f=f)
    for layer in reversed(list(layers)):
        k, s, d = (*layer, 1)[:3]
        _check_positive(kernel=k, stride=s, dilation=d)
        f = (f - 1) * s + d * (k - 1) + 1
    return f


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def im2col(x: torch.Tensor, kernel, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Unfold (N, C, H, W) into columns (N, C*kh*kw, L): one column per output position.

    Row ``c*kh*kw + i*kw + j`` of column ``l`` holds input pixel (c, oy*S + i*D - P, ox*S + j*D - P),
    the layout ``torch.nn.functional.unfold`` uses, so ``weight.view(O, -1) @ cols`` is the convolution.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel, stride, padding, dilation))
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    cols = x.new_empty(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            cols[:, :, i, j] = xp[:, :, y0 : y0 + sh * (oh - 1) + 1 : sh, x0 : x0 + sw * (ow - 1) + 1 : sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols: torch.Tensor, output_size, kernel, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """The adjoint of :func:`im2col`: scatter-add columns (N, C*kh*kw, L) back into (N, C, H, W).

    Overlapping windows add up, which is why col2im of the output gradient is the input gradient.
    """
    (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (output_size, kernel, stride, padding, dilation))
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    n, ckk, length = cols.shape
    if length != oh * ow or ckk % (kh * kw):
        raise ValueError(f"columns of shape {tuple(cols.shape)} do not fit a {kh}x{kw} kernel over {h}x{w}")
    c = ckk // (kh * kw)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = cols.new_zeros(n, c, h + 2 * ph, w + 2 * pw)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            xp[:, :, y0 : y0 + sh * (oh - 1) + 1 : sh, x0 : x0 + sw * (ow - 1) + 1 : sw] += cols[:, :, i, j]
    return xp[:, :, ph : ph + h, pw : pw + w]


def conv2d_im2col(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d`` as im2col followed by one matrix product per group."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if c % groups or o % groups or cg != c // groups:
        raise ValueError(f"weight {tuple(weight.shape)} with groups={groups} does not fit {c} input channels")
    (sh, sw), (ph, pw), (dh, dw) = map(_pair, (stride, padding, dilation))
    oh, ow = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
    cols = im2col(x, (kh, kw), stride, padding, dilation).view(n, groups, cg * kh * kw, oh * ow)
    wmat = weight.view(groups, o // groups, cg * kh * kw)
    out = torch.einsum("gok,ngkl->ngol", wmat, cols).reshape(n, o, oh, ow)
    return out if bias is None else out + bias.view(1, o, 1, 1)


def conv2d_im2col_backward(x, weight, grad_out, stride=1, padding=0, dilation=1, groups=1):
    """Gradients (input, weight, bias) of :func:`conv2d_im2col`, by hand: col2im for the input.

    grad_cols = W^T @ grad_out (per group), grad_input = col2im(grad_cols),
    grad_weight = grad_out @ cols^T, grad_bias = grad_out summed over batch and positions.
    """
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    length = grad_out.shape[-2] * grad_out.shape[-1]
    cols = im2col(x, (kh, kw), stride, padding, dilation).view(n, groups, cg * kh * kw, length)
    g = grad_out.reshape(n, groups, o // groups, length)
    wmat = weight.view(groups, o // groups, cg * kh * kw)
    grad_cols = torch.einsum("gok,ngol->ngkl", wmat, g).reshape(n, c * kh * kw, length)
    grad_x = col2im(grad_cols, (h, w), (kh, kw), stride, padding, dilation)
    grad_w = torch.einsum("ngol,ngkl->gok", g, cols).reshape(weight.shape)
    return grad_x, grad_w, grad_out.sum(dim=(0, 2, 3))


# --- cost identities -------------------------------------------------------------------------


def conv_params(c_in: int, c_out: int, k: int, bias: bool = False, groups: int = 1) -> int:
    """Weights of a KxK convolution (plus biases when ``bias``)."""
    return c_out * (c_in // groups) * k * k + (c_out if bias else 0)


def conv_macs(h: int, w: int, c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    """Multiply-accumulates of a KxK convolution producing an h x w x c_out map."""
    return h * w * conv_params(c_in, c_out, k, groups=groups)


def stacked_conv_params(channels: int, k: int = 3, n: int = 3) -> int:
    """Weights of ``n`` stacked KxK convs of C->C channels (no bias): n K^2 C^2.

    VGG Sec. 2.3: three 3x3 layers see 7x7 like one 7x7 layer but hold 27C^2 weights against 49C^2.
    """
    return n * conv_params(channels, channels, k)


def depthwise_separable_macs(dk: int, m: int, n: int, df: int) -> int:
    """MobileNets eq. 5: Dk^2 M Df^2 (depthwise) + M N Df^2 (pointwise), for an Df x Df output."""
    return dk * dk * m * df * df + m * n * df * df


def depthwise_separable_ratio(n: int, dk: int) -> float:
    """MobileNets eq. 5 / eq. 2: depthwise-separable cost over a standard conv's = 1/N + 1/Dk^2."""
    _check_positive(n=n, dk=dk)
    return 1 / n + 1 / dk**2


def mobilenet_macs(dk: int, m: int, n: int, df: int, alpha: float = 1.0, rho: float = 1.0) -> float:
    """MobileNets eq. 7: Dk^2 aM (rho Df)^2 + aM aN (rho Df)^2; cost falls about as alpha^2 and rho^2."""
    if not 0 < alpha <= 1 or not 0 < rho <= 1:
        raise ValueError(f"width multiplier alpha and resolution multiplier rho must be in (0, 1], got {alpha}, {rho}")
    am, an, rdf = alpha * m, alpha * n, rho * df
    return dk * dk * am * rdf * rdf + am * an * rdf * rdf


def inception_module_macs(
    h: int,
    w: int,
    c_in: int,
    n1x1: int,
    n3x3: int,
    n5x5: int,
    n3x3_reduce: int | None = None,
    n5x5_reduce: int | None = None,
    pool_proj: int | None = None,
) -> int:
    """Multiply-adds of an Inception module (GoogLeNet Fig. 2) on an h x w x c_in map, all outputs h x w.

    Without reductions (None) the 3x3 and 5x5 convs read all ``c_in`` channels and the pooling
    branch has no projection (Fig. 2a, "naive"); with them, 1x1 convs first cut the channels (Fig. 2b).
    """
    _check_positive(h=h, w=w, c_in=c_in, n1x1=n1x1, n3x3=n3x3, n5x5=n5x5)
    total = conv_macs(h, w, c_in, n1x1, 1)
    for reduce, n, k in ((n3x3_reduce, n3x3, 3), (n5x5_reduce, n5x5, 5)):
        if reduce is None:
            total += conv_macs(h, w, c_in, n, k)
        else:
            total += conv_macs(h, w, c_in, reduce, 1) + conv_macs(h, w, reduce, n, k)
    if pool_proj is not None:
        total += conv_macs(h, w, c_in, pool_proj, 1)
    return total
