"""The node's parameters as a typed dataclass: defaults from config/fusion.yaml (their one home), descriptions,
ranges, when each change applies, and the checks. No ROS import: tested without a graph."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tim_core.backends import CHOICES as BACKEND_CHOICES
from tim_core.registration import RegistrationError, check_homography


@dataclass(frozen=True)
class FusionParams:
    """Every parameter the node declares; the values come from fusion.yaml and overrides, never from here."""

    autostart: bool
    use_sim_time: bool
    model: str
    device: str
    half: bool
    threads: int
    backend: str
    min_side: int
    max_pixels: int
    sync_slop: float
    sync_queue_size: int
    sync_watchdog: float
    clock_reset_threshold: float
    reference_camera: str
    size_mismatch: str
    ir_normalization: str
    ir_range: list[float]
    input_transport: str
    input_watchdog: float
    publish_segmentation: bool
    publish_detections: bool
    score_threshold: float
    nms_iou: float
    diagnostic_period: float
    expected_rate_hz: float
    registration: str
    registration_file: str
    ir_to_vis_homography: list[float]
    ir_to_vis_rotation: list[float]
    ir_to_vis_translation: list[float]
    registration_distance_m: float
    registration_undistort: bool
    registration_refine_every: int
    registration_refine_budget_ms: float
    registration_refine_max_px: float


NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FusionParams))
CHOICES = {
    "reference_camera": ("vis", "ir"),
    "size_mismatch": ("resize_ir", "resize_vis", "reject"),
    "ir_normalization": ("minmax", "percentile", "fixed"),
    "input_transport": ("raw", "compressed"),
    "backend": BACKEND_CHOICES,
    "registration": ("none", "homography", "calibrated"),
}
LISTS = ("ir_range", "ir_to_vis_homography", "ir_to_vis_rotation", "ir_to_vis_translation")  # double arrays
RANGES = {  # name: (low, high), inclusive
    "threads": (0, 256), "min_side": (1, 65535), "max_pixels": (1, 1 << 31),
    "sync_slop": (0.0, 10.0), "sync_queue_size": (1, 1000), "sync_watchdog": (0.1, 3600.0),
    "clock_reset_threshold": (0.01, 86400.0), "input_watchdog": (0.1, 3600.0),
    "score_threshold": (0.0, 1.0), "nms_iou": (0.0, 1.0), "diagnostic_period": (0.05, 60.0),
    "expected_rate_hz": (0.1, 1000.0), "registration_distance_m": (0.0, 1.0e6),
    "registration_refine_every": (0, 1_000_000), "registration_refine_budget_ms": (1.0, 60000.0),
    "registration_refine_max_px": (0.0, 10000.0),
}
DESCRIPTIONS = {
    "use_sim_time": "stamps from /clock (bag replay)",
    "autostart": "configure and activate on start (false: wait for lifecycle transitions)",
    "model": "model bundle folder or shipped model name",
    "device": "auto | cpu | cuda | cuda:N",
    "half": "FP16 inference (CUDA only)",
    "threads": "torch CPU threads (0: torch default)",
    "backend": "inference engine: auto | torch | onnxruntime | openvino | torch_compile (auto: openvino on CPU "
               "when installed, else torch; all but torch: CPU, float32; openvino needs pip install openvino; "
               "docs/performance.md compares them)",
    "min_side": "smallest image side accepted, pixels (smaller frames are dropped as too_small before decoding)",
    "max_pixels": "largest image accepted, width*height (larger frames are dropped as too_large before decoding)",
    "sync_slop": "max IR-VIS stamp difference for a pair, seconds",
    "sync_queue_size": "frames queued per camera while waiting for a partner",
    "sync_watchdog": "seconds without a pair (both cameras streaming) before a warning",
    "clock_reset_threshold": "a camera stamp this many seconds older than its last one is a clock reset: "
                             "pairing restarts (smaller steps back are dropped as stamp_backwards)",
    "reference_camera": "camera whose header every output carries: vis | ir",
    "size_mismatch": "IR/VIS of different size: resize_ir | resize_vis | reject",
    "ir_normalization": "16-bit/float thermal to [0,1]: minmax | percentile | fixed",
    "ir_range": "[low, high] raw thermal range for ir_normalization=fixed",
    "input_transport": "raw | compressed",
    "input_watchdog": "seconds an input topic may have publishers yet deliver nothing before a warning",
    "publish_segmentation": "publish segmentation/* (bundle needs a segmentation head)",
    "publish_detections": "publish detections (bundle needs a detection head)",
    "score_threshold": "minimum detection score published",
    "nms_iou": "IoU for per-class non-maximum suppression",
    "diagnostic_period": "seconds between /diagnostics messages",
    "expected_rate_hz": "input rate; diagnostics warn below half of it",
    "registration": "warp IR onto the VIS grid before fusion (outputs in the VIS camera's frame): none | homography "
                    "(ir_to_vis_homography or registration_file) | calibrated (camera_info K + R, t)",
    "registration_file": "YAML written by `tim register`; when set it replaces ir_to_vis_homography",
    "ir_to_vis_homography": "row-major 3x3 homography, IR pixel -> VIS pixel (registration: homography)",
    "ir_to_vis_rotation": "row-major 3x3 rotation R of X_vis = R X_ir + t (cv2.stereoCalibrate, IR camera first)",
    "ir_to_vis_translation": "[x, y, z] metres, t of X_vis = R X_ir + t",
    "registration_distance_m": "metres from the IR camera to the scene plane the calibrated homography is exact for "
                               "(0: infinity, H = K_vis R K_ir^-1)",
    "registration_undistort": "calibrated: the topics carry raw images; the warp removes both lenses' distortion with "
                              "camera_info's D (plumb_bob or rational_polynomial). false: rectified images, K alone",
    "registration_refine_every": "online refinement: every N-th fused pair, refine the homography on it by NGF and "
                                 "take it if the similarity improved (0: off); /diagnostics shows registration_*",
    "registration_refine_budget_ms": "time one refinement may take, ms (after the pair is published; the first "
                                     "L-BFGS step always runs, ~80 ms on one CPU core)",
    "registration_refine_max_px": "refinements may move the IR image corners at most this far from the configured "
                                  "homography, VIS px",
}
# When a change takes effect. live: at once, while active. activate: read when the model loads, so it may be
# set while the node is unconfigured or inactive. configure: read when topics are created, so only while
# unconfigured. start: read once by main(), read-only. use_sim_time is rclpy's own (live through its TimeSource).
APPLIES = {
    **dict.fromkeys(("model", "device", "half", "threads", "backend", "min_side", "max_pixels", "size_mismatch",
                     "ir_normalization", "ir_range", "registration", "registration_file", "ir_to_vis_homography",
                     "ir_to_vis_rotation", "ir_to_vis_translation", "registration_distance_m",
                     "registration_undistort", "registration_refine_every", "registration_refine_budget_ms",
                     "registration_refine_max_px"),
                    "activate"),
    **dict.fromkeys(("sync_queue_size", "input_transport"), "configure"),
    **dict.fromkeys(("autostart",), "start"),
    **dict.fromkeys(("use_sim_time", "sync_slop", "sync_watchdog", "clock_reset_threshold", "reference_camera",
                     "input_watchdog", "publish_segmentation", "publish_detections", "score_threshold", "nms_iou",
                     "diagnostic_period", "expected_rate_hz"), "live"),
}
APPLY_NOTES = {
    "live": "[live: a change applies at once]",
    "activate": "[applies on activate: set while unconfigured or inactive (deactivate first)]",
    "configure": "[applies on configure: set while unconfigured (deactivate, cleanup, then configure)]",
    "start": "[read-only: read once at start]",
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


def check(p: FusionParams) -> list[str]:
    """Problems with a full parameter set, each naming the parameter and the valid values."""
    problems = []
    for name, choices in CHOICES.items():
        if getattr(p, name) not in choices:
            problems.append(f"{name}={getattr(p, name)!r} is not one of {', '.join(choices)}")
    for name, (low, high) in RANGES.items():
        if not low <= getattr(p, name) <= high:
            problems.append(f"{name}={getattr(p, name)!r} is outside [{low}, {high}]")
    device = str(p.device)
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        problems.append(f"device={device!r} is not one of auto, cpu, cuda, cuda:N")
    rng = list(p.ir_range)
    if len(rng) != 2 or not rng[0] < rng[1]:
        problems.append(f"ir_range={rng!r} must be [low, high] with low < high")
    return problems + registration_problems(p)


def registration_problems(p: FusionParams) -> list[str]:
    """Problems of the registration parameters (the file itself is read on configure, see registration.py)."""
    problems = []
    if p.registration != "none" and p.reference_camera != "vis":
        problems.append(f"registration={p.registration!r} puts the fused image on the VIS grid: set reference_camera "
                        "to vis")
    if p.registration == "none" and p.registration_refine_every:
        problems.append(f"registration_refine_every={p.registration_refine_every} refines a registration: set "
                        "registration to homography or calibrated, or registration_refine_every to 0")
    try:
        check_homography(p.ir_to_vis_homography)
    except RegistrationError as e:
        problems.append(str(e))
    r = np.asarray(p.ir_to_vis_rotation, np.float64)
    if r.size != 9 or not np.isfinite(r).all() or not np.allclose(r.reshape(3, 3) @ r.reshape(3, 3).T, np.eye(3),
                                                                   atol=1e-3) or np.linalg.det(r.reshape(3, 3)) < 0:
        problems.append(f"ir_to_vis_rotation={list(p.ir_to_vis_rotation)!r} must be a row-major 3x3 rotation matrix "
                        "(orthonormal, determinant +1)")
    t = np.asarray(p.ir_to_vis_translation, np.float64)
    if t.size != 3 or not np.isfinite(t).all():
        problems.append(f"ir_to_vis_translation={list(p.ir_to_vis_translation)!r} must be [x, y, z] in metres")
    return problems


def refuse_change(current: FusionParams, changes: dict[str, Any], state: str) -> str | None:
    """Why a change of FusionParams fields is refused in lifecycle `state` (unconfigured | inactive | active)."""
    for name in changes:
        applies = APPLIES[name]
        if applies == "start" or (applies == "configure" and state != "unconfigured") or (
                applies == "activate" and state == "active"):
            return f"{name} cannot change while {state}: {APPLY_NOTES[applies]}"
    problems = check(dataclasses.replace(current, **changes))
    return "; ".join(problems) or None
