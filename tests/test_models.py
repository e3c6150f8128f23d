"""Generic checks every registered network gets: the one interface, at its paper input size."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.models.base import ZooModel

NAMES = cnnzoo.list_models()

# Networks whose paper-size forward costs more than a few seconds on one CPU core: the default run
# (`make test`) checks them at half their paper size, and `test_forward_paper_size_heavy`, marked slow,
# at the card's size; `.ci/run` runs it after `make test`, so every network runs at its paper size in CI.
HEAVY = {
    "vgg19", "vgg19_bn", "vgg16", "vgg16_bn", "senet154", "resnet152", "wide_resnet101_2", "resnext101_32x8d",
    "resnext101_64x4d", "resnest200e", "resnest269e", "densenet161", "densenet201", "densenet264",
    "inception_resnet_v2", "inception_v4",
    "preact_resnet152", "resnet1202_cifar", "preact_resnet1001_cifar",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",  # 5-14 s each at 456-600 px on one core
    "vit_b_16", "vit_l_16",  # 17.6 and 61.6 GMACs at 224 (the layout tests run them at 224 once)
}


def _out(n: int, k: int, s: int = 1, p: int = 0, ceil: bool = False) -> int:
    """Output size of a convolution or pooling window (the arithmetic of Dumoulin & Visin 2016)."""
    span = n + 2 * p - k
    return (-(-span // s) if ceil else span // s) + 1


# Networks with unpadded ("valid") convolutions or pools whose map sizes are not input / reduction:
# per feature_info level, the (kernel, stride, padding, ceil) windows from the previous level, as the papers
# give them. `test_valid_padding_chains_reproduce_the_papers_map_sizes` ties each chain to the paper's figures.
_ALEXNET_TAIL = [[(5, 1, 2, False), (3, 2, 0, False)], [(3, 1, 1, False)] * 3 + [(3, 2, 0, False)]]
_INCEPTION = [[(3, 2, 0, False), (3, 1, 0, False), (3, 1, 1, False)],  # 299 -> 149 -> 147 -> 147
              [(3, 2, 0, False)],  # -> 73
              [(1, 1, 0, False), (3, 1, 0, False), (3, 2, 0, False)],  # -> 73 -> 71 -> 35
              [(3, 2, 0, False)],  # -> 17
              [(3, 2, 0, False)]]  # -> 8
_LENET = [[(5, 1, 0, False), (2, 2, 0, False)], [(5, 1, 0, False), (2, 2, 0, False)]]
VALID_CHAINS = {
    "alexnet": [[(11, 4, 2, False), (3, 2, 0, False)], *_ALEXNET_TAIL],  # torchvision: conv1 padding 2
    "alexnet_paper": [[(11, 4, 0, False), (3, 2, 0, False)], *_ALEXNET_TAIL],
    # ZF Fig. 3: 7x7/2 conv (224 -> 110), Caffe (ceil) 3x3/2 pools, 5x5/2 conv2
    "zfnet": [[(7, 2, 1, False), (3, 2, 0, True)], [(5, 2, 0, False), (3, 2, 0, True)],
              [(3, 1, 1, False)] * 3 + [(3, 2, 0, True)]],
    # NiN's ImageNet model (Caffe, ceil pools): 11x11/4 valid, 5x5 pad 2, 3x3 pad 1, 3x3 pad 1 (1x1 convs keep sizes)
    "nin": [[(11, 4, 0, False), (3, 2, 0, True)], [(5, 1, 2, False), (3, 2, 0, True)],
            [(3, 1, 1, False), (3, 2, 0, True)], [(3, 1, 1, False)]],
    "lenet5": _LENET, "lenet5_paper": _LENET,
    "inception_v3": _INCEPTION, "inception_v4": _INCEPTION,
    "inception_resnet_v1": _INCEPTION, "inception_resnet_v2": _INCEPTION,
    # SqueezeNet (torchvision): unpadded conv1 (v1.0 7x7/2, v1.1 3x3/2), Caffe (ceil) 3x3/2 max-pools
    "squeezenet1_0": [[(7, 2, 0, False)]] + [[(3, 2, 0, True)]] * 3,
    "squeezenet1_1": [[(3, 2, 0, False)]] + [[(3, 2, 0, True)]] * 3,
    # Xception Fig. 5: conv 3x3/2 and conv 3x3 unpadded (299 -> 149 -> 147), then padded 3x3/2 max-pools (74, 37, ...)
    "xception": [[(3, 2, 0, False), (3, 1, 0, False)]] + [[(3, 2, 1, False)]] * 4,
}
# The papers' printed map sizes at the card's input size: AlexNet Fig. 2 / Sec. 3.5 (55 -> pools 27, 13, 6),
# ZF Fig. 3 (110 -> 55, 26 -> 13, 13 -> 6), LeNet-5 Fig. 2 (S2 14x14, S4 5x5), Inception-v3 Table 1 and
# Inception-v4 Fig. 3 (149, 147, 147, 73, 71, 35, 17, 8).
PAPER_MAP_SIZES = {
    "alexnet": [27, 13, 6], "alexnet_paper": [27, 13, 6], "zfnet": [55, 13, 6], "lenet5": [14, 5],
    "lenet5_paper": [14, 5], "inception_v3": [147, 73, 35, 17, 8], "inception_v4": [147, 73, 35, 17, 8],
    "inception_resnet_v1": [147, 73, 35, 17, 8], "inception_resnet_v2": [147, 73, 35, 17, 8],
}


def expected_map_sizes(name: str, model, size: int) -> list[int]:
    """The spatial size of each feature_info level of ``model`` (registered as ``name``) for a size x size input."""
    if name not in VALID_CHAINS:  # "same" padding everywhere: exactly input / reduction at these sizes
        assert all(size % info["reduction"] == 0 for info in model.feature_info)
        return [size // info["reduction"] for info in model.feature_info]
    sizes = []
    for level in VALID_CHAINS[name]:
        for k, s, p, ceil in level:
            size = _out(size, k, s, p, ceil)
        sizes.append(size)
    return sizes


def test_valid_padding_chains_reproduce_the_papers_map_sizes():
    for name, printed in PAPER_MAP_SIZES.items():
        assert expected_map_sizes(name, None, cnnzoo.get_card(name).input_size[-1]) == printed, name
    assert set(VALID_CHAINS) <= set(NAMES) and set(HEAVY) <= set(NAMES)  # a renamed network is not lost here


def _main(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _small_size(model) -> int:
    return max(model.min_input_size, 32)


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    m = cnnzoo.create_model(request.param)
    m.registered_name = request.param
    return m


def test_interface(model):
    assert isinstance(model, ZooModel)
    for attr in ("num_classes", "num_features", "in_channels", "feature_info", "min_input_size"):
        assert hasattr(model, attr), attr
    card = cnnzoo.get_card(model.registered_name)
    assert card.input_size[0] == model.in_channels
    assert card.paper.url.startswith("http") and card.paper.year >= 1989
    for heading in ("Key ideas", "This implementation"):
        assert heading in card.notes, f"{card.family} paper notes lack a '{heading}' section"


def _forward_twice(model, c: int, size: int) -> None:
    x = torch.randn(1, c, size, size)
    model.eval()
    with torch.no_grad():
        y1, y2 = model(x), model(x)
    assert y1.shape == (1, model.num_classes)
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2), "eval mode must be deterministic"


def test_forward_paper_size(model):
    """Batch 1 at the card's input size (the HEAVY networks at half of it; see test_forward_paper_size_heavy)."""
    name = model.registered_name
    c, h, _ = cnnzoo.get_card(name).input_size
    if name in HEAVY:
        h = max(model.min_input_size, h // 2)
    _forward_twice(model, c, h)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_forward_paper_size_heavy(name):
    """The HEAVY networks at their paper input size, batch 1, eval mode (run in CI by `.ci/run`)."""
    c, h, _ = cnnzoo.get_card(name).input_size
    _forward_twice(cnnzoo.create_model(name), c, h)


def test_backward_reaches_every_parameter(model):
    size = _small_size(model)
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(2, model.in_channels, size, size))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    assert all(o.shape == (2, model.num_classes) for o in outs)
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:5]}"


def test_feature_info_matches_features(model):
    size = max(model.min_input_size, 64)
    x = torch.randn(1, model.in_channels, size, size)
    modules = dict(model.named_modules())
    seen = {}
    hooks = []
    for info in model.feature_info:
        assert info["module"] in modules, f"feature_info names missing module {info['module']!r}"
        hooks.append(modules[info["module"]].register_forward_hook(
            lambda m, i, o, key=info["module"]: seen.__setitem__(key, _main(o))))
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
    for h in hooks:
        h.remove()
    reductions = [info["reduction"] for info in model.feature_info]
    assert reductions == sorted(reductions)
    outs = [seen[info["module"]] for info in model.feature_info]
    # (B, C, H, W) maps; (B, N, C) token sequences (ViT) and flat (B, C) vectors have no map size to check
    assert [o.shape[-1] if o.ndim == 3 else o.shape[1] for o in outs] == [i["num_chs"] for i in model.feature_info]
    expected = expected_map_sizes(model.registered_name, model, size)
    assert [tuple(o.shape[2:]) for o in outs if o.ndim == 4] == [(s, s) for o, s in zip(outs, expected) if o.ndim == 4]
    feat_chs = feats.shape[-1] if feats.ndim == 3 else feats.shape[1]  # tokens (B, N, C) or maps (B, C, ...)
    assert feat_chs == model.num_features == model.feature_info[-1]["num_chs"]
    with torch.no_grad():
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        assert model.forward_head(feats).shape == (1, model.num_classes)


@pytest.mark.parametrize("name", sorted(VALID_CHAINS))
def test_feature_maps_at_paper_size(name):
    """The unpadded networks' maps at the card's input size are the papers' (structure only, on the meta device).

    The "same"-padded networks' maps are exactly input / reduction, checked at 64 pixels above.
    """
    with torch.device("meta"):
        model = cnnzoo.create_model(name).eval()
    modules, seen = dict(model.named_modules()), {}
    for info in model.feature_info:
        modules[info["module"]].register_forward_hook(
            lambda m, i, o, key=info["module"]: seen.__setitem__(key, tuple(_main(o).shape[2:])))
    c, h, w = cnnzoo.get_card(name).input_size
    model.forward_features(torch.empty(1, c, h, w, device="meta"))
    expected = PAPER_MAP_SIZES.get(name) or expected_map_sizes(name, model, h)  # NiN: no printed ImageNet sizes
    assert [seen[info["module"]] for info in model.feature_info] == [(s, s) for s in expected]


def test_num_classes_in_channels_and_reset(model):
    name = model.registered_name
    m = cnnzoo.create_model(name, num_classes=7, in_channels=1 if model.in_channels != 1 else 3)
    size = _small_size(m)
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(2, m.in_channels, size, size)).shape == (2, 7)
        m.reset_classifier(4)
        assert m.num_classes == 4
        assert m(torch.randn(2, m.in_channels, size, size)).shape == (2, 4)


def test_wrong_input_is_a_clear_error(model):
    size = _small_size(model)
    with pytest.raises(ValueError, match="input channel"):
        model(torch.randn(1, model.in_channels + 1, size, size))
    if model.min_input_size > 1:
        small = model.min_input_size - 1
        with pytest.raises(ValueError, match=f"at least {model.min_input_size}x{model.min_input_size}"):
            model(torch.randn(1, model.in_channels, small, small))


def test_min_input_size_runs(model):
    """The declared minimum works (one pixel less is refused above with a clear error)."""
    s = model.min_input_size
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, model.in_channels, s, s)).shape == (1, model.num_classes)
