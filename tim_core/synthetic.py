"""Labelled synthetic IR/VIS scenes: a test and study tool, not a benchmark of real performance.

Each scene has a textured visible background with one dark (night) or washed-out (fog) region, a smooth
thermal background, and 2-5 objects of three shapes (disk, box, bar). Every object is visible
- only in IR: a warm object inside the dark/fog region, where the visible camera sees nothing;
- only in VIS: a cold (ambient-temperature) object with a striped texture outside that region;
- in both: a warm, textured object outside that region.
The shape decides the class, the visibility is drawn independently, so a single camera can at best find
the objects it sees and only a fusion of both can find all. Masks and boxes are exact (from the drawn
pixels, occlusion included).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("background", "disk", "box", "bar")  # segmentation ids; detection classes are ids - 1
DETECTION_CLASSES = CLASSES[1:]
VISIBILITY = ("ir", "vis", "both")


@dataclass
class Scene:
    """One labelled pair: luma planes in [0, 1], class-id mask, boxes (x1, y1, x2, y2) and detection classes."""

    ir: np.ndarray
    vis: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    visibility: list[str]


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int = 4) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _shape_mask(shape: str, h: int, w: int, cx: float, cy: float, s: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    if shape == "disk":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= s * s
    if shape == "box":
        return (abs(xx - cx) <= s) & (abs(yy - cy) <= s)
    return (abs(xx - cx) <= 1.8 * s) & (abs(yy - cy) <= 0.45 * s)  # bar: wide and flat


def make_scene(rng: np.random.Generator, height: int = 96, width: int = 128) -> Scene:
    """One random scene (see the module docstring for what it contains)."""
    h, w = height, width
    unit = min(h, w) / 96.0  # object sizes scale with the image
    vis = 0.35 + 0.4 * _smooth_field(rng, h, w) + rng.normal(0, 0.03, (h, w)).astype(np.float32)
    ir = 0.25 + 0.1 * _smooth_field(rng, h, w, 3) + rng.normal(0, 0.02, (h, w)).astype(np.float32)
    region_w = int(w * rng.uniform(0.35, 0.5))
    left = bool(rng.random() < 0.5)
    x0, x1 = (0, region_w) if left else (w - region_w, w)
    instances = np.full((h, w), -1, np.int16)
    shapes, visibility = [], []
    for k in range(int(rng.integers(2, 6))):
        vis_kind = VISIBILITY[int(rng.integers(3))]
        shape = int(rng.integers(1, len(CLASSES)))
        s = float(rng.uniform(5, 10)) * unit
        half_w = 1.8 * s if CLASSES[shape] == "bar" else s
        lo, hi = (x0 + half_w, x1 - half_w) if vis_kind == "ir" else \
            ((x1 + half_w, w - half_w) if left else (half_w, x0 - half_w))
        if hi <= lo:
            continue
        cx, cy = rng.uniform(lo, hi), rng.uniform(s + 1, h - s - 1)
        m = _shape_mask(CLASSES[shape], h, w, cx, cy, s)
        if vis_kind in ("ir", "both"):  # warm: a bright, slightly blurred body in the thermal image
            ir[m] = rng.uniform(0.7, 0.9)
        if vis_kind in ("vis", "both"):  # textured: stripes of a random period and phase
            yy, xx = np.nonzero(m)
            period, phase, mean = rng.uniform(3, 6), rng.uniform(0, 6.3), rng.uniform(0.2, 0.8)
            vis[yy, xx] = mean + 0.25 * np.sign(np.sin(2 * np.pi * (xx + yy) / period + phase))
        instances[m] = k
        shapes.append(shape)
        visibility.append(vis_kind)
    ir = cv2.GaussianBlur(ir, (3, 3), 0.8)
    dark = rng.random() < 0.5  # night: near black; fog: flat and bright
    vis[:, x0:x1] = (0.06 if dark else 0.85) + rng.normal(0, 0.015, (h, x1 - x0))
    mask = np.zeros((h, w), np.uint8)
    boxes, classes, vis_out = [], [], []
    for k, (shape, kind) in enumerate(zip(shapes, visibility)):
        ys, xs = np.nonzero(instances == k)
        if len(xs) < 12:  # fully occluded by later objects
            continue
        mask[ys, xs] = shape
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        classes.append(shape - 1)
        vis_out.append(kind)
    return Scene(ir.clip(0, 1).astype(np.float32), vis.clip(0, 1).astype(np.float32), mask,
                 np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64), vis_out)


def make_scenes(n: int, seed: int = 0, height: int = 96, width: int = 128) -> list[Scene]:
    """n scenes, reproducible from seed."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, height, width) for _ in range(n)]
