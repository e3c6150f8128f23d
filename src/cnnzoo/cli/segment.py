"""`cnnzoo segment train|eval|predict|sample`: semantic segmentation runs (parse, call `cnnzoo.segmentation.train`,
print)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .common import FloatArg, check_plot_path, device_arg, parse_options

EPILOG_TRAIN = """\
examples:
  cnnzoo segment train unet_padded                                   # digits-segmentation, the network's recipe
  cnnzoo segment train unet_padded -o base_channels=8 --epochs 4 --run-dir runs/unet
  cnnzoo segment train fcn_resnet50 --data voc:~/VOCdevkit/VOC2012 --input-size 320 --holdout-fraction 0.1
  cnnzoo segment train unet_padded --data-param num_train=200 --limit-batches 5
  cnnzoo segment train --resume runs/unet --epochs 8                 # continue (bit-identical on the CPU)
  cnnzoo segment eval runs/unet --format json
  cnnzoo segment sample --index 3 && cnnzoo segment predict runs/unet digits_test3.png --output overlay.png
defaults: the network's digits recipe (`cnnzoo.segmentation.get_digits_recipe`: options, optimizer, lr, epochs,
batch size); flags override it. The run directory records the data, its split and statistics, the input size and
the network's options: eval and predict need no flags."""


def _non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 0")
    return n


def _pairs(items: list[str] | None, flag: str) -> dict:
    """['num_train=200'] -> {'num_train': 200} (values read as YAML, as -o reads them)."""
    from ..train.config import load_yaml

    out = {}
    for pair in items or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {pair!r} is not KEY=VALUE (e.g. {flag} num_train=200)")
        out[key.strip()] = load_yaml(value, f"{flag} {pair!r}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from ..segmentation.train import SegTrainer, default_seg_config
    from ..train.engine import TrainingDiverged, TrainingInterrupted

    for flag, value in (("--data", args.data), ("--run-dir", args.run_dir)):
        if value is not None and not value.strip():
            valid = "digits-segmentation, voc:PATH or pairs:PATH" if flag == "--data" else \
                "a directory (default ./runs/NAME-YYYYmmdd-HHMMSS)"
            raise ValueError(f"{flag} is empty; give {valid}, or leave {flag} out for the default")
    command = ["cnnzoo", *sys.argv[1:]]
    if args.resume:
        given = [f for f, v in (("NAME", args.name), ("--data", args.data), ("--data-param", args.data_params),
                                ("-o", args.options), ("--run-dir", args.run_dir), ("--lr", args.lr),
                                ("--batch-size", args.batch_size), ("--optimizer", args.optimizer),
                                ("--seed", args.seed), ("--input-size", args.input_size),
                                ("--holdout-fraction", args.holdout_fraction), ("--limit-batches", args.limit_batches),
                                ("--momentum", args.momentum), ("--weight-decay", args.weight_decay),
                                ("--schedule", args.schedule), ("--class-weighting", args.class_weighting),
                                ("--device", args.device)) if v is not None]
        if given:
            raise ValueError(f"--resume continues a run with the settings it records; give only the run directory "
                             f"(and --epochs to lengthen it, --threads), not {', '.join(given)}")
        trainer = SegTrainer(resume=args.resume, epochs=args.epochs, threads=args.threads, command=command,
                             verbose=not args.quiet)
    else:
        if not args.name:
            raise ValueError("give a segmentation network NAME to train (see `cnnzoo segment list`) or --resume "
                             "RUN_DIR")
        cfg = default_seg_config(
            args.name, args.data or "digits-segmentation", options=parse_options(args.options),
            data_params=_pairs(args.data_params, "--data-param"), epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, optimizer=args.optimizer, seed=args.seed, input_size=args.input_size,
            holdout_fraction=args.holdout_fraction, limit_batches=args.limit_batches, momentum=args.momentum,
            weight_decay=args.weight_decay, schedule=args.schedule, class_weighting=args.class_weighting,
            device=args.device)
        trainer = SegTrainer(cfg, run_dir=args.run_dir, threads=args.threads, command=command, verbose=not args.quiet)
    t, cfg = trainer, trainer.cfg
    what = "starting again (no checkpoint to resume yet)," if t.restarted else "resuming" if t.resumed else "training"
    crop = f", trained on the centre {t.output_size}x{t.output_size} of each mask (valid convolutions)" \
        if t.output_size < t.input_size else ""
    val = f"{len(t.val[0])} validation / " if t.val is not None else ""
    print(f"{what} {cfg.model} on {cfg.data} ({len(t.images)} train / {val}{len(t.test_images)} test images, "
          f"{len(t.classes)} classes) for {cfg.epochs} epoch{'s' if cfg.epochs > 1 else ''}, {cfg.optimizer} lr "
          f"{cfg.lr:g}, batch {cfg.batch_size}"
          f"{'' if cfg.class_weighting == 'none' else ', ' + cfg.class_weighting.replace('_', '-') + ' class weights'}; "
          f"input {t.input_size}x{t.input_size}{crop}; {t.threads} thread{'s' if t.threads > 1 else ''}; "
          f"run directory: {t.run_dir}", flush=True)
    try:
        result = t.fit()
    except TrainingInterrupted as e:
        print(str(e), flush=True)
        return 128 + int(e.signum)
    except TrainingDiverged as e:
        print(f"cnnzoo segment: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"test: pixel accuracy {_pct(result['pixel_accuracy'])}, mean IU {_pct(result['mean_iu'])} on "
          f"{result['num_images']} images (the last checkpoint, epoch {result['epoch']}); run directory: "
          f"{result['run_dir']}")
    return 0


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..segmentation.train import evaluate_run
    from ..texttable import print_fitted

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    r = evaluate_run(args.run_dir, args.checkpoint, device=args.device, batch_size=args.batch_size)
    if args.format == "json":
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['model']} on {r['dataset']} test split ({r['num_images']} images)" +
          (f"; scored on the centre {r['output_size']}x{r['output_size']} of each mask" if r.get("output_size") and
           r["output_size"] < r["input_size"] else ""))
    what = "the run's last checkpoint" if args.checkpoint == "last" else "the best epoch on the validation holdout"
    print(f"checkpoint: {r['checkpoint']} (epoch {r['epoch']}, {what})")
    console = Console(width=None if sys.stdout.isatty() else 120)
    print_fitted(console, None, ["pixel acc", "mean acc", "mean IU", "f.w. IU"],
                 [[_pct(r["pixel_accuracy"]), _pct(r["mean_accuracy"]), _pct(r["mean_iu"]), _pct(r["fw_iu"])]],
                 keep=0, justify=["right"] * 4)
    rows = [[name, _pct(r["per_class_iou"][name]), _pct(r["per_class_accuracy"][name]),
             str(sum(r["confusion"][k]))] for k, name in enumerate(r["classes"])]
    print_fitted(console, None, ["class", "IoU", "accuracy", "pixels"], rows,
                 justify=["left", "right", "right", "right"])
    if any(v is None for v in r["per_class_iou"].values()):
        print("'-': the class has no pixel in the test masks and was never predicted (left out of the means, FCN "
              "Sec. 5)")
    return 0


def _outputs(args: argparse.Namespace, files: list[Path]) -> list[Path]:
    """Where each picture goes, checked before any work: never over an existing file without --force."""
    if args.output and len(files) > 1:
        raise ValueError(f"--output names one file but {len(files)} images were given; drop --output (each image "
                         f"then goes to NAME_segmentation.png in the current directory)")
    outs = [check_plot_path(args.output or f"{f.stem}_segmentation.png", "--output") for f in files]
    seen: dict[Path, Path] = {}
    for f, out in zip(files, outs):
        if out in seen:
            raise ValueError(f"{seen[out]} and {f} would both be drawn to {out}; predict them in separate commands "
                             f"with --output FILE.png")
        seen[out] = f
        if out.exists() and not args.force:
            raise ValueError(f"{out} exists; it is left alone: give --force to replace it, or another --output")
    return outs


def cmd_predict(args: argparse.Namespace) -> int:
    from ..segmentation.data import read_image
    from ..segmentation.draw import save_overlay
    from ..segmentation.train import load_run, predict_image
    from .train import _image_files

    files = _image_files(args.images)
    outputs = _outputs(args, files)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    classes = run.meta["classes"]
    channels = int(run.info["data"]["in_channels"])
    images = [read_image(f, channels) for f in files]  # every image read before anything is written
    for f, img, out in zip(files, images, outputs):
        pred, offset = predict_image(run, img, args.device)
        counts = {classes[k]: int((pred == k).sum()) for k in pred.unique().tolist()}
        drawn = save_overlay(out, img, pred, classes, offset=offset, alpha=args.alpha,
                             title=f"{run.meta['model']} ({Path(args.run_dir).name}, epoch {run.meta.get('epoch')}): "
                                   f"{f.name}")
        total = pred.numel()
        print(f"{f}: " + ", ".join(f"{c} {100 * n / total:.1f}%" for c, n in sorted(counts.items(),
                                                                                        key=lambda kv: -kv[1])))
        print(f"  drawn to {out} (legend: {', '.join(drawn) or 'background only'})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """A digits-segmentation image as a PNG (an image for `segment predict`), its mask beside it if asked."""
    import io

    from PIL import Image

    from ..fileio import atomic_write
    from ..segmentation.data import digits_segmentation

    out = check_plot_path(args.out or f"digits_{args.split}{args.index}.png", "--out", suffixes=(".png",))
    mask_out = out.with_name(out.stem + "_mask.png") if args.mask else None
    for p in (out, mask_out):
        if p is not None and p.exists() and not args.force:
            raise ValueError(f"{p} exists; it is left alone: give --force to replace it, or another --out")
    params = {"num_train": 1, "num_test": 1} | ({} if args.data_seed is None else {"seed": args.data_seed})
    count = "num_test" if args.split == "test" else "num_train"
    params[count] = args.index + 1
    train, test = digits_segmentation(**params)
    ds = test if args.split == "test" else train
    img, mask = ds[args.index]
    for p, arr in ((out, img[0].numpy()), (mask_out, mask.to(__import__("torch").uint8).numpy())):
        if p is not None:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="png")
            atomic_write(p, buf.getvalue())
    digits = sorted({int(v) - 1 for v in mask.unique().tolist() if 0 < v < 255})
    print(f"wrote {out}: digits-segmentation {args.split} image {args.index} (data seed {params.get('seed', 0)}), "
          f"digits {', '.join(map(str, digits))}"
          + (f"; mask (labels 0-10, 255 ignored) in {mask_out}" if mask_out else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..segmentation import get_digits_recipe, get_segmenter_card, list_segmenters

    for name in list_segmenters():
        card, recipe = get_segmenter_card(name), get_digits_recipe(name)
        opts = ", ".join(f"{k}={v}" for k, v in recipe["options"].items()) or "paper options"
        print(f"{name:<24} {card.description}  [digits recipe: {opts}; {recipe['optimizer']} lr {recipe['lr']:g}, "
              f"{recipe['epochs']} epochs, batch {recipe['batch_size']}"
              + ("" if recipe.get("class_weighting", "none") == "none" else
                 f", {recipe['class_weighting'].replace('_', '-')} class weights") + "]")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .bench import _positive_int
    from .train import add_threads_arg

    s = sub.add_parser("segment", help="semantic segmentation: train, eval, predict, sample, list",
                       description="Semantic segmentation networks (FCN, SegNet, DeconvNet, U-Net, DeepLab, ...) on "
                                   "digits-segmentation (built in), Pascal VOC 2012 or folders of image/mask pairs; "
                                   "the FCN paper's metrics.")
    ssub = s.add_subparsers(dest="segment_command", metavar="ACTION", required=True)

    t = ssub.add_parser("train", help="train a segmentation network (or resume a run) and score it on the test split",
                        epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("name", nargs="?", help="segmentation network (see `cnnzoo segment list`)")
    t.add_argument("--data", help="digits-segmentation (built in, default), voc:PATH (VOC 2012) or pairs:PATH "
                                  "(PATH/train and PATH/val, each images/ + masks/)")
    t.add_argument("--data-param", dest="data_params", action="append", metavar="KEY=VALUE",
                   help="dataset setting (repeatable): digits-segmentation's seed, num_train, num_test, canvas, ...; "
                        "voc's train_split, test_split, in_channels; pairs' in_channels, classes")
    t.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE",
                   help="network option (repeatable), over the digits recipe's")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--lr", action=FloatArg, low=0, low_open=True)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop"))
    t.add_argument("--momentum", action=FloatArg, low=0, help="SGD/RMSprop momentum (default 0.9)")
    t.add_argument("--weight-decay", action=FloatArg, low=0)
    t.add_argument("--schedule", choices=("none", "cosine", "poly"),
                   help="learning-rate schedule: poly = DeepLab's (1 - t)^0.9 (default: the recipe's, poly)")
    t.add_argument("--class-weighting", choices=("none", "median_frequency"),
                   help="weigh the cross-entropy by class: median_frequency = SegNet's median frequency balancing "
                        "(w_c = median freq / freq_c over the training masks); default: the recipe's (mostly none)")
    t.add_argument("--seed", type=_non_negative_int, help="seed of the weights, the batch order and the holdout "
                                                          "(default 0; the data's own seed: --data-param seed=N)")
    t.add_argument("--input-size", type=_positive_int, metavar="S",
                   help="resize images (bilinear) and masks (nearest) to S x S (needed where they differ in size)")
    t.add_argument("--holdout-fraction", action=FloatArg, low=0, high=1, high_open=True,
                   help="carve this fraction of the training images as a validation split and keep the checkpoint "
                        "with the best validation mean IU as 'best' (default 0: only 'last')")
    t.add_argument("--limit-batches", type=_positive_int, help="at most this many batches per epoch (smoke tests)")
    t.add_argument("--device", type=device_arg, help="cpu (default), cuda, cuda:1, mps")
    t.add_argument("--run-dir", "--out", dest="run_dir", help="default: ./runs/NAME-YYYYmmdd-HHMMSS")
    add_threads_arg(t)
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    e = ssub.add_parser("eval", help="the FCN paper's four metrics and per-class IoU of a run on its test split")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="last (default: the weights the run reported) or best (runs with --holdout-fraction)")
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.add_argument("--batch-size", type=_positive_int, default=50)
    e.add_argument("--device", default="cpu", type=device_arg)
    e.set_defaults(func=cmd_eval)

    p = ssub.add_parser("predict", help="segment images and draw the classes over them, with a legend")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--output", metavar="FILE.png", help="the picture (one image only; default NAME_segmentation.png "
                                                        "in the current directory); never replaces a file without "
                                                        "--force")
    p.add_argument("--force", action="store_true", help="replace an existing output picture")
    p.add_argument("--alpha", action=FloatArg, low=0, high=1, help="opacity of the class colours (default 0.55)")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("--device", default="cpu", type=device_arg)
    p.set_defaults(func=cmd_predict, alpha=0.55)

    m = ssub.add_parser("sample", help="write a digits-segmentation image (and its mask) to a PNG")
    m.add_argument("--split", choices=("test", "train"), default="test")
    m.add_argument("--index", type=_non_negative_int, default=0, help="which image, 0-based (default 0)")
    m.add_argument("--data-seed", type=_non_negative_int, help="seed of the generated canvases (default 0)")
    m.add_argument("--out", metavar="FILE.png", help="default digits_SPLITN.png here")
    m.add_argument("--mask", action="store_true", help="also write the mask as FILE_mask.png")
    m.add_argument("--force", action="store_true", help="replace existing files")
    m.set_defaults(func=cmd_sample)

    ls = ssub.add_parser("list", help="the segmentation networks and their digits recipes")
    ls.set_defaults(func=cmd_list)
    for q in (t, e, p, m, ls):
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


__all__ = ["register"]
