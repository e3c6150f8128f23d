"""Generic checks every registered network gets: the one interface, at its paper input size."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.models.base import ZooModel

NAMES = cnnzoo.list_models()

# Networks whose paper-size forward costs several seconds on 2 CPU cores: their paper-size check
# runs under `-m slow`; the default run checks them at a reduced size.
HEAVY = {
    "vgg19", "vgg19_bn", "vgg16", "vgg16_bn", "senet154", "resnet152", "wide_resnet101_2", "resnext101_32x8d",
    "resnext101_64x4d", "resnest200e", "resnest269e", "densenet161", "densenet201", "densenet264",
    "inception_resnet_v2", "inception_v4",
    "preact_resnet152", "resnet1202_cifar", "preact_resnet1001_cifar",
}


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


def test_forward_paper_size(model, request):
    name = model.registered_name
    c, h, w = cnnzoo.get_card(name).input_size
    full_size = "not slow" not in request.config.getoption("-m")  # `-m slow` or `-m ""` run paper sizes
    if name in HEAVY and not full_size:
        h = w = max(model.min_input_size, h // 2)
    x = torch.randn(1, c, h, w)
    model.eval()
    with torch.no_grad():
        y1, y2 = model(x), model(x)
    assert y1.shape == (1, model.num_classes)
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2), "eval mode must be deterministic"


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
    for info in model.feature_info:
        out = seen[info["module"]]
        assert out.shape[1] == info["num_chs"], info
        if out.ndim == 4:
            assert abs(out.shape[-1] - size / info["reduction"]) <= 3, (info, tuple(out.shape))
    assert feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
    with torch.no_grad():
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        assert model.forward_head(feats).shape == (1, model.num_classes)


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
