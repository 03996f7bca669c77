"""IR-to-VIS registration of one camera rig: the homography (from image pairs or from calibration), its YAML
file, and the warp of IR frames onto the VIS pixel grid that `Fuser` applies before fusion.

Convention everywhere: H maps IR pixel coordinates (x, y, 1) to VIS pixel coordinates, pixel centres at integer
coordinates (OpenCV's). Warping samples IR at H^-1 of every VIS pixel, so the fused image is on the VIS grid and
in the VIS camera's frame. VIS pixels the IR camera does not see are "uncovered": the network gets the VIS
luma there as its IR input, and the fused luma there is replaced by the VIS luma (visible only, exactly).

Lens distortion: with both cameras' `Lens` (K and OpenCV distortion coefficients) the warp takes raw images. H then
maps undistorted (ideal) IR pixels to undistorted VIS pixels, as a calibration's K_vis R K_ir^-1 does, and each
raw VIS pixel samples IR at distort_ir(H^-1 undistort_vis(p)): the fused image stays on the raw VIS grid, in the
VIS camera's own frame, and nothing is resampled twice. Without lenses the images are taken as rectified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from .bundle import InputError

# An estimate is trusted when (docs/registration_report.md measures these on real and unrelated pairs):
MIN_PEAK_Z = 2.9  # its coarse placement stands this many standard deviations above the median of all tried
MIN_SIMILARITY = 0.15  # its final NGF similarity is at least this (flat or featureless images score ~0)
MIN_COVERAGE = 0.2  # fraction of the VIS image the registered IR image must cover


class RegistrationError(ValueError):
    """A registration file or estimate that cannot be used; the message names the file or field and the fix."""


DISTORTION_MODELS = {"plumb_bob": (5,), "rational_polynomial": (8,)}  # ROS camera_info models the warp applies
_COEFFICIENTS = (4, 5, 8, 12, 14)  # the lengths OpenCV's distortion model accepts


@dataclass(frozen=True)
class Lens:
    """One camera's pinhole matrix K (3x3, px) and OpenCV distortion coefficients (k1, k2, p1, p2[, k3, ...])."""

    k: np.ndarray
    dist: np.ndarray

    @classmethod
    def checked(cls, k, dist, field: str) -> Lens:
        """A Lens from raw values; RegistrationError names `field` when K or the coefficients cannot be used."""
        try:
            km = np.asarray(k, np.float64).reshape(3, 3)
            d = np.asarray(dist, np.float64).ravel()
        except (TypeError, ValueError):
            raise RegistrationError(f"{field}: K must be 9 numbers (row-major 3x3) and the distortion a list of "
                                    "numbers") from None
        if not (np.isfinite(km).all() and np.isfinite(d).all()) or km[0, 0] <= 0 or km[1, 1] <= 0:
            raise RegistrationError(f"{field}: K needs finite values and focal lengths > 0 (calibrate the camera)")
        if d.size not in _COEFFICIENTS:
            raise RegistrationError(f"{field}: {d.size} distortion coefficients; OpenCV's model takes 4, 5, 8, 12 or "
                                    "14 (k1, k2, p1, p2[, k3[, k4, k5, k6]])")
        return cls(km, d)

    def undistort(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) raw pixel coordinates -> ideal (undistorted) pixel coordinates of the same K."""
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-6)
        if hasattr(cv2, "undistortImagePoints"):  # OpenCV >= 4.8
            out = cv2.undistortImagePoints(pts.reshape(-1, 1, 2), self.k, self.dist, criteria=criteria)
        else:  # older OpenCV (Humble's python3-opencv 4.5): the same iteration under its earlier name
            out = cv2.undistortPointsIter(pts.reshape(-1, 1, 2), self.k, self.dist, None, self.k, criteria)
        return out.reshape(-1, 2).astype(np.float64)

    def distort(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) ideal pixel coordinates -> raw pixel coordinates (the lens's projection)."""
        rays = np.linalg.solve(self.k, np.concatenate([pts, np.ones((len(pts), 1))], 1).T).T
        out, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), self.k, self.dist)
        return out.reshape(-1, 2).astype(np.float64)


@dataclass(frozen=True)
class Registration:
    """One rig's IR -> VIS homography and what it applies to."""

    homography: np.ndarray  # 3x3, IR px -> VIS px, h33 = 1
    vis_size: tuple[int, int] | None = None  # (width, height) of the VIS images it maps onto; None: any
    ir_size: tuple[int, int] | None = None  # (width, height) of the IR images it maps from; None: any
    residual: float | None = None  # 1 - NGF similarity reached (0: every edge direction agrees)
    method: str = "manual"  # ngf | calibrated | manual
    pairs: int = 0  # image pairs it was estimated from
    converged: bool = True
    message: str = ""  # why it did not converge
    ir_lens: Lens | None = None  # both set: the warp takes raw (distorted) images and H maps ideal pixels
    vis_lens: Lens | None = None


def check_homography(values, field: str = "ir_to_vis_homography") -> np.ndarray:
    """A 3x3 float64 homography (h33 = 1) from 9 row-major values; RegistrationError names the field otherwise."""
    h = np.asarray(values, dtype=np.float64)
    if h.size != 9 or not np.isfinite(h).all():
        raise RegistrationError(f"{field} must be 9 finite numbers (row-major 3x3), got {list(np.ravel(values))}")
    h = h.reshape(3, 3)
    if abs(h[2, 2]) < 1e-12 or abs(np.linalg.det(h / h[2, 2])) < 1e-9:
        raise RegistrationError(f"{field} is singular (or h33 = 0): it cannot map one image onto another")
    return h / h[2, 2]


def _size(value, field: str, path: Path) -> tuple[int, int] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise RegistrationError(f"{path}: {field} must be [width, height] in pixels, got {value!r}")
    return int(value[0]), int(value[1])


def load_registration(path: str | Path) -> Registration:
    """Read a file written by `tim register` or `tim calibrate` (or by hand: only ir_to_vis_homography is required)."""
    path = Path(path)
    if not path.is_file():
        raise RegistrationError(f"{path}: no such registration file (make one with `tim register` or `tim calibrate`)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RegistrationError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or "ir_to_vis_homography" not in data:
        raise RegistrationError(f"{path}: no ir_to_vis_homography field (9 row-major values, IR px -> VIS px)")
    try:
        h = check_homography(data["ir_to_vis_homography"])
    except (RegistrationError, TypeError, ValueError) as e:
        raise RegistrationError(f"{path}: {e}") from None
    lenses: tuple[Lens | None, Lens | None] = (None, None)
    if data.get("undistort"):
        missing = [f for f in ("k_ir", "dist_ir", "k_vis", "dist_vis") if f not in data]
        if missing:
            raise RegistrationError(f"{path}: undistort: true needs {', '.join(missing)} (as `tim calibrate` writes "
                                    "them), or set undistort: false for rectified images")
        try:
            lenses = (Lens.checked(data["k_ir"], data["dist_ir"], "k_ir/dist_ir"),
                      Lens.checked(data["k_vis"], data["dist_vis"], "k_vis/dist_vis"))
        except RegistrationError as e:
            raise RegistrationError(f"{path}: {e}") from None
    return Registration(h, _size(data.get("vis_size"), "vis_size", path), _size(data.get("ir_size"), "ir_size", path),
                        data.get("residual"), str(data.get("method", "manual")), int(data.get("pairs", 0)),
                        ir_lens=lenses[0], vis_lens=lenses[1])


def registration_yaml(reg: Registration) -> str:
    """The file text of a registration (YAML with comments saying what each field is)."""
    values = ", ".join(f"{v:.9g}" for v in reg.homography.ravel())
    lines = [
        "# IR-to-VIS registration of one camera rig (written by `tim register` or `tim calibrate`; read by",
        "# `tim fuse --registration` and by the fusion node's registration_file parameter).",
        f"ir_to_vis_homography: [{values}]  # row-major 3x3: IR px (x, y, 1) -> VIS px, pixel centres at integers",
    ]
    if reg.vis_size:
        lines.append(f"vis_size: [{reg.vis_size[0]}, {reg.vis_size[1]}]  # width, height of the VIS images")
    if reg.ir_size:
        lines.append(f"ir_size: [{reg.ir_size[0]}, {reg.ir_size[1]}]  # width, height of the IR images")
    if reg.residual is not None:
        lines.append(f"residual: {reg.residual:.4f}  # 1 - NGF similarity reached (0: every edge direction agrees)")
    lines += [f"method: {reg.method}", f"pairs: {reg.pairs}  # image pairs it was estimated from"]
    if reg.ir_lens is not None and reg.vis_lens is not None:
        lines += ["undistort: true  # the images are raw: the warp removes both lenses' distortion, H maps ideal px"]
        for name, lens in (("ir", reg.ir_lens), ("vis", reg.vis_lens)):
            lines += [f"k_{name}: {yaml_values(lens.k)}  # row-major 3x3 camera matrix of the {name.upper()} camera",
                      f"dist_{name}: {yaml_values(lens.dist)}  # OpenCV distortion k1, k2, p1, p2, k3[, ...]"]
    return "\n".join(lines) + "\n"


def yaml_values(a: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.9g}" for v in np.ravel(a)) + "]"


def plane_homography(k_ir, k_vis, rotation, translation, distance_m: float = math.inf,
                     normal=(0.0, 0.0, 1.0)) -> np.ndarray:
    """H = K_vis (R + t n^T / d) K_ir^-1 induced by the plane {X : n . X = d} of the IR camera frame.

    R, t map IR camera coordinates to VIS camera coordinates (X_vis = R X_ir + t, metres), as
    cv2.stereoCalibrate returns them with the IR camera first; n is the unit normal, d > 0 the plane's distance
    from the IR camera. This is Hartley & Zisserman's K'(R - t n'^T / d)K^-1 with n' = -n. d = inf (scenes
    far away compared with the baseline): H = K_vis R K_ir^-1, the baseline does not matter.
    """
    k_ir, k_vis, r = (np.asarray(m, np.float64).reshape(3, 3) for m in (k_ir, k_vis, rotation))
    t, n = np.asarray(translation, np.float64).reshape(3, 1), np.asarray(normal, np.float64).reshape(1, 3)
    if not distance_m > 0:
        raise ValueError(f"distance_m must be > 0 (metres, or inf), got {distance_m}")
    plane = r if math.isinf(distance_m) else r + t @ n / distance_m
    h = k_vis @ plane @ np.linalg.inv(k_ir)
    return h / h[2, 2]


def corner_error(h_true: np.ndarray, h_est: np.ndarray, ir_size: tuple[int, int]) -> float:
    """Mean distance in VIS px between where the two homographies put the four IR image corners."""
    w, h = ir_size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64).T
    a, b = h_true @ corners, h_est @ corners
    return float(np.linalg.norm(a[:2] / a[2] - b[:2] / b[2], axis=0).mean())


def synthetic_homography(rng: np.random.Generator, width: int, height: int, scale=(0.8, 1.25), rotation_deg=3.0,
                         shift=0.08, perspective=0.02) -> np.ndarray:
    """A random rig-like IR px -> VIS px homography about the image centre: scale (log-uniform), rotation up to
    rotation_deg, shift up to `shift` * width per axis, perspective moving the corners by up to ~perspective."""
    s = math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    a = math.radians(rng.uniform(-rotation_deg, rotation_deg))
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    similarity = np.eye(3)
    similarity[:2, :2] = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    projective = np.eye(3)
    projective[2, :2] = rng.uniform(-1, 1, 2) * perspective / (width / 2)
    to_centre, back = np.eye(3), np.eye(3)
    to_centre[:2, 2] = -c
    back[:2, 2] = c + rng.uniform(-shift, shift, 2) * width
    h = back @ similarity @ projective @ to_centre
    return h / h[2, 2]


def simulate_ir_camera(ir_on_vis_grid: np.ndarray, homography: np.ndarray, ir_size: tuple[int, int]) -> np.ndarray:
    """The frame an IR camera with IR -> VIS `homography` takes of a scene whose IR image on the VIS grid is given.
    Beyond the VIS field the scene is mirrored (BORDER_REFLECT_101), so no artificial edge enters the frame."""
    return cv2.warpPerspective(ir_on_vis_grid, homography, ir_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101)


def coverage(homography: np.ndarray, ir_size: tuple[int, int], vis_size: tuple[int, int]) -> float:
    """Fraction of the VIS image the IR image covers under the homography (0 when it folds the IR image)."""
    w, h = ir_size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64).T
    q = homography @ corners
    if (q[2] <= 0).any():
        return 0.0
    pts = (q[:2] / q[2]).T.astype(np.float32)
    frame = np.array([[0, 0], [vis_size[0], 0], [vis_size[0], vis_size[1]], [0, vis_size[1]]], np.float32)
    area, _ = cv2.intersectConvexConvex(pts, frame)
    return float(area) / (vis_size[0] * vis_size[1])


class IrToVisWarp:
    """Resample IR frames onto the VIS grid with one homography (and, given both lenses, through both cameras'
    distortion); the remap tables are built once per image size, so distortion costs nothing per frame."""

    def __init__(self, homography: np.ndarray, ir_size: tuple[int, int] | None = None,
                 vis_size: tuple[int, int] | None = None, ir_lens: Lens | None = None, vis_lens: Lens | None = None):
        self.homography = check_homography(homography)
        self.ir_size, self.vis_size = ir_size, vis_size
        self.ir_lens, self.vis_lens = ir_lens, vis_lens
        self._tables: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_registration(cls, reg: Registration) -> IrToVisWarp:
        return cls(reg.homography, reg.ir_size, reg.vis_size, reg.ir_lens, reg.vis_lens)

    def with_homography(self, homography: np.ndarray) -> IrToVisWarp:
        """The same rig (sizes, lenses) with another homography, e.g. a refined one."""
        return IrToVisWarp(homography, self.ir_size, self.vis_size, self.ir_lens, self.vis_lens)

    def source_coordinates(self, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every VIS pixel, the IR pixel (x, y) it samples and whether that point is in front of the IR camera
        and, with lenses, on the part of the distortion model that maps back to it (far outside the field a
        polynomial lens model folds over: those pixels count as uncovered)."""
        ys, xs = np.mgrid[0:vis_shape[0], 0:vis_shape[1]].astype(np.float64)
        pts = np.stack([xs.ravel(), ys.ravel()], 1)
        if self.vis_lens is not None:
            pts = self.vis_lens.undistort(pts.astype(np.float32))
        src = np.linalg.inv(self.homography) @ np.concatenate([pts, np.ones((len(pts), 1))], 1).T
        front = src[2] > 0
        z = np.where(np.abs(src[2]) < 1e-12, 1e-12, src[2])
        ideal = (src[:2] / z).T
        if self.ir_lens is not None:
            raw = self.ir_lens.distort(ideal)
            back = self.ir_lens.undistort(raw.astype(np.float32))
            front &= np.linalg.norm(back - ideal, axis=1) < 0.5
            ideal = raw
        return ideal[:, 0].reshape(vis_shape), ideal[:, 1].reshape(vis_shape), front.reshape(vis_shape)

    def _table(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]):
        key = (ir_shape, vis_shape)
        if key not in self._tables:
            for role, size, shape in (("infrared", self.ir_size, ir_shape), ("visible", self.vis_size, vis_shape)):
                if size is not None and tuple(size) != (shape[1], shape[0]):
                    raise InputError(f"{role} image is {shape[1]}x{shape[0]} but the registration is for "
                                     f"{size[0]}x{size[1]}; register this rig again (tim register)",
                                     "registration_size")
            mx, my, front = self.source_coordinates(vis_shape)
            uncovered = ~(front & (mx >= 0) & (mx <= ir_shape[1] - 1) & (my >= 0) & (my <= ir_shape[0] - 1))
            mx[uncovered], my[uncovered] = -1.0, -1.0  # keeps the fixed-point tables in range
            map1, map2 = cv2.convertMaps(mx.astype(np.float32), my.astype(np.float32), cv2.CV_16SC2)
            self._tables[key] = (map1, map2, uncovered)
        return self._tables[key]

    def uncovered(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> np.ndarray:
        """Boolean (H_vis, W_vis) mask of the VIS pixels the IR camera does not see."""
        return self._table(ir_shape[:2], vis_shape[:2])[2]

    def warp(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        """IR (H_ir, W_ir) float32 on the VIS grid; uncovered pixels take the VIS luma `vis_y`."""
        map1, map2, uncovered = self._table(ir.shape[:2], vis_y.shape[:2])
        out = cv2.remap(ir, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        np.copyto(out, vis_y, where=uncovered)
        return out

    def fill(self, fused_y: np.ndarray, vis_y: np.ndarray, ir_shape: tuple[int, int]) -> None:
        """In place: uncovered pixels of the fused luma become the VIS luma (the visible camera alone sees them)."""
        np.copyto(fused_y, vis_y, where=self.uncovered(ir_shape, vis_y.shape))
