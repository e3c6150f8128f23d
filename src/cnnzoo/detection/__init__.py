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

from .bbox import box_iou, decode, encode
from .config import RCNNConfig, apply_sets, preset_config
from .data import DetectionDataset, digits_detection, load_detection_data, load_voc
from .nms import batched_nms, nms
from .proposals import MissingExtraError, selective_search, sliding_windows
from .rcnn import RCNNDetector, evaluate_run, load_detector, train_rcnn
from .registry import create_detector, get_detector_card, list_detectors
from .svm import LinearSVM, train_linear_svm, train_with_hard_negatives
from .voc_eval import average_precision, evaluate_detections
from .warp import warp_regions

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
