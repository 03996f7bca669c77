"""Box annotations in and out: YOLO txt and Pascal VOC xml readers, COCO results, COCO-style mAP.

Boxes are numpy (n, 4) float32 (x1, y1, x2, y2) in pixels, classes (n,) int64 indices into a class list.
mAP@0.5, mAP@0.5:0.95, per-class AP and precision-recall curves come from faster-coco-eval (the COCO protocol:
101-point interpolated AP, averaged over the classes that have ground truth).
"""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


class LabelError(ValueError):
    """An annotation file that cannot be read; the message names the file and the line or field."""


def read_yolo(path: str | Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """'class cx cy w h' lines normalised by the image size -> (boxes in pixels, classes); empty file: none."""
    path = Path(path)
    boxes, classes = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            c, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
        except (ValueError, TypeError):
            raise LabelError(f"{path}:{n}: expected 'class cx cy w h', got {line.strip()!r}") from None
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
        classes.append(c)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def read_voc(path: str | Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A Pascal VOC xml -> (boxes in pixels, class indices into `classes`, (width, height))."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, FileNotFoundError) as e:
        raise LabelError(f"{path}: not a readable VOC xml ({e})") from None
    size = root.find("size")
    wh = (int(size.findtext("width", "0")), int(size.findtext("height", "0"))) if size is not None else (0, 0)
    boxes, ids = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            raise LabelError(f"{path}: class {name!r} is not in the class list {classes}; add it to `classes`")
        bb = obj.find("bndbox")
        if bb is None:
            raise LabelError(f"{path}: object {name!r} has no bndbox")
        boxes.append(tuple(float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")))
        ids.append(classes.index(name))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(ids, np.int64), wh


def coco_results(image_id: str | int, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> list[dict]:
    """Detections of one image in the COCO results format (bbox = [x, y, w, h] in pixels)."""
    return [
        {
            "image_id": image_id,
            "category_id": int(c),
            "bbox": [
                round(float(b[0]), 2),
                round(float(b[1]), 2),
                round(float(b[2] - b[0]), 2),
                round(float(b[3] - b[1]), 2),
            ],
            "score": round(float(s), 5),
        }
        for b, s, c in zip(boxes, scores, classes)
    ]


def coco_map(
    ground_truth: list[tuple[np.ndarray, np.ndarray]],
    predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
) -> dict[str, float]:
    """{'map50', 'map'} (mAP@0.5, mAP@0.5:0.95) of per-image predictions (boxes, scores, classes) vs truths."""
    full = coco_evaluation(ground_truth, predictions, [str(c) for c in range(num_classes)])
    return {"map50": full["map50"], "map": full["map"]}


def coco_evaluation(
    ground_truth: list[tuple[np.ndarray, np.ndarray]],
    predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: list[str],
) -> dict:
    """mAP@0.5 ('map50'), mAP@0.5:0.95 ('map'), per-class AP at both ('per_class_ap50', 'per_class_ap': NaN for a
    class without ground truth) and per-class precision-recall curves at IoU 0.5 ('pr_curve': COCO's 101 recall
    points, the interpolated precision and the score threshold that reaches each point; precision 0 and score
    None past the highest recall reached)."""
    from faster_coco_eval import COCO, COCOeval_faster

    nan = float("nan")
    empty = {c: nan for c in classes}
    images, annotations, results = [], [], []
    for i, ((g_boxes, g_cls), (p_boxes, p_scores, p_cls)) in enumerate(zip(ground_truth, predictions)):
        images.append({"id": i})
        for b, c in zip(g_boxes, g_cls):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for r in coco_results(i, p_boxes, p_scores, p_cls):
            results.append({**r, "category_id": r["category_id"] + 1})  # COCO ids start at 1
    if not annotations:
        return {"map50": nan, "map": nan, "per_class_ap50": empty, "per_class_ap": empty, "pr_curve": {}}
    present = {int(a["category_id"]) - 1 for a in annotations}
    if not results:
        zero = {c: (0.0 if k in present else nan) for k, c in enumerate(classes)}
        return {"map50": 0.0, "map": 0.0, "per_class_ap50": zero, "per_class_ap": zero, "pr_curve": {}}
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
    }
    gt.createIndex()
    with contextlib.redirect_stdout(io.StringIO()):  # the summary table is printed, we return the numbers
        ev = COCOeval_faster(gt, gt.loadRes(results), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision / scores: (IoU thresholds, 101 recall points, classes, area ranges, max detections); -1 = no truth
    precision, scores = ev.eval["precision"][:, :, :, 0, -1], ev.eval["scores"][:, :, :, 0, -1]
    recall = [round(float(r), 2) for r in ev.params.recThrs]
    per50, per, curves = {}, {}, {}
    for k, name in enumerate(classes):
        if k not in present:
            per50[name] = per[name] = nan
            continue
        per50[name] = float(precision[0, :, k].mean())
        per[name] = float(precision[:, :, k].mean())
        reached = precision[0, :, k] > 0
        curves[name] = {
            "recall": recall,
            "precision": [round(float(p), 5) for p in precision[0, :, k]],
            "score": [round(float(s), 5) if ok else None for s, ok in zip(scores[0, :, k], reached)],
        }
    return {"map50": float(max(ev.stats[1], 0.0)), "map": float(max(ev.stats[0], 0.0)),
            "per_class_ap50": per50, "per_class_ap": per, "pr_curve": curves}
