"""Score fusion bundles for docs/quality_report.md: the validation split (MSRS, RoadScene, both; matlab convention)
and the RoadScene50 benchmark (cddfuse convention) next to CDDFuse's published row.

    python bench/quality_eval.py models/tim_ivif_base runs/base_v2/bundle [--limit N] [--threads 1]
    python bench/quality_eval.py --tables base_v1 base_v4 compact_v3    # the report's tables from the saved JSON

Writes bench/results/quality/<label>.json per bundle (label = bundle folder name, or --labels) and prints Markdown
tables. Pixel-wise mean and max baselines are scored on the same pairs with the same code. The validation pairs
and RoadScene50 only score here; no training run reads them (tim_core.data leaves RoadScene50 out of training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.data import is_validation, resolve_layout  # noqa: E402
from tim_core.evaluate import evaluate_folders  # noqa: E402
from tim_core.files import pair_paths, read_image, write_image, write_text_atomic  # noqa: E402
from tim_core.metrics import FAST_METRICS, to_gray  # noqa: E402
from tim_core.runtime import Fuser  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MATLAB = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"]
CDDFUSE = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]
# CDDFuse (Zhao et al., CVPR 2023), Table 1, RoadScene: as listed in ../shared/data/benchmarks/README.md
PUBLISHED = {
    "CDDFuse": [7.44, 54.67, 16.36, 2.30, 1.81, 0.69, 0.52, 0.98],
    "ReCoNet": [7.36, 52.54, 10.78, 2.18, 1.74, 0.59, 0.43, 0.88],
    "DeFusion": [7.23, 44.44, 10.22, 2.25, 1.69, 0.63, 0.48, 0.89],
    "TarDAL": [7.17, 47.44, 10.83, 2.14, 1.55, 0.54, 0.40, 0.88],
    "U2Fusion": [7.09, 38.12, 13.25, 1.87, 1.70, 0.60, 0.51, 0.97],
}


def sources(cache: Path) -> dict[str, list[str]]:
    """Copy the validation split and RoadScene50 as cache/<set>/{ir,vis}/NAME.png once; returns names per set."""
    sets: dict[str, list[str]] = {"msrs": [], "roadscene": [], "roadscene50": []}
    bench = set((DATA / "benchmarks" / "roadscene50.txt").read_text().split())
    for ds in ("msrs", "roadscene"):
        a_dir, b_dir = resolve_layout(str(DATA / ds))
        for p in pair_paths(a_dir, b_dir)[0]:
            targets = []
            if is_validation(p.name, 0.2):
                targets.append(ds)
            if ds == "roadscene" and p.name in bench:
                targets.append("roadscene50")
            for t in targets:
                for mod, src in (("ir", p.a), ("vis", p.b)):
                    dst = cache / t / mod / f"{p.name}.png"
                    if not dst.is_file():
                        write_image(dst, read_image(src))
                sets[t].append(p.name)
    for t, names in sets.items():
        for name in names:
            a = to_gray(read_image(cache / t / "ir" / f"{name}.png"), "matlab")
            b = to_gray(read_image(cache / t / "vis" / f"{name}.png"), "matlab")
            for kind, img in (("mean", (a + b) / 2), ("max", np.maximum(a, b))):
                dst = cache / t / kind / f"{name}.png"
                if not dst.is_file():
                    write_image(dst, np.round(img).astype(np.uint8))
    return sets


def score(cache: Path, subset: str, fused: Path, convention: str) -> dict:
    res = evaluate_folders(cache / subset / "ir", cache / subset / "vis", fused, convention=convention,
                           metrics=list(FAST_METRICS), progress=False)
    return res


def mean_of(per_image: dict, names: list[str]) -> dict:
    return {m: float(np.mean([v[m] for v in per_image.values()])) for m in names}


def split_means(per: dict[str, dict]) -> dict:
    """Means over MSRS, RoadScene and both (each image counted once) of the validation split."""
    both = {**{f"msrs/{k}": v for k, v in per["msrs"].items()},
            **{f"rs/{k}": v for k, v in per["roadscene"].items()}}
    return {"msrs": mean_of(per["msrs"], MATLAB), "roadscene": mean_of(per["roadscene"], MATLAB),
            "all": mean_of(both, MATLAB)}


def evaluate_bundle(bundle: str, label: str, cache: Path, sets: dict, out_dir: Path) -> dict:
    fuser = Fuser(bundle, device="cpu")
    result: dict = {"bundle": str(bundle), "label": label, "card": {k: fuser.card.get(k) for k in
                                                                    ("name", "genotype", "steps", "lineage")}}
    per: dict[str, dict] = {}
    for subset, names in sets.items():
        fused_dir = out_dir / label / subset
        for name in tqdm(names, desc=f"{label} {subset}", unit="pair"):
            dst = fused_dir / f"{name}.png"
            ir = read_image(cache / subset / "ir" / f"{name}.png")
            vis = read_image(cache / subset / "vis" / f"{name}.png")
            write_image(dst, fuser(ir, vis).fused)
        conv = "cddfuse" if subset == "roadscene50" else "matlab"
        per[subset] = score(cache, subset, fused_dir, conv)["per_image"]
    result["validation_matlab"] = {**split_means(per), "n": {"msrs": len(per["msrs"]),
                                                             "roadscene": len(per["roadscene"])}}
    result["roadscene50_cddfuse"] = mean_of(per["roadscene50"], CDDFUSE)
    ours = result["roadscene50_cddfuse"]
    result["ahead_of_cddfuse"] = [m for m, p in zip(CDDFUSE, PUBLISHED["CDDFuse"]) if round(ours[m], 2) > p]
    return result


def baselines(cache: Path, sets: dict) -> dict:
    out = {}
    for kind in ("mean", "max"):
        per = {s: score(cache, s, cache / s / kind, "cddfuse" if s == "roadscene50" else "matlab")["per_image"]
               for s in sets}
        out[kind] = {"validation_matlab": split_means(per),
                     "roadscene50_cddfuse": mean_of(per["roadscene50"], CDDFUSE)}
    return out


def table(rows: dict[str, dict], names: list[str], fmt: str = "{:.3f}") -> str:
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, vals in rows.items():
        lines.append(f"| {label} | " + " | ".join(fmt.format(vals[m]) for m in names) + " |")
    return "\n".join(lines)


def tables_from_results(results: Path, labels: list[str]) -> int:
    """Markdown tables (validation: MSRS, RoadScene, all; RoadScene50 with CDDFuse) of already scored labels."""
    base = json.loads((results / "baselines.json").read_text())
    rows = {s: {f"{k} (pixel-wise)": base[k]["validation_matlab"][s] for k in ("mean", "max")}
            for s in ("msrs", "roadscene", "all")}
    rs50 = {k: dict(zip(CDDFUSE, v)) for k, v in PUBLISHED.items()}
    for label in labels:
        path = results / f"{label}.json"
        if not path.is_file():
            print(f"quality_eval: {path} is missing; score it first: python bench/quality_eval.py BUNDLE --labels "
                  f"{label}", file=sys.stderr)
            return 2
        res = json.loads(path.read_text())
        for s in rows:
            rows[s][label] = res["validation_matlab"][s]
        rs50[label] = res["roadscene50_cddfuse"]
        print(f"{label}: ahead of CDDFuse on {len(res['ahead_of_cddfuse'])}/8 ({', '.join(res['ahead_of_cddfuse'])})")
    for s, title in (("all", "Validation, all 102 pairs"), ("msrs", "Validation, MSRS (55)"),
                     ("roadscene", "Validation, RoadScene (47)")):
        print(f"\n{title}, matlab convention\n")
        print(table(rows[s], MATLAB))
    print("\nRoadScene50, cddfuse convention\n")
    print(table(rs50, CDDFUSE, "{:.2f}"))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="*")
    p.add_argument("--tables", nargs="+", metavar="LABEL", help="print the tables of scored labels, score nothing")
    p.add_argument("--labels", nargs="*", help="one label per bundle (default: folder names)")
    p.add_argument("--cache", type=Path, default=ROOT / "out" / "quality_sources")
    p.add_argument("--fused", type=Path, default=ROOT / "out" / "quality_fused")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "quality")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.tables:
        return tables_from_results(args.results, args.tables)
    if not args.bundles:
        p.error("give bundles to score, or --tables LABEL ... to print scored ones")
    torch.set_num_threads(args.threads)
    labels = args.labels or [Path(b).name for b in args.bundles]
    sets = sources(args.cache)
    base = baselines(args.cache, sets)
    write_text_atomic(args.results / "baselines.json", json.dumps(base, indent=1) + "\n")
    rows_val, rows_rs50 = {"mean (pixel-wise)": base["mean"]["validation_matlab"]["all"],
                           "max (pixel-wise)": base["max"]["validation_matlab"]["all"]}, {}
    rows_rs50.update({k: dict(zip(CDDFUSE, v)) for k, v in PUBLISHED.items()})
    for bundle, label in zip(args.bundles, labels):
        res = evaluate_bundle(bundle, label, args.cache, sets, args.fused)
        write_text_atomic(args.results / f"{label}.json", json.dumps(res, indent=1) + "\n")
        rows_val[label] = res["validation_matlab"]["all"]
        rows_rs50[label] = res["roadscene50_cddfuse"]
        for s in ("msrs", "roadscene"):
            print(f"{label} {s}: " + " ".join(f"{m}={res['validation_matlab'][s][m]:.3f}" for m in MATLAB))
        print(f"{label}: ahead of CDDFuse on {len(res['ahead_of_cddfuse'])}/8 ({', '.join(res['ahead_of_cddfuse'])})")
    print("\nValidation split (102 pairs), matlab convention\n")
    print(table(rows_val, MATLAB))
    print("\nRoadScene50, cddfuse convention\n")
    print(table(rows_rs50, CDDFUSE, "{:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
