"""Checkpoints that survive a kill at any moment.

A checkpoint is two files: the weights in safetensors (with the model's name, options and classes in its
metadata, so the file alone is enough for `cnnzoo eval`/`predict`) and ``*.state.pt`` beside it (optimizer,
schedule, RNG, epoch and step), read back with ``torch.load(weights_only=True)``. Every file is written to a
temporary name in the same directory, flushed, fsync'ed and renamed over the old one (rename is atomic on POSIX).

The pair is tied together by a pointer: ``last.json`` / ``best.json`` name the files of the current checkpoint
and are themselves replaced atomically *after* both files are complete, so whatever instant a kill lands,
the pointer names a complete pair. ``best.safetensors`` / ``last.safetensors`` are kept as stable names for
users: hard links to the pointed-to weights (one copy on disk; an atomic copy where the file system has no links),
and a "last" saved at the step of the "best" links the same file.

A pointer is only an index: each checkpoint file names its own epoch and step (``KIND-eEEEE-bBBBBBB.*`` and the
weights' metadata). A pointer that is damaged (not JSON, not a mapping, naming files that are not there) is never
a reason to delete anything: `latest_pointer` recovers the newest complete pair from the files themselves, and
`repair_pointers` writes that pointer back.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ..fileio import atomic_link, atomic_write

__all__ = ["CHECKPOINT_KINDS", "DamagedPointer", "atomic_write", "latest_pointer", "load_checkpoint", "read_pointer",
           "read_weights", "recover_pointer", "repair_pointers", "save_checkpoint", "weights_metadata"]

#: the checkpoints a run keeps, each with its pointer ``KIND.json``; "last" alone carries the training state.
CHECKPOINT_KINDS = ("last", "best", "ema_last", "ema_best")
_TAG = re.compile(r"e(\d{4,})-b(\d{6,})")


class DamagedPointer(ValueError):
    """A checkpoint pointer (``KIND.json``) that cannot be read or names files that are not there."""


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
    same_as: str | Path | None = None,
) -> Path:
    """Write checkpoint ``kind`` ("last" or "best") for ``tag`` (e.g. "e0005-b000000") and point ``kind.json`` at it.

    The weights are stored once: the stable name ``kind.safetensors`` is a hard link to the tagged file, and
    ``same_as`` (another checkpoint's weights file, e.g. the "best" saved at the same step) is linked instead of
    written when it holds exactly these bytes. Returns the path of the tagged weights file.
    """
    ckpt_dir = Path(ckpt_dir)
    blob = _weights_bytes(state_dict, metadata)
    weights_name, state_name = f"{kind}-{tag}.safetensors", f"{kind}-{tag}.state.pt"
    same_as = Path(same_as) if same_as is not None else None
    if same_as is not None and _holds(same_as, state_dict, metadata, len(blob)):
        atomic_link(same_as, ckpt_dir / weights_name)
    else:
        atomic_write(ckpt_dir / weights_name, blob)
    pointer = {"weights": weights_name, "tag": tag}
    if state is not None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(ckpt_dir / state_name, buf.getvalue())
        pointer["state"] = state_name
    try:
        old = latest_pointer(ckpt_dir, kind)
    except DamagedPointer:  # nothing certain to delete
        old = None
    atomic_write(ckpt_dir / f"{kind}.json", json.dumps(pointer, indent=1).encode())
    atomic_link(ckpt_dir / weights_name, ckpt_dir / f"{kind}.safetensors")
    # only now is the previous pair unreferenced
    if old is not None:
        for key in ("weights", "state"):
            name = old.get(key)
            if name and name not in pointer.values():
                (ckpt_dir / name).unlink(missing_ok=True)
    return ckpt_dir / weights_name


def _holds(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any], size: int) -> bool:
    """Whether the safetensors file ``path`` holds exactly these tensors and metadata (its header's order may
    differ from a new file's, so the bytes are not compared)."""
    if not path.is_file() or path.stat().st_size != size:
        return False
    try:
        saved, meta = read_weights(path)
    except Exception:  # noqa: BLE001  (not readable: write a new file)
        return False
    if meta != json.loads(json.dumps(metadata)) or saved.keys() != state_dict.keys():
        return False
    return all(torch.equal(saved[k], v.detach().to("cpu")) for k, v in state_dict.items())


def read_pointer(ckpt_dir: str | Path, kind: str = "last") -> dict | None:
    """The pointer ``ckpt_dir/KIND.json`` as written (None when there is none); `DamagedPointer` when it is not a
    pointer cnnzoo wrote or names a file that is missing."""
    p = Path(ckpt_dir) / f"{kind}.json"
    if not p.is_file():
        return None
    try:
        pointer = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DamagedPointer(f"{p} is not readable JSON ({str(e).splitlines()[0]})") from None
    tag = pointer.get("tag") if isinstance(pointer, dict) else None
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or pointer.get("weights") != f"{kind}-{tag}.safetensors" \
            or pointer.get("state", f"{kind}-{tag}.state.pt") != f"{kind}-{tag}.state.pt":
        raise DamagedPointer(f"{p} does not hold a checkpoint pointer (got {str(pointer)[:60]!r})")
    for key in ("weights", "state"):
        if key in pointer and not (Path(ckpt_dir) / pointer[key]).is_file():
            raise DamagedPointer(f"{p} names {pointer[key]}, which is missing")
    return pointer


def recover_pointer(ckpt_dir: str | Path, kind: str = "last") -> dict | None:
    """The pointer of the newest complete checkpoint ``kind`` found from the files themselves (None if none is).

    Complete: the weights file reads as safetensors and names the epoch and step of its file name; for "last",
    the training state beside it loads too. Nothing is written or deleted.
    """
    ckpt_dir = Path(ckpt_dir)
    found = []
    for f in ckpt_dir.glob(f"{kind}-e*-b*.safetensors"):
        m = _TAG.fullmatch(f.name[len(kind) + 1:-len(".safetensors")])
        if m:
            found.append((int(m[1]), int(m[2]), f.name[len(kind) + 1:-len(".safetensors")]))
    for epoch, batch, tag in sorted(found, reverse=True):
        try:
            meta = weights_metadata(ckpt_dir / f"{kind}-{tag}.safetensors")
        except Exception:  # noqa: BLE001, S112  (a truncated or foreign file: not a candidate)
            continue
        if meta.get("epoch", epoch) != epoch or meta.get("batch", batch) != batch:
            continue
        pointer = {"weights": f"{kind}-{tag}.safetensors", "tag": tag}
        if kind == "last":
            state_path = ckpt_dir / f"{kind}-{tag}.state.pt"
            try:
                state = torch.load(state_path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001, S112  (missing, truncated or damaged)
                continue
            if not isinstance(state, dict) or state.get("epoch", epoch) != epoch or state.get("batch", batch) != batch:
                continue
            pointer["state"] = state_path.name
        return pointer
    return None


def latest_pointer(ckpt_dir: str | Path, kind: str = "last") -> dict | None:
    """The pointer of checkpoint ``kind`` in ``ckpt_dir``, or None when there is none. A missing or damaged pointer
    file is answered from the checkpoint files themselves (`recover_pointer`: a kill can land between a pair's
    last byte and its pointer); `DamagedPointer` only when no complete checkpoint is left to recover."""
    try:
        return read_pointer(ckpt_dir, kind) or recover_pointer(ckpt_dir, kind)
    except DamagedPointer as e:
        recovered = recover_pointer(ckpt_dir, kind)
        if recovered is None:
            raise DamagedPointer(f"{e}, and no complete {kind}-eEEEE-bBBBBBB checkpoint is left in {ckpt_dir} to "
                                 "rebuild it from") from None
        return recovered


def repair_pointers(ckpt_dir: str | Path) -> list[str]:
    """Rewrite every damaged or missing pointer that complete checkpoint files can rebuild (and its stable
    ``KIND.safetensors`` copy); deletes nothing. Returns one line per pointer rebuilt or left damaged."""
    ckpt_dir = Path(ckpt_dir)
    notes = []
    if not ckpt_dir.is_dir():
        return notes
    for kind in CHECKPOINT_KINDS:
        try:
            if read_pointer(ckpt_dir, kind) is not None:
                continue
            why = f"{ckpt_dir / (kind + '.json')} was missing"
        except DamagedPointer as e:
            why = str(e)
        pointer = recover_pointer(ckpt_dir, kind)
        if pointer is None:
            if why.endswith("was missing"):
                continue  # no such checkpoint at all
            notes.append(f"{why}; no complete checkpoint is left to rebuild it from (nothing was deleted)")
            continue
        atomic_link(ckpt_dir / pointer["weights"], ckpt_dir / f"{kind}.safetensors")
        atomic_write(ckpt_dir / f"{kind}.json", json.dumps(pointer, indent=1).encode())
        notes.append(f"{why}; rebuilt it from {pointer['weights']} (the newest complete {kind} checkpoint)")
    return notes


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


#: run.json "kind" of the runs the classification commands do not read, and the commands that do
_OTHER_KINDS = {"segmentation": "cnnzoo segment eval|predict", "rcnn": "cnnzoo detect eval|predict",
                "detection": "cnnzoo detect eval|predict"}
_KIND_NAMES = {"segmentation": "segmentation", "rcnn": "R-CNN detection", "detection": "one-stage detection"}


def _other_kind(run_dir: Path) -> str | None:
    """Why a run directory of another chapter (segmentation, R-CNN) is not a classification run, or None."""
    try:
        kind = json.loads((run_dir / "run.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    if kind in _OTHER_KINDS:
        return (f"{run_dir} is a {_KIND_NAMES[kind]} run, not a "
                f"classification run: use `{_OTHER_KINDS[kind]} {run_dir}`")
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A weights file from a run directory or a file path. A run directory gives its last checkpoint: the final
    weights the run reported on its test split (a "best" is the user's to ask for by its path,
    ``RUN/checkpoints/best.safetensors``, chosen on a validation split; older runs chose it on the test split)."""
    path = Path(path).expanduser()
    if path.is_dir():
        other = _other_kind(path)
        if other:
            raise ValueError(other)
        for name in ("checkpoints/last.safetensors", "checkpoints/best.safetensors", "last.safetensors",
                     "best.safetensors"):
            if (path / name).is_file():
                return path / name
        what = "a cnnzoo run directory without a checkpoint yet" if (path / "config.yaml").is_file() else \
            "a directory that is not a cnnzoo run"
        raise FileNotFoundError(f"{path} is {what} (looked for checkpoints/last.safetensors and "
                                "checkpoints/best.safetensors); give a run directory with a checkpoint or a weights file")
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
