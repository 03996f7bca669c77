"""The fusion node with registration over real ROS 2 DDS: a 320x240 IR camera and a 640x480 VIS camera that are
not pixel-aligned; the node warps IR onto the VIS grid and publishes a VIS-sized fused image in the VIS frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")

from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rosgraph import DOMAIN_ID, IR, VIS, Probe, image_msg, next_stamp, spin_until, start_node, stop_node  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from tim_core.registration import corner_error, simulate_ir_camera  # noqa: E402

IR_SMALL = IR[::2, ::2].copy()  # 320x240: its own lens and resolution
H = [1.5, 0.0, 80.0, 0.0, 1.5, 60.0, 0.0, 0.0, 1.0]  # IR px -> VIS px: covers VIS x 80..559, y 60..419
K_IR = [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]
K_VIS = [450.0, 0.0, 319.5, 0.0, 450.0, 239.5, 0.0, 0.0, 1.0]  # identity R, t=0: H = K_vis K_ir^-1 = the H above


@pytest.fixture
def context():
    rclpy.init(domain_id=DOMAIN_ID)
    yield None
    rclpy.shutdown()


def _fused_for_a_pair(t: Probe, tries: int = 5):
    for _ in range(tries):
        stamp = next_stamp()
        before = len(t.fused)
        t.send(image_msg(IR_SMALL, "mono8", stamp, "ir_cam"), image_msg(VIS, "rgb8", stamp, "vis_cam"))
        if spin_until(t.node, lambda: len(t.fused) > before, 10.0):
            return t.fused[-1]
    raise AssertionError("no fused image for a pair")


def _check_registered(msg) -> None:
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (480, 640, "rgb8", "vis_cam")
    fused = np.frombuffer(bytes(msg.data), np.uint8).reshape(480, 640, 3)
    diff = np.abs(fused.astype(int) - VIS.astype(int))
    assert diff[:58].max() <= 1 and diff[:, :78].max() <= 1 and diff[422:].max() <= 1  # the IR camera's blind area
    assert diff[70:410, 90:550].max() > 1  # where it sees, IR takes part


def test_homography_registration_publishes_on_the_vis_grid(context, tmp_path, tiny_bundle) -> None:
    proc = start_node(tmp_path, "-r", "__ns:=/r1", "-r", "ir/image:=cam/ir/image", "-r", "vis/image:=cam/vis/image",
                      "-p", f"model:={tiny_bundle}", "-p", "device:=cpu", "-p", "size_mismatch:=reject",
                      "-p", "registration:=homography", "-p", f"ir_to_vis_homography:={H}")
    try:
        t = Probe(context, "/r1")
        t.wait_matched()
        _check_registered(_fused_for_a_pair(t))  # size_mismatch: reject does not apply: the warp sizes IR
        assert proc.poll() is None
    finally:
        stop_node(proc)
        print((tmp_path / "node.log").read_text())


def test_calibrated_registration_waits_for_camera_info(context, tmp_path, tiny_bundle) -> None:
    proc = start_node(tmp_path, "-r", "__ns:=/r2", "-r", "ir/image:=cam/ir/image", "-r", "vis/image:=cam/vis/image",
                      "-p", f"model:={tiny_bundle}", "-p", "device:=cpu", "-p", "registration:=calibrated",
                      "-p", "diagnostic_period:=0.3")
    try:
        t = Probe(context, "/r2")
        t.wait_matched()
        s = next_stamp()
        t.send_and_expect_drop(image_msg(IR_SMALL, "mono8", s, "ir_cam"), image_msg(VIS, "rgb8", s, "vis_cam"),
                               "no_camera_info")
        pubs = {c: t.node.create_publisher(CameraInfo, f"/r2/{c}/camera_info", qos_profile_sensor_data)
                for c in ("ir", "vis")}
        infos = {"ir": CameraInfo(width=320, height=240, k=K_IR), "vis": CameraInfo(width=640, height=480, k=K_VIS)}
        assert spin_until(t.node, lambda: all(p.get_subscription_count() for p in pubs.values()), 10.0)
        for _ in range(3):
            for c, pub in pubs.items():
                pub.publish(infos[c])
            spin_until(t.node, lambda: False, 0.2)
        _check_registered(_fused_for_a_pair(t))
        assert proc.poll() is None
    finally:
        stop_node(proc)


def test_registration_configuration_errors_stop_start_up(tmp_path) -> None:
    proc = start_node(tmp_path, "-p", "registration:=homography", "-p", f"registration_file:={tmp_path}/rig.yaml",
                      "-p", "reference_camera:=ir", "-p", "ir_to_vis_rotation:=[1.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,2.0]")
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        stop_node(proc)
    log = (tmp_path / "node.log").read_text()
    (line,) = [line for line in log.splitlines() if "configuration rejected" in line]
    for problem in ("rig.yaml: no such registration file", "set reference_camera to vis", "ir_to_vis_rotation="):
        assert problem in line, problem


def _pseudo_ir_camera() -> np.ndarray:
    """What an IR camera with the IR -> VIS homography H sees of a scene whose edges coincide with VIS's (inverted,
    other gamma, blurred: a stand-in for thermal whose true registration is exactly H)."""
    luma = cv2.cvtColor(VIS, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    pseudo = (255 * (1.0 - cv2.GaussianBlur(luma, (0, 0), 1.0) ** 0.6)).astype(np.uint8)
    return simulate_ir_camera(pseudo, np.reshape(H, (3, 3)), (320, 240))


def test_online_refinement_moves_the_warp_toward_the_truth(context, tmp_path, tiny_bundle) -> None:
    truth = np.reshape(H, (3, 3))
    start = np.array([[1.51, 0.0, 85.0], [0.0, 1.51, 56.0], [0.0, 0.0, 1.0]])  # a rig file a few px off
    start_error = corner_error(truth, start, (320, 240))
    assert start_error > 5.0
    proc = start_node(tmp_path, "-r", "__ns:=/r4", "-r", "ir/image:=cam/ir/image", "-r", "vis/image:=cam/vis/image",
                      "-p", f"model:={tiny_bundle}", "-p", "device:=cpu", "-p", "registration:=homography",
                      "-p", f"ir_to_vis_homography:={start.ravel().tolist()}", "-p", "registration_refine_every:=1",
                      "-p", "registration_refine_budget_ms:=300.0", "-p", "diagnostic_period:=0.3")
    try:
        t = Probe(context, "/r4")
        t.wait_matched()
        ir_camera = _pseudo_ir_camera()

        def refined(n: int) -> bool:
            return bool(t.diag) and int(t.diag[-1].get("registration_refinements", 0)) >= n

        for _ in range(30):
            stamp = next_stamp()
            t.send(image_msg(ir_camera, "mono8", stamp, "ir_cam"), image_msg(VIS, "rgb8", stamp, "vis_cam"))
            if spin_until(t.node, lambda: refined(3), 1.0):
                break
        assert refined(3), t.diag[-1:]
        values = t.diag[-1]
        now = np.array([float(v) for v in values["registration_homography"].split(",")]).reshape(3, 3)
        error = corner_error(truth, now, (320, 240))
        assert error < start_error / 3, (start_error, error)
        assert 0.0 < float(values["registration_residual"]) < 1.0
        assert float(values["registration_moved_px"]) > 3.0 and float(values["registration_refine_ms"]) > 0.0
        assert "registration_refine_ms_p50" in values and proc.poll() is None
    finally:
        stop_node(proc)
        print((tmp_path / "node.log").read_text()[-3000:])
