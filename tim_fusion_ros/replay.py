"""Replaying a bag through the running fusion node, and evaluating what it published (`tim-bag replay|eval`).

Replay publishes the bag's images with their original timing (scaled by --rate), re-stamped to now so the node's
latency figures are real, records every node output into a second bag and writes `tim_replay.json` (each pair's
original and replayed stamps and publish time) beside it. Eval matches the recorded fused images to the source
pairs by stamp and reports fusion metrics (the same code as `tim eval`) next to the pixel-wise mean/max baselines,
drops by reason, latency (per pair, and percentiles) and throughput.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .bag import OUTPUT_TOPICS, PAIR_TOPIC, message_class, must_be_new, ns_to_stamp, read_bag, typestore
from .sync import stamp_to_ns

KINDS = {"model": "fused", "baseline_mean": "mean", "baseline_max": "max"}  # eval.json per-pair key -> image folder


def replay(
    bag: Path, out: Path, namespace: str = "", rate: float = 1.0, linger: float = 5.0, match_timeout: float = 60.0
) -> dict:
    """Publish the bag's images through the running node with original timing; record its outputs into `out`."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from sensor_msgs.msg import Image

    must_be_new(out)
    ns = namespace.rstrip("/")
    rclpy.init()
    node = rclpy.create_node("tim_bag_replay")
    pubs = {t: node.create_publisher(Image, f"{ns}{t}", qos_profile_sensor_data) for t in ("/ir/image", "/vis/image")}
    store = typestore()
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
            original = stamp_to_ns(msg.header.stamp)
            msg.header.stamp = ns_to_stamp(wall_t0 + int((original - bag_t0) / rate))
            pubs[topic].publish(msg)
            camera = topic.split("/")[1]
            entry = pairs.setdefault(original if camera == "vis" else -original, {})
            entry.update(
                {
                    f"{camera}_stamp": original,
                    f"{camera}_stamp_replayed": stamp_to_ns(msg.header.stamp),
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


def _unanswered_reason(drops: dict[str, int], not_answered: int) -> str:
    """What an unanswered pair is called in the per-frame log: the node counts drops by reason, not by pair, so a
    pair is named `superseded` (or `dropped`) only when the counts leave no other explanation."""
    superseded = drops.get("superseded", 0)
    if superseded >= not_answered:
        return "superseded"
    return "dropped" if superseded == 0 else "superseded or dropped"


def evaluate_replay(recorded: Path, source: Path, out: Path, convention: str = "matlab") -> dict:
    """Metrics (model and mean/max baselines), drops, per-frame latency and throughput of a recorded replay;
    writes out/{ir,vis,fused,mean,max}, eval.json, eval.md."""
    from tim_core.color import to_unit
    from tim_core.evaluate import evaluate_folders
    from tim_core.files import write_image
    from tim_core.report import write_baselines

    from .image_codec import image_to_numpy

    replayed = json.loads((recorded / "tim_replay.json").read_text())
    log = replayed["pairs"]
    by_replayed = {}
    for i, p in enumerate(log):
        for key in ("vis_stamp_replayed", "ir_stamp_replayed"):
            if key in p:
                by_replayed[p[key]] = (i, p)
    sources, inputs = {}, {c: {"encodings": set(), "sizes": set()} for c in ("ir", "vis")}
    for topic, _t, msg in read_bag(source, {"/ir/image", "/vis/image"}):
        camera = topic.split("/")[1]
        inputs[camera]["encodings"].add(msg.encoding)
        inputs[camera]["sizes"].add(f"{msg.width}x{msg.height}")
        img = image_to_numpy(msg)
        if camera == "ir" and img.dtype != np.uint8:  # the 8-bit view the metrics need, by the node's rule
            img = np.round(to_unit(img, "percentile") * 255).astype(np.uint8)
        sources[(camera, stamp_to_ns(msg.header.stamp))] = img
    latency_by_pair, diag, recv = {}, {}, []
    for topic, t, msg in read_bag(recorded):
        if topic.endswith("/diagnostics"):
            for status in msg.status:
                if "fusion" in status.name:
                    diag = {kv.key: kv.value for kv in status.values}
            continue
        if not topic.endswith("fused/image") or stamp_to_ns(msg.header.stamp) not in by_replayed:
            continue
        i, p = by_replayed[stamp_to_ns(msg.header.stamp)]
        name = _pair_name(log, i)
        write_image(out / "ir" / f"{name}.png", sources[("ir", p["ir_stamp"])])
        write_image(out / "vis" / f"{name}.png", sources[("vis", p["vis_stamp"])])
        write_image(out / "fused" / f"{name}.png", image_to_numpy(msg))
        latency_by_pair[i] = (t - p["published_ns"]) * 1e-6
        recv.append(t)
    fused_n = len(latency_by_pair)
    if not fused_n:
        raise RuntimeError(
            f"{recorded}: no fused image matches a replayed pair; did the node run and publish fused/image?"
        )
    names = sorted(_pair_name(log, i) for i in latency_by_pair)
    write_baselines(out, names)
    scored = {kind: evaluate_folders(out / "ir", out / "vis", out / kind, convention=convention, progress=False)
              for kind in ("fused", "mean", "max")}
    drops = {k[len("drops_") :]: int(v) for k, v in diag.items() if k.startswith("drops_")}
    unanswered = _unanswered_reason(drops, len(log) - fused_n)
    t0 = min(p["published_ns"] for p in log)
    span = (max(recv) - t0) * 1e-9
    summary = {
        "pairs_sent": len(log),
        "fused_received": fused_n,
        "not_answered": len(log) - fused_n,
        "dropped_by_reason": drops,
        "latency_ms": _percentiles(list(latency_by_pair.values())),
        "throughput_hz": fused_n / span if span > 0 else float("nan"),
        "node_stage_ms": {k: float(v) for k, v in diag.items() if k.endswith(("_p50", "_p95"))},
        "node_device": diag.get("device"),
        "inputs": {c: {k: sorted(v) for k, v in kinds.items()} for c, kinds in inputs.items()},
        "replay_rate": replayed.get("rate"),
        "convention": convention,
        "metrics": scored["fused"]["mean"],
        "baselines": {"mean": scored["mean"]["mean"], "max": scored["max"]["mean"]},
        "per_pair": {
            name: {k: scored[kind]["per_image"][name] for k, kind in KINDS.items()} for name in names
        },
        "frames": [
            {
                "name": _pair_name(log, i),
                "published_s": (p["published_ns"] - t0) * 1e-9,
                "latency_ms": latency_by_pair.get(i),
                "status": "fused" if i in latency_by_pair else unanswered,
            }
            for i, p in enumerate(log)
        ],
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
        f"| metric ({convention}) | model | mean baseline | max baseline |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {_fmt(v)} | {_fmt(summary['baselines']['mean'][k])} | {_fmt(summary['baselines']['max'][k])} |"
        for k, v in summary["metrics"].items()
    ]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    return summary


def _pair_name(log: list[dict], i: int) -> str:
    """A pair's image name: its bag name, with the replay index when the bag repeats it (loops)."""
    name = log[i]["name"]
    return name if sum(q["name"] == name for q in log) == 1 else f"{name}_{i:04d}"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.5g}"  # Nabf is ~1e-4: significant digits, not decimals
