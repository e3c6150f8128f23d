"""`cnnzoo train`, `cnnzoo eval`, `cnnzoo predict`: parse, call `cnnzoo.train` / `cnnzoo.evaluate`, print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .common import FloatArg, device_arg, parse_options

EPILOG_TRAIN = """\
examples:
  cnnzoo train lenet5                                 # mnist5k, its default recipe, ./runs/lenet5-<time>
  cnnzoo train resnet20_cifar --data cifar10 --epochs 180 --set optim.lr=0.1
  cnnzoo train lenet5 --recipe my.yaml --set schedule.name=cosine --set train.amp=bf16
  cnnzoo train --resume runs/lenet5-20240101-120000
  torchrun --nproc_per_node=2 -m cnnzoo train resnet20_cifar --data cifar10
config sections and keys: model, data, optim, schedule, train (see the README's Training section)."""

EPILOG_EVAL = """\
examples:
  cnnzoo eval runs/lenet5-20240101-120000                        # the run's own test pipeline and precision
  cnnzoo eval RUN --protocol center,10crop,144crop,dense,multiscale --no-flip   # reflections off (default: as trained)
  cnnzoo eval RUN --protocol dense+50crop+multiscale --scales 224,256,288 --format json   # VGG Table 5
  cnnzoo eval RUN --precision auto                               # this machine's fast path (bf16 where native)
protocols: center; 10crop (AlexNet: corners + centre + reflections); 50crop (VGG: 5x5 grid + reflections);
144crop (GoogLeNet: 4 scales x 3 squares x 6 crops x 2); dense (VGG: the fully-convolutional net on the whole
image); multiscale (dense, or 10crop/50crop with +, at several scales). Test scales follow the run's training: VGG's
scale jitter [Smin, Smax] gives Q = (Smin+Smax)/2 and {Smin, Q, Smax}; a fixed scale S gives {S-32, S, S+32},
scaled; data trained at its own size (digits) is cropped from its training canvas; else R = S/0.875 (227: 256).
See cnnzoo.evaluate.protocols."""


THREADS_HELP = ("CPU threads of the training process (default: torch's, the cores it may use); on a machine "
                "shared with other jobs fewer threads can be much faster (measured in the README's Training section)")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads N`` as `cnnzoo bench` takes it (a whole number >= 1, checked by argparse: exit 2)."""
    from .bench import _positive_int

    p.add_argument("--threads", type=_positive_int, metavar="N", help=THREADS_HELP)


def _flag_overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The dedicated flags as (flag, --set pair), applied before the explicit --set ones; errors name the flag."""
    table = [("epochs", "train.epochs"), ("batch_size", "data.batch_size"), ("optimizer", "optim.name"),
             ("lr", "optim.lr"), ("momentum", "optim.momentum"), ("nesterov", "optim.nesterov"),
             ("weight_decay", "optim.weight_decay"), ("schedule", "schedule.name"),
             ("warmup_epochs", "schedule.warmup_epochs"), ("label_smoothing", "train.label_smoothing"),
             ("amp", "train.amp"), ("channels_last", "model.channels_last"), ("compile", "model.compile"),
             ("device", "train.device"), ("seed", "train.seed"), ("run_dir", "train.run_dir"),
             ("weights", "model.weights"), ("sync_bn", "model.sync_bn"), ("limit_batches", "train.limit_batches"),
             ("data_dir", "data.data_dir"), ("init", "model.init"), ("init_from", "model.init_from")]
    out = []
    for attr, key in table:
        value = getattr(args, attr, None)
        if value is not None:
            text = repr(value) if isinstance(value, float) else json.dumps(value)  # 1e-05, inf: as float() reads
            out.append(("--" + attr.replace("_", "-"), f"{key}={text}"))
    if args.no_download:
        out.append(("--no-download", "data.download=false"))
    return out


def _note(text: str) -> None:
    """A ``note:`` line on stderr, from rank 0 only: the config is built before torchrun's process group exists,
    so the rank comes from torchrun's RANK variable (unset: a single process, which prints)."""
    if os.environ.get("RANK", "0").strip() in ("", "0"):
        print(f"note: {text}", file=sys.stderr, flush=True)


def _paper_config(args: argparse.Namespace):
    """``--recipe paper[:NAME]``: the paper's recipe <- flags <- -o options <- --set, then scaled to the run
    (`cnnzoo.train.paper_recipes`); the log says what was scaled."""
    from ..train.config import apply_overrides
    from ..train.paper_recipes import paper_config, scale_to_run

    cfg, recipe, notes = paper_config(args.name, args.data or "mnist5k", args.recipe)
    cfg.model.options.update(parse_options(args.options))
    pairs = _flag_overrides(args) + list(args.set or [])
    cfg = apply_overrides(cfg, pairs, validate=False)
    explicit = {(p[1] if isinstance(p, tuple) else p).partition("=")[0].strip() for p in pairs}
    notes += scale_to_run(cfg, recipe, explicit)
    for note in notes:
        _note(note)
    return apply_overrides(cfg, pairs)  # the same pairs again (scaling never touches theirs): errors name the flags


def _chosen_optimizer(args: argparse.Namespace, pairs: list) -> str | None:
    """The optimizer the user asked for (the last of --recipe's optim.name, --optimizer, --set optim.name), or None.
    Unreadable values give None here: the config reports them where it reads them."""
    from ..train.config import load_yaml, load_yaml_file

    chosen = None
    if args.recipe:
        try:
            data = load_yaml_file(args.recipe, "recipe")
        except (OSError, ValueError):
            data = None
        optim = data.get("optim") if isinstance(data, dict) else None
        if isinstance(optim, dict) and optim.get("name") is not None:
            chosen = optim["name"]
    for item in pairs:
        key, _, text = (item[1] if isinstance(item, tuple) else item).partition("=")
        if key.strip() == "optim.name":
            try:
                chosen = load_yaml(text, "optim.name")
            except ValueError:
                chosen = None
    return str(chosen).strip() if chosen is not None else None


def build_config(args: argparse.Namespace, hints: list | None = None):
    """The resolved config: dataset recipe <- card hints <- --recipe <- flags <- -o options <- --set.

    The card's optimizer hints apply whole, and only to their own optimizer (`cnnzoo.train.config.apply_card_hints`);
    a skipped one is a note on stderr. ``hints`` collects the decisions (`CardHint`) for the start line."""
    from ..train.config import apply_overrides, default_config, load_recipe
    from ..train.paper_recipes import is_paper_spec

    if is_paper_spec(args.recipe):
        return _paper_config(args)
    pairs = _flag_overrides(args) + list(args.set or [])
    decided: list = []
    cfg = default_config(args.name, args.data or "mnist5k", optimizer=_chosen_optimizer(args, pairs), hints=decided)
    for hint in decided:
        if not hint.applied:
            _note(f"{args.name}'s card hint {hint.describe()}; these settings were made for "
                  f"{hint.optimizer}; a card's optimizer settings apply to their own optimizer only, and all together "
                  "(--lr sets the rate)")
    if hints is not None:
        hints += decided
    if args.recipe:
        cfg = load_recipe(args.recipe, cfg)
        if args.data:
            cfg.data.name = args.data
        cfg.model.name = args.name
    cfg.model.options.update(parse_options(args.options))
    # a recipe's warmup that does not fit a shorter run is scaled to it (`apply_overrides`), and the note says so
    return apply_overrides(cfg, pairs, note=_note)


def cmd_train(args: argparse.Namespace) -> int:
    for flag, value, valid in (("--data", args.data, "a dataset (mnist5k, cifar10, folder:PATH, ...)"),
                               ("--recipe", args.recipe, "a YAML recipe file or 'paper'")):
        if value is not None and not value.strip():  # not the default silently
            raise ValueError(f"{flag} is empty; give {valid}, or leave {flag} out for the default")
    from ..train import Trainer, TrainingDiverged, TrainingInterrupted
    from ..train.config import apply_overrides

    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)  # intra-op threads of this process (each process under torchrun)
    hints: list = []
    if args.resume:
        if args.name or args.recipe or args.data or args.init or args.init_from:
            raise ValueError("--resume continues a run with its own config.yaml and weights; give only the run "
                             "directory (and optionally --epochs or --set to extend it)")
        extra = _flag_overrides(args) + list(args.set or [])
        trainer = Trainer(resume=args.resume, overrides=(lambda c: apply_overrides(c, extra)) if extra else None,
                          verbose=not args.quiet)
    else:
        if not args.name:
            raise ValueError("give a network NAME to train (see `cnnzoo list`) or --resume RUN_DIR")
        trainer = Trainer(build_config(args, hints), verbose=not args.quiet)
    if trainer.is_main:
        what = "starting again (no checkpoint to resume yet)," if trainer.restarted else \
            "resuming" if args.resume else "training"
        val = f"{len(trainer.val_bundle.test)} validation / " if trainer.val_bundle is not None else ""
        print(f"{what} {trainer.cfg.model.name} on {trainer.bundle.name} ({len(trainer.fit_bundle.train)} train / "
              f"{val}{len(trainer.bundle.test)} test images) on {trainer.device}"
              f"{f' x {trainer.world} processes' if trainer.world > 1 else ''}, {trainer.threads} thread"
              f"{'s' if trainer.threads > 1 else ''}; input {trainer.input_description}"
              f"{_hints_text(trainer.cfg.model.name, hints)}; run directory: {trainer.run_dir}", flush=True)
    try:
        result = trainer.fit()
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr if not trainer.is_main else sys.stdout, flush=True)
        return 128 + int(e.signum)
    except TrainingDiverged as e:
        print(f"cnnzoo train: {e}", file=sys.stderr, flush=True)
        return 1
    if trainer.is_main:
        print(f"test accuracy: {100 * result.test.top1:.2f}% (top-5 {100 * result.test.top5:.2f}%, "
              f"loss {result.test.loss:.4f}) on {result.test.count} test images; run directory: {result.run_dir}")
    return 0


def _hints_text(name: str, hints: list) -> str:
    """The card hints a new run applied and skipped (with why), for the start line ("" on --resume)."""
    applied = [h.describe() for h in hints if h.applied]
    skipped = [h.describe() for h in hints if not h.applied]
    if not hints:
        return ""
    return (f"; {name}'s card hints: " + ("; ".join(applied) if applied else "none applied") +
            ("" if not skipped else f"; {'; '.join(skipped)}"))


def _eval_bundle(args: argparse.Namespace, meta: dict, model):
    """The data to evaluate on: the run's own test split and preprocessing (see `cnnzoo.data.reload_dataset`)."""
    from ..data import load_dataset
    from ..data.record import reload_dataset
    from ..registry import get_card
    from ..train.checkpoint import IMAGENET_MEAN, IMAGENET_STD

    source = Path(args.checkpoint).expanduser()
    run_dir = source if source.is_dir() else source.parent.parent if source.parent.name == "checkpoints" else None
    if meta.get("data"):
        split_file = run_dir / "split.json" if run_dir is not None else None
        bundle = reload_dataset(meta["data"], spec=args.data, data_dir=args.data_dir, download=not args.no_download,
                                split_file=split_file, where=f"the checkpoint ({meta['model']})")
        return bundle, meta.get("input_size")
    if not meta.get("foreign"):
        raise ValueError(f"{args.checkpoint} is a cnnzoo checkpoint from before runs recorded their data split; "
                         "it cannot be evaluated on the exact split it was tested on. Retrain it with this version")
    if not args.data:
        raise ValueError(f"{args.checkpoint} is a {meta.get('weights_source')} checkpoint of {meta['model']}, which "
                         "does not say which data it was trained on: pass --data")
    bundle = load_dataset(args.data, data_dir=args.data_dir, download=not args.no_download)
    if bundle.num_classes != model.num_classes:
        raise ValueError(f"{args.data} has {bundle.num_classes} classes but the checkpoint's network has "
                         f"{model.num_classes} outputs")
    # the peer library's preprocessing: ImageNet statistics, the card's input size
    c = bundle.in_channels
    bundle.mean, bundle.std = IMAGENET_MEAN[:c], IMAGENET_STD[:c]
    return bundle, get_card(meta["model"]).input_size[-1]


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..data import make_loader
    from ..evaluate import evaluate
    from ..evaluate.protocols import check_batch_size
    from ..train.checkpoint import load_trained

    check_batch_size(args.batch_size, "--batch-size")  # every path, before any loading
    if args.plot:
        _check_output(args.plot, (".png", ".svg", ".pdf"))
    as_json = args.json or args.format == "json"
    protocols = scales = None
    if args.protocol is not None:
        from ..evaluate import parse_protocols

        protocols = parse_protocols(args.protocol)  # an unknown name fails before any loading
        if args.plot:
            raise ValueError("--plot draws the confusion matrix of the plain evaluation; it does not combine with "
                             "--protocol")
    if args.scales is not None:
        scales = _parse_scales(args.scales)
        if protocols is None or not any(p.multiscale for p in protocols):
            raise ValueError("--scales sets the test scales of the multiscale protocols: use it with --protocol "
                             "multiscale (or 10crop+multiscale, dense+10crop+multiscale)")
    _check_inference_args(args)
    device = torch.device(args.device)
    model, meta = load_trained(args.checkpoint, model_name=args.model, device=device)
    bundle, input_size = _eval_bundle(args, meta, model)
    if len(bundle.test) == 0:
        raise ValueError(f"{bundle.name} has no test images to evaluate on")
    path = _eval_path(args, meta, model, device)
    if protocols is not None:
        return _eval_protocols(args, meta, model, bundle, input_size, [p.name for p in protocols], scales, as_json,
                               path)
    path.prepare(model)
    loader = make_loader(bundle, "test", batch_size=args.batch_size, train=False, device=device,
                         input_size=input_size, num_workers=0 if bundle.kind != "folder" else 2)
    result = evaluate(model, loader, bundle.num_classes, bundle.classes, autocast=path.autocast(),
                      channels_last=path.channels_last)
    loader.close()
    if as_json:
        print(json.dumps({**result.to_dict(), "checkpoint": str(_scored_file(args.checkpoint)),
                          "precision": path.precision, "channels_last": path.channels_last},
                         indent=1))
        return 0
    print(f"{meta['model']} on {bundle.name} test split ({result.count} images); inference: {path.describe()}")
    print(f"checkpoint: {_describe_checkpoint(args.checkpoint, meta)}")
    print(f"loss {result.loss:.4f}  top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%")
    print("per-class accuracy:")
    for name, acc in result.per_class.items():
        print(f"  {name:>12}  {100 * acc:6.2f}%")
    n = len(bundle.classes)
    if n <= 20:
        width = max(5, max(len(c) for c in bundle.classes) + 1)
        print("confusion matrix (rows: true class, columns: predicted):")
        print(" " * width + "".join(f"{c[:width - 1]:>{width}}" for c in bundle.classes))
        for c, row in zip(bundle.classes, result.confusion.tolist()):
            print(f"{c[:width - 1]:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    if args.plot:
        from ..evaluate import plot_confusion

        plot_confusion(result, args.plot)
        print(f"confusion matrix plot: {args.plot}")
    return 0


def _scored_file(source: str) -> Path:
    """The weights file `load_trained` reads for ``source`` (a run directory gives its last checkpoint)."""
    from ..train.checkpoint import resolve_checkpoint

    return resolve_checkpoint(source)


def _describe_checkpoint(source: str, meta: dict) -> str:
    """Which weights were scored, in words: the file, its epoch, and what kind of checkpoint it is."""
    file = _scored_file(source)
    if meta.get("foreign"):
        return f"{file} ({meta.get('weights_source') or 'foreign'} weights)"
    kind = file.name.split("-")[0].removesuffix(".safetensors")
    what = {"last": "the run's last checkpoint: the weights it reported",
            "best": "the best epoch on the run's validation split"
            if meta.get("holdout_fraction") else "the best epoch, chosen on the test split by an older cnnzoo",
            "ema_last": "the EMA weights at the last checkpoint",
            "ema_best": "the EMA weights of the best epoch"}.get(kind, "a weights file")
    epoch = f"epoch {meta['epoch']}, " if isinstance(meta.get("epoch"), int) else ""
    return f"{file} ({epoch}{what})"


def _parse_scales(text: str) -> list[int]:
    """``--scales 224,256,288`` -> [224, 256, 288] (shorter sides in pixels)."""
    try:
        scales = [int(v) for v in text.split(",")]
    except ValueError:
        scales = []
    if not scales or any(q < 1 for q in scales):
        raise ValueError(f"--scales {text}: give the test scales as comma-separated positive integers (the shorter "
                         f"side in pixels), e.g. --scales 224,256,288")
    return scales


def _eval_path(args: argparse.Namespace, meta: dict, model, device):
    """The inference path of ``cnnzoo eval``: as asked (--precision), else the run's own evaluation path for a cnnzoo
    checkpoint (fp32 unless it trained with amp, its memory format), so that eval reports the run's numbers on
    every CPU; the machine's fast path (auto) for foreign checkpoints, which have no reported number to reproduce."""
    from ..bench import is_conv_net
    from ..evaluate.fastpath import InferencePath, inference_path

    if args.precision is not None or meta.get("foreign"):
        return inference_path(model, device, args.precision or "auto", args.channels_last)
    amp, channels_last = "off", None
    run_dir = _run_dir(args.checkpoint)
    if run_dir is not None:  # the run's config.yaml says how it evaluated (train.amp, model.channels_last)
        from ..train.config import load_yaml_file

        try:
            cfg = load_yaml_file(run_dir / "config.yaml", "config")
        except (OSError, ValueError):  # a missing or damaged config: the training defaults below
            cfg = None
        cfg = cfg if isinstance(cfg, dict) else {}
        train_cfg, model_cfg = ((cfg.get(k) if isinstance(cfg.get(k), dict) else {}) for k in ("train", "model"))
        amp = train_cfg.get("amp", "off")
        channels_last = model_cfg.get("channels_last") if isinstance(model_cfg.get("channels_last"), bool) else None
    precision = amp if amp in ("bf16", "fp16") else "fp32"
    if precision == "fp16" and device.type == "cpu":
        precision = "fp32"  # the run's fp16 autocast has no CPU form; fp32 is the closest this CPU runs
    if channels_last is None:
        channels_last = is_conv_net(model)  # the training default
    if args.channels_last is not None:
        channels_last = args.channels_last
    return InferencePath(device, precision, channels_last, "run")


def _run_dir(checkpoint: str) -> Path | None:
    """The run directory of RUN_DIR or RUN_DIR/checkpoints/FILE; None for a weights file elsewhere."""
    source = Path(checkpoint).expanduser()
    if source.is_dir():
        return source
    return source.parent.parent if source.parent.name == "checkpoints" else None


def _eval_protocols(args, meta, model, bundle, input_size, protocols, scales, as_json: bool, path) -> int:
    """``cnnzoo eval --protocol ...``: top-1/top-5 per protocol, side by side (or as JSON)."""
    from ..evaluate import evaluate_protocols
    from ..evaluate.protocols import format_table, training_sizes

    size = input_size or bundle.image_size[0]
    flip = _use_flips(args, meta)
    # the test scales follow the run's training (VGG Sec. 4.1-4.2); foreign weights: ImageNet's convention
    augment = {"random_resized_crop": True} if meta.get("foreign") else meta.get("train_augment")
    sizes = training_sizes(bundle, size, augment)
    from ..status import Steps

    with Steps(enabled=not getattr(args, "quiet", False)) as progress:  # on stderr: stdout holds the table/JSON
        results = evaluate_protocols(model, bundle, protocols, input_size=size, scales=scales, flip=flip,
                                     batch_size=args.batch_size, device=args.device,
                                     num_workers=0 if bundle.kind != "folder" else 2, precision=path.precision,
                                     channels_last=path.channels_last, augment=augment, progress=progress)
    if as_json:
        print(json.dumps({"model": meta["model"], "dataset": bundle.name, "input_size": size, "base_scale": sizes.base,
                          "scale_rule": sizes.rule, "border": sizes.pad,
                          "precision": path.precision, "channels_last": path.channels_last,
                          "multiscale": list(scales or sizes.multiscale), "flip": flip,
                          "protocols": {k: r.to_dict() for k, r in results.items()}}, indent=1))
        return 0
    count = next(iter(results.values())).count
    multi = f"; multiscale Q={','.join(str(q) for q in scales or sizes.multiscale)}" \
        if any("multiscale" in name for name in protocols) else ""
    print(f"{meta['model']} on {bundle.name} test split ({count} images); {sizes.describe()}{multi}"
          + (", with reflections" if flip else ", no reflections") + f"; inference: {path.describe()}")
    print(format_table(results))
    return 0


def _use_flips(args, meta: dict) -> bool:
    """Reflections in the multi-view protocols: as asked, else as the run trained (a model never shown mirrored
    images, e.g. digits, is not tested on them); True, as in the papers, when the checkpoint does not say."""
    if args.flip is not None:
        return args.flip
    augment = meta.get("train_augment")
    return True if augment is None else bool(augment.get("hflip", False))


def _check_output(path: str, suffixes: tuple[str, ...]) -> None:
    """Fail before any work when an output file cannot be written where asked."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"--plot {path}: the file name must end in {', '.join(suffixes)}")
    if p.is_dir():
        raise ValueError(f"--plot {path} is a directory; give a file name ending in {', '.join(suffixes)}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--plot {path}: the directory {parent} does not exist")


def _image_files(paths: list[str]) -> list[Path]:
    """The images to predict: files as given, folders expanded to the image files in them (recursively, sorted)."""
    from ..data.folder import IMAGE_EXTENSIONS

    out = []
    for text in paths:
        if not text.strip():  # "" would be read as the current folder and predict every image under it
            raise ValueError("an image path is empty; give image files or folders of images")
        p = Path(text).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise ValueError(f"folder {text} holds no image files (extensions Pillow reads, e.g. .png, .jpg)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"image {text!r} does not exist (give image files or folders of images)")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from ..evaluate.fastpath import inference_path
    from ..train.checkpoint import load_trained, preprocess_image

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    files = _image_files(args.images)
    _check_inference_args(args)
    device = torch.device(args.device)
    model, meta = load_trained(args.checkpoint, model_name=args.model, device=device)
    classes = (meta.get("data") or {}).get("classes") or meta.get("classes") or \
        [str(i) for i in range(model.num_classes)]
    k = min(args.top_k, len(classes))
    fast = inference_path(model, device, args.precision, args.channels_last)
    fast.prepare(model)
    for path in files:
        x = fast.inputs(preprocess_image(path, meta, device))
        with torch.no_grad(), fast.autocast():
            probs = model(x).float().softmax(1)[0]
        top = probs.topk(k)
        print(path)
        for p, i in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {classes[i]:>12}  {100 * p:6.2f}%")
    return 0


def _add_inference_args(p: argparse.ArgumentParser, run_default: bool = False) -> None:
    from ..bench import INFERENCE_PRECISIONS  # not cnnzoo.evaluate's: building the parser stays quick

    if run_default:  # eval: the run's own path by default, so that it reports the run's numbers
        p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=None,
                       help="default: the run's own evaluation path (fp32 unless it trained with amp), which "
                            "reproduces its reported accuracy (foreign checkpoints: auto); auto: this machine's fast "
                            "path - bf16 autocast only where the CPU has native BF16 (bf16/fp16 on CUDA), else fp32, "
                            "channels-last for conv nets; fp32: the plain path; bf16, fp16 (CUDA): that autocast")
    else:
        p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="auto",
                       help="auto (default): this machine's fast path - bf16 autocast only where the CPU has native "
                            "BF16 (bf16/fp16 on CUDA), else fp32, channels-last for conv nets; fp32: the plain path; "
                            "bf16, fp16 (CUDA): that autocast")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="force the memory format (default: channels-last for conv nets, except with --precision fp32)")


def _check_inference_args(args: argparse.Namespace) -> None:
    """A precision the device cannot run fails before any loading."""
    from ..evaluate.fastpath import inference_path

    inference_path(None, args.device, args.precision or "fp32", args.channels_last)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network on a dataset, or resume a run",
                       description="Train a registered network. Config = the dataset's default recipe, then "
                                   "--recipe, then the flags, then --set SECTION.KEY=VALUE.",
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="registered network name (see `cnnzoo list`)")
    p.add_argument("--data", help="mnist5k (built in, default), mnist, fashion-mnist, cifar10, cifar100, folder:PATH")
    p.add_argument("--recipe", metavar="FILE.yaml|paper",
                   help="a YAML recipe with sections model/data/optim/schedule/train, or 'paper' for the network's "
                        "paper recipe ('paper:NAME' for a named one; see `cnnzoo recipes`)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key (repeatable)")
    p.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE",
                   help="network option (repeatable), as in `cnnzoo info NAME`")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    g = p.add_argument_group("common settings (shortcuts for --set)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="per process")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop"))
    g.add_argument("--lr", action=FloatArg, config=True)  # finite, in range: checked by the config
    g.add_argument("--momentum", action=FloatArg, config=True)
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--weight-decay", action=FloatArg, config=True)
    g.add_argument("--schedule", choices=("none", "step", "multistep", "plateau", "cosine", "onecycle"))
    g.add_argument("--warmup-epochs", action=FloatArg, config=True)
    g.add_argument("--label-smoothing", action=FloatArg, config=True)
    g.add_argument("--amp", choices=("off", "bf16", "fp16"), help="mixed precision (fp16 uses loss scaling)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on for convolutional networks)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    g.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm under torchrun")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    g.add_argument("--seed", type=int)
    g.add_argument("--run-dir", help="default: ./runs/NAME-YYYYmmdd-HHMMSS")
    g.add_argument("--weights", metavar="PATH", help="start from a checkpoint (cnnzoo, torchvision or timm) or "
                                                     "'torchvision'")
    g.add_argument("--limit-batches", type=int, help="at most this many batches per epoch (smoke tests)")
    g.add_argument("--init", metavar="SCHEME", help="initialisation: paper (the network's own, default), normal, "
                                                    "xavier, kaiming (parameters: --set 'model.init={...}')")
    g.add_argument("--init-from", metavar="RUN_DIR", help="start from the matching layers of a trained run (VGG's "
                                                          "configuration-A transfer); reports what it copied")
    g.add_argument("--data-dir", help="where downloaded datasets live (default $CNNZOO_DATA or ~/.cache/cnnzoo)")
    g.add_argument("--no-download", action="store_true", help="never fetch datasets")
    add_threads_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run or checkpoint: loss, top-1/5, per-class accuracy, confusion",
                       epilog=EPILOG_EVAL, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("checkpoint", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    e.add_argument("--model", help="network name, for checkpoints without cnnzoo metadata (torchvision/timm files)")
    e.add_argument("--batch-size", type=int, default=500, help="network inputs per forward pass (default 500)")
    e.add_argument("--device", default="cpu", type=device_arg, help="cpu (default), cuda, cuda:1, mps")
    e.add_argument("--data-dir")
    e.add_argument("--no-download", action="store_true")
    e.add_argument("--protocol", metavar="NAME[,NAME...]",
                   help="test-time protocols to report side by side: center, 10crop, 50crop, 144crop, dense, "
                        "multiscale, or several joined with '+' (softmax outputs averaged), e.g. dense+50crop+multiscale "
                        "(VGG's Table 5)")
    e.add_argument("--scales", metavar="Q[,Q...]",
                   help="shorter sides of the multiscale protocols (default from the run's training: VGG's {Smin, "
                        "(Smin+Smax)/2, Smax} for scale jitter, else {S-32, S, S+32} scaled)")
    e.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal reflections in 10crop/50crop/144crop/dense (default: if the run trained with "
                        "flips; checkpoints that do not say: yes, as in the papers)")
    e.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON (same as --format json)")
    e.add_argument("--plot", metavar="PNG", help="also save the confusion matrix as a PNG")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (--protocol)")
    _add_inference_args(e, run_default=True)
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("predict", help="top-k classes of images, with probabilities")
    r.add_argument("checkpoint", metavar="RUN_DIR|CHECKPOINT")
    r.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of images (searched recursively)")
    r.add_argument("-k", "--top-k", type=int, default=5)
    r.add_argument("--model", help="network name, for checkpoints without cnnzoo metadata")
    r.add_argument("--device", default="cpu", type=device_arg, help="cpu (default), cuda, cuda:1, mps")
    _add_inference_args(r)
    r.set_defaults(func=cmd_predict)


__all__ = ["Path", "build_config", "register"]
