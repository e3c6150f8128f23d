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


def test_summary_input_size_alone_takes_the_networks_channels(capsys):
    code, out, _ = run(capsys, "summary", "lenet5", "--input", "32", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["input_size"] == [1, 32, 32] and data["totals"]["macs"] == 416_520
    code, _, err = run(capsys, "summary", "lenet5", "--input", "3x32x32")
    assert code == 2 and "--input 1x32x32" in err and "-o in_channels=3" in err
    code, out, _ = run(capsys, "summary", "lenet5", "-o", "in_channels=3", "--input", "32", "--format", "json")
    assert code == 0 and json.loads(out)["input_size"] == [3, 32, 32]


def _boxes(fig):
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    return ax, [t.get_window_extent(renderer) for t in ax.texts]


def _disjoint(a, b) -> bool:
    return a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


def test_zoo_figure_labels_never_overlap_and_families_have_a_legend():
    from cnnzoo.analysis.plots import ZooPoint, zoo_figure

    # a crowded cluster (40 networks within a factor 1.3 of each other) and a few far apart
    pts = [ZooPoint(f"crowded_network_{i}", int(1e6 * (1 + 0.0075 * i)), int(1e9 * (1 + 0.0075 * (i % 7))),
                    f"family{i % 3}") for i in range(40)]
    pts += [ZooPoint("tiny", 60_000, 400_000, "lenet"), ZooPoint("huge", 140_000_000, 20_000_000_000, "vgg")]
    fig = zoo_figure(pts)
    ax, boxes = _boxes(fig)
    labels = [t.get_text() for t in ax.texts]
    assert "tiny" in labels and "huge" in labels  # isolated points are always named
    assert 2 < len(labels) < len(pts)  # the crowd is not drawn as an unreadable pile
    assert all(_disjoint(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert f"{len(labels)} named" in ax.get_title() and ".html" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == ["family0", "family1", "family2", "lenet", "vgg"]
    colours = {tuple(c.get_facecolor()[0]) for c in ax.collections}
    assert len(colours) == 5  # one colour per family


def test_list_plot_html_is_self_contained_and_names_every_network(capsys, tmp_path):
    import xml.etree.ElementTree as ET

    path = tmp_path / "zoo.html"
    code, out, _ = run(capsys, "list", "lenet5*", "--plot", str(path), "--width", "200")
    assert code == 0 and f"wrote {path}" in out
    page = path.read_text()
    assert "<script" in page and " src=" not in page and "href=" not in page and "@import" not in page
    svg = ET.fromstring(page[page.index("<svg"): page.index("</svg>") + len("</svg>")])
    ns = "{http://www.w3.org/2000/svg}"
    circles = {c.get("data-name"): c for c in svg.iter(f"{ns}circle")}
    assert set(circles) == set(cnnzoo.list_models("lenet5*"))
    for name, c in circles.items():
        assert c.find(f"{ns}title").text.startswith(f"{name} (lenet)")  # the hover name, without the script too
    # LeNet-5: 61,706 parameters and 416,520 MACs (Table I of LeCun et al. 1998 with max-pool and ReLU)
    assert "0.06 M parameters, 0.000 GMACs at 1x32x32" in circles["lenet5"].get("data-info")


def test_list_plot_html_places_points_by_their_numbers():
    from cnnzoo.analysis.plots import ZooPoint, zoo_html

    page = zoo_html([ZooPoint("a", 1_000_000, 1_000_000_000, "f"), ZooPoint("b", 10_000_000, 100_000_000, "g")])
    import re

    (ax, ay), (bx, by) = [tuple(map(float, m)) for m in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', page)]
    assert bx > ax and by > ay  # more parameters: right; fewer MACs: lower on the page (larger y)
