"""The ``rotate`` / ``zoom`` batch augmentation (cnnzoo.data.augment) that the mnist5k recipe trains with.

Expected values are computed by hand: bilinear sampling reproduces a linear ramp exactly, so a rotated and zoomed
ramp must equal the ramp evaluated at the rotated and scaled positions; a quarter turn must equal torch.rot90.
"""

from __future__ import annotations

import math

import pytest
import torch

from cnnzoo.data.augment import AugmentPolicy, apply_augment, draw_params, rotate_zoom


def test_rotate_zoom_samples_the_rotated_and_scaled_positions_of_a_ramp():
    h = w = 9
    c = (w - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = 3 * xs + 5 * ys + 20  # a linear image: bilinear interpolation of it is exact
    angle, zoom = 30.0, 1.5  # the sampled positions stay inside the image (corner: 4 sqrt(2) / 1.5 < 4)
    out = rotate_zoom(ramp[None, None], torch.tensor([[angle, zoom]]))[0, 0].double()
    a = math.radians(angle)
    # output pixel p (from the centre, x right, y down) shows the source at R p / zoom
    px, py = xs - c, ys - c
    sx = c + (math.cos(a) * px - math.sin(a) * py) / zoom
    sy = c + (math.sin(a) * px + math.cos(a) * py) / zoom
    torch.testing.assert_close(out, 3 * sx + 5 * sy + 20, rtol=0, atol=1e-3)


def test_a_quarter_turn_is_rot90_counter_clockwise_and_zero_is_the_identity():
    x = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8)
    quarter = rotate_zoom(x, torch.tensor([[90.0, 1.0], [-90.0, 1.0]]))
    torch.testing.assert_close(quarter[0], torch.rot90(x[0], 1, (-2, -1)).float(), rtol=0, atol=1e-3)
    torch.testing.assert_close(quarter[1], torch.rot90(x[1], -1, (-2, -1)).float(), rtol=0, atol=1e-3)
    same = rotate_zoom(x, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(same, x.float(), rtol=0, atol=1e-4)


def test_zoom_below_one_shrinks_with_zero_fill():
    x = torch.full((1, 1, 8, 8), 200, dtype=torch.uint8)
    out = rotate_zoom(x, torch.tensor([[0.0, 0.5]]))[0, 0]
    assert (out[0] == 0).all() and (out[:, 0] == 0).all()  # the border now samples outside the image
    torch.testing.assert_close(out[3:5, 3:5], torch.full((2, 2), 200.0))  # the centre keeps its value


def test_draws_lie_in_the_ranges_and_leave_older_draws_unchanged():
    policy = AugmentPolicy.from_dict({"translate": 2, "rotate": 10, "zoom": [0.9, 1.1]})
    params = draw_params(policy, 500, torch.Generator().manual_seed(0), (28, 28))
    angle, zoom = params["affine"].unbind(1)
    assert angle.abs().max() <= 10 and angle.min() < -9 and angle.max() > 9
    assert 0.9 <= zoom.min() and zoom.max() <= 1.1 and zoom.min() < 0.91 and zoom.max() > 1.09
    shifts_only = draw_params(AugmentPolicy.from_dict({"translate": 2}), 500, torch.Generator().manual_seed(0))
    assert torch.equal(params["translate"], shifts_only["translate"])  # new draws come after the old ones
    again = draw_params(policy, 500, torch.Generator().manual_seed(0), (28, 28))
    assert torch.equal(again["affine"], params["affine"])
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    out = apply_augment(images, {k: v[:4] for k, v in params.items()})
    assert out.shape == images.shape and out.dtype == torch.float32
    assert AugmentPolicy.from_dict({"rotate": 0}).active is False


@pytest.mark.parametrize(("augment", "words"), [
    ({"rotate": -5}, "rotate"), ({"rotate": 200}, "[0, 180]"), ({"rotate": "10"}, "rotate"),
    ({"zoom": 1.1}, "zoom"), ({"zoom": [1.1, 0.9]}, "min <= max"), ({"zoom": [0, 1]}, "0 < min"),
    ({"rotation": 10}, "rotate"),
])
def test_bad_rotate_or_zoom_is_a_clear_error(augment, words):
    with pytest.raises(ValueError) as e:
        AugmentPolicy.from_dict(augment)
    assert words in str(e.value), str(e.value)
