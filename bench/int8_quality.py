"""Static int8 against float32 on the fusion metrics: the issue's margin for a quantized backend.

Usage: python bench/int8_quality.py [BUNDLE] [--calibration 16] [--threads 1]
The bundle's ONNX export (tim_core.export.onnx_file) quantized statically by ONNX Runtime (QDQ, per-channel int8
weights, uint8 activations; bench_backends.int8_onnxruntime), calibrated on `calibration` pairs of the TRAINING side
of the name-hash split of MSRS and RoadScene (RoadScene50 left out), then both the float32 and the int8 model fuse
the 102 validation pairs through Fuser (same colour path) and are scored with the nine metrics (matlab convention).
The margin: no metric more than 1% below float32. Also the largest grey-level difference of the fused images.
Writes bench/results/int8_quality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_backends import int8_onnxruntime  # noqa: E402
from quality_eval import DATA, MATLAB, score, sources, split_means  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tim_core.data import benchmark_names, is_validation, resolve_layout  # noqa: E402
from tim_core.export import OnnxRuntimeNet, onnx_file  # noqa: E402
from tim_core.files import pair_paths, read_image, write_image, write_text_atomic  # noqa: E402
from tim_core.runtime import DEFAULT_MODEL, Fuser  # noqa: E402


def calibration_planes(fuser: Fuser, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(IR, VIS luma) planes of the first `count` training pairs, alternating MSRS and RoadScene."""
    per_set = []
    for ds in ("msrs", "roadscene"):
        root = DATA / ds
        held = benchmark_names(root)
        a_dir, b_dir = resolve_layout(str(root))
        pairs = pair_paths(a_dir, b_dir)[0]
        per_set.append([p for p in pairs if not is_validation(p.name, 0.2) and p.name not in held])
    chosen = [p for pair in zip(*per_set) for p in pair][:count]
    return [fuser._prepare(read_image(p.a), read_image(p.b))[:2] for p in chosen]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--calibration", type=int, default=16, help="training pairs to calibrate on")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", type=Path, default=ROOT / "out" / "quality_sources")
    p.add_argument("--fused", type=Path, default=ROOT / "out" / "int8_fused")
    args = p.parse_args()
    sets = {k: v for k, v in sources(args.cache).items() if k != "roadscene50"}
    fuser = Fuser(args.bundle, device="cpu", backend="onnxruntime", threads=args.threads)
    float_net = OnnxRuntimeNet(onnx_file(fuser.bundle), args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        int8_net = int8_onnxruntime(onnx_file(fuser.bundle), calibration_planes(fuser, args.calibration),
                                    args.threads, Path(tmp))
        means, max_diff = {}, 0
        for label, net in (("float32", float_net), ("int8", int8_net)):
            fuser.net = net
            per = {}
            for subset, names in sets.items():
                out = args.fused / label / subset
                for name in tqdm(names, desc=f"{label} {subset}", unit="pair"):
                    fused = fuser(read_image(args.cache / subset / "ir" / f"{name}.png"),
                                  read_image(args.cache / subset / "vis" / f"{name}.png")).fused
                    write_image(out / f"{name}.png", fused)
                    if label == "int8":
                        ref = read_image(args.fused / "float32" / subset / f"{name}.png").astype(int)
                        max_diff = max(max_diff, int(np.abs(ref - fused.astype(int)).max()))
                per[subset] = score(args.cache, subset, out, "matlab")["per_image"]
            means[label] = split_means(per)
    rel = {s: {m: means["int8"][s][m] / means["float32"][s][m] - 1.0 for m in MATLAB} for s in means["int8"]}
    worst = min(rel["all"].values())
    result = {"bundle": str(fuser.bundle), "calibration_pairs": args.calibration, "threads": args.threads,
              "validation_matlab": means, "int8_vs_float32": rel, "worst_all": worst,
              "within_1pct": all(v >= -0.01 for v in rel["all"].values()), "max_grey_level_diff": max_diff}
    write_text_atomic(ROOT / "bench" / "results" / "int8_quality.json", json.dumps(result, indent=1) + "\n")
    print("| | " + " | ".join(MATLAB) + " |\n|---|" + "---:|" * len(MATLAB))
    for label in ("float32", "int8"):
        print(f"| {label} | " + " | ".join(f"{means[label]['all'][m]:.4g}" for m in MATLAB) + " |")
    print("| int8 vs float32 | " + " | ".join(f"{100 * rel['all'][m]:+.2f}%" for m in MATLAB) + " |")
    print(f"worst {100 * worst:+.2f}% (margin -1%: {'met' if result['within_1pct'] else 'missed'}); "
          f"largest grey-level difference {max_diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
