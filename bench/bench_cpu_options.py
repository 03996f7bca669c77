"""CPU inference options of a fusion network, measured in one run: float32 NCHW, float32 channels-last (what
Fuser uses on CPU) and bfloat16 autocast (on CPUs with AVX512-BF16 / AMX), with 1 and 2 threads at 640x480.

    python bench/bench_cpu_options.py models/tim_ivif_base runs/compact/bundle [--rounds 5]

Each option's fused images on the sample pairs are compared with float32 (largest difference in grey levels):
an option is only worth keeping if it is faster AND changes no pixel by more than 1 grey level. Runs are
interleaved round by round (option A, B, C, A, B, C, ...) so a noisy, shared machine hits every option alike.
Writes bench/results/cpu_options.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.bench import machine_info  # noqa: E402
from tim_core.bundle import load_bundle  # noqa: E402
from tim_core.files import pair_paths, read_image, write_text_atomic  # noqa: E402
from tim_core.runtime import Fuser  # noqa: E402


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if "bf16" in f or f.startswith("amx"))
    except OSError:
        pass
    return []


def run_option(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, option: str) -> torch.Tensor:
    with torch.inference_mode():
        if option == "bf16_autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(a, b).float().clamp(0, 1)
        return net(a, b).clamp(0, 1)


def prepare(bundle: str, option: str) -> torch.nn.Module:
    net = load_bundle(bundle)[0].eval()
    if option in ("fp32_channels_last", "bf16_autocast"):
        net = net.to(memory_format=torch.channels_last)
    return net


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="+")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", default="480x640")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_options.json")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    options = ["fp32_nchw", "fp32_channels_last", "bf16_autocast"]
    pairs = pair_paths(ROOT / "samples" / "ir", ROOT / "samples" / "vis")[0]
    rows = []
    for bundle in args.bundles:
        # quality: fused luma of each sample pair under each option vs float32, in grey levels
        fuser = Fuser(bundle, device="cpu", warmup=False)
        planes = [fuser._prepare(read_image(pr.a), read_image(pr.b))[:2] for pr in pairs]
        nets = {o: prepare(bundle, o) for o in options}
        diffs = {o: 0.0 for o in options}
        for ir_u, vis_y in planes:
            a = torch.from_numpy(np.ascontiguousarray(ir_u))[None, None]
            b = torch.from_numpy(np.ascontiguousarray(vis_y))[None, None]
            ref = np.round(run_option(nets["fp32_nchw"], a, b, "fp32_nchw")[0, 0].numpy() * 255)
            for o in options:
                got = np.round(run_option(nets[o], a.contiguous(memory_format=torch.channels_last)
                                          if o != "fp32_nchw" else a, b, o)[0, 0].numpy() * 255)
                diffs[o] = max(diffs[o], float(np.abs(got - ref).max()))
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a = torch.rand(1, 1, h, w)
            b = torch.rand(1, 1, h, w)
            inputs = {o: (a, b) if o == "fp32_nchw" else (a.contiguous(memory_format=torch.channels_last),
                                                           b.contiguous(memory_format=torch.channels_last))
                      for o in options}
            times: dict[str, list[float]] = {o: [] for o in options}
            for o in options:  # warm-up
                run_option(nets[o], *inputs[o], o)
            for _ in range(args.rounds):
                for o in options:
                    t0 = time.perf_counter()
                    run_option(nets[o], *inputs[o], o)
                    times[o].append((time.perf_counter() - t0) * 1e3)
            base = float(np.median(times["fp32_nchw"]))
            for o in options:
                med = float(np.median(times[o]))
                rows.append({"bundle": str(bundle), "option": o, "threads": threads, "size": [h, w],
                             "median_ms": med, "x_fp32_nchw": base / med, "max_grey_level_change": diffs[o],
                             "runs": len(times[o])})
                print(f"{Path(bundle).name:24s} {o:20s} thr={threads} {med:8.1f} ms  x{base / med:5.2f}  "
                      f"max change {diffs[o]:.0f} grey level(s)")
    write_text_atomic(args.out, json.dumps({"benchmark": "CPU inference options", "machine": machine_info(),
                                            "cpu_bf16_flags": cpu_flags(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
