"""Median frequency class balancing (SegNet, Badrinarayanan et al. TPAMI 2017, Sec. 3.2, after Eigen & Fergus ICCV
2015, Sec. 4.1): ``w_c = median_freq / freq(c)``, ``freq(c)`` = pixels of class c / pixels of the images where c is
present. The weights of a tiny mask set by hand, the weighted loss by hand, and the setting through the config, the
recipe, the trainer's run.json and ``cnnzoo segment train --class-weighting``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import test_cli_errors
from cnnzoo.segmentation import digits_segmentation
from cnnzoo.segmentation import train as seg_train
from cnnzoo.segmentation.train import (
    SegConfig,
    SegTrainer,
    default_seg_config,
    median_frequency_weights,
    segmentation_loss,
)
from test_cli_errors import assert_one_clear_error, run_cli, snapshot

ws = test_cli_errors.ws  # the user's working directory (the CLI cases run from it)

DATA = {"num_train": 16, "num_test": 8}


def tiny(**over) -> SegConfig:
    kw = {"options": {"base_channels": 4}, "data_params": DATA, "epochs": 1, "batch_size": 8, "limit_batches": 1,
          "lr": 3e-3}
    return default_seg_config("unet_padded", **{**kw, **over})


# --------------------------------------------------------------------------------------------- the weights, by hand
# Two 2x2 masks, classes 0..3 (3 is never present), 255 ignored:
#   A = [[0, 0],      B = [[0,   2],
#        [0, 1]]           [255, 2]]
# labelled pixels: A 4, B 3. Class 0: 3 + 1 pixels, present in A and B -> freq 4 / (4 + 3) = 4/7.
# Class 1: 1 pixel, present in A only -> 1/4. Class 2: 2 pixels, present in B only -> 2/3 (B's 255 pixel is not one).
# Frequencies of the present classes sorted: 1/4, 4/7, 2/3 -> median 4/7.
# w_0 = (4/7)/(4/7) = 1, w_1 = (4/7)/(1/4) = 16/7, w_2 = (4/7)/(2/3) = 6/7, w_3 = 0 (no pixel to weigh).
MASKS = torch.tensor([[[0, 0], [0, 1]], [[0, 2], [255, 2]]])
HAND = [1.0, 16 / 7, 6 / 7, 0.0]


def test_median_frequency_weights_by_hand():
    assert median_frequency_weights(MASKS, 4) == pytest.approx(HAND, rel=1e-12)
    # not the global frequency (1/7, 2/7 -> median 2/7, weights 1/2, 2, 1): freq(c) counts only the images with c
    assert median_frequency_weights(MASKS, 4)[:3] != pytest.approx([0.5, 2.0, 1.0])


def test_median_of_an_even_number_of_classes_is_the_mean_of_the_middle_two():
    # one 2x2 image [[0, 0], [0, 1]]: freq 3/4 and 1/4 -> median 1/2 -> weights 2/3 and 2
    assert median_frequency_weights(torch.tensor([[[0, 0], [0, 1]]]), 2) == pytest.approx([2 / 3, 2.0])


def test_weights_refuse_labels_outside_the_classes():
    with pytest.raises(ValueError, match="outside 0..1"):
        median_frequency_weights(torch.tensor([[[0, 2]]]), 2)
    with pytest.raises(ValueError, match="no labelled pixel"):
        median_frequency_weights(torch.full((1, 2, 2), 255), 2)


# --------------------------------------------------------------------------------------------- the loss, by hand
def _log_softmax(scores: list[float], k: int) -> float:
    return scores[k] - math.log(sum(math.exp(s) for s in scores))


def test_weighted_loss_is_the_weighted_mean_of_the_pixels_cross_entropy():
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    w = torch.tensor(HAND)

    def by_hand(x):
        num = den = 0.0
        for b in range(2):
            for i in range(2):
                for j in range(2):
                    y = int(MASKS[b, i, j])
                    if y == 255:
                        continue
                    num += HAND[y] * -_log_softmax(x[b, :, i, j].tolist(), y)
                    den += HAND[y]
        return num / den  # sum_i w_yi CE_i / sum_i w_yi over the 7 labelled pixels; den = 4 + 16/7 + 2*6/7

    loss, main = segmentation_loss(logits, MASKS, None, w)
    assert main is logits
    assert loss.item() == pytest.approx(by_hand(logits), rel=1e-6)
    assert segmentation_loss((logits, aux), MASKS, 0.4, w)[0].item() == pytest.approx(
        by_hand(logits) + 0.4 * by_hand(aux), rel=1e-6)
    plain = segmentation_loss(logits, MASKS, None)[0].item()  # unweighted: every weight 1
    ones = segmentation_loss(logits, MASKS, None, torch.ones(4))[0].item()
    assert ones == pytest.approx(plain, rel=1e-6) and loss.item() != pytest.approx(plain, rel=1e-3)


def test_a_batch_whose_pixels_all_weigh_zero_gives_zero_loss_not_nan():
    logits = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 2, 2), 3), None, torch.tensor(HAND))[0]
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------------------------- config and trainer
def test_config_default_and_errors():
    assert SegConfig(model="unet").class_weighting == "none"
    assert tiny().class_weighting == "none"
    assert tiny(class_weighting="median_frequency").class_weighting == "median_frequency"
    with pytest.raises(ValueError, match="class_weighting must be one of none, median_frequency; got 'balanced'"):
        tiny(class_weighting="balanced")


def test_a_recipe_key_sets_the_default_and_a_flag_overrides_it(monkeypatch):
    import cnnzoo.segmentation.registry as reg

    real = reg.get_digits_recipe
    monkeypatch.setattr(reg, "get_digits_recipe", lambda name: real(name) | {"class_weighting": "median_frequency"})
    assert default_seg_config("unet_padded").class_weighting == "median_frequency"
    assert default_seg_config("unet_padded", class_weighting="none").class_weighting == "none"
    monkeypatch.setattr(reg, "get_digits_recipe", lambda name: real(name) | {"class_weighting": "inverse"})
    with pytest.raises(ValueError, match="class_weighting must be one of"):
        default_seg_config("unet_padded")


def _independent_weights(masks: torch.Tensor, k: int) -> list[float]:
    """The definition again, image by image in plain Python (no tensor ops shared with the code under test)."""
    pixels, area = [0] * k, [0] * k
    for m in masks.tolist():
        flat = [v for row in m for v in row if v != 255]
        for c in set(flat):
            pixels[c] += flat.count(c)
            area[c] += len(flat)
    freq = sorted(pixels[c] / area[c] for c in range(k) if area[c])
    n = len(freq)
    median = freq[n // 2] if n % 2 else (freq[n // 2 - 1] + freq[n // 2]) / 2
    return [median / (pixels[c] / area[c]) if area[c] else 0.0 for c in range(k)]


@pytest.mark.slow  # two short runs (~5-15 s on the shared machine)
def test_the_trainer_computes_records_and_trains_with_the_weights(tmp_path, monkeypatch):
    seen = []
    real = seg_train.segmentation_loss

    def spy(output, mask, aux_weight, class_weights=None):
        seen.append(None if class_weights is None else class_weights.tolist())
        return real(output, mask, aux_weight, class_weights)

    monkeypatch.setattr(seg_train, "segmentation_loss", spy)
    SegTrainer(tiny(class_weighting="median_frequency"), run_dir=tmp_path / "w", verbose=False).fit()
    info = json.loads((tmp_path / "w" / "run.json").read_text())
    want = _independent_weights(digits_segmentation(**DATA)[0].masks, 11)
    assert info["loss"]["class_weighting"] == "median_frequency"
    assert info["loss"]["class_weights"] == pytest.approx(want, rel=1e-9)
    assert want[0] < 0.2 < min(want[1:])  # background (most pixels) weighs least
    assert seen and seen[0] == pytest.approx(want, rel=1e-6)
    assert "class_weighting: median_frequency" in (tmp_path / "w" / "config.yaml").read_text()  # what --resume uses
    # the test loss in metrics/eval is the weighted one too: evaluate_run (from the record) agrees with eval.json
    assert seg_train.evaluate_run(tmp_path / "w")["loss"] == pytest.approx(
        json.loads((tmp_path / "w" / "eval.json").read_text())["loss"], rel=1e-6)

    seen.clear()
    SegTrainer(tiny(), run_dir=tmp_path / "plain", verbose=False).fit()
    info = json.loads((tmp_path / "plain" / "run.json").read_text())
    assert (info["loss"]["class_weighting"], info["loss"]["class_weights"]) == ("none", None)
    assert seen and all(w is None for w in seen)


# --------------------------------------------------------------------------------------------- the command line
TINY = ["-o", "base_channels=4", "--data-param", "num_train=16", "--data-param", "num_test=8", "--batch-size", "8",
        "--limit-batches", "1", "--epochs", "1", "--lr", "0.003", "-q"]


def test_cli_flag_trains_with_median_frequency_weights(ws: Path):
    code, out, err = run_cli(["segment", "train", "unet_padded", *TINY, "--class-weighting", "median_frequency",
                              "--run-dir", "run"])
    assert code == 0, out + err
    assert "median-frequency class weights" in out
    info = json.loads((ws / "run" / "run.json").read_text())
    assert info["loss"]["class_weighting"] == "median_frequency" and len(info["loss"]["class_weights"]) == 11
    before = snapshot(ws)
    code, out, err = run_cli(["segment", "train", "--resume", "run", "--class-weighting", "none"])
    assert_one_clear_error(code, out, err, ("give only the run directory", "--class-weighting"))
    assert snapshot(ws) == before


def test_cli_bad_value_is_one_clear_error(ws: Path):
    before = snapshot(ws)
    code, out, err = run_cli(["segment", "train", "unet_padded", *TINY, "--class-weighting", "median"])
    assert_one_clear_error(code, out, err, ("--class-weighting", "invalid choice", "none", "median_frequency"))
    assert snapshot(ws) == before


def test_cli_list_shows_a_recipes_class_weighting():
    code, out, err = run_cli(["segment", "list"])
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("segnet_vgg16 "))
    assert "median-frequency class weights" in line
    plain = next(x for x in out.splitlines() if x.startswith("unet_padded "))
    assert "class weights" not in plain
