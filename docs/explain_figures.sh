#!/usr/bin/env bash
# Makes the pictures of docs/explain.md and the README's explain section (run from the repository root, with the
# project's venv active or .venv/bin on PATH):   bash docs/explain_figures.sh
# 1. the demo's lenet5 (`cnnzoo demo`: mnist5k, its default recipe); 2. a network trained on an image folder: a
# folder of 32x32 RGB pictures, each a mnist5k digit (scaled to 12-20 px) at a random place on a random-colour noisy
# background, so a map that finds the digit shows the network looks at it, trained with `cnnzoo train resnet20_cifar
# --data folder:...`; 3. a deconvnet top-9 grid and the conv1 filters; 4. two convolution animations.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
WORK=${WORK:-runs/explain-figures}  # the runs and outputs (the pictures name their run)
IMG=docs/images
echo "work directory: $WORK"

rm -rf "$WORK" && mkdir -p "$WORK"
cnnzoo demo --run-dir "$WORK/demo" -q
cnnzoo explain "$WORK/demo" test:450 --method gradcam,occlusion --out "$WORK/lenet5" --force
cp "$WORK/lenet5/test-450_gradcam.png" "$IMG/explain_lenet5_gradcam.png"
cp "$WORK/lenet5/test-450_occlusion.png" "$IMG/explain_lenet5_occlusion.png"
cnnzoo explain "$WORK/demo" --method filters --out "$WORK/filters" --force
cp "$WORK/filters/filters.png" "$IMG/explain_lenet5_filters.png"
cnnzoo explain "$WORK/demo" --method deconvnet --top 9 --layer features.5 --out "$WORK/top9" --force
cp "$WORK"/top9/topk_*.png "$IMG/explain_lenet5_deconvnet_top9.png"

python - "$WORK/digits_folder" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cnnzoo.data import load_dataset

root = Path(sys.argv[1])
data = load_dataset("mnist5k")
rng = np.random.default_rng(0)
for split, ds, n in (("train", data.train, 2000), ("val", data.test, 500)):
    images, labels = ds.images.numpy(), ds.labels.numpy()
    for i in rng.permutation(len(labels))[:n]:  # the splits are ordered by class: draw across all ten
        digit = Image.fromarray(images[i].reshape(28, 28).astype(np.uint8))
        side = int(rng.integers(12, 21))
        digit = np.asarray(digit.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32) / 255
        canvas = rng.integers(0, 160, size=3) + rng.normal(0, 20, size=(32, 32, 3))
        ink = rng.integers(160, 256, size=3)
        y, x = rng.integers(0, 32 - side + 1, size=2)
        patch = canvas[y:y + side, x:x + side]
        canvas[y:y + side, x:x + side] = patch * (1 - digit[..., None]) + ink * digit[..., None]
        out = root / split / str(int(labels[i]))
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(out / f"{i:05d}.png")
PY
cnnzoo train resnet20_cifar --data "folder:$WORK/digits_folder" --epochs 8 --run-dir "$WORK/folder_run" -q
cnnzoo explain "$WORK/folder_run" test:110 test:210 test:410 --method cam,gradcam,occlusion --out "$WORK/folder" --force
for f in "$WORK"/folder/test-*_gradcam.png "$WORK"/folder/test-*_occlusion.png; do
  cp "$f" "$IMG/explain_folder_$(basename "$f")"
done

cnnzoo arith animate --case half-padding --out "$IMG/conv_half_padding.gif" --force
cnnzoo arith animate --kernel 3 --stride 2 --padding 0 --transposed --input 3 --out "$IMG/conv_transposed_stride2.gif" --force
