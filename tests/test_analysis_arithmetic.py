"""The convolution arithmetic of the notes (cnnzoo.analysis.arithmetic), checked against torch and by hand."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.analysis import arithmetic as ar


@pytest.mark.parametrize(
    "size,k,s,p,d",
    [
        (224, 11, 4, 2, 1),
        (227, 11, 4, 0, 1),
        (55, 3, 2, 0, 1),
        (13, 3, 1, 1, 1),
        (32, 5, 1, 0, 1),
        (17, 3, 2, 1, 2),
        (7, 7, 1, 0, 1),
        (10, 3, 3, 0, 1),
    ],
)
def test_conv_output_size_matches_torch(size, k, s, p, d):
    x = torch.zeros(1, 1, size, size, device="meta")
    w = torch.zeros(1, 1, k, k, device="meta")
    assert ar.conv_output_size(size, k, s, p, d) == F.conv2d(x, w, stride=s, padding=p, dilation=d).shape[-1]


@pytest.mark.parametrize("size,k,s,p", [(13, 3, 2, 0), (14, 3, 2, 0), (112, 3, 2, 1), (6, 2, 2, 1)])
def test_conv_output_size_ceil_mode_matches_max_pool(size, k, s, p):
    x = torch.zeros(1, 1, size, size)
    assert ar.conv_output_size(size, k, s, p, ceil_mode=True) == F.max_pool2d(x, k, s, p, ceil_mode=True).shape[-1]


def test_conv_output_size_examples_from_the_notes():
    # AlexNet notes: (227 - 11) / 4 + 1 = 55, (55 - 3) / 2 + 1 = 27, (13 - 3 + 2) / 1 + 1 = 13
    assert ar.conv_output_size(227, 11, 4) == 55
    assert ar.conv_output_size(55, 3, 2) == 27
    assert ar.conv_output_size(13, 3, 1, 1) == 13


@pytest.mark.parametrize(
    "args,match",
    [
        ((5, 7), "impossible configuration"),
        ((5, 3, 1, 0, 3), "impossible"),
        ((0, 3), "size must be a positive"),
        ((5, 3, 0), "stride"),
        ((5, 3, 1, -1), "padding"),
    ],
)
def test_conv_output_size_rejects_impossible_configurations(args, match):
    with pytest.raises(ValueError, match=match):
        ar.conv_output_size(*args)


def test_receptive_field_forwards_and_backwards_agree():
    three_3x3 = [(3, 1)] * 3
    assert ar.receptive_field(three_3x3)[-1] == (7, 1)
    assert ar.receptive_field_backward(three_3x3) == 7
    # torchvision AlexNet features: conv11/4, pool3/2, conv5/1, pool3/2, conv3 x3, pool3/2 -> 195, jump 32
    alexnet = [(11, 4), (3, 2), (5, 1), (3, 2), (3, 1), (3, 1), (3, 1), (3, 2)]
    assert ar.receptive_field(alexnet)[-1] == (195, 32)
    assert ar.receptive_field_backward(alexnet) == 195
    for n in range(1, len(alexnet) + 1):  # the recurrence F(i) = (F(i+1) - 1) S + K, at every depth
        assert ar.receptive_field_backward(alexnet[:n]) == ar.receptive_field(alexnet[:n])[-1][0]
    # two neighbouring outputs of pool5 see one jump (32 px) more than one does
    assert ar.receptive_field_backward(alexnet, f=2) == 195 + 32
    assert ar.receptive_field([(3, 1, 2)])[-1] == (5, 1)  # dilation 2 spans 5 pixels


GRID = list(itertools.product([1, 2], [0, 1, 2], [1, 2], [1, 2, 4], [(3, 3), (1, 1), (2, 3)]))


@pytest.mark.parametrize("stride,padding,dilation,groups,kernel", GRID)
def test_im2col_conv_matches_conv2d_and_its_backward_matches_autograd(stride, padding, dilation, groups, kernel):
    g = torch.Generator().manual_seed(stride * 100 + padding * 10 + dilation + groups)
    x = torch.randn(2, 4, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 4 // groups, *kernel, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    ref = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    ours = ar.conv2d_im2col(x, w, b, stride, padding, dilation, groups)
    torch.testing.assert_close(ours, ref)
    grad_out = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    gx, gw, gb = torch.autograd.grad(ref, (x, w, b), grad_out)
    hx, hw, hb = ar.conv2d_im2col_backward(x.detach(), w.detach(), grad_out, stride, padding, dilation, groups)
    torch.testing.assert_close(hx, gx)
    torch.testing.assert_close(hw, gw)
    torch.testing.assert_close(hb, gb)


def test_im2col_matches_unfold_and_col2im_matches_fold():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    cols = ar.im2col(x, (3, 2), stride=2, padding=1, dilation=(1, 2))
    torch.testing.assert_close(cols, F.unfold(x, (3, 2), dilation=(1, 2), padding=1, stride=2))
    torch.testing.assert_close(
        ar.col2im(cols, (7, 6), (3, 2), 2, 1, (1, 2)),
        F.fold(cols, (7, 6), (3, 2), dilation=(1, 2), padding=1, stride=2),
    )
    # col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>
    c = torch.randn_like(cols)
    torch.testing.assert_close((cols * c).sum(), (x * ar.col2im(c, (7, 6), (3, 2), 2, 1, (1, 2))).sum())


def test_im2col_conv_rejects_mismatched_groups():
    with pytest.raises(ValueError, match="groups=2"):
        ar.conv2d_im2col(torch.zeros(1, 3, 5, 5), torch.zeros(4, 1, 3, 3), groups=2)


def test_stacked_3x3_versus_one_7x7():
    # VGG Sec. 2.3: three 3x3 convs, C -> C: 27 C^2 weights; one 7x7: 49 C^2; same 7x7 receptive field
    for c in (1, 64, 512):
        assert ar.stacked_conv_params(c, 3, 3) == 27 * c * c
        assert ar.conv_params(c, c, 7) == 49 * c * c
    assert ar.stacked_conv_params(1, 3, 2) == 18 and ar.conv_params(1, 1, 5) == 25  # two 3x3 vs 5x5
    assert ar.receptive_field_backward([(3, 1)] * 3) == ar.receptive_field_backward([(7, 1)])
    conv = torch.nn.Conv2d(64, 64, 3, bias=False)
    assert ar.conv_params(64, 64, 3) == conv.weight.numel()


@pytest.mark.parametrize("n,dk,m,df", [(1024, 3, 512, 7), (64, 3, 32, 112), (256, 5, 128, 14)])
def test_depthwise_separable_ratio_is_one_over_n_plus_one_over_dk2(n, dk, m, df):
    standard = ar.conv_macs(df, df, m, n, dk)
    separable = ar.depthwise_separable_macs(dk, m, n, df)
    assert separable / standard == pytest.approx(ar.depthwise_separable_ratio(n, dk))
    assert ar.depthwise_separable_ratio(n, dk) == pytest.approx(1 / n + 1 / dk**2)
    # the same count from real layers: a depthwise (groups=M) plus a pointwise conv
    dw = ar.conv_macs(df, df, m, m, dk, groups=m) + ar.conv_macs(df, df, m, n, 1)
    assert dw == separable
    if n >= 256:  # MobileNets Sec. 3.1: 3x3 separable convs cost "8 to 9 times less computation"
        assert 1 / 9 < ar.depthwise_separable_ratio(n, 3) < 1 / 8


def test_mobilenet_width_and_resolution_multipliers():
    base = ar.mobilenet_macs(3, 512, 512, 14)
    assert base == ar.depthwise_separable_macs(3, 512, 512, 14)
    # rho scales every term by rho^2 exactly; alpha scales the dominant pointwise term by alpha^2
    assert ar.mobilenet_macs(3, 512, 512, 14, rho=0.5) == pytest.approx(base * 0.25)
    half = ar.mobilenet_macs(3, 512, 512, 14, alpha=0.5)
    assert half == pytest.approx(3 * 3 * 256 * 14 * 14 + 256 * 256 * 14 * 14)
    assert 0.25 < half / base < 0.26
    with pytest.raises(ValueError, match="alpha"):
        ar.mobilenet_macs(3, 8, 8, 7, alpha=1.5)


def test_inception_module_costs_from_the_notes():
    # 28x28x256 input; naive: 1x1 128, 3x3 192, 5x5 96 on all 256 channels
    assert ar.inception_module_macs(28, 28, 256, 128, 192, 96) == 854_196_224
    # with 1x1 reductions (3x3 reduce 64, 5x5 reduce 64, pool projection 64). The notes print 358M,
    # but their own terms add up to 271,351,808: this checks the arithmetic, not the printed total.
    reduced = ar.inception_module_macs(28, 28, 256, 128, 192, 96, n3x3_reduce=64, n5x5_reduce=64, pool_proj=64)
    assert reduced == 271_351_808
    terms = [256 * 128, 256 * 64, 64 * 192 * 9, 256 * 64, 64 * 96 * 25, 256 * 64]
    assert reduced == 28 * 28 * sum(terms)


def test_inception_module_cost_equals_traced_macs_of_real_layers():
    from cnnzoo.analysis import summarize

    class Naive(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b1 = torch.nn.Conv2d(256, 128, 1, bias=False)
            self.b3 = torch.nn.Conv2d(256, 192, 3, padding=1, bias=False)
            self.b5 = torch.nn.Conv2d(256, 96, 5, padding=2, bias=False)

        def forward(self, x):
            return torch.cat([self.b1(x), self.b3(x), self.b5(x), F.max_pool2d(x, 3, 1, 1)], 1)

    with torch.device("meta"):
        s = summarize(Naive(), (256, 28, 28))
    assert s.macs == ar.inception_module_macs(28, 28, 256, 128, 192, 96)
