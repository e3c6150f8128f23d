"""``reset_classifier``: another number of classes, or 0 to remove the classifier as timm does.

timm's contract (``timm.models.*.reset_classifier``): after ``reset_classifier(0)`` the network's ``forward``
returns the pre-logit features, ``(B, head_hidden_size)``, the same vector ``forward_head(..., pre_logits=True)``
gives. Anything that is not a non-negative integer is an error.
"""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.registry import _entry

# one network per class that implements its own head (every reset_classifier/forward_head override in the zoo)
FAST = ["lenet5", "lenet5_paper", "nin_cifar", "highway_fc_mnist", "plain20_cifar", "densenet40_k12_cifar", "vgg11",
        "zfnet", "googlenet", "alexnet"]


def _meta(name: str):
    with torch.device("meta"):
        return cnnzoo.create_model(name).eval()


def _check_removed_then_restored(name: str) -> None:
    card = cnnzoo.get_card(name)
    model = _meta(name)
    x = torch.empty(1, *card.input_size, device="meta")
    model.reset_classifier(0)
    assert model.num_classes == 0
    assert tuple(model(x).shape) == (1, model.head_hidden_size), name
    with torch.device("meta"):
        model.reset_classifier(7)
    assert model.num_classes == 7 and tuple(model(x).shape) == (1, 7), name


@pytest.mark.parametrize("name", FAST)
def test_reset_to_zero_gives_pre_logit_features(name):
    _check_removed_then_restored(name)


@pytest.mark.slow
def test_reset_to_zero_on_one_network_of_every_class():
    per_class: dict[type, str] = {}
    for name in cnnzoo.list_models():
        per_class.setdefault(_entry(name).model_cls, name)
    for name in per_class.values():
        _check_removed_then_restored(name)


@pytest.mark.parametrize("name", ["lenet5", "resnet20_cifar", "densenet40_k12_cifar"])
def test_features_after_reset_equal_the_pre_logits_before(name):
    torch.manual_seed(0)
    model = cnnzoo.create_model(name).eval()
    c, h, w = cnnzoo.get_card(name).input_size
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        got = model(x)
    assert got.shape == (2, model.head_hidden_size)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10", None])
def test_reset_refuses_what_is_not_a_class_count(bad):
    for name in ("lenet5", "resnet20_cifar"):  # a family's own reset and the shared head's
        model = _meta(name)
        with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, or 0 to remove the classifier"):
            model.reset_classifier(bad)
        assert model.num_classes == 10  # unchanged
