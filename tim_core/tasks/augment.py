"""Box-aware training augmentation: random scale, crop window, horizontal flip, 2x2 mosaic, per-camera jitter.

Each training sample is a window (the crop, or the whole task-size image when crop is 0) of one image zoomed
by a random scale s (s < 1: the image shrinks inside the window, the border is grey), or with probability
`mosaic` four such windows side by side around a random centre (each quadrant one training image). Boxes
follow every transform, are clipped to the window, and are dropped when under `min_box` pixels on a side or
when less than MIN_VISIBLE of their area stays inside. Masks follow with nearest sampling, their border is
255 (ignored). Brightness, contrast and gamma are drawn for IR and VIS independently: a warm person stays
warm in IR while the visible image darkens, as between a day and a night scene.

Every draw comes from the step's generator, so a resumed run repeats the uninterrupted one exactly. With
the defaults (`Augment()`, not `active`) trainers keep `data.sample_task_batch` and its draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .data import TaskData, add_sample, stack_batch

MIN_VISIBLE = 0.25  # a box cut to less than a quarter of its area no longer shows the object
FILL = 0.5  # grey border of shrunken images: mid-range for both cameras
MASK_FILL = 255  # the segmentation loss ignores it


@dataclass(frozen=True)
class Augment:
    """Augmentation options (GuideConfig's scale_min/scale_max, mosaic, jitter, min_box)."""

    scale: tuple[float, float] = (1.0, 1.0)  # zoom range per image; (0.5, 1.5): objects at half to 1.5x size
    mosaic: float = 0.0  # probability that a sample is a 2x2 mosaic of four training images
    jitter: float = 0.0  # strength of per-camera brightness (+-jitter/2), contrast and gamma (x e^+-jitter)
    min_box: float = 2.0  # boxes under this many pixels on a side after clipping are dropped

    @property
    def active(self) -> bool:
        return self.scale != (1.0, 1.0) or self.mosaic > 0 or self.jitter > 0


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=gen))


def clip_boxes(boxes: np.ndarray, width: int, height: int, min_box: float) -> np.ndarray:
    """Indices of the boxes that stay visible; `boxes` are clipped in place to the width x height window."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.clip(boxes, 0, [width, height, width, height], out=boxes)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.flatnonzero((w >= min_box) & (h >= min_box) & (w * h >= MIN_VISIBLE * np.maximum(area, 1e-9)))


def _window(data: TaskData, k: int, out_h: int, out_w: int, aug: Augment, gen: torch.Generator):
    """Image k zoomed by a random scale, an out_h x out_w window of it: (planes, boxes, classes)."""
    h, w = data.ir.shape[1:]
    s = _uniform(*aug.scale, gen)
    span_x, span_y = w * s - out_w, h * s - out_h  # < 0: the zoomed image fits inside the window
    x0 = round(_uniform(min(0.0, span_x), max(0.0, span_x), gen))
    y0 = round(_uniform(min(0.0, span_y), max(0.0, span_y), gen))
    m = np.array([[s, 0, -x0], [0, s, -y0]], np.float64)
    planes = [cv2.warpAffine(p[k], m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=FILL) for p in (data.ir, data.vis)]
    if data.masks is not None:
        planes.append(cv2.warpAffine(data.masks[k], m, (out_w, out_h), flags=cv2.INTER_NEAREST,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=MASK_FILL))
    if data.fused is not None:
        planes.append(cv2.warpAffine(data.fused[k], m, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=FILL))
    boxes, classes = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    if data.boxes:
        boxes = (data.boxes[k] * s - np.array([x0, y0, x0, y0])).astype(np.float32).reshape(-1, 4)
        keep = clip_boxes(boxes, out_w, out_h, aug.min_box)
        boxes, classes = boxes[keep], data.labels[k][keep]
    return planes, boxes, classes


def _mosaic(data: TaskData, k: int, out_h: int, out_w: int, aug: Augment, gen: torch.Generator):
    """Image k and three random training images in the quadrants around a random centre."""
    cy = round(_uniform(0.25 * out_h, 0.75 * out_h, gen))
    cx = round(_uniform(0.25 * out_w, 0.75 * out_w, gen))
    others = torch.randint(len(data), (3,), generator=gen).tolist()
    planes: list[np.ndarray] | None = None
    boxes, classes = [], []
    for idx, (y, x, qh, qw) in zip([k, *others], ((0, 0, cy, cx), (0, cx, cy, out_w - cx),
                                                  (cy, 0, out_h - cy, cx), (cy, cx, out_h - cy, out_w - cx))):
        q_planes, q_boxes, q_classes = _window(data, idx, qh, qw, aug, gen)
        if planes is None:
            planes = [np.empty((out_h, out_w), p.dtype) for p in q_planes]
        for whole, part in zip(planes, q_planes):
            whole[y:y + qh, x:x + qw] = part
        boxes.append(q_boxes + np.array([x, y, x, y], np.float32))
        classes.append(q_classes)
    return planes, np.concatenate(boxes), np.concatenate(classes)


def _jitter(plane: np.ndarray, strength: float, gen: torch.Generator) -> np.ndarray:
    """Gamma, then contrast about the image mean, then brightness; values stay in [0, 1]."""
    gamma = float(np.exp(_uniform(-strength, strength, gen)))
    contrast = float(np.exp(_uniform(-strength, strength, gen)))
    brightness = _uniform(-strength / 2, strength / 2, gen)
    x = np.power(np.clip(plane, 0.0, 1.0), gamma)
    mean = float(x.mean())
    return np.clip((x - mean) * contrast + mean + brightness, 0.0, 1.0).astype(np.float32)


def sample_augmented_batch(data: TaskData, batch: int, crop: int, aug: Augment, generator: torch.Generator) -> dict:
    """A batch like `data.sample_task_batch` (same keys and shapes), augmented as configured by `aug`."""
    if aug.jitter > 0 and data.fused is not None:
        raise ValueError("jitter changes each camera, so a cached fused input cannot follow it; fuse per batch")
    idx = torch.randint(len(data), (batch,), generator=generator).tolist()
    h, w = data.ir.shape[1:]
    ch, cw = (min(crop, h), min(crop, w)) if crop > 0 else (h, w)
    out: dict = {"ir": [], "vis": [], "boxes": [], "classes": [], "mask": [], "fused": [], "index": idx}
    for k in idx:
        sample = _mosaic if float(torch.rand(1, generator=generator)) < aug.mosaic else _window
        planes, boxes, classes = sample(data, k, ch, cw, aug, generator)
        if float(torch.rand(1, generator=generator)) < 0.5:
            planes = [p[:, ::-1] for p in planes]
            boxes = np.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], 1).astype(np.float32)
        if aug.jitter > 0:
            planes[0], planes[1] = (_jitter(p, aug.jitter, generator) for p in planes[:2])
        add_sample(out, data, [np.ascontiguousarray(p) for p in planes], boxes, classes)
    return stack_batch(out)
