"""Segmentation networks; every module here is imported by `cnnzoo.segmentation.registry` and registers itself."""

from .base import Segmenter
from .deconvnet import DeconvNet  # noqa: F401  (registers deconvnet_vgg16)
from .deeplabv3 import DeepLabV3  # noqa: F401  (registers deeplabv3_resnet50/101, torchvision's)
from .fcn import FCN  # noqa: F401  (registers fcn32s/16s/8s_vgg16)
from .fcn_resnet import FCNResNet  # noqa: F401  (registers fcn_resnet50/101, torchvision's)
from .segnet import SegNet  # noqa: F401  (registers segnet_vgg16)
from .unet import UNet, center_crop

__all__ = ["Segmenter", "UNet", "center_crop"]
