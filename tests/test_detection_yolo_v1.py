"""YOLO v1 (Redmon et al. 2016): the Fig. 3 network's size, the Eq. 3 loss on a hand-computed toy, decoding and
inference, Fast YOLO's size, and a training step on digits-detection. Expected numbers are computed by hand here
from the paper (section named at each), never read from the code under test."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnzoo.detection.models.yolo_v1 import FastYOLOv1, YOLOv1, decode_boxes, yolo_v1_loss
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_yolo_v1_has_the_papers_parameter_count_and_7x7x30_output():
    # Fig. 3, 20 VOC classes, every layer with a bias (darknet's convolutions without BN have one):
    # convolution weights (k*k*in*out):
    #   1: 7*7*3*64 = 9,408          2: 3*3*64*192 = 110,592     3: 192*128 = 24,576     4: 9*128*256 = 294,912
    #   5: 256*256 = 65,536          6: 9*256*512 = 1,179,648
    #   7-14: 4 * (512*256 + 9*256*512) = 4 * 1,310,720 = 5,242,880
    #   15: 512*512 = 262,144        16: 9*512*1024 = 4,718,592
    #   17-20: 2 * (1024*512 + 9*512*1024) = 2 * 5,242,880 = 10,485,760
    #   21-24: 4 * 9*1024*1024 = 37,748,736                      sum 60,142,784
    # convolution biases: 64+192+128+256+256+512 + 4*(256+512) + 512+1024 + 2*(512+1024) + 4*1024 = 13,184
    # FC 1: 7*7*1024*4096 + 4096 = 205,524,992;  FC 2: 4096*1470 + 1470 = 6,022,590  (1470 = 7*7*(2*5+20))
    # 60,142,784 + 13,184 + 205,524,992 + 6,022,590 = 271,703,550 (without conv biases 271,690,366: not the number)
    with torch.device("meta"):  # no memory, no init: the count and the shape only
        model = create_detector("yolo_v1")
        out = model(torch.zeros(1, 3, 448, 448))
    assert _count(model) == 271_703_550
    assert tuple(out.shape) == (1, 7, 7, 30)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 24 and all(c.bias is not None for c in convs)
    assert [c.stride[0] for c in convs].count(2) == 2  # the 7x7/2 and the 3x3/2 (Fig. 3)
    # leaky ReLU 0.1 everywhere but the linear output; dropout 0.5 after the first FC (Sec. 2.2)
    assert all(m.negative_slope == 0.1 for m in model.modules() if isinstance(m, nn.LeakyReLU))
    assert isinstance(model.head[-1], nn.Linear) and isinstance(model.head[-2], nn.Dropout)
    assert model.head[-2].p == 0.5 and isinstance(model.head[-3], nn.LeakyReLU)


def test_fast_yolo_count_from_darknet_yolo_tiny_cfg():
    # darknet cfg/yolo-tiny.cfg (v1): nine 3x3 convolutions with biases, FC 256 linear, FC 4096 leaky, FC 1470
    #   3*16*9+16 = 448; 16*32*9+32 = 4,640; 32*64*9+64 = 18,496; 64*128*9+128 = 73,856; 128*256*9+256 = 295,168;
    #   256*512*9+512 = 1,180,160; 512*1024*9+1024 = 4,719,616; 2 * (1024*1024*9+1024) = 18,876,416
    #   convolutions 25,168,800
    #   FC 7*7*1024*256+256 = 12,845,312; 256*4096+4096 = 1,052,672; 4096*1470+1470 = 6,022,590
    #   25,168,800 + 12,845,312 + 1,052,672 + 6,022,590 = 45,089,374
    with torch.device("meta"):
        model = create_detector("fast_yolo_v1")
        out = model(torch.zeros(2, 3, 448, 448))
    assert isinstance(model, FastYOLOv1)
    assert _count(model) == 45_089_374
    assert len([m for m in model.modules() if isinstance(m, nn.Conv2d)]) == 9
    assert tuple(out.shape) == (2, 7, 7, 30)


@pytest.mark.slow
def test_yolo_v1_full_size_forward():
    torch.manual_seed(0)
    model = YOLOv1().eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 448, 448))
    assert tuple(out.shape) == (1, 7, 7, 30) and torch.isfinite(out).all()


def test_registry_and_small_input_options():
    assert {"yolo_v1", "fast_yolo_v1"} <= set(list_detectors("*yolo*"))
    card = get_detector_card("yolo_v1")
    assert card.paper.year == 2016 and "1506.02640" in card.paper.url and card.input_size == (3, 448, 448)
    # digits: 1 channel, 10 classes, 112x112 (final map ceil(112/64) = 2), S=4, B=3
    model = create_detector("yolo_v1", in_channels=1, num_classes=10, input_size=112, S=4, B=3, width_mult=1 / 16,
                            fc_hidden=64)
    assert model.feature_side == 2 and model.head[1].in_features == 64 * 2 * 2
    assert tuple(model(torch.rand(2, 1, 112, 112)).shape) == (2, 4, 4, 3 * 5 + 10)


@pytest.mark.parametrize("options, words", [
    ({"S": 0}, "S must be an integer >= 1"),
    ({"B": 1.5}, "B must be"),
    ({"width_mult": 0}, "width_mult must be"),
    ({"drop_rate": 1.0}, "drop_rate must be in [0, 1)"),
    ({"input_size": -4}, "input_size must be"),
])
def test_bad_options_are_one_clear_error(options, words):
    with pytest.raises(ValueError, match=None) as err:
        create_detector("yolo_v1", **options)
    assert words in str(err.value)


def test_wrong_input_size_names_the_built_size():
    model = YOLOv1(input_size=64, width_mult=1 / 32, fc_hidden=8)
    with pytest.raises(ValueError, match="built for 64x64 inputs.*input_size=96"):
        model(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="3 input channel"):
        model(torch.rand(1, 1, 64, 64))


# ------------------------------------------------------------------------------------------------- the loss (Eq. 3)
def _toy_outputs() -> torch.Tensor:
    """S=2, B=2, C=2 on a 100x100 image. Per cell: [x, y, sqrt w, sqrt h, conf] * 2 + [p(1), p(2)]."""
    out = torch.zeros(1, 2, 2, 12, dtype=torch.float64)
    # cell (row 0, col 0) holds the object: predictor 0 far from it, predictor 1 close (it overlaps more)
    out[0, 0, 0] = torch.tensor([0.2, 0.2, 0.5, 0.5, 0.8,  0.7, 0.6, 0.6, 0.3, 0.3,  0.2, 0.7], dtype=torch.float64)
    # cell (row 1, col 1) has no object: only its confidences count (lambda_noobj); boxes and classes do not
    out[0, 1, 1] = torch.tensor([0.5, 0.5, 0.3, 0.3, 0.4,  0.1, 0.9, 0.2, 0.2, 0.2,  0.5, 0.5], dtype=torch.float64)
    return out  # cells (0, 1) and (1, 0) are all zeros: they contribute nothing


# ground truth: box (12, 22, 48, 38), label 2: centre (30, 30) -> cell (0, 0) (cells are 50 px);
# offsets x = 30/50 = 0.6, y = 0.6; w = 36/100 = 0.36, h = 16/100 = 0.16; sqrt w = 0.6, sqrt h = 0.4
_TOY_TARGET = [{"boxes": torch.tensor([[12.0, 22.0, 48.0, 38.0]]), "labels": torch.tensor([2])}]


def _toy_expected() -> dict[str, float]:
    # image fractions. gt: centre (0.3, 0.3), 0.36 x 0.16 -> x [0.12, 0.48], y [0.22, 0.38], area 0.0576
    # predictor 0: centre ((0 + 0.2)/2, (0 + 0.2)/2) = (0.1, 0.1), w = h = 0.5^2 = 0.25 -> [-0.025, 0.225]^2;
    #   intersection (0.225 - 0.12) * (0.225 - 0.22) = 0.000525; union 0.0625 + 0.0576 - 0.000525 = 0.119575
    iou0 = 0.000525 / 0.119575  # 0.0044
    # predictor 1: centre (0.7/2, 0.6/2) = (0.35, 0.3), w = 0.6^2 = 0.36, h = 0.3^2 = 0.09 -> x [0.17, 0.53],
    #   y [0.255, 0.345]; intersection (0.48 - 0.17) * 0.09 = 0.0279; union 0.0324 + 0.0576 - 0.0279 = 0.0621
    iou1 = 0.0279 / 0.0621  # 0.4493: predictor 1 is responsible (Sec. 2.2: "highest current IOU")
    assert iou1 > iou0
    return {
        "loss_xy": 5 * ((0.7 - 0.6) ** 2 + (0.6 - 0.6) ** 2),  # lambda_coord = 5: 0.05
        "loss_wh": 5 * ((0.6 - math.sqrt(0.36)) ** 2 + (0.3 - math.sqrt(0.16)) ** 2),  # square roots: 0.05
        "loss_obj": (0.3 - iou1) ** 2,  # target: the IoU ("we want the confidence score to equal the IOU")
        # lambda_noobj = 0.5 on every predictor not responsible: cell (0,0) predictor 0, cell (1,1) both
        "loss_noobj": 0.5 * (0.8**2 + 0.4**2 + 0.2**2),  # 0.42
        "loss_class": (0.2 - 0) ** 2 + (0.7 - 1) ** 2,  # only in the object's cell: 0.13
    }


def test_loss_on_the_two_cell_toy_matches_the_hand_computation():
    got = yolo_v1_loss(_toy_outputs(), _TOY_TARGET, (100, 100), num_boxes=2)
    want = _toy_expected()
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert got["loss"].item() == pytest.approx(sum(want.values()), rel=1e-9)
    assert got["loss"].item() == pytest.approx(0.05 + 0.05 + (0.3 - 0.0279 / 0.0621) ** 2 + 0.42 + 0.13, rel=1e-9)


def test_responsible_predictor_follows_the_box_not_the_slot():
    # swapping the two predictors of the object cell changes nothing: the closer box stays responsible
    out = _toy_outputs()
    out[0, 0, 0, :10] = torch.cat([out[0, 0, 0, 5:10], out[0, 0, 0, :5]])
    got = yolo_v1_loss(out, _TOY_TARGET, (100, 100), num_boxes=2)
    for key, value in _toy_expected().items():
        assert got[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_loss_through_the_model_and_batch_average():
    model = YOLOv1(S=2, B=2, num_classes=2, input_size=32, width_mult=1 / 64, fc_hidden=4)
    two = torch.cat([_toy_outputs(), _toy_outputs()])
    got = model.loss(two, _TOY_TARGET * 2, (100, 100))
    assert got["loss"].item() == pytest.approx(sum(_toy_expected().values()), rel=1e-9)  # mean over 2 images


def test_one_object_per_cell_the_first_listed_owns_it():
    # two boxes centred in cell (0, 0): the second (label 1) is ignored, as darknet's fill_truth_region skips it
    target = [{"boxes": torch.tensor([[12.0, 22.0, 48.0, 38.0], [5.0, 5.0, 15.0, 15.0]]),
               "labels": torch.tensor([2, 1])}]
    got = yolo_v1_loss(_toy_outputs(), target, (100, 100), num_boxes=2)
    for key, value in _toy_expected().items():
        assert got[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_loss_rejects_labels_outside_1_to_c():
    bad = [{"boxes": torch.tensor([[12.0, 22.0, 48.0, 38.0]]), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match="outside 1..2"):
        yolo_v1_loss(_toy_outputs(), bad, (100, 100), num_boxes=2)


# ------------------------------------------------------------------------------------------- decoding, inference
def test_decode_and_detect_on_a_hand_made_output():
    # S=2, B=2, C=2 on a 100 (H) x 200 (W) image: cells are 50 px tall, 100 px wide
    out = torch.zeros(1, 2, 2, 12)
    # cell (row 1, col 0), predictor 1: x 0.5, y 0.25, sqrt w 0.5, sqrt h 0.6, conf 0.9; p = (0.1, 0.8)
    out[0, 1, 0, 5:10] = torch.tensor([0.5, 0.25, 0.5, 0.6, 0.9])
    out[0, 1, 0, 10:] = torch.tensor([0.1, 0.8])
    # centre x = (0 + 0.5)/2 * 200 = 50, y = (1 + 0.25)/2 * 100 = 62.5; w = 0.25 * 200 = 50, h = 0.36 * 100 = 36
    boxes, scores = decode_boxes(out, (100, 200), num_boxes=2)
    k = (1 * 2 + 0) * 2 + 1  # cell-major (row 1, col 0), predictor 1
    assert boxes[0, k].tolist() == pytest.approx([25.0, 44.5, 75.0, 80.5])
    assert scores[0, k].tolist() == pytest.approx([0.09, 0.72])  # Eq. 1: Pr(class | object) * confidence
    # cell (0, 1), predictor 0 reaches past the right edge: centre x (1 + 0.9)/2 * 200 = 190, w 0.64 * 200 = 128
    out[0, 0, 1, 0:5] = torch.tensor([0.9, 0.5, 0.8, 0.4, 1.0])
    out[0, 0, 1, 10:] = torch.tensor([0.5, 0.1])
    model = YOLOv1(S=2, B=2, num_classes=2, input_size=32, width_mult=1 / 64, fc_hidden=4)
    det = model.postprocess(out, (100, 200), score_thresh=0.2)[0]
    # kept: 0.72 (label 2) and 0.5 (label 1); 0.09 and 0.1 fall under the threshold
    assert det["scores"].tolist() == pytest.approx([0.72, 0.5])
    assert det["labels"].tolist() == [2, 1]
    assert det["boxes"][0].tolist() == pytest.approx([25.0, 44.5, 75.0, 80.5])
    # y centre (0 + 0.5)/2 * 100 = 25, h 0.16 * 100 = 16; x from 190 - 64 = 126 to 254, clipped to 200
    assert det["boxes"][1].tolist() == pytest.approx([126.0, 17.0, 200.0, 33.0])


def test_nms_is_per_class():
    out = torch.zeros(1, 1, 1, 2 * 5 + 2)  # S = 1: both predictors in one cell, the same box
    out[0, 0, 0, :10] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.6])
    out[0, 0, 0, 10:] = torch.tensor([1.0, 0.8])
    model = YOLOv1(S=1, B=2, num_classes=2, input_size=32, width_mult=1 / 64, fc_hidden=4)
    det = model.postprocess(out, (64, 64), score_thresh=0.1, nms_thresh=0.4)[0]
    # class 1: 0.9 and 0.6 on identical boxes -> 0.9 kept; class 2: 0.72 and 0.48 -> 0.72 kept
    assert det["scores"].tolist() == pytest.approx([0.9, 0.72])
    assert det["labels"].tolist() == [1, 2]
    assert model.postprocess(out, (64, 64), score_thresh=0.1, max_detections=1)[0]["labels"].tolist() == [1]


def test_detect_gives_boxes_inside_the_image_with_labels_1_to_c():
    torch.manual_seed(0)
    model = YOLOv1(S=3, B=2, num_classes=4, in_channels=1, input_size=64, width_mult=1 / 32, fc_hidden=8)
    last = model.head[-1]
    with torch.no_grad():  # every cell predicts a wide box to the right of its cell: edge cells spill outside
        last.weight.zero_()
        bias = torch.zeros(3, 3, 14)
        bias[..., 0:5] = torch.tensor([0.9, 0.1, 0.9, 0.9, 0.8])
        bias[..., 5:10] = torch.tensor([0.1, 0.9, 0.4, 0.4, 0.6])
        bias[..., 10:] = torch.tensor([0.1, 0.9, 0.3, 0.5])
        last.bias.copy_(bias.flatten())
    model.train()
    dets = model.detect(torch.rand(2, 1, 64, 64), score_thresh=0.05, nms_thresh=0.99)
    assert model.training  # detect restores the mode
    assert len(dets) == 2
    for d in dets:
        assert len(d["boxes"]) > 0
        b = d["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 64).all() and (b[:, 3] <= 64).all()
        assert set(d["labels"].tolist()) <= {1, 2, 3, 4} and 2 in d["labels"].tolist()
        assert (d["scores"][:-1] >= d["scores"][1:]).all()


# ------------------------------------------------------------------------------------------------ digits training
def test_one_training_step_on_digits_detection_lowers_the_loss():
    from cnnzoo.detection.data import digits_detection

    train, _ = digits_detection(num_train=8, num_test=1)
    images = torch.stack([train.image(i) for i in range(8)]).float() / 255.0  # (8, 1, 128, 128)
    targets = [{"boxes": train.boxes[i], "labels": train.labels[i] + 1} for i in range(8)]  # digits 0-9 -> 1..10
    torch.manual_seed(0)
    model = create_detector("fast_yolo_v1", in_channels=1, num_classes=10, input_size=128, width_mult=1 / 16,
                            fc_hidden=64, drop_rate=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    before = model.loss(model(images), targets, (128, 128))
    before["loss"].backward()
    opt.step()
    with torch.no_grad():
        after = model.loss(model(images), targets, (128, 128))
    assert torch.isfinite(before["loss"]) and after["loss"].item() < before["loss"].item()


def test_responsible_predictor_when_no_box_overlaps_is_the_nearest():
    # darknet's detection_layer.c: with every IoU 0, the predictor with the least RMSE of (x, y, w, h) is responsible
    out = _toy_outputs()
    out[0, 0, 0, :10] = torch.tensor([0.0, 0.0, 0.1, 0.1, 0.0,  0.5, 0.2, 0.1, 0.1, 0.0], dtype=torch.float64)
    # predictor 0: centre (0, 0), 0.01 x 0.01: no overlap; RMSE^2 = 0.3^2 + 0.3^2 + 0.35^2 + 0.15^2 = 0.325
    # predictor 1: centre (0.25, 0.1), 0.01 x 0.01: no overlap; RMSE^2 = 0.05^2 + 0.2^2 + 0.35^2 + 0.15^2 = 0.1875
    got = yolo_v1_loss(out, _TOY_TARGET, (100, 100), num_boxes=2)
    assert got["loss_xy"].item() == pytest.approx(5 * ((0.5 - 0.6) ** 2 + (0.2 - 0.6) ** 2))  # predictor 1: 0.85
    assert got["loss_obj"].item() == pytest.approx(0.0)  # its IoU is 0 and so is its confidence
