"""The torchvision segmentation layout fixtures (issue 25) are well formed and carry torchvision's counts.

The fixtures were written by tests/helpers/make_seg_layouts.py in a separate environment with torchvision (see its
docstring for the format: `logits` is the `out` map subsampled every 8th pixel, plus full-map sums and the `aux`
head the same way). This file checks only the data, without torchvision. The equality of cnnzoo's networks with
these outputs (create_model(name, weights=FILE) on the filled state dict, as tests/test_layouts.py does for the
classification layouts) is left to whoever implements the segmentation networks.
"""

from __future__ import annotations

import math

import pytest

from layout_fill import LAYOUTS, load_layout

NAMES = [
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
]
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

# Issue 25, "Done when": torchvision's published counts (fcn_resnet50 with its auxiliary head).
ISSUE_COUNTS = {"fcn_resnet50": 35_322_218, "deeplabv3_resnet50": 42_004_074, "lraspp_mobilenet_v3_large": 3_221_538}

# The last 1x1 convolutions of the heads, from torchvision's head definitions: FCNHead(c) is conv3x3 c -> c/4, BN,
# ReLU, dropout, conv1x1 c/4 -> classes (2048 -> 512 on layer4, 1024 -> 256 on layer3, 40 -> 10 on MobileNetV3's
# stride-8 block); DeepLabHead is ASPP -> 256, conv3x3 256, BN, ReLU, conv1x1 256 -> classes; LR-ASPP classifies the
# stride-8 features (40 channels) and the 128-channel attention branch separately.
HEADS = {
    "fcn_resnet50": {"classifier.4.weight": [21, 512, 1, 1], "aux_classifier.4.weight": [21, 256, 1, 1]},
    "fcn_resnet101": {"classifier.4.weight": [21, 512, 1, 1], "aux_classifier.4.weight": [21, 256, 1, 1]},
    "deeplabv3_resnet50": {"classifier.4.weight": [21, 256, 1, 1], "aux_classifier.4.weight": [21, 256, 1, 1]},
    "deeplabv3_resnet101": {"classifier.4.weight": [21, 256, 1, 1], "aux_classifier.4.weight": [21, 256, 1, 1]},
    "deeplabv3_mobilenet_v3_large": {"classifier.4.weight": [21, 256, 1, 1], "aux_classifier.4.weight": [21, 10, 1, 1]},
    "lraspp_mobilenet_v3_large": {
        "classifier.low_classifier.weight": [21, 40, 1, 1],
        "classifier.high_classifier.weight": [21, 128, 1, 1],
    },
}


def _shape(x) -> list[int]:
    return [len(x), *_shape(x[0])] if isinstance(x, list) else []


def _flat(x) -> list[float]:
    return [v for item in x for v in _flat(item)] if isinstance(x, list) else [x]


def test_all_six_fixtures_and_no_others():
    found = {p.stem.removeprefix("torchvision__") for p in LAYOUTS.glob("torchvision__*.json")}
    assert set(NAMES) == {n for n in found if n.startswith(("fcn_", "deeplabv3_", "lraspp_"))}


@pytest.mark.parametrize("name", NAMES)
def test_fixture_well_formed(name):
    d = load_layout(f"torchvision__{name}")
    has_aux = not name.startswith("lraspp")
    assert (d["source"], d["name"]) == ("torchvision", name)
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 21}
    assert d["kwargs"] == ({**kwargs, "aux_loss": True} if has_aux else kwargs)
    b, c, h, w = d["input"]
    assert c == 3 and h == w
    assert d["output_shape"] == [b, 21, h, w]
    assert d["subsample"] == "[:, :, ::8, ::8]"
    sampled = [b, 21, math.ceil(h / 8), math.ceil(w / 8)]
    outputs = [("logits", "logits_sum", "logits_abs_sum")]
    if has_aux:
        outputs.append(("aux", "aux_sum", "aux_abs_sum"))
    else:
        assert d["aux"] is d["aux_sum"] is d["aux_abs_sum"] is None
    for key, key_sum, key_abs in outputs:
        values = _flat(d[key])
        assert _shape(d[key]) == sampled, key
        assert all(math.isfinite(v) for v in values), key
        assert len(set(values)) > len(values) // 2, f"{key} looks constant"
        # the samples are part of the full map, whose |sum| cannot exceed its sum of magnitudes
        assert abs(d[key_sum]) <= d[key_abs]
        assert sum(abs(v) for v in values) <= d[key_abs]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_entries_and_params(name):
    d = load_layout(f"torchvision__{name}")
    keys = [k for k, _s, _t in d["state_dict"]]
    assert len(keys) == len(set(keys))
    for key, shape, dtype in d["state_dict"]:
        assert all(isinstance(n, int) and n > 0 for n in shape), key
        assert dtype == ("int64" if key.endswith("num_batches_tracked") else "float32"), key
    shapes = {k: s for k, s, _t in d["state_dict"]}
    for key, shape in HEADS[name].items():
        assert shapes[key] == shape, key
    if name.startswith("lraspp"):
        assert not any(k.startswith("aux_classifier.") for k in keys)
    trainable = sum(math.prod(s) for k, s, _t in d["state_dict"] if not k.endswith(BN_BUFFERS))
    assert d["params"] == trainable


@pytest.mark.parametrize("name", sorted(ISSUE_COUNTS))
def test_params_equal_the_issue_counts(name):
    assert load_layout(f"torchvision__{name}")["params"] == ISSUE_COUNTS[name]
