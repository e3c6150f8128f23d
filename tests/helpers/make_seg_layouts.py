"""Write tests/fixtures/layouts/torchvision__{fcn,deeplabv3,lraspp}_*.json: torchvision's segmentation layouts.

Not a test and not part of the project: it imports torchvision, which the project never depends on (and which does
not run with the project's torch). It was run on 2026-12-07 in a separate virtual environment outside the project:

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    /tmp/tvenv/bin/python tests/helpers/make_seg_layouts.py

with torch 2.14.1+cu130 and torchvision 0.29.1+cu130 on the CPU, 2 intra-op threads (as the classification fixtures were
made), float32. The fill rule and the probe input are tests/layout_fill.py's (imported, not copied), i.e. the
rule of ../shared/reference/README.md.

Each file has the classification layouts' keys (source, name, kwargs, input, params, state_dict, logits) with
these meanings for a segmentation network, whose eval-mode output is the dict {"out", "aux"}:

- kwargs: weights=None, weights_backbone=None, num_classes=21, and aux_loss=True for FCN and DeepLabv3 (the
  auxiliary FCN head torchvision builds when it loads COCO-with-VOC-labels weights); `params` counts it.
- input: [2, 3, 100, 100]. 100 is not a multiple of the output stride (8 for the ResNets, 16 for MobileNetV3), so
  the odd-size rounding of the strided layers and the bilinear resize back to 100 x 100 are exercised, and the
  ResNets' 13 x 13 map reaches the ASPP rate-12 taps at its borders. Larger rates see only their centre tap at
  this size (measured: rate 36 -> 24 changes nothing; 12 -> 6 and, on the ResNets, 24 -> 12 change `out` by 0.1-0.3
  relative), so a wrong rate >= 13 passes; the fixtures check the layout and the arithmetic, not those rates.
- logits: `out` subsampled as out[:, :, ::8, ::8], a (2, 21, 13, 13) nested list, 7 significant digits.
- added keys: `output_shape` ([2, 21, 100, 100]), `subsample` (the slice above, as text), `logits_sum` and
  `logits_abs_sum` (sum and sum of |x| of the full `out` map, accumulated in float64), and `aux`, `aux_sum`,
  `aux_abs_sum`, the same three for the auxiliary head's output (null for lraspp_mobilenet_v3_large, which has none).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torchvision
from torchvision.models import segmentation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from layout_fill import LAYOUTS, fill, make_input

BATCH, CHANNELS, SIZE, STEP = 2, 3, 100, 8
MODELS = {  # name -> has an auxiliary head
    "fcn_resnet50": True,
    "fcn_resnet101": True,
    "deeplabv3_resnet50": True,
    "deeplabv3_resnet101": True,
    "deeplabv3_mobilenet_v3_large": True,
    "lraspp_mobilenet_v3_large": False,
}


def _digits(x, sig: int = 7):
    """A nested list of floats rounded to `sig` significant digits (float32 carries ~7)."""
    if isinstance(x, list):
        return [_digits(v, sig) for v in x]
    return float(f"{x:.{sig}g}")


def _sampled(y: torch.Tensor) -> tuple[list, float, float]:
    return (
        _digits(y[:, :, ::STEP, ::STEP].tolist()),
        _digits(y.double().sum().item(), 10),
        _digits(y.double().abs().sum().item(), 10),
    )


def layout(name: str, aux: bool) -> dict:
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 21}
    if aux:
        kwargs["aux_loss"] = True
    model = getattr(segmentation, name)(**kwargs).eval()
    sd = model.state_dict()
    model.load_state_dict({k: fill(k, list(v.shape)) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        y = model(make_input(BATCH, CHANNELS, SIZE))
    out = y["out"]
    assert tuple(out.shape) == (BATCH, 21, SIZE, SIZE), out.shape
    logits, logits_sum, logits_abs_sum = _sampled(out)
    aux_s, aux_sum, aux_abs_sum = _sampled(y["aux"]) if aux else (None, None, None)
    return {
        "source": "torchvision",
        "name": name,
        "kwargs": kwargs,
        "input": [BATCH, CHANNELS, SIZE, SIZE],
        "params": sum(p.numel() for p in model.parameters()),
        "state_dict": [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()],
        "logits": logits,
        "output_shape": list(out.shape),
        "subsample": f"[:, :, ::{STEP}, ::{STEP}]",
        "logits_sum": logits_sum,
        "logits_abs_sum": logits_abs_sum,
        "aux": aux_s,
        "aux_sum": aux_sum,
        "aux_abs_sum": aux_abs_sum,
    }


def main() -> None:
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    for name, aux in MODELS.items():
        data = layout(name, aux)
        path = LAYOUTS / f"torchvision__{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)
        print(f"{name}: params {data['params']:,}, {len(data['state_dict'])} entries, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
