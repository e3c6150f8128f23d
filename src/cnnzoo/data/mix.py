"""The mixing family: pairs of training images (or their hidden features) blended, and their labels with them.

One option, ``train.mix: {name: METHOD, ...per-method parameters}``, e.g. ``--set 'train.mix={name: cutmix}'``:

========================  ===========================================================================================
``mixup``                 Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization": ``x = lam x_a + (1-lam)
                          x_b``, ``lam ~ Beta(alpha, alpha)``, target ``lam y_a + (1-lam) y_b``. alpha 1.0 (their
                          CIFAR setting; 0.2 on ImageNet).
``cutmix``                Yun et al. 2019, "CutMix": a box of area ``(1-lam) H W`` centred uniformly at random is
                          pasted from x_b; the box is clipped at the border and the label weight of y_b is the area
                          really pasted (``lam`` is recomputed from it, Sec. 3.1). alpha 1.0 (the paper's).
``manifold_mixup``        Verma et al. 2019, "Manifold Mixup": mixup at a layer k drawn uniformly from the eligible
                          ones, the input (k = 0) or the output of feature_info stage k (the network's own stage
                          boundaries, reached with a forward hook). Default: the paper's k in {0, 1, 2} (Sec. 5.1;
                          the authors' code draws ``randint(0, 2)``: the input, after the first and after the
                          second block group of their PreAct ResNet), whatever the number of stages (fewer when the
                          network has fewer than two). alpha 2.0 (the paper's CIFAR setting).
``patchup``               Faramarzi et al. 2022, "PatchUp: A Feature-Space Block-Level Data Augmentation Method"
                          (arXiv 2020 "A Regularization Technique for CNNs"), as the authors' code (chandar-lab/
                          PatchUp) runs it: with probability ``prob`` 0.7 a batch is mixed at a layer drawn uniformly
                          from ``layers``, by default their ``k = 2``: {0: the input, by CutMix with lam ~ Beta(1, 1)
                          (Yun et al.'s box, as below); ``stem``: after the stem; 1: after the first stage}. At a
                          hidden layer a DropBlock-style mask of ``block_size`` squares (centres ~ Bernoulli(gamma_adj),
                          one mask per batch as in the authors' code) selects feature blocks; ``mode: hard`` swaps
                          them with the partner's, ``mode: soft`` interpolates them with ``lam``. With u the unchanged
                          fraction of the features (of the pixels for CutMix), the target is the authors' three-term
                          loss (``loss: three_term``): ``u l(y_a) + (1-u) l(t_b) + l(t_rw)``, t_b = y_b (hard, CutMix)
                          or ``lam y_a + (1-lam) y_b`` (soft), t_rw = ``u y_a + (1-u) y_b`` (hard, CutMix) or
                          ``(u + (1-u) lam) y_a + (1-u)(1-lam) y_b`` (soft): the reweighted target counted twice,
                          which the soft-target loss (linear in the target) gets as one target of total mass 2.
                          ``loss: reweighted`` keeps t_rw alone (half the loss on mixed batches). Defaults: hard,
                          gamma 0.5, block 7, alpha 2, prob 0.7: the authors' README command for Hard PatchUp
                          (their argparse defaults are soft and gamma 0.9; their soft command uses prob 1, gamma
                          0.75).
``puzzlemix``             Kim et al. 2020, "Puzzle Mix" (simplified, see below): saliency from the input gradient
                          of the clean batch, a block mask that keeps each image's salient regions, and transport
                          of each image's salient blocks into the region it contributes. Label weight = the share
                          of pixels each image contributes.
========================  ===========================================================================================

Every method also takes ``prob`` (the probability that a batch is mixed at all, default 1; PatchUp's 0.7).

``layers`` (manifold_mixup, patchup) lists the eligible layers: 0 = the input, k >= 1 = the output of feature_info
stage k, ``stem`` = the input of feature_info stage 1 (the output of the stem on networks whose feature_info starts
with their first block group: the ResNets, PreAct ResNets, WRNs and CIFAR DenseNets; on networks whose feature_info
lists the stem itself first, such as the ImageNet DenseNets, GoogLeNet or ResNeSt, stage 1 is the stem and ``stem``
the layer inside it that feeds stage 1's module: give ``layers`` explicitly there). The mixed target is a
distribution over the classes (B, K) and goes through the same soft-target loss as label smoothing
(`cnnzoo.train.losses`). Partners are a random permutation of the batch (of each rank's slice under torchrun).

Where the authors' code differs and cnnzoo does not follow: their loss terms are binary cross-entropies of the
softmax outputs (``BCELoss(softmax(out), t)``, for every method they compare), here the run's soft-target
cross-entropy; their PatchUp caches gamma_adj from the first feature map it sees, here computed for each map. With
label smoothing the three-term PatchUp target smooths once (mass 2, the uniform part counted once, not twice).

Determinism: every random choice of step ``i`` of epoch ``e`` (lam, the layer, the box, the masks, the grid) comes
from a generator seeded from (seed, e, i), and the partner permutation from (seed, e, i, rank): a resumed run mixes
exactly as an uninterrupted one. Nothing is drawn from the global RNG.

What is simplified in Puzzle Mix (the paper's Sec. 3-4 and its code): the mask is the exact optimum of the unary
(saliency) term under a hard area constraint, ``round(lam n^2)`` blocks of the n x n grid go to x_a, chosen where
x_a's saliency most exceeds x_b's, instead of the paper's graph cut with its smoothness term (beta, gamma), label
prior (eta) and 3-level masks; the transport is a greedy plan (blocks in decreasing saliency each take the free
destination of least ``eps x squared distance - saliency x [destination in my region]``), a full permutation of the
image's blocks, instead of the paper's iterative approximation; the saliency pass runs the network in eval mode
(no BN statistics or dropout touched) and its clean loss is not added to the training loss (the paper's
clean_lam = 0); no adversarial noise. The grid n is drawn per batch from ``grid`` (the sizes dividing the image).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MIX_METHODS",
    "MixSpec",
    "Mixed",
    "Mixer",
    "build_mixer",
    "cutmix_box",
    "parse_mix",
    "patchup_mask",
    "patchup_target",
    "puzzle_mask",
    "puzzle_transport",
    "soft_targets",
]

_COMMON = {"alpha": 1.0, "prob": 1.0}
MIX_METHODS: dict[str, dict] = {
    "mixup": dict(_COMMON),
    "cutmix": dict(_COMMON),
    "manifold_mixup": {**_COMMON, "alpha": 2.0, "layers": None},
    "patchup": {**_COMMON, "alpha": 2.0, "prob": 0.7, "layers": None, "mode": "hard", "gamma": 0.5, "block_size": 7,
                "loss": "three_term"},
    "puzzlemix": {**_COMMON, "grid": [2, 4, 8, 16], "transport": True, "eps": 0.8},
}
"""Each method's parameters and their defaults (see the module docstring for where they come from)."""
_HIDDEN = ("manifold_mixup", "patchup")  # methods that mix inside the network (forward hooks)
STEM = "stem"  # the layer name for the input of feature_info stage 1 (the stem's output)
PAPER_LAYERS = {"manifold_mixup": (0, 1, 2), "patchup": (0, STEM, 1)}
"""The default layers: Manifold Mixup's k in {0, 1, 2} and PatchUp's {input, stem, first stage} (authors' code)."""
PATCHUP_LOSSES = ("three_term", "reweighted")
_STREAM = 0x6D6978  # "mix": separates these generators from the loaders' (seed, epoch[, 1]) streams


@dataclass(frozen=True)
class MixSpec:
    """A validated ``train.mix``: the method and its full parameter set."""

    name: str
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params}


def _bad(key: str, what: str, value) -> ValueError:
    return ValueError(f"train.mix {key} must be {what}, got {value!r}")


def parse_mix(value) -> MixSpec | None:
    """``train.mix`` checked and completed with the method's defaults (None: no mixing).

    Raises:
        ValueError: one line naming the key, the value and what is valid.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"train.mix must be null or a mapping {{name: METHOD, ...}} with METHOD one of "
                         f"{', '.join(MIX_METHODS)}; got {value!r}")
    name = value.get("name")
    if name not in MIX_METHODS:
        raise ValueError(f"train.mix name must be one of {', '.join(MIX_METHODS)}; got {name!r}")
    defaults = MIX_METHODS[name]
    unknown = sorted(set(value) - {"name"} - set(defaults))
    if unknown:
        raise ValueError(f"train.mix: unknown parameter(s) {unknown} for {name}; valid: {', '.join(defaults)}")
    p = {**defaults, **{k: v for k, v in value.items() if k != "name"}}
    for key in ("alpha", "prob", "gamma", "eps"):
        if key in p:
            v = p[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise _bad(key, "a number", v)
            p[key] = float(v)
    if p["alpha"] <= 0:
        raise _bad("alpha", "positive (lam ~ Beta(alpha, alpha))", p["alpha"])
    if not 0 < p["prob"] <= 1:
        raise _bad("prob", "in (0, 1] (the probability that a batch is mixed)", p["prob"])
    if "layers" in p and p["layers"] is not None:
        layers = p["layers"]
        if not (isinstance(layers, list) and layers and all(
                k == STEM or (isinstance(k, int) and not isinstance(k, bool) and k >= 0) for k in layers)):
            raise _bad("layers", f"null or a non-empty list of integers >= 0 or {STEM!r} (0 = the input, k = the "
                       f"output of feature_info stage k, {STEM} = the input of stage 1)", layers)
        p["layers"] = sorted(set(layers), key=_layer_order)
    if name == "patchup":
        if p["mode"] not in ("hard", "soft"):
            raise _bad("mode", "'hard' (swap the blocks) or 'soft' (interpolate them)", p["mode"])
        if not 0 < p["gamma"] <= 1:
            raise _bad("gamma", "in (0, 1] (the probability of altering a feature)", p["gamma"])
        bs = p["block_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1 or bs % 2 == 0:
            raise _bad("block_size", "an odd integer >= 1", bs)
        if p["loss"] not in PATCHUP_LOSSES:
            raise _bad("loss", "'three_term' (the authors' training script) or 'reweighted' (the reweighted target "
                       "alone)", p["loss"])
    if name == "puzzlemix":
        grid = p["grid"]
        if not (isinstance(grid, list) and grid and all(isinstance(n, int) and not isinstance(n, bool) and n >= 2
                                                        for n in grid)):
            raise _bad("grid", "a non-empty list of integers >= 2 (blocks per side)", grid)
        p["grid"] = sorted(set(grid))
        if not isinstance(p["transport"], bool):
            raise _bad("transport", "true or false", p["transport"])
        if p["eps"] < 0:
            raise _bad("eps", "0 or more (the weight of the transport distance)", p["eps"])
    return MixSpec(name, p)


def _layer_order(k) -> float:
    return 0.5 if k == STEM else float(k)


# ------------------------------------------------------------------------------------------------ the methods
def soft_targets(labels: torch.Tensor, perm: torch.Tensor, weight_a: torch.Tensor | float,
                 num_classes: int) -> torch.Tensor:
    """``w y_a + (1 - w) y_b`` as (B, K) float32, y one-hot, partner b = perm; ``weight_a`` scalar or (B,)."""
    w = torch.as_tensor(weight_a, dtype=torch.float32, device=labels.device)
    w = w.expand(labels.shape[0])[:, None] if w.ndim == 0 else w[:, None]
    one = F.one_hot(labels, num_classes).float()
    return w * one + (1 - w) * one[perm.to(labels.device)]


def cutmix_box(lam: float, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Yun et al. 2019, Sec. 3.1: a box of sides (H, W) sqrt(1 - lam) centred uniformly, clipped: (y0, y1, x0, x1)."""
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    rh, rw = h * math.sqrt(1 - lam), w * math.sqrt(1 - lam)
    y0, y1 = int(np.clip(cy - rh / 2, 0, h)), int(np.clip(cy + rh / 2, 0, h))
    x0, x1 = int(np.clip(cx - rw / 2, 0, w)), int(np.clip(cx + rw / 2, 0, w))
    return y0, y1, x0, x1


def patchup_target(labels: torch.Tensor, perm: torch.Tensor, unchanged: float, lam: float, soft: bool,
                   num_classes: int, loss: str = "three_term") -> torch.Tensor:
    """PatchUp's target (B, K) from the unchanged fraction u and lam (the authors' training script, see above).

    ``three_term``: ``u y_a + (1 - u) t_b + t_rw`` (the three loss terms' targets; a soft-target loss is linear in
    the target, so its loss on this sum is their loss summed); ``reweighted``: ``t_rw`` alone. ``soft`` False for
    Hard PatchUp and for the CutMix of the input layer.
    """
    if soft:
        t_rw = soft_targets(labels, perm, unchanged + (1 - unchanged) * lam, num_classes)
        t_b = soft_targets(labels, perm, lam, num_classes)
    else:
        t_rw = soft_targets(labels, perm, unchanged, num_classes)
        t_b = soft_targets(labels, perm, 0.0, num_classes)
    if loss == "reweighted":
        return t_rw
    y_a = F.one_hot(labels, num_classes).float()
    return unchanged * y_a + (1 - unchanged) * t_b + t_rw


def patchup_mask(shape: tuple[int, int, int], gamma: float, block_size: int, rng: np.random.Generator) -> torch.Tensor:
    """PatchUp's block mask (C, H, W): 1 on the features to alter (DropBlock's construction, Ghiasi et al. 2018).

    Block centres are Bernoulli(gamma_adj) over every feature, gamma_adj = gamma H^2 / (bs^2 (H - bs + 1)^2) (so
    that about gamma of the features fall in a block); each centre grows into a bs x bs square (clipped at the
    border). ``block_size`` larger than the map is reduced to the largest odd size that fits.
    """
    c, h, w = shape
    bs = min(block_size, h, w)
    bs -= 1 - bs % 2  # odd
    gamma_adj = min(1.0, gamma * h * w / (bs * bs * (h - bs + 1) * (w - bs + 1)))
    centres = torch.from_numpy(rng.random((c, h, w)) < gamma_adj).float()
    return F.max_pool2d(centres[None], bs, stride=1, padding=bs // 2)[0]


def puzzle_mask(sal_a: torch.Tensor, sal_b: torch.Tensor, k: int) -> torch.Tensor:
    """(B, n^2) binary, exactly ``k`` ones per row: the blocks where a's saliency most exceeds b's go to a."""
    order = (sal_a - sal_b).argsort(dim=1, descending=True, stable=True)
    z = torch.zeros_like(sal_a)
    return z.scatter_(1, order[:, :k], 1.0)


def _cost_matrix(n: int, device) -> torch.Tensor:
    """Squared grid distance between blocks (n^2, n^2), divided by (n - 1)^2 (the paper's normalisation)."""
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    pos = torch.stack([ii.flatten(), jj.flatten()], 1).double()
    return (torch.cdist(pos, pos) ** 2 / max(n - 1, 1) ** 2).to(device)


def puzzle_transport(sal: torch.Tensor, region: torch.Tensor, eps: float) -> torch.Tensor:
    """A transport plan per image: ``plan[b, d]`` = the source block shown at destination d (a permutation).

    Greedy: the blocks in decreasing saliency each take the free destination d of least
    ``eps C(s, d) - sal[s] region[d]``: salient blocks move into the region the image contributes, unless the move
    is too far for their saliency; the rest fill the remaining places nearest to where they were.
    """
    b, m = sal.shape
    n = round(math.sqrt(m))
    cost_c = eps * _cost_matrix(n, sal.device).to(sal.dtype)
    order = sal.argsort(dim=1, descending=True, stable=True)
    free = torch.ones(b, m, dtype=torch.bool, device=sal.device)
    plan = torch.empty(b, m, dtype=torch.long, device=sal.device)
    rows = torch.arange(b, device=sal.device)
    for t in range(m):
        src = order[:, t]
        cost = cost_c[src] - sal[rows, src][:, None] * region
        dest = cost.masked_fill(~free, math.inf).argmin(1)
        plan[rows, dest] = src
        free[rows, dest] = False
    return plan


def _blocks(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, n^2, C, H/n, W/n), blocks in raster order."""
    b, c, h, w = x.shape
    return x.reshape(b, c, n, h // n, n, w // n).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c, h // n, w // n)


def _unblocks(blocks: torch.Tensor, n: int) -> torch.Tensor:
    b, _, c, bh, bw = blocks.shape
    return blocks.reshape(b, n, n, c, bh, bw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, n * bh, n * bw)


def saliency(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel saliency (B, H, W): the l2 norm over channels of d loss / d input (Puzzle Mix, Sec. 3), computed
    with the network in eval mode and no parameter gradient kept."""
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.detach().float().requires_grad_(True)
            out = model(x)
            out = out[0] if isinstance(out, tuple | list) else out
            (grad,) = torch.autograd.grad(F.cross_entropy(out.float(), labels), x)
    finally:
        model.train(was)
    return grad.pow(2).sum(1).sqrt()


# ------------------------------------------------------------------------------------------------ the mixer
@dataclass
class Mixed:
    """One training batch after mixing: feed ``images`` inside ``context`` and use ``target`` in the loss.

    ``info`` says what was drawn (lam, the partner permutation, the layer, the box or the masks), for logs and tests.
    """

    images: torch.Tensor
    target: torch.Tensor
    context: contextlib.AbstractContextManager
    info: dict = field(default_factory=dict)


class Mixer:
    """Applies ``spec`` to every training batch of a network (see the module docstring).

    Args:
        spec: from `parse_mix`.
        model: the plain network (unwrapped from DDP/compile); hidden-layer methods hook its feature_info modules.
        num_classes: the width of the soft targets.
        seed: the run's seed; with (epoch, step) it seeds every draw.
        rank: this process's rank (partners are drawn within the rank's slice).
        image_size: (H, W) of the batches the network gets; checked against the method's needs.
        in_channels: channels of those batches (for the dry run that finds the feature-map shapes).
    """

    def __init__(self, spec: MixSpec, model: nn.Module, num_classes: int, *, seed: int = 0, rank: int = 0,
                 image_size: tuple[int, int] | None = None, in_channels: int | None = None) -> None:
        self.spec, self.p, self.model = spec, spec.params, model
        self.num_classes, self.seed, self.rank = num_classes, seed, rank
        self.layers: list[int] = []
        self.names: dict[int, str] = {}
        self.shapes: dict[int, tuple[int, ...]] = {}
        self._armed: tuple[tuple[str, str], Callable] | None = None
        self._fired = False
        self._handles = []
        if spec.name in _HIDDEN:
            self._setup_hidden(image_size, in_channels)
        if spec.name == "puzzlemix" and image_size is not None and not self._grids(image_size):
            raise ValueError(f"train.mix puzzlemix: none of the grid sizes {self.p['grid']} divides the "
                             f"{image_size[0]}x{image_size[1]} input; give a grid that does (e.g. grid: "
                             f"{[n for n in range(2, min(image_size) + 1) if image_size[0] % n == 0 and image_size[1] % n == 0][:4]})")

    # -------------------------------------------------------------- setup of the hidden-layer methods
    def _setup_hidden(self, image_size, in_channels) -> None:
        name, model = self.spec.name, self.model
        info = getattr(model, "feature_info", None)
        if not info:
            raise ValueError(f"train.mix {name} mixes at the network's stage boundaries (feature_info), and "
                             f"{type(model).__name__} has none; use mixup or cutmix")
        n = len(info)
        layers = self.p["layers"]
        if layers is None:  # the papers' layers (PAPER_LAYERS), those the network has
            layers = [k for k in PAPER_LAYERS[name] if k == STEM or k <= n]
        bad = [k for k in layers if k != STEM and k > n]
        if bad:
            raise ValueError(f"train.mix layers {bad}: {type(model).__name__} has {n} feature_info stage(s); valid "
                             f"layers are 0 (the input), {STEM} (the input of stage 1) and 1 to {n}: "
                             + ", ".join(f"{i + 1}={f['module']}" for i, f in enumerate(info)))
        modules = dict(model.named_modules())
        self.layers = list(layers)
        for k in self.layers:
            if k == 0:
                continue
            mod_name = info[0 if k == STEM else k - 1]["module"]
            if mod_name not in modules:
                raise ValueError(f"{type(model).__name__}.feature_info names {mod_name!r}, which is not a submodule")
            self.names[k] = mod_name
            if k == STEM:  # the input of stage 1's module: a pre-hook replaces it
                self._handles.append(modules[mod_name].register_forward_pre_hook(self._pre_hook(mod_name)))
            else:
                self._handles.append(modules[mod_name].register_forward_hook(self._hook(mod_name)))
        if image_size is not None and in_channels is not None and self.names:
            self._probe_shapes(image_size, in_channels)

    def _probe_shapes(self, image_size, in_channels) -> None:
        """One eval-mode forward of a single blank image finds each hooked layer's shape."""
        seen: dict[tuple[str, str], tuple[int, ...]] = {}

        def shape_of(t) -> tuple[int, ...]:
            return tuple(t.shape[1:]) if isinstance(t, torch.Tensor) else ()

        def record(name):
            def hook(module, inputs, output) -> None:
                seen.setdefault(("out", name), shape_of(output))
            return hook

        def record_in(name):
            def hook(module, inputs) -> None:
                seen.setdefault(("in", name), shape_of(inputs[0]) if len(inputs) == 1 else ())
            return hook

        modules = dict(self.model.named_modules())
        handles = [modules[m].register_forward_pre_hook(record_in(m)) if k == STEM
                   else modules[m].register_forward_hook(record(m)) for k, m in self.names.items()]
        was = self.model.training
        device = next(self.model.parameters()).device
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(torch.zeros(1, in_channels, *image_size, device=device))
        finally:
            self.model.train(was)
            for h in handles:
                h.remove()
        for k, m in self.names.items():
            what = f"the input of stage 1 ({m})" if k == STEM else f"stage {k} ({m})"
            shape = seen.get(("in" if k == STEM else "out", m))
            if shape is None:
                raise ValueError(f"train.mix {self.spec.name}: {what} does not run in the forward pass")
            if shape == ():
                raise ValueError(f"train.mix {self.spec.name}: {what} is not one tensor")
            if self.spec.name == "patchup" and len(shape) != 3:
                raise ValueError(f"train.mix patchup masks blocks of (C, H, W) feature maps, but {what} of "
                                 f"{type(self.model).__name__} gives {tuple(shape)}; choose other layers, or use "
                                 "manifold_mixup")
            self.shapes[k] = shape

    def _hook(self, mod_name: str):
        def hook(module, inputs, output):
            if self._armed is None or self._armed[0] != ("out", mod_name) or self._fired:
                return None
            self._fired = True
            return self._armed[1](output)

        return hook

    def _pre_hook(self, mod_name: str):
        def hook(module, inputs):
            if self._armed is None or self._armed[0] != ("in", mod_name) or self._fired:
                return None
            self._fired = True
            return (self._armed[1](inputs[0]), *inputs[1:])

        return hook

    def _arm_layer(self, k, fn: Callable):
        """Arm the hook of layer ``k`` (a stage's output, or the stem's: stage 1's input) with ``fn``."""
        return self._arm(("in" if k == STEM else "out", self.names[k]), fn)

    @contextlib.contextmanager
    def _arm(self, where: tuple[str, str], fn: Callable):
        self._armed, self._fired = (where, fn), False
        try:
            yield
            if not self._fired:
                raise RuntimeError(f"mixing at the {where[0]}put of {where[1]} was armed but the module did not run")
        finally:
            self._armed = None

    def remove(self) -> None:
        """Remove the forward hooks from the network."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _grids(self, size: tuple[int, int]) -> list[int]:
        return [n for n in self.p["grid"] if size[0] % n == 0 and size[1] % n == 0]

    # -------------------------------------------------------------- one batch
    def generators(self, epoch: int, step: int) -> tuple[np.random.Generator, np.random.Generator]:
        """(shared, local): the batch's draws from (seed, epoch, step); the partners from (..., rank)."""
        base = [int(self.seed), int(epoch), int(step), _STREAM]
        return np.random.default_rng(base), np.random.default_rng(base + [int(self.rank) + 1])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, step: int) -> Mixed:
        """Mix step ``step`` of epoch ``epoch``; with probability 1 - prob the batch is returned unmixed."""
        shared, local = self.generators(epoch, step)
        b = images.shape[0]
        apply = shared.random() < self.p["prob"]
        lam = float(shared.beta(self.p["alpha"], self.p["alpha"]))
        perm = torch.from_numpy(local.permutation(b)).to(images.device)
        if not apply or b == 0:
            return Mixed(images, labels, contextlib.nullcontext(), {"applied": False})
        info = {"applied": True, "lam": lam, "perm": perm}
        method = getattr(self, "_" + self.spec.name)
        x, weight_a, context = method(images, labels, lam, perm, shared, info)
        info["weight_a"] = weight_a
        if self.spec.name == "patchup":  # the authors' loss terms (patchup_target)
            target = patchup_target(labels, perm, info["unchanged"], info["lam"], info["soft"], self.num_classes,
                                    self.p["loss"])
        else:
            target = soft_targets(labels, perm, weight_a, self.num_classes)
        return Mixed(x, target, context, info)

    def _mixup(self, x, labels, lam, perm, rng, info):
        return lam * x + (1 - lam) * x[perm], lam, contextlib.nullcontext()

    def _cutmix(self, x, labels, lam, perm, rng, info):
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = cutmix_box(lam, h, w, rng)
        out = x.clone()
        out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        info["box"] = (y0, y1, x0, x1)
        return out, 1 - (y1 - y0) * (x1 - x0) / (h * w), contextlib.nullcontext()

    def _draw_layer(self, rng):
        k = self.layers[int(rng.integers(len(self.layers)))]
        return k if k == STEM else int(k)

    def _manifold_mixup(self, x, labels, lam, perm, rng, info):
        k = self._draw_layer(rng)
        info["layer"] = k
        if k == 0:
            return lam * x + (1 - lam) * x[perm], lam, contextlib.nullcontext()
        info["module"] = self.names[k]
        return x, lam, self._arm_layer(k, lambda h: lam * h + (1 - lam) * h[perm])

    def _patchup(self, x, labels, lam, perm, rng, info):
        k = self._draw_layer(rng)
        if k == 0:  # the authors' input layer: CutMix with its own lam ~ Beta(1, 1)
            lam_c = float(rng.beta(1.0, 1.0))
            out, unchanged, _ = self._cutmix(x, labels, lam_c, perm, rng, info)
            info.update(layer=0, lam=lam_c, unchanged=unchanged, soft=False)
            return out, unchanged, contextlib.nullcontext()
        shape = self.shapes.get(k)
        if shape is None:
            raise RuntimeError("Mixer(patchup) needs image_size and in_channels to know the feature-map shapes")
        mask = patchup_mask(shape, self.p["gamma"], self.p["block_size"], rng).to(x.device)  # (C, H, W)
        changed = float(mask.mean())
        soft = self.p["mode"] == "soft"
        info.update(layer=k, module=self.names[k], mask=mask, changed=changed, unchanged=1 - changed, soft=soft)
        keep = mask == 0
        if not soft:  # swap the blocks: y_b gets the share of the features swapped in
            def fn(h):
                return torch.where(keep, h, h[perm])
            weight = 1 - changed
        else:  # interpolate inside the blocks: y_b gets (1 - lam) of that share
            def fn(h):
                return torch.where(keep, h, lam * h + (1 - lam) * h[perm])
            weight = 1 - (1 - lam) * changed
        return x, weight, self._arm_layer(k, fn)

    def _puzzlemix(self, x, labels, lam, perm, rng, info):
        h, w = x.shape[-2:]
        grids = self._grids((h, w))
        if not grids:
            raise ValueError(f"train.mix puzzlemix: none of the grid sizes {self.p['grid']} divides {h}x{w}")
        n = int(rng.choice(grids))
        sal = saliency(self.model, x, labels)  # (B, H, W)
        pooled = F.avg_pool2d(sal[:, None], (h // n, w // n)).flatten(1).double()  # (B, n^2)
        pooled = pooled / pooled.sum(1, keepdim=True).clamp_min(1e-12)
        sal_a, sal_b = pooled, pooled[perm]
        z = puzzle_mask(sal_a, sal_b, round(lam * n * n))  # 1: the block shows x_a
        xa, xb = _blocks(x, n), _blocks(x[perm], n)
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        if self.p["transport"]:
            plan_a = puzzle_transport(sal_a, z, self.p["eps"])
            plan_b = puzzle_transport(sal_b, 1 - z, self.p["eps"])
            xa, xb = xa[rows, plan_a], xb[rows, plan_b]
            info.update(plan_a=plan_a, plan_b=plan_b)
        zb = z.to(x.dtype)[:, :, None, None, None]
        out = _unblocks(zb * xa + (1 - zb) * xb, n)
        info.update(grid=n, mask=z)
        return out, z.mean(1).float(), contextlib.nullcontext()


def build_mixer(mix: dict | None, model: nn.Module, num_classes: int, *, seed: int, rank: int,
                image_size: tuple[int, int], in_channels: int, compiled: bool = False) -> Mixer | None:
    """The `Mixer` a run's ``train.mix`` asks for (None when it is null); errors name what does not fit."""
    spec = parse_mix(mix)
    if spec is None:
        return None
    if compiled and spec.name in _HIDDEN:
        raise ValueError(f"train.mix {spec.name} mixes inside the network with forward hooks, which torch.compile "
                         "does not follow: drop model.compile (--compile) or use mixup, cutmix or puzzlemix")
    return Mixer(spec, model, num_classes, seed=seed, rank=rank, image_size=tuple(image_size),
                 in_channels=in_channels)
