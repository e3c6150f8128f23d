"""create_model(name, weights=FILE): a peer's file gives the peer's logits with no options from the user.

Reference values come from the layout fixtures (other libraries' logits under the deterministic fill of
tests/layout_fill.py); every other expectation is about which options and keys the checkpoint implies.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

import cnnzoo
from cnnzoo import weights as weights_mod
from cnnzoo.weights import detect_source, read_checkpoint, read_state_dict
from layout_fill import filled_state_dict, load_layout, make_input


@pytest.fixture(scope="module")
def timm_native_seresnet50(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "seresnet50.pth"
    torch.save(filled_state_dict(load_layout("timm__seresnet50")), path)
    return path


def test_a_contradicting_option_is_an_error_naming_both_values(timm_native_seresnet50):
    with pytest.raises(ValueError, match=r"seresnet50, which needs stride_in_1x1=False, but stride_in_1x1=True"):
        cnnzoo.create_model("seresnet50", weights=str(timm_native_seresnet50), stride_in_1x1=True)
    # an option the checkpoint does not fix is the user's (dropout does not change the logits in eval mode)
    model = cnnzoo.create_model("seresnet50", weights=str(timm_native_seresnet50), drop_rate=0.3)
    assert model.pretrained_cfg["applied_options"] == {"stem_pool": "pad", "stride_in_1x1": False}
    assert model.pretrained_cfg["options"]["drop_rate"] == 0.3


def test_weights_source_forces_the_layout(timm_native_seresnet50):
    """A plain state dict of a cnnzoo seresnet50 has timm's keys: weights_source='cnnzoo' says which it is."""
    model = cnnzoo.create_model("seresnet50", weights=str(timm_native_seresnet50), weights_source="cnnzoo")
    assert model.pretrained_cfg["weights_source"] == "cnnzoo" and model.pretrained_cfg["applied_options"] == {}
    assert model.layer2[0].conv1.stride == (2, 2)  # the cnnzoo default (v1 stride) was kept
    with pytest.raises(ValueError, match="weights_source must be one of"):
        cnnzoo.create_model("seresnet50", weights=str(timm_native_seresnet50), weights_source="keras")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    layout = load_layout("torchvision__resnet18")
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(filled_state_dict(layout), path)
    return layout, path


def test_other_num_classes_keeps_the_backbone_and_resets_the_classifier(resnet18_file):
    layout, path = resnet18_file
    sd = filled_state_dict(layout)
    model = cnnzoo.create_model("resnet18", num_classes=10, weights=str(path))
    assert model.fc.weight.shape == (10, 512) and model.num_classes == 10
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    cfg = model.pretrained_cfg
    assert cfg["classifier_reset"] and cfg["checkpoint_num_classes"] == 1000
    with pytest.raises(ValueError, match="trained on 3-channel input, but in_channels=1"):
        cnnzoo.create_model("resnet18", in_channels=1, weights=str(path))


def test_a_file_of_another_network_is_a_clear_error(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(ValueError, match="do not fit resnet34"):
        cnnzoo.create_model("resnet34", weights=str(path))


def test_a_cnnzoo_checkpoint_names_its_network_and_options(tmp_path):
    model = cnnzoo.create_model("lenet5", num_classes=7, drop_rate=0.25)
    meta = {"format": "cnnzoo", "model": "lenet5", "options": {"drop_rate": 0.25}, "num_classes": 7, "in_channels": 1}
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={k: __import__("json").dumps(v) for k, v in meta.items()})
    again = cnnzoo.create_model("lenet5", weights=str(path))
    assert again.num_classes == 7 and again.pretrained_cfg["options"] == {"drop_rate": 0.25}
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="is a cnnzoo lenet5 checkpoint, not resnet18"):
        cnnzoo.create_model("resnet18", weights=str(path))
    with pytest.raises(ValueError, match=r"trained with drop_rate=0.25 \(you passed 0.5\)"):
        cnnzoo.create_model("lenet5", weights=str(path), drop_rate=0.5)


def test_aux_heads_in_the_file_are_dropped_for_a_network_built_without_them(tmp_path):
    layout = load_layout("torchvision__googlenet")
    path = tmp_path / "googlenet.pth"
    torch.save(filled_state_dict(layout), path)
    model = cnnzoo.create_model("googlenet", aux_logits=False, weights=str(path)).eval()
    assert model.pretrained_cfg["dropped_keys"] and all(k.startswith("aux") for k in model.pretrained_cfg["dropped_keys"])
    with torch.no_grad():
        logits = model(make_input(*layout["input"][:2], layout["input"][2]))
    ref = torch.tensor(layout["logits"])
    assert (logits - ref).abs().max() / ref.abs().max() <= 1e-4


def test_published_googlenet_weights_get_transform_input(server, tmp_path, monkeypatch):
    """torchvision's googlenet(weights=...) sets transform_input=True; so must weights="torchvision" and a file that
    is byte-for-byte the published one (its SHA-256 starts with the hash in the published name)."""
    root, base = server
    layout = load_layout("torchvision__googlenet")
    blob = tmp_path / "blob.pth"
    torch.save(filled_state_dict(layout), blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()[:8]
    published_name = f"googlenet-{digest}.pth"
    (root / published_name).write_bytes(blob.read_bytes())
    monkeypatch.setitem(weights_mod.TORCHVISION_URLS, "googlenet", f"{base}/{published_name}")
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        downloaded = cnnzoo.create_model("googlenet", weights="torchvision").eval()
    finally:
        torch.hub.set_dir(old_hub)
    from_file = cnnzoo.create_model("googlenet", weights=str(root / published_name)).eval()
    other = tmp_path / "other.safetensors"  # the same tensors, but not the published file
    save_file(filled_state_dict(layout), str(other))
    plain = cnnzoo.create_model("googlenet", weights=str(other)).eval()
    for model in (downloaded, from_file):
        assert model.transform_input and model.pretrained_cfg["published_weights"]
    assert not plain.transform_input and plain.pretrained_cfg["applied_options"] == {}
    x = make_input(2, 3, 64)
    reference = cnnzoo.create_model("googlenet", transform_input=True, aux_logits=True)
    reference.load_state_dict(filled_state_dict(layout))
    with torch.no_grad():
        torch.testing.assert_close(downloaded(x), reference.eval()(x))
        torch.testing.assert_close(from_file(x), reference(x))
    with pytest.raises(ValueError, match="needs transform_input=True, but transform_input=False"):
        cnnzoo.create_model("googlenet", weights=str(root / published_name), transform_input=False)


def test_read_state_dict_unwraps_checkpoint_containers(tmp_path):
    sd = {"conv.weight": torch.ones(2, 1, 3, 3), "fc.bias": torch.zeros(3)}
    cases = {
        "plain.pth": sd,
        "wrapped_state_dict.pth": {"state_dict": sd, "epoch": 3},
        "wrapped_model.pth": {"model": sd, "optimizer": {"lr": 0.1}},
        "wrapped_msd.pth": {"model_state_dict": sd},
        "ddp.pth": {f"module.{k}": v for k, v in sd.items()},
        "compiled.pth": {f"_orig_mod.{k}": v for k, v in sd.items()},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), name
    save_file(sd, str(tmp_path / "plain.safetensors"))
    assert set(read_state_dict(tmp_path / "plain.safetensors")) == set(sd)
    assert read_checkpoint(tmp_path / "plain.safetensors")[1] == {}  # no cnnzoo metadata


@pytest.mark.parametrize("content", [b"", b"junk that is not a checkpoint", "truncated"])
def test_unreadable_weights_files_are_value_errors_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    if content == "truncated":
        save_file({"w": torch.ones(64, 64)}, str(path))
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.safetensors"):
        read_state_dict(path)
    pth = tmp_path / "bad.pth"
    pth.write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match="bad.pth"):
        read_state_dict(pth)


def test_detect_source_finds_the_layout_of_an_already_built_network():
    legacy = filled_state_dict(load_layout("timm__legacy_seresnext50_32x4d"))
    with torch.device("meta"):
        model = cnnzoo.create_model("seresnext50_32x4d")
    source, converted = detect_source(model, "seresnext50_32x4d", legacy)
    assert source == "timm" and "conv1.weight" in converted and "layer0.conv1.weight" not in converted
    own = {k: torch.empty(v.shape) for k, v in model.state_dict().items()}
    assert detect_source(model, "seresnext50_32x4d", own)[0] == "cnnzoo"
    with pytest.raises(ValueError, match="do not fit"):
        detect_source(model, "seresnext50_32x4d", {"x": torch.ones(1)})


def test_convert_state_dict_refuses_foreign_keys():
    sd = filled_state_dict(load_layout("torchvision__resnet18"))
    assert set(cnnzoo.convert_state_dict("resnet18", sd, "torchvision")) == set(sd)
    with pytest.raises(ValueError, match=r"1 unexpected keys \['extra.weight'\]"):
        cnnzoo.convert_state_dict("resnet18", {**sd, "extra.weight": torch.ones(1)}, "torchvision")
    with pytest.raises(ValueError, match="missing keys"):
        cnnzoo.convert_state_dict("resnet34", sd, "torchvision")


def test_every_torchvision_counterpart_has_published_weights():
    """weights="torchvision" works for every network whose card names a torchvision counterpart."""
    missing = [(name, cp.name) for name in cnnzoo.list_models() for cp in cnnzoo.get_card(name).counterparts
               if cp.library == "torchvision" and cp.name not in weights_mod.TORCHVISION_URLS]
    assert missing == []
    for url in weights_mod.TORCHVISION_URLS.values():  # torch.hub's naming: NAME-<sha256 prefix>.pth
        stem = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        prefix = stem.rsplit("-", 1)[-1]
        assert len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix), url
