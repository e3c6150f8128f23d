"""ZFNet's deconvnet (Zeiler & Fergus 2014, Sec. 2.1, Fig. 2): unpooling with switches, projections, top-k patches.

Every expected value below is computed by hand in the comments (the paper's three rules applied step by step).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.explain.deconvnet import deconvnet_projection, layer_field, top_activations, unpool_with_switches

# A 4x4 map, its 2x2 stride-2 max pooling worked out by hand:
#   window (0,0): 1 3 / 2 0 -> 3 at (0,1), flat 1      window (0,1): 0 2 / 1 4 -> 4 at (1,3), flat 7
#   window (1,0): 0 5 / 2 1 -> 5 at (2,1), flat 9      window (1,1): 6 1 / 3 0 -> 6 at (2,2), flat 10
X4 = torch.tensor([[1., 3, 0, 2],
                   [2, 0, 1, 4],
                   [0, 5, 6, 1],
                   [2, 1, 3, 0]])
SWITCHES = torch.tensor([[1, 7], [9, 10]])


def test_unpool_with_switches_hand_case():
    pooled, idx = F.max_pool2d(X4.view(1, 1, 4, 4), 2, return_indices=True)
    assert pooled.view(2, 2).tolist() == [[3, 4], [5, 6]]
    assert idx.view(2, 2).tolist() == SWITCHES.tolist()  # PyTorch's switches are the hand ones
    y = torch.tensor([[10., 20], [30, 40]]).view(1, 1, 2, 2)
    out = unpool_with_switches(y, SWITCHES.view(1, 1, 2, 2), (4, 4))
    assert out.view(4, 4).tolist() == [[0, 10, 0, 0],
                                       [0, 0, 0, 20],
                                       [0, 30, 40, 0],
                                       [0, 0, 0, 0]]
    # switches not at any window's top-left corner: flat 5 = (1,1), 2 = (0,2), 12 = (3,0), 15 = (3,3); (C, h, w) input
    out = unpool_with_switches(torch.tensor([[[1., 2], [3, 4]]]), torch.tensor([[[5, 2], [12, 15]]]), (1, 4, 4))
    assert out[0].tolist() == [[0, 0, 2, 0],
                               [0, 1, 0, 0],
                               [0, 0, 0, 0],
                               [3, 0, 0, 4]]


def test_unpool_equals_max_unpool2d_and_the_max_pool_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 6, generator=g)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    torch.testing.assert_close(unpool_with_switches(y, idx, x.shape), F.max_unpool2d(y, idx, 2, output_size=x.shape))
    # overlapping 3x3 stride-2 windows (AlexNet, ZFNet) can share a maximum: the adjoint sums, as autograd does
    x = torch.randn(2, 3, 9, 9, generator=g, requires_grad=True)
    y, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    signal = torch.randn(y.shape, generator=g)
    (grad,) = torch.autograd.grad(y, x, signal)
    torch.testing.assert_close(unpool_with_switches(signal, idx, x.shape), grad)


def test_unpool_rejects_bad_input():
    y, idx = torch.ones(1, 1, 2, 2), SWITCHES.view(1, 1, 2, 2)
    with pytest.raises(ValueError, match="same"):
        unpool_with_switches(y, idx.view(1, 1, 4), (4, 4))
    with pytest.raises(ValueError, match="outside the 3x3"):
        unpool_with_switches(y, idx, (3, 3))  # switch 10 does not fit a 3x3 plane
    with pytest.raises(ValueError, match="integer"):
        unpool_with_switches(y, idx.float(), (4, 4))


def _hand_net(x4=X4):
    """conv1 (1x1, weight 1) -> ReLU -> 2x2 max-pool -> conv2 (2x2, [[1, -1], [2, 1]]) -> ReLU; no biases."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(1, 1, 2, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[3].weight.copy_(torch.tensor([[1., -1], [2, 1]]).view(1, 1, 2, 2))
    return net, x4.view(1, 1, 4, 4)


def test_projection_hand_net():
    # forward: pooled [[3, 4], [5, 6]], conv2 = 3*1 + 4*(-1) + 5*2 + 6*1 = 15, ReLU -> 15 (the one activation).
    # down: rectify 15 -> 15; transposed conv2: 15 * [[1, -1], [2, 1]] = [[15, -15], [30, 15]];
    # unpool to the switches (0,1), (1,3), (2,1), (2,2); rectify: the -15 at (1,3) becomes 0 although the forward
    # activation there was 4 > 0 (backprop would keep -15); transposed conv1 (weight 1): unchanged.
    net, x = _hand_net()
    proj = deconvnet_projection(net, x, "4")
    assert proj.view(4, 4).tolist() == [[0, 15, 0, 0],
                                        [0, 0, 0, 0],
                                        [0, 30, 15, 0],
                                        [0, 0, 0, 0]]
    # only the switch decides where 15 lands: the 3 of window (0,0) moved from (0,1) to (1,0), same pooled values
    moved = X4.clone()
    moved[0, 1], moved[1, 0] = 2, 3
    net, x = _hand_net(moved)
    assert deconvnet_projection(net, x, "4").view(4, 4)[:2, :2].tolist() == [[0, 0], [15, 0]]


def test_projection_through_transposed_filters_and_layers_below():
    # project from the pool (layer "2"): channel 0, strongest = 6 at pooled (1,1), switch (2,2); nothing else kept
    net, x = _hand_net()
    proj = deconvnet_projection(net, x, "2", channel=0)
    expected = torch.zeros(4, 4)
    expected[2, 2] = 6
    assert torch.equal(proj.view(4, 4), expected)
    # a 2x2 conv projected from a single unit: the filter, scaled by the activation, placed at the unit's window
    conv = nn.Conv2d(1, 1, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1., 2], [3, 4]]).view(1, 1, 2, 2))
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 2, 2] = 1.0  # the window at (1,1) sees it with weight 4: activation 4, the only nonzero one
    proj = deconvnet_projection(nn.Sequential(conv), x, "0", channel=0)
    assert proj.view(3, 3).tolist() == [[0, 0, 0], [0, 4, 8], [0, 12, 16]]


class _FunctionalReLU(nn.Module):
    """conv1 (1x1, weight 1) -> F.relu -> conv2 (2x2 of ones) -> F.relu, written functionally."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0)
            self.conv2.weight.fill_(1.0)
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(F.relu(self.conv2(F.relu(self.conv1(x)))))


@pytest.mark.parametrize("build", ["modules", "inplace", "functional"])
def test_rectification_is_of_the_signal_not_gated_by_the_forward(build):
    # x = [[1, -2], [3, 4]]: conv1 keeps it, ReLU -> [[1, 0], [3, 4]], conv2 (ones) -> 8, ReLU -> 8.
    # deconvnet: 8 -> rectify -> conv2^T: [[8, 8], [8, 8]] -> rectify (the signal is positive) -> [[8, 8], [8, 8]].
    # guided backprop / backprop gate by the forward activation: (0, 1) was -2 < 0, so they give [[8, 0], [8, 8]].
    if build == "functional":
        net, layer = _FunctionalReLU(), "out"
    else:
        net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(inplace=build == "inplace"),
                            nn.Conv2d(1, 1, 2, bias=False), nn.ReLU(inplace=build == "inplace"))
        with torch.no_grad():
            net[0].weight.fill_(1.0)
            net[2].weight.fill_(1.0)
        layer = "3"
    x = torch.tensor([[1., -2], [3, 4]]).view(1, 1, 2, 2)
    proj = deconvnet_projection(net, x, layer)
    assert proj.view(2, 2).tolist() == [[8, 8], [8, 8]]
    guided = [[8, 0], [8, 8]]
    assert proj.view(2, 2).tolist() != guided
    # the forward itself is the network's (an in-place ReLU still rectifies its input)
    assert torch.equal(x, torch.tensor([[1., -2], [3, 4]]).view(1, 1, 2, 2))
    if build != "functional":
        assert net[1].inplace == (build == "inplace")


def test_channel_none_takes_each_images_strongest_channel():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    net = nn.Sequential(conv)
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 1] = 3.0   # channel 0 sees +3 (channel 1: -3): keeps 3 at (0,1); back through weight 1 -> 3
    x[1, 0, 1, 0] = -5.0  # channel 1 sees +5: keeps 5 at (1,0); back through weight -1 -> -5
    proj = deconvnet_projection(net, x, "0")
    assert proj[0, 0].tolist() == [[0, 3], [0, 0]]
    assert proj[1, 0].tolist() == [[0, 0], [-5, 0]]


def test_layer_choice_and_errors_on_lenet5():
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5")
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(deconvnet_projection(model, x), deconvnet_projection(model, x, "features.5"))
    with pytest.raises(ValueError, match="features.55"):
        deconvnet_projection(model, x, "features.55")
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        deconvnet_projection(model, x, "features.5", channel=16)
    with pytest.raises(ValueError, match="not a \\(N, C, h, w\\) feature map"):
        deconvnet_projection(model, x, "fc")
    with pytest.raises(ValueError, match="float batch"):
        deconvnet_projection(model, x[0], "features.5")


def test_model_is_left_as_it_was():
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", drop_rate=0.5)
    model.train()
    model.classifier.eval()  # a mixed state is restored module by module
    deconvnet_projection(model, torch.randn(1, 1, 32, 32))
    top_activations(model, torch.randn(3, 1, 32, 32), None, 0, k=2)
    assert model.training and model.features.training and not model.classifier.training
    assert all(p.grad is None for p in model.parameters())


def test_projection_lies_in_the_receptive_field_lenet5():
    # lenet5 features.5 by hand: conv5 -> rf 5; pool2 -> 6, jump 2; conv5 -> 6 + 4*2 = 14; pool2 -> 14 + 1*2 = 16,
    # jump 4; no padding, so unit (i, j) sees rows 4i..4i+15
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5")
    field = layer_field(model, "features.5", (1, 32, 32))
    assert (field.rf, field.jump, field.offset, field.map_hw) == ((16, 16), (4, 4), (0, 0), (5, 5))
    x = torch.randn(3, 1, 32, 32)
    top = top_activations(model, x, "features.5", 7, k=3)
    for i, (r, c), (t, left, b, right) in zip(top.indices, top.positions.tolist(), top.boxes.tolist()):
        assert (t, left, b, right) == (4 * r, 4 * c, 4 * r + 15, 4 * c + 15)
        proj = deconvnet_projection(model, x[i:i + 1], "features.5", channel=7)[0, 0]
        inside = torch.zeros_like(proj, dtype=torch.bool)
        inside[t:b + 1, left:right + 1] = True
        assert proj.abs().sum() > 0 and not proj[~inside].any()
        torch.testing.assert_close(top.projections[list(top.indices).index(i), 0], proj[t:b + 1, left:right + 1])


def test_layer_field_with_padding():
    # conv 3x3 pad 1 -> pool 2: rf 3 + 1*1 = 4, jump 2; unit 0's field starts one pixel before the image
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    field = layer_field(net, "2", (1, 10, 10))
    assert (field.rf, field.jump, field.offset) == ((4, 4), (2, 2), (-1, -1))
    assert field.box(2, 3) == (3, 5, 6, 8)


def test_layer_field_larger_than_the_image():
    # three 3x3 stride-2 pad-1 convs: rf 3, 7, 15, jump 2, 4, 8, offset -1, -1 - 2 = -3, -3 - 4 = -7; at 8x8 the
    # map is 1x1 and its field (rows -7..7) overhangs both sides (centring it on the image would say -4)
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, stride=2, padding=1) for _ in range(3)])
    field = layer_field(net, "2", (1, 8, 8))
    assert (field.rf, field.jump, field.offset, field.map_hw) == ((15, 15), (8, 8), (-7, -7), (1, 1))


def _spot_net():
    """conv 3x3 pad 1 whose channel 0 copies its input (centre tap 1) -> ReLU -> 2x2 max-pool."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0, 1, 1] = 1.0
        net[0].weight[1].fill_(-1.0)
    return net


def test_top_activations_hand_dataset():
    # 12 blank 10x10 images; image i has one bright pixel of value i + 1 at (5, 6), except image 11 (value 12 at
    # (0, 0)) and image 0, which has three bright pixels 100, 90, 80: ranking positions instead of images would
    # give image 0 three times.
    images = torch.zeros(12, 1, 10, 10)
    for i in range(1, 11):
        images[i, 0, 5, 6] = i + 1
    images[11, 0, 0, 0] = 12
    images[0, 0, 1, 1], images[0, 0, 5, 5], images[0, 0, 8, 2] = 100, 90, 80
    top = top_activations(_spot_net(), images, "2", 0, k=3, batch_size=5)
    assert top.indices.tolist() == [0, 11, 10]  # distinct images, strongest first
    assert top.values.tolist() == [100, 12, 11]
    # pooled positions: (1,1) -> (0,0); (0,0) -> (0,0); (5,6) -> (2,3); fields (layer_field_with_padding):
    # top = -1 + 2i, left = -1 + 2j, 4x4
    assert top.positions.tolist() == [[0, 0], [0, 0], [2, 3]]
    assert top.boxes.tolist() == [[-1, -1, 2, 2], [-1, -1, 2, 2], [3, 5, 6, 8]]
    assert top.patches.shape == top.projections.shape == (3, 1, 4, 4)
    expected = torch.zeros(3, 1, 4, 4)
    expected[0, 0, 2, 2] = 100  # (1, 1) in a box starting at (-1, -1)
    expected[1, 0, 1, 1] = 12  # (0, 0): the patch's first row and column lie outside the image (zeros)
    expected[2, 0, 2, 1] = 11  # (5, 6) in a box starting at (3, 5)
    assert torch.equal(top.patches, expected)
    # the projection of one bright pixel through the copying filter is that pixel, at the activation's value
    assert torch.equal(top.projections, expected)


def test_top_activations_limits():
    images = torch.zeros(2, 1, 10, 10)
    images[1, 0, 3, 3] = 1.0
    top = top_activations(_spot_net(), images, "2", 0, k=9)
    assert top.indices.tolist() == [1, 0]  # fewer images than k: all of them
    with pytest.raises(ValueError, match="k must be"):
        top_activations(_spot_net(), images, "2", 0, k=0)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        top_activations(_spot_net(), images, "2", 2)


@pytest.mark.slow
def test_zfnet_overlapping_pools_top_activations():
    # ZFNet's Fig. 3 net at 224: overlapping 3x3/2 ceil-mode pools and LRN on the way down
    torch.manual_seed(0)
    model = cnnzoo.create_model("zfnet", num_classes=10)
    images = torch.randn(3, 3, 224, 224)
    layer = model.feature_info[1]["module"]
    top = top_activations(model, images, layer, 5, k=2)
    p = top.field.rf
    assert top.patches.shape == top.projections.shape == (2, 3, *p)
    assert len(set(top.indices.tolist())) == 2 and top.values[0] >= top.values[1]
    for i, box in zip(top.indices.tolist(), top.boxes.tolist()):
        proj = deconvnet_projection(model, images[i:i + 1], layer, channel=5)[0]
        t, left, b, r = box
        inside = torch.zeros_like(proj, dtype=torch.bool)
        inside[:, max(t, 0):b + 1, max(left, 0):r + 1] = True
        assert proj.abs().sum() > 0 and not proj[~inside].any()
