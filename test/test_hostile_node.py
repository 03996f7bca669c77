"""Hostile inputs over real DDS, each of which once stopped the node fusing for good: every one is dropped and
counted under its reason, and a good pair afterwards is still fused and published."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")

import cv2
import torch
from builtin_interfaces.msg import Time
from conftest import TINY_GENOTYPE
from rosgraph import DOMAIN_ID, IR, VIS, Probe, image_msg, next_stamp, spin_until, start_node, stop_node
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header


@pytest.fixture(scope="module")
def module_bundle(tmp_path_factory):
    from tim_core.genotype import Genotype
    from tim_core.network import FusionNet
    from tim_core.runtime import save_bundle

    torch.manual_seed(0)
    net = FusionNet(Genotype.from_dict(TINY_GENOTYPE))
    return save_bundle(tmp_path_factory.mktemp("bundle") / "tiny_bundle", net, {"task": "fusion"})


class NodeProbe(Probe):
    """A Probe that keeps only the diagnostics of the node in its namespace (two nodes share /diagnostics)."""

    def __init__(self, ns: str, **kwargs):
        self.status_name = f"{ns}/fusion_node: fusion"
        super().__init__(None, ns, **kwargs)

    def _on_diag(self, msg) -> None:
        msg.status = [s for s in msg.status if s.name == self.status_name]
        super()._on_diag(msg)


@pytest.fixture(scope="module")
def ros_context():
    rclpy.init(domain_id=DOMAIN_ID)
    yield None
    rclpy.shutdown()


def _graph(tmp_path_factory, bundle, ns: str, *args: str, compressed: bool = False):
    """A node subprocess in namespace `ns` and a probe on its topics; yields (probe, proc, log path)."""
    tmp = tmp_path_factory.mktemp(ns.strip("/"))
    suffix = "/compressed" if compressed else ""
    proc = start_node(tmp, "-r", f"__ns:={ns}", "-r", f"ir/image{suffix}:=cam/ir/image{suffix}",
                      "-r", f"vis/image{suffix}:=cam/vis/image{suffix}", "-p", f"model:={bundle}",
                      "-p", "device:=cpu", "-p", "diagnostic_period:=0.3", *args)
    try:
        probe = NodeProbe(ns, compressed=compressed)
        probe.wait_matched()
        yield probe, proc, tmp / "node.log"
        probe.node.destroy_node()
    finally:
        stop_node(proc)
        print((tmp / "node.log").read_text())


@pytest.fixture(scope="module")
def raw_node(ros_context, tmp_path_factory, module_bundle):
    # max_pixels 400000: a 640x480 pair passes, a 1000x1000 frame is too large (cheap to send)
    yield from _graph(tmp_path_factory, module_bundle, "/h1", "-p", "max_pixels:=400000")


@pytest.fixture(scope="module")
def compressed_node(ros_context, tmp_path_factory, module_bundle):
    yield from _graph(tmp_path_factory, module_bundle, "/h2", "-p", "input_transport:=compressed", compressed=True)


def _mono(shape, stamp: int, frame: str, encoding: str = "mono8"):
    msg = image_msg(np.full(shape, 128, np.uint8), "mono8", stamp, frame)
    msg.encoding = encoding  # a Bayer mosaic has the layout of mono8
    return msg


HOSTILE_RAW = {  # name: (ir message, vis message) at stamp s, the reason it is dropped under
    "1x1": (lambda s: (_mono((1, 1), s, "ir_cam"), _mono((1, 1), s, "vis_cam")), "too_small"),
    "1x640": (lambda s: (_mono((1, 640), s, "ir_cam"), _mono((1, 640), s, "vis_cam")), "too_small"),
    "1x1_bayer": (lambda s: (image_msg(IR, "mono8", s, "ir_cam"), _mono((1, 1), s, "vis_cam", "bayer_rggb8")),
                  "too_small"),
    "1x1_visible_under_resize_ir": (lambda s: (image_msg(IR, "mono8", s, "ir_cam"), _mono((1, 1), s, "vis_cam")),
                                    "too_small"),
    "1000x1000_over_max_pixels": (lambda s: (_mono((1000, 1000), s, "ir_cam"), image_msg(VIS, "rgb8", s, "vis_cam")),
                                  "too_large"),
}


@pytest.mark.parametrize("case", list(HOSTILE_RAW))
def test_degenerate_frame_is_dropped_and_the_node_keeps_fusing(raw_node, case: str) -> None:
    probe, proc, log = raw_node
    make, reason = HOSTILE_RAW[case]
    internal_before = probe.drops("internal_error")
    probe.send_and_expect_drop(*make(next_stamp()), reason)
    assert probe.good_pair_answered().header.frame_id == "vis_cam"
    assert proc.poll() is None, "the node died"
    last = probe.diag[-1]
    assert last["_level"] != 2 and last["state"] == "active", last
    assert probe.drops("internal_error") == internal_before


def test_clock_jump_back_restarts_pairing(raw_node) -> None:
    probe, proc, log = raw_node
    now = probe.good_pair_answered()
    backwards_before, resets_before = probe.drops("stamp_backwards"), int(probe.diag[-1]["clock_resets"])
    back = now.header.stamp.sec * 10**9 + now.header.stamp.nanosec - 100 * 10**9  # the cameras' clock: -100 s
    answered = []
    for k in range(3):  # the new timeline pairs at once, frame after frame
        stamp = back + k * 100_000_000
        probe.send(image_msg(IR, "mono8", stamp, "ir_cam"), image_msg(VIS, "rgb8", stamp, "vis_cam"))
        answered.append(spin_until(probe.node, lambda s=stamp: any(
            m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == s for m in probe.fused), 10.0))
    assert all(answered), f"pairs after the clock jump answered: {answered}"
    assert spin_until(probe.node, lambda: int(probe.diag[-1]["clock_resets"]) > resets_before, 5.0)
    assert probe.drops("stamp_backwards") == backwards_before, "the jump was counted as stamp_backwards"
    assert "clock jumped back 100" in log.read_text()
    assert probe.good_pair_answered() is not None  # and the old timeline again (a jump forward is no reset)


def _png(img: np.ndarray, stamp: int, frame: str, claim: tuple[int, int] | None = None) -> CompressedImage:
    """A PNG CompressedImage; `claim` rewrites the header's (height, width) with a valid CRC."""
    ok, buf = cv2.imencode(".png", img if img.ndim == 2 else img[..., ::-1])
    data = bytearray(buf.tobytes())
    if claim is not None:
        data[16:24] = struct.pack(">II", claim[1], claim[0])
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame)
    return CompressedImage(header=header, format="png", data=bytes(data))


def _compressed_pair_answered(probe: Probe) -> bool:
    for _ in range(5):
        s = next_stamp()
        before = len(probe.fused)
        probe.send(_png(IR, s, "ir_cam"), _png(VIS, s, "vis_cam"))
        if spin_until(probe.node, lambda: len(probe.fused) > before, 10.0):
            return True
    return False


@pytest.mark.parametrize("case", ["header_60000x60000", "header_1x1"])
def test_compressed_header_outside_the_limits_is_dropped_before_decoding(compressed_node, case: str) -> None:
    probe, proc, log = compressed_node
    assert _compressed_pair_answered(probe)
    s = next_stamp()
    if case == "header_60000x60000":
        probe.send_and_expect_drop(_png(IR, s, "ir_cam", claim=(60000, 60000)), _png(VIS, s, "vis_cam"), "too_large")
    else:
        probe.send_and_expect_drop(_png(IR[:1, :1].copy(), s, "ir_cam"), _png(VIS, s, "vis_cam"), "too_small")
    assert _compressed_pair_answered(probe), "no fused image after the hostile frame"
    assert proc.poll() is None and probe.drops("internal_error") == 0
