"""Quality vs CPU latency of the compact candidates, with the Pareto front (docs/quality_report.md, issue 19).

    python bench/compact_pareto.py --base base_v1 \
        --candidate compact_v1=runs/compact_v1/bundle --candidate compact_v3=runs/compact_v3/bundle ...

Each candidate's quality is read from bench/results/quality/<label>.json (written by bench/quality_eval.py: the
validation split, matlab convention, all 102 pairs); its score is the worst of the nine metrics as a ratio to the
base's (the issue's compact target: no metric more than 3% below the new base, i.e. worst ratio >= 0.97). Latency:
eager PyTorch `Fuser.fuse_luma` at 480x640 with 1 and 2 threads, every candidate and tim_light (the issue's speed
reference, random weights) timed in interleaved rounds of this one run, so each ratio to tim_light compares like
with like on this noisy shared machine. Writes bench/results/compact_pareto.json and docs/compact_pareto.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.bench import machine_info, materialize  # noqa: E402
from tim_core.files import write_text_atomic  # noqa: E402
from tim_core.plots import scatter_plot  # noqa: E402
from tim_core.runtime import Fuser  # noqa: E402

MATLAB = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"]
QUALITY = ROOT / "bench" / "results" / "quality"


def quality(label: str) -> dict[str, float]:
    path = QUALITY / f"{label}.json"
    if not path.is_file():
        sys.exit(f"compact_pareto: {path} is missing; score the bundle first: "
                 f"python bench/quality_eval.py BUNDLE --labels {label}")
    return json.loads(path.read_text())["validation_matlab"]["all"]


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and score (higher)."""
    return [i for i, (t, s) in enumerate(points)
            if not any((t2 <= t and s2 >= s) and (t2 < t or s2 > s) for t2, s2 in points)]


def time_rounds(fusers: dict[str, Fuser], size: tuple[int, int], rounds: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    a, b = (rng.random(size, dtype=np.float32) for _ in range(2))
    times: dict[str, list[float]] = {k: [] for k in fusers}
    for f in fusers.values():
        f.fuse_luma(a, b)  # warm-up
    for _ in range(rounds):
        for k, f in fusers.items():
            t0 = time.perf_counter()
            f.fuse_luma(a, b)
            times[k].append(1000 * (time.perf_counter() - t0))
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="quality label of the base the compact must match")
    p.add_argument("--candidate", action="append", required=True, metavar="LABEL=BUNDLE",
                   help="a scored bundle (LABEL as in bench/results/quality/LABEL.json)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compact_pareto.json")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "compact_pareto.png")
    args = p.parse_args()
    base = quality(args.base)
    cands = dict(c.split("=", 1) for c in args.candidate)
    size = (480, 640)
    rows = {label: {"bundle": b, "quality": quality(label)} for label, b in cands.items()}
    for r in rows.values():
        ratios = {m: r["quality"][m] / base[m] for m in MATLAB}
        r["ratio_to_base"] = ratios
        r["worst_metric"] = min(ratios, key=ratios.get)
        r["worst_ratio"] = ratios[r["worst_metric"]]
    with tempfile.TemporaryDirectory() as tmp:
        specs = {"tim_light": "tim_light", **cands}
        for thr in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(thr)
            fusers = {k: Fuser(materialize(s, Path(tmp))[0], device="cpu", threads=thr, warmup=False)
                      for k, s in specs.items()}
            times = time_rounds(fusers, size, args.rounds)
            ref = statistics.median(times["tim_light"])
            for k, t in times.items():
                if k in rows:
                    rows[k][f"median_ms_{thr}t"] = statistics.median(t)
                    rows[k][f"x_faster_than_tim_light_{thr}t"] = ref / statistics.median(t)
            for r in rows.values():
                r.setdefault("tim_light_ms", {})[f"{thr}t"] = ref
            del fusers
    labels = list(rows)
    front = pareto([(rows[k]["median_ms_1t"], rows[k]["worst_ratio"]) for k in labels])
    for i, k in enumerate(labels):
        rows[k]["pareto"] = i in front
    result = {"benchmark": "compact candidates: worst metric vs base against latency", "base": args.base,
              "size": f"{size[0]}x{size[1]}", "rounds": args.rounds, "machine": machine_info(),
              "targets": {"worst_ratio": 0.97, "x_faster_than_tim_light": 20}, "candidates": rows}
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    groups = {"Pareto front": [], "dominated": []}
    for k in labels:
        groups["Pareto front" if rows[k]["pareto"] else "dominated"].append(
            (rows[k]["median_ms_1t"], rows[k]["worst_ratio"], k))
    scatter_plot(groups, args.plot, f"Compact candidates vs {args.base} (validation, matlab), 480x640, 1 thread",
                 "median ms per pair (eager PyTorch)", "worst of 9 metrics / base")
    print("| candidate | ms 1 thr | x tim_light 1 thr | ms 2 thr | x tim_light 2 thr | worst metric / base | Pareto |")
    print("|---|---:|---:|---:|---:|---|---|")
    for k in labels:
        r = rows[k]
        print(f"| {k} | {r['median_ms_1t']:.1f} | {r['x_faster_than_tim_light_1t']:.1f} | "
              f"{r.get('median_ms_2t', float('nan')):.1f} | {r.get('x_faster_than_tim_light_2t', float('nan')):.1f} "
              f"| {r['worst_metric']} {r['worst_ratio']:.3f} | {'yes' if r['pareto'] else ''} |")
    print(f"wrote {args.out.relative_to(ROOT)} and {args.plot.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
