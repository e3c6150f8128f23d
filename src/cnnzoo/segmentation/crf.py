"""The fully connected CRF that DeepLab v1/v2 apply after the network (v1 Sec. 4, v2 Sec. 3.3), through the kept
library ``pydensecrf2`` (Krahenbuhl & Koltun's permutohedral-lattice mean field, "Efficient Inference in Fully
Connected CRFs with Gaussian Edge Potentials", NIPS 2011), an optional extra: ``pip install pydensecrf2``.

The energy (v2 eq. 2-3): unary ``-log P(x_i)`` from the network's soft-max, pairwise Potts potentials with two
Gaussian kernels,
    w1 exp(-|p_i - p_j|^2 / (2 sigma_alpha^2) - |I_i - I_j|^2 / (2 sigma_beta^2))   (bilateral: position and colour)
  + w2 exp(-|p_i - p_j|^2 / (2 sigma_gamma^2))                                       (smoothness: position only)
minimised approximately by ``iterations`` mean-field steps (10 in the papers). The papers fix w2 = 3, sigma_gamma =
3 and cross-validate w1, sigma_alpha, sigma_beta on 100 PASCAL val images; the defaults here are the values the
released DeepLab v2 ResNet-101 scripts are reported to use (w1 = 4, sigma_alpha = 67, sigma_beta = 3) with the
papers' w2 = 3, sigma_gamma = 3. They suit 321-513 pixel photographs; cross-validate them for other data.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["CRF_EXTRA", "dense_crf"]

#: the pip name of the optional dependency (its import name is ``pydensecrf``)
CRF_EXTRA = "pydensecrf2"


def _library():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as err:  # the optional extra is missing
        raise ImportError(f"dense_crf needs the optional package {CRF_EXTRA!r} (Krahenbuhl's fully connected CRF): "
                          f"pip install {CRF_EXTRA}") from err
    return dcrf


def dense_crf(image, probs, *, iterations: int = 10, bi_weight: float = 4.0, bi_xy_std: float = 67.0,
              bi_rgb_std: float = 3.0, pos_weight: float = 3.0, pos_xy_std: float = 3.0) -> torch.Tensor:
    """Refine one image's class probabilities with DeepLab's fully connected CRF.

    Args:
        image: ``(H, W, 3)`` or ``(3, H, W)`` uint8 colours, or ``(H, W)`` / ``(1, H, W)`` grey (repeated to RGB):
            a numpy array or tensor.
        probs: ``(K, H, W)`` soft-max probabilities (each pixel's sum 1), a numpy array or tensor.
        iterations: mean-field steps (v1/v2: 10).
        bi_weight, bi_xy_std, bi_rgb_std: w1, sigma_alpha (pixels), sigma_beta (intensity) of the bilateral kernel.
        pos_weight, pos_xy_std: w2, sigma_gamma of the smoothness kernel.

    Returns:
        ``(K, H, W)`` float32 tensor: the CRF's marginals (``argmax(0)`` is the refined label map).

    Raises:
        ImportError: ``pydensecrf2`` is not installed (the message gives the pip command).
        ValueError: shapes that do not fit, probabilities outside [0, 1], a non-positive setting.
    """
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if p.ndim != 3 or p.shape[0] < 2:
        raise ValueError(f"probs must be (K, H, W) with K >= 2 classes, got shape {p.shape}")
    k, h, w = p.shape
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[1:] == (h, w):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[:2] != (h, w) or img.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3), (3, H, W) or grey (H, W) of the probabilities' {h}x{w}, got "
                         f"shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 colours (0-255), got {img.dtype}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probs must be soft-max probabilities in [0, 1] (apply softmax to the logits first)")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    for key, value in (("bi_weight", bi_weight), ("bi_xy_std", bi_xy_std), ("bi_rgb_std", bi_rgb_std),
                       ("pos_weight", pos_weight), ("pos_xy_std", pos_xy_std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{key} must be a number > 0, got {value!r}")
    dcrf = _library()
    rgb = np.ascontiguousarray(np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img)
    unary = np.ascontiguousarray(-np.log(np.clip(p, 1e-8, 1.0)).reshape(k, -1).astype(np.float32))
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_weight)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=rgb, compat=bi_weight)
    q = np.array(crf.inference(iterations), dtype=np.float32).reshape(k, h, w)
    return torch.from_numpy(q)
