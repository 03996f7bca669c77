"""The node's per-pair stages in this process (no DDS), one backend after the other in one run.

    python bench/bench_stages.py [--model tim_ivif_compact] [--backends torch,openvino] [--calls 25] [--rounds 2]

640x512 uint16 IR + rgb8 VIS (seeded noise), `Fuser.__call__` as the node calls it; medians of the per-stage
`FusionResult.timings` (prepare = decode-side normalise + YCbCr, model, finish = back to colour + 8 bit). The backends
alternate for --rounds rounds so a load change hits each. Writes bench/results/stages_MODEL.json. Compare with
bench/bench_node.py, which runs the same stages inside the node while DDS and the publisher share the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.backends import CHOICES, unavailable  # noqa: E402
from tim_core.bench import machine_info  # noqa: E402
from tim_core.files import write_text_atomic  # noqa: E402
from tim_core.runtime import Fuser  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tim_ivif_compact")
    p.add_argument("--backends", default="torch,openvino")
    p.add_argument("--calls", type=int, default=25)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    names = [b for b in args.backends.split(",") if b]
    for b in names:
        if b not in CHOICES or (b != "auto" and unavailable(b)):
            sys.exit(f"bench_stages: backend {b!r}: {unavailable(b) if b in CHOICES else 'unknown'}")
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 65535, (512, 640), dtype=np.uint16)
    vis = rng.integers(0, 256, (512, 640, 3), dtype=np.uint8)
    fusers = {b: Fuser(args.model, device="cpu", backend=b) for b in names}
    samples: dict[str, dict[str, list[float]]] = {b: {} for b in names}
    for _ in range(args.rounds):
        for b, f in fusers.items():
            for _ in range(3):
                f(ir, vis)
            for _ in range(args.calls):
                for k, v in f(ir, vis).timings.items():
                    samples[b].setdefault(k, []).append(v)
    rows = {b: {k: float(np.median(v)) for k, v in s.items()} for b, s in samples.items()}
    for b, r in rows.items():
        outside = r["prepare"] + r["finish"]
        r["outside_model_ms"], r["outside_model_share"] = outside, outside / r["model"]
        print(f"{b:10s} " + "  ".join(f"{k} {v:.2f}" for k, v in r.items()))
    out = ROOT / "bench" / "results" / f"stages_{Path(args.model).name}.json"
    write_text_atomic(out, json.dumps({"benchmark": "node stages in process, 640x512 uint16 + rgb8",
                                       "model": args.model, "calls": args.calls, "rounds": args.rounds,
                                       "machine": machine_info(), "median_ms": rows}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
