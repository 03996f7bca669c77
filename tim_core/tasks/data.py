"""Labelled paired data for the task networks: loading (real folders or synthetic scenes), resizing, batches.

Real data: ROOT/{ir,vi}/NAME.* as for fusion, plus per task
- detection: ROOT/LABELS/NAME.txt (YOLO, 'class cx cy w h' normalised) or ROOT/LABELS/NAME.xml (Pascal VOC);
  a missing or empty file means no object;
- segmentation: ROOT/Segmentation_labels/NAME.png (class ids, 255 ignored).
Every image is resized to the task size (height x width); boxes are scaled with it. The split is the
same name hash as fusion training (`data.is_validation`), so validation pairs never reach training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data import is_validation, load_unit_gray, resolve_layout
from ..files import ImageFileError, pair_paths
from ..synthetic import CLASSES, DETECTION_CLASSES, make_scenes
from .boxes import read_voc, read_yolo
from .segmentation import LABEL_DIR, MSRS_CLASSES, read_label


@dataclass
class TaskData:
    """All pairs of one split at the task size: luma planes (N, H, W), boxes/classes or masks per image."""

    names: list[str]
    ir: np.ndarray
    vis: np.ndarray
    classes: list[str]
    boxes: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    masks: np.ndarray | None = None
    fused: np.ndarray | None = None  # a cached task input (frozen fusion), cropped like the sources

    def __len__(self) -> int:
        return len(self.names)


def _resize(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if img.shape[:2] == size:
        return img
    return cv2.resize(img, size[::-1], interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _read_boxes(
    label_dir: Path, name: str, classes: list[str], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    if (label_dir / f"{name}.xml").is_file():
        boxes, ids, _ = read_voc(label_dir / f"{name}.xml", classes)
    elif (label_dir / f"{name}.txt").is_file():
        boxes, ids = read_yolo(label_dir / f"{name}.txt", w, h)
    else:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    if len(ids) and ids.max() >= len(classes):
        raise ImageFileError(f"{label_dir / name}: class id {int(ids.max())} but only {len(classes)} classes {classes}")
    return boxes, ids


def load_task_data(
    task: str,
    specs: list[str],
    split: str,
    val_fraction: float,
    size: tuple[int, int],
    labels: str = "labels/fusion",
    classes: list[str] | None = None,
    synthetic: int = 0,
    seed: int = 0,
) -> TaskData:
    """Load one split ('train' | 'val' | 'all') of real folders, or of `synthetic` generated scenes when > 0."""
    names, irs, viss, boxes, ids, masks = [], [], [], [], [], []
    if synthetic:
        for i, s in enumerate(make_scenes(synthetic, seed, *size)):
            name = f"synthetic_{i:05d}"
            if split == "all" or is_validation(name, val_fraction) == (split == "val"):
                names.append(name)
                irs.append(s.ir)
                viss.append(s.vis)
                boxes.append(s.boxes)
                ids.append(s.classes)
                masks.append(s.mask)
        classes = list(DETECTION_CLASSES if task == "detection" else CLASSES)
    else:
        classes = list(classes or (MSRS_CLASSES if task == "segmentation" else ()))
        for spec in specs:
            a_dir, b_dir = resolve_layout(spec)
            root = a_dir.parent
            for p in pair_paths(a_dir, b_dir)[0]:
                if split != "all" and is_validation(p.name, val_fraction) != (split == "val"):
                    continue
                ir, vis = load_unit_gray(p.a), load_unit_gray(p.b)
                if ir.shape != vis.shape:
                    raise ImageFileError(f"{p.a} and {p.b}: pair sizes differ; register them first")
                sy, sx = size[0] / ir.shape[0], size[1] / ir.shape[1]
                if task == "detection":
                    b, c = _read_boxes(root / labels, p.name, classes, ir.shape)
                    boxes.append(b * np.array([sx, sy, sx, sy], np.float32))
                    ids.append(c)
                elif task == "segmentation":
                    masks.append(_resize(read_label(root / LABEL_DIR / f"{p.name}.png", len(classes)), size, True))
                names.append(p.name)
                irs.append(_resize(ir, size))
                viss.append(_resize(vis, size))
    if not names:
        raise ImageFileError(f"no {split} pairs for {task} in {specs or 'synthetic scenes'}")
    return TaskData(
        names, np.stack(irs), np.stack(viss), classes, boxes, ids, np.stack(masks) if task == "segmentation" else None
    )


def sample_task_batch(
    data: TaskData, batch: int, crop: int, generator: torch.Generator, indices: list[int] | None = None
) -> dict:
    """Random crops (crop <= 0: whole images) with random horizontal flips; boxes follow, centres must stay inside."""
    idx = indices if indices is not None else torch.randint(len(data), (batch,), generator=generator).tolist()
    h, w = data.ir.shape[1:]
    ch, cw = (min(crop, h), min(crop, w)) if crop > 0 else (h, w)
    out: dict = {"ir": [], "vis": [], "boxes": [], "classes": [], "mask": [], "fused": [], "index": idx}
    for k in idx:
        y = int(torch.randint(h - ch + 1, (1,), generator=generator))
        x = int(torch.randint(w - cw + 1, (1,), generator=generator))
        flip = bool(torch.rand(1, generator=generator) < 0.5)
        sl = (slice(y, y + ch), slice(x, x + cw))
        extra = [a for a in (data.masks, data.fused) if a is not None]
        planes = [np.ascontiguousarray(p[k][sl][:, ::-1] if flip else p[k][sl]) for p in (data.ir, data.vis, *extra)]
        b, classes = None, None
        if data.boxes:
            b = data.boxes[k] - np.array([x, y, x, y], np.float32)
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            keep = (cx >= 0) & (cx < cw) & (cy >= 0) & (cy < ch)
            b = np.clip(b[keep], 0, [cw, ch, cw, ch]).astype(np.float32)
            if flip:
                b = np.stack([cw - b[:, 2], b[:, 1], cw - b[:, 0], b[:, 3]], 1).astype(np.float32)
            classes = data.labels[k][keep]
        add_sample(out, data, planes, b, classes)
    return stack_batch(out)


def add_sample(out: dict, data: TaskData, planes: list[np.ndarray], boxes: np.ndarray | None,
               classes: np.ndarray | None) -> None:
    """Append one sample (planes: IR, VIS, then the mask and the cached fused image when `data` has them)."""
    out["ir"].append(torch.from_numpy(planes[0]))
    out["vis"].append(torch.from_numpy(planes[1]))
    if data.masks is not None:
        out["mask"].append(torch.from_numpy(planes[2]).long())
    if data.fused is not None:
        out["fused"].append(torch.from_numpy(planes[-1]))
    if data.boxes:
        out["boxes"].append(boxes.reshape(-1, 4))
        out["classes"].append(classes)


def stack_batch(out: dict) -> dict:
    """The lists of add_sample as (N, 1, H, W) tensors; mask and fused None when absent."""
    out["ir"] = torch.stack(out["ir"])[:, None]
    out["vis"] = torch.stack(out["vis"])[:, None]
    out["mask"] = torch.stack(out["mask"]) if out["mask"] else None
    out["fused"] = torch.stack(out["fused"])[:, None] if out["fused"] else None
    return out
