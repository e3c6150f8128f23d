"""torchvision and timm checkpoints load and give the same logits (fill rule of tests/layout_fill.py)."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from layout_fill import filled_state_dict, load_layout, make_input
from reference_map import LAYOUT_MAP


@pytest.mark.parametrize("fixture", sorted(LAYOUT_MAP))
def test_layout_loads_and_reproduces_logits(fixture):
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
