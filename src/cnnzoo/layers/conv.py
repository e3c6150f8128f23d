"""Conv-norm-activation, the unit most networks are built of."""

from __future__ import annotations

from torch import nn

from .activations import get_act
from .norm import get_norm

__all__ = ["ConvNormAct"]


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, with 'same' padding for odd kernels by default.

    Children are named ``conv``, ``bn``, ``act`` (absent ones are left out), so checkpoints read
    ``stem.conv.weight``, ``stem.bn.running_mean``.

    Args:
        bias: conv bias; defaults to True only when there is no norm layer.
        norm_layer: "batchnorm", a class taking channels, or None for no norm.
        act_layer: activation name/class, or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
        norm_layer="batchnorm",
        act_layer="relu",
        inplace: bool = True,
    ):
        super().__init__()
        if padding is None:
            ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = tuple(dilation * (k - 1) // 2 for k in ks)
        if bias is None:
            bias = norm_layer is None
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias)
        if norm_layer is not None:
            self.bn = get_norm(norm_layer, out_channels)
        if act_layer is not None:
            self.act = get_act(act_layer, inplace=inplace)
