"""`tim calibrate` on checkerboard pairs rendered with a known rig.

The renders are a fake, only because no real heated-checkerboard images exist in this project: a planar board
projected through the plane-induced homographies of known K_ir, K_vis, R, t (cv2.warpPerspective, 2x supersampled),
the IR side inverted, blurred, noisy and 16-bit like a thermal camera's. The command runs through its real CLI entry.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import yaml

from tim_core.calibration import find_corners
from tim_core.cli import main as tim
from tim_core.files import write_image
from tim_core.registration import corner_error, load_registration, plane_homography

PATTERN = (9, 6)  # inner corners: a board of 10x7 squares
SQUARE = 0.04  # m
IR_SIZE, VIS_SIZE = (320, 256), (640, 480)
K_IR = np.array([[410.0, 0, 161.0], [0, 412.0, 126.5], [0, 0, 1]])
K_VIS = np.array([[700.0, 0, 318.0], [0, 702.0, 243.0], [0, 0, 1]])
R_TRUE = cv2.Rodrigues(np.radians([0.8, -1.2, 0.6]))[0]
T_TRUE = np.array([-0.06, 0.004, 0.003])  # m: the VIS camera 6 cm beside the IR camera
PX_PER_SQUARE = 40  # board raster resolution
# board poses in the IR frame: (rotation about x, y, z in degrees, board centre in metres)
POSES = [((0, 0, 0), (0.0, 0.0, 1.0)), ((25, 0, 5), (0.05, 0.02, 1.1)), ((-20, 15, -5), (-0.08, 0.03, 1.0)),
         ((10, -25, 10), (0.1, -0.05, 1.2)), ((-15, -20, 0), (-0.05, -0.06, 0.9)), ((20, 20, -10), (0.0, 0.08, 1.3)),
         ((5, 30, 3), (0.12, 0.0, 1.2)), ((-30, 5, 8), (-0.1, 0.05, 1.1))]


def _board_raster() -> tuple[np.ndarray, np.ndarray]:
    """Board image (white margin of one square) and the map of its pixels to board metres (origin: first corner)."""
    cols, rows = PATTERN[0] + 1, PATTERN[1] + 1
    s = PX_PER_SQUARE
    img = np.full(((rows + 2) * s, (cols + 2) * s), 255, np.uint8)
    for j in range(rows):
        for i in range(cols):
            if (i + j) % 2 == 0:
                img[(j + 1) * s:(j + 2) * s, (i + 1) * s:(i + 2) * s] = 0
    # raster pixel centres at integers: metre = (px + 0.5) / s * SQUARE - 2 squares (first inner corner at 0)
    to_metres = np.array([[SQUARE / s, 0, SQUARE * (0.5 / s - 2)], [0, SQUARE / s, SQUARE * (0.5 / s - 2)], [0, 0, 1]])
    return img, to_metres


def _render(board: np.ndarray, board_to_cam: np.ndarray, k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The board seen by a camera (2x supersampled, area-averaged), on a grey background."""
    up = np.diag([2.0, 2.0, 1.0]) @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # pixel centres at 2x
    h = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ up @ k @ board_to_cam
    big = cv2.warpPerspective(board, h, (2 * size[0], 2 * size[1]), flags=cv2.INTER_LINEAR, borderValue=150)
    return cv2.resize(big, size, interpolation=cv2.INTER_AREA)


def _write_rig(folder, poses=POSES) -> None:
    board, to_metres = _board_raster()
    rng = np.random.default_rng(0)
    centre = np.array([PATTERN[0] - 1, PATTERN[1] - 1, 0]) * SQUARE / 2
    for n, (angles, position) in enumerate(poses):
        rot = cv2.Rodrigues(np.radians(angles))[0]
        trans = np.asarray(position) - rot @ centre  # the board's centre at `position`
        plane_ir = np.column_stack([rot[:, 0], rot[:, 1], trans]) @ to_metres  # raster px -> IR camera (X, Y, Z)
        plane_vis = np.column_stack([R_TRUE @ rot[:, 0], R_TRUE @ rot[:, 1], R_TRUE @ trans + T_TRUE]) @ to_metres
        vis = _render(board, plane_vis, K_VIS, VIS_SIZE).astype(np.float32)
        ir = 255.0 - _render(board, plane_ir, K_IR, IR_SIZE).astype(np.float32)  # heated: the black squares warm
        ir = cv2.GaussianBlur(ir, (0, 0), 1.0) + rng.normal(0, 2.0, ir.shape)
        write_image(folder / "ir" / f"{n:02d}.png", (22000 + 12 * ir).astype(np.uint16))  # 16-bit thermal counts
        vis_rgb = vis[..., None] * np.array([0.9, 1.0, 0.8])  # a colour camera
        write_image(folder / "vis" / f"{n:02d}.png",
                    np.clip(vis_rgb + rng.normal(0, 2.0, vis_rgb.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    folder = tmp_path_factory.mktemp("board")
    _write_rig(folder)
    return folder


def _args(rig, out, *extra: str) -> list[str]:
    return ["calibrate", "--ir", str(rig / "ir"), "--vis", str(rig / "vis"), "--pattern", "9x6", "--square",
            str(SQUARE), "--out", str(out), *extra]


def test_corners_of_a_thermal_board_are_found_in_either_polarity(rig) -> None:
    from tim_core.files import read_image

    ir = read_image(rig / "ir" / "01.png")
    corners = find_corners(ir, PATTERN)
    assert ir.dtype == np.uint16 and corners is not None and corners.shape == (54, 1, 2)
    assert find_corners(read_image(rig / "vis" / "01.png"), PATTERN) is not None


def test_calibrate_recovers_the_rig(rig, tmp_path, capsys) -> None:
    out = tmp_path / "calib.yaml"
    assert tim(_args(rig, out)) == 0, capsys.readouterr().err
    data = yaml.safe_load(out.read_text())
    rotation = np.reshape(data["ir_to_vis_rotation"], (3, 3))
    angle = math.degrees(np.linalg.norm(cv2.Rodrigues(rotation @ R_TRUE.T)[0]))
    assert angle < 0.3, angle
    assert np.linalg.norm(np.asarray(data["ir_to_vis_translation"]) - T_TRUE) < 0.005
    assert max(data["rms_ir"], data["rms_vis"], data["rms_stereo"]) < 0.5
    assert data["pairs"] == len(POSES) and math.isinf(data["distance_m"])
    reg = load_registration(out)  # what tim fuse --registration and the node's registration_file read
    assert reg.ir_size == IR_SIZE and reg.vis_size == VIS_SIZE and reg.method == "checkerboard"
    assert corner_error(plane_homography(K_IR, K_VIS, R_TRUE, T_TRUE), reg.homography, IR_SIZE) < 1.0
    near = tmp_path / "near.yaml"
    assert tim(_args(rig, near, "--distance", "1.5")) == 0
    truth = plane_homography(K_IR, K_VIS, R_TRUE, T_TRUE, 1.5)
    assert corner_error(truth, load_registration(near).homography, IR_SIZE) < 1.0
    assert corner_error(truth, reg.homography, IR_SIZE) > 3.0  # the baseline matters at 1.5 m
    assert tim(_args(rig, out)) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert data["undistort"] is True and reg.ir_lens is not None and reg.vis_lens is not None  # raw images
    np.testing.assert_allclose(reg.ir_lens.k, K_IR, rtol=0.01)
    assert tim(_args(rig, out, "--overwrite", "--no-distortion")) == 0
    assert yaml.safe_load(out.read_text())["undistort"] is False and load_registration(out).ir_lens is None


def test_calibrate_errors_name_the_pairs_and_the_fix(rig, tmp_path, capsys) -> None:
    few = tmp_path / "few"
    for sub in ("ir", "vis"):
        (few / sub).mkdir(parents=True)
        for n in range(3):
            (few / sub / f"{n:02d}.png").write_bytes((rig / sub / f"{n:02d}.png").read_bytes())
    write_image(few / "ir" / "03.png", np.zeros((256, 320), np.uint8))  # no board in its IR image
    write_image(few / "vis" / "03.png", np.zeros((480, 640), np.uint8))
    out = tmp_path / "c.yaml"
    assert tim(_args(few, out)) == 2
    err = capsys.readouterr().err
    assert "found in both images of 3 of 4 pair(s), 5 needed" in err and "03 (IR and VIS)" in err and not out.exists()
    write_image(few / "vis" / "03.png", np.zeros((240, 320), np.uint8))
    assert tim(_args(few, out)) == 2 and "03.png: VIS size 320x240 differs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tim([*_args(few, out)[:6], "6x6", *_args(few, out)[7:]])
    assert "no defined orientation" in capsys.readouterr().err
