"""`cnnzoo explain` end to end (in-process) on a one-epoch lenet5 run over the built-in mnist5k digits.

What a user relies on: every method writes its PNG and one self-contained page; --format json reports the statistics of
the maps the library computes on the run's own preprocessing (computed here independently with `preprocess_image`);
an existing file is never replaced without --force; each bad input is one line, exit 2, nothing written.
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.cli.explain import EPILOG, RANDOM_NOTICE, _check_args, parse_methods
from cnnzoo.cli.main import build_parser, main

DIGIT_INDEX = 7 * 500 + 450  # a test-split 7 (mnist5k is sorted by class, the last 100 of each are the test split)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lenet5"
    code = main(["train", "lenet5", "--data", "mnist5k", "--epochs", "1", "--batch-size", "64", "--lr", "0.05",
                 "--run-dir", str(run), "--no-download", "--quiet"])
    assert code == 0
    return run


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    import cnnzoo.data

    images = np.load(cnnzoo.data.__path__[0] + "/mnist5k.npz")["images"]
    path = tmp_path_factory.mktemp("images") / "seven.png"
    Image.fromarray(images[DIGIT_INDEX]).save(path)
    return path


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.external = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        elif tag in ("link", "script", "iframe") or (tag != "img" and ("src" in a or "href" in a)):
            self.external.append((tag, a))


def page_images(path) -> list[Image.Image]:
    """The pictures of a page; each must be a PNG data URI (the page loads nothing else)."""
    parser = _Images()
    parser.feed(path.read_text(encoding="utf-8"))
    assert not parser.external, parser.external
    out = []
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        assert im.format == "PNG"
        out.append(im)
    return out


def _png(path) -> Image.Image:
    im = Image.open(path)
    assert im.format == "PNG"
    im.load()
    return im


def _explain(*argv) -> int:
    return main(["explain", *map(str, argv)])


def test_every_method_writes_its_png_and_one_page(run, digit, tmp_path, capsys):
    out = tmp_path / "out"
    methods = "gradcam,gradcam++,occlusion,guided-backprop,guided-gradcam,deconvnet,features,filters"
    assert _explain(run, digit, "--method", methods, "--out", out) == 0
    text = capsys.readouterr().out
    names = ["seven_gradcam.png", "seven_gradcampp.png", "seven_occlusion.png", "seven_guided-backprop.png",
             "seven_guided-gradcam.png", "seven_deconvnet.png", "features_seven.png", "filters.png"]
    for name in names:
        assert _png(out / name).size[0] > 100, name
        assert name in text
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["index.html"])  # nothing else
    pictures = page_images(out / "index.html")
    assert len(pictures) == len(names)  # 7 cells of the image x method table + the filters section
    page = (out / "index.html").read_text()
    assert page.count("<th>seven.png</th>") == 1 and "<th>occlusion</th>" in page


def test_cam_and_a_registered_name_with_random_weights(digit, tmp_path, capsys):
    out = tmp_path / "out"
    assert _explain("resnet18", digit, "--input-size", "32", "--method", "cam,gradcam", "--out", out) == 0
    captured = capsys.readouterr()
    assert captured.err.count(RANDOM_NOTICE) == 1 and captured.err.strip() == f"note: {RANDOM_NOTICE}"
    assert "at layer4" in captured.out
    for name in ("seven_cam.png", "seven_gradcam.png"):
        _png(out / name)
    assert len(page_images(out / "index.html")) == 2


def test_json_statistics_equal_the_library_on_the_runs_preprocessing(run, digit, tmp_path, capsys):
    from cnnzoo.explain import explain, occlusion
    from cnnzoo.train.checkpoint import load_trained, preprocess_image

    out = tmp_path / "out"
    assert _explain(run, digit, "--method", "gradcam,occlusion", "--format", "json", "--out", out) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((out / "explain.json").read_text()) == printed

    model, meta = load_trained(run)  # the independent path: the run's preprocessing, the library called directly
    x = preprocess_image(digit, meta)
    assert x.shape == (1, 1, 28, 28)
    ex = explain(model, x, "gradcam")
    raw = ex.raw[0]
    t = int(ex.target[0])
    got = printed["images"][0]["methods"]["gradcam"]
    assert got["target"] == t == int(model(x).argmax())
    assert got["class"] == meta["data"]["classes"][t]
    with torch.no_grad():
        p = float(torch.softmax(model(x), 1)[0, t])
    assert got["probability"] == pytest.approx(p, rel=1e-6)
    assert got["shape"] == [5, 5] and got["layer"] == "features.5"  # LeNet-5's last 16x5x5 map (28 padded to 32)
    assert got["min"] == pytest.approx(float(raw.min())) and got["max"] == pytest.approx(float(raw.max()))
    assert got["mean"] == pytest.approx(float(raw.mean()))
    assert got["argmax"] == list(np.unravel_index(int(raw.argmax()), raw.shape))

    occ = occlusion(model, x)
    o = printed["images"][0]["methods"]["occlusion"]
    assert (o["size"], o["stride"]) == (7, 3)  # a quarter of 28, half of that
    assert np.allclose(o["grid"], occ.prob[0].numpy(), atol=1e-6) and o["top_class"] == occ.top_class[0].tolist()


def test_an_existing_file_is_not_replaced_without_force(run, digit, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "seven_gradcam.png"
    mine.write_bytes(b"my own file")
    other = out / "notes.txt"
    other.write_text("mine too")
    capsys.readouterr()
    assert _explain(run, digit, "--out", out) == 2  # a non-empty folder: refused as a whole, nothing written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--force" in err[0]
    assert mine.read_bytes() == b"my own file" and sorted(p.name for p in out.iterdir()) == ["notes.txt",
                                                                                              "seven_gradcam.png"]
    assert _explain(run, digit, "--out", out, "--force") == 0  # its own names replaced, other files left alone
    _png(mine)
    assert other.read_text() == "mine too"


def _bad_cases(tmp_path, run, digit):
    junk = tmp_path / "junk.png"
    junk.write_text("not a picture")
    seg = tmp_path / "segrun"
    seg.mkdir()
    (seg / "run.json").write_text(json.dumps({"kind": "segmentation"}))
    return {
        "method": ([run, digit, "--method", "gradcma"], "unknown method 'gradcma' (did you mean gradcam"),
        "layer": ([run, digit, "--layer", "features.9"], "unknown layer 'features.9' in LeNet5; close names: "),
        "cam": ([run, digit, "--method", "cam"], "global average pooling + one linear layer"),
        "missing image": ([run, tmp_path / "nope.png"], "does not exist"),
        "unreadable image": ([run, junk], "is not an image Pillow can read"),
        "target name": ([run, digit, "--target", "eleven"], "--target 'eleven' is not a class index (0..9)"),
        "target index": ([run, digit, "--target", "10"], "e.g. 0, 1, 2"),
        "top without deconvnet": ([run, digit, "--top", "9"], "add --method deconvnet"),
        "unknown name": (["resnet1", digit], "unknown network 'resnet1'. Did you mean: resnet18"),
        "unknown run": ([tmp_path / "runs" / "nothere", digit], "does not exist"),
        "segmentation run": ([seg, digit], "use `cnnzoo segment eval|predict"),
    }


@pytest.mark.parametrize("case", ["method", "layer", "cam", "missing image", "unreadable image", "target name",
                                  "target index", "top without deconvnet", "unknown name", "unknown run",
                                  "segmentation run"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(run, digit, tmp_path, capsys, case):
    argv, expected = _bad_cases(tmp_path, run, digit)[case]
    out = tmp_path / "out"
    capsys.readouterr()
    assert _explain(*argv, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnzoo explain: error: "), err
    assert expected in err[0], err[0]
    assert not out.exists()


def test_out_that_is_a_file_is_refused(run, digit, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("keep")
    assert _explain(run, digit, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0] and out.read_text() == "keep"


def test_top9_over_the_runs_test_split_is_the_zf_fig2_grid(run, tmp_path, capsys):
    from cnnzoo.data import load_dataset
    from cnnzoo.train.checkpoint import load_trained

    out = tmp_path / "out"
    assert _explain(run, "--method", "deconvnet", "--top", "9", "--layer", "features.5", "--channel", "3",
                    "--format", "json", "--out", out) == 0
    top = json.loads(capsys.readouterr().out)["topk"]
    assert (top["layer"], top["channel"], top["dataset"], top["images"]) == ("features.5", 3, "mnist5k", 1000)
    # independently: the test split normalised with the run's recorded statistics, channel 3 of features.5, each
    # image's strongest activation, the 9 largest
    model, meta = load_trained(run)
    bundle = load_dataset("mnist5k")
    x = (bundle.test.images.float() / 255 - meta["data"]["mean"][0]) / meta["data"]["std"][0]
    acts = []
    handle = model.features[5].register_forward_hook(lambda m, a, o: acts.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    best = acts[0][:, 3].amax((1, 2))
    values, indices = best.topk(9)
    assert top["indices"] == indices.tolist()
    assert np.allclose(top["values"], values.numpy(), rtol=1e-5)
    # LeNet-5's receptive field at features.5 by hand: conv5 (rf 5), pool2 (6, jump 2), conv5 (6 + 4*2 = 14),
    # pool2 (14 + 2 = 16, jump 4): 16x16 patches, each box 16 pixels wide
    assert top["patch_size"] == 16 and len(top["boxes"]) == 9
    assert all(b - t == 15 and r - left == 15 for t, left, b, r in top["boxes"])
    grid = _png(out / "topk_features.5_ch3.png")
    # two 3x3 grids (projections, patches) of 16-pixel patches enlarged 3x to 48, 2-pixel lines between
    assert grid.size[0] > 2 * (3 * 48 + 4 * 2) and grid.size[1] > 3 * 48 + 4 * 2
    assert len(page_images(out / "index.html")) == 1


def test_sanity_correlations_equal_the_library_sanity_check(run, digit, tmp_path, capsys):
    from cnnzoo.explain import sanity_check
    from cnnzoo.train.checkpoint import load_trained, preprocess_image

    out = tmp_path / "out"
    assert _explain(run, digit, "--method", "gradcam,guided-backprop", "--sanity", "--format", "json",
                    "--out", out) == 0
    record = json.loads(capsys.readouterr().out)["sanity"]
    model, meta = load_trained(run)
    x = preprocess_image(digit, meta)
    for method in ("gradcam", "guided-backprop"):
        rows = sanity_check(model, x, method)
        got = next(r for r in record if r["method"] == method)["steps"]
        assert [s["layer"] for s in got] == [r["layer"] for r in rows] == \
            ["fc", "classifier.4", "classifier.1", "features.3", "features.0"]  # the logits first
        assert [s["spearman"] for s in got] == pytest.approx([r["spearman"] for r in rows], abs=1e-9)
    _png(out / "sanity.png")
    assert len(page_images(out / "index.html")) == 3


def test_test_split_images_by_index(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert _explain(run, "test:450", "--format", "json", "--out", out) == 0  # mnist5k test image 450: a 4
    rec = json.loads(capsys.readouterr().out)["images"][0]
    assert rec["image"] == "test:450" and rec["label"] == "4"
    _png(out / "test-450_gradcam.png")
    assert _explain(run, "test:1000", "--out", tmp_path / "other") == 2
    assert "has 1000 images (test:0 to test:999)" in capsys.readouterr().err


def test_help_examples_parse_and_pass_the_checks():
    parser = build_parser()
    lines = [line.split("#")[0].strip() for line in EPILOG.splitlines() if line.strip().startswith("cnnzoo explain")]
    assert len(lines) >= 7
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])
        _check_args(args, parse_methods(args.method))
