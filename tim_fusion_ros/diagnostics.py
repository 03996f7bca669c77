"""The node's /diagnostics status: rates, drops by reason, latencies, and the watchdogs that name a fix.

Watchdogs: the inference thread stopped (ERROR); an input with publishers that delivers nothing (discovery
range, transport, QoS); both cameras streaming but no pair (stamp offset vs sync_slop); inputs slower than
expected; drops since the last report (WARN).
"""

from __future__ import annotations

import time

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

CAMERAS = ("ir", "vis")


def silent_input(topic: str, publishers: int, silent_s: float, limit: float) -> str | None:
    """The warning for an input announced by the graph that delivers nothing, or None."""
    if publishers == 0 or silent_s <= limit:
        return None
    return (f"{topic}: {publishers} publisher(s) but nothing received for {silent_s:.0f} s; likely the discovery "
            "range (ROS_AUTOMATIC_DISCOVERY_RANGE / ROS_LOCALHOST_ONLY must match on both sides), the Fast DDS "
            "transport (export FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for every process), or best-effort frames "
            f"lost on the way (publish reliable and set qos_overrides.{topic}.subscription.reliability: reliable)")


def stalled_sync(no_pair_s: float, limit: float, offset_s: float | None, slop: float) -> str | None:
    """The warning for both cameras streaming but no pair for `limit` seconds, or None."""
    if no_pair_s <= limit:
        return None
    if offset_s is None:
        return f"no IR/VIS pair for {limit:.0f} s; cameras not time-synchronized?"
    return (f"no IR/VIS pair for {limit:.0f} s: stamp offset {offset_s:+.3f} s vs sync_slop {slop} s; "
            "increase sync_slop or time-synchronize the cameras")


def device_values(fuser) -> dict[str, object]:
    """The device and engine the model runs on (backend auto resolved) and, on CUDA, the memory it holds."""
    if fuser is None:
        return {}
    values: dict[str, object] = {"device": str(fuser.device), "backend": fuser.backend}
    if fuser.device.type == "cuda":
        values["gpu_memory_mb"] = torch.cuda.memory_allocated(fuser.device) / 2**20
    return values


class FusionDiagnostics:
    """Builds the node's DiagnosticArray; remembers what it reported to count drops since the last report."""

    def __init__(self) -> None:
        self._drops_reported = 0

    def report(self, node) -> DiagnosticArray:
        """One DiagnosticStatus named after the node's fully qualified name (namespaces stay apart)."""
        p, now = node.params, time.monotonic()
        frames = [node.frame_ids.get(c, "") for c in CAMERAS]
        status = DiagnosticStatus(name=f"{node.get_fully_qualified_name()}: fusion",
                                  hardware_id="+".join(f for f in frames if f))
        drops = node.drops.snapshot()
        drops.update(node.sync.drops())
        values = {"state": "active" if node.active else "inactive", "pairs_formed": node.sync.pairs_formed,
                  "fused_rate_hz": node.stats.rate("fused_out"), "sync_slop_s": node.sync.slop,
                  "clock_resets": node.sync.clock_resets}
        warnings, errors = [], []
        if node.active and not (node.worker is not None and node.worker.alive):
            errors.append("the inference thread has stopped: no pair is fused; restart the node and report its log")
        for camera in CAMERAS:
            rate, age = node.stats.rate(f"{camera}_in"), node.stats.age(f"{camera}_in")
            values[f"{camera}_rate_hz"], values[f"{camera}_age_s"] = rate, -1.0 if age is None else age
            topic = node.input_topics[camera]
            publishers = node.count_publishers(topic)
            values[f"{camera}_publishers"] = publishers
            silent = silent_input(topic, publishers, now - node.configured_at if age is None else age,
                                  p.input_watchdog)
            if silent:
                warnings.append(silent)
                node.get_logger().warning(silent, throttle_duration_sec=10.0)
            elif node.active and rate < 0.5 * p.expected_rate_hz:
                warnings.append(f"{camera} input at {rate:.1f} Hz, expected {p.expected_rate_hz:.0f}")
        for reason, n in sorted(drops.items()):
            values[f"drops_{reason}"] = n
        if sum(drops.values()) > self._drops_reported:
            warnings.append(f"{sum(drops.values()) - self._drops_reported} dropped since last report")
        self._drops_reported = sum(drops.values())
        for stage, (p50, p95) in node.stats.percentiles().items():
            values[f"{stage}_ms_p50"], values[f"{stage}_ms_p95"] = p50, p95
        ages = [node.stats.age(f"{c}_in") for c in CAMERAS]
        if node.active and all(a is not None and a < p.sync_watchdog for a in ages):
            stalled = stalled_sync(now - node.last_pair, p.sync_watchdog, node.sync.last_offset_s, p.sync_slop)
            if stalled:
                warnings.append(stalled)
                node.get_logger().warning(stalled, throttle_duration_sec=5.0)
        values.update(device_values(node.fuser))
        if node.registration is not None:
            values.update(node.registration.diagnostic_values())
        status.level = DiagnosticStatus.ERROR if errors else DiagnosticStatus.WARN if warnings else DiagnosticStatus.OK
        status.message = "; ".join(errors + warnings) if errors or warnings else "fusing"
        status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        return DiagnosticArray(header=Header(stamp=node.get_clock().now().to_msg()), status=[status])
