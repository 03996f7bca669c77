"""IR-to-VIS registration without a ROS graph: the plane-induced homography against a projection, the file, the
warp and its fill policy, recovery of known warps of a real sample pair, and the `tim register` command."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import SAMPLES

from tim_core.cli import main as tim
from tim_core.files import read_image, write_image
from tim_core.registration import (
    IrToVisWarp,
    Lens,
    Registration,
    RegistrationError,
    corner_error,
    load_registration,
    plane_homography,
    registration_yaml,
    simulate_ir_camera,
)
from tim_core.rig_search import SearchConfig, register_pairs
from tim_core.runtime import Fuser

FAST = SearchConfig(coarse_width=80, iterations=10, starts=2, rotations_deg=(0.0,), scale_range=(0.8, 1.3))
SIZE = (320, 240)  # (width, height): the sample pairs at half size keep each search under a second
H_KNOWN = np.array([[1.1 * math.cos(0.03), -1.1 * math.sin(0.03), -20.0],
                    [1.1 * math.sin(0.03), 1.1 * math.cos(0.03), -6.0], [2e-5, -1e-5, 1.0]])  # IR px -> VIS px


def _sample(name: str) -> tuple[np.ndarray, np.ndarray]:
    return tuple(cv2.resize(read_image(SAMPLES / sub / name), SIZE, interpolation=cv2.INTER_AREA)
                 for sub in ("ir", "vis"))


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([rx, ry, rz], np.float64))[0]


@pytest.mark.parametrize("distance_m, normal", [(5.0, (0.0, 0.0, 1.0)), (2.5, (0.0, -0.6, 0.8)), (math.inf, None)])
def test_plane_homography_maps_projections_of_plane_points(distance_m: float, normal) -> None:
    k_ir = np.array([[420.0, 0, 322.0], [0, 418.0, 254.0], [0, 0, 1]])  # 640x512 thermal
    k_vis = np.array([[1380.0, 0, 962.0], [0, 1375.0, 538.0], [0, 0, 1]])  # 1920x1080 colour
    r, t = _rotation(0.01, -0.02, 0.005), np.array([0.12, -0.03, 0.01])  # X_vis = R X_ir + t, metres
    rng = np.random.default_rng(0)
    n = np.array(normal if normal is not None else (0.0, 0.0, 1.0))
    # points of the plane n . X = d in front of the IR camera (at infinity: directions, far away)
    uv = rng.uniform(-0.5, 0.5, (2, 50))
    rays = np.vstack([uv, np.ones(50)])
    points = rays * (distance_m / (n @ rays)) if math.isfinite(distance_m) else rays * 1e9
    ir_px, vis_px = k_ir @ points, k_vis @ (r @ points + t[:, None])
    h = plane_homography(k_ir, k_vis, r, t, distance_m, n if normal is not None else (0.0, 0.0, 1.0))
    mapped = h @ (ir_px / ir_px[2])
    np.testing.assert_allclose(mapped[:2] / mapped[2], vis_px[:2] / vis_px[2], atol=1e-3)


def test_plane_homography_without_baseline_is_the_infinite_one() -> None:
    k = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    r = _rotation(0.0, 0.03, 0.0)
    np.testing.assert_allclose(plane_homography(k, k, r, np.zeros(3), 3.0), plane_homography(k, k, r, np.zeros(3)))
    with pytest.raises(ValueError, match="distance_m must be > 0"):
        plane_homography(k, k, r, np.zeros(3), 0.0)


def test_registration_file_round_trip_and_errors(tmp_path) -> None:
    reg = Registration(H_KNOWN / H_KNOWN[2, 2], (640, 480), (320, 256), 0.4321, "ngf", 10)
    path = tmp_path / "rig.yaml"
    path.write_text(registration_yaml(reg))
    back = load_registration(path)
    np.testing.assert_allclose(back.homography, reg.homography, rtol=1e-7)
    assert (back.vis_size, back.ir_size, back.residual, back.pairs) == ((640, 480), (320, 256), 0.4321, 10)
    with pytest.raises(RegistrationError, match="no such registration file"):
        load_registration(tmp_path / "missing.yaml")
    path.write_text("ir_to_vis_homography: [1, 0, 0, 0, 1, 0, 0, 0]\n")
    with pytest.raises(RegistrationError, match="ir_to_vis_homography must be 9 finite numbers"):
        load_registration(path)
    path.write_text("ir_to_vis_homography: [1, 0, 0, 0, 0, 0, 0, 0, 1]\n")
    with pytest.raises(RegistrationError, match="singular"):
        load_registration(path)


LENS_IR = Lens(np.array([[600.0, 0, 318.0], [0, 601.0, 242.0], [0, 0, 1]]), np.array([-0.32, 0.11, 0.001, -0.002, 0]))
LENS_VIS = Lens(np.array([[560.0, 0, 322.0], [0, 561.0, 238.0], [0, 0, 1]]), np.array([-0.22, 0.06, 0, 0.001, 0]))


def _through_lens(ideal: np.ndarray, lens: Lens) -> np.ndarray:
    """What a camera with `lens` records of a scene whose ideal image is given: raw(p) = ideal(undistort p)."""
    h, w = ideal.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    q = lens.undistort(np.stack([xs.ravel(), ys.ravel()], 1)).astype(np.float32)
    return cv2.remap(ideal, q[:, 0].reshape(h, w), q[:, 1].reshape(h, w), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


def test_warp_through_both_lenses_matches_the_raw_visible_image(tmp_path) -> None:
    """Raw (distorted) frames of two cameras whose ideal images are related by H: warped with both lenses, the IR
    frame lands on the raw VIS grid where the VIS camera saw the same points; H alone leaves the lenses' error."""
    vis = read_image(SAMPLES / "vis" / "00055D.png")
    vis_y = cv2.cvtColor(vis, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0 if vis.ndim == 3 else vis / 255.0
    pseudo_ir = (1.0 - vis_y).astype(np.float32)  # an IR scene whose edges coincide with VIS by construction
    h = np.array([[math.cos(0.02), -math.sin(0.02), 8.0], [math.sin(0.02), math.cos(0.02), 4.0],
                  [0.0, 0.0, 1.0]])  # ideal IR px -> ideal VIS px
    ir_raw = _through_lens(simulate_ir_camera(pseudo_ir, h, (640, 480)), LENS_IR)
    expected = 1.0 - _through_lens(vis_y.astype(np.float32), LENS_VIS)  # the IR scene on the raw VIS grid

    def error(warp: IrToVisWarp) -> float:
        covered = ~warp.uncovered(ir_raw.shape, expected.shape)
        covered[:16], covered[-16:], covered[:, :16], covered[:, -16:] = False, False, False, False
        return float(np.abs(warp.warp(ir_raw, expected) - expected)[covered].mean())

    with_lenses, pinhole = IrToVisWarp(h, ir_lens=LENS_IR, vis_lens=LENS_VIS), IrToVisWarp(h)
    # measured: 0.011 with both lenses (0.008 is the floor of the same pair without any lens), 0.048 with H alone
    assert error(with_lenses) < 0.015 and error(pinhole) > 3 * error(with_lenses), (error(with_lenses), error(pinhole))
    uncovered = with_lenses.uncovered(ir_raw.shape, expected.shape)
    assert not uncovered[240, 320] and (uncovered != pinhole.uncovered(ir_raw.shape, expected.shape)).any()
    # the same warp from a registration file (as `tim calibrate` writes it), through the Fuser's loader
    path = tmp_path / "lens.yaml"
    path.write_text(registration_yaml(Registration(h, (640, 480), (640, 480), ir_lens=LENS_IR, vis_lens=LENS_VIS)))
    loaded = IrToVisWarp.from_registration(load_registration(path))
    np.testing.assert_allclose(loaded.warp(ir_raw, expected), with_lenses.warp(ir_raw, expected), atol=0.005)
    text = path.read_text()
    path.write_text(text.replace("dist_ir: [", "dist_ir: [0.5, "))
    with pytest.raises(RegistrationError, match="k_ir/dist_ir: 6 distortion coefficients"):
        load_registration(path)
    path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("k_vis")))
    with pytest.raises(RegistrationError, match="undistort: true needs k_vis"):
        load_registration(path)
    path.write_text(text.replace("undistort: true", "undistort: false"))
    assert load_registration(path).ir_lens is None  # rectified images: H alone


def test_fuser_warps_ir_onto_the_vis_grid_and_fills_what_it_does_not_see(tiny_bundle) -> None:
    ir, vis = read_image(SAMPLES / "ir" / "00055D.png"), read_image(SAMPLES / "vis" / "00055D.png")
    h = np.array([[2.0, 0.0, 100.0], [0.0, 2.0, 50.0], [0.0, 0.0, 1.0]])  # a 200x150 IR camera, twice VIS's pixel pitch
    ir_small = cv2.resize(ir, (200, 150), interpolation=cv2.INTER_AREA)
    warp = IrToVisWarp(h, ir_size=(200, 150), vis_size=(640, 480))
    fused = Fuser(tiny_bundle, device="cpu", registration=warp)(ir_small, vis).fused
    assert fused.shape == vis.shape  # the VIS grid, whatever the IR size
    uncovered = warp.uncovered(ir_small.shape, vis.shape)
    # IR pixels 0..199 x 0..149 land on VIS x 100..498, y 50..348
    assert uncovered[:49].all() and uncovered[350:].all() and uncovered[:, :99].all() and uncovered[:, 500:].all()
    assert not uncovered[50:349, 100:499].any()
    diff = np.abs(fused.astype(int) - vis.astype(int))[uncovered]
    assert diff.max() <= 1  # visible only where the IR camera does not see (YCbCr round trip: 1 LSB)
    with pytest.raises(ValueError, match="registration is for 200x150"):
        Fuser(tiny_bundle, device="cpu", registration=warp)(ir, vis)


@pytest.mark.parametrize("name", ["00127D.png", "FLIR_00018.jpg"])
def test_recovers_a_known_homography_of_a_real_sample_pair(name: str) -> None:
    ir, vis = _sample(name)
    ir_camera = simulate_ir_camera(ir, H_KNOWN, SIZE)
    assert corner_error(H_KNOWN, np.eye(3), SIZE) > 20  # what fusing without registration would be off by
    reg = register_pairs([(ir_camera, vis)], FAST)
    assert reg.converged, reg.message
    # within the sample pair's own misalignment (~3 px here, measured by registering the unwarped pair)
    assert corner_error(H_KNOWN, reg.homography, SIZE) < 5.0
    assert reg.vis_size == SIZE and reg.ir_size == SIZE and 0 < reg.residual < 1


def test_recovery_is_exact_when_the_edges_coincide() -> None:
    _, vis = _sample("00127D.png")
    luma = cv2.cvtColor(vis, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    pseudo_ir = (255 * (1.0 - cv2.GaussianBlur(luma, (0, 0), 1.0) ** 0.6)).astype(np.uint8)  # inverted, other gamma
    reg = register_pairs([(simulate_ir_camera(pseudo_ir, H_KNOWN, SIZE), vis)], FAST)
    assert corner_error(H_KNOWN, reg.homography, SIZE) < 0.5


def test_unrelated_images_do_not_converge() -> None:
    _, vis = _sample("00127D.png")
    noise = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0]), dtype=np.uint8)
    reg = register_pairs([(noise, vis)], FAST)
    assert not reg.converged and "stands out" in reg.message


def test_cli_register_then_fuse_with_the_registration(tmp_path, tiny_bundle, capsys) -> None:
    ir, vis = _sample("FLIR_00018.jpg")
    for sub, img in (("ir", simulate_ir_camera(ir, H_KNOWN, SIZE)), ("vis", vis)):
        write_image(tmp_path / sub / "a.png", img)
    rig = tmp_path / "rig.yaml"
    args = ["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--out", str(rig)]
    assert tim(["register", *args, "--scale-range", "0.8", "1.3", "--finest-width", "320"]) == 0
    assert corner_error(H_KNOWN, load_registration(rig).homography, SIZE) < 5.0
    assert tim(["register", *args]) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert tim(["fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--out", str(tmp_path / "f"),
                "--model", str(tiny_bundle), "--device", "cpu", "--registration", str(rig)]) == 0
    assert read_image(tmp_path / "f" / "a.png").shape == vis.shape
    assert tim(["fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--out", str(tmp_path / "g"),
                "--model", str(tiny_bundle), "--registration", str(tmp_path / "none.yaml")]) == 2
    assert "no such registration file" in capsys.readouterr().err


def test_cli_register_errors(tmp_path, capsys) -> None:
    out = tmp_path / "rig.yaml"
    assert tim(["register", "--ir", str(tmp_path / "nope"), "--vis", str(tmp_path), "--out", str(out)]) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err
    _, vis = _sample("00127D.png")
    write_image(tmp_path / "ir" / "a.png", np.random.default_rng(0).integers(0, 255, vis.shape[:2], dtype=np.uint8))
    write_image(tmp_path / "vis" / "a.png", vis)
    write_image(tmp_path / "vis" / "b.png", vis[:100])
    write_image(tmp_path / "ir" / "b.png", vis[:100, :, 0])
    args = ["register", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--out", str(out)]
    assert tim(args) == 2 and "one rig has one size" in capsys.readouterr().err
    (tmp_path / "vis" / "b.png").unlink()
    assert tim([*args, "--finest-width", "160"]) == 1  # noise against a real image: nothing stands out
    err = capsys.readouterr().err
    assert "did not converge" in err and "Nothing written" in err and not out.exists()


def test_node_registration_parameters_are_checked_without_ros() -> None:
    import dataclasses

    from tim_fusion_ros.params import FusionParams, check, load_defaults, refuse_change

    p = FusionParams(**load_defaults())
    assert check(dataclasses.replace(p, registration="homography")) == []
    bad = dataclasses.replace(p, registration="calibrated", reference_camera="ir", ir_to_vis_homography=[1.0] * 8,
                              ir_to_vis_rotation=[1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0], ir_to_vis_translation=[0.1])
    problems = " | ".join(check(bad))
    for text in ("set reference_camera to vis", "ir_to_vis_homography must be 9", "ir_to_vis_rotation=",
                 "ir_to_vis_translation="):
        assert text in problems
    assert "deactivate" in refuse_change(p, {"registration": "homography"}, "active")
    assert refuse_change(p, {"registration_distance_m": 4.0}, "inactive") is None
    assert "registration_refine_every=5 refines a registration" in " ".join(
        check(dataclasses.replace(p, registration_refine_every=5)))


def test_node_online_refinement_takes_improvements_within_its_bound() -> None:
    import dataclasses

    from tim_fusion_ros.params import FusionParams, load_defaults
    from tim_fusion_ros.registration import NodeRegistration

    _, vis = _sample("00127D.png")
    luma = cv2.cvtColor(vis, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    ir = simulate_ir_camera((255 * (1.0 - cv2.GaussianBlur(luma, (0, 0), 1.0) ** 0.6)).astype(np.uint8), H_KNOWN, SIZE)
    start = np.array([[1, 0, 4.0], [0, 1, -3.0], [0, 0, 1]]) @ H_KNOWN  # 5 px off
    p = dataclasses.replace(FusionParams(**load_defaults()), registration="homography",
                            ir_to_vis_homography=list(start.ravel()), registration_refine_every=2,
                            registration_refine_budget_ms=300.0, registration_refine_max_px=1.0)
    bounded = NodeRegistration(p)
    assert bounded.refine(ir, vis) is None  # every 2nd pair
    assert bounded.refine(ir, vis) > 0 and bounded.refine_tries == 1 and bounded.refinements == 0
    assert np.array_equal(bounded.warp({}).homography, start / start[2, 2])  # would move more than 1 px: refused
    free = NodeRegistration(dataclasses.replace(p, registration_refine_every=1, registration_refine_max_px=20.0))
    free.refine(ir, vis)
    assert free.refinements == 1 and corner_error(H_KNOWN, free.warp({}).homography, SIZE) < 2.0
    values = free.diagnostic_values()
    assert values["registration_residual"] == 1.0 - values["registration_similarity"]
    assert values["registration_moved_px"] > 3.0


def test_node_calibrated_registration_undistorts_with_camera_info() -> None:
    import dataclasses

    from sensor_msgs.msg import CameraInfo

    from tim_core.bundle import InputError
    from tim_fusion_ros.params import FusionParams, load_defaults
    from tim_fusion_ros.registration import NodeRegistration

    p = dataclasses.replace(FusionParams(**load_defaults()), registration="calibrated", registration_undistort=True)
    infos = {c: CameraInfo(width=640, height=480, k=lens.k.ravel().tolist(), d=lens.dist.tolist(),
                           distortion_model="plumb_bob") for c, lens in (("ir", LENS_IR), ("vis", LENS_VIS))}
    warp = NodeRegistration(p).warp(infos)
    np.testing.assert_array_equal(warp.ir_lens.dist, LENS_IR.dist)
    np.testing.assert_array_equal(warp.vis_lens.k, LENS_VIS.k)
    assert NodeRegistration(dataclasses.replace(p, registration_undistort=False)).warp(infos).ir_lens is None
    infos["vis"].distortion_model = "equidistant"
    with pytest.raises(InputError, match="vis/camera_info has distortion_model 'equidistant'") as e:
        NodeRegistration(p).warp(infos)
    assert e.value.reason == "bad_camera_info"
