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
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ..fileio import atomic_write

__all__ = ["atomic_write", "latest_pointer", "load_checkpoint", "read_weights", "save_checkpoint", "weights_metadata"]


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
    from ..weights import read_checkpoint

    weights = ckpt_dir / pointer["weights"]
    sd, _ = read_checkpoint(weights)  # a ValueError naming the file when it is not readable
    meta = weights_metadata(weights)
    state = {}
    if "state" in pointer:
        path = ckpt_dir / pointer["state"]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (zip, pickle and OS errors come in many types)
            why = str(e).split(". ")[0]
            raise ValueError(f"the training state {path} is truncated or damaged ({why}), so the run cannot resume "
                             f"from it; its weights ({weights}) still load for eval/predict") from None
        if not isinstance(state, dict):
            raise ValueError(f"the training state {path} does not hold a training state (a dict)")
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
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("checkpoints/best.safetensors", "checkpoints/last.safetensors", "best.safetensors",
                     "last.safetensors"):
            if (path / name).is_file():
                return path / name
        what = "a cnnzoo run directory without a checkpoint yet" if (path / "config.yaml").is_file() else \
            "a directory that is not a cnnzoo run"
        raise FileNotFoundError(f"{path} is {what} (looked for checkpoints/best.safetensors and "
                                "checkpoints/last.safetensors); give a run directory with a checkpoint or a weights file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (give a run directory or a weights file)")
    return path


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_trained(path: str | Path, *, model_name: str | None = None, device: torch.device | str = "cpu",
                 weights_source: str | None = None):
    """(model in eval mode on ``device``, metadata) from a run directory or a weights file.

    A cnnzoo checkpoint names its network, options and data in its metadata (``meta["data"]`` is the record
    `cnnzoo.data.reload_dataset` reads); ``model_name`` must then be absent or the same. Other files (torchvision,
    timm, plain state dicts) need ``model_name``; their metadata says ``"foreign": True`` and preprocessing follows
    the peer library (ImageNet statistics, the card's input size).
    """
    from ..registry import create_model
    from ..weights import read_checkpoint

    file = resolve_checkpoint(path)
    _, meta = read_checkpoint(file)
    if meta:
        if model_name is not None and model_name != meta.get("model"):
            raise ValueError(f"--model {model_name} contradicts the checkpoint, which is a {meta.get('model')} "
                             f"({file}); cnnzoo checkpoints name their network: drop --model")
        model = create_model(meta["model"], weights=str(file))
        return model.to(device).eval(), meta
    if model_name is None:
        raise ValueError(f"{file} has no cnnzoo metadata naming its network; pass --model NAME (see `cnnzoo list`)")
    model = create_model(model_name, weights=str(file), weights_source=weights_source)
    meta = {"model": model_name, "num_classes": model.num_classes, "in_channels": model.in_channels,
            "options": model.pretrained_cfg.get("options", {}), "foreign": True,
            "weights_source": model.pretrained_cfg.get("weights_source")}
    return model.to(device).eval(), meta


def _load_pixels(path: Path, channels: int):
    """An image file as 8-bit "L" or "RGB" (16-bit and float images scaled, not clipped; bombs refused)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from ..data.folder import to_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                rgb = to_rgb(im)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path} is refused as a decompression bomb ({e}); if it is trusted, raise "
                         "PIL.Image.MAX_IMAGE_PIXELS or shrink the image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise ValueError(f"{path} is not an image Pillow can read: {e}") from None
    return rgb.convert("L") if channels == 1 else rgb


def preprocess_image(path: str | Path, meta: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """An image file as the (1, C, H, W) batch the checkpoint's network saw at test time during training.

    The run's own test pipeline is reproduced from its data record: built-in (tensor) datasets resize to the native
    image size, normalise with the recorded statistics and resize to the network's input size as the loader does;
    folder datasets take the folder's eval transform (shorter side to size/0.875, centre crop). Foreign checkpoints
    get torchvision's ImageNet protocol at the card's input size.
    """
    import numpy as np
    import torch.nn.functional as F

    from ..data.folder import FolderTransform
    from ..registry import get_card

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    record = meta.get("data")
    c = int(meta.get("in_channels", 3))
    if record is None:  # foreign checkpoint, or a cnnzoo checkpoint from before data records
        size = meta.get("input_size") or get_card(meta["model"]).input_size[-1]
        kind = "folder" if meta.get("foreign") or c == 3 else "tensor"
        native = (size, size)
        mean = meta.get("mean") or list(IMAGENET_MEAN[:c])
        std = meta.get("std") or list(IMAGENET_STD[:c])
    else:
        kind, native = record["kind"], tuple(record["image_size"])
        mean, std = record["mean"], record["std"]
        size = meta.get("input_size")
    img = _load_pixels(path, c)
    if kind == "folder":
        crop = int(size or native[0])
        x = FolderTransform(crop, train=False, augment={})(img.convert("RGB"), None).float()  # (3, S, S) 0..255
        if c == 1:
            x = x[:1]
        x = x[None]
        size = None
    else:
        from PIL import Image

        h, w = native
        arr = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        x = torch.from_numpy(arr.reshape(h, w, c).copy()).permute(2, 0, 1)[None]
    m = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    x = (x / 255.0 - m) / s
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.to(device)
