"""Helpers for tests over real ROS 2 DDS: a private domain per process, the node as a subprocess, spinning."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_ID = 20 + os.getpid() % 80  # one DDS domain per test process: isolates parallel runs on one machine
# Both ends of a graph need the same Fast DDS transports; LARGE_DATA carries images without UDP loss.
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("ROS_LOG_DIR", "/tmp/tim_fusion_roslog")


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
    from tim_fusion_ros.image_codec import numpy_to_image
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)
    return numpy_to_image(arr, encoding, header)
