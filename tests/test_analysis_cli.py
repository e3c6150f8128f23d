"""`cnnzoo summary`, `cnnzoo compare-arch` and `cnnzoo list --plot`, run in-process."""

from __future__ import annotations

import csv
import io
import json

import matplotlib.image
import pytest

import cnnzoo
from cnnzoo.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_table_shows_layers_and_labelled_totals(capsys):
    code, out, _ = run(capsys, "summary", "lenet5", "--width", "250")
    assert code == 0
    assert "features.0" in out and "Conv2d" in out and "6x28x28" in out and "117,600" in out
    assert "total parameters: 61,706" in out and "MACs (multiply-accumulates" in out and "FLOPs (= 2 x MACs)" in out
    assert "activation memory" in out and "parameter memory" in out


def test_summary_json_csv_markdown_and_depth(capsys):
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["totals"]["total_params"] == 61_706
    assert data["totals"]["flops (2 x macs)"] == 2 * data["totals"]["macs"] == 2 * 416_520
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "csv", "--input", "1x36x36")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["output"] == "6x32x32" and sum(int(r["MACs"]) for r in rows) > 416_520
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "markdown", "--depth", "1")
    assert code == 0 and out.startswith("| layer |") and "| features |" in out and "| classifier |" in out


def test_summary_plot_writes_a_picture(capsys, tmp_path):
    path = tmp_path / "lenet.png"
    code, out, _ = run(capsys, "summary", "lenet5", "--plot", str(path))
    assert code == 0 and "wrote" in out
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 800 and img.std() > 0.05  # a real figure, not blank


def test_summary_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "summary", "lenet5", "--depth", "-1")
    assert code == 2 and "depth" in err
    code, _, err = run(capsys, "summary", "lenet5", "--plot", str(tmp_path / "x.txt"))
    assert code == 2 and ".png" in err
    code, _, err = run(capsys, "summary", "nosuchnet")
    assert code == 2 and "unknown network" in err


def test_compare_arch_side_by_side(capsys):
    names = [n for n in ("lenet5", "alexnet") if n in cnnzoo.list_models()]
    code, out, _ = run(capsys, "compare-arch", *names, "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == names
    assert rows[0]["total_params"] == 61_706 and rows[0]["input"] == "1x32x32"
    code, out, _ = run(capsys, "compare-arch", *names, "--width", "200")
    assert all(n in out for n in names) and "GMACs" in out


def test_list_plot_labels_every_network(capsys, tmp_path):
    path = tmp_path / "zoo.png"
    code, out, _ = run(capsys, "list", "lenet5*", "--plot", str(path), "--width", "200")
    assert code == 0 and path.exists() and f"wrote {path}" in out
    assert matplotlib.image.imread(path).std() > 0.02


@pytest.mark.slow
def test_summary_plot_of_alexnet_and_googlenet(capsys, tmp_path):
    for name in ("alexnet", "googlenet"):
        if name not in cnnzoo.list_models():
            pytest.skip(f"{name} is not registered yet")
        assert run(capsys, "summary", name, "--depth", "1", "--plot", str(tmp_path / f"{name}.png"))[0] == 0


def test_figures_carry_axis_labels_and_layer_names():
    import torch

    from cnnzoo.analysis import summarize
    from cnnzoo.analysis.plots import summary_figure, zoo_figure

    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
    fig = summary_figure(summarize(model, (3, 8, 8)))
    params_ax, macs_ax, rf_ax = fig.axes
    assert "% of parameters" in params_ax.get_xlabel() and "% of MACs" in macs_ax.get_xlabel()
    assert [t.get_text() for t in params_ax.get_yticklabels()] == ["0", "2"]
    assert rf_ax.get_ylabel() == "input pixels" and "receptive field" in rf_ax.get_title()
    fig = zoo_figure([("netA", 1_000_000, 2_000_000_000), ("netB", 5_000_000, 300_000_000)])
    (ax,) = fig.axes
    assert {t.get_text() for t in ax.texts} == {"netA", "netB"}
    assert "parameters" in ax.get_xlabel() and "GMACs" in ax.get_ylabel()
