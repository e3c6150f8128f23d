"""SSD default boxes, RetinaNet anchors and YOLOv2 k-means priors against the papers' numbers and hand values."""

import math

import numpy as np
import pytest
import torch

from cnnzoo.detection.anchors import (
    kmeans_anchors,
    mean_iou_wh,
    retinanet_anchors,
    ssd_default_boxes,
    ssd_num_boxes_per_location,
    ssd_scales,
    wh_iou,
)


# ----------------------------------------------------------------------------------------------------------- SSD
def test_ssd300_has_the_papers_8732_default_boxes():
    # SSD Sec. 3 / Fig. 2: "8732 default boxes per class": 38^2*4 + 19^2*6 + 10^2*6 + 5^2*6 + 3^2*4 + 1^2*4
    assert 38 * 38 * 4 + 19 * 19 * 6 + 10 * 10 * 6 + 5 * 5 * 6 + 3 * 3 * 4 + 4 == 8732
    assert ssd_default_boxes(300).shape == (8732, 4)
    assert ssd_num_boxes_per_location(((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))) == [4, 6, 6, 6, 4, 4]


def test_ssd512_has_24564_default_boxes():
    # SSD512 (Sec. 3 footnote: conv12_2 added): 64^2*4 + 32^2*6 + 16^2*6 + 8^2*6 + 4^2*6 + 2^2*4 + 1*4
    assert 64 * 64 * 4 + 32 * 32 * 6 + 16 * 16 * 6 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 4 + 4 == 24564
    boxes = ssd_default_boxes(512)
    assert boxes.shape == (24564, 4)
    # footnote: "0.07 on conv4_3", s_min 0.15: first box 0.07 * 512 = 35.84 px centred at (4, 4)
    assert torch.allclose(boxes[0], torch.tensor([4 - 17.92, 4 - 17.92, 4 + 17.92, 4 + 17.92]), atol=1e-4)


def test_ssd_scales_follow_the_papers_rule():
    # Sec. 2.2 with s_min 0.2, s_max 0.9 over the 5 maps after conv4_3, conv4_3 at 0.1 (Sec. 3.1), in the Caffe
    # script's integer percent: step floor(70 / 4) = 17 -> 0.2, 0.37, 0.54, 0.71, 0.88, and 1.05 for the last s'_k
    assert ssd_scales(6) == pytest.approx((0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05))
    # COCO (Sec. 3.4: s_min 0.15, conv4_3 0.07) = torchvision ssd300_vgg16's literal scales list
    assert ssd_scales(6, 0.15) == pytest.approx((0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05))


def test_ssd300_first_boxes_of_each_level_by_hand():
    boxes = ssd_default_boxes(300).double()
    # conv4_3 (38x38, step 8): first centre (4, 4); scale 0.1 -> 30 px
    assert torch.allclose(boxes[0], torch.tensor([-11.0, -11.0, 19.0, 19.0], dtype=torch.float64), atol=1e-4)
    # the extra box: sqrt(s_1 s_2) = sqrt(0.1 * 0.2) -> 42.4264 px
    half = math.sqrt(0.1 * 0.2) * 300 / 2
    assert torch.allclose(boxes[1], torch.tensor([4 - half, 4 - half, 4 + half, 4 + half], dtype=torch.float64),
                          atol=1e-4)
    # ratio 2: w = 30 sqrt(2), h = 30 / sqrt(2); then its transpose
    w, h = 30 * math.sqrt(2) / 2, 30 / math.sqrt(2) / 2
    assert torch.allclose(boxes[2], torch.tensor([4 - w, 4 - h, 4 + w, 4 + h], dtype=torch.float64), atol=1e-4)
    assert torch.allclose(boxes[3], torch.tensor([4 - h, 4 - w, 4 + h, 4 + w], dtype=torch.float64), atol=1e-4)
    # the next location is one step (8 px) to the right (rows outer, columns inner)
    assert torch.allclose(boxes[4], torch.tensor([-3.0, -11.0, 27.0, 19.0], dtype=torch.float64), atol=1e-4)
    # each level's first box: the Caffe script's min_sizes 30, 60, 111, 162, 213, 264 px at centre step / 2
    starts = np.cumsum([0, 38 * 38 * 4, 19 * 19 * 6, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 4])
    for start, size, step, nxt in zip(starts, (30, 60, 111, 162, 213, 264), (8, 16, 32, 64, 100, 300),
                                      (60, 111, 162, 213, 264, 315)):
        c = step / 2
        assert torch.allclose(boxes[start], torch.tensor([c - size / 2, c - size / 2, c + size / 2, c + size / 2],
                                                         dtype=torch.float64), atol=1e-3), (start, size)
        extra = min(math.sqrt(size * nxt), 300) / 2  # sqrt(s_k s_k+1), clipped to the image
        assert float(boxes[start + 1, 2] - boxes[start + 1, 0]) == pytest.approx(2 * extra, abs=1e-3)
    # conv11_2 (1x1): ratio-2 box 0.88 * sqrt(2) > 1 is clipped to the image width, its height 0.88 / sqrt(2)
    last = boxes[-2]
    assert float(last[2] - last[0]) == pytest.approx(300, abs=1e-3)
    assert float(last[3] - last[1]) == pytest.approx(0.88 / math.sqrt(2) * 300, abs=1e-3)


def test_ssd_default_boxes_need_a_layout_for_other_sizes():
    with pytest.raises(ValueError, match="need feature_sizes and aspect_ratios"):
        ssd_default_boxes(128)
    small = ssd_default_boxes(128, feature_sizes=(16, 8, 4, 2, 1), steps=(8, 16, 32, 64, 128),
                              aspect_ratios=((2,), (2, 3), (2, 3), (2,), (2,)))
    assert small.shape == (16 * 16 * 4 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 4 + 4, 4)
    with pytest.raises(ValueError, match="scales"):
        ssd_default_boxes(300, scales=(0.1, 0.2))


# ------------------------------------------------------------------------------------------------------ RetinaNet
def test_retinanet_has_9_anchors_per_location_and_the_hand_count():
    a = retinanet_anchors(256)
    # P3..P7 of a 256 input: 32^2 + 16^2 + 8^2 + 4^2 + 2^2 = 1364 locations, 9 anchors each (Lin et al. Sec. 4)
    assert a.shape == ((32 ** 2 + 16 ** 2 + 8 ** 2 + 4 ** 2 + 2 ** 2) * 9, 4) == (12276, 4)


def test_retinanet_first_anchors_by_hand():
    a = retinanet_anchors(256)
    # P3, base 32, sizes int(32 * 2^(0, 1/3, 2/3)) = 32, 40, 50; ratio h/w 0.5 first: w = s sqrt(2), h = s / sqrt(2)
    # half sizes rounded: 32 -> (22.63, 11.31) -> (23, 11); 40 -> (28.28, 14.14) -> (28, 14); 50 -> (35.36, 17.68)
    # -> (35, 18); ratio 1: 16, 20, 25; ratio 2: the transposes. Centred on the cell's corner (0, 0).
    expect = torch.tensor([[-23, -11, 23, 11], [-28, -14, 28, 14], [-35, -18, 35, 18],
                           [-16, -16, 16, 16], [-20, -20, 20, 20], [-25, -25, 25, 25],
                           [-11, -23, 11, 23], [-14, -28, 14, 28], [-18, -35, 18, 35]], dtype=torch.float32)
    assert torch.equal(a[:9], expect)
    assert torch.equal(a[9], expect[0] + torch.tensor([8.0, 0, 8, 0]))  # next location: 8 px right
    assert torch.equal(a[32 * 9], expect[0] + torch.tensor([0, 8.0, 0, 8]))  # next row: 8 px down
    # P4 starts after 32^2 * 9: base 64, ratio 0.5: half sizes (45.25, 22.63) -> (45, 23)
    assert torch.equal(a[32 * 32 * 9], torch.tensor([-45.0, -23, 45, 23]))
    # the very last: P7 (2x2, stride 128) at (1, 1), size int(512 * 2^(2/3)) = 812, ratio 2: half (287.09, 574.17)
    assert torch.equal(a[-1], torch.tensor([128 - 287.0, 128 - 574, 128 + 287, 128 + 574]))


def test_retinanet_stride_is_image_size_over_grid_as_torchvision():
    # 300 is not a multiple of 8: P3 has ceil(300 / 8) = 38 cells and torchvision's stride 300 // 38 = 7
    a = retinanet_anchors(300)
    assert torch.equal(a[9, 0::2] - a[0, 0::2], torch.tensor([7.0, 7.0]))


# --------------------------------------------------------------------------------------------------------- k-means
def test_wh_iou_by_hand():
    # (2, 3) and (3, 2) at a common corner: overlap 2 x 2 = 4, union 6 + 6 - 4 = 8
    assert wh_iou(np.array([[2.0, 3.0]]), np.array([[3.0, 2.0]]))[0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_kmeans_finds_three_tight_clusters(seed):
    rng = np.random.default_rng(123)
    centres = np.array([[10.0, 20.0], [50.0, 30.0], [120.0, 200.0]])
    jitter = rng.uniform(-1, 1, size=(20, 2))
    wh = np.concatenate([c + np.concatenate([jitter, -jitter]) for c in centres])  # symmetric: means are exact
    got = kmeans_anchors(wh, 3, seed=seed).double().numpy()
    assert np.allclose(got, centres, atol=1e-4)  # sorted by area: 200, 1500, 24000


def test_kmeans_uses_the_iou_distance_not_euclidean():
    # 20 boxes 10x10, 20 boxes 100x100 and 2 boxes 40x40. By 1 - IoU a 40x40 box is nearer 100x100 (IoU 0.16 with
    # 100, vs 0.0625 with 10; also 0.18 vs 0.10 against either mixed centroid), so the clusters are {10} and
    # {100, 40}: centroids 10 and (20 * 100 + 2 * 40) / 22 = 94.545. Euclidean puts 40 with 10 instead
    # (30 < 60): 12.727 and 100.
    wh = np.array([[10.0, 10.0]] * 20 + [[100.0, 100.0]] * 20 + [[40.0, 40.0]] * 2)
    got = kmeans_anchors(wh, 2, seed=0).double().numpy()
    assert np.allclose(got, [[10, 10], [2080 / 22, 2080 / 22]], atol=1e-4)
    assert mean_iou_wh(wh, got) > mean_iou_wh(wh, [[140 / 11, 140 / 11], [100, 100]])


def test_kmeans_is_deterministic_and_checks_its_input():
    rng = np.random.default_rng(5)
    wh = rng.uniform(5, 100, size=(200, 2))
    assert torch.equal(kmeans_anchors(wh, 5, seed=3), kmeans_anchors(torch.from_numpy(wh), 5, seed=3))
    with pytest.raises(ValueError, match="distinct boxes"):
        kmeans_anchors([[1.0, 1.0], [1.0, 1.0]], 2)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchors([[1.0, 0.0], [2.0, 2.0]], 1)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        kmeans_anchors([1.0, 2.0], 1)
