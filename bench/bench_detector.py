"""Detector width and input size from measurement: fusion + detection latency on CPU, one thread, one run.

Usage: nice python bench/bench_detector.py [--smoke] [--widths 16,24,32,48] [--sizes 240x320,360x480,480x640]
Each case is a bundle with random weights (timing does not depend on them) run through `Fuser` as the node
runs it: a 640x480 IR/VIS pair fused at full size by a small fusion network (tim_compact_w8, tim_light_w8),
the fused luma resized to the detector's input size, the CenterNet head, peak decoding and NMS. Baselines in
the same run: each fusion network alone, the shipped default `models/tim_ivif_base` alone, and the detector
stage of the shipped detector's setting (width 24 at 240x320). The cases are timed in interleaved rounds (every
case a few calls per round), so a change in the machine's load reaches all of them alike. Stored: median and
p95 of the whole call and of the detector stage (Fuser's `tasks` timing: resize, head, decoding, NMS), and the
ratios `x_fusion` (call / its fusion alone), `x_default` (call / tim_ivif_base alone) and `x_det_w24_240`
(detector stage / the shipped setting's, same fusion). Writes bench/results/detector_speed.json (--smoke: 64x80
frames, detector_speed_smoke.tmp).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from tim_core.bench import format_table, machine_info, nearest_rank
from tim_core.files import write_text_atomic
from tim_core.genotype import load_genotype
from tim_core.network import FusionNet
from tim_core.runtime import Fuser, save_bundle
from tim_core.tasks import build_task_net
from tim_core.tasks.heads import head_card, head_tensors

ROOT = Path(__file__).resolve().parents[1]
FUSIONS = {"tim_compact_w8": ROOT / "tim_core/genotypes/tim_compact_w8.json", "tim_light_w8": "tim_light_w8"}
CLASSES = ["person", "bicycle", "car"]
ROUNDS, CALLS = 5, 2  # interleaved rounds, calls per case per round (after Fuser's own warm-up call)
COLUMNS = [
    ("fusion", "fusion", "s"),
    ("head_width", "width", "d"),
    ("task_input", "det HxW", "s"),
    ("detector_params", "det params", "d"),
    ("median_ms", "median ms", ".1f"),
    ("p95_ms", "p95 ms", ".1f"),
    ("detector_ms", "det stage ms", ".1f"),
    ("x_det_w24_240", "det x w24@240", ".2f"),
    ("x_fusion", "x fusion alone", ".2f"),
    ("x_default", "x tim_ivif_base", ".3f"),
]


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def make_bundle(folder: Path, fusion: str, width: int | None, size: tuple[int, int] | None) -> Path:
    """A random-weight bundle: the fusion genotype, plus a detection head of `width` at `size` when given."""
    torch.manual_seed(0)
    net = FusionNet(load_genotype(str(FUSIONS[fusion])))
    name = f"{fusion}_w{width}_{size[0]}x{size[1]}" if width else fusion
    if width is None:
        return save_bundle(folder / name, net, {"task": "fusion"})
    head = build_task_net("detection", len(CLASSES), width).eval()
    card = {"task": "fusion+detection", **head_card("detection", CLASSES, width, size)}
    return save_bundle(folder / name, net, card, head_tensors("detection", head))


def time_rounds(cases: list[dict], ir: np.ndarray, vis: np.ndarray) -> None:
    """Fill each case's median_ms, p95_ms, runs and (with a head) detector_ms from interleaved rounds."""
    fusers = [Fuser(c.pop("bundle"), device="cpu", threads=1, backend="torch") for c in cases]
    calls: list[list[float]] = [[] for _ in cases]
    stages: list[list[float]] = [[] for _ in cases]
    for _ in range(ROUNDS):
        for fuser, total, stage in zip(fusers, calls, stages):
            for _ in range(CALLS):
                t0 = time.perf_counter()
                timings = fuser(ir, vis).timings
                total.append((time.perf_counter() - t0) * 1e3)
                if "tasks" in timings:
                    stage.append(timings["tasks"])
    for case, total, stage in zip(cases, calls, stages):
        case.update(median_ms=float(np.median(total)), p95_ms=nearest_rank(total, 0.95), runs=len(total))
        if stage:
            case["detector_ms"] = float(np.median(stage))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="64x80 frames, widths 8, one size: checks the script")
    p.add_argument("--widths", default="16,24,32,48")
    p.add_argument("--sizes", default="240x320,360x480,480x640", help="detector inputs HxW")
    args = p.parse_args(argv)
    frame = (64, 80) if args.smoke else (480, 640)
    widths = [8] if args.smoke else [int(w) for w in args.widths.split(",")]
    sizes = [(32, 48)] if args.smoke else [_size(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    ir, vis = (rng.integers(0, 256, frame, dtype=np.uint8) for _ in range(2))
    start = time.perf_counter()
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [{"fusion": "tim_ivif_base (default)", "head_width": 0, "task_input": "-", "detector_params": 0,
                 "bundle": ROOT / "models/tim_ivif_base"}]
        for fusion in FUSIONS:
            rows.append({"fusion": fusion, "head_width": 0, "task_input": "-", "detector_params": 0,
                         "bundle": make_bundle(Path(tmp), fusion, None, None)})
            for width in widths:
                params = sum(q.numel() for q in build_task_net("detection", len(CLASSES), width).parameters())
                rows += [{"fusion": fusion, "head_width": width, "task_input": f"{size[0]}x{size[1]}",
                          "detector_params": params, "bundle": make_bundle(Path(tmp), fusion, width, size)}
                         for size in sizes]
        time_rounds(rows, ir, vis)
    default = rows[0]["median_ms"]
    for row in rows:
        alone = next(r for r in rows if r["fusion"] == row["fusion"] and not r["head_width"])
        shipped = next((r for r in rows if r["fusion"] == row["fusion"] and r["head_width"] == 24
                        and r["task_input"] == "240x320"), None)
        row["x_default"] = row["median_ms"] / default
        row["x_fusion"] = row["median_ms"] / alone["median_ms"]
        if shipped and "detector_ms" in row:
            row["x_det_w24_240"] = row["detector_ms"] / shipped["detector_ms"]
    info["load_average_1m_end"] = machine_info().get("load_average_1m")
    result = {"benchmark": "fusion + detection latency (Fuser, CPU, 1 thread, PyTorch)", "smoke": args.smoke,
              "frame": f"{frame[0]}x{frame[1]}", "machine": info,
              "timing": {"rounds": ROUNDS, "calls_per_round": CALLS},
              "seconds": time.perf_counter() - start, "results": rows}
    print(format_table(rows, COLUMNS))
    out = ROOT / "bench/results" / ("detector_speed_smoke.tmp" if args.smoke else "detector_speed.json")
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
