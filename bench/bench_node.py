"""The fusion node over real DDS: 640x512 mono16 IR + rgb8 VIS pairs at 30 Hz, per-stage latency from /diagnostics.

Usage: python bench/bench_node.py [--model BUNDLE] [--backend torch|onnxruntime|...] [--seconds 60] [--smoke]
The node (tim_fusion_ros.fusion_node) runs as a subprocess, started as the launch file does; this
process publishes the samples/ pairs (IR scaled to 16 bit) stamped with the wall clock, counts fused
images, reads the node's p50/p95 per stage (decode, fuse, prepare_finish and its parts, tasks, encode,
publish, end_to_end) from its last /diagnostics message and its CPU time and RSS from /proc. The model is
the default bundle when shipped, else tim_light with random weights. Writes bench/results/node_MODEL_BACKEND.json
(--smoke: a tiny random model, 128x160 at 10 Hz for 4 s, node_smoke.tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))  # rosgraph: the node-as-subprocess helpers the ROS tests use

from rosgraph import DOMAIN_ID, image_msg, spin_until, start_node, stop_node

from tim_core.backends import CHOICES as BACKEND_CHOICES
from tim_core.backends import choose
from tim_core.bench import format_table, machine_info, materialize, rss_mb
from tim_core.files import pair_paths, read_image, write_text_atomic
from tim_core.runtime import DEFAULT_MODEL, BundleError, resolve_bundle

STAGES = ("decode", "fuse", "prepare_finish", "normalise", "ycbcr", "to_uint8", "tasks", "encode", "publish",
          "end_to_end")  # normalise, ycbcr and to_uint8 are the parts of prepare_finish
OUTSIDE_MODEL = ("decode", "prepare_finish", "tasks", "encode", "publish")
SMOKE_GENOTYPE = {"name": "smoke", "width": 8, "cells": [{"type": "chain", "ops": ["dw_sep_3x3"]}]}


def input_pairs(height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The samples/ pairs of equal size, resized to HxW: IR as uint16 (x257), visible as RGB uint8."""
    pairs, _ = pair_paths(ROOT / "samples" / "ir", ROOT / "samples" / "vis")
    out = []
    for pair in pairs:
        ir, vis = read_image(pair.a), read_image(pair.b)
        if ir.shape[:2] != vis.shape[:2]:
            continue
        ir = cv2.resize(ir if ir.ndim == 2 else cv2.cvtColor(ir, cv2.COLOR_RGB2GRAY), (width, height))
        vis = cv2.resize(vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2RGB), (width, height))
        out.append((ir.astype(np.uint16) * 257, vis))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(model: Path, backend: str, seconds: float, rate: float, size: tuple[int, int], tmp: Path,
        threads: int = 0) -> dict:
    """Start the node, stream pairs for `seconds`, return the measurements."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    proc = start_node(tmp, "-r", "__ns:=/bench", "-p", f"model:={model}", "-p", "device:=cpu",
                      "-p", f"backend:={backend}", "-p", f"expected_rate_hz:={rate}", "-p", "diagnostic_period:=0.5",
                      "-p", f"threads:={threads}")
    rclpy.init(domain_id=DOMAIN_ID)
    node = rclpy.create_node("bench_publisher")
    diag: list[dict[str, str]] = []
    fused: list[int] = []
    try:
        pub_ir = node.create_publisher(Image, "/bench/ir/image", qos_profile_sensor_data)
        pub_vis = node.create_publisher(Image, "/bench/vis/image", qos_profile_sensor_data)
        node.create_subscription(Image, "/bench/fused/image", lambda m: fused.append(time.time_ns()),
                                 QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag.extend(
            {kv.key: kv.value for kv in s.values} for s in m.status if "fusion" in s.name), 10)
        if not spin_until(node, lambda: pub_ir.get_subscription_count() and pub_vis.get_subscription_count(), 120):
            raise RuntimeError(f"the node never subscribed; its log: {tmp / 'node.log'}")
        messages = [(image_msg(ir, "mono16", 0, "ir"), image_msg(vis, "rgb8", 0, "vis"))
                    for ir, vis in input_pairs(*size)]
        period, sent, cpu0, t_start = 1.0 / rate, 0, cpu_seconds(proc.pid), time.monotonic()
        while time.monotonic() - t_start < seconds:
            ir_msg, vis_msg = messages[sent % len(messages)]
            stamp = node.get_clock().now().to_msg()  # wall clock: the node's end_to_end is publish time - stamp
            ir_msg.header.stamp = vis_msg.header.stamp = stamp
            pub_ir.publish(ir_msg)
            pub_vis.publish(vis_msg)
            sent += 1
            next_tick = t_start + sent * period
            while (wait := next_tick - time.monotonic()) > 0:
                rclpy.spin_once(node, timeout_sec=wait)
        wall = time.monotonic() - t_start
        cpu = cpu_seconds(proc.pid) - cpu0
        n_diag = len(diag)
        spin_until(node, lambda: len(diag) > n_diag + 1, 30.0)  # a report that covers the last pairs
        rss, peak = rss_mb("VmRSS", proc.pid), rss_mb("VmHWM", proc.pid)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_node(proc)
    if not diag:
        raise RuntimeError(f"no /diagnostics from the node; its log: {tmp / 'node.log'}")
    last = diag[-1]
    stages = {s: {"p50_ms": float(last[f"{s}_ms_p50"]), "p95_ms": float(last[f"{s}_ms_p95"])}
              for s in STAGES if f"{s}_ms_p50" in last}
    outside = sum(stages[s]["p50_ms"] for s in OUTSIDE_MODEL if s in stages)
    return {"pairs_sent": sent, "publish_rate_hz": sent / wall, "fused_received": len(fused),
            "fused_rate_hz": len(fused) / wall, "pairs_formed": int(last.get("pairs_formed", 0)),
            "dropped": sent - len(fused), "node_drops": {k: int(v) for k, v in last.items() if k.startswith("drops_")},
            "stages": stages, "outside_model_p50_ms": outside,
            "outside_model_share": outside / stages["fuse"]["p50_ms"] if "fuse" in stages else None,
            "node_cpu_cores": cpu / wall, "node_rss_mb": rss, "node_peak_rss_mb": peak, "seconds": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=f"bundle (default: {DEFAULT_MODEL} if shipped, else tim_light random)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="the node's backend parameter (default: auto, the node's default)")
    parser.add_argument("--threads", type=int, default=0,
                        help="the node's threads parameter (default 0: the backend's default, all cores)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=30.0, help="pairs per second")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 128x160, 10 Hz, 4 s")
    args = parser.parse_args(argv)
    size, seconds, rate = ((128, 160), 4.0, 10.0) if args.smoke else ((512, 640), args.seconds, args.rate)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.smoke:
            spec = str(tmp / "smoke_genotype.json")
            Path(spec).write_text(json.dumps(SMOKE_GENOTYPE))
        else:
            spec = args.model or DEFAULT_MODEL
            try:
                resolve_bundle(spec)
            except BundleError:
                spec = args.model or "tim_light"
        bundle, label = materialize(spec, tmp)
        print(f"node benchmark: {label}, backend {args.backend}, {size[1]}x{size[0]} mono16 + rgb8 at {rate:g} Hz "
              f"for {seconds:g} s over DDS", flush=True)
        result = run(bundle, args.backend, seconds, rate, size, tmp, args.threads)
    rows = [{"stage": s, **v} for s, v in result["stages"].items()]
    print(format_table(rows, [("stage", "stage", "s"), ("p50_ms", "p50 ms", ".2f"), ("p95_ms", "p95 ms", ".2f")]))
    share = result["outside_model_share"]
    print(f"pairs sent {result['pairs_sent']} ({result['publish_rate_hz']:.1f} Hz), fused {result['fused_received']} "
          f"({result['fused_rate_hz']:.2f} Hz), dropped {result['dropped']} (newest pair wins; node counters "
          f"{result['node_drops']})")
    print(f"outside the model: {result['outside_model_p50_ms']:.2f} ms p50 per pair = "
          f"{100 * share:.1f}% of the model's {result['stages']['fuse']['p50_ms']:.1f} ms (target < 10%)"
          if share is not None else "outside the model: no fuse timings reported")
    print(f"node process: {result['node_cpu_cores']:.2f} CPU cores, RSS {result['node_rss_mb']:.0f} MiB "
          f"(peak {result['node_peak_rss_mb']:.0f} MiB)")
    picked = choose(args.backend)  # what `auto` resolves to in this environment (the node runs on the CPU here)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
    suffix = f"_{args.threads}thr" if args.threads else ""
    out = ROOT / "bench" / "results" / ("node_smoke.tmp" if args.smoke else f"node_{slug}_{picked}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps({"benchmark": "fusion node over DDS", "model": label, "backend": picked,
                                       "backend_parameter": args.backend, "threads": args.threads,
                                       "height": size[0], "width": size[1],
                                       "rate_hz": rate, "smoke": args.smoke, "machine": machine_info(), **result},
                                      indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
