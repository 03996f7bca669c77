"""`Fuser`, the one inference entry point (CLI, ROS node, bag evaluator, benchmarks).

Bundles (files, validation, errors, result types, device choice) live in `tim_core.bundle`; the names are
re-exported here for the callers that import them from `tim_core.runtime`.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .backends import build_backend, choose
from .bundle import (  # noqa: F401  (re-exported: the bundle API callers know from runtime)
    CARD,
    DEFAULT_MODEL,
    GENOTYPE,
    WEIGHTS,
    BundleError,
    Detection,
    FusionResult,
    InputError,
    load_bundle,
    models_dirs,
    pick_device,
    resolve_bundle,
    save_bundle,
)
from .color import NonFiniteError, luma, replace_luma, split_luma, to_unit
from .registration import IrToVisWarp
from .threads import torch_threads

MIN_SIDE = 8  # the network's reflect padding and /4 multi-scale cells need a few pixels per side
MAX_PIXELS = 4096 * 3072  # per image; larger inputs need several GB (set max_pixels to allow them)
SIZE_POLICIES = ("reject", "resize_ir", "resize_vis")


def check_size(height: int, width: int, role: str, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> None:
    """InputError 'too_small' / 'too_large' for an image size the network cannot or should not run."""
    if height == 0 or width == 0:
        raise InputError(f"{role} image is empty ({height}x{width})", "empty_image")
    if min(height, width) < min_side:
        raise InputError(f"{role} image is {width}x{height}; each side needs at least {min_side} pixels (min_side)",
                         "too_small")
    if height * width > max_pixels:
        raise InputError(f"{role} image is {width}x{height} = {height * width} pixels, more than "
                         f"max_pixels={max_pixels}; downscale it or raise max_pixels", "too_large")


def _check_image(img: np.ndarray, role: str, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{role} image must be a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise InputError(f"{role} image must be (H, W) or (H, W, 3), got shape {img.shape}", "bad_shape")
    check_size(img.shape[0], img.shape[1], role, min_side, max_pixels)


def _unit(img: np.ndarray, role: str, norm: str, value_range: tuple[float, float]) -> np.ndarray:
    try:
        return to_unit(img, norm, value_range)
    except NonFiniteError as e:
        raise InputError(f"{role} image: {e}", "non_finite") from None
    except ValueError as e:
        raise InputError(f"{role} image: {e}", "bad_pixel_type") from None


class Fuser:
    """Load a bundle once, then fuse (ir, vis) numpy pairs: `Fuser(model)(ir, vis) -> FusionResult`.

    `threads` (torch CPU threads, and ONNX Runtime's) applies to this Fuser's own calls only: each call sets it
    and restores the caller's count afterwards (tim_core.threads). None: torch's current count.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        device: str = "auto",
        half: bool = False,
        ir_norm: str = "percentile",
        ir_range: tuple[float, float] = (0.0, 65535.0),
        size_mismatch: str = "reject",
        threads: int | None = None,
        warmup: bool = True,
        score_threshold: float = 0.3,
        nms_iou: float = 0.5,
        backend: str = "torch",
        min_side: int = MIN_SIDE,
        max_pixels: int = MAX_PIXELS,
        registration: IrToVisWarp | None = None,
    ):
        if size_mismatch not in SIZE_POLICIES:
            raise ValueError(f"unknown size_mismatch {size_mismatch!r}; valid: {', '.join(SIZE_POLICIES)}")
        self.device = pick_device(device)
        backend = choose(backend, self.device.type, half)  # checks the name; auto -> the engine it picked here
        if half and self.device.type != "cuda":
            raise ValueError("half=True needs a CUDA device; use half=False on CPU")
        if backend != "torch" and (half or self.device.type != "cpu"):
            raise ValueError(f"backend {backend!r} runs float32 on CPU; use device 'cpu' or backend 'torch'")
        self.threads = threads or None
        self.net, self.card, self.extra = load_bundle(model)
        self.bundle = resolve_bundle(model)
        self.dtype = torch.float16 if half else torch.float32
        self.net = self.net.to(self.device, self.dtype).eval()
        if self.device.type == "cpu":  # oneDNN convolutions run faster channels-last (docs/performance.md)
            self.net = self.net.to(memory_format=torch.channels_last)
        self.backend = backend
        self.net = build_backend(backend, self.bundle, self.net, self.threads)  # tim_core.backends
        self.ir_norm, self.ir_range, self.size_mismatch = ir_norm, ir_range, size_mismatch
        self.min_side, self.max_pixels = max(int(min_side), MIN_SIDE), int(max_pixels)
        self.registration: IrToVisWarp | None = None  # IR onto the VIS grid before fusion; set after warm-up
        self.heads = None  # task heads (detection / segmentation / enhancement) listed in card["heads"]
        if self.card.get("heads"):
            from .tasks.heads import HeadError, TaskHeads

            try:
                self.heads = TaskHeads(
                    self.card, self.extra, str(self.bundle / WEIGHTS), self.device, self.dtype, score_threshold, nms_iou
                )
            except HeadError as e:
                raise BundleError(str(e)) from None
        if warmup:
            self(np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8))
        self.registration = registration  # may be replaced between calls (the node's calibrated mode does)

    def _prepare(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
        """(IR plane, VIS luma plane, both float32 [0, 1] on one pixel grid; VIS R, G, B planes or None)."""
        ir_u, vis_y, planes = self._normalise(ir, vis)
        return self._align(ir_u, vis_y, planes)

    def _normalise(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
        """IR plane and VIS luma in [0, 1]; a colour VIS also as its R, G, B planes in 0..255 (uint8 as it came,
        else float32), whose chroma the output keeps."""
        _check_image(ir, "infrared", self.min_side, self.max_pixels)
        _check_image(vis, "visible", self.min_side, self.max_pixels)
        ir_u = _unit(ir, "infrared", self.ir_norm, self.ir_range)
        if ir_u.ndim == 3:
            ir_u = luma(ir_u)
        if vis.ndim == 2:
            return ir_u, _unit(vis, "visible", "minmax", self.ir_range), None
        if vis.dtype == np.uint8:  # the camera's own scale: no float copy, no division, no clipping
            planes, vis_y = split_luma(vis)
        else:
            rgb = _unit(vis, "visible", "minmax", self.ir_range)
            planes, vis_y = split_luma(np.multiply(rgb, np.float32(255.0), out=rgb if rgb is not vis else None))
        return ir_u, vis_y, planes

    def _align(self, ir_u: np.ndarray, vis_y: np.ndarray, planes: list[np.ndarray] | None):
        if self.registration is not None:  # sizes may differ: the warp puts IR on the VIS grid
            ir_u = self.registration.warp(ir_u, vis_y)
        elif ir_u.shape != vis_y.shape:
            if self.size_mismatch == "reject":
                raise InputError(
                    f"infrared {ir_u.shape[:2]} and visible {vis_y.shape[:2]} sizes differ; "
                    "register the cameras or set size_mismatch to resize_ir / resize_vis",
                    "size_mismatch",
                )
            if self.size_mismatch == "resize_ir":
                ir_u = cv2.resize(ir_u, vis_y.shape[::-1], interpolation=cv2.INTER_LINEAR)
            else:
                size = ir_u.shape[::-1]
                vis_y = cv2.resize(vis_y, size, interpolation=cv2.INTER_LINEAR)
                if planes is not None:
                    planes = [cv2.resize(c, size, interpolation=cv2.INTER_LINEAR) for c in planes]
        return ir_u, vis_y, planes

    def fuse_luma(self, ir_u: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        """Run N_F on two float32 [0, 1] (H, W) planes; returns the fused luma in [0, 1]."""
        to = {"device": self.device, "dtype": self.dtype}
        with torch_threads(self.threads), torch.inference_mode():
            a = torch.from_numpy(np.ascontiguousarray(ir_u))[None, None].to(**to)
            b = torch.from_numpy(np.ascontiguousarray(vis_y))[None, None].to(**to)
            y = self.net(a, b).clamp_(0.0, 1.0)
            return y[0, 0].float().cpu().numpy()

    def infer(self, ir_u: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        """fuse_luma, then the bundle's task heads when it has any: the node's model and tasks stages per frame
        (what `tim bench` times); returns the fused luma."""
        fused_y = self.fuse_luma(ir_u, vis_y)
        if self.heads is not None:
            with torch_threads(self.threads):
                fused_y = self.heads(ir_u, vis_y, fused_y)[0]
        return fused_y

    def __call__(self, ir: np.ndarray, vis: np.ndarray) -> FusionResult:
        with torch_threads(self.threads):
            return self._fuse(ir, vis)

    def _fuse(self, ir: np.ndarray, vis: np.ndarray) -> FusionResult:
        t0 = time.perf_counter()
        ir_u, vis_y, planes = self._normalise(ir, vis)
        t_normalised = time.perf_counter()
        ir_u, vis_y, planes = self._align(ir_u, vis_y, planes)
        t1 = time.perf_counter()
        fused_y = self.fuse_luma(ir_u, vis_y)
        if self.registration is not None:
            self.registration.fill(fused_y, vis_y, ir.shape[:2])  # what the IR camera does not see: visible only
        t2 = time.perf_counter()
        mask, detections = None, []
        if self.heads is not None:
            fused_y, mask, detections = self.heads(ir_u, vis_y, fused_y)
        t_tasks = time.perf_counter()
        if planes is not None:  # the visible chroma with the fused luma, rounded to uint8 in the same pass
            out = replace_luma(planes, vis_y, fused_y)
        else:
            np.multiply(fused_y, 255.0, out=fused_y)  # in place: fresh temporaries cost page faults
            fused_y += 0.5
            out = fused_y.astype(np.uint8)
        t3 = time.perf_counter()
        # prepare = normalise (to float, and the VIS luma) + align; finish = ycbcr (colour: the fused luma put into
        # the visible image, rounded to uint8 in the same pass) or to_uint8 (grey)
        finish = (t3 - t_tasks) * 1e3
        timings = {"prepare": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "finish": finish,
                   "normalise": (t_normalised - t0) * 1e3, "ycbcr": finish if planes is not None else 0.0,
                   "to_uint8": 0.0 if planes is not None else finish}
        if self.heads is not None:
            timings["tasks"] = (t_tasks - t2) * 1e3
        return FusionResult(out, mask, detections, timings)
