"""`tim bench`: the models one after the other in this process, ratios of frames/s to the first."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from ..backends import CHOICES as BACKEND_CHOICES
from ..bench import bench_fuser, format_table, materialize
from ..bundle import DEFAULT_MODEL, BundleError
from ..genotype import GenotypeError
from ..runtime import Fuser
from .common import parse_size

ERRORS = (BundleError, GenotypeError, ValueError)
TABLE = [("model", "model", "s"), ("backend", "backend", "s"), ("size", "size", "s"), ("threads", "thr", "d"),
         ("median_ms", "median ms", ".1f"), ("p95_ms", "p95 ms", ".1f"), ("fps", "frames/s", ".2f"),
         ("runs", "runs", "d"), ("peak_rss_mb", "peak RSS MiB", ".0f"), ("ratio", "x first", ".2f")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="comma-separated bundles or genotypes (random weights), e.g. tim_ivif_compact,tim_light "
                        "(default: %(default)s)")
    p.add_argument("--size", type=parse_size, default=(512, 640), help="HxW (default 512x640)")
    p.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime CPU threads (default: all)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    p.add_argument("--half", action="store_true", help="FP16 (CUDA only)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="torch",
                   help="inference engine (auto: openvino on CPU when installed, else torch)")
    p.add_argument("--runs", type=int, default=5, help="minimum timed runs per model (default: %(default)s)")
    p.add_argument("--budget", type=float, default=2.0, help="keep timing up to this many seconds per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of the table")


def run(args: argparse.Namespace) -> int:
    h, w = args.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in [s for s in args.model.split(",") if s]:
            bundle, label = materialize(spec, Path(tmp))
            fuser = Fuser(bundle, device=args.device, half=args.half, threads=args.threads, warmup=False,
                          backend=args.backend)
            row = bench_fuser(fuser, h, w, warmup=args.warmup, min_runs=args.runs, budget_s=args.budget)
            rows.append({"model": label, "backend": fuser.backend, "device": str(fuser.device), "half": args.half,
                         "threads": fuser.threads or torch.get_num_threads(), "size": f"{h}x{w}", **row})
            del fuser
    for row in rows:
        row["ratio"] = row["fps"] / rows[0]["fps"]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, TABLE))
    return 0
