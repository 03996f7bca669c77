"""The running node over real DDS: live parameters through a real parameter client (applied at once, or refused
with the step that applies them), diagnostics named after the node's namespace with the cameras' frame ids, and
the warning for an input whose publishers deliver nothing."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rosgraph import DOMAIN_ID, IR, VIS, Probe, image_msg, next_stamp, spin_until, start_node, stop_node

NS = "/robot1"


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from conftest import TINY_GENOTYPE

    from tim_core.genotype import Genotype
    from tim_core.network import FusionNet
    from tim_core.runtime import save_bundle

    tmp = tmp_path_factory.mktemp("live")
    bundle = save_bundle(tmp / "tiny_bundle", FusionNet(Genotype.from_dict(TINY_GENOTYPE)), {"task": "fusion"})
    proc = start_node(tmp, "-r", f"__ns:={NS}", "-r", "ir/image:=cam/ir/image", "-r", "vis/image:=cam/vis/image",
                      "-p", f"model:={bundle}", "-p", "device:=cpu", "-p", "diagnostic_period:=0.3",
                      "-p", "input_watchdog:=1.0")
    rclpy.init(domain_id=DOMAIN_ID)
    try:
        probe = Probe(None, NS)
        statuses = []
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10)
        client = AsyncParameterClient(probe.node, f"{NS}/fusion_node")
        assert client.wait_for_services(30.0), "the node's parameter services never appeared"
        probe.wait_matched()
        yield probe, client, statuses, proc
    finally:
        rclpy.shutdown()
        stop_node(proc)
        print((tmp / "node.log").read_text())


def _call(probe: Probe, future):
    assert spin_until(probe.node, future.done, 10.0), "no answer from the node's parameter service"
    return future.result()


def _set(probe: Probe, client: AsyncParameterClient, **values):
    results = _call(probe, client.set_parameters([Parameter(k, value=v) for k, v in values.items()])).results
    return results[0] if len(results) == 1 else results


def test_input_with_silent_publishers_is_reported_with_the_fixes(graph) -> None:
    probe, client, statuses, proc = graph  # the probe's publishers are matched but have sent nothing

    def silent():
        return [s for s in statuses if "nothing received" in s.message]

    assert spin_until(probe.node, lambda: bool(silent()), 10.0), [s.message for s in statuses[-2:]]
    status = silent()[-1]
    assert int.from_bytes(status.level, "little") == 1  # WARN
    for fix in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA", "reliability: reliable"):
        assert fix in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["ir_publishers"] == "1" and values["vis_publishers"] == "1"
    # while frames flow the warning is gone (a single pair is not enough: silence after it is silence again)
    cleared, deadline = False, time.monotonic() + 15.0
    while not cleared and time.monotonic() < deadline:
        probe.good_pair_answered()
        n = len(statuses)
        spin_until(probe.node, lambda: len(statuses) > n, 3.0)
        cleared = "nothing received" not in statuses[-1].message
    assert cleared, statuses[-1].message


def test_diagnostics_are_named_after_the_namespace_and_the_cameras(graph) -> None:
    probe, client, statuses, proc = graph
    probe.good_pair_answered()
    n = len(statuses)
    assert spin_until(probe.node, lambda: len(statuses) > n, 5.0)
    assert statuses[-1].name == f"{NS}/fusion_node: fusion"
    assert statuses[-1].hardware_id == "ir_cam+vis_cam"


def test_live_parameter_applies_at_once(graph) -> None:
    probe, client, statuses, proc = graph
    probe.good_pair_answered()

    def offset_pair_answered() -> bool:  # IR 40 ms after VIS: outside the default slop of 20 ms
        s = next_stamp()
        before = len(probe.fused)
        probe.send(image_msg(IR, "mono8", s + 40_000_000, "ir_cam"), image_msg(VIS, "rgb8", s, "vis_cam"))
        return spin_until(probe.node, lambda: len(probe.fused) > before, 3.0)

    assert not offset_pair_answered()
    result = _set(probe, client, sync_slop=0.05)
    assert result.successful, result.reason
    assert any(offset_pair_answered() for _ in range(3)), "sync_slop 0.05 accepted but not applied"
    values = _call(probe, client.get_parameters(["sync_slop"])).values
    assert values[0].double_value == pytest.approx(0.05)
    assert spin_until(probe.node, lambda: probe.diag[-1].get("sync_slop_s") == "0.050", 5.0)
    assert _set(probe, client, sync_slop=0.02).successful


def test_parameters_that_need_a_transition_are_refused_with_the_reason(graph) -> None:
    probe, client, statuses, proc = graph
    refused = _set(probe, client, model="tim_ivif_compact")
    assert not refused.successful and "deactivate" in refused.reason
    refused = _set(probe, client, input_transport="compressed")
    assert not refused.successful and "configure" in refused.reason
    assert not _set(probe, client, autostart=False).successful  # read-only
    out_of_range = _set(probe, client, nms_iou=3.0)
    assert not out_of_range.successful and "nms_iou" in out_of_range.reason
    values = _call(probe, client.get_parameters(["model", "nms_iou"])).values
    assert values[0].string_value.endswith("tiny_bundle") and values[1].double_value == 0.5
    descriptions = _call(probe, client.describe_parameters(["sync_slop", "model", "autostart"])).descriptors
    assert "[live" in descriptions[0].description and "deactivate" in descriptions[1].description
    assert descriptions[2].read_only
    assert _set(probe, client, reference_camera="ir").successful
    assert probe.good_pair_answered().header.frame_id == "ir_cam"  # applied from the next pair
    assert _set(probe, client, reference_camera="vis").successful
    assert proc.poll() is None
