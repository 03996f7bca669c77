"""`make demo`: samples/ -> rosbag2 -> the real fusion node over DDS -> recorded outputs -> out/demo/report.html."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .bag_cli import positive_float

ROOT = Path(__file__).resolve().parents[1]


def _overlays(recorded: Path, eval_dir: Path) -> int:
    """Draw the recorded detections / masks over the fused images (eval_dir/overlay); returns how many."""
    from tim_core.files import read_image, write_image
    from tim_core.runtime import Detection

    from .bag import read_bag
    from .image_codec import image_to_numpy
    from .overlay import blend_mask, draw_detections
    from .sync import stamp_to_ns

    log = json.loads((recorded / "tim_replay.json").read_text())["pairs"]
    names = {p.get("vis_stamp_replayed"): p["name"] for p in log}
    names.update({p.get("ir_stamp_replayed"): p["name"] for p in log})
    dets, masks = {}, {}
    for topic, _t, msg in read_bag(recorded):
        name = names.get(stamp_to_ns(msg.header.stamp)) if hasattr(msg, "header") else None
        if name is None:
            continue
        if topic.endswith("/detections"):
            dets[name] = [
                Detection(
                    -1,
                    d.results[0].hypothesis.class_id,
                    d.results[0].hypothesis.score,
                    (
                        d.bbox.center.position.x - d.bbox.size_x / 2,
                        d.bbox.center.position.y - d.bbox.size_y / 2,
                        d.bbox.center.position.x + d.bbox.size_x / 2,
                        d.bbox.center.position.y + d.bbox.size_y / 2,
                    ),
                )
                for d in msg.detections
                if d.results
            ]
        elif topic.endswith("segmentation/mask"):
            masks[name] = image_to_numpy(msg)
    n = 0
    for name in set(dets) | set(masks):
        fused_path = eval_dir / "fused" / f"{name}.png"
        if fused_path.is_file():
            img = read_image(fused_path)
            img = blend_mask(img, masks[name]) if name in masks else img
            write_image(eval_dir / "overlay" / f"{name}.png", draw_detections(img, dets.get(name, [])))
            n += 1
    return n


MARKER = ".tim-demo"  # written into the folders the demo creates: only those are cleared without --overwrite


def claim_output(out: Path, overwrite: bool) -> None:
    """Make `out` an empty demo folder. An earlier demo's folder (it holds MARKER) is cleared; any other non-empty
    folder is left untouched unless `overwrite` (a FileExistsError says so)."""
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not (out / MARKER).is_file() and not overwrite:
            raise FileExistsError(f"{out}: holds files the demo did not write; choose another --out or pass "
                                  "--overwrite to clear it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by python -m tim_fusion_ros.demo; the next demo run may clear this folder\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tim-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--model", default=None,
                        help="bundle or shipped name (default: the node's, `model` in config/fusion.yaml)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rate", type=positive_float, default=0.5, help="pairs per second in the demo bag")
    parser.add_argument("--overwrite", action="store_true",
                        help="clear --out even if it holds files that an earlier demo did not write")
    args = parser.parse_args(argv)
    if args.model is None:
        from .params import load_defaults

        args.model = load_defaults()["model"]

    import torch

    from tim_core.runtime import BundleError, resolve_bundle

    from .bag import make_bag
    from .params import load_defaults
    from .replay import evaluate_replay, replay
    from .report_html import write_report

    try:
        bundle = resolve_bundle(args.model)
    except BundleError as e:
        print(f"make demo: {e}", file=sys.stderr)
        return 2
    out = args.out
    try:
        claim_output(out, args.overwrite)
    except OSError as e:
        print(f"make demo: {e}", file=sys.stderr)
        return 2
    n = make_bag(ROOT / "samples" / "ir", ROOT / "samples" / "vis", out / "input_bag", rate=args.rate)
    print(f"[demo] {n} sample pairs -> {out / 'input_bag'}")
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))  # keep the demo off other graphs
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env.setdefault("ROS_LOG_DIR", str(out / "roslog"))
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "FASTDDS_BUILTIN_TRANSPORTS", "ROS_LOG_DIR")})
    params_file = ROOT / "config" / "fusion.yaml"
    overrides = {"model": str(bundle), "device": args.device, "expected_rate_hz": args.rate}
    cmd = [sys.executable, "-m", "tim_fusion_ros.fusion_node", "--ros-args", "--params-file", str(params_file)]
    cmd += [a for k, v in overrides.items() for a in ("-p", f"{k}:={v}")]
    with open(out / "node.log", "w") as log:
        node = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            print(f"[demo] fusion node started (pid {node.pid}, log {out / 'node.log'}); replaying")
            replay(out / "input_bag", out / "output_bag", rate=1.0, linger=max(5.0, 3 / args.rate))
        finally:
            node.terminate()
            node.wait(timeout=15)
    summary = evaluate_replay(out / "output_bag", out / "input_bag", out / "eval")
    n_overlay = _overlays(out / "output_bag", out / "eval")
    run = {
        "model": args.model,
        "bundle": str(bundle),
        "card": json.loads((bundle / "card.json").read_text()),
        "params": {**load_defaults(params_file), **overrides},  # what the node ran with
        "bag_rate_hz": args.rate,
        "default_threads": torch.get_num_threads(),  # the node's count when its threads parameter is 0
    }
    page = write_report(out, run)
    print((out / "eval" / "eval.md").read_text())
    print(
        f"[demo] {summary['fused_received']}/{summary['pairs_sent']} pairs fused, {n_overlay} with task overlays; "
        f"report: {page}"
    )
    return 0


if __name__ == "__main__":
    t0 = time.time()
    code = main()
    print(f"[demo] done in {time.time() - t0:.0f} s")
    sys.exit(code)
