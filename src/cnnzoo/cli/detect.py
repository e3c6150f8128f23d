"""`cnnzoo detect train|eval|predict|sample|list`: object detection runs, R-CNN's pipeline (`cnnzoo.detection.rcnn`)
and the one-stage detectors' (`cnnzoo.detection.train`: SSD, RetinaNet, YOLO v1, ...): parse, dispatch on the
method name or the run's kind, call, print."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .common import FloatArg, check_plot_path, device_arg, parse_options

METHODS = ("rcnn",)
DRAWN = 30  # detections drawn per image at most (the highest-scoring)

EPILOG_TRAIN = """\
examples:
  cnnzoo detect train rcnn --data digits-detection                # LeNet-5, pre-trained on mnist5k, a few minutes
  cnnzoo detect train rcnn --data digits-detection --set svm.C=0.01 --set finetune.iterations=500
  cnnzoo detect train rcnn --data voc:~/VOCdevkit/VOC2007 --weights alexnet-owt-7be5be79.pth
  cnnzoo detect train ssd300_vgg16 --run-dir runs/ssd               # a one-stage detector: its digits recipe
  cnnzoo detect train fast_yolo_v1 --input-size 224 --jitter 0.2 --epochs 10
  cnnzoo detect train --resume runs/ssd --epochs 30                 # continue (bit-identical on the CPU)
  cnnzoo detect eval runs/ssd --format json && cnnzoo detect predict runs/ssd digits_test0.png --output ssd.png
R-CNN: config sections data, backbone, proposals, finetune, svm, bbox, test (see cnnzoo.detection.config); selective
search needs the extra: pip install 'cnnzoo[detection]'. One-stage detectors (`cnnzoo detect list`): the detector's
digits recipe (options, optimizer, lr, epochs, batch size, input size), flags override it; the run directory records
the data, statistics, input size and options, so eval and predict need no flags."""

#: flags of R-CNN's pipeline only, and of the one-stage detectors' only (argparse dest, flag)
RCNN_ONLY = (("backbone", "--backbone"), ("weights", "--weights"), ("proposals", "--proposals"),
             ("ss_mode", "--ss-mode"), ("iterations", "--iterations"), ("set", "--set"))
ONESTAGE_ONLY = (("resume", "--resume"), ("epochs", "--epochs"), ("lr", "--lr"), ("batch_size", "--batch-size"),
                 ("optimizer", "--optimizer"), ("momentum", "--momentum"), ("weight_decay", "--weight-decay"),
                 ("schedule", "--schedule"), ("limit_batches", "--limit-batches"), ("hflip", "--hflip"),
                 ("jitter", "--jitter"), ("mosaic", "--mosaic"), ("eval_every", "--eval-every"),
                 ("data_params", "--data-param"), ("threads", "--threads"))


def _given(args: argparse.Namespace, table) -> list[str]:
    return [flag for dest, flag in table if getattr(args, dest, None) not in (None, False, [])]


def _method_kind(name: str) -> str:
    """"rcnn" or "onestage"; an unknown name is one line with the valid names and the close ones."""
    from ..detection.registry import list_detectors
    from ..registry import _suggest

    if name in METHODS:
        return "rcnn"
    detectors = list_detectors()
    if name in detectors:
        return "onestage"
    close = _suggest(name, [*METHODS, *detectors])
    raise ValueError(f"unknown detection method {name!r}; valid: {', '.join([*METHODS, *detectors])}"
                     + (f" (did you mean: {', '.join(close)}?)" if close else ""))


def _extra_errors(fn):
    """A missing optional dependency is the user's to fix: one line naming the extra."""

    def wrapped(args):
        from ..detection.proposals import MissingExtraError
        from .main import CLIError

        try:
            return fn(args)
        except MissingExtraError as e:
            raise CLIError(str(e)) from None

    return wrapped


@_extra_errors
def cmd_train(args: argparse.Namespace) -> int:
    for flag, value in (("--data", args.data), ("--run-dir", args.run_dir)):
        if value is not None and not value.strip():
            valid = "digits-detection, voc:PATH or coco:PATH" if flag == "--data" else \
                "a directory (default ./runs/NAME-YYYYmmdd-HHMMSS)"
            raise ValueError(f"{flag} is empty; give {valid}, or leave {flag} out for the default")
    if args.resume:
        return _train_onestage(args)
    if not args.method:
        raise ValueError("give a detection method NAME to train (rcnn, or a one-stage detector: see `cnnzoo detect "
                         "list`) or --resume RUN_DIR")
    if _method_kind(args.method) == "onestage":
        return _train_onestage(args)
    wrong = _given(args, ONESTAGE_ONLY)
    if wrong:
        raise ValueError(f"{', '.join(wrong)} appl{'ies' if len(wrong) == 1 else 'y'} to the one-stage detectors "
                         f"only, not to rcnn (its settings: --iterations, --set SECTION.KEY=VALUE)")
    return _train_rcnn(args)


def _train_onestage(args: argparse.Namespace) -> int:
    from ..detection.train import DetTrainer, default_det_config
    from ..train.engine import TrainingDiverged, TrainingInterrupted
    from .segment import _pairs

    wrong = _given(args, RCNN_ONLY)
    if wrong:
        raise ValueError(f"{', '.join(wrong)} appl{'ies' if len(wrong) == 1 else 'y'} to rcnn only; a one-stage "
                         f"detector takes -o KEY=VALUE (its options), --input-size, --lr, --epochs, ...")
    command = ["cnnzoo", *sys.argv[1:]]
    if args.resume:
        given = [f for f, v in (("NAME", args.method), ("--data", args.data), ("--data-param", args.data_params),
                                ("--data-seed", args.data_seed), ("-o", args.options), ("--run-dir", args.run_dir),
                                ("--lr", args.lr), ("--batch-size", args.batch_size), ("--optimizer", args.optimizer),
                                ("--seed", args.seed), ("--input-size", args.input_size),
                                ("--limit-batches", args.limit_batches), ("--momentum", args.momentum),
                                ("--weight-decay", args.weight_decay), ("--schedule", args.schedule),
                                ("--hflip", args.hflip), ("--jitter", args.jitter), ("--mosaic", args.mosaic),
                                ("--eval-every", args.eval_every), ("--device", args.device)) if v is not None]
        if given:
            raise ValueError(f"--resume continues a run with the settings it records; give only the run directory "
                             f"(and --epochs to lengthen it, --threads), not {', '.join(given)}")
        trainer = DetTrainer(resume=args.resume, epochs=args.epochs, threads=args.threads, command=command,
                             verbose=not args.quiet)
    else:
        data_params = _pairs(args.data_params, "--data-param")
        if args.data_seed is not None:
            data_params["seed"] = args.data_seed
        cfg = default_det_config(
            args.method, args.data or "digits-detection", options=parse_options(args.options),
            data_params=data_params, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            optimizer=args.optimizer, seed=args.seed, input_size=args.input_size, limit_batches=args.limit_batches,
            momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule, hflip=args.hflip,
            jitter=args.jitter, mosaic=args.mosaic, eval_every=args.eval_every, device=args.device)
        trainer = DetTrainer(cfg, run_dir=args.run_dir, threads=args.threads, command=command, verbose=not args.quiet)
    t, cfg = trainer, trainer.cfg
    what = "starting again (no checkpoint to resume yet)," if t.restarted else "resuming" if t.resumed else "training"
    aug = [a for a, on in (("mosaic", cfg.mosaic), ("horizontal flips", cfg.hflip), (f"jitter {cfg.jitter:g}",
                                                                                     cfg.jitter)) if on]
    print(f"{what} {cfg.model} on {cfg.data} ({len(t.images)} train / {len(t.test_images)} test images, "
          f"{len(t.classes)} classes) for {cfg.epochs} epoch{'s' if cfg.epochs > 1 else ''}, {cfg.optimizer} lr "
          f"{cfg.lr:g}, batch {cfg.batch_size}, schedule {cfg.schedule}; input {t.input_size}x{t.input_size}"
          f"{'; ' + ', '.join(aug) if aug else ''}; {t.threads} thread{'s' if t.threads > 1 else ''}; "
          f"run directory: {t.run_dir}", flush=True)
    try:
        result = t.fit()
    except TrainingInterrupted as e:
        print(str(e), flush=True)
        return 128 + int(e.signum)
    except TrainingDiverged as e:
        print(f"cnnzoo detect: {e}", file=sys.stderr, flush=True)
        return 1
    print(_table(result))
    print(f"test: mAP@0.5 {_pct(result['mAP'])} (VOC2007 11-point: {_pct(result['mAP_11point'])})"
          f"{_coco_text(result)} on {result['num_images']} images (the last checkpoint, epoch {result['epoch']}); "
          f"run directory: {result['run_dir']}")
    return 0


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _coco_text(r: dict) -> str:
    if r.get("coco"):
        return f", COCO AP@[.5:.95] {_pct(r['coco']['AP'])}"
    return ""


def _train_rcnn(args: argparse.Namespace) -> int:
    from ..detection.config import apply_sets, preset_config, set_value
    from ..detection.rcnn import train_rcnn

    cfg = preset_config(args.data or "digits-detection")
    flags = [("backbone.name", args.backbone), ("backbone.input_size", args.input_size),
             ("backbone.weights", args.weights), ("proposals.method", args.proposals),
             ("proposals.mode", args.ss_mode), ("finetune.iterations", args.iterations), ("seed", args.seed),
             ("device", args.device)]
    for key, value in flags:
        if value is not None:
            set_value(cfg, key, value)
    if args.weights:
        set_value(cfg, "backbone.pretrain", None)
    if args.options:
        set_value(cfg, "backbone.options", parse_options(args.options))
    if args.data_seed is not None:
        cfg.data.params = {**cfg.data.params, "seed": args.data_seed}
    apply_sets(cfg, args.set)
    result = train_rcnn(cfg, args.run_dir, command=["cnnzoo", *sys.argv[1:]], verbose=not args.quiet)
    print(_table(result))
    t = result["timings"]
    print(f"mAP {100 * result['mAP']:.1f}% (VOC2007 11-point: {100 * result['mAP_11point']:.1f}%) on "
          f"{sum(c['num_gt'] for c in result['classes'].values())} test objects; {t['total_s']:.0f} s in all; run "
          f"directory: {result['run_dir']}")
    return 0


def _table(metrics: dict) -> str:
    def num(v) -> str:
        return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"

    rows = [f"{'class':>12} {'AP':>7} {'AP 11pt':>8} {'objects':>8}"]
    for name, c in metrics["classes"].items():
        rows.append(f"{name:>12} {num(c['ap']):>7} {num(c['ap_11point']):>8} {c['num_gt']:>8}")
    rows.append(f"{'mAP':>12} {num(metrics['mAP']):>7} {num(metrics['mAP_11point']):>8}")
    return "\n".join(rows)


def _is_onestage_run(run_dir: str) -> bool:
    from ..detection.train import is_detection_run

    return is_detection_run(run_dir)


@_extra_errors
def cmd_eval(args: argparse.Namespace) -> int:
    from ..detection.draw import default_threshold, save_detections
    from ..detection.rcnn import evaluate_run

    plot = check_plot_path(args.plot) if args.plot else None
    if args.plot_images < 1:
        raise ValueError(f"--plot-images must be at least 1, got {args.plot_images}")
    if _is_onestage_run(args.run_dir):
        return _eval_onestage(args, plot)
    if args.score_thresh is not None:
        raise ValueError("--score-thresh applies to one-stage detection runs; an R-CNN run scores with --scorer")
    if args.nms is not None and not 0.0 <= args.nms <= 1.0:
        raise ValueError(f"--nms must be an IoU in [0, 1], got {args.nms}")
    from ..status import Steps

    with Steps(enabled=not args.quiet) as progress:
        result, detector, test, dets = evaluate_run(args.run_dir, scorer=args.scorer,
                                                    bbox_reg=False if args.no_bbox_reg else None, nms_iou=args.nms,
                                                    device=args.device, progress=progress)
    scorer = args.scorer or detector.test["scorer"]
    metrics = result.to_dict() | {"scorer": scorer, "bbox_reg": not args.no_bbox_reg and detector.box is not None}
    if args.format == "json":
        print(json.dumps(metrics, indent=1))
    else:
        print(f"{args.run_dir}: {len(test)} test images, scorer {scorer}, box regression "
              f"{'on' if metrics['bbox_reg'] else 'off'}, IoU {result.iou_threshold}")
        print(_table(metrics))
    if plot:
        k = min(args.plot_images, len(test))
        items = [{"image": test.image(i), "boxes": dets[i][0], "scores": dets[i][1], "labels": dets[i][2],
                  "gt_boxes": test.boxes[i], "name": test.ids[i]} for i in range(k)]
        save_detections(plot, items, detector.classes, threshold=default_threshold(scorer),
                        title=f"R-CNN ({detector.backbone['name']}): detections scoring above "
                              f"{default_threshold(scorer):g}; ground truth dashed")
        print(f"detections drawn to {plot}")
    return 0


def _eval_onestage(args: argparse.Namespace, plot: Path | None) -> int:
    from ..detection.draw import save_detections
    from ..detection.train import evaluate_det_run

    wrong = [f for f, v in (("--scorer", args.scorer), ("--no-bbox-reg", args.no_bbox_reg)) if v]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} appl{'ies' if len(wrong) == 1 else 'y'} to R-CNN runs only; "
                         f"{args.run_dir} is a one-stage detection run (its settings: --score-thresh, --nms)")
    r = evaluate_det_run(args.run_dir, device=args.device, score_thresh=args.score_thresh, nms_thresh=args.nms,
                         keep_detections=plot is not None)
    dets = r.pop("detections", None)
    if args.format == "json":
        print(json.dumps(r, indent=1))
    else:
        d = r["detect"]
        print(f"{r['model']} on {r['dataset']} test split ({r['num_images']} images, input {r['input_size']}x"
              f"{r['input_size']}); checkpoint {r['checkpoint']} (epoch {r['epoch']})")
        print(f"detections: score above {d.get('score_thresh')}, NMS IoU {d.get('nms_thresh')}, at most "
              f"{d.get('max_detections')} per image; VOC AP at IoU {r['iou_threshold']} (AP: all-point, the "
              f"default; AP 11pt: VOC2007)")
        print(_table(r))
        if r.get("coco"):
            c = r["coco"]
            print(f"COCO (pycocotools): AP@[.5:.95] {_pct(c['AP'])}, AP50 {_pct(c['AP50'])}, AP75 {_pct(c['AP75'])}")
        elif r.get("coco_note"):
            print(f"COCO AP left out: {r['coco_note']}")
    if plot:
        from ..detection.data import load_detection_data
        from ..detection.train import draw_threshold, load_det_run

        info = load_det_run(args.run_dir).info
        _, test = load_detection_data(info["data"]["spec"], info["data"].get("params") or {})
        k = min(args.plot_images, len(test))
        threshold = draw_threshold(r["model"])
        items = [{"image": test.image(i), "boxes": dets[i]["boxes"], "scores": dets[i]["scores"],
                  "labels": dets[i]["labels"] - 1, "gt_boxes": test.boxes[i], "name": test.ids[i]} for i in range(k)]
        save_detections(plot, items, info["data"]["classes"], threshold=threshold,
                        title=f"{r['model']}: detections scoring above {threshold:g}; ground truth dashed")
        print(f"detections drawn to {plot}")
    return 0


@_extra_errors
def cmd_predict(args: argparse.Namespace) -> int:
    from ..detection.data import read_image
    from ..detection.draw import default_threshold, save_detections
    from ..detection.rcnn import load_detector
    from .train import _image_files

    files = _image_files(args.images)
    if args.output and len(files) > 1:
        raise ValueError(f"--output names one file but {len(files)} images were given; drop --output (each image "
                         f"then goes to NAME_detections.png in the current directory)")
    outputs = [check_plot_path(args.output or f"{f.stem}_detections.png", "--output") for f in files]
    if not args.output:
        _check_default_outputs(files, outputs)
    if _is_onestage_run(args.run_dir):
        return _predict_onestage(args, files, outputs)
    detector, _ = load_detector(args.run_dir, args.device)
    scorer = args.scorer or detector.test["scorer"]
    threshold = default_threshold(scorer) if args.threshold is None else args.threshold
    for f, out in zip(files, outputs):
        img = read_image(f, detector.backbone["in_channels"])
        boxes, scores, labels = detector.detect(img, scorer=scorer)
        keep = scores > threshold
        print(f"{f}: {int(keep.sum())} detections scoring above {threshold:g}")
        for b, s, c in zip(boxes[keep].tolist(), scores[keep].tolist(), labels[keep].tolist()):
            print(f"  {detector.classes[c]:>12}  {s:7.3f}  ({b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f})")
        save_detections(out, [{"image": img, "boxes": boxes, "scores": scores, "labels": labels, "name": f.name}],
                        detector.classes, threshold=threshold, cols=1, max_drawn=DRAWN)
        print(f"  drawn to {out}{f' (the {DRAWN} highest-scoring)' if int(keep.sum()) > DRAWN else ''}")
    return 0


def _predict_onestage(args: argparse.Namespace, files: list[Path], outputs: list[Path]) -> int:
    from ..detection.data import read_image
    from ..detection.draw import save_detections
    from ..detection.train import draw_threshold, load_det_run, predict_detections

    if args.scorer:
        raise ValueError(f"--scorer applies to R-CNN runs only; {args.run_dir} is a one-stage detection run")
    run = load_det_run(args.run_dir, args.device)
    classes, name = run.meta["classes"], run.meta["model"]
    threshold = draw_threshold(name) if args.threshold is None else args.threshold
    images = [read_image(f, int(run.meta["in_channels"])) for f in files]  # every image read before any is drawn
    for f, img, out in zip(files, images, outputs):
        d = predict_detections(run, img, args.device)
        keep = d["scores"] > threshold
        print(f"{f}: {int(keep.sum())} detections scoring above {threshold:g}")
        rows = list(zip(d["boxes"][keep].tolist(), d["scores"][keep].tolist(), d["labels"][keep].tolist()))
        for b, s, c in rows[:DRAWN]:  # by decreasing score
            print(f"  {classes[c - 1]:>12}  {s:7.3f}  ({b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f})")
        if len(rows) > DRAWN:
            print(f"  ... and {len(rows) - DRAWN} more")
        save_detections(out, [{"image": img, "boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1,
                               "name": f.name}], classes, threshold=threshold, cols=1, max_drawn=DRAWN,
                        title=f"{name} ({Path(args.run_dir).name}, epoch {run.meta.get('epoch')})")
        print(f"  drawn to {out}{f' (the {DRAWN} highest-scoring)' if int(keep.sum()) > DRAWN else ''}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """R-CNN and the registered one-stage detectors, each with its card's one-liner and digits recipe."""
    from ..detection.registry import _REGISTRY, get_detector_card, list_detectors

    print(f"{'rcnn':<24} R-CNN (Girshick et al. 2014): region proposals, a zoo network's features, per-class SVMs "
          f"[digits preset: lenet5 pre-trained on mnist5k; `cnnzoo detect train rcnn`]")
    for name in list_detectors():
        card, recipe = get_detector_card(name), _REGISTRY.entry(name).digits_recipe or {}
        opts = ", ".join(f"{k}={v}" for k, v in (recipe.get("options") or {}).items()) or "paper options"
        how = (f"[digits recipe: {opts}; {recipe.get('optimizer', 'adam')} lr {recipe.get('lr', 1e-3):g}, "
               f"{recipe.get('epochs', 20)} epochs, batch {recipe.get('batch_size', 16)}, input "
               f"{recipe.get('input_size', 'as the data')}]") if recipe else "[no digits recipe]"
        print(f"{name:<24} {card.description}  {how}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Write a built-in digits-detection image as a PNG (the pixels the detector trains or is scored on), and
    print its ground-truth boxes: an image to give `cnnzoo detect predict`."""
    import io

    from PIL import Image, PngImagePlugin

    from ..detection.data import digits_detection_image
    from ..detection.draw import SOFTWARE, drawn_by_cnnzoo
    from ..fileio import atomic_write

    out = check_plot_path(args.out or f"digits_{args.split}{args.index}.png", "--out", suffixes=(".png",))
    if out.exists() and not drawn_by_cnnzoo(out):
        raise ValueError(f"{out} exists and is not a picture cnnzoo wrote; it is left alone: move it away or choose "
                         f"another --out")
    params = {} if args.data_seed is None else {"seed": args.data_seed}
    img, boxes, labels = digits_detection_image(args.split, args.index, **params)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"{SOFTWARE} sample")
    info.add_text("Comment", f"digits-detection {args.split} image {args.index} (seed "
                             f"{params.get('seed', 0)}); boxes x1,y1,x2,y2 with labels: "
                             + "; ".join(f"{c}:{','.join(f'{v:g}' for v in b)}"
                                         for b, c in zip(boxes.tolist(), labels.tolist())))
    buf = io.BytesIO()
    Image.fromarray(img[0].numpy()).save(buf, format="png", pnginfo=info)
    atomic_write(out, buf.getvalue())
    h, w = img.shape[1:]
    print(f"wrote {out}: digits-detection {args.split} image {args.index} ({w}x{h}, data seed "
          f"{params.get('seed', 0)}), {len(labels)} digits:")
    for b, c in zip(boxes.tolist(), labels.tolist()):
        print(f"  {c}  ({b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f})")
    return 0


def _check_default_outputs(files: list[Path], outputs: list[Path]) -> None:
    """The NAME_detections.png pictures (no --output) never replace a file cnnzoo did not draw, nor each other."""
    from ..detection.draw import drawn_by_cnnzoo

    seen: dict[Path, Path] = {}
    for f, out in zip(files, outputs):
        if out in seen:
            raise ValueError(f"{seen[out]} and {f} would both be drawn to {out}; predict them in separate commands "
                             f"with --output FILE.png")
        seen[out] = f
        if out.exists() and not drawn_by_cnnzoo(out):
            raise ValueError(f"{out} exists and is not a picture cnnzoo drew; it is left alone: move it away or name "
                             f"the picture with --output FILE.png")


def register(sub: argparse._SubParsersAction) -> None:
    from .bench import _positive_int
    from .train import add_threads_arg

    d = sub.add_parser("detect", help="object detection (R-CNN, SSD, RetinaNet, YOLO): train, eval, predict, sample, "
                                      "list",
                       description="R-CNN (Girshick et al. 2014): region proposals, a fine-tuned zoo network's fc7 "
                                   "features, per-class SVMs, box regression, NMS; and the one-stage detectors (SSD, "
                                   "RetinaNet, YOLO v1, ...: `cnnzoo detect list`) trained end to end in run "
                                   "directories; VOC-style evaluation (and COCO AP where pycocotools is installed).")
    dsub = d.add_subparsers(dest="detect_command", metavar="ACTION", required=True)

    t = dsub.add_parser("train", help="train a detector and evaluate it on the test split", epilog=EPILOG_TRAIN,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("method", nargs="?", metavar="NAME",
                   help="rcnn or a one-stage detector (ssd300_vgg16, retinanet_resnet50_fpn, yolo_v1, ...: `cnnzoo "
                        "detect list`)")
    t.add_argument("--data", help="digits-detection (built in, default), voc:PATH or coco:PATH (one-stage only)")
    t.add_argument("--backbone", help="any zoo network (default: the preset's; alexnet for VOC, lenet5 for digits)")
    t.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE", help="backbone option")
    t.add_argument("--input-size", type=int, help="rcnn: side of the warped regions (AlexNet: 227); one-stage: images "
                                                  "(and boxes) are resized to S x S (default: the recipe's)")
    t.add_argument("--weights", metavar="PATH", help="pre-trained backbone weights (a cnnzoo run or checkpoint, or a "
                                                     "torchvision/timm file); replaces the preset's pre-training")
    t.add_argument("--proposals", choices=("selective_search", "sliding_window"))
    t.add_argument("--ss-mode", choices=("fast", "quality", "single"), help="selective search mode (default fast)")
    t.add_argument("--iterations", type=int, help="fine-tuning SGD iterations")
    t.add_argument("--data-seed", type=int, help="seed of the generated digits-detection images (default 0)")
    t.add_argument("--seed", type=int, help="seed of the training (default 0)")
    t.add_argument("--device", type=device_arg, help="cpu (default), cuda, mps")
    t.add_argument("--run-dir", help="default: ./runs/rcnn-DATA-YYYYmmdd-HHMMSS")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="rcnn: any config key (repeatable)")
    g = t.add_argument_group("one-stage detectors (defaults: the detector's digits recipe)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    g.add_argument("--data-param", dest="data_params", action="append", metavar="KEY=VALUE",
                   help="dataset setting (repeatable): digits-detection's seed, num_train, num_test, ...; voc's and "
                        "coco's train_split, test_split, in_channels")
    g.add_argument("--epochs", type=_positive_int)
    g.add_argument("--lr", action=FloatArg, low=0, low_open=True)
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop"))
    g.add_argument("--momentum", action=FloatArg, low=0, help="SGD/RMSprop momentum (default 0.9)")
    g.add_argument("--weight-decay", action=FloatArg, low=0)
    g.add_argument("--schedule", choices=("none", "cosine", "poly"), help="learning-rate schedule, stepped every "
                                                                         "iteration (poly: DeepLab's (1 - t)^0.9)")
    g.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips (not for digits)")
    g.add_argument("--jitter", action=FloatArg, low=0, high=1, high_open=True, metavar="F",
                   help="random scaling and translation by up to F of the side (YOLO v1 Sec. 2.2: 0.2)")
    g.add_argument("--mosaic", action="store_true", default=None,
                   help="YOLOv4's Mosaic (Sec. 3.3): four training images around a random centre as one")
    g.add_argument("--limit-batches", type=_positive_int, help="at most this many batches per epoch (smoke tests)")
    g.add_argument("--eval-every", type=_positive_int, metavar="N", help="test mAP after every N epochs (default 1; "
                                                                         "always after the last)")
    add_threads_arg(g)
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    e = dsub.add_parser("eval", help="AP per class and mAP (VOC, IoU 0.5) of a run on its test split")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--scorer", choices=("svm", "softmax"), help="score with the SVMs (default) or the fine-tuned "
                                                                 "network's softmax (Appendix B)")
    e.add_argument("--no-bbox-reg", action="store_true", help="without bounding-box regression")
    e.add_argument("--nms", action=FloatArg, low=0, high=1, what="an IoU", metavar="IOU",
                   help="NMS IoU threshold (default the run's: R-CNN 0.3; one-stage: the detector's evaluation one)")
    e.add_argument("--score-thresh", action=FloatArg, metavar="S",
                   help="one-stage runs: keep detections scoring above S (default the detector's evaluation "
                        "threshold: SSD 0.01, RetinaNet 0.05, YOLO v1 0.001)")
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.add_argument("--plot", metavar="FILE.png", help="draw the detections on the first test images")
    e.add_argument("--plot-images", type=int, default=8, help="how many test images --plot draws (default 8)")
    e.add_argument("--device", default="cpu", type=device_arg)
    e.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    e.set_defaults(func=cmd_eval)

    p = dsub.add_parser("predict", help="detect objects in images and draw the boxes to PNGs")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--output", metavar="FILE.png", help="where the picture goes (one image only; replaced if it "
                                                        "exists; default NAME_detections.png in the current directory, "
                                                        "never over a file cnnzoo did not draw)")
    p.add_argument("--threshold", action=FloatArg,
                   help="draw detections scoring above this, a finite number (R-CNN: default 0 for SVM scores, 0.5 "
                        "for softmax, whose scores are in [0, 1]; one-stage: 0.5, YOLO v1 0.2)")
    p.add_argument("--scorer", choices=("svm", "softmax"))
    p.add_argument("--device", default="cpu", type=device_arg)
    p.set_defaults(func=cmd_predict)

    s = dsub.add_parser("sample", help="write an image of the built-in digits-detection data to a PNG",
                        description="Writes image N of the built-in digits-detection train or test split (the "
                                    "pixels a detector trains or is scored on) as a grayscale PNG, and prints its "
                                    "ground-truth boxes: an image for `cnnzoo detect predict`.")
    s.add_argument("--split", choices=("test", "train"), default="test", help="default test")
    s.add_argument("--index", type=int, default=0, help="which image, 0-based (default 0; test has 150, train 300)")
    s.add_argument("--data-seed", type=int, help="seed of the generated images (default 0, as `detect train`)")
    s.add_argument("--out", metavar="FILE.png", help="default digits_SPLITN.png (e.g. digits_test0.png) here; "
                                                     "replaced only if cnnzoo wrote it")
    s.set_defaults(func=cmd_sample)
    ls = dsub.add_parser("list", help="the detection methods: rcnn and the one-stage detectors with their digits "
                                      "recipes")
    ls.set_defaults(func=cmd_list)
    for q in (t, e, p, s, ls):  # `cnnzoo detect train ... --debug` too (main adds it to `detect` only)
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


__all__ = ["Path", "register"]
