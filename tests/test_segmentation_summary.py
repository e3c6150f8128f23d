"""`cnnzoo summary`, `info` and `list` for the segmentation networks (issue 25): parameters, MACs, output size and
the receptive field at the output, for every registered segmenter; the stored counts they read
(src/cnnzoo/segmentation/models/_counts.json, `python -m cnnzoo.segmentation.counts`).

Expected values come from outside the code under test: parameters from the built module's tensors, MACs from
torch's own FlopCounterMode and a hand count, U-Net's field from interval arithmetic on the paper's layer list
(Ronneberger et al. 2015, Fig. 1).
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis.output_field import gradient_output_field, output_field
from cnnzoo.cli.main import main
from cnnzoo.segmentation import counts, create_segmenter, get_segmenter_card, list_segmenters

NAMES = list_segmenters()
STORED = counts._table()
FIX = f"rewrite the entries with `{counts.REGENERATE} NAME ...` (or `{counts.REGENERATE}` for all)"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def meta(name, **options):
    with torch.device("meta"):
        return create_segmenter(name, **options).eval()


def card_input(name, model):
    card = get_segmenter_card(name)
    return (model.in_channels, card.input_size[1], card.input_size[2])


@functools.cache
def built(name):
    """(meta network at its defaults, its card input (C, H, W), its parameters, its output shape there): built once
    per session for the tests below."""
    model = meta(name)
    size = card_input(name, model)
    return model, size, sum(p.numel() for p in model.parameters()), meta_output(model, size)


def meta_output(model, size):
    with torch.no_grad():
        out = model(torch.empty(1, *size, device="meta"))
    return list((out[0] if isinstance(out, tuple) else out).shape)


def flop_counter_macs(model, size) -> int:
    """MACs = FLOPs / 2 of torch.utils.flop_counter.FlopCounterMode over a meta forward (torchvision's convention)."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with torch.no_grad(), mode:
        model(torch.empty(1, *size, device="meta"))
    return mode.get_total_flops() // 2


# -------------------------------------------------------------------------------------------- hand derivations
def unet_valid_support(size: int, x: int, depth: int = 4) -> tuple[int, tuple[int, int]]:
    """(output side, the input rows [first, last] that output row ``x`` of the paper's U-Net depends on), by interval
    arithmetic on Fig. 1's layers, walked back from the output: a valid 3x3 convolution maps rows [a, b] of its output
    to [a, b + 2] of its input (two per DoubleConv: + 4), a 2x2/2 max-pool [a, b] -> [2a, 2b + 1], a 2x2/2
    up-convolution [a, b] -> [a // 2, b // 2] (each output sees one input), the centre crop of a skip adds its offset
    floor((H_skip - H) / 2); a concatenation joins its two branches."""
    enc_out, s = [], size
    for _ in range(depth):
        s -= 4
        enc_out.append(s)
        s //= 2
    t = s - 4  # the bottom DoubleConv
    up = [0] * depth
    for d in reversed(range(depth)):
        up[d] = 2 * t
        t = up[d] - 4
    out_side = t
    offset = [(enc_out[d] - up[d]) // 2 for d in range(depth)]

    def encoder(d, a, b):  # rows of level d's DoubleConv output -> rows of the image
        b += 4
        return (a, b) if d == 0 else encoder(d - 1, 2 * a, 2 * b + 1)

    def decoder(d, a, b):  # rows of level d's expanding DoubleConv output -> rows of the image
        b += 4  # its DoubleConv, on the concatenation
        sa, sb = encoder(d, a + offset[d], b + offset[d])  # the cropped skip
        ua, ub = a // 2, b // 2  # the up-convolution
        la, lb = decoder(d + 1, ua, ub) if d + 1 < depth else encoder(depth - 1, 2 * ua, 2 * (ub + 4) + 1)
        return min(sa, la), max(sb, lb)

    return out_side, decoder(0, x, x)


def test_unet_hand_derivation_itself():
    """Fig. 1: 572 -> 388. The field depends on the output pixel's phase against the four 2x2 poolings (a period of
    16): 188 to 204 rows. 572 - 388 + 1 = 185 would be the field of a network whose windows are one size and move
    one input pixel per output pixel; U-Net's do not: the corner pixels see rows 0-187 and 384-571."""
    side, _ = unet_valid_support(572, 0)
    assert side == 388
    widths = {b - a + 1 for a, b in (unet_valid_support(572, x)[1] for x in range(side))}
    assert min(widths) == 188 and max(widths) == 204
    assert unet_valid_support(572, 0)[1] == (0, 187) and unet_valid_support(572, 387)[1] == (384, 571)
    assert unet_valid_support(572, 194)[1] == (192, 379)  # the centre pixel, 388 // 2


def tiny_unet_macs_and_params() -> tuple[int, int]:
    """unet_padded with depth=1, base_channels=2, 1 input channel, 2 classes, on 1x8x8 (Fig. 1's layout cut to one
    level, padded 3x3 convolutions): MACs = output positions x C_out x k^2 x C_in per convolution (biases are adds);
    the 2x2/2 up-convolution sees one input tap per output pixel and input channel (8*8 x 2 x 4)."""
    macs = (8 * 8 * 2 * 9 * 1 + 8 * 8 * 2 * 9 * 2  # level 1: 1 -> 2 -> 2 at 8x8
            + 4 * 4 * 4 * 9 * 2 + 4 * 4 * 4 * 9 * 4  # bottom after the 2x2 pool: 2 -> 4 -> 4 at 4x4
            + 8 * 8 * 2 * 4  # up-convolution 4 -> 2, 2x2 stride 2, to 8x8
            + 8 * 8 * 2 * 9 * 4 + 8 * 8 * 2 * 9 * 2  # concat (2 + 2) -> 2 -> 2 at 8x8
            + 8 * 8 * 2 * 2)  # 1x1 classifier 2 -> 2
    params = ((1 * 9 * 2 + 2) + (2 * 9 * 2 + 2) + (2 * 9 * 4 + 4) + (4 * 9 * 4 + 4)
              + (4 * 2 * 4 + 2) + (4 * 9 * 2 + 2) + (2 * 9 * 2 + 2) + (2 * 2 + 2))
    return macs, params


# ----------------------------------------------------------------------------------------------- registries
def test_no_name_is_both_a_classifier_and_a_segmenter():
    """`cnnzoo info/summary NAME` look a name up in both registries: one answer each."""
    assert not set(cnnzoo.list_models()) & set(NAMES)


# ------------------------------------------------------------------------------------------------------ info
@pytest.mark.parametrize("name", NAMES)
def test_info_gives_parameters_output_and_deviations(capsys, name):
    _, size, params, output = built(name)
    code, out, err = run(capsys, "info", name, "--width", "250")
    assert code == 0, err
    assert f"parameters: {params:,}\n" in out
    assert f"output: {tuple(output)} for input {(1, *size)}" in out
    card = get_segmenter_card(name)
    assert card.paper.title in out and "receptive field:" in out and "MACs:" in out
    for d in card.deviations:
        assert " ".join(d.split())[:60] in " ".join(out.split()), d
    assert "Paper notes" in out


def test_info_with_options_and_input_counts_live(capsys):
    macs, params = tiny_unet_macs_and_params()
    code, out, err = run(capsys, "info", "unet_padded", "-o", "depth=1", "-o", "base_channels=2", "--input", "8",
                         "--width", "250")
    assert code == 0, err
    assert f"parameters: {params:,} with" in out and f"MACs: {macs:,} " in out
    assert "output: (1, 2, 8, 8) for input (1, 1, 8, 8)" in out


# --------------------------------------------------------------------------------------------------- summary
def test_summary_of_a_tiny_unet_counts_what_the_hand_count_says(capsys):
    macs, params = tiny_unet_macs_and_params()
    code, out, err = run(capsys, "summary", "unet_padded", "-o", "depth=1", "-o", "base_channels=2", "--input", "8",
                         "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["totals"]["total_params"] == params and d["totals"]["macs"] == macs
    assert d["output_shape"] == [1, 2, 8, 8]
    rf = d["receptive_field"]
    # up-convolution and concatenation: the arithmetic's one-size field does not hold; the centre pixel's gradient
    assert rf["method"] == "gradient" and "transposed convolution" in rf["reason"] and rf["pixel"] == [4, 4]
    code, out, err = run(capsys, "summary", "unet_padded", "-o", "depth=1", "-o", "base_channels=2", "--input", "8",
                         "--width", "150")
    assert code == 0, err
    assert f"total parameters: {params:,}" in out and f"{macs:,}" in out
    assert "output: 2x8x8 logits for a 1x8x8 input" in out and "empirical" in " ".join(out.split())


def test_unet_field_at_a_smaller_tile_is_the_hand_derivation(capsys):
    """The paper's valid U-Net (narrower: the field does not depend on the widths) on a 284 x 284 tile."""
    side, (first, last) = unet_valid_support(284, 0)
    code, out, err = run(capsys, "summary", "unet", "-o", "base_channels=2", "--input", "284", "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["output_shape"] == [1, 2, side, side]
    c = side // 2
    _, (first, last) = unet_valid_support(284, c)
    rf = d["receptive_field"]
    assert rf["method"] == "gradient" and rf["pixel"] == [c, c]
    assert rf["box"] == [first, first, last, last] and rf["rf"] == [last - first + 1] * 2


def test_unet_field_at_572_is_the_hand_derivation(capsys):
    """The stored field (what `summary unet` prints at the paper's tile) against Fig. 1's interval arithmetic."""
    _, (first, last) = unet_valid_support(572, 194)
    assert (first, last) == (192, 379)
    code, out, err = run(capsys, "summary", "unet", "--format", "json")
    assert code == 0, err
    rf = json.loads(out)["receptive_field"]
    assert rf["method"] == "gradient" and rf["pixel"] == [194, 194]
    assert rf["box"] == [192, 192, 379, 379] and rf["rf"] == [188, 188]


@pytest.mark.slow
def test_unet_field_at_572_measured_live_is_the_hand_derivation():
    field = output_field(meta("unet"), (1, 572, 572))
    assert field.method == "gradient" and field.pixel == (194, 194) and field.box == (192, 192, 379, 379)


def test_arithmetic_method_where_every_op_keeps_positions_aligned():
    """conv 3x3 -> max-pool 2x2/2 -> conv 3x3: 3, + 1 = 4, + 2 x 2 = 8 input pixels, jump 2 (Araujo et al. 2019);
    the gradient of the centre pixel sees the same 8 x 8 window: the gates and the pooling pass it straight through
    (one channel, so that a window's argmax or a dead ReLU would otherwise cut the field)."""
    net = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1))
    field = output_field(net, (3, 32, 32))
    assert (field.method, field.rf, field.jump) == ("arithmetic", (8, 8), (2, 2))
    # centre output pixel 8 sees pooled rows 7-9 = conv rows 14-19 = input rows 13-20, whatever the input and weights
    for seed in range(6):
        grad = gradient_output_field(net, (3, 32, 32), seed=seed)
        assert grad.rf == (8, 8) and grad.box == (13, 13, 20, 20), seed
    assert next(net.parameters()).device.type == "cpu" and net.training  # the network is neither moved nor changed


def test_a_dead_relu_does_not_hide_connections():
    """Per-pixel gates (1x1 convolution, ReLU, 3x3 convolution): the centre pixel is connected to its 3 x 3 window
    whichever units a given input switches off."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(1, 1, 3, padding=1))
    for seed in range(10):  # half the units are off for a given input: an edge row of three, one time in eight
        assert gradient_output_field(net, (1, 9, 9), seed=seed).box == (3, 3, 5, 5), seed


class _PooledContext(nn.Module):
    """A map plus its global average broadcast back, then upsampled (DeepLab v3's image pooling in miniature)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y = y + y.mean((2, 3), keepdim=True)
        return nn.functional.interpolate(y, scale_factor=2, mode="bilinear")


def test_a_global_pooling_reaching_the_output_is_the_whole_input():
    field = output_field(_PooledContext(), (1, 16, 16))
    assert field.method == "arithmetic" and field.global_pool and field.rf == (16, 16)
    grad = output_field(_PooledContext(), (1, 16, 16), method="gradient")
    assert grad.whole and grad.box == (0, 0, 15, 15)


def test_a_zero_initialised_layer_does_not_hide_connections():
    """FCN's score layers start at zero (Sec. 4.3): the measured field is the connectivity, not today's weights."""
    net = nn.Sequential(nn.Conv2d(1, 2, 5, padding=2), nn.Conv2d(2, 2, 3, padding=1))
    nn.init.zeros_(net[1].weight)
    assert output_field(net, (1, 20, 20), method="gradient").rf == (7, 7)


# ------------------------------------------------------------------------------------- every registered network
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_summary_parameters_macs_and_output_at_the_card_size(capsys, monkeypatch, name):
    """Every registered segmenter at its card's input: parameters = the built module's, MACs = FlopCounterMode's,
    the output shape = a meta forward's. The field is the stored one; for a network the store lacks, a stand-in
    (the real measurement is the slow test below). Slow: two meta traces of a ResNet-101 take seconds (the quick
    suite checks `info` for every network and `summary` on U-Net)."""
    from cnnzoo.analysis import output_field as of

    model, size, params, output = built(name)
    stub = of.OutputField("gradient", (1, 1), size[1:], (1, 1), pixel=(0, 0), box=(0, 0, 0, 0), reason="stub")
    monkeypatch.setattr(of, "gradient_output_field", lambda *a, **k: stub)
    code, out, err = run(capsys, "summary", name, "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["totals"]["total_params"] == params
    assert d["totals"]["macs"] == flop_counter_macs(model, size)
    assert d["output_shape"] == output
    assert d["receptive_field"]["method"] in ("arithmetic", "gradient")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_summary_measures_the_field_of_every_network_at_a_small_input(capsys, name):
    model = meta(name)
    side = max(model.min_input_size, 64)
    code, out, err = run(capsys, "summary", name, "--input", str(side), "--width", "200")
    assert code == 0, err
    text = " ".join(out.split())
    assert "receptive field at the output:" in text and ("empirical" in text or "layer arithmetic" in text)


# -------------------------------------------------------------------------------------------------- the store
def test_every_registered_segmenter_has_a_stored_entry_and_no_other():
    missing = sorted(set(NAMES) - set(STORED))
    extra = sorted(set(STORED) - set(NAMES))
    assert not missing, f"registered without stored counts: {missing}; {FIX}"
    assert not extra, f"stored counts of networks no longer registered: {extra}; {FIX}"


@pytest.mark.parametrize("name", sorted(set(STORED) & set(NAMES)))
def test_stored_params_and_shapes_are_the_built_networks(name):
    _, size, params, output = built(name)
    entry = STORED[name]
    network = {"params": params, "input": list(size), "output": output}
    assert {k: entry[k] for k in network} == network, f"{name}: stored counts are stale; {FIX}"
    assert entry["rf"]["method"] in ("arithmetic", "gradient") and entry["rf"]["input_hw"] == list(size[1:])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(STORED) & set(NAMES)))
def test_stored_macs_and_field_are_a_trace_of_the_network(name):
    model, size, _, _ = built(name)
    assert STORED[name]["macs"] == flop_counter_macs(model, size), FIX
    field = output_field(model, size).to_dict()
    field.pop("whole_input")
    assert json.loads(json.dumps(field)) == STORED[name]["rf"], FIX


@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr("cnnzoo.segmentation.registry.create_segmenter", refuse)


def test_list_and_info_read_the_store_and_build_nothing(capsys, monkeypatch, nothing_built):
    if "unet" not in STORED:
        pytest.skip(f"unet has no stored entry; {FIX}")
    table = {**STORED, "unet": {**STORED["unet"], "params": 12_345, "output": [1, 2, 77, 77]}}
    monkeypatch.setattr(counts, "_table", lambda: table)
    code, out, err = run(capsys, "list", "unet", "--width", "200")
    assert code == 0, err
    assert "segmentation networks matching 'unet' (1)" in out
    assert "12,345" in next(line for line in out.splitlines() if line.split()[:1] == ["unet"])
    code, out, err = run(capsys, "info", "unet", "--width", "200")
    assert code == 0, err
    assert "parameters: 12,345\n" in out and "(1, 2, 77, 77) for input (1, 1, 572, 572)" in out
    assert "188x188 input pixels (rows 192-379, columns 192-379 of 572x572)" in out


def test_list_shows_both_kinds(capsys):
    code, out, err = run(capsys, "list", "--width", "200")
    assert code == 0, err
    assert f"segmentation networks matching '*' ({len(NAMES)})" in out
    firsts = [line.split()[0] for line in out.splitlines() if line.strip()]
    for name in NAMES:
        assert firsts.count(name) == 1, name
    code, out, err = run(capsys, "list", "unet*", "--width", "80")
    assert code == 0, err
    assert "cnnzoo networks matching" not in out and max(map(len, out.splitlines())) <= 80


# ------------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("argv,words", [
    (["info", "unet_pad"], ["unknown network 'unet_pad'", "unet_padded (segmentation)", "segmentation networks"]),
    (["summary", "lenet"], ["unknown network 'lenet'", "lenet5"]),
    (["info", "unet", "--input", "1x100x100"], ["at least 188x188", "100x100"]),
    (["summary", "unet", "--input", "1x100x100"], ["at least 188x188", "100x100"]),
    (["summary", "unet", "--input", "3x572x572"], ["1-channel", "in_channels=3"]),
    (["info", "unet", "-o", "widht=3"], ["widht", "base_channels"]),
    (["summary", "unet", "-o", "depth=0"], ["depth", ">= 1"]),
    (["compare-arch", "resnet18", "unet"], ["unet is a segmentation network", "cnnzoo summary unet"]),
    (["list", "unet*", "--plot", "zoo.png"], ["--plot draws classification networks", "unet"]),
    (["list", "nosuchnet*"], ["no network matches 'nosuchnet*'"]),
])
def test_errors_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
