"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) and DeconvNet (Noh, Hong, Han, ICCV 2015): parameter counts
derived by hand from each paper's layer table, max-unpooling with switches on a hand case, the decoders unpooling with
the mirrored encoder stage's switches, output size = input size (also for sizes that are not multiples of 32), and
the encoder mapping from the zoo's vgg16_bn."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import create_model
from cnnzoo.registry import UnknownOptionError
from cnnzoo.segmentation.models.deconvnet import DeconvNet
from cnnzoo.segmentation.models.segnet import SegNet, max_unpool, pool_with_switches
from cnnzoo.segmentation.registry import create_segmenter, get_segmenter_card, list_segmenters

NAMES = ("segnet_vgg16", "deconvnet_vgg16")

# ------------------------------------------------------------------------------------------- counts, by hand
# Every convolution has a bias (Caffe's default in both authors' nets); BN learns a scale and a shift per channel.
# VGG-16 conv1_1 ... conv5_3 (configuration D), weights + biases:
VGG16_CONVS = ((3 * 64 + 64 * 64) * 9 + 2 * 64 + (64 * 128 + 128 * 128) * 9 + 2 * 128
               + (128 * 256 + 2 * 256 * 256) * 9 + 3 * 256 + (256 * 512 + 2 * 512 * 512) * 9 + 3 * 512
               + 3 * 512 * 512 * 9 + 3 * 512)
VGG16_BN = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)  # 2 * 4,224 = 8,448 (encoder BN)

# SegNet (Sec. 3, Fig. 2; segnet_train.prototxt), K = 11 CamVid classes. Decoder, each 3x3 + bias + BN + ReLU:
#   conv5_3_D..conv5_1_D 512->512 x3 | conv4_3_D, conv4_2_D 512->512, conv4_1_D 512->256 |
#   conv3_3_D, conv3_2_D 256->256, conv3_1_D 256->128 | conv2_2_D 128->128, conv2_1_D 128->64 | conv1_2_D 64->64
#   then conv1_1_D 3x3 64->K with bias, no BN (the 13th decoder convolution, the classifier).
SEGNET_DEC_W = 9 * (3 * 512 * 512 + 2 * 512 * 512 + 512 * 256 + 2 * 256 * 256 + 256 * 128
                    + 128 * 128 + 128 * 64 + 64 * 64)  # 9 * 1,634,304 = 14,708,736
SEGNET_DEC_CH = 3 * 512 + 2 * 512 + 256 + 2 * 256 + 128 + 128 + 64 + 64  # 3,712 output channels: bias + BN scale/shift
SEGNET_K = 11
SEGNET_HAND = VGG16_CONVS + VGG16_BN + SEGNET_DEC_W + 3 * SEGNET_DEC_CH + (9 * 64 * SEGNET_K + SEGNET_K)
#            14,714,688 + 8,448 + 14,708,736 + 11,136 + 6,347 = 29,449,355

# DeconvNet (Table 1), K = 21 PASCAL classes:
#   fc6 7x7 512->4096 + bias; fc7 1x1 4096->4096 + bias; deconv-fc6 7x7 4096->512 + bias (ConvTranspose: same count)
#   deconv5_1..3 512->512 | deconv4_1, 4_2 512->512, deconv4_3 512->256 | deconv3_1, 3_2 256->256, deconv3_3 256->128
#   | deconv2_1 128->128, deconv2_2 128->64 | deconv1_1, deconv1_2 64->64 (3x3 + bias) | output 1x1 64->K + bias
#   BN after every conv / deconv except the output.
FC6 = 4096 * 512 * 49 + 4096  # 102,764,544
FC7 = 4096 * 4096 + 4096  # 16,781,312
DECONV_FC6 = 4096 * 512 * 49 + 512  # 102,760,960
DECONV_W = 9 * (3 * 512 * 512 + 2 * 512 * 512 + 512 * 256 + 2 * 256 * 256 + 256 * 128
                + 128 * 128 + 128 * 64 + 2 * 64 * 64)  # 9 * 1,638,400 = 14,745,600
DECONV_CH = 3 * 512 + 2 * 512 + 256 + 2 * 256 + 128 + 128 + 64 + 2 * 64  # 3,776
DECONV_K = 21
DECONVNET_NO_BN = VGG16_CONVS + FC6 + FC7 + DECONV_FC6 + DECONV_W + DECONV_CH + (64 * DECONV_K + DECONV_K)
DECONVNET_BN = 2 * (4224 + 2 * 4096 + 512 + DECONV_CH)  # 2 * 16,704 = 33,408
DECONVNET_HAND = DECONVNET_NO_BN + DECONVNET_BN


def test_hand_arithmetic_written_out():
    # the same sums as literals, so a slip in the arithmetic above shows
    assert (VGG16_CONVS, VGG16_BN, SEGNET_DEC_W, SEGNET_DEC_CH) == (14_714_688, 8_448, 14_708_736, 3_712)
    assert SEGNET_HAND == 29_449_355
    assert (DECONV_W, DECONV_CH, DECONVNET_BN) == (14_745_600, 3_776, 33_408)
    assert DECONVNET_NO_BN == 251_772_245  # the "252M" DeconvNet quotes
    assert DECONVNET_HAND == 251_805_653


@pytest.mark.parametrize(("name", "want", "k"), [("segnet_vgg16", SEGNET_HAND, SEGNET_K),
                                                 ("deconvnet_vgg16", DECONVNET_HAND, DECONV_K)])
def test_parameter_count_by_hand(name, want, k):
    with torch.device("meta"):
        net = create_segmenter(name)
        other = create_segmenter(name, num_classes=3)
    assert net.num_classes == k
    assert sum(p.numel() for p in net.parameters()) == want
    per_class = 9 * 64 + 1 if name == "segnet_vgg16" else 64 + 1  # the classifier's 3x3 / 1x1 kernel and bias
    assert sum(p.numel() for p in other.parameters()) == want - (k - 3) * per_class
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == (13 + 12 if name == "segnet_vgg16" else 13 + 2 + 1 + 13)  # BN after all but the classifier


def test_deconvnet_layer_kinds_follow_table_1():
    with torch.device("meta"):
        net = create_segmenter("deconvnet_vgg16")
    deconvs = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 1 + 13 and deconvs[0].kernel_size == (7, 7)  # deconv-fc6, then 13 3x3 deconvolutions
    assert all(d.kernel_size == (3, 3) and d.padding == (1, 1) for d in deconvs[1:])
    assert (net.fc[0].kernel_size, net.fc[0].out_channels, net.fc[3].kernel_size) == ((7, 7), 4096, (1, 1))
    assert net.classifier.kernel_size == (1, 1)
    with torch.device("meta"):
        seg = create_segmenter("segnet_vgg16")
    assert not any(isinstance(m, (nn.ConvTranspose2d, nn.Linear)) for m in seg.modules())  # no fc, no deconv
    assert seg.classifier.kernel_size == (3, 3)


# ------------------------------------------------------------------------------------------ unpooling, by hand
def test_max_unpool_hand_case():
    x = torch.tensor([[1.0, 2.0, 5.0, 0.0],
                      [3.0, 4.0, 1.0, 6.0],
                      [9.0, 0.0, 2.0, 2.0],
                      [1.0, 8.0, 7.0, 3.0]]).reshape(1, 1, 4, 4)
    y, (idx, size) = pool_with_switches(x)
    assert torch.equal(y, torch.tensor([[[[4.0, 6.0], [9.0, 7.0]]]]))
    assert idx.tolist() == [[[[5, 7], [8, 14]]]] and size == (4, 4)  # flat positions (1,1), (1,3), (2,0), (3,2)
    back = max_unpool(y, (idx, size))
    want = torch.zeros(4, 4)
    want[1, 1], want[1, 3], want[2, 0], want[3, 2] = 4.0, 6.0, 9.0, 7.0  # the maxima in place, zeros elsewhere
    assert torch.equal(back[0, 0], want)
    assert torch.equal(back, F.max_unpool2d(y, idx, 2, 2))  # torch's semantics
    assert torch.equal(back, nn.MaxUnpool2d(2, 2)(y, idx))
    # a decoder map (not the pooled values) goes to the same positions
    assert torch.equal(max_unpool(torch.ones(1, 1, 2, 2), (idx, size))[0, 0], (want != 0).float())


def test_unpool_restores_sizes_that_are_not_even():
    x = torch.arange(15.0).reshape(1, 1, 3, 5)  # increasing: each window's maximum is its last row/column
    y, sw = pool_with_switches(x)
    assert y.shape == (1, 1, 2, 3)  # rounds up, as Caffe's pooling
    back = max_unpool(y, sw)
    assert back.shape == (1, 1, 3, 5)
    assert back[0, 0].nonzero().tolist() == [[1, 1], [1, 3], [1, 4], [2, 1], [2, 3], [2, 4]]
    with pytest.raises(ValueError, match="do not belong to a map"):
        max_unpool(torch.ones(1, 1, 3, 3), sw)


@pytest.mark.parametrize("name", NAMES)
def test_decoder_unpools_with_the_mirrored_encoder_switches(name):
    torch.manual_seed(0)
    opts = {"fc_kernel": 1} if name == "deconvnet_vgg16" else {}
    net = create_segmenter(name, width_mult=1 / 16, num_classes=3, in_channels=1, **opts).eval()
    x = torch.randn(2, 1, 64, 96)
    seen = []
    hooks = [stage.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for stage in net.decoder]
    with torch.no_grad():
        out = net(x)
        pool5, switches = net.encode(x)
        deep = net.deconv_fc(net.fc(pool5)) if name == "deconvnet_vgg16" else pool5
    for h in hooks:
        h.remove()
    assert out.shape == (2, 3, 64, 96)
    assert [s[1] for s in switches] == [(64, 96), (32, 48), (16, 24), (8, 12), (4, 6)]  # pool1 ... pool5 inputs
    # decoder stage i (deepest first) receives the map unpooled with encoder pool (5 - i)'s switches: the values sit
    # exactly at that pooling's argmax positions and every other position is zero
    for i, (unpooled, (idx, size)) in enumerate(zip(seen, reversed(switches))):
        assert unpooled.shape[-2:] == size
        flat = unpooled.flatten(2)
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, idx.flatten(2), True)
        assert flat[~mask].abs().max() == 0
        if i == 0:  # stage 0 unpools the encoder's (or deconv-fc6's) output itself
            assert torch.equal(flat.gather(2, idx.flatten(2)), deep.flatten(2))
        # and the map the stage before produced, pooled at those switches, is what was unpooled
        prev = deep if i == 0 else net.decoder[i - 1](seen[i - 1])
        assert torch.equal(flat.gather(2, idx.flatten(2)), prev.flatten(2))


# ------------------------------------------------------------------------------------------------ sizes
@pytest.mark.parametrize("name", NAMES)
def test_output_has_the_input_size(name):
    with torch.device("meta"):  # full width: shapes only
        net = create_segmenter(name).eval()
        for h, w in ((224, 224), (256, 320), (360, 480), (225, 301), (500, 375)):  # 360x480: CamVid, not 32k
            assert tuple(net(torch.empty(1, 3, h, w)).shape) == (1, net.num_classes, h, w)
            assert net.output_size(h) == h
    small = create_segmenter(name, width_mult=1 / 16, num_classes=5, in_channels=1,
                             **({"fc_kernel": 2} if name == "deconvnet_vgg16" else {})).eval()
    for h, w in ((64, 64), (45, 38), (33, 70)):  # not multiples of 32 either: ceil pooling, exact unpooling
        assert small(torch.randn(1, 1, h, w)).shape == (1, 5, h, w)
    with pytest.raises(ValueError, match="built for 1 input channel"):
        small(torch.randn(1, 3, 64, 64))


def test_segnet_takes_any_size_and_deconvnet_refuses_inputs_under_fc6s_window():
    seg = create_segmenter("segnet_vgg16", width_mult=1 / 16).eval()
    for h in (1, 2, 3, 31):
        assert seg(torch.randn(1, 3, h, h)).shape == (1, 11, h, h)
    with torch.device("meta"):
        deconv = create_segmenter("deconvnet_vgg16").eval()
        assert deconv(torch.empty(1, 3, 193, 193)).shape == (1, 21, 193, 193)  # pool5 7x7: fc7 1x1
        with pytest.raises(ValueError, match=r"at least 193x193 pixels, got 192x224 .*fc6's 7x7 window.*fc_kernel"):
            deconv(torch.empty(1, 3, 192, 224))  # pool5 6x7: fc6 has no window
    small = create_segmenter("deconvnet_vgg16", width_mult=1 / 16, fc_kernel=2).eval()
    assert small.min_input_size == 33
    with pytest.raises(ValueError, match="at least 33x33"):
        small(torch.randn(1, 3, 32, 32))


def test_options_are_checked():
    with pytest.raises(ValueError, match="fits only width_mult=1.0"):
        create_segmenter("segnet_vgg16", width_mult=0.5, backbone_weights="vgg16_bn.pth")
    with pytest.raises(ValueError, match="fits only fc_kernel=7"):
        create_segmenter("deconvnet_vgg16", fc_kernel=1, backbone_weights="vgg16_bn.pth")
    with pytest.raises(ValueError, match="fc_kernel must be an integer >= 1"):
        create_segmenter("deconvnet_vgg16", fc_kernel=0)
    with pytest.raises(ValueError, match="width_mult must be a number > 0"):
        create_segmenter("segnet_vgg16", width_mult=0)
    with pytest.raises(UnknownOptionError, match="valid:.*backbone_weights.*width_mult"):
        create_segmenter("segnet_vgg16", fc_kernel=7)


# ------------------------------------------------------------------------------- the encoder from vgg16_bn
def test_encoder_has_the_zoo_vgg16_bn_layout():
    with torch.device("meta"):
        vgg = create_model("vgg16_bn")
        theirs = {k: tuple(v.shape) for k, v in vgg.features.state_dict().items()}
        for name in NAMES:
            net = create_segmenter(name)
            assert {k: tuple(v.shape) for k, v in net.features.state_dict().items()} == theirs
    pools = [m for m in net.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5


def _small_vgg16_bn(seed=0, c=(4, 8, 16, 32, 32), hidden=256, in_channels=3):
    """A vgg16_bn at 1/16 width in the zoo's / torchvision's layout (features.N, classifier.0/3/6), BN statistics
    made non-trivial."""
    torch.manual_seed(seed)
    layers, chs = [], in_channels
    for width, n in zip(c, (2, 2, 3, 3, 3)):
        for _ in range(n):
            layers += [nn.Conv2d(chs, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            chs = width
        layers.append(nn.MaxPool2d(2, 2))
    vgg = nn.Module()
    vgg.features = nn.Sequential(*layers)
    vgg.classifier = nn.Sequential(nn.Linear(chs * 49, hidden), nn.ReLU(), nn.Dropout(),
                                   nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, 10))
    for m in vgg.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                nn.init.normal_(t.data, 0.5, 0.2)
            m.running_var.data.uniform_(0.5, 2.0)
    return vgg.eval()


def test_load_backbone_maps_convolutions_bn_and_fc6_fc7():
    vgg = _small_vgg16_bn()
    seg = create_segmenter("segnet_vgg16", width_mult=1 / 16).eval()
    seg.load_backbone(vgg)
    deconv = create_segmenter("deconvnet_vgg16", width_mult=1 / 16).eval()
    deconv.load_backbone(vgg)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = vgg.features(x)
        for net in (seg, deconv):
            for k, v in vgg.features.state_dict().items():  # conv and BN, running statistics included
                assert torch.equal(net.features.state_dict()[k], v)
            assert torch.allclose(net.encode(x)[0], want, atol=1e-5)  # the same pool5
        # fc6 / fc7 converted; the BN after them (absent in vgg16_bn) starts as the identity in eval mode
        got = deconv.fc(want)[..., 0, 0]
        ref = vgg.classifier[:5](want.flatten(1))  # fc6, ReLU, dropout (off), fc7, ReLU
    assert torch.allclose(got, ref, atol=1e-4)
    with pytest.raises(ValueError, match="not SegNet's VGG-16-BN encoder"):
        create_segmenter("segnet_vgg16", width_mult=1 / 8).load_backbone(vgg)


def test_registered_with_cards():
    assert set(NAMES) <= set(list_segmenters())
    for name, year, size in (("segnet_vgg16", 2017, (3, 360, 480)), ("deconvnet_vgg16", 2015, (3, 224, 224))):
        card = get_segmenter_card(name)
        assert card.paper.year == year and card.input_size == size and card.deviations
        for heading in ("Key ideas", "Which table the code reproduces", "Training setup in the paper",
                        "This implementation"):
            assert heading in card.notes
    assert "29,449,355" in get_segmenter_card("segnet_vgg16").notes
    assert "251,805,653" in get_segmenter_card("deconvnet_vgg16").notes
    assert isinstance(create_segmenter("segnet_vgg16", width_mult=1 / 16), SegNet)
    assert isinstance(create_segmenter("deconvnet_vgg16", width_mult=1 / 16), DeconvNet)


@pytest.mark.slow
def test_backbone_weights_load_a_vgg16_bn_checkpoint(tmp_path):
    vgg = create_model("vgg16_bn").eval()
    path = tmp_path / "vgg16_bn.pth"
    torch.save(vgg.state_dict(), path)
    net = create_segmenter("deconvnet_vgg16", backbone_weights=str(path))
    for k, v in vgg.features.state_dict().items():
        assert torch.equal(net.features.state_dict()[k], v)
    assert torch.equal(net.fc[0].weight, vgg.classifier[0].weight.reshape(4096, 512, 7, 7))
    assert torch.equal(net.fc[3].weight[..., 0, 0], vgg.classifier[3].weight)


@pytest.mark.parametrize("name", NAMES)
def test_digits_recipe_uses_median_frequency_balancing(name):
    # SegNet Sec. 3.2 trains with median frequency balancing (w_c = median_freq / freq(c), Eigen & Fergus); without it
    # both networks collapse to background on digits-segmentation (95% background). For DeconvNet, whose paper does
    # not weight its loss, it is a deviation named on its card.
    from cnnzoo.segmentation.train import default_seg_config

    assert default_seg_config(name).class_weighting == "median_frequency"
    assert default_seg_config(name, class_weighting="none").class_weighting == "none"
    if name == "deconvnet_vgg16":
        assert any("median frequency" in d for d in get_segmenter_card(name).deviations)
