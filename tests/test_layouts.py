"""torchvision and timm checkpoints load and give the same logits (fill rule of tests/layout_fill.py)."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from layout_fill import filled_state_dict, load_layout, make_input
from reference_map import LAYOUT_MAP


@pytest.fixture
def two_threads():
    """Run with torch's 2-thread CPU kernels, as the reference logits were computed (see ILL_CONDITIONED)."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


# Fixtures whose reference logits are ill-conditioned under the fill rule -> the tolerance their check uses.
#
# timm__legacy_senet154: in the last dozen units of layer3 and in layer4 the SE gates' inputs reach |z| ~ 100-230
# (the filled BN statistics do not normalise the activations, which grow ~18% per unit: mean 1.3 at layer3.0,
# 300 at layer3.35), so a gate near its switching point is a steep step: there, a relative change d of a unit's
# input changes the gates by 3-7 d and the unit's output by 2-2.7 d (the convs, BNs and ReLUs pass it at ~1x).
# Over those ~15 units float32 rounding (1e-7, injected in every op) grows 1e5-fold: any float32 run, the
# reference's included, lands ~0.15 (max |diff| / max |logit|) away from the exact logits. Measured on one CPU:
# float32 with 1, 2 or 4 threads 0.167-0.171 from the reference (the 2-thread run does not reproduce it here).
# So the check runs in float64, where our side is exact: kernels, thread counts and memory formats agree to
# 2e-9, so the distance to the reference is the reference's own float32 noise, 0.162 on every machine. The
# bound 0.2 sits above it, and below what a wrong network gives: ceil -> floor stem pool 0.35, stride in the 1x1
# instead of the 3x3 0.43, SE before bn3 0.44, BN eps 1e-4 instead of 1e-5 0.30, hard-sigmoid SE gate 0.33,
# no SE 672, no ReLU after the sum 43 (all measured in float64). Keys, shapes and the parameter count stay exact.
ILL_CONDITIONED = {"timm__legacy_senet154": 0.2}


@pytest.mark.parametrize("fixture", sorted(LAYOUT_MAP))
def test_layout_loads_and_reproduces_logits(fixture, two_threads, tmp_path):
    """The path a user takes: the peer's file, `create_model(name, weights=FILE)`, no options from the user."""
    name, expected_options, source = LAYOUT_MAP[fixture]
    layout = load_layout(fixture)
    path = tmp_path / f"{fixture}.pth"
    torch.save(filled_state_dict(layout), path)
    model = cnnzoo.create_model(name, weights=str(path))
    cfg = model.pretrained_cfg
    assert cfg["weights_source"] == source
    # the options this checkpoint needs were applied (and nothing the reference network does not have)
    assert {k: cfg["options"].get(k) for k in expected_options} == expected_options
    assert sum(p.numel() for p in model.parameters()) == layout["params"]
    model.eval()
    b, c, h, _w = layout["input"]
    x = make_input(b, c, h)
    if fixture in ILL_CONDITIONED:
        model, x = model.double(), x.double()
    with torch.no_grad():
        logits = model(x)
    ref = torch.tensor(layout["logits"], dtype=logits.dtype)
    rel = (logits - ref).abs().max() / ref.abs().max()
    assert rel <= ILL_CONDITIONED.get(fixture, 1e-4), f"relative error {rel:.2e}"
