"""HarDNet (Chao et al. 2019): harmonic links k - 2^n, widths k * m^n, the block output, the two transitions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.models.hardnet import HarDBlock, InvertedTransition, harmonic_links
from macs_by_hand import HARDNET_68, HARDNET_85, hardnet_macs
from test_model_init import check_model


def _build(name: str, **opts):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


def _count(name: str, **opts) -> int:
    return sum(p.numel() for p in _build(name, **opts).parameters())


def test_harmonic_links_k_minus_powers_of_two():
    """Sec. 3.2 / Fig. 2: layer k connects to layer k - 2^n whenever 2^n divides k (layer 0 = the block input)."""
    assert harmonic_links(1) == [0]
    assert harmonic_links(2) == [1, 0]
    assert harmonic_links(3) == [2]
    assert harmonic_links(4) == [3, 2, 0]
    assert harmonic_links(6) == [5, 4]
    assert harmonic_links(8) == [7, 6, 4, 0]
    assert harmonic_links(12) == [11, 10, 8]
    assert harmonic_links(16) == [15, 14, 12, 8, 0]


def _width(k: int, growth: int, m: float) -> int:
    n = max(i for i in range(8) if k % 2**i == 0)  # the largest power of two dividing k
    return int((growth * m**n + 1) / 2) * 2  # k * m^n, made even as the official code does


def test_channel_weighting_k_m_to_the_n_and_the_block_output():
    block = HarDBlock(64, growth_rate=14, m=1.7, num_layers=8)
    widths = [layer[0].out_channels for layer in block.layers]
    assert widths == [_width(k, 14, 1.7) for k in range(1, 9)] == [14, 24, 14, 40, 14, 24, 14, 68]
    # every layer reads the concatenation of its harmonic links
    all_widths = [64, *widths]
    assert [layer[0].in_channels for layer in block.layers] == [
        sum(all_widths[j] for j in harmonic_links(k)) for k in range(1, 9)]
    # the output: odd layers and the last, not the block input (no global dense connection)
    assert block.out_channels == 14 + 14 + 14 + 14 + 68
    out = HarDBlock(8, 4, 1.7, 4)(torch.randn(1, 8, 5, 5))
    assert out.shape == (1, 4 + 4 + 12, 5, 5)  # layers 1, 3 and 4 (4 * 1.7^2 = 11.56 -> 12)


@pytest.mark.parametrize("name,arch", [("hardnet68", HARDNET_68), ("hardnet85", HARDNET_85)])
def test_official_architectures(name, arch):
    model = _build(name)
    blocks = [s.block for s in model.stages]
    assert [len(b.layers) for b in blocks] == [n for n, *_ in arch["stages"]]
    assert [s.transition[0].out_channels for s in model.stages] == [w for _, _, w, _ in arch["stages"]]
    assert [hasattr(s, "downsample") for s in model.stages] == [d for *_, d in arch["stages"]]
    assert (model.stem[0][0].out_channels, model.stem[1][0].out_channels) == arch["stem"]
    assert isinstance(model.stem_pool, nn.MaxPool2d)
    assert summarize(model, (3, 224, 224)).macs == hardnet_macs(arch)  # conv + fc MACs, by hand


def test_depthwise_separable_models():
    """The DS models: 1x1 stem conv, 3x3/2 depthwise downsampling, each layer a 1x1 conv + 3x3 depthwise conv."""
    model = _build("hardnet68_ds")
    assert model.stem[1][0].kernel_size == (1, 1)
    assert model.stem_pool[0].groups == model.stem_pool[0].in_channels and model.stem_pool[0].stride == (2, 2)
    layer = model.stages[0].block.layers[0]
    assert layer[0][0].kernel_size == (1, 1) and layer[1][0].groups == layer[1][0].in_channels
    assert model.stages[0].downsample[0].stride == (2, 2)
    assert [len(s.block.layers) for s in _build("hardnet39_ds").stages] == [4, 16, 8, 4]
    # the official README: HarDNet39DS 3.5M, HarDNet68DS 4.2M parameters
    assert round(_count("hardnet39_ds") / 1e6, 1) == 3.5 and round(_count("hardnet68_ds") / 1e6, 1) == 4.2


def test_official_readme_figures():
    """README: HarDNet68 17.6M, HarDNet85 36.7M (the GMACs: tests/test_analysis_summary.py's published rows)."""
    assert round(_count("hardnet68") / 1e6, 1) == 17.6 and round(_count("hardnet85") / 1e6, 1) == 36.7


def _block_outputs(arch: dict) -> list[int]:
    outs, cin = [], arch["stem"][1]
    for layers, growth, width, _ in arch["stages"]:
        widths = [cin] + [_width(k, growth, arch["m"]) for k in range(1, layers + 1)]
        outs.append(sum(widths[k] for k in range(1, layers + 1) if k % 2 or k == layers))
        cin = width
    return outs


def test_inverted_transition():
    """Sec. 3.3: max- and average-pool the block output, concatenate, then the 1x1 conv (at half resolution)."""
    plain, inverted = _build("hardnet68"), _build("hardnet68", transition="inverted")
    outs = _block_outputs(HARDNET_68)
    extra = sum(o * w for o, (_, _, w, down) in zip(outs, HARDNET_68["stages"]) if down)  # doubled conv inputs
    assert sum(p.numel() for p in inverted.parameters()) - sum(p.numel() for p in plain.parameters()) == extra
    t = inverted.stages[0].transition
    assert t.conv[0].in_channels == 2 * outs[0] and not hasattr(inverted.stages[0], "downsample")
    assert not hasattr(inverted.stages[1].transition, "conv")  # a non-downsampling stage keeps the plain 1x1 conv
    row = summarize(inverted, (3, 64, 64)).find("stages.0.transition.conv.0")  # block 1 runs at 16x16
    assert row.input_shape == (1, 2 * outs[0], 8, 8) and row.output_shape == (1, 128, 8, 8)
    x = torch.randn(1, 8, 6, 6)
    block = InvertedTransition(8, 5)
    direct = block.conv(torch.cat([nn.functional.max_pool2d(x, 2), nn.functional.avg_pool2d(x, 2)], 1))
    torch.testing.assert_close(block(x), direct)


def test_init():
    """He fan-out convs (no biases), BN (1, 0), PyTorch's default fc (the notes: the official code has no init)."""
    torch.manual_seed(0)
    check_model(cnnzoo.create_model("hardnet39_ds"), conv="he_fan_out", conv_bias=None, linear="torch",
                linear_bias="torch")


@pytest.mark.parametrize("opts,match", [({"transition": "avg"}, "transition"), ({"arch": "100"}, "arch"),
                                        ({"drop_rate": 2.0}, "drop_rate"), ({"act_layer": "relu7"}, "activation")])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("hardnet68", **opts)
