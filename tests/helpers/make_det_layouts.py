"""Write tests/fixtures/layouts/torchvision__{ssd300_vgg16,retinanet_resnet50_fpn}.json: torchvision's detection layouts
and raw head outputs (issue 27).

Not a test and not part of the project: it imports torchvision, which the project never depends on (and which does
not run with the project's torch). It was run on 2026-12-07 in a separate virtual environment outside the project:

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    /tmp/tvenv/bin/python tests/helpers/make_det_layouts.py

with torch 2.14.1+cu130 and torchvision 0.29.1+cu130 on the CPU, 2 intra-op threads (as the classification and segmentation
fixtures were made), float32. The fill rule and the probe input are tests/layout_fill.py's (imported, not copied),
i.e. the rule of ../shared/reference/README.md.

The probe bypasses torchvision's GeneralizedRCNNTransform (no resizing, no normalisation): the filled model's
``backbone`` is applied to the probe and ``head`` to the list of its feature maps, in eval mode, so the outputs are
the raw per-anchor head outputs before any decoding (no compiled ops involved). The anchors are the model's own
generator (``DefaultBoxGenerator`` for SSD, ``AnchorGenerator`` for RetinaNet) on an ImageList of the probe's size
(one entry per image; both images get the same anchors, stored once).

Each file has the classification layouts' keys (source, name, kwargs, input, params, state_dict) plus:

- ``input_rule``: how the probe is made from `make_input`. SSD: ``make_input(2, 3, 300)``. RetinaNet: a non-square
  probe (so a swapped height/width shows), ``make_input(2, 3, 320)[:, :, :256, :]``: the first 256 rows of the
  320 x 320 probe, shape [2, 3, 256, 320].
- ``num_anchors`` (A), ``level_sizes`` (the (H, W) of each feature map the head reads, in order), ``anchors_per_level``
  (anchors of each level, H * W * boxes per location), ``anchors_per_location``, ``num_outputs`` (K: columns of
  cls_logits).
- ``anchor_index``: the sampled anchor indices: every ``STEP``-th (0, STEP, 2 STEP, ...) together with the first and
  the last anchor of every level, sorted. ``cls_logits`` (len(anchor_index) x 2 x K nested as [image][sample][k]),
  ``bbox_regression`` ([image][sample][4]) and ``anchors`` ([sample][4], xyxy pixels) are those rows, 7 significant
  digits.
- ``cls_logits_sum``, ``cls_logits_abs_sum``, ``bbox_regression_sum``, ``bbox_regression_abs_sum``: sum and sum of |x|
  over the full (N, A, K) / (N, A, 4) outputs, accumulated in float64 (10 significant digits), and
  ``cls_logits_level_sums``, ``bbox_regression_level_sums``: the float64 sums per level.
- ``anchors_sum``: the float64 sum of all A x 4 anchor coordinates.

Parameters: ssd300_vgg16 (num_classes=91, torchvision's default) has 35,641,826. retinanet_resnet50_fpn is built
with torchvision's ``FrozenBatchNorm2d``, as a model built with a backbone or COCO checkpoint is (``is_trained``: its
ResNet uses ``norm_layer=FrozenBatchNorm2d``, trainable_backbone_layers 3), so that ``state_dict`` is the layout of
torchvision's COCO checkpoint (BN ``weight``/``bias``/``running_mean``/``running_var``, no ``num_batches_tracked``);
``params`` = 34,014,999 counts ``model.parameters()``, which excludes the frozen BN affine weights (buffers there),
and ``params_trainable_bn`` = 34,068,119 is the count of the same network built with ``weights=None,
weights_backbone=None`` (plain ``nn.BatchNorm2d``, whose 53,120 affine weights are parameters). ``params_buffers``
records what the buffers of the FrozenBN model hold. FrozenBatchNorm2d's eps is its default 1e-5 here (the same as
BatchNorm2d's); torchvision's COCO_V1 RetinaNet checkpoint is loaded with ``overwrite_eps(model, 0.0)``, a change of
about 5e-6 relative at these running variances (>= 1), below the comparison tolerance.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import retinanet as tv_retinanet
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from layout_fill import LAYOUTS, fill, make_input

KWARGS = {"weights": None, "weights_backbone": None, "num_classes": 91}
STEPS = {"ssd300_vgg16": 127, "retinanet_resnet50_fpn": 199}


def _digits(x, sig: int = 7):
    """A nested list of floats rounded to `sig` significant digits (float32 carries ~7)."""
    if isinstance(x, list):
        return [_digits(v, sig) for v in x]
    return float(f"{x:.{sig}g}")


def _sum(t: torch.Tensor) -> float:
    return _digits(t.double().sum().item(), 10)


def _abs_sum(t: torch.Tensor) -> float:
    return _digits(t.double().abs().sum().item(), 10)


def build(name: str) -> tuple[nn.Module, torch.Tensor, str, int | None]:
    """The model (eval), the probe, its rule and, for RetinaNet, the trainable-BN count."""
    if name == "ssd300_vgg16":
        model = ssd300_vgg16(**KWARGS)
        return model.eval(), make_input(2, 3, 300), "make_input(2, 3, 300)", None
    plain = tv_retinanet.retinanet_resnet50_fpn(**KWARGS)
    plain_count = sum(p.numel() for p in plain.parameters())
    # as retinanet_resnet50_fpn builds it when is_trained (weights or weights_backbone given): FrozenBatchNorm2d
    body = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    model = tv_retinanet.RetinaNet(backbone, KWARGS["num_classes"])
    assert list(model.state_dict()) == [k for k in plain.state_dict() if not k.endswith("num_batches_tracked")]
    probe = make_input(2, 3, 320)[:, :, :256, :].contiguous()
    return model.eval(), probe, "make_input(2, 3, 320)[:, :, :256, :]", plain_count


def layout(name: str) -> dict:
    model, x, rule, plain_count = build(name)
    sd = model.state_dict()
    model.load_state_dict({k: fill(k, list(v.shape)) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        feats = model.backbone(x)
        feats = list(feats.values()) if isinstance(feats, dict) else [feats]
        out = model.head(feats)
        images = ImageList(x, [tuple(x.shape[-2:])] * x.shape[0])
        anchors = model.anchor_generator(images, feats)
    cls, reg = out["cls_logits"], out["bbox_regression"]
    a0 = anchors[0]
    assert all(torch.equal(a0, a) for a in anchors)
    num_anchors, k = cls.shape[1], cls.shape[2]
    assert reg.shape == (x.shape[0], num_anchors, 4) and a0.shape == (num_anchors, 4)
    sizes = [list(f.shape[-2:]) for f in feats]
    per_loc = model.anchor_generator.num_anchors_per_location()
    per_level = [h * w * a for (h, w), a in zip(sizes, per_loc)]
    assert sum(per_level) == num_anchors, (per_level, num_anchors)
    starts = [sum(per_level[:i]) for i in range(len(per_level))]
    index = set(range(0, num_anchors, STEPS[name]))
    for s, n in zip(starts, per_level):
        index |= {s, s + n - 1}
    index = sorted(index)
    idx = torch.tensor(index)
    level_slices = [slice(s, s + n) for s, n in zip(starts, per_level)]
    data = {
        "source": "torchvision",
        "name": name,
        "kwargs": KWARGS,
        "input": list(x.shape),
        "input_rule": rule,
        "params": sum(p.numel() for p in model.parameters()),
        "state_dict": [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()],
        "num_anchors": num_anchors,
        "num_outputs": k,
        "level_sizes": sizes,
        "anchors_per_location": list(per_loc),
        "anchors_per_level": per_level,
        "subsample_step": STEPS[name],
        "anchor_index": index,
        "cls_logits": _digits(cls[:, idx].tolist()),
        "bbox_regression": _digits(reg[:, idx].tolist()),
        "anchors": _digits(a0[idx].tolist()),
        "cls_logits_sum": _sum(cls),
        "cls_logits_abs_sum": _abs_sum(cls),
        "bbox_regression_sum": _sum(reg),
        "bbox_regression_abs_sum": _abs_sum(reg),
        "cls_logits_level_sums": [_sum(cls[:, s]) for s in level_slices],
        "bbox_regression_level_sums": [_sum(reg[:, s]) for s in level_slices],
        "anchors_sum": _sum(a0),
    }
    if plain_count is not None:
        data["norm_layer"] = "FrozenBatchNorm2d"
        data["params_trainable_bn"] = plain_count
        data["params_buffers"] = sum(b.numel() for b in model.buffers())
    return data


def main() -> None:
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    for name in STEPS:
        data = layout(name)
        path = LAYOUTS / f"torchvision__{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)
        print(f"{name}: params {data['params']:,}, {len(data['state_dict'])} entries, {data['num_anchors']} anchors, "
              f"{len(data['anchor_index'])} sampled, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
