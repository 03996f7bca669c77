"""Refresh test/fused_reference.json for a shipped model whose weights changed on purpose (a new bundle shipped):

    python tools/fused_reference.py tim_ivif_base

Recomputes, for every pair in samples/, the fused 8-bit image's mean and its 4x4 block means, exactly as
test/test_architecture.py::test_fused_samples_match_the_reference checks them, and replaces that model's entries
(the other models' entries are kept). Run it only when the model's output is meant to change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.files import pair_paths, read_image, write_text_atomic  # noqa: E402
from tim_core.runtime import Fuser  # noqa: E402

REFERENCE = ROOT / "test" / "fused_reference.json"
SAMPLES = ROOT / "samples"


def entries(model: str) -> dict[str, dict]:
    fuser = Fuser(model, device="cpu", size_mismatch="resize_ir")
    out = {}
    for pair in pair_paths(SAMPLES / "ir", SAMPLES / "vis")[0]:
        fused = fuser(read_image(pair.a), read_image(pair.b)).fused.astype(np.float64)
        h, w = fused.shape[:2]
        grid = fused[: h // 4 * 4, : w // 4 * 4].reshape(4, h // 4, 4, w // 4, -1).mean(axis=(1, 3, 4)).ravel()
        out[f"{model}/{pair.name}"] = {"shape": list(fused.shape), "mean": round(float(fused.mean()), 4),
                                       "grid": [round(float(g), 3) for g in grid]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="shipped model name (its entries in the reference are replaced)")
    args = p.parse_args()
    ref = json.loads(REFERENCE.read_text())
    ref = {k: v for k, v in ref.items() if not k.startswith(args.model + "/")} | entries(args.model)
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(ref.items())]
    write_text_atomic(REFERENCE, "{\n" + ",\n".join(lines) + "\n}\n")
    print(f"{REFERENCE}: {args.model} entries refreshed")


if __name__ == "__main__":
    main()
