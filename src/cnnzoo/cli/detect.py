"""`cnnzoo detect train|eval|predict|sample`: R-CNN object detection (parse, call `cnnzoo.detection`, print)."""

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
config sections: data, backbone, proposals, finetune, svm, bbox, test (see cnnzoo.detection.config); selective
search needs the extra: pip install 'cnnzoo[detection]'."""


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
    from ..detection.config import apply_sets, preset_config, set_value
    from ..detection.rcnn import train_rcnn

    if args.method not in METHODS:
        raise ValueError(f"unknown detection method {args.method!r}; valid: {', '.join(METHODS)}")
    cfg = preset_config(args.data)
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
    rows = [f"{'class':>12} {'AP':>7} {'AP 11pt':>8} {'objects':>8}"]
    for name, c in metrics["classes"].items():
        ap = "-" if math.isnan(c["ap"]) else f"{100 * c['ap']:.1f}"
        ap11 = "-" if math.isnan(c["ap_11point"]) else f"{100 * c['ap_11point']:.1f}"
        rows.append(f"{name:>12} {ap:>7} {ap11:>8} {c['num_gt']:>8}")
    rows.append(f"{'mAP':>12} {100 * metrics['mAP']:>7.1f} {100 * metrics['mAP_11point']:>8.1f}")
    return "\n".join(rows)


@_extra_errors
def cmd_eval(args: argparse.Namespace) -> int:
    from ..detection.draw import default_threshold, save_detections
    from ..detection.rcnn import evaluate_run

    plot = check_plot_path(args.plot) if args.plot else None
    if args.plot_images < 1:
        raise ValueError(f"--plot-images must be at least 1, got {args.plot_images}")
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
    d = sub.add_parser("detect", help="object detection with R-CNN: train, eval, predict, sample",
                       description="R-CNN (Girshick et al. 2014): region proposals, a fine-tuned zoo network's fc7 "
                                   "features, per-class SVMs, box regression, NMS; VOC-style evaluation.")
    dsub = d.add_subparsers(dest="detect_command", metavar="ACTION", required=True)

    t = dsub.add_parser("train", help="train a detector and evaluate it on the test split", epilog=EPILOG_TRAIN,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("method", help="detection method: rcnn")
    t.add_argument("--data", default="digits-detection", help="digits-detection (built in, default) or voc:PATH")
    t.add_argument("--backbone", help="any zoo network (default: the preset's; alexnet for VOC, lenet5 for digits)")
    t.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE", help="backbone option")
    t.add_argument("--input-size", type=int, help="side of the warped regions (AlexNet: 227)")
    t.add_argument("--weights", metavar="PATH", help="pre-trained backbone weights (a cnnzoo run or checkpoint, or a "
                                                     "torchvision/timm file); replaces the preset's pre-training")
    t.add_argument("--proposals", choices=("selective_search", "sliding_window"))
    t.add_argument("--ss-mode", choices=("fast", "quality", "single"), help="selective search mode (default fast)")
    t.add_argument("--iterations", type=int, help="fine-tuning SGD iterations")
    t.add_argument("--data-seed", type=int, help="seed of the generated digits-detection images (default 0)")
    t.add_argument("--seed", type=int, help="seed of the training (default 0)")
    t.add_argument("--device", type=device_arg, help="cpu (default), cuda, mps")
    t.add_argument("--run-dir", help="default: ./runs/rcnn-DATA-YYYYmmdd-HHMMSS")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="any config key (repeatable)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    e = dsub.add_parser("eval", help="AP per class and mAP (VOC, IoU 0.5) of a run on its test split")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--scorer", choices=("svm", "softmax"), help="score with the SVMs (default) or the fine-tuned "
                                                                 "network's softmax (Appendix B)")
    e.add_argument("--no-bbox-reg", action="store_true", help="without bounding-box regression")
    e.add_argument("--nms", action=FloatArg, low=0, high=1, what="an IoU", metavar="IOU",
                   help="NMS IoU threshold (default the run's, 0.3)")
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
                   help="draw detections scoring above this, a finite number (default 0 for SVM scores, 0.5 for "
                        "softmax, whose scores are in [0, 1])")
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
    for q in (t, e, p, s):  # `cnnzoo detect train ... --debug` too (main adds it to `detect` only)
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


__all__ = ["Path", "register"]
