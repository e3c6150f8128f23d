"""The CIFAR ResNets of He et al. 2015 (section 4.2), their plain counterparts, and ResNeXt-29 (Xie et al. 2017)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers import ATTN_LAYERS
from cnnzoo.models.resnet import BasicBlock, Bottleneck, ShortcutA
from cnnzoo.models.resnet_cifar import CifarResNet


def n_params(name: str, **opts) -> int:
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **opts)
    return sum(p.numel() for p in model.parameters())


# Section 4.2 table of He et al. 2015: parameters as the paper prints them (in millions).
PAPER_PARAMS = [
    ("resnet20_cifar", 0.27, 2),
    ("resnet32_cifar", 0.46, 2),
    ("resnet44_cifar", 0.66, 2),
    ("resnet56_cifar", 0.85, 2),
    ("resnet110_cifar", 1.7, 1),
    ("resnet1202_cifar", 19.4, 1),
]


@pytest.mark.parametrize("name,millions,digits", PAPER_PARAMS)
def test_parameter_counts_match_the_paper(name, millions, digits):
    assert round(n_params(name) / 1e6, digits) == millions


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_plain_nets_have_the_same_layers_and_no_shortcut(depth):
    """Fig. 6: the plain and residual nets differ only by the parameter-free option-A shortcuts."""
    assert n_params(f"plain{depth}_cifar") == n_params(f"resnet{depth}_cifar")
    model = cnnzoo.create_model(f"plain{depth}_cifar")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == (depth - 2) // 2
    assert all(not b.residual and b.downsample is None for b in blocks)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) + 1 == depth  # + the fc


def test_option_a_shortcut_is_parameter_free_and_zero_fills():
    block = BasicBlock(16, 32, stride=2, shortcut="A")
    assert isinstance(block.downsample, ShortcutA)
    assert not list(block.downsample.parameters())
    x = torch.randn(2, 16, 8, 8)
    s = block.downsample(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, :16], x[:, :, ::2, ::2])
    assert not s[:, 16:].any()


def _zero_branch(block: nn.Module) -> None:
    """Make the residual branch output exactly zero (last BN scale and shift zero)."""
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)


def test_residual_block_adds_the_shortcut_and_plain_block_does_not():
    x = torch.randn(2, 16, 8, 8)
    res, plain = BasicBlock(16, 16, shortcut="A").eval(), BasicBlock(16, 16, shortcut="none").eval()
    _zero_branch(res)
    _zero_branch(plain)
    with torch.no_grad():
        assert torch.equal(res(x), torch.relu(x))  # y = ReLU(F(x) + x) with F = 0
        assert not plain(x).any()


@pytest.mark.parametrize("shortcut,extra", [("A", 0), ("B", 2), ("C", 2 + 3 * 3 - 2)])
def test_shortcut_options_b_and_c_add_projections(shortcut, extra):
    """Section 3.3: B projects only where the shape changes (2 places in ResNet-20), C on every block (9)."""
    model = cnnzoo.create_model("resnet20_cifar", shortcut=shortcut)
    projections = [m for m in model.modules() if isinstance(m, BasicBlock) and isinstance(m.downsample, nn.Sequential)]
    assert len(projections) == extra
    assert (n_params("resnet20_cifar", shortcut=shortcut) > n_params("resnet20_cifar")) == (extra > 0)


@pytest.mark.parametrize("shortcut", ["A", "B", "C", "none"])
def test_every_shortcut_option_runs_on_odd_sizes(shortcut):
    """The subsampled shortcut and the stride-2 conv agree on ceil(H/2) pixels (15 -> 8 -> 4)."""
    model = cnnzoo.create_model("resnet20_cifar", shortcut=shortcut).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 15, 15)).shape == (2, 64, 4, 4)


@pytest.mark.parametrize("name,zeroed", [("resnet20_cifar", True), ("plain20_cifar", False)])
def test_zero_init_last_only_where_there_is_a_shortcut(name, zeroed):
    """The default is the paper's init (every BN gamma 1); zero_init_last=True zeroes the last BN of residual
    blocks only (a plain net's output would be constant)."""
    blocks = [m for m in cnnzoo.create_model(name).modules() if isinstance(m, BasicBlock)]
    assert all(b.bn2.weight.eq(1).all() for b in blocks)
    blocks = [m for m in cnnzoo.create_model(name, zero_init_last=True).modules() if isinstance(m, BasicBlock)]
    assert all((not b.bn2.weight.any()) == zeroed for b in blocks)


@pytest.mark.parametrize("name,opts", [("resnet20_cifar", {}), ("resnext29_8x64d_cifar", {"base_width": 4}),
                                       ("wide_resnet16_8_cifar", {"widen_factor": 1}), ("preact_resnet110_cifar", {}),
                                       ("preact_resnet18", {})])
def test_residual_families_default_to_the_papers_initialisation(name, opts):
    """He et al. / Xie et al. / Zagoruyko & Komodakis initialise every conv with He's normal and every BN to
    (1, 0): no branch starts at zero."""
    model = cnnzoo.create_model(name, **opts)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.weight.eq(1).all() and m.bias.eq(0).all()
        elif isinstance(m, nn.Conv2d):
            assert m.weight.count_nonzero() == m.weight.numel()


def test_untrained_network_evaluates_as_it_trains_and_first_batch_sets_the_statistics():
    """FreshBatchNorm2d: no statistics yet -> eval mode normalises with the batch's own (what train mode does);
    the first training batch then sets the running statistics exactly (momentum 1), later ones move 10%."""
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20_cifar")
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        eval_out = model.eval()(x)
        train_out = model.train()(x)  # the first training batch
    torch.testing.assert_close(eval_out, train_out)
    stem_in = model.conv1(x).detach()
    torch.testing.assert_close(model.bn1.running_mean, stem_in.mean((0, 2, 3)))
    torch.testing.assert_close(model.bn1.running_var, stem_in.var((0, 2, 3), unbiased=True))
    assert model.bn1.num_batches_tracked == 1
    first = model.bn1.running_mean.clone()
    with torch.no_grad():
        model(x * 2)  # the second batch moves the statistics 10% of the way (nn.BatchNorm2d's momentum)
    torch.testing.assert_close(model.bn1.running_mean, 0.9 * first + 0.1 * 2 * stem_in.mean((0, 2, 3)))
    loaded = cnnzoo.create_model("resnet20_cifar")
    loaded.load_state_dict(cnnzoo.create_model("resnet20_cifar").state_dict())  # a checkpoint has statistics
    assert all(m.has_stats for m in loaded.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet1202_cifar", "preact_resnet1001_cifar"])
def test_very_deep_nets_evaluate_finite_at_init_with_the_papers_init(name):
    """What overflows: PyTorch's placeholder statistics (mean 0, var 1) make an untrained BN the identity in eval
    mode, and hundreds of He-initialised blocks each multiply the variance (ResNet-1202: inf/NaN logits,
    pre-act ResNet-1001: ~1e33). Normalising with the batch's statistics keeps train mode's scale."""
    torch.manual_seed(0)
    model = cnnzoo.create_model(name).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert model(x).abs().max() < 100
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.has_stats = True  # use the placeholders, as nn.BatchNorm2d does
        out = model(x)
    assert not torch.isfinite(out).all() or out.abs().max() > 1e20


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"depth": 21}, "6n\\+2"),
        ({"shortcut": "D"}, "'A', 'B', 'C' or 'none'"),
        ({"shortcut": None}, "unknown shortcut None; valid: 'A', 'B', 'C' or 'none'"),
        ({"shortcut": "none", "drop_path_rate": 0.1}, "needs shortcuts"),
        ({"widths": (16, 32)}, "3 positive"),
    ],
)
def test_bad_options_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        CifarResNet(**bad)


def _drop_path_rates(model: nn.Module) -> list[float]:
    return [m.drop_path.p for m in model.modules() if hasattr(m, "drop_path") and not isinstance(m, type(model))]


@pytest.mark.parametrize("name", ["resnet56_cifar", "resnext29_8x64d_cifar"])
def test_drop_path_rates_grow_linearly_with_depth(name):
    with torch.device("meta"):
        model = cnnzoo.create_model(name, drop_path_rate=0.2)
    rates = _drop_path_rates(model)
    assert len(rates) == (27 if name == "resnet56_cifar" else 9)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert steps == pytest.approx([0.2 / (len(rates) - 1)] * len(steps))


@pytest.mark.parametrize("attn", sorted(ATTN_LAYERS))
@pytest.mark.parametrize("name", ["resnet20_cifar", "plain20_cifar", "resnext29_8x64d_cifar"])
def test_attention_in_every_block(name, attn):
    small = {"layers": (1, 1, 1), "base_width": 4} if name.startswith("resnext") else {}  # placement is what counts
    model = cnnzoo.create_model(name, attn_layer=attn, **small)
    cls = ATTN_LAYERS[attn]
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert blocks and all(isinstance(b.attn, cls) for b in blocks)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


# Table 7 of Xie et al.: 34.4M and 68.1M. The paper truncates (68,155,210 -> 68.1); with a 100-way classifier
# 8x64d would print 34.5M, so the table's counts are for the 10-way (CIFAR-10) network.
@pytest.mark.parametrize("name,millions", [("resnext29_8x64d_cifar", 34.4), ("resnext29_16x64d_cifar", 68.1)])
def test_resnext29_parameter_counts_match_table7(name, millions):
    assert math.floor(n_params(name) / 1e5) / 10 == millions


@pytest.mark.parametrize("cardinality", [8, 16])
def test_resnext29_grouped_widths_double_per_stage(cardinality):
    with torch.device("meta"):
        model = cnnzoo.create_model(f"resnext29_{cardinality}x64d_cifar")
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 9  # 3 stages x 3 blocks: 9 * 3 convs + stem + fc = 29 layers
    for i, block in enumerate(blocks):
        stage = i // 3
        assert block.conv2.groups == cardinality
        assert block.conv2.in_channels == cardinality * 64 * 2**stage
        assert block.conv3.out_channels == 256 * 2**stage
        assert block.conv2.stride == ((2, 2) if i in (3, 6) else (1, 1))  # stride in the 3x3, as the authors' code


def test_resnext_cifar_forward_small():
    model = cnnzoo.create_model("resnext29_8x64d_cifar", layers=(1, 1, 1), base_width=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="cardinality"):
        cnnzoo.create_model("resnext29_8x64d_cifar", cardinality=0)
