"""The papers' test-time protocols (`cnnzoo.evaluate.evaluate_protocols`, `cnnzoo eval --protocol`): each one's
views built by hand with tensor slicing, independently of the code, on small constructed images."""

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
from cnnzoo.evaluate.protocols import ProtocolSizes, googlenet_views, ten_crop_views

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
    ("5crop", r"unknown protocol '5crop'; valid: center, 10crop, 144crop, dense, multiscale"),
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
    bundle = _bundle(n=2, size=28)
    with pytest.raises(ValueError, match=r"crops of 28 pixels .* resized to 24; every scale must be at least 28"):
        evaluate_protocols(lenet, bundle, "10crop+multiscale", scales=[24, 32])
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
    assert out["input_size"] == 28 and out["multiscale"] == [28, 32, 36] and out["flip"] is False
    assert main(["eval", str(tiny_run), "--protocol", "center,dense", "--no-flip"]) == 0
    text = capsys.readouterr().out
    assert "training size S=28" in text and "\ncenter" in text and "\ndense" in text and "top-5" in text


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
        evaluate_protocols(effnet, bundle, "multiscale", scales=[24, 32])
