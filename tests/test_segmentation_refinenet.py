"""RefineNet (Lin, Milan, Shen, Reid, CVPR 2017): parameter count derived by hand from Sec. 3 / Fig. 2(c) / Fig. 3,
the building blocks on hand cases (residual conv unit, multi-resolution fusion upsampling, chained residual
pooling), output size = input size (also for sizes not divisible by 32), the backbone through the features API,
input errors, and a short learning check on digits-segmentation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import create_model
from cnnzoo.models.features import FeatureListNet
from cnnzoo.registry import UnknownModelError, UnknownOptionError
from cnnzoo.segmentation import ConfusionMatrix, digits_segmentation
from cnnzoo.segmentation.models.refinenet import RCU, ChainedResidualPooling, MultiResolutionFusion, RefineNet
from cnnzoo.segmentation.registry import create_segmenter, get_digits_recipe, get_segmenter_card, list_segmenters

NAME = "refinenet_resnet101"
SMALL = {"backbone": "resnet18", "refine_channels": 8, "in_channels": 1, "num_classes": 5}


# ------------------------------------------------------------------------------------------- counts, by hand
# Sec. 3.2 / Fig. 3 with the biases of the authors' code: an RCU is ReLU-conv3x3 (bias)-ReLU-conv3x3 (no bias);
# fusion, CRP and the dimension-reducing convs are 3x3 without bias; the classifier a 1x1 conv with bias.
def rcu(c):
    return (9 * c * c + c) + 9 * c * c


def conv3(a, b):
    return 9 * a * b


def head_by_hand(res_channels, c, k, crp=2):
    """Everything but the backbone for backbone maps of widths ``res_channels`` (res2..res5), width C (RefineNet-4
    at 2C), ``crp`` pooling blocks and K classes (Fig. 2(c): RefineNet-4 on res5 alone, 3..1 on two paths)."""
    r2, r3, r4, r5 = res_channels
    reduce = conv3(r5, 2 * c) + conv3(r4, c) + conv3(r3, c) + conv3(r2, c)
    refine4 = 2 * rcu(2 * c) + crp * conv3(2 * c, 2 * c) + rcu(2 * c)  # adapt, (no fusion), CRP, output RCU
    refine3 = 2 * rcu(c) + 2 * rcu(2 * c) + conv3(c, c) + conv3(2 * c, c) + crp * conv3(c, c) + rcu(c)
    refine21 = 2 * (4 * rcu(c) + 2 * conv3(c, c) + crp * conv3(c, c) + rcu(c))
    final = 2 * rcu(c) + (c * k + k)  # two more RCUs, the 1x1 classifier
    return reduce + refine4 + refine3 + refine21 + final


# torchvision's published ResNet counts less the 1000-way fc (512 or 2048 -> 1000 + bias)
RESNET101 = 44_549_160 - (2048 * 1000 + 1000)
RESNET50 = 25_557_032 - (2048 * 1000 + 1000)
RESNET18 = 11_689_512 - (512 * 1000 + 1000)
BOTTLENECK_MAPS, BASIC_MAPS = (256, 512, 1024, 2048), (64, 128, 256, 512)


@pytest.fixture(scope="module")
def paper_net():
    """The paper's network (ResNet-101, 21 classes), built on the meta device once for the module."""
    with torch.device("meta"):
        return create_segmenter(NAME)


def test_hand_arithmetic_written_out():
    assert (rcu(512), rcu(256)) == (4_719_104, 1_179_904)
    assert conv3(2048, 512) + conv3(1024, 256) + conv3(512, 256) + conv3(256, 256) == 13_565_952
    assert head_by_hand(BOTTLENECK_MAPS, 256, 0) == 67_246_336
    assert RESNET101 + head_by_hand(BOTTLENECK_MAPS, 256, 21) == 109_751_893
    assert RESNET50 + head_by_hand(BOTTLENECK_MAPS, 256, 21) == 90_759_765


def test_parameter_count_by_hand(paper_net):
    assert sum(p.numel() for p in paper_net.parameters()) == RESNET101 + head_by_hand(BOTTLENECK_MAPS, 256, 21)


@pytest.mark.parametrize(("options", "want"), [
    ({"backbone": "resnet50"}, RESNET50 + head_by_hand(BOTTLENECK_MAPS, 256, 21)),
    ({"backbone": "resnet50", "num_classes": 3}, RESNET50 + head_by_hand(BOTTLENECK_MAPS, 256, 3)),
    ({"backbone": "resnet50", "crp_blocks": 4}, RESNET50 + head_by_hand(BOTTLENECK_MAPS, 256, 21, crp=4)),
    ({"backbone": "resnet18", "refine_channels": 32}, RESNET18 + head_by_hand(BASIC_MAPS, 32, 21)),
])
def test_parameter_count_by_hand_for_the_options(options, want):
    with torch.device("meta"):
        net = create_segmenter(NAME, **options)
    assert sum(p.numel() for p in net.parameters()) == want


def test_block_counts_and_widths_follow_sec_3_2(paper_net):
    net = paper_net

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(net.refine4) == 18_875_904  # 3 RCU(512) + CRP(512)
    assert count(net.refine3) == 15_927_040
    assert count(net.refine2) == count(net.refine1) == 8_258_816
    assert [m.out_channels for m in net.reduce] == [256, 256, 256, 512]  # res2..res4 -> 256, res5 -> 512
    assert len(net.refine4.fusion.convs) == 0  # one input path passes unchanged
    assert [c.weight.shape[:2] for c in net.refine3.fusion.convs] == [(256, 256), (256, 512)]  # to the smallest
    assert len(net.refine1.crp.convs) == 2 and net.refine1.crp.pool.kernel_size == 5
    assert net.classifier.kernel_size == (1, 1) and net.classifier.out_channels == 21
    assert not any(isinstance(m, nn.BatchNorm2d) for name in ("reduce", "refine4", "refine3", "refine2", "refine1",
                                                              "head") for m in getattr(net, name).modules())


# ------------------------------------------------------------------------------------------- hand cases
def _center_tap(conv, value):
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1] = value * torch.eye(conv.weight.shape[0], conv.weight.shape[1])
        if conv.bias is not None:
            conv.bias.zero_()


def test_rcu_is_a_preactivation_residual_unit():
    unit = RCU(1)
    assert unit.conv1.bias is not None and unit.conv2.bias is None
    x = torch.tensor([-2.0, -0.5, 0.0, 1.5, 3.0]).reshape(1, 1, 1, 5)
    with torch.no_grad():
        unit.conv2.weight.zero_()
        assert torch.equal(unit(x), x)  # a zero branch leaves the identity, negatives included (no ReLU after the sum)
    _center_tap(unit.conv1, 1.0)
    _center_tap(unit.conv2, 1.0)
    with torch.no_grad():
        assert torch.equal(unit(x), x + x.clamp(min=0))  # x + relu(relu(x))
        _center_tap(unit.conv1, -1.0)  # the branch relu(-relu(x)) is 0: the ReLU *before* conv1 is there
        assert torch.equal(unit(x), x)


def test_multi_resolution_fusion_upsamples_to_the_largest_map_and_sums():
    fusion = MultiResolutionFusion((1, 1), 1)
    for conv in fusion.convs:
        _center_tap(conv, 1.0)
    coarse = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    fine = torch.full((1, 1, 4, 4), 10.0)
    # bilinear x2 with half-pixel centres: output pixel i samples (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
    # clamped at the border: weights of (a, b) per row/column
    w = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    want = 10.0 + w @ coarse[0, 0] @ w.T  # rows [1, 1.25, 1.75, 2], [1.5, ...] ... [3, 3.25, 3.75, 4]
    with torch.no_grad():
        assert torch.allclose(fusion([fine, coarse])[0, 0], want)
        assert torch.allclose(fusion([coarse, fine])[0, 0], want)  # the largest map wins whatever its position
        odd = fusion([torch.zeros(1, 1, 5, 6), torch.ones(1, 1, 3, 3)])
    assert odd.shape == (1, 1, 5, 6) and torch.allclose(odd, torch.ones(1, 1, 5, 6))
    widths = MultiResolutionFusion((4, 8), 4)  # Sec. 3.2: each path to the smallest width among the inputs
    assert [tuple(c.weight.shape) for c in widths.convs] == [(4, 4, 3, 3), (4, 8, 3, 3)]
    single = MultiResolutionFusion((6,), 6)
    x = torch.randn(1, 6, 3, 3)
    assert single([x]) is x and sum(p.numel() for p in single.parameters()) == 0
    with pytest.raises(ValueError, match="single path passes unchanged"):
        MultiResolutionFusion((6,), 4)


def test_chained_residual_pooling_hand_case():
    crp = ChainedResidualPooling(1, blocks=2)
    for conv in crp.convs:
        _center_tap(conv, 1.0)
    x = -torch.ones(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1.0
    with torch.no_grad():
        y = crp(x)[0, 0]
    # relu(x) = a single 1 at the centre; block 1 = 5x5 max-pool (stride 1, the map keeps its size) = 1 within
    # chessboard distance 2; block 2 pools block 1's output (chained): 1 within distance 4 = the whole 7x7 map.
    # Sum of the input and both blocks: 3 at the centre, 2 within distance 2, 1 elsewhere (negatives cut by the ReLU).
    dist = torch.maximum((torch.arange(7) - 3).abs()[:, None], (torch.arange(7) - 3).abs()[None, :])
    want = 1.0 + (dist <= 2).float() + (dist == 0).float()
    assert y.shape == (7, 7) and torch.equal(y, want)
    with torch.no_grad():
        for conv in crp.convs:
            _center_tap(conv, 0.5)  # each conv weights its pooled map in the sum
        y = crp(x)[0, 0]
    assert torch.equal(y, (dist == 0).float() + 0.5 * (dist <= 2).float() + 0.25)
    for h, w in ((6, 8), (1, 1), (2, 9)):
        assert crp(torch.randn(2, 1, h, w)).shape == (2, 1, h, w)


# ------------------------------------------------------------------------------------------- the network
def test_registered_with_card_and_recipe():
    assert NAME in list_segmenters("refinenet*")
    card = get_segmenter_card(NAME)
    assert card.paper.year == 2017 and "1611.06612" in card.paper.url
    assert "Key ideas" in card.notes and "This implementation" in card.notes
    assert any("crp" in d.lower() or "pooling" in d for d in card.deviations)
    recipe = get_digits_recipe(NAME)
    net = create_segmenter(NAME, in_channels=1, num_classes=11, **recipe["options"])
    assert isinstance(net, RefineNet) and net(torch.zeros(2, 1, 64, 64)).shape == (2, 11, 64, 64)


@pytest.mark.parametrize("size", [(64, 64), (65, 67), (33, 97), (1, 1), (7, 40)])
def test_output_has_the_input_size(size):
    torch.manual_seed(0)
    net = create_segmenter(NAME, **SMALL).eval()
    seen = {}
    for name in ("refine4", "refine3", "refine2", "refine1"):
        getattr(net, name).register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out.shape))
    with torch.no_grad():
        y = net(torch.randn(2, 1, *size))
    assert y.shape == (2, 5, *size) and net.output_size(size[0]) == size[0]
    h, w = size  # each stride-2 stage of the ResNet rounds up: the map at reduction r is ceil(H / r)
    for name, r, c in (("refine4", 32, 16), ("refine3", 16, 8), ("refine2", 8, 8), ("refine1", 4, 8)):
        assert seen[name] == (2, c, -(-h // r), -(-w // r)), name


def test_backbone_is_a_zoo_network_through_the_features_api(paper_net, tmp_path):
    net = paper_net
    assert isinstance(net.backbone, FeatureListNet)
    assert net.backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert net.backbone.feature_info.channels() == [256, 512, 1024, 2048]
    assert "backbone.layer3.22.conv3.weight" in net.state_dict() and "backbone.fc.weight" not in net.state_dict()
    # another family: MobileNet v1's maps at 4, 8, 16, 32 (it also has one at 2, skipped)
    mobile = create_segmenter(NAME, backbone="mobilenet_v1_025", refine_channels=8, num_classes=3)
    assert mobile.backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert mobile(torch.randn(1, 3, 50, 45)).shape == (1, 3, 50, 45)
    # backbone_weights: a resnet18 checkpoint loads into the backbone
    resnet = create_model("resnet18", in_channels=1)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    loaded = create_segmenter(NAME, **SMALL, backbone_weights=str(path))
    for k, v in loaded.backbone.state_dict().items():
        assert torch.equal(v, resnet.state_dict()[k]), k


def test_weights_file_loads_with_no_options(tmp_path):
    torch.manual_seed(0)
    net = create_segmenter(NAME, **SMALL, crp_blocks=3).eval()
    path = tmp_path / "refinenet.pth"
    torch.save(net.state_dict(), path)
    again = create_segmenter(NAME, weights=str(path)).eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    assert (again.num_classes, again.in_channels, len(again.refine1.crp.convs)) == (5, 1, 3)
    with pytest.raises(ValueError, match="refine_channels=16 contradicts the weights file"):
        create_segmenter(NAME, weights=str(path), refine_channels=16)


def test_input_and_option_errors():
    net = create_segmenter(NAME, **SMALL)
    with pytest.raises(ValueError, match="built for 1 input channel"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="4-D input"):
        net(torch.zeros(1, 32, 32))
    with torch.device("meta"):
        vgg = create_segmenter(NAME, backbone="vgg11", refine_channels=8)  # its pool5 needs 32 x 32
        assert vgg(torch.zeros(1, 3, 32, 32)).shape == (1, 21, 32, 32)
        with pytest.raises(ValueError, match="at least 32x32 pixels, got 31x32"):
            vgg(torch.zeros(1, 3, 31, 32))
    with pytest.raises(ValueError, match=r"reductions 4, 8, 16, 32, but resnet20_cifar has 1, 2, 4"):
        create_segmenter(NAME, backbone="resnet20_cifar")
    with pytest.raises(UnknownModelError, match="resnet1010"):
        create_segmenter(NAME, backbone="resnet1010")
    for key, bad in (("refine_channels", 0), ("crp_blocks", 0), ("num_classes", 0), ("crp_blocks", 1.5)):
        with pytest.raises(ValueError, match=f"{key} must be an integer"):
            create_segmenter(NAME, **{**SMALL, key: bad})
    with pytest.raises(UnknownOptionError, match="valid:.*backbone.*crp_blocks.*refine_channels"):
        create_segmenter(NAME, width_mult=0.5)


# ------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_learns_digits_segmentation_with_the_recipe_options():
    # The digits recipe's network (resnet18 backbone, refine_channels=32) in a short run on one thread: 100 steps of
    # 16 canvases from 400, Adam at 3x the recipe's lr (the full recipe, 8 epochs of 1,000 at 1e-3, takes minutes).
    # Measured: mean IU 0.163 (~1 s a step on a busy machine); predicting background everywhere scores 0.087.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        recipe = get_digits_recipe(NAME)
        train, test = digits_segmentation(num_train=400, num_test=100)
        net = create_segmenter(NAME, in_channels=1, num_classes=11, **recipe["options"])
        opt = torch.optim.Adam(net.parameters(), lr=3 * recipe["lr"])

        def norm(x):
            return (x.float() / 255 - 0.13) / 0.31

        g = torch.Generator().manual_seed(0)
        for _ in range(100):
            idx = torch.randint(0, len(train), (16,), generator=g)
            loss = F.cross_entropy(net(norm(train.images[idx])), train.masks[idx].long(), ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        cm = ConfusionMatrix(11)
        with torch.no_grad():
            for i in range(0, len(test), 50):
                cm.update(net(norm(test.images[i : i + 50])).argmax(1), test.masks[i : i + 50].long())
    finally:
        torch.set_num_threads(threads)
    assert cm.compute()["mean_iu"] > 0.087 + 0.04
