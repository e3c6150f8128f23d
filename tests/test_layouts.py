"""torchvision and timm checkpoints load and give the same logits (fill rule of tests/layout_fill.py)."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from layout_fill import filled_state_dict, load_layout, make_input
from reference_map import LAYOUT_MAP


@pytest.fixture
def two_threads():
    """Run with torch's 2-thread CPU kernels, as the reference logits were computed.

    Under the fill rule SENet-154 is ill-conditioned (measured: a 1e-9 relative change of the input
    moves its logits by 1e-3), so only the same conv algorithm reproduces the reference: with two
    threads the error is 1.4e-7, with one thread (what the test workers use) 0.16, and in float64 0.16.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("fixture", sorted(LAYOUT_MAP))
def test_layout_loads_and_reproduces_logits(fixture, two_threads):
    name, opts, source = LAYOUT_MAP[fixture]
    layout = load_layout(fixture)
    sd = cnnzoo.convert_state_dict(name, filled_state_dict(layout), source)
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **opts)
    model.load_state_dict(sd, strict=True, assign=True)
    assert sum(p.numel() for p in model.parameters()) == layout["params"]
    model.eval()
    b, c, h, w = layout["input"]
    with torch.no_grad():
        logits = model(make_input(b, c, h))
    ref = torch.tensor(layout["logits"])
    rel = (logits - ref).abs().max() / ref.abs().max()
    assert rel <= 1e-4, f"relative error {rel:.2e}"
