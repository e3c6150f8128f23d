"""weights="torchvision": downloaded into torch's hub cache when online, a clear error offline.

The "online" case is a loopback HTTP server started by the test, serving a torchvision-format
checkpoint built with the layout fixtures' deterministic fill.
"""

from __future__ import annotations

import socket

import pytest
import torch

import cnnzoo
from cnnzoo import weights as weights_mod
from layout_fill import filled_state_dict, load_layout, make_input


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_torchvision_weights_download_into_hub_cache(server, hub_dir, monkeypatch):
    root, base = server
    layout = load_layout("torchvision__resnet18")
    torch.save(filled_state_dict(layout), root / "resnet18-test.pth")
    monkeypatch.setitem(weights_mod.TORCHVISION_URLS, "resnet18", f"{base}/resnet18-test.pth")
    model = cnnzoo.create_model("resnet18", weights="torchvision").eval()
    assert (hub_dir / "checkpoints" / "resnet18-test.pth").exists()
    with torch.no_grad():
        logits = model(make_input(*layout["input"][:2], layout["input"][2]))
    ref = torch.tensor(layout["logits"])
    assert (logits - ref).abs().max() / ref.abs().max() <= 1e-4


def test_torchvision_weights_offline_is_a_clear_error(hub_dir, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(weights_mod.TORCHVISION_URLS, "resnet18", f"http://127.0.0.1:{port}/resnet18.pth")
    with pytest.raises(ValueError, match="needs network access.*--weights PATH"):
        cnnzoo.create_model("resnet18", weights="torchvision")
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        cnnzoo.create_model("lenet5", weights="torchvision")
