"""Progress display: a rich bar on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time

__all__ = ["make_progress"]


class _Silent:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0):
        return None

    def update(self, task, step: int, **metrics) -> None:
        pass


class _Plain(_Silent):
    """One line every ``every`` steps and at the end of each epoch: epoch, step, loss, accuracy, images/s, ETA."""

    def __init__(self, every: int = 20, stream=None) -> None:
        self.every, self.stream = every, stream or sys.stdout

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0):
        self.epoch, self.epochs, self.steps, self.t0, self.done0 = epoch, epochs, steps, time.perf_counter(), done

    def update(self, task, step: int, *, loss: float, acc: float, ips: float, lr: float) -> None:
        if step % self.every and step != self.steps:
            return
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.done0) / max(elapsed, 1e-9)
        eta = (self.steps - step) / max(rate, 1e-9)
        print(f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.steps} loss {loss:.4f} acc {100 * acc:.2f}% "
              f"{ips:.0f} img/s lr {lr:.3g} eta {eta:.0f}s", file=self.stream, flush=True)


class _Rich(_Silent):
    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=True)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0):
        for t in list(self.progress.task_ids):
            self.progress.remove_task(t)
        return self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, completed=done, stats="")

    def update(self, task, step: int, *, loss: float, acc: float, ips: float, lr: float) -> None:
        self.progress.update(task, completed=step,
                             stats=f"loss {loss:.4f} acc {100 * acc:.2f}% {ips:.0f} img/s lr {lr:.3g}")


def make_progress(verbose: bool, every: int = 20):
    """A rich bar when stdout is a terminal, plain lines when it is not, nothing when not ``verbose``."""
    if not verbose:
        return _Silent()
    if sys.stdout.isatty():
        return _Rich()
    return _Plain(every)
