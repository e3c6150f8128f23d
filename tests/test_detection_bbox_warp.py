"""Appendix C's box targets and regression, and Appendix A's region warping, against hand-computed values."""

import math

import pytest
import torch

from cnnzoo.detection.bbox import decode, encode, fit_box_regressor
from cnnzoo.detection.warp import sampling_boxes, warp_regions


def test_encode_decode_by_hand():
    # P centre (5, 10), 10 x 20; G centre (12, 14), 20 x 20:
    # t = ((12 - 5) / 10, (14 - 10) / 20, log(20 / 10), log(20 / 20)) = (0.7, 0.2, log 2, 0)
    p = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    g = torch.tensor([[2.0, 4.0, 22.0, 24.0]])
    assert encode(p, g)[0].tolist() == pytest.approx([0.7, 0.2, math.log(2), 0.0])
    assert decode(p, torch.tensor([[0.7, 0.2, math.log(2), 0.0]]))[0].tolist() == pytest.approx([2, 4, 22, 24])


def _pairs(n=200, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50
    wh = 5 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 20
    props = torch.cat([xy, xy + wh], 1)
    true_w = torch.randn(d, 4, generator=g, dtype=torch.float64) * 0.1
    targets = x @ true_w + torch.tensor([0.05, -0.02, 0.1, -0.1], dtype=torch.float64)
    return x, props, decode(props, targets), targets


def test_ridge_regression_recovers_a_linear_map():
    x, props, gts, _ = _pairs()
    labels = torch.zeros(len(x), dtype=torch.int64)
    reg = fit_box_regressor(x, props, gts, labels, num_classes=2, lam=1e-9)
    assert reg.trained.tolist() == [True, False]
    assert torch.allclose(reg.predict(x, props, 0).double(), gts, atol=1e-3)
    assert torch.equal(reg.predict(x, props, 1), props)  # a class without pairs leaves the proposals alone


def test_ridge_regression_shrinks_to_the_mean_target():
    # with a huge lambda the weights vanish; the unpenalised bias leaves the mean target
    x, props, gts, targets = _pairs()
    reg = fit_box_regressor(x, props, gts, torch.zeros(len(x), dtype=torch.int64), num_classes=1, lam=1e12)
    mean = targets.mean(0, keepdim=True).expand(len(x), 4)
    assert torch.allclose(reg.predict(x, props, 0).double(), decode(props, mean), atol=1e-3)


# A ramp image: channel 0 holds each pixel's centre x (x + 0.5), channel 1 its centre y. Bilinear sampling of a
# linear function is exact, so every warped pixel holds the image coordinate it was sampled at.
H = W = 64
RAMP = torch.stack([torch.arange(W).float().add(0.5).expand(H, W), torch.arange(H).float().add(0.5)[:, None]
                    .expand(H, W)])


def test_warp_samples_the_box_at_the_output_pixel_centres():
    out = warp_regions(RAMP, torch.tensor([[10.0, 20.0, 30.0, 40.0]]), size=8, padding=0, mode="warp")
    # column j samples x = 10 + (j + 0.5) * 20 / 8
    assert out[0, 0, 3].tolist() == pytest.approx([10 + (j + 0.5) * 2.5 for j in range(8)])
    assert out[0, 1, :, 3].tolist() == pytest.approx([20 + (i + 0.5) * 2.5 for i in range(8)])


def test_context_padding_leaves_p_warped_pixels_around_the_box():
    # p = 2 at S = 8: the box fills the central 4 columns, so the sampled span is the box dilated by 8 / 4 = 2:
    # x in [0, 40] for the box [10, 30]
    out = warp_regions(RAMP, torch.tensor([[10.0, 20.0, 30.0, 40.0]]), size=8, padding=2, mode="warp")
    xs = out[0, 0, 4].tolist()
    assert xs == pytest.approx([(j + 0.5) * 5 for j in range(8)])
    inside = [j for j, x in enumerate(xs) if 10 <= x <= 30]
    assert inside == [2, 3, 4, 5]  # exactly p = 2 columns of context on each side


def test_tightest_square_modes():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # 20 wide, 40 tall: the tightest square is x in [0, 40]
    sq = warp_regions(RAMP, box, size=8, padding=0, mode="square")
    assert sq[0, 0, 4].tolist() == pytest.approx([(j + 0.5) * 5 for j in range(8)])
    assert sq[0, 1, :, 4].tolist() == pytest.approx([20 + (i + 0.5) * 5 for i in range(8)])
    # without context: the same square, everything outside the box set to the mean (0)
    nc = warp_regions(RAMP, box, size=8, padding=0, mode="square_no_context")
    assert nc[0, 0, 4].tolist() == pytest.approx([0, 0, 12.5, 17.5, 22.5, 27.5, 0, 0])
    sample, keep = sampling_boxes(box, 8, 2, "square_no_context")
    assert sample[0].tolist() == pytest.approx([-20, 0, 60, 80]) and keep[0].tolist() == pytest.approx([0, 0, 40, 80])


def test_pixels_outside_the_image_are_the_mean():
    out = warp_regions(RAMP, torch.tensor([[56.0, 0.0, 72.0, 16.0]]), size=4, padding=0)
    assert out[0, 0, 1].tolist() == pytest.approx([58, 62, 0, 0])  # x = 66 and 70 lie beyond the 64-pixel image


def test_warp_per_region_images_equals_one_image_at_a_time():
    imgs = torch.stack([RAMP, RAMP.flip(-1)])
    boxes = torch.tensor([[3.0, 4.0, 20.0, 50.0], [30.0, 10.0, 60.0, 30.0]])
    both = warp_regions(imgs, boxes, size=9, padding=1)
    for k in range(2):
        assert torch.allclose(both[k], warp_regions(imgs[k], boxes[k : k + 1], size=9, padding=1)[0])


@pytest.mark.parametrize(("kwargs", "match"), [({"mode": "crop"}, "warp, square"), ({"padding": 4}, "padding"),
                                               ({"size": 0}, "positive")])
def test_warp_rejects_bad_settings(kwargs, match):
    args = {"size": 8, "padding": 0, "mode": "warp"} | kwargs
    with pytest.raises(ValueError, match=match):
        warp_regions(RAMP, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), **args)
