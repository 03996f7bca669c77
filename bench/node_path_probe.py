"""The node's path outside the model, measured alone (no DDS): Fuser's stages per backend and the uint16 histogram.

Usage: python bench/node_path_probe.py [--backends torch openvino] [--pairs 60]
(1) `Fuser('tim_ivif_compact', threads=2)` on a 640x512 pair (the first sample's VIS resized, a blurred 16-bit
    IR frame), 5 warm-up calls, then the median of each timing over `pairs` calls, per backend (a backend that is not
    installed is skipped): what prepare + finish cost without a node around them (docs/performance.md).
(2) The 65,536-bin histogram of that IR frame, np.bincount against tim_core.color._uint16_histogram (cv2.calcHist
    of the byte planes), median of 50 calls each after touching 64 MB (a cold cache, as in the node).
Prints only; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.backends import unavailable  # noqa: E402
from tim_core.color import _uint16_histogram  # noqa: E402
from tim_core.files import pair_paths, read_image  # noqa: E402
from tim_core.runtime import Fuser  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    p.add_argument("--pairs", type=int, default=60)
    args = p.parse_args()
    first = pair_paths(ROOT / "samples" / "ir", ROOT / "samples" / "vis")[0][0]
    vis = cv2.resize(read_image(first.b), (640, 512))
    ir = cv2.GaussianBlur(np.random.default_rng(0).integers(20000, 24000, (512, 640)).astype(np.uint16), (0, 0), 3)
    for backend in args.backends:
        if backend != "torch" and unavailable(backend):
            print(f"{backend}: skipped ({unavailable(backend)})")
            continue
        fuser = Fuser("tim_ivif_compact", backend=backend, threads=2)
        for _ in range(5):
            fuser(ir, vis)
        runs = [fuser(ir, vis).timings for _ in range(args.pairs)]
        print(f"{backend}: " + ", ".join(f"{k} {np.median([r[k] for r in runs]):.2f} ms" for k in runs[0]))
    big = np.ones(16 * 1024 * 1024, np.float32)
    for name, fn in (("np.bincount", lambda: np.bincount(ir.ravel(), minlength=65536)),
                     ("calcHist byte planes", lambda: _uint16_histogram(ir))):
        times = []
        for _ in range(50):
            big.sum()
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(f"uint16 histogram, {name}: {np.median(times) * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
