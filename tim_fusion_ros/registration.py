"""The IR -> VIS warp the node applies, from its registration parameters (and, when calibrated, camera_info).

registration: homography  one fixed warp, from registration_file (written by `tim register`) or ir_to_vis_homography.
registration: calibrated  H = K_vis (R + t n^T / d) K_ir^-1 from the K of ir/camera_info and vis/camera_info and the
                          parameters R, t, d (tim_core.registration.plane_homography); rebuilt when a K changes. Until
                          both camera_info topics have delivered, pairs are dropped as `no_camera_info`. By default
                          the images are taken as rectified (image_proc) and K alone is used; with
                          registration_undistort the topics carry raw images and the warp also removes both lenses'
                          distortion (camera_info's d, plumb_bob or rational_polynomial), in the same remap table.
Online refinement (registration_refine_every > 0): every N-th fused pair, after it is published, the current
homography is refined on that pair by NGF (tim_core.rig_search.refine_homography) within
registration_refine_budget_ms, and taken only when the NGF similarity improved and the IR corners stay within
registration_refine_max_px of the configured homography (a featureless or misleading scene cannot drag it away).
No ROS import: camera_info messages are read through their fields (k, d, distortion_model, width, height).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tim_core.bundle import InputError
from tim_core.registration import (
    DISTORTION_MODELS,
    IrToVisWarp,
    Lens,
    RegistrationError,
    corner_error,
    load_registration,
    plane_homography,
)
from tim_core.rig_search import refine_homography

from .params import FusionParams

REFINE_WIDTH = 320  # VIS px of the online refinement level: ~0.2-0.7 VIS px from the optimum at 640 px (measured)


def file_problems(p: FusionParams) -> list[str]:
    """Problems of the registration file the parameters name (read on configure and activate)."""
    if p.registration != "homography" or not p.registration_file:
        return []
    try:
        load_registration(p.registration_file)
    except RegistrationError as e:
        return [f"registration_file: {e}"]
    return []


def _lens(info: Any, camera: str) -> Lens:
    """The Lens of one camera_info (registration_undistort); InputError bad_camera_info when it cannot be used."""
    model, d = info.distortion_model, list(info.d)
    lengths = DISTORTION_MODELS.get(model)
    if lengths is None or len(d) not in lengths:
        raise InputError(f"registration_undistort: {camera}/camera_info has distortion_model {model!r} with {len(d)} "
                         f"coefficients; the warp applies {', '.join(DISTORTION_MODELS)} (5 and 8 coefficients). "
                         "Rectify that camera (image_proc) and set registration_undistort: false", "bad_camera_info")
    try:
        return Lens.checked(info.k, d, f"{camera}/camera_info")
    except RegistrationError as e:
        raise InputError(f"registration_undistort: {e}", "bad_camera_info") from None


class NodeRegistration:
    """Which IrToVisWarp (or None) the Fuser gets for the next pair."""

    def __init__(self, p: FusionParams):
        self.mode = p.registration
        self.rotation, self.translation = p.ir_to_vis_rotation, p.ir_to_vis_translation
        self.distance_m = p.registration_distance_m or math.inf  # 0: the scene is far compared with the baseline
        self.undistort = p.registration_undistort
        self._warp: IrToVisWarp | None = None
        self._calibration: tuple | None = None  # the camera_info fields the calibrated warp was built from
        self.refine_every, self.refine_budget_ms = p.registration_refine_every, p.registration_refine_budget_ms
        self.refine_max_px = p.registration_refine_max_px
        self._reference: np.ndarray | None = None  # the configured homography: refinements stay near it
        self._pairs_seen = self.refine_tries = self.refinements = 0  # refinements: updates taken
        self.similarity: float | None = None  # NGF S of the current warp on the last pair refined
        self.refine_ms = self.moved_px = None  # the last refinement's time; its corners' distance from _reference
        if self.mode == "homography":
            reg = load_registration(p.registration_file) if p.registration_file else None
            self._warp = (IrToVisWarp.from_registration(reg) if reg is not None
                          else IrToVisWarp(np.asarray(p.ir_to_vis_homography)))
            self._reference = self._warp.homography
        if self.refine_every and self.mode != "none":  # the first autograd call pays ~1 s of set-up: not on a pair
            noise = np.random.default_rng(0).random((48, 64), np.float32)
            refine_homography(noise, noise, np.eye(3), budget_ms=1.0, width=64)

    def warp(self, camera_info: dict[str, Any]) -> IrToVisWarp | None:
        """The warp for the next pair; raises InputError (no_camera_info, bad_camera_info) in calibrated mode."""
        if self.mode != "calibrated":
            return self._warp
        ir, vis = camera_info.get("ir"), camera_info.get("vis")
        if ir is None or vis is None:
            missing = " and ".join(f"{c}/camera_info" for c, m in (("ir", ir), ("vis", vis)) if m is None)
            raise InputError(f"registration: calibrated needs {missing}; nothing received yet (publish the cameras' "
                             "calibration, or use registration: homography)", "no_camera_info")
        key = (tuple(ir.k), tuple(vis.k), ir.width, ir.height, vis.width, vis.height)
        if self.undistort:
            key += (tuple(ir.d), ir.distortion_model, tuple(vis.d), vis.distortion_model)
        if key != self._calibration:
            k_ir, k_vis = np.reshape(ir.k, (3, 3)), np.reshape(vis.k, (3, 3))
            if min(k_ir[0, 0], k_ir[1, 1], k_vis[0, 0], k_vis[1, 1]) <= 0:
                raise InputError("registration: calibrated needs focal lengths > 0 in the K of ir/camera_info and "
                                 "vis/camera_info; calibrate both cameras", "bad_camera_info")
            lenses = (_lens(ir, "ir"), _lens(vis, "vis")) if self.undistort else (None, None)
            h = plane_homography(k_ir, k_vis, np.reshape(self.rotation, (3, 3)), self.translation, self.distance_m)
            self._warp = IrToVisWarp(h, (ir.width, ir.height) if ir.width else None,
                                     (vis.width, vis.height) if vis.width else None, *lenses)
            self._calibration, self._reference = key, h  # a new calibration restarts the refinement from it
        return self._warp

    def refine(self, ir: np.ndarray, vis: np.ndarray) -> float | None:
        """Every refine_every-th pair (decoded IR and VIS, already fused): refine the warp on it; ms spent or None."""
        warp = self._warp
        if not self.refine_every or warp is None:
            return None
        self._pairs_seen += 1
        if self._pairs_seen % self.refine_every:
            return None
        r = refine_homography(ir, vis, warp.homography, self.refine_budget_ms, REFINE_WIDTH)
        ir_size = (ir.shape[1], ir.shape[0])
        moved = corner_error(self._reference, r.homography, ir_size)
        self.refine_tries += 1
        if r.similarity > r.similarity_before and moved <= self.refine_max_px:
            self._warp = warp.with_homography(r.homography)  # the next pair fuses with it (lenses kept)
            self.refinements += 1
            self.similarity, self.moved_px = r.similarity, moved
        else:
            self.similarity = r.similarity_before
            self.moved_px = corner_error(self._reference, warp.homography, ir_size)
        self.refine_ms = r.elapsed_ms
        return r.elapsed_ms

    def diagnostic_values(self) -> dict[str, object]:
        """The current homography and, with refinement on, its NGF residual and how often it was refined."""
        if self._warp is None:
            return {}
        values: dict[str, object] = {"registration_homography": ", ".join(f"{v:.6g}" for v in
                                                                          self._warp.homography.ravel())}
        if self.refine_every:
            values.update(registration_refine_tries=self.refine_tries, registration_refinements=self.refinements)
            if self.similarity is not None:
                values.update(registration_similarity=self.similarity, registration_residual=1.0 - self.similarity,
                              registration_moved_px=self.moved_px, registration_refine_ms=self.refine_ms)
        return values
