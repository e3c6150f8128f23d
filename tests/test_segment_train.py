"""Segmentation runs (`cnnzoo.segmentation.train`): resumed runs are bit-identical to uninterrupted ones, a run killed
before its first checkpoint starts again, the run records what eval/predict need, and the loss and targets follow
the conventions the module docstring states (255 ignored, centre-cropped masks for valid convolutions, aux weight)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cnnzoo.segmentation import ConfusionMatrix, digits_segmentation, get_digits_recipe
from cnnzoo.segmentation.train import (
    SegConfig,
    SegTrainer,
    default_seg_config,
    evaluate_run,
    fit_target,
    load_run,
    segmentation_loss,
)
from cnnzoo.train.engine import TrainingInterrupted

DATA = {"num_train": 16, "num_test": 8}


def tiny(**over) -> SegConfig:
    """unet_padded with 4 base channels and dropout (the global RNG state matters on resume), 2 batches of 8."""
    kw = {"options": {"base_channels": 4, "drop_rate": 0.3}, "data_params": DATA, "epochs": 2, "batch_size": 8,
          "limit_batches": 2, "lr": 3e-3}
    return default_seg_config("unet_padded", **{**kw, **over})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last.safetensors"))


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def epochs(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run."""
    run = tmp_path_factory.mktemp("straight") / "run"
    SegTrainer(tiny(), run_dir=run, verbose=False).fit()
    return run


def test_resume_after_the_last_epoch_with_more_epochs_is_bit_identical(tmp_path):
    # a constant rate: with a decaying schedule (the recipes' poly) the lengthened run's rates follow the new length
    straight = tmp_path / "straight"
    SegTrainer(tiny(schedule="none"), run_dir=straight, verbose=False).fit()
    run = tmp_path / "run"
    SegTrainer(tiny(epochs=1, schedule="none"), run_dir=run, verbose=False).fit()
    SegTrainer(resume=run, epochs=2, verbose=False).fit()
    assert same(weights(run), weights(straight))
    assert [r["epoch"] for r in epochs(run)] == [1, 2]
    assert epochs(run)[1]["train_loss"] == epochs(straight)[1]["train_loss"]


@pytest.mark.parametrize("stop_at", [(0, 0), pytest.param((0, 1), marks=pytest.mark.slow),
                                     pytest.param((1, 0), marks=pytest.mark.slow)],
                         ids=["mid-epoch-1", "end-of-epoch-1", "mid-epoch-2"])
def test_a_run_stopped_by_a_signal_resumes_bit_identically(straight, tmp_path, stop_at):
    run = tmp_path / "run"

    def stop(trainer, epoch, batch):
        if (epoch, batch) == stop_at:
            trainer.request_stop()  # what the SIGINT/SIGTERM handler does

    with pytest.raises(TrainingInterrupted, match="segment train --resume"):
        SegTrainer(tiny(), run_dir=run, callbacks=[stop], verbose=False).fit()
    pointer = json.loads((run / "checkpoints" / "last.json").read_text())
    e, b = stop_at
    assert pointer["tag"] == (f"e{e:04d}-b{b + 1:06d}" if b + 1 < 2 else f"e{e + 1:04d}-b000000")
    SegTrainer(resume=run, verbose=False).fit()
    assert same(weights(run), weights(straight))
    assert [r["epoch"] for r in epochs(run)] == [1, 2]
    assert json.loads((run / "eval.json").read_text())["mean_iu"] == \
        json.loads((straight / "eval.json").read_text())["mean_iu"]


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_the_same_command(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "checkpoints")  # killed while saving its first checkpoint: metrics written, no pair
    (run / "eval.json").unlink()
    (run / "metrics.jsonl").write_text(epochs(straight)[0].__repr__())
    SegTrainer(tiny(), run_dir=run, verbose=False).fit()
    assert same(weights(run), weights(straight))


def test_a_finished_run_is_never_overwritten_by_a_new_one(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ValueError, match="already holds a run; resume it with `cnnzoo segment train --resume"):
        SegTrainer(tiny(), run_dir=run, verbose=False)
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_a_failed_start_leaves_no_directory(tmp_path):
    run = tmp_path / "a" / "run"
    with pytest.raises(ValueError, match="needs inputs of at least 188x188"):
        SegTrainer(default_seg_config("unet", options={"base_channels": 4, "depth": 4}, data_params=DATA), run_dir=run,
                   verbose=False)
    assert not (tmp_path / "a").exists()


def test_the_run_records_what_eval_and_predict_need(straight):
    info = json.loads((straight / "run.json").read_text())
    train, test = digits_segmentation(**DATA)
    # normalisation statistics of the training images, recomputed with numpy
    px = train.images.numpy().astype(np.float64) / 255.0
    assert info["normalisation"]["mean"] == pytest.approx([px.mean()], rel=1e-9)
    assert info["normalisation"]["std"] == pytest.approx([px.std(ddof=1)], rel=1e-9)
    d = info["data"]
    assert d["spec"] == "digits-segmentation" and d["params"]["num_train"] == 16 and d["params"]["seed"] == 0
    assert (d["num_train"], d["num_val"], d["num_test"]) == (16, 0, 8)
    assert d["classes"] == ["background"] + [str(k) for k in range(10)]
    assert d["test_fingerprint"] == test.fingerprint()
    # the network's options as built: the digits recipe's, then the run's own, then the data's channels and classes
    recipe = get_digits_recipe("unet_padded")["options"]
    assert info["model"] == {"name": "unet_padded", "options": {**recipe, "base_channels": 4, "drop_rate": 0.3,
                                                                "in_channels": 1, "num_classes": 11}}
    assert (info["input_size"], info["output_size"], info["kind"]) == (64, 64, "segmentation")
    # the checkpoint alone rebuilds the network: same weights, eval mode
    run = load_run(straight)
    assert not run.model.training and same(run.model.state_dict(), weights(straight))
    assert run.meta["epoch"] == 2 and run.meta["mean"] == info["normalisation"]["mean"]


def test_eval_metrics_equal_a_confusion_matrix_of_the_runs_predictions(straight):
    r = evaluate_run(straight)
    info = json.loads((straight / "run.json").read_text())
    model = load_run(straight).model
    _, test = digits_segmentation(**DATA)
    mean, std = info["normalisation"]["mean"][0], info["normalisation"]["std"][0]
    with torch.no_grad():
        pred = model((test.images.float() / 255 - mean) / std).argmax(1)
    cm = ConfusionMatrix(11)
    cm.update(pred, test.masks.long())
    ref = cm.compute()
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"):
        assert r[key] == pytest.approx(ref[key], abs=1e-12), key
    assert r["confusion"] == cm.hist.tolist()
    assert r["mean_iu"] == json.loads((straight / "eval.json").read_text())["mean_iu"]  # the run's own figure
    assert r["checkpoint"].endswith("last-e0002-b000000.safetensors") and r["epoch"] == 2


def test_valid_convolution_output_is_scored_on_the_centre_of_the_mask(tmp_path):
    """U-Net depth 2, valid: 64 -> 60 -> 30 -> 26 -> 13 -> 9 -> 18 -> 14 -> 28 -> 24 (Fig. 1's arithmetic), so the
    24x24 output is paired with mask rows/columns 20..43 (offset (64 - 24) / 2 = 20)."""
    run = tmp_path / "run"
    cfg = default_seg_config("unet", options={"base_channels": 4, "depth": 2}, data_params=DATA, epochs=1,
                             batch_size=8, limit_batches=1)
    SegTrainer(cfg, run_dir=run, verbose=False).fit()
    info = json.loads((run / "run.json").read_text())
    assert (info["input_size"], info["output_size"]) == (64, 24) and info["target"].startswith("centre crop")
    mask = torch.arange(64 * 64).reshape(1, 64, 64)
    assert torch.equal(fit_target(mask, 24, 24), mask[:, 20:44, 20:44])
    r = evaluate_run(run)
    assert sum(map(sum, r["confusion"])) == int((digits_segmentation(**DATA)[1].masks[:, 20:44, 20:44] != 255).sum())


def test_loss_ignores_255_and_weighs_the_aux_head():
    torch.manual_seed(0)
    main, aux = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mask = torch.randint(0, 3, (2, 4, 4))
    mask[0, 0] = 255
    keep = mask != 255
    by_hand = -(main.log_softmax(1).gather(1, mask.clamp(max=2)[:, None])[:, 0][keep]).mean()
    loss, logits = segmentation_loss(main, mask, None)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6) and logits is main
    aux_hand = F.cross_entropy(aux, mask, ignore_index=255)
    assert segmentation_loss((main, aux), mask, 0.4)[0].item() == pytest.approx((by_hand + 0.4 * aux_hand).item(),
                                                                               rel=1e-6)
    assert segmentation_loss((main, aux), mask, None)[0].item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_a_holdout_gives_a_best_checkpoint_chosen_on_validation_mean_iu(tmp_path):
    run = tmp_path / "run"
    SegTrainer(tiny(holdout_fraction=0.25, epochs=2), run_dir=run, verbose=False).fit()
    info = json.loads((run / "run.json").read_text())
    assert (info["data"]["num_train"], info["data"]["num_val"]) == (12, 4) and len(info["data"]["val_ids"]) == 4
    rows = epochs(run)
    best = max(range(2), key=lambda i: (rows[i]["val_mean_iu"], -i))
    assert load_run(run, "best").meta["epoch"] == rows[best]["epoch"]


def test_without_a_holdout_there_is_only_last(straight):
    assert not (straight / "checkpoints" / "best.json").exists()
    with pytest.raises(FileNotFoundError, match="no best checkpoint.*--holdout-fraction"):
        load_run(straight, "best")


def test_config_errors_name_the_setting_and_what_is_valid():
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw, rmsprop"):
        tiny(optimizer="lamb")
    with pytest.raises(ValueError, match=r"holdout_fraction must be a number in \[0, 1\)"):
        tiny(holdout_fraction=1.0)
    with pytest.raises(ValueError, match="unknown key"):
        SegConfig.from_dict({"model": "unet", "epoch": 3})


def test_a_checkpoint_rebuilds_its_network_with_no_options(straight):
    """A segmentation checkpoint records the options it was built with (the recipe's, base_channels=4, drop_rate=0.3):
    create_segmenter(name, weights=FILE) needs none of them, gives the trained outputs, and refuses another name or a
    contradicting option."""
    from cnnzoo.segmentation import create_segmenter

    file = straight / "checkpoints" / "last.safetensors"
    net = create_segmenter("unet_padded", weights=str(file)).eval()
    ref = create_segmenter("unet_padded", **tiny().options, in_channels=1, num_classes=11)  # the recipe's + tiny's
    ref.load_state_dict(weights(straight))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), ref.eval()(x))
    with pytest.raises(ValueError, match="base_channels=8 contradicts"):
        create_segmenter("unet_padded", weights=str(file), base_channels=8)
    with pytest.raises(ValueError, match="checkpoint of unet_padded, not unet"):
        create_segmenter("unet", weights=str(file))


def test_steps_per_epoch_drops_only_a_last_batch_of_one_image():
    """A last batch of a single image is dropped (BatchNorm cannot train on one value per channel at a 1x1 map);
    any other remainder is a smaller last batch. Counts by hand."""
    from cnnzoo.segmentation.train import steps_per_epoch

    assert steps_per_epoch(1000, 16) == 63  # 62 full + a last batch of 8
    assert steps_per_epoch(17, 16) == 1  # 16 + 1: the single image is dropped
    assert steps_per_epoch(33, 16) == 2
    assert steps_per_epoch(18, 16) == 2  # 16 + 2
    assert steps_per_epoch(1, 16) == 1  # a dataset of one image is one batch (nothing else to train on)
    assert steps_per_epoch(1000, 16, limit=5) == 5
