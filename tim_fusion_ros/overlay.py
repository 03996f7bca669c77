"""Colour palette for segmentation masks and boxes drawn on the fused image (debug/image, reports)."""

from __future__ import annotations

import cv2
import numpy as np

# MSRS's nine classes (unlabelled, car, person, bike, curve, car stop, guardrail, colour cone, bump),
# then a repeating fallback for bundles with more classes.
PALETTE = np.array([[0, 0, 0], [64, 0, 128], [64, 64, 0], [0, 128, 192], [0, 0, 192], [128, 128, 0],
                    [64, 64, 128], [192, 128, 128], [192, 64, 0]] + [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256]
                                                                     for i in range(9, 256)], np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB palette image; 255 (unlabeled) is black."""
    out = PALETTE[np.minimum(mask, 255)]
    out[mask == 255] = 0
    return out


def to_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def blend_mask(fused: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Fused image with the colourised mask blended over labelled pixels."""
    base = to_rgb(fused).astype(np.float32)
    colour = colorize(mask).astype(np.float32)
    labelled = (mask != 255)[..., None]
    return np.where(labelled, (1 - alpha) * base + alpha * colour, base).astype(np.uint8)


def draw_detections(img: np.ndarray, detections) -> np.ndarray:
    """RGB copy of img with one box and 'label score' per detection."""
    out = np.ascontiguousarray(to_rgb(img)).copy()
    for det in detections:
        colour = tuple(int(c) for c in PALETTE[(det.class_id + 1) % len(PALETTE)]) if det.class_id >= 0 else (255, 0, 0)
        colour = colour if sum(colour) > 120 else (255, 255, 0)
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(out, f"{det.label} {det.score:.2f}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    return out
