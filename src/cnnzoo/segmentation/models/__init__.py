"""Segmentation networks; every module here is imported by `cnnzoo.segmentation.registry` and registers itself."""

from .base import Segmenter
from .fcn import FCN  # noqa: F401  (registers fcn32s/16s/8s_vgg16)
from .unet import UNet, center_crop

__all__ = ["Segmenter", "UNet", "center_crop"]
