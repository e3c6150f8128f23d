"""torchvision's lraspp_mobilenet_v3_large and deeplabv3_mobilenet_v3_large (issue 25): live equality with
torchvision 0.29, counts by hand, the dilated MobileNetV3 backbone, the LR-ASPP gate on a hand case.

The expected outputs are torchvision's, not ours: tests/fixtures/layouts/torchvision__*_mobilenet_v3_large.json
were written by tests/helpers/make_seg_layouts.py in a separate environment with torchvision (format in its
docstring). Each state dict is filled by the fixture's keys with tests/layout_fill.py's rule, saved, loaded with
``create_segmenter(name, weights=FILE)`` and no options, and run on the probe input in eval mode.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cnnzoo import create_model
from cnnzoo.segmentation import create_segmenter, get_segmenter_card, list_segmenters
from cnnzoo.segmentation.models.mobilenet_seg import LRASPPHead
from cnnzoo.segmentation.registry import get_digits_recipe
from layout_fill import filled_state_dict, load_layout, make_input

NAMES = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"]
REL = 1e-4

# Issue 25 "Done when" (lraspp) and torchvision's docs / the fixture (deeplabv3 with its aux head), 21 classes.
TORCHVISION_COUNTS = {"lraspp_mobilenet_v3_large": 3_221_538, "deeplabv3_mobilenet_v3_large": 11_029_328}

# MobileNetV3-Large, Table 1 (Howard et al. 2019): the stride column of the 15 bneck rows.
TABLE1_STRIDES = (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1)


@functools.cache
def _filled(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    layout = load_layout(f"torchvision__{name}")
    return layout, filled_state_dict(layout)


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


def _depthwise(block: nn.Module) -> nn.Conv2d:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)


def _load(name: str, tmp_path, fmt: str = "pt", drop_aux: bool = False):
    layout, sd = _filled(name)
    if drop_aux:
        sd = {k: v for k, v in sd.items() if not k.startswith("aux_classifier.")}
    path = tmp_path / f"{name}.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return layout, create_segmenter(name, weights=str(path)).eval()


# ------------------------------------------------------------------------------------------- live equality
@pytest.mark.parametrize("name", NAMES)
def test_torchvision_checkpoint_gives_torchvision_outputs(name, tmp_path):
    layout, net = _load(name, tmp_path, fmt="safetensors" if "deeplab" in name else "pt")
    x = make_input(*layout["input"][:2], layout["input"][2])
    with torch.no_grad():
        out = net(x)  # eval mode: the main map only
        both = net.forward_dict(x)
    assert isinstance(out, torch.Tensor) and list(out.shape) == layout["output_shape"] == [2, 21, 100, 100]
    assert torch.equal(out, both["out"])
    keys = [("logits", out)] + ([("aux", both["aux"])] if layout["aux"] is not None else [])
    assert ("aux" in both) == (layout["aux"] is not None)
    for key, got in keys:
        ref = torch.tensor(layout[key])
        sub = got[:, :, ::8, ::8]
        assert sub.shape == ref.shape
        assert _rel(sub, ref) < REL, f"{name} {key}: max rel diff {_rel(sub, ref):.2e}"
        s, a = got.double().sum().item(), got.double().abs().sum().item()
        ref_s, ref_a = layout[f"{key}_sum"], layout[f"{key}_abs_sum"]
        assert abs(a - ref_a) < REL * abs(ref_a), (key, a, ref_a)
        assert abs(s - ref_s) < REL * ref_a, (key, s, ref_s)  # a sum of mixed signs: relative to sum |x|


@pytest.mark.parametrize("name", NAMES)
def test_layout_and_count_equal_torchvision(name):
    layout = load_layout(f"torchvision__{name}")
    net = create_segmenter(name)  # defaults as torchvision builds them with weights: 21 classes (+ aux for DeepLab)
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == [[k, s] for k, s, _ in layout["state_dict"]]
    assert sum(p.numel() for p in net.parameters()) == layout["params"] == TORCHVISION_COUNTS[name]


def test_deeplab_file_without_aux_head_loads_without_options(tmp_path):
    layout, net = _load("deeplabv3_mobilenet_v3_large", tmp_path, drop_aux=True)
    assert net.aux_classifier is None
    x = make_input(*layout["input"][:2], layout["input"][2])
    with torch.no_grad():
        out = net(x)
    assert _rel(out[:, :, ::8, ::8], torch.tensor(layout["logits"])) < REL
    assert "aux" not in net.forward_dict(x)


# ------------------------------------------------------------------------------------------- counts by hand
def test_counts_by_hand():
    """The module notes' derivation, from the layer definitions, independent of the fixtures."""
    classifier = 960 * 1280 + 1280 + 1280 * 1000 + 1000  # mobilenet_v3_large's head (Table 1: 1280, then k=1000)
    backbone = 5_483_032 - classifier  # Table 1's network, torchvision's count, without its classifier
    lraspp = (960 * 128 + 2 * 128) + 960 * 128 + (40 * 21 + 21) + (128 * 21 + 21)  # cbr, scale, low, high
    aspp = 2 * (960 * 256 + 2 * 256) + 3 * (960 * 256 * 9 + 2 * 256) + (5 * 256 * 256 + 2 * 256)
    deeplab = aspp + (256 * 256 * 9 + 2 * 256) + (256 * 21 + 21)
    aux = 40 * 10 * 9 + 2 * 10 + (10 * 21 + 21)  # FCNHead(40): 3x3 40 -> 10, BN, 1x1 10 -> 21
    assert (backbone, lraspp, aspp, deeplab, aux) == (2_971_952, 249_586, 7_457_792, 8_053_525, 3_851)
    assert backbone + lraspp == 3_221_538
    assert backbone + deeplab + aux == 11_029_328
    with torch.device("meta"):
        lr = create_segmenter("lraspp_mobilenet_v3_large")
        dl = create_segmenter("deeplabv3_mobilenet_v3_large", aux_loss=False)
        dl5 = create_segmenter("deeplabv3_mobilenet_v3_large", num_classes=5)
    for net, head in ((lr, lraspp), (dl, deeplab)):
        assert sum(p.numel() for p in net.backbone.parameters()) == backbone
        assert sum(p.numel() for p in net.classifier.parameters()) == head
    assert sum(p.numel() for p in dl5.parameters()) == 11_029_328 - 16 * (256 + 1) - 16 * (10 + 1)


# ------------------------------------------------------------------------------------------- backbone
def test_low_level_tap_is_torchvision_stage_index():
    """torchvision: stage_indices = [0] + [blocks whose table stride is 2] + [last]; low = stage_indices[-4]. From
    Table 1's strides (features.i+1 is row i): [0, 2, 4, 7, 13, 16] -> features.4, 40 channels at 1/8."""
    stage_indices = [0] + [i + 1 for i, s in enumerate(TABLE1_STRIDES) if s == 2] + [len(TABLE1_STRIDES) + 1]
    assert stage_indices == [0, 2, 4, 7, 13, 16]
    low = stage_indices[-4]
    net = create_segmenter("lraspp_mobilenet_v3_large").eval()
    seen = {}
    net.backbone[low].register_forward_hook(lambda m, a, out: seen.setdefault("low", out))
    net.classifier.low_classifier.register_forward_pre_hook(lambda m, a: seen.setdefault("into", a[0]))
    with torch.no_grad():
        net(torch.randn(1, 3, 64, 48))
    assert seen["into"] is seen["low"] and seen["low"].shape == (1, 40, 8, 6)


def test_backbone_dilated_last_stage_as_section_6_4():
    """Sec. 6.4 / torchvision's dilated=True: the last stage (rows 12-14 of Table 1, features.13-15) at stride 1 and
    dilation 2 in its depthwise convs (padding 2 * 2 for the 5x5 kernels), output stride 16; nothing else changes."""
    net = create_segmenter("lraspp_mobilenet_v3_large")
    dw = {i: _depthwise(net.backbone[i]) for i in range(1, 16)}
    for i, conv in dw.items():
        assert conv.groups == conv.in_channels
        if i >= 13:
            assert (conv.stride, conv.dilation, conv.padding) == ((1, 1), (2, 2), (4, 4)), i
        else:
            assert (conv.stride[0], conv.dilation) == (TABLE1_STRIDES[i - 1], (1, 1)), i
    assert not net.backbone[13].use_res_connect and net.backbone[14].use_res_connect
    with torch.no_grad():
        maps = net.eval()._maps(torch.randn(1, 3, 100, 100))
    assert [tuple(m.shape) for m in maps] == [(1, 40, 13, 13), (1, 960, 7, 7)]  # 100 -> 50, 25, 13, 7


def test_zoo_mobilenet_v3_default_unchanged_and_features_api():
    plain = create_model("mobilenet_v3_large")
    assert plain.output_stride == 32
    assert all(m.dilation == (1, 1) for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert [f["reduction"] for f in plain.feature_info] == [2, 4, 8, 16, 32]
    feats = create_model("mobilenet_v3_large", features_only=True, output_stride=16).eval()
    assert feats.feature_info.reduction() == [2, 4, 8, 16]
    assert feats.feature_info.channels() == [16, 24, 40, 960]
    seg = create_segmenter("lraspp_mobilenet_v3_large").eval()
    feats.load_state_dict({f"features.{k}": v for k, v in seg.backbone.state_dict().items()})
    x = torch.randn(1, 3, 67, 67)
    with torch.no_grad():
        assert torch.equal(feats(x)[-1], seg._maps(x)[1])
    os8 = create_model("mobilenet_v3_large", output_stride=8)
    assert [f["reduction"] for f in os8.feature_info] == [2, 4, 8]
    assert {_depthwise(os8.features[i]).dilation for i in range(7, 13)} == {(2, 2)}
    assert {_depthwise(os8.features[i]).dilation for i in range(13, 16)} == {(4, 4)}
    small = create_model("mobilenet_v3_small", features_only=True, output_stride=16)
    assert small.feature_info.reduction()[-1] == 16
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32"):
        create_model("mobilenet_v3_large", output_stride=4)


# ------------------------------------------------------------------------------------------- LR-ASPP hand case
def test_lraspp_gate_is_a_sigmoid_of_the_pooled_map_hand_case():
    """One channel in, one filter, one class, all weights 1, BN at its initial statistics (eval: x / sqrt(1 + eps)):
    a high map of h gives relu(h / sqrt(1 + 1e-5)) * sigmoid(mean h) at every pixel of the 1/8 map, plus the low
    classifier's bias (0.25 here, weight 0)."""
    head = LRASPPHead(low_channels=1, high_channels=1, num_classes=1, inter_channels=1).eval()
    with torch.no_grad():
        for conv in (head.cbr[0], head.scale[1], head.high_classifier):
            conv.weight.fill_(1.0)
        head.high_classifier.bias.zero_()
        head.low_classifier.weight.zero_()
        head.low_classifier.bias.fill_(0.25)
        high = torch.tensor([[1.0, 3.0], [2.0, 2.0]]).reshape(1, 1, 2, 2)  # mean 2
        out = head(torch.zeros(1, 1, 4, 4), high)
    gate = 1 / (1 + math.exp(-2.0))  # sigmoid(2) = 0.8808 (a hard sigmoid would give (2 + 3) / 6 = 0.8333)
    bn = 1 / math.sqrt(1 + 1e-5)
    corners = out[0, 0, [0, 0, 3, 3], [0, 3, 0, 3]]  # bilinear 2 -> 4, align_corners=False: corners keep the values
    want = torch.tensor([1.0, 3.0, 2.0, 2.0]) * bn * gate + 0.25
    assert torch.allclose(corners, want, atol=1e-6)
    assert out.shape == (1, 1, 4, 4)


# ------------------------------------------------------------------------------------------- interface
def test_training_outputs_and_sizes():
    torch.manual_seed(0)
    dl = create_segmenter("deeplabv3_mobilenet_v3_large", num_classes=4, width_mult=0.5).train()
    x = torch.randn(2, 3, 37, 45)
    main, aux = dl(x)
    assert main.shape == aux.shape == (2, 4, 37, 45)
    dl.eval()
    assert isinstance(dl(x), torch.Tensor)
    lr = create_segmenter("lraspp_mobilenet_v3_large", num_classes=4, in_channels=1, output_stride=8).train()
    y = lr(torch.randn(2, 1, 30, 30))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4, 30, 30) and lr.output_size(30) == 30
    assert set(lr.forward_dict(torch.randn(2, 1, 16, 16))) == {"out"}


def test_input_and_option_errors(tmp_path):
    net = create_segmenter("lraspp_mobilenet_v3_large", in_channels=1)
    with pytest.raises(ValueError, match="in_channels=3"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="4-D input"):
        net(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16"):
        create_segmenter("deeplabv3_mobilenet_v3_large", output_stride=32)
    with pytest.raises(ValueError, match="atrous_rates"):
        create_segmenter("deeplabv3_mobilenet_v3_large", atrous_rates=[0, 2])
    _, sd = _filled("lraspp_mobilenet_v3_large")
    path = tmp_path / "lraspp.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="num_classes=21"):
        create_segmenter("lraspp_mobilenet_v3_large", weights=str(path), num_classes=10)
    with pytest.raises(ValueError, match="does not fit"):
        create_segmenter("deeplabv3_mobilenet_v3_large", weights=str(path))  # an LR-ASPP file into DeepLab


def test_own_checkpoint_with_other_classes_and_channels_loads_without_options(tmp_path):
    torch.manual_seed(0)
    net = create_segmenter("lraspp_mobilenet_v3_large", num_classes=11, in_channels=1, inter_channels=64).eval()
    path = tmp_path / "mine.safetensors"
    save_file(net.state_dict(), str(path))
    back = create_segmenter("lraspp_mobilenet_v3_large", weights=str(path)).eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(net(x), back(x))


def test_cards_and_recipes():
    assert set(NAMES) <= set(list_segmenters())
    lr, dl = (get_segmenter_card(n) for n in NAMES)
    assert lr.paper.title == "Searching for MobileNetV3" and lr.paper.year == 2019
    assert dl.paper.title == "Rethinking Atrous Convolution for Semantic Image Segmentation"
    assert dl.aux_weight == 0.5 and lr.aux_weight is None
    for name, card in zip(NAMES, (lr, dl)):
        assert [(c.library, c.name) for c in card.counterparts] == [("torchvision", name)]
        for heading in ("Key ideas", "Which table the code reproduces", "Training setup in the paper",
                        "This implementation", "3,221,538", "11,029,328"):
            assert heading in card.notes
        assert any("features.4" in d for d in card.deviations)
        recipe = get_digits_recipe(name)
        with torch.device("meta"):
            create_segmenter(name, in_channels=1, num_classes=11, **recipe["options"])  # the options are valid
    assert any("49x49" in d for d in lr.deviations)
    assert any("12, 24, 36" in d for d in dl.deviations)

