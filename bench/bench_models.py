"""Model latency and throughput: every bundle in models/ plus the published tim_ivif / tim_light baselines.

Usage: python bench/bench_models.py [--smoke] [--threads 1,2] [--sizes 256x320,...]
Each model runs through Fuser.fuse_luma (the node's `fuse` stage) on CPU with 1 and 2 threads at
320x256, 640x480, 640x512 and 1280x1024, with PyTorch and (bundles; tim_light when there are none)
ONNX Runtime, and on CUDA FP32/FP16 when present. Frames/s are printed as ratios to the baselines
measured in the same run. A second table compares the contiguous (NCHW) layout with channels-last,
which Fuser uses on CPU, in interleaved pairs of runs. Writes bench/results/models.json (--smoke:
64x80, models_smoke.tmp).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from tim_core.bench import bench_fuser, format_table, machine_info, materialize
from tim_core.genotype import Genotype
from tim_core.runtime import WEIGHTS, Fuser

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("tim_ivif", "tim_light")
SIZES = ((256, 320), (480, 640), (512, 640), (1024, 1280))
COLUMNS = [
    ("model", "model", "s"),
    ("device", "device", "s"),
    ("backend", "backend", "s"),
    ("threads", "thr", "d"),
    ("size", "HxW", "s"),
    ("median_ms", "median ms", ".1f"),
    ("p95_ms", "p95 ms", ".1f"),
    ("fps", "frames/s", ".2f"),
    ("runs", "runs", "d"),
    ("peak_rss_mb", "peak RSS MiB", ".0f"),
    ("x_tim_light", "x tim_light", ".2f"),
    ("x_tim_ivif", "x tim_ivif", ".2f"),
]


def shipped_bundles() -> list[str]:
    """One bundle folder per distinct architecture under models/: bundles with the same genotype and heads (e.g.
    the medical models adapted from one initialization) cost the same, so timing each again adds only minutes."""
    seen, out = set(), []
    for weights in sorted((ROOT / "models").glob(f"*/{WEIGHTS}")):
        genotype = Genotype.from_json((weights.parent / "genotype.json").read_text())
        heads = tuple(json.loads((weights.parent / "card.json").read_text()).get("heads", []))
        if (genotype.fingerprint(), heads) not in seen:
            seen.add((genotype.fingerprint(), heads))
            out.append(str(weights.parent))
    return out


def configurations(models: list[str], threads: list[int]) -> list[dict]:
    """(model, device, half, backend, threads) cases: CPU torch for all, ONNX Runtime for bundles, CUDA if present."""
    bundles = [m for m in models if m not in BASELINES]
    onnx_models = bundles or ["tim_light"]
    cases = [
        {"spec": m, "device": "cpu", "half": False, "backend": b, "threads": t}
        for m in models
        for b in ("torch", "onnxruntime")
        if b == "torch" or m in onnx_models
        for t in threads
    ]
    if torch.cuda.is_available():
        cases += [
            {"spec": m, "device": "cuda", "half": h, "backend": "torch", "threads": 0}
            for m in models
            for h in (False, True)
        ]
    return cases


def add_ratios(rows: list[dict]) -> None:
    """x tim_light / x tim_ivif: frames/s over the baseline's on the same device, precision, threads and size."""
    key = ("device", "half", "threads", "size")
    for base in BASELINES:
        ref = {tuple(r[k] for k in key): r["fps"] for r in rows if r["spec"] == base and r["backend"] == "torch"}
        for r in rows:
            fps = ref.get(tuple(r[k] for k in key))
            if fps:
                r[f"x_{base}"] = r["fps"] / fps


def layout_rows(models: list[str], tmp: Path, size: tuple[int, int], pairs: int) -> list[dict]:
    """Same-run before/after of channels-last: NCHW and channels-last weights, runs interleaved in pairs."""
    rng = np.random.default_rng(0)
    a, b = (rng.random(size, dtype=np.float32) for _ in range(2))
    rows = []
    for spec in models:
        bundle, label = materialize(spec, tmp)
        fuser = Fuser(bundle, device="cpu", threads=1, warmup=False)
        nets = {"channels_last": fuser.net, "nchw": copy.deepcopy(fuser.net).to(memory_format=torch.contiguous_format)}
        times: dict[str, list[float]] = {name: [] for name in nets}
        for i in range(pairs + 1):  # pair 0 is the warm-up
            for name in sorted(nets, reverse=i % 2 == 1):  # alternate the order: drift hits both alike
                fuser.net = nets[name]
                t0 = time.perf_counter()
                fuser.fuse_luma(a, b)
                if i:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        ratios = [n / c for n, c in zip(times["nchw"], times["channels_last"])]
        rows.append(
            {
                "model": label,
                "size": f"{size[0]}x{size[1]}",
                "pairs": pairs,
                "nchw_ms": float(np.median(times["nchw"])),
                "channels_last_ms": float(np.median(times["channels_last"])),
                "speedup": float(np.median(ratios)),
                "speedup_min": min(ratios),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="64x80, 1 thread, 2 runs: seconds, for CI")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts (default 1,2)")
    parser.add_argument("--sizes", help="HxW list, default 256x320,480x640,512x640,1024x1280")
    parser.add_argument("--models", help="comma-separated bundles/genotypes (default: models/* and the baselines)")
    parser.add_argument("--out", help="JSON path (default bench/results/models.json)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")] if args.sizes else list(SIZES)
    threads = [int(t) for t in args.threads.split(",")]
    timing = {"warmup": 1, "min_runs": 3, "budget_s": 1.5}
    if args.smoke:
        sizes, threads, timing = [(64, 80)], [1], {"warmup": 1, "min_runs": 2, "budget_s": 0.0}
    models = args.models.split(",") if args.models else shipped_bundles() + list(BASELINES)
    info = machine_info()
    print(
        f"model benchmark on {info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, "
        f"load average {info.get('load_average_1m', float('nan')):.1f}"
    )
    start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for case in configurations(models, threads):
            bundle, label = materialize(case["spec"], Path(tmp))
            fuser = Fuser(
                bundle,
                device=case["device"],
                half=case["half"],
                threads=case["threads"] or None,
                warmup=False,
                backend=case["backend"],
            )
            device = case["device"] + (" fp16" if case["half"] else "")
            for h, w in sizes:
                row = bench_fuser(fuser, h, w, **timing)
                rows.append({**case, "model": label, "device": device, "size": f"{h}x{w}", **row})
                print(
                    f"  {label:<28} {device:<9} {case['backend']:<11} {case['threads']} thr {h}x{w}: "
                    f"{row['median_ms']:.1f} ms",
                    flush=True,
                )
            del fuser
        add_ratios(rows)
        print("\n" + format_table(rows, COLUMNS))
        layout = layout_rows(models, Path(tmp), sizes[0], 1 if args.smoke else 6)
    print("\nchannels-last (Fuser's CPU layout) vs NCHW, 1 thread, runs interleaved in pairs:")
    print(
        format_table(
            layout,
            [
                ("model", "model", "s"),
                ("size", "HxW", "s"),
                ("pairs", "pairs", "d"),
                ("nchw_ms", "NCHW ms", ".1f"),
                ("channels_last_ms", "channels-last ms", ".1f"),
                ("speedup", "speed-up (median)", ".2f"),
                ("speedup_min", "(min)", ".2f"),
            ],
        )
    )
    info["load_average_1m_end"] = machine_info().get("load_average_1m")
    out = (
        Path(args.out)
        if args.out
        else ROOT / "bench" / "results" / ("models_smoke.tmp" if args.smoke else "models.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "Fuser.fuse_luma latency",
                "smoke": args.smoke,
                "machine": info,
                "timing": timing,
                "seconds": time.perf_counter() - start,
                "results": rows,
                "channels_last": layout,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
