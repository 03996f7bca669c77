"""The PMI claim against the pretraining budget: meta's validation loss minus the best competitor's, per held-out task.

Usage: python bench/meta_budget.py [RESULTS.json ...] [--png docs/meta_budget.png]
Each results file is one leave-one-task-out study of bench/meta_experiment.py (its `setup.passes` is the budget of
every initialization, in forward+backward passes). For K = 10 and K = 50 adaptation steps it prints, per held-out
task and budget, meta's mean validation loss minus the lowest mean of the three competitors (random, joint,
IR-VIS only; negative: meta leads), with the seeds where meta beats that competitor and whether the seed ranges
overlap, and draws the gap against the budget. Defaults: the first study (160 passes, SGD inner step) and the 20x
study (3,200 passes, Adam inner step).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tim_core.plots import line_plot

DEFAULT = ["bench/results/meta_experiment.json", "bench/results/meta_experiment_20x_adam.json"]
COMPETITORS = ("random", "joint", "irvis_only")
KS = (10, 50)


def losses(results: dict) -> dict:
    """{held: {method: {K: {seed: loss}}}} from a study's cells ("held/seed" keys)."""
    out: dict = {}
    for key, cell in results["cells"].items():
        held, seed = key.split("/")[0], key.split("/")[-1]
        for method, curve in cell["curves"].items():
            for k, scores in curve.items():
                out.setdefault(held, {}).setdefault(method, {}).setdefault(int(k), {})[seed] = scores["loss"]
    return out


def gaps(results: dict) -> list[dict]:
    rows = []
    for held, by_method in losses(results).items():
        if "meta" not in by_method:
            continue
        for k in KS:
            meta = by_method["meta"][k]
            means = {m: float(np.mean(list(by_method[m][k].values()))) for m in COMPETITORS if m in by_method}
            best = min(means, key=means.get)
            seeds = sorted(set(meta) & set(by_method[best][k]))
            rival = by_method[best][k]
            overlap = not (max(meta.values()) < min(rival.values()) or min(meta.values()) > max(rival.values()))
            rows.append({"held_out": held, "k": k, "meta": float(np.mean(list(meta.values()))), "runner_up": best,
                         "runner_up_loss": means[best], "gap": float(np.mean(list(meta.values()))) - means[best],
                         "seeds_meta_lower": sum(meta[s] < rival[s] for s in seeds), "seeds": len(seeds),
                         "ranges_overlap": overlap})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", default=DEFAULT)
    parser.add_argument("--png", help="write the gap-vs-budget plot here")
    args = parser.parse_args()
    studies = []
    for path in args.results:
        data = json.loads((ROOT / path).read_text())
        studies.append((int(data["setup"]["passes"]), data["setup"].get("inner_optimizer", "sgd"),
                        gaps(data)))
    studies.sort(key=lambda s: s[0])
    print("| held out | K | " + " | ".join(f"{p} passes ({inner} inner)" for p, inner, _ in studies) + " |")
    print("|---|---|" + "---|" * len(studies))
    keys = sorted({(r["held_out"], r["k"]) for _, _, rows in studies for r in rows})
    series: dict[str, tuple[list[float], list[float]]] = {}
    for held, k in keys:
        cells = []
        for passes, _, rows in studies:
            row = next((r for r in rows if r["held_out"] == held and r["k"] == k), None)
            if row is None:
                cells.append("")
                continue
            lead = "leads" if row["gap"] < 0 else f"behind {row['runner_up']}"
            spread = "ranges overlap" if row["ranges_overlap"] else "**ranges apart**"
            cells.append(f"{row['gap']:+.2f} ({lead}; {row['seeds_meta_lower']}/{row['seeds']} seeds; {spread})")
            xs, ys = series.setdefault(f"{held} K={k}", ([], []))
            xs.append(float(np.log10(passes)))
            ys.append(row["gap"])
        print(f"| {held} | {k} | " + " | ".join(cells) + " |")
    if args.png:
        line_plot(series, ROOT / args.png, "meta loss minus the best competitor's (below 0: meta leads)",
                  xlabel="log10 pretraining passes per initialization", ylabel="loss gap")
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
