"""How well are the "aligned" data sets aligned? Each pair registered on its own, unwarped, by `tim register`'s search.

Usage: python bench/registration_native.py [--sets msrs roadscene llvip_samples] [--limit 20] [--smoke]
For every pair (validation side of the name-hash split; all of llvip_samples, which is not trained on) the IR -> VIS
homography where the pair's edges agree best is estimated (tim_core.rig_search.register_pairs, one pair) and its
distance from identity is reported as the mean displacement of the four IR corners, in px and in % of the VIS width.
On a perfectly aligned pair it is ~0 (the pseudo-IR control of bench/bench_registration.py: 0.03 px). It bounds what
an accuracy target against the data set's own alignment ("nominal" in docs/registration_report.md) can show.
Writes bench/results/registration_native.json (--smoke: 2 pairs of msrs, registration_native_smoke.tmp).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.bench import machine_info
from tim_core.data import is_validation
from tim_core.files import pair_paths, read_image, write_text_atomic
from tim_core.registration import corner_error
from tim_core.rig_search import register_pairs

DATA = ROOT.parent / "shared" / "data"
FOLDERS = {"msrs": ("ir", "vi"), "roadscene": ("ir", "vi"), "llvip_samples": ("ir", "vi")}


def native_offsets(name: str, limit: int) -> dict:
    a, b = FOLDERS[name]
    pairs, _ = pair_paths(DATA / name / a, DATA / name / b)
    if name != "llvip_samples":
        pairs = [p for p in pairs if is_validation(p.name, 0.2)]
    rows = []
    for p in pairs[:limit] if limit else pairs:
        ir, vis = read_image(p.a), read_image(p.b)
        t0 = time.process_time()
        reg = register_pairs([(ir, vis)])
        px = corner_error(np.eye(3), reg.homography, (ir.shape[1], ir.shape[0]))
        rows.append({"name": p.name, "vis_width": int(vis.shape[1]), "offset_px": px,
                     "offset_pct_width": 100.0 * px / vis.shape[1], "converged": reg.converged,
                     "cpu_s": time.process_time() - t0, "homography": np.asarray(reg.homography).ravel().tolist()})
        print(f"{name:14s} {p.name:14s} {px:7.2f} px  {rows[-1]['offset_pct_width']:5.2f}% of width"
              f"{'' if reg.converged else '  (not converged)'}", flush=True)
    conv = [r for r in rows if r["converged"]]
    px = np.array([r["offset_px"] for r in conv])
    pct = np.array([r["offset_pct_width"] for r in conv])
    summary = {"pairs": len(rows), "converged": len(conv)}
    if len(conv):
        summary.update({"median_px": float(np.median(px)), "p90_px": float(np.percentile(px, 90)),
                        "min_px": float(px.min()), "max_px": float(px.max()),
                        "median_pct_width": float(np.median(pct)), "share_under_2px": float((px < 2.0).mean())})
    return {"summary": summary, "pairs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(FOLDERS), choices=list(FOLDERS))
    parser.add_argument("--limit", type=int, default=20, help="pairs per set (0: all)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sets, limit = (["msrs"], 2) if args.smoke else (args.sets, args.limit)
    result = {"benchmark": "native IR/VIS offset of the aligned data sets", "machine": machine_info(),
              "limit": limit, "sets": {}}
    for name in sets:
        result["sets"][name] = native_offsets(name, limit)
    out = ROOT / "bench" / "results" / ("registration_native_smoke.tmp" if args.smoke else "registration_native.json")
    write_text_atomic(out, json.dumps(result, indent=1))
    for name, r in result["sets"].items():
        s = r["summary"]
        if s.get("converged"):
            print(f"{name}: {s['converged']} of {s['pairs']} converged; offset from identity median "
                  f"{s['median_px']:.2f} px (p90 {s['p90_px']:.2f}, {s['min_px']:.2f}-{s['max_px']:.2f}); under 2 px: "
                  f"{100 * s['share_under_2px']:.0f}%")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
