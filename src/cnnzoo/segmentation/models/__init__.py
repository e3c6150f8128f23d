"""Segmentation networks; every module here is imported by `cnnzoo.segmentation.registry` and registers itself."""

from .base import Segmenter
from .unet import UNet, center_crop

__all__ = ["Segmenter", "UNet", "center_crop"]
