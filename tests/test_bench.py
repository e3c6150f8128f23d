"""`cnnzoo bench` and cnnzoo.bench: every network measures in both modes; the figures mean what they say.

The expected values are independent of the code under test: a network that sleeps a known time per call gives
the latency and images/s, one that holds a known number of bytes gives the memory, the percentile is numpy's
linear interpolation worked by hand, and the probe is forced through CNNZOO_FORCE_BF16 or given CPU flags.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo import bench
from cnnzoo.bench import benchmark, cpu_has_native_bf16, fastest_inference_config, percentile
from test_cli_errors import run_cli  # the CLI runner the other CLI tests use
from test_models import HEAVY  # the networks whose every-network cases run with -m slow

NAMES = cnnzoo.list_models()


# ------------------------------------------------------------------------------- every registered network
def _check(r: bench.BenchResult, mode: str, batch: int, iters: int) -> None:
    assert r.mode == mode and r.batch == batch and r.iters == iters == len(r.latencies_ms)
    assert r.images_per_s > 0 and r.total_time_s > 0
    # images/s is the batch times the iterations over the summed latencies (not the median's reciprocal)
    assert r.images_per_s == pytest.approx(batch * iters / (sum(r.latencies_ms) / 1e3), rel=1e-9)
    assert 0 < r.latency_ms_min <= r.latency_ms_median <= r.latency_ms_p90 <= r.latency_ms_max
    assert r.peak_memory_mb > 0 and r.memory_increase_mb >= 0
    d = r.to_dict()
    for key in ("images_per_s", "latency_ms_median", "latency_ms_p90", "peak_memory_mb", "memory_measure",
                "precision", "channels_last", "compile", "threads", "input_size", "step"):
        assert key in d, key


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in NAMES])
def test_every_network_benches_in_both_modes(name):
    """Tiny size (the network's minimum, at least 8 pixels), 10 classes, batch 2: inference leaves the weights
    as they were; one training step (no warm-up: it is the costly half) changes them (forward, loss, backward and
    the SGD update all ran)."""
    model = cnnzoo.create_model(name, num_classes=10)
    s = max(model.min_input_size, 8)
    size = (model.in_channels, s, s)
    params = [p for p in model.parameters() if p.requires_grad]
    first, last = params[0], params[-1]  # the stem's and the classifier's (or an aux head's) weights
    before = [first.detach().clone(), last.detach().clone()]
    r = benchmark(model, name=name, mode="infer", batch=2, input_size=size, warmup=1, iters=2)
    _check(r, "infer", 2, 2)
    assert r.params == sum(p.numel() for p in model.parameters())
    assert torch.equal(before[0], first) and torch.equal(before[1], last)
    r = benchmark(model, name=name, mode="train", batch=2, input_size=size, warmup=0, iters=1,
                  aux_weight=cnnzoo.get_card(name).aux_weight)
    _check(r, "train", 2, 1)
    assert r.step == "forward + loss + backward + SGD step"
    assert not torch.equal(before[1], last), "the classifier's weights were not updated"


# ------------------------------------------------------------------------------------- the figures' meaning
class Sleeper(nn.Module):
    """Sleeps ``seconds`` per forward; optionally holds ``mib`` MiB during it (written, so resident)."""

    def __init__(self, seconds: float, mib: int = 0):
        super().__init__()
        self.seconds, self.mib = seconds, mib
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        held = torch.ones(self.mib * 2**20 // 4) if self.mib else None  # ones, not empty: the pages are touched
        time.sleep(self.seconds)
        del held
        return x.flatten(1)[:, :10] + self.w


def test_latency_and_images_per_second_of_a_known_step():
    r = benchmark(Sleeper(0.02), mode="infer", batch=4, input_size=(1, 4, 4), warmup=1, iters=5)
    assert 20 <= r.latency_ms_median <= 60  # sleep(20 ms) and a loaded machine's overhead
    assert r.images_per_s == pytest.approx(4 * 5 / r.total_time_s)
    assert 4 / 0.1 <= r.images_per_s <= 4 / 0.02  # at most 4 images per 20 ms; slack for a loaded machine


def test_seconds_bounds_the_timed_iterations():
    r = benchmark(Sleeper(0.01), batch=1, input_size=(1, 4, 4), warmup=0, seconds=0.1)
    assert 1 <= r.iters <= 11  # 0.1 s of 10 ms steps; the last one may start just before the deadline
    # it stops at the first step ending after the deadline: the steps before it took less than 0.1 s (the loop's own
    # overhead, and a loaded machine's pauses between steps, are not in the latencies: no lower bound on their sum
    # but the last step's end)
    assert sum(r.latencies_ms[:-1]) / 1e3 < 0.1 and r.total_time_s >= 0.01


_PEAK_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_bench import Sleeper
from cnnzoo.bench import benchmark
r = benchmark(Sleeper(0.0, mib=200), batch=1, input_size=(1, 4, 4), warmup=0, iters=1)
print(json.dumps([r.memory_measure, r.memory_increase_mb, r.peak_memory_mb]))
"""


def test_peak_memory_sees_what_a_step_holds():
    """A step that holds 200 MiB shows a peak 200 MiB above where it started. Measured in a fresh process: peak RSS
    is per process, and a test worker that freed big tensors earlier may hand them back without new resident pages."""
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(Path(__file__).parent)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    measure, increase, peak = json.loads(out.strip().splitlines()[-1])
    if measure.startswith("rss_peak"):
        assert 190 <= increase <= 260, increase
    assert peak >= 200


def test_percentile_is_linear_interpolation():
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)  # rank 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([5.0], 90) == 5.0


def test_threads_are_restored():
    before = torch.get_num_threads()
    r = benchmark(Sleeper(0.0), batch=1, input_size=(1, 4, 4), warmup=0, iters=1, threads=before + 1)
    assert r.threads == before + 1 and torch.get_num_threads() == before


@pytest.mark.parametrize("native", [True, False])
def test_matrix_marks_exactly_the_fastest(monkeypatch, native):
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: native)
    results = bench.bench_matrix("lenet5", batch=2, warmup=0, iters=1)
    want = [("fp32", False), ("fp32", True)] + ([("bf16", False), ("bf16", True)] if native else [])
    assert [(r.precision, r.channels_last) for r in results] == want  # no fp16 on a CPU, no compile
    assert [r.fastest for r in results].count(True) == 1
    assert max(results, key=lambda r: r.images_per_s).fastest
    assert len(bench.matrix_configs("cpu", compile=True)) == 2 * len(want)


# ------------------------------------------------------------------------- time box, progress, emulated bf16
def test_a_matrix_keeps_to_its_time_box_and_reports_each_configuration(monkeypatch):
    """Every configuration stops at the first iteration ending after its budget: the iterations before the last
    took less than it. The whole matrix takes about 4 x (warm-up + budget); the bound is generous for a loaded
    machine, and far below what the 20 iterations per configuration of old would take for a slow network."""
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: True)
    lines: list[str] = []
    t0 = time.perf_counter()
    results = bench.bench_matrix("lenet5", batch=2, seconds=0.2, warmup=3, progress=lines.append)
    elapsed = time.perf_counter() - t0
    assert len(results) == 4 and elapsed < 4 * (2 * 0.2 + 1.0)
    for r in results:
        assert r.time_budget_s == 0.2 and r.iters >= 1 and not r.emulated
        assert sum(r.latencies_ms[:-1]) / 1e3 < 0.2  # stopped at the first iteration ending after the budget
    text = "".join(lines)  # each configuration's line is written when it starts and completed when it ends
    assert lines[0] == "[1/4] lenet5: fp32, contiguous ..." and lines[1].endswith(" s\n")
    done = text.splitlines()
    assert [line.split(" ...")[0] for line in done] == [
        "[1/4] lenet5: fp32, contiguous", "[2/4] lenet5: fp32, channels-last", "[3/4] lenet5: bf16, contiguous",
        "[4/4] lenet5: bf16, channels-last"]
    for line, r in zip(done, results):
        assert line.endswith(f"{r.images_per_s:.1f} img/s, {r.iters} iterations in {r.total_time_s:.1f} s")


def test_a_configuration_slower_than_its_budget_costs_one_warmup_and_one_timed_iteration():
    """A 0.4 s step under a 0.1 s budget: 1 warm-up + 1 timed iteration (~0.8 s), not 5 + 1 (2.4 s)."""
    t0 = time.perf_counter()
    r = benchmark(Sleeper(0.4), batch=1, input_size=(1, 4, 4), warmup=5, seconds=0.1)
    assert (r.warmup, r.iters) == (1, 1) and time.perf_counter() - t0 < 1.6
    # an iteration count keeps the warm-up whole: the benchmark scripts compare configurations at equal warm-up
    r = benchmark(Sleeper(0.05), batch=1, input_size=(1, 4, 4), warmup=3, iters=1)
    assert (r.warmup, r.iters) == (3, 1) and r.time_budget_s is None


def test_the_default_is_a_time_budget_not_an_iteration_count(monkeypatch):
    assert bench.DEFAULT_SECONDS == 3.0  # the documented default (README, `cnnzoo bench --help`)
    monkeypatch.setattr(bench, "DEFAULT_SECONDS", 0.3)  # the same rule, quicker
    r = benchmark(Sleeper(0.04), batch=1, input_size=(1, 4, 4), warmup=1)
    assert r.time_budget_s == 0.3
    assert 3 <= r.iters <= 8  # 0.3 s of 40 ms steps: the 8th ends at 0.32 s; fewer on a loaded machine


@pytest.mark.parametrize("native", [True, False])
def test_emulated_bf16_follows_the_probe(monkeypatch, native):
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: native)
    assert bench.is_emulated("bf16", "cpu") is not native and not bench.is_emulated("fp32", "cpu")
    has_bf16 = [p for p, _, _ in bench.matrix_configs("cpu")].count("bf16")
    assert has_bf16 == (2 if native else 0)  # left out when it would be emulated ...
    assert [p for p, _, _ in bench.matrix_configs("cpu", emulated=True)].count("bf16") == 2  # ... unless asked
    lines: list[str] = []
    results = bench.bench_matrix("lenet5", batch=2, warmup=0, iters=1, emulated=True, progress=lines.append)
    assert [r.emulated for r in results] == [False, False, not native, not native]
    assert ("bf16 (emulated)" in "".join(lines)) is not native


def _progress(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("[")]


@pytest.mark.parametrize("native", [True, False])
def test_cli_matrix_shows_progress_and_the_emulated_precisions(monkeypatch, native):
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: native)
    argv = ["bench", "lenet5", "--matrix", "--batch", "2", "--warmup", "1", "--seconds", "0.1"]
    code, out, err = run_cli(argv)
    assert code == 0, err
    assert len(_progress(err)) == (4 if native else 2) and all("img/s" in line for line in _progress(err))
    rows = [line.replace(" *", "", 1).split()[1:3] for line in out.splitlines() if line.startswith("lenet5")]
    assert [p for p, _ in rows] == ["fp32", "fp32"] + (["bf16", "bf16"] if native else [])
    assert "(emulated)" not in out + err
    assert ("bf16 left out" in out and "add --emulated" in out) is not native
    code, out, err = run_cli([*argv, "--emulated"])
    assert code == 0, err
    assert len(_progress(err)) == 4 and ("(emulated)" in _progress(err)[2]) is not native
    rows = [line.replace(" *", "", 1).split()[1:3] for line in out.splitlines() if line.startswith("lenet5")]
    assert rows[2:] == ([["bf16", "contiguous"], ["bf16", "channels-last"]] if native else
                        [["bf16", "(emulated)"], ["bf16", "(emulated)"]]) and "bf16 left out" not in out
    code, out, err = run_cli([*argv, "--emulated", "--format", "json", "-q"])
    assert code == 0 and not _progress(err)
    assert [r["emulated"] for r in json.loads(out)["results"]] == [False, False, not native, not native]


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "fp16"}, "CUDA only"),
    ({"precision": "int8"}, "fp32, bf16, fp16"),
    ({"mode": "eval"}, "infer, train"),
    ({"batch": 0}, "at least 1"),
    ({"iters": 2, "seconds": 1.0}, "not both"),
])
def test_bad_configuration_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark("lenet5", **kwargs)


# ----------------------------------------------------------------------------------------- capability probe
def test_probe_forced_either_way(monkeypatch):
    conv, mlp = cnnzoo.create_model("lenet5"), cnnzoo.create_model("highway_fc_mnist")
    monkeypatch.setenv("CNNZOO_FORCE_BF16", "1")
    assert cpu_has_native_bf16()
    assert fastest_inference_config("cpu", conv) == ("bf16", True)
    assert fastest_inference_config("cpu", mlp) == ("bf16", False)  # nothing for channels-last to speed up
    monkeypatch.setenv("CNNZOO_FORCE_BF16", "0")
    assert not cpu_has_native_bf16()
    assert fastest_inference_config("cpu", conv) == ("fp32", True)  # no native bf16: fp32, channels-last
    assert fastest_inference_config("cpu") == ("fp32", True)
    monkeypatch.setenv("CNNZOO_FORCE_BF16", "yes")
    with pytest.raises(ValueError, match="CNNZOO_FORCE_BF16"):
        cpu_has_native_bf16()


@pytest.mark.parametrize("flags, native", [
    ({"avx512f", "avx512_bf16"}, True),  # Cooper Lake, Zen 4
    ({"avx512f", "amx_bf16", "amx_tile"}, True),  # Sapphire Rapids
    ({"avx512f", "avx512bw"}, False),  # Skylake-SP: AVX-512 without BF16
    ({"avx2", "fma"}, False),
    (set(), False),  # no /proc/cpuinfo
])
def test_probe_reads_the_cpu_flags(monkeypatch, flags, native):
    monkeypatch.delenv("CNNZOO_FORCE_BF16", raising=False)
    monkeypatch.setattr(bench, "cpu_flags", lambda: flags)
    assert cpu_has_native_bf16() is native
    assert fastest_inference_config("cpu")[0] == ("bf16" if native else "fp32")


# ------------------------------------------------------------------------------------------------------- CLI
TINY = ["--batch", "2", "--warmup", "1", "--iters", "2"]


def test_cli_json_has_every_field_and_the_machine():
    code, out, err = run_cli(["bench", "lenet5", "resnet20_cifar", "--format", "json", "--threads", "1", *TINY])
    assert code == 0, err
    doc = json.loads(out)
    m = doc["machine"]
    assert m["threads"] == 1 and m["torch_version"] == torch.__version__ and m["cpu_model"]
    assert set(m["cpu_flags"]) >= {"avx512_bf16", "amx_bf16"} and isinstance(m["native_bf16"], bool)
    assert [r["name"] for r in doc["results"]] == ["lenet5", "resnet20_cifar"]
    assert [r["input_size"] for r in doc["results"]] == ["1x32x32", "3x32x32"]  # the cards' sizes
    for r in doc["results"]:
        assert r["images_per_s"] > 0 and r["latency_ms_p90"] >= r["latency_ms_median"] > 0
        assert r["peak_memory_mb"] > 0 and r["threads"] == 1
        assert r["precision"] == bench.fastest_inference_config("cpu")[0]  # the default path: the probe's choice


def test_cli_train_csv_and_table():
    code, out, err = run_cli(["bench", "resnet20_cifar", "--mode", "train", "--format", "csv", "--input", "16",
                              "--channels-last", *TINY])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["mode"] == "train" and rows[0]["input_size"] == "3x16x16"
    assert rows[0]["channels_last"] == "True" and float(rows[0]["images_per_s"]) > 0
    code, out, err = run_cli(["bench", "lenet5", "--matrix", *TINY])
    assert code == 0, err
    assert out.count(" * ") + out.count(" *\n") >= 1 and "lenet5" in out and "machine:" in out


@pytest.mark.skipif(bench.library_available("torchvision"), reason="torchvision is installed here")
def test_cli_against_a_missing_library_says_so():
    code, out, err = run_cli(["bench", "lenet5", "--against", "torchvision", "--format", "json", *TINY])
    assert code == 0, err
    doc = json.loads(out)
    assert [r["source"] for r in doc["results"]] == ["cnnzoo"]
    assert any("torchvision is not installed" in n for n in doc["notes"])


@pytest.mark.parametrize("argv, words", [
    (["bench", "resnet5"], ["resnet5"]),
    (["bench", "lenet5", "--input", "3x32"], ["CxHxW"]),
    (["bench", "lenet5", "--input", "3x32x32"], ["1-channel", "--input 1x32x32"]),
    (["bench", "lenet5", "--precision", "fp16"], ["CUDA only", "bf16 or fp32"]),
    (["bench", "lenet5", "--matrix", "--precision", "bf16"], ["--matrix", "--precision"]),
    (["bench", "lenet5", "--batch", "0"], ["--batch", "at least 1"]),
    (["bench", "lenet5", "--iters", "2", "--seconds", "1"], ["not allowed with"]),
    (["bench", "lenet5", "--emulated"], ["--emulated", "--matrix", "--precision bf16"]),
    (["bench", "lenet5", "--device", "mps"], ["cpu or cuda"]),
    pytest.param(["bench", "lenet5", "--device", "cuda"], ["no CUDA GPU"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_cli_bad_input_is_one_line(argv, words):
    code, out, err = run_cli(argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("cnnzoo")]
    assert lines and "Traceback" not in err + out
    for w in words:
        assert w in lines[-1], (w, err)


def test_the_parsers_precision_choices_are_the_fast_paths():
    """cnnzoo.bench keeps a copy so that building the CLI parser does not import cnnzoo.evaluate."""
    from cnnzoo.evaluate.fastpath import INFERENCE_PRECISIONS

    assert bench.INFERENCE_PRECISIONS == INFERENCE_PRECISIONS == ("auto", "fp32", "bf16", "fp16")
