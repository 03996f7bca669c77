"""Helpers for tests over real ROS 2 DDS: a private domain per process, the node as a subprocess, spinning."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from conftest import SAMPLES
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from tim_core.files import read_image

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_ID = 20 + os.getpid() % 80  # one DDS domain per test process: isolates parallel runs on one machine
# Both ends of a graph need the same Fast DDS transports; LARGE_DATA carries images without UDP loss.
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("ROS_LOG_DIR", "/tmp/tim_fusion_roslog")
IR = read_image(SAMPLES / "ir" / "00055D.png")
VIS = read_image(SAMPLES / "vis" / "00055D.png")
_clock = [time.time_ns()]  # near the wall clock, so end-to-end latency (publish time - stamp) is meaningful


def next_stamp(jump_s: float = 0.1) -> int:
    """Strictly increasing stamps (10 Hz by default): the node rejects a camera's stamp going backwards."""
    _clock[0] += int(jump_s * 1e9)
    return _clock[0]


class Probe:
    """Publishes IR/VIS, records fused images and diagnostics."""

    def __init__(self, context, ns: str, compressed: bool = False, ir_topic: str = "cam/ir/image",
                 vis_topic: str = "cam/vis/image"):
        self.node = rclpy.create_node("probe")
        kind = CompressedImage if compressed else Image
        suffix = "/compressed" if compressed else ""
        self.pub_ir = self.node.create_publisher(kind, f"{ns}/{ir_topic}{suffix}", qos_profile_sensor_data)
        self.pub_vis = self.node.create_publisher(kind, f"{ns}/{vis_topic}{suffix}", qos_profile_sensor_data)
        self.fused: list[Image] = []
        self.diag: list[dict[str, str]] = []
        self.node.create_subscription(Image, f"{ns}/fused/image", self.fused.append,
                                      QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "fusion" in status.name:
                level = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level)
                self.diag.append({kv.key: kv.value for kv in status.values} | {"_level": level})

    def wait_matched(self, timeout: float = 30.0) -> None:
        ok = spin_until(self.node, lambda: self.pub_ir.get_subscription_count() > 0
                        and self.pub_vis.get_subscription_count() > 0, timeout)
        assert ok, "the node's subscriptions never matched"
        spin_until(self.node, lambda: False, 1.0)  # LARGE_DATA settles ~1 s after matching

    def send(self, ir_msg, vis_msg) -> None:
        self.pub_ir.publish(ir_msg)
        self.pub_vis.publish(vis_msg)

    def drops(self, reason: str) -> int:
        return int(self.diag[-1].get(f"drops_{reason}", 0)) if self.diag else 0

    def send_and_expect_drop(self, ir_msg, vis_msg, reason: str) -> None:
        """Send one bad pair and wait until diagnostics count it (one at a time: latest pair wins)."""
        before = self.drops(reason)
        self.send(ir_msg, vis_msg)
        assert spin_until(self.node, lambda: self.drops(reason) > before, 15.0), \
            f"diagnostics never counted a {reason} drop: {self.diag[-1:]}"

    def good_pair_answered(self, tries: int = 5) -> Image:
        for _ in range(tries):
            stamp = next_stamp()
            before = len(self.fused)
            self.send(image_msg(IR, "mono8", stamp, "ir_cam"), image_msg(VIS, "rgb8", stamp, "vis_cam"))
            if spin_until(self.node, lambda: any(_stamp_ns(m) == stamp for m in self.fused[before:]), 10.0):
                return next(m for m in self.fused[before:] if _stamp_ns(m) == stamp)
        raise AssertionError("no fused image for a good pair")


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec




def ros_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_LOG_DIR=str(tmp / "roslog"), FASTDDS_BUILTIN_TRANSPORTS="LARGE_DATA",
               AMENT_PREFIX_PATH=env.get("AMENT_PREFIX_PATH", sys.prefix), PYTHONPATH=str(ROOT),
               PYTHONUNBUFFERED="1")
    return env


def start_node(tmp: Path, *ros_args: str) -> subprocess.Popen:
    """The command line the launch file describes: module entry point, fusion.yaml, then overrides."""
    cmd = [sys.executable, "-m", "tim_fusion_ros.fusion_node", "--ros-args",
           "--params-file", str(ROOT / "config" / "fusion.yaml"), *ros_args]
    log = open(tmp / "node.log", "w")
    return subprocess.Popen(cmd, env=ros_env(tmp), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_node(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def spin_until(node, predicate, timeout: float) -> bool:
    import rclpy

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if predicate():
            return True
    return False


def image_msg(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from tim_fusion_ros.image_codec import numpy_to_image

    header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)
    return numpy_to_image(arr, encoding, header)
