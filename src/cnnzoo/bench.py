"""Speed of a network on this machine: images/s, latency per batch and peak memory, for inference or a training step.

    >>> from cnnzoo.bench import benchmark, machine_info
    >>> r = benchmark("resnet50", batch=16, precision="bf16", channels_last=True)
    >>> r.images_per_s, r.latency_ms_median, r.latency_ms_p90, r.peak_memory_mb

What is timed:
- ``mode="infer"``: one forward of a batch in eval mode under ``torch.inference_mode``.
- ``mode="train"``: one full step, forward, loss (cross-entropy, plus the card's aux weight x each aux head's),
  backward and an SGD update (lr 0.01, momentum 0.9), on random images and labels.

Each configuration runs ``warmup`` untimed iterations (the first one also compiles under ``compile=True``; its
time is reported apart as ``compile_time_s``), then ``iters`` timed iterations, or as many as fit in ``seconds``
(default: 3 s, at least one iteration). Under a time budget the warm-up is time-boxed too: it stops early once it
has taken ``seconds`` (after at least one iteration, two with ``compile``), so a configuration that takes 30 s an
iteration (emulated bf16 of a ResNet-50 batch) costs two iterations, not 23. ``BenchResult.warmup`` is the number
of warm-up iterations that ran. On CUDA every iteration ends with a synchronisation, so a latency is the time the
GPU took.

`bench_matrix` (and ``cnnzoo bench --matrix``) measures every precision x memory format, but a precision this
machine only emulates (bf16 on a CPU without native BF16: several times slower than fp32) only when asked for
(``emulated=True``); a result measured in an emulated precision has ``emulated=True`` and is labelled so.
``progress`` (a callable taking one line of text, e.g. ``print``) reports each configuration as it starts and ends.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over warm-up and timed iterations. On CPU, the
process's peak resident set (``VmHWM`` of /proc/self/status), reset just before warm-up through
/proc/self/clear_refs so it covers this configuration only; ``memory_increase_mb`` is that peak less the resident
set before warm-up (model and input already built), i.e. what activations, gradients and optimizer state add.
Where the reset is not possible (not Linux, or refused) the peak is ``ru_maxrss``, the process's peak since it
started, and ``memory_measure`` says so.

The capability probe (`cpu_has_native_bf16`, `fastest_inference_config`) decides the fast inference path: bf16
autocast only on a CPU with native BF16 instructions (AVX-512 BF16 or AMX; without them PyTorch emulates bf16 and
is slower than fp32), bf16/fp16 autocast on CUDA, and the channels-last memory format for convolutional networks.
``CNNZOO_FORCE_BF16=1`` (or ``0``) overrides what the CPU flags say.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
# the --precision choices of the inference commands (cnnzoo.evaluate.fastpath has the same tuple; here so that the
# CLI parser is built without importing cnnzoo.evaluate, which imports the data pipeline)
INFERENCE_PRECISIONS = ("auto", *PRECISIONS)
MODES = ("infer", "train")
SOURCES = ("cnnzoo", "torchvision", "timm")
_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the CPU flags that mean native BF16 arithmetic (Linux /proc/cpuinfo names): AVX-512 BF16 (Cooper Lake, Zen 4 and
# later) and AMX BF16 tiles (Sapphire Rapids and later); oneDNN uses them for bf16 convolutions and matmuls
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FORCE_BF16_ENV = "CNNZOO_FORCE_BF16"
DEFAULT_SECONDS = 3.0  # the time budget of each configuration when neither iters nor seconds is given


# ------------------------------------------------------------------------------------------ capability probe
def cpu_flags() -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what Python's platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _forced_bf16() -> bool | None:
    value = os.environ.get(FORCE_BF16_ENV)
    if value is None or value.strip() == "":
        return None
    if value.strip() in ("0", "1"):
        return value.strip() == "1"
    raise ValueError(f"{FORCE_BF16_ENV}={value!r}: set it to 1 (use bf16) or 0 (do not), or unset it")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX BF16), so bf16 autocast is faster than fp32.

    ``CNNZOO_FORCE_BF16=1`` or ``0`` overrides the flags (for tests, or a machine whose flags mislead)."""
    forced = _forced_bf16()
    if forced is not None:
        return forced
    return any(f in cpu_flags() for f in BF16_FLAGS)


def is_conv_net(model: nn.Module) -> bool:
    """Whether ``model`` has 2-D convolutions (the layers the channels-last memory format speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def fastest_inference_config(device: str | torch.device = "cpu", model: nn.Module | None = None) -> tuple[str, bool]:
    """(precision, channels_last) of the fastest safe inference path on ``device``.

    bf16 on a CPU with native BF16 (`cpu_has_native_bf16`), else fp32; on CUDA bf16 where the GPU supports it,
    else fp16. Channels-last for convolutional networks (``model`` None: assumed one)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    elif dev.type == "cpu":
        precision = "bf16" if cpu_has_native_bf16() else "fp32"
    else:
        precision = "fp32"
    return precision, model is None or is_conv_net(model)


def is_emulated(precision: str, device: str | torch.device = "cpu") -> bool:
    """Whether ``precision`` runs emulated on ``device``: bf16 on a CPU without native BF16 (`cpu_has_native_bf16`)
    is converted to and from fp32 around every op, several times slower than fp32 itself."""
    return precision == "bf16" and torch.device(device).type == "cpu" and not cpu_has_native_bf16()


def machine_info(device: str | torch.device = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What a benchmark figure depends on: CPU model and its bf16 flags, threads (default: torch's current
    setting), torch version, GPU name."""
    flags = cpu_flags()
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": {f: f in flags for f in ("avx2", "avx512f", *BF16_FLAGS)},
        "native_bf16": cpu_has_native_bf16(),
        "native_bf16_forced": _forced_bf16() is not None,
        "threads": threads or torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda_version"] = torch.version.cuda
    return info


def machine_kind(threads: int | None = None) -> str:
    """One line for the benchmark scripts: which kind of CPU this is for the fast path."""
    flags = cpu_flags()
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        kind = f"CPU with native BF16 ({', '.join(found)})"
    elif "avx512f" in flags:
        kind = "AVX-512 CPU without native BF16"
    else:
        kind = "CPU without AVX-512 or native BF16"
    if _forced_bf16() is not None:
        kind += f" [{FORCE_BF16_ENV}={os.environ[FORCE_BF16_ENV]}]"
    return f"{cpu_model()}: {kind}, {threads or torch.get_num_threads()} threads, torch {torch.__version__}"


# ------------------------------------------------------------------------------------------------ memory
def _vm_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _vm_kb("VmHWM") is not None


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class _PeakMemory:
    """Peak memory over a block: CUDA max allocated, or the CPU resident set (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            self.measure = "cuda_max_allocated"
        elif _reset_peak_rss():
            self.base = _vm_kb("VmRSS") / 1024
            self.measure = "rss_peak (VmHWM, reset before warm-up)"
        else:
            rss = _vm_kb("VmRSS")
            self.base = rss / 1024 if rss is not None else _maxrss_mb()
            self.measure = "ru_maxrss (process peak since start; could not reset)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.measure.startswith("rss_peak"):
            self.peak = _vm_kb("VmHWM") / 1024
        else:
            self.peak = _maxrss_mb()


# ------------------------------------------------------------------------------------------------ benchmark
@dataclass
class BenchResult:
    """One measured configuration. Latencies are per batch, in milliseconds; memory in MiB."""

    name: str
    source: str
    mode: str
    device: str
    batch: int
    input_size: tuple[int, int, int]
    precision: str
    channels_last: bool
    compile: bool
    threads: int
    warmup: int
    iters: int
    images_per_s: float
    latency_ms_median: float
    latency_ms_p90: float
    latency_ms_min: float
    latency_ms_max: float
    total_time_s: float
    peak_memory_mb: float
    memory_increase_mb: float
    memory_measure: str
    params: int
    step: str
    compile_time_s: float | None = None
    fastest: bool = False
    emulated: bool = False
    time_budget_s: float | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = "x".join(map(str, self.input_size))
        return d


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def check_config(*, mode: str, precision: str, device: str | torch.device, batch: int, threads: int | None,
                 iters: int | None, seconds: float | None, warmup: int) -> torch.device:
    """Validate a benchmark configuration; the device it runs on. Every problem names what is valid."""
    from .train.config import device_problem

    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    problem = device_problem(str(device))
    if problem:
        raise ValueError(f"--device {problem}")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {str(device)!r}: cnnzoo bench runs on cpu or cuda")
    if precision == "fp16" and dev.type == "cpu":
        raise ValueError("--precision fp16 runs on CUDA only (fp16 on a CPU is emulated and slow); on a CPU use "
                         "--precision bf16 or fp32")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(dev)} does not support bf16; use fp16 or fp32")
    if batch < 1:
        raise ValueError(f"--batch {batch}: the batch size must be at least 1")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: the number of CPU threads must be at least 1")
    if iters is not None and seconds is not None:
        raise ValueError("give --iters or --seconds, not both")
    if iters is not None and iters < 1:
        raise ValueError(f"--iters {iters}: at least one timed iteration is needed")
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"--seconds {seconds}: the time to measure must be a positive, finite number of seconds")
    if warmup < 0:
        raise ValueError(f"--warmup {warmup}: the number of warm-up iterations cannot be negative")
    return dev


@contextlib.contextmanager
def _num_threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AMP[precision])


def _train_step_fn(model: nn.Module, device: torch.device, precision: str, aux_weight: float | None,
                   num_classes: int, batch: int):
    from .train.losses import ClassificationLoss

    loss_fn = ClassificationLoss(aux_weight=aux_weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    target = torch.randint(0, num_classes, (batch,), device=device)

    def step(x: torch.Tensor) -> None:
        with _autocast(device, precision):
            out = model(x)
        if hasattr(out, "_fields"):  # torchvision's GoogLeNet/Inception outputs are named tuples
            out = tuple(out)
        loss, _ = loss_fn(out, target)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return step


def benchmark(model: str | nn.Module, *, mode: str = "infer", batch: int = 16,
              input_size: tuple[int, int, int] | None = None, precision: str = "fp32", channels_last: bool = False,
              compile: bool = False, threads: int | None = None, device: str | torch.device = "cpu",
              iters: int | None = None, seconds: float | None = None, warmup: int = 3,
              options: dict[str, Any] | None = None, name: str | None = None, source: str = "cnnzoo",
              aux_weight: float | None = None) -> BenchResult:
    """Measure one configuration of a network.

    Args:
        model: a registered name (built with ``options``) or a built network (then give ``input_size``, and
            ``aux_weight`` if it returns auxiliary outputs in training).
        mode: ``"infer"`` (forward in eval mode) or ``"train"`` (forward, loss, backward, SGD step).
        batch: images per batch.
        input_size: (C, H, W); default: the card's size with the network's channels.
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` autocast (fp16 on CUDA only).
        channels_last: run the network and its input in the channels-last memory format.
        compile: ``torch.compile`` the network; the first warm-up call's time is ``compile_time_s``.
        threads: CPU threads for the measurement (default: torch's current setting); restored afterwards.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        iters / seconds: timed iterations, or how long to time (at least one iteration); default
            ``DEFAULT_SECONDS`` (3 s). Under a time budget the warm-up stops early once it has taken that long.
        warmup: untimed iterations first (at most; at least one with ``compile``).
        options: network options for a registered name (e.g. ``{"num_classes": 10}``).
        name / source: labels of the result (default: the registered name or the class name, and "cnnzoo").
        aux_weight: weight of each auxiliary loss in training (default: the card's for a registered name).
    """
    from .registry import create_model, get_card

    dev = check_config(mode=mode, precision=precision, device=device, batch=batch, threads=threads, iters=iters,
                       seconds=seconds, warmup=warmup)
    if isinstance(model, str):
        card = get_card(model)
        name = name or card.name
        net = create_model(card.name, **(options or {}))
        aux_weight = card.aux_weight if aux_weight is None else aux_weight
        if input_size is None:
            input_size = (getattr(net, "in_channels", card.input_size[0]), *card.input_size[1:])
    else:
        if options:
            raise ValueError("options apply to a registered name; build the network with them instead")
        if input_size is None:
            raise ValueError("give input_size (C, H, W) for a built network")
        net, name = model, name or type(model).__name__
    if iters is None and seconds is None:
        seconds = DEFAULT_SECONDS
    if compile:
        warmup = max(warmup, 1)
    num_classes = getattr(net, "num_classes", None) or _out_features(net)
    with _num_threads(threads):
        return _measure(net, name, source, mode, dev, batch, tuple(input_size), precision, channels_last, compile,
                        iters, seconds, warmup, aux_weight, num_classes)


def _out_features(net: nn.Module) -> int:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 1000


def _measure(net: nn.Module, name: str, source: str, mode: str, dev: torch.device, batch: int,
             input_size: tuple[int, int, int], precision: str, channels_last: bool, compile: bool,
             iters: int | None, seconds: float | None, warmup: int, aux_weight: float | None,
             num_classes: int) -> BenchResult:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(dev, memory_format=memory_format).train(mode == "train")
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(batch, *input_size, device=dev).contiguous(memory_format=memory_format)
    run_net = torch.compile(net) if compile else net
    if mode == "train":
        step = _train_step_fn(run_net, dev, precision, aux_weight, num_classes, batch)
        grad_mode = contextlib.nullcontext
    else:
        def step(inp: torch.Tensor) -> None:
            with _autocast(dev, precision):
                run_net(inp)
        grad_mode = torch.inference_mode

    def timed() -> float:
        t0 = time.perf_counter()
        step(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    compile_time = None
    latencies: list[float] = []
    min_warmup = min(warmup, 2 if compile else 1)  # the compiling call is no warm-up of the compiled code
    warmed = 0
    with grad_mode(), _PeakMemory(dev) as mem:
        start = time.perf_counter()
        while warmed < warmup:
            t = timed()
            if compile and warmed == 0:
                compile_time = t
            warmed += 1
            if seconds is not None and warmed >= min_warmup and time.perf_counter() - start >= seconds:
                break  # time-boxed: a configuration slower than its budget is not warmed up for minutes
        start = time.perf_counter()
        while True:
            latencies.append(timed())
            if iters is not None and len(latencies) >= iters:
                break
            if seconds is not None and time.perf_counter() - start >= seconds:
                break
    total = sum(latencies)
    ms = [t * 1e3 for t in latencies]
    return BenchResult(
        name=name, source=source, mode=mode, device=str(dev), batch=batch, input_size=input_size,
        precision=precision, channels_last=channels_last, compile=compile, threads=torch.get_num_threads(),
        warmup=warmed, iters=len(latencies), images_per_s=batch * len(latencies) / total,
        latency_ms_median=statistics.median(ms), latency_ms_p90=percentile(ms, 90), latency_ms_min=min(ms),
        latency_ms_max=max(ms), total_time_s=total, peak_memory_mb=mem.peak,
        memory_increase_mb=max(mem.peak - mem.base, 0.0), memory_measure=mem.measure, params=params,
        step="forward" if mode == "infer" else "forward + loss + backward + SGD step",
        compile_time_s=compile_time, emulated=is_emulated(precision, dev), time_budget_s=seconds, latencies_ms=ms)


def matrix_configs(device: str | torch.device, compile: bool = False,
                   emulated: bool = False) -> list[tuple[str, bool, bool]]:
    """The (precision, channels_last, compile) grid of ``--matrix``: fp16 on CUDA only, compile only if asked, and
    a precision the device only emulates (`is_emulated`: bf16 on a CPU without native BF16) only if ``emulated``."""
    dev = torch.device(device)
    precisions = [p for p in PRECISIONS if p != "fp16" or dev.type == "cuda"]
    if dev.type == "cuda" and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        precisions.remove("bf16")
    if not emulated:
        precisions = [p for p in precisions if not is_emulated(p, dev)]
    return [(p, cl, c) for c in ((False, True) if compile else (False,)) for p in precisions for cl in (False, True)]


def mark_fastest(results: list[BenchResult]) -> list[BenchResult]:
    """Set ``fastest`` on the result with the most images/s of each (name, source, mode); returns the list."""
    groups: dict[tuple[str, str, str], list[BenchResult]] = {}
    for r in results:
        groups.setdefault((r.name, r.source, r.mode), []).append(r)
    for group in groups.values():
        best = max(group, key=lambda r: r.images_per_s)
        for r in group:
            r.fastest = r is best
    return results


def config_label(name: str, precision: str, channels_last: bool, compile: bool = False, source: str = "cnnzoo",
                 emulated: bool = False) -> str:
    """"resnet50: bf16 (emulated), channels-last": one configuration, as the progress lines name it."""
    who = name if source == "cnnzoo" else f"{name} ({source})"
    return (f"{who}: {precision}{' (emulated)' if emulated else ''}, "
            f"{'channels-last' if channels_last else 'contiguous'}{', compiled' if compile else ''}")


def with_progress(label: str, measure: Callable[[], BenchResult],
                  write: Callable[[str], None] | None) -> BenchResult:
    """Run ``measure()``; with ``write`` (e.g. ``sys.stderr.write``) the line ``"LABEL ..."`` appears when it
    starts and is completed with its figures when it ends (or with "stopped" when it fails or is interrupted)."""
    if write is None:
        return measure()
    write(f"{label} ...")
    done = ""
    try:
        r = measure()
        done = (f" {r.images_per_s:.1f} img/s, {r.iters} iteration{'s' if r.iters != 1 else ''} in "
                f"{r.total_time_s:.1f} s")
    finally:
        write((done or " stopped") + "\n")
    return r


def bench_matrix(model: str, *, device: str | torch.device = "cpu", compile: bool = False, emulated: bool = False,
                 progress: Callable[[str], None] | None = None, **kwargs: Any) -> list[BenchResult]:
    """`benchmark` over `matrix_configs` (emulated precisions only with ``emulated``), the fastest marked.
    ``progress``: see `with_progress`. ``kwargs`` as for `benchmark` (default: 3 s per configuration)."""
    configs = matrix_configs(device, compile, emulated)
    results = []
    for i, (p, cl, c) in enumerate(configs, 1):
        label = f"[{i}/{len(configs)}] " + config_label(str(model), p, cl, c, emulated=is_emulated(p, device))
        results.append(with_progress(label, lambda p=p, cl=cl, c=c: benchmark(
            model, device=device, precision=p, channels_last=cl, compile=c, **kwargs), progress))
    return mark_fastest(results)


# --------------------------------------------------------------------------------------- other libraries
def library_available(library: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(library) is not None


def build_counterpart(name: str, library: str, **options: Any) -> nn.Module | None:
    """The same network as cnnzoo's ``name`` built by ``library`` (torchvision or timm), untrained; None when the
    card names no counterpart there. The library must be importable (see `library_available`)."""
    from .registry import get_card

    if library not in SOURCES[1:]:
        raise ValueError(f"--against {library!r} is not one of {', '.join(SOURCES[1:])}")
    cp = get_card(name).counterpart(library)
    if cp is None:
        return None
    kwargs = {**cp.options, **options}
    if library == "torchvision":
        import torchvision

        builder = getattr(torchvision.models, cp.name, None)
        if builder is None:
            return None
        if cp.name in ("googlenet", "inception_v3"):
            kwargs.setdefault("init_weights", True)  # silences torchvision's warning; same default init
        return builder(weights=None, **kwargs)
    import timm

    return timm.create_model(cp.name, pretrained=False, **kwargs)


def start_script(threads: int | None, device: str) -> None:
    """What each benchmark script does first: set the threads, then print what kind of machine this is."""
    if threads:
        torch.set_num_threads(threads)
    print(f"machine: {machine_kind()}")
    if str(device).startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(torch.device(device))}")


def time_to_accuracy(epoch_times: list[float], accs: list[float], target: float) -> tuple[float | None, int | None]:
    """Training time summed over epochs until the first epoch whose accuracy reaches ``target``, and that epoch
    (1-based); (None, None) if none does."""
    total = 0.0
    for i, (t, a) in enumerate(zip(epoch_times, accs), 1):
        total += t
        if a >= target:
            return total, i
    return None, None

