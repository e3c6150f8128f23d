"""Files that are never half-written: what every writer in cnnzoo uses for anything a user keeps."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["TMP_GLOB", "atomic_link", "atomic_savefig", "atomic_write"]

#: the names `atomic_write` gives its temporary files (hidden, beside the target); cleaned up at a run's next start.
TMP_GLOB = ".*.tmp"

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the new content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def atomic_link(source: str | Path, path: str | Path) -> None:
    """Make ``path`` a second name of the file ``source`` (a hard link: no second copy on disk), atomically
    replacing what ``path`` was; where the file system has no hard links, an atomic copy."""
    source, path = Path(source), Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.link.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
    except OSError:  # no hard links here (FAT, some network file systems) or across devices
        atomic_write(path, source.read_bytes())
        return
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def atomic_savefig(fig, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure to ``path`` atomically (a failed write or a kill leaves the file that was there, never
    a truncated picture) in the format its suffix names, and close the figure."""
    import io

    import matplotlib.pyplot as plt

    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())


def _sync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
