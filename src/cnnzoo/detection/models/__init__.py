"""Every detector module; importing this package registers their builders (`cnnzoo.detection.registry`)."""

from . import retinanet, ssd, yolo_v1  # noqa: F401
