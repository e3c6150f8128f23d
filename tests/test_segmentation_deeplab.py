"""DeepLab v1, v2, v3 as their papers (cnnzoo.segmentation.models.deeplab) and the fully connected CRF.

Expected values come from the papers: parameter counts summed by hand from v1's Table 2 layer shapes (20.5M /
134.3M) and the ResNet paper's Table 1, ASPP rates (v2 Sec. 3.2 ASPP-L 6/12/18/24; v3 Sec. 3.3 6/12/18 at output
stride 16, doubled at 8), multi-grid (v3 Sec. 3.2: block4 at 2 * (1, 2, 4) = (2, 4, 8) at output stride 16).
"""

import sys

import pytest
import torch

from cnnzoo.segmentation import create_segmenter, get_digits_recipe

K = 21  # PASCAL VOC classes


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ counts by hand
VGG16_CONVS = sum(9 * i * o + o for i, o in [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                                              (256, 256), (256, 512), (512, 512), (512, 512), (512, 512),
                                              (512, 512), (512, 512)])


def resnet_without_fc(layers=(3, 4, 23, 3)):
    """ResNet paper Table 1 (101 layers: (3, 4, 23, 3); 50: (3, 4, 6, 3)): conv1 7x7 64 + BN; bottlenecks [1x1 w,
    3x3 w, 1x1 4w] per unit, BN after each conv, a 1x1 projection + BN on each stage's first unit (torchvision's
    layout, no conv biases)."""
    total = 7 * 7 * 3 * 64 + 2 * 64
    chs = 64
    for width, units in zip((64, 128, 256, 512), layers):
        for u in range(units):
            total += chs * width + 9 * width * width + width * 4 * width + 2 * (width + width + 4 * width)
            if u == 0:
                total += chs * 4 * width + 2 * 4 * width
            chs = 4 * width
    return total


def test_hand_counts_match_the_papers_rounded_figures():
    assert VGG16_CONVS == 14_714_688
    largefov = VGG16_CONVS + (9 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * K + K)
    plain = VGG16_CONVS + (49 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * K + K)
    assert largefov == 20_505_429 and round(largefov / 1e6, 1) == 20.5  # v1 Table 2: DeepLab-CRF-LargeFOV 20.5M
    assert plain == 134_346_581 and round(plain / 1e6, 1) == 134.3  # v1 Table 2: DeepLab-CRF-7x7 134.3M
    assert resnet_without_fc() == 44_549_160 - (2048 * 1000 + 1000)  # torchvision's resnet101 less its fc
    assert resnet_without_fc((3, 4, 6, 3)) == 23_508_032  # resnet50's 25,557,032 less its fc


def test_largefov_count():
    largefov = VGG16_CONVS + (9 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * K + K)
    assert n_params(create_segmenter("deeplabv1_largefov_vgg16")) == largefov


@pytest.mark.slow
def test_plain_deeplab_v1_count():  # builds 134M parameters (~5 s)
    plain = VGG16_CONVS + (49 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * K + K)
    assert n_params(create_segmenter("deeplabv1_vgg16")) == plain


@pytest.mark.slow
def test_v2_counts():  # ResNet-101 (~5 s)
    branch = (9 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * K + K)  # fc6 (rate r) - fc7 - fc8
    assert n_params(create_segmenter("deeplabv2_vgg16")) == VGG16_CONVS + 4 * branch
    aspp_l = 4 * (9 * 2048 * K + K)  # one 3x3 conv per rate, 2048 -> classes
    assert n_params(create_segmenter("deeplabv2_resnet101")) == resnet_without_fc() + aspp_l


@pytest.mark.slow
def test_v3_paper_count_and_no_torchvision_extras():  # ResNet-101 twice (~6 s)
    aspp = 2 * (2048 * 256 + 2 * 256) + 3 * (9 * 2048 * 256 + 2 * 256) + (5 * 256 * 256 + 2 * 256)
    net = create_segmenter("deeplabv3_resnet101_paper")
    assert n_params(net) == resnet_without_fc() + aspp + (256 * K + K)
    assert not any("aux" in k for k in net.state_dict())
    # torchvision's deeplabv3_resnet101 has the 3x3 conv + BN and the aux FCNHead on top: its count minus ours
    extra_3x3 = 9 * 256 * 256 + 2 * 256
    aux = 9 * 1024 * 256 + 2 * 256 + 256 * K + K
    assert n_params(create_segmenter("deeplabv3_resnet101")) - n_params(net) == extra_3x3 + aux


def test_counts_on_a_resnet50_backbone():
    r50 = resnet_without_fc((3, 4, 6, 3))
    v2 = create_segmenter("deeplabv2_resnet101", backbone="resnet50")
    assert n_params(v2) == r50 + 4 * (9 * 2048 * K + K)
    aspp = 2 * (2048 * 256 + 2 * 256) + 3 * (9 * 2048 * 256 + 2 * 256) + (5 * 256 * 256 + 2 * 256)
    v3 = create_segmenter("deeplabv3_resnet101_paper", backbone="resnet50")
    assert n_params(v3) == r50 + aspp + 256 * K + K


# ------------------------------------------------------------------ batch_norm (digits-recipe option, not the papers)
VGG16_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]  # the 13 convs' outputs (config D)


def test_batch_norm_adds_two_parameters_per_channel():
    # vgg16_bn's layout: each conv keeps its bias and gains a BN with 2 * C parameters (scale, shift); the running
    # statistics are buffers. Independent check: torchvision's published vgg16_bn 138,365,992 - vgg16 138,357,544.
    bn = 2 * sum(VGG16_CHANNELS)
    assert bn == 138_365_992 - 138_357_544 == 8_448
    largefov = VGG16_CONVS + (9 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * K + K)
    net = create_segmenter("deeplabv1_largefov_vgg16", batch_norm=True)
    assert n_params(net) == largefov + bn
    bns = [m for m in net.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == VGG16_CHANNELS
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in (net.fc6, net.fc7, net.fc8))  # fc6-fc8 as the paper
    # at 1/8 width (the digits recipe's): every width rounded, 2 * C per conv again
    small = [max(1, round(c / 8)) for c in VGG16_CHANNELS]
    v2 = create_segmenter("deeplabv2_vgg16", width_mult=0.125, num_classes=11, in_channels=1)
    v2_bn = create_segmenter("deeplabv2_vgg16", width_mult=0.125, num_classes=11, in_channels=1, batch_norm=True)
    assert n_params(v2_bn) - n_params(v2) == 2 * sum(small)


def test_default_stays_batch_norm_free():
    for name in ("deeplabv1_vgg16", "deeplabv1_largefov_vgg16", "deeplabv2_vgg16"):
        net = create_segmenter(name, width_mult=0.125)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()), name
        # the zoo's vgg16 features indices: conv at 0, 2, 5, ..., 28 (conv - ReLU, pools between)
        convs = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)]
        assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], name
    bn = create_segmenter("deeplabv1_largefov_vgg16", width_mult=0.125, batch_norm=True)
    convs = [i for i, m in enumerate(bn.features) if isinstance(m, torch.nn.Conv2d)]
    assert convs == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]  # vgg16_bn's indices (conv - BN - ReLU)
    with pytest.raises(ValueError, match="batch_norm must be true"):
        create_segmenter("deeplabv1_largefov_vgg16", width_mult=0.125, batch_norm=1)


@pytest.mark.slow
def test_batch_norm_loads_a_vgg16_bn_backbone():  # a full vgg16_bn (138M parameters, ~3 s)
    from cnnzoo import create_model

    torch.manual_seed(0)
    vgg = create_model("vgg16_bn")
    for m in vgg.modules():  # running statistics that differ from the initial ones
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    net = create_segmenter("deeplabv1_largefov_vgg16", batch_norm=True)
    net.load_backbone(vgg)
    torch.testing.assert_close(net.features[40].weight, vgg.features[40].weight)  # conv5_3
    torch.testing.assert_close(net.features[41].running_mean, vgg.features[41].running_mean)
    with pytest.raises(ValueError, match="use a vgg16 at width_mult=1.0"):
        create_segmenter("deeplabv1_largefov_vgg16").load_backbone(vgg)  # a BN-free net refuses vgg16_bn


# ------------------------------------------------------------------ layouts: rates, strides, shapes
def test_v1_layout_is_the_released_largefov():
    net = create_segmenter("deeplabv1_largefov_vgg16", width_mult=0.125)
    pools = [m for m in net.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)] * 2
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs] == [1] * 10 + [2] * 3  # conv5_1..3 at rate 2
    assert net.fc6.kernel_size == (3, 3) and net.fc6.dilation == (12, 12) and net.fc6.padding == (12, 12)
    assert isinstance(net.pool5a, torch.nn.AvgPool2d)
    plain = create_segmenter("deeplabv1_vgg16", width_mult=0.125)
    assert plain.fc6.kernel_size == (7, 7) and plain.fc6.dilation == (4, 4) and plain.fc6.padding == (12, 12)


def test_v2_aspp_rates_and_uniform_dilation():
    net = create_segmenter("deeplabv2_resnet101", backbone="resnet50")
    assert [(c.kernel_size, c.dilation, c.padding) for c in net.aspp] == [((3, 3), (r, r), (r, r))
                                                                          for r in (6, 12, 18, 24)]
    assert [u.conv2.dilation for u in net.backbone.layer3] == [(2, 2)] * 6  # res4a..f, the first unit too
    assert [u.conv2.dilation for u in net.backbone.layer4] == [(4, 4)] * 3
    vgg = create_segmenter("deeplabv2_vgg16", width_mult=0.125)
    assert [b[0].dilation for b in vgg.aspp] == [(r, r) for r in (6, 12, 18, 24)]
    assert all(b[-1].out_channels == K for b in vgg.aspp)


@pytest.mark.parametrize("os_, rates, grid", [(16, (6, 12, 18), (2, 4, 8)), (8, (12, 24, 36), (4, 8, 16))])
def test_v3_rates_and_multi_grid(os_, rates, grid):
    net = create_segmenter("deeplabv3_resnet101_paper", backbone="resnet50", output_stride=os_)
    assert [net.aspp.convs[i][0].dilation for i in (1, 2, 3)] == [(r, r) for r in rates]
    assert net.aspp.convs[0][0].kernel_size == (1, 1)
    assert [(u.conv2.dilation, u.conv2.padding) for u in net.backbone.layer4] == [((g, g), (g, g)) for g in grid]
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules())  # the paper has no dropout


@pytest.mark.parametrize("name, options, stride", [
    ("deeplabv1_largefov_vgg16", {"width_mult": 0.125}, 8),
    ("deeplabv1_vgg16", {"width_mult": 0.125}, 8),
    ("deeplabv2_vgg16", {"width_mult": 0.125}, 8),
    ("deeplabv2_resnet101", {"backbone": "resnet18"}, 8),
    ("deeplabv3_resnet101_paper", {"backbone": "resnet18", "multi_grid": [1, 2]}, 16),
    ("deeplabv3_resnet101_paper", {"backbone": "resnet18", "multi_grid": [1, 2], "output_stride": 8}, 8),
])
def test_output_stride_and_shapes(name, options, stride):
    net = create_segmenter(name, num_classes=5, in_channels=1, **options).eval()
    x = torch.randn(2, 1, 65, 65)  # 8k + 1 pixels: score i sits on pixel stride * i
    with torch.no_grad():
        scores, out = net.score_map(x), net(x)
    assert scores.shape == (2, 5, 64 // stride + 1, 64 // stride + 1)
    assert out.shape == (2, 5, 65, 65)
    # align_corners=True: the upsampled map equals the score map on the stride grid
    torch.testing.assert_close(out[..., ::stride, ::stride], scores, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 50, 37)).shape == (1, 5, 50, 37)


# ------------------------------------------------------------------ errors
def test_input_and_option_errors():
    net = create_segmenter("deeplabv1_largefov_vgg16", width_mult=0.125, in_channels=1)
    with pytest.raises(ValueError, match="in_channels=3"):
        net(torch.randn(1, 3, 33, 33))
    with pytest.raises(ValueError, match="4-D"):
        net(torch.randn(1, 33, 33))
    with pytest.raises(ValueError, match="output_stride must be 16 or 8"):
        create_segmenter("deeplabv3_resnet101_paper", backbone="resnet18", output_stride=32)
    with pytest.raises(ValueError, match="dilated variant.*valid: .*resnet101"):
        create_segmenter("deeplabv2_resnet101", backbone="vgg16")
    with pytest.raises(ValueError, match="multi_grid .*last stage.*got \\(1, 2, 4\\)"):
        create_segmenter("deeplabv3_resnet101_paper", backbone="resnet18")  # 2 units in resnet18's layer4
    with pytest.raises(ValueError, match="fc6_kernel must be odd"):
        create_segmenter("deeplabv1_vgg16", fc6_kernel=4, width_mult=0.125)
    with pytest.raises(ValueError, match="atrous_rates"):
        create_segmenter("deeplabv2_resnet101", backbone="resnet18", atrous_rates=[6, 0])
    with pytest.raises(ValueError, match="backbone_options may not set output_stride"):
        create_segmenter("deeplabv2_resnet101", backbone="resnet18", backbone_options={"output_stride": 16})


def test_recipes_are_registered_and_build():
    for name in ("deeplabv1_vgg16", "deeplabv1_largefov_vgg16", "deeplabv2_vgg16", "deeplabv2_resnet101",
                 "deeplabv3_resnet101_paper"):
        recipe = get_digits_recipe(name)
        net = create_segmenter(name, in_channels=1, num_classes=11, **recipe["options"]).eval()
        with torch.no_grad():
            assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 11, 64, 64)


@pytest.mark.slow
def test_largefov_load_backbone_decimates_fc6_fc7():  # a full VGG-16 (138M parameters)
    from cnnzoo import create_model

    torch.manual_seed(0)
    vgg = create_model("vgg16")
    net = create_segmenter("deeplabv1_largefov_vgg16")
    net.load_backbone(vgg)
    fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
    w6 = fc6.weight.reshape(4096, 512, 7, 7)  # Sec. 3.1: fc6 reads pool5's 7x7x512 map
    idx = torch.tensor([0, 3, 6])
    torch.testing.assert_close(net.fc6.weight, w6[::4][:, :, idx][:, :, :, idx])
    torch.testing.assert_close(net.fc6.bias, fc6.bias[::4])
    torch.testing.assert_close(net.fc7.weight[:, :, 0, 0], fc7.weight[::4, ::4])
    torch.testing.assert_close(net.features[28].weight, vgg.features[28].weight)


# ------------------------------------------------------------------ CRF
def test_crf_missing_library_gives_the_pip_name(monkeypatch):
    from cnnzoo.segmentation import crf

    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)  # import fails as when not installed
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        crf.dense_crf(torch.zeros(4, 4, dtype=torch.uint8), torch.full((2, 4, 4), 0.5))


def test_crf_input_errors():
    from cnnzoo.segmentation.crf import dense_crf

    with pytest.raises(ValueError, match="softmax"):
        dense_crf(torch.zeros(4, 4, dtype=torch.uint8), torch.randn(2, 4, 4) * 5)
    with pytest.raises(ValueError, match="image must be"):
        dense_crf(torch.zeros(5, 4, dtype=torch.uint8), torch.full((2, 4, 4), 0.5))


def test_crf_relabels_a_noisy_pixel_inside_a_uniform_region():
    pytest.importorskip("pydensecrf.densecrf")
    from cnnzoo.segmentation.crf import dense_crf

    # hand case: dark left half confidently class 0; bright right half weakly class 1 (0.55) except one pixel the
    # network calls class 0 (0.8). Same colour, near neighbours: the bilateral and smoothness kernels pull it to 1,
    # and the colour edge keeps the halves apart.
    img = torch.zeros(20, 20, dtype=torch.uint8)
    img[:, 10:] = 200
    p = torch.empty(2, 20, 20)
    p[0, :, :10], p[1, :, :10] = 0.9, 0.1
    p[0, :, 10:], p[1, :, 10:] = 0.45, 0.55
    p[:, 5, 15] = torch.tensor([0.8, 0.2])
    assert p.argmax(0)[5, 15] == 0
    q = dense_crf(img, p)
    assert q.shape == (2, 20, 20)
    torch.testing.assert_close(q.sum(0), torch.ones(20, 20), rtol=1e-4, atol=1e-4)
    labels = q.argmax(0)
    assert labels[5, 15] == 1
    assert (labels[:, :10] == 0).all() and (labels[:, 10:] == 1).all()
