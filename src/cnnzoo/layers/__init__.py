"""Blocks used by two or more families. Imports torch only."""

from .activations import HardSigmoid, HardSigmoidKeras, HardSwish, get_act
from .attention import ATTN_LAYERS, SEModule, get_attn
from .conv import ConvNormAct
from .drop import DropPath, drop_path, drop_path_rates
from .head import ClassifierHead, global_pool
from .init import init_classifier_uniform, init_conv_bn
from .mobile import DepthwiseSeparableConv, InvertedResidual, conv_norm_act, make_divisible, strided_feature_info
from .norm import FreshBatchNorm2d, LocalResponseNorm, get_norm
from .shuffle import ChannelShuffle, channel_shuffle
from .transformer import (
    Mlp,
    MultiHeadAttention,
    TransformerEncoderLayer,
    resample_pos_embed,
    scaled_dot_product_attention,
    sinusoidal_position_encoding,
)

__all__ = [
    "ATTN_LAYERS",
    "ChannelShuffle",
    "ClassifierHead",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "DropPath",
    "FreshBatchNorm2d",
    "HardSigmoid",
    "HardSigmoidKeras",
    "HardSwish",
    "InvertedResidual",
    "LocalResponseNorm",
    "Mlp",
    "MultiHeadAttention",
    "SEModule",
    "TransformerEncoderLayer",
    "channel_shuffle",
    "conv_norm_act",
    "drop_path",
    "drop_path_rates",
    "get_act",
    "get_attn",
    "get_norm",
    "global_pool",
    "init_classifier_uniform",
    "init_conv_bn",
    "make_divisible",
    "resample_pos_embed",
    "scaled_dot_product_attention",
    "sinusoidal_position_encoding",
    "strided_feature_info",
]
