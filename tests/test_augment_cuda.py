"""On a CUDA device: the batch crops, the colour noise and every mixing method give the CPU's results, and a run
with mixing, EMA and bf16 trains. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from cnnzoo import create_model
from cnnzoo.data import DataBundle, TensorSplit, make_loader
from cnnzoo.data import pca as pca_mod
from cnnzoo.data.bundle import channel_stats
from cnnzoo.data.mix import MIX_METHODS, Mixer, parse_mix
from cnnzoo.train import Trainer, apply_overrides, default_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("aug", [{"scale_jitter": [12, 18], "hflip": True, "pca_lighting": True},
                                 {"random_resized_crop": True, "translate": 1}])
def test_crops_and_colour_noise_on_cuda_match_the_cpu(aug, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path))
    monkeypatch.setattr(pca_mod, "_MEMO", {})
    x = torch.randint(0, 256, (40, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 4
    mean, std = channel_stats(x)
    bundle = DataBundle("cuda-crops", list("abcd"), 3, (12, 12), mean, std, TensorSplit(x, y), TensorSplit(x, y),
                        kind="tensor")
    out = {}
    for device in ("cpu", "cuda"):
        loader = make_loader(bundle, "train", batch_size=8, train=True, augment=aug, seed=2, device=device)
        loader.set_epoch(1)
        out[device] = torch.cat([b for b, _ in loader]).cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(MIX_METHODS))
def test_each_mixing_method_on_cuda_matches_the_cpu(name):
    torch.manual_seed(0)
    cpu_model = create_model("lenet5").train()
    cuda_model = create_model("lenet5").train().cuda()
    cuda_model.load_state_dict(cpu_model.state_dict())
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    got = {}
    for dev, model in (("cpu", cpu_model), ("cuda", cuda_model)):
        params = {"prob": 1.0} if name == "patchup" else {}  # (PatchUp's default 0.7 could leave this step unmixed)
        mixer = Mixer(parse_mix({"name": name, **params}), model, 10, seed=3, image_size=(28, 28), in_channels=1)
        mixed = mixer(x.to(dev), y.to(dev), 2, 4)
        with mixed.context:
            logits = model(mixed.images)
        got[dev] = (mixed.images.cpu(), mixed.target.cpu(), logits.detach().cpu())
    for a, b in zip(got["cuda"], got["cpu"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mix", ["cutmix", "manifold_mixup", "puzzlemix"])
def test_a_cuda_run_with_mixing_ema_and_bf16_trains(tmp_path, mix):
    cfg = apply_overrides(default_config("lenet5", "mnist5k"), [
        "train.epochs=2", "data.batch_size=64", "train.device=cuda", "train.amp=bf16", f"train.run_dir={tmp_path}",
        f"train.mix={{name: {mix}}}", "train.ema={decay: 0.9}", "data.holdout_fraction=0.1"])
    result = Trainer(cfg, verbose=False).fit()
    assert result.test.top1 > 0.5 and result.history[-1]["ema_test_acc"] > 0.5
    assert (tmp_path / "checkpoints" / "ema_best.safetensors").is_file()
