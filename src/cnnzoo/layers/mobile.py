"""The efficient building blocks shared by the mobile families (MobileNet v1-v3, EfficientNet, and others).

- `make_divisible`: the channel rounding of the TF MobileNet/EfficientNet code (multiples of 8, never more than
  10% below the unrounded width), which every width multiplier in these papers goes through.
- `conv_norm_act`: `ConvNormAct` with torchvision's positional child names (``0`` conv, ``1`` norm, ``2``
  activation: the keys of torchvision's ``Conv2dNormActivation``).
- `DepthwiseSeparableConv`: MobileNet v1's unit (Howard et al. 2017, Fig. 3): depthwise 3x3 + BN + act, then
  pointwise 1x1 + BN + act. Children ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2`` as timm names them.
- `InvertedResidual`: MobileNet v2's inverted residual with linear bottleneck (Sandler et al. 2018, Fig. 3b /
  Table 1), which MobileNet v3 (Howard et al. 2019, Fig. 4) and EfficientNet's MBConv (Tan & Le 2019) extend with
  squeeze-and-excitation: expand 1x1 (left out when the expansion is 1), depthwise kxk, optional SE, project 1x1
  without activation, identity shortcut when stride 1 and widths agree, optional stochastic depth on the branch.
  Its children are torchvision's: ``block.0`` expand (or depthwise), ``block.1`` ..., ``block.N`` project, each a
  `conv_norm_act` (SE as `SEModule`: ``fc1``/``fc2``), so mobilenet_v3 and efficientnet checkpoints load as they
  are. (torchvision's MobileNetV2 names the same layers ``conv.0``, ``conv.1``, ``conv.2`` + ``conv.3``: the
  mobilenet module converts those keys; one block, one layout.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .conv import ConvNormAct
from .drop import DropPath

__all__ = ["DepthwiseSeparableConv", "InvertedResidual", "conv_norm_act", "make_divisible", "strided_feature_info"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``), bumped up
    one ``divisor`` when rounding would lose more than 10% (the rule of the TF MobileNet v2 / EfficientNet code that
    torchvision and timm copy: 32 * 0.75 = 24, 16 * 1.1 = 17.6 -> 16, 112 * 1.1 = 123.2 -> 120, 10 -> 16 with
    divisor 16)."""
    if divisor < 1:
        raise ValueError(f"divisor must be a positive integer, got {divisor}")
    if not value > 0:
        raise ValueError(f"a channel count must be positive, got {value}")
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:  # never more than 10% narrower than asked
        new += divisor
    return new


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *, groups: int = 1,
                  dilation: int = 1, norm_layer="batchnorm", act_layer="relu") -> nn.Sequential:
    """Conv2d ("same" padding, no bias) -> norm -> activation as an ``nn.Sequential`` whose children are ``0``, ``1``,
    ``2`` (torchvision's ``Conv2dNormActivation`` keys); ``act_layer=None`` leaves the activation out."""
    unit = ConvNormAct(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups,
                       norm_layer=norm_layer, act_layer=act_layer)
    return nn.Sequential(*unit.children())


class DepthwiseSeparableConv(nn.Module):
    """Depthwise separable convolution (MobileNet v1 Fig. 3 right): dw kxk-BN-act, then pw 1x1-BN-act.

    The depthwise conv filters each input channel on its own (groups = channels); the pointwise 1x1 conv mixes
    channels. Cost relative to a full kxk conv: 1/N + 1/k^2 (paper eq. 5).

    Args:
        pw_act: activation after the pointwise BN (MobileNet v1: yes; a "linear" pointwise: no).
        residual: add the input when stride 1 and in == out (MobileNet v1 has no shortcuts: False).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
                 dilation: int = 1, act_layer="relu", norm_layer="batchnorm", pw_act: bool = True,
                 residual: bool = False):
        super().__init__()
        dw = ConvNormAct(in_channels, in_channels, kernel_size, stride, dilation=dilation, groups=in_channels,
                         norm_layer=norm_layer, act_layer=act_layer)
        pw = ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer if pw_act else None)
        # timm's names: conv_dw, bn1, conv_pw, bn2 (the activations hold no weights)
        self.conv_dw, self.bn1, self.act1 = dw.conv, dw.bn, dw.act
        self.conv_pw, self.bn2 = pw.conv, pw.bn
        self.act2 = pw.act if pw_act else nn.Identity()
        self.has_residual = residual and stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_dw(x)))  # (B, C, H, W) -> (B, C, H/s, W/s): one filter per channel
        y = self.act2(self.bn2(self.conv_pw(y)))  # -> (B, C_out, H/s, W/s): 1x1 mixes the channels
        return x + y if self.has_residual else y


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (MobileNet v2 Fig. 3b); with SE it is MobileNet v3's block and
    EfficientNet's MBConv.

    Args:
        in_channels, out_channels: the narrow (bottleneck) widths at either end.
        mid_channels: the expanded width of the depthwise conv (MobileNet v2: 6 x in_channels); equal to
            in_channels means no expansion conv (torchvision leaves it out, and so do the keys).
        kernel_size, stride, dilation: of the depthwise conv.
        act_layer: activation after the expansion and the depthwise conv (the projection is linear, Sec. 3.2).
        norm_layer: norm after every conv ("batchnorm" or a factory taking channels, e.g. with another eps).
        attn_layer: a factory ``channels -> module`` applied to the expanded map after the depthwise conv
            (MobileNet v3 / EfficientNet: a `SEModule` with the family's squeeze width, activation and gate), or None.
        drop_path_rate: stochastic depth on the residual branch (EfficientNet: 0.2 x block index / blocks).
        residual: use the identity shortcut where stride is 1 and in == out (the papers: yes).
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, kernel_size: int = 3, stride: int = 1,
                 *, dilation: int = 1, act_layer="relu6", norm_layer="batchnorm",
                 attn_layer: Callable[[int], nn.Module] | None = None, drop_path_rate: float = 0.0,
                 residual: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        layers: list[nn.Module] = []
        if mid_channels != in_channels:  # 1x1 expansion to the wide map
            layers.append(conv_norm_act(in_channels, mid_channels, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers.append(conv_norm_act(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels,
                                    dilation=dilation, norm_layer=norm_layer, act_layer=act_layer))
        if attn_layer is not None:
            layers.append(attn_layer(mid_channels))
        # linear bottleneck: no activation after the projection (Sec. 3.2: ReLU would destroy information)
        layers.append(conv_norm_act(mid_channels, out_channels, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = residual and stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.use_res_connect and drop_path_rate > 0 else nn.Identity()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)  # (B, C_in, H, W) -> (B, t*C_in, H, W) -> (B, t*C_in, H/s, W/s) -> (B, C_out, H/s, W/s)
        return x + self.drop_path(y) if self.use_res_connect else y


def strided_feature_info(chain: list[tuple[str, int, int]]) -> list[dict]:
    """feature_info of a chain of modules given as (dotted name, output channels, stride): at each reduction the last
    module that produces it (the stage outputs timm reports for the mobile networks)."""
    info: list[dict] = []
    reduction = 1
    for name, channels, stride in chain:
        reduction *= stride
        level = {"num_chs": channels, "reduction": reduction, "module": name}
        if info and info[-1]["reduction"] == reduction:
            info[-1] = level
        else:
            info.append(level)
    return info
