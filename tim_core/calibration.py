"""Stereo calibration of an IR and a VIS camera from a (heated) checkerboard both cameras see: corners, the K of
each camera, R and t of X_vis = R X_ir + t, and the IR -> VIS homography for a scene plane (the file
`tim fuse --registration` and the node's registration_file read).

A heated board is seen in IR with its contrast inverted (the dark squares absorb more and get warmer) and blurred,
so each image is searched in both polarities. Corners are put in one order in both images of a pair: right-handed
in the image (row direction x column direction points into the image), and the IR rows running left to right; the
VIS rows run the same way as the IR rows (the two cameras are mounted side by side, not rolled against each other
by more than 90 degrees). A pattern with as many corner columns as rows is refused: its order is ambiguous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .color import to_unit
from .registration import Lens, Registration, plane_homography, registration_yaml, yaml_values

MIN_PAIRS = 5  # pairs with the board found in both images; 10-20 poses (tilted, all over the image) are better
FIND_FLAGS = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
CALIB_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-9)


class CalibrationError(ValueError):
    """Board images a calibration cannot use; the message names the pairs and the fix."""


@dataclass(frozen=True)
class StereoCalibration:
    """Both cameras' intrinsics and the IR -> VIS pose; sizes are (width, height), RMS errors in pixels."""

    k_ir: np.ndarray
    dist_ir: np.ndarray
    k_vis: np.ndarray
    dist_vis: np.ndarray
    rotation: np.ndarray  # R of X_vis = R X_ir + t
    translation: np.ndarray  # t, metres
    ir_size: tuple[int, int]
    vis_size: tuple[int, int]
    rms_ir: float
    rms_vis: float
    rms_stereo: float
    pairs: int  # pairs with the board in both images (the stereo pose); each camera's K may use more views

    def homography(self, distance_m: float = math.inf) -> np.ndarray:
        """IR px -> VIS px for the fronto-parallel plane `distance_m` from the IR camera (inf: far scenes)."""
        return plane_homography(self.k_ir, self.k_vis, self.rotation, self.translation, distance_m)


def board_points(pattern: tuple[int, int], square_m: float) -> np.ndarray:
    """(cols * rows, 3) float32 inner-corner coordinates on the board plane, metres, row by row."""
    cols, rows = pattern
    xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
    return np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1).astype(np.float32) * np.float32(square_m)


def to_gray8(img: np.ndarray) -> np.ndarray:
    """uint8 grey for corner search: colour to luma, 16-bit thermal stretched to its 1..99 percentiles."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    if grey.dtype == np.uint8:
        return grey
    return np.round(to_unit(grey, "percentile") * 255.0).astype(np.uint8)


def _directions(corners: np.ndarray, pattern: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean row direction (first to last corner of a row) and column direction of (N, 1, 2) corners."""
    c = corners.reshape(pattern[1], pattern[0], 2)
    return (c[:, -1] - c[:, 0]).mean(0), (c[-1] - c[0]).mean(0)


def _right_handed(corners: np.ndarray, pattern: tuple[int, int]) -> np.ndarray:
    row, col = _directions(corners, pattern)
    if row[0] * col[1] - row[1] * col[0] < 0:  # mirrored: reverse every row
        corners = corners.reshape(pattern[1], pattern[0], 1, 2)[:, ::-1].reshape(-1, 1, 2)
    return np.ascontiguousarray(corners)


def find_corners(img: np.ndarray, pattern: tuple[int, int]) -> np.ndarray | None:
    """(cols * rows, 1, 2) float32 sub-pixel inner corners, right-handed in the image; None if not found.

    The image is searched as it is and inverted (a heated board's squares are reversed in IR)."""
    grey = to_gray8(img)
    for candidate in (grey, 255 - grey):
        found, corners = cv2.findChessboardCorners(candidate, pattern, flags=FIND_FLAGS)
        if found:
            break
    else:
        return None
    c = corners.reshape(pattern[1], pattern[0], 2)
    spacing = min(np.linalg.norm(np.diff(c, axis=1), axis=2).min(), np.linalg.norm(np.diff(c, axis=0), axis=2).min())
    half = int(np.clip(spacing * 0.4, 2, 11))  # the search window stays inside one square
    corners = cv2.cornerSubPix(candidate, corners, (half, half), (-1, -1), SUBPIX_CRITERIA)
    return _right_handed(corners.reshape(-1, 1, 2), pattern)


def order_pair(ir: np.ndarray, vis: np.ndarray, pattern: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Both corner sets in the same board order: IR rows left to right, VIS rows the way the IR rows run."""
    ir_row, _ = _directions(ir, pattern)
    if ir_row[0] < 0:
        ir = np.ascontiguousarray(ir[::-1])  # the board seen upside down: the same corners turned by 180 degrees
        ir_row = -ir_row
    vis_row, _ = _directions(vis, pattern)
    if float(vis_row @ ir_row) < 0:
        vis = np.ascontiguousarray(vis[::-1])
    return ir, vis


def _calibrate_one(corners: list[np.ndarray], objects: np.ndarray, size: tuple[int, int], fit_distortion: bool):
    flags = cv2.CALIB_FIX_K3 if fit_distortion else (cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3
                                                     | cv2.CALIB_ZERO_TANGENT_DIST)
    rms, k, dist, _, _ = cv2.calibrateCamera([objects] * len(corners), corners, size, None, None, flags=flags,
                                             criteria=CALIB_CRITERIA)
    return float(rms), k, dist.ravel()


def calibrate_rig(detections: list[tuple[str, np.ndarray | None, np.ndarray | None]], pattern: tuple[int, int],
                  square_m: float, ir_size: tuple[int, int], vis_size: tuple[int, int],
                  fit_distortion: bool = True) -> StereoCalibration:
    """The stereo calibration from (pair name, IR corners or None, VIS corners or None) of each pair.

    Each camera's K from every view it found the board in, then R, t from the pairs found in both
    (cv2.stereoCalibrate with the IR camera first and the intrinsics fixed)."""
    both = [(name, ir, vis) for name, ir, vis in detections if ir is not None and vis is not None]
    if len(both) < MIN_PAIRS:
        missing = [f"{name} ({' and '.join(role for role, c in (('IR', ir), ('VIS', vis)) if c is None)})"
                   for name, ir, vis in detections if ir is None or vis is None]
        raise CalibrationError(
            f"a {pattern[0]}x{pattern[1]} checkerboard was found in both images of {len(both)} of {len(detections)} "
            f"pair(s), {MIN_PAIRS} needed; not found in: {', '.join(missing) or 'none'}. Check --pattern (inner "
            "corners, COLSxROWS: 9x6 for a board of 10x7 squares), that the whole board is inside both images, "
            "and that it shows contrast in IR (heat it); take 10-20 pairs with the board tilted and all over the image")
    objects = board_points(pattern, square_m)
    rms_ir, k_ir, dist_ir = _calibrate_one([ir for _, ir, _ in detections if ir is not None], objects, ir_size,
                                           fit_distortion)
    rms_vis, k_vis, dist_vis = _calibrate_one([vis for _, _, vis in detections if vis is not None], objects,
                                              vis_size, fit_distortion)
    ordered = [order_pair(ir, vis, pattern) for _, ir, vis in both]
    rms, _, _, _, _, rotation, translation, _, _ = cv2.stereoCalibrate(
        [objects] * len(both), [ir for ir, _ in ordered], [vis for _, vis in ordered], k_ir, dist_ir, k_vis, dist_vis,
        vis_size, flags=cv2.CALIB_FIX_INTRINSIC, criteria=CALIB_CRITERIA)
    return StereoCalibration(k_ir, dist_ir, k_vis, dist_vis, rotation, translation.ravel(), ir_size, vis_size,
                             rms_ir, rms_vis, float(rms), len(both))


def calibration_yaml(cal: StereoCalibration, distance_m: float, pattern: tuple[int, int], square_m: float) -> str:
    """The registration file (tim_core.registration's fields) plus the calibration it was computed from. With
    distortion fitted (not --no-distortion) it sets undistort: true, so the warp takes the cameras' raw images."""
    lenses = (Lens(cal.k_ir, cal.dist_ir), Lens(cal.k_vis, cal.dist_vis))
    if not (np.any(cal.dist_ir) or np.any(cal.dist_vis)):
        lenses = (None, None)
    reg = Registration(cal.homography(distance_m), cal.vis_size, cal.ir_size, None, "checkerboard", cal.pairs,
                       ir_lens=lenses[0], vis_lens=lenses[1])
    distance = ".inf" if math.isinf(distance_m) else f"{distance_m:.9g}"
    rectified = [] if lenses[0] is not None else [
        "undistort: false  # no distortion fitted (--no-distortion): the images are taken as rectified",
        f"k_ir: {yaml_values(cal.k_ir)}  # row-major 3x3 camera matrix of the IR camera, px",
        f"k_vis: {yaml_values(cal.k_vis)}  # row-major 3x3 camera matrix of the VIS camera, px",
    ]
    return registration_yaml(reg) + "\n".join([
        f"distance_m: {distance}  # the homography is exact for the plane this far from the IR camera (.inf: far "
        "scenes); `tim calibrate --distance` rewrites it",
        *rectified,
        f"ir_to_vis_rotation: {yaml_values(cal.rotation)}  # R of X_vis = R X_ir + t: the node parameter of that name",
        f"ir_to_vis_translation: {yaml_values(cal.translation)}  # t, metres: the node parameter of that name",
        f"rms_ir: {cal.rms_ir:.4f}  # px, reprojection error of the IR camera's calibration",
        f"rms_vis: {cal.rms_vis:.4f}  # px, VIS camera",
        f"rms_stereo: {cal.rms_stereo:.4f}  # px, both cameras with the common R, t",
        f"pattern: [{pattern[0]}, {pattern[1]}]  # inner corners, columns x rows",
        f"square_m: {square_m:.9g}  # side of one square, metres",
    ]) + "\n"
