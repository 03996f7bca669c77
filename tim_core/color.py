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

_LUMA_255 = _RGB2YCBCR[0].astype(np.float64) / 255.0  # R, G, B weights: RGB in 0..255 -> Y in [0, 1]

IR_NORMALIZATIONS = ("minmax", "percentile", "fixed")


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB float in [0, 1] -> (H, W, 3) Y, Cb, Cr in [0, 1]."""
    return cv2.transform(np.ascontiguousarray(rgb, dtype=np.float32), _RGB2YCBCR_AFFINE)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """(H, W, 3) Y, Cb, Cr in [0, 1] -> RGB float, clipped to [0, 1]."""
    rgb = cv2.transform(np.ascontiguousarray(ycc, dtype=np.float32), _YCBCR2RGB_AFFINE)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def split_luma(rgb255: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """An (H, W, 3) RGB image in 0..255 (uint8, or float32 for other sources) as its three planes, and its BT.601
    luma in [0, 1] as float32: the plane the network fuses. uint8 stays uint8 (no float copy of the image)."""
    r, g, b = cv2.split(rgb255)
    y = cv2.addWeighted(r, _LUMA_255[0], g, _LUMA_255[1], 0.0, dtype=cv2.CV_32F)
    return [r, g, b], cv2.addWeighted(y, 1.0, b, _LUMA_255[2], 0.0, dtype=cv2.CV_32F)


def replace_luma(planes: list[np.ndarray], y_old: np.ndarray, y_new: np.ndarray) -> np.ndarray:
    """The uint8 RGB image whose luma is y_new and whose chroma (Cb, Cr) is that of the planes (split_luma).

    With Cb and Cr kept, YCbCr -> RGB moves each of R, G and B by the change of Y alone (the first column of the
    inverse BT.601 matrix is (1, 1, 1)): channel + 255 (y_new - y_old), saturated to 0..255 and rounded in one
    OpenCV pass per plane, instead of a float round trip through YCbCr (docs/performance.md). Same result as
    ycbcr_to_rgb with the new Y up to rounding ties (1 grey level).
    """
    d = np.subtract(y_new, y_old, dtype=np.float32)
    d *= 255.0
    return cv2.merge([cv2.add(c, d, dtype=cv2.CV_8U) for c in planes])


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
    x = img if img.dtype == np.uint16 else img.astype(np.float32, copy=False)  # uint16: read as it is, scaled below
    if img.dtype != np.uint16 and not np.isfinite(x).all():
        raise NonFiniteError("image has NaN or Inf values; fix the source or drop the frame")
    if img.dtype != np.uint16 and x.size and x.min() >= 0.0 and x.max() <= 1.0:
        return x
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
    if img.dtype == np.uint16 and img.ndim == 2:  # one OpenCV pass from uint16: (x - lo) / (hi - lo) in float32
        scale = 1.0 / (hi - lo)
        out = cv2.addWeighted(img, scale, img, 0.0, -lo * scale, dtype=cv2.CV_32F)
        return np.clip(out, 0.0, 1.0, out=out)
    out = np.subtract(x, np.float32(lo), dtype=np.float32)  # float32 throughout: the network's input type
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _uint16_histogram(img: np.ndarray) -> np.ndarray:
    """The 65,536-bin histogram of a uint16 image (int64 counts).

    cv2.calcHist of the (high byte, low byte) planes as a 256x256 joint histogram: OpenCV's 8-bit path, faster
    than np.bincount, which first widens the frame to int64 (1.2-2x, bench/node_path_probe.py; the node's path).
    Its float32 counts are exact below 2**24 pixels; larger images take np.bincount.
    """
    if img.size >= 2**24 or img.ndim != 2:
        return np.bincount(img.ravel(), minlength=65536)
    planes = np.ascontiguousarray(img, dtype="<u2").view(np.uint8).reshape(img.shape[0], img.shape[1], 2)
    hist = cv2.calcHist([planes], [1, 0], None, [256, 256], [0, 256, 0, 256])  # [high, low]: index = value
    return hist.ravel().astype(np.int64)


def _uint16_percentiles(img: np.ndarray, percentiles: tuple[float, ...]) -> list[float]:
    """np.percentile's default (linear) rule from a 65536-bin histogram: same values, no sort of the frame."""
    cum = np.cumsum(_uint16_histogram(img))
    n = int(cum[-1])
    out = []
    for q in percentiles:
        pos = q / 100.0 * (n - 1)
        k = int(np.floor(pos))
        below, above = np.searchsorted(cum, [k, min(k + 1, n - 1)], side="right")  # k-th, (k+1)-th order stats
        out.append(float(below) + (float(above) - float(below)) * (pos - k))
    return out
