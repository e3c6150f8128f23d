"""ResNet. He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv 2015).
https://arxiv.org/abs/1512.03385

Also here, as options or registered variants of the same network: Wide ResNet (Zagoruyko &
Komodakis 2016), ResNeXt (Xie et al. 2017), SE-ResNet/SE-ResNeXt (Hu et al. 2018), CBAM-ResNet
(Woo et al. 2018), ECA-ResNet (Wang et al. 2020); each registered name's card cites its own paper.

Key ideas
    Deeper plain networks train *worse* (higher training error, Fig. 1 and Fig. 4 left): the
    degradation problem, which is an optimisation problem, not overfitting. Letting each block
    learn a residual F(x) and output F(x) + x (Fig. 2) makes the identity easy to represent, so
    depth helps again (Fig. 4 right, Table 2). Shortcuts are parameter-free identities where the
    shapes agree; where a stage halves the resolution and doubles the channels the paper compares
    (Sec. 3.3 / Table 3) (A) zero-padding the extra channels of a stride-2 identity, (B) 1x1
    projections only there, (C) projections on every block: B is a bit better than A, C only
    marginally better than B, so B is the default. The bottleneck block (1x1 reduce, 3x3, 1x1
    expand x4; Fig. 5 right) makes 50/101/152 layers affordable.

Which table the code reproduces
    Table 1 (the 18/34/50/101/152-layer architectures: 7x7/2 conv, 3x3/2 max-pool, four stages
    of [3,4,6,3] / [3,4,23,3] / [3,8,36,3] blocks, global average pool, 1000-way fc) and Fig. 4
    (plain-18/34, the same nets without shortcuts). Parameter counts equal torchvision's.

Training setup in the paper
    Sec. 3.4: scale augmentation (shorter side in [256, 480]), 224 crops, flips, per-pixel mean
    subtraction, colour augmentation; BN after every conv, before the activation; He init; SGD,
    batch 256, lr 0.1 divided by 10 when the error plateaus, 60e4 iterations, weight decay 1e-4,
    momentum 0.9, no dropout. Test: 10-crop, or fully-convolutional multi-scale.

This implementation
    Key names and the layout are torchvision's (conv1, bn1, layer1..layer4 with conv1/bn1/...,
    downsample.0/1, fc), so torchvision checkpoints load directly. Like torchvision, the default
    bottleneck puts the stride-2 on its 3x3 conv ("ResNet v1.5"; ~0.5% better top-1 per NVIDIA's
    DeepLearningExamples notes), 4.09 instead of 3.86 GMACs for ResNet-50. ``stride_in_1x1=True``
    is the paper's v1 (stride on the first 1x1 conv; the same parameters; 3.86 GMACs, Table 1's
    "3.8 x 10^9 FLOPs").

    Options: ``shortcut`` "A" (parameter-free identity, stride-2 subsampling, zero-filled new
    channels), "B" (default), "C", or "none" (the plain networks of Fig. 4; ``plain18``/
    ``plain34``); ``zero_init_last`` sets the last BN gamma of every residual branch to 0
    so each block starts as identity + ReLU (Goyal et al. 2017, "Accurate, Large Minibatch SGD",
    Sec. 5.1: helps large-batch training; torchvision calls it ``zero_init_residual``, timm
    ``zero_init_last``, the name every cnnzoo family uses);
    ``groups``/``width_per_group`` give ResNeXt (cardinality x bottleneck width, Xie et al.
    Table 1) and Wide ResNet-50/101-2 (the bottleneck 3x3 twice as wide: width_per_group=128,
    torchvision's definition); ``attn_layer`` "se"/"cbam"/"eca" puts an attention module on the
    residual branch after its last BN, before the addition (SENet Fig. 3, CBAM Fig. 3, ECA Fig.
    2); the module is called ``se`` as in timm's ResNet, so timm's native ``seresnet50`` and
    ``seresnext50_32x4d`` checkpoints (torchvision keys + ``layerX.Y.se.fc1/fc2``) load directly;
    ``drop_path_rate`` adds stochastic depth (Huang et al. 2016) with a rate growing linearly
    from 0 over the blocks to the given value; ``drop_rate`` is dropout before the fc (0 in the
    paper); ``stem_pool="ceil"`` is the Caffe models' max-pool (3x3/2 without padding, rounding
    up: the same 56x56 output at 224 but shifted windows), needed for the released SENet weights
    (timm's ``legacy_seresnet50``/``legacy_seresnext50_32x4d``); the default is torchvision's. Weights: He (fan-out) normal for convs, BN gamma 1 / beta 0, PyTorch's default for the
    fc, as torchvision.
    ``output_stride`` 16 or 8 (default 32) gives the dilated backbones of DeepLab and PSPNet (DeepLab v3, Chen et al.
    2017, Sec. 3.2): the stride 2 of the last stage (16) or of the last two (8) becomes 1 and their 3x3 convs dilate
    by 2 (and 4), keeping the receptive field while the map stays at 1/16 or 1/8; torchvision's
    ``replace_stride_with_dilation`` [False, False, True] / [False, True, True], with its rule that the first block
    of a dilated stage keeps the previous dilation. No parameter changes (checkpoints load); ``feature_info``'s
    reductions follow. BasicBlock dilates too (timm's rule; torchvision refuses dilation there).

    ``seresnet50``: Hu et al. place the stride on the first 1x1 conv (the released Caffe model,
    3.87 GMACs in Table 2), so its default is ``stride_in_1x1=True``; timm's native seresnet50 is
    the v1.5 variant (``stride_in_1x1=False``). ``seresnext50_32x4d`` has the stride on the 3x3
    as the released model (4.25 GMACs). ``cbam_resnet50``: the paper's 3.864 GFLOPs (Table 4,
    multiply-adds) is v1's count (ours: 3.864 GMACs with ``stride_in_1x1=True``, 4.096 with the
    stride on the 3x3; tests/test_model_resnet.py computes both), so the default is v1, although the
    authors' code (Jongchan/attention-module) builds on torchvision's v1.5 block. Its spatial
    attention has no BN (the paper's eq. 3; the authors' code adds one). ``eca_resnet50``: the
    kernel size follows the adaptive rule (eq. 12) from each block's output channels: 5, 5, 5, 7
    per stage, 86 attention weights; the authors' released model was trained with the sizes
    3, 5, 5, 7 given by hand (README, ``--ksize 3557``; 80 weights). Its stride is v1 as well: the
    paper's 3.86 GFLOPs is v1's count (ours 3.858 GMACs; 4.089 with the stride on the 3x3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DropPath, drop_path_rates, get_act, get_attn, get_norm, init_conv_bn
from ..registry import Counterpart, Paper, register_model
from .base import ZooModel

__all__ = ["SHORTCUTS", "BasicBlock", "Bottleneck", "ResNet", "ShortcutA", "init_resnet", "make_shortcut"]

RESNET = Paper(
    "Deep Residual Learning for Image Recognition",
    "K. He, X. Zhang, S. Ren, J. Sun",
    2016,
    "https://arxiv.org/abs/1512.03385",
)
WRN = Paper("Wide Residual Networks", "S. Zagoruyko, N. Komodakis", 2016, "https://arxiv.org/abs/1605.07146")
RESNEXT = Paper(
    "Aggregated Residual Transformations for Deep Neural Networks",
    "S. Xie, R. Girshick, P. Dollar, Z. Tu, K. He",
    2017,
    "https://arxiv.org/abs/1611.05431",
)
SENET = Paper(
    "Squeeze-and-Excitation Networks",
    "J. Hu, L. Shen, S. Albanie, G. Sun, E. Wu",
    2018,
    "https://arxiv.org/abs/1709.01507",
)
CBAM = Paper(
    "CBAM: Convolutional Block Attention Module",
    "S. Woo, J. Park, J.-Y. Lee, I. S. Kweon",
    2018,
    "https://arxiv.org/abs/1807.06521",
)
ECA = Paper(
    "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    "Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu",
    2020,
    "https://arxiv.org/abs/1910.03151",
)

#: Shortcut options (paper Sec. 3.3): A zero-pad identity, B project where the shape changes, C project
#: everywhere; "none" removes the shortcut (the plain nets of Fig. 4 and of the CIFAR Fig. 6).
SHORTCUTS = ("A", "B", "C", "none")


class ShortcutA(nn.Module):
    """Option A: identity with stride-s subsampling, the extra output channels filled with zeros (no parameters).

    The new channels come after the identity ones, as in fb.resnet.torch's CIFAR shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"shortcut A cannot reduce channels ({in_channels} -> {out_channels}); use 'B' or 'C'")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]  # (B, C, H, W) -> (B, C, ceil(H/s), ceil(W/s))
        pad = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x  # zeros for the new channels

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


def make_shortcut(
    in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "B", norm_layer="batchnorm"
) -> nn.Module | None:
    """The shortcut of a residual block: None for a plain identity, a module where one is needed.

    Returns ``nn.Sequential(conv1x1, norm)`` (torchvision's ``downsample.0/1``) for projections,
    :class:`ShortcutA` for option A where the shape changes, None where the identity fits (and for
    "none", which the block itself treats as 'no shortcut at all').
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; valid: {', '.join(map(repr, SHORTCUTS))}")
    changes = stride != 1 or in_channels != out_channels
    if shortcut == "none" or (shortcut in ("A", "B") and not changes):
        return None
    if shortcut == "A":
        return ShortcutA(in_channels, out_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), get_norm(norm_layer, out_channels)
    )


class _ResidualBlock(nn.Module):
    """Shared tail: attention on the branch, drop path, shortcut addition, activation.

    The attention module is stored as ``se`` whatever its kind (timm's ResNet keys ``layerX.Y.se.*``);
    ``attn_key`` names it otherwise (the CIFAR ResNet and ResNeXt-29 store it as ``attn``).
    """

    expansion = 1
    out_channels: int

    def _init_tail(
        self,
        in_channels: int,
        stride: int,
        shortcut: str,
        downsample: nn.Module | None | str,
        attn_layer,
        drop_path: float,
        norm_layer,
        act_layer,
        attn_key: str,
    ) -> None:
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid: {', '.join(map(repr, SHORTCUTS))}")
        attn = get_attn(attn_layer)
        self.attn_key = attn_key
        self.add_module(attn_key, attn(self.out_channels) if attn is not None else nn.Identity())
        self.residual = shortcut != "none"
        if downsample == "auto":
            downsample = make_shortcut(in_channels, self.out_channels, stride, shortcut, norm_layer)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path)
        self.act = get_act(act_layer, inplace=True)

    def last_norm(self) -> nn.Module:
        raise NotImplementedError

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma: the branch outputs 0 and the block starts as identity + activation."""
        norm = self.last_norm()
        if getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(getattr(self, self.attn_key)(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act(out)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (Fig. 5 left), for ResNet-18/34.

    Args:
        in_channels: input channels.
        channels: output channels (``expansion`` = 1).
        stride: stride of the first 3x3 conv.
        shortcut: "A", "B", "C" or "none" (see :func:`make_shortcut`); ignored when ``downsample`` is given.
        downsample: an explicit shortcut module (or None for identity); "auto" builds it from ``shortcut``.
        groups, base_width: must be 1 and 64 (kept for a common signature with :class:`Bottleneck`).
        dilation: dilation (and padding) of the second 3x3 conv, and of the first unless ``first_dilation`` is given.
        first_dilation: dilation of the first 3x3 conv (the previous stage's, in the first block of a dilated stage;
            timm's BasicBlock, as torchvision's has no dilation).
        attn_layer: None, "se", "cbam", "eca" or a factory ``channels -> module``; on the branch before the sum.
        drop_path: stochastic-depth rate of this block.
        norm_layer, act_layer: a name or a class (``get_norm`` / ``get_act``).
        attn_key: the attribute the attention module is stored under: "se" (timm's key) or, in the CIFAR nets, "attn".
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        downsample: nn.Module | None | str = "auto",
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        attn_layer=None,
        drop_path: float = 0.0,
        norm_layer="batchnorm",
        act_layer="relu",
        attn_key: str = "se",
    ):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock supports only groups=1, base_width=64, got {groups}, {base_width}")
        self.out_channels = channels
        d1 = first_dilation or dilation
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, d1, dilation=d1, bias=False)
        self.bn1 = get_norm(norm_layer, channels)
        self.act1 = get_act(act_layer, inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = get_norm(norm_layer, channels)
        self._init_tail(
            in_channels, stride, shortcut, downsample, attn_layer, drop_path, norm_layer, act_layer, attn_key
        )

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))  # (B, Cin, H, W) -> (B, C, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self._finish(out, x)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4) (Fig. 5 right), for ResNet-50/101/152, ResNeXt, Wide ResNet.

    The 3x3 has ``int(channels * base_width / 64) * groups`` channels (torchvision's ResNeXt/WRN rule).

    Args:
        stride_in_1x1: put the stride on the first 1x1 conv (the paper's v1) instead of the 3x3 (v1.5).
        dilation, first_dilation: the 3x3 conv's dilation is ``first_dilation`` when given, else ``dilation``
            (torchvision passes the previous stage's dilation to the first block of a dilated stage).
        Others: as :class:`BasicBlock`.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        downsample: nn.Module | None | str = "auto",
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        dilation: int = 1,
        first_dilation: int | None = None,
        attn_layer=None,
        drop_path: float = 0.0,
        norm_layer="batchnorm",
        act_layer="relu",
        attn_key: str = "se",
    ):
        super().__init__()
        width = int(channels * (base_width / 64.0)) * groups
        self.out_channels = channels * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, s1, bias=False)
        self.bn1 = get_norm(norm_layer, width)
        self.act1 = get_act(act_layer, inplace=True)
        d = first_dilation or dilation
        self.conv2 = nn.Conv2d(width, width, 3, s3, d, dilation=d, groups=groups, bias=False)
        self.bn2 = get_norm(norm_layer, width)
        self.act2 = get_act(act_layer, inplace=True)
        self.conv3 = nn.Conv2d(width, self.out_channels, 1, bias=False)
        self.bn3 = get_norm(norm_layer, self.out_channels)
        self._init_tail(
            in_channels, stride, shortcut, downsample, attn_layer, drop_path, norm_layer, act_layer, attn_key
        )

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))  # (B, Cin, H, W) -> (B, w, H, W) (H/s in v1)
        out = self.act2(self.bn2(self.conv2(out)))  # -> (B, w, H/s, W/s)
        out = self.bn3(self.conv3(out))  # -> (B, 4C, H/s, W/s)
        return self._finish(out, x)


def init_resnet(model: nn.Module, zero_init_last: bool = False) -> None:
    """He et al. 2015 normal init (fan-out) for convs, BN to (1, 0), as torchvision; ``zero_init_last`` then zeroes
    the last BN gamma of every block that has a shortcut, so each starts as its shortcut (Goyal et al. 2017, 5.1)."""
    init_conv_bn(model)
    if zero_init_last:
        for m in model.modules():
            if isinstance(m, _ResidualBlock) and m.residual:
                m.zero_init_last()


BLOCKS: dict[str, type[_ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
#: "pad": torchvision's 3x3/2 max-pool with padding 1; "ceil": the Caffe models' (no padding, ceil mode).
STEM_POOLS = ("pad", "ceil")
#: ResNet's output_stride: 32 (the paper) or the dilated backbones of DeepLab/PSPNet.
OUTPUT_STRIDES = (8, 16, 32)


class ResNet(ZooModel):
    """ResNet of Table 1 in torchvision's layout, with the options of the module notes.

    Args:
        block: "basic" (18/34) or "bottleneck" (50/101/152).
        layers: blocks per stage (conv2_x..conv5_x of Table 1).
        groups, width_per_group: ResNeXt cardinality and per-group width; WRN-50-2 is width_per_group=128.
        stride_in_1x1: the paper's v1 bottleneck (stride on the first 1x1) instead of torchvision's v1.5.
        shortcut: "A", "B" (default), "C", or "none" for a plain network.
        zero_init_last: zero the last BN gamma of every residual branch (torchvision's ``zero_init_residual``).
        attn_layer: None, "se", "cbam" or "eca" on every residual branch.
        drop_rate: dropout before the fc.
        drop_path_rate: stochastic depth; block i of n gets rate * i / (n - 1).
        stem_pool: "pad" (torchvision) or "ceil" (the released Caffe models: timm's ``legacy_se*``).
        output_stride: 32 (the paper), 16 or 8: the last stage(s) keep their resolution, their stride 2 replaced by
            dilation 2 (and 4), as DeepLab and PSPNet use (torchvision's ``replace_stride_with_dilation``
            [False, False, True] for 16, [False, True, True] for 8). No parameter changes, so weights load.
    """

    # A 1x1 input survives every stride-2 layer (padding keeps each output at >= 1 pixel).
    min_input_size = 1

    def __init__(
        self,
        block: str = "bottleneck",
        layers: tuple[int, ...] = (3, 4, 6, 3),
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        shortcut: str = "B",
        zero_init_last: bool = False,
        attn_layer: str | Callable[[int], nn.Module] | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        stem_pool: str = "pad",
        output_stride: Literal[8, 16, 32] = 32,
        norm_layer="batchnorm",
        act_layer="relu",
    ):
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))} (the last stages "
                             f"dilated instead of strided), got {output_stride!r}")
        if stem_pool not in STEM_POOLS:
            raise ValueError(f"unknown stem_pool {stem_pool!r}; valid: {', '.join(map(repr, STEM_POOLS))}")
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; valid: {', '.join(map(repr, BLOCKS))}")
        if len(layers) != 4 or any(not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive integers (blocks per stage), got {layers!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid: {', '.join(map(repr, SHORTCUTS))}")
        if groups < 1 or width_per_group < 1:
            raise ValueError(f"groups and width_per_group must be >= 1, got {groups}, {width_per_group}")
        if block == "basic" and (groups != 1 or width_per_group != 64 or stride_in_1x1):
            raise ValueError("groups, width_per_group and stride_in_1x1 apply to the bottleneck block only")
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate}, {drop_path_rate}")
        get_attn(attn_layer)  # validates the name before anything is built
        block_cls = BLOCKS[block]
        self.num_classes, self.in_channels = num_classes, in_channels

        # Table 1 "conv1" and the 3x3/2 max-pool of conv2_x.
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = get_norm(norm_layer, 64)
        self.relu = get_act(act_layer, inplace=True)
        if stem_pool == "pad":
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:  # Caffe's pooling rounds up and pads nothing; its 3x3 window needs conv1 output >= 3 (input >= 5)
            self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)
            self.min_input_size = 5

        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        opts = {"shortcut": shortcut, "attn_layer": attn_layer, "norm_layer": norm_layer, "act_layer": act_layer}
        if block == "bottleneck":
            opts.update(groups=groups, base_width=width_per_group, stride_in_1x1=stride_in_1x1)
        c_in, self.feature_info = 64, []
        net_stride, dilation = 4, 1
        # Table 1: stages conv2_x..conv5_x with 64/128/256/512 base channels, the first at stride 1.
        for i, (channels, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride, first_dilation = (1 if i == 0 else 2), dilation
            if stride > 1 and net_stride >= output_stride:
                # atrous instead of strided (DeepLab v3, Chen et al. 2017, Sec. 3.2 "output_stride"), as torchvision's
                # _make_layer(dilate=True): stride 1, dilation x 2; the stage's first block keeps the previous
                # dilation on its 3x3 (torchvision and timm alike)
                stride, dilation = 1, dilation * stride
            net_stride *= stride
            blocks = []
            for j in range(n):
                blocks.append(block_cls(c_in, channels, stride if j == 0 else 1, drop_path=next(rates),
                                        dilation=dilation, first_dilation=first_dilation if j == 0 else dilation,
                                        **opts))
                c_in = blocks[-1].out_channels
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": c_in, "reduction": net_stride, "module": f"layer{i + 1}"})
        self.output_stride = output_stride
        self.num_features = c_in
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(c_in, num_classes) if num_classes > 0 else nn.Identity()
        init_resnet(self, zero_init_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 3, H, W) -> (B, 64, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # -> (B, num_features, H/32, W/32) (H/output_stride)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean((2, 3)))  # global average pool
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.fc = fc.to(self.conv1.weight.device)


def _resnet(block: str, layers: tuple[int, ...], defaults: dict, kwargs: dict) -> ResNet:
    return ResNet(**{"block": block, "layers": layers, **defaults, **kwargs})


TV = "torchvision"


@register_model(ResNet, paper=RESNET, input_size=(3, 224, 224), counterparts={TV: "resnet18"})
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (Table 1, basic blocks)."""
    return _resnet("basic", (2, 2, 2, 2), {}, kwargs)


@register_model(ResNet, paper=RESNET, input_size=(3, 224, 224), counterparts={TV: "resnet34"})
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (Table 1, basic blocks)."""
    return _resnet("basic", (3, 4, 6, 3), {}, kwargs)


_V15 = ("stride 2 on the bottleneck's 3x3 (torchvision's v1.5); stride_in_1x1=True gives the paper's v1",)
# Card recipe of the bottleneck networks: the paper's lr 0.1 for 256 images (Sec. 3.4) scaled linearly (Goyal et al.
# 2017) to the mnist5k recipe's batch of 64 is 0.025. At the recipe's 0.03-0.05 resnet50 and seresnet50 blow up on mnist5k
# (train loss 7.8 and 3.6, 19.0% and 23.4% after 60 steps at 64 px); at 0.0125 seresnet50 reaches 78.8% (0.01: 78.1%).
_BOTTLENECK_RECIPE = {"optim.lr": 0.0125}
# The deepest and widest ones also start each residual branch at zero (``zero_init_last``: the last BN's gamma = 0,
# Goyal et al. 2017, Sec. 5.1), so the network starts as its shortcuts and trains like a shallow one at first; the
# model itself keeps the paper's init (create_model gives it), only `cnnzoo train` applies the hint. Measured on
# mnist5k at the zoo sweep's budget (32 px, seed 0): resnet101 (39 steps) 12.0% -> 74.5%, resnet152 (23 steps)
# 10.1% -> 61.9%, wide_resnet50_2 (23 steps) 10.5% -> 47.6%; resnext101_32x8d (16 px, 60 steps) 18.2% -> 57.6%.
# They also re-estimate their BN statistics before each evaluation (``train.precise_bn``, 16 batches): in a run of a
# few steps the running statistics (an average of the last ~10 batches) lag the moving weights, and through 100
# layers the mismatch leaves eval mode at chance while the training loss falls. At the sweep's budget (32 px, seed 0):
# resnext101_32x8d (20 steps) 10.8% (train loss 1.73) -> 66.6%, resnext101_64x4d (20) 10.6% -> 65.4%,
# wide_resnet101_2 (20) 37.3% -> 64.1%, wide_resnet50_2 (23) 47.6% -> 71.7%, resnet152 (23) 61.9% -> 66.8%,
# resnet101 (39) 74.5% -> 73.9%.
_DEEP_BOTTLENECK_RECIPE = {**_BOTTLENECK_RECIPE, "model.options.zero_init_last": True, "train.precise_bn": 16}


@register_model(
    ResNet, paper=RESNET, input_size=(3, 224, 224), counterparts={TV: "resnet50"}, deviations=_V15,
    recipe=_BOTTLENECK_RECIPE,
)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (Table 1, bottlenecks), torchvision v1.5."""
    return _resnet("bottleneck", (3, 4, 6, 3), {}, kwargs)


@register_model(
    ResNet, paper=RESNET, input_size=(3, 224, 224), counterparts={TV: "resnet101"}, deviations=_V15,
    recipe=_DEEP_BOTTLENECK_RECIPE,
)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (Table 1, bottlenecks), torchvision v1.5."""
    return _resnet("bottleneck", (3, 4, 23, 3), {}, kwargs)


@register_model(
    ResNet, paper=RESNET, input_size=(3, 224, 224), counterparts={TV: "resnet152"}, deviations=_V15,
    recipe=_DEEP_BOTTLENECK_RECIPE,
)
def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (Table 1, bottlenecks), torchvision v1.5."""
    return _resnet("bottleneck", (3, 8, 36, 3), {}, kwargs)


@register_model(ResNet, paper=RESNET, input_size=(3, 224, 224))
def plain18(**kwargs) -> ResNet:
    """Plain-18: ResNet-18 without shortcuts (Fig. 4 left, the degradation experiment)."""
    return _resnet("basic", (2, 2, 2, 2), {"shortcut": "none"}, kwargs)


# Plain-34 is the paper's example of the degradation problem (Fig. 4 left: higher training error than plain-18 all
# through training); it has no recipe hint, so that it and resnet34 compare under the same recipe.
_PLAIN34_SHORT = ("short budget: plain-34 is the paper's degradation example (Fig. 4: a 34-layer stack without "
                  "shortcuts optimises worse than 18 layers): on 32-px digits (seed 0) the zoo sweep's 60 SGD steps "
                  "leave it at 15.6% and 3 epochs (186 steps) at 16.8% (train loss 2.24), while plain18 reaches "
                  "81.1% and resnet34 63.5% in the 60 steps; Adam at 1e-3 gives 26.2% in 60 steps. It needs many "
                  "epochs (the paper trains for 600k iterations of 256 images, about 120 ImageNet epochs)")


@register_model(ResNet, paper=RESNET, input_size=(3, 224, 224), deviations=(_PLAIN34_SHORT,))
def plain34(**kwargs) -> ResNet:
    """Plain-34: ResNet-34 without shortcuts (Fig. 4 left, the degradation experiment)."""
    return _resnet("basic", (3, 4, 6, 3), {"shortcut": "none"}, kwargs)


_WRN = ("torchvision's ImageNet WRN: bottleneck 3x3 width doubled (width_per_group=128)",) + _V15


@register_model(
    ResNet, paper=WRN, input_size=(3, 224, 224), counterparts={TV: "wide_resnet50_2"}, deviations=_WRN,
    recipe=_DEEP_BOTTLENECK_RECIPE,
)
def wide_resnet50_2(**kwargs) -> ResNet:
    """Wide ResNet-50-2 (torchvision's definition)."""
    return _resnet("bottleneck", (3, 4, 6, 3), {"width_per_group": 128}, kwargs)


@register_model(
    ResNet, paper=WRN, input_size=(3, 224, 224), counterparts={TV: "wide_resnet101_2"}, deviations=_WRN,
    recipe=_DEEP_BOTTLENECK_RECIPE,
)
def wide_resnet101_2(**kwargs) -> ResNet:
    """Wide ResNet-101-2 (torchvision's definition)."""
    return _resnet("bottleneck", (3, 4, 23, 3), {"width_per_group": 128}, kwargs)


@register_model(
    ResNet, paper=RESNEXT, input_size=(3, 224, 224), counterparts={TV: "resnext50_32x4d"}, deviations=_V15,
    recipe=_BOTTLENECK_RECIPE,
)
def resnext50_32x4d(**kwargs) -> ResNet:
    """ResNeXt-50 32x4d (Xie et al. Table 1, grouped-conv form c)."""
    return _resnet("bottleneck", (3, 4, 6, 3), {"groups": 32, "width_per_group": 4}, kwargs)


@register_model(
    ResNet, paper=RESNEXT, input_size=(3, 224, 224), counterparts={TV: "resnext101_32x8d"},
    deviations=_V15,
    recipe=_DEEP_BOTTLENECK_RECIPE,
)
def resnext101_32x8d(**kwargs) -> ResNet:
    """ResNeXt-101 32x8d (grouped-conv form)."""
    return _resnet("bottleneck", (3, 4, 23, 3), {"groups": 32, "width_per_group": 8}, kwargs)


@register_model(
    ResNet, paper=RESNEXT, input_size=(3, 224, 224), counterparts={TV: "resnext101_64x4d"},
    deviations=_V15,
    recipe=_DEEP_BOTTLENECK_RECIPE,
)
def resnext101_64x4d(**kwargs) -> ResNet:
    """ResNeXt-101 64x4d (grouped-conv form)."""
    return _resnet("bottleneck", (3, 4, 23, 3), {"groups": 64, "width_per_group": 4}, kwargs)


@register_model(
    ResNet,
    paper=SENET,
    input_size=(3, 224, 224),
    counterparts=(
        # The released Caffe model (timm's legacy_*): stride in the 1x1 as here, stem max-pool in ceil mode.
        Counterpart("timm", "legacy_seresnet50", {"stem_pool": "ceil", "stride_in_1x1": True},
                    marker="layer0.conv1.weight"),
        # timm's own re-trained seresnet50 is v1.5 (stride in the 3x3) with torchvision's padded stem pool.
        Counterpart("timm", "seresnet50", {"stem_pool": "pad", "stride_in_1x1": False}, marker="conv1.weight"),
    ),
    deviations=(("timm's native seresnet50 is the v1.5 variant (stride_in_1x1=False); its legacy_seresnet50 pools "
                 "the stem in ceil mode (stem_pool='ceil'): weights= applies either from the file"),),
    recipe=_BOTTLENECK_RECIPE,
)
def seresnet50(**kwargs) -> ResNet:
    """SE-ResNet-50 (Hu et al.): v1 stride as the released Caffe model, SE r=16 before the addition."""
    return _resnet("bottleneck", (3, 4, 6, 3), {"attn_layer": "se", "stride_in_1x1": True}, kwargs)


@register_model(
    ResNet,
    paper=SENET,
    input_size=(3, 224, 224),
    counterparts=(
        Counterpart("timm", "legacy_seresnext50_32x4d", {"stem_pool": "ceil"}, marker="layer0.conv1.weight"),
        Counterpart("timm", "seresnext50_32x4d", {"stem_pool": "pad"}, marker="conv1.weight"),
    ),
    recipe=_BOTTLENECK_RECIPE,
)
def seresnext50_32x4d(**kwargs) -> ResNet:
    """SE-ResNeXt-50 32x4d (Hu et al.), stride on the 3x3 as the released model."""
    return _resnet("bottleneck", (3, 4, 6, 3), {"groups": 32, "width_per_group": 4, "attn_layer": "se"}, kwargs)


@register_model(
    ResNet,
    paper=CBAM,
    input_size=(3, 224, 224),
    deviations=(
        "spatial attention without the BN the authors' code adds (paper eq. 3)",
        "stride on the first 1x1 (v1, the paper's 3.864 GFLOPs); the authors' code uses v1.5",
    ),
    recipe=_BOTTLENECK_RECIPE,
)
def cbam_resnet50(**kwargs) -> ResNet:
    """CBAM-ResNet-50 (Woo et al.): channel (r=16) then 7x7 spatial attention on every bottleneck."""
    return _resnet("bottleneck", (3, 4, 6, 3), {"attn_layer": "cbam", "stride_in_1x1": True}, kwargs)


@register_model(
    ResNet,
    paper=ECA,
    input_size=(3, 224, 224),
    deviations=("adaptive kernel sizes 5,5,5,7 (eq. 12) where the released model used 3,5,5,7",),
    recipe=_BOTTLENECK_RECIPE,
)
def eca_resnet50(**kwargs) -> ResNet:
    """ECA-ResNet-50 (Wang et al.): adaptive-size 1-D channel conv on every bottleneck, v1 stride."""
    return _resnet("bottleneck", (3, 4, 6, 3), {"attn_layer": "eca", "stride_in_1x1": True}, kwargs)
