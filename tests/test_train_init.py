"""Initialisation schemes as a run option (``model.init``) and VGG's configuration-A transfer (``model.init_from``).

Expected statistics are the papers' formulas with fans counted by hand from the layer shapes (not read from the
code): Glorot & Bengio 2010 eq. 16, U(+-sqrt(6 / (fan_in + fan_out))) (variance 2 / (fan_in + fan_out)); He et al.
2015 eq. 10, N(0, 2 / fan_in) (eq. 14's backward variant with fan_out); AlexNet Sec. 5 / VGG Sec. 3.1, N(0, 0.01^2).
A sample's std must be within 6 standard errors (sqrt(1 / 2n) relative) of the formula; a normal must show its
tails (4.6% of values beyond 2 sigma) and a uniform must stay inside its bound and reach close to it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from torch import nn

import cnnzoo
from cnnzoo.train import Trainer, apply_overrides, default_config
from cnnzoo.train.init import apply_init, init_spec, match_layers, weight_layers
from test_cli_errors import assert_one_clear_error, run_cli, snapshot


def sample(t: torch.Tensor) -> torch.Tensor:
    return t.detach().flatten().double()


def assert_normal(t: torch.Tensor, std: float, what: str) -> None:
    x = sample(t)
    n = x.numel()
    assert n >= 2000, f"{what}: too few values ({n}) for the statistics"
    assert abs(x.mean().item()) <= 6 * std / math.sqrt(n), f"{what}: mean {x.mean().item():.3g}"
    assert abs(x.std().item() / std - 1) <= 6 / math.sqrt(2 * n), f"{what}: std {x.std().item():.5g}, not {std:.5g}"
    assert 0.03 < (x.abs() > 2 * std).double().mean().item() < 0.065, f"{what}: not normal tails"


def assert_uniform(t: torch.Tensor, bound: float, what: str) -> None:
    x = sample(t)
    n = x.numel()
    assert n >= 2000, f"{what}: too few values ({n}) for the statistics"
    assert x.abs().max() <= bound * (1 + 1e-6), f"{what}: {x.abs().max().item():.5g} outside +-{bound:.5g}"
    assert x.abs().max() >= bound * (1 - 8 / n), f"{what}: max {x.abs().max().item():.5g} far inside +-{bound:.5g}"
    assert abs(x.std().item() / (bound / math.sqrt(3)) - 1) <= 6 / math.sqrt(n), f"{what}: std {x.std().item():.5g}"


def build(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, **options)


def module(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


# Layers whose fans are counted by hand from the papers' tables:
# resnet20_cifar: layer3.2.conv2 is a 3x3 conv, 64 -> 64 (He et al. 2016 Sec. 4.2: widths 16, 32, 64):
#   fan_in = 64 * 3 * 3 = 576, fan_out = 64 * 3 * 3 = 576.
# lenet5: classifier.1 is the 400 -> 120 layer (16 maps of 5x5 in, 120 units out): fan_in 400, fan_out 120.
# mobilenet_v2: the last block's depthwise 3x3 conv has 960 channels (Table 2: 160 x 6), groups 960:
#   fan_in = 1 * 3 * 3 = 9 (one input channel per group), fan_out = 960 * 3 * 3 = 8640 (torch's count).
RESNET_CONV, LENET_FC = ("resnet20_cifar", "layer3.2.conv2", 576, 576), ("lenet5", "classifier.1", 400, 120)


@pytest.mark.parametrize("net, layer, fan_in, fan_out", [RESNET_CONV, LENET_FC], ids=["conv", "linear"])
def test_xavier_uniform_and_normal_follow_glorot(net, layer, fan_in, fan_out):
    m = build(net)
    apply_init(m, "xavier")
    assert_uniform(module(m, layer).weight, math.sqrt(6 / (fan_in + fan_out)), f"{net}.{layer}")
    apply_init(m, {"name": "xavier", "distribution": "normal", "gain": 2.0})
    assert_normal(module(m, layer).weight, 2.0 * math.sqrt(2 / (fan_in + fan_out)), f"{net}.{layer}")


@pytest.mark.parametrize("net, layer, fan_in, fan_out", [RESNET_CONV, LENET_FC], ids=["conv", "linear"])
def test_kaiming_follows_he_et_al(net, layer, fan_in, fan_out):
    m = build(net)
    apply_init(m, "kaiming")  # defaults: fan_in, relu, normal: eq. 10, std sqrt(2 / fan_in)
    assert_normal(module(m, layer).weight, math.sqrt(2 / fan_in), f"{net}.{layer}")
    apply_init(m, {"name": "kaiming", "mode": "fan_out"})
    assert_normal(module(m, layer).weight, math.sqrt(2 / fan_out), f"{net}.{layer}")
    # leaky ReLU with slope a: gain sqrt(2 / (1 + a^2)); uniform: bound gain * sqrt(3 / fan)
    apply_init(m, {"name": "kaiming", "nonlinearity": "leaky_relu", "a": 0.25, "distribution": "uniform"})
    assert_uniform(module(m, layer).weight, math.sqrt(2 / (1 + 0.25**2)) * math.sqrt(3 / fan_in), f"{net}.{layer}")


def test_kaiming_fan_out_of_a_depthwise_conv_counts_torchs_way():
    m = build("mobilenet_v2")
    dw = [n for n, x in m.named_modules() if isinstance(x, nn.Conv2d) and x.groups == 960]
    assert dw, "no 960-channel depthwise conv in mobilenet_v2"
    apply_init(m, {"name": "kaiming", "mode": "fan_out"})
    assert_normal(module(m, dw[0]).weight, math.sqrt(2 / 8640), dw[0])
    apply_init(m, {"name": "kaiming", "mode": "fan_in"})
    w = module(m, dw[0]).weight  # 8640 values of std sqrt(2 / 9)
    assert_normal(w, math.sqrt(2 / 9), dw[0])


def test_normal_scheme_zeroes_biases_and_leaves_norm_layers_alone():
    m = build("resnet20_cifar")
    norms = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:  # as if trained: BN must come out exactly as it went in
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1), bn.running_mean.uniform_(-1, 1)
    before = {k: v.clone() for k, v in m.state_dict().items() if "bn" in k}
    report = apply_init(m, {"name": "normal", "std": 0.01})
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a BatchNorm tensor changed"
    assert_normal(module(m, "layer3.2.conv2").weight, 0.01, "layer3.2.conv2")
    assert torch.equal(m.head.fc.bias, torch.zeros(10)), "the fc bias is not zeroed"
    convs = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert report["layers"] == len(convs) == 20  # 19 convs and the fc: "20 layers"


def test_the_papers_constant_biases_are_kept():
    # AlexNet Sec. 5: biases 1 in conv2, conv4, conv5, fc6, fc7, 0 in conv1, conv3, fc8 (alexnet_paper's own init);
    # the normal scheme redraws every weight but keeps those constants.
    m = build("alexnet_paper", num_classes=10)
    convs = [x for x in m.features if isinstance(x, nn.Conv2d)]
    fcs = [x for x in m.classifier if isinstance(x, nn.Linear)]
    with torch.no_grad():
        convs[0].bias.uniform_(-1, 1)  # a bias that is not one constant is zeroed
    report = apply_init(m, {"name": "normal", "std": 0.02})
    for i, (layer, value) in enumerate(zip(convs + fcs, (0, 1, 0, 1, 1, 1, 1, 0))):
        assert torch.equal(layer.bias, torch.full_like(layer.bias, value)), f"layer {i}: bias not {value}"
    assert_normal(convs[2].weight, 0.02, "conv3")
    assert len(report["kept_biases"]) == 5
    # Highway networks: the gate bias -2 of Srivastava et al. (gates start closed) survives a Xavier init
    h = build("highway_fc_mnist")
    gates = [n for n, x in h.named_modules() if isinstance(x, nn.Linear) and bool((x.bias == -2).all())]
    assert gates
    apply_init(h, "xavier")
    assert all(bool((module(h, n).bias == -2).all()) for n in gates)


def test_vit_packed_qkv_is_three_linear_maps():
    m = build("vit_tiny_patch4_32")
    attn = [x for x in m.modules() if hasattr(x, "in_proj_weight")]
    apply_init(m, "xavier")
    d = attn[0].in_proj_weight.shape[1]  # 192: each of W^Q, W^K, W^V is D x D, fan_in = fan_out = D
    for part in attn[0].in_proj_weight.detach().chunk(3):
        assert part.abs().max() <= math.sqrt(6 / (2 * d)) * (1 + 1e-6)
    assert_uniform(torch.cat([a.in_proj_weight.detach().flatten() for a in attn]), math.sqrt(6 / (2 * d)), "qkv")


def test_paper_scheme_changes_nothing_and_draws_nothing():
    a, b = build("resnet20_cifar"), build("resnet20_cifar")
    torch.manual_seed(1)
    apply_init(a, "paper")
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(1)), "the paper scheme consumed random numbers"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_init_spec_fills_defaults_and_names_bad_values():
    assert init_spec("kaiming") == {"name": "kaiming", "mode": "fan_in", "nonlinearity": "relu", "a": 0.0,
                                    "distribution": "normal"}
    assert init_spec({"name": "normal", "std": 0.02}) == {"name": "normal", "std": 0.02}
    for bad, words in [("he", ("paper, normal, xavier, kaiming", "'he'")),
                       ({"name": "normal", "sd": 1}, ("unknown parameter(s) sd", "valid: std")),
                       ({"name": "normal", "std": -1}, ("std must be positive",)),
                       ({"name": "kaiming", "mode": "in"}, ("fan_in, fan_out", "'in'")),
                       ({"name": "kaiming", "a": 0.1}, ("leaky_relu only",)),
                       ({"name": "paper", "std": 0.1}, ("unknown parameter(s) std",))]:
        with pytest.raises(ValueError) as e:
            init_spec(bad)
        assert all(w in str(e.value) for w in words), str(e.value)


# ---------------------------------------------------------------------------------------- in a run
def small_cfg(run_dir, *extra):
    return apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=1", "train.limit_batches=2", "data.batch_size=32", "train.device=cpu",
        f"train.run_dir={run_dir}", *extra])


def test_the_choice_is_recorded_in_config_yaml_and_run_json(tmp_path, capsys):
    trainer = Trainer(small_cfg(tmp_path / "run", "model.init={name: kaiming, mode: fan_out}"))  # builds, no training
    trainer.close()
    spec = {"name": "kaiming", "mode": "fan_out", "nonlinearity": "relu", "a": 0.0, "distribution": "normal"}
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["init"] == spec  # all filled in
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["init"]["scheme"] == spec and info["init"]["layers"] == 5  # lenet5: 2 convs, 3 linear layers
    assert "init: Kaiming/He normal, fan_out, relu gain 1.414" in capsys.readouterr().out
    # the network did start from that scheme: classifier.1 is 400 -> 120, fan_out 120
    assert_normal(module(trainer.model, "classifier.1").weight, math.sqrt(2 / 120), "classifier.1")
    # the --init flag sets the same key (its parameters at their defaults)
    from cnnzoo.cli.main import build_parser
    from cnnzoo.cli.train import build_config

    args = build_parser().parse_args(["train", "lenet5", "--init", "xavier"])
    assert build_config(args).model.init == {"name": "xavier", "distribution": "uniform", "gain": 1.0}


def test_init_and_weights_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"model.init starts a network from scratch.*model.weights"):
        small_cfg(tmp_path / "r", "model.init=xavier", "model.weights=x.safetensors")


# ---------------------------------------------------------------------------------------- transfer
def test_vgg_rule_copies_a_four_convs_and_three_fcs_into_d():
    """Simonyan & Zisserman Sec. 3.1, with the layer positions of Table 1 counted by hand: configuration A is
    conv3-64, pool, conv3-128, pool, conv3-256 x2, ... so its first four convs are features.0, .3, .6, .8 (each
    conv followed by its ReLU); D is conv3-64 x2, pool, conv3-128 x2, pool, conv3-256 x3, ..., whose first conv of
    each shape is features.0 (3->64), .5 (64->128), .10 (128->256) and .12 (256->256)."""
    with torch.device("meta"):
        a, d = cnnzoo.create_model("vgg11"), cnnzoo.create_model("vgg16")
    pairs = [(s.name, t.name) for s, t in match_layers(weight_layers(a), weight_layers(d), vgg=True)]
    assert pairs == [("features.0", "features.0"), ("features.3", "features.5"), ("features.6", "features.10"),
                     ("features.8", "features.12"), ("classifier.6", "classifier.6"), ("classifier.3", "classifier.3"),
                     ("classifier.0", "classifier.0")]


def _trained(tmp_path, name, *extra):
    run = tmp_path / f"src-{name}"
    code, _, err = run_cli(["train", name, "--epochs", "1", "--limit-batches", "2", "--batch-size", "16",
                            "--run-dir", str(run), "-q", *extra])
    assert code == 0, err
    return run


def test_init_from_generic_rule_resnet20_into_resnet56(tmp_path, capsys):
    """The generic rule: resnet20_cifar's 19 convs (3 stages of 3 blocks) land in order on resnet56's convs of the
    same shape (stage 1: its first six 16->16 convs; stage 2 opens with a 16->32 conv, ...); the fc goes to the fc."""
    src = _trained(tmp_path, "resnet20_cifar")
    resnet56 = ("model.name=resnet56_cifar", "train.limit_batches=1", "data.batch_size=16")
    fresh = Trainer(small_cfg(tmp_path / "fresh", *resnet56), verbose=False)
    started = Trainer(small_cfg(tmp_path / "dst", *resnet56, f"model.init_from={src}"))
    fresh.close(), started.close()
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "dst" / "run.json").read_text())["init"]["init_from"]
    copied = {c["to"]: c["from"] for c in report["copied"]}
    assert copied["conv1"] == "conv1" and copied["head.fc"] == "head.fc"
    assert [copied[f"layer1.{b}.conv{i}"] for b in range(3) for i in (1, 2)] == \
        [f"layer1.{b}.conv{i}" for b in range(3) for i in (1, 2)]
    assert copied["layer2.0.conv1"] == "layer2.0.conv1" and "layer1.3.conv1" in report["fresh"]
    assert len(report["copied"]) == 20 and len(report["fresh"]) == 56 - 20 and report["not_copied"] == []
    assert "copied 20 layer(s) of resnet20_cifar into resnet56_cifar" in out and "layer1.3.conv1" in out
    # the copied tensors are the source's, the others what the run would have had without --init-from
    from cnnzoo.train.checkpoint import resolve_checkpoint
    from cnnzoo.weights import read_checkpoint

    assert report["source"] == str(resolve_checkpoint(src))
    source, _ = read_checkpoint(src)
    got, base = started.model.state_dict(), fresh.model.state_dict()
    for to, frm in copied.items():
        assert torch.equal(got[f"{to}.weight"], source[f"{frm}.weight"]), to
    for name in report["fresh"]:
        assert torch.equal(got[f"{name}.weight"], base[f"{name}.weight"]), name
    bn = [k for k in got if ".bn" in k or k.startswith("bn")]
    assert bn and all(torch.equal(got[k], base[k]) for k in bn), "BatchNorm tensors were copied"


@pytest.mark.slow
def test_init_from_vgg11_run_into_vgg16(tmp_path):
    """The paper's procedure end to end: a (tiny) trained configuration A starts configuration D."""
    src = _trained(tmp_path, "vgg11", "--set", "data.input_size=32", "--batch-size", "4", "--lr", "0.001")
    common = ["train.limit_batches=1", "data.batch_size=4", "data.input_size=32", "model.name=vgg16"]
    fresh = Trainer(small_cfg(tmp_path / "fresh", *common), verbose=False)
    code, out, err = run_cli(["train", "vgg16", "--init-from", str(src), "--epochs", "1", "--limit-batches", "1",
                              "--batch-size", "4", "--set", "data.input_size=32", "--run-dir", str(tmp_path / "d")])
    assert code == 0, err
    report = json.loads((tmp_path / "d" / "run.json").read_text())["init"]["init_from"]
    assert [(c["from"], c["to"]) for c in report["copied"]] == [
        ("features.0", "features.0"), ("features.3", "features.5"), ("features.6", "features.10"),
        ("features.8", "features.12"), ("classifier.0", "classifier.0"), ("classifier.3", "classifier.3"),
        ("classifier.6", "classifier.6")]
    assert len(report["fresh"]) == 16 - 7 and "features.2" in report["fresh"] and "Sec. 3.1" in report["rule"]
    assert "features.3->features.5" in out
    started = Trainer(small_cfg(tmp_path / "started", *common, f"model.init_from={src}"), verbose=False)
    from cnnzoo.weights import read_checkpoint

    source, _ = read_checkpoint(src)
    got, base = started.model.state_dict(), fresh.model.state_dict()
    for c in report["copied"]:
        for p in ("weight", "bias"):
            assert torch.equal(got[f"{c['to']}.{p}"], source[f"{c['from']}.{p}"]), c
    for name in report["fresh"]:
        assert torch.equal(got[f"{name}.weight"], base[f"{name}.weight"]), name
    fresh.close(), started.close()


@pytest.mark.parametrize("argv, expect", [
    (["train", "lenet5", "--init", "he"], ("--init", "paper, normal, xavier, kaiming", "'he'")),
    (["train", "lenet5", "--set", "model.init={name: normal, sd: 0.1}"], ("unknown parameter(s) sd", "std")),
    (["train", "lenet5", "--init-from", "nothere"], ("nothere", "does not exist")),
    (["train", "lenet5", "--init-from", "empty"], ("empty", "not a cnnzoo run")),
    (["train", "lenet5", "--init-from", "empty", "--weights", "w.safetensors"],
     ("--init-from starts a network from scratch", "--weights")),
    (["train", "--resume", "empty", "--init", "xavier"], ("--resume", "only the run directory")),
], ids=["init-name", "init-param", "from-missing", "from-not-run", "from-and-weights", "resume-init"])
def test_bad_init_options_are_one_clear_error(tmp_path, monkeypatch, argv, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    before = snapshot(tmp_path)
    assert_one_clear_error(*run_cli(argv), expect)
    assert snapshot(tmp_path) == before


def test_init_from_a_network_with_nothing_in_common_is_an_error(tmp_path, monkeypatch):
    src = _trained(tmp_path, "lenet5")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = run_cli(["train", "resnet20_cifar", "--init-from", str(src), "--run-dir", "dst"])
    assert_one_clear_error(code, out, err, ("no conv or linear layer of its lenet5", "nothing to copy"))
    assert snapshot(tmp_path) == before
