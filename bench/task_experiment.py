"""Task-guided fusion experiment: does guiding the fusion network by a task beat unguided fusion and single cameras?

Detection on MSRS (301 real pairs, person/bicycle/car boxes of the `fusion` label set; the name-hash
validation fifth is held out from every run, fusion pre-training included). Per seed:
  ir, vis      detector on one camera, base + guide steps;
  base         detector on the frozen, unguided fusion network (init bundle), base steps;
  unguided     `base`, fine-tuned guide more steps, fusion still frozen;
  alternating  `base`, fine-tuned guide steps with the alternating coupling (fusion trained too);
  bilevel      `base`, fine-tuned guide steps with the bilevel coupling (IAS hypergradient).
The same study for segmentation on generated scenes (tim_core.synthetic: a study tool, not a benchmark).
Fusion metrics (matlab convention) of the seed-0 fusion networks on the MSRS validation fifth.
Every run is a `tim guide` run (GuideConfig from tim_core/configs/guide_*.yaml plus overrides); a run whose
metrics.json exists is reused, so an interrupted experiment continues. CPU seconds are recorded per run.

    nice -n 10 .venv/bin/python bench/task_experiment.py --fusion-init runs/guide_fusion_small/bundle
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from tim_core.config import load_config
from tim_core.guide_config import GuideConfig
from tim_core.guided import guide
from tim_core.report import evaluate_on_validation

CONFIGS = {
    "detection": "tim_core/configs/guide_detection.yaml",
    "segmentation": "tim_core/configs/guide_segmentation.yaml",
}
METRIC = {"detection": ("map50", "map"), "segmentation": ("miou", "pixel_acc")}


def run(task: str, out: Path, cpu: dict, **overrides) -> dict:
    """One `tim guide` run (reused when its metrics.json exists); returns its metrics.json content."""
    done = out / "metrics.json"
    if not done.is_file():
        cfg = load_config(GuideConfig, CONFIGS[task], {"out": str(out), "threads": 1, "device": "cpu", **overrides})
        words = " ".join(f"--{k} {v}" for k, v in overrides.items())
        t0 = time.process_time()
        guide(cfg, command=f"tim guide --config {CONFIGS[task]} --out {out} --threads 1 --device cpu {words}",
              overwrite=True)
        cpu[str(out)] = time.process_time() - t0
        print(f"{out}: {json.loads(done.read_text())['task']} ({cpu[str(out)]:.0f} CPU s)", flush=True)
    return json.loads(done.read_text())


def study(task: str, args, root: Path, cpu: dict, extra: dict) -> dict:
    """All arms of one task over the seeds: {arm: [metrics per seed]}."""
    arms: dict[str, list] = {a: [] for a in ("ir", "vis", "unguided", "alternating", "bilevel")}
    base_steps, guide_steps = (
        (args.base_steps, args.guide_steps) if task == "detection" else (args.seg_base_steps, args.seg_guide_steps)
    )
    for seed in args.seeds:
        common = {"seed": seed, **extra}
        for cam in ("ir", "vis"):
            arms[cam].append(
                run(
                    task,
                    root / f"{cam}_s{seed}",
                    cpu,
                    input=cam,
                    coupling="frozen",
                    steps=base_steps + guide_steps,
                    **common,
                )["task"]
            )
        base = run(
            task, root / f"base_s{seed}", cpu, init=args.fusion_init, coupling="frozen", steps=base_steps, **common
        )["bundle"]
        fine = {"init": base, "steps": guide_steps, "warmup_steps": min(20, guide_steps // 5), "lr": args.finetune_lr}
        arms["unguided"].append(run(task, root / f"unguided_s{seed}", cpu, coupling="frozen", **fine, **common)["task"])
        for coupling in ("alternating", "bilevel"):
            arms[coupling].append(
                run(
                    task,
                    root / f"{coupling}_s{seed}",
                    cpu,
                    coupling=coupling,
                    lam=args.lam,
                    fusion_lr=args.fusion_lr,
                    **fine,
                    **common,
                )["task"]
            )
    return arms


def summarize(arms: dict, keys: tuple[str, ...]) -> dict:
    """Mean and (population) std over seeds of each metric."""
    return {
        arm: {
            k: {
                "mean": float(np.mean([r[k] for r in runs])),
                "std": float(np.std([r[k] for r in runs])),
                "runs": [r[k] for r in runs],
            }
            for k in keys
        }
        for arm, runs in arms.items()
        if runs
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fusion-init", required=True, help="unguided fusion bundle all fused arms start from")
    p.add_argument("--runs", default="runs/task_experiment")
    p.add_argument("--json", default="bench/results/task_experiment.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--base-steps", type=int, default=600)
    p.add_argument("--guide-steps", type=int, default=100)
    p.add_argument("--seg-base-steps", type=int, default=300)
    p.add_argument("--seg-guide-steps", type=int, default=60)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--fusion-lr", type=float, default=5e-4)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--tasks", nargs="+", default=["detection", "segmentation"])
    p.add_argument("--fusion-eval-limit", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    out_json = Path(args.json)
    result = json.loads(out_json.read_text()) if out_json.is_file() else {}
    cpu = result.get("cpu_seconds", {})
    result["settings"] = vars(args)
    for task in args.tasks:
        extra = {"synthetic": 240} if task == "segmentation" else {}
        arms = study(task, args, Path(args.runs) / task, cpu, extra)
        result[task] = summarize(arms, METRIC[task])
        result["cpu_seconds"] = cpu
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    if "detection" in args.tasks:
        fusion = result.setdefault("fusion_metrics", {})
        root = Path(args.runs) / "detection"
        for arm, bundle in (
            ("unguided", args.fusion_init),
            ("alternating", root / "alternating_s0" / "bundle"),
            ("bilevel", root / "bilevel_s0" / "bundle"),
        ):
            if arm not in fusion:
                t0 = time.process_time()
                val = (
                    evaluate_on_validation(
                        Path(bundle), ["../shared/data/msrs"], 0.2, root / f"fusion_val_{arm}", args.fusion_eval_limit
                    )
                    if arm != "unguided"
                    else _eval_copy(Path(bundle), root / "fusion_val_unguided", args.fusion_eval_limit)
                )
                fusion[arm] = {
                    "model": val["model"],
                    "baseline_mean": val["baseline_mean"],
                    "baseline_max": val["baseline_max"],
                    "n": val["n"],
                }
                cpu[f"fusion_metrics_{arm}"] = time.process_time() - t0
        result["cpu_seconds"] = cpu
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in ("detection", "segmentation")}, indent=1))
    print(f"total CPU seconds: {sum(cpu.values()):.0f}")


def _eval_copy(bundle: Path, out: Path, limit: int) -> dict:
    """Fusion metrics of a bundle we must not modify (its card gets the validation record): evaluate a copy."""
    import shutil

    copy = out / "bundle"
    if not copy.exists():
        shutil.copytree(bundle, copy)
    return evaluate_on_validation(copy, ["../shared/data/msrs"], 0.2, out, limit)


if __name__ == "__main__":
    main()
