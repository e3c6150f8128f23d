"""Building blocks against their definitions."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.layers import ClassifierHead, ConvNormAct, DropPath, LocalResponseNorm, SEModule, get_act, get_attn


def lrn_by_formula(a: torch.Tensor, n=5, k=2.0, alpha=1e-4, beta=0.75) -> torch.Tensor:
    """AlexNet eq. (section 3.3), summed literally over j = max(0, i - n/2) .. min(N - 1, i + n/2)."""
    N = a.shape[1]
    b = torch.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        s = (a[:, lo:hi + 1] ** 2).sum(1)
        b[:, i] = a[:, i] / (k + alpha * s) ** beta
    return b


@pytest.mark.parametrize("n", [3, 5])
def test_lrn_matches_the_paper_formula(n):
    a = torch.randn(2, 9, 4, 5, dtype=torch.float64) * 30  # large activations make the sum matter
    lrn = LocalResponseNorm(size=n)
    assert lrn.size == n
    assert torch.allclose(lrn(a), lrn_by_formula(a, n=n), rtol=1e-10, atol=1e-12)


def test_lrn_defaults_are_alexnets_constants():
    """Section 3.3: "k = 2, n = 5, alpha = 10^-4, and beta = 0.75", the values a user gets without arguments."""
    lrn = LocalResponseNorm()
    assert (lrn.k, lrn.alpha, lrn.beta, lrn.size) == (2.0, 1e-4, 0.75, 5)
    a = torch.randn(2, 9, 4, 5, dtype=torch.float64) * 30
    assert torch.allclose(lrn(a), lrn_by_formula(a, n=5, k=2.0, alpha=1e-4, beta=0.75), rtol=1e-10, atol=1e-12)


def test_lrn_differs_from_torch_alpha_convention():
    a = torch.randn(1, 8, 3, 3) * 50
    torch_lrn = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)  # divides alpha by n
    assert not torch.allclose(LocalResponseNorm()(a), torch_lrn(a))


@pytest.mark.parametrize("name,ref", [
    ("relu", torch.relu), ("relu6", lambda x: x.clamp(0, 6)), ("silu", lambda x: x * torch.sigmoid(x)),
    ("h_swish", lambda x: x * (x + 3).clamp(0, 6) / 6), ("h_sigmoid", lambda x: (x + 3).clamp(0, 6) / 6),
    ("gelu", torch.nn.functional.gelu), ("leaky_relu", lambda x: torch.where(x > 0, x, 0.01 * x)),
])
def test_activation_factory(name, ref):
    x = torch.linspace(-8, 8, 101)
    assert torch.allclose(get_act(name)(x), ref(x), atol=1e-6)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="valid:.*relu6"):
        get_act("relu7")


def test_conv_norm_act_same_padding_and_bias():
    m = ConvNormAct(3, 8, 5, stride=2)
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 8, 8, 8)
    assert m.conv.bias is None and isinstance(m.bn, torch.nn.BatchNorm2d)
    assert ConvNormAct(3, 8, norm_layer=None).conv.bias is not None


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    y = dp(torch.ones(4000, 3, 2, 2))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # a sample is dropped whole
    assert abs(y.mean().item() - 1.0) < 0.05
    assert torch.equal(dp.eval()(torch.ones(3, 2)), torch.ones(3, 2))
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_classifier_head_dense_mode_equals_pooled_fc():
    head = ClassifierHead(16, 5)
    x = torch.randn(2, 16, 3, 3)
    dense = ClassifierHead(16, 5, use_conv=True)
    dense.load_state_dict(head.state_dict())
    class_map = dense(x)
    assert class_map.shape == (2, 5, 3, 3)
    # averaging the class map equals classifying the averaged features (the fc is linear)
    assert torch.allclose(class_map.mean((2, 3)), head(x), atol=1e-6)
    head.reset(3)
    assert head(x).shape == (2, 3)
    with pytest.raises(ValueError, match="pool type"):
        ClassifierHead(16, 5, pool_type="median")


def test_se_module_scales_channels_by_a_gate():
    se = SEModule(32, reduction=16)
    assert se.fc1.out_channels == 2
    x = torch.randn(2, 32, 4, 4)
    y = se(x)
    ratio = y / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)  # one scale per channel
    assert ((ratio > 0) & (ratio < 1)).all()
    assert get_attn("se") is SEModule and get_attn(None) is None
    with pytest.raises(ValueError, match="valid"):
        get_attn("nonlocal")
