"""Colour and intensity handling: RGB <-> YCbCr (BT.601 full range) and input normalisation to [0, 1].

Colour visible images are fused in luma: Y goes through the network with the infrared image, the
visible image's CbCr is kept and the fused Y is converted back to RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

# BT.601 full-range (JPEG) matrix; Cb/Cr centred on 0.5 for data in [0, 1].
_RGB2YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32
)
_YCBCR2RGB = np.linalg.inv(_RGB2YCBCR.astype(np.float64)).astype(np.float32)
# The same maps as 3x4 affine matrices (offset column) for cv2.transform: one pass, no temporaries.
_RGB2YCBCR_AFFINE = np.hstack([_RGB2YCBCR, [[0.0], [0.5], [0.5]]]).astype(np.float32)
_YCBCR2RGB_AFFINE = np.hstack([_YCBCR2RGB, -_YCBCR2RGB[:, 1:] @ [[0.5], [0.5]]]).astype(np.float32)

IR_NORMALIZATIONS = ("minmax", "percentile", "fixed")


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB float in [0, 1] -> (H, W, 3) Y, Cb, Cr in [0, 1]."""
    return cv2.transform(np.ascontiguousarray(rgb, dtype=np.float32), _RGB2YCBCR_AFFINE)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """(H, W, 3) Y, Cb, Cr in [0, 1] -> RGB float, clipped to [0, 1]."""
    rgb = cv2.transform(np.ascontiguousarray(ycc, dtype=np.float32), _YCBCR2RGB_AFFINE)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, 3) array, same scale as the input."""
    return rgb.astype(np.float32, copy=False) @ _RGB2YCBCR[0]


class NonFiniteError(ValueError):
    """An image with NaN or infinite values (a float camera frame gone bad)."""


def to_unit(
    img: np.ndarray,
    ir_norm: str = "minmax",
    fixed_range: tuple[float, float] = (0.0, 65535.0),
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Normalise an image to float32 [0, 1].

    uint8 is divided by 255 (TIM's convention); float already inside [0, 1] is kept. uint16 (raw 12-16
    bit thermal) and float outside [0, 1] (e.g. 32FC1 temperatures) follow `ir_norm`: 'minmax' stretches
    the frame's own min..max, 'percentile' its p_lo..p_hi percentiles (robust to hot pixels), 'fixed' maps
    fixed_range (e.g. a camera's radiometric range) to [0, 1].
    """
    if img.dtype == np.uint8:
        return np.multiply(img, np.float32(1.0 / 255.0), dtype=np.float32)
    if img.dtype not in (np.uint16, np.float32, np.float64):
        raise ValueError(f"unsupported pixel type {img.dtype}; expected uint8, uint16 or float")
    x = img.astype(np.float32, copy=False)
    if img.dtype != np.uint16 and not np.isfinite(x).all():
        raise NonFiniteError("image has NaN or Inf values; fix the source or drop the frame")
    if img.dtype != np.uint16 and x.size and x.min() >= 0.0 and x.max() <= 1.0:
        return x.astype(np.float32, copy=False)
    if ir_norm == "fixed":
        lo, hi = fixed_range
    elif ir_norm == "percentile":
        lo, hi = _uint16_percentiles(img, percentiles) if img.dtype == np.uint16 else np.percentile(x, percentiles)
    elif ir_norm == "minmax":
        lo, hi = float(x.min()), float(x.max())
    else:
        raise ValueError(f"unknown ir_norm {ir_norm!r}; valid: {', '.join(IR_NORMALIZATIONS)}")
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    out = np.subtract(x, np.float32(lo), dtype=np.float32)  # float32 throughout: the network's input type
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _uint16_percentiles(img: np.ndarray, percentiles: tuple[float, ...]) -> list[float]:
    """np.percentile's default (linear) rule from a 65536-bin histogram: same values, no sort of the frame."""
    cum = np.cumsum(np.bincount(img.ravel(), minlength=65536))
    n = int(cum[-1])
    out = []
    for q in percentiles:
        pos = q / 100.0 * (n - 1)
        k = int(np.floor(pos))
        below, above = np.searchsorted(cum, [k, min(k + 1, n - 1)], side="right")  # k-th, (k+1)-th order stats
        out.append(float(below) + (float(above) - float(below)) * (pos - k))
    return out
