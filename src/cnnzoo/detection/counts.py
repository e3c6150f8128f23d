"""Stored counts of every registered detector at its defaults: parameters, MACs, input size and the shapes of its raw
head outputs. The detection twin of `cnnzoo.counts` and `cnnzoo.segmentation.counts`.

`cnnzoo list`, `cnnzoo info NAME` and `cnnzoo summary NAME` read them from ``detection/models/_counts.json``,
computed once by::

    python -m cnnzoo.detection.counts            # every registered detector (seconds: meta-device traces)
    python -m cnnzoo.detection.counts NAME ...   # only these (and any registered detector the file lacks)

Parameters are those of the detector built at its defaults (on the meta device: no memory, no init, so YOLO v1's
271.7M cost nothing). MACs are ``torch.utils.flop_counter.FlopCounterMode``'s FLOPs / 2 (torchvision's convention)
over one forward at batch 1 and the card's input size, summed over every head (a detector's ``forward`` returns a
dict ``{"cls_logits", "bbox_regression"}``, a YOLO grid tensor, or a list of per-scale tensors; see
docs/CONTRIBUTING.md and the detection contract). The forward runs on the meta device; only where a detector's
forward has an op without a meta kernel does it run for real on the CPU, and then only if it finishes within
``REAL_FORWARD_SECONDS``: otherwise the entry keeps its parameters with ``macs`` and ``output`` null (and the
regeneration log says so). tests/test_detection_summary.py checks every entry against the built detector and fails for
a registered detector without one (its message gives the command). Counts with options or another input size are
computed live, as is anything the file lacks.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

COUNTS_FILE = Path(__file__).parent / "models" / "_counts.json"
FIELDS = ("params", "macs", "input", "output")
REGENERATE = "python -m cnnzoo.detection.counts"
REAL_FORWARD_SECONDS = 10.0


@functools.cache
def _table() -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(COUNTS_FILE.read_text(encoding="utf-8"))
        networks = doc["networks"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return networks if isinstance(networks, dict) else {}


def _plain(v):
    """Tuples to lists, recursively (what JSON gives back)."""
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def stored(name: str) -> dict[str, Any] | None:
    """The stored counts of ``name`` at its defaults: ``params``, ``macs`` (batch 1; None where no forward could be
    counted), ``input`` (C, H, W) (the card's size with the detector's channels), ``output`` (`output_shapes` of the
    raw head outputs for one image, eval mode; None with ``macs``); None when the file lacks a well-formed entry."""
    entry = _table().get(name)
    if not isinstance(entry, dict) or set(entry) != set(FIELDS) or not isinstance(entry["params"], int):
        return None
    return {"params": entry["params"], "macs": entry["macs"], "input": tuple(entry["input"]),
            "output": entry["output"]}


def output_shapes(out) -> Any:
    """The shapes of a detector's raw outputs, JSON-ready: a tensor's shape as a list; a dict's as
    ``{key: shape}``; a list or tuple of tensors as a list of shapes."""
    import torch

    if torch.is_tensor(out):
        return list(out.shape)
    if isinstance(out, dict):
        return {k: output_shapes(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [output_shapes(v) for v in out]
    raise TypeError(f"a detector's forward returned {type(out).__name__}; expected a tensor, dict or list of tensors")


def describe_output(shapes) -> str:
    """`output_shapes` as text: "cls_logits 1x8732x91, bbox_regression 1x8732x4", "1x7x7x30", or for a list
    "[1x3x76x76x85, 1x3x38x38x85, 1x3x19x19x85]"."""
    if isinstance(shapes, dict):
        return ", ".join(f"{k} {describe_output(v)}" for k, v in shapes.items())
    if isinstance(shapes, (list, tuple)) and shapes and all(isinstance(d, int) for d in shapes):
        return "x".join(map(str, shapes))
    return "[" + ", ".join(describe_output(s) for s in shapes) + "]"


def build_meta(name: str, **options: Any):
    """A detector built on the meta device: shapes and counts without memory or init cost."""
    import torch

    from .registry import create_detector

    with torch.device("meta"):
        return create_detector(name, **options)


def card_input(name: str, model) -> tuple[int, int, int]:
    """The card's input size with the detector's channels (``in_channels``)."""
    from .registry import get_detector_card

    c, h, w = get_detector_card(name).input_size
    return (getattr(model, "in_channels", c), h, w)


def count_params(name: str, **options: Any) -> int:
    """Every parameter of ``name`` built with ``options``: the stored count at the defaults, else counted live."""
    if not options:
        entry = stored(name)
        if entry is not None:
            return entry["params"]
    return sum(p.numel() for p in build_meta(name, **options).parameters())


def count_forward(model, size: tuple[int, int, int], device: str = "meta") -> tuple[int, Any]:
    """(MACs, `output_shapes`) of one eval-mode forward of ``model`` at batch 1 and ``size`` on ``device``:
    FlopCounterMode's FLOPs / 2."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            out = model(torch.zeros(1, *size, device=device))
    finally:
        model.train(was_training)
    return mode.get_total_flops() // 2, output_shapes(out)


def checked_forward(name: str, model, size: tuple[int, int, int]) -> tuple[int | None, Any]:
    """`count_forward` on the meta device for `cnnzoo info` and `cnnzoo summary` at a user's options or input size:
    the detector's own ``check_input`` first where it has one; a forward that fails on the input is a ValueError in
    one line (what failed, the card's size); (None, None) where an op has no meta kernel."""
    import torch

    check = getattr(model, "check_input", None)
    if callable(check):
        check(torch.empty(1, *size, device="meta"))
    try:
        return count_forward(model, size)
    except NotImplementedError:  # an op without a meta kernel: no count without a real forward
        return None, None
    except RuntimeError as e:
        _, h, w = card_input(name, model)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(f"{name} cannot run on a {'x'.join(map(str, size))} input ({first}); its card's input is "
                         f"{h}x{w}") from None


def _real_forward(name: str, size, seconds: float, log) -> tuple[int | None, Any]:
    """`count_forward` on the CPU with real weights, abandoned after ``seconds`` (a SIGALRM timer, so only in the main
    thread of a Unix process; elsewhere not tried)."""
    import signal
    import threading

    from .registry import create_detector

    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        log(f"  {name}: no meta forward and no timer here to bound a real one; storing parameters only")
        return None, None

    def expire(signum, frame):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        result = count_forward(create_detector(name), size, device="cpu")
        log(f"  {name}: counted by a real forward on the CPU ({time.perf_counter() - start:.1f} s)")
        return result
    except TimeoutError:
        log(f"  {name}: a real forward takes over {seconds:g} s; storing parameters only (macs, output null)")
        return None, None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def compute(name: str, *, log=print, real_seconds: float = REAL_FORWARD_SECONDS) -> dict[str, Any]:
    """The counts of ``name`` at its defaults (what `stored` returns): a meta forward, else a bounded real one."""
    model = build_meta(name)
    size = card_input(name, model)
    params = sum(p.numel() for p in model.parameters())
    try:
        macs, out = count_forward(model, size)
    except (RuntimeError, NotImplementedError, TypeError) as e:  # an op without a meta kernel
        log(f"  {name}: the meta forward failed ({str(e).splitlines()[0][:100]}); trying a real one")
        macs, out = _real_forward(name, size, real_seconds, log)
    return {"params": params, "macs": macs, "input": size, "output": out}


def write(names: list[str] | None = None, *, path: Path = COUNTS_FILE, log=print) -> Path:
    """Compute ``names`` (None: every registered detector) and the detectors the file lacks; keep the other stored
    entries; drop the entries of names no longer registered. Written atomically."""
    from ..fileio import atomic_write
    from .registry import list_detectors

    registered = list_detectors()
    old = dict(_table()) if path == COUNTS_FILE else {}
    todo = registered if names is None else sorted(set(names) | (set(registered) - set(old)))
    networks = {n: old[n] for n in registered if n in old}
    for i, name in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {name}")
        networks[name] = compute(name, log=log)
    about = (f"parameters, MACs (batch 1, FlopCounterMode FLOPs / 2 summed over every head), input (C, H, W) and raw "
             f"output shapes of every registered detector at its defaults (macs and output null where no forward "
             f"could be counted); written by `{REGENERATE}`, checked by tests/test_detection_summary.py")
    text = "{\n" + f'  "about": {json.dumps(about)},\n  "networks": {{\n'
    text += ",\n".join(f"    {json.dumps(n)}: {json.dumps(_plain(networks[n]))}" for n in sorted(networks))
    text += "\n  }\n}\n"
    atomic_write(path, text.encode("utf-8"))
    _table.cache_clear()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else 'cnnzoo.detection.counts'}",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="recompute only these (default: every detector)")
    args = p.parse_args(argv)
    from ..registry import UnknownModelError
    from .registry import get_detector_card

    try:
        for n in args.names:
            get_detector_card(n)
    except UnknownModelError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    path = write(args.names or None, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
