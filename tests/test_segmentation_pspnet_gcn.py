"""PSPNet (Zhao et al., CVPR 2017) and GCN "Large Kernel Matters" (Peng et al., CVPR 2017): parameter counts derived
by hand from each paper's layout, the pyramid pooled to bins 1, 2, 3, 6 on the stride-8 map, the auxiliary output in
training, the k x 1 / 1 x k kernels with k = 15 (and Table 2's counts), Boundary Refinement's residual on a hand case,
output size = input size, and the errors a user gets for bad inputs and options."""

import functools

import pytest
import torch
from torch import nn

from cnnzoo.registry import UnknownModelError
from cnnzoo.segmentation.models.gcn import BoundaryRefinement, GlobalConv
from cnnzoo.segmentation.registry import create_segmenter, get_digits_recipe, get_segmenter_card, list_segmenters

# ------------------------------------------------------------------------------------------- counts, by hand
# Backbones: torchvision's published ImageNet counts (resnet50 25,557,032, resnet101 44,549,160, resnet152
# 60,192,808) less the 2048 -> 1000 fc the segmenters drop.
FC = 2048 * 1000 + 1000
RESNET50, RESNET101, RESNET152 = 25_557_032 - FC, 44_549_160 - FC, 60_192_808 - FC


def pspnet_hand(backbone: int, k: int) -> int:
    """PSPNet (Sec. 3.2, Fig. 3; the authors' prototxt): 4 pyramid levels of 1x1 conv 2048 -> 512 (no bias) + BN;
    3x3 conv (2048 + 4 * 512) -> 512 (no bias) + BN, 1x1 512 -> K + bias; aux 3x3 1024 -> 256 + BN, 1x1 256 -> K."""
    pyramid = 4 * (2048 * 512 + 2 * 512)
    head = 4096 * 512 * 9 + 2 * 512 + 512 * k + k
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * k + k
    return backbone + pyramid + head + aux


def gcn_hand(backbone: int, k: int, ks: int = 15, chans=(256, 512, 1024, 2048)) -> int:
    """GCN (Fig. 2): per res-i a GCN 2 * (ks * C * K + ks * K * K) (weights only, Table 2's count); 9 BRs of two 3x3
    K -> K convs with bias; 5 deconvolutions 4x4 K -> K without bias (3 fusions + 2 to full size)."""
    gcn = sum(2 * (ks * c * k + ks * k * k) for c in chans)
    br = 9 * 2 * (9 * k * k + k)
    deconv = 5 * 16 * k * k
    return backbone + gcn + br + deconv


@functools.cache
def meta(name: str, **opts) -> nn.Module:
    """The network built on the meta device (no memory, no init), once per module."""
    with torch.device("meta"):
        return create_segmenter(name, **opts)


def test_hand_arithmetic_written_out():
    assert (RESNET50, RESNET101, RESNET152) == (23_508_032, 42_500_160, 58_143_808)
    assert pspnet_hand(RESNET50, 150) == 23_508_032 + 4_198_400 + 18_952_342 + 2_398_358 == 49_057_132
    assert pspnet_hand(RESNET101, 21) == 42_500_160 + 4_198_400 + 18_886_165 + 2_365_205 == 67_949_930
    assert gcn_hand(RESNET152, 21) == 58_143_808 + 2_472_120 + 71_820 + 35_280 == 60_723_028


@pytest.mark.parametrize(("name", "want", "k"), [
    ("pspnet_resnet50", pspnet_hand(RESNET50, 150), 150),
    ("pspnet_resnet101", pspnet_hand(RESNET101, 21), 21),
    ("gcn_resnet152", gcn_hand(RESNET152, 21), 21),
])
def test_parameter_count_by_hand(name, want, k):
    net, three = meta(name), meta(name, num_classes=3)
    assert net.num_classes == k
    assert sum(p.numel() for p in net.parameters()) == want
    backbone = {"pspnet_resnet50": RESNET50, "pspnet_resnet101": RESNET101, "gcn_resnet152": RESNET152}[name]
    hand = pspnet_hand if name.startswith("pspnet") else gcn_hand
    assert sum(p.numel() for p in three.parameters()) == hand(backbone, 3)


def test_gcn_module_counts_match_table_2():
    # Table 2: the GCN on res-5 (2048 -> 21) has 260K, 434K, 608K, 782K parameters for k = 3, 5, 7, 9 (thousands,
    # truncated: 260,694 is printed 260K)
    for ks, thousands in ((3, 260), (5, 434), (7, 608), (9, 782)):
        with torch.device("meta"):
            block = GlobalConv(2048, 21, ks)
        assert sum(p.numel() for p in block.parameters()) // 1000 == thousands


def test_cards():
    assert {"pspnet_resnet50", "pspnet_resnet101", "gcn_resnet152"} <= set(list_segmenters())
    for name in ("pspnet_resnet50", "pspnet_resnet101"):
        card = get_segmenter_card(name)
        assert card.aux_weight == 0.4  # Sec. 3.3, Table 3: alpha = 0.4
        assert "1612.01105" in card.paper.url and "123,776" in card.notes and card.deviations
    card = get_segmenter_card("gcn_resnet152")
    assert "1703.02719" in card.paper.url and card.aux_weight is None and card.deviations
    assert "60,723,028" in card.notes and "49,057,132" in get_segmenter_card("pspnet_resnet50").notes


# ------------------------------------------------------------------------------------------- PSPNet
def small_psp(**kw):
    torch.manual_seed(0)
    return create_segmenter("pspnet_resnet50", **{"backbone": "resnet18", "in_channels": 1, "num_classes": 5,
                                                  "channels": 16, **kw})


def test_pyramid_pools_to_bins_1_2_3_6_on_the_stride_8_map():
    net = small_psp().eval()
    pooled, into = [], []
    for stage in net.ppm.stages:
        pool = stage[0]
        assert isinstance(pool, nn.AdaptiveAvgPool2d)
        pool.register_forward_hook(lambda m, a, out: pooled.append(out))
    net.ppm.register_forward_hook(lambda m, a, out: into.append((a[0], out)))
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        net(x)
    assert [tuple(p.shape[-2:]) for p in pooled] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    feat, out = into[0]
    assert tuple(feat.shape) == (2, 512, 6, 6)  # 48 / 8: the dilated backbone's output stride 8
    assert tuple(out.shape) == (2, 512 + 4 * 128, 6, 6)  # each level reduced to 512 / 4, concatenated with the map
    assert torch.allclose(out[:, :512], feat)  # the map itself comes first, unchanged
    # bin 1 is the global average; bin 3 on a 6x6 map averages 2x2 blocks
    assert torch.allclose(pooled[0], feat.mean((2, 3), keepdim=True), atol=1e-6)
    assert torch.allclose(pooled[2][..., 1, 2], feat[..., 2:4, 4:6].mean((-2, -1)), atol=1e-6)


def test_pspnet_default_layout_reduces_2048_to_512_per_level():
    net = meta("pspnet_resnet50")
    assert [s[1].weight.shape[:2] for s in net.ppm.stages] == [(512, 2048)] * 4
    assert net.classifier[0].weight.shape == (512, 4096, 3, 3) and net.classifier[0].bias is None
    assert isinstance(net.classifier[3], nn.Dropout) and net.classifier[3].p == 0.1
    assert net.aux_classifier[0].weight.shape[:2] == (256, 1024)  # the aux head reads layer3 (res4b22)


def test_dilation_as_the_authors_every_3x3_of_layer3_at_2_and_layer4_at_4():
    net = meta("pspnet_resnet50")
    body = net.backbone.model
    for stage, rate in ((body.layer3, 2), (body.layer4, 4)):
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) == len(stage)
        assert all(m.dilation == (rate, rate) and m.padding == (rate, rate) and m.stride == (1, 1) for m in convs)
    assert net.backbone.feature_info.reduction() == [8, 8]


def test_pspnet_aux_output_in_training_only():
    net = small_psp().train()
    x = torch.randn(2, 1, 40, 40)
    main, aux = net(x)
    assert main.shape == aux.shape == (2, 5, 40, 40)
    d = net.forward_dict(x)
    assert set(d) == {"out", "aux"}
    net.eval()
    with torch.no_grad():
        out = net(x)
        assert torch.equal(out, net.forward_dict(x)["out"])
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, 40, 40)
    plain = small_psp(aux_loss=False).train()
    assert isinstance(plain(x), torch.Tensor) and plain.aux_classifier is None


@pytest.mark.parametrize("size", [64, 61, 33, 8, 1])
def test_pspnet_output_has_the_input_size(size):
    net = small_psp().eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, size, size + 3)).shape == (1, 5, size, size + 3)


def test_pspnet_weights_file_needs_no_head_options(tmp_path):
    net = small_psp(aux_loss=False, num_classes=7).eval()
    path = tmp_path / "psp.pt"
    torch.save(net.state_dict(), path)
    again = create_segmenter("pspnet_resnet50", weights=path, backbone="resnet18", in_channels=1, channels=16).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    assert again.num_classes == 7 and again.aux_classifier is None


# ------------------------------------------------------------------------------------------- GCN
def small_gcn(**kw):
    torch.manual_seed(0)
    return create_segmenter("gcn_resnet152", **{"backbone": "resnet18", "in_channels": 1, "num_classes": 5, **kw})


def test_gcn_kernels_are_k_by_1_and_1_by_k_with_k_15():
    net = meta("gcn_resnet152")
    assert len(net.gcn) == 4
    for block, c in zip(net.gcn, (256, 512, 1024, 2048)):  # res-2 .. res-5
        assert block.left[0].weight.shape == (21, c, 15, 1) and block.left[1].weight.shape == (21, 21, 1, 15)
        assert block.right[0].weight.shape == (21, c, 1, 15) and block.right[1].weight.shape == (21, 21, 15, 1)
        assert all(m.bias is None for m in (*block.left, *block.right))
        assert not any(isinstance(m, nn.ReLU) for m in block.modules())  # "no nonlinearity" (Sec. 3.1)
    brs = [m for m in net.modules() if isinstance(m, BoundaryRefinement)]
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(brs) == 9 and len(ups) == 5  # Fig. 2: 4 lateral + 3 fusion + 2 final BRs; 3 + 2 deconvolutions
    assert all(u.kernel_size == (4, 4) and u.stride == (2, 2) for u in ups)


def test_global_conv_hand_case():
    # one channel, k = 3: left = column [1, 2, 3] (k x 1) then row [1, 0, -1] (1 x k); right = row [0, 1, 1] then
    # column [1, 0, 0]. Each branch is then the 3x3 kernel outer(column, row); conv2d correlates, so a unit impulse
    # at the centre of a 5x5 map comes out as the sum of the two kernels flipped in both axes.
    block = GlobalConv(1, 1, 3)
    with torch.no_grad():
        block.left[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1))
        block.left[1].weight.copy_(torch.tensor([1.0, 0.0, -1.0]).view(1, 1, 1, 3))
        block.right[0].weight.copy_(torch.tensor([0.0, 1.0, 1.0]).view(1, 1, 1, 3))
        block.right[1].weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1))
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    with torch.no_grad():
        y = block(x)[0, 0]
    # out[2 + i, 2 + j] = w[1 - i, 1 - j]
    left = torch.tensor([[-3.0, 0, 3], [-2, 0, 2], [-1, 0, 1]])  # outer([1, 2, 3], [1, 0, -1]) = [[1,0,-1],[2,0,-2],...]
    right = torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 1, 0]])  # flip of outer([1, 0, 0], [0, 1, 1])
    want = torch.zeros(5, 5)
    want[1:4, 1:4] = left + right
    assert torch.equal(y, want)
    # no nonlinearity: the block is linear in its input
    a, b = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 5, 5)
    with torch.no_grad():
        assert torch.allclose(block(2 * a - b), 2 * block(a) - block(b), atol=1e-5)


def test_boundary_refinement_is_residual_hand_case():
    br = BoundaryRefinement(1)
    with torch.no_grad():
        for conv, centre, bias in ((br.conv1, 1.0, -1.0), (br.conv2, 2.0, 0.5)):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = centre
            conv.bias.fill_(bias)
    x = torch.tensor([[[[0.0, 3.0], [1.0, -2.0]]]])
    # conv1: x - 1 = [[-1, 2], [0, -3]]; ReLU: [[0, 2], [0, 0]]; conv2: 2 * that + 0.5 = [[0.5, 4.5], [0.5, 0.5]]
    with torch.no_grad():
        assert torch.equal(br(x), torch.tensor([[[[0.5, 7.5], [1.5, -1.5]]]]))


def test_gcn_reads_res2_to_res5_and_upsamples_by_deconvolution():
    net = small_gcn().eval()
    seen = []
    for block in net.gcn:
        block.register_forward_hook(lambda m, a, out: seen.append((tuple(a[0].shape), tuple(out.shape))))
    ups = []
    for up in (*net.deconv, *net.deconv_final):
        up.register_forward_hook(lambda m, a, out: ups.append((a[0].shape[-1], out.shape[-1])))
    with torch.no_grad():
        y = net(torch.randn(1, 1, 64, 64))
    assert y.shape == (1, 5, 64, 64)
    assert seen == [((1, c, s, s), (1, 5, s, s)) for c, s in ((64, 16), (128, 8), (256, 4), (512, 2))]
    assert ups == [(2, 4), (4, 8), (8, 16), (16, 32), (32, 64)]
    # each deconvolution starts as bilinear interpolation, channel by channel: a constant map stays constant inside
    with torch.no_grad():
        up = net.deconv[0](torch.full((1, 5, 4, 4), 3.0))
    assert torch.allclose(up[..., 1:-1, 1:-1], torch.full_like(up[..., 1:-1, 1:-1], 3.0))


def test_gcn_every_score_map_reaches_the_output_through_the_fusion():
    # With each BR's second conv zeroed, every BR is the identity and the path from the four GCN score maps to the
    # output is linear (bias-free bilinear deconvolutions and sums): zero maps give zero, a map of ones on res-2
    # alone gives ones inside the output (two bilinear x2 steps), and each coarser map alone reaches it too.
    net = small_gcn().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, BoundaryRefinement):
                m.conv2.weight.zero_()
                m.conv2.bias.zero_()
    fill = {}
    for i, block in enumerate(net.gcn):
        block.register_forward_hook(lambda m, a, out, i=i: torch.full_like(out, fill.get(i, 0.0)))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), torch.zeros(1, 5, 64, 64))
        for i in range(4):
            fill.clear()
            fill[i] = 1.0
            y = net(x)
            assert y.abs().sum() > 0, f"the res-{i + 2} score map does not reach the output"
            if i == 0:
                assert torch.allclose(y[..., 4:-4, 4:-4], torch.ones_like(y[..., 4:-4, 4:-4]))
            if i == 3:  # res-5 alone: five x2 steps of a 2x2 map of ones; the centre stays 1
                assert y[..., 31:33, 31:33].allclose(torch.ones(1, 5, 2, 2))


@pytest.mark.parametrize("size", [64, 61, 33, 7, 1])
def test_gcn_output_has_the_input_size(size):
    net = small_gcn().eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, size, size + 5)).shape == (1, 5, size, size + 5)


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("build", [small_psp, small_gcn])
def test_input_errors(build):
    net = build().eval()
    with pytest.raises(ValueError, match="1 input channel"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="4-D input"):
        net(torch.randn(1, 32, 32))


@pytest.mark.parametrize(("name", "opts", "match"), [
    ("pspnet_resnet50", {"bins": []}, "bins must be a non-empty list"),
    ("pspnet_resnet50", {"bins": [1, 0]}, "bins must be a non-empty list"),
    ("pspnet_resnet50", {"output_stride": 4}, "output_stride must be 8"),
    ("pspnet_resnet50", {"backbone": "vgg11", "in_channels": 1}, "output_stride=None"),
    ("pspnet_resnet50", {"channels": 0}, "channels must be an integer >= 1"),
    ("gcn_resnet152", {"kernel_size": 14}, "kernel_size must be odd"),
    ("gcn_resnet152", {"backbone": "resnet20_cifar"}, "does not fit Fig. 2"),
    ("gcn_resnet152", {"num_classes": 0}, "num_classes must be an integer >= 1"),
    ("pspnet_resnet50", {"backbone_options": [1, 1, 1, 1]}, "backbone_options must be a dict"),
    ("pspnet_resnet50", {"backbone_options": {"output_stride": 16}}, "may not set output_stride"),
    ("gcn_resnet152", {"backbone_options": {"in_channels": 3}}, "may not set in_channels"),
])
def test_option_errors(name, opts, match):
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        create_segmenter(name, **opts)


def test_unknown_backbone_names_the_option():
    for name in ("pspnet_resnet50", "gcn_resnet152"):
        with pytest.raises(UnknownModelError, match="option backbone: unknown network 'resnet5'"):
            create_segmenter(name, backbone="resnet5")


# ------------------------------------------------------------------------------------------- digits recipes
@pytest.mark.parametrize("name", ["pspnet_resnet50", "gcn_resnet152"])
def test_backbone_options_reach_the_backbone(name):
    # one BasicBlock per stage instead of ResNet-18's two (Table 1 of He et al.: [2, 2, 2, 2])
    with torch.device("meta"):
        net = create_segmenter(name, backbone="resnet18", backbone_options={"layers": [1, 1, 1, 1]})
    body = net.backbone.model
    assert [len(getattr(body, f"layer{i}")) for i in (1, 2, 3, 4)] == [1, 1, 1, 1]


@pytest.mark.parametrize("name", ["pspnet_resnet50", "pspnet_resnet101", "gcn_resnet152"])
def test_digits_recipe_builds_and_takes_a_step(name):
    recipe = get_digits_recipe(name)
    torch.manual_seed(0)
    net = create_segmenter(name, in_channels=1, num_classes=11, **recipe["options"]).train()
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    out = net(torch.randn(2, 1, 64, 64))
    main = out[0] if isinstance(out, tuple) else out
    assert main.shape == (2, 11, 64, 64)
    if name.startswith("pspnet"):  # the recipe keeps the paper's output stride 8 (Sec. 3.2) and the aux head
        assert net.backbone.feature_info.reduction() == [8, 8] and isinstance(out, tuple)
    loss = sum(o.logsumexp(1).mean() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    opt.step()
