"""IR-to-VIS registration on known ground truth: corner error of recovered homographies, fusion metrics with and
without registration, and the warp's share of the fusion time.

Usage: python bench/bench_registration.py [--singles 20] [--rigs 4] [--rig-size 10] [--fusion 8] [--smoke]
Aligned MSRS validation pairs (tim_core.data.is_validation(name, 0.2)) stand for the VIS grid. Each trial draws a
rig-like homography H (scale 0.8-1.25, rotation <= 3 deg, shift <= 8% of the width, corners moved <= 2% by
perspective), renders what an IR camera with IR -> VIS homography H sees (simulate_ir_camera) and registers it:
single pairs, and rigs (one H, `rig-size` different pairs). Corner errors (mean of the 4 IR-corner displacements,
VIS px) are reported against three references:
  nominal    H itself (the data set taken as perfectly aligned);
  corrected  H0 @ H, where H0 is the data set's own IR -> VIS misalignment, estimated once jointly on MSRS
             *training* pairs (disjoint from the pairs registered here);
  recovery   H_native @ H, where H_native is the estimate on the same, unwarped pairs: whether the search
             finds the same optimum through the warp (convergence), independent of the data set's alignment.
A control renders pseudo-IR from the VIS image (inverted, other gamma, blurred): its edges coincide with VIS's by
construction, so its error is the estimator's own precision, free of the data set's alignment.
Fusion (tim_ivif_compact, CPU) without registration, with the recovered H and with the true H, of `fusion` pairs
from the rigs (each with its rig's H: what a robot uses) and of the first `fusion` converged single pairs;
metrics (tim_core.metrics, matlab convention) against the aligned IR and the VIS image.
Timing at 640x512: IrToVisWarp.warp + fill against Fuser.__call__, median of several calls, as a ratio.
Writes bench/results/registration.json (--smoke: 3 singles, 1 rig of 3, 1 fusion pair; registration_smoke.tmp).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.bench import machine_info, time_call
from tim_core.data import is_validation
from tim_core.files import pair_paths, read_image
from tim_core.metrics import compute_metrics
from tim_core.registration import IrToVisWarp, corner_error, simulate_ir_camera, synthetic_homography
from tim_core.rig_search import SearchConfig, register_pairs
from tim_core.runtime import Fuser

DATA = ROOT.parent / "shared" / "data" / "msrs"


def msrs_pairs(validation: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs, _ = pair_paths(DATA / "ir", DATA / "vi")
    return [(p.name, read_image(p.a), read_image(p.b)) for p in pairs if is_validation(p.name, 0.2) == validation]


def stats(errors: list[float]) -> dict:
    e = np.asarray(errors)
    if not len(e):
        return {"n": 0}
    return {"n": len(e), "median": float(np.median(e)), "p95": float(np.percentile(e, 95)), "mean": float(e.mean()),
            "max": float(e.max())}


def summary(rows: list[dict]) -> dict:
    """Corner-error statistics per reference: all rows, converged ones, daylight (D) and night (N) MSRS pairs."""
    out = {}
    for ref in ("nominal", "corrected", "recovery"):
        out[ref] = stats([r[ref] for r in rows])
        out[ref + "_converged"] = stats([r[ref] for r in rows if r["converged"]])
        for tag in ("D", "N"):
            out[f"{ref}_{tag}"] = stats([r[ref] for r in rows if r.get("name", "").endswith(tag)])
    gross = [r["nominal"] > 20 for r in rows]
    out["gross_failures"] = int(sum(gross))  # > 20 px: a wrong placement, not an imprecise one
    out["gross_failures_flagged"] = int(sum(g and not r["converged"] for g, r in zip(gross, rows)))
    out["good_flagged"] = int(sum(not g and not r["converged"] for g, r in zip(gross, rows)))
    return out


def pseudo_ir(vis: np.ndarray) -> np.ndarray:
    """A stand-in IR image whose edges coincide with VIS's by construction: inverted, other gamma, blurred."""
    luma = cv2.cvtColor(vis, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return (255 * (1.0 - cv2.GaussianBlur(luma, (0, 0), 1.0) ** 0.6)).astype(np.uint8)


def errors_of(h_est: np.ndarray, h_true: np.ndarray, h0: np.ndarray, h_native: np.ndarray, size) -> dict:
    return {"nominal": corner_error(h_true, h_est, size), "corrected": corner_error(h0 @ h_true, h_est, size),
            "recovery": corner_error(h_native @ h_true, h_est, size)}


def fusion_metrics(fuser: Fuser, items: list[tuple[str, dict]], by_name: dict, size) -> dict:
    """Mean metrics of fusing each pair without registration, with the recovered H and with the true H."""
    fusion: dict[str, list[dict]] = {"none": [], "recovered": [], "true": []}
    for name, row in items:
        ir, vis = by_name[name]
        h_true, h_est = (np.asarray(row[k]).reshape(3, 3) for k in ("h_true", "h_est"))
        ir_cam = simulate_ir_camera(ir, h_true, size)
        for key, h in (("none", None), ("recovered", h_est), ("true", h_true)):
            fuser.registration = None if h is None else IrToVisWarp(h)
            fusion[key].append(compute_metrics(ir, vis, fuser(ir_cam, vis).fused, "matlab"))
    fuser.registration = None
    means = {k: {m: float(np.mean([v[m] for v in rows])) for m in rows[0]} for k, rows in fusion.items()}
    rel = {m: (means["recovered"][m] - means["true"][m]) / abs(means["true"][m]) for m in means["true"]}
    return {"pairs": [name for name, _ in items], "mean": means, "recovered_vs_true_rel": rel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--rigs", type=int, default=4)
    parser.add_argument("--rig-size", type=int, default=10)
    parser.add_argument("--fusion", type=int, default=8)
    parser.add_argument("--reference-pairs", type=int, default=20, help="MSRS training pairs for H0")
    parser.add_argument("--control", type=int, default=6, help="single pairs with pseudo-IR (exact truth)")
    parser.add_argument("--model", default="tim_ivif_compact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.singles, args.rigs, args.rig_size, args.fusion, args.reference_pairs, args.control = 3, 1, 3, 1, 3, 1
    rng = np.random.default_rng(args.seed)
    cfg = SearchConfig()
    t_start = time.process_time()
    val = msrs_pairs(True)
    order = rng.permutation(len(val))
    size = (val[0][1].shape[1], val[0][1].shape[0])  # (width, height): IR camera frames the size of the VIS ones

    train = msrs_pairs(False)
    ref = [train[i] for i in rng.permutation(len(train))[:args.reference_pairs]]
    identity = np.eye(3)
    h0_reg = register_pairs([(ir, vis) for _, ir, vis in ref], cfg)
    h0 = h0_reg.homography
    print(f"data set misalignment H0 ({len(ref)} training pairs): {corner_error(identity, h0, size):.2f} px at the "
          f"corners from identity", flush=True)

    singles = []
    for i in order[:args.singles]:
        name, ir, vis = val[i]
        h_true = synthetic_homography(rng, *size)
        t0 = time.process_time()
        reg = register_pairs([(simulate_ir_camera(ir, h_true, size), vis)], cfg)
        seconds = time.process_time() - t0
        native = register_pairs([(ir, vis)], cfg).homography
        e = errors_of(reg.homography, h_true, h0, native, size)
        singles.append({"name": name, **e, "converged": reg.converged, "residual": reg.residual, "cpu_s": seconds,
                        "h_true": h_true.ravel().tolist(), "h_est": reg.homography.ravel().tolist()})
        print(f"single {name}: nominal {e['nominal']:.2f} corrected {e['corrected']:.2f} recovery "
              f"{e['recovery']:.2f} px, converged {reg.converged}, {seconds:.1f} s", flush=True)

    rigs = []
    for r in range(args.rigs):
        members = [val[i] for i in rng.permutation(len(val))[:args.rig_size]]
        h_true = synthetic_homography(rng, *size)
        t0 = time.process_time()
        reg = register_pairs([(simulate_ir_camera(ir, h_true, size), vis) for _, ir, vis in members], cfg)
        seconds = time.process_time() - t0
        native = register_pairs([(ir, vis) for _, ir, vis in members], cfg).homography
        e = errors_of(reg.homography, h_true, h0, native, size)
        rigs.append({"pairs": [m[0] for m in members], **e, "converged": reg.converged, "residual": reg.residual,
                     "cpu_s": seconds, "h_true": h_true.ravel().tolist(), "h_est": reg.homography.ravel().tolist()})
        print(f"rig {r} ({len(members)} pairs): nominal {e['nominal']:.2f} corrected {e['corrected']:.2f} recovery "
              f"{e['recovery']:.2f} px, converged {reg.converged}, {seconds:.1f} s", flush=True)

    control = []  # pseudo-IR made from VIS: the truth is exact, so this is the estimator's own precision
    for i in order[:args.control]:
        name, _, vis = val[i]
        h_true = synthetic_homography(rng, *size)
        reg = register_pairs([(simulate_ir_camera(pseudo_ir(vis), h_true, size), vis)], cfg)
        control.append({"name": name, "error": corner_error(h_true, reg.homography, size), "converged": reg.converged})
        print(f"control {name}: {control[-1]['error']:.2f} px", flush=True)

    torch.set_num_threads(1)
    fuser = Fuser(args.model, device="cpu")
    by_name = {name: (ir, vis) for name, ir, vis in val}
    per_rig = max(1, args.fusion // max(1, len(rigs)))
    fusion_rigs = fusion_metrics(fuser, [(n, r) for r in rigs if r["converged"] for n in r["pairs"][:per_rig]],
                                 by_name, size)
    fusion_singles = fusion_metrics(fuser, [(s["name"], s) for s in singles if s["converged"]][:args.fusion],
                                    by_name, size)

    ir16 = np.random.default_rng(1).integers(0, 65535, (512, 640), dtype=np.uint16)
    vis_rgb = np.random.default_rng(2).integers(0, 255, (512, 640, 3), dtype=np.uint8)
    warp = IrToVisWarp(synthetic_homography(rng, 640, 512))
    ir_u, vis_y = np.random.rand(512, 640).astype(np.float32), np.random.rand(512, 640).astype(np.float32)
    fused_y = vis_y.copy()
    t_fuse = time_call(lambda: fuser(ir16, vis_rgb), warmup=1, min_runs=5, max_runs=20, budget_s=10.0)
    t_warp = time_call(lambda: (warp.warp(ir_u, vis_y), warp.fill(fused_y, vis_y, ir_u.shape)), warmup=1,
                       min_runs=20, max_runs=200, budget_s=2.0)
    timing = {"size": "640x512", "fuser_ms": t_fuse.median_ms, "warp_ms": t_warp.median_ms,
              "ratio": t_warp.median_ms / t_fuse.median_ms, "threads": 1, "model": args.model}

    out = {
        "command": " ".join(["python", *sys.argv]), "machine": machine_info(), "seed": args.seed,
        "config": vars(cfg), "cpu_s_total": time.process_time() - t_start,
        "dataset_misalignment_px": corner_error(identity, h0, size), "h0": h0.ravel().tolist(),
        "singles": {"per_pair": singles, **summary(singles)},
        "rigs": {"per_rig": rigs, **summary(rigs)},
        "control_pseudo_ir": {"per_pair": control, "error": stats([c["error"] for c in control])},
        "fusion_rigs": fusion_rigs,
        "fusion_singles": fusion_singles,
        "timing": timing,
    }
    dest = ROOT / "bench" / "results" / ("registration_smoke.tmp" if args.smoke else "registration.json")
    dest.write_text(json.dumps(out, indent=1) + "\n")
    for k in ("nominal", "corrected", "recovery"):
        print(f"singles {k}: median {out['singles'][k]['median']:.2f} p95 {out['singles'][k]['p95']:.2f} px; "
              f"rigs {k}: max {out['rigs'][k]['max']:.2f} px")
    print(f"singles: {out['singles']['gross_failures']} gross failures (> 20 px), "
          f"{out['singles']['gross_failures_flagged']} of them reported as not converged")
    print(f"control (pseudo-IR, exact truth): median {out['control_pseudo_ir']['error'].get('median', 0):.2f} px")
    for key in ("fusion_rigs", "fusion_singles"):
        worst = max(out[key]["recovered_vs_true_rel"].items(), key=lambda kv: abs(kv[1]))
        print(f"{key}: recovered vs true, largest relative difference {worst[1]:+.2%} ({worst[0]})")
    print(f"warp {timing['warp_ms']:.2f} ms vs Fuser {timing['fuser_ms']:.1f} ms at 640x512: {timing['ratio']:.2%}")
    print(f"-> {dest} ({out['cpu_s_total']:.0f} s CPU)")


if __name__ == "__main__":
    main()
