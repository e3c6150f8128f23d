"""Picture helpers of `cnnzoo.explain.visual`: filter grids (AlexNet Fig. 3), feature maps, overlays, PNG files.

Expected pixels are worked out by hand in the comments.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cnnzoo
from cnnzoo.explain.visual import feature_grid, feature_maps, filter_grid, overlay, save_png, to_uint8_image


def _conv(weight):
    w = torch.tensor(weight, dtype=torch.float32)
    conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), bias=False)
    with torch.no_grad():
        conv.weight.copy_(w)
    return conv


def test_filter_grid_grey_kernels_hand_case():
    # kernel 0 [[0, 1], [2, 3]] -> min-max to 0-255: [[0, 85], [170, 255]]; kernel 1 [[-1, -1], [-1, 1]] ->
    # [[0, 0], [0, 255]]. Two kernels: one row of two, 1-pixel white (255) lines between and around: 4 x 7.
    model = nn.Sequential(nn.ReLU(), _conv([[[[0, 1], [2, 3]]], [[[-1, -1], [-1, 1]]]]), _conv([[[[5.0]]]]))
    grid = filter_grid(model)
    assert grid.dtype == np.uint8 and grid.shape == (4, 7, 3)
    expected = [[255] * 7,
                [255, 0, 85, 255, 0, 0, 255],
                [255, 170, 255, 255, 0, 255, 255],
                [255] * 7]
    for c in range(3):  # grey: the same in R, G and B
        assert grid[..., c].tolist() == expected


def test_filter_grid_rgb_mean_constant_and_scale():
    # RGB kernel 1x2: R [0, 4], G [1, 2], B [4, 0]; one min-max (0..4) over all three: R [0, 255],
    # G [63.75 -> 64, 127.5 -> 128], B [255, 0]
    rgb = filter_grid(nn.Sequential(_conv([[[[0, 4]], [[1, 2]], [[4, 0]]]])), padding=0)
    assert rgb.tolist() == [[[0, 64, 255], [255, 128, 0]]]
    # 4 input channels -> their mean [1, 2] -> [0, 255], grey
    four = filter_grid(nn.Sequential(_conv([[[[0, 8]], [[4, 0]], [[0, 0]], [[0, 0]]]])), padding=0)
    assert four[..., 0].tolist() == [[0, 255]] and (four[..., 0] == four[..., 2]).all()
    # a constant kernel is mid grey
    assert filter_grid(nn.Sequential(_conv([[[[3, 3]]]])), padding=0)[..., 0].tolist() == [[128, 128]]
    # scale 2: each kernel pixel a 2x2 block
    assert filter_grid(nn.Sequential(_conv([[[[0, 4]], [[1, 2]], [[4, 0]]]])), padding=0, scale=2)[:, :, 1].tolist() \
        == [[64, 64, 128, 128], [64, 64, 128, 128]]
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        filter_grid(nn.Sequential(nn.Linear(2, 2)))


def test_filter_grid_of_a_zoo_network():
    model = cnnzoo.create_model("lenet5")  # conv1: 6 kernels 1x5x5 -> 3 per row, 2 rows
    grid = filter_grid(model)
    assert grid.shape == (1 + 2 * 6, 1 + 3 * 6, 3)
    w = model.features[0].weight.detach()[4, 0]  # kernel 4: row 1, column 1 of the grid
    tile = grid[7:12, 7:12, 0].astype(np.float64)
    np.testing.assert_allclose(tile, np.round((w - w.min()).div(w.max() - w.min()).numpy() * 255))


def test_feature_maps_zoo_hooks_and_plain():
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5")
    x = torch.randn(1, 32, 32)
    maps = feature_maps(model, x)
    assert [n for n, _ in maps] == ["features.2", "features.5"]
    with torch.no_grad():
        torch.testing.assert_close(maps[0][1], model.features[:3](x[None])[0])
        torch.testing.assert_close(maps[1][1], model.features(x[None])[0])
    # no forward_intermediates: hooks on the feature_info modules
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3), nn.ReLU())
    seq.feature_info = [{"num_chs": 2, "reduction": 2, "module": "2"}, {"num_chs": 3, "reduction": 2, "module": "4"}]
    seq.train()
    got = feature_maps(seq, x[None, :, :12, :12])
    assert [(n, tuple(t.shape)) for n, t in got] == [("2", (2, 5, 5)), ("4", (3, 3, 3))]
    assert seq.training
    # neither: each convolution's output
    del seq.feature_info
    assert [n for n, _ in feature_maps(seq, x[:, :12, :12])] == ["0", "3"]
    with pytest.raises(ValueError, match="one preprocessed float image"):
        feature_maps(model, torch.randn(2, 1, 32, 32))


def test_feature_grid_hand_case():
    # map 0 [1, 2, 3] -> [0, 127.5 -> 128, 255]; map 1 constant 5 -> black; one row of two, white lines: 3 x 9
    maps = torch.tensor([[[1.0, 2, 3]], [[5.0, 5, 5]]])
    grid = feature_grid(maps)
    assert grid.dtype == np.uint8 and grid.tolist() == [[255] * 9,
                                                        [255, 0, 128, 255, 255, 0, 0, 0, 255],
                                                        [255] * 9]
    # one scale for all (1..5): map 0 -> [0, 63.75 -> 64, 127.5 -> 128], map 1 -> 255
    assert feature_grid(maps, per_map=False, padding=0).tolist() == [[0, 64, 128, 255, 255, 255]]
    assert feature_grid(torch.rand(10, 2, 2), max_maps=4).shape == (1 + 2 * 3, 1 + 2 * 3)  # 4 maps: 2 x 2


def test_overlay_hand_case():
    # jet's ends (matplotlib's _cm.py segment data): 0 -> (0, 0, 0.5), 1 -> (0.5, 0, 0); alpha 0.5:
    # pixel (100, 50, 200), heat 0: (50, 25, 100 + 63.75 = 163.75 -> 164)
    # pixel (10, 20, 30), heat 1: (5 + 63.75 = 68.75 -> 69, 10, 15)
    image = np.array([[[100, 50, 200], [10, 20, 30]]], dtype=np.uint8)
    out = overlay(image, np.array([[0.0, 1.0]]))
    assert out.dtype == np.uint8 and out.tolist() == [[[50, 25, 164], [69, 10, 15]]]
    # a grey image; alpha 0 keeps it, alpha 1 is the colormap (127.5 -> 128); out-of-range heat is clipped
    grey = np.array([[100, 10]], dtype=np.uint8)
    assert overlay(grey, torch.tensor([[0.0, 1.0]]), alpha=0.0).tolist() == [[[100] * 3, [10] * 3]]
    assert overlay(grey, torch.tensor([[-3.0, 7.0]]), alpha=1.0).tolist() == [[[0, 0, 128], [128, 0, 0]]]
    # a smaller heat map is resized to the image
    assert overlay(np.zeros((4, 4, 3), np.uint8), torch.zeros(2, 2), alpha=1.0)[3, 3].tolist() == [0, 0, 128]
    with pytest.raises(ValueError, match="unknown colormap"):
        overlay(grey, np.zeros((1, 2)), cmap="nope")
    with pytest.raises(ValueError, match="uint8"):
        overlay(grey.astype(np.float32), np.zeros((1, 2)))


def test_to_uint8_image_round_trip():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(
        std).view(3, 1, 1)
    assert np.array_equal(to_uint8_image(x, mean, std), image)
    assert np.array_equal(to_uint8_image(x[None], mean, std), image)
    # one channel, scalar statistics: grey in all three; values past the range are clipped
    g = torch.tensor([[[0.0, 1.0, 5.0]]])  # * 0.5 + 0.5 -> 0.5, 1.0, 3.0 -> 127.5 -> 128, 255, 255
    assert to_uint8_image(g, 0.5, 0.5).tolist() == [[[128] * 3, [255] * 3, [255] * 3]]
    with pytest.raises(ValueError, match="2 values for an image of 3 channels"):
        to_uint8_image(x, (0.5, 0.5), std)


def test_save_png_atomic(tmp_path):
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = save_png(a, tmp_path / "sub" / "x.png")
    assert path == tmp_path / "sub" / "x.png"
    assert np.array_equal(np.asarray(Image.open(path)), a)
    save_png(a[..., 0], path)  # replaced in one step; no temporary file left beside it
    assert np.array_equal(np.asarray(Image.open(path)), a[..., 0])
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png(a.astype(np.float32), path)
    assert np.array_equal(np.asarray(Image.open(path)), a[..., 0])  # a refused write leaves the old file
