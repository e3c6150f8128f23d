"""Loading weights into a network: cnnzoo checkpoints, torchvision/timm files, or torchvision's downloads.

``create_model(name, weights=...)`` calls `resolve_weights` before the network is built, because a checkpoint decides
part of the architecture: a torchvision or timm file must give *that library's* logits with no options from the user,
and some of them need options (timm's native ``seresnet50`` is v1.5, its ``legacy_seresnet50`` pools the stem in ceil
mode, torchvision's published GoogLeNet weights expect ``transform_input=True``). The rules, in order:

1. A cnnzoo checkpoint (safetensors whose metadata says ``"format": "cnnzoo"``, or a run directory) is rebuilt from its
   metadata: network, options, classes, input channels.
2. Any other file is matched against the network's counterparts on its card (`cnnzoo.registry.Counterpart`), in card
   order: a counterpart fits when its ``marker`` key (if any) is in the file and the file, converted by the registered
   converter, has exactly the keys and shapes of the network built with the counterpart's options. The first fit wins,
   and its options are applied. A torchvision file that is byte-for-byte the published one (the hash prefix in its
   published file name) also gets the counterpart's ``weights_options``.
3. Last, the file is tried as a plain state dict of the network as the user asked for it.

Options the user passes that contradict the checkpoint are an error naming both values. The number of classes and
input channels are read from the file; a different ``num_classes`` keeps every weight but the classifier, which is
re-initialised (fine-tuning, as timm does); a different ``in_channels`` is an error. What was applied is recorded in
``model.pretrained_cfg``. Files are read with safetensors or ``torch.load(weights_only=True)``; nothing is ever
unpickled as arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import _CONVERTERS, SOURCES, Counterpart, _entry, get_card

__all__ = [
    "TORCHVISION_URLS",
    "WeightsPlan",
    "detect_source",
    "load_weights",
    "read_checkpoint",
    "read_state_dict",
    "resolve_weights",
]

# torchvision's published ImageNet weights (the IMAGENET1K_V1 entries of torchvision.models), by torchvision name.
# A network's card says which torchvision name it corresponds to (its torchvision `Counterpart`). The 8+ hex digits
# before the extension are the start of the file's SHA-256 (torch.hub's convention), which identifies the file.
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
    "resnext101_64x4d": _TV + "resnext101_64x4d-173b62eb.pth",
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
    "shufflenet_v2_x1_5": _TV + "shufflenetv2_x1_5-3c479a10.pth",
    "shufflenet_v2_x2_0": _TV + "shufflenetv2_x2_0-8be3c8ee.pth",
    "efficientnet_b0": _TV + "efficientnet_b0_rwightman-7f5810bc.pth",
    "efficientnet_b1": _TV + "efficientnet_b1_rwightman-bac287d4.pth",
    "efficientnet_b2": _TV + "efficientnet_b2_rwightman-c35c1473.pth",
    "efficientnet_b3": _TV + "efficientnet_b3_rwightman-b3899882.pth",
    "efficientnet_b4": _TV + "efficientnet_b4_rwightman-23ab8bcd.pth",
    "efficientnet_b5": _TV + "efficientnet_b5_lukemelas-1a07897c.pth",
    "efficientnet_b6": _TV + "efficientnet_b6_lukemelas-24a108a5.pth",
    "efficientnet_b7": _TV + "efficientnet_b7_lukemelas-c5b4e57e.pth",
    "vit_b_16": _TV + "vit_b_16-c867db91.pth",
    "vit_b_32": _TV + "vit_b_32-d86f8d99.pth",
    "vit_l_16": _TV + "vit_l_16-852ce7e3.pth",
}

_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, cnnzoo metadata or {}) of a weights file or a run directory (its last checkpoint).

    Safetensors files are read with safetensors; anything else with ``torch.load(weights_only=True)``. Checkpoint
    wrappers are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_state_dict": ...}``,
    ``{"module": ...}``) and so is DDP's / torch.compile's key prefix (``module.``, ``_orig_mod.``).
    Raises ValueError (never a library's own exception) for a file that is not a readable state dict.
    """
    path = Path(path)
    if path.is_dir():
        from .train.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist (give a weights file or a run directory)")
    if not path.is_file():
        raise ValueError(f"weights {str(path)!r} is not a file")
    meta: dict[str, Any] = {}
    head = path.read_bytes()[:16] if path.stat().st_size else b""
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no iteration protocol)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file (truncated, damaged or another format): "
                             f"{e}") from None
        for k, v in raw.items():
            try:
                meta[k] = json.loads(v)
            except (json.JSONDecodeError, TypeError):
                meta[k] = v
        if meta.get("format") != "cnnzoo":
            meta = {}
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (pickle and zip errors come in many types)
            raise ValueError(f"{path} is not a weights file torch.load(weights_only=True) can read "
                             f"(only tensors and plain containers are accepted): {e}") from None
    for key in _WRAPPERS:
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict (a non-empty mapping of names to tensors)")
    sd = dict(sd)
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd, meta


def _looks_like_safetensors(head: bytes) -> bool:
    """safetensors files start with an 8-byte little-endian header length and then '{'."""
    return len(head) >= 9 and head[8:9] == b"{"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see `read_checkpoint`)."""
    return read_checkpoint(path)[0]


# ----------------------------------------------------------------------------------------------- matching

@dataclass
class WeightsPlan:
    """What `resolve_weights` found: how to build the network so that the state dict loads and means the same.

    Attributes:
        state_dict: in our layout, ready for ``load_state_dict(strict=True)``.
        source: "cnnzoo", "torchvision" or "timm".
        counterpart: the counterpart whose layout the file has (None for cnnzoo and plain files).
        options: the options the checkpoint requires (applied on top of the user's).
        num_classes, in_channels: of the network the file was saved from.
        metadata: the cnnzoo metadata ({} for other files).
        dropped: keys of the file left out (optional aux heads the network was built without).
        published: the file is the library's published weights (``weights_options`` applied).
    """

    state_dict: dict[str, torch.Tensor]
    source: str
    counterpart: Counterpart | None
    options: dict[str, Any]
    num_classes: int
    in_channels: int
    metadata: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    published: bool = False


def _meta_shapes(name: str, options: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = _entry(name).builder(**options)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _dependent_keys(name: str, options: dict[str, Any], what: str) -> set[str]:
    """Keys whose shape changes with ``what`` ("num_classes" or "in_channels") for the network built with options."""
    try:
        a = _meta_shapes(name, {**options, what: 7})
        b = _meta_shapes(name, {**options, what: 5})
    except (ValueError, TypeError):  # e.g. transform_input needs 3 channels
        return set()
    return {k for k in a if k in b and a[k] != b[k]}


def _fit(name: str, options: dict[str, Any], sd: dict[str, torch.Tensor], optional: tuple[str, ...]):
    """(fits, num_classes, in_channels, dropped, reason) for ``sd`` against the network built with ``options``."""
    shapes = _meta_shapes(name, options)
    dropped = sorted(k for k in sd if k not in shapes and k.startswith(optional)) if optional else []
    keys = set(sd) - set(dropped)
    missing, unexpected = sorted(set(shapes) - keys), sorted(keys - set(shapes))
    if missing or unexpected:
        return False, 0, 0, dropped, f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
    nc = ic = None
    bad = [k for k in keys if tuple(sd[k].shape) != shapes[k]]
    if bad:
        head = _dependent_keys(name, options, "num_classes")
        stem = _dependent_keys(name, options, "in_channels")
        if any(k in head for k in bad):
            nc = int(sd[next(k for k in sorted(head) if k in sd)].shape[0])
        if any(k in stem for k in bad):
            k = next(k for k in sorted(stem) if k in sd and sd[k].ndim >= 2)
            ic = int(sd[k].shape[1])
        if nc is not None or ic is not None:
            new = {**options, **({"num_classes": nc} if nc else {}), **({"in_channels": ic} if ic else {})}
            try:
                shapes = _meta_shapes(name, new)
            except (ValueError, TypeError) as e:
                return False, 0, 0, dropped, f"the file's classes/channels do not build: {e}"
            bad = [k for k in keys if tuple(sd[k].shape) != shapes[k]]
        if bad:
            detail = ", ".join(f"{k} {tuple(sd[k].shape)} vs {shapes[k]}" for k in sorted(bad)[:4])
            return False, 0, 0, dropped, f"shape mismatches: {detail}"
    return True, nc, ic, dropped, ""


def _published(path: Path, cp: Counterpart) -> bool:
    """Whether ``path`` is byte-for-byte torchvision's published file for ``cp`` (hash prefix in the URL's name)."""
    url = TORCHVISION_URLS.get(cp.name) if cp.library == "torchvision" else None
    if url is None or not cp.weights_options:
        return False
    prefix = url.rsplit("-", 1)[-1].split(".")[0]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(prefix)


def _conflicts(user: dict[str, Any], required: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (user[k], v) for k, v in required.items() if k in user and user[k] != v}


def _convert(name: str, cp: Counterpart, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    fn = _CONVERTERS.get((name, cp.library))
    if fn is None:
        return dict(sd)
    try:
        return fn(dict(sd))
    except (KeyError, ValueError, RuntimeError, IndexError):
        return None


def resolve_weights(name: str, weights: str | Path, options: dict[str, Any], *,
                    source: str | None = None) -> WeightsPlan:
    """Read ``weights`` and decide how ``name`` must be built for them (see the module docstring).

    Args:
        name: registered network name.
        weights: a file, a run directory, or ``"torchvision"`` (published weights, downloaded).
        options: the options the user passed (num_classes / in_channels excluded).
        source: force the layout: "cnnzoo", "torchvision" or "timm" (None: detect).
    """
    valid_sources = ("cnnzoo", *SOURCES)
    if source is not None and source not in valid_sources:
        raise ValueError(f"weights_source must be one of {', '.join(valid_sources)} or None, got {source!r}")
    card = get_card(name)
    if str(weights) == "torchvision":
        cp = card.counterpart("torchvision")
        if cp is None:
            raise ValueError(f"{name} has no torchvision counterpart, so there are no torchvision weights for it; "
                             f"networks with one: see `cnnzoo info NAME` (counterparts)")
        sd = _download_torchvision(name, cp)
        candidates: list[Counterpart | None] = [cp]  # None stands for the network's own layout
        published = {id(cp): True}
    else:
        path = Path(weights).expanduser()
        sd, meta = read_checkpoint(path)
        file = path if path.is_file() else None
        if meta:
            return _plan_cnnzoo(name, sd, meta, options)
        candidates = [cp for cp in card.counterparts if source in (None, cp.library)
                      and (cp.marker is None or cp.marker in sd)]
        if source in (None, "cnnzoo"):
            candidates.append(None)
        published = {id(cp): file is not None and _published(file, cp) for cp in candidates if cp is not None}
    reasons: list[str] = []
    for cp in candidates:
        own = cp is None
        required = {} if own else {**cp.options, **(cp.weights_options if published.get(id(cp)) else {})}
        clash = _conflicts(options, required)
        converted = dict(sd) if own else _convert(name, cp, sd)
        if converted is None:
            continue
        build = {**options, **required}
        ok, nc, ic, dropped, why = _fit(name, build, converted, () if own else cp.optional)
        if ok and clash:  # the file is this counterpart's, and the user asked for something else
            detail = "; ".join(f"{k}={v!r}, but {k}={u!r} was passed" for k, (u, v) in clash.items())
            raise ValueError(f"the file has the layout of {cp.library}'s {cp.name}, which needs {detail}. Drop the "
                             "option to get that network, or pass weights_source='cnnzoo' if the file is a plain "
                             "state dict of a cnnzoo network")
        if not ok:
            reasons.append(f"as {'cnnzoo ' + name if own else f'{cp.library} {cp.name}'}: {why}")
            continue
        for k in dropped:
            converted.pop(k)
        with torch.device("meta"):
            ref = _entry(name).builder(**build)
        return WeightsPlan(converted, "cnnzoo" if own else cp.library, None if own else cp, required,
                           nc or ref.num_classes, ic or ref.in_channels, dropped=dropped,
                           published=bool(published.get(id(cp))))
    tried = "; ".join(reasons) or "no layout was tried"
    raise ValueError(f"the weights do not fit {name} ({tried}). Build the network with the options the file was "
                     f"saved with, or check that it is a checkpoint of {name}.")


def _plan_cnnzoo(name: str, sd: dict, meta: dict, options: dict[str, Any]) -> WeightsPlan:
    saved = meta.get("model")
    if saved != name:
        raise ValueError(f"the checkpoint is a cnnzoo {saved} checkpoint, not {name}: use create_model({saved!r}, "
                         f"weights=...) (`cnnzoo eval`/`predict` read the network from the file)")
    required = dict(meta.get("options") or {})
    clash = _conflicts(options, required)
    if clash:
        detail = ", ".join(f"{k}={v!r} (you passed {u!r})" for k, (u, v) in clash.items())
        raise ValueError(f"the checkpoint was trained with {detail}; drop the contradicting option(s)")
    nc, ic = int(meta["num_classes"]), int(meta["in_channels"])
    ok, _, _, _, why = _fit(name, {**options, **required, "num_classes": nc, "in_channels": ic}, sd, ())
    if not ok:
        raise ValueError(f"the cnnzoo checkpoint does not fit {name} built with its recorded options: {why}")
    return WeightsPlan(sd, "cnnzoo", None, required, nc, ic, metadata=meta)


def detect_source(model: nn.Module, name: str, sd: Mapping[str, torch.Tensor]) -> tuple[str, dict]:
    """("cnnzoo" | "torchvision" | "timm", converted state dict) for the first layout whose keys and shapes fit the
    already built ``model`` (no options are inferred: use `resolve_weights` / ``create_model(weights=)`` for that)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def fits(d: Mapping[str, torch.Tensor]) -> bool:
        return set(d) == set(own) and all(tuple(d[k].shape) == own[k] for k in d)

    if fits(sd):
        return "cnnzoo", dict(sd)
    for cp in get_card(name).counterparts:
        converted = _convert(name, cp, dict(sd))
        if converted is not None and fits(converted):
            return cp.library, converted
    missing, unexpected = sorted(set(own) - set(sd))[:5], sorted(set(sd) - set(own))[:5]
    raise ValueError(f"the weights do not fit {name} as built: missing keys {missing}, unexpected keys {unexpected}")


def _download_torchvision(name: str, cp: Counterpart) -> dict[str, torch.Tensor]:
    url = TORCHVISION_URLS.get(cp.name)
    if url is None:
        raise ValueError(f"no published torchvision weights are known for {cp.name!r} ({name}); "
                         f"known: {', '.join(sorted(TORCHVISION_URLS))}")
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True,
                                                  check_hash=False)
    except OSError as e:  # URLError, socket errors: offline or unreachable
        raise ValueError(
            f"could not download torchvision's {cp.name} weights from {url} ({e}); this needs network access. "
            f"Offline, download the file elsewhere and pass its path: weights=PATH / --weights PATH") from None
    except Exception as e:  # noqa: BLE001  (a damaged download: zip/pickle errors)
        raise ValueError(f"torchvision's {cp.name} weights from {url} could not be read ({e}); delete the file in "
                         f"{torch.hub.get_dir()}/checkpoints and try again") from None


def load_weights(model: nn.Module, name: str, weights: str | Path) -> nn.Module:
    """Load ``weights`` into an already built ``model`` strictly (no options inferred). Returns the model.

    Prefer ``create_model(name, weights=...)``, which also applies the options the checkpoint needs.
    """
    if str(weights) == "torchvision":
        cp = get_card(name).counterpart("torchvision")
        if cp is None:
            raise ValueError(f"{name} has no torchvision counterpart, so there are no torchvision weights for it")
        source, sd = detect_source(model, name, _download_torchvision(name, cp))
    else:
        source, sd = detect_source(model, name, read_state_dict(weights))
    model.load_state_dict(sd, strict=True)
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "weights": str(weights), "weights_source": source}
    return model
