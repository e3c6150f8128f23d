"""FCN-32s/16s/8s on VGG-16 (Long, Shelhamer, Darrell 2015; the authors' reference Caffe nets): the parameter counts
derived by hand, the crop offsets derived from the layers' coordinate maps, output size = input size, the bilinear
upsampling on hand cases, skip fusion, the at-once scaling, and fc6/fc7 converted from a classification VGG."""

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.registry import UnknownOptionError
from cnnzoo.segmentation.models.fcn import (
    FCN8s,
    FCN16s,
    FCN32s,
    bilinear_kernel,
    bilinear_upsampling,
    fc_to_conv,
    from_classifier,
)
from cnnzoo.segmentation.registry import create_segmenter, get_segmenter_card, list_segmenters

NAMES = ("fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16")

# ------------------------------------------------------------------------------------------- counts, by hand
# The layer table (reference nets voc-fcn32s/16s/8s, K = 21 PASCAL classes; conv weights + biases):
#   VGG-16 conv1_1 ... conv5_3 (configuration D):                                       14,714,688
#     = (3*64 + 64*64)*9 + 2*64 + (64*128 + 128*128)*9 + 2*128 + (128*256 + 2*256*256)*9 + 3*256
#       + (256*512 + 2*512*512)*9 + 3*512 + 3*512*512*9 + 3*512
#   fc6 as a 7x7 conv, 512 -> 4096:   4096*512*49 + 4096 = 102,760,448 + 4,096            = 102,764,544
#   fc7 as a 1x1 conv, 4096 -> 4096:  4096*4096 + 4096   = 16,777,216 + 4,096             =  16,781,312
#   score_fr 1x1, 4096 -> K:          4096*21 + 21                                        =      86,037
#   score_pool4 1x1, 512 -> K:        512*21 + 21                                         =      10,773
#   score_pool3 1x1, 256 -> K:        256*21 + 21                                         =       5,397
#   transposed convs K -> K, no bias (bias_term=False in the reference nets), k x k:
#     upscore 64x64 (32s): 21*21*4096 = 1,806,336;  upscore16 32x32 (16s): 21*21*1024 = 451,584
#     upscore2 / upscore_pool4 4x4: 21*21*16 = 7,056 each;  upscore8 16x16 (8s): 21*21*256 = 112,896
VGG16_CONVS = (3 * 64 + 64 * 64) * 9 + 2 * 64 + (64 * 128 + 128 * 128) * 9 + 2 * 128 \
    + (128 * 256 + 2 * 256 * 256) * 9 + 3 * 256 + (256 * 512 + 2 * 512 * 512) * 9 + 3 * 512 + 3 * 512 * 512 * 9 + 3 * 512
TRUNK = 14_714_688 + 102_764_544 + 16_781_312 + 86_037  # convs, fc6, fc7, score_fr = 134,346,581
HAND = {  # (all parameters, trained ones: the reference nets fix every upsampling, lr_mult 0)
    "fcn32s_vgg16": (TRUNK + 1_806_336, TRUNK),  # 136,152,917 / 134,346,581
    "fcn16s_vgg16": (TRUNK + 10_773 + 7_056 + 451_584, TRUNK + 10_773),  # 134,815,994 / 134,357,354
    "fcn8s_vgg16": (TRUNK + 10_773 + 5_397 + 2 * 7_056 + 112_896, TRUNK + 10_773 + 5_397),  # 134,489,759 / 134,362,751
}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_by_hand(name):
    assert VGG16_CONVS == 14_714_688 and TRUNK == 134_346_581
    with torch.device("meta"):
        net = create_segmenter(name)
        learned = create_segmenter(name, learn_upsampling=True)
    total, trained = HAND[name]
    assert sum(p.numel() for p in net.parameters()) == total
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == trained
    assert sum(p.numel() for p in learned.parameters() if p.requires_grad) == total
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert ups and all(m.bias is None for m in ups)


def test_published_totals_written_out():
    # the same sums as literals, so a slip in HAND's arithmetic shows
    assert [HAND[n][0] for n in NAMES] == [136_152_917, 134_815_994, 134_489_759]


def test_features_are_the_zoo_vgg16_with_the_reference_padding_and_ceil_pooling():
    with torch.device("meta"):
        fcn = create_segmenter("fcn8s_vgg16")
        vgg = create_model("vgg16")
    mine = {k: tuple(v.shape) for k, v in fcn.features.state_dict().items()}
    assert mine == {k: tuple(v.shape) for k, v in vgg.features.state_dict().items()}  # its weights load
    convs = [m for m in fcn.features if isinstance(m, nn.Conv2d)]
    assert convs[0].padding == (100, 100) and all(c.padding == (1, 1) for c in convs[1:])  # voc-fcn*: pad=100
    pools = [m for m in fcn.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.ceil_mode for p in pools)  # Caffe's pooling rounds up
    assert (fcn.fc6.kernel_size, fcn.fc6.out_channels, fcn.fc7.kernel_size, fcn.fc7.out_channels) == \
        ((7, 7), 4096, (1, 1), 4096)


# The batch_norm option (a deviation for from-scratch training; torchvision's vgg16_bn layout: conv with its bias,
# BN, ReLU): each of the 13 convolutions gains a BN with a learned scale and shift, 2 parameters per output channel
# (running mean/variance are buffers), so every count grows by 2 * (2*64 + 2*128 + 3*256 + 6*512) = 2 * 4,224 = 8,448.
BN_EXTRA = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)


@pytest.mark.parametrize("name", NAMES)
def test_batch_norm_adds_two_parameters_per_conv_channel_by_hand(name):
    assert BN_EXTRA == 8_448
    with torch.device("meta"):
        net = create_segmenter(name, batch_norm=True)
    total, trained = HAND[name]
    assert sum(p.numel() for p in net.parameters()) == total + BN_EXTRA
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == trained + BN_EXTRA
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [m.num_features for m in bns] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(m.bias is not None for m in net.features if isinstance(m, nn.Conv2d))  # as torchvision's vgg16_bn


def test_batch_norm_features_are_the_zoo_vgg16_bn_and_the_default_has_none():
    with torch.device("meta"):
        fcn = create_segmenter("fcn8s_vgg16", batch_norm=True)
        plain = create_segmenter("fcn8s_vgg16")
        vgg = create_model("vgg16_bn")
    mine = {k: tuple(v.shape) for k, v in fcn.features.state_dict().items()}
    assert mine == {k: tuple(v.shape) for k, v in vgg.features.state_dict().items()}  # vgg16_bn weights load
    kinds = [type(m).__name__ for m in fcn.features[:7]]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in (fcn.fc6, fcn.fc7))  # vgg16_bn's classifier has none
    x = torch.randn(2, 1, 37, 37)
    net = create_segmenter("fcn8s_vgg16", batch_norm=True, width_mult=1 / 16, in_channels=1, num_classes=3)
    assert net(x).shape == net.eval()(x).shape == (2, 3, 37, 37)
    with pytest.raises(ValueError, match="batch_norm"):
        create_segmenter("fcn8s_vgg16", batch_norm="yes")


@pytest.mark.slow
def test_batch_norm_loads_a_vgg16_bn_classifier():
    vgg = create_model("vgg16_bn").eval()
    fcn = from_classifier(vgg, "fcn32s_vgg16", batch_norm=True)
    for k, v in vgg.features.state_dict().items():
        assert torch.equal(fcn.features.state_dict()[k], v)
    assert torch.equal(fcn.fc7.weight[..., 0, 0], vgg.classifier[3].weight)


# ------------------------------------------------------------------------------------------ crops and sizes
def _offsets_from_coordinate_maps():
    """Caffe's coord_map, by hand: a layer maps its output index i to input coordinate a*i + b, with (a, b) =
    (s, (k - 1)/2 - p) for a conv or pool, and (1/s, -((k - 1)/2 - p)/s) for a transposed conv; compose to the
    image. Returns the crop offsets the reference nets' crop layers compute."""
    def compose(chain):  # chain: layers from the image upwards; returns (a, b) with x_image = a*i + b
        a, b = 1.0, 0.0
        for kind, k, s, p in chain:
            la, lb = (s, (k - 1) / 2 - p) if kind == "conv" else (1 / s, -((k - 1) / 2 - p) / s)
            a, b = a * la, a * lb + b
        return a, b

    conv = [("conv", 3, 1, 100), ("conv", 3, 1, 1)]
    def block(n):  # n 3x3 convs (pad 1), then a 2x2/2 pool
        return [("conv", 3, 1, 1)] * n + [("conv", 2, 2, 0)]

    pool3 = conv + [("conv", 2, 2, 0)] + block(2) + block(3)
    pool4 = pool3 + block(3)
    score_fr = pool4 + block(3) + [("conv", 7, 1, 0), ("conv", 1, 1, 0), ("conv", 1, 1, 0)]
    up2 = score_fr + [("deconv", 4, 2, 0)]
    up_pool4 = up2 + [("deconv", 4, 2, 0)]

    def crop(big, ref):  # the offset c with big(i + c) == ref(i)
        (a1, b1), (a2, b2) = compose(big), compose(ref)
        assert a1 == a2
        c = (b2 - b1) / a1
        assert c == int(c)
        return int(c)

    image = []
    return {
        "fcn32s": {"score": -crop(image, score_fr + [("deconv", 64, 32, 0)])},
        "fcn16s": {"score_pool4": crop(pool4, up2), "score": -crop(image, up2 + [("deconv", 32, 16, 0)])},
        "fcn8s": {"score_pool4": crop(pool4, up2), "score_pool3": crop(pool3, up_pool4),
                  "score": -crop(image, up_pool4 + [("deconv", 16, 8, 0)])},
    }


def test_crop_offsets_follow_the_coordinate_maps():
    derived = _offsets_from_coordinate_maps()
    assert derived == {"fcn32s": {"score": 19}, "fcn16s": {"score_pool4": 5, "score": 27},
                       "fcn8s": {"score_pool4": 5, "score_pool3": 9, "score": 31}}  # the reference nets' offsets
    assert FCN32s.crop_offsets == derived["fcn32s"]
    assert FCN16s.crop_offsets == derived["fcn16s"]
    assert FCN8s.crop_offsets == derived["fcn8s"]


def test_fcn8s_forward_is_the_skip_sum_with_those_crops():
    torch.manual_seed(0)
    net = create_segmenter("fcn8s_vgg16", width_mult=1 / 16, num_classes=3, in_channels=1).eval()
    for conv in (net.score_fr, net.score_pool4, net.score_pool3):  # zero at init (Sec. 4.3): make them count
        nn.init.normal_(conv.weight, 0, 0.5)
        nn.init.normal_(conv.bias, 0, 0.5)
    x = torch.randn(2, 1, 45, 38)
    f = net.features
    pool3 = f[:17](x)
    pool4 = f[17:24](pool3)
    score = net.score_fr(torch.relu(net.fc7(torch.relu(net.fc6(f[24:](pool4))))))
    up = net.upscore2(score)
    h, w = up.shape[-2:]
    fuse = up + net.score_pool4(pool4)[..., 5 : 5 + h, 5 : 5 + w]  # crop 5, sum
    up = net.upscore_pool4(fuse)
    h, w = up.shape[-2:]
    fuse = up + net.score_pool3(pool3)[..., 9 : 9 + h, 9 : 9 + w]  # crop 9, sum
    want = net.upscore8(fuse)[..., 31 : 31 + 45, 31 : 31 + 38]  # crop 31 to the image
    assert torch.allclose(net(x), want, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_output_has_the_input_size(name):
    with torch.device("meta"):  # full width: shapes only
        net = create_segmenter(name)
        for h, w in ((1, 1), (64, 64), (97, 97), (224, 224), (97, 130), (500, 375)):
            assert tuple(net(torch.empty(1, 3, h, w)).shape) == (1, 21, h, w)
            assert net.output_size(h) == h
    small = create_segmenter(name, width_mult=1 / 16, num_classes=11, in_channels=1)
    for h, w in ((64, 64), (97, 97), (33, 70)):
        assert small(torch.randn(1, 1, h, w)).shape == (1, 11, h, w)
    with pytest.raises(ValueError, match="built for 1 input channel"):
        small(torch.randn(1, 3, 64, 64))


# ----------------------------------------------------------------------------------------- bilinear upsampling
def test_bilinear_kernel_hand_cases():
    t = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(bilinear_kernel(4), torch.outer(t, t))  # factor 2, centre 1.5
    assert torch.allclose(bilinear_kernel(3), torch.outer(*[torch.tensor([0.5, 1.0, 0.5])] * 2))  # odd: centre 1
    t16 = torch.tensor([1, 3, 5, 7, 9, 11, 13, 15, 15, 13, 11, 9, 7, 5, 3, 1]) / 16  # factor 8, centre 7.5
    assert torch.allclose(bilinear_kernel(16), torch.outer(t16, t16))


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsampling_interpolates_each_class(factor):
    up = bilinear_upsampling(3, factor)
    assert up.bias is None and not up.weight.requires_grad
    assert up.kernel_size == (2 * factor, 2 * factor) and up.stride == (factor, factor)
    with torch.no_grad():
        const = up(torch.full((1, 3, 4, 4), 2.5))  # a constant map stays constant away from the border
        ramp = up(torch.arange(5.0).expand(1, 3, 5, 5).contiguous())  # 0..4 along the width
        one = up(torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous())
    assert const.shape[-1] == 4 * factor + factor  # (n - 1) * s + k
    interior = const[..., factor : -factor, factor : -factor]
    assert torch.allclose(interior, torch.full_like(interior, 2.5))
    # linear interpolation: output column j sits at input position (j - (2f - 1) / 2) / f
    cols = torch.arange(factor, 5 * factor)
    assert torch.allclose(ramp[0, 1, 3 * factor, factor : 5 * factor], (cols - (2 * factor - 1) / 2) / factor,
                          atol=1e-5)
    assert one[0, 1:].abs().max() == 0  # one kernel per class: no class leaks into another


# --------------------------------------------------------------------------- fc6/fc7 from a classification VGG
def _small_vgg(seed=0, c=(4, 8, 16, 32, 32), hidden=256, in_channels=1):
    """A VGG-16 (configuration D) at 1/16 width in the zoo's / torchvision's layout: features.N, classifier.0/3/6."""
    torch.manual_seed(seed)
    layers, chs = [], in_channels
    for width, n in zip(c, (2, 2, 3, 3, 3)):
        for _ in range(n):
            layers += [nn.Conv2d(chs, width, 3, padding=1), nn.ReLU()]
            chs = width
        layers.append(nn.MaxPool2d(2, 2))
    vgg = nn.Module()
    vgg.features = nn.Sequential(*layers)
    vgg.classifier = nn.Sequential(nn.Linear(chs * 49, hidden), nn.ReLU(), nn.Dropout(),
                                   nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, 10))
    for m in vgg.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.bias, 0, 0.1)
    return vgg.eval()


def test_fc_to_conv_gives_the_linear_numbers():
    torch.manual_seed(0)
    fc = nn.Linear(5 * 7 * 7, 6)
    x = torch.randn(3, 5, 7, 7)
    conv = fc_to_conv(fc, 5, 7)
    assert conv.weight.shape == (6, 5, 7, 7)
    assert torch.allclose(conv(x)[..., 0, 0], fc(x.flatten(1)), atol=1e-6)
    with pytest.raises(ValueError, match="245 inputs cannot read a 4x7x7 map"):
        fc_to_conv(fc, 4, 7)


def test_from_classifier_converts_fc6_fc7_at_the_centre_position():
    vgg = _small_vgg()
    fcn = from_classifier(vgg, "fcn8s_vgg16", width_mult=1 / 16, num_classes=11).eval()
    x = torch.randn(2, 1, 224, 224)
    with torch.no_grad():
        pool5 = vgg.features(x)  # (2, 32, 7, 7): the classifier's whole window
        want = vgg.classifier[:5](pool5.flatten(1))  # fc6, ReLU, dropout (off), fc7, ReLU
        got = torch.relu(fcn.fc7(torch.relu(fcn.fc6(pool5))))
    assert got.shape == (2, 256, 1, 1)
    assert torch.allclose(got[..., 0, 0], want, atol=1e-5)
    for k, v in vgg.features.state_dict().items():  # the convolutions are copied as they are
        assert torch.equal(fcn.features.state_dict()[k], v)
    assert fcn.score_fr.weight.abs().sum() == 0  # fc8 is discarded, the score layer starts at zero (Sec. 4.1)
    with pytest.raises(ValueError, match="not this FCN's VGG-16 convolutions.*features.0.weight"):
        from_classifier(vgg, "fcn32s_vgg16", width_mult=1 / 8)


def test_options_are_checked():
    with pytest.raises(ValueError, match="no skips for at_once"):
        create_segmenter("fcn32s_vgg16", at_once=True)
    with pytest.raises(ValueError, match="fits only width_mult=1.0"):
        create_segmenter("fcn8s_vgg16", width_mult=0.5, backbone_weights="vgg16.pth")
    with pytest.raises(UnknownOptionError, match="valid:.*at_once.*backbone_weights"):
        create_segmenter("fcn8s_vgg16", pretrained=True)
    with pytest.raises(ValueError, match="drop_rate must be in"):
        create_segmenter("fcn8s_vgg16", drop_rate=1.0, width_mult=1 / 16)


def test_at_once_scales_pool4_and_pool3_inputs():
    # voc-fcn8s-atonce: pool4 x 0.01 and pool3 x 1e-4 before score_pool4 / score_pool3. A 1x1 conv of (s * x) with W
    # equals a conv of x with s * W (same bias), so the at-once net equals the staged net with scaled score weights.
    torch.manual_seed(1)
    staged = create_segmenter("fcn8s_vgg16", width_mult=1 / 16, num_classes=3, in_channels=1).eval()
    for conv in (staged.score_fr, staged.score_pool4, staged.score_pool3):
        nn.init.normal_(conv.weight, 0, 0.5)
        nn.init.normal_(conv.bias, 0, 0.5)
    at_once = create_segmenter("fcn8s_vgg16", width_mult=1 / 16, num_classes=3, in_channels=1, at_once=True).eval()
    at_once.load_state_dict(staged.state_dict())
    with torch.no_grad():
        staged.score_pool4.weight.mul_(0.01)
        staged.score_pool3.weight.mul_(1e-4)
    x = torch.randn(1, 1, 40, 40)
    assert torch.allclose(at_once(x), staged(x), atol=1e-5)
    plain = create_segmenter("fcn8s_vgg16", width_mult=1 / 16, num_classes=3, in_channels=1).eval()
    plain.load_state_dict(at_once.state_dict())  # the same weights without the scaling: another output
    assert not torch.allclose(plain(x), at_once(x), atol=1e-3)


def test_registered_with_cards():
    assert set(NAMES) <= set(list_segmenters("fcn*"))
    card = get_segmenter_card("fcn8s_vgg16")
    assert card.paper.year == 2015 and card.input_size == (3, 500, 500)
    for heading in ("Key ideas", "Which table the code reproduces", "Training setup in the paper",
                    "This implementation"):
        assert heading in card.notes
    net = create_segmenter("fcn16s_vgg16", width_mult=1 / 16)
    assert net.score_fr.weight.abs().sum() == 0 and net.score_pool4.weight.abs().sum() == 0  # Sec. 4.2/4.3


@pytest.mark.slow
def test_backbone_weights_load_a_vgg16_checkpoint(tmp_path):
    vgg = create_model("vgg16").eval()
    path = tmp_path / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    fcn = create_segmenter("fcn8s_vgg16", backbone_weights=str(path))
    for k, v in vgg.features.state_dict().items():
        assert torch.equal(fcn.features.state_dict()[k], v)
    assert torch.equal(fcn.fc6.weight, vgg.classifier[0].weight.reshape(4096, 512, 7, 7))
    assert torch.equal(fcn.fc7.weight[..., 0, 0], vgg.classifier[3].weight)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pool5 = vgg.features(x)
        want = vgg.classifier[:5](torch.flatten(vgg.avgpool(pool5), 1))
        got = torch.relu(fcn.eval().fc7(torch.relu(fcn.fc6(pool5))))[..., 0, 0]
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_digits_recipe_adds_batch_norm_and_class_weighting_as_named_deviations(name):
    # from scratch the paper's (BN-free, unweighted) FCN stays all-background on digits-segmentation: the recipe uses
    # batch_norm and SegNet's median frequency balancing, each named on the card; the default network has neither
    from cnnzoo.segmentation.train import default_seg_config

    cfg = default_seg_config(name)
    assert cfg.options.get("batch_norm") is True and cfg.class_weighting == "median_frequency"
    deviations = " ".join(get_segmenter_card(name).deviations)
    assert "batch_norm" in deviations and "median frequency" in deviations
    with torch.device("meta"):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in create_segmenter(name).modules())
