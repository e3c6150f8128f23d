"""Weight initialisation shared by the residual families."""

from __future__ import annotations

from torch import nn

__all__ = ["init_conv_bn"]


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
