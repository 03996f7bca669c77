"""The IR -> VIS warp the node applies, from its registration parameters (and, when calibrated, camera_info).

registration: homography  one fixed warp, from registration_file (written by `tim register`) or ir_to_vis_homography.
registration: calibrated  H = K_vis (R + t n^T / d) K_ir^-1 from the K of ir/camera_info and vis/camera_info and the
                          parameters R, t, d (tim_core.registration.plane_homography); rebuilt when a K changes. Until
                          both camera_info topics have delivered, pairs are dropped as `no_camera_info`. K is used as
                          given: publish rectified images (image_proc) and their camera_info, distortion is ignored.
No ROS import: camera_info messages are read through their fields (k, width, height).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tim_core.bundle import InputError
from tim_core.registration import IrToVisWarp, RegistrationError, load_registration, plane_homography

from .params import FusionParams


def file_problems(p: FusionParams) -> list[str]:
    """Problems of the registration file the parameters name (read on configure and activate)."""
    if p.registration != "homography" or not p.registration_file:
        return []
    try:
        load_registration(p.registration_file)
    except RegistrationError as e:
        return [f"registration_file: {e}"]
    return []


class NodeRegistration:
    """Which IrToVisWarp (or None) the Fuser gets for the next pair."""

    def __init__(self, p: FusionParams):
        self.mode = p.registration
        self.rotation, self.translation = p.ir_to_vis_rotation, p.ir_to_vis_translation
        self.distance_m = p.registration_distance_m or math.inf  # 0: the scene is far compared with the baseline
        self._warp: IrToVisWarp | None = None
        self._calibration: tuple | None = None  # the camera_info fields the calibrated warp was built from
        if self.mode == "homography":
            reg = load_registration(p.registration_file) if p.registration_file else None
            self._warp = (IrToVisWarp.from_registration(reg) if reg is not None
                          else IrToVisWarp(np.asarray(p.ir_to_vis_homography)))

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
        if key != self._calibration:
            k_ir, k_vis = np.reshape(ir.k, (3, 3)), np.reshape(vis.k, (3, 3))
            if min(k_ir[0, 0], k_ir[1, 1], k_vis[0, 0], k_vis[1, 1]) <= 0:
                raise InputError("registration: calibrated needs focal lengths > 0 in the K of ir/camera_info and "
                                 "vis/camera_info; calibrate both cameras", "bad_camera_info")
            h = plane_homography(k_ir, k_vis, np.reshape(self.rotation, (3, 3)), self.translation, self.distance_m)
            self._warp = IrToVisWarp(h, (ir.width, ir.height) if ir.width else None,
                                     (vis.width, vis.height) if vis.width else None)
            self._calibration = key
        return self._warp
