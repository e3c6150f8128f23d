"""Checkpoints that survive a kill at any moment.

A checkpoint is two files: the weights in safetensors (with the model's name, options and classes in its
metadata, so the file alone is enough for `cnnzoo eval`/`predict`) and ``*.state.pt`` beside it (optimizer,
schedule, RNG, epoch and step), read back with ``torch.load(weights_only=True)``. Every file is written to a
temporary name in the same directory, flushed, fsync'ed and renamed over the old one (rename is atomic on POSIX).

The pair is tied together by a pointer: ``last.json`` / ``best.json`` name the files of the current checkpoint
and are themselves replaced atomically *after* both files are complete, so whatever instant a kill lands,
the pointer names a complete pair. ``best.safetensors`` / ``last.safetensors`` are kept as stable names for
users (copies of the pointed-to weights, also written atomically).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

__all__ = ["atomic_write", "save_checkpoint", "load_checkpoint", "latest_pointer", "read_weights", "weights_metadata"]


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
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _weights_bytes(state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> bytes:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return save(tensors, metadata={k: json.dumps(v) for k, v in metadata.items()})


def save_checkpoint(
    ckpt_dir: str | Path,
    kind: str,
    tag: str,
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``kind`` ("last" or "best") for ``tag`` (e.g. "e0005-s000000") and point ``kind.json`` at it.

    Returns the path of the stable weights file ``ckpt_dir/kind.safetensors``.
    """
    ckpt_dir = Path(ckpt_dir)
    blob = _weights_bytes(state_dict, metadata)
    weights_name, state_name = f"{kind}-{tag}.safetensors", f"{kind}-{tag}.state.pt"
    atomic_write(ckpt_dir / weights_name, blob)
    pointer = {"weights": weights_name, "tag": tag}
    if state is not None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(ckpt_dir / state_name, buf.getvalue())
        pointer["state"] = state_name
    old = latest_pointer(ckpt_dir, kind)
    atomic_write(ckpt_dir / f"{kind}.json", json.dumps(pointer, indent=1).encode())
    atomic_write(ckpt_dir / f"{kind}.safetensors", blob)
    # only now is the previous pair unreferenced
    if old is not None:
        for key in ("weights", "state"):
            name = old.get(key)
            if name and name not in pointer.values():
                (ckpt_dir / name).unlink(missing_ok=True)
    return ckpt_dir / f"{kind}.safetensors"


def latest_pointer(ckpt_dir: str | Path, kind: str = "last") -> dict | None:
    """The pointer of checkpoint ``kind`` in ``ckpt_dir``, or None when there is none."""
    p = Path(ckpt_dir) / f"{kind}.json"
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def load_checkpoint(ckpt_dir: str | Path, kind: str = "last") -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(state_dict, metadata, state) of checkpoint ``kind``; FileNotFoundError naming the directory if absent."""
    ckpt_dir = Path(ckpt_dir)
    pointer = latest_pointer(ckpt_dir, kind)
    if pointer is None:
        raise FileNotFoundError(f"no {kind} checkpoint in {ckpt_dir} (expected {ckpt_dir / (kind + '.json')})")
    sd, meta = read_weights(ckpt_dir / pointer["weights"])
    state = {}
    if "state" in pointer:
        state = torch.load(ckpt_dir / pointer["state"], map_location="cpu", weights_only=True)
    return sd, meta, state


def weights_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON-decoded metadata of a cnnzoo safetensors file ({} for other files)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata) of a safetensors file."""
    return load_file(str(path)), weights_metadata(path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A weights file from a run directory (its best checkpoint, else its last) or a file path."""
    path = Path(path)
    if path.is_dir():
        for name in ("checkpoints/best.safetensors", "checkpoints/last.safetensors", "best.safetensors",
                     "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds no checkpoint (looked for checkpoints/best.safetensors and "
                                "checkpoints/last.safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (give a run directory or a weights file)")
    return path


def load_trained(path: str | Path, *, model_name: str | None = None, device: torch.device | str = "cpu"):
    """(model in eval mode on ``device``, metadata) from a run directory or a weights file.

    cnnzoo checkpoints carry the network name, options, classes and normalisation in their metadata. Other
    files (torchvision, timm, plain state dicts) need ``model_name`` and get ImageNet-style metadata guesses.
    """
    from ..registry import create_model
    from ..weights import detect_source, read_state_dict

    file = resolve_checkpoint(path)
    meta = weights_metadata(file) if file.suffix == ".safetensors" else {}
    name = meta.get("model") or model_name
    if name is None:
        raise ValueError(f"{file} has no cnnzoo metadata naming its network; pass --model NAME")
    sd = read_state_dict(file)
    if meta.get("format") == "cnnzoo":
        model = create_model(name, num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                             **meta.get("options", {}))
        model.load_state_dict(sd, strict=True)
    else:
        head = [v for k, v in sd.items() if v.ndim == 2][-1:]  # the last matrix is the classifier
        kwargs = {"num_classes": int(head[0].shape[0])} if head else {}
        model = create_model(name, **kwargs)
        _, sd = detect_source(model, name, sd)
        model.load_state_dict(sd, strict=True)
        meta = {"model": name, "num_classes": model.num_classes, "in_channels": model.in_channels}
    return model.to(device).eval(), meta


def preprocess_image(path: str | Path, meta: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """An image file as the (1, C, H, W) normalised batch the checkpoint's network was trained on."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from ..registry import get_card

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    c = int(meta.get("in_channels", 3))
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            size = meta.get("input_size") or (meta.get("image_size") or [None])[0]
            if size is None:
                size = get_card(meta["model"]).input_size[-1]
            im = im.resize((int(size), int(size)), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not an image PIL can read: {e}") from None
    x = torch.from_numpy(arr).view(int(size), int(size), c).permute(2, 0, 1)[None]
    # ImageNet statistics for foreign checkpoints (torchvision's normalisation)
    mean = torch.tensor(meta.get("mean") or [0.485, 0.456, 0.406][:c]).view(1, c, 1, 1)
    std = torch.tensor(meta.get("std") or [0.229, 0.224, 0.225][:c]).view(1, c, 1, 1)
    return ((x - mean) / std).to(device)
