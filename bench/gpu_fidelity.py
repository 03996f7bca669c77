"""Does the GPU publish what the CPU publishes? And how fast is a whole Fuser call there?

Run by bench/gpu.sh on a CUDA machine (python bench/gpu_fidelity.py). For each shipped infrared-visible bundle
it fuses the five pairs in samples/ three ways: CPU float32 (the reference; what CI tests), CUDA float32 and
CUDA float16, and reports how far the fused uint8 image moves (max and mean grey levels, share of pixels off by
more than 1) and, for bundles with a detector, how many CPU detections the GPU finds again (same class, IoU >= 0.5).
Then it times the whole `Fuser(ir, vis)` call at 480x640 (normalise, host->device, network, heads, device->host,
colour) per device and precision: what the node's pipeline pays per frame, not the model alone as gpu.sh's table.
Prints a table and writes bench/results/gpu_fidelity.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.bench import format_table, machine_info, nearest_rank  # noqa: E402
from tim_core.runtime import Fuser  # noqa: E402
from tim_core.tasks.detection import box_iou  # noqa: E402

MODELS = ("tim_ivif_compact", "tim_ivif_base", "tim_ivif_det")
MODES = (("cpu", "float32"), ("cuda", "float32"), ("cuda", "float16"))


def sample_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    for ir_path in sorted((ROOT / "samples" / "ir").iterdir()):
        vis_path = ROOT / "samples" / "vis" / ir_path.name
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(vis_path), cv2.IMREAD_COLOR)
        if ir is None or vis is None:
            raise SystemExit(f"cannot read the sample pair {ir_path} / {vis_path}")
        pairs.append((ir_path.stem, ir, cv2.cvtColor(vis, cv2.COLOR_BGR2RGB)))
    return pairs


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(box_iou(np.array([a]), np.array([b]))[0, 0])


def found_again(reference: list, other: list) -> int:
    """How many reference detections have a same-class detection with IoU >= 0.5 in `other` (greedy)."""
    free = list(other)
    hits = 0
    for det in sorted(reference, key=lambda d: -d.score):
        best = max((d for d in free if d.class_id == det.class_id), key=lambda d: iou(d.box, det.box), default=None)
        if best is not None and iou(best.box, det.box) >= 0.5:
            free.remove(best)
            hits += 1
    return hits


def time_fuser(fuser: Fuser, ir: np.ndarray, vis: np.ndarray, runs: int = 40, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fuser(ir, vis)
    totals, models = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fuser(ir, vis)  # returns host numpy: the call ends after the device->host copy
        totals.append((time.perf_counter() - t0) * 1e3)
        models.append(result.timings["model"])
    med = statistics.median(totals)
    return {"median_ms": med, "p95_ms": nearest_rank(totals, 0.95), "model_ms": statistics.median(models),
            "fps": 1e3 / med}


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device visible to torch"
    pairs = sample_pairs()
    fidelity, speed = [], []
    ir_480 = cv2.resize(pairs[0][1], (640, 480))
    vis_480 = cv2.resize(pairs[0][2], (640, 480))
    for model in MODELS:
        outputs = {}
        for device, dtype in MODES:
            fuser = Fuser(model, device=device, half=dtype == "float16", threads=None)
            outputs[device, dtype] = [fuser(ir, vis) for _, ir, vis in pairs]
            row = {"model": model, "device": device, "dtype": dtype, "size": "480x640"}
            speed.append(row | time_fuser(fuser, ir_480, vis_480, runs=10 if device == "cpu" else 40))
            del fuser
            torch.cuda.empty_cache()
        reference = outputs["cpu", "float32"]
        for device, dtype in MODES[1:]:
            diffs = [np.abs(r.fused.astype(np.int16) - o.fused.astype(np.int16))
                     for r, o in zip(reference, outputs[device, dtype])]
            row = {"model": model, "device": device, "dtype": dtype,
                   "max_grey": int(max(d.max() for d in diffs)),
                   "mean_grey": float(np.mean([d.mean() for d in diffs])),
                   "over_1_pct": float(100 * np.mean([(d > 1).mean() for d in diffs]))}
            ref_dets = sum(len(r.detections) for r in reference)
            if ref_dets:
                row["cpu_detections"] = ref_dets
                row["found_again"] = sum(found_again(r.detections, o.detections)
                                         for r, o in zip(reference, outputs[device, dtype]))
                row["gpu_detections"] = sum(len(o.detections) for o in outputs[device, dtype])
            fidelity.append(row)
        print(f"  {model}: done", flush=True)

    print("\nFused image against CPU float32, the five sample pairs (grey levels of the uint8 output):")
    print(format_table(fidelity, [("model", "model", "s"), ("device", "device", "s"), ("dtype", "dtype", "s"),
                                  ("max_grey", "max", "d"), ("mean_grey", "mean", ".3f"),
                                  ("over_1_pct", "% px > 1", ".3f"), ("cpu_detections", "CPU dets", "d"),
                                  ("found_again", "found again", "d"), ("gpu_detections", "GPU dets", "d")]))
    print("\nWhole Fuser call at 480x640 (colour visible; host arrays in and out):")
    print(format_table(speed, [("model", "model", "s"), ("device", "device", "s"), ("dtype", "dtype", "s"),
                               ("median_ms", "median ms", ".2f"), ("p95_ms", "p95 ms", ".2f"),
                               ("model_ms", "model stage ms", ".2f"), ("fps", "frames/s", ".0f")]))
    out = ROOT / "bench" / "results" / "gpu_fidelity.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": "GPU against CPU: fused image, detections, whole-call latency",
                               "machine": machine_info(), "fidelity": fidelity, "speed": speed}, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
