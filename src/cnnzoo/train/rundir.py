"""The guarantees around a run directory: one writer at a time, nothing of the user's overwritten, no debris.

- `RunLock`: a process that writes a run holds an exclusive lock on ``RUN_DIR/.lock`` (``fcntl.flock``) from before
  its first write until it exits; a second writer gets an error naming the holder (pid, host, command, start time).
  The kernel releases the lock when the holder dies, even by SIGKILL, so a crash never leaves a stale lock.
- `check_new_run_dir`: a new run goes into a directory that does not exist, is empty, or holds only the files of a
  cnnzoo run that never completed its first resumable ("last") checkpoint (its run.json says cnnzoo wrote it; a
  kill during the first save leaves such a directory); anything else is refused, so no file of the user's is ever
  overwritten. `clear_unstarted_run` then removes that run's files before the new one starts. A command whose runs
  write more before their first checkpoint (`cnnzoo detect train`: proposals.safetensors, finetune.csv) names those
  files in ``extra``; the classification runs pass none.
- `clean_debris`: temporary files of interrupted atomic writes and checkpoint files no pointer names any more (a kill
  between writing a checkpoint and deleting the previous one) are removed when the run starts again. Only files a
  valid pointer makes unreferenced: a damaged pointer is repaired from the checkpoint files or left alone, never a
  reason to delete (`cnnzoo.train.checkpoint.repair_pointers`).
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
from .checkpoint import CHECKPOINT_KINDS, DamagedPointer, latest_pointer, read_pointer

__all__ = ["RUN_FILES", "RunDirBusy", "RunLock", "check_new_run_dir", "clean_debris", "clear_unstarted_run",
           "has_last_checkpoint", "is_unstarted_run"]

LOCK_NAME = ".lock"
#: files a run writes before its first checkpoint: a directory holding only these may be reused by a new run.
RUN_FILES = frozenset({"config.yaml", "run.json", LOCK_NAME, "split.json"})
#: what a run writes at the end of its first epoch, before or while its first "last" checkpoint is saved.
FIRST_EPOCH_FILES = frozenset({"metrics.csv", "metrics.jsonl", "curves.png", "checkpoints"})


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


def has_last_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a resumable checkpoint: a "last" pointer (even a damaged one) or complete "last"
    checkpoint files a pointer can be rebuilt from."""
    ckpt = Path(run_dir) / "checkpoints"
    if (ckpt / "last.json").exists():
        return True
    try:
        return latest_pointer(ckpt, "last") is not None
    except DamagedPointer:
        return True


def _is_checkpoint_file(name: str) -> bool:
    """A file name a cnnzoo checkpoint directory holds (pointers, stable copies, tagged pairs, temporary files)."""
    if name.startswith(".") and name.endswith(".tmp"):
        return True
    for kind in CHECKPOINT_KINDS:
        if name in (f"{kind}.json", f"{kind}.safetensors"):
            return True
        if name.startswith(f"{kind}-e") and name.endswith((".safetensors", ".state.pt")):
            return True
    return False


def is_unstarted_run(run_dir: Path, extra: frozenset[str] = frozenset()) -> bool:
    """Whether ``run_dir`` holds only what a cnnzoo run writes before its first "last" checkpoint is complete (its
    run.json says cnnzoo wrote it): such a run has nothing to resume and may start again. ``extra``: the names of
    further files the calling command's runs write before their first checkpoint (none for `cnnzoo train`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not _is_our_run(run_dir) or has_last_checkpoint(run_dir):
        return False
    names = {p.name for p in run_dir.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
    if not names <= RUN_FILES | FIRST_EPOCH_FILES | extra:
        return False
    if any((run_dir / n).is_dir() for n in names & extra):  # the extra names are files
        return False
    ckpt = run_dir / "checkpoints"
    return not ckpt.exists() or (ckpt.is_dir() and all(_is_checkpoint_file(p.name) for p in ckpt.iterdir()))


def clear_unstarted_run(run_dir: Path, extra: frozenset[str] = frozenset()) -> list[Path]:
    """Remove the files of a run that never completed its first checkpoint (see `is_unstarted_run`, ``extra`` as
    there; anything else is left untouched) so a run can start there again; returns what was removed."""
    run_dir = Path(run_dir)
    if not is_unstarted_run(run_dir, extra):
        return []
    removed = []
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir():
        for f in ckpt.iterdir():
            f.unlink(missing_ok=True)
            removed.append(f)
        ckpt.rmdir()
    for f in run_dir.iterdir():
        if f.name != LOCK_NAME and (f.name in RUN_FILES | FIRST_EPOCH_FILES | extra or f.name.endswith(".tmp")):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def check_new_run_dir(run_dir: Path, extra: frozenset[str] = frozenset()) -> None:
    """Refuse a run directory a new run must not write into (see the module docstring; ``extra`` as in
    `is_unstarted_run`)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir} is a file, not a directory; choose another --run-dir")
    if not run_dir.is_dir():
        return
    busy = held_by(run_dir)
    if busy is not None:
        raise RunDirBusy(f"run directory {run_dir} is being written by another process ({busy}); wait for it to "
                         "finish or stop it, or choose another --run-dir")
    if has_last_checkpoint(run_dir):
        raise ValueError(f"run directory {run_dir} already holds a run; resume it with `cnnzoo train --resume "
                         f"{run_dir}` or choose another --run-dir")
    if is_unstarted_run(run_dir, extra):
        return
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
        for kind in CHECKPOINT_KINDS:
            try:
                pointer = read_pointer(ckpt, kind)
            except DamagedPointer:
                continue  # never delete on the word of a damaged pointer
            if pointer is None:
                continue
            for f in ckpt.glob(f"{kind}-e*-b*.*"):
                if f.name not in pointer.values():
                    f.unlink(missing_ok=True)
                    removed.append(f)
    return removed
