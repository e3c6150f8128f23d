"""The guarantees around a run directory: one writer at a time, nothing of the user's overwritten, no debris.

- `RunLock`: a process that writes a run holds an exclusive lock on ``RUN_DIR/.lock`` (``fcntl.flock``) from before
  its first write until it exits; a second writer gets an error naming the holder (pid, host, command, start time).
  The kernel releases the lock when the holder dies, even by SIGKILL, so a crash never leaves a stale lock.
- `check_new_run_dir`: a new run goes into a directory that does not exist, is empty, or holds only the files of a
  cnnzoo run that never reached its first checkpoint (its run.json says cnnzoo wrote it); anything else is refused,
  so no file of the user's is ever overwritten.
- `clean_debris`: temporary files of interrupted atomic writes and checkpoint files no pointer names any more (a kill
  between writing a checkpoint and deleting the previous one) are removed when the run starts again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Self

from ..fileio import TMP_GLOB

__all__ = ["RUN_FILES", "RunDirBusy", "RunLock", "check_new_run_dir", "clean_debris"]

LOCK_NAME = ".lock"
#: files a run writes before its first checkpoint: a directory holding only these may be reused by a new run.
RUN_FILES = frozenset({"config.yaml", "run.json", LOCK_NAME, "split.json"})


class RunDirBusy(ValueError):
    """Another process is writing this run directory."""


class RunLock:
    """An exclusive, non-blocking lock on a run directory, held until `release` or process exit."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, command: str = "") -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirBusy(f"run directory {self.path.parent} is being written by another process ({holder}); "
                             "wait for it to finish or stop it, or choose another --run-dir") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or " ".join(sys.argv),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held_by(run_dir: Path) -> str | None:
    """Who holds the lock of ``run_dir`` (None if nobody does); creates nothing."""
    import fcntl

    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_holder(fd)
    finally:
        os.close(fd)
    return None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}: {info.get('command')}"


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a run directory a new run must not write into (see the module docstring)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir} is a file, not a directory; choose another --run-dir")
    if not run_dir.is_dir():
        return
    busy = held_by(run_dir)
    if busy is not None:
        raise RunDirBusy(f"run directory {run_dir} is being written by another process ({busy}); wait for it to "
                         "finish or stop it, or choose another --run-dir")
    if (run_dir / "checkpoints" / "last.json").exists():
        raise ValueError(f"run directory {run_dir} already holds a run; resume it with `cnnzoo train --resume "
                         f"{run_dir}` or choose another --run-dir")
    entries = sorted(p.name for p in run_dir.iterdir())
    others = [n for n in entries if n not in RUN_FILES]
    if entries and not others and not _is_our_run(run_dir):
        others = [n for n in entries if n != LOCK_NAME]  # e.g. the user's own config.yaml
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(f"--run-dir {run_dir} is not empty and is not a cnnzoo run (it holds {shown}); a run "
                         "would overwrite files there. Choose a new or empty directory")


def _is_our_run(run_dir: Path) -> bool:
    """Whether run_dir/run.json was written by cnnzoo (then config.yaml and the rest are ours too)."""
    try:
        return "cnnzoo_version" in json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def clean_debris(run_dir: Path) -> list[Path]:
    """Delete interrupted writes' temporary files and unreferenced checkpoint files; return what was deleted."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for tmp in folder.glob(TMP_GLOB):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir():
        referenced = set()
        for kind in ("last", "best", "ema_last", "ema_best"):
            try:
                pointer = json.loads((ckpt / f"{kind}.json").read_text())
            except (OSError, ValueError):
                continue
            referenced |= {pointer.get("weights"), pointer.get("state")}
        for kind in ("last", "best", "ema_last", "ema_best"):
            for f in ckpt.glob(f"{kind}-e*-b*.*"):
                if f.name not in referenced and (ckpt / f"{kind}.json").exists():
                    f.unlink(missing_ok=True)
                    removed.append(f)
    return removed
