"""What a classifier looks at: class activation maps, Grad-CAM, Grad-CAM++, guided backpropagation, guided Grad-CAM,
occlusion sensitivity and the cascading-randomisation sanity check, on any ``nn.Module`` classifier.

Every function takes a preprocessed float batch ``x`` (N, C, H, W) and a model returning logits (N, K). ``target=None``
means the predicted class (argmax of the logits); an int is used for every image, a sequence gives one per image. The
model is put in eval mode for the call and every module's train/eval flag is restored afterwards; its parameters are
never changed (`sanity_check` works on a deep copy).

Methods and their papers
    * ``cam``: B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba, "Learning Deep Features for Discriminative
      Localization", CVPR 2016, Sec. 2, Eq. 2: M_c(x, y) = sum_k w_k^c f_k(x, y), for networks whose last conv map
      feeds global average pooling and one linear layer (`class_activation_map`).
    * ``gradcam``: R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
      Localization", ICCV 2017, Sec. 3, Eq. 1-2 (`grad_cam`); ``guided-gradcam``: the same paper, Sec. 3 "Guided
      Grad-CAM" (`guided_grad_cam`).
    * ``gradcam++``: A. Chattopadhyay, A. Sarkar, P. Howlader, V. N. Balasubramanian, "Grad-CAM++: Generalized
      Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018, Sec. 3, Eq. 19 (`grad_cam_pp`).
    * ``guided-backprop``: J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving for Simplicity: The
      All Convolutional Net", ICLR 2015 workshop, Sec. 3.4 and Fig. 1 (`guided_backprop`).
    * ``occlusion``: M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
      Sec. 4.2 and Fig. 7 (`occlusion`); ``deconvnet`` (Sec. 2.1) lives in `cnnzoo.explain.deconvnet`.
    * `sanity_check`: J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim, "Sanity Checks for Saliency
      Maps", NeurIPS 2018: the model parameter randomisation test, cascading from the logits down (Fig. 2), with
      Spearman rank correlation of absolute maps.

Layers
    `resolve_layer` picks the map the CAM-family methods read: by default the module of the last ``feature_info`` entry
    (the last convolutional stage of a zoo network), else the last ``nn.Conv2d``. A layer whose output is tokens
    (B, T, D) (a ViT encoder block) is read as a map: the ``num_prefix_tokens`` leading tokens (class token) are dropped
    and the rest reshaped to the patch grid (B, D, h, w), as ``forward_intermediates`` does.

Deviations (each explained in its function's docstring): Grad-CAM++ leaves out the positive per-image factor
exp(S^c) of its weights; guided backprop covers ``nn.ReLU`` modules only (not functional relus); occlusion reports the
target class (default: predicted) on a regular grid of positions; `explain`'s display heat is min-max scaled per image;
`sanity_check` counts a map that became constant as correlation 0 (and says how many did).

Equalities tested in tests/test_explain_attribution.py: CAM and Grad-CAM on a global-average-pool + linear head
(grad_cam == relu(cam) / (h w) exactly, Selvaraju Sec. 3.1); captum 0.9's LayerGradCam (relu_attributions=True),
GuidedBackprop and GuidedGradCam (interpolate_mode="bilinear"; captum's default is "nearest").
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import eval_mode

__all__ = [
    "METHODS",
    "Explanation",
    "Occlusion",
    "class_activation_map",
    "explain",
    "grad_cam",
    "grad_cam_pp",
    "guided_backprop",
    "guided_grad_cam",
    "occlusion",
    "resolve_layer",
    "sanity_check",
    "spearman",
]

METHODS = ("cam", "gradcam", "gradcam++", "occlusion", "guided-backprop", "guided-gradcam", "deconvnet")


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers: input checks, eval mode, targets, hooks


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a preprocessed float batch (N, C, H, W), got {got}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (N = 0)")


def _targets(target, logits: torch.Tensor) -> torch.Tensor:
    """The class of each image: None -> argmax; an int for all; a sequence/tensor of N ints. Range-checked."""
    n, k = logits.shape
    if target is None:
        return logits.argmax(1)
    if isinstance(target, bool):
        raise ValueError(f"target must be a class index or None, got {target!r}")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long)
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"target must be a class index, a sequence of {n} indices or None, got {target!r}") from e
        if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"target must hold integer class indices, got {t.dtype}")
        t = t.reshape(-1).long()
        if t.numel() == 1:
            t = t.expand(n).clone()
        elif t.numel() != n:
            raise ValueError(f"target has {t.numel()} entries for a batch of {n} images")
    bad = t[(t < 0) | (t >= k)]
    if bad.numel():
        raise ValueError(f"target {int(bad[0])} is out of range: the model has {k} classes (valid 0..{k - 1})")
    return t.to(logits.device)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits (N, K); it returned {got}")
    return out


def resolve_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """The layer whose output map the CAM-family methods read, as (dotted name, module).

    ``None``: the module of the last ``model.feature_info`` entry (a zoo network's last stage), else the last
    ``nn.Conv2d`` in ``named_modules()`` order. A name must be one of ``dict(model.named_modules())``; an unknown one is
    a ValueError naming it and up to 5 close valid names.
    """
    modules = dict(model.named_modules())
    if layer is None:
        info = getattr(model, "feature_info", None)
        if info:
            name = info[-1]["module"] if isinstance(info[-1], dict) else None
            if name in modules:
                return name, modules[name]
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"{type(model).__name__} has no feature_info and no nn.Conv2d: name a layer (--layer)")
        return convs[-1], modules[convs[-1]]
    if not isinstance(layer, str) or not layer or layer not in modules:
        names = [n for n in modules if n]
        close = difflib.get_close_matches(str(layer), names, n=5, cutoff=0.5)
        if close:
            hint = "close names: " + ", ".join(close)
        else:
            stages = [i["module"] for i in getattr(model, "feature_info", None) or [] if isinstance(i, dict)]
            hint = "valid names include: " + ", ".join((stages or names)[-5:])
        raise ValueError(f"unknown layer {layer!r} in {type(model).__name__}; {hint}")
    return layer, modules[layer]


def _as_map(a: torch.Tensor, model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """A layer output as a map (N, C, h, w): maps pass through; tokens (N, T, D) lose the prefix tokens and are
    reshaped to the patch grid (the grid from ``feature_info``'s reduction, else a square)."""
    if a.ndim == 4:
        return a
    if a.ndim != 3:
        raise ValueError(f"layer {name!r} gives {tuple(a.shape)}, not a map (N, C, h, w) or tokens (N, T, D)")
    n, t, d = a.shape
    prefix = getattr(model, "num_prefix_tokens", None)
    grids = []
    reductions = {i.get("reduction") for i in getattr(model, "feature_info", None) or [] if isinstance(i, dict)}
    for r in sorted(r for r in reductions if r):
        grids.append((x.shape[-2] // r, x.shape[-1] // r))
    for p in ([prefix] if prefix is not None else [0, 1]):
        side = math.isqrt(max(t - p, 0))
        for gh, gw in [*grids, (side, side)]:
            if gh * gw == t - p and gh * gw > 0:
                return a[:, p:].transpose(1, 2).reshape(n, d, gh, gw)
    raise ValueError(f"layer {name!r} gives {t} tokens, which do not form the patch grid of a {tuple(x.shape[-2:])} "
                     "input; pick a convolutional layer")


class _Recorder:
    """Forward hook on one module keeping its output (the tensor later ops see is a clone, so an in-place op after
    the layer cannot change the recorded activation or break the gradient with respect to it). A module called more
    than once in a forward pass (a shared ``relu``) is read at its last call."""

    def __init__(self, module: nn.Module, name: str):
        self.name, self.output, self.seen, self.linears_before = name, None, None, 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"layer {self.name!r} returns {type(output).__name__}, not a tensor; pick another layer")
        self.output = output
        if self.seen is not None:
            self.linears_before = len(self.seen)
        return output.clone()

    def remove(self) -> None:
        self.handle.remove()


def _forward_at(model: nn.Module, x: torch.Tensor, layer: str | None):
    """Forward with a recorder at ``layer``: (name, logits, recorded output, input with grad)."""
    _check_input(x)
    name, module = resolve_layer(model, layer)
    rec = _Recorder(module, name)
    try:
        x = x.detach().requires_grad_(True)  # everything downstream in the graph, even with frozen parameters
        logits = _logits(model, x)
    finally:
        rec.remove()
    if rec.output is None:
        raise ValueError(f"layer {name!r} is not used in {type(model).__name__}'s forward pass")
    return name, logits, rec.output, x


def _layer_grads(model: nn.Module, x: torch.Tensor, target, layer: str | None):
    """(name, target (N,), logits, activation map A (N, C, h, w), dS/dA) for the class score S (the logit)."""
    name, logits, a, x = _forward_at(model, x, layer)
    t = _targets(target, logits)
    score = logits.gather(1, t[:, None]).sum()  # images are independent in eval mode: one backward for the batch
    (g,) = torch.autograd.grad(score, a)
    return name, t, logits.detach(), _as_map(a.detach(), model, x, name), _as_map(g, model, x, name)


# ---------------------------------------------------------------------------------------------------------------------
# CAM, Grad-CAM, Grad-CAM++


def class_activation_map(model: nn.Module, x: torch.Tensor, target=None, layer: str | None = None) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016, Sec. 2, Eq. 2): M_c(x, y) = sum_k w_k^c f_k(x, y), (N, h, w).

    f_k is channel k of the resolved layer's map and w^c the row of class c in the final linear layer. This is exact
    only when that layer's input is the global average of the map (S_c = sum_k w_k^c mean_xy f_k + b_c), which is
    checked by hooking, not assumed from the class: the last ``nn.Linear`` called must produce the logits and take
    ``map.mean((2, 3))`` as input (allclose). Otherwise a ValueError says why (e.g. AlexNet's three fully connected
    layers after a 6x6 map) and points to Grad-CAM. The map is not rectified or normalised, and the bias b_c is left
    out, as in Eq. 2; its spatial mean plus b_c is the logit.
    """
    _check_input(x)
    name, module = resolve_layer(model, layer)
    linears: list[tuple[str, torch.Tensor, torch.Tensor, nn.Linear]] = []
    means: dict[str, tuple[int, torch.Tensor]] = {}  # (h w, spatial mean) of every map-shaped module output, to name the pooled one
    handles = []

    def keep_linear(mod, inputs, output, lname):
        linears.append((lname, inputs[0].detach(), output.detach(), mod))

    def keep_mean(mod, inputs, output, mname):
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            means[mname] = (output.shape[2] * output.shape[3], output.detach().mean((2, 3)))

    for mname, m in model.named_modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(functools.partial(keep_linear, lname=mname)))
        elif mname:
            handles.append(m.register_forward_hook(functools.partial(keep_mean, mname=mname)))
    rec = _Recorder(module, name)
    rec.seen = linears  # lets the recorder note how many linear layers ran before the map
    try:
        with eval_mode(model), torch.no_grad():
            logits = _logits(model, x)
    finally:
        rec.remove()
        for h in handles:
            h.remove()
    if rec.output is None:
        raise ValueError(f"layer {name!r} is not used in {type(model).__name__}'s forward pass")
    a = _as_map(rec.output.detach(), model, x, name)
    t = _targets(target, logits)
    net = type(model).__name__
    why = "CAM needs global average pooling + one linear layer (Zhou et al. 2016, Sec. 2); use gradcam"
    if not linears:
        raise ValueError(f"{net} has no nn.Linear classifier; {why}")
    lname, inp, out, fc = linears[-1]
    if out.shape != logits.shape or not torch.allclose(out, logits, rtol=1e-4, atol=1e-5 * (1 + logits.abs().max())):
        raise ValueError(f"{net}'s output is not the output of its last linear layer {lname!r}; {why}")
    pooled = a.mean((2, 3))
    if inp.shape != pooled.shape or not torch.allclose(inp, pooled, rtol=1e-4, atol=1e-5 * (1 + pooled.abs().max())):
        h, w = a.shape[-2:]
        n_fc = len(linears) - rec.linears_before  # the linear layers called after the map was produced
        if n_fc > 1:
            head = f"{net}'s head is {n_fc} fully connected layers after a {h}x{w} map"
        else:
            head = (f"the input of {net}'s last linear layer {lname!r} ({inp.shape[-1]} features) is not the spatial "
                    f"mean of layer {name!r}'s {a.shape[1]}x{h}x{w} map")
        # which map is pooled (the largest one whose mean is the input, not the pooling layer's own 1x1 output)
        pooled_by = sorted((size, i, n) for i, (n, (size, mean)) in enumerate(means.items()) if mean.shape == inp.shape
                           and torch.allclose(mean, inp, rtol=1e-4, atol=1e-5 * (1 + inp.abs().max())))
        if pooled_by:  # e.g. the default (last Conv2d) of a plain network, whose output passes a ReLU before pooling
            best = pooled_by[-1][2]
            raise ValueError(f"{head}; the pooled map is layer {best!r}'s output: pass layer={best!r}")
        raise ValueError(f"{head}; {why}")
    w_c = fc.weight.detach()[t]  # (N, K_features)
    return torch.einsum("nk,nkhw->nhw", w_c.to(a.dtype), a)


def grad_cam(model: nn.Module, x: torch.Tensor, target=None, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Sec. 3): L^c = ReLU(sum_k alpha_k^c A^k), (N, h, w), at the layer's size.

    Eq. 1: alpha_k^c = (1/Z) sum_ij dy^c/dA^k_ij, the spatial mean of the gradient of the class score y^c (the logit,
    before the softmax, as the paper) with respect to channel k of the resolved layer's map A; Eq. 2: the weighted sum,
    rectified. Gradients come from ``torch.autograd.grad`` on the target logit. No normalisation (`explain` normalises
    for display). With a global-average-pool + linear head alpha_k^c = w_k^c / Z, so the map is ReLU(CAM) / Z, Z = h w
    (Sec. 3.1, "Grad-CAM generalizes CAM").
    """
    with eval_mode(model), torch.enable_grad():
        _, _, _, a, g = _layer_grads(model, x, target, layer)
    alpha = g.mean((2, 3), keepdim=True)  # Eq. 1
    return F.relu((alpha * a).sum(1))  # Eq. 2


def grad_cam_pp(model: nn.Module, x: torch.Tensor, target=None, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018, Sec. 3.1-3.2), (N, h, w): ReLU(sum_k w_k^c A^k).

    The closed form of Eq. 19, for the class score passed through the exponential, Y^c = exp(S^c) (S^c the logit),
    which makes the higher derivatives products of first ones for a piecewise-linear network (Eq. 17-18):
        alpha_ij^kc = (dS/dA_ij^k)^2 / (2 (dS/dA_ij^k)^2 + sum_ab A_ab^k (dS/dA_ij^k)^3),
    and Eq. 10 / 20: w_k^c = sum_ij alpha_ij^kc ReLU(dY^c/dA_ij^k) with dY^c/dA = exp(S^c) dS/dA.
    Deviations: the per-image factor exp(S^c) > 0 of every w_k^c is left out (it overflows float32 for S^c > 88 and
    scales the whole map by one positive number, so the normalised heat is identical); alpha is 0 where its
    denominator is 0 (the authors' code does the same).
    """
    with eval_mode(model), torch.enable_grad():
        _, _, _, a, g = _layer_grads(model, x, target, layer)
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    return F.relu((w * a).sum(1))


# ---------------------------------------------------------------------------------------------------------------------
# Guided backpropagation and guided Grad-CAM


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes a gradient only where it is positive and the input was positive
    (Springenberg et al. 2015, Fig. 1: R_i = (f_i > 0) (R_{i+1} > 0) R_{i+1})."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0)


@contextlib.contextmanager
def _guided_relus(model: nn.Module) -> Iterator[None]:
    """Every ``nn.ReLU`` module of ``model`` backpropagates the guided way for the duration (in-place ones are made
    out-of-place meanwhile, then restored)."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU module: guided backpropagation (Springenberg et al. "
                         "2015) changes the backward pass of ReLU modules, and functional relus (F.relu, torch.relu) "
                         "or other activations cannot be hooked; use gradcam or occlusion")
    inplace = [m.inplace for m in relus]
    handles = []
    try:
        for m in relus:
            m.inplace = False
            handles.append(m.register_forward_hook(lambda mod, inputs, output: _GuidedReLU.apply(inputs[0])))
        yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(relus, inplace):
            m.inplace = flag


def guided_backprop(model: nn.Module, x: torch.Tensor, target=None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015, Sec. 3.4, Fig. 1), (N, C, H, W): the gradient of the target
    logit with respect to the input, where every ReLU's backward pass lets through only positive gradients at
    positions whose input was positive.

    Implemented by forward hooks on the ``nn.ReLU`` modules (temporarily ``inplace=False``) that replace the module's
    output with a ReLU whose backward is the guided one. Not covered: functional relus (``F.relu``, ``torch.relu``,
    ``Tensor.relu_``) and other activations (ReLU6, SiLU, ...), which keep their ordinary backward; a model with no
    ``nn.ReLU`` at all is a ValueError. The signal is the logit (pre-softmax), as Selvaraju et al. use it.
    """
    _check_input(x)
    with eval_mode(model), _guided_relus(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = _logits(model, x)
        t = _targets(target, logits)
        (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    return g


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target=None, layer: str | None = None,
                    interpolate_mode: str = "bilinear") -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017, Sec. 3 "Guided Grad-CAM"), (N, C, H, W): guided backpropagation times
    the Grad-CAM map upsampled to the input size, elementwise.

    The paper upsamples with bilinear interpolation (the default here, ``align_corners=False``); captum's
    ``GuidedGradCam`` defaults to ``"nearest"`` — pass ``interpolate_mode="nearest"`` to match it.
    """
    cam = grad_cam(model, x, target, layer)
    gb = guided_backprop(model, x, target)
    up = F.interpolate(cam[:, None], size=x.shape[-2:], mode=interpolate_mode,
                       **({"align_corners": False} if interpolate_mode in ("bilinear", "bicubic") else {}))
    return gb * up


# ---------------------------------------------------------------------------------------------------------------------
# Occlusion


@dataclass
class Occlusion:
    """`occlusion`'s result: ``prob`` (N, gh, gw) the target class's probability with the square at each position,
    ``top_class`` (N, gh, gw) long the most likely class there, ``centers`` (gh, gw, 2) the (row, col) centre of each
    square in input pixels, and the square's ``size``, ``stride`` and ``fill``."""

    prob: torch.Tensor
    top_class: torch.Tensor
    centers: torch.Tensor
    size: int
    stride: int
    fill: float


def _positive_int(value, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def occlusion(model: nn.Module, x: torch.Tensor, target=None, size: int | None = None, stride: int | None = None,
              fill: float | None = None, batch_size: int = 64) -> Occlusion:
    """Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2, Fig. 7): a grey square slid over the image, and at each
    position the probability of the target class and the most likely class.

    The square is ``size`` x ``size`` pixels (default: a quarter of the input's shorter side, at least 1), placed with
    its top-left corner at rows/cols 0, stride, 2 stride, ... while it fits inside the image (``stride`` default
    ``size // 2``, at least 1), so gh = (H - size) // stride + 1. It is filled with ``fill`` in preprocessed space
    (default 0.0: the dataset mean after normalisation, the paper's grey). The occluded copies of each image are run in
    batches of ``batch_size``. Deviations: the paper shows the correct class's probability; here the target (default
    the predicted class). Positions are a regular grid, so with sizes that do not divide evenly a margin of fewer than
    ``stride`` pixels at the bottom/right is never covered alone.
    """
    _check_input(x)
    n, _, h, w = x.shape
    size = _positive_int(size, "size", max(1, min(h, w) // 4))
    if size > min(h, w):
        raise ValueError(f"size {size} is larger than the {h}x{w} input")
    stride = _positive_int(stride, "stride", max(1, size // 2))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    fill = 0.0 if fill is None else float(fill)
    rows, cols = list(range(0, h - size + 1, stride)), list(range(0, w - size + 1, stride))
    positions = [(r, q) for r in rows for q in cols]
    probs, tops = [], []
    with eval_mode(model), torch.no_grad():
        t = _targets(target, _logits(model, x))
        for i in range(n):
            p_img, top_img = [], []
            for s in range(0, len(positions), batch_size):
                chunk = positions[s:s + batch_size]
                xb = x[i:i + 1].repeat(len(chunk), 1, 1, 1)
                for j, (r, q) in enumerate(chunk):
                    xb[j, :, r:r + size, q:q + size] = fill
                p = _logits(model, xb).float().softmax(1)
                p_img.append(p[:, t[i]])
                top_img.append(p.argmax(1))
            probs.append(torch.cat(p_img).reshape(len(rows), len(cols)))
            tops.append(torch.cat(top_img).reshape(len(rows), len(cols)))
    half = (size - 1) / 2
    centers = torch.stack(torch.meshgrid(torch.tensor(rows, dtype=torch.float32) + half,
                                         torch.tensor(cols, dtype=torch.float32) + half, indexing="ij"), -1)
    return Occlusion(torch.stack(probs), torch.stack(tops), centers, size, stride, fill)


# ---------------------------------------------------------------------------------------------------------------------
# explain(): one entry point with a display heat map


@dataclass
class Explanation:
    """`explain`'s result. ``method``: one of `METHODS`; ``target`` (N,) long; ``probs`` (N, K) the softmax of the
    unoccluded logits; ``raw``: the method's own output (a map (N, h, w), an input-space tensor (N, C, H, W) or an
    `Occlusion`); ``heat`` (N, H, W) in [0, 1] at the input size, for overlays; ``layer``: the layer read (or None)."""

    method: str
    target: torch.Tensor
    probs: torch.Tensor
    raw: object
    heat: torch.Tensor
    layer: str | None = None


def _minmax(m: torch.Tensor) -> torch.Tensor:
    """Each image's map scaled to [0, 1] (min -> 0, max -> 1; a constant map -> 0)."""
    flat = m.reshape(m.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(flat))
    return out.reshape(m.shape)


def _heat(raw, method: str, size: tuple[int, int]) -> torch.Tensor:
    if method == "occlusion":
        m = -raw.prob  # high where covering the square lowers the target's probability most
    elif method in ("guided-backprop", "guided-gradcam", "deconvnet"):
        m = raw.abs().amax(1)  # input-space signals: the largest magnitude over the channels
    else:
        m = raw
    m = m.detach().float()
    if m.shape[-2:] != tuple(size):
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(m)


def explain(model: nn.Module, x: torch.Tensor, method: str, target=None, layer: str | None = None,
            **kw) -> Explanation:
    """Run one of `METHODS` and package it with a display heat map.

    ``heat`` is the method's map bilinearly upsampled to the input size (``align_corners=False``) and min-max scaled to
    [0, 1] per image: CAM as is (unrectified, so its minimum maps to 0), Grad-CAM/Grad-CAM++ (already >= 0), the
    input-space methods (guided backprop, guided Grad-CAM, deconvnet) as the largest absolute value over the channels,
    occlusion as the drop of the target's probability (1 where covering that spot hurts most). Extra keyword arguments
    go to the method (occlusion: size, stride, fill, batch_size; deconvnet: channel; guided-gradcam: interpolate_mode).
    ``deconvnet`` calls `cnnzoo.explain.deconvnet.deconvnet_projection` at ``layer`` (default `resolve_layer`'s).
    """
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {method!r}{hint}; valid: {', '.join(METHODS)}")
    _check_input(x)
    allowed = {"occlusion": {"size", "stride", "fill", "batch_size"}, "deconvnet": {"channel"},
               "guided-gradcam": {"interpolate_mode"}}.get(method, set())
    extra = sorted(set(kw) - allowed)
    if extra:
        raise ValueError(f"method {method!r} takes no option {', '.join(extra)}; "
                         f"valid: {', '.join(sorted(allowed)) or 'none'}")
    with eval_mode(model), torch.no_grad():
        logits = _logits(model, x)
    t = _targets(target, logits)
    probs = logits.float().softmax(1)
    name = None
    if method in ("cam", "gradcam", "gradcam++", "guided-gradcam", "deconvnet"):
        name = resolve_layer(model, layer)[0]
    if method == "cam":
        raw = class_activation_map(model, x, t, name)
    elif method == "gradcam":
        raw = grad_cam(model, x, t, name)
    elif method == "gradcam++":
        raw = grad_cam_pp(model, x, t, name)
    elif method == "guided-backprop":
        raw = guided_backprop(model, x, t)
    elif method == "guided-gradcam":
        raw = guided_grad_cam(model, x, t, name, **kw)
    elif method == "occlusion":
        raw = occlusion(model, x, t, **kw)
    else:
        from .deconvnet import deconvnet_projection

        with eval_mode(model):
            raw = deconvnet_projection(model, x, name, **kw)
    return Explanation(method, t.cpu(), probs.cpu(), raw, _heat(raw, method, tuple(x.shape[-2:])).cpu(), name)


# ---------------------------------------------------------------------------------------------------------------------
# Sanity check (Adebayo et al. 2018)


def _rank(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor, ties given their average rank (as scipy.stats.rankdata's default)."""
    _, inverse, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)  # rank of the last element of each group of ties
    avg = last - (counts.to(torch.float64) - 1) / 2
    return avg[inverse]


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps of the same size (flattened): Pearson's correlation of their ranks, ties
    at their average rank. NaN when either map is constant (undefined, as scipy.stats.spearmanr)."""
    a, b = torch.as_tensor(a).detach().reshape(-1).double(), torch.as_tensor(b).detach().reshape(-1).double()
    if a.numel() != b.numel():
        raise ValueError(f"maps differ in size: {a.numel()} and {b.numel()} values")
    if a.numel() < 2:
        raise ValueError("need at least 2 values for a rank correlation")
    ra, rb = _rank(a.cpu()), _rank(b.cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.pow(2).sum() * rb.pow(2).sum()).sqrt()
    if den == 0:
        return float("nan")
    return float((ra * rb).sum() / den)


def _weight_layers_top_down(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules holding parameters of their own, in the reverse of the order the forward pass first
    calls them (the logits layer first)."""
    order: list[str] = []
    handles = []
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            def hook(mod, inputs, output, name=name):
                if name not in order:
                    order.append(name)
            handles.append(m.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            _logits(model, x)
    finally:
        for h in handles:
            h.remove()
    return order[::-1]


def _reinit(m: nn.Module) -> None:
    """Torch's default initialisation of the module (``reset_parameters``; norm layers also reset their running
    statistics), else normal(0, 0.01) for each of its own parameters."""
    if callable(getattr(m, "reset_parameters", None)):
        m.reset_parameters()
    else:
        with torch.no_grad():
            for p in m.parameters(recurse=False):
                p.normal_(0.0, 0.01)


def sanity_check(model: nn.Module, x: torch.Tensor, method: str = "gradcam", target=None, layer: str | None = None,
                 seed: int = 0, keep_maps: bool = False, **kw) -> list[dict]:
    """Cascading randomisation (Adebayo et al. 2018, the model parameter randomisation test, Fig. 2): re-initialise
    the layers from the top (the logits) down, one more at each step, and compare each step's map with the trained
    network's.

    A "layer" is a module with parameters of its own (Conv2d, Linear, a norm layer, ...), ordered by the forward
    pass; it is re-initialised with torch's default init (``reset_parameters``) or, without one, normal(0, 0.01),
    from a generator seeded with ``seed`` (the global RNG is left as it was). The target stays the trained network's
    (default: its predicted class) at every step. Each step reports ``spearman``: the Spearman rank correlation of
    the absolute map with the absolute original map (the method's raw map: the layer map for the CAM family, the
    input-space tensor for guided backprop), the mean over the images; ``per_image`` lists them. A step whose map
    has become constant (e.g. Grad-CAM's ReLU zeroing everything) has no ranks: its correlation is counted as 0 in
    ``spearman``, ``constant`` says how many images that was, and ``spearman_varying`` is the mean over the other
    images only (NaN if none). The model itself is not modified (the work is on a deep copy). Returns
    [{"layer", "spearman", "per_image", "constant", "spearman_varying"}, ...], the top layer first; with
    ``keep_maps`` each row also has ``explanation`` (that step's `Explanation`) and the list starts with the trained
    network's row (``layer`` None, ``spearman`` 1.0), for pictures of the cascade (Adebayo et al.'s Fig. 2).
    """
    if method == "occlusion":
        raise ValueError("sanity_check compares saliency maps; occlusion maps are probabilities, use another method")
    ref = explain(model, x, method, target, layer, **kw)
    layer_name = ref.layer
    work = copy.deepcopy(model)
    names = _weight_layers_top_down(work, x)
    modules = dict(work.named_modules())
    rows = []
    if keep_maps:
        ones = [1.0] * len(x)
        rows.append({"layer": None, "spearman": 1.0, "per_image": ones, "constant": 0, "spearman_varying": 1.0,
                     "explanation": ref})
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for name in names:
            _reinit(modules[name])
            got = explain(work, x, method, ref.target, layer_name, **kw)
            per = [spearman(a, b) for a, b in zip(ref.raw.abs(), got.raw.abs())]
            varying = [r for r in per if not math.isnan(r)]
            per = [0.0 if math.isnan(r) else r for r in per]
            rows.append({"layer": name, "spearman": sum(per) / len(per), "per_image": per,
                         "constant": len(per) - len(varying),
                         "spearman_varying": sum(varying) / len(varying) if varying else float("nan")})
            if keep_maps:
                rows[-1]["explanation"] = got
    return rows
