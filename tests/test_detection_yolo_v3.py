"""YOLOv3 (Redmon & Farhadi 2018, arXiv 1804.02767): the count derived from darknet's cfg/yolov3.cfg by hand, the
three output grids, the one-best-prior assignment (Sec. 2.1), independent logistic classes (Sec. 2.2), the decoding
of a hand-made output, the priors per scale (Sec. 2.3), training on digits, ``detect``."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo.detection.models.yolo_v3  # noqa: F401  (registers yolo_v3 until the package imports it)
from cnnzoo.detection.models.yolo_v3 import assign_priors, decode_outputs, yolo_v3_loss
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors

LN2 = math.log(2.0)
# Sec. 2.3, "(10x13),(16x30),(33x23),(30x61),(62x45),(59x119),(116x90),(156x198),(373x326)"
PAPER_PRIORS = [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326)]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_registered_with_card():
    assert "yolo_v3" in list_detectors("yolo*")
    card = get_detector_card("yolo_v3")
    assert card.family == "yolo_v3" and card.paper.year == 2018


def test_parameter_count_from_the_cfg():
    # cfg/yolov3.cfg by hand. A conv with batch_normalize=1 has k*k*in*out weights (no bias) + 2*out BN (scale, shift);
    # the three [yolo] convs (1x1, linear) have a bias: k*k*in*out + out.
    #   Darknet-53 (layers 0-74): stem 3->32 3x3: 864 + 64 = 928
    #     stage c (64, 128, 256, 512, 1024): downsample 3x3/2 from c/2: 9*(c/2)*c + 2c; residual block (1x1 c->c/2,
    #     3x3 c/2->c): c*c/2 + c + 9*(c/2)*c + 2c
    #       64:   18,560 + 1 x 20,672      =     39,232
    #       128:  73,984 + 2 x 82,304      =    238,592
    #       256:  295,424 + 8 x 328,448    =  2,923,008
    #       512:  1,180,672 + 8 x 1,312,256 = 11,678,720
    #       1024: 4,720,640 + 4 x 5,245,952 = 25,704,448       total 928 + ... = 40,584,928
    #   head stride 32: 3 x (1x1 1024->512 525,312 + 3x3 512->1024 4,720,640) = 15,737,856; 1x1 1024->255: 261,375
    #   stride 16: 1x1 512->256 131,584; concat 256 + 512 = 768: 1x1 768->256 197,120, 3 x 3x3 256->512 1,180,672,
    #     2 x 1x1 512->256 131,584 -> 4,002,304; 1x1 512->255: 130,815
    #   stride 8: 1x1 256->128 33,024; concat 128 + 256 = 384: 1x1 384->128 49,408, 3 x 3x3 128->256 295,424,
    #     2 x 1x1 256->128 33,024 -> 1,001,728; 1x1 256->255: 65,535
    #   head: 21,364,221; all: 61,949,149 (the commonly quoted count)
    backbone = 928 + 39_232 + 238_592 + 2_923_008 + 11_678_720 + 25_704_448
    head = 15_737_856 + 261_375 + 131_584 + 4_002_304 + 130_815 + 33_024 + 1_001_728 + 65_535
    assert backbone == 40_584_928 and backbone + head == 61_949_149
    with torch.device("meta"):
        model = create_detector("yolo_v3")
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone
    assert sum(p.numel() for p in model.parameters()) == 61_949_149
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 52 + 23  # Darknet-53's 52 convolutions (+ its FC) and the head's 23 (cfg layers 75-105)


@pytest.mark.parametrize(("size", "grids"), [(416, (13, 26, 52)), (608, (19, 38, 76))])
def test_three_output_grids(size, grids):
    with torch.device("meta"):
        model = create_detector("yolo_v3")
        out = model(torch.empty(2, 3, size, size))
    assert [tuple(o.shape) for o in out] == [(2, g, g, 3, 85) for g in grids]  # 3 * (4 + 1 + 80) per cell


def test_priors_per_scale_smallest_on_stride_8():
    with torch.device("meta"):
        model = create_detector("yolo_v3")
    big, mid, small = (a.tolist() for a in model.scale_anchors())  # outputs: strides 32, 16, 8
    assert small == [list(map(float, p)) for p in PAPER_PRIORS[:3]]  # darknet mask 0,1,2 on the 52x52 map
    assert mid == [list(map(float, p)) for p in PAPER_PRIORS[3:6]]
    assert big == [list(map(float, p)) for p in PAPER_PRIORS[6:]]


def _zeros(size: int, num_classes: int, n: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(n, size // s, size // s, 3, 5 + num_classes) for s in (32, 16, 8)]


def test_decode_of_a_hand_made_output():
    model = create_detector("yolo_v3", num_classes=2, width_mult=0.0625, depth=[0, 0, 0, 0, 0])
    out = _zeros(416, 2)
    # stride 32, row 2, column 5, prior 1 (156x198): sigma(0) = 0.5, sigma(ln 3) = 0.75, w = 156 * e^{ln 2} = 312
    out[0][0, 2, 5, 1, :5] = torch.tensor([0.0, math.log(3.0), math.log(2.0), 0.0, math.log(4.0)])
    boxes, obj, _ = decode_outputs(out, 416, model.scale_anchors())
    assert boxes.shape == (1, 3 * (13 * 13 + 26 * 26 + 52 * 52), 4) == (1, 10_647, 4)
    k = (2 * 13 + 5) * 3 + 1  # scale, row, column, prior
    cx, cy = (5 + 0.5) * 32, (2 + 0.75) * 32  # 176, 88
    assert boxes[0, k].tolist() == pytest.approx([cx - 156, cy - 99, cx + 156, cy + 99])
    assert float(obj[0, k]) == pytest.approx(0.8)  # sigma(ln 4) = 4 / 5
    # an all-zero stride-8 output at cell (0, 0), prior 0: the paper's 10x13 prior centred on the 8-pixel cell
    k8 = 3 * (13 * 13 + 26 * 26)
    assert boxes[0, k8].tolist() == pytest.approx([4 - 5, 4 - 6.5, 4 + 5, 4 + 6.5])
    # and the last box: prior 373x326 is not on the stride-8 map (it belongs to the 13x13 one)
    k32 = 2  # stride 32, cell (0, 0), prior 2
    assert boxes[0, k32].tolist() == pytest.approx([16 - 186.5, 16 - 163, 16 + 186.5, 16 + 163])


def test_one_best_prior_per_ground_truth():
    # a 40x60 box centred at (200, 120) on a 416 input. Shape IoU (centres aligned) with the paper's priors:
    #   30x61: 30*60 / (2400 + 1830 - 1800) = 0.741 (the best); 62x45: 40*45 / (2400 + 2790 - 1800) = 0.531 (> 0.5);
    #   59x119: 2400 / 7021 = 0.342; 33x23: 759 / 2400 = 0.316; the others lower.
    # Sec. 2.1: only the best prior (index 3 -> the stride-16 map, its first prior) is a positive, in the cell of
    # that map holding the centre: column floor(200 / 16) = 12, row floor(120 / 16) = 7.
    gt = [(torch.tensor([[180.0, 90.0, 220.0, 150.0]], dtype=torch.float64), torch.tensor([2]))]
    model = create_detector("yolo_v3", num_classes=3, width_mult=0.0625, depth=[0, 0, 0, 0, 0])
    grids = [(13, 13), (26, 26), (52, 52)]
    t = assign_priors(gt, grids, model.scale_anchors(), 416, 3)
    assert [int(x["positive"].sum()) for x in t] == [0, 1, 0]
    assert t[1]["positive"][0, 7, 12, 0]
    assert t[1]["box"][0, 7, 12, 0].tolist() == pytest.approx([0.5, 0.5, math.log(40 / 30), math.log(60 / 61)])
    assert float(t[1]["weight"][0, 7, 12, 0]) == pytest.approx(2 - (40 / 416) * (60 / 416))
    assert t[1]["classes"][0, 7, 12, 0].tolist() == [0.0, 1.0, 0.0]
    # the loss at all-zero outputs (every sigmoid 0.5, so each BCE term is ln 2): one objectness positive; the 62x45
    # prior in the same cell overlaps by 0.531 > 0.5 and is ignored (no loss); no other placed prior exceeds 0.5
    # (the best neighbours: 30x61 one row away, 0.461); every one of the other 10,647 - 2 predictions is a negative.
    loss = yolo_v3_loss(_zeros(416, 3), [{"boxes": gt[0][0].float(), "labels": gt[0][1]}], 416,
                        model.scale_anchors())
    w = 2 - (40 / 416) * (60 / 416)
    assert float(loss["loss_obj"]) == pytest.approx(LN2)
    assert float(loss["loss_noobj"]) == pytest.approx((10_647 - 2) * LN2)
    assert float(loss["loss_class"]) == pytest.approx(3 * LN2)
    assert float(loss["loss_xy"]) == pytest.approx(w * 2 * LN2)
    assert float(loss["loss_wh"]) == pytest.approx(w * 0.5 * (math.log(40 / 30) ** 2 + math.log(60 / 61) ** 2))


def test_ignored_by_the_predicted_box():
    # ignore_by="prediction" (darknet): the decoded box, not the placed prior, decides. The 40x60 box of
    # test_one_best_prior_per_ground_truth; on the stride-32 map, cell (row 3, column 6) holds its centre (200, 120):
    # t_x = ln(1/3) -> sigma = 0.25 -> x = (6 + 0.25) * 32 = 200; t_y = ln 3 -> (3 + 0.75) * 32 = 120; w = 116 e^{t_w}
    # = 40, h = 90 e^{t_h} = 60: that prediction IS the ground truth (IoU 1) while its prior (116x90) overlaps it by
    # 2400 / 10440 = 0.23. Every other output is 0, so its prediction is its placed prior (as in the hand case there).
    model = create_detector("yolo_v3", num_classes=3, width_mult=0.0625, depth=[0, 0, 0, 0, 0])
    assert (model.ignore_by, model.ignore_thresh) == ("prior", 0.5)  # Sec. 2.1's words and threshold
    out = _zeros(416, 3)
    out[0][0, 3, 6, 0, :4] = torch.tensor([math.log(1 / 3), math.log(3.0), math.log(40 / 116), math.log(60 / 90)])
    target = [{"boxes": torch.tensor([[180.0, 90.0, 220.0, 150.0]]), "labels": torch.tensor([2])}]
    by_prior = yolo_v3_loss(out, target, 416, model.scale_anchors(), ignore_by="prior")
    by_pred = yolo_v3_loss(out, target, 416, model.scale_anchors(), ignore_by="prediction")
    assert float(by_prior["loss_noobj"]) == pytest.approx((10_647 - 2) * LN2)
    assert float(by_pred["loss_noobj"]) == pytest.approx((10_647 - 3) * LN2)


def test_independent_logistic_classes():
    # Sec. 2.2: a sigmoid per class, no softmax -- two classes can both be above 0.5 ...
    model = create_detector("yolo_v3", num_classes=3, width_mult=0.0625, depth=[0, 0, 0, 0, 0])
    out = _zeros(416, 3)
    out[1][0, 7, 12, 0, 4:] = torch.tensor([5.0, 2.0, 3.0, -1.0])
    _, _, cls = decode_outputs(out, 416, model.scale_anchors())
    k = 3 * 13 * 13 + (7 * 26 + 12) * 3
    assert cls[0, k].tolist() == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-3)), 1 / (1 + math.e)])
    assert cls[0, k, 0] > 0.5 and cls[0, k, 1] > 0.5
    # ... and the class loss is the binary cross-entropy of each: the 40x60 box of class 1 lands on this prior
    # (test_one_best_prior_per_ground_truth); -log sigma(2) - log(1 - sigma(3)) - log(1 - sigma(-1))
    target = [{"boxes": torch.tensor([[180.0, 90.0, 220.0, 150.0]]), "labels": torch.tensor([1])}]
    loss = yolo_v3_loss(out, target, 416, model.scale_anchors())
    assert float(loss["loss_class"]) == pytest.approx(softplus(-2) + softplus(3) + softplus(-1))
    assert float(loss["loss_obj"]) == pytest.approx(softplus(-5))  # BCE of sigma(5) with target 1


def test_detect_boxes_inside_the_image_and_labels_one_based():
    torch.manual_seed(0)
    model = create_detector("yolo_v3", num_classes=2, in_channels=1, width_mult=0.0625, depth=[0, 0, 0, 0, 0])
    with torch.no_grad():
        for pred in (model.head.pred5, model.head.pred4, model.head.pred3):
            pred[-1].bias.view(3, -1)[:, 2:4] = 3.0  # every box e^3 = 20x its prior: far outside the image
            pred[-1].bias.view(3, -1)[:, 4:] = 4.0  # and confident
    dets = model.detect(torch.rand(2, 1, 64, 96), score_thresh=0.5, nms_thresh=0.45, max_detections=7)
    assert len(dets) == 2 and model.training
    for d in dets:
        assert 0 < len(d["boxes"]) <= 7
        b = d["boxes"]
        assert b[:, 0].min() >= 0 and b[:, 1].min() >= 0 and b[:, 2].max() <= 96 and b[:, 3].max() <= 64
        assert set(d["labels"].tolist()) <= {1, 2} and (d["scores"] > 0.5).all()
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])


def test_one_training_step_on_digits_lowers_the_loss():
    from cnnzoo.detection.data import digits_detection
    from cnnzoo.detection.models.yolo_v3 import DIGITS_RECIPE

    train, _ = digits_detection(num_train=8, num_test=1)
    x = torch.stack([train.image(i) for i in range(8)]).float() / 255
    targets = [{"boxes": train.boxes[i].float(), "labels": train.labels[i].long() + 1} for i in range(8)]
    torch.manual_seed(0)
    model = create_detector("yolo_v3", num_classes=10, in_channels=1, **DIGITS_RECIPE["options"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.loss(model(x), targets, 128)
    opt.zero_grad()
    before["loss"].backward()
    opt.step()
    after = model.loss(model(x), targets, 128)
    assert float(after["loss"].detach()) < float(before["loss"].detach())
    assert all(torch.isfinite(v) for v in after.values())


def test_trainer_treats_yolo_v3_without_background_column():
    from cnnzoo.detection.train import EVAL_DETECT, NO_BACKGROUND_COLUMN, _classifier_columns

    assert "yolo_v3" in NO_BACKGROUND_COLUMN and _classifier_columns("yolo_v3", 10) == 10
    assert EVAL_DETECT["yolo_v3"] == {"score_thresh": 0.005, "nms_thresh": 0.45}  # darknet validate_detector


def test_options_and_errors():
    small = {"width_mult": 0.0625, "depth": [0, 0, 0, 0, 0]}
    with pytest.raises(ValueError, match="multiple of 32"):
        create_detector("yolo_v3", input_size=400)
    model = create_detector("yolo_v3", num_classes=1, **small)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 100, 96))
    with pytest.raises(ValueError, match="3k positive"):
        create_detector("yolo_v3", anchors=[[10, 13], [16, 30]], **small)
    with pytest.raises(ValueError, match="5 integers"):
        create_detector("yolo_v3", width_mult=0.0625, depth=[1, 1])
    with pytest.raises(ValueError, match="xy_loss"):
        create_detector("yolo_v3", xy_loss="l1", **small)
    # k priors per scale: 6 priors -> 2 per scale
    model = create_detector("yolo_v3", num_classes=4, anchors=[[4, 4], [8, 8], [16, 16], [32, 32], [64, 64],
                                                                  [96, 96]], **small)
    assert [tuple(o.shape) for o in model(torch.zeros(1, 3, 64, 64))] == [(1, 2, 2, 2, 9), (1, 4, 4, 2, 9),
                                                                            (1, 8, 8, 2, 9)]
    # prior_probability: every objectness logit starts at -log(99)
    model = create_detector("yolo_v3", num_classes=1, prior_probability=0.01, **small)
    assert model.head.pred3[-1].bias.view(3, -1)[:, 4].tolist() == pytest.approx([-math.log(99)] * 3)


def test_zoo_backbone_through_features():
    model = create_detector("yolo_v3", num_classes=2, in_channels=1, width_mult=0.0625, backbone="resnet18",
                            backbone_options={"layers": [1, 1, 1, 1]})
    assert [tuple(o.shape) for o in model(torch.zeros(1, 1, 64, 64))] == [(1, 2, 2, 3, 7), (1, 4, 4, 3, 7),
                                                                            (1, 8, 8, 3, 7)]
    with pytest.raises(ValueError, match="darknet53.? only"):
        create_detector("yolo_v3", backbone="resnet18", depth=[1, 1, 1, 1, 1])


def test_weights_file_reloads_with_its_classes(tmp_path):
    opts = {"width_mult": 0.0625, "depth": [1, 0, 2, 0, 1]}
    model = create_detector("yolo_v3", num_classes=5, in_channels=1, **opts)
    path = tmp_path / "y3.pt"
    torch.save(model.state_dict(), path)
    again = create_detector("yolo_v3", weights=str(path), width_mult=0.0625)  # classes, channels, depth: the file's
    assert (again.num_classes, again.in_channels, again.depth) == (5, 1, (1, 0, 2, 0, 1))
