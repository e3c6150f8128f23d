"""SSD300 / SSD512 on VGG-16 (Liu et al. 2016, https://arxiv.org/abs/1512.02325): torchvision's raw head outputs on
the layout fixture, the paper's counts, the default boxes, the L2Norm scale, training and detection."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors
from layout_fill import filled_state_dict, load_layout, make_input

FIXTURE = "torchvision__ssd300_vgg16"


@pytest.fixture(scope="module")
def layout():
    return load_layout(FIXTURE)


@pytest.fixture(scope="module")
def filled_file(layout, tmp_path_factory):
    path = tmp_path_factory.mktemp("ssd") / "ssd300_filled.pt"
    torch.save(filled_state_dict(layout), path)
    return path


def _meta(name: str = "ssd300_vgg16", **options):
    with torch.device("meta"):
        return create_detector(name, **options)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_registered():
    assert {"ssd300_vgg16", "ssd512_vgg16"} <= set(list_detectors("ssd*"))
    card = get_detector_card("ssd300_vgg16")
    assert "Key ideas" in card.notes and "This implementation" in card.notes
    assert card.input_size == (3, 300, 300) and get_detector_card("ssd512_vgg16").input_size == (3, 512, 512)


def test_state_dict_is_torchvision_layout(layout):
    mine = {k: list(v.shape) for k, v in _meta().state_dict().items()}
    assert mine == {k: s for k, s, _t in layout["state_dict"]}


def test_params_equal_torchvision():
    # By hand, 91 classes (torchvision's COCO default, background included):
    #   VGG-16 conv1_1 .. conv5_3                                    14,714,688
    #   fc6 3x3 512 -> 1024 (dilated): 512*1024*9 + 1024              4,719,616
    #   fc7 1x1 1024 -> 1024: 1024*1024 + 1024                        1,049,600
    #   L2Norm scale (conv4_3's 512 channels)                               512
    #   extra layers (test_extra_layers_of_fig2)                      2,459,520
    #   predictors, per map (91 + 4) * boxes * (9 * channels + 1):
    #     conv4_3 95*4*4609 = 1,751,420; fc7 95*6*9217 = 5,253,690; conv8_2 95*6*4609 = 2,627,130;
    #     conv9_2 95*6*2305 = 1,313,850; conv10_2, conv11_2 95*4*2305 = 875,900 each    12,697,890
    #   total                                                        35,641,826 (torchvision's, issue 27)
    assert sum(p.numel() for p in _meta().parameters()) == 35_641_826


def test_extra_layers_of_fig2():
    # Fig. 2: conv8_1 1x1x256, conv8_2 3x3x512-s2; conv9_1 1x1x128, conv9_2 3x3x256-s2; conv10_1 1x1x128,
    # conv10_2 3x3x256-s1; conv11_1 1x1x128, conv11_2 3x3x256-s1 (weights + biases):
    #   conv8_1 1024*256 + 256 = 262,400      conv8_2 256*512*9 + 512 = 1,180,160
    #   conv9_1  512*128 + 128 =  65,664      conv9_2 128*256*9 + 256 =   295,168
    #   conv10_1 256*128 + 128 =  32,896      conv10_2                    295,168
    #   conv11_1 256*128 + 128 =  32,896      conv11_2                    295,168     -> 2,459,520
    extra = _meta().backbone.extra[1:]
    assert sum(p.numel() for p in extra.parameters()) == 2_459_520
    strides = [blk[2].stride[0] for blk in extra]
    assert strides == [2, 2, 1, 1]


def test_8732_default_boxes_and_maps():
    m = _meta()
    # Fig. 2: conv4_3 38, fc7 19, conv8_2 10, conv9_2 5, conv10_2 3, conv11_2 1; 4, 6, 6, 6, 4, 4 boxes
    assert m.feature_sizes(300) == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert m.boxes_per_location == [4, 6, 6, 6, 4, 4]
    assert m.num_anchors(300) == 8732 == len(m.anchors(300))


def test_ssd512_24564_boxes():
    m = _meta("ssd512_vgg16")
    # Table 7: SSD512 has 24,564 boxes: 64^2*4 + 32^2*6 + 16^2*6 + 8^2*6 + 4^2*6 + 2^2*4 + 1*4
    assert m.feature_sizes(512) == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert m.num_anchors(512) == 16384 + 6144 + 1536 + 384 + 96 + 16 + 4 == 24564
    assert len(m.anchors(512)) == 24564
    # SSD300's 35,641,826 + conv12_1 (256*128 + 128 = 32,896) + conv12_2 (4x4: 128*256*16 + 256 = 524,544)
    # + conv10_2's predictors at 6 boxes instead of 4 (95*2*2305 = 437,950) + conv12_2's (95*4*2305 = 875,900)
    assert sum(p.numel() for p in m.parameters()) == 35_641_826 + 32_896 + 524_544 + 437_950 + 875_900


def test_l2norm_scale_starts_at_20():
    m = create_detector("ssd300_vgg16", width_mult=0.125, levels=3, num_classes=3)
    # Sec. 3.1 (ParseNet): "scale the feature norm at each location in the feature map to 20 and learn the scale"
    assert m.backbone.scale_weight.requires_grad
    assert torch.equal(m.backbone.scale_weight.detach(), torch.full((64,), 20.0))
    x = torch.rand(1, 3, 64, 64)
    conv4_3 = m.backbone(x)[0]
    norms = conv4_3.norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.tensor(20.0), rtol=1e-5)


def test_fc6_is_dilated():
    fc = _meta().backbone.extra[0][7]
    # Sec. 3: pool5 3x3-s1, fc6 3x3 with the "a trous" holes (dilation 6, size kept), fc7 1x1
    assert (fc[0].kernel_size, fc[0].stride) == (3, 1)
    assert (fc[1].kernel_size, fc[1].dilation, fc[1].padding) == ((3, 3), (6, 6), (6, 6))
    assert fc[3].kernel_size == (1, 1)


def test_anchors_equal_torchvision(layout):
    a = _meta().anchors(300)
    idx = torch.tensor(layout["anchor_index"])
    assert a.shape == (layout["num_anchors"], 4)
    assert torch.allclose(a[idx], torch.tensor(layout["anchors"]), atol=1e-3, rtol=0)
    assert math.isclose(a.double().sum().item(), layout["anchors_sum"], rel_tol=1e-6)


def test_live_equality_first_image(layout, filled_file):
    """torchvision's raw head outputs (first probe image, sampled anchors) from its checkpoint, no options."""
    m = cnnzoo.create_model("ssd300_vgg16", weights=filled_file).eval()  # issue 27: through create_model
    with torch.no_grad():
        out = m(make_input(2, 3, 300)[:1])
    idx = torch.tensor(layout["anchor_index"])
    assert _rel(out["cls_logits"][0, idx], torch.tensor(layout["cls_logits"][0])) < 1e-4
    assert _rel(out["bbox_regression"][0, idx], torch.tensor(layout["bbox_regression"][0])) < 1e-4


@pytest.mark.slow
def test_live_equality_full(layout, filled_file):
    m = create_detector("ssd300_vgg16", weights=filled_file).eval()
    with torch.no_grad():
        out = m(make_input(*layout["input"][:3]))
    idx = torch.tensor(layout["anchor_index"])
    starts = [sum(layout["anchors_per_level"][:i]) for i in range(len(layout["anchors_per_level"]))]
    for key in ("cls_logits", "bbox_regression"):
        y = out[key]
        assert _rel(y[:, idx], torch.tensor(layout[key])) < 1e-4, key
        assert math.isclose(y.double().sum().item(), layout[f"{key}_sum"], rel_tol=1e-5, abs_tol=1e-2), key
        assert math.isclose(y.double().abs().sum().item(), layout[f"{key}_abs_sum"], rel_tol=1e-5), key
        for s, n, ref in zip(starts, layout["anchors_per_level"], layout[f"{key}_level_sums"]):
            assert math.isclose(y[:, s : s + n].double().sum().item(), ref, rel_tol=1e-4, abs_tol=1e-2), key


def test_small_input_uses_the_maps_it_has():
    m = _meta(levels=4)
    assert m.feature_sizes(128) == [(16, 16), (8, 8), (4, 4), (2, 2)]
    a = m.anchors(128)
    assert len(a) == 16 * 16 * 4 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 6
    # away from the design size the centres are the paper's (i + 0.5) / |f_k|: the last map's 2x2 cells of 64 px
    last = a[-6:]
    assert torch.allclose((last[:, 0] + last[:, 2]) / 2, torch.tensor(96.0))
    with pytest.raises(ValueError, match="at least"):
        create_detector("ssd300_vgg16", width_mult=0.125)(torch.zeros(1, 3, 128, 128))


def test_bad_options_are_clear():
    with pytest.raises(ValueError, match="levels must be 3 .. 6"):
        create_detector("ssd300_vgg16", levels=7)
    with pytest.raises(ValueError, match="width_mult=1.0"):
        create_detector("ssd300_vgg16", width_mult=0.5, backbone_weights="x.pt")
    m = create_detector("ssd300_vgg16", num_classes=3, width_mult=0.125, levels=3)
    out = m(torch.zeros(1, 3, 64, 64))
    bad = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match="1..2"):
        m.loss(out, bad, 64)


def test_options_from_state_dict():
    from cnnzoo.detection.models.ssd import SSD

    sd = _meta(num_classes=21, in_channels=1).state_dict()
    assert SSD.options_from_state_dict(sd) == {"num_classes": 21, "in_channels": 1}
    assert SSD.options_from_state_dict(_meta(levels=4).state_dict())["levels"] == 4
    assert SSD.options_from_state_dict(_meta("ssd512_vgg16").state_dict())["highres"] is True


def test_one_training_step_on_digits_lowers_the_loss():
    from cnnzoo.detection.data import digits_detection

    torch.manual_seed(0)
    train, _ = digits_detection(num_train=4, num_test=1, canvas=96)
    m = create_detector("ssd300_vgg16", num_classes=11, in_channels=1, width_mult=0.125, levels=4)
    images = torch.stack([train.image(i) for i in range(4)]).float() / 255
    targets = [{"boxes": train.boxes[i], "labels": train.labels[i] + 1} for i in range(4)]  # digit k -> label k + 1
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    before = m.loss(m(images), targets, 96)
    assert set(before) >= {"loss", "classification", "bbox_regression"}
    opt.zero_grad()
    before["loss"].backward()
    opt.step()
    with torch.no_grad():
        after = m.loss(m(images), targets, 96)["loss"]
    assert after < before["loss"].detach()


def test_postprocess_by_hand():
    m = create_detector("ssd300_vgg16", num_classes=4, width_mult=0.125, levels=4)
    size = 128
    anchors = m.anchors(size)
    a = len(anchors)
    cls = torch.zeros(1, a, 4)
    reg = torch.zeros(1, a, 4)
    # anchor 0 (conv4_3 cell (0, 0), partly outside the image) says class 2, the last anchor (a big box) class 3
    cls[0, 0, 2] = 10.0
    cls[0, a - 1, 3] = 8.0
    dets = m.postprocess({"cls_logits": cls, "bbox_regression": reg}, size, score_thresh=0.5)[0]
    # softmax of (0, 0, 10, 0): e^10 / (e^10 + 3); of (0, 0, 0, 8): e^8 / (e^8 + 3); others 1/4 < 0.5
    assert dets["labels"].tolist() == [2, 3]
    assert torch.allclose(dets["scores"], torch.tensor([math.exp(10) / (math.exp(10) + 3),
                                                        math.exp(8) / (math.exp(8) + 3)]))
    # zero offsets decode to the default boxes, clipped to the image
    assert torch.allclose(dets["boxes"], anchors[[0, a - 1]].clamp(0, size), atol=1e-4)
    assert (dets["boxes"] >= 0).all() and (dets["boxes"] <= size).all()


def test_detect_returns_boxes_inside_with_labels():
    torch.manual_seed(0)
    m = create_detector("ssd300_vgg16", num_classes=11, in_channels=1, width_mult=0.125, levels=4)
    m.train()
    images = torch.rand(2, 1, 96, 96)
    dets = m.detect(images, score_thresh=0.095, max_detections=20)
    assert m.training  # restored
    assert len(dets) == 2
    for d in dets:
        assert d["boxes"].shape == (len(d["scores"]), 4) and len(d["labels"]) == len(d["scores"]) <= 20
        assert (d["boxes"] >= 0).all() and (d["boxes"][:, 0::2] <= 96).all() and (d["boxes"][:, 1::2] <= 96).all()
        assert ((d["labels"] >= 1) & (d["labels"] <= 10)).all()
        assert torch.equal(d["scores"], d["scores"].sort(descending=True).values)


@pytest.mark.slow
def test_backbone_weights_from_vgg16():
    from cnnzoo.detection.models.ssd import load_vgg16
    from cnnzoo.registry import create_model

    vgg = create_model("vgg16")
    m = create_detector("ssd300_vgg16")
    load_vgg16(m, vgg)
    bb, src = m.backbone, vgg.state_dict()
    assert torch.equal(bb.features[21].weight, src["features.21.weight"])  # conv4_3
    assert torch.equal(bb.extra[0][5].weight, src["features.28.weight"])  # conv5_3
    fc6, fc7 = bb.extra[0][7][1], bb.extra[0][7][3]
    # decimation: our fc6 output 1 is vgg's output 4; tap (1, 2) is vgg's 7x7 tap (3, 6); input channel 7
    assert fc6.weight[1, 7, 1, 2] == src["classifier.0.weight"][4, 7 * 49 + 3 * 7 + 6]
    assert fc6.bias[1] == src["classifier.0.bias"][4]
    assert fc7.weight[2, 5, 0, 0] == src["classifier.3.weight"][8, 20]
