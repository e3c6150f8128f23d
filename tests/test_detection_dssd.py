"""DSSD (Fu et al. 2017, https://arxiv.org/abs/1701.06659): the parameter count derived by hand, Table 1's maps and
the default boxes of Sec. 3 ("Using K-means"), the deconvolution module of Fig. 3 and the prediction module of
Fig. 2 (c) on hand cases, training and detection."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnzoo.detection.models.dssd  # noqa: F401  (registers dssd321_resnet101 / dssd513_resnet101)
from cnnzoo.detection.models.dssd import DeconvolutionModule, PredictionModule
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors

SMALL = {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]}, "channels": 16, "input_size": 128}


def _meta(name: str, **options):
    with torch.device("meta"):
        return create_detector(name, **options)


@pytest.fixture(scope="module")
def dssd321():
    return _meta("dssd321_resnet101")


def test_registered():
    assert {"dssd321_resnet101", "dssd513_resnet101"} <= set(list_detectors("dssd*"))
    card = get_detector_card("dssd321_resnet101")
    assert card.family == "dssd" and "1701.06659" in card.paper.url
    assert "Fig. 3" in card.notes and card.deviations


def test_parameter_count_by_hand(dssd321):
    """DSSD has no peer checkpoint; the count follows from the layout (module notes) at 21 classes (VOC):
    body      resnet101 less its fc: 44,549,160 - (2048 * 1000 + 1000) = 42,500,160 (torchvision's resnet101 count;
              conv5_x's dilation and Caffe's pool1 change no parameter)
    extras    conv6_x (2048 in): 1x1 2048*256 + 3x3 256*256*9 + 1x1 256*1024 + shortcut 2048*1024
                      = 524,288 + 589,824 + 262,144 + 2,097,152 = 3,473,408, BN 2 * (256 + 256 + 1024 + 1024) = 5,120
              conv7_x .. conv9_x (1024 in): 262,144 + 589,824 + 262,144 + 1,048,576 = 2,162,688, BN 5,120; three
    deconv    Fig. 3 at 512 channels: up = deconv (c_in * 512 * k^2 + 512) + conv 3x3 512*512*9 = 2,359,296 + BN 1,024;
              lateral = conv 3x3 c_fine * 512 * 9 + BN 1,024 + conv 2,359,296 + BN 1,024.
              conv9->conv8 (deconv 3x3 from 1024, fine 1024): 4,719,104 + 2,360,320 + 4,719,616 + 2,360,320
              conv8->conv7 (3x3 from 512, fine 1024):        2,359,808 + 2,360,320 + 4,719,616 + 2,360,320
              conv7->conv6 (2x2 from 512, fine 1024):        1,049,088 + 2,360,320 + 4,719,616 + 2,360,320
              conv6->conv5 (2x2, fine 2048):                 1,049,088 + 2,360,320 + 9,438,208 + 2,360,320
              conv5->conv3 (2x2, fine 512):                  1,049,088 + 2,360,320 + 2,360,320 + 2,360,320
    predict   Fig. 2 (c), 1x1 convs with biases: c_in*256 + 256 + 256*256 + 256 + 256*1024 + 1024 + c_in*1024 + 1024:
              985,600 on the five 512-channel maps, 1,640,960 on the 1024-channel top-most SSD layer
    head      per map cls 1024*9*(8*21) + 168 = 1,548,456, loc 1024*9*32 + 32 = 294,944; six maps."""
    body = 44_549_160 - (2048 * 1000 + 1000)
    extras = (3_473_408 + 5_120) + 3 * (2_162_688 + 5_120)
    deconv = (4_719_104 + 2_360_320 + 4_719_616 + 2_360_320) + (2_359_808 + 2_360_320 + 4_719_616 + 2_360_320) + \
             (1_049_088 + 2_360_320 + 4_719_616 + 2_360_320) + (1_049_088 + 2_360_320 + 9_438_208 + 2_360_320) + \
             (1_049_088 + 2_360_320 + 2_360_320 + 2_360_320)
    predict = 5 * 985_600 + 1_640_960
    head = 6 * (1_548_456 + 294_944)
    assert body + extras + deconv + predict + head == 129_898_224
    m = dssd321
    count = (lambda mod: sum(p.numel() for p in mod.parameters()))
    assert count(m.backbone) == body
    assert count(m.extras) == extras
    assert count(m.deconv) == deconv
    assert count(m.predict) == predict
    assert count(m.head) == head
    assert count(m) == 129_898_224


# resnet18 with one block per stage has ResNet-101's geometry (conv1, Caffe's pool1, strides, conv5_x dilated)
R18 = {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]}}


def test_table1_maps_and_17080_default_boxes(dssd321):
    for m in (dssd321, _meta("dssd321_resnet101", **R18)):
        # Table 1 (Residual-101 at 321): conv3_x 40, conv5_x 20 (stride 16: dilated), conv6_x .. conv9_x 10, 5, 3, 1
        assert m.feature_sizes(321) == [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3), (1, 1)]
        assert [b.valid for b in m.extras] == [False, False, True, True]
        # deconvolution modules coarse to fine: 1 -> 3 and 3 -> 5 undo valid 3x3s, then 2x2 stride 2 (Fig. 3)
        assert [d.kernel for d in m.deconv] == [3, 3, 2, 2, 2]
        # 8 default boxes per location (2 squares + 1.6, 2, 3 and inverses): (1600 + 400 + 100 + 25 + 9 + 1) * 8
        assert m.num_anchors(321) == 2135 * 8 == 17_080
        assert m.anchors(321).shape == (17_080, 4)
    m = _meta("dssd321_resnet101", **R18)
    out = m(torch.empty(2, 3, 321, 321, device="meta"))
    assert out["cls_logits"].shape == (2, 17_080, 21) and out["bbox_regression"].shape == (2, 17_080, 4)


@pytest.mark.slow
def test_full_dssd321_output_shapes(dssd321):
    out = dssd321(torch.empty(2, 3, 321, 321, device="meta"))
    assert out["cls_logits"].shape == (2, 17_080, 21) and out["bbox_regression"].shape == (2, 17_080, 4)


def test_dssd513_maps():
    m = _meta("dssd513_resnet101", **R18)
    assert [h for h, _ in m.feature_sizes(513)] == [64, 32, 16, 8, 4, 2, 1]  # Table 1, DSSD513
    assert not any(b.valid for b in m.extras) and all(d.kernel == 2 for d in m.deconv)
    assert m.num_anchors(513) == (64 ** 2 + 32 ** 2 + 16 ** 2 + 8 ** 2 + 16 + 4 + 1) * 8 == 43_688


def test_kmeans_aspect_ratios_on_every_map():
    m = create_detector("dssd321_resnet101", num_classes=3, in_channels=1, **SMALL)
    sizes = m.feature_sizes(128)
    anchors = m.anchors(128)
    start, checked = 0, 0
    for k, (h, w) in enumerate(sizes):
        first = anchors[start : start + 8]  # the 8 boxes of the map's first location
        wh = first[:, 2:] - first[:, :2]
        ratios = sorted((wh[:, 0] / wh[:, 1]).tolist())
        s, s_next = m.scales[k], m.scales[k + 1]
        if s * math.sqrt(3) <= 1 and math.sqrt(s * s_next) <= 1:  # no side clipped to the image
            # Sec. 3 "Using K-means": 1.6, 2, 3 and their inverses besides the two squares
            expect = sorted([1, 1, 1.6, 1 / 1.6, 2, 0.5, 3, 1 / 3])
            assert ratios == pytest.approx(expect, rel=1e-4)
            checked += 1
        start += h * w * 8
    assert start == len(anchors) and checked >= 3


def _set_bn(bn: nn.BatchNorm2d, weight: float, bias: float, mean: float, var: float) -> float:
    """An eval-mode BN as the affine map y = a x + b; returns (a, b)."""
    with torch.no_grad():
        bn.weight.fill_(weight)
        bn.bias.fill_(bias)
        bn.running_mean.fill_(mean)
        bn.running_var.fill_(var)
    a = weight / math.sqrt(var + bn.eps)
    return a, bias - a * mean


def _hand_module(combine: str | None):
    m = DeconvolutionModule(1, 1, 1) if combine is None else DeconvolutionModule(1, 1, 1, combine=combine)
    m.eval()
    with torch.no_grad():
        deconv = m.upsample[0]
        deconv.weight.fill_(1.0)  # 2x2 of ones: coarse (i, j) -> fine (2i .. 2i+1, 2j .. 2j+1)
        deconv.bias.fill_(0.0)
        for conv in (m.upsample[1], m.lateral[0], m.lateral[3]):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0  # 3x3 identity
    bn_up = _set_bn(m.upsample[2], 2.0, 0.5, 1.0, 4.0)  # y = x - 0.5 (weight 2 / std 2, bias 0.5 - 1)
    bn_1 = _set_bn(m.lateral[1], 3.0, 0.0, 0.0, 9.0)  # y = x
    bn_2 = _set_bn(m.lateral[4], 1.0, 1.0, 2.0, 1.0)  # y = x - 1
    return m, bn_up, bn_1, bn_2


def test_deconvolution_module_hand_case():
    coarse = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])  # 2x2
    fine = torch.tensor([[[[2.0, 3.0, 4.0], [5.0, 6.0, 7.0], [8.0, 9.0, 10.0]]]])  # 3x3: odd, so 4x4 is cropped
    # the upsampled coarse map, aligned top-left with the fine map (row / column 3 of the 4x4 dropped)
    up = torch.tensor([[1.0, 1.0, -2.0], [1.0, 1.0, -2.0], [3.0, 3.0, 4.0]])
    for combine in (None, "product", "sum"):
        m, (a0, b0), (a1, b1), (a2, b2) = _hand_module(combine)
        assert m.up(coarse, (3, 3))[0, 0].tolist() == up.tolist()
        path_a = a0 * up + b0  # deconv, conv 3x3, BN
        path_b = a2 * (torch.relu(a1 * fine[0, 0] + b1)) + b2  # conv, BN, ReLU, conv, BN
        expect = torch.relu(path_a * path_b if combine in (None, "product") else path_a + path_b)
        with torch.no_grad():
            got = m(coarse, fine)[0, 0]
        assert torch.allclose(got, expect, atol=1e-5), combine
    # Table 4's best, the element-wise product, is the default: here the two differ
    with torch.no_grad():
        assert not torch.allclose(_hand_module(None)[0](coarse, fine), _hand_module("sum")[0](coarse, fine))


def test_dssd_merges_by_product_by_default():
    torch.manual_seed(0)
    m = create_detector("dssd321_resnet101", num_classes=3, in_channels=1, **SMALL).eval()
    assert m.combine == "product" and all(d.combine == "product" for d in m.deconv)
    x = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        maps = m.ssd_maps(x)
        d = m.deconv[-1]  # conv5_x's path onto conv3_x
        coarse = m.prediction_maps(x)[1]
        got = m.prediction_maps(x)[0]
        expect = torch.relu(d.upsample[1:](d.up(coarse, maps[0].shape[-2:])) * d.lateral(maps[0]))
    assert torch.allclose(got, expect, atol=1e-6)


def test_prediction_module_is_residual():
    torch.manual_seed(0)
    p = PredictionModule(4, 3, 5)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        full = p(x)
        branch_last = p.branch[-1]
        branch_last.weight.zero_()
        branch_last.bias.zero_()
        skipped = p(x)
    # the residual branch silenced: what is left is the 1x1 shortcut of Fig. 2 (c), then the ReLU
    by_hand = torch.relu(torch.einsum("oi,nihw->nohw", p.skip.weight[:, :, 0, 0], x) + p.skip.bias.view(1, -1, 1, 1))
    assert torch.allclose(skipped, by_hand, atol=1e-6)
    assert by_hand.abs().sum() > 0 and not torch.allclose(full, skipped)
    # Fig. 2 (c): three 1x1 convolutions (256, 256, 1024 at the paper's widths) and a 1x1 shortcut
    convs = [mod for mod in p.branch if isinstance(mod, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1)] * 3 and p.skip.kernel_size == (1, 1)


def test_deconvolution_module_layers_of_fig3():
    m = DeconvolutionModule(1024, 2048, 512)
    assert [type(x) for x in m.upsample] == [nn.ConvTranspose2d, nn.Conv2d, nn.BatchNorm2d]
    assert m.upsample[0].kernel_size == (2, 2) and m.upsample[0].stride == (2, 2)
    assert [type(x) for x in m.lateral] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    assert all(c.kernel_size == (3, 3) for c in (m.upsample[1], m.lateral[0], m.lateral[3]))


def test_one_training_step_on_digits_lowers_the_loss():
    from cnnzoo.detection.data import digits_detection

    torch.manual_seed(0)
    train, _ = digits_detection(num_train=4, num_test=1, canvas=128)
    m = create_detector("dssd321_resnet101", num_classes=11, in_channels=1, **SMALL)
    images = torch.stack([train.image(i) for i in range(4)]).float() / 255
    targets = [{"boxes": train.boxes[i], "labels": train.labels[i] + 1} for i in range(4)]
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    before = m.loss(m(images), targets, 128)
    assert set(before) >= {"loss", "classification", "bbox_regression"}
    opt.zero_grad()
    before["loss"].backward()
    opt.step()
    with torch.no_grad():
        after = m.loss(m(images), targets, 128)["loss"]
    assert after < before["loss"].detach()


def test_detect_returns_boxes_inside_with_labels():
    torch.manual_seed(0)
    m = create_detector("dssd321_resnet101", num_classes=11, in_channels=1, **SMALL)
    m.train()
    dets = m.detect(torch.rand(2, 1, 128, 128), score_thresh=0.05, max_detections=20)
    assert m.training  # restored
    assert len(dets) == 2
    for d in dets:
        assert d["boxes"].shape == (len(d["scores"]), 4) and len(d["labels"]) == len(d["scores"]) <= 20
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 128).all()
        assert ((d["labels"] >= 1) & (d["labels"] <= 10)).all()


def test_stage_one_ssd_and_options():
    m = create_detector("dssd321_resnet101", num_classes=3, in_channels=1, deconvolution=False, **SMALL)
    assert not hasattr(m, "deconv") and len(m.predict) == len(m.feature_sizes(128))
    assert sum(p.numel() for p in m.ssd_parameters()) == \
        sum(p.numel() for p in m.backbone.parameters()) + sum(p.numel() for p in m.extras.parameters())
    out = m(torch.rand(2, 1, 128, 128))  # (a batch of 2: train-mode BN on the 1x1 map needs more than one value)
    assert out["cls_logits"].shape == (2, m.num_anchors(128), 3)
    with pytest.raises(ValueError, match="combine must be one of product, sum"):
        create_detector("dssd321_resnet101", combine="max", **SMALL)
    # the 321 layout's valid 3x3 extra layers need a 5x5 conv7_x: conv5_x 20 at 259 pixels and up (Table 1 at 321)
    with pytest.raises(ValueError, match="at least 259x259 pixels, got 128x128"):
        create_detector("dssd321_resnet101", num_classes=3, **{**SMALL, "input_size": 321})(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match="reductions 8 and 16"):
        create_detector("dssd321_resnet101", backbone="lenet5", input_size=128)


def test_options_from_state_dict():
    m = create_detector("dssd321_resnet101", num_classes=5, in_channels=1, **SMALL)
    assert m.options_from_state_dict(m.state_dict()) == {"num_classes": 5, "deconvolution": True, "channels": 16}
