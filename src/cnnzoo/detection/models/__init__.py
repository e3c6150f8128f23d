"""Every detector module; importing this package registers their builders (`cnnzoo.detection.registry`)."""

from . import dssd, retinanet, ssd, yolo_v1, yolo_v2, yolo_v3, yolo_v4  # noqa: F401
