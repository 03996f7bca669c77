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

import argparse
import json
import sys
import time
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


def _typestore():
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


def _must_be_new(out: Path) -> None:
    if out.exists():
        raise FileExistsError(f"{out} exists already; bags are never overwritten, choose a new --out")


def message_class(msgtype: str):
    """'pkg/msg/Type' -> the rclpy message class."""
    import importlib

    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _stamp(ns: int):
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
    """Write the bag; returns the number of pairs written."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from std_msgs.msg import Header, String

    from tim_core.files import pair_paths, read_image

    from .image_codec import numpy_to_image

    _must_be_new(out)
    pairs, unpaired = pair_paths(ir, vis)
    for name, reason in unpaired:
        print(f"tim-bag make: skipping {name}: {reason}", file=sys.stderr)
    rng = np.random.default_rng(seed)
    store = _typestore()
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
                    Header(stamp=_stamp(t_ir), frame_id="ir_camera"),
                )
                vis_msg = numpy_to_image(vis_img, vis_enc, Header(stamp=_stamp(t_vis), frame_id="vis_camera"))
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


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def replay(
    bag: Path, out: Path, namespace: str = "", rate: float = 1.0, linger: float = 5.0, match_timeout: float = 60.0
) -> dict:
    """Publish the bag's images through the running node with original timing; record its outputs into `out`."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from sensor_msgs.msg import Image

    _must_be_new(out)
    ns = namespace.rstrip("/")
    rclpy.init()
    node = rclpy.create_node("tim_bag_replay")
    pubs = {t: node.create_publisher(Image, f"{ns}{t}", qos_profile_sensor_data) for t in ("/ir/image", "/vis/image")}
    store = _typestore()
    writer = Writer(out, version=8)
    writer.open()
    conns, last_out = {}, [time.monotonic()]

    def record(topic: str, msgtype: str):
        conns[topic] = writer.add_connection(topic, msgtype, typestore=store)

        def callback(msg) -> None:
            writer.write(conns[topic], time.time_ns(), serialize_message(msg))
            if topic != "/diagnostics":
                last_out[0] = time.monotonic()

        return callback

    node_state = {}

    def watch_state(msg) -> None:
        for status in msg.status:
            node_state.update({kv.key: kv.value for kv in status.values if kv.key == "state"})

    from diagnostic_msgs.msg import DiagnosticArray

    node.create_subscription(DiagnosticArray, "/diagnostics", watch_state, 10)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    for rel, msgtype in OUTPUT_TOPICS.items():
        topic = rel if rel.startswith("/") else f"{ns}/{rel}"
        try:
            cls = message_class(msgtype)
        except ImportError:
            continue  # vision_msgs not built here: the node cannot publish detections either
        node.create_subscription(cls, topic, record(topic, msgtype), 10 if rel == "/diagnostics" else reliable)
    try:
        end = time.monotonic() + match_timeout
        # Wait for the node's subscriptions and for its diagnostics to say it is active (model loaded).
        while not (all(p.get_subscription_count() for p in pubs.values()) and node_state.get("state") == "active"):
            if time.monotonic() > end:
                raise RuntimeError(
                    f"no active fusion node on {ns}/ir/image and {ns}/vis/image within {match_timeout} s; "
                    "start it first (python -m tim_fusion_ros.fusion_node ...) and check its log"
                )
            rclpy.spin_once(node, timeout_sec=0.05)
        _spin_for(node, 1.0)  # LARGE_DATA transports settle after matching
        pairs: dict[int, dict] = {}
        bag_t0, wall_t0 = None, time.time_ns()
        for topic, t, msg in read_bag(bag):
            bag_t0 = t if bag_t0 is None else bag_t0
            due = wall_t0 + (t - bag_t0) / rate
            while time.time_ns() < due:
                rclpy.spin_once(node, timeout_sec=min(0.01, max(0.0, (due - time.time_ns()) * 1e-9)))
            if topic == PAIR_TOPIC:
                pairs.setdefault(t, {})["name"] = msg.data
                continue
            if topic not in pubs:
                continue
            original = _ns(msg.header.stamp)
            msg.header.stamp = _stamp(wall_t0 + int((original - bag_t0) / rate))
            pubs[topic].publish(msg)
            camera = topic.split("/")[1]
            entry = pairs.setdefault(original if camera == "vis" else -original, {})
            entry.update(
                {
                    f"{camera}_stamp": original,
                    f"{camera}_stamp_replayed": _ns(msg.header.stamp),
                    "published_ns": time.time_ns(),
                }
            )
        last_out[0] = max(last_out[0], time.monotonic())  # linger counts from the last input or output
        while time.monotonic() - last_out[0] < linger:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        writer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    log = _join_pairs(pairs)
    (out / "tim_replay.json").write_text(json.dumps({"source": str(bag), "rate": rate, "pairs": log}, indent=1))
    return {"pairs": len(log)}


def _join_pairs(entries: dict[int, dict]) -> list[dict]:
    """Merge the VIS, IR and name entries of each pair (IR entries are keyed by -stamp, names by the VIS time)."""
    vis = sorted((k, v) for k, v in entries.items() if "vis_stamp" in v)
    irs = sorted((-k, v) for k, v in entries.items() if "ir_stamp" in v)
    names = {k: v["name"] for k, v in entries.items() if "name" in v}
    out = []
    for k, v in vis:
        ir = min(irs, key=lambda e: abs(e[0] - k))[1] if irs else {}
        published = max(v["published_ns"], ir.get("published_ns", 0))
        out.append({**ir, **v, "published_ns": published, "name": names.get(k, str(k))})
    return out


def _spin_for(node, seconds: float) -> None:
    import rclpy

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    v = np.asarray(values)
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def evaluate_replay(recorded: Path, source: Path, out: Path, convention: str = "matlab") -> dict:
    """Metrics, drops, latency and throughput of a recorded replay; writes out/{ir,vis,fused}, eval.json, eval.md."""
    from tim_core.color import to_unit
    from tim_core.evaluate import evaluate_folders
    from tim_core.files import write_image

    from .image_codec import image_to_numpy

    log = json.loads((recorded / "tim_replay.json").read_text())["pairs"]
    by_replayed = {}
    for i, p in enumerate(log):
        for key in ("vis_stamp_replayed", "ir_stamp_replayed"):
            if key in p:
                by_replayed[p[key]] = (i, p)
    sources = {}
    for topic, _t, msg in read_bag(source, {"/ir/image", "/vis/image"}):
        img = image_to_numpy(msg)
        if topic == "/ir/image" and img.dtype != np.uint8:  # the 8-bit view the metrics need, by the node's rule
            img = np.round(to_unit(img, "percentile") * 255).astype(np.uint8)
        sources[(topic.split("/")[1], _ns(msg.header.stamp))] = img
    latencies, fused_n, diag, recv = [], 0, {}, []
    for topic, t, msg in read_bag(recorded):
        if topic.endswith("/diagnostics"):
            for status in msg.status:
                if "fusion" in status.name:
                    diag = {kv.key: kv.value for kv in status.values}
            continue
        if not topic.endswith("fused/image") or _ns(msg.header.stamp) not in by_replayed:
            continue
        i, p = by_replayed[_ns(msg.header.stamp)]
        name = p["name"] if sum(q["name"] == p["name"] for q in log) == 1 else f"{p['name']}_{i:04d}"
        write_image(out / "ir" / f"{name}.png", sources[("ir", p["ir_stamp"])])
        write_image(out / "vis" / f"{name}.png", sources[("vis", p["vis_stamp"])])
        write_image(out / "fused" / f"{name}.png", image_to_numpy(msg))
        latencies.append((t - p["published_ns"]) * 1e-6)
        recv.append(t)
        fused_n += 1
    if not fused_n:
        raise RuntimeError(
            f"{recorded}: no fused image matches a replayed pair; did the node run and publish fused/image?"
        )
    metrics = evaluate_folders(out / "ir", out / "vis", out / "fused", convention=convention, progress=False)
    span = (max(recv) - min(p["published_ns"] for p in log)) * 1e-9
    summary = {
        "pairs_sent": len(log),
        "fused_received": fused_n,
        "not_answered": len(log) - fused_n,
        "dropped_by_reason": {k[len("drops_") :]: int(v) for k, v in diag.items() if k.startswith("drops_")},
        "latency_ms": _percentiles(latencies),
        "throughput_hz": fused_n / span if span > 0 else float("nan"),
        "node_stage_ms": {k: float(v) for k, v in diag.items() if k.endswith(("_p50", "_p95"))},
        "convention": convention,
        "metrics": metrics["mean"],
    }
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# Bag replay evaluation ({recorded})",
        "",
        f"pairs sent {len(log)}, fused {fused_n}, throughput {summary['throughput_hz']:.2f} Hz",
        "",
        "| latency | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|",
        "| end to end | {p50:.1f} | {p95:.1f} | {max:.1f} |".format(**summary["latency_ms"]),
        "",
        f"| metric ({convention}) | mean |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics["mean"].items() if v is not None]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tim-bag", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make", help="image folders -> rosbag2 (sqlite3, storage version 8)")
    p.add_argument("--ir", required=True, type=Path)
    p.add_argument("--vis", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="bag folder to create (must not exist)")
    p.add_argument("--rate", type=float, default=10.0, help="pairs per second (default 10)")
    p.add_argument("--jitter-ms", type=float, default=2.0, help="per-camera stamp jitter, std (default 2 ms)")
    p.add_argument("--offset-ms", type=float, default=5.0, help="IR stamp minus VIS stamp (default 5 ms)")
    p.add_argument("--ir-encoding", choices=("mono8", "mono16"), default="mono8")
    p.add_argument("--loops", type=int, default=1, help="repeat the folder this many times")
    p = sub.add_parser("replay", help="replay a bag through the running node and record its outputs")
    p.add_argument("bag", type=Path)
    p.add_argument("--out", required=True, type=Path, help="bag folder to record into (must not exist)")
    p.add_argument("--namespace", default="", help="the node's namespace")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default 1.0: original timing)")
    p.add_argument("--linger", type=float, default=5.0, help="seconds to wait for outputs after the last input")
    p = sub.add_parser("eval", help="metrics, drops, latency and throughput of a recorded replay")
    p.add_argument("recorded", type=Path)
    p.add_argument("--source", required=True, type=Path, help="the bag that was replayed")
    p.add_argument("--out", required=True, type=Path, help="folder for images and eval.json / eval.md")
    p.add_argument("--convention", default="matlab", choices=("matlab", "cddfuse"))
    args = parser.parse_args(argv)
    try:
        if args.command == "make":
            n = make_bag(
                args.ir, args.vis, args.out, args.rate, args.jitter_ms, args.offset_ms, args.ir_encoding, args.loops
            )
            print(f"tim-bag make: {n} pairs -> {args.out}")
        elif args.command == "replay":
            res = replay(args.bag, args.out, args.namespace, args.rate, args.linger)
            print(f"tim-bag replay: {res['pairs']} pairs replayed, outputs recorded in {args.out}")
        else:
            s = evaluate_replay(args.recorded, args.source, args.out, args.convention)
            print((args.out / "eval.md").read_text())
            print(f"dropped by reason: {s['dropped_by_reason']}")
    except (RuntimeError, ValueError, FileNotFoundError, OSError) as e:
        print(f"tim-bag {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
