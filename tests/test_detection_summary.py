"""`cnnzoo list`, `info` and `summary` for the one-stage detectors (issue 27): parameters, MACs and raw output shapes of
every registered detector, and the stored counts they read (src/cnnzoo/detection/models/_counts.json,
`python -m cnnzoo.detection.counts`).

Expected values come from outside the code under test: parameter counts quoted in the issue text (torchvision's
ssd300_vgg16 35,641,826 and retinanet_resnet50_fpn 34,014,999; YOLO v1 271,703,550), output shapes from the papers
(SSD Fig. 2: 8,732 default boxes at 300x300; YOLO v1 Sec. 2: S x S x (B * 5 + C) = 7 x 7 x 30; YOLO v3/v4 heads at
strides 32/16/8 with 3 anchors x (5 + 80) = 255 columns), and the built module's tensors.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch

import cnnzoo
from cnnzoo.cli.main import main
from cnnzoo.detection import counts
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors
from cnnzoo.segmentation import list_segmenters

NAMES = list_detectors()
STORED = counts._table()
FIX = f"rewrite the entries with `{counts.REGENERATE} NAME ...` (or `{counts.REGENERATE}` for all)"
#: parameters at the card's defaults, as the issue text quotes them (torchvision's counts for the first two)
ISSUE_PARAMS = {"ssd300_vgg16": 35_641_826, "retinanet_resnet50_fpn": 34_014_999, "yolo_v1": 271_703_550}
#: SSD300 Fig. 2: 38^2*4 + 19^2*6 + 10^2*6 + 5^2*6 + 3^2*4 + 1^2*4 default boxes
SSD300_BOXES = 38 * 38 * 4 + 19 * 19 * 6 + 10 * 10 * 6 + 5 * 5 * 6 + 3 * 3 * 4 + 1 * 1 * 4
EXPENSIVE = {"dssd321_resnet101", "dssd513_resnet101"}  # a ResNet-101 built on meta: about a second each


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@functools.cache
def params_of(name: str) -> int:
    with torch.device("meta"):
        model = create_detector(name)
    return sum(p.numel() for p in model.parameters())


# -------------------------------------------------------------------------------------------------- the store
def test_ssd300_default_boxes_hand_count():
    assert SSD300_BOXES == 8732  # the paper's number (Liu et al. 2016, Fig. 2)


def test_no_name_is_in_two_registries():
    """`cnnzoo info/summary NAME` look a name up in all three registries: one answer each."""
    classifiers, segmenters = set(cnnzoo.list_models()), set(list_segmenters())
    assert not (classifiers | segmenters) & set(NAMES)


def test_every_registered_detector_has_a_stored_entry_and_no_other():
    missing = sorted(set(NAMES) - set(STORED))
    extra = sorted(set(STORED) - set(NAMES))
    assert not missing, f"registered without stored counts: {missing}; {FIX}"
    assert not extra, f"stored counts of detectors no longer registered: {extra}; {FIX}"
    for name in NAMES:
        assert counts.stored(name) is not None, f"{name}: malformed entry; {FIX}"


@pytest.mark.parametrize("name", sorted(ISSUE_PARAMS))
def test_stored_params_are_the_issue_counts(name):
    assert STORED[name]["params"] == ISSUE_PARAMS[name], FIX
    assert params_of(name) == ISSUE_PARAMS[name]


@pytest.mark.parametrize("name", [n for n in NAMES if n not in EXPENSIVE and n in STORED])
def test_stored_params_and_input_are_the_built_detectors(name):
    card = get_detector_card(name)
    entry = STORED[name]
    assert entry["params"] == params_of(name), f"{name}: stored counts are stale; {FIX}"
    assert entry["input"] == list(card.input_size), FIX


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(STORED) & set(NAMES)))
def test_stored_counts_are_a_trace_of_the_detector(name):
    """Every entry (the ResNet-101 DSSDs too) against FlopCounterMode over a fresh meta forward."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_detector(name).eval()
    size = tuple(get_detector_card(name).input_size)
    mode = FlopCounterMode(display=False)
    with torch.no_grad(), mode:
        model(torch.empty(1, *size, device="meta"))
    entry = STORED[name]
    assert entry["params"] == sum(p.numel() for p in model.parameters()), FIX
    assert entry["macs"] == mode.get_total_flops() // 2, FIX


def test_stored_output_shapes_are_the_papers():
    assert STORED["ssd300_vgg16"]["output"] == {"cls_logits": [1, SSD300_BOXES, 91],
                                                "bbox_regression": [1, SSD300_BOXES, 4]}
    assert STORED["yolo_v1"]["output"] == [1, 7, 7, 2 * 5 + 20]
    assert STORED["fast_yolo_v1"]["output"] == [1, 7, 7, 30]
    assert STORED["yolo_v4"]["output"] == [[1, 3, 608 // s, 608 // s, 85] for s in (8, 16, 32)]


# ------------------------------------------------------------------------------------------------------- list
def test_list_shows_a_detection_table_after_the_others(capsys):
    code, out, err = run(capsys, "list", "--width", "200")
    assert code == 0, err
    title = f"detection networks matching '*' ({len(NAMES)})"
    assert title in out and out.index("segmentation networks matching") < out.index(title)
    firsts = [line.split()[0] for line in out[out.index(title):].splitlines()[1:] if line.strip()]
    for name in NAMES:
        assert firsts.count(name) == 1, name


def test_list_pattern_of_detectors_only(capsys):
    code, out, err = run(capsys, "list", "ssd*", "--width", "80")
    assert code == 0, err
    assert "detection networks matching 'ssd*' (2)" in out
    assert "cnnzoo networks matching" not in out and "segmentation networks" not in out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["ssd300_vgg16"])
    assert "35.64M" in row and "3x300x300" in row and "Liu, 2016" in row
    assert max(map(len, out.splitlines())) <= 80


@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a detector was built")

    monkeypatch.setattr("cnnzoo.detection.registry.create_detector", refuse)


def test_list_and_info_read_the_store_and_build_nothing(capsys, monkeypatch, nothing_built):
    table = {**STORED, "yolo_v1": {**STORED["yolo_v1"], "params": 12_345, "output": [1, 7, 7, 99]}}
    monkeypatch.setattr(counts, "_table", lambda: table)
    code, out, err = run(capsys, "list", "yolo_v1", "--width", "200")
    assert code == 0, err
    assert "12,345" in next(line for line in out.splitlines() if line.split()[:1] == ["yolo_v1"])
    code, out, err = run(capsys, "info", "yolo_v1", "--width", "200")
    assert code == 0, err
    assert "parameters: 12,345\n" in out and "1x7x7x99 (raw head outputs) for input (1, 3, 448, 448)" in out


def test_a_detector_the_store_lacks_is_counted_live(capsys, monkeypatch):
    monkeypatch.setattr(counts, "_table", dict)
    code, out, err = run(capsys, "list", "ssd300*", "--width", "200")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.split()[:1] == ["ssd300_vgg16"])
    assert "35.64M" in row and "34.9G" in row


# ------------------------------------------------------------------------------------------------------- info
def test_info_of_a_detector(capsys):
    code, out, err = run(capsys, "info", "ssd300_vgg16", "--width", "250")
    assert code == 0, err
    assert "(detection)" in out.splitlines()[0]
    assert "parameters: 35,641,826\n" in out
    assert f"cls_logits 1x{SSD300_BOXES}x91, bbox_regression 1x{SSD300_BOXES}x4 (raw head outputs)" in out
    assert f"MACs: {STORED['ssd300_vgg16']['macs']:,} = " in out
    card = get_detector_card("ssd300_vgg16")
    assert card.paper.title in out and card.paper.url in out
    assert "num_classes" in out.split("options:")[1].splitlines()[0]
    assert "digits recipe: options=" in out and "`cnnzoo detect train` on digits-detection" in out
    for d in card.deviations:
        assert " ".join(d.split())[:60] in " ".join(out.split()), d
    assert "Paper notes" in out


def test_info_at_another_input_counts_live(capsys):
    """YOLOv4's three heads at strides 8, 16, 32 of a 320 x 320 input: 40, 20, 10 cells, 3 anchors x 85."""
    code, out, err = run(capsys, "info", "yolo_v4", "--input", "320", "--width", "250")
    assert code == 0, err
    assert "[1x3x40x40x85, 1x3x20x20x85, 1x3x10x10x85] (raw head outputs) for input (1, 3, 320, 320)" in out
    assert f"parameters: {STORED['yolo_v4']['params']:,}\n" in out


# ---------------------------------------------------------------------------------------------------- summary
def test_summary_of_a_dict_output_detector_sums_every_head(capsys):
    code, out, err = run(capsys, "summary", "ssd300_vgg16", "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["totals"]["total_params"] == ISSUE_PARAMS["ssd300_vgg16"]
    assert d["totals"]["macs"] == STORED["ssd300_vgg16"]["macs"]  # the store's trace: every head, not the first
    assert d["outputs"] == {"cls_logits": [1, SSD300_BOXES, 91], "bbox_regression": [1, SSD300_BOXES, 4]}
    code, out, err = run(capsys, "summary", "ssd300_vgg16", "--depth", "1", "--width", "200")
    assert code == 0, err
    assert f"total parameters: {ISSUE_PARAMS['ssd300_vgg16']:,}" in out
    assert f"outputs: cls_logits 1x{SSD300_BOXES}x91, bbox_regression 1x{SSD300_BOXES}x4" in " ".join(out.split())


def test_summary_of_a_multi_scale_detector(capsys):
    code, out, err = run(capsys, "summary", "yolo_v4", "--input", "320", "--depth", "1", "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["outputs"] == [[1, 3, 40, 40, 85], [1, 3, 20, 20, 85], [1, 3, 10, 10, 85]]
    assert d["totals"]["total_params"] == STORED["yolo_v4"]["params"]


def test_summary_of_yolo_v1_at_its_card_size(capsys):
    code, out, err = run(capsys, "summary", "yolo_v1", "--depth", "1", "--format", "markdown")
    assert code == 0, err
    assert f"total parameters: {ISSUE_PARAMS['yolo_v1']:,}" in out
    assert "- outputs: 1x7x7x30 (raw head outputs for a 3x448x448 input" in out


# ------------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("argv,words", [
    (["info", "yolo_v5"], ["unknown network 'yolo_v5'", "yolo_v4 (detection)", f"{len(NAMES)} detection networks"]),
    (["summary", "ssd300_vgg"], ["unknown network 'ssd300_vgg'", "ssd300_vgg16 (detection)"]),
    (["summary", "yolo_v1", "--input", "100"], ["448x448", "100x100"]),
    (["info", "ssd300_vgg16", "-o", "widht_mult=2"], ["widht_mult", "width_mult"]),
    (["compare-arch", "resnet18", "yolo_v2"], ["yolo_v2 is a detector", "cnnzoo summary yolo_v2"]),
    (["list", "ssd*", "--plot", "zoo.png"], ["--plot draws classification networks", "ssd300_vgg16"]),
])
def test_errors_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
