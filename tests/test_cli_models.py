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
    # LeNet-5's 61,706 parameters (LeCun et al. 1998, Table I's C1..F6 with a 10-way output layer)
    row = next(line for line in out.splitlines() if line.split()[:1] == ["lenet5"])
    assert "61,706" in row and "LeCun, 1998" in row


def test_list_at_80_columns_shows_every_name_whole_on_one_line(capsys, monkeypatch):
    # the widest parameter count the table can show, so the layout is tried at its worst
    monkeypatch.setattr("cnnzoo.cli.models.count_params", lambda name, **o: 999_999_999)
    code, out, _ = run(capsys, "list", "--width", "80")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    firsts = [line.split()[0] for line in lines if line.strip()]
    for name in cnnzoo.list_models():
        assert firsts.count(name) == 1, name  # the whole name starts exactly one row: never cut, never wrapped
        row = next(line for line in lines if line.split()[:1] == [name])
        card = cnnzoo.get_card(name)
        assert row.rstrip().endswith(f", {card.paper.year}") and "1000.00M" in row  # citation and count whole
    assert "…" not in out


def test_list_cites_first_author_and_year_and_info_gives_the_title(capsys):
    from cnnzoo.cli.models import cite

    assert cite(cnnzoo.Paper("T", "A. Krizhevsky, I. Sutskever, G. E. Hinton", 2012, "u")) == "Krizhevsky, 2012"
    assert cite(cnnzoo.Paper("T", "R. K. Srivastava, K. Greff", 2015, "u")) == "Srivastava, 2015"
    assert cite(cnnzoo.Paper("T", "Simonyan, Zisserman", 2014, "u")) == "Simonyan, 2014"
    code, out, _ = run(capsys, "info", "lenet5", "--width", "200")
    assert code == 0 and "Gradient-Based Learning Applied to Document Recognition" in out


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


def test_info_shows_the_training_hints_cnnzoo_train_applies(capsys):
    """A user reads what `cnnzoo train` will change over the dataset recipe before training, not after."""
    _, out, _ = run(capsys, "info", "resnet101", "--width", "200")
    assert "training hints: optim.lr=0.0125, model.options.zero_init_last=True" in out
    _, out, _ = run(capsys, "info", "resnet18", "--width", "200")
    assert "training hints: none" in out


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
    assert code == 2 and "takes 1-channel images" in err and "--input 1x32x32" in err and "-o in_channels=3" in err
    code, out, _ = run(capsys, "info", "lenet5", "--input", "32", "--width", "200")  # a size alone: its channels
    assert code == 0 and "(1, 10) for input (1, 1, 32, 32)" in out
    code, out, _ = run(capsys, "info", "lenet5", "-o", "num_classes=3", "--input", "1x28x28")
    assert code == 0 and "(1, 3)" in out


def test_options_of_the_wrong_type_are_refused_naming_what_is_valid():
    with pytest.raises(ValueError, match=r"lenet5: option drop_rate must be a number, got 'high' \(str\)"):
        cnnzoo.create_model("lenet5", drop_rate="high")
    with pytest.raises(ValueError, match=r"option zero_init_last must be true/false, got 1 \(int\)"):
        cnnzoo.create_model("resnet18", zero_init_last=1)
    with pytest.raises(ValueError, match=r"option layers must be a list of integers, got \[2, 2, 'x', 2\]"):
        cnnzoo.create_model("resnet18", layers=[2, 2, "x", 2])
    # what the annotations allow still builds: an int for a float, a list for a tuple
    assert cnnzoo.create_model("lenet5", drop_rate=0).num_classes == 10
    with torch.device("meta"):
        assert cnnzoo.create_model("resnet18", layers=[1, 1, 1, 1]) is not None


def test_every_default_option_value_passes_the_type_check():
    # the check must never refuse what a constructor itself uses by default
    import inspect

    from cnnzoo.registry import _check_option_types, _entry

    for name in cnnzoo.list_models():
        entry = _entry(name)
        params = inspect.signature(entry.model_cls.__init__).parameters
        defaults = {k: p.default for k, p in params.items() if k != "self" and p.default is not p.empty}
        _check_option_types(name, entry, defaults)


def test_cli_option_values_read_every_float_spelling(capsys):
    code, out, _ = run(capsys, "info", "lenet5", "-o", "drop_rate=1e-1", "--width", "200")
    assert code == 0 and "{'drop_rate': 0.1}" in out
