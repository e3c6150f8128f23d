"""Progress of long commands on stderr, never on stdout (which holds the result: a table, CSV or JSON).

`Steps` is what the commands hand to the library's ``progress=`` arguments: a callable ``progress(what, done,
total)`` that a long function calls when it starts a stage (``done=0``) and as it advances. On a terminal it draws a
rich bar (as training does, `cnnzoo.train.progress`) that disappears when the work ends; on a pipe or a log it
writes plain lines (the first of each stage, then at most one every few seconds, and the last); disabled (``-q``) it
writes nothing::

    with Steps(enabled=not args.quiet) as progress:
        results = evaluate_protocols(model, bundle, "10crop,dense", progress=progress)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressFn", "Steps"]

ProgressFn = Callable[[str, int, "int | None"], None]
"""``progress(what, done, total)``: ``what`` names the stage, ``done`` of ``total`` units (None: unknown)."""


class Steps:
    """Progress on stderr (see the module docstring)."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, every_s: float = 5.0,
                 rich: bool | None = None, plain: bool = True) -> None:
        """``rich``: draw the bar (default: when ``stream`` is a terminal); ``plain=False``: no lines elsewhere
        (a command that takes seconds at most shows a spinner on a terminal and leaves logs alone)."""
        self.stream = stream if stream is not None else sys.stderr
        if rich is None:
            isatty = getattr(self.stream, "isatty", None)
            rich = bool(isatty and isatty())
        self.rich = rich and enabled
        self.enabled = enabled and (self.rich or plain)
        self.every_s = every_s
        self._what: str | None = None
        self._task = None
        self._progress = None
        self._t0 = self._last = 0.0

    def __enter__(self):
        if self.rich:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=Console(file=self.stream), transient=True)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
        return False

    def __call__(self, what: str, done: int = 0, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        new = what != self._what
        if new:
            self._what, self._t0, self._last = what, now, 0.0
        if self._progress is not None:
            if new:
                for t in list(self._progress.task_ids):
                    self._progress.remove_task(t)
                self._task = self._progress.add_task(what, total=total, completed=done)
            else:
                self._progress.update(self._task, completed=done, total=total)
            return
        last = total is not None and done >= total
        if not (new or last or now - self._last >= self.every_s):
            return
        self._last = now
        count = f": {done}/{total}" if total is not None else ""
        took = " ..." if new and not last else f" ({now - self._t0:.1f} s)"
        print(f"{what}{count}{took}", file=self.stream, flush=True)
