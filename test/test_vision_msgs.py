"""interfaces/vision_msgs as built by interfaces/build.sh: upstream-identical types over real rclpy."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

try:
    from vision_msgs.msg import (
        BoundingBox2D,
        Detection2D,
        Detection2DArray,
        LabelInfo,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
        Point2D,
        Pose2D,
        VisionClass,
    )
except ImportError as exc:  # a missing build must fail loudly, not skip
    raise ImportError(
        f"vision_msgs is not importable ({exc}); build it with `bash interfaces/build.sh .venv` "
        "(make venv does) and run with AMENT_PREFIX_PATH=<venv>") from exc

import rclpy
from rclpy.serialization import deserialize_message, serialize_message

MESSAGES = [Point2D, Pose2D, BoundingBox2D, ObjectHypothesis, ObjectHypothesisWithPose, Detection2D,
            Detection2DArray, VisionClass, LabelInfo]

# RIHS01 type hashes of upstream vision_msgs 4.x (ros-perception/vision_msgs, branch ros2), as
# recorded in the rosidl_generator_c *__description.c files an upstream build generates.
UPSTREAM_HASHES = {
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
}

# Upstream's fields, in order: a readable diff when a hash differs.
UPSTREAM_FIELDS = {
    "Point2D": {"x": "double", "y": "double"},
    "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
    "BoundingBox2D": {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "ObjectHypothesisWithPose": {"hypothesis": "vision_msgs/ObjectHypothesis",
                                 "pose": "geometry_msgs/PoseWithCovariance"},
    "Detection2D": {"header": "std_msgs/Header", "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
                    "bbox": "vision_msgs/BoundingBox2D", "id": "string"},
    "Detection2DArray": {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection2D>"},
    "VisionClass": {"class_id": "uint16", "class_name": "string"},
    "LabelInfo": {"header": "std_msgs/Header", "class_map": "sequence<vision_msgs/VisionClass>",
                  "threshold": "float"},
}


def sample_detections() -> Detection2DArray:
    """Two detections as the fusion node publishes them (bbox centre + size in pixels)."""
    msg = Detection2DArray()
    msg.header.frame_id = "vis_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    for i, (cls, score) in enumerate((("person", 0.91), ("car", 0.42))):
        det = Detection2D(id=f"track-{i}")
        det.header = msg.header
        det.bbox.center.position.x, det.bbox.center.position.y = 320.5 + i, 256.25
        det.bbox.size_x, det.bbox.size_y = 40.0, 80.0
        det.results.append(ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=cls, score=score)))
        msg.detections.append(det)
    return msg


def test_fields_equal_upstream() -> None:
    for cls in MESSAGES:
        assert cls.get_fields_and_field_types() == UPSTREAM_FIELDS[cls.__name__], cls.__name__
        assert list(cls.get_fields_and_field_types()) == list(UPSTREAM_FIELDS[cls.__name__])


def test_type_hashes_equal_upstream() -> None:
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("vision_msgs")) / "msg"
    for name, expected in UPSTREAM_HASHES.items():
        description = json.loads((share / f"{name}.json").read_text())
        hashes = {h["type_name"]: h["hash_string"] for h in description["type_hashes"]}
        assert hashes[f"vision_msgs/msg/{name}"] == expected, name


def test_detection_array_serialization_round_trip() -> None:
    msg = sample_detections()
    back = deserialize_message(serialize_message(msg), Detection2DArray)
    assert back == msg
    hyp = back.detections[0].results[0].hypothesis
    assert (hyp.class_id, hyp.score) == ("person", 0.91)
    assert back.detections[1].bbox.center.position.x == 321.5


def test_label_info_round_trip() -> None:
    msg = LabelInfo(class_map=[VisionClass(class_id=0, class_name="road"),
                               VisionClass(class_id=255, class_name="unlabeled")], threshold=0.25)
    back = deserialize_message(serialize_message(msg), LabelInfo)
    assert back == msg


@pytest.fixture
def ros_context(tmp_path, monkeypatch):
    """An rclpy context on a domain of its own, logging into tmp_path."""
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=100 + os.getpid() % 100)
    yield context
    context.try_shutdown()


def test_publish_and_subscribe_over_dds(ros_context) -> None:
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("vision_msgs_probe", context=ros_context)
    received: list[Detection2DArray] = []
    pub = node.create_publisher(Detection2DArray, "detections", 10)
    node.create_subscription(Detection2DArray, "detections", received.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 10.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert pub.get_subscription_count() == 1, "subscription never matched"
        sent = sample_detections()
        while not received and time.monotonic() < deadline:
            pub.publish(sent)
            executor.spin_once(timeout_sec=0.1)
        assert received and received[0] == sent
        (info,) = node.get_publishers_info_by_topic("/detections")
        assert info.topic_type == "vision_msgs/msg/Detection2DArray"
        assert str(info.topic_type_hash) == UPSTREAM_HASHES["Detection2DArray"]
    finally:
        executor.shutdown()
        node.destroy_node()
