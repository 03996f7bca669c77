"""The shipped fusion + detection bundle through the real node over DDS: Detection2DArray by default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")

from conftest import ROOT, SAMPLES
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph import (
    DOMAIN_ID,
    Probe,
    image_msg,
    next_stamp,
    spin_until,
    start_node,
    stop_node,
)
from vision_msgs.msg import Detection2DArray

from tim_core.cli import main as tim
from tim_core.files import read_image


def test_shipped_detection_bundle_publishes_detections(tmp_path) -> None:
    """...and they are the boxes `tim fuse --model tim_ivif_det` writes for the same pair (eager torch, one thread
    on both sides: the same arithmetic)."""
    if not (ROOT / "models" / "tim_ivif_det" / "model.safetensors").is_file():
        pytest.skip("models/tim_ivif_det not present")
    proc = start_node(tmp_path, "-r", "__ns:=/t7", "-r", "ir/image:=cam/ir/image", "-r", "vis/image:=cam/vis/image",
                      "-p", "model:=tim_ivif_det", "-p", "device:=cpu", "-p", "backend:=torch", "-p", "threads:=1")
    rclpy.init(domain_id=DOMAIN_ID)
    try:
        probe = Probe(None, "/t7")
        got: list[Detection2DArray] = []
        probe.node.create_subscription(Detection2DArray, "/t7/detections", got.append,
                                       QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        probe.wait_matched()
        ir, vis = read_image(SAMPLES / "ir" / "00028N.png"), read_image(SAMPLES / "vis" / "00028N.png")
        for _ in range(5):  # DDS discovery of the detections topic can lag the image topics
            stamp = next_stamp()
            probe.send(image_msg(ir, "mono8", stamp, "ir_cam"), image_msg(vis, "rgb8", stamp, "vis_cam"))
            if spin_until(probe.node, lambda: bool(got), 10.0):
                break
        assert got, (tmp_path / "node.log").read_text()
        msg = got[-1]
        assert msg.header.frame_id == "vis_cam" and len(msg.detections) >= 1
        for det in msg.detections:
            hyp = det.results[0].hypothesis
            assert hyp.class_id in ("person", "bicycle", "car") and hyp.score >= 0.3  # score_threshold default
            assert 0 <= det.bbox.center.position.x <= 640 and 0 < det.bbox.size_y <= 480
    finally:
        rclpy.shutdown()
        stop_node(proc)
    pair = tmp_path / "pair"
    for kind in ("ir", "vis"):
        (pair / kind).mkdir(parents=True)
        shutil.copy(SAMPLES / kind / "00028N.png", pair / kind / "00028N.png")
    assert tim(["fuse", "--ir", str(pair / "ir"), "--vis", str(pair / "vis"), "--out", str(tmp_path / "fused"),
                "--model", "tim_ivif_det", "--device", "cpu", "--quiet"]) == 0
    classes = json.loads((ROOT / "models" / "tim_ivif_det" / "card.json").read_text())["classes"]
    ours = sorted((classes[d["category_id"]], *d["bbox"], d["score"])
                  for d in json.loads((tmp_path / "fused" / "detections.json").read_text()))
    node = sorted((d.results[0].hypothesis.class_id, d.bbox.center.position.x - d.bbox.size_x / 2,
                   d.bbox.center.position.y - d.bbox.size_y / 2, d.bbox.size_x, d.bbox.size_y,
                   d.results[0].hypothesis.score) for d in msg.detections)
    assert len(ours) == len(node) >= 1
    for a, b in zip(ours, node):  # tim fuse rounds boxes to 0.01 px and scores to 1e-5 (COCO results)
        assert a[0] == b[0] and np.allclose(a[1:5], b[1:5], atol=0.011) and abs(a[5] - b[5]) < 2e-5, (a, b)
