"""YOLOv4 (Bochkovskiy et al. 2020): the size of darknet's cfg/yolov4.cfg counted by hand, the output shapes at 608,
Mish, the SPP block, DropBlock (Ghiasi et al. 2018), Mosaic, grid-sensitivity decoding, the loss (CIoU box term)
on a hand case, a training step on digits-detection and inference. Expected numbers are computed by hand here from
the papers and the cfg (section named at each), never read from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import cnnzoo.detection.models.yolo_v4  # noqa: F401  (registers yolo_v4 until the package imports it)
from cnnzoo.detection.augment import mosaic, mosaic4
from cnnzoo.detection.models.yolo_v4 import SPP, DropBlock2d, YOLOv4, decode_level, dropblock_mask, mish, yolo_v4_loss
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors

LN2 = math.log(2.0)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tiny(**kw) -> YOLOv4:
    opts = {"num_classes": 10, "in_channels": 1, "input_size": 128, "width_mult": 1 / 16, "depth": [1, 1, 1, 1, 1],
            "anchors": [[8, 20], [14, 20], [16, 26], [20, 24], [22, 30], [28, 34], [30, 36], [34, 38], [38, 40]]}
    return YOLOv4(**(opts | kw))


# ------------------------------------------------------------------------------------------------ size and shapes
def test_parameter_count_from_darknet_yolov4_cfg():
    # cfg/yolov4.cfg, 80 classes. A [convolutional] with batch_normalize=1 has k*k*in*out weights, no bias, and BN's
    # scale and shift (2 per output; mean/variance are buffers): conv(i, o, k) = k*k*i*o + 2*o. The three output
    # convolutions (filters=255 = 3*(5+80), no BN) have k*k*i*o + o.
    def conv(i, o, k):
        return k * k * i * o + 2 * o

    # layer 0: 3x3 3 -> 32
    stem = conv(3, 32, 3)                                                                          # 928
    # CSP stage (layers 1-10): 3x3/2 32 -> 64; 1x1 64 -> 64 twice (route -2: part 2 and part 1); block 1x1 64 -> 32,
    # 3x3 32 -> 64 (+shortcut); 1x1 64 -> 64; route -1,-7 (128); 1x1 128 -> 64
    s1 = conv(32, 64, 3) + 2 * conv(64, 64, 1) + conv(64, 32, 1) + conv(32, 64, 3) + conv(64, 64, 1) + \
        conv(128, 64, 1)                                                                           # 60,224
    # stages 2-5 (11-104): 3x3/2 cin -> C; two 1x1 C -> C/2; n x (1x1 C/2 -> C/2, 3x3 C/2 -> C/2); 1x1 C/2 -> C/2;
    # route (C); 1x1 C -> C.  (C, n) = (128, 2), (256, 8), (512, 8), (1024, 4)

    def stage(cin, c, n):
        h = c // 2
        return conv(cin, c, 3) + 2 * conv(c, h, 1) + n * (conv(h, h, 1) + conv(h, h, 3)) + conv(h, h, 1) + conv(c, c, 1)

    s2, s3, s4, s5 = stage(64, 128, 2), stage(128, 256, 8), stage(256, 512, 8), stage(512, 1024, 4)
    assert (s2, s3, s4, s5) == (193_920, 1_758_976, 7_024_128, 17_579_008)
    backbone = stem + s1 + s2 + s3 + s4 + s5
    assert backbone == 26_617_184
    # 105-107: 1x1 1024 -> 512, 3x3 512 -> 1024, 1x1 1024 -> 512; SPP (no weights) -> 2048;
    # 114-116: 1x1 2048 -> 512, 3x3 512 -> 1024, 1x1 1024 -> 512
    spp = 2 * conv(1024, 512, 1) + conv(512, 1024, 3) + conv(2048, 512, 1) + conv(512, 1024, 3) + \
        conv(1024, 512, 1)                                                                         # 12,066,816

    def five(cin, c):  # 1x1 cin -> c, 3x3 c -> 2c, 1x1 2c -> c, 3x3 c -> 2c, 1x1 2c -> c

        return conv(cin, c, 1) + 2 * conv(c, 2 * c, 3) + 2 * conv(2 * c, c, 1)

    # 117: 1x1 512 -> 256 (then upsample); 120: 1x1 512 (layer 85) -> 256; 122-126: five(512, 256)
    td4 = conv(512, 256, 1) + conv(512, 256, 1) + five(512, 256)                                   # 3,019,264
    # 127: 1x1 256 -> 128; 130: 1x1 256 (layer 54) -> 128; 132-136: five(256, 128)
    td3 = conv(256, 128, 1) + conv(256, 128, 1) + five(256, 128)                                   # 755,968
    # 141: 3x3/2 128 -> 256; 143-147: five(512, 256); 152: 3x3/2 256 -> 512; 154-158: five(1024, 512)
    bottom_up = conv(128, 256, 3) + five(512, 256) + conv(256, 512, 3) + five(1024, 512)           # 15,249,408
    # heads 137-138, 148-149, 159-160: 3x3 (BN) then 1x1 -> 255 with bias
    heads = conv(128, 256, 3) + 256 * 255 + 255 + conv(256, 512, 3) + 512 * 255 + 255 + \
        conv(512, 1024, 3) + 1024 * 255 + 255                                                      # 6,654,461
    total = backbone + spp + td4 + td3 + bottom_up + heads
    assert total == 64_363_101  # the count commonly quoted for yolov4.cfg at 80 classes: confirmed
    with torch.device("meta"):  # no memory, no init: the count and the shapes only
        model = create_detector("yolo_v4")
        outs = model(torch.zeros(1, 3, 608, 608))
    assert _count(model) == total
    assert _count(model.stem) + _count(model.stages) == backbone
    # 608: strides 8, 16, 32 -> 76, 38, 19 cells, 3 anchors, 4 + 1 + 80 = 85 outputs each
    assert [tuple(o.shape) for o in outs] == [(1, 3, 76, 76, 85), (1, 3, 38, 38, 85), (1, 3, 19, 19, 85)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 110  # yolov4.cfg's 110 [convolutional] layers (162 layers less routes, pools, ...)
    assert sum(c.bias is not None for c in convs) == 3


def test_card_and_registration():
    assert "yolo_v4" in list_detectors()
    card = get_detector_card("yolo_v4")
    assert card.input_size == (3, 608, 608) and "2004.10934" in card.paper.url


def test_mish_by_hand_and_where_it_is_used():
    # Mish (Misra 2019; YOLOv4 Sec. 3.4's backbone): x tanh(softplus(x)).
    # x = 1: softplus = ln(1 + e) = 1.3132617, tanh = 0.8650984;  x = -1: ln(1 + 1/e) = 0.3132617, tanh = 0.3034015
    # x = 2: ln(1 + e^2) = 2.1269280, tanh = 0.9719795 -> 1.9439590
    got = mish(torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=torch.float64))
    assert got.tolist() == pytest.approx([0.8650984, -0.3034015, 0.0, 1.9439590], abs=1e-6)
    model = _tiny()
    acts_backbone = {type(m).__name__ for m in model.stages.modules() if not list(m.children())}
    assert "Mish" in acts_backbone and "LeakyReLU" not in acts_backbone
    neck = [m for m in model.td4.modules() if isinstance(m, nn.LeakyReLU)]
    assert neck and all(m.negative_slope == 0.1 for m in neck)  # leaky 0.1 in the neck (cfg activation=leaky)
    leaky = _tiny(activation="leaky")  # Table 2-3's ablation: leaky ReLU in the backbone instead
    assert not any(type(m).__name__ == "Mish" for m in leaky.modules())


def test_output_shapes_and_non_square_inputs():
    model = _tiny().eval()
    outs = model(torch.zeros(2, 1, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 8, 12, 15), (2, 3, 4, 6, 15), (2, 3, 2, 3, 15)]
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 1, 100, 96))


# ------------------------------------------------------------------------------------------------ SPP
def test_spp_keeps_the_size_and_pools_5_9_13():
    # Sec. 3.4 / yolov4.cfg: max-pool 5, 9, 13 with stride 1 and concat [pool13, pool9, pool5, input]: 4C channels,
    # the same H x W. A single 1 at the centre of a 15x15 map of -1s spreads to a k x k square under a k x k pool.
    x = -torch.ones(1, 2, 15, 15)
    x[:, :, 7, 7] = 1.0
    y = SPP()(x)
    assert tuple(y.shape) == (1, 8, 15, 15)
    support = [int((y[0, c] > 0).sum()) for c in range(0, 8, 2)]
    assert support == [13 * 13, 9 * 9, 5 * 5, 1]
    assert torch.equal(y[:, 6:], x)  # the input itself last (route -6)


# ------------------------------------------------------------------------------------------------ DropBlock
def test_dropblock_mask_hand_case():
    # Ghiasi et al. Algorithm 1: a seed at a valid position drops the block_size x block_size square around it.
    # 6x6 map, block 3: seeds live on the 4x4 grid of top-left corners; seeds at (0, 0) and (2, 3):
    seeds = torch.zeros(4, 4)
    seeds[0, 0] = seeds[2, 3] = 1
    expected = torch.tensor([[0, 0, 0, 1, 1, 1],
                             [0, 0, 0, 1, 1, 1],
                             [0, 0, 0, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    assert torch.equal(dropblock_mask(seeds, 3, (6, 6)), expected)


def test_dropblock_drops_whole_squares_and_rescales_by_count_over_kept():
    torch.manual_seed(0)
    drop = DropBlock2d(block_size=3, drop_prob=0.3).train()
    x = torch.ones(2, 4, 12, 12)
    y = drop(x)
    zero = y == 0
    kept = int((~zero).sum())
    assert 0 < kept < x.numel()
    # kept activations are scaled by count(M) / count_ones(M) (Algorithm 1, step 6): all equal numel / kept
    assert torch.allclose(y[~zero], torch.full((kept,), x.numel() / kept))
    assert float(y.sum()) == pytest.approx(x.numel())  # the rescaling keeps the total
    # every dropped activation lies in a 3x3 square that is dropped entirely and fits in the map
    for n, c, i, j in zero.nonzero().tolist():
        assert any(bool(zero[n, c, r:r + 3, s:s + 3].all())
                   for r in range(max(0, i - 2), min(i, 9) + 1) for s in range(max(0, j - 2), min(j, 9) + 1))
    assert torch.equal(drop.eval()(x), x)  # inference: the identity
    with pytest.raises(ValueError, match="drop_prob"):
        DropBlock2d(3, 1.0)


# ------------------------------------------------------------------------------------------------ Mosaic
def test_mosaic4_places_the_images_and_moves_the_boxes_by_hand():
    # Sec. 3.3 Mosaic; 10x10 images, centre (xc, yc) = (6, 4). Quadrants: top-left [0, 4) x [0, 6) from image 0's
    # bottom-right (rows 6-9, cols 4-9), top-right [0, 4) x [6, 10) from image 1's bottom-left (rows 6-9, cols 0-3),
    # bottom-left [4, 10) x [0, 6) from image 2's top-right (rows 0-5, cols 4-9), bottom-right from image 3's top-left.
    images = torch.arange(4 * 100, dtype=torch.float32).view(4, 1, 10, 10)
    boxes = [torch.tensor([[5.0, 7, 9, 9], [0, 0, 3, 3]]), torch.tensor([[2.0, 6, 6, 10]]),
             torch.tensor([[1.0, 1, 8, 5]]), torch.tensor([[3.0, 3, 5, 5], [5, 5, 8, 8]])]
    labels = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([4]), torch.tensor([5, 6])]
    out, b, lab = mosaic4(images, boxes, labels, (6, 4))
    assert torch.equal(out[:, 0:4, 0:6], images[0, :, 6:10, 4:10])
    assert torch.equal(out[:, 0:4, 6:10], images[1, :, 6:10, 0:4])
    assert torch.equal(out[:, 4:10, 0:6], images[2, :, 0:6, 4:10])
    assert torch.equal(out[:, 4:10, 6:10], images[3, :, 0:6, 0:4])
    # image 0 moves by (xc - W, yc - H) = (-4, -6): (5, 7, 9, 9) -> (1, 1, 5, 3), inside [0, 6] x [0, 4];
    #   (0, 0, 3, 3) -> (-4, -6, -1, -3): clipped to nothing, dropped.
    # image 1 by (xc, yc - H) = (6, -6): (2, 6, 6, 10) -> (8, 0, 12, 4), clipped to x <= 10: (8, 0, 10, 4).
    # image 2 by (xc - W, yc) = (-4, 4): (1, 1, 8, 5) -> (-3, 5, 4, 9), clipped to x >= 0: (0, 5, 4, 9).
    # image 3 by (xc, yc) = (6, 4): (3, 3, 5, 5) -> (9, 7, 11, 9) -> (9, 7, 10, 9) (1 pixel wide: kept);
    #   (5, 5, 8, 8) -> (11, 9, 14, 12): outside, dropped.
    assert b.tolist() == [[1, 1, 5, 3], [8, 0, 10, 4], [0, 5, 4, 9], [9, 7, 10, 9]]
    assert lab.tolist() == [1, 3, 4, 5]
    # min_visible: (9, 7, 10, 9) keeps 2 of its 4 px^2, (8, 0, 10, 4) 8 of 16, (0, 5, 4, 9) 16 of 28
    _, b, lab = mosaic4(images, boxes, labels, (6, 4), min_visible=0.55)
    assert lab.tolist() == [1, 4]


def test_mosaic_batch_is_seeded_and_keeps_boxes_inside():
    images = torch.rand(5, 1, 32, 32)
    boxes = [torch.tensor([[2.0, 3, 20, 25]]) + k for k in range(5)]
    labels = [torch.tensor([k]) for k in range(5)]
    a = mosaic(images, boxes, labels, np.random.default_rng(3))
    again = mosaic(images, boxes, labels, np.random.default_rng(3))
    assert torch.equal(a[0], again[0]) and all(torch.equal(x, y) for x, y in zip(a[1], again[1]))
    assert a[0].shape == images.shape
    for b in a[1]:
        assert len(b) >= 1  # a 18x22 box survives in some quadrant of at least 0.2 * 32 = 6.4 px
        assert bool(((b >= 0) & (b <= 32)).all()) and bool((b[:, 2:] > b[:, :2]).all())


# ------------------------------------------------------------------------------------------------ decoding, loss
def test_grid_sensitivity_decoding():
    # Sec. 3.4 "eliminate grid sensitivity" (cfg scale_x_y): x = s sigmoid(tx) - (s - 1) / 2 + j. A 2x2 map on a
    # 64 px image (stride 32), anchor 10 x 20; tx = ty = 20 (sigmoid = 1 - 2e-9), tw = th = 0:
    # s = 1: cell (0, 0) centre (32, 32), i.e. the cell's far corner is reached only in the limit;
    # s = 1.2: 1.2 - 0.1 = 1.1 -> centre (35.2, 35.2): beyond the border;  w = e^0 * 10, h = 20
    out = torch.zeros(1, 1, 2, 2, 6, dtype=torch.float64)
    out[..., 0:2] = 20.0
    anchors = torch.tensor([[10.0, 20.0]])
    plain = decode_level(out, anchors, 1.0, 64)[0, 0, 0, 0]
    scaled = decode_level(out, anchors, 1.2, 64)[0, 0, 0, 0]
    assert plain.tolist() == pytest.approx([27.0, 22.0, 37.0, 42.0], abs=1e-6)
    assert scaled.tolist() == pytest.approx([30.2, 25.2, 40.2, 45.2], abs=1e-6)


def test_loss_on_a_hand_case_uses_ciou():
    # One 64x64 image, 10 classes, one anchor per level: stride 8 (8x8 map) 16x16, stride 16 (4x4) 40x20,
    # stride 32 (2x2) 60x60. One object, class 3, box (4, 4, 20, 36): w 16, h 32, centre (12, 20).
    # Anchor choice by shape IoU: 16x16: 256 / (512 + 256 - 256) = 0.5; 40x20: 320 / (512 + 800 - 320) = 0.3226;
    # 60x60: 512 / 3600 = 0.142 -> the stride-8 anchor, cell column floor(12 / 8) = 1, row floor(20 / 8) = 2.
    # iou_thresh 1.0 (Table 4 "IT" off): no second anchor.
    # All outputs 0: sigmoid 0.5, so with s = 1.2 the offset is 1.2 * 0.5 - 0.1 = 0.5: the responsible box is
    # centred at (12, 20), 16 x 16: (4, 12, 20, 28). IoU with (4, 4, 20, 36) = 256 / 512 = 0.5; same centre: rho = 0;
    # CIoU = 1 - 0.5 + alpha v, v = 4 / pi^2 (atan(16 / 32) - atan(16 / 16))^2 = 0.4052847 * 0.1035232 = 0.0419564,
    # alpha = v / (0.5 + v) = 0.0774158, CIoU = 0.5 + 0.0032481 = 0.5032481; box loss = 0.07 * CIoU = 0.0352274.
    # Objectness: the positive's BCE(0, 1) = ln 2; no other box overlaps the object by > 0.7 (at most 0.5), so the
    # other 64 + 16 + 4 - 1 = 83 predictions are negatives: 83 ln 2. Classes: 10 BCE(0, 0 or 1) = 10 ln 2.
    outs = [torch.zeros(1, 1, s, s, 15, dtype=torch.float64, requires_grad=True) for s in (8, 4, 2)]
    anchors = [torch.tensor([[16.0, 16.0]]), torch.tensor([[40.0, 20.0]]), torch.tensor([[60.0, 60.0]])]
    targets = [{"boxes": torch.tensor([[4.0, 4, 20, 36]]), "labels": torch.tensor([3])}]
    loss = yolo_v4_loss(outs, targets, 64, anchors, iou_thresh=1.0)
    assert loss["loss_box"].item() == pytest.approx(0.07 * 0.5032481, abs=1e-6)
    assert loss["loss_obj"].item() == pytest.approx(LN2, abs=1e-9)
    assert loss["loss_noobj"].item() == pytest.approx(83 * LN2, abs=1e-9)
    assert loss["loss_class"].item() == pytest.approx(10 * LN2, abs=1e-9)
    assert loss["loss"].item() == pytest.approx(0.07 * 0.5032481 + 94 * LN2, abs=1e-6)
    loss["loss"].backward()
    g = outs[0].grad[0, 0]
    assert float(g[2, 1, 3]) < 0  # the box is too low (h 16 < 32): the loss pulls th up
    assert float(g[2, 1, 4]) == pytest.approx(-0.5)  # BCE gradient sigmoid(0) - 1 on the positive's objectness
    assert float(g[2, 1, 5 + 2]) == pytest.approx(-0.5) and float(g[2, 1, 5]) == pytest.approx(0.5)
    # "IT" (iou_thresh 0.213): the 40x20 anchor (shape IoU 0.3226) is responsible too: one negative fewer, one
    # more positive (its own CIoU term, ln 2 objectness, 10 ln 2 classes)
    both = yolo_v4_loss([o.detach() for o in outs], targets, 64, anchors)
    assert float(both["loss_obj"]) == pytest.approx(2 * LN2) and float(both["loss_noobj"]) == pytest.approx(82 * LN2)
    # label smoothing 0.1 (Table 4 "LS"; darknet y (1 - eps) + eps / 2): targets 0.95 / 0.05; BCE at logit 0 is
    # still ln 2 per class whatever the target, so the class loss is unchanged here but the gradient is 0.5 - 0.95
    smooth = yolo_v4_loss(outs, targets, 64, anchors, iou_thresh=1.0, label_smoothing=0.1)
    grad = torch.autograd.grad(smooth["loss_class"], outs[0])[0][0, 0, 2, 1]
    assert float(grad[5 + 2]) == pytest.approx(0.5 - 0.95) and float(grad[5]) == pytest.approx(0.5 - 0.05)


# ------------------------------------------------------------------------------------------------ training, inference
def test_a_few_training_steps_on_digits_lower_the_loss():
    from cnnzoo.detection.data import digits_detection

    train, _ = digits_detection(num_train=4, num_test=2)
    x = torch.stack([train.image(i) for i in range(4)]).float() / 255
    targets = [{"boxes": train.boxes[i].float(), "labels": train.labels[i].long() + 1} for i in range(4)]
    torch.manual_seed(0)
    model = _tiny()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(4):
        loss = model.loss(model(x), targets, 128)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_detect_gives_boxes_inside_the_image_and_labels_1_to_C():
    torch.manual_seed(0)
    model = _tiny(num_classes=3)
    dets = model.detect(torch.randn(2, 1, 64, 96), score_thresh=0.0, max_detections=50)
    assert model.training  # detect restores the mode
    assert len(dets) == 2
    for d in dets:
        assert 0 < len(d["boxes"]) <= 50
        b = d["boxes"]
        assert bool((b[:, 0::2] >= 0).all() and (b[:, 0::2] <= 96).all())
        assert bool((b[:, 1::2] >= 0).all() and (b[:, 1::2] <= 64).all())
        assert set(d["labels"].tolist()) <= {1, 2, 3} and bool((d["scores"] >= 0).all())


def test_options_are_checked_in_one_line():
    for kw, msg in (({"input_size": 100}, "multiple of 32"), ({"depth": [1, 2, 8]}, "5 integers"),
                    ({"anchors": [[1, 2]]}, "multiple of 3"), ({"scale_x_y": [1.2, 1.1]}, "3 numbers"),
                    ({"box_loss": "mse"}, "ciou, diou, giou"), ({"activation": "relu"}, "mish or leaky"),
                    ({"dropblock": 1.5}, "dropblock")):
        with pytest.raises(ValueError, match=msg):
            create_detector("yolo_v4", **kw)
    model = _tiny(dropblock=0.1, dropblock_size=3, sam=True)  # the BoF/BoS options build and run
    outs = model(torch.zeros(1, 1, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 3, 8, 8, 15), (1, 3, 4, 4, 15), (1, 3, 2, 2, 15)]


@pytest.mark.slow
def test_trainer_runs_yolo_v4_with_mosaic(tmp_path):
    from cnnzoo.detection.train import DetTrainer, default_det_config

    cfg = default_det_config("yolo_v4", epochs=1, limit_batches=2, batch_size=4, mosaic=True,
                             options={"width_mult": 1 / 16}, data_params={"num_train": 8, "num_test": 4})
    trainer = DetTrainer(cfg, run_dir=tmp_path / "run", threads=1, verbose=False)
    assert trainer.options["num_classes"] == 10  # no background column (NO_BACKGROUND_COLUMN)
    result = trainer.fit()
    assert result["epoch"] == 1 and result["detect"] == {"score_thresh": 0.005, "nms_thresh": 0.45,
                                                         "max_detections": 100}
    import json

    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["augmentation"]["mosaic"] is True
