"""FCN-32s/16s/8s on another zoo backbone (``backbone=``; Long et al. CVPR 2015 Sec. 4.1 / Table 1 convert AlexNet,
VGG-16 and GoogLeNet, FCN-GoogLeNet scoring its stride-32 map with a 1x1 layer): the parameter count by hand, the
output size, the skips read at reductions 8 / 16 / 32 with centre-aligned crops (offsets derived here), a backbone
without a needed reduction refused, the options travelling with the weights, one training step on
digits-segmentation, and the paper's VGG-16 path (the default) untouched.

Alignment, derived here independently of the module. A reduction-r map's cell i covers input pixels [r i, r i + r),
centre r i + (r - 1) / 2. A bias-free transposed convolution with kernel 2f and stride f adds input cell i to its
outputs f i ... f i + 2f - 1, so output z reads input (z - (2f - 1) / 2) / f = (z - f + 0.5) / f.
  2x of a reduction-r map (f = 2): output z -> input cell (z - 1.5) / 2 -> pixel r (z - 1.5) / 2 + (r - 1) / 2
      = (r / 2) (z - 1) + (r / 2 - 1) / 2 = the centre of cell z - 1 of the reduction-r/2 skip: offset 1.
  f x of a reduction-f map: output z -> pixel (z - f + 0.5) + (f - 1) / 2 = z - f / 2: offset f / 2, i.e. 16 (32s),
      8 (16s), 4 (8s).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from cnnzoo import create_model
from cnnzoo.segmentation import digits_segmentation
from cnnzoo.segmentation.registry import create_segmenter, get_segmenter_card, segmenter_options

NAMES = {32: "fcn32s_vgg16", 16: "fcn16s_vgg16", 8: "fcn8s_vgg16"}
K = 11  # digits-segmentation's classes


# ------------------------------------------------------------------------------------------- counts, by hand
def resnet18_without_fc(in_channels: int = 3) -> int:
    """ResNet-18 from He et al. 2016 Table 1 (18-layer column): conv1 7x7/64 + BN, [3x3, 64] x2 x 2, [3x3, 128] x2
    x 2, [3x3, 256] x2 x 2, [3x3, 512] x2 x 2, BN after every convolution (2 parameters a channel), 1x1 + BN
    projection shortcuts where the width changes; no fc."""
    total = 49 * in_channels * 64 + 2 * 64
    c_in = 64
    for width in (64, 128, 256, 512):
        for _ in range(2):
            total += 9 * c_in * width + 2 * width + 9 * width * width + 2 * width
            if c_in != width:
                total += c_in * width + 2 * width
            c_in = width
    return total


# resnet18's published total (torchvision: 11,689,512) less its fc 512 * 1000 + 1000: what the FCN keeps
RESNET18_FEATURES = 11_689_512 - (512 * 1000 + 1000)  # 11,176,512
# The head on resnet18 (maps of 128, 256, 512 channels at reductions 8, 16, 32), K classes:
#   score_fr 1x1 512 -> K, score_pool4 256 -> K, score_pool3 128 -> K, each with bias;
#   the transposed convolutions K -> K without bias, k x k, counted as the VGG path counts them (every kernel entry,
#   one bilinear kernel per class on the diagonal, as the Caffe models store them; fixed: requires_grad False):
#   32s: upscore 64x64; 16s: upscore2 4x4 + upscore16 32x32; 8s: upscore2 + upscore_pool4 4x4 + upscore8 16x16.
SCORES = {32: 512 * K + K, 16: (512 + 256) * K + 2 * K, 8: (512 + 256 + 128) * K + 3 * K}
KERNELS = {32: K * K * 64 * 64, 16: K * K * (16 + 32 * 32), 8: K * K * (16 + 16 + 16 * 16)}


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_parameter_count_on_resnet18_by_hand(stride):
    assert resnet18_without_fc() == RESNET18_FEATURES == 11_176_512
    assert SCORES[8] == 5_643 + 2_827 + 1_419 == 9_889 and KERNELS[8] == 34_848
    with torch.device("meta"):
        net = create_segmenter(NAMES[stride], backbone="resnet18", num_classes=K)
    total = RESNET18_FEATURES + SCORES[stride] + KERNELS[stride]
    assert sum(p.numel() for p in net.parameters()) == total
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == total - KERNELS[stride]
    if stride == 8:
        assert total == 11_221_249
    # one input channel: conv1 loses 2 * 49 * 64 weights
    with torch.device("meta"):
        gray = create_segmenter(NAMES[stride], backbone="resnet18", num_classes=K, in_channels=1)
    assert sum(p.numel() for p in gray.parameters()) == total - 2 * 49 * 64


def test_encoder_is_the_zoo_network_under_its_own_keys():
    with torch.device("meta"):
        net = create_segmenter("fcn8s_vgg16", backbone="resnet18", num_classes=K)
        zoo = create_model("resnet18")
    want = {k: tuple(v.shape) for k, v in zoo.state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in net.encoder.state_dict().items()} == want
    assert net.reductions == (8, 16, 32)
    assert not hasattr(net, "fc6") and not hasattr(net, "features")  # FCN-GoogLeNet's head: no fc6/fc7


# ------------------------------------------------------------------------------------------- shapes
@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {(bb, s): create_segmenter(NAMES[s], backbone=bb, num_classes=3, in_channels=1).eval()
            for bb in ("resnet18", "mobilenet_v2") for s in (32, 16, 8)}


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("stride", [32, 16, 8])
def test_output_has_the_input_size(nets, backbone, stride):
    net = nets[(backbone, stride)]
    with torch.no_grad():
        for h, w in ((1, 1), (2, 3), (7, 7), (31, 33), (32, 32), (64, 64), (97, 97), (45, 97), (97, 1)):
            assert net(torch.randn(1, 1, h, w)).shape == (1, 3, h, w)
            assert net.output_size(h) == h
    with pytest.raises(ValueError, match="built for 1 input channel"):
        net(torch.randn(1, 3, 32, 32))


def _bilinear(size: int) -> torch.Tensor:
    """Sec. 3.3's bilinear kernel, written out: the tent 1 - |i - c| / f, f = size / 2, c = f - 0.5 (even sizes)."""
    f = size // 2
    tent = torch.tensor([1 - abs(i - (f - 0.5)) / f for i in range(size)])
    return torch.outer(tent, tent)


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Each class upsampled on its own by the bilinear transposed convolution (kernel 2f, stride f, no bias)."""
    k = x.shape[1]
    weight = torch.zeros(k, k, 2 * factor, 2 * factor)
    for c in range(k):
        weight[c, c] = _bilinear(2 * factor)
    return F.conv_transpose2d(x, weight, stride=factor)


@pytest.mark.parametrize("size", [(64, 64), (45, 38), (17, 9)])
def test_fcn8s_is_the_skip_sum_of_the_maps_at_reductions_8_16_32_with_hand_offsets(size):
    torch.manual_seed(0)
    net = create_segmenter("fcn8s_vgg16", backbone="resnet18", num_classes=3, in_channels=1).eval()
    for conv in (net.score_fr, net.score_pool4, net.score_pool3):  # zero at init (Sec. 4.3): make them count
        nn.init.normal_(conv.weight, 0, 0.5)
        nn.init.normal_(conv.bias, 0, 0.5)
    # the maps, from a separate resnet18 with the same weights: layer2 (r8), layer3 (r16), layer4 (r32)
    ref = create_model("resnet18", in_channels=1, features_only=True, out_indices=(1, 2, 3)).eval()
    ref.load_state_dict(net.encoder.state_dict())
    assert ref.feature_info.reduction() == [8, 16, 32]
    x = torch.randn(2, 1, *size)
    h, w = size
    with torch.no_grad():
        r8, r16, r32 = ref(x)
        score = net.score_fr(r32)
        skip4 = net.score_pool4(r16)
        fuse = _up(score, 2)[..., 1 : 1 + skip4.shape[-2], 1 : 1 + skip4.shape[-1]] + skip4  # offset 1, sum
        skip3 = net.score_pool3(r8)
        fuse = _up(fuse, 2)[..., 1 : 1 + skip3.shape[-2], 1 : 1 + skip3.shape[-1]] + skip3  # offset 1, sum
        want = _up(fuse, 8)[..., 4 : 4 + h, 4 : 4 + w]  # offset 8 / 2
        assert torch.allclose(net(x), want, atol=1e-5)


def test_fcn32s_and_16s_final_offsets_are_half_the_factor():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 50, 41)
    for stride in (32, 16):
        net = create_segmenter(NAMES[stride], backbone="resnet18", num_classes=2, in_channels=1).eval()
        nn.init.normal_(net.score_fr.weight)
        nn.init.normal_(net.score_fr.bias)
        ref = create_model("resnet18", in_channels=1, features_only=True, out_indices=(2, 3)).eval()
        ref.load_state_dict(net.encoder.state_dict(), strict=False)  # layer4 / layer3 and below
        with torch.no_grad():
            r16, r32 = ref(x)
            score = net.score_fr(r32)
            if stride == 32:
                want = _up(score, 32)[..., 16 : 16 + 50, 16 : 16 + 41]
            else:
                nn.init.normal_(net.score_pool4.weight)
                skip = net.score_pool4(r16)
                fuse = _up(score, 2)[..., 1 : 1 + skip.shape[-2], 1 : 1 + skip.shape[-1]] + skip
                want = _up(fuse, 16)[..., 8 : 8 + 50, 8 : 8 + 41]
            assert torch.allclose(net(x), want, atol=1e-5)


def test_a_single_stride_32_cell_is_painted_over_its_own_pixels():
    # hand case of the final crop: a 2x2 score grid with one class hot in cell (0, 1); after the 32x upsampling and
    # the crop from 16, the peak lies on the pixels that cell covers (rows 0-31, columns 32-63): rows 15-16 and
    # columns 47-48 are its centre (r i + (r - 1) / 2 = 15.5 and 47.5), where the 64-tap tent is 1 - 0.5 / 32 = 63 / 64
    score = torch.zeros(1, 1, 2, 2)
    score[0, 0, 0, 1] = 1.0
    out = _up(score, 32)[..., 16 : 16 + 64, 16 : 16 + 64][0, 0]
    peak = (63 / 64) ** 2
    assert out.max().item() == pytest.approx(peak)
    assert (out > peak - 1e-6).nonzero().tolist() == [[15, 47], [15, 48], [16, 47], [16, 48]]
    net = create_segmenter("fcn32s_vgg16", backbone="resnet18", num_classes=1, in_channels=1).eval()
    with torch.no_grad():  # the network does the same: a constant stride-32 score map comes back constant inside
        net.score_fr.bias.fill_(2.0)
        y = net(torch.randn(1, 1, 64, 64))[0, 0]
    assert torch.allclose(y[16:48, 16:48], torch.full((32, 32), 2.0))


# ------------------------------------------------------------------------------------------- refusals
def test_a_backbone_without_a_stride_8_map_is_refused_for_fcn8s():
    # zfnet's features API lists maps at reductions 4, 16 and 32 only (its stride-2 pools after 7x7/2 conv1)
    with torch.device("meta"):
        assert create_model("zfnet", features_only=True).feature_info.reduction() == [4, 16, 32]
        with pytest.raises(ValueError, match=r"backbone 'zfnet' gives feature maps at reductions \[4, 16, 32\], but "
                                             r"FCN-8s needs one at each of \[8, 16, 32\] \(missing \[8\]\)"):
            create_segmenter("fcn8s_vgg16", backbone="zfnet")
        assert create_segmenter("fcn16s_vgg16", backbone="zfnet").reductions == (16, 32)  # its skips it has
        with pytest.raises(ValueError, match=r"reductions \[16\].*missing \[32\]"):
            create_segmenter("fcn32s_vgg16", backbone="vit_b_16")


def test_option_errors():
    with pytest.raises(ValueError, match="backbone_options are for another backbone"):
        create_segmenter("fcn8s_vgg16", backbone_options={"layers": [1, 1, 1, 1]})
    with pytest.raises(ValueError, match="batch_norm=True"):
        create_segmenter("fcn8s_vgg16", backbone="vgg16_bn")
    with pytest.raises(ValueError, match="backbone_options may not set output_stride"):
        create_segmenter("fcn8s_vgg16", backbone="resnet18", backbone_options={"output_stride": 8})
    with pytest.raises(ValueError, match="backbone must be a zoo network's name"):
        create_segmenter("fcn8s_vgg16", backbone="")
    with pytest.raises(Exception, match="resnet_18"):
        create_segmenter("fcn8s_vgg16", backbone="resnet_18")
    with pytest.raises(ValueError, match="no skips for at_once"):
        create_segmenter("fcn32s_vgg16", backbone="resnet18", at_once=True)
    with torch.device("meta"):
        net, vgg = create_segmenter("fcn8s_vgg16", backbone="resnet18"), create_model("vgg16")
    with pytest.raises(ValueError, match="load_classifier converts a VGG-16"):
        net.load_classifier(vgg)


def test_vgg_path_options_on_another_backbone():
    # width_mult and batch_norm shape the VGG-16 path only (module docstring): ignored with another backbone, so
    # the digits recipe (which sets both) applies to fcn8s_vgg16:backbone=resnet18 in cnnzoo compare
    with torch.device("meta"):
        plain = create_segmenter("fcn8s_vgg16", backbone="resnet18", num_classes=K)
        recipe = create_segmenter("fcn8s_vgg16", backbone="resnet18", num_classes=K, width_mult=0.0625,
                                  batch_norm=True, drop_rate=0.0)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [(k, v.shape) for k, v in
                                                                     recipe.state_dict().items()]
    assert plain.drop.p == 0.5 and recipe.drop.p == 0.0  # drop_rate: the dropout before score_fr
    learned = create_segmenter("fcn8s_vgg16", backbone="resnet18", learn_upsampling=True)
    ups = [m for m in learned.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == 3 and all(m.weight.requires_grad and m.bias is None for m in ups)
    assert not any(m.weight.requires_grad for m in plain.modules() if isinstance(m, nn.ConvTranspose2d))


def test_at_once_scales_the_stride_16_and_8_maps():
    # score(s * x) = (s W) x + b: the at-once net equals the staged one with score_pool4 / score_pool3 scaled
    torch.manual_seed(0)
    at_once = create_segmenter("fcn8s_vgg16", backbone="resnet18", num_classes=3, in_channels=1, at_once=True).eval()
    for conv in (at_once.score_fr, at_once.score_pool4, at_once.score_pool3):
        nn.init.normal_(conv.weight)
        nn.init.normal_(conv.bias)
    staged = create_segmenter("fcn8s_vgg16", backbone="resnet18", num_classes=3, in_channels=1).eval()
    sd = at_once.state_dict()
    sd["score_pool4.weight"] = sd["score_pool4.weight"] * 0.01
    sd["score_pool3.weight"] = sd["score_pool3.weight"] * 1e-4
    staged.load_state_dict(sd)
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.allclose(at_once(x), staged(x), atol=1e-5)


# ------------------------------------------------------------------------------------------- weights round trip
def test_weights_file_rebuilds_the_network_with_no_options(tmp_path):
    torch.manual_seed(0)
    options = {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]}, "in_channels": 1,
               "num_classes": K, "at_once": True}
    net = create_segmenter("fcn8s_vgg16", **options).eval()
    for conv in (net.score_fr, net.score_pool4, net.score_pool3):
        nn.init.normal_(conv.weight)
    sd = net.state_dict()
    # safetensors with metadata, as `cnnzoo segment train` writes a checkpoint; and a plain torch.save
    meta = {k: json.dumps(v) for k, v in  # each value JSON, as cnnzoo.train.checkpoint writes them
            {"format": "cnnzoo-segmentation", "model": "fcn8s_vgg16", "options": options}.items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"), metadata=meta)
    torch.save(sd, tmp_path / "w.pt")
    x = torch.randn(2, 1, 37, 50)
    for file in ("w.safetensors", "w.pt"):
        again = create_segmenter("fcn8s_vgg16", weights=str(tmp_path / file)).eval()
        assert (again.backbone, again.backbone_options, again.in_channels, again.num_classes, again.at_once) == (
            "resnet18", {"layers": [1, 1, 1, 1]}, 1, K, True)
        with torch.no_grad():
            assert torch.equal(again(x), net(x))
    with pytest.raises(ValueError, match="contradicts the weights file"):
        create_segmenter("fcn8s_vgg16", weights=str(tmp_path / "w.pt"), backbone="mobilenet_v2")
    other = create_segmenter("fcn8s_vgg16", backbone="resnet18", in_channels=1, num_classes=K)
    with pytest.raises(ValueError, match=r"FCN on backbone_options=\{'layers': \[1, 1, 1, 1\]\}"):
        other.load_state_dict(sd)


def test_the_options_recorded_by_a_run_rebuild_it(tmp_path):
    # `cnnzoo segment eval/predict` rebuild a run with create_segmenter(model, **recorded options): the digits
    # recipe's VGG options are recorded too and must not get in the way
    from cnnzoo.train.checkpoint import save_checkpoint
    from cnnzoo.weights import read_checkpoint

    options = {"width_mult": 0.0625, "drop_rate": 0.0, "batch_norm": True, "backbone": "resnet18",
               "in_channels": 1, "num_classes": K}
    net = create_segmenter("fcn16s_vgg16", **options)
    path = save_checkpoint(tmp_path, "last", "e0001-b000000", net.state_dict(),
                           {"format": "cnnzoo-segmentation", "model": "fcn16s_vgg16", "options": options})
    sd, _ = read_checkpoint(path)
    create_segmenter("fcn16s_vgg16", **options).load_state_dict(sd)
    assert create_segmenter("fcn16s_vgg16", weights=str(path)).backbone == "resnet18"


# ------------------------------------------------------------------------------------------- training
def test_one_training_step_on_digits_segmentation_lowers_the_loss():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        train, _ = digits_segmentation(num_train=8, num_test=1)
        net = create_segmenter("fcn8s_vgg16", backbone="resnet18", backbone_options={"layers": [1, 1, 1, 1]},
                               in_channels=1, num_classes=K, drop_rate=0.0).train()
        x = (train.images.float() / 255 - 0.13) / 0.31
        y = train.masks.long()
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
        first = F.cross_entropy(net(x), y, ignore_index=255)
        assert first.item() == pytest.approx(torch.log(torch.tensor(float(K))).item(), abs=1e-5)  # zero scores
        opt.zero_grad()
        first.backward()
        opt.step()
        with torch.no_grad():  # the same batch in the same mode (BN on the batch's statistics, no dropout)
            after = F.cross_entropy(net(x), y, ignore_index=255)
        print(f"loss {first.item():.4f} -> {after.item():.4f}")
    finally:
        torch.set_num_threads(threads)
    assert after.item() < first.item() - 0.1


# ------------------------------------------------------------------------------------------- the paper's path
def test_the_default_backbone_is_the_papers_vgg16_path():
    with torch.device("meta"):
        net = create_segmenter("fcn8s_vgg16")
        same = create_segmenter("fcn8s_vgg16", backbone="vgg16")
    keys = list(net.state_dict())
    assert net.backbone == "vgg16" and keys == list(same.state_dict())
    assert "fc6.weight" in keys and not any(k.startswith(("encoder.", "backbone_spec")) for k in keys)
    assert type(net).options_from_state_dict(net.state_dict()) == {}  # VGG files: options passed as before
    card = get_segmenter_card("fcn8s_vgg16")
    assert {"backbone", "backbone_options"} <= set(segmenter_options("fcn8s_vgg16"))
    assert any("backbone=" in d and "GoogLeNet" in d for d in card.deviations)
    assert "Table 1" in __import__("cnnzoo.segmentation.models.fcn", fromlist=["x"]).__doc__
