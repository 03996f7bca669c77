"""What a detection validation leaves on disk: per-class precision-recall curves (JSON + SVG) and the card summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..files import write_text_atomic
from ..svgplot import svg_line_plot

PR_JSON, PR_SVG = "pr_curve.json", "pr_curve.svg"


def _finite(v: float) -> float | None:
    return round(v, 5) if math.isfinite(v) else None  # NaN (a class without ground truth) as null: strict JSON


def detection_summary(metrics: dict) -> dict:
    """mAP@0.5, mAP@0.5:0.95 and per-class AP of `evaluate_task`'s detection metrics (None: class not present)."""
    return {
        "map50": _finite(metrics["map50"]),
        "map50_95": _finite(metrics["map"]),
        "per_class_ap50": {c: _finite(v) for c, v in metrics["per_class_ap50"].items()},
        "per_class_ap50_95": {c: _finite(v) for c, v in metrics["per_class_ap"].items()},
    }


def write_pr_curves(metrics: dict, folder: str | Path, title: str) -> Path:
    """FOLDER/pr_curve.json (summary + per-class recall, precision, score at IoU 0.5) and FOLDER/pr_curve.svg."""
    folder = Path(folder)
    curves = metrics["pr_curve"]
    write_text_atomic(folder / PR_JSON, json.dumps({"iou": 0.5, **detection_summary(metrics), "curves": curves}) + "\n")
    series = {
        f"{name} AP50 {metrics['per_class_ap50'][name]:.3f}": (curve["recall"], curve["precision"])
        for name, curve in curves.items()
    }
    svg_line_plot(series, folder / PR_SVG, f"{title}: mAP@0.5 {metrics['map50']:.3f}", "recall",
                  "precision (IoU 0.5)", xlim=(0.0, 1.0), ylim=(0.0, 1.0))
    return folder / PR_JSON


def detection_eval_card(metrics: dict, pr_file: str) -> dict:
    """The card's `detection_eval`: the summary and the PR curve file's path relative to the bundle."""
    return {**detection_summary(metrics), "pr_curve": pr_file}
