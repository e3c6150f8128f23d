"""Weight initialisation shared by several families."""

from __future__ import annotations

import math

from torch import nn

__all__ = ["init_classifier_uniform", "init_conv_bn"]


def init_conv_bn(model: nn.Module) -> None:
    """He et al. 2015 normal init (fan-out, ReLU gain) for every conv; BN/GN to identity (weight 1, bias 0).

    What torchvision's and timm's ResNets do; linear layers keep PyTorch's default init.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_classifier_uniform(fc: nn.Linear) -> None:
    """torchvision's classifier init of MobileNet v3 and EfficientNet: U(+-1/sqrt(outputs)), zero bias."""
    bound = 1.0 / math.sqrt(fc.out_features) if fc.out_features else 0.0
    nn.init.uniform_(fc.weight, -bound, bound)
    nn.init.zeros_(fc.bias)

