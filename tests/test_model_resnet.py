"""ResNet family (cnnzoo.models.resnet): the options the paper notes promise, checked on small inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers.attention import CBAM, ECAModule, SEModule
from cnnzoo.models.resnet import BasicBlock, Bottleneck, ShortcutA, make_shortcut


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta(name: str, **opts) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


def macs(model: nn.Module, size: int = 224) -> float:
    """Multiply-adds of convs and fcs, in G (the papers' 'FLOPs' are multiply-adds)."""
    total = [0]

    def hook(mod, _inp, out):
        if isinstance(mod, (nn.Conv2d, nn.Conv1d)):
            total[0] += out[0].numel() * mod.weight[0].numel()
        elif isinstance(mod, nn.Linear):
            total[0] += mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return total[0] / 1e9


def test_option_a_shortcut_is_parameter_free_and_zero_fills_new_channels():
    sc = make_shortcut(16, 32, stride=2, shortcut="A")
    assert isinstance(sc, ShortcutA) and n_params(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 16:], torch.zeros_like(y[:, 16:]))
    assert make_shortcut(16, 16, 1, "A") is None  # identity where the shapes agree
    # The whole network has only the projection-free shortcuts: fewer parameters than option B.
    a, b = n_params(meta("resnet34", shortcut="A")), n_params(meta("resnet34"))
    projections = sum(n_params(m.downsample) for m in meta("resnet34").modules() if getattr(m, "downsample", None))
    assert a == b - projections > 0
    with pytest.raises(ValueError, match="'A', 'B', 'C', 'none'"):
        cnnzoo.create_model("resnet18", shortcut="D")


def test_stride_in_1x1_moves_the_stride_and_keeps_parameters():
    v15, v1 = meta("resnet50"), meta("resnet50", stride_in_1x1=True)
    assert (v15.layer2[0].conv1.stride, v15.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    assert (v1.layer2[0].conv1.stride, v1.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    assert n_params(v1) == n_params(v15)
    assert macs(v1) < macs(v15)  # v1 runs the 3x3 at the halved resolution: cheaper


def test_shortcut_c_projects_on_every_block():
    b, c = meta("resnet18"), meta("resnet18", shortcut="C")
    blocks = [m for m in c.modules() if isinstance(m, BasicBlock)]
    assert all(isinstance(blk.downsample, nn.Sequential) for blk in blocks)
    # B projects in 3 blocks (layer2..4 first blocks); C adds 1x1 conv + BN in the other 5.
    extra = sum(ch * ch + 2 * ch for ch in (64, 64, 128, 256, 512))
    assert n_params(c) - n_params(b) == extra


def test_zero_init_last_makes_each_block_start_as_identity_plus_relu():
    model = cnnzoo.create_model("resnet50", zero_init_last=True).eval()
    for blk in (model.layer1[1], model.layer3[2]):
        assert torch.count_nonzero(blk.bn3.weight) == 0
        x = torch.randn(2, blk.conv1.in_channels, 6, 6)
        with torch.no_grad():
            assert torch.allclose(blk(x), torch.relu(x))
    default = cnnzoo.create_model("resnet18")
    assert torch.count_nonzero(default.layer1[1].bn2.weight) > 0


def test_drop_path_rates_grow_linearly_and_eval_is_unaffected():
    model = cnnzoo.create_model("resnet18", drop_path_rate=0.35)
    rates = [blk.drop_path.p for blk in model.modules() if isinstance(blk, BasicBlock)]
    assert rates == pytest.approx([0.05 * i for i in range(8)])
    ref = cnnzoo.create_model("resnet18")
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    model.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        outs = {tuple(model(x).flatten()[:4].tolist()) for _ in range(3)}
    assert len(outs) > 1  # training mode drops paths at random


def test_plain_nets_have_no_shortcut():
    model = cnnzoo.create_model("plain18").eval()
    assert all(m.downsample is None and not m.residual for m in model.modules() if isinstance(m, BasicBlock))
    assert n_params(meta("plain34")) < n_params(meta("resnet34"))
    for name in ("plain18", "resnet18"):
        blk = cnnzoo.create_model(name).eval().layer1[0]
        nn.init.zeros_(blk.bn2.weight)  # the residual branch now outputs exactly 0
        nn.init.zeros_(blk.bn2.bias)
        x = torch.randn(1, 64, 5, 5)
        with torch.no_grad():
            out = blk(x)
        if name == "plain18":
            assert torch.equal(out, torch.zeros_like(out))  # nothing carries the input past the block
        else:
            assert torch.allclose(out, torch.relu(x))


@pytest.mark.parametrize("attn,cls", [("se", SEModule), ("cbam", CBAM), ("eca", ECAModule)])
def test_attn_layer_sits_on_every_residual_branch(attn, cls):
    model = cnnzoo.create_model("resnet18", attn_layer=attn).eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert all(isinstance(blk.se, cls) for blk in blocks)
    # Before the addition: the attention sees the branch (bn2's output), not the sum.
    blk = blocks[0]
    seen = {}
    blk.se.register_forward_hook(lambda m, i, o: seen.update(inp=i[0]))
    blk.bn2.register_forward_hook(lambda m, i, o: seen.update(bn=o))
    with torch.no_grad():
        blk(torch.randn(1, 64, 6, 6))
    assert torch.equal(seen["inp"], seen["bn"])
    assert model(torch.randn(1, 3, 40, 40)).shape == (1, 1000)


def test_invalid_attn_layer_lists_valid_names():
    with pytest.raises(ValueError, match="cbam.*eca.*se"):
        cnnzoo.create_model("resnet18", attn_layer="sk")


def test_blocks_are_reusable_with_keyword_options():
    blk = Bottleneck(64, 32, stride=2, groups=4, base_width=16, shortcut="C", attn_layer="eca", drop_path=0.1)
    assert blk.conv2.groups == 4 and blk.conv2.in_channels == 32 and blk.out_channels == 128
    assert blk.eval()(torch.randn(1, 64, 8, 8)).shape == (1, 128, 4, 4)
    custom = nn.Identity()
    assert BasicBlock(8, 8, downsample=custom).downsample is custom
    with pytest.raises(ValueError, match="groups=1"):
        BasicBlock(8, 8, groups=2)


def test_wide_and_resnext_widths_follow_torchvision():
    wrn, rx = meta("wide_resnet50_2"), meta("resnext50_32x4d")
    assert wrn.layer1[0].conv2.weight.shape == (128, 128, 3, 3)
    assert rx.layer1[0].conv2.weight.shape == (128, 4, 3, 3) and rx.layer1[0].conv2.groups == 32
    assert rx.layer4[0].conv3.out_channels == 2048


def test_stem_pool_ceil_is_the_caffe_pool():
    m = cnnzoo.create_model("seresnet50", stem_pool="ceil")
    assert m.maxpool.ceil_mode and m.maxpool.padding == 0 and m.min_input_size == 5
    with pytest.raises(ValueError, match="'pad', 'ceil'"):
        cnnzoo.create_model("resnet18", stem_pool="same")


@pytest.mark.parametrize(
    "name,opts,reference",
    [
        # Published multiply-adds: ResNet Table 1 (3.8 G, v1) / torchvision (4.089 G, v1.5); SENet Table 2 (3.87, 4.25);
        # CBAM Table 4 (3.864); ECA Table 2 (3.86). v1 vs v1.5 is what separates them.
        ("resnet50", {}, 4.089),
        ("resnet50", {"stride_in_1x1": True}, 3.86),
        ("seresnet50", {}, 3.87),
        ("seresnext50_32x4d", {}, 4.25),
        ("cbam_resnet50", {}, 3.864),
        ("eca_resnet50", {}, 3.86),
    ],
)
def test_macs_match_the_published_rows(name, opts, reference):
    assert macs(meta(name, **opts)) == pytest.approx(reference, rel=0.01)


def test_cbam_default_is_the_v1_stride_the_reported_flops_imply():
    v1, v15 = macs(meta("cbam_resnet50")), macs(meta("cbam_resnet50", stride_in_1x1=False))
    assert abs(v1 - 3.864) < abs(v15 - 3.864)
