"""MobileNet v1, v2, v3 (cnnzoo.models.mobilenet_v1/_v2/_v3): the papers' tables, the options, the checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.cli.main import main
from cnnzoo.layers import HardSigmoid, HardSigmoidKeras, HardSwish, InvertedResidual
from cnnzoo.models.mobilenet_v2 import from_torchvision, to_torchvision
from layout_fill import filled_state_dict, load_layout


def meta(name: str, **opts) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def macs(name: str, **opts) -> int:
    size = cnnzoo.get_card(name).input_size
    return summarize(meta(name, **opts), size).macs


# --- MobileNet v1 ---------------------------------------------------------------------------------------------------

# Tables 6 and 7: registered name -> (million multiply-adds, million parameters) as printed (rounded).
TABLE_6_7 = {
    "mobilenet_v1": (569, 4.2),
    "mobilenet_v1_075": (325, 2.6),
    "mobilenet_v1_050": (149, 1.3),
    "mobilenet_v1_025": (41, 0.5),
    "mobilenet_v1_100_192": (418, 4.2),
    "mobilenet_v1_100_160": (290, 4.2),
    "mobilenet_v1_100_128": (186, 4.2),
}


@pytest.mark.parametrize("name", sorted(TABLE_6_7))
def test_mobilenet_v1_width_and_resolution_multipliers_match_tables_6_and_7(name):
    """Each variant at its card's input size: the paper's mult-adds within 1%, its parameters to the printed 0.1M."""
    mult_adds, params = TABLE_6_7[name]
    assert macs(name) / 1e6 == pytest.approx(mult_adds, rel=0.01)
    assert abs(n_params(meta(name)) / 1e6 - params) <= 0.05


def test_mobilenet_v1_exact_count_and_28_layers():
    model = meta("mobilenet_v1")
    assert n_params(model) == 4_231_976  # the exact 1000-class figure (osmr; timm mobilenetv1_100)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # Sec. 3: "Counting depthwise and pointwise convolutions as separate layers, MobileNet has 28 layers."
    assert len(layers) == 28
    assert sum(1 for m in layers if isinstance(m, nn.Conv2d) and m.groups > 1) == 13
    assert model.blocks[-1][-1].conv_dw.stride == (1, 1)  # Table 1's "s2" on the 7x7 map is a typo


def test_mobilenet_v1_table_2_resource_split():
    """Table 2: where the mult-adds and parameters are, by layer type (parameters: weights only)."""
    model = meta("mobilenet_v1")
    rows = summarize(model, (3, 224, 224)).layers

    def kind(m: nn.Module) -> str:
        if isinstance(m, nn.Linear):
            return "fc"
        return "dw" if m.groups > 1 else ("1x1" if m.kernel_size == (1, 1) else "conv")

    modules = dict(model.named_modules())
    mult_adds: dict[str, int] = {}
    weights: dict[str, int] = {}
    for r in rows:
        m = modules.get(r.name)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            mult_adds[kind(m)] = mult_adds.get(kind(m), 0) + r.macs
            weights[kind(m)] = weights.get(kind(m), 0) + m.weight.numel()
    total_macs, total_w = sum(mult_adds.values()), sum(weights.values())
    pct = {k: round(100 * v / total_macs, 2) for k, v in mult_adds.items()}
    # The paper prints 1.19% for the full 3x3 conv: its four figures then sum to 99.29%; 1.91% (transposed
    # digits) makes them sum to 100.01%, and it is what 112 x 112 x 32 x 27 = 10.8M of 569M gives.
    assert pct == {"conv": 1.91, "dw": 3.06, "1x1": 94.86, "fc": 0.18}
    assert {k: round(100 * v / total_w, 2) for k, v in weights.items()} == {
        "conv": 0.02, "dw": 1.06, "1x1": 74.59, "fc": 24.33}


def test_mobilenet_v1_uses_relu_and_a_timm_file_gets_relu6():
    model = cnnzoo.create_model("mobilenet_v1", num_classes=10)
    acts = [type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    assert len(acts) == 27 and set(acts) == {nn.ReLU}  # after every conv (Fig. 3), the paper's ReLU
    cp = cnnzoo.get_card("mobilenet_v1").counterpart("timm")
    assert cp.name == "mobilenetv1_100" and dict(cp.options) == {"act_layer": "relu6"}
    with pytest.raises(ValueError, match="width_mult"):
        cnnzoo.create_model("mobilenet_v1", width_mult=0)


def test_mobilenet_v1_timm_keys():
    keys = [k for k, _, _ in load_layout("timm__mobilenetv1_100")["state_dict"]]
    assert list(meta("mobilenet_v1").state_dict()) == keys


# --- MobileNet v2 ---------------------------------------------------------------------------------------------------

def test_mobilenet_v2_table_2_structure():
    model = meta("mobilenet_v2")
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17  # sum of n in Table 2
    # Table 2 rows (t, c, n, s) expanded per block: output widths and strides
    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    expected = [(c, s if i == 0 else 1) for t, c, n, s in table for i in range(n)]
    assert [(b.out_channels, b.stride) for b in blocks] == expected
    # expansion t: the depthwise conv runs on t x the block's input width
    assert [b.block[-2][0].out_channels for b in blocks[:3]] == [32, 6 * 16, 6 * 24]
    # shortcuts exactly where stride is 1 and widths agree: n - 1 per row, 0+1+2+3+2+2+0
    assert sum(b.use_res_connect for b in blocks) == 10
    assert all(len(b.block[-1]) == 2 for b in blocks)  # linear bottlenecks: conv + BN, no ReLU6
    assert model.num_features == 1280 and model.features[0][0].out_channels == 32


def test_mobilenet_v2_width_multiplier_spares_the_last_conv_below_one():
    """Sec. 6.1: the multiplier is applied to all layers but the last conv when below 1 (1280 stays 1280)."""
    assert meta("mobilenet_v2", width_mult=0.5).num_features == 1280
    assert meta("mobilenet_v2", width_mult=1.4).num_features == 1792  # 1280 x 1.4
    half = meta("mobilenet_v2", width_mult=0.5)
    assert half.features[0][0].out_channels == 16 and half.features[17].out_channels == 160


def test_mobilenet_v2_torchvision_keys_convert_both_ways():
    tv_keys = [k for k, _, _ in load_layout("torchvision__mobilenet_v2")["state_dict"]]
    ours = meta("mobilenet_v2").state_dict()
    assert list(to_torchvision(ours)) == tv_keys
    assert set(from_torchvision(dict.fromkeys(tv_keys, torch.zeros(1)))) == set(ours)
    with pytest.raises(ValueError, match="MobileNetV2"):
        from_torchvision({"fc.weight": torch.zeros(1)})


# --- MobileNet v3 ---------------------------------------------------------------------------------------------------

def test_mobilenet_v3_hard_activations_are_the_papers_formulas():
    """Eq. 1-2: h-swish(x) = x ReLU6(x+3)/6, h-sigmoid(x) = ReLU6(x+3)/6, as the network's modules compute them."""
    model = cnnzoo.create_model("mobilenet_v3_large")
    x = torch.linspace(-6, 6, 241)
    relu6 = (x + 3).clamp(0, 6)
    swish = next(m for m in model.modules() if isinstance(m, HardSwish))
    gate = next(m for m in model.modules() if isinstance(m, HardSigmoid))
    assert torch.allclose(swish(x), x * relu6 / 6, atol=1e-6)
    assert torch.allclose(gate(x), relu6 / 6, atol=1e-6)
    # note 003's piecewise 0.2x + 0.5 (clipped at +-2.5) is a different function, offered as gate_layer
    keras = cnnzoo.create_model("mobilenet_v3_large", gate_layer="hard_sigmoid_keras")
    gates = [m for m in keras.modules() if isinstance(m, HardSigmoidKeras)]
    assert len(gates) == 8 and not any(isinstance(m, HardSigmoid) for m in keras.modules())
    piecewise = torch.where(x <= -2.5, 0.0, torch.where(x >= 2.5, 1.0, 0.2 * x + 0.5))
    assert torch.allclose(gates[0](x), piecewise, atol=1e-6)
    # and it changes what the network computes: the same weights (the layout fixture's fill), other logits
    filled = filled_state_dict(load_layout("torchvision__mobilenet_v3_large"))  # torchvision's keys are ours
    model.load_state_dict(filled)
    keras.load_state_dict(filled)
    paper, keras = model.eval(), keras.eval()
    inp = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = paper(inp), keras(inp)
    assert (a - b).abs().max() > 1e-2 * a.abs().max()
    with pytest.raises(ValueError, match="valid:.*hard_sigmoid"):
        cnnzoo.create_model("mobilenet_v3_small", gate_layer="hardsigmoid2")


# Tables 1 and 2, column by column: kernel, expansion, output, SE, NL, stride.
V3_TABLES = {
    "mobilenet_v3_large": [
        (3, 16, 16, 0, "RE", 1), (3, 64, 24, 0, "RE", 2), (3, 72, 24, 0, "RE", 1), (5, 72, 40, 1, "RE", 2),
        (5, 120, 40, 1, "RE", 1), (5, 120, 40, 1, "RE", 1), (3, 240, 80, 0, "HS", 2), (3, 200, 80, 0, "HS", 1),
        (3, 184, 80, 0, "HS", 1), (3, 184, 80, 0, "HS", 1), (3, 480, 112, 1, "HS", 1), (3, 672, 112, 1, "HS", 1),
        (5, 672, 160, 1, "HS", 2), (5, 960, 160, 1, "HS", 1), (5, 960, 160, 1, "HS", 1)],
    "mobilenet_v3_small": [
        (3, 16, 16, 1, "RE", 2), (3, 72, 24, 0, "RE", 2), (3, 88, 24, 0, "RE", 1), (5, 96, 40, 1, "HS", 2),
        (5, 240, 40, 1, "HS", 1), (5, 240, 40, 1, "HS", 1), (5, 120, 48, 1, "HS", 1), (5, 144, 48, 1, "HS", 1),
        (5, 288, 96, 1, "HS", 2), (5, 576, 96, 1, "HS", 1), (5, 576, 96, 1, "HS", 1)],
}


@pytest.mark.parametrize("name", sorted(V3_TABLES))
def test_mobilenet_v3_blocks_follow_tables_1_and_2(name):
    model = meta(name)
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    got = []
    for b in blocks:
        dw = b.block[-2 - int(hasattr(b.block[-2], "fc1"))][0]
        se = any(hasattr(m, "fc1") for m in b.block)
        units = [u for u in b.block if not hasattr(u, "fc1")]  # the convs' activations, not the SE's own ReLU
        acts = {type(m) for u in units for m in u.modules() if isinstance(m, (nn.ReLU, HardSwish))}
        nl = {frozenset({nn.ReLU}): "RE", frozenset({HardSwish}): "HS"}[frozenset(acts)]
        got.append((dw.kernel_size[0], dw.out_channels, b.out_channels, int(se), nl, b.stride))
    assert got == V3_TABLES[name]
    stem, last = model.features[0], model.features[-1]
    assert stem[0].out_channels == 16 and isinstance(stem[2], HardSwish) and isinstance(last[2], HardSwish)
    assert last[0].out_channels == {"mobilenet_v3_large": 960, "mobilenet_v3_small": 576}[name]


def test_mobilenet_v3_se_squeezes_to_a_quarter_of_the_expansion_rounded_to_8():
    """Sec. 5.3: SE width 1/4 of the expansion layer; make_divisible(C/4, 8) by hand for Large's SE blocks."""
    model = meta("mobilenet_v3_large")
    fc1 = [m.fc1.out_channels for m in model.modules() if hasattr(m, "fc1")]
    # expansions 72, 120, 120, 480, 672, 672, 960, 960 -> /4 = 18, 30, 30, 120, 168, 168, 240, 240 -> multiples of 8
    # (18 -> 16 would lose more than 10%, so 24)
    assert fc1 == [24, 32, 32, 120, 168, 168, 240, 240]


def test_mobilenet_v3_efficient_last_stage_pools_before_the_1280_layer():
    """Fig. 5: the 1x1 layer to 1280 runs on the pooled 1x1 map, so it costs 960 x 1280 mult-adds, not 49 times that."""
    s = summarize(meta("mobilenet_v3_large"), (3, 224, 224))
    assert s.find("classifier.0").macs == 960 * 1280 and s.find("classifier.3").macs == 1280 * 1000
    model = cnnzoo.create_model("mobilenet_v3_small")
    assert model.head_hidden_size == 1024
    model.reset_classifier(0)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1024)


# --- end to end -----------------------------------------------------------------------------------------------------

def test_cnnzoo_train_mobilenet_v2_runs_a_short_epoch_on_mnist5k(tmp_path):
    run = tmp_path / "mnv2"
    code = main(["train", "mobilenet_v2", "--data", "mnist5k", "--epochs", "1", "--limit-batches", "5",
                 "--set", "data.input_size=32", "--run-dir", str(run), "--no-download", "--quiet"])
    assert code == 0
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["count"] == 1000 and 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert any(p.suffix == ".safetensors" for p in run.rglob("*"))
