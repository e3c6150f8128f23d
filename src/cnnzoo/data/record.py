"""Reading back the data a run was trained on: same split, classes, normalisation statistics and image size.

A run records `DataBundle.record` in its checkpoints' metadata and run.json (and, for folders, the test split's file
list in ``RUN_DIR/split.json``). `reload_dataset` rebuilds that dataset from the record, never from defaults: a
folder is split again with the run's seed and fraction and the result is checked against the recorded fingerprints;
normalisation uses the recorded statistics (they are part of the trained network), never recomputed ones. When the
data on disk no longer gives the recorded split, it is an error that says so, not a silently different answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .bundle import DataBundle, FolderSplit
from .datasets import load_dataset

__all__ = ["SPLIT_FILE", "reload_dataset", "same_dataset", "write_split_file"]

SPLIT_FILE = "split.json"


def same_dataset(a: str, b: str) -> bool:
    """Whether two dataset specs name the same data (names case-insensitively, folders by resolved path)."""
    if a.startswith("folder:") and b.startswith("folder:"):
        return Path(a[7:]).expanduser().resolve() == Path(b[7:]).expanduser().resolve()
    return a.lower() == b.lower()


def write_split_file(bundle: DataBundle, run_dir: Path) -> Path | None:
    """``RUN_DIR/split.json``: the test split of a folder dataset, file by file (relative to the folder)."""
    from ..fileio import atomic_write

    if bundle.kind != "folder" or bundle.root is None:
        return None
    test = [[os.path.relpath(p, bundle.root), label] for p, label in bundle.test.samples]
    path = Path(run_dir) / SPLIT_FILE
    atomic_write(path, json.dumps({"root": str(bundle.root), "classes": list(bundle.classes), "test": test}).encode())
    return path


def _from_split_file(bundle: DataBundle, split_file: Path, record: dict) -> bool:
    """Replace ``bundle.test`` by the recorded file list when every file is still there; True on success."""
    try:
        data = json.loads(split_file.read_text())
    except (OSError, ValueError):
        return False
    root = Path(bundle.root or data.get("root", ""))
    samples = [(str(root / rel), int(label)) for rel, label in data.get("test", [])]
    if len(samples) != record.get("test_count") or not all(os.path.isfile(p) for p, _ in samples):
        return False
    bundle.test = FolderSplit(samples)
    return bundle.fingerprint("test") == record.get("test_sha256")


def reload_dataset(record: dict, *, spec: str | None = None, data_dir=None, download: bool = True,
                   split_file: str | Path | None = None, where: str = "the run") -> DataBundle:
    """The dataset ``record`` describes (or ``spec``, another dataset with the same classes), as the run saw it.

    Args:
        record: `DataBundle.record` as a run saved it.
        spec: evaluate on this dataset instead (its test split); it must have the run's classes.
        data_dir, download: as for `load_dataset`.
        split_file: the run's ``split.json``, used when the folder's files moved but the test files are all there.
        where: how to name the run in messages.

    Raises:
        ValueError: the classes differ, or the data on disk no longer gives the recorded test split.
    """
    recorded = record["dataset"]
    name = recorded if spec is None else spec
    same = same_dataset(name, recorded)
    params = record.get("split") or {}
    kwargs = {}
    if name.startswith("folder:"):
        kwargs = {"seed": params.get("seed") or 0, "image_size": record["image_size"][0]}
        if params.get("val_fraction") is not None:
            kwargs["val_fraction"] = params["val_fraction"]
    bundle = load_dataset(name, data_dir=data_dir, download=download, **kwargs)
    if list(bundle.classes) != list(record["classes"]):
        raise ValueError(f"{where} was trained on {len(record['classes'])} classes {_short(record['classes'])}, but "
                         f"{name} has {len(bundle.classes)}: {_short(bundle.classes)}; evaluate on data with the "
                         f"same class folders (same names, same order)")
    if bundle.in_channels != record["in_channels"]:
        raise ValueError(f"{where} was trained on {record['in_channels']}-channel images; {name} has "
                         f"{bundle.in_channels}")
    if same and record.get("test_sha256") and bundle.fingerprint("test") != record["test_sha256"]:
        path = Path(split_file) if split_file else None
        if path is None or not path.is_file() or not _from_split_file(bundle, path, record):
            raise ValueError(
                f"{name} no longer gives the test split {where} was evaluated on ({record.get('test_count')} images "
                f"recorded, {len(bundle.test)} now, different files): files were added, removed or renamed since "
                f"training. Restore the folder as it was"
                + (f" (the recorded test files are listed in {path})" if path is not None and path.is_file() else "")
                + ", or pass --data with the folder to evaluate its own split (results then are not the run's)")
    # The statistics and the image size are part of the trained network: use the recorded ones.
    bundle.mean, bundle.std = tuple(record["mean"]), tuple(record["std"])
    if bundle.kind == "folder":
        bundle.image_size = tuple(record["image_size"])
    return bundle


def _short(items: list[str], n: int = 6) -> str:
    return "[" + ", ".join(items[:n]) + (", ..." if len(items) > n else "") + "]"
