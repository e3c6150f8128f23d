"""Blocks used by two or more families. Imports torch only."""

from .activations import HardSigmoid, HardSwish, get_act
from .attention import ATTN_LAYERS, SEModule, get_attn
from .conv import ConvNormAct
from .drop import DropPath, drop_path, drop_path_rates
from .head import ClassifierHead, global_pool
from .init import init_conv_bn
from .norm import LocalResponseNorm, get_norm

__all__ = [
    "ATTN_LAYERS",
    "ClassifierHead",
    "ConvNormAct",
    "DropPath",
    "HardSigmoid",
    "HardSwish",
    "LocalResponseNorm",
    "SEModule",
    "drop_path",
    "drop_path_rates",
    "get_act",
    "get_attn",
    "get_norm",
    "global_pool",
    "init_conv_bn",
]
