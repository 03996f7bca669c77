"""The fusion node over real ROS 2 DDS: a node subprocess started as the launch file describes, real pairs in,
fused images out with the reference header, parameters read back, a bad-input barrage survived."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")

from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rosgraph import DOMAIN_ID, IR, VIS, Probe, image_msg, next_stamp, spin_until, start_node, stop_node  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402


@pytest.fixture
def context():
    rclpy.init(domain_id=DOMAIN_ID)
    yield None
    rclpy.shutdown()


@pytest.fixture
def node_reject(tmp_path, tiny_bundle):
    proc = start_node(tmp_path, "-r", "__ns:=/t1", "-r", "ir/image:=cam/ir/image", "-r", "vis/image:=cam/vis/image",
                      "-p", f"model:={tiny_bundle}", "-p", "device:=cpu", "-p", "size_mismatch:=reject",
                      "-p", "diagnostic_period:=0.3")
    yield proc
    stop_node(proc)
    print((tmp_path / "node.log").read_text())


def test_fused_image_carries_reference_header_and_parameters(context, node_reject) -> None:
    t = Probe(context, "/t1")
    t.wait_matched()
    fused = t.good_pair_answered()
    assert fused.header.frame_id == "vis_cam"  # reference_camera: vis
    assert (fused.height, fused.width, fused.encoding) == (480, 640, "rgb8")
    client = AsyncParameterClient(t.node, "/t1/fusion_node")
    assert client.wait_for_services(10.0)
    future = client.get_parameters(["sync_slop", "reference_camera", "size_mismatch", "model"])
    assert spin_until(t.node, future.done, 10.0)
    values = [v for v in future.result().values]
    assert values[0].double_value == pytest.approx(0.02)
    assert values[1].string_value == "vis" and values[2].string_value == "reject"
    assert values[3].string_value.endswith("tiny_bundle")
    assert node_reject.poll() is None


def test_bad_input_barrage_is_survived(context, node_reject) -> None:
    t = Probe(context, "/t1")
    t.wait_matched()
    t.good_pair_answered()
    good_vis = lambda s: image_msg(VIS, "rgb8", s, "vis_cam")  # noqa: E731
    s = next_stamp()
    bad = image_msg(IR, "mono8", s, "ir_cam")
    bad.encoding = "yuv422"
    t.send_and_expect_drop(bad, good_vis(s), "unsupported_encoding")
    s = next_stamp()
    small = image_msg(IR[:240, :320].copy(), "mono8", s, "ir_cam")
    t.send_and_expect_drop(small, good_vis(s), "size_mismatch")  # under size_mismatch: reject
    s = next_stamp()
    nan_ir = IR.astype(np.float32)
    nan_ir[10, 10] = np.nan
    t.send_and_expect_drop(image_msg(nan_ir, "32FC1", s, "ir_cam"), good_vis(s), "non_finite")
    s = next_stamp()
    empty = image_msg(IR, "mono8", s, "ir_cam")
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, b""
    t.send_and_expect_drop(empty, good_vis(s), "empty_image")
    t.send_and_expect_drop(image_msg(IR, "mono8", 0, "ir_cam"), good_vis(next_stamp()), "zero_stamp")
    s = next_stamp()
    t.send_and_expect_drop(image_msg(IR, "mono8", s, "ir_cam"), good_vis(s + 2_000_000_000), "too_old")  # 2 s apart
    next_stamp(3.0)  # both cameras continue after the far stamp
    assert t.good_pair_answered().header.frame_id == "vis_cam"
    assert node_reject.poll() is None, "the node died on bad input"
    assert any(d["_level"] == 1 for d in t.diag), "diagnostics never turned WARN on drops"
    last = t.diag[-1]
    assert float(last["fuse_ms_p50"]) > 0 and float(last["end_to_end_ms_p95"]) != 0


def test_compressed_transport_and_garbage_bytes(context, tmp_path, tiny_bundle) -> None:
    proc = start_node(tmp_path, "-r", "__ns:=/t2", "-r", "ir/image/compressed:=cam/ir/image/compressed",
                      "-r", "vis/image/compressed:=cam/vis/image/compressed", "-p", f"model:={tiny_bundle}",
                      "-p", "device:=cpu", "-p", "input_transport:=compressed", "-p", "reference_camera:=ir")
    try:
        import cv2
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        t = Probe(context, "/t2", compressed=True)
        t.wait_matched()

        def jpeg(img, stamp, frame):
            ok, buf = cv2.imencode(".png", img if img.ndim == 2 else img[..., ::-1])
            hdr = Header(stamp=Time(sec=stamp // 10 ** 9, nanosec=stamp % 10 ** 9), frame_id=frame)
            return CompressedImage(header=hdr, format="png", data=buf.tobytes())

        s = next_stamp()
        garbage = jpeg(IR, s, "ir_cam")
        garbage.data = b"\x00\x01not an image"
        t.send(garbage, jpeg(VIS, s, "vis_cam"))
        for _ in range(5):
            s = next_stamp()
            before = len(t.fused)
            t.send(jpeg(IR, s, "ir_cam"), jpeg(VIS, s, "vis_cam"))
            if spin_until(t.node, lambda: len(t.fused) > before, 10.0):
                break
        assert t.fused and t.fused[-1].header.frame_id == "ir_cam"  # reference_camera: ir
        assert proc.poll() is None
    finally:
        stop_node(proc)


def test_bad_configuration_fails_fast_with_one_message(tmp_path) -> None:
    proc = start_node(tmp_path, "-p", "model:=/nonexistent/bundle", "-p", "sync_slop:=0.05", "-p", "device:=tpu")
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        stop_node(proc)
    log = (tmp_path / "node.log").read_text()
    assert "configuration rejected" in log and "/nonexistent/bundle" in log and "device='tpu'" in log


def test_configuration_errors_of_every_source_in_one_message_without_traceback(tmp_path) -> None:
    params = tmp_path / "robot.yaml"  # a robot's params file after config/fusion.yaml, then -p overrides
    params.write_text("/**:\n  ros__parameters:\n    threads: -3\n    model: /nonexistent/bundle\n")
    proc = start_node(tmp_path, "--params-file", str(params), "-p", "sync_slop:=1", "-p", "nms_iou:=2.0")
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        stop_node(proc)
    log = (tmp_path / "node.log").read_text()
    assert "Traceback" not in log and log.count("configuration rejected") == 1, log
    (line,) = [line for line in log.splitlines() if "configuration rejected" in line]
    for problem in ("threads=-3 is outside [0, 256]", "/nonexistent/bundle", "'sync_slop' to '1'", "nms_iou=2.0"):
        assert problem in line, problem


def test_bad_parameter_stops_start_up_without_autostart(tmp_path) -> None:
    proc = start_node(tmp_path, "-p", "autostart:=false", "-p", "expected_rate_hz:=0.0")
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        stop_node(proc)
    log = (tmp_path / "node.log").read_text()
    assert "Traceback" not in log and "expected_rate_hz=0.0 is outside" in log, log


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_soak_memory_stays_bounded(context, tmp_path, tiny_bundle) -> None:
    proc = start_node(tmp_path, "-r", "__ns:=/t3", "-r", "ir/image:=cam/ir/image", "-r", "vis/image:=cam/vis/image",
                      "-p", f"model:={tiny_bundle}", "-p", "device:=cpu")
    try:
        t = Probe(context, "/t3")
        t.wait_matched()
        ir, vis = IR[::4, ::4].copy(), VIS[::4, ::4].copy()  # 160x120: many frames in a few seconds

        def burst(n: int) -> None:
            for _ in range(n):
                s = next_stamp()
                t.send(image_msg(ir, "mono8", s, "ir_cam"), image_msg(vis, "rgb8", s, "vis_cam"))
                spin_until(t.node, lambda: False, 0.05)

        burst(40)  # warm-up: allocator pools, DDS buffers
        spin_until(t.node, lambda: False, 1.0)
        before = _rss_mb(proc.pid)
        burst(150)
        spin_until(t.node, lambda: False, 1.0)
        growth = _rss_mb(proc.pid) - before
        assert len(t.fused) > 50, "the node stopped answering during the soak"
        assert growth < 25.0, f"node RSS grew {growth:.1f} MB over 150 pairs"
    finally:
        stop_node(proc)
