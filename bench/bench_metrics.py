"""Time compute_metrics on one 640x480 triplet: FAST_METRICS and Nabf, both conventions.

Usage: python bench/bench_metrics.py [--runs 7] [--smoke]
The triplet is the first MSRS pair of ../shared/data/msrs with F = max(IR, visible luma) (a random
one when the data is absent). Prints a table of median seconds and writes bench/results/metrics.json
(--smoke: one run on a 128x160 crop, written to bench/results/metrics_smoke.tmp, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from tim_core.files import read_image
from tim_core.metrics import CONVENTIONS, FAST_METRICS, compute_metrics, to_gray

ROOT = Path(__file__).resolve().parents[1]
MSRS = ROOT.parent / "shared" / "data" / "msrs"


def load_triplet() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(IR, visible RGB, fused grey, source description)."""
    irs = sorted((MSRS / "ir").glob("*.png"))
    if irs and (MSRS / "vi" / irs[0].name).is_file():
        a, b = read_image(irs[0]), read_image(MSRS / "vi" / irs[0].name)
        source = f"msrs/{irs[0].name}"
    else:
        rng = np.random.default_rng(0)
        a = rng.integers(0, 256, (480, 640), dtype=np.uint8)
        b = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        source = "random 640x480 (../shared/data/msrs absent)"
    f = np.maximum(to_gray(a), to_gray(b)).astype(np.uint8)
    return a, b, f, source


def median_seconds(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case, median reported")
    parser.add_argument("--smoke", action="store_true", help="one run on a small crop, for CI")
    args = parser.parse_args(argv)
    runs, warmup = (1, 0) if args.smoke else (args.runs, 1)

    a, b, f, source = load_triplet()
    if args.smoke:
        a, b, f = a[:128, :160], b[:128, :160], f[:128, :160]
    cases = [(conv, "FAST_METRICS", list(FAST_METRICS)) for conv in CONVENTIONS] + [("matlab", "Nabf", ["Nabf"])]
    results = []
    print(f"compute_metrics on {source}, {f.shape[1]}x{f.shape[0]}, median of {runs} run(s)")
    print(f"{'convention':<10} {'metrics':<13} {'seconds':>8}")
    for conv, label, names in cases:
        sec = median_seconds(lambda conv=conv, names=names: compute_metrics(a, b, f, conv, names), runs, warmup)
        results.append({"convention": conv, "metrics": label, "seconds": sec})
        print(f"{conv:<10} {label:<13} {sec:8.4f}")
    print("(cddfuse has no Nabf)")

    out = ROOT / "bench" / "results" / ("metrics_smoke.tmp" if args.smoke else "metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "compute_metrics per triplet", "image": source, "height": f.shape[0], "width": f.shape[1],
        "runs": runs, "warmup": warmup, "smoke": args.smoke, "results": results,
        "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_threads": cv2.getNumThreads(),
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
