"""YOLO v2 (Redmon & Farhadi 2017, YOLO9000): the yolo-voc.cfg network's size and 13x13x125 output, Darknet-19
(Table 6), the passthrough's reorg on a hand case, direct location prediction on a hand-made output, k-means priors
on a known set, darknet's region-layer loss on a hand case, a training step on digits-detection and detections
inside the image. Expected numbers are computed by hand here from the paper / the darknet cfg and C source (named at
each), never read from the code under test."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnzoo.detection.models.yolo_v2  # noqa: F401  (registers yolo_v2 before the package's import line has it)
from cnnzoo.detection.models.yolo_v2 import (
    VOC_ANCHORS,
    Darknet19,
    YOLOv2,
    anchors_from_boxes,
    decode_boxes,
    reorg,
    yolo_v2_loss,
)
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_yolo_v2_parameter_count_from_yolo_voc_cfg_and_13x13x125_output():
    # darknet cfg/yolo-voc.cfg, every [convolutional] but the last with batch_normalize=1 (no bias), 3x3 pad 1:
    #   Darknet-19 without its last conv (k*k*in*out):
    #     3*3*3*32 = 864; 9*32*64 = 18,432; 9*64*128 = 73,728; 128*64 = 8,192; 9*64*128 = 73,728;
    #     9*128*256 = 294,912; 256*128 = 32,768; 9*128*256 = 294,912;
    #     9*256*512 = 1,179,648; 512*256 = 131,072; 1,179,648; 131,072; 1,179,648;
    #     9*512*1024 = 4,718,592; 1024*512 = 524,288; 4,718,592; 524,288; 4,718,592        sum 19,802,976
    #   head: 2 x 9*1024*1024 = 18,874,368; route -9 (the 26x26x512 conv) -> 1x1 64: 512*64 = 32,768;
    #     reorg /2: 26x26x64 -> 13x13x256; route -1,-4: 256 + 1024 = 1280; 9*1280*1024 = 11,796,480;
    #     final 1x1: 1024*125 = 128,000 + 125 biases (125 = 5 * (5 + 20))
    #   weights 19,802,976 + 18,874,368 + 32,768 + 11,796,480 + 128,000 = 50,634,592... plus the BN scale and shift:
    #   BN channels 32+64+128+64+128+256+128+256+512+256+512+256+512+1024+512+1024+512+1024 (= 7,200)
    #     + 1024+1024+64+1024 (= 3,136) = 10,336 -> 20,672 parameters
    #   50,634,592 + 125 + 20,672 = 50,655,389; BN running mean and variance (buffers): 20,672 more -> 50,676,061
    assert 19_802_976 + 18_874_368 + 32_768 + 11_796_480 + 128_000 == 50_634_592  # the comment's own arithmetic
    with torch.device("meta"):
        model = create_detector("yolo_v2")
        out = model(torch.zeros(1, 3, 416, 416))
    assert isinstance(model, YOLOv2)
    assert _count(model) == 50_655_389
    running = sum(b.numel() for name, b in model.named_buffers() if "running_" in name)
    assert running == 20_672 and _count(model) + running == 50_676_061
    assert tuple(out.shape) == (1, 13, 13, 125)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 23  # 18 + 2 head + the 1x1 64 + the 3x3 after the route + the final 1x1
    assert all(c.bias is None for c in convs[:-1]) and convs[-1].bias is not None
    assert len([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]) == 22
    assert all(m.negative_slope == 0.1 for m in model.modules() if isinstance(m, nn.LeakyReLU))
    assert model.fuse[0].in_channels == 1280 and model.route[0].out_channels == 64
    # another size: any multiple of 32 (the multi-scale inputs of Sec. 2), 608 -> 19x19
    with torch.device("meta"):
        assert tuple(model(torch.zeros(1, 3, 608, 608)).shape) == (1, 19, 19, 125)


def test_darknet19_is_table_6():
    # Table 6: 19 convolutions and 5 maxpools; with BN (scale, shift) after each of the first 18 and the 1x1 1000
    # classifier with a bias: weights 19,802,976 (above) + BN 2 * 7,200 + 1024*1000 + 1000 = 20,842,376
    with torch.device("meta"):
        net = Darknet19()
        out = net(torch.zeros(2, 3, 224, 224))
    assert tuple(out.shape) == (2, 1000)
    assert len([m for m in net.modules() if isinstance(m, nn.Conv2d)]) == 19
    assert len([m for m in net.modules() if isinstance(m, nn.MaxPool2d)]) == 5
    assert _count(net) == 19_802_976 + 14_400 + 1_025_000 == 20_842_376


def test_reorg_hand_case():
    # x[c, r, q] = 100 c + 10 r + q on a 2x4x4 map; stride 2 -> 8x2x2, channel (dy*2 + dx)*2 + c at (y, x) holds
    # x[c, 2y + dy, 2x + dx] (darknet reorg_cpu with the output's sizes; TensorFlow space_to_depth)
    x = torch.tensor([[[100 * c + 10 * r + q for q in range(4)] for r in range(4)] for c in range(2)],
                     dtype=torch.float32)[None]
    expected = torch.tensor([
        [[0, 2], [20, 22]], [[100, 102], [120, 122]],  # dy 0, dx 0: c 0, c 1
        [[1, 3], [21, 23]], [[101, 103], [121, 123]],  # dy 0, dx 1
        [[10, 12], [30, 32]], [[110, 112], [130, 132]],  # dy 1, dx 0
        [[11, 13], [31, 33]], [[111, 113], [131, 133]],  # dy 1, dx 1
    ], dtype=torch.float32)[None]
    assert torch.equal(reorg(x, 2), expected)
    # not torch's pixel_unshuffle order (c * 4 + dy * 2 + dx)
    assert not torch.equal(reorg(x, 2), nn.functional.pixel_unshuffle(x, 2))


def _darknet_reorg_cpu(x: list[float], w: int, h: int, c: int, batch: int, stride: int, forward: int) -> list[float]:
    """darknet src/blas.c ``reorg_cpu``, transcribed loop for loop."""
    out = [0.0] * len(x)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = x[in_index]
                    else:
                        out[in_index] = x[out_index]
    return out


def test_reorg_equals_darknets_loop_called_with_the_output_sizes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 4)
    got = reorg(x, 2)  # (2, 12, 3, 2)
    ref = _darknet_reorg_cpu(x.reshape(-1).tolist(), w=2, h=3, c=12, batch=2, stride=2, forward=0)
    assert torch.equal(got.reshape(-1), torch.tensor(ref))


def test_the_passthrough_reaches_the_output():
    # Sec. 2 "Fine-Grained Features": the 26x26 features, through the 1x1 64 conv and the reorg, feed the last
    # 3x3 conv; changing that 1x1 conv must change the detections' outputs (and it gets a gradient)
    torch.manual_seed(0)
    model = YOLOv2(in_channels=1, num_classes=2, width_mult=1 / 32).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.route[0].weight.mul_(-3.0)
        after = model(x)
    assert not torch.allclose(before, after)
    model(x).sum().backward()
    assert model.route[0].weight.grad is not None and model.route[0].weight.grad.abs().sum() > 0


def test_decode_hand_made_output():
    # A 64x64 input -> 2x2 grid (32-pixel cells), A = 2 priors (w, h) in cells: (1, 2) and (3, 1); C = 2.
    # Anchor 1 of the cell in row 1, column 0 (flat index (1*2 + 0)*2 + 1 = 5):
    #   t_x = 0 -> sigmoid 0.5, b_x = 0.5 + 0 = 0.5 cells = 16 px; t_y = ln 3 -> sigmoid 3/4, b_y = 1.75 cells = 56 px
    #   t_w = ln 2 -> b_w = 3 * 2 = 6 cells = 192 px; t_h = 0 -> b_h = 1 cell = 32 px
    #   box (16 - 96, 56 - 16, 16 + 96, 56 + 16) = (-80, 40, 112, 72)
    #   t_o = 0 -> 0.5; class logits (0, ln 3) -> softmax (1/4, 3/4) -> scores (0.125, 0.375)
    # Every other entry 0: anchor 0 of cell (row 0, column 1) (flat index 2): centre (1.5, 0.5) cells = (48, 16) px,
    #   size (1, 2) cells = (32, 64) px -> (32, -16, 64, 48); scores 0.5 * (1/2, 1/2)
    out = torch.zeros(1, 2, 2, 2 * (5 + 2))
    out[0, 1, 0, 7:14] = torch.tensor([0.0, math.log(3), math.log(2), 0.0, 0.0, 0.0, math.log(3)])
    boxes, scores = decode_boxes(out, (64, 64), torch.tensor([[1.0, 2.0], [3.0, 1.0]]))
    assert boxes.shape == (1, 8, 4) and scores.shape == (1, 8, 2)
    torch.testing.assert_close(boxes[0, 5], torch.tensor([-80.0, 40.0, 112.0, 72.0], dtype=torch.float64))
    torch.testing.assert_close(scores[0, 5], torch.tensor([0.125, 0.375], dtype=torch.float64))
    torch.testing.assert_close(boxes[0, 2], torch.tensor([32.0, -16.0, 64.0, 48.0], dtype=torch.float64))
    torch.testing.assert_close(scores[0, 2], torch.tensor([0.25, 0.25], dtype=torch.float64))
    # darknet's flat anchors list gives the same
    torch.testing.assert_close(decode_boxes(out, 64, [1, 2, 3, 1])[0], boxes)


def test_anchors_from_boxes_on_a_known_set():
    # two shapes, 40 boxes each: 32x64 px and 96x32 px -> with k = 2 the centroids are the shapes themselves,
    # in 32-pixel cells (1, 2) and (3, 1), sorted by area (2 < 3)
    wh = torch.tensor([[32.0, 64.0]] * 40 + [[96.0, 32.0]] * 40)
    assert anchors_from_boxes(wh, k=2) == [1.0, 2.0, 3.0, 1.0]
    # the yolo-voc.cfg priors, pairs (w, h) in cells
    assert VOC_ANCHORS[:2] == (1.3221, 1.73145) and len(VOC_ANCHORS) == 10


def _box_iou(a, b) -> float:
    """IoU of two (cx, cy, w, h) boxes, by intervals."""
    ix = max(0.0, min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2))
    iy = max(0.0, min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_region_loss_hand_case():
    # darknet region layer (yolo-voc.cfg scales: object 5, noobject 1, class 1, coord 1, thresh .6); 64x64 input ->
    # 2x2 grid, priors A0 = (1, 1.5) and A1 = (1.5, 1) cells (one the other's transpose), C = 2. One truth, label 2: xyxy (24, 4, 56, 44) ->
    # centre (40, 24) px = (1.25, 0.75) cells, size (1, 1.25) cells: cell row 0, column 1; t*_x = .25, t*_y = .75.
    # bias_match: IoU of the shapes, centred: A0 1.25 / (1.5 + 1.25 - 1.25) = .833, A1 1 / (1.5 + 1.25 - 1) = .571
    # -> A0 (with the priors' w and h swapped it would be A1).
    # All outputs 0 (each box = its prior centred in its cell), except A1 of the same cell, moved onto the truth:
    #   t_x = -ln 3 (sigmoid 1/4), t_y = ln 3 (3/4), t_w = ln(1 / 1.5), t_h = ln(1.25 / 1): IoU 1 > .6 -> ignored
    #   (every other box at its prior has an IoU below .2 with the truth).
    # Responsible A0 box: centre (1.5, .5), size (1, 1.5); its IoU with the truth (computed below by intervals).
    #   coordinates: 1/2 [(.5 - .25)^2 + (.5 - .75)^2] + 1/2 [(0 - ln(1/1))^2 + (0 - ln(1.25/1.5))^2]
    #   objectness (rescore): 5/2 (sigmoid(0) - IoU)^2; class: cross-entropy of logits (0, 0) = ln 2
    #   no-object: 8 predictions - the responsible - the ignored = 6, each 1/2 * sigmoid(0)^2 = 1/8
    #   prior matching (seen < 12800): the 7 non-responsible predictions, .01/2 [(sig x - .5)^2 + (sig y - .5)^2 +
    #   t_w^2 + t_h^2]: 0 for the six at their priors; the moved A1: .005 [1/16 + 1/16 + ln(2/3)^2 + ln(1.25)^2]
    out = torch.zeros(1, 2, 2, 2 * 7)
    out[0, 0, 1, 7:11] = torch.tensor([-math.log(3), math.log(3), math.log(1 / 1.5), math.log(1.25 / 1)])
    anchors = torch.tensor([[1.0, 1.5], [1.5, 1.0]])
    targets = [{"boxes": torch.tensor([[24.0, 4.0, 56.0, 44.0]]), "labels": torch.tensor([2])}]
    iou = _box_iou((1.5, 0.5, 1.0, 1.5), (1.25, 0.75, 1.0, 1.25))
    assert iou == pytest.approx(0.84375 / 1.90625)
    expected = {"loss_xy": 0.5 * (0.25 ** 2 + 0.25 ** 2), "loss_wh": 0.5 * math.log(1.25 / 1.5) ** 2,
                "loss_obj": 2.5 * (0.5 - iou) ** 2, "loss_noobj": 6 * 0.125, "loss_class": math.log(2),
                "loss_prior": 0.0}
    got = yolo_v2_loss(out, targets, (64, 64), anchors)
    for key, value in expected.items():
        assert got[key].item() == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert got["loss"].item() == pytest.approx(sum(expected.values()), rel=1e-6)
    prior = 0.005 * (1 / 16 + 1 / 16 + math.log(2 / 3) ** 2 + math.log(1.25) ** 2)
    with_prior = yolo_v2_loss(out, targets, (64, 64), anchors, prior_term=True)
    assert with_prior["loss_prior"].item() == pytest.approx(prior, rel=1e-6)
    # without the ignore threshold (thresh 1: nothing is ignored) the moved A1 pays its no-object term too
    assert yolo_v2_loss(out, targets, (64, 64), anchors, thresh=1.0)["loss_noobj"].item() == pytest.approx(7 / 8)
    # the gradient flows to the raw outputs (darknet's delta is minus this gradient)
    out.requires_grad_(True)
    yolo_v2_loss(out, targets, (64, 64), anchors)["loss"].backward()
    # d/dt_w of 1/2 (t_w - ln(1/1))^2 = t_w = 0; d/dt_h of 1/2 (t_h - ln(1.25/1.5))^2 = -ln(1.25/1.5)
    assert out.grad[0, 0, 1, 3].item() == pytest.approx(-math.log(1.25 / 1.5), rel=1e-6)


def test_model_loss_counts_seen_images_for_the_prior_term():
    torch.manual_seed(0)
    model = YOLOv2(in_channels=1, num_classes=3, width_mult=1 / 32, prior_images=4)
    x = torch.rand(2, 1, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    model.train()
    first = model.loss(model(x), targets, 64)  # seen 2 < 4: prior term on
    model(x)  # seen 4
    later = model.loss(model(x), targets, 64)  # seen 6: off
    assert first["loss_prior"].item() > 0 and later["loss_prior"].item() == 0
    assert int(model.seen) == 6 and int(model.iterations) == 3
    model.eval()
    model(x)
    assert int(model.seen) == 6  # evaluation does not count


def test_multiscale_draws_a_size_every_10_batches():
    torch.manual_seed(0)
    model = YOLOv2(in_channels=1, num_classes=2, width_mult=1 / 64, multiscale=[32, 64, 96]).train()
    sides = []
    with torch.no_grad():
        for _ in range(40):
            sides.append(model(torch.rand(2, 1, 64, 64)).shape[1] * 32)
    periods = [set(sides[k:k + 10]) for k in range(0, 40, 10)]
    assert all(len(p) == 1 for p in periods) and set(sides) <= {32, 64, 96} and len(set(sides)) > 1
    again = YOLOv2(in_channels=1, num_classes=2, width_mult=1 / 64, multiscale=[32, 64, 96]).train()
    with torch.no_grad():
        assert [again(torch.rand(2, 1, 64, 64)).shape[1] * 32 for _ in range(40)] == sides  # reproducible
    assert model.eval()(torch.rand(1, 1, 64, 64)).shape[1] == 2  # evaluation keeps the input size
    # True: side - 96 ... side + 192 (416: the paper's 320 ... 608)
    paper = YOLOv2(width_mult=1 / 64, multiscale=True).train()
    with torch.no_grad():
        seen = {paper(torch.rand(2, 3, 416, 416)).shape[1] * 32 for _ in range(3)}
    assert len(seen) == 1 and seen <= set(range(320, 609, 32))


def test_option_and_input_errors():
    with pytest.raises(ValueError, match="anchors"):
        YOLOv2(anchors=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="anchors"):
        YOLOv2(anchors=[1.0, -2.0])
    with pytest.raises(ValueError, match="multiscale"):
        YOLOv2(multiscale=[100])
    model = YOLOv2(in_channels=1, num_classes=2, width_mult=1 / 32)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 1, 60, 64))
    with pytest.raises(ValueError, match="labels outside"):
        yolo_v2_loss(torch.zeros(1, 2, 2, 5 * 7), [{"boxes": torch.tensor([[0.0, 0, 9, 9]]),
                                                    "labels": torch.tensor([3])}], 64, VOC_ANCHORS)


def test_registry_card_and_recipe():
    assert "yolo_v2" in list_detectors("yolo*")
    card = get_detector_card("yolo_v2")
    assert card.paper.year == 2017 and "1612.08242" in card.paper.url and card.input_size == (3, 416, 416)
    assert card.family == "yolo_v2"
    from cnnzoo.detection.train import EVAL_DETECT, NO_BACKGROUND_COLUMN

    assert "yolo_v2" in NO_BACKGROUND_COLUMN  # softmax over the C classes, no background column
    assert EVAL_DETECT["yolo_v2"] == {"score_thresh": 0.005, "nms_thresh": 0.45}  # darknet validate_detector


@pytest.mark.slow
def test_digits_recipe_priors_are_kmeans_of_the_digits_training_boxes():
    from cnnzoo.detection.data import digits_detection
    from cnnzoo.detection.models.yolo_v2 import DIGITS_ANCHORS, DIGITS_RECIPE

    assert DIGITS_RECIPE["options"]["anchors"] == DIGITS_ANCHORS and DIGITS_RECIPE["input_size"] == 128
    train, _ = digits_detection(**DIGITS_RECIPE["data_params"])  # 128x128 canvases: the recipe's input, no resize
    wh = torch.cat([b[:, 2:] - b[:, :2] for b in train.boxes])
    assert anchors_from_boxes(wh, k=5) == DIGITS_ANCHORS


def _digits_batch(n: int = 8):
    from cnnzoo.detection.data import digits_detection

    train, _ = digits_detection(num_train=n, num_test=1)
    x = torch.stack([train.image(i) for i in range(n)]).float() / 255
    return x, [{"boxes": train.boxes[i].float(), "labels": train.labels[i] + 1} for i in range(n)]


def test_one_training_step_on_digits_lowers_the_loss():
    x, targets = _digits_batch()
    torch.manual_seed(0)
    model = create_detector("yolo_v2", in_channels=1, num_classes=10, width_mult=1 / 16,
                            anchors=[0.4, 0.6, 0.3, 0.9, 0.6, 0.7, 0.7, 1.0, 1.0, 1.1]).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    before = model.loss(model(x), targets, 128)["loss"]
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = model.loss(model(x), targets, 128)["loss"]
    assert after.item() < before.item()


def test_detect_boxes_inside_the_image():
    x, _ = _digits_batch(2)
    torch.manual_seed(0)
    model = create_detector("yolo_v2", in_channels=1, num_classes=10, width_mult=1 / 16)
    dets = model.detect(x, score_thresh=0.0, max_detections=50)
    assert len(dets) == 2 and model.training  # detect restores the mode
    for d in dets:
        assert 0 < len(d["boxes"]) <= 50
        b = d["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 128).all() and (b[:, 3] <= 128).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert d["labels"].min() >= 1 and d["labels"].max() <= 10
        assert (d["scores"] >= 0).all() and (d["scores"] <= 1).all()
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])  # best first
