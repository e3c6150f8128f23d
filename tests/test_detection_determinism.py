"""Selective search is the paper's fast mode, and gives an image the same proposals, in the same order, on every run:
in one process whatever ran before or beside it, in two separate processes, and through `cnnzoo detect` train and
predict (OpenCV ranks the regions with the C library's process-wide rand(): `cnnzoo.detection.proposals` seeds it per
image under a lock)."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from cnnzoo.detection.data import digits_detection
from cnnzoo.detection.proposals import SS_SIGMA, SS_STRATEGIES, _segmentation, selective_search

cv2 = pytest.importorskip("cv2", reason="selective search needs the extra: pip install 'cnnzoo[detection]'")

# Process 1 runs images 0-3 in order; process 2 first runs image 5 (advancing rand()), then 3-0 on two threads.
SCRIPT = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from cnnzoo.detection.data import digits_detection
from cnnzoo.detection.proposals import selective_search
_, test = digits_detection(num_train=1, num_test=6)
order = [int(i) for i in sys.argv[1].split(",")]
with ThreadPoolExecutor(int(sys.argv[2])) as pool:
    boxes = dict(zip(order, pool.map(lambda i: selective_search(test.image(i)).tolist(), order)))
print(json.dumps({i: boxes[i] for i in range(4)}))
"""


@pytest.fixture(scope="module")
def images():
    return digits_detection(num_train=1, num_test=6)[1]


def _in_subprocess(order: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, order, str(threads)], capture_output=True, text=True,
                         check=True, timeout=120)
    return {int(k): v for k, v in json.loads(out.stdout).items()}


def test_fast_mode_is_the_papers():
    """Uijlings et al. 2013, Table 5 / R-CNN Sec. 2.1: HSV and Lab, k = 50 and 100 (minSize = k, sigma = 0.8), the
    similarity sets C+T+S+F and T+S+F: 8 hierarchies. OpenCV's own preset (k = 150, 300, 450) is not used."""
    assert SS_STRATEGIES["fast"] == (("hsv", "lab"), (50, 100), ("CTSF", "TSF"))
    assert SS_SIGMA == 0.8
    from cnnzoo.detection.proposals import _to_hwc_bgr

    # a colour image: 8 x 8 blocks of random colours (hue matters: OpenCV's preset's HSV differs from the full-range)
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 6, 6), generator=g, dtype=torch.uint8).repeat_interleave(8, 1)
    img = (img.repeat_interleave(8, 2).int() + torch.randint(-8, 9, (3, 48, 48), generator=g)).clamp(0, 255)
    img = img.to(torch.uint8)

    # the grouping OpenCV runs with the paper's settings, set up by hand here, gives the same boxes (as a set)
    seg = cv2.ximgproc.segmentation
    ss = seg.createSelectiveSearchSegmentation()
    bgr = _to_hwc_bgr(img)
    ss.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV_FULL))
    ss.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab))
    for k in (50, 100):
        g = seg.createGraphSegmentation(k=float(k), sigma=0.8, min_size=k)
        ss.addGraphSegmentation(g)
    c, t, s, f = (seg.createSelectiveSearchSegmentationStrategyColor(),
                  seg.createSelectiveSearchSegmentationStrategyTexture(),
                  seg.createSelectiveSearchSegmentationStrategySize(), seg.createSelectiveSearchSegmentationStrategyFill())
    ss.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(c, t, s, f))
    ss.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(t, s, f))
    want = {tuple(r) for r in ss.process().tolist()}
    got = {tuple(r) for r in _segmentation(cv2, bgr, "fast").process().tolist()}
    assert got == want


def test_same_proposals_whatever_ran_before_or_beside(images):
    first = [selective_search(images.image(i)) for i in range(4)]
    selective_search(images.image(5), "quality")  # thousands of rand() calls in between
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(lambda i: selective_search(images.image(i)), [3, 2, 1, 0]))[::-1]
    assert all(len(a) > 3 for a in first)
    for a, b in zip(first, again):
        assert torch.equal(a, b)  # the same boxes in the same order


@pytest.mark.slow
def test_same_proposals_in_two_processes(images):
    """Two fresh interpreters, one calling in order, one after another image and on two threads in reverse order
    (~10 s: two interpreter starts)."""
    one, two = _in_subprocess("0,1,2,3", 1), _in_subprocess("5,3,2,1,0", 2)
    assert one == two
    assert one == {i: selective_search(images.image(i)).tolist() for i in range(4)}  # and as this process gives


@pytest.mark.slow
def test_detect_train_and_predict_twice_give_identical_detections(tmp_path, capsys):
    """Two `cnnzoo detect train` runs with selective search on the same tiny data, then `detect predict` of each on
    the same image: the same proposals, metrics and detections (~10 s)."""
    from PIL import Image

    from cnnzoo.cli.main import main
    from cnnzoo.detection.rcnn import _load_tensors, evaluate_run

    tiny = ["--set", "data.params={num_train: 6, num_test: 3, seed: 3}", "--proposals", "selective_search",
            "--set", "backbone.pretrain=null", "--iterations", "10", "--set", "svm.init_negatives=100", "-q"]
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        assert main(["detect", "train", "rcnn", "--data", "digits-detection", "--run-dir", str(run), *tiny]) == 0
    props = [_load_tensors(r / "proposals.safetensors")[0] for r in runs]
    assert props[0].keys() == props[1].keys() and all(torch.equal(props[0][k], props[1][k]) for k in props[0])
    assert json.loads((runs[0] / "metrics.json").read_text()) == json.loads((runs[1] / "metrics.json").read_text())
    dets = [evaluate_run(r)[3] for r in runs]
    for (b1, s1, l1), (b2, s2, l2) in zip(*dets):
        assert torch.equal(b1, b2) and torch.equal(s1, s2) and torch.equal(l1, l2)
    _, test = digits_detection(seed=3, num_train=1, num_test=1)
    img = tmp_path / "canvas.png"
    Image.fromarray(test.image(0)[0].numpy()).save(img)
    outs = []
    for run in runs:
        capsys.readouterr()
        assert main(["detect", "predict", str(run), str(img), "--output", str(tmp_path / "o.png"), "--threshold",
                     "-100"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and "detections scoring above -100" in outs[0]
