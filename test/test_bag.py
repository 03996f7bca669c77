"""tim-bag over real DDS: make a rosbag2 from the samples, replay it through the node, evaluate; the result equals
`tim fuse` + `tim eval` on the same images."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")

from conftest import SAMPLES  # noqa: E402
from rosgraph import DOMAIN_ID, start_node, stop_node  # noqa: E402

from tim_core.cli import main as tim  # noqa: E402
from tim_core.evaluate import evaluate_folders  # noqa: E402
from tim_core.files import read_image  # noqa: E402
from tim_fusion_ros.bag import read_bag
from tim_fusion_ros.bag_cli import main as tim_bag  # noqa: E402


def test_make_writes_a_version_8_sqlite_bag(tmp_path) -> None:
    assert (
        tim_bag(
            [
                "make",
                "--ir",
                str(SAMPLES / "ir"),
                "--vis",
                str(SAMPLES / "vis"),
                "--out",
                str(tmp_path / "b"),
                "--rate",
                "10",
                "--ir-encoding",
                "mono16",
            ]
        )
        == 0
    )
    meta = (tmp_path / "b" / "metadata.yaml").read_text()
    assert "version: 8" in meta and "storage_identifier: sqlite3" in meta
    msgs = list(read_bag(tmp_path / "b"))
    ir = [m for t, _, m in msgs if t == "/ir/image"]
    vis = [m for t, _, m in msgs if t == "/vis/image"]
    assert len(ir) == len(vis) == 5 and {m.encoding for m in ir} == {"mono16"} and vis[0].encoding == "rgb8"
    offsets = [(a.header.stamp.nanosec - b.header.stamp.nanosec) * 1e-6 for a, b in zip(ir, vis)]
    assert all(-10 < o < 20 for o in offsets) and len(set(offsets)) > 1  # offset + jitter, not identical stamps
    gaps = np.diff([b.header.stamp.sec + b.header.stamp.nanosec * 1e-9 for b in vis])
    assert np.allclose(gaps, 0.1, atol=0.02)
    assert (
        tim_bag(["make", "--ir", str(SAMPLES / "ir"), "--vis", str(SAMPLES / "vis"), "--out", str(tmp_path / "b")]) == 2
    )


def test_make_replay_eval_matches_tim_eval(tmp_path, tiny_bundle, monkeypatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    bag, rec, ev = tmp_path / "in", tmp_path / "rec", tmp_path / "eval"
    assert (
        tim_bag(["make", "--ir", str(SAMPLES / "ir"), "--vis", str(SAMPLES / "vis"), "--out", str(bag), "--rate", "1"])
        == 0
    )
    # threads:=1 like this test process (conftest) and eager torch like `tim fuse` (the node's default `auto` may
    # pick openvino, within 1 grey level): the same reduction order, so pixels can be compared exactly
    node = start_node(tmp_path, "-p", f"model:={tiny_bundle}", "-p", "device:=cpu", "-p", "threads:=1",
                      "-p", "backend:=torch")
    try:
        assert tim_bag(["replay", str(bag), "--out", str(rec), "--linger", "4"]) == 0
    finally:
        stop_node(node)
    assert tim_bag(["eval", str(rec), "--source", str(bag), "--out", str(ev)]) == 0
    summary = json.loads((ev / "eval.json").read_text())
    # Latest pair wins: on a loaded machine some pairs are superseded, and each is accounted for.
    drops = summary["dropped_by_reason"]
    assert summary["pairs_sent"] == 5 and summary["fused_received"] >= 1
    assert summary["fused_received"] + drops["superseded"] + drops["too_old"] + drops["no_partner"] == 5
    assert summary["latency_ms"]["p50"] > 0 and summary["throughput_hz"] > 0
    assert "superseded" in summary["dropped_by_reason"]

    ref = tmp_path / "ref"
    assert (
        tim(
            [
                "fuse",
                "--ir",
                str(SAMPLES / "ir"),
                "--vis",
                str(SAMPLES / "vis"),
                "--out",
                str(ref),
                "--model",
                str(tiny_bundle),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    names = sorted(p.stem for p in (ev / "fused").glob("*.png"))
    for name in names:  # the node's pixels are exactly tim fuse's
        assert np.array_equal(read_image(ev / "fused" / f"{name}.png"), read_image(ref / f"{name}.png")), name
    sub = tmp_path / "sub"
    for kind, src in (("ir", SAMPLES / "ir"), ("vis", SAMPLES / "vis"), ("fused", ref)):
        (sub / kind).mkdir(parents=True)
        for name in names:
            f = next(src.glob(f"{name}.*"))
            (sub / kind / f.name).symlink_to(f)
    expected = evaluate_folders(sub / "ir", sub / "vis", sub / "fused", progress=False)["mean"]
    for metric, value in expected.items():
        assert summary["metrics"][metric] == pytest.approx(value, rel=1e-9, nan_ok=True), metric
