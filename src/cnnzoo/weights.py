"""Loading weights into a built network: cnnzoo checkpoints, torchvision/timm files, or torchvision's downloads.

Files are read with safetensors or ``torch.load(weights_only=True)``; nothing is ever unpickled as arbitrary
objects. The source of a file is detected from its keys: a file whose keys are the network's own loads
directly, otherwise it goes through `cnnzoo.convert_state_dict` for each source (torchvision, timm) the network
has a counterpart or converter for, and the first whose keys and shapes match the network wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .registry import SOURCES, convert_state_dict, get_card

__all__ = ["load_weights", "read_state_dict", "TORCHVISION_URLS", "detect_source"]

# torchvision's published ImageNet weights (the IMAGENET1K_V1 entries of torchvision.models), by torchvision name.
# A network's card says which torchvision name it corresponds to (``counterparts["torchvision"]``).
_TV = "https://download.pytorch.org/models/"
TORCHVISION_URLS: dict[str, str] = {
    "alexnet": _TV + "alexnet-owt-7be5be79.pth",
    "vgg11": _TV + "vgg11-8a719046.pth",
    "vgg13": _TV + "vgg13-19584684.pth",
    "vgg16": _TV + "vgg16-397923af.pth",
    "vgg19": _TV + "vgg19-dcbb9e9d.pth",
    "vgg11_bn": _TV + "vgg11_bn-6002323d.pth",
    "vgg13_bn": _TV + "vgg13_bn-abd245e5.pth",
    "vgg16_bn": _TV + "vgg16_bn-6c64b313.pth",
    "vgg19_bn": _TV + "vgg19_bn-c79401a0.pth",
    "googlenet": _TV + "googlenet-1378be20.pth",
    "inception_v3": _TV + "inception_v3_google-0cc3c7bd.pth",
    "resnet18": _TV + "resnet18-f37072fd.pth",
    "resnet34": _TV + "resnet34-b627a593.pth",
    "resnet50": _TV + "resnet50-0676ba61.pth",
    "resnet101": _TV + "resnet101-63fe2227.pth",
    "resnet152": _TV + "resnet152-394f9c45.pth",
    "resnext50_32x4d": _TV + "resnext50_32x4d-7cdf4587.pth",
    "resnext101_32x8d": _TV + "resnext101_32x8d-8ba56ff5.pth",
    "wide_resnet50_2": _TV + "wide_resnet50_2-95faca4d.pth",
    "wide_resnet101_2": _TV + "wide_resnet101_2-32ee1156.pth",
    "densenet121": _TV + "densenet121-a639ec97.pth",
    "densenet161": _TV + "densenet161-8d451a50.pth",
    "densenet169": _TV + "densenet169-b2777c0a.pth",
    "densenet201": _TV + "densenet201-c1103571.pth",
    "squeezenet1_0": _TV + "squeezenet1_0-b66bff10.pth",
    "squeezenet1_1": _TV + "squeezenet1_1-b8a52dc0.pth",
    "mobilenet_v2": _TV + "mobilenet_v2-b0353104.pth",
    "mobilenet_v3_large": _TV + "mobilenet_v3_large-8738ca79.pth",
    "mobilenet_v3_small": _TV + "mobilenet_v3_small-047dcff4.pth",
    "shufflenet_v2_x0_5": _TV + "shufflenetv2_x0.5-f707e7126e.pth",
    "shufflenet_v2_x1_0": _TV + "shufflenetv2_x1-5666bf0f80.pth",
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a torch file read with ``weights_only=True``.

    Checkpoint wrappers are unwrapped: ``{"state_dict": ...}``, ``{"model": ...}``, and DDP's ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (pickle errors come in many types)
            raise ValueError(f"{path} is not a weights file torch.load(weights_only=True) can read "
                             f"(only tensors and plain containers are accepted): {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _matches(model_sd: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor]) -> bool:
    return set(model_sd) == set(sd) and all(tuple(model_sd[k].shape) == tuple(sd[k].shape) for k in sd)


def detect_source(model: nn.Module, name: str, sd: Mapping[str, torch.Tensor]) -> tuple[str, dict]:
    """("cnnzoo" | "torchvision" | "timm", converted state dict) for the first layout that fits ``model``."""
    own = model.state_dict()
    if _matches(own, sd):
        return "cnnzoo", dict(sd)
    tried = []
    for source in SOURCES:
        try:
            converted = convert_state_dict(name, sd, source)
        except (ValueError, KeyError, RuntimeError):
            continue
        tried.append(source)
        if _matches(own, converted):
            return source, converted
    missing = sorted(set(own) - set(sd))[:5]
    unexpected = sorted(set(sd) - set(own))[:5]
    shapes = [k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape)][:5]
    raise ValueError(
        f"the weights do not fit {name} as built (tried the cnnzoo layout"
        f"{', ' + ', '.join(tried) if tried else ''}): missing keys {missing}, unexpected keys {unexpected}, "
        f"shape mismatches {shapes}. Build the network with the options and num_classes the file was saved with.")


def _download_torchvision(name: str) -> dict[str, torch.Tensor]:
    card = get_card(name)
    tv = card.counterparts.get("torchvision")
    if tv is None:
        raise ValueError(f"{name} has no torchvision counterpart, so there are no torchvision weights for it; "
                         f"networks with one: see `cnnzoo list` (card counterparts)")
    url = TORCHVISION_URLS.get(tv)
    if url is None:
        raise ValueError(f"no published torchvision weights are known for {tv!r} ({name}); "
                         f"known: {', '.join(sorted(TORCHVISION_URLS))}")
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True,
                                                  check_hash=False)
    except OSError as e:  # URLError, socket errors: offline or unreachable
        raise ValueError(
            f"could not download torchvision's {tv} weights from {url} ({e}); this needs network access. "
            f"Offline, download the file elsewhere and pass its path: weights=PATH / --weights PATH") from None


def load_weights(model: nn.Module, name: str, weights: str | Path) -> nn.Module:
    """Load ``weights`` (a path or ``"torchvision"``) into ``model`` (registered as ``name``), strictly.

    Returns the model. Raises ValueError when the file's layout does not fit the network as built.
    """
    if str(weights) == "torchvision":
        sd = _download_torchvision(name)
        source = "torchvision"
        sd = convert_state_dict(name, sd, source)
        if not _matches(model.state_dict(), sd):
            _, sd = detect_source(model, name, sd)
    else:
        source, sd = detect_source(model, name, read_state_dict(weights))
    model.load_state_dict(sd, strict=True)
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "weights": str(weights), "weights_source": source}
    return model
