"""Segmentation networks; every module here is imported by `cnnzoo.segmentation.registry` and registers itself."""

from .base import Segmenter
from .deconvnet import DeconvNet  # noqa: F401  (registers deconvnet_vgg16)
from .deeplab import DeepLabV1  # noqa: F401  (registers deeplabv1/v2/v3 of the papers: deeplabv1_vgg16 ...)
from .deeplabv3 import DeepLabV3  # noqa: F401  (registers deeplabv3_resnet50/101, torchvision's)
from .fcn import FCN  # noqa: F401  (registers fcn32s/16s/8s_vgg16)
from .fcn_resnet import FCNResNet  # noqa: F401  (registers fcn_resnet50/101, torchvision's)
from .gcn import GCN  # noqa: F401  (registers gcn_resnet152)
from .mobilenet_seg import MobileNetV3Segmenter  # noqa: F401  (registers lraspp/deeplabv3_mobilenet_v3_large)
from .pspnet import PSPNet  # noqa: F401  (registers pspnet_resnet50/101)
from .refinenet import RefineNet  # noqa: F401  (registers refinenet_resnet101)
from .segnet import SegNet  # noqa: F401  (registers segnet_vgg16)
from .unet import UNet, center_crop

__all__ = ["Segmenter", "UNet", "center_crop"]
