"""See what a network looks at: CAM, Grad-CAM, Grad-CAM++, guided backpropagation, guided Grad-CAM, occlusion,
ZFNet's deconvnet projections, first-layer filters and feature maps, on any ``nn.Module`` classifier.

    >>> import torch, cnnzoo
    >>> from cnnzoo.explain import explain, grad_cam
    >>> model = cnnzoo.create_model("resnet18")
    >>> x = torch.randn(1, 3, 64, 64)
    >>> grad_cam(model, x).shape                      # the last stage's map (layer4), 2x2 at 64x64
    torch.Size([1, 2, 2])
    >>> explain(model, x, "gradcam").heat.shape       # normalised to [0, 1] and upsampled, for overlays
    torch.Size([1, 64, 64])

The attribution methods are in `cnnzoo.explain.attribution`; ZFNet's deconvnet in `cnnzoo.explain.deconvnet` and
the picture helpers in `cnnzoo.explain.visual` (both imported on first use of one of their names).
"""

from __future__ import annotations

import importlib

from .attribution import (
    METHODS,
    Explanation,
    Occlusion,
    class_activation_map,
    explain,
    grad_cam,
    grad_cam_pp,
    guided_backprop,
    guided_grad_cam,
    occlusion,
    resolve_layer,
    sanity_check,
    spearman,
)

# names of the sibling modules, imported lazily (module-level __getattr__, PEP 562)
_LAZY = {
    "deconvnet_projection": "deconvnet",
    "unpool_with_switches": "deconvnet",
    "top_activations": "deconvnet",
    "TopK": "deconvnet",
    "filter_grid": "visual",
    "feature_maps": "visual",
    "feature_grid": "visual",
    "overlay": "visual",
    "to_uint8_image": "visual",
    "save_png": "visual",
}

# the names of deconvnet.py and visual.py load on first use (see __getattr__)
__all__ = [
    "METHODS",
    "Explanation",
    "Occlusion",
    "TopK",
    "class_activation_map",
    "deconvnet_projection",
    "explain",
    "feature_grid",
    "feature_maps",
    "filter_grid",
    "grad_cam",
    "grad_cam_pp",
    "guided_backprop",
    "guided_grad_cam",
    "occlusion",
    "overlay",
    "resolve_layer",
    "sanity_check",
    "save_png",
    "spearman",
    "to_uint8_image",
    "top_activations",
    "unpool_with_switches",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
