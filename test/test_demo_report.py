"""The demo's report.html from a small recorded replay: every image it links exists (relatively), and every number
it shows is `tim-bag eval`'s eval.json (or the model card's), to the digits shown."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")

from conftest import SAMPLES  # noqa: E402

from tim_core.bundle import update_card  # noqa: E402
from tim_core.metrics import FAST_METRICS  # noqa: E402
from tim_core.runtime import Detection, Fuser  # noqa: E402
from tim_fusion_ros.bag import make_bag, read_bag, typestore  # noqa: E402
from tim_fusion_ros.bag_cli import main as tim_bag  # noqa: E402
from tim_fusion_ros.demo import _overlays  # noqa: E402
from tim_fusion_ros.image_codec import image_to_numpy, numpy_to_image  # noqa: E402
from tim_fusion_ros.report_html import lookup, write_report  # noqa: E402
from tim_fusion_ros.report_plots import STAGES  # noqa: E402
from tim_fusion_ros.sync import stamp_to_ns  # noqa: E402

PAIRS = ("00055D", "00127D", "FLIR_00018")  # bag order (by name); the second is superseded, two sizes fused
LATENCY_MS = (140.0, None, 95.5)


class ReportParser(HTMLParser):
    """Image sources, and the text of every element with a data-src (or of any td) in the page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[tuple[str | None, str]] = []  # (data-src, text) of td/span elements
        self._open: list[tuple[str | None, list[str]]] = []

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("td", "span") and ("data-src" in attrs or tag == "td"):
            self._open.append((attrs.get("data-src"), []))

    def handle_data(self, data) -> None:
        for _, parts in self._open:
            parts.append(data)

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "span") and self._open and (tag == "td" or self._open[-1][0] is not None):
            src, parts = self._open.pop()
            self.cells.append((src, "".join(parts).strip()))


def _recorded_replay(tmp: Path, bundle: Path) -> tuple[Path, Path]:
    """An input bag of three sample pairs and the recording a replay would make of it: fused images (from the
    bundle) for pairs 1 and 3 with known latencies, detections for pair 1, the node's last diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer

    from tim_fusion_ros.bag import ns_to_stamp
    from tim_fusion_ros.outputs import detection_array

    for kind in ("ir", "vis"):
        (tmp / "samples" / kind).mkdir(parents=True)
        for name in PAIRS:
            src = next((SAMPLES / kind).glob(f"{name}.*"))
            shutil.copy(src, tmp / "samples" / kind / src.name)
    source, rec = tmp / "in_bag", tmp / "rec_bag"
    assert make_bag(tmp / "samples" / "ir", tmp / "samples" / "vis", source, rate=2.0) == 3
    msgs = list(read_bag(source))
    names = [m.data for t, _, m in msgs if t == "/tim_bag/pair_name"]
    irs = [m for t, _, m in msgs if t == "/ir/image"]
    viss = [m for t, _, m in msgs if t == "/vis/image"]
    shift, fuser = 100 * 10**9, Fuser(bundle, device="cpu")  # replayed stamps: the originals + shift
    pairs = []
    store = typestore()
    with Writer(rec, version=8) as writer:
        conn = {t: writer.add_connection(t, k, typestore=store) for t, k in (
            ("/fused/image", "sensor_msgs/msg/Image"), ("/detections", "vision_msgs/msg/Detection2DArray"),
            ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray"))}
        for name, ir, vis, latency in zip(names, irs, viss, LATENCY_MS):
            ir_stamp, vis_stamp = stamp_to_ns(ir.header.stamp), stamp_to_ns(vis.header.stamp)
            published = max(ir_stamp, vis_stamp) + shift + 10**6
            pairs.append({"name": name, "ir_stamp": ir_stamp, "ir_stamp_replayed": ir_stamp + shift,
                          "vis_stamp": vis_stamp, "vis_stamp_replayed": vis_stamp + shift, "published_ns": published})
            if latency is None:
                continue
            header = vis.header
            header.stamp = ns_to_stamp(vis_stamp + shift)
            fused = fuser(image_to_numpy(ir), image_to_numpy(vis)).fused
            t = published + int(latency * 1e6)
            writer.write(conn["/fused/image"], t, serialize_message(numpy_to_image(fused, "rgb8", header)))
            if name == PAIRS[0]:
                box = Detection(0, "person", 0.9, (100.0, 120.0, 180.0, 300.0))
                writer.write(conn["/detections"], t, serialize_message(detection_array([box], header)))
        values = {"device": "cpu", "drops_superseded": "1", "drops_too_old": "0", "end_to_end_ms_p50": "120.000",
                  "end_to_end_ms_p95": "139.000"}
        for i, stage in enumerate(STAGES):
            values |= {f"{stage}_ms_p50": f"{0.5 + 7 * i:.3f}", f"{stage}_ms_p95": f"{1.25 + 9 * i:.3f}"}
        status = DiagnosticStatus(name="/tim_fusion: fusion", values=[KeyValue(key=k, value=v)
                                                                       for k, v in values.items()])
        writer.write(conn["/diagnostics"], published + 10**9, serialize_message(DiagnosticArray(status=[status])))
    (rec / "tim_replay.json").write_text(json.dumps({"source": str(source), "rate": 1.0, "pairs": pairs}))
    return source, rec


@pytest.fixture
def report(tmp_path, tiny_bundle):
    """(report.html path, eval.json, card) from `tim-bag eval` of a small recorded replay and write_report."""
    source, rec = _recorded_replay(tmp_path, tiny_bundle)
    out = tmp_path / "demo"
    assert tim_bag(["eval", str(rec), "--source", str(source), "--out", str(out / "eval")]) == 0
    assert _overlays(rec, out / "eval") == 1
    # a card with validation numbers, as `tim train` writes them
    validation = {"convention": "matlab", "n": 7} | {
        key: {m: 0.1 * (i + 1) + k for i, m in enumerate(FAST_METRICS)}
        for k, key in enumerate(("model", "baseline_mean", "baseline_max"))}
    card = update_card(tiny_bundle, name="tiny_test", validation=validation)
    run = {"model": "tiny_test", "bundle": str(tiny_bundle), "card": card, "bag_rate_hz": 2.0, "default_threads": 2,
           "params": {"device": "auto", "threads": 0, "backend": "torch", "half": False, "expected_rate_hz": 2.0}}
    page = write_report(out, run)
    return page, json.loads((out / "eval" / "eval.json").read_text()), card


def test_every_linked_image_exists_relative_to_the_report(report) -> None:
    page, summary, _ = report
    parser = ReportParser()
    parser.feed(page.read_text())
    for name in summary["per_pair"]:
        for kind in ("ir", "vis", "fused"):
            assert f"eval/{kind}/{name}.png" in parser.images
            assert f"report/crops/{name}_{kind}.png" in parser.images
    assert f"eval/overlay/{PAIRS[0]}.png" in parser.images  # the detection the node published
    assert {"report/latency.png", "report/stages.png"} <= set(parser.images)
    for src in parser.images:
        assert not Path(src).is_absolute() and ":" not in src, src  # the folder can be zipped and sent
        assert (page.parent / src).is_file(), src
    assert str(page.parent.parent) not in page.read_text()  # no absolute path of this machine


def test_every_number_shown_is_eval_json_or_the_card(report) -> None:
    page, summary, card = report
    parser = ReportParser()
    parser.feed(page.read_text())
    shown = {}
    for src, text in parser.cells:
        if src is None:  # a td without a source must not hold a number
            with pytest.raises(ValueError):
                float(text)
            continue
        origin, path = src.split(":", 1)
        value = lookup(summary if origin == "eval" else card, path)
        if value is None:
            assert text == "n/a", src
        else:  # equal to the digits shown: within half a unit of the last one
            tol = 0.5 * 10 ** Decimal(text).as_tuple().exponent
            assert abs(float(text) - value) <= tol * (1 + 1e-9), (src, text, value)
        shown[src] = text
    metrics = list(summary["metrics"])
    expected = [f"eval:{group}/{m}" for m in metrics for group in ("metrics", "baselines/mean", "baselines/max")]
    expected += [f"card:validation/{k}/{m}" for m in metrics for k in ("model", "baseline_mean", "baseline_max")]
    expected += [f"eval:per_pair/{name}/{k}/{m}" for name in summary["per_pair"] for m in metrics
                 for k in ("model", "baseline_mean", "baseline_max")]
    expected += [f"eval:latency_ms/{p}" for p in ("p50", "p95", "max")] + ["eval:throughput_hz", "eval:pairs_sent"]
    expected += [f"eval:node_stage_ms/{s}_ms_{p}" for s in [*STAGES, "end_to_end"] for p in ("p50", "p95")]
    assert not set(expected) - set(shown), sorted(set(expected) - set(shown))
    assert set(summary["per_pair"]) == {PAIRS[0], PAIRS[2]}


def test_eval_json_tells_the_per_frame_story(report) -> None:
    page, summary, _ = report
    frames = summary["frames"]
    assert [f["name"] for f in frames] == list(PAIRS)
    assert [f["status"] for f in frames] == ["fused", "superseded", "fused"]
    assert [f["latency_ms"] for f in frames] == pytest.approx(LATENCY_MS)
    assert summary["inputs"]["vis"]["encodings"] == ["rgb8"] and summary["inputs"]["ir"]["encodings"] == ["mono8"]
    assert summary["node_device"] == "cpu"
    parser = ReportParser()
    parser.feed(page.read_text())
    labels = [text for src, text in parser.cells if src is None]
    assert set(STAGES.values()) <= set(labels) and not any("_ms_p" in t for t in labels)  # readable stage names
    assert f"{PAIRS[1]} (superseded)" in page.read_text()
    # the baselines are the pixel-wise mean / max of the luma, scored like the model
    mean = summary["per_pair"][PAIRS[0]]["baseline_mean"]
    assert all(np.isfinite(v) for v in mean.values() if v is not None)
