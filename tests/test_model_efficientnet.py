"""EfficientNet (cnnzoo.models.efficientnet): Table 1's baseline, B1-B7, compound scaling, the MBConv details."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.cli.main import main
from cnnzoo.layers import DropPath, InvertedResidual
from cnnzoo.models.efficientnet import compound_scaling


def meta(name: str, **opts) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


def blocks(model: nn.Module) -> list[InvertedResidual]:
    return [m for m in model.modules() if isinstance(m, InvertedResidual)]


def stage_summary(model: nn.Module) -> list[tuple[int, int, int, int, int]]:
    """(expansion, kernel, stride, channels, layers) of each stage, read off the built network."""
    out = []
    for stage in list(model.features)[1:-1]:
        first = stage[0]
        dw = first.block[-3][0]  # expand?, depthwise, SE, project
        out.append((dw.out_channels // first.in_channels, dw.kernel_size[0], first.stride, first.out_channels,
                    len(stage)))
    return out


def test_b0_is_table_1():
    model = meta("efficientnet_b0")
    # Table 1: MBConv1 k3x3 16 x1, MBConv6 k3x3 24 x2, MBConv6 k5x5 40 x2, MBConv6 k3x3 80 x3, MBConv6 k5x5 112 x3,
    # MBConv6 k5x5 192 x4, MBConv6 k3x3 320 x1; resolutions 112, 112, 56, 28, 14, 14, 7 -> strides 1, 2, 2, 2, 1, 2, 1
    assert stage_summary(model) == [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                                    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    stem, head = model.features[0], model.features[-1]
    assert (stem[0].out_channels, stem[0].stride, head[0].out_channels) == (32, (2, 2), 1280)
    assert {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))} == {nn.SiLU}  # swish


def test_mbconv_se_squeezes_the_block_input_by_4_with_swish():
    model = meta("efficientnet_b0")
    first, second = model.features[1][0], model.features[2][0]  # inputs 32 and 16 channels
    assert (first.block[1].fc1.in_channels, first.block[1].fc1.out_channels) == (32, 8)
    assert (second.block[2].fc1.in_channels, second.block[2].fc1.out_channels) == (96, 4)  # 16 / 4, not 96 / 4
    assert isinstance(second.block[2].act, nn.SiLU) and isinstance(second.block[2].gate, nn.Sigmoid)


def test_stochastic_depth_grows_linearly_to_0_2():
    """Survival probability 0.8 at the end; the rate of block i is 0.2 i / 16 (B0 has 16 blocks), on shortcuts only."""
    model = meta("efficientnet_b0")
    rates = [b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks(model)]
    shortcut = [b.use_res_connect for b in blocks(model)]
    assert len(rates) == 16
    assert rates == [0.2 * i / 16 if shortcut[i] else 0.0 for i in range(16)]
    assert sum(shortcut) == 9  # n - 1 per stage: 0+1+1+2+2+3+0
    assert all(r == 0 for r in (b.drop_path.p if isinstance(b.drop_path, DropPath) else 0 for b in
                                blocks(meta("efficientnet_b0", drop_path_rate=0.0))))


def test_zero_init_last_starts_every_residual_mbconv_as_its_shortcut():
    """Default: every BN scale 1 (torchvision); zero_init_last: the projection BN of the 9 residual blocks of B0
    (n - 1 per stage of Table 1) is 0, the other 7 blocks' and every other BN stay 1; the cards carry it as a hint."""
    def last_bn(b):
        return [m for m in b.block.modules() if isinstance(m, nn.BatchNorm2d)][-1]

    torch.manual_seed(0)
    default, zeroed = cnnzoo.create_model("efficientnet_b0"), cnnzoo.create_model("efficientnet_b0", zero_init_last=True)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in default.modules()
               if isinstance(m, nn.BatchNorm2d))
    last = {id(last_bn(b)): b.use_res_connect for b in blocks(zeroed)}
    assert sum(last.values()) == 9
    for m in zeroed.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.zeros_like(m.weight) if last.get(id(m)) else torch.ones_like(m.weight))
    # each residual block is then the identity: block output == block input
    x = torch.randn(2, 24, 8, 8)
    block = zeroed.features[2][1].eval()
    assert block.use_res_connect and torch.equal(block(x), x)
    assert all(cnnzoo.get_card(f"efficientnet_b{n}").recipe == {"model.options.zero_init_last": True} for n in range(8))


# The released TF code's (width, depth, resolution, dropout) per model, the values torchvision and timm use.
OFFICIAL = {0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3), 3: (1.2, 1.4, 300, 0.3),
            4: (1.4, 1.8, 380, 0.4), 5: (1.6, 2.2, 456, 0.4), 6: (1.8, 2.6, 528, 0.5), 7: (2.0, 3.1, 600, 0.5)}


@pytest.mark.parametrize("n", range(8))
def test_bn_cards_and_models_carry_their_coefficients(n):
    name = f"efficientnet_b{n}"
    width, depth, size, dropout = OFFICIAL[n]
    card, model = cnnzoo.get_card(name), meta(name)
    assert card.input_size == (3, size, size)
    assert f"width {width}, depth {depth}, {size} px, dropout {dropout}" in card.description
    assert model.classifier[0].p == dropout
    base = (1, 2, 2, 3, 3, 4, 1)  # Table 1's layers per stage, scaled by ceil(n x depth)
    assert [s[-1] for s in stage_summary(model)] == [math.ceil(k * depth) for k in base]
    if n:  # the card says how the official coefficients differ from alpha^phi, beta^phi, gamma^phi at phi = n
        note = next(d for d in card.deviations if "compound scaling" in d)
        assert f"phi={n}" in note and f"{1.2**n:.3f}" in note and f"{1.1**n:.3f}" in note


def test_compound_scaling_by_hand():
    """Eq. 3 with alpha = 1.2, beta = 1.1, gamma = 1.15: phi = 2 gives depth 1.44, width 1.21, 224 x 1.3225 = 296 px."""
    depth, width, size = compound_scaling(2)
    assert (depth, width, size) == (pytest.approx(1.44), pytest.approx(1.21), 296)
    assert compound_scaling(0) == (1.0, 1.0, 224)
    assert compound_scaling(1)[2] == 258  # 224 x 1.15 = 257.6
    assert 1.2 * 1.1**2 * 1.15**2 == pytest.approx(1.92, abs=0.01)  # the paper's constraint alpha beta^2 gamma^2 ~ 2
    with pytest.raises(ValueError, match="phi"):
        compound_scaling(float("nan"))


def test_phi_option_scales_b0_by_hand_computed_widths_and_depths():
    model = meta("efficientnet_b0", phi=1)
    # layers ceil(n x 1.2): 1 -> 2, 2 -> 3, 3 -> 4, 4 -> 5; widths make_divisible(c x 1.1, 8): 32 -> 35.2 -> 32,
    # 16 -> 17.6 -> 16, 24 -> 26.4 -> 24, 40 -> 44 -> 48, 80 -> 88, 112 -> 123.2 -> 120, 192 -> 211.2 -> 208, 320 -> 352
    assert [s[-1] for s in stage_summary(model)] == [2, 3, 3, 4, 4, 5, 2]
    assert [s[3] for s in stage_summary(model)] == [16, 24, 48, 88, 120, 208, 352]
    assert model.features[0][0].out_channels == 32 and model.num_features == 4 * 352
    assert model.scaled_input_size == 258
    assert meta("efficientnet_b0", phi=1.5).scaled_input_size == 276  # 224 x 1.15^1.5 = 276.2
    assert meta("efficientnet_b0").scaled_input_size is None
    with pytest.raises(ValueError, match="efficientnet_b0 with phi"):
        cnnzoo.create_model("efficientnet_b3", phi=1.0)


def test_cnnzoo_train_efficientnet_b0_runs_a_short_epoch_on_mnist5k(tmp_path):
    run = tmp_path / "b0"
    # 16 px keeps it cheap (the network takes any size: its final map is then 1x1); the test split is evaluated whole
    code = main(["train", "efficientnet_b0", "--data", "mnist5k", "--epochs", "1", "--limit-batches", "5",
                 "--set", "data.input_size=16", "--run-dir", str(run), "--no-download", "--quiet"])
    assert code == 0
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["count"] == 1000 and 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
