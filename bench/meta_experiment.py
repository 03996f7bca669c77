"""Leave-one-task-out PMI study: does the meta-initialization adapt faster to a new kind of fusion?

For every held-out task H and seed, one random initialization (a) is pretrained at equal compute (the
same number of forward+backward passes, batch and crop) by (b) joint multi-task training on the other
tasks (the meta loop with k = 0), (c) training on the IR-VIS tasks other than H only, and (d) MAML on the
other tasks with the config's inner rule (`inner_optimizer` sgd / adam / metasgd, first or second order).
Each of the four is then adapted to H's training split the way `tim adapt` would adapt it (the meta
initialization by the rule it was trained for, the others with Adam at 1e-3; --adapt-opt/--adapt-lr
override all four) and scored on H's validation split (name hash, never trained on) after K = 0, 10, 50,
200 steps: the fusion loss on fixed centre crops, and MI / VIF / Qabf (matlab convention) on the first few
validation pairs at full size, fused in eval mode after BatchNorm statistics are re-estimated on H's
training crops.

Usage: python bench/meta_experiment.py [--config tim_core/configs/meta_experiment.yaml] [--seeds 0 1 2]
       [--passes 160] [--inner-optimizer adam] [--second-order] [--set batch=8 ...] [--resume | --overwrite]
       [--smoke]
Every (held-out task, seed, initialization) cell is written atomically to --out when it finishes, and each
pretrained initialization to OUT_inits/, so --resume in a later sitting skips finished cells and reuses
pretraining; a resume whose settings differ from the file's is refused. bench/meta_plot.py draws the
curves and prints the tables of docs/meta_report.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from tim_core.adapt import AdaptConfig, fine_tune, recalibrate_bn, resolve_rule
from tim_core.config import load_config, parse_overrides
from tim_core.data import PairSet, center_crops, load_pairs
from tim_core.files import write_text_atomic
from tim_core.inner import RATES_PREFIX
from tim_core.losses import LossWeights, fusion_loss
from tim_core.meta import (
    MetaConfig,
    adaptation_rule,
    build_genotype,
    meta_optimizer,
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
# Arguments that may differ between sittings of one study (which cells to run, where, how to start).
PER_SITTING = ("seeds", "held_out", "out", "resume", "overwrite", "smoke")

Init = dict[str, torch.Tensor]  # "fusion.<state key>" and, for a Meta-SGD initialization, "inner_lr.<param>"


def pretrain(init: Init, tasks: list[PairSet], cfg: MetaConfig, passes: int) -> Init:
    """Run the meta loop (k = cfg.inner_steps, cfg's inner rule) from `init` for `passes` forward+backward passes."""
    net = FusionNet(build_genotype(cfg))
    net.load_state_dict({k[len("fusion."):]: v for k, v in init.items() if k.startswith("fusion.")})
    opt, rates = meta_optimizer(net, cfg)
    for step in range(passes // passes_per_step(cfg)):
        outer_step(net, opt, tasks, [1.0] * len(tasks), cfg, step, rates)
    out = {f"fusion.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    return {**out, **(rates.bundle_tensors() if rates is not None else {})}


class InitStore:
    """Pretrained initializations on disk (safetensors, written atomically), so later sittings reuse them."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, method: str, seed: int, names: list[str]) -> Path:
        return self.folder / f"{method}_seed{seed}_{'+'.join(names)}.safetensors"

    def get(self, method: str, seed: int, names: list[str]) -> Init | None:
        path = self.path(method, seed, names)
        return load_file(str(path)) if path.is_file() else None

    def put(self, method: str, seed: int, names: list[str], init: Init) -> None:
        path = self.path(method, seed, names)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in init.items()}, str(tmp))
        os.replace(tmp, path)


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


def adaptation_curve(init: Init, card: dict, task: HeldOut, cfg: MetaConfig, args, seed: int) -> tuple[dict, str]:
    """Scores after K adaptation steps, for every K in args.k, along one trajectory of `tim adapt`'s rule for
    an initialization with this card (overridden by --adapt-opt / --adapt-lr); returns (curve, rule)."""
    net = FusionNet(build_genotype(cfg))
    net.load_state_dict({k[len("fusion."):]: v for k, v in init.items() if k.startswith("fusion.")})
    extra = {k: v for k, v in init.items() if k.startswith(f"{RATES_PREFIX}.")}
    rule = resolve_rule(AdaptConfig(optimizer=args.adapt_opt, lr=args.adapt_lr), net, card, extra, "initialization")
    curve = {0: task.evaluate(net, cfg, seed)} if 0 in args.k else {}

    def on_step(k: int) -> None:
        if k in args.k:
            curve[k] = task.evaluate(net, cfg, seed)

    fine_tune(net, task.train, max(args.k), args.adapt_batch, cfg.crop, rule.lr, seed, on_step=on_step,
              optimizer=rule.optimizer, rates=rule.rates)
    return {str(k): v for k, v in sorted(curve.items())}, rule.describe()


def run_method(method: str, held: str, seed: int, cfg: MetaConfig, sets: dict[str, PairSet], task: HeldOut,
               args, store: InitStore, cell: dict) -> None:
    """One (held-out task, seed, initialization) cell: pretraining (or the stored result), adaptation curve."""
    torch.manual_seed(seed)
    init = {f"fusion.{k}": v for k, v in FusionNet(build_genotype(cfg)).state_dict().items()}
    others = [n for n in sets if n != held]
    irvis = [n for n in others if n in args.irvis]
    seeded = dataclasses.replace(cfg, seed=seed)
    plain = dataclasses.replace(seeded, inner_steps=0, inner_optimizer="sgd")  # k = 0: the inner rule plays no part
    recipes = {"joint": (others, plain), "irvis_only": (irvis, plain), "meta": (others, seeded)}
    card: dict = {}
    t = time.process_time()
    note = ""
    if method in recipes:
        names, mcfg = recipes[method]
        if not names:
            raise SystemExit(f"held-out {held}: no {method} pretraining tasks left (--irvis {' '.join(args.irvis)})")
        stored = store.get(method, seed, names)
        if stored is None:
            init = pretrain(init, [sets[n] for n in names], mcfg, args.passes)
            store.put(method, seed, names, init)
            note = f" (pretraining {1000 * (time.process_time() - t) / args.passes:.0f} ms CPU per pass)"
        else:
            init, note = stored, " (pretraining reused from an earlier cell)"
        cell["pretrain_tasks"][method] = names
        card = {"adaptation": adaptation_rule(mcfg)} if method == "meta" else {}
    cell["cpu_s"][f"pretrain_{method}"] = time.process_time() - t
    t = time.process_time()
    cell["curves"][method], cell["adapted_with"][method] = adaptation_curve(init, card, task, cfg, args, seed)
    cell["cpu_s"][f"adapt_{method}"] = time.process_time() - t
    print(f"  {held} seed {seed} {method:10s} " + "  ".join(
        f"K={k}: loss {v['loss']:.4f} MI {v['MI']:.3f}" for k, v in cell["curves"][method].items()) + note,
        flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "tim_core/configs/meta_experiment.yaml"))
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="MetaConfig overrides, e.g. batch=8 crop=96 outer_lr=1e-3 inner_steps=2")
    parser.add_argument("--inner-optimizer", choices=("sgd", "adam", "metasgd"),
                        help="the meta competitor's inner rule (default: the config's)")
    parser.add_argument("--second-order", action="store_true", help="differentiate through the inner steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--irvis", nargs="+", default=list(IR_VIS), help="task names pretraining (c) may use")
    parser.add_argument("--passes", type=int, default=160, help="forward+backward passes of every pretraining")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 10, 50, 200], help="adaptation steps scored")
    parser.add_argument("--adapt-opt", choices=("", "sgd", "adam"), default="",
                        help="adapt every initialization with this (default: tim adapt's rule for each)")
    parser.add_argument("--adapt-lr", type=float, default=0.0, help="0: tim adapt's lr for the rule")
    parser.add_argument("--adapt-batch", type=int, default=2)
    parser.add_argument("--val-crop", type=int, default=128)
    parser.add_argument("--val-crops", type=int, default=6, help="validation pairs in the loss")
    parser.add_argument("--eval-images", type=int, default=3, help="validation pairs scored by MI/VIF/Qabf")
    parser.add_argument("--out", default=str(ROOT / "bench/results/meta_experiment.json"))
    parser.add_argument("--resume", action="store_true", help="skip the finished cells of --out")
    parser.add_argument("--overwrite", action="store_true", help="start --out (and OUT_inits/) over")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run into bench/results/*.tmp")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.held_out, args.passes, args.k = [0], ["mri_ct"], 8, [0, 2]
        args.out, args.resume, args.overwrite = str(ROOT / "bench/results/meta_experiment_smoke.tmp"), False, True
    return args


def load_meta_config(args: argparse.Namespace) -> MetaConfig:
    """The config file with --set, --inner-optimizer and --second-order applied (checked like `tim meta`'s)."""
    bad = [item for item in args.set if "=" not in item]
    if bad:
        raise SystemExit(f"--set {bad[0]}: expected FIELD=VALUE (a MetaConfig field, e.g. batch=8)")
    overrides = parse_overrides(["--" + item for item in args.set])
    if args.inner_optimizer:
        overrides["inner_optimizer"] = args.inner_optimizer
    if args.second_order:
        overrides["first_order"] = "false"
    return load_config(MetaConfig, args.config, overrides)


def open_results(out: Path, settings: dict, args: argparse.Namespace) -> dict:
    """The partial results to continue (--resume, same settings), or a fresh start; refuses to clobber silently."""
    store = out.with_name(out.stem + "_inits")
    if out.exists() and not (args.resume or args.overwrite):
        raise SystemExit(f"{out} exists: --resume continues it, --overwrite starts over (or choose another --out)")
    if args.overwrite or not out.exists():
        shutil.rmtree(store, ignore_errors=True)
        return {"setup": settings, "cells": {}, "baselines": {}, "sittings": []}
    results = json.loads(out.read_text())
    saved = results.get("setup", {})
    differ = sorted(k for k in set(saved) | set(settings) if k != "train_pairs" and saved.get(k) != settings.get(k))
    if differ:
        raise SystemExit(f"{out}: written with other settings ({', '.join(differ)}); resume with the same "
                         "settings, or choose another --out")
    results.setdefault("sittings", [])
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_meta_config(args)
    torch.set_num_threads(cfg.threads or 1)
    specs = {task_name(s): s if Path(s).is_absolute() else str(ROOT / s) for s in cfg.tasks}
    t0 = time.process_time()
    sets = {n: load_pairs([s], "train", cfg.val_fraction) for n, s in specs.items()}
    load_cpu = time.process_time() - t0
    settings = {"config": dataclasses.asdict(cfg), "genotype": build_genotype(cfg).to_dict(),
                **{k: v for k, v in vars(args).items() if k not in PER_SITTING},
                "train_pairs": {n: len(s) for n, s in sets.items()}}
    out = Path(args.out)
    results = open_results(out, settings, args)
    store = InitStore(out.with_name(out.stem + "_inits"))
    sitting = {"seeds": args.seeds, "held_out": args.held_out, "load_cpu_s": load_cpu, "cells_run": 0}
    results["sittings"].append(sitting)

    def save() -> None:
        sitting["cpu_s"] = time.process_time() - t0
        results["total_cpu_s"] = sum(s.get("cpu_s", 0.0) for s in results["sittings"])
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(results, indent=1) + "\n")

    for held in args.held_out:
        if held not in specs:
            raise SystemExit(f"--held-out {held}: not a task of {args.config} ({', '.join(specs)})")
        task = HeldOut(specs[held], cfg, args.val_crop, args.val_crops, args.eval_images)
        results["baselines"][held] = {**task.baselines, "n_images": len(task.images)}
        for seed in args.seeds:
            cell = results["cells"].setdefault(f"{held}/seed{seed}", {})
            for part in ("curves", "pretrain_tasks", "cpu_s", "adapted_with"):
                cell.setdefault(part, {})
            for method in METHODS:
                if method in cell["curves"]:
                    continue  # finished in an earlier sitting
                run_method(method, held, seed, cfg, sets, task, args, store, cell)
                sitting["cells_run"] += 1
                save()
    save()
    print(f"wrote {out} ({sitting['cpu_s']:.0f} s CPU this sitting, {results['total_cpu_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
