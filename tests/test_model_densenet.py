"""DenseNet: dense connectivity, compression, the memory-efficient path, the CIFAR nets of Table 2."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.models.densenet import DenseBlock, DenseNet, Transition


def _count(name: str, **opts) -> int:
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **opts)
    return sum(p.numel() for p in model.parameters())


# Huang et al. 2017, Table 2: parameters as the paper prints them (millions, one decimal).
@pytest.mark.parametrize("name,millions", [
    ("densenet40_k12_cifar", 1.0),
    ("densenet_bc100_k12_cifar", 0.8),
    ("densenet_bc250_k24_cifar", 15.3),
    ("densenet_bc190_k40_cifar", 25.6),
])
def test_cifar_counts_at_paper_precision(name, millions):
    assert round(_count(name) / 1e6, 1) == millions


def test_densenet_bc100_exact_and_cifar100_head():
    # the liuzhuang13/DenseNet model: 769,162 with 10 classes; the 100-class head adds 90 * 342 weights
    assert _count("densenet_bc100_k12_cifar") == 769_162
    assert _count("densenet_bc100_k12_cifar", num_classes=100) == 800_032


def test_cifar_layout_matches_section_3():
    bc = cnnzoo.create_model("densenet_bc100_k12_cifar")
    plain = cnnzoo.create_model("densenet40_k12_cifar")
    assert bc.features.conv0.out_channels == 24 and plain.features.conv0.out_channels == 16  # 2k vs 16
    assert bc.features.conv0.kernel_size == (3, 3)
    assert [len(getattr(bc.features, f"denseblock{i}")) for i in (1, 2, 3)] == [16, 16, 16]  # (100 - 4) / 6
    assert [len(getattr(plain.features, f"denseblock{i}")) for i in (1, 2, 3)] == [12, 12, 12]  # (40 - 4) / 3
    assert bc.features.denseblock1.denselayer1.conv1.out_channels == 48  # bottleneck 4k
    assert not hasattr(plain.features.denseblock1.denselayer1, "conv1")  # plain H_l: BN-ReLU-Conv3x3 only
    assert bc.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (8, 8)  # 32 -> 16 -> 8 maps


@pytest.mark.parametrize("k,n,c0", [(12, 4, 24), (32, 3, 64), (5, 1, 7)])
def test_each_dense_layer_adds_growth_rate_channels(k, n, c0):
    block = DenseBlock(n, c0, k, bn_size=4, drop_rate=0.0)
    seen = []
    for layer in block.values():
        layer.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    out = block(torch.randn(2, c0, 6, 6))
    assert seen == [k] * n
    assert out.shape == (2, c0 + n * k, 6, 6)


def test_block_outputs_in_densenet121():
    model = cnnzoo.create_model("densenet121")
    chans = [info["num_chs"] for info in model.feature_info]
    # block in + n * 32, halved by each transition: 64+6*32=256 -> 128+12*32=512 -> 256+24*32=1024 -> 512+16*32
    assert chans == [64, 256, 512, 1024, 1024]


def test_compression_halves_channels_in_bc_transitions():
    model = cnnzoo.create_model("densenet_bc100_k12_cifar")
    for i in (1, 2):
        block_out = getattr(model.features, f"denseblock{i}").out_channels
        conv = getattr(model.features, f"transition{i}").conv
        assert conv.in_channels == block_out and conv.out_channels == block_out // 2
    plain = cnnzoo.create_model("densenet40_k12_cifar")
    assert plain.features.transition1.conv.out_channels == plain.features.denseblock1.out_channels
    t = Transition(10, 5)
    assert t(torch.randn(1, 10, 8, 8)).shape == (1, 5, 4, 4)


def test_legacy_torchvision_keys_are_renamed():
    model = cnnzoo.create_model("densenet121")
    sd = {k.replace("denselayer1.norm1.", "denselayer1.norm.1.").replace("denselayer2.conv2.", "denselayer2.conv.2."): v
          for k, v in model.state_dict().items()}
    assert any(".norm.1." in k for k in sd)
    model.load_state_dict(cnnzoo.convert_state_dict("densenet121", sd, "torchvision"), strict=True)


def _pair(**opts):
    torch.manual_seed(0)
    ref = DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, num_classes=5, stem="cifar", **opts)
    eff = DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, num_classes=5, stem="cifar",
                   memory_efficient=True, **opts)
    eff.load_state_dict(ref.state_dict())
    return ref.train(), eff.train()


@pytest.mark.parametrize("bn_size", [4, 0])
def test_memory_efficient_matches_outputs_gradients_and_running_stats(bn_size):
    ref, eff = _pair(bn_size=bn_size)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    ref.double(), eff.double()
    outs = []
    for model in (ref, eff):
        xi = x.clone().requires_grad_(True)
        y = model(xi)
        (y * torch.arange(5, dtype=y.dtype)).sum().backward()
        outs.append((y, xi.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-12)
    grads = dict(eff.named_parameters())
    for name, p in ref.named_parameters():
        assert grads[name].grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-10, atol=1e-12, msg=name)
    # the recomputation in backward must not advance BatchNorm's running statistics a second time
    effs = eff.state_dict()
    for name, buf in ref.state_dict().items():
        torch.testing.assert_close(buf, effs[name], rtol=1e-10, atol=1e-12, msg=name)


def test_memory_efficient_eval_and_no_grad_run_plain_path():
    ref, eff = _pair()
    ref.eval(), eff.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), eff(x))


def test_drop_rate_applies_in_training_only():
    model = cnnzoo.create_model("densenet_bc100_k12_cifar", drop_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))


@pytest.mark.parametrize("opts,match", [
    ({"compression": 0.0}, "compression"),
    ({"compression": 1.5}, "compression"),
    ({"bn_size": -1}, "bn_size"),
    ({"block_config": ()}, "block_config"),
    ({"stem": "tiny"}, "stem"),
    ({"drop_rate": 1.0}, "drop_rate"),
])
def test_bad_options_are_clear_errors(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("densenet121", **opts)
