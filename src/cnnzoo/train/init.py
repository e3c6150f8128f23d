"""Initialisation schemes for a run (``model.init``) and VGG's "start a deeper net from configuration A" transfer
(``model.init_from``).

    >>> spec = init_spec({"name": "kaiming", "mode": "fan_out"})   # the defaults filled in, every value checked
    >>> report = apply_init(model, spec)                             # conv and linear weights redrawn, biases zeroed
    >>> report = init_from(model, "runs/vgg11-20250101-120000")      # copy the layers that fit, say which

Schemes (``model.init``: a name, or a mapping ``{name: ..., PARAMETER: ...}``; config.yaml records the mapping with
every parameter filled in):

* ``paper`` (default): the network's own initialisation, as its module's notes describe it (AlexNet's N(0, 0.01)
  with biases of 1, torchvision's Kaiming for VGG and ResNets, ...). Nothing is redrawn.
* ``normal``: weights ~ N(0, std^2), ``std`` 0.01 by default: AlexNet's Section 5 ("zero-mean Gaussian
  distribution with standard deviation 0.01") and VGG's Section 3.1 random initialisation.
* ``xavier``: Glorot & Bengio 2010. ``distribution: uniform`` (default, their eq. 16): U(-a, a) with
  a = gain * sqrt(6 / (fan_in + fan_out)); ``normal``: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)).
  Both have the variance 2 gain^2 / (fan_in + fan_out). ``gain`` 1.0 by default (the paper's; torch's default).
* ``kaiming``: He et al. 2015 ("Delving Deep into Rectifiers", Sec. 2.2). ``mode: fan_in`` (default: eq. 10, the
  forward pass keeps its variance) or ``fan_out`` (the backward variant, eq. 14, torchvision's ResNets);
  ``nonlinearity: relu`` (default; gain sqrt(2)), ``leaky_relu`` (gain sqrt(2 / (1 + a^2)) with the negative slope
  ``a``, the paper's PReLU case), ``linear`` or ``tanh`` (torch's gains 1 and 5/3); ``distribution: normal``
  (default, the paper's): N(0, std^2) with std = gain / sqrt(fan); ``uniform``: U(-b, b), b = gain * sqrt(3 / fan).
  Networks with other activations (SiLU, GELU, ReLU6) get the ReLU gain unless asked otherwise.

What a scheme touches: the weight of every convolution (``nn.Conv1d/2d/3d``) and linear layer (``nn.Linear``,
attention's output projection included), and attention's packed query/key/value projection (``in_proj_weight``:
three D x D linear maps, each initialised as its own layer). Fans are counted as torch counts them:
fan_in = C_in / groups x k_h x k_w, fan_out = C_out x k_h x k_w (groups do not divide fan_out, as in torchvision
and timm). Every such weight is redrawn, including ones the network's own init zeroes (ViT's classifier). Biases
are set to 0, except a bias the network's own init set to one non-zero constant (AlexNet's biases of 1 in conv2,
conv4, conv5, fc6, fc7; Highway's gate bias of -2): the paper chose it, so it is kept. Normalisation layers
(BatchNorm, GroupNorm, LayerNorm), position embeddings and class tokens are left as the network made them.

The transfer (``init_from``) copies weights from a trained cnnzoo run or checkpoint into a freshly built network:

* VGG into VGG, Simonyan & Zisserman 2015, Section 3.1: the first four convolutional layers and the last three
  fully connected layers of the source (configuration A in the paper); the other layers keep their (random) init.
* Any other pair, the generic rule: convolutions in order, linear layers from the end. Each source convolution
  (first to last) goes to the next target convolution, after the previous match, whose weight has the same shape
  (target layers of other shapes are skipped over, so a deeper net's extra layers stay fresh); each source linear
  layer, last to first, likewise goes to the target's linear layers taken from the end (the classifier is the
  last). VGG's rule is this rule restricted to A's first four convolutions and last three linear layers, which is
  how A's four convolutions land on the first layers of the deeper net's stages: A's 64->128 conv goes to D's
  first 64->128 conv (D's second conv, 64->64, has another shape and stays fresh).

A copied layer gets the source's weight and bias; normalisation layers are never copied (a copied convolution of
a BatchNorm network meets a fresh BatchNorm, whose statistics training re-estimates). A source layer whose shape
nowhere fits (the classifier when the class counts differ) is reported as not copied. The report names every
copied pair, the source layers that found no place and the target layers left fresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "INIT_SCHEMES",
    "Transfer",
    "apply_init",
    "describe_init",
    "init_from",
    "init_spec",
    "initialise",
    "weight_layers",
]

INIT_SCHEMES = ("paper", "normal", "xavier", "kaiming")
# Each scheme's parameters and their defaults (config.yaml records all of them).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {},
    "normal": {"std": 0.01},
    "xavier": {"distribution": "uniform", "gain": 1.0},
    "kaiming": {"mode": "fan_in", "nonlinearity": "relu", "a": 0.0, "distribution": "normal"},
}
_CHOICES = {"distribution": ("normal", "uniform"), "mode": ("fan_in", "fan_out"),
            "nonlinearity": ("relu", "leaky_relu", "linear", "tanh")}


def init_spec(value: str | dict | None, key: str = "model.init") -> dict[str, Any]:
    """``value`` (a scheme name or a mapping with ``name``) as a full mapping, its defaults filled in.

    Raises:
        ValueError: naming ``key``, what was wrong and what is valid.
    """
    if value is None:
        value = "paper"
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(
            f"{key} must be a scheme name ({', '.join(INIT_SCHEMES)}) or a mapping such as {{name: normal, std: 0.01}}, "
            f"got {value!r}")
    name = value.get("name")
    if name not in INIT_SCHEMES:
        raise ValueError(f"{key}: name must be one of {', '.join(INIT_SCHEMES)}; got {name!r}")
    defaults = _DEFAULTS[name]
    unknown = sorted(set(value) - {"name"} - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none (the network's own init has no parameters)"
        raise ValueError(f"{key}: unknown parameter(s) {', '.join(unknown)} of the {name!r} scheme; valid: {valid}")
    out: dict[str, Any] = {"name": name}
    for param, default in defaults.items():
        v = value.get(param, default)
        if param in _CHOICES:
            if v not in _CHOICES[param]:
                raise ValueError(f"{key}: {param} must be one of {', '.join(_CHOICES[param])}; got {v!r}")
        else:  # std, gain, a: finite numbers
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{key}: {param} must be a finite number, got {v!r}")
            v = float(v)
            if param in ("std", "gain") and v <= 0:
                raise ValueError(f"{key}: {param} must be positive, got {v}")
            if param == "a" and v < 0:
                raise ValueError(f"{key}: a (the negative slope of leaky_relu) must be 0 or more, got {v}")
        out[param] = v
    if name == "kaiming" and out["a"] and out["nonlinearity"] != "leaky_relu":
        raise ValueError(f"{key}: a (the negative slope) applies to nonlinearity leaky_relu only; got "
                         f"nonlinearity {out['nonlinearity']!r} with a = {out['a']:g}")
    return out


def describe_init(spec: dict[str, Any]) -> str:
    """One line saying what ``spec`` draws, with its formula."""
    name = spec["name"]
    if name == "paper":
        return "the network's own initialisation (its paper notes)"
    if name == "normal":
        return f"weights N(0, {spec['std']:g}^2), biases 0"
    if name == "xavier":
        form = ("U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))" if spec["distribution"] == "uniform"
                else "N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))")
        return f"Glorot/Xavier {spec['distribution']}, gain {spec['gain']:g}: {form}, biases 0"
    gain = nn.init.calculate_gain(spec["nonlinearity"], spec["a"] if spec["nonlinearity"] == "leaky_relu" else None)
    form = ("N(0, std^2), std = gain / sqrt(fan)" if spec["distribution"] == "normal"
            else "U(-b, b), b = gain * sqrt(3 / fan)")
    return (f"Kaiming/He {spec['distribution']}, {spec['mode']}, {spec['nonlinearity']} gain {gain:.4g}: {form}, "
            f"biases 0")


def _weights(model: nn.Module):
    """(name, module, [weight views]) of every conv / linear layer and packed attention projection, in order."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            yield name, m, [m.weight]
        w = m._parameters.get("in_proj_weight") if hasattr(m, "_parameters") else None
        if isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[0] % 3 == 0:
            yield f"{name}.in_proj_weight" if name else "in_proj_weight", m, list(w.chunk(3))


def _biases(m: nn.Module) -> list[torch.Tensor]:
    out = []
    for key in ("bias", "in_proj_bias"):
        b = m._parameters.get(key)
        if isinstance(b, torch.Tensor):
            out.append(b)
    return out


def _draw(w: torch.Tensor, spec: dict[str, Any]) -> None:
    name = spec["name"]
    if name == "normal":
        nn.init.normal_(w, 0.0, spec["std"])
    elif name == "xavier":
        (nn.init.xavier_uniform_ if spec["distribution"] == "uniform" else nn.init.xavier_normal_)(w, gain=spec["gain"])
    else:
        fn = nn.init.kaiming_normal_ if spec["distribution"] == "normal" else nn.init.kaiming_uniform_
        fn(w, a=spec["a"], mode=spec["mode"], nonlinearity=spec["nonlinearity"])


@torch.no_grad()
def apply_init(model: nn.Module, spec: str | dict | None) -> dict[str, Any]:
    """Redraw ``model``'s conv and linear weights as ``spec`` says (see the module docstring); returns a report.

    The report: ``{"scheme": spec, "layers": N, "kept_biases": [names of the paper's constant biases kept]}``.
    ``paper`` changes nothing and draws no random numbers.
    """
    spec = init_spec(spec)
    if spec["name"] == "paper":
        return {"scheme": spec, "layers": 0, "kept_biases": []}
    count, kept, seen = 0, [], set()
    for name, m, views in _weights(model):
        for w in views:
            _draw(w, spec)
        count += 1
        if id(m) in seen:
            continue
        seen.add(id(m))
        for b in _biases(m):
            if b.numel() and bool((b == b.flatten()[0]).all()) and b.flatten()[0].item() != 0.0:
                kept.append(name)  # the paper's constant (AlexNet's 1, Highway's gate bias): keep it
            else:
                b.zero_()
    return {"scheme": spec, "layers": count, "kept_biases": kept}


# ------------------------------------------------------------------------------------------------ transfer
@dataclass(frozen=True)
class _Layer:
    name: str
    kind: str  # "conv" or "linear"
    shape: tuple[int, ...]


def weight_layers(model: nn.Module) -> list[_Layer]:
    """The conv and linear layers of ``model`` in definition order (what the transfer rules match)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out.append(_Layer(name, "conv", tuple(m.weight.shape)))
        elif isinstance(m, nn.Linear):
            out.append(_Layer(name, "linear", tuple(m.weight.shape)))
    return out


def _greedy(source: list[_Layer], target: list[_Layer]) -> list[tuple[_Layer, _Layer]]:
    """Each source layer in turn to the next target layer (after the previous match) of the same shape."""
    pairs, start = [], 0
    for s in source:
        for j in range(start, len(target)):
            if target[j].shape == s.shape:
                pairs.append((s, target[j]))
                start = j + 1
                break
    return pairs


VGG_RULE = ("VGG (Simonyan & Zisserman 2015, Sec. 3.1): the source's first four conv layers and last three fully "
            "connected layers, each to the target's next layer of the same shape (convs in order, fc from the end)")
GENERIC_RULE = ("generic: every source conv in order to the target's next conv of the same shape; every source "
                "linear layer from the end to the target's next linear layer (from the end) of the same shape")


def match_layers(source: list[_Layer], target: list[_Layer], vgg: bool = False) -> list[tuple[_Layer, _Layer]]:
    """The (source, target) pairs the transfer copies; ``vgg``: Section 3.1's restriction of the generic rule."""
    s_conv, t_conv = [x for x in source if x.kind == "conv"], [x for x in target if x.kind == "conv"]
    s_lin, t_lin = [x for x in source if x.kind == "linear"], [x for x in target if x.kind == "linear"]
    if vgg:
        s_conv, s_lin = s_conv[:4], s_lin[-3:]
    return _greedy(s_conv, t_conv) + _greedy(s_lin[::-1], t_lin[::-1])


@dataclass
class Transfer:
    """What `init_from` copied: JSON-ready through `to_dict`."""

    source: str
    network: str
    rule: str
    copied: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)  # (source, target, weight shape)
    not_copied: list[str] = field(default_factory=list)  # source layers under the rule that found no place
    fresh: list[str] = field(default_factory=list)  # target conv/linear layers keeping their own init

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "network": self.network, "rule": self.rule,
                "copied": [{"from": a, "to": b, "shape": list(s)} for a, b, s in self.copied],
                "not_copied": self.not_copied, "fresh": self.fresh}

    def summary(self, target: str = "the network") -> str:
        """A few lines for the log."""
        pairs = ", ".join(a if a == b else f"{a}->{b}" for a, b, _ in self.copied)
        lines = [(f"init-from {self.source}: copied {len(self.copied)} layer(s) of {self.network} into {target} "
                  f"({pairs}); rule: {self.rule}")]
        if self.not_copied:
            lines.append(f"  not copied (no layer of that shape left): {', '.join(self.not_copied)}")
        lines.append(f"  kept fresh ({len(self.fresh)}): {', '.join(self.fresh) if self.fresh else 'none'}")
        return "\n".join(lines)


@torch.no_grad()
def init_from(model: nn.Module, source: str | Path) -> Transfer:
    """Copy into ``model`` the layers of the trained cnnzoo run or checkpoint ``source`` that the rules match.

    Raises:
        FileNotFoundError / ValueError: ``source`` is missing, not a cnnzoo checkpoint, or nothing in it fits.
    """
    from ..models.vgg import VGG
    from ..registry import create_model
    from ..weights import read_checkpoint

    path = Path(source).expanduser()
    if path.is_dir():
        from .checkpoint import resolve_checkpoint

        path = resolve_checkpoint(path)  # its last checkpoint: the weights the run reported
    sd, meta = read_checkpoint(path)
    if not meta.get("model"):
        raise ValueError(f"model.init_from (--init-from) {source}: {path} has no cnnzoo metadata naming its network; "
                         "give a cnnzoo run directory or a checkpoint written by `cnnzoo train`")
    options = {k: v for k, v in (meta.get("options") or {}).items() if k not in ("num_classes", "in_channels")}
    with torch.device("meta"):  # the source's layer list, without memory or init cost
        src_model = create_model(meta["model"], num_classes=meta.get("num_classes", 1000),
                                 in_channels=meta.get("in_channels", 3), **options)
    source_layers, target_layers = weight_layers(src_model), weight_layers(model)
    vgg = isinstance(src_model, VGG) and isinstance(model, VGG)
    pairs = match_layers(source_layers, target_layers, vgg=vgg)
    if not pairs:
        raise ValueError(f"model.init_from (--init-from) {source}: no conv or linear layer of its {meta['model']} "
                         f"has the shape of a layer of this network; nothing to copy (the rule: "
                         f"{VGG_RULE if vgg else GENERIC_RULE})")
    modules = dict(model.named_modules())
    for s, t in pairs:
        m = modules[t.name]
        m.weight.copy_(sd[f"{s.name}.weight"])
        if m.bias is not None and f"{s.name}.bias" in sd:
            m.bias.copy_(sd[f"{s.name}.bias"])
        elif m.bias is not None:
            m.bias.zero_()  # the source layer had no bias: its function is the copied weight alone
    considered = source_layers
    if vgg:
        considered = [x for x in source_layers if x.kind == "conv"][:4] + \
            [x for x in source_layers if x.kind == "linear"][-3:]
    copied_src, copied_tgt = {s.name for s, _ in pairs}, {t.name for _, t in pairs}
    pairs.sort(key=lambda p: [x.name for x in target_layers].index(p[1].name))
    return Transfer(source=str(path), network=meta["model"], rule=VGG_RULE if vgg else GENERIC_RULE,
                    copied=[(s.name, t.name, t.shape) for s, t in pairs],
                    not_copied=[x.name for x in considered if x.name not in copied_src],
                    fresh=[x.name for x in target_layers if x.name not in copied_tgt])


def initialise(model: nn.Module, init: str | dict | None, init_from_path: str | None, *, log=None,
               name: str = "the network") -> dict[str, Any]:
    """What a new run does after building its network: the ``model.init`` scheme, then ``model.init_from``.

    Returns the JSON-ready report run.json records: ``{"scheme": ..., "layers": ..., "kept_biases": [...],
    "init_from": {...}}`` (``init_from`` only with a source). ``log``: a print-like function told what was done.
    """
    report = apply_init(model, init)
    if log is not None and report["scheme"]["name"] != "paper":
        log(f"init: {describe_init(report['scheme'])} on {report['layers']} conv/linear layer(s) of {name}"
            + (f"; the paper's constant biases kept in {', '.join(report['kept_biases'])}" if report["kept_biases"]
               else ""))
    if init_from_path:
        transfer = init_from(model, init_from_path)
        report["init_from"] = transfer.to_dict()
        if log is not None:
            log(transfer.summary(name))
    return report
