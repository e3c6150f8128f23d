"""Object detection: R-CNN (Girshick et al. 2014; `cnnzoo.detection.rcnn`) and the one-stage detectors (YOLO v1-v4,
SSD, DSSD, RetinaNet; `cnnzoo.detection.registry`, `cnnzoo.detection.train`), on the zoo's networks.

    >>> from cnnzoo.detection import create_detector, list_detectors
    >>> model = create_detector("retinanet_resnet50_fpn", weights="retinanet.pth")   # torchvision's file, no options

    >>> from cnnzoo.detection import preset_config, train_rcnn, load_detector
    >>> metrics = train_rcnn(preset_config("digits-detection"), "runs/rcnn-digits")
    >>> detector, info = load_detector("runs/rcnn-digits")
    >>> boxes, scores, labels = detector.detect(image_uint8_chw)

One module per concern: `proposals` (selective search, sliding windows), `warp` (Appendix A), `svm` (linear SVMs,
hard negative mining), `bbox` (IoU, Appendix C's box regression), `nms`, `voc_eval` (AP, mAP), `data`
(``digits-detection``, Pascal VOC, COCO), `config`, `rcnn` (the pipeline and the run directory), `draw`; for the
one-stage detectors `anchors`, `coder`, `matching`, `losses`, `postprocess`, `augment`, `coco` (COCO AP), `train`
and `models/` (one module per paper).
Selective search needs the optional extra: ``pip install 'cnnzoo[detection]'``.
"""

import importlib

#: each public name and the module that defines it, imported on first use (PEP 562): `cnnzoo list` reads the
#: detector registry without importing R-CNN's data, training and imaging modules
_LAZY = {
    "box_iou": "bbox", "decode": "bbox", "encode": "bbox",
    "RCNNConfig": "config", "apply_sets": "config", "preset_config": "config",
    "DetectionDataset": "data", "digits_detection": "data", "load_detection_data": "data", "load_voc": "data",
    "batched_nms": "nms", "nms": "nms",
    "MissingExtraError": "proposals", "selective_search": "proposals", "sliding_windows": "proposals",
    "RCNNDetector": "rcnn", "evaluate_run": "rcnn", "load_detector": "rcnn", "train_rcnn": "rcnn",
    "create_detector": "registry", "get_detector_card": "registry", "list_detectors": "registry",
    "LinearSVM": "svm", "train_linear_svm": "svm", "train_with_hard_negatives": "svm",
    "average_precision": "voc_eval", "evaluate_detections": "voc_eval",
    "warp_regions": "warp",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DetectionDataset",
    "LinearSVM",
    "MissingExtraError",
    "RCNNConfig",
    "RCNNDetector",
    "apply_sets",
    "average_precision",
    "batched_nms",
    "box_iou",
    "create_detector",
    "decode",
    "digits_detection",
    "encode",
    "evaluate_detections",
    "evaluate_run",
    "get_detector_card",
    "list_detectors",
    "load_detection_data",
    "load_detector",
    "load_voc",
    "nms",
    "preset_config",
    "selective_search",
    "sliding_windows",
    "train_linear_svm",
    "train_rcnn",
    "train_with_hard_negatives",
    "warp_regions",
]
