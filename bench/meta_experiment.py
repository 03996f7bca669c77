"""Leave-one-task-out PMI study: does the meta-initialization adapt faster to a new kind of fusion?

For every held-out task H and seed, one random initialization (a) is pretrained at equal compute (the
same number of forward+backward passes, batch and crop) by (b) joint multi-task training on the other
tasks (the meta loop with k = 0), (c) training on the IR-VIS tasks other than H only, and (d) first-order
MAML (k = 1) on the other tasks. Each of the four is then adapted to H's training split with Adam
(--adapt-opt sgd: the plain SGD of MAML's inner loop, which diverged at its rate in a trial run) and
scored on H's validation split (name hash, never trained on) after K = 0, 10, 50, 200 steps: the fusion
loss on fixed centre crops, and MI / VIF / Qabf (matlab convention) on the first few validation pairs
at full size, fused in eval mode after BatchNorm statistics are re-estimated on H's training crops.

Usage: python bench/meta_experiment.py [--config tim_core/configs/meta_experiment.yaml] [--seeds 0 1 2]
       [--passes 160] [--resume] [--smoke]
Writes bench/results/meta_experiment.json after every (task, seed) cell (--resume skips finished cells);
bench/meta_plot.py draws the curves and prints the tables of docs/meta_report.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from tim_core.adapt import fine_tune, recalibrate_bn
from tim_core.config import load_config
from tim_core.data import PairSet, center_crops, load_pairs
from tim_core.losses import LossWeights, fusion_loss
from tim_core.meta import (
    MetaConfig,
    build_genotype,
    outer_step,
    passes_per_step,
    task_name,
)
from tim_core.metrics import compute_metrics
from tim_core.network import FusionNet

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ("mri_ct", "mri_pet", "mri_spect", "roadscene")
IR_VIS = ("msrs", "roadscene")
METHODS = ("random", "joint", "irvis_only", "meta")
METRICS = ("MI", "VIF", "Qabf")


def pretrain(init: dict, tasks: list[PairSet], cfg: MetaConfig, passes: int) -> dict:
    """Run the meta loop (k = cfg.inner_steps) from `init` for `passes` forward+backward passes."""
    net = FusionNet(build_genotype(cfg))
    net.load_state_dict(init)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    for step in range(passes // passes_per_step(cfg)):
        outer_step(net, opt, tasks, [1.0] * len(tasks), cfg, step)
    return copy.deepcopy(net.state_dict())


class HeldOut:
    """A held-out task's training split (adaptation, BN statistics) and fixed validation material."""

    def __init__(self, spec: str, cfg: MetaConfig, val_crop: int, val_crops: int, eval_images: int):
        self.train = load_pairs([spec], "train", cfg.val_fraction)
        val = load_pairs([spec], "val", cfg.val_fraction)
        self.crops = center_crops(val, val_crop, val_crops)
        self.images = [(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])
                       for a, b in list(zip(val.a, val.b))[:eval_images]]
        self.baselines = {kind: self._score(lambda a, b, op=op: op(a, b)) for kind, op in
                          (("mean", lambda a, b: (a + b) / 2), ("max", torch.maximum))}

    def _score(self, fuse) -> dict:
        rows = []
        for a, b in self.images:
            a8, b8, f8 = (np.round(t[0, 0].numpy() * 255).astype(np.uint8) for t in (a, b, fuse(a, b).clamp(0, 1)))
            rows.append(compute_metrics(a8, b8, f8, "matlab", list(METRICS)))
        return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}

    def evaluate(self, net: FusionNet, cfg: MetaConfig, seed: int) -> dict:
        """Validation loss and metrics of `net` in eval mode (BN re-estimated on training crops)."""
        recalibrate_bn(net, [self.train], cfg.bn_batches, cfg.batch, cfg.crop, seed)
        with torch.no_grad():
            a, b = self.crops
            loss = fusion_loss(net(a, b).clamp(0, 1), a, b, LossWeights())[0].item()
            scores = self._score(net)
        net.train()
        return {"loss": loss, **scores}


def adaptation_curve(init: dict, task: HeldOut, cfg: MetaConfig, ks: list[int], lr: float, batch: int,
                     seed: int, optimizer: str) -> dict:
    """Scores after K adaptation steps, for every K in `ks`, along one Adam trajectory."""
    net = FusionNet(build_genotype(cfg))
    net.load_state_dict(init)
    curve = {0: task.evaluate(net, cfg, seed)} if 0 in ks else {}

    def on_step(k: int) -> None:
        if k in ks:
            curve[k] = task.evaluate(net, cfg, seed)

    fine_tune(net, task.train, max(ks), batch, cfg.crop, lr, seed, on_step=on_step, optimizer=optimizer)
    return {str(k): v for k, v in sorted(curve.items())}


def run_cell(held: str, seed: int, cfg: MetaConfig, sets: dict[str, PairSet], task: HeldOut, args,
             cache: dict) -> dict:
    """All four initializations for one held-out task and seed: pretraining, adaptation curves, timings."""
    torch.manual_seed(seed)
    init = copy.deepcopy(FusionNet(build_genotype(cfg)).state_dict())
    others = [n for n in sets if n != held]
    irvis = [n for n in others if n in IR_VIS]
    seeded = dataclasses.replace(cfg, seed=seed)
    recipes = {"joint": (others, dataclasses.replace(seeded, inner_steps=0)), "irvis_only":
               (irvis, dataclasses.replace(seeded, inner_steps=0)), "meta": (others, seeded)}
    inits, cpu = {"random": init}, {}
    for method, (names, mcfg) in recipes.items():
        key = (method, seed, tuple(names))
        t = time.process_time()
        if key not in cache:
            cache[key] = pretrain(init, [sets[n] for n in names], mcfg, args.passes)
        inits[method], cpu[f"pretrain_{method}"] = cache[key], time.process_time() - t
    curves = {}
    for method in METHODS:
        t = time.process_time()
        curves[method] = adaptation_curve(inits[method], task, cfg, args.k, args.adapt_lr or cfg.inner_lr,
                                          args.adapt_batch, seed, args.adapt_opt)
        cpu[f"adapt_{method}"] = time.process_time() - t
        print(f"  {held} seed {seed} {method:10s} " + "  ".join(
            f"K={k}: loss {v['loss']:.4f} MI {v['MI']:.3f}" for k, v in curves[method].items()), flush=True)
    return {"curves": curves, "pretrain_tasks": {"joint": others, "irvis_only": irvis, "meta": others},
            "cpu_s": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "tim_core/configs/meta_experiment.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--passes", type=int, default=160, help="forward+backward passes of every pretraining")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 10, 50, 200], help="adaptation steps scored")
    parser.add_argument("--adapt-opt", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--adapt-lr", type=float, default=1e-3, help="0: the config's inner_lr")
    parser.add_argument("--adapt-batch", type=int, default=2)
    parser.add_argument("--val-crop", type=int, default=128)
    parser.add_argument("--val-crops", type=int, default=6, help="validation pairs in the loss")
    parser.add_argument("--eval-images", type=int, default=3, help="validation pairs scored by MI/VIF/Qabf")
    parser.add_argument("--out", default=str(ROOT / "bench/results/meta_experiment.json"))
    parser.add_argument("--resume", action="store_true", help="keep finished cells of --out")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run into bench/results/*.tmp")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.held_out, args.passes, args.k = [0], ["mri_ct"], 8, [0, 2]
        args.out = str(ROOT / "bench/results/meta_experiment_smoke.tmp")
    cfg = load_config(MetaConfig, args.config)
    torch.set_num_threads(cfg.threads or 1)
    specs = {task_name(s): s if Path(s).is_absolute() else str(ROOT / s) for s in cfg.tasks}
    t0 = time.process_time()
    sets = {n: load_pairs([s], "train", cfg.val_fraction) for n, s in specs.items()}
    out = Path(args.out)
    results = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    results["setup"] = {"config": dataclasses.asdict(cfg), "genotype": build_genotype(cfg).to_dict(),
                        **{k: v for k, v in vars(args).items() if k not in ("resume", "smoke", "out")},
                        "train_pairs": {n: len(s) for n, s in sets.items()}, "load_cpu_s": time.process_time() - t0}
    results.setdefault("cells", {})
    cache: dict = {}
    for held in args.held_out:
        task = HeldOut(specs[held], cfg, args.val_crop, args.val_crops, args.eval_images)
        results.setdefault("baselines", {})[held] = {**task.baselines, "n_images": len(task.images)}
        for seed in args.seeds:
            key = f"{held}/seed{seed}"
            if key in results["cells"]:
                continue
            results["cells"][key] = run_cell(held, seed, cfg, sets, task, args, cache)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1) + "\n")
    results["total_cpu_s"] = time.process_time() - t0
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out} ({results['total_cpu_s']:.0f} s CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
