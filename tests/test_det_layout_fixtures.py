"""The torchvision detection layout fixtures (issue 27) are well formed and carry torchvision's counts.

The fixtures were written by tests/helpers/make_det_layouts.py in a separate environment with torchvision (see its
docstring for the format: the raw head outputs ``cls_logits`` / ``bbox_regression`` of the filled model on the probe,
sampled at ``anchor_index``, with full sums, and the model's anchors). This file checks only the data, without
torchvision; the equality of cnnzoo's detectors with these outputs is tests/test_detection_ssd.py's and
tests/test_detection_retinanet.py's.
"""

from __future__ import annotations

import math

import pytest

from layout_fill import LAYOUTS, load_layout

NAMES = ["ssd300_vgg16", "retinanet_resnet50_fpn"]
KWARGS = {"weights": None, "weights_backbone": None, "num_classes": 91}

# Issue 27, "Done when": torchvision's counts (RetinaNet with FrozenBatchNorm2d; 34,068,119 with trainable BN).
ISSUE_COUNTS = {"ssd300_vgg16": 35_641_826, "retinanet_resnet50_fpn": 34_014_999}
RETINANET_TRAINABLE_BN = 34_068_119

# SSD, Fig. 2 (SSD300): prediction maps conv4_3 38x38, fc7 19x19, conv8_2 10x10, conv9_2 5x5, conv10_2 3x3,
# conv11_2 1x1 with 4, 6, 6, 6, 4, 4 default boxes per location: 5,776 + 2,166 + 600 + 150 + 36 + 4 = 8,732
# ("8732 boxes per class", Fig. 2 and Table 7).
SSD_LEVELS = [[38, 38], [19, 19], [10, 10], [5, 5], [3, 3], [1, 1]]
SSD_BOXES = [4, 6, 6, 6, 4, 4]
# RetinaNet (Lin et al. 2017, Sec. 4): P3-P7 at strides 8-128 with A = 9 anchors per location; on the 256 x 320 probe
# the maps are ceil(256 / s) x ceil(320 / s): 32x40, 16x20, 8x10, 4x5, 2x3 -> 9 * 1,706 = 15,354 anchors.
RETINA_LEVELS = [[32, 40], [16, 20], [8, 10], [4, 5], [2, 3]]


def _shape(x) -> list[int]:
    return [len(x), *_shape(x[0])] if isinstance(x, list) else []


def _flat(x) -> list[float]:
    return [v for item in x for v in _flat(item)] if isinstance(x, list) else [x]


def test_both_fixtures_exist():
    for name in NAMES:
        assert (LAYOUTS / f"torchvision__{name}.json").is_file(), name


@pytest.mark.parametrize("name", NAMES)
def test_fixture_well_formed(name):
    d = load_layout(f"torchvision__{name}")
    assert (d["source"], d["name"], d["kwargs"]) == ("torchvision", name, KWARGS)
    n, c = d["input"][:2]
    assert (n, c) == (2, 3)
    assert d["num_outputs"] == 91
    per_level = [hh * ww * a for (hh, ww), a in zip(d["level_sizes"], d["anchors_per_location"])]
    assert d["anchors_per_level"] == per_level
    assert sum(per_level) == d["num_anchors"]
    index = d["anchor_index"]
    assert index == sorted(set(index)) and 0 <= index[0] and index[-1] < d["num_anchors"]
    starts = [sum(per_level[:i]) for i in range(len(per_level))]
    for s, m in zip(starts, per_level):  # the first and last anchor of every level are sampled
        assert s in index and s + m - 1 in index
    assert set(range(0, d["num_anchors"], d["subsample_step"])) <= set(index)
    s = len(index)
    assert _shape(d["cls_logits"]) == [n, s, 91]
    assert _shape(d["bbox_regression"]) == [n, s, 4]
    assert _shape(d["anchors"]) == [s, 4]
    for key in ("cls_logits", "bbox_regression"):
        values = _flat(d[key])
        assert all(math.isfinite(v) for v in values), key
        assert len(set(values)) > len(values) // 2, f"{key} looks constant"
        assert abs(d[f"{key}_sum"]) <= d[f"{key}_abs_sum"]
        assert sum(abs(v) for v in values) <= d[f"{key}_abs_sum"]
        # the level sums add up to the total (each rounded to 10 significant digits)
        assert math.isclose(sum(d[f"{key}_level_sums"]), d[f"{key}_sum"], rel_tol=1e-6, abs_tol=1e-3)
    for x1, y1, x2, y2 in d["anchors"]:
        assert x2 > x1 and y2 > y1


def test_ssd_layout_matches_the_paper():
    d = load_layout("torchvision__ssd300_vgg16")
    assert d["input"] == [2, 3, 300, 300]
    assert d["level_sizes"] == SSD_LEVELS and d["anchors_per_location"] == SSD_BOXES
    assert d["num_anchors"] == 8732
    # anchor 0: conv4_3 cell (0, 0), centre (0.5 * 8, 0.5 * 8) = (4, 4) (step 8), the aspect-1 box of scale
    # 0.07 * 300 = 21 pixels (the COCO setting, Sec. 3.4: conv4_3 scale 0.07): [4 - 10.5, 4 + 10.5]
    assert d["anchor_index"][0] == 0 and d["anchors"][0] == [-6.5, -6.5, 14.5, 14.5]
    # the last anchor: conv11_2's single cell, centre 150, the aspect-1/2 box of scale 0.87 (w = 0.87 / sqrt 2,
    # h = 0.87 * sqrt 2 = 1.23, clipped to 1 in normalised (cx, cy, w, h) before conversion)
    assert d["anchor_index"][-1] == 8731
    x1, y1, x2, y2 = d["anchors"][-1]
    half = 0.87 / math.sqrt(2) * 300 / 2
    assert x1 == pytest.approx(150 - half, abs=1e-3) and x2 == pytest.approx(150 + half, abs=1e-3)
    assert (y1, y2) == (0.0, 300.0)
    shapes = {k: s for k, s, _t in d["state_dict"]}
    assert shapes["backbone.scale_weight"] == [512]  # conv4_3's L2 normalisation scale (ParseNet)
    assert shapes["backbone.extra.0.7.1.weight"] == [1024, 512, 3, 3]  # fc6 as a 3x3 (atrous) convolution
    assert shapes["backbone.extra.0.7.3.weight"] == [1024, 1024, 1, 1]  # fc7 as 1x1
    assert shapes["head.classification_head.module_list.0.weight"] == [4 * 91, 512, 3, 3]
    assert shapes["head.regression_head.module_list.1.weight"] == [6 * 4, 1024, 3, 3]
    assert all(t == "float32" for _k, _s, t in d["state_dict"])
    assert d["params"] == sum(math.prod(s) for _k, s, _t in d["state_dict"])  # no buffers


def test_retinanet_layout_matches_the_paper():
    d = load_layout("torchvision__retinanet_resnet50_fpn")
    assert d["input"] == [2, 3, 256, 320]
    assert d["level_sizes"] == RETINA_LEVELS and d["anchors_per_location"] == [9] * 5
    assert d["num_anchors"] == 15_354
    # torchvision's AnchorGenerator centres the cell (0, 0) anchors at pixel (0, 0) (shifts = index * stride, no
    # half cell) and rounds the base anchors: size 32, ratio h/w 0.5 -> w = 32 / sqrt(0.5) = 45.25,
    # h = 32 * sqrt(0.5) = 22.63 -> round(+-22.63), round(+-11.31)
    assert d["anchors"][0] == [-23.0, -11.0, 23.0, 11.0]
    assert d["norm_layer"] == "FrozenBatchNorm2d"
    keys = [k for k, _s, _t in d["state_dict"]]
    assert not any(k.endswith("num_batches_tracked") for k in keys)  # the COCO checkpoint's layout
    frozen = {k.removesuffix(".running_mean") for k in keys if k.endswith(".running_mean")}
    bn_entries = {f"{m}.{b}" for m in frozen for b in ("weight", "bias", "running_mean", "running_var")}
    assert bn_entries <= set(keys)
    sizes = {k: math.prod(s) for k, s, _t in d["state_dict"]}
    assert d["params"] == sum(v for k, v in sizes.items() if k not in bn_entries)
    assert d["params_buffers"] == sum(sizes[k] for k in bn_entries)
    affine = sum(sizes[f"{m}.{b}"] for m in frozen for b in ("weight", "bias"))
    assert d["params_trainable_bn"] == d["params"] + affine == RETINANET_TRAINABLE_BN
    shapes = {k: s for k, s, _t in d["state_dict"]}
    assert shapes["head.classification_head.cls_logits.weight"] == [9 * 91, 256, 3, 3]
    assert shapes["head.regression_head.bbox_reg.weight"] == [9 * 4, 256, 3, 3]


@pytest.mark.parametrize("name", NAMES)
def test_params_equal_the_issue_counts(name):
    assert load_layout(f"torchvision__{name}")["params"] == ISSUE_COUNTS[name]
