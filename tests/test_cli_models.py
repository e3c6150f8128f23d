"""`cnnzoo list`, `cnnzoo info` and the errors, run in-process."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_network_with_params_and_paper(capsys):
    code, out, _ = run(capsys, "list", "--width", "250")
    assert code == 0
    for name in cnnzoo.list_models():
        assert name in out
    assert "61,706" in out and "Gradient-Based Learning" in out and "1998" in out


def test_list_pattern_filters(capsys):
    code, out, _ = run(capsys, "list", "lenet*", "--width", "250")
    assert code == 0 and "lenet5" in out
    code, _, err = run(capsys, "list", "nosuchnet*")
    assert code == 2 and "no network matches" in err


def test_info_prints_card_and_notes(capsys):
    name = "alexnet_paper" if "alexnet_paper" in cnnzoo.list_models() else "lenet5"
    code, out, _ = run(capsys, "info", name, "--width", "200")
    card = cnnzoo.get_card(name)
    assert code == 0
    assert card.paper.title in out and card.paper.url in out and str(card.paper.year) in out
    assert "deviations" in out and card.deviations[0][:40] in out
    assert "Key ideas" in out


def test_unknown_name_suggests_close_names(capsys):
    code, _, err = run(capsys, "info", "lenet")
    assert code == 2 and "unknown network 'lenet'" in err and "lenet5" in err
    with pytest.raises(cnnzoo.UnknownModelError, match="Did you mean: lenet5"):
        cnnzoo.create_model("lenet_5")


def test_unknown_option_lists_valid_options():
    with pytest.raises(cnnzoo.UnknownOptionError, match=r"no option 'widht'.*valid options:.*num_classes"):
        cnnzoo.create_model("lenet5", widht=2)


def test_bad_num_classes_is_rejected():
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        cnnzoo.create_model("lenet5", num_classes=0)


def test_wrong_input_size_error_says_what_is_expected():
    model = cnnzoo.create_model("lenet5").eval()
    with pytest.raises(ValueError, match="at least 28x28 pixels, got 20x20"):
        model(torch.randn(1, 1, 20, 20))
    with pytest.raises(ValueError, match="1 input channel"):
        model(torch.randn(1, 3, 32, 32))


def test_convert_state_dict_rejects_unknown_source():
    with pytest.raises(ValueError, match="valid: torchvision, timm"):
        cnnzoo.convert_state_dict("lenet5", {}, "keras")
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        cnnzoo.convert_state_dict("lenet5", {}, "torchvision")


def test_cli_errors_for_unknown_option_and_wrong_input(capsys):
    code, _, err = run(capsys, "info", "lenet5", "-o", "poo=avg")
    assert code == 2 and "no option 'poo'" in err and "valid options" in err and "pool" in err
    code, _, err = run(capsys, "info", "lenet5", "--input", "1x20x20")
    assert code == 2 and "at least 28x28 pixels, got 20x20" in err
    code, _, err = run(capsys, "info", "lenet5", "--input", "3x32x32")
    assert code == 2 and "1 input channel" in err
    code, out, _ = run(capsys, "info", "lenet5", "-o", "num_classes=3", "--input", "1x28x28")
    assert code == 0 and "(1, 3)" in out
