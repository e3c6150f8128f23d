"""VGG's scale jitter and Inception's random-resized crop for tensor datasets (and scale jitter for folders): each
output against an independent resize-then-crop with torch's own interpolation, the drawn ranges, determinism
across batch sizes, and the option errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo.data import DataBundle, TensorSplit, make_loader
from cnnzoo.data.augment import AugmentPolicy, apply_augment, crop_resize, draw_params
from cnnzoo.data.bundle import channel_stats
from cnnzoo.data.folder import FolderTransform


def images(n=40, c=3, h=12, w=12, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_scale_jitter_is_resize_to_S_then_a_crop():
    x = images()
    h = w = 12
    params = draw_params(AugmentPolicy.from_dict({"scale_jitter": [12, 20]}), len(x), torch.Generator().manual_seed(1),
                         (h, w))
    out = apply_augment(x, params)
    assert out.dtype == torch.float32 and out.shape == x.shape
    sizes = set()
    for i in range(len(x)):
        top, left, bh, bw = params["scale_box"][i].tolist()
        s = round(h * h / bh)  # the box of an (h, w) crop of the image rescaled to S x S is h * h / S high
        assert 12 <= s <= 20 and math.isclose(h * h / s, bh) and math.isclose(w * w / s, bw)
        t, lft = round(top * s / h), round(left * s / w)  # integer offsets in the rescaled image
        assert math.isclose(t * h / s, top) and 0 <= t <= s - h and 0 <= lft <= s - w
        ref = F.interpolate(x[i : i + 1].float(), size=(s, s), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[i], ref[0, :, t : t + h, lft : lft + w], atol=2e-3, rtol=0)
        sizes.add(s)
    assert len(sizes) >= 6  # S is drawn per image over the range
    same = apply_augment(x, draw_params(AugmentPolicy.from_dict({"scale_jitter": [12, 12]}), len(x),
                                        torch.Generator().manual_seed(1), (h, w)))
    torch.testing.assert_close(same, x.float(), atol=2e-3, rtol=0)  # S = the native size: the image itself


def test_scale_jitter_of_a_non_square_image_scales_the_shorter_side():
    params = draw_params(AugmentPolicy(scale_jitter=(20, 20)), 6, torch.Generator().manual_seed(0), (10, 15))
    _, _, bh, bw = params["scale_box"][0].tolist()
    assert math.isclose(bh, 10 * 10 / 20) and math.isclose(bw, 15 * 15 / 30)  # rescaled to 20 x 30


def test_random_resized_crop_boxes_and_pixels():
    x = images(n=300, h=16, w=16)
    params = draw_params(AugmentPolicy.from_dict({"random_resized_crop": True}), 300, torch.Generator().manual_seed(2),
                         (16, 16))
    boxes = params["box"]
    assert torch.equal(boxes, boxes.round())  # integer boxes, as torchvision draws them
    top, left, bh, bw = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= 16).all() and (left + bw <= 16).all()
    area = bh * bw / 256
    assert float(area.min()) >= 0.08 * 0.6 and float(area.max()) <= 1.0  # 8%-100%, up to rounding of the sides
    assert float(area.min()) < 0.3 and float(area.max()) > 0.8  # the whole range is used
    ratio = bw / bh
    assert float(ratio.min()) >= 0.75 * 0.75 and float(ratio.max()) <= 4 / 3 / 0.75  # 3/4-4/3, up to rounding
    out = apply_augment(x, params)
    for i in range(20):
        t, lft, hh, ww = (int(v) for v in boxes[i])
        ref = F.interpolate(x[i : i + 1, :, t : t + hh, lft : lft + ww].float(), size=(16, 16), mode="bilinear",
                            align_corners=False)
        torch.testing.assert_close(out[i], ref[0], atol=2e-3, rtol=0)
    small = draw_params(AugmentPolicy.from_dict({"random_resized_crop": [0.5, 0.5]}), 200,
                        torch.Generator().manual_seed(2), (16, 16))["box"]
    assert torch.allclose(small[:, 2] * small[:, 3] / 256, torch.full((200,), 0.5, dtype=torch.float64), atol=0.1)


def test_random_resized_crop_falls_back_to_a_central_crop():
    """A 2x40 strip cannot hold a box of aspect 3/4-4/3 and area >= 50%: the fallback is central, ratio-bounded."""
    params = draw_params(AugmentPolicy(random_resized_crop=(0.5, 1.0)), 5, torch.Generator().manual_seed(0), (2, 40))
    for top, left, bh, bw in params["box"].tolist():
        assert (top, bh) == (0, 2) and bw == round(2 * 4 / 3) and left == (40 - bw) // 2


def test_crop_resize_identity_and_integer_box():
    x = images(n=3)
    full = torch.tensor([[0.0, 0.0, 12.0, 12.0]] * 3, dtype=torch.float64)
    torch.testing.assert_close(crop_resize(x, full), x.float(), atol=1e-3, rtol=0)


def _bundle(n=48, size=12) -> DataBundle:
    x = images(n=n, h=size, w=size)
    labels = torch.arange(n) % 3
    mean, std = channel_stats(x)
    return DataBundle("crops", list("abc"), 3, (size, size), mean, std, TensorSplit(x, labels),
                      TensorSplit(x[:6], labels[:6]), kind="tensor")  # fmt: skip


@pytest.mark.parametrize("aug", [{"scale_jitter": [12, 18], "hflip": True}, {"random_resized_crop": True}])
def test_a_samples_crop_depends_on_seed_epoch_and_position_only(aug):
    bundle = _bundle()
    out = {}
    for bs in (8, 16):
        loader = make_loader(bundle, "train", batch_size=bs, train=True, augment=aug, seed=3)
        loader.set_epoch(1)
        out[bs] = torch.cat([x for x, _ in loader])
    torch.testing.assert_close(out[8], out[16])
    loader.set_epoch(2)
    assert not torch.allclose(torch.cat([x for x, _ in loader]), out[16])


def test_option_errors_name_what_is_valid():
    bundle = _bundle()
    cases = [
        ({"scale_jitter": [10, 16]}, r"S_min must be at least the native shorter side \(12"),
        ({"scale_jitter": [16, 12]}, r"scale_jitter'\] must be \[S_min, S_max\]"),
        ({"scale_jitter": 16}, r"scale_jitter'\] must be \[S_min, S_max\]"),
        ({"random_resized_crop": [0.0, 1.0]}, r"random_resized_crop'\] must be true/false or \[min_area, max_area\]"),
        ({"random_resized_crop": True, "scale_jitter": [12, 14]}, "use one of them"),
    ]
    for aug, match in cases:
        with pytest.raises(ValueError, match=match):
            make_loader(bundle, "train", batch_size=8, train=True, augment=aug)


def test_folder_scale_jitter_crops_the_image_rescaled_to_S():
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    same = FolderTransform(32, True, {"scale_jitter": [32, 32]})(img, random.Random(0))
    assert np.array_equal(same.permute(1, 2, 0).numpy(), arr)  # S = the crop size on a square image: itself
    half = FolderTransform(16, True, {"scale_jitter": [32, 32]})
    for seed in range(5):  # a 16x16 window of the (unscaled) 32x32 image, at a drawn position
        out = half(img, random.Random(seed)).permute(1, 2, 0).numpy()
        assert any(np.array_equal(out, arr[t : t + 16, u : u + 16]) for t in range(17) for u in range(17))
    assert half.draft_size == (32, 32)
    sizes = set()
    jitter = FolderTransform(16, True, {"scale_jitter": [16, 40]})
    for seed in range(30):
        rng = random.Random(seed)
        s = random.Random(seed).randint(16, 40)
        sizes.add(s)
        assert jitter(img, rng).shape == (3, 16, 16)
    assert len(sizes) > 10
    with pytest.raises(ValueError, match="S_min must be at least the crop size 16"):
        FolderTransform(16, True, {"scale_jitter": [12, 20]})
    with pytest.raises(ValueError, match="use one of them"):
        FolderTransform(16, True, {"scale_jitter": [16, 20], "random_resized_crop": True})


# AlexNet (Krizhevsky et al. 2012), Sec. 2: "we first rescaled the image such that the shorter side was of length 256,
# and then cropped out the central 256x256 patch"; Sec. 4.1: the random 224x224 training patches come from those
# 256x256 images (the square the 10-crop test reads too).
def test_folder_central_square_takes_alexnets_random_crops_inside_the_central_square():
    cols = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (32, 1, 3))  # 32 x 64 image, value = its column
    img = Image.fromarray(cols)
    alex = FolderTransform(24, True, {"scale_jitter": [32, 32], "central_square": True})
    anywhere = FolderTransform(24, True, {"scale_jitter": [32, 32]})
    lefts, free = set(), set()
    for seed in range(60):
        out = alex(img, random.Random(seed))[0].numpy()  # (24, 24) column values
        left = int(out[0, 0])
        assert np.array_equal(out, np.tile(np.arange(left, left + 24, dtype=np.uint8), (24, 1)))
        lefts.add(left)
        free.add(int(anywhere(img, random.Random(seed))[0, 0, 0]))
    # by hand: the central square of a 64-wide image is columns 16..47, so a 24-wide crop starts at 16..24
    assert min(lefts) >= 16 and max(lefts) <= 24 and len(lefts) > 4
    assert min(free) < 16 or max(free) > 24  # without it the crop ranges over columns 0..40
    with pytest.raises(ValueError, match="central_square.*give scale_jitter too"):
        FolderTransform(24, True, {"central_square": True})


def test_tensor_central_square_on_square_images_is_the_same_crop_and_non_square_is_refused():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = draw_params(AugmentPolicy.from_dict({"scale_jitter": [12, 20], "central_square": True}), 20, g1, (12, 12))
    b = draw_params(AugmentPolicy.from_dict({"scale_jitter": [12, 20]}), 20, g2, (12, 12))
    torch.testing.assert_close(a["scale_box"], b["scale_box"])  # a square image is its own central square
    with pytest.raises(ValueError, match="central_square.*not square"):
        AugmentPolicy.from_dict({"scale_jitter": [20, 20], "central_square": True}).check_images(3, (10, 15))
    with pytest.raises(ValueError, match=r"central_square'\] must be true or false"):
        AugmentPolicy.from_dict({"scale_jitter": [20, 20], "central_square": 1})
