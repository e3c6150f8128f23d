"""The inference fast path: the precision and memory format `eval`, `predict`, `compare` and `bench` run in.

The fastest safe configuration differs between machines: on a CPU with native BF16 (AVX-512 BF16 or AMX) bf16
autocast is ~2-3x faster than fp32, on one without it bf16 is emulated and slower than fp32 (measured: 6x slower
for lenet5 on an AMD EPYC without AVX-512); channels-last speeds convolutions up on both. So the default,
``precision="auto"``, asks the capability probe (`cnnzoo.bench.fastest_inference_config`): bf16 where the CPU has
native BF16 (bf16 on CUDA GPUs that support it, else fp16), fp32 otherwise, channels-last for networks with 2-D
convolutions. ``precision="fp32"`` is the plain path (fp32, contiguous) unless channels-last is asked for; an
explicit ``bf16``/``fp16`` keeps channels-last on.

`cnnzoo eval` of a cnnzoo run or checkpoint is the exception: it reports a number the run has already reported
(``eval.json``), so by default it takes the run's own evaluation path (``chosen_by="run"``: fp32 unless the run
trained with amp, in the run's memory format) and reproduces that number on every CPU; ``--precision auto`` gives
the fast path. `predict`, `bench`, `compare` and foreign checkpoints keep the fast path as their default.

The accuracy cost of bf16 is measured by tests/test_fastpath.py (top-1 agreement with fp32 on the built-in test
set) rather than assumed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..bench import _AMP, FORCE_BF16_ENV, fastest_inference_config, is_conv_net

__all__ = ["INFERENCE_PRECISIONS", "InferencePath", "inference_path"]

INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class InferencePath:
    """How to run a network for inference: ``precision`` (fp32, bf16 or fp16 autocast) and memory format."""

    device: torch.device
    precision: str
    channels_last: bool
    chosen_by: str = "asked"  # "probe" when precision="auto" decided it; "run": the run's own evaluation path

    def autocast(self) -> contextlib.AbstractContextManager:
        """A fresh autocast context for one forward pass (a no-op context for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AMP[self.precision])

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` in this path's memory format (in place, as ``Module.to`` does; returned for chaining)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images in this path's memory format."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def describe(self) -> str:
        """One line for the commands' output, e.g. "fp32, channels-last (probe: no native BF16 on this CPU)"."""
        text = f"{self.precision}{' autocast' if self.precision != 'fp32' else ''}, " \
               f"{'channels-last' if self.channels_last else 'contiguous'}"
        if self.chosen_by == "probe":
            if self.device.type == "cpu":
                why = "this CPU has native BF16" if self.precision == "bf16" else \
                    "this CPU lacks native BF16, so bf16 would be emulated and slower"
                if os.environ.get(FORCE_BF16_ENV, "").strip():
                    why += f" ({FORCE_BF16_ENV}={os.environ[FORCE_BF16_ENV].strip()})"
            else:
                why = f"{self.device.type} device"
            text += f" (the default fast path: {why}; --precision fp32 for the plain path)"
        elif self.chosen_by == "run":
            text += " (the run's own evaluation path, as in its reported accuracy; --precision auto for this " \
                    "machine's fast path)"
        return text


def inference_path(model: nn.Module | None, device: str | torch.device = "cpu", precision: str = "auto",
                   channels_last: bool | None = None) -> InferencePath:
    """The inference configuration for ``model`` on ``device``.

    Args:
        model: the network (its convolutions decide channels-last); None: assumed convolutional.
        device: where it runs.
        precision: auto (the capability probe decides), fp32, bf16 or fp16 (fp16: CUDA only).
        channels_last: force the memory format; None: on for convolutional networks, except under an explicit
            ``precision="fp32"`` (the plain path).

    Raises:
        ValueError: an unknown precision, or one this device cannot run (with what is valid).
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    dev = torch.device(device)
    conv = model is None or is_conv_net(model)
    if precision == "auto":
        chosen, cl = fastest_inference_config(dev, model)
        return InferencePath(dev, chosen, cl if channels_last is None else channels_last, "probe")
    if precision == "fp16" and dev.type == "cpu":
        raise ValueError("--precision fp16 runs on CUDA only (fp16 on a CPU is emulated and slow); on a CPU use "
                         "bf16, fp32 or auto")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(dev)} does not support bf16; use fp16, fp32 "
                         "or auto")
    if channels_last is None:
        channels_last = conv and precision != "fp32"
    return InferencePath(dev, precision, channels_last)
