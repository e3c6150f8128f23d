"""Drop-path rates over training time: ``train.drop_path_schedule``.

- ``constant`` (default): every DropPath keeps the rate the network was built with the whole run: what
  ResNet-D/timm, EfficientNet (Tan & Le 2019, "drop connect ratio 0.2") and DeiT/ViT do. ``drop_path_rate`` is
  spread over depth by timm's linear rule, block i of n at ``rate * i / (n - 1)`` (0 for the first block, the full
  rate for the last; `cnnzoo.layers.drop.drop_path_rates`), not by Huang et al. 2016's linear decay rule (Sec. 3,
  Eq. 4), which gives block l of L (l = 1..L) ``l / L * rate`` (the first block rate / L).
- ``linear``: NASNet's ScheduledDropPath (Zoph et al. 2018, "Learning Transferable Architectures for Scalable
  Image Recognition": each path is dropped "with a probability that is linearly increased over the course of
  training"; the TF-slim NASNet code scales the drop rate by step / total steps): the rate of every DropPath grows linearly with the global step from 0 at
  the first step to its built rate at the last, a pure function of the step (a resumed run gets the same rates).

No other zoo paper schedules dropout or drop-path over time (warmups of the drop rate seen in some libraries are
not in the papers), so these two are all there is. Plain dropout (``drop_rate``) is always constant.
"""

from __future__ import annotations

from torch import nn

from ..layers.drop import DropPath

__all__ = ["DROP_PATH_SCHEDULES", "DropPathSchedule"]

DROP_PATH_SCHEDULES = ("constant", "linear")


class DropPathSchedule:
    """Sets the rate of every DropPath of ``model`` for each step (``linear``); ``constant`` does nothing."""

    def __init__(self, model: nn.Module, name: str, total_steps: int, model_name: str = "the network",
                 compiled: bool = False) -> None:
        if name not in DROP_PATH_SCHEDULES:
            raise ValueError(f"train.drop_path_schedule must be one of {', '.join(DROP_PATH_SCHEDULES)}; got {name!r}")
        self.name, self.total = name, max(1, total_steps)
        self.modules = [(m, m.p) for m in model.modules() if isinstance(m, DropPath) and m.p > 0]
        if name == "linear" and not self.modules:
            raise ValueError(f"train.drop_path_schedule=linear ramps the network's drop-path rates, but "
                             f"{model_name} has no DropPath with a positive rate: build it with "
                             f"-o drop_path_rate=0.2 (networks with residual branches have it), or drop the schedule")
        if name == "linear" and compiled:  # a new rate every step would recompile the graph every step
            raise ValueError("train.drop_path_schedule=linear changes the drop-path rates every step, which makes "
                             "torch.compile recompile every step: drop model.compile (--compile) or the schedule")

    def rate_factor(self, step: int) -> float:
        """Fraction of the built rate at global step ``step`` (0-based): step / (total - 1), 1 at the last step."""
        if self.name == "constant":
            return 1.0
        return min(1.0, step / max(1, self.total - 1))

    def apply(self, step: int) -> None:
        if self.name == "constant":
            return
        f = self.rate_factor(step)
        for m, p in self.modules:
            m.p = p * f
