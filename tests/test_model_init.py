"""The initialisation of every family: what each paper notes (or, where they are silent, the reference library
the family follows) say the untrained weights are.

A weight tensor is checked against its distribution, not against the code: the sample mean and standard
deviation must match within 6 standard errors, a normal must show its tails (over 2% of values beyond 2 sigma:
4.6% for a normal, none for a uniform of the same sigma), and a uniform must stay inside its bound and reach
close to it. He et al. 2015 ("Delving Deep into Rectifiers", eq. 10 and its backward variant): N(0, 2 / fan)
with fan = C_in / groups x k x k (fan-in) or C_out x k x k (fan-out, as torch counts it). PyTorch's default
for nn.Conv2d / nn.Linear: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnzoo


def fan_in(m: nn.Module) -> int:
    return m.weight[0].numel()


def fan_out(m: nn.Module) -> int:
    return m.weight.shape[0] * m.weight[0, 0].numel() if m.weight.ndim > 2 else m.weight.shape[0]


def sample(t: torch.Tensor, limit: int = 200_000) -> torch.Tensor:
    """Up to ``limit`` values of ``t`` (an even stride through it), as float64 for the statistics."""
    t = t.detach().flatten()
    return t[:: max(1, t.numel() // limit)].double()


def assert_normal(t: torch.Tensor, std: float, what: str) -> None:
    t = sample(t)
    n = t.numel()
    if n < 64:  # too few values for statistics; a normal of this std still has no huge values
        assert t.abs().max() <= 6 * std, what
        return
    assert abs(t.mean().item()) <= 6 * std / math.sqrt(n), f"{what}: mean {t.mean().item():.3g} (std {std:.3g})"
    assert abs(t.std().item() / std - 1) <= 6 / math.sqrt(2 * n), f"{what}: std {t.std().item():.4g}, expected {std:.4g}"
    if n >= 500:
        assert (t.abs() > 2 * std).double().mean() > 0.02, f"{what}: no normal tails (a uniform?)"


def assert_uniform(t: torch.Tensor, bound: float, what: str) -> None:
    assert t.detach().abs().max() <= bound * (1 + 1e-6), f"{what}: {t.abs().max().item():.4g} outside +-{bound:.4g}"
    t = sample(t)
    n = t.numel()
    if n >= 20:  # P(max |x| < bound (1 - 8/n)) ~ e^-8 for n uniform values
        assert t.abs().max() >= bound * (1 - 8 / n), f"{what}: max {t.abs().max().item():.4g} far inside +-{bound:.4g}"
    if n >= 64:
        assert abs(t.std().item() / (bound / math.sqrt(3)) - 1) <= 3 / math.sqrt(n), f"{what}: std {t.std().item():.4g}"


def assert_const(t: torch.Tensor, value: float, what: str) -> None:
    assert torch.equal(t.detach(), torch.full_like(t, value)), f"{what}: not all {value}"


def check(t: torch.Tensor | None, rule, m: nn.Module, what: str) -> None:
    """``rule``: "he_fan_out" | "he_fan_in" | "torch" | "glorot" | ("normal", std) | ("uniform", bound) | a constant, or
    None: the parameter must not exist (e.g. no conv bias before a BN)."""
    if rule is None or t is None:  # a rule applies where the parameter exists
        assert rule is not None or t is None, f"{what}: unexpected"
        return
    if rule == "he_fan_out":
        assert_normal(t, math.sqrt(2 / fan_out(m)), what)
    elif rule == "he_fan_in":
        assert_normal(t, math.sqrt(2 / fan_in(m)), what)
    elif rule == "torch":
        assert_uniform(t, 1 / math.sqrt(fan_in(m)), what)
    elif rule == "glorot":  # Glorot & Bengio 2010, eq. 16: U(+-sqrt(6 / (fan_in + fan_out)))
        assert_uniform(t, math.sqrt(6 / (fan_in(m) + fan_out(m))), what)
    elif isinstance(rule, tuple) and rule[0] == "normal":
        assert_normal(t, rule[1], what)
    elif isinstance(rule, tuple) and rule[0] == "uniform":
        assert_uniform(t, rule[1], what)
    else:
        assert_const(t, float(rule), what)


def check_model(model: nn.Module, *, conv, conv_bias, linear, linear_bias, special: dict | None = None) -> None:
    """Every conv / linear / BN parameter of ``model`` against its rule; ``special`` overrides single parameters.

    BN (and its subclasses) start as the identity: weight 1, bias 0, unless ``special`` says otherwise.
    """
    special = dict(special or {})
    seen = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            rules = {"weight": conv, "bias": conv_bias} if not isinstance(m, nn.Linear) else {
                "weight": linear, "bias": linear_bias}
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            rules = {"weight": 1.0, "bias": 0.0}
        else:
            continue
        for pname, rule in rules.items():
            key = f"{name}.{pname}"
            check(getattr(m, pname, None), special.pop(key, rule), m, key)
            seen += 1
    assert seen and not special, f"special rules name no parameter: {sorted(special)}"


def build(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, **options)


# ----------------------------------------------------------------- families with one rule per layer kind

# registered name, options (small variants where the family allows), then the rules: conv weight, conv bias,
# linear weight, linear bias. Each line cites where the rule is stated.
FAMILIES = [
    # modern LeNet-5 and torchvision's AlexNet: PyTorch's defaults ("PyTorch's default init, as torchvision")
    ("lenet5", {}, "torch", "torch", "torch", "torch"),
    ("alexnet", {}, "torch", "torch", "torch", "torch"),
    # ZFNet notes: He's init for the convs (layers.init_conv_bn, fan-out), PyTorch's default elsewhere; init="paper":
    # "N(0, 0.01) (the paper's '1e-2'), biases 0"
    ("zfnet", {}, "he_fan_out", "torch", "torch", "torch"),
    ("zfnet", {"init": "paper"}, ("normal", 0.01), 0.0, ("normal", 0.01), 0.0),
    # VGG notes: "Kaiming-normal fan-out convs, N(0, 0.01) linears, zero biases" (torchvision's init)
    ("vgg11_bn", {}, "he_fan_out", 0.0, ("normal", 0.01), 0.0),
    # NiN notes: the authors' Caffe CIFAR-10 model (gist e56253735ef32c3c296d): every conv N(0, 0.05), biases 0;
    # init="glorot": Xavier-uniform; init="he": Kaiming-normal (fan-in, torch's default)
    ("nin_cifar", {}, ("normal", 0.05), 0.0, None, None),
    ("nin_cifar", {"init": "glorot"}, "glorot", 0.0, None, None),
    ("nin_cifar", {"init": "he"}, "he_fan_in", 0.0, None, None),
    # GoogLeNet: torchvision's truncated normal, std 0.01 (cut at +-2, i.e. 200 sigma), on convs and linears
    ("googlenet", {}, ("normal", 0.01), 0.0, ("normal", 0.01), 0.0),
    # Inception-v4 / Inception-ResNet: no init of their own, as timm's: PyTorch's defaults
    ("inception_v4", {}, "torch", "torch", "torch", "torch"),
    # BN-Inception: He fan-out convs (torchvision's GoogLeNet family of ResNet-style init), default linear
    ("bn_inception", {}, "he_fan_out", "torch", "torch", "torch"),
    # DenseNet notes: "Kaiming-normal conv init, BN weight 1 / bias 0, classifier bias 0, as torchvision"
    ("densenet121", {}, "he_fan_in", None, "torch", 0.0),
    ("densenet_bc100_k12_cifar", {}, "he_fan_in", None, "torch", 0.0),
    # ResNet notes: "He (fan-out) normal for convs, BN gamma 1 / beta 0, PyTorch's default for the fc"
    ("resnet18", {}, "he_fan_out", None, "torch", "torch"),
    ("resnet18", {"attn_layer": "se"}, "he_fan_out", "torch", "torch", "torch"),  # the SE 1x1 convs too
    ("resnet50", {"layers": (1, 1, 1, 1)}, "he_fan_out", None, "torch", "torch"),
    # CIFAR ResNet notes: "Convs are initialised with He's fan-out normal, BN with (1, 0)"
    ("resnet20_cifar", {}, "he_fan_out", None, "torch", "torch"),
    ("resnext29_8x64d_cifar", {"cardinality": 2, "base_width": 4}, "he_fan_out", None, "torch", "torch"),
    # pre-activation and wide ResNets: "the paper's He initialisation everywhere" (fan-out, as timm)
    ("preact_resnet18", {}, "he_fan_out", None, "torch", "torch"),
    ("preact_resnet164_cifar", {}, "he_fan_out", None, "torch", "torch"),
    ("wide_resnet16_8_cifar", {"widen_factor": 1}, "he_fan_out", None, "torch", "torch"),
    # SENet-154 and ResNeSt: the shared He fan-out / BN (1, 0) init (timm's), default fc and SE biases
    ("senet154", {"layers": (1, 1, 1, 1)}, "he_fan_out", "torch", "torch", "torch"),
    ("resnest50d", {"layers": (1, 1, 1, 1)}, "he_fan_out", "torch", "torch", "torch"),
]


@pytest.mark.parametrize("name,options,conv,conv_bias,linear,linear_bias", FAMILIES,
                         ids=[f"{f[0]}{'-' + '-'.join(map(str, f[1].values())) if f[1] else ''}" for f in FAMILIES])
def test_family_init(name, options, conv, conv_bias, linear, linear_bias):
    check_model(build(name, **options), conv=conv, conv_bias=conv_bias, linear=linear, linear_bias=linear_bias)


def test_inception_v3_init_is_torchvisions():
    """Truncated normals: std 0.1, except the aux head's second conv (0.01) and its fc (0.001); BN (1, 0)."""
    model = build("inception_v3")
    check_model(model, conv=("normal", 0.1), conv_bias=0.0, linear=("normal", 0.1), linear_bias=0.0,
                special={"AuxLogits.conv1.conv.weight": ("normal", 0.01), "AuxLogits.fc.weight": ("normal", 0.001)})


def test_alexnet_paper_init_is_section_5():
    """"We initialized the weights in each layer from a zero-mean Gaussian distribution with standard deviation
    0.01. We initialized the neuron biases in the second, fourth, and fifth convolutional layers, as well as in
    the fully-connected hidden layers, with the constant 1 ... the remaining layers with the constant 0.\""""
    model = build("alexnet_paper")
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    fcs = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 5 and len(fcs) == 3
    ones = [convs[1], convs[3], convs[4], fcs[0], fcs[1]]
    check_model(model, conv=("normal", 0.01), conv_bias=0.0, linear=("normal", 0.01), linear_bias=0.0,
                special={f"{n}.bias": 1.0 for n in ones})


# ----------------------------------------------------------------- zero-initialised residual branches

def _names(fmt: str, stages: int, blocks: int) -> list[str]:
    return [fmt.format(i=i, j=j) for i in range(stages) for j in range(blocks)]


ZERO_INIT = [
    # Goyal et al. 2017, Sec. 5.1: the last BN gamma of each residual branch starts at 0 (torchvision's option)
    ("resnet18", {"zero_init_last": True}, _names("layer{i}.{j}.bn2.weight", 5, 2)[2:]),
    ("resnet20_cifar", {"zero_init_last": True}, _names("layer{i}.{j}.bn2.weight", 4, 3)[3:]),
    ("resnext29_8x64d_cifar", {"zero_init_last": True, "cardinality": 2, "base_width": 4},
     _names("layer{i}.{j}.bn3.weight", 4, 3)[3:]),
    # pre-activation branches end in a conv: timm resnetv2's zero_init_last zeroes that conv
    ("preact_resnet18", {"zero_init_last": True}, _names("stages.{i}.blocks.{j}.conv2.weight", 4, 2)),
    ("wide_resnet16_8_cifar", {"zero_init_last": True, "widen_factor": 1},
     _names("stages.{i}.blocks.{j}.conv2.weight", 3, 2)),
    # every split-attention bottleneck, projection-shortcut blocks included (timm's ResNet builder)
    ("resnest50d", {"zero_init_last": True, "layers": (2, 1, 1, 1)},
     ["layer1.0.bn3.weight", "layer1.1.bn3.weight", "layer2.0.bn3.weight", "layer3.0.bn3.weight",
      "layer4.0.bn3.weight"]),
    ("senet154", {"zero_init_last": True, "layers": (1, 2, 1, 1)},
     ["layer1.0.bn3.weight", "layer2.0.bn3.weight", "layer2.1.bn3.weight", "layer3.0.bn3.weight",
      "layer4.0.bn3.weight"]),
]


@pytest.mark.parametrize("name,options,zeroed", ZERO_INIT, ids=[z[0] for z in ZERO_INIT])
def test_zero_init_of_the_last_layer_of_each_branch(name, options, zeroed):
    model = build(name, **options)
    params = dict(model.named_parameters())
    missing = [k for k in zeroed if k not in params]
    assert not missing, missing
    for key in zeroed:
        assert_const(params[key], 0.0, key)
    # everything else keeps the family's init (BN (1, 0), He fan-out convs; ResNeSt's attention 1x1 convs keep
    # torch's bias init, as timm's; so do SENet's SE 1x1 convs)
    conv_bias = "torch" if name.startswith(("resnest", "senet")) else None
    check_model(model, conv="he_fan_out", conv_bias=conv_bias, linear="torch", linear_bias="torch",
                special={k: 0.0 for k in zeroed})


# ----------------------------------------------------------------- the two papers with their own rules

def test_lenet5_paper_init_is_appendix_a():
    """Appendix A: weights and biases U(-2.4/F, 2.4/F), F the fan-in of the unit (C3's depends on Table I)."""
    model = build("lenet5_paper")
    f = model.features
    for what, layer, fan in [("C1", f.c1, 25), ("S2", f.s2, 4), ("S4", f.s4, 4), ("C5", model.c5, 400),
                             ("F6", model.f6, 120)]:
        assert_uniform(layer.weight, 2.4 / fan, f"{what}.weight")
        assert_uniform(layer.bias, 2.4 / fan, f"{what}.bias")
    # C3 probed from outside: an impulse on S2 map i at the centre of a 9x9 input gives map o's kernel for
    # (o, i), flipped, in the 5x5 output, plus the bias (the output for a zero input).
    with torch.no_grad():
        bias = f.c3(torch.zeros(1, 6, 9, 9))[0, :, 0, 0]
        kernels = []
        for i in range(6):
            x = torch.zeros(1, 6, 9, 9)
            x[0, i, 4, 4] = 1.0
            kernels.append(f.c3(x)[0] - bias[:, None, None])
    kernels = torch.stack(kernels, 1)  # (16 C3 maps, 6 S2 maps, 5, 5)
    inputs_per_map = [3] * 6 + [4] * 9 + [6]  # Table I: maps 0-5 see 3 S2 maps, 6-14 four, 15 all six
    for o, n in enumerate(inputs_per_map):
        connected = kernels[o][kernels[o].flatten(1).abs().amax(1) > 0]
        assert connected.shape[0] == n, f"C3 map {o}"
        assert_uniform(connected, 2.4 / (25 * n), f"C3 map {o} kernels")
        assert abs(bias[o]) <= 2.4 / (25 * n)


def test_highway_init_gates_start_closed():
    """Srivastava et al. 2015, Sec. 2.2: T's bias negative (here -2) so each layer starts by carrying its input;
    the conv network's H, T and plain convs He-normal (its notes), the FC network PyTorch's default."""
    conv = build("highway_conv_cifar")
    gates = {f"{n}.bias": -2.0 for n, m in conv.named_modules() if n.endswith(".gate")}
    assert len(gates) == 15  # 3 stages x 5 highway layers
    check_model(conv, conv="he_fan_in", conv_bias=0.0, linear="torch", linear_bias="torch", special=gates)
    fc = build("highway_fc_mnist", gate_bias=-3.0)
    gates = {f"{n}.bias": -3.0 for n, m in fc.named_modules() if n.endswith(".gate")}
    assert len(gates) == 9  # depth 10 = the plain first layer + 9 highway layers
    check_model(fc, conv=None, conv_bias=None, linear="torch", linear_bias="torch", special=gates)
