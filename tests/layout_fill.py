"""The deterministic fill of ../shared/reference/README.md, used by the layout fixtures.

Every checkpoint entry gets values from an integer hash of its key, so a state dict in another
library's layout can be rebuilt here exactly, loaded, and its logits compared with that library's.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

LAYOUTS = Path(__file__).parent / "fixtures" / "layouts"
M = 2**31


def uniform(n: int, salt: int) -> np.ndarray:
    i = np.arange(n, dtype=np.int64)
    x = (i * 1103515245 + 12345 + salt * 2654435) % M
    x = (x * 1103515245 + 12345) % M
    x = x ^ (x >> 13)
    x = (x * 1103515245 + 12345) % M
    return x.astype(np.float64) / M * 2 - 1


def fill(key: str, shape: list[int]) -> torch.Tensor:
    n = math.prod(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    base = uniform(n, zlib.crc32(key.encode("utf-8")) % 100003).reshape(shape)
    if key.endswith("running_var"):
        v = 1 + 0.5 * np.abs(base)
    elif key.endswith("running_mean"):
        v = 0.1 * base
    elif len(shape) >= 2:
        v = base * math.sqrt(6 / (n / shape[0]))
    elif len(shape) == 1 and key.endswith("weight"):
        v = 1 + 0.1 * base
    else:
        v = 0.05 * base
    return torch.from_numpy(np.asarray(v, dtype=np.float32))


def make_input(batch: int, channels: int, size: int) -> torch.Tensor:
    n = channels * size * size
    i = np.arange(n, dtype=np.float64)
    rows = [np.sin(i * (0.013 + 0.011 * b) + b) + 0.5 * uniform(n, 7 + b) for b in range(batch)]
    return torch.from_numpy(np.stack(rows).reshape(batch, channels, size, size).astype(np.float32))


def load_layout(fixture: str) -> dict:
    return json.loads((LAYOUTS / f"{fixture}.json").read_text())


def filled_state_dict(layout: dict) -> dict[str, torch.Tensor]:
    return {key: fill(key, shape) for key, shape, _dtype in layout["state_dict"]}
