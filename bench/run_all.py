"""The CPU benchmark suite (`make bench`; `make bench-smoke` for CI): every bench script, one after the other.

Usage: python bench/run_all.py [--smoke]
Runs, each in its own process so one's threads and memory do not colour the next:
  bench_metrics.py   metric speed per 640x480 triplet (`tim eval`'s work)
  tim export         ONNX export of every bundle in models/, verified against PyTorch on real pairs
  bench_models.py    model latency / throughput, baselines, PyTorch vs ONNX Runtime, channels-last
  bench_node.py      the node over DDS at 640x512, 30 Hz: 60 s with PyTorch, 30 s with ONNX Runtime
Full run: about 10 minutes on 2 cores; tables go to stdout, JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def steps(smoke: bool, tmp: str) -> list[tuple[str, list[str]]]:
    """(title, argv) of every benchmark, smoke or full."""
    py, flag = sys.executable, ["--smoke"] if smoke else []
    out = [("metric speed", [py, "bench/bench_metrics.py", *flag])]
    for weights in sorted((ROOT / "models").glob("*/model.safetensors")):
        name = weights.parent.name
        out.append((f"ONNX export of {name}", [py, "-m", "tim_core.cli", "export", "--model", str(weights.parent),
                                               "--out", f"{tmp}/{name}.onnx", "--verify-pairs", "1" if smoke else "3"]))
    out.append(("model latency", [py, "bench/bench_models.py", *flag]))
    if smoke:
        out.append(("node over DDS", [py, "bench/bench_node.py", "--smoke"]))
    else:
        out += [("node over DDS, PyTorch", [py, "bench/bench_node.py", "--seconds", "60"]),
                ("node over DDS, ONNX Runtime", [py, "bench/bench_node.py", "--backend", "onnxruntime",
                                                 "--seconds", "30"])]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and runs: seconds, for CI")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    start, failed = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for title, cmd in steps(args.smoke, tmp):
            print(f"\n=== {title}: {' '.join(Path(c).name if c == sys.executable else c for c in cmd)}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.call(cmd, cwd=ROOT, env=env)
            print(f"=== {title}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            if rc != 0:
                failed.append(title)
    print(f"\nbenchmark suite {'(smoke) ' if args.smoke else ''}finished in {time.perf_counter() - start:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else "; results in bench/results/"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
