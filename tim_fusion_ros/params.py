"""The node's parameters: defaults read from config/fusion.yaml (their one home), descriptions, ranges, checks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

CHOICES = {
    "reference_camera": ("vis", "ir"),
    "size_mismatch": ("resize_ir", "resize_vis", "reject"),
    "ir_normalization": ("minmax", "percentile", "fixed"),
    "input_transport": ("raw", "compressed"),
    "backend": ("torch", "onnxruntime"),
}
RANGES = {  # name: (low, high), inclusive
    "threads": (0, 256), "sync_slop": (0.0, 10.0), "sync_queue_size": (1, 1000), "sync_watchdog": (0.1, 3600.0),
    "score_threshold": (0.0, 1.0), "nms_iou": (0.0, 1.0), "diagnostic_period": (0.05, 60.0),
    "expected_rate_hz": (0.1, 1000.0),
}
DESCRIPTIONS = {
    "use_sim_time": "stamps from /clock (bag replay)",
    "autostart": "configure and activate on start (false: wait for lifecycle transitions)",
    "model": "model bundle folder or shipped model name",
    "device": "auto | cpu | cuda | cuda:N",
    "half": "FP16 inference (CUDA only)",
    "threads": "torch CPU threads (0: torch default)",
    "backend": "inference engine: torch | onnxruntime (CPU, float32)",
    "sync_slop": "max IR-VIS stamp difference for a pair, seconds",
    "sync_queue_size": "frames queued per camera while waiting for a partner",
    "sync_watchdog": "seconds without a pair (both cameras streaming) before a warning",
    "reference_camera": "camera whose header every output carries: vis | ir",
    "size_mismatch": "IR/VIS of different size: resize_ir | resize_vis | reject",
    "ir_normalization": "16-bit/float thermal to [0,1]: minmax | percentile | fixed",
    "ir_range": "[low, high] raw thermal range for ir_normalization=fixed",
    "input_transport": "raw | compressed",
    "publish_segmentation": "publish segmentation/* (bundle needs a segmentation head)",
    "publish_detections": "publish detections (bundle needs a detection head)",
    "score_threshold": "minimum detection score published",
    "nms_iou": "IoU for per-class non-maximum suppression",
    "diagnostic_period": "seconds between /diagnostics messages",
    "expected_rate_hz": "input rate; diagnostics warn below half of it",
}


def config_file() -> Path:
    """config/fusion.yaml of the source checkout, else of the installed package share."""
    for candidate in (Path(__file__).resolve().parents[1] / "config" / "fusion.yaml",
                      Path(sys.prefix) / "share" / "tim_fusion_ros" / "config" / "fusion.yaml"):
        if candidate.is_file():
            return candidate
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory("tim_fusion_ros")) / "config" / "fusion.yaml"
    except Exception:  # not installed through ament: report the paths we tried
        raise FileNotFoundError("config/fusion.yaml not found in the source tree or share/tim_fusion_ros; "
                                "reinstall the package") from None


def load_defaults(path: Path | None = None) -> dict[str, Any]:
    """The ros__parameters mapping of fusion.yaml."""
    data = yaml.safe_load((path or config_file()).read_text())
    return data["/**"]["ros__parameters"]


def check(values: dict[str, Any]) -> list[str]:
    """Problems with a full parameter set, each naming the parameter and the valid values."""
    problems = []
    for name, choices in CHOICES.items():
        if values[name] not in choices:
            problems.append(f"{name}={values[name]!r} is not one of {', '.join(choices)}")
    for name, (low, high) in RANGES.items():
        if not low <= values[name] <= high:
            problems.append(f"{name}={values[name]!r} is outside [{low}, {high}]")
    device = str(values["device"])
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        problems.append(f"device={device!r} is not one of auto, cpu, cuda, cuda:N")
    rng = values["ir_range"]
    if len(rng) != 2 or not rng[0] < rng[1]:
        problems.append(f"ir_range={list(rng)!r} must be [low, high] with low < high")
    return problems
