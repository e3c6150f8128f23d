"""Semantic segmentation: per-pixel classification networks, their data, losses and metrics.

    >>> from cnnzoo.segmentation import create_segmenter, digits_segmentation, ConfusionMatrix
    >>> train, test = digits_segmentation()
    >>> net = create_segmenter("unet_padded", in_channels=1, num_classes=train.num_classes, base_channels=16)
    >>> cm = ConfusionMatrix(train.num_classes)
    >>> cm.update(net(images).argmax(1), masks); cm.compute()["mean_iu"]

One module per concern: `metrics` (the FCN paper's four metrics over a confusion matrix), `data`
(``digits-segmentation``, Pascal VOC 2012, folders of image/mask pairs), `losses` (U-Net's weight map),
`registry` (segmentation networks, apart from the classification zoo's), `models` (one file per paper).
"""

from .data import (
    DIGITS_SEG_DEFAULTS,
    VOC_CLASSES,
    SegmentationDataset,
    digits_segmentation,
    load_mask_folder,
    load_segmentation_data,
    load_voc_segmentation,
    voc_colormap,
)
from .losses import unet_weight_map, weighted_cross_entropy
from .metrics import IGNORE_INDEX, ConfusionMatrix, confusion_matrix, scores_from_confusion
from .registry import (
    create_segmenter,
    get_digits_recipe,
    get_segmenter_card,
    list_segmenters,
    register_segmenter,
    segmenter_options,
)

__all__ = [
    "DIGITS_SEG_DEFAULTS", "IGNORE_INDEX", "VOC_CLASSES", "ConfusionMatrix", "SegmentationDataset", "confusion_matrix",
    "create_segmenter", "digits_segmentation", "get_digits_recipe", "get_segmenter_card", "list_segmenters", "load_mask_folder",
    "load_segmentation_data", "load_voc_segmentation", "register_segmenter", "scores_from_confusion",
    "segmenter_options", "unet_weight_map", "voc_colormap", "weighted_cross_entropy",
]
