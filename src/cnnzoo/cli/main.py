"""`cnnzoo` entry point. Each subcommand module here has ``register(subparsers)``.

Every error a user can cause ends in one line, ``cnnzoo COMMAND: error: WHAT (WHAT IS VALID)``, and exit status 2.
Anything else is a bug: one line saying so, the full traceback written to a file whose path that line gives,
and exit status 1. ``--debug`` (before or after the command) prints the traceback as well.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from ..registry import UnknownModelError, UnknownOptionError

# Subcommand modules, in help order. A module lists its own subcommands in ``register``.
SUBCOMMAND_MODULES = ("models", "analysis", "explain", "arith", "train", "compare", "bench", "recipes", "detect", "segment", "demo")

USER_ERROR = 2  # exit status of an error the user can fix (argparse's too)
INTERNAL_ERROR = 1
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`, the status of a Unix tool whose reader left


class CLIError(Exception):
    """An error the CLI reports as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="cnnzoo",
        description="The landmark image-classification CNNs: build, explain, train, compare.",
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of any error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(f"{__package__}.{mod}") is not None:
            importlib.import_module(f"{__package__}.{mod}").register(sub)
    for p in sub.choices.values():  # `cnnzoo train ... --debug` too; SUPPRESS keeps a `cnnzoo --debug train`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _given_files(args: argparse.Namespace) -> str:
    """The checkpoint/weights/run directory the command was given, for messages about unreadable files."""
    for attr in ("checkpoint", "resume", "weights"):
        value = getattr(args, attr, None)
        if value:
            return str(value)
    return "the checkpoint"


def _os_message(e: OSError) -> str:
    where = f" {e.filename!r}" if e.filename else ""
    if e.filename2:
        where += f" -> {e.filename2!r}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device (or quota exceeded) while writing{where}; free some space or write " \
               f"elsewhere (e.g. --run-dir on another disk)"
    if e.errno == errno.EROFS:
        return f"{where.strip() or 'the target'} is on a read-only file system; choose a writable location"
    if isinstance(e, PermissionError):
        return f"permission denied:{where}; choose a file or directory you can read and write (e.g. another " \
               f"--run-dir), or change its permissions"
    if isinstance(e, FileExistsError):
        return f"{where.strip()} already exists and is in the way; remove it or choose another path"
    if isinstance(e, IsADirectoryError):
        return f"{where.strip()} is a directory where a file is needed; give a file path"
    if isinstance(e, NotADirectoryError):
        return f"a part of{where} is a file where a directory is needed; choose another path"
    if isinstance(e, FileNotFoundError) and not e.errno:  # our own FileNotFoundError("... does not exist ...")
        return str(e)
    reason = e.strerror or str(e)
    return f"{reason}:{where}" if where else reason


def user_message(e: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message for an error the user caused (and can fix), or None for a bug."""
    import pickle

    import yaml
    from PIL import Image

    from ..data import DatasetUnavailableError

    if isinstance(e, (UnknownModelError, UnknownOptionError, CLIError, DatasetUnavailableError)):
        return str(e)
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text: {e}"
    if isinstance(e, json.JSONDecodeError):
        return f"{_given_files(args)}: a JSON file in it is damaged ({e}); restore it from a backup"
    if isinstance(e, ValueError):
        return str(e)
    if isinstance(e, OSError):
        return _os_message(e)
    if isinstance(e, yaml.YAMLError):
        from ..train.config import _yaml_problem

        where = f"{Path(args.resume) / 'config.yaml'}" if getattr(args, "resume", None) else "a YAML file"
        return f"{where} is not valid YAML ({_yaml_problem(e)}); fix or restore the file"
    if isinstance(e, Image.DecompressionBombError):
        return f"an image is too large to decode safely ({e}); shrink it, or if you trust it raise " \
               f"PIL.Image.MAX_IMAGE_PIXELS"
    if type(e).__name__ == "SafetensorError":
        return f"{_given_files(args)}: a .safetensors file in it is damaged or not a safetensors file ({e}); " \
               f"give a run directory or a weights file written by cnnzoo, torchvision or timm"
    if isinstance(e, (pickle.UnpicklingError, EOFError)):
        return f"{_given_files(args)}: a checkpoint file is damaged or truncated ({str(e).splitlines()[0]}); " \
               f"restore it or start from another checkpoint"
    if isinstance(e, MemoryError):
        return "out of memory; use a smaller --batch-size or input size"
    if isinstance(e, RuntimeError):
        msg = str(e)
        first = (msg.strip().splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".:")
        if "PytorchStreamReader" in msg or "zip archive" in msg or "unexpected EOF" in msg:
            return f"{_given_files(args)}: a checkpoint file is truncated or damaged ({first}); restore it or " \
                   f"start from another checkpoint"
        if "Error(s) in loading state_dict" in msg:
            return _mismatch_message(first, args)
        if "out of memory" in msg.lower():
            return f"out of memory ({first}); use a smaller --batch-size or input size"
    return None


def _mismatch_message(first: str, args: argparse.Namespace) -> str:
    """Saved weights that do not fit the network built for them; on --resume, which network each side names."""
    built = first.rsplit(" for ", 1)[-1] if " for " in first else "the network"
    resume = getattr(args, "resume", None)
    if resume:
        from ..train.checkpoint import weights_metadata

        try:
            trained = weights_metadata(Path(resume) / "checkpoints" / "last.safetensors").get("model")
        except Exception:  # noqa: BLE001 (only for a better message)
            trained = None
        if trained:
            return (f"{resume}: its checkpoint holds {trained} weights but config.yaml now builds another network "
                    f"({built}); set model.name back to {trained} (and the model options it trained with) in "
                    f"{Path(resume) / 'config.yaml'}")
    return (f"{_given_files(args)}: the saved weights do not fit the network being built ({built}); check that "
            f"the run's config.yaml still names the network the run trained, or pass the matching --model / -o "
            f"options")


def _write_traceback(e: BaseException, argv: list[str]) -> str | None:
    """Write the traceback of ``e`` to a file under the temp directory; its path (None if it cannot be written)."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    header = f"cnnzoo {' '.join(argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S')}  python {sys.version.split()[0]}\n\n"
    try:
        d = Path(tempfile.gettempdir()) / "cnnzoo-errors"
        d.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=d, prefix=time.strftime("%Y%m%d-%H%M%S-"), suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(header + text)
        return path
    except OSError:
        return None


def _reader_gone() -> int:
    """stdout's reader went away (``cnnzoo list | head -1``): end quietly, as Unix tools do, with 128 + SIGPIPE.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError instead of ending the process.
    Whatever is still buffered for stdout cannot be delivered; stdout is pointed at /dev/null so that the
    interpreter's flush at exit does not complain ("Exception ignored ... BrokenPipeError") either (the recipe of
    Python's signal documentation). Only the process's own stdout is redirected (never a caller's replacement).
    """
    if sys.stdout is sys.__stdout__ and sys.stdout is not None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
    return BROKEN_PIPE


def _stdout_stat():
    """os.fstat of the process's own stdout (None when stdout is replaced, e.g. captured in-process, or closed)."""
    if sys.stdout is None or sys.stdout is not sys.__stdout__:
        return None
    try:
        return os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    import stat

    before = _stdout_stat()
    try:
        code = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, not at exit: a reader that left is then seen (and handled) below
        return code
    except BrokenPipeError:
        return _reader_gone()
    except SystemExit as e:
        # rich's Console meets a closed pipe itself: it points stdout at /dev/null and exits 1. Same status as ours.
        after = _stdout_stat()
        if e.code == 1 and before is not None and stat.S_ISFIFO(before.st_mode) and after is not None \
                and stat.S_ISCHR(after.st_mode) and after.st_rdev == os.stat(os.devnull).st_rdev:
            return BROKEN_PIPE
        raise


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return USER_ERROR
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError as e:
        if _stdout_broken(e):
            raise
        return _report(e, args, argv, debug)
    except KeyboardInterrupt:
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:  # noqa: BLE001 (the one place every error ends)
        return _report(e, args, argv, debug)


def _stdout_broken(e: BrokenPipeError) -> bool:
    """Whether ``e`` is stdout's reader leaving (not a pipe or socket of the command's own work): stdout is a pipe
    nobody reads any more."""
    import select
    import stat

    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR/POLLHUP are always reported: the read end is closed
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True  # no way to tell: a broken pipe in a command that writes no pipe of its own is stdout's


def _report(e: Exception, args: argparse.Namespace, argv: list[str], debug: bool) -> int:
    """Print the one line of an error and return the exit status (2 the user's, 1 a bug)."""
    message = user_message(e, args)
    if debug:
        traceback.print_exc()
    if message is not None:
        print(f"cnnzoo {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
        return USER_ERROR
    first = (str(e).strip().splitlines() or [""])[0]
    what = f"{type(e).__name__}: {first}" if first else type(e).__name__
    where = "above" if debug else _write_traceback(e, argv)
    tail = (f"the full traceback is in {where} (rerun with --debug to print it)" if where and not debug
            else "the full traceback is above" if debug else "rerun with --debug to see the traceback")
    print(f"cnnzoo {args.command}: internal error ({what}); this is a bug in cnnzoo, please report it; {tail}",
          file=sys.stderr)
    return INTERNAL_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
