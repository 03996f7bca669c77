"""`tim-bag`: make a rosbag2 from image folders, replay it through the running node, evaluate what came out.

- make:   IR/VIS folders paired by stem -> sqlite3 rosbag2 (storage version 8, plays on Humble) with
          `/ir/image` (mono8, or mono16 scaled to a 14-bit thermal range), `/vis/image` (rgb8/mono8),
          realistic per-camera stamp jitter and a fixed IR-VIS offset, and `/tim_bag/pair_name`.
- replay: publishes the bag's images with their original timing (scaled by --rate), re-stamped to now so
          the node's latency figures are real, and records every node output into a second bag, with
          `tim_replay.json` (each pair's original and replayed stamps and publish time) beside it.
- eval:   decodes the recorded fused images, matches them to the source pairs by stamp, and reports the
          fusion metrics (the same code as `tim eval`), pairs published / dropped by reason, end-to-end
          latency p50/p95/max (fused received - pair published) and throughput.
Messages are serialized by rclpy itself (real CDR); rosbags only stores the bytes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

PAIR_TOPIC = "/tim_bag/pair_name"
OUTPUT_TOPICS = {  # relative output name -> type, as the node publishes them
    "fused/image": "sensor_msgs/msg/Image",
    "segmentation/mask": "sensor_msgs/msg/Image",
    "segmentation/color": "sensor_msgs/msg/Image",
    "detections": "vision_msgs/msg/Detection2DArray",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def typestore():
    """rosbags type store for msgdefs: the latest ROS 2 store plus vision_msgs from our interface files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.LATEST)
    candidates = [
        Path(__file__).resolve().parents[1] / "interfaces" / "vision_msgs" / "msg",
        Path(sys.prefix) / "share" / "vision_msgs" / "msg",
    ]
    for folder in candidates:
        if folder.is_dir():
            types = {}
            for f in sorted(folder.glob("*.msg")):
                types.update(get_types_from_msg(f.read_text(), f"vision_msgs/msg/{f.stem}"))
            store.register(types)
            break
    return store


def must_be_new(out: Path) -> None:
    if out.exists():
        raise FileExistsError(f"{out} exists already; bags are never overwritten, choose a new --out")


def message_class(msgtype: str):
    """'pkg/msg/Type' -> the rclpy message class."""
    import importlib

    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def make_bag(
    ir: Path,
    vis: Path,
    out: Path,
    rate: float = 10.0,
    jitter_ms: float = 2.0,
    offset_ms: float = 5.0,
    ir_encoding: str = "mono8",
    loops: int = 1,
    seed: int = 0,
    start_ns: int = 1_700_000_000_000_000_000,
) -> int:
    """Write the bag (atomically: into a hidden folder renamed at the end); returns the number of pairs."""
    from tim_core.files import pair_paths

    must_be_new(out)
    if not rate > 0 or loops < 1:
        raise ValueError(f"rate must be > 0 and loops >= 1 (got rate={rate}, loops={loops})")
    pairs, unpaired = pair_paths(ir, vis)
    for name, reason in unpaired:
        print(f"tim-bag make: skipping {name}: {reason}", file=sys.stderr)
    rng = np.random.default_rng(seed)
    store = typestore()
    n = 0
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")  # renamed to `out` once complete
    shutil.rmtree(partial, ignore_errors=True)
    try:
        n = _write_pairs(partial, pairs, store, rng, rate, jitter_ms, offset_ms, ir_encoding, loops, start_ns)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # ours: a failed write leaves nothing behind
        raise
    os.replace(partial, out)
    return n


def _write_pairs(out, pairs, store, rng, rate, jitter_ms, offset_ms, ir_encoding, loops, start_ns) -> int:
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from std_msgs.msg import Header, String

    from tim_core.files import read_image

    from .image_codec import numpy_to_image

    n = 0
    with Writer(out, version=8) as writer:
        c_ir = writer.add_connection("/ir/image", "sensor_msgs/msg/Image", typestore=store)
        c_vis = writer.add_connection("/vis/image", "sensor_msgs/msg/Image", typestore=store)
        c_name = writer.add_connection(PAIR_TOPIC, "std_msgs/msg/String", typestore=store)
        for loop in range(loops):
            for pair in pairs:
                t_vis = start_ns + int(n * 1e9 / rate + rng.normal(0, jitter_ms) * 1e6)
                t_ir = t_vis + int((offset_ms + rng.normal(0, jitter_ms)) * 1e6)
                ir_img, vis_img = read_image(pair.a), read_image(pair.b)
                if ir_img.ndim == 3:
                    ir_img = ir_img.mean(axis=2).astype(ir_img.dtype)
                if ir_encoding == "mono16" and ir_img.dtype == np.uint8:
                    ir_img = ir_img.astype(np.uint16) * 48 + 2000  # 8-bit -> a 14-bit thermal range with offset
                vis_enc = "rgb8" if vis_img.ndim == 3 else "mono8"
                ir_msg = numpy_to_image(
                    ir_img,
                    ir_encoding if ir_img.dtype == np.uint16 or ir_encoding == "mono8" else "mono16",
                    Header(stamp=ns_to_stamp(t_ir), frame_id="ir_camera"),
                )
                vis_msg = numpy_to_image(vis_img, vis_enc, Header(stamp=ns_to_stamp(t_vis), frame_id="vis_camera"))
                for conn, t, msg in sorted(((c_vis, t_vis, vis_msg), (c_ir, t_ir, ir_msg)), key=lambda x: x[1]):
                    writer.write(conn, t, serialize_message(msg))
                writer.write(c_name, t_vis, serialize_message(String(data=pair.name)))
                n += 1
    return n


def read_bag(path: Path, topics: set[str] | None = None):
    """Yield (topic, bag timestamp ns, deserialized rclpy message) in bag order."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        types = {c.topic: message_class(c.msgtype) for c in conns}
        for conn, t, raw in reader.messages(connections=conns):
            yield conn.topic, t, deserialize_message(bytes(raw), types[conn.topic])
