"""`cnnzoo explain`: what a network looks at, as labelled PNGs and one self-contained HTML page.

Parse, load the network and the images, call `cnnzoo.explain` (the methods) and `cnnzoo.explain.report` (the
pictures), write. Every output is computed in memory first and written only at the end, so a bad input (an unknown
layer, a CAM on a network without a GAP + linear head, an unreadable image, ...) is one line, exit 2, and nothing
in --out changes; a non-empty --out (and so any existing file) is refused without --force.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .bench import _positive_int
from .common import device_arg

IMAGE_METHODS = ("cam", "gradcam", "gradcam++", "occlusion", "guided-backprop", "guided-gradcam", "deconvnet",
                 "features")
ALL_METHODS = IMAGE_METHODS[:-1] + ("filters", "features")
LAYER_METHODS = ("cam", "gradcam", "gradcam++", "guided-gradcam", "deconvnet")
SIGNAL_METHODS = ("guided-backprop", "guided-gradcam", "deconvnet")  # input-space signals (N, C, H, W)
SANITY_METHODS = ("cam", "gradcam", "gradcam++", "guided-backprop", "guided-gradcam", "deconvnet")
RANDOM_NOTICE = "random weights: the maps show the architecture, not anything learned"
MAX_SANITY_COLUMNS = 12

EPILOG = """\
examples (IMAGE: a file, a folder of images, or test:N, image N of the run's own test split):
  cnnzoo train lenet5 --epochs 1 --run-dir runs/lenet5                 # a run to explain (mnist5k digits)
  cnnzoo explain runs/lenet5 test:0 test:450 --out explain/gradcam     # Grad-CAM (the default method)
  cnnzoo explain runs/lenet5 test:450 --method gradcam,occlusion,guided-gradcam --target 4 --out explain/methods
  cnnzoo explain runs/lenet5 --method filters --out explain/filters    # conv1's kernels (AlexNet Fig. 3)
  cnnzoo explain runs/lenet5 --method deconvnet --top 9 --layer features.5 --channel 3 --out explain/top9
                                              # ZF Fig. 2: the 9 strongest activations of a map over the test split
  cnnzoo explain runs/lenet5 test:450 --method gradcam,guided-backprop --sanity --out explain/sanity  # Adebayo
  cnnzoo explain runs/lenet5 test:450 --format json --out explain/json   # the maps' statistics (and explain.json)
  cnnzoo explain resnet18 test:450 --data mnist5k --input-size 64 --method gradcam,features --out explain/resnet18
                                              # a registered NAME: random weights, ImageNet preprocessing
methods: cam, gradcam, gradcam++, occlusion, guided-backprop, guided-gradcam, deconvnet (per IMAGE, with a heat-map
overlay), features (each stage's feature maps of an IMAGE), filters (the first layer's kernels; needs no IMAGE).
Outputs in --out: IMAGE_METHOD.png per image and method, features_IMAGE.png, filters.png, topk_LAYER_chC.png,
sanity.png, index.html (all pictures embedded) and with --format json explain.json; --out must be new or empty
unless --force (which replaces only these names). See cnnzoo.explain."""


@dataclass
class Loaded:
    """The network and everything needed to feed and label it."""

    model: object
    meta: dict
    classes: list[str]
    mean: list[float]
    std: list[float]
    describe: str
    random: bool = False
    run_dir: Path | None = None


@dataclass
class Output:
    """A file to write: its name in --out, its bytes, and where it goes on the page."""

    name: str
    data: bytes
    caption: str = ""


@dataclass
class Plan:
    outputs: list[Output] = field(default_factory=list)
    cells: dict = field(default_factory=dict)  # (image row, method column) -> (png, caption)
    sections: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    lines: list = field(default_factory=list)  # text output
    record: dict = field(default_factory=dict)  # json output


# ------------------------------------------------------------------------------------------------ arguments
def parse_methods(values: list[str] | None) -> list[str]:
    """``--method a --method b,c`` -> [a, b, c] (order kept, repeats dropped); default gradcam."""
    out: list[str] = []
    for value in values or ["gradcam"]:
        for m in value.split(","):
            m = m.strip().lower()
            if not m:
                raise ValueError(f"--method {value!r} has an empty name; valid: {', '.join(ALL_METHODS)}")
            if m not in ALL_METHODS:
                close = difflib.get_close_matches(m, ALL_METHODS, n=3, cutoff=0.5)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ValueError(f"unknown method {m!r}{hint}; valid: {', '.join(ALL_METHODS)}")
            if m not in out:
                out.append(m)
    return out


def _check_args(args: argparse.Namespace, methods: list[str]) -> None:
    """Everything that can be checked before loading anything."""
    used = set(methods)
    if args.top is not None and "deconvnet" not in used:
        raise ValueError("--top K ranks the strongest activations of a feature map and projects them with the "
                         "deconvnet (ZF Fig. 2): add --method deconvnet")
    if args.layer is not None and not used & set(LAYER_METHODS):
        raise ValueError(f"--layer picks the map that {', '.join(LAYER_METHODS)} read; none of "
                         f"{', '.join(methods)} reads a layer")
    if args.channel is not None and "deconvnet" not in used:
        raise ValueError("--channel picks the feature map the deconvnet projects: add --method deconvnet")
    if (args.occlusion_size is not None or args.occlusion_stride is not None) and "occlusion" not in used:
        raise ValueError("--occlusion-size/--occlusion-stride set the occluding square: add --method occlusion")
    from_split = any(_split_spec(t) for t in args.images)
    if args.split != "test" and args.top is None:
        raise ValueError("--split chooses the images --top ranks; give --top K (with --method deconvnet)")
    if args.data is not None and args.top is None and not from_split:
        raise ValueError("--data names the dataset of --top and of test:N / train:N images; give one of them")
    if args.sanity and not used & set(SANITY_METHODS):
        raise ValueError(f"--sanity randomises the network and compares saliency maps: add one of "
                         f"{', '.join(SANITY_METHODS)} (occlusion, filters and features have none)")
    need = [m for m in methods if m in IMAGE_METHODS and not (m == "deconvnet" and args.top is not None)]
    if need and not args.images:
        raise ValueError(f"{', '.join(need)} explain images: give at least one IMAGE (a file, a folder, or test:N for "
                         "image N of the run's test split); only filters and deconvnet --top need none")
    if args.images and not used & set(IMAGE_METHODS):
        raise ValueError("--method filters draws the network's kernels and reads no IMAGE; drop the images or add a "
                         "method that explains them (e.g. gradcam)")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a directory (created if missing)")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {args.out}: {parent} is a file, not a directory; choose another --out")


def _split_spec(text: str) -> tuple[str, int] | None:
    """``test:N`` / ``train:N`` (image N of the run's split), unless a file of that name exists."""
    m = re.fullmatch(r"(test|train):(\d+)", text.strip())
    return (m[1], int(m[2])) if m and not Path(text).exists() else None


def _entries(texts: list[str]) -> list:
    """The IMAGE arguments: files (folders expanded, as `cnnzoo predict`) and (split, index) pairs."""
    from .train import _image_files

    out: list = []
    for t in texts:
        spec = _split_spec(t)
        out += [spec] if spec else _image_files([t])
    return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _method_file(method: str) -> str:
    return method.replace("++", "pp")


def _stems(entries: list) -> list[str]:
    """A file-name stem per image, unique within the call (a/x.png and b/x.png: x, x-2; test:7: test-7)."""
    out, seen = [], {}
    for f in entries:
        s = _safe(f"{f[0]}-{f[1]}" if isinstance(f, tuple) else f.stem)
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def _refuse_nonempty_dir(out: Path, force: bool) -> None:
    """A non-empty --out (someone's folder, or an earlier call's, whose index.html this call would replace) is
    refused without --force; with it, the call's files are written beside what is there, replacing only its own
    names."""
    if force or not out.is_dir():
        return
    other = next(iter(sorted(out.iterdir())), None)
    if other is not None:
        raise ValueError(f"--out {out} is not empty (it holds {other.name}, ...); give a new or empty directory, or "
                         "--force to write this call's files there (files of other names are left as they are)")


def _refuse_existing(out: Path, names: list[str], force: bool) -> None:
    if force:
        return
    for n in names:
        if (out / n).exists():
            raise ValueError(f"{out / n} already exists; pass --force to overwrite it, or choose another --out")


# ------------------------------------------------------------------------------------------------ the network
def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith(".") or Path(text).suffix.lower() in (
        ".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _classes(meta: dict, n: int) -> list[str]:
    """The class names, as `cnnzoo predict` reads them; indices where the checkpoint names none."""
    return list((meta.get("data") or {}).get("classes") or meta.get("classes") or [str(i) for i in range(n)])


def _stats_of(meta: dict) -> tuple[list[float], list[float]]:
    """The normalisation `preprocess_image` applies for ``meta`` (to draw a preprocessed image back in pixels)."""
    from ..train.checkpoint import IMAGENET_MEAN, IMAGENET_STD

    c = int(meta.get("in_channels", 3))
    record = meta.get("data")
    if record:
        return list(record["mean"]), list(record["std"])
    return list(meta.get("mean") or IMAGENET_MEAN[:c]), list(meta.get("std") or IMAGENET_STD[:c])


def load_network(args: argparse.Namespace, device) -> Loaded:
    """RUN_DIR or CHECKPOINT (`load_trained`, the run's own preprocessing), or a registered NAME (`create_model`,
    ImageNet-style preprocessing at the card's input size, as `cnnzoo predict` does for foreign checkpoints)."""
    from ..registry import UnknownModelError, create_model, get_card
    from ..train.checkpoint import _other_kind, load_trained, resolve_checkpoint, weights_metadata

    source = args.source
    if not source.strip():
        raise ValueError("the network is empty; give a run directory, a checkpoint file or a registered NAME")
    path = Path(source).expanduser()
    if path.exists():
        if args.weights:
            raise ValueError(f"--weights goes with a registered NAME; {source} already holds its weights")
        run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else None
        other = _other_kind(run_dir) if run_dir is not None else None
        if other:
            raise ValueError(other)
        model, meta = load_trained(path, model_name=args.model, device=device)
        what = f"{meta['model']} from {source}"
        random = False
    else:
        if _looks_like_path(source):
            raise FileNotFoundError(f"{source!r} does not exist; give a run directory, a checkpoint file or a "
                                    "registered network NAME (see `cnnzoo list`)")
        try:
            card = get_card(source)
        except UnknownModelError as e:
            raise ValueError(f"{source!r} is no run directory or checkpoint file here, and {e}") from None
        if args.model and args.model != source:
            raise ValueError(f"--model {args.model} contradicts the network NAME {source}; drop --model")
        run_dir, random = None, False
        weights = args.weights
        if weights and weights != "torchvision" and Path(weights).expanduser().exists():
            file = resolve_checkpoint(weights)
            held = weights_metadata(file).get("model") if file.suffix == ".safetensors" else None
            if held and held != source:
                raise ValueError(f"--weights {weights} holds {held} weights, not {source}; explain it as it is: "
                                 f"cnnzoo explain {weights} ...")
            model, meta = load_trained(weights, model_name=source, device=device)
            what = f"{source} with the weights of {weights}"
        elif weights:
            model = create_model(source, weights=weights).to(device).eval()
            meta = {"model": source, "foreign": True, "in_channels": model.in_channels,
                    "weights_source": model.pretrained_cfg.get("weights_source")}
            what = f"{source} with {weights} weights"
        else:
            model = create_model(source).to(device).eval()
            meta = {"model": source, "foreign": True, "in_channels": getattr(model, "in_channels", card.input_size[0])}
            what = f"{source} (random weights)"
            random = True
        if not meta.get("data"):
            meta["input_size"] = args.input_size or meta.get("input_size") or card.input_size[-1]
    if args.input_size is not None and (meta.get("data") or not meta.get("foreign")):
        raise ValueError("--input-size sets the input of a registered NAME (or foreign weights); a cnnzoo run is "
                         "explained at the size it trained at")
    if args.input_size is not None:
        meta["input_size"] = args.input_size
    n = getattr(model, "num_classes", None) or model(  # a network without num_classes: ask it
        _dummy(model, meta, device)).shape[1]
    mean, std = _stats_of(meta)
    return Loaded(model.eval(), meta, _classes(meta, n), mean, std, what, random, run_dir)


def _dummy(model, meta, device):
    import torch

    size = meta.get("input_size") or 224
    return torch.zeros(1, int(meta.get("in_channels", 3)), size, size, device=device)


def resolve_target(text: str | None, classes: list[str]) -> int | None:
    """``--target``: a class name (as the run names them) or an index 0..K-1."""
    if text is None:
        return None
    if text in classes:
        return classes.index(text)
    try:
        i = int(text)
    except ValueError:
        i = None
    if i is not None and 0 <= i < len(classes):
        return i
    shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
    raise ValueError(f"--target {text!r} is not a class index (0..{len(classes) - 1}) or a class name of this "
                     f"network (e.g. {shown})")


# ------------------------------------------------------------------------------------------------ statistics
def map_stats(t) -> dict:
    """shape, min, max, mean and the (first) argmax position of one map or signal (no batch axis)."""
    t = t.detach().float().cpu()
    flat = int(t.reshape(-1).argmax())
    pos, rest = [], flat
    for s in reversed(t.shape):
        pos.append(rest % s)
        rest //= s
    return {"shape": list(t.shape), "min": float(t.min()), "max": float(t.max()), "mean": float(t.mean()),
            "argmax": pos[::-1]}


def _top_text(probs, classes: list[str], k: int = 3) -> tuple[str, list[dict]]:
    top = probs.topk(min(k, probs.numel()))
    items = [{"class": classes[i], "index": i, "probability": float(p)}
             for p, i in zip(top.values.tolist(), top.indices.tolist())]
    return " | ".join(f"{d['class']} {100 * d['probability']:.1f}%" for d in items), items


# ------------------------------------------------------------------------------------------------ pictures
def _explain_image(net: Loaded, args, methods, x, stem: str, image: Path, row: int, plan: Plan,
                   label: str | None = None) -> dict:
    """Every per-image method for one image: PNGs, page cells, text lines and the json record."""
    import torch

    from ..explain import explain
    from ..explain import report as R
    from ..explain.visual import feature_grid, feature_maps, overlay, to_uint8_image

    with torch.no_grad():
        probs = net.model(x).float().softmax(1)[0].cpu()
    top3, top_items = _top_text(probs, net.classes)
    true = f" (true class {label})" if label is not None else ""
    plan.lines.append(f"{image}{true}: {top3}")
    rec = {"image": str(image), "name": stem, "top": top_items, "methods": {}}
    if label is not None:
        rec["label"] = label
    pic = to_uint8_image(x[0], net.mean, net.std)
    big = R.upscale(pic)
    factor = big.shape[0] // pic.shape[0]
    columns = [m for m in methods if m in IMAGE_METHODS]
    for col, method in enumerate(columns):
        if method == "features":
            name = f"features_{stem}.png"
            stages = feature_maps(net.model, x)
            parts, stage_rec = [], []
            for layer, maps in stages:
                grid = feature_grid(maps, max_maps=64)
                grid = R.enlarge(grid, max(1, math.ceil(32 / max(1, maps.shape[-1]))))
                shown = min(64, maps.shape[0])
                parts.append(R.stack([R.text_block([(f"{layer}: {shown} of {maps.shape[0]} maps, "
                                                    f"{maps.shape[1]}x{maps.shape[2]} (each min-max scaled)")]),
                                      grid], 0, 2))
                stage_rec.append({"layer": layer, **map_stats(maps)})
            png = R.png_bytes(R.stack([R.text_block([f"feature maps of {image.name}", f"top-3: {top3}"]), big]
                                      + parts, 0, 8))
            caption = f"feature maps of {len(stages)} stages"
            rec["methods"][method] = {"png": name, "stages": stage_rec}
            plan.lines.append(f"  {method:<16} {len(stages)} stages -> {name}")
        else:
            kw = {}
            if method == "occlusion":
                kw = {k: v for k, v in (("size", args.occlusion_size), ("stride", args.occlusion_stride))
                      if v is not None}
            if method == "deconvnet" and args.channel is not None:
                kw["channel"] = args.channel
            ex = explain(net.model, x, method, target=args.target_index, layer=args.layer, **kw)
            t = int(ex.target[0])
            p = float(ex.probs[0, t])
            cls = net.classes[t]
            name = f"{stem}_{_method_file(method)}.png"
            where = f" at {ex.layer}" if ex.layer else ""
            title = [f"{method}{where} | target {cls} ({100 * p:.1f}%)", f"top-3: {top3}",
                     f"{image.name}{true} | {net.describe}"]
            ov = R.enlarge(overlay(pic, ex.heat[0]), factor)
            entry = {"png": name, "target": t, "class": cls, "probability": p, "layer": ex.layer}
            if method == "occlusion":
                occ = ex.raw
                tiles = [(big, "input"), (ov, f"drop of p({cls}) (red: most)"),
                         (R.probability_map(occ.prob[0], big.shape[0]), f"p({cls}) with the square there (7d)"),
                         (R.class_map(occ.top_class[0], net.classes, big.shape[0]), "most likely class (7e)")]
                title[0] += f" | grey square {occ.size}px, stride {occ.stride}px (ZF Fig. 7)"
                entry.update(map_stats(occ.prob[0]))
                entry.update({"size": occ.size, "stride": occ.stride, "fill": occ.fill,
                              "grid": occ.prob[0].tolist(), "top_class": occ.top_class[0].tolist(),
                              "argmin": map_stats(-occ.prob[0])["argmax"]})
                detail = f"p({cls}) {float(occ.prob[0].min()):.3f}..{float(occ.prob[0].max()):.3f}, " \
                         f"{occ.prob.shape[1]}x{occ.prob.shape[2]} positions"
            elif method in SIGNAL_METHODS:
                sig = R.enlarge(R.signed_image(ex.raw[0]), factor)
                tiles = [(big, "input"), (ov, "max |value| over channels"),
                         (sig, "signed: grey 0, scaled by max |value|")]
                if method == "deconvnet":  # class-agnostic: one activation of the layer, not a class score
                    ch = kw.get("channel", _strongest_channel(net.model, ex.layer, x))
                    entry["channel"] = ch
                    what = f"channel {ch}" + ("" if "channel" in kw else " (the strongest)")
                    title[0] = f"deconvnet at {ex.layer} | {what} (ZF Sec. 2.1) | predicted {cls} ({100 * p:.1f}%)"
                entry.update(map_stats(ex.raw[0]))
                detail = f"max |value| {float(ex.raw[0].abs().max()):.4g}"
            else:
                tiles = [(big, "input"), (ov, f"{method} overlay")]
                entry.update(map_stats(ex.raw[0]))
                detail = f"{ex.raw.shape[-2]}x{ex.raw.shape[-1]} map"
            png = R.png_bytes(R.panel(tiles, title))
            if method == "deconvnet":
                caption = f"deconvnet{where}, {what}"
                plan.lines.append(f"  {method:<16} {what}{where}, {detail} -> {name}")
            else:
                caption = f"{method}{where}: {cls} ({100 * p:.1f}%)"
                plan.lines.append(f"  {method:<16} target {cls} ({100 * p:.1f}%){where}, {detail} -> {name}")
            rec["methods"][method] = entry
        plan.outputs.append(Output(name, png, caption))
        plan.cells[(row, col)] = (png, caption)
    return rec


def _strongest_channel(model, layer: str, x) -> int:
    """The channel holding the largest activation of ``layer`` for one image (deconvnet's default)."""
    import torch

    seen: list = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: seen.append(out) if not seen else None)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    act = seen[0][0]
    return int(act.flatten().argmax()) // (act.shape[-2] * act.shape[-1])


def _filters(net: Loaded, plan: Plan) -> dict:
    from torch import nn

    from ..explain import report as R
    from ..explain.visual import filter_grid

    name, conv = next(((n, m) for n, m in net.model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None:
        raise ValueError(f"{net.meta['model']} has no nn.Conv2d: no filters to draw")
    k = max(conv.kernel_size)
    grid = filter_grid(net.model, scale=max(1, math.ceil(40 / k)), padding=2)
    o, i, kh, kw = conv.weight.shape
    title = [f"first convolution {name}: {o} kernels {i}x{kh}x{kw}, each min-max scaled (AlexNet Fig. 3)",
             net.describe]
    png = R.png_bytes(R._border(R.stack([R.text_block(title, width=grid.shape[1]), grid], 0, 2)))
    caption = f"{o} kernels of {name}"
    plan.outputs.append(Output("filters.png", png, caption))
    plan.sections.append(("filters", png, caption))
    plan.lines.append(f"filters: {o} kernels {i}x{kh}x{kw} of {name} -> filters.png")
    return {"png": "filters.png", "layer": name, **map_stats(conv.weight)}


# ------------------------------------------------------------------------------------------------ top-k (ZF Fig. 2)
def _split_image(args, net: Loaded, entry: tuple[str, int], tmp: Path, bundles: dict) -> tuple[Path, str]:
    """Image ``index`` of the run's (or --data's) ``split`` as a file `preprocess_image` reads (a folder's own file;
    a tensor dataset's image written as PNG under ``tmp``), and its true class name."""
    from PIL import Image

    split, index = entry
    if "bundle" not in bundles:
        bundles["bundle"] = _topk_bundle(args, net, what=f"{split}:{index}")[0]
    bundle = bundles["bundle"]
    data = bundle.test if split == "test" else bundle.train
    if index >= len(data):
        raise ValueError(f"{split}:{index}: the {split} split of {bundle.name} has {len(data)} images "
                         f"({split}:0 to {split}:{len(data) - 1})")
    label = bundle.classes[int(data.labels[index])]
    if not (net.meta.get("data") and args.data is None):  # not the network's own classes: say whose
        label = f"{label} of {bundle.name}"
    if hasattr(data, "samples"):
        return Path(data.samples[index][0]), label
    a = data.images[index].permute(1, 2, 0).numpy()
    path = tmp / f"{split}-{index}.png"
    Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(path)
    return path, label


def _topk_bundle(args, net: Loaded, what: str = "--top"):
    """The run's recorded dataset (or --data) via `reload_dataset`, as `cnnzoo eval`: what --top ranks, where
    test:N images come from."""
    from ..data import load_dataset
    from ..data.record import reload_dataset
    from ..train.checkpoint import IMAGENET_MEAN, IMAGENET_STD

    record = net.meta.get("data")
    if record:
        split_file = net.run_dir / "split.json" if net.run_dir is not None else None
        bundle = reload_dataset(record, spec=args.data, data_dir=args.data_dir, download=not args.no_download,
                                split_file=split_file, where=f"the checkpoint ({net.meta['model']})")
        return bundle, net.meta.get("input_size")
    if not args.data:
        raise ValueError(f"{what} reads a dataset and {args.source} records none: pass --data (e.g. mnist5k, "
                         "cifar10, folder:PATH)")
    bundle = load_dataset(args.data, data_dir=args.data_dir, download=not args.no_download)
    c = int(net.meta.get("in_channels", 3))
    if bundle.in_channels != c and what == "--top":  # a single image is converted (L <-> RGB) as predict does
        raise ValueError(f"{args.data} has {bundle.in_channels}-channel images; {net.meta['model']} takes {c}")
    bundle.mean, bundle.std = IMAGENET_MEAN[:c], IMAGENET_STD[:c]  # the foreign preprocessing, as cnnzoo eval
    return bundle, net.meta.get("input_size")


def _topk(args, net: Loaded, device, plan: Plan) -> dict:
    """The k strongest activations of one feature map over a split, each from a different image (ZF Fig. 2)."""
    import torch

    from ..data import make_loader
    from ..explain import report as R
    from ..explain.attribution import resolve_layer
    from ..explain.deconvnet import top_activations
    from ..explain.visual import to_uint8_image

    layer, module = resolve_layer(net.model, args.layer)
    bundle, input_size = _topk_bundle(args, net)
    split = bundle.test if args.split == "test" else bundle.train
    if len(split) == 0:
        raise ValueError(f"{bundle.name} has no {args.split} images to rank")

    def batches():
        loader = make_loader(bundle, args.split, batch_size=256, train=False, device=device, input_size=input_size,
                             num_workers=0 if bundle.kind != "folder" else 2)
        try:
            yield from (images for images, _ in loader)
        finally:
            loader.close()

    seen: list = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out) if not seen else None)
    maxima = []
    try:
        with torch.no_grad():
            for images in batches():  # pass 1: each image's strongest activation in every channel
                seen.clear()
                net.model(images)
                act = seen[0]
                if not isinstance(act, torch.Tensor) or act.ndim != 4:
                    got = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
                    raise ValueError(f"layer {layer!r} gives {got}, not a (N, C, h, w) feature map; --top needs a "
                                     "convolutional layer (--layer)")
                maxima.append(act.amax((2, 3)).float().cpu())
    finally:
        handle.remove()
    maxima = torch.cat(maxima)  # (N, C)
    channels = maxima.shape[1]
    if args.channel is not None and args.channel >= channels:
        raise ValueError(f"--channel {args.channel}: layer {layer!r} has {channels} feature maps (0..{channels - 1})")
    channel = args.channel if args.channel is not None else int(maxima.max(0).values.argmax())
    order = torch.argsort(maxima[:, channel], descending=True, stable=True)[:args.top]
    wanted = {int(i): r for r, i in enumerate(order)}
    chosen: list = [None] * len(order)
    start = 0
    for images in batches():  # pass 2: the chosen images only
        for j in range(images.shape[0]):
            if start + j in wanted:
                chosen[wanted[start + j]] = images[j]
        start += images.shape[0]
    chosen = torch.stack(chosen)
    shift = (0, 0)
    try:
        top = top_activations(net.model, chosen, layer, channel, k=len(chosen))
    except ValueError as e:  # the receptive field is not traced at this size: the network's own padding?
        padded, shift = _padded_to_card(net, chosen, layer, module)
        if padded is None:
            raise e from None
        top = top_activations(net.model, padded, layer, channel, k=len(chosen))
    indices = [int(order[i]) for i in top.indices]
    patches = [to_uint8_image(p, net.mean, net.std) for p in top.patches]
    projections = [R.signed_image(p) for p in top.projections]
    p = top.patches.shape[-1]
    title = [(f"{layer} channel {channel}: the {len(indices)} strongest activations over {len(split)} {args.split} "
             f"images of {bundle.name} (ZF Fig. 2)"),
             (f"receptive field {p}x{p} px; projections signed (grey 0, each scaled by its max |value|) | "
             f"{net.describe}")]
    png = R.png_bytes(R.topk_grid(projections, patches, title, tile=max(48, p)))
    name = f"topk_{_safe(layer)}_ch{channel}.png"
    caption = f"{layer} channel {channel}: top {len(indices)} of the {args.split} split of {bundle.name}"
    plan.outputs.append(Output(name, png, caption))
    plan.sections.append((f"top {len(indices)} activations (deconvnet)", png, caption))
    chosen_by = "given" if args.channel is not None else "the channel with the strongest activation"
    plan.lines.append(f"top {len(indices)}: {layer} channel {channel} ({chosen_by}) over {len(split)} {args.split} "
                      f"images of {bundle.name}, activations {float(top.values[0]):.4g}..{float(top.values[-1]):.4g}"
                      f" -> {name}")
    return {"png": name, "layer": layer, "channel": channel, "dataset": bundle.name, "split": args.split,
            "images": len(split), "indices": indices, "values": [float(v) for v in top.values],
            "positions": top.positions.tolist(), "patch_size": p,
            "boxes": [[t - shift[0], left - shift[1], b - shift[0], r - shift[1]]
                      for t, left, b, r in top.boxes.tolist()]}


def _padded_to_card(net: Loaded, images, layer: str, module):
    """``images`` zero-padded (centred, in preprocessed space) to the card's input size, with the (top, left) pad,
    when the network does exactly that itself: LeNet-5 pads 28x28 digits to 32x32, a pad the layer arithmetic of
    `cnnzoo.explain.deconvnet.layer_field` does not follow. Only when the layer's activations come out the same
    (the boxes are then reported in the unpadded image's pixels); else (None, (0, 0))."""
    import torch
    import torch.nn.functional as F

    from ..registry import get_card

    _, ch, cw = get_card(net.meta["model"]).input_size
    h, w = images.shape[-2:]
    if (ch, cw) == (h, w) or ch < h or cw < w:
        return None, (0, 0)
    dh, dw = ch - h, cw - w
    padded = F.pad(images, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
    acts = []
    handle = module.register_forward_hook(lambda m, a, out: acts.append(out))
    try:
        with torch.no_grad():
            net.model(images[:1])
            net.model(padded[:1])
    finally:
        handle.remove()
    if len(acts) != 2 or acts[0].shape != acts[1].shape or not torch.equal(acts[0], acts[1]):
        return None, (0, 0)
    return padded, (dh // 2, dw // 2)


# ------------------------------------------------------------------------------------------------ sanity check
def sanity_steps(model, x, method: str, target=None, layer: str | None = None, seed: int = 0, **kw):
    """`cnnzoo.explain.sanity_check` on one image, keeping each step's display map: (trained Explanation,
    [(layer, spearman, heat (H, W), constant)])."""
    from ..explain import sanity_check

    rows = sanity_check(model, x, method, target, layer, seed, keep_maps=True, **kw)
    ref = rows[0]["explanation"]
    return ref, [(r["layer"] or "(top level)", r["spearman"], r["explanation"].heat[0], bool(r["constant"]))
                 for r in rows[1:]]


def _sanity(args, net: Loaded, methods, inputs, plan: Plan) -> list[dict]:
    import numpy as np

    from ..explain import report as R

    chosen = [m for m in methods if m in SANITY_METHODS]
    records, rows = [], []
    columns: list[str] | None = None
    plan.lines.append("sanity check (Adebayo et al. 2018, cascading randomisation): layers re-initialised from the logits down, one "
                      "more per step; Spearman rank correlation of |map| with the trained network's")
    for (stem, image, x) in inputs:
        per_method = {}
        for method in chosen:
            kw = {"channel": args.channel} if method == "deconvnet" and args.channel is not None else {}
            ref, steps = sanity_steps(net.model, x, method, args.target_index, args.layer, args.seed, **kw)
            per_method[method] = steps
            records.append({"image": str(image), "method": method, "target": int(ref.target[0]),
                            "steps": [{"layer": s[0], "spearman": s[1], "constant": s[3]} for s in steps]})
            keep = _columns(len(steps))
            if columns is None:
                columns = ["trained"] + [f"{i + 1}: {_short_layer(steps[i][0])}" for i in keep]
            heats = [ref.heat[0]] + [steps[i][2] for i in keep]
            rows.append((f"{stem} {method}", [np.round(h.numpy() * 255).astype(np.uint8) for h in heats]))
        layers = [s[0] for s in next(iter(per_method.values()))]
        plan.lines.append(f"{image}:")
        lw = max(len("layer"), *(len(n) for n in layers))
        plan.lines.append(f"  {'step':>4}  {'layer':<{lw}}" + "".join(f"{m:>17}" for m in chosen))
        body = []
        for i, layer in enumerate(layers):
            vals = [f"{per_method[m][i][1]:.3f}" + ("*" if per_method[m][i][3] else "") for m in chosen]
            plan.lines.append(f"  {i + 1:>4}  {layer:<{lw}}" + "".join(f"{v:>17}" for v in vals))
            body.append([str(image.name), str(i + 1), layer] + vals)
        if any(s[3] for steps in per_method.values() for s in steps):
            plan.lines.append("  * the map became constant (no ranks): counted as 0, as sanity_check does")
        plan.tables.append((f"sanity check: {image.name}", ["image", "step", "re-initialised layer"] + chosen, body))
    title = [("cascading randomisation (Adebayo et al. 2018, Fig. 2): the maps after re-initialising the layers from "
             "the logits down"), (f"columns: the trained network, then after step n (layers 1..n re-initialised)"
             f"{'; a selection of the steps' if columns and len(columns) - 1 < len(layers) else ''} | "
             f"{net.describe}")]
    png = R.png_bytes(R.sanity_grid(rows, columns or [], title))
    plan.outputs.append(Output("sanity.png", png, "maps after each randomisation step"))
    plan.sections.append(("sanity check (cascading randomisation)", png,
                          "maps (display heat, min-max scaled) after each re-initialisation step"))
    return records


def _short_layer(name: str) -> str:
    """A column label: the last part of a module name (two where the last is an index: mlp.3)."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _columns(n: int) -> list[int]:
    """The steps drawn: all up to MAX_SANITY_COLUMNS, else that many evenly spaced (the first and last included)."""
    if n <= MAX_SANITY_COLUMNS:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_SANITY_COLUMNS - 1)) for i in range(MAX_SANITY_COLUMNS)})


# ------------------------------------------------------------------------------------------------ the command
def cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from ..explain import report as R
    from ..explain.attribution import resolve_layer
    from ..fileio import atomic_write
    from ..train.checkpoint import preprocess_image
    methods = parse_methods(args.method)
    _check_args(args, methods)
    entries = _entries(args.images)
    stems = _stems(entries)
    out = Path(args.out).expanduser()
    planned = ["index.html"] + (["explain.json"] if args.format == "json" else [])
    planned += ["filters.png"] if "filters" in methods else []
    planned += ["sanity.png"] if args.sanity else []
    for stem in stems:
        planned += [f"features_{stem}.png" if m == "features" else f"{stem}_{_method_file(m)}.png"
                    for m in methods if m in IMAGE_METHODS]
    _refuse_nonempty_dir(out, args.force)
    _refuse_existing(out, planned, args.force)  # before any work; again before writing
    device = torch.device(args.device)
    net = load_network(args, device)
    if net.random:
        print(f"note: {RANDOM_NOTICE}", file=sys.stderr, flush=True)
    if args.layer is not None:
        resolve_layer(net.model, args.layer)  # an unknown name: the library's message, close names
    args.target_index = resolve_target(args.target, net.classes)
    inputs, labels, bundles = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="cnnzoo-explain-") as tmp:
        for stem, entry in zip(stems, entries):
            if isinstance(entry, tuple):
                path, labels[stem] = _split_image(args, net, entry, Path(tmp), bundles)
                shown = Path(f"{entry[0]}:{entry[1]}")
            else:
                path = shown = entry
            inputs.append((stem, shown, preprocess_image(path, net.meta, device)))
    files = [shown for _, shown, _ in inputs]
    plan = Plan()
    record: dict = {"network": net.meta["model"], "source": args.source, "random_weights": net.random,
                    "classes": len(net.classes), "methods": methods, "images": []}
    plan.lines.append(f"{net.describe}; methods: {', '.join(methods)}; {len(files)} image"
                      f"{'s' if len(files) != 1 else ''}")
    if "filters" in methods:
        record["filters"] = _filters(net, plan)
    for row, (stem, image, x) in enumerate(inputs):
        record["images"].append(_explain_image(net, args, methods, x, stem, image, row, plan, labels.get(stem)))
    if args.top is not None:
        record["topk"] = _topk(args, net, device, plan)
    if args.sanity:
        record["sanity"] = _sanity(args, net, methods, inputs, plan)
    names = [o.name for o in plan.outputs] + planned[:1 + (args.format == "json")]
    _refuse_existing(out, names, args.force)
    columns = [m for m in methods if m in IMAGE_METHODS]
    intro = [f"network: {net.describe}" + (f" ({RANDOM_NOTICE})" if net.random else ""),
             f"methods: {', '.join(methods)}" + (f"; target {args.target}" if args.target is not None else "")]
    page = R.html_page(f"cnnzoo explain: {net.meta['model']}", intro, [f.name for f in files], columns, plan.cells,
                       plan.sections, plan.tables)
    out.mkdir(parents=True, exist_ok=True)
    for o in plan.outputs:
        atomic_write(out / o.name, o.data)
    atomic_write(out / "index.html", page.encode("utf-8"))
    record["files"] = [o.name for o in plan.outputs] + ["index.html"]
    if args.format == "json":
        record["files"].append("explain.json")
        text = json.dumps(record, indent=1)
        atomic_write(out / "explain.json", (text + "\n").encode("utf-8"))
        print(text)
        return 0
    for line in plan.lines:
        print(line)
    print(f"page: {out / 'index.html'}")
    return 0


def _nonnegative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="what a network looks at: CAM, Grad-CAM, occlusion, deconvnet, filters",
                       description="Explain a trained run or a registered network: heat-map overlays (CAM, Grad-CAM, "
                                   "Grad-CAM++), occlusion maps (ZF Fig. 7), guided backprop, guided Grad-CAM, ZFNet's "
                                   "deconvnet (and its top-k grid, ZF Fig. 2), first-layer filters, feature maps, and "
                                   "the sanity check of Adebayo et al. Writes PNGs and one self-contained HTML page.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN|CHECKPOINT|NAME",
                   help="a run directory, a weights file, or a registered network name (random weights unless "
                        "--weights)")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders of images, or test:N / train:N (image N of the run's split, or --data's)")
    p.add_argument("-m", "--method", action="append", metavar="M[,M...]",
                   help=f"repeatable or comma-separated: {', '.join(ALL_METHODS)} (default gradcam)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--layer", metavar="NAME", help="the layer cam/gradcam/gradcam++/guided-gradcam/deconvnet read "
                                                   "(default: the last stage of feature_info, e.g. layer4)")
    p.add_argument("--target", metavar="CLASS", help="class index or name to explain (default: the predicted class)")
    p.add_argument("--top", type=_positive_int, metavar="K",
                   help="with deconvnet: the K strongest activations of a feature map over a dataset (ZF Fig. 2)")
    p.add_argument("--channel", type=_nonnegative_int, metavar="C",
                   help="deconvnet's feature map (default: per image, the strongest; with --top, the channel whose "
                        "activation over the data is strongest)")
    p.add_argument("--data", metavar="D", help="dataset --top ranks (default: the run's own)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="split --top ranks (default test)")
    p.add_argument("--occlusion-size", type=_positive_int, metavar="PX",
                   help="side of the occluding square (default: a quarter of the input's shorter side)")
    p.add_argument("--occlusion-stride", type=_positive_int, metavar="PX", help="its step (default: half its side)")
    p.add_argument("--sanity", action="store_true",
                   help="cascading randomisation (Adebayo et al. 2018): maps and rank correlations per step")
    p.add_argument("--seed", type=int, default=0, help="seed of the sanity check's re-initialisation (default 0)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: print the maps' statistics (and write explain.json)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out, replacing files of the same names")
    p.add_argument("--weights", metavar="W", help="weights for a registered NAME: a file, a run, or 'torchvision'")
    p.add_argument("--model", metavar="NAME", help="network name, for weights files without cnnzoo metadata")
    p.add_argument("--input-size", type=_positive_int, metavar="PX",
                   help="square input size for a registered NAME (default: the card's)")
    p.add_argument("--device", default="cpu", type=device_arg, help="cpu (default), cuda, cuda:1, mps")
    p.add_argument("--data-dir", help="where downloaded datasets live")
    p.add_argument("--no-download", action="store_true", help="never fetch datasets")
    p.set_defaults(func=cmd_explain)
