"""The papers' test-time protocols (`cnnzoo.evaluate.evaluate_protocols`, `cnnzoo eval --protocol`): each one's
views built by hand with tensor slicing, independently of the code, on small constructed images; the test scales
from how the run trained (VGG Sec. 4.1-4.2, Tables 3-4) against the paper's numbers.

Deliberate bugs these tests were run against (each made a test fail; issue 24):
- GoogLeNet's four 144-crop scales replaced by one: test_144crop_averages_googlenets_four_scales;
- 10crop ignoring the multiscale Q: test_10crop_multiscale_takes_the_crops_of_each_scale;
- 10crop's resize step skipped: test_10crop_resizes_images_not_already_at_the_base_scale;
- VGG multi-scale {S-32, S, S+32} for a jittered run: test_vgg_test_scales_follow_the_training_scales,
  test_a_jittered_run_is_tested_at_its_jitter_range, test_cli_a_jittered_runs_scales.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import cnnzoo
from cnnzoo.cli.main import main
from cnnzoo.data import DataBundle, TensorSplit, load_dataset, make_loader
from cnnzoo.evaluate import evaluate, evaluate_protocols, parse_protocols, protocol_probs, to_dense
from cnnzoo.evaluate.protocols import ProtocolSizes, googlenet_views, grid_views, ten_crop_views, training_sizes

MEAN, STD = 0.3, 0.2


def _bundle(n: int = 4, size: int = 32, channels: int = 1, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    split = TensorSplit(images, labels)
    return DataBundle("tiny", [str(i) for i in range(10)], channels, (size, size), (MEAN,) * channels,
                      (STD,) * channels, split, split, "tensor")


def _normalised(bundle: DataBundle) -> torch.Tensor:
    return (bundle.test.images.float() / 255 - MEAN) / STD


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5").eval()
    with torch.no_grad():  # spread the random network's outputs so that a wrong crop shows
        model.fc.weight *= 20
    return model


def _softmax(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(1)


def test_sizes_follow_the_papers_at_224():
    sizes = ProtocolSizes(224)
    assert sizes.base == 256  # AlexNet / ResNet: shorter side 256, crops of 224
    assert sizes.googlenet == (256, 288, 320, 352)  # GoogLeNet Sec. 7
    assert sizes.multiscale == (224, 256, 288)  # VGG Sec. 4.2: {S - 32, S, S + 32} at S = 256
    assert ProtocolSizes(28).base == 32 and ProtocolSizes(28).multiscale == (28, 32, 36)
    assert ProtocolSizes(28).googlenet == (32, 36, 40, 44)
    # AlexNet Sec. 4.1: its 227-pixel input (the paper's "224") is cut from "the central 256x256 patch"
    assert ProtocolSizes(227).base == 256 and ProtocolSizes(227).googlenet == (256, 288, 320, 352)


def _folder_bundle(crop: int) -> DataBundle:
    """A folder dataset's record (kind and crop size are all the test scales read)."""
    return DataBundle("folder:x", ["a", "b"], 3, (crop, crop), (0.5,) * 3, (0.2,) * 3, None, None, "folder")


def test_vgg_test_scales_follow_the_training_scales():
    """VGG Sec. 4.1-4.2: a fixed training scale S is tested at Q = S (Table 3) and {S-32, S, S+32} (Table 4); a
    jittered [S_min, S_max] at Q = 0.5 (S_min + S_max) (Table 3) and {S_min, 0.5 (S_min + S_max), S_max} (Table 4)."""
    jittered = training_sizes(_folder_bundle(224), 224, {"scale_jitter": [256, 512], "hflip": True})
    assert (jittered.base, jittered.multiscale) == (384, (256, 384, 512))  # Tables 3-4, S in [256; 512]
    fixed = training_sizes(_folder_bundle(224), 224, {"random_resized_crop": True, "hflip": True})
    assert (fixed.base, fixed.multiscale) == (256, (224, 256, 288))  # Tables 3-4, S = 256
    # built-in data: the jitter is in pixels of the stored image, which is then resized to S (here 2x)
    tensor = training_sizes(_bundle(size=32, channels=3), 64, {"scale_jitter": [32, 48]})
    assert (tensor.base, tensor.multiscale) == (80, (64, 80, 96))
    assert training_sizes(_bundle(size=28), None, {"scale_jitter": [28, 44]}).multiscale == (28, 36, 44)
    # AlexNet's recipe: scale_jitter [256, 256] (Sec. 2's 256 scale): a fixed S = 256, tested at {224, 256, 288}
    alexnet = training_sizes(_folder_bundle(227), 227, {"scale_jitter": [256, 256], "central_square": True})
    assert (alexnet.base, alexnet.multiscale) == (256, (224, 256, 288))
    with pytest.raises(ValueError, match="scale_jitter"):  # a damaged record says what is wrong
        training_sizes(_bundle(size=28), None, {"scale_jitter": "big"})


def test_runs_trained_at_their_own_size_are_cropped_from_their_training_canvas():
    """Digits trained at 28 pixels with shifts of up to 2: test scale 28 in a 2-pixel border (the 32-pixel canvas the
    shifts came from), not the 28-pixel image enlarged by 8/7; CIFAR's pad 4 likewise; AlexNet's 227 keeps 256."""
    digits = training_sizes(_bundle(size=28), None, {"translate": 2, "rotate": 10, "zoom": [0.9, 1.1]})
    assert (digits.base, digits.pad, digits.multiscale) == (28, 2, (24, 28, 32))
    cifar = training_sizes(_bundle(size=32, channels=3), None, None)  # the default policy: pad 4, flip
    assert (cifar.base, cifar.pad) == (32, 4)
    alexnet = training_sizes(_bundle(size=28), 227, {"translate": 2})  # upsampled to 227: a resize step
    assert (alexnet.base, alexnet.pad, alexnet.multiscale) == (256, 0, (224, 256, 288))
    assert training_sizes(_bundle(size=28), None, {"random_resized_crop": True}).base == 32  # no fixed scale


def test_10crop_of_a_digit_is_the_centre_and_the_largest_training_shifts(lenet):
    bundle = _bundle(n=3, size=28)
    black = (0 - MEAN) / STD  # the training shift fills with pixel 0
    canvas = F.pad(_normalised(bundle), (2, 2, 2, 2), value=black)  # 32 x 32: the image and its 2-pixel border
    crops = [canvas[..., :28, :28], canvas[..., :28, 4:], canvas[..., 4:, :28], canvas[..., 4:, 4:],
             canvas[..., 2:30, 2:30]]
    torch.testing.assert_close(crops[4], _normalised(bundle), rtol=0, atol=0)  # the centre crop is the image itself
    expected = torch.stack([_softmax(lenet, c) for c in crops]).mean(0)
    probs, _ = protocol_probs(lenet, bundle, "10crop", flip=False, augment={"translate": 2})
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)
    dense, _ = protocol_probs(lenet, bundle, "dense", flip=False, augment={"translate": 2})  # the whole canvas
    torch.testing.assert_close(dense, _softmax(lenet, canvas), rtol=0, atol=1e-6)


def test_10crop_is_the_average_of_the_ten_hand_cut_crops(lenet):
    bundle = _bundle(n=3, size=32)  # S = 28 gives R = 32: the stored images are the base scale, nothing resized
    x = _normalised(bundle)
    crops = [x[:, :, :28, :28], x[:, :, :28, 4:], x[:, :, 4:, :28], x[:, :, 4:, 4:], x[:, :, 2:30, 2:30]]
    crops += [c.flip(-1) for c in crops]
    expected = torch.stack([_softmax(lenet, c) for c in crops]).mean(0)
    probs, labels = protocol_probs(lenet, bundle, "10crop", input_size=28)
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)
    assert labels.tolist() == bundle.test.labels.tolist()
    unflipped = torch.stack([_softmax(lenet, c) for c in crops[:5]]).mean(0)
    torch.testing.assert_close(protocol_probs(lenet, bundle, "10crop", input_size=28, flip=False)[0], unflipped,
                               rtol=0, atol=1e-6)
    assert not torch.allclose(expected, unflipped, atol=1e-3)  # the reflections count


def test_10crop_of_a_non_square_image_cuts_the_central_square_first():
    img = torch.arange(3 * 32 * 40, dtype=torch.float32).view(3, 32, 40)
    square = img[:, :, 4:36]  # AlexNet 4.1: the central 256x256 patch, then its corners and centre
    views = ten_crop_views(img, 24)
    expected = [square[:, :24, :24], square[:, :24, 8:], square[:, 8:, :24], square[:, 8:, 8:], square[:, 4:28, 4:28]]
    expected += [v.flip(-1) for v in expected]
    torch.testing.assert_close(views, torch.stack(expected), rtol=0, atol=0)


def test_144crop_views_of_one_scale_are_googlenets_squares_and_crops():
    img = torch.arange(3 * 40 * 60, dtype=torch.float32).view(3, 40, 60)  # landscape: left, centre, right squares
    views = googlenet_views(img, 28)
    assert views.shape == (36, 3, 28, 28)
    for i, left in enumerate((0, 10, 20)):
        sq = img[:, :, left : left + 40]
        want = [sq[:, :28, :28], sq[:, :28, 12:], sq[:, 12:, :28], sq[:, 12:, 12:], sq[:, 6:34, 6:34]]
        torch.testing.assert_close(views[6 * i : 6 * i + 5], torch.stack(want), rtol=0, atol=0)
        whole = views[6 * i + 5]  # the square resized: a 40 -> 28 shrink of the same square
        assert whole.mean().sub(sq.mean()).abs() < 1.0
    torch.testing.assert_close(views[18:], views[:18].flip(-1), rtol=0, atol=0)
    portrait = googlenet_views(img.transpose(1, 2), 28)  # top, centre, bottom squares
    # the transposed image's top-right corner is the original's bottom-left
    torch.testing.assert_close(portrait[:5], views[[0, 2, 1, 3, 4]].transpose(2, 3), rtol=0, atol=0)


def record_inputs(model: nn.Module) -> list[tuple[int, ...]]:
    """Make ``model`` record the shape of every batch its layers are given (crops and whole images alike)."""
    shapes, forward_features = [], model.forward_features

    def recording(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":  # not the shape checks, which run on the meta device
            shapes.append(tuple(x.shape))
        return forward_features(x)

    model.forward_features = recording
    return shapes


@pytest.mark.parametrize("flip,per_image", [(True, 144), (False, 72)])
def test_144crop_gives_the_network_144_crops_per_image(lenet, flip, per_image):
    bundle = _bundle(n=3, size=28)
    model = cnnzoo.create_model("lenet5").eval()
    shapes = record_inputs(model)
    result = evaluate_protocols(model, bundle, "144crop", batch_size=100, flip=flip)["144crop"]
    assert sum(s[0] for s in shapes) == per_image * 3
    assert {s[1:] for s in shapes} == {(1, 28, 28)}
    assert result.views == per_image and result.count == 3


def _dense_by_hand(model, x: torch.Tensor, q: int) -> torch.Tensor:
    """VGG's dense evaluation of images resized to q: the score map averaged, softmax, with the reflection's."""
    if x.shape[-1] != q:
        x = F.interpolate(x, size=(q, q), mode="bilinear", align_corners=False, antialias=True)
    dense = to_dense(model)
    with torch.no_grad():
        return (dense(x).mean((2, 3)).softmax(1) + dense(x.flip(-1)).mean((2, 3)).softmax(1)) / 2


def test_dense_is_the_score_map_of_the_whole_image(lenet):
    bundle = _bundle(n=3, size=32)
    probs, _ = protocol_probs(lenet, bundle, "dense", input_size=28)  # R = 32: the stored 32x32 images, uncropped
    torch.testing.assert_close(probs, _dense_by_hand(lenet, _normalised(bundle), 32), rtol=0, atol=1e-6)


def test_multiscale_is_the_average_of_single_scale_runs(lenet):
    bundle = _bundle(n=3, size=32)
    x = _normalised(bundle)
    scales = (28, 32, 40)
    probs, _ = protocol_probs(lenet, bundle, "multiscale", input_size=28, scales=scales)
    by_hand = torch.stack([_dense_by_hand(lenet, x, q) for q in scales]).mean(0)
    torch.testing.assert_close(probs, by_hand, rtol=0, atol=1e-6)
    singles = [protocol_probs(lenet, bundle, "10crop+multiscale", input_size=28, scales=(q,))[0] for q in (32, 40)]
    both = protocol_probs(lenet, bundle, "10crop+multiscale", input_size=28, scales=(32, 40))[0]
    torch.testing.assert_close(both, torch.stack(singles).mean(0), rtol=0, atol=1e-6)
    # VGG Table 5's multi-crop & dense: the two softmax outputs averaged
    combined = protocol_probs(lenet, bundle, "dense+10crop+multiscale", input_size=28, scales=(32, 40))[0]
    torch.testing.assert_close(combined, (both + probs_at(lenet, bundle, (32, 40))) / 2, rtol=0, atol=1e-6)


def probs_at(model, bundle, scales):
    return protocol_probs(model, bundle, "multiscale", input_size=28, scales=scales)[0]


def _resized(x: torch.Tensor, q: int) -> torch.Tensor:
    """Square images resized to q x q, bilinear with antialiasing (as the loaders resize)."""
    return F.interpolate(x, size=(q, q), mode="bilinear", align_corners=False, antialias=True)


def _five(x: torch.Tensor, s: int) -> list[torch.Tensor]:
    q, c = x.shape[-1], (x.shape[-1] - s) // 2
    return [x[..., :s, :s], x[..., :s, q - s :], x[..., q - s :, :s], x[..., q - s :, q - s :],
            x[..., c : c + s, c : c + s]]


def _ten_by_hand(model, x: torch.Tensor, s: int = 28) -> torch.Tensor:
    crops = _five(x, s)
    return torch.stack([_softmax(model, c) for c in crops + [c.flip(-1) for c in crops]]).mean(0)


def test_10crop_resizes_images_not_already_at_the_base_scale(lenet):
    bundle = _bundle(n=3, size=40)  # S = 28, R = 32: AlexNet's "down-sampled to 256" step, here 40 -> 32
    probs, _ = protocol_probs(lenet, bundle, "10crop", input_size=28)
    torch.testing.assert_close(probs, _ten_by_hand(lenet, _resized(_normalised(bundle), 32)), rtol=0, atol=1e-6)


def test_10crop_multiscale_takes_the_crops_of_each_scale(lenet):
    bundle = _bundle(n=3, size=40)
    x = _normalised(bundle)
    probs, _ = protocol_probs(lenet, bundle, "10crop+multiscale", input_size=28, scales=(30, 36))
    by_hand = (_ten_by_hand(lenet, _resized(x, 30)) + _ten_by_hand(lenet, _resized(x, 36))) / 2
    torch.testing.assert_close(probs, by_hand, rtol=0, atol=1e-6)


def test_144crop_averages_googlenets_four_scales(lenet):
    """GoogLeNet Sec. 7 on square images (the three squares are the image): at each of the 4 scales (32, 36, 40, 44
    for S = 28: 256, 288, 320, 352 scaled), the 4 corners, the centre and the square resized to S, reflected."""
    bundle = _bundle(n=2, size=48)
    x = _normalised(bundle)
    per_scale = []
    for q in (32, 36, 40, 44):
        xq = _resized(x, q)
        views = _five(xq, 28) + [_resized(xq, 28)]
        per_scale.append(torch.stack([_softmax(lenet, v) for v in views + [v.flip(-1) for v in views]]).mean(0))
    probs, _ = protocol_probs(lenet, bundle, "144crop", input_size=28)
    torch.testing.assert_close(probs, torch.stack(per_scale).mean(0), rtol=0, atol=1e-6)


def test_50crop_views_are_vggs_5x5_grid_and_reflections():
    img = torch.arange(2 * 32 * 40, dtype=torch.float32).view(2, 32, 40)  # the whole image, not its central square
    views = grid_views(img, 24)
    assert views.shape == (50, 2, 24, 24)  # VGG Sec. 4.3: "50 crops per scale (5 x 5 regular grid with 2 flips)"
    ys, xs = (0, 2, 4, 6, 8), (0, 4, 8, 12, 16)  # 5 evenly spaced offsets over 32 - 24 and 40 - 24
    want = [img[:, y : y + 24, x : x + 24] for y in ys for x in xs]
    torch.testing.assert_close(views[:25], torch.stack(want), rtol=0, atol=0)
    torch.testing.assert_close(views[25:], views[:25].flip(-1), rtol=0, atol=0)
    assert grid_views(img, 24, flip=False).shape == (25, 2, 24, 24)


def _fifty_by_hand(model, x: torch.Tensor, s: int = 28) -> torch.Tensor:
    q = x.shape[-1]
    offsets = [round(i * (q - s) / 4) for i in range(5)]
    crops = [x[..., y : y + s, o : o + s] for y in offsets for o in offsets]
    return torch.stack([_softmax(model, c) for c in crops + [c.flip(-1) for c in crops]]).mean(0)


def test_vgg_table5_is_dense_and_50_crops_at_three_scales(lenet):
    bundle = _bundle(n=2, size=40)
    x = _normalised(bundle)
    scales = (32, 36, 40)
    single, _ = protocol_probs(lenet, bundle, "50crop", input_size=28)  # at the base scale R = 32
    torch.testing.assert_close(single, _fifty_by_hand(lenet, _resized(x, 32)), rtol=0, atol=1e-6)
    crops = torch.stack([_fifty_by_hand(lenet, _resized(x, q)) for q in scales]).mean(0)
    multi, _ = protocol_probs(lenet, bundle, "50crop+multiscale", input_size=28, scales=scales)
    torch.testing.assert_close(multi, crops, rtol=0, atol=1e-6)
    dense = torch.stack([_dense_by_hand(lenet, x, q) for q in scales]).mean(0)
    combined, _ = protocol_probs(lenet, bundle, "dense+50crop+multiscale", input_size=28, scales=scales)
    torch.testing.assert_close(combined, (crops + dense) / 2, rtol=0, atol=1e-6)  # "multi-crop & dense"
    model = cnnzoo.create_model("lenet5").eval()
    shapes = record_inputs(model)
    result = evaluate_protocols(model, bundle, "50crop+multiscale", input_size=28, scales=list(scales))
    assert result["50crop+multiscale"].views == 150  # "a total of 150 crops over 3 scales"
    assert {s[1:] for s in shapes} == {(1, 28, 28)}


def test_a_jittered_run_is_tested_at_its_jitter_range(lenet):
    """VGG Table 4: a run trained with S in [S_min, S_max] is tested at {S_min, (S_min + S_max) / 2, S_max}, not at
    {S-32, S, S+32} around the middle (here [28, 44]: 28, 36, 44, not 32, 36, 40)."""
    bundle = _bundle(n=2, size=28)
    augment = {"scale_jitter": [28, 44]}
    probs, _ = protocol_probs(lenet, bundle, "multiscale", augment=augment)
    by_hand = torch.stack([_dense_by_hand(lenet, _normalised(bundle), q) for q in (28, 36, 44)]).mean(0)
    torch.testing.assert_close(probs, by_hand, rtol=0, atol=1e-6)
    single, _ = protocol_probs(lenet, bundle, "dense", augment=augment)  # Table 3: Q = 0.5 (S_min + S_max)
    torch.testing.assert_close(single, _dense_by_hand(lenet, _normalised(bundle), 36), rtol=0, atol=1e-6)
    override, _ = protocol_probs(lenet, bundle, "multiscale", augment=augment, scales=(30, 40))  # scales= wins
    by_hand = torch.stack([_dense_by_hand(lenet, _normalised(bundle), q) for q in (30, 40)]).mean(0)
    torch.testing.assert_close(override, by_hand, rtol=0, atol=1e-6)


def test_center_is_the_runs_own_test_pipeline_for_built_in_data(lenet):
    bundle = _bundle(n=40, size=32, seed=1)  # S = 28: the loader resizes the whole 32x32 image
    plain = evaluate(lenet, make_loader(bundle, "test", batch_size=16, train=False, input_size=28), 10)
    center = evaluate_protocols(lenet, bundle, "center", input_size=28, batch_size=16)["center"]
    assert (center.top1, center.top5, center.count) == (plain.top1, plain.top5, plain.count)
    assert center.nll == pytest.approx(plain.loss, rel=1e-5)


def _folder(root, sizes) -> str:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, cls in enumerate(("cat", "dog")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i, (w, h) in enumerate(sizes):
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{c}{i}.png")
    return f"folder:{root}"


def test_folders_use_the_original_images(tmp_path):
    bundle = load_dataset(_folder(tmp_path, [(40, 52), (61, 44), (36, 36)]), image_size=28)
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", in_channels=3, num_classes=2).eval()
    plain = evaluate(model, make_loader(bundle, "test", batch_size=4, train=False, num_workers=0), 2)
    shapes = record_inputs(model)
    results = evaluate_protocols(model, bundle, "center,144crop,dense", batch_size=50)
    assert (results["center"].top1, results["center"].count) == (plain.top1, plain.count) == (plain.top1, 6)
    assert results["center"].nll == pytest.approx(plain.loss, rel=1e-5)
    assert results["144crop"].views == 144
    # dense: each whole image (2 per size), shorter side to R = 32, and its reflection; sizes as (H, W)
    rows = {}
    for shape in shapes:
        if shape[-2:] != (28, 28):
            rows[shape[-2:]] = rows.get(shape[-2:], 0) + shape[0]
    assert rows == {(42, 32): 4, (32, 44): 4, (32, 32): 4}  # 40x52 -> 32x41.6, 61x44 -> 44.4x32, 36x36 -> 32x32


def test_protocol_names_and_combinations():
    names = [(p.name, p.parts, p.multiscale) for p in parse_protocols("center, 10crop,dense+10crop+multiscale")]
    assert names == [("center", ("center",), False), ("10crop", ("10crop",), False),
                     ("dense+10crop+multiscale", ("dense", "10crop"), True)]
    assert parse_protocols(["multiscale"])[0].parts == ("dense",)  # VGG's multi-scale evaluation is dense


@pytest.mark.parametrize("spec,message", [
    ("5crop", r"unknown protocol '5crop'; valid: center, 10crop, 50crop, 144crop, dense, multiscale"),
    ("144crop+50crop+multiscale", "not with 144crop"),
    ("center+multiscale", "multiscale combines with dense and 10crop"),
    ("144crop+multiscale", "144crop has its own"),
    ("dense+dense", "names a part twice"),
    ("dense,dense", "listed twice"),
    ("", "unknown protocol"),
])
def test_bad_protocol_names_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_protocols(spec)


def test_protocols_that_cannot_apply_say_why(lenet):
    bundle = _bundle(n=2, size=32)
    with pytest.raises(ValueError, match=r"crops of 28 pixels .* resized to 24; .* every scale must be at least 28"):
        evaluate_protocols(lenet, bundle, "10crop+multiscale", input_size=28, scales=[24, 32])
    bundle = _bundle(n=2, size=28)  # trained at its own size with shifts of 2: a 4-pixel wider canvas at each scale
    with pytest.raises(ValueError, match=r"resized to 20 and framed by the run's 2-pixel translation border \(24 "
                                         r"pixels\); crops need at least 28 pixels: every scale must be at least 24"):
        evaluate_protocols(lenet, bundle, "50crop+multiscale", scales=[20, 32], augment={"translate": 2})
    with pytest.raises(ValueError, match="scales apply to the multiscale protocols"):
        evaluate_protocols(lenet, bundle, "dense", scales=[32])
    with pytest.raises(ValueError, match="positive integers"):
        evaluate_protocols(lenet, bundle, "multiscale", scales=[0])
    highway = cnnzoo.create_model("highway_fc_mnist")
    with pytest.raises(ValueError, match="protocol dense cannot apply: highway_fc_mnist has no spatial feature map"):
        evaluate_protocols(highway, bundle, "center,dense")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lenet5"
    assert main(["train", "lenet5", "--epochs", "1", "--limit-batches", "4", "--batch-size", "64",
                 "--run-dir", str(run), "--no-download", "--quiet"]) == 0
    return run


def test_cli_reports_the_protocols_side_by_side(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["eval", str(tiny_run), "--protocol", "center,10crop,multiscale", "--no-flip", "--format",
                 "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["protocols"]) == ["center", "10crop", "multiscale"]
    for r in out["protocols"].values():
        assert 0 <= r["top1"] <= r["top5"] <= 1 and r["count"] == plain["count"]
    assert out["protocols"]["center"]["top1"] == plain["top1"]  # center is the run's own test pipeline
    # mnist5k trains at its own 28 pixels, shifted by up to 2: Q = 28 in a 2-pixel border, VGG's {S-32, S, S+32}
    assert out["input_size"] == 28 and out["base_scale"] == 28 and out["border"] == 2
    assert out["multiscale"] == [24, 28, 32] and out["flip"] is False
    assert main(["eval", str(tiny_run), "--protocol", "center,dense", "--no-flip"]) == 0
    text = capsys.readouterr().out
    assert "training size S=28, test scale Q=28" in text and "2-pixel border" in text
    assert "\ncenter" in text and "\ndense" in text and "top-5" in text


@pytest.mark.slow  # trains a run
def test_cli_a_jittered_runs_scales(tmp_path, capsys):
    """The run's augmentation record sets the scales: VGG's scale jitter [28, 44] gives {28, 36, 44}; --scales
    still overrides."""
    run = tmp_path / "jitter"
    assert main(["train", "lenet5", "--epochs", "1", "--limit-batches", "1", "--batch-size", "16", "--run-dir",
                 str(run), "--set", "data.augment={scale_jitter: [28, 44]}", "--no-download", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--protocol", "dense,multiscale", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["base_scale"], out["multiscale"], out["scale_rule"]) == (36, [28, 36, 44], "jitter")
    assert main(["eval", str(run), "--protocol", "multiscale", "--scales", "30,40", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["multiscale"] == [30, 40]


def test_reflections_follow_the_runs_training_augmentation(tiny_run, capsys):
    """mnist5k trains without flips (a mirrored digit is another digit): its multi-view protocols default to none."""
    capsys.readouterr()
    assert main(["eval", str(tiny_run), "--protocol", "10crop", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["flip"] is False
    assert main(["eval", str(tiny_run), "--protocol", "10crop", "--flip", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["flip"] is True


def test_dense_scales_too_small_for_the_classifier_are_refused():
    effnet = cnnzoo.create_model("effnet")  # its fc reads a 4x4 map: images of 32 pixels and more
    bundle = _bundle(n=2, size=32, channels=3)
    with pytest.raises(ValueError, match=r"protocol multiscale: at scale 24 the last feature map of effnet is 3x3, "
                                         r"smaller than the 4x4 window"):
        evaluate_protocols(effnet, bundle, "multiscale", scales=[24, 32], augment={})  # no border
    with pytest.raises(ValueError, match=r"protocol multiscale: at scale 16 \(24 pixels with the run's 4-pixel "
                                         r"translation border\) the last feature map of effnet is 3x3"):
        evaluate_protocols(effnet, bundle, "multiscale", scales=[16, 32])  # CIFAR's default: padding 4
