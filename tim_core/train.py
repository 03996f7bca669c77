"""Plain fusion training (`tim train`): one path for CPU, CUDA (mixed precision) and torchrun DDP.

Batches are drawn from a generator seeded by (seed, step, rank), so a resumed run sees exactly the
batches the uninterrupted run would have seen; checkpoints hold model, optimizer, scheduler, step
and RNG state and are written atomically every `ckpt_every` steps.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .bundle import lineage_after, load_bundle, save_bundle
from .config import ConfigError, dump_config
from .data import PairSet, center_crops, load_pairs, sample_batch, source_name
from .ema import averaged_copy, ema_update
from .genotype import load_genotype
from .losses import LossWeights, fusion_loss
from .network import FusionNet
from .report import evaluate_on_validation
from .trainer import bundle_path, tensorboard_writer, training_run, warmup_cosine


@dataclass
class TrainConfig:
    genotype: str = "tim_light"  # built-in genotype name or JSON path (ignored when init is set)
    init: str = ""  # optional bundle to start from (fine-tuning, adaptation)
    data: list = field(default_factory=lambda: ["../shared/data/msrs", "../shared/data/roadscene"])
    val_fraction: float = 0.2  # share of pairs (by name hash) held back for validation
    out: str = "runs/train"  # checkpoints, TensorBoard logs, the exported bundle
    export: str = ""  # where to write the final bundle (default: OUT/bundle)
    steps: int = 3000
    batch: int = 8
    crop: int = 128  # random square crops; small crops keep CPU training feasible
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up, then cosine decay to zero
    w_intensity: float = 1.0
    w_gradient: float = 10.0
    w_ssim: float = 1.0
    grad_gain: float = 1.0  # texture target = gain * max(|grad IR|, |grad VIS|) (losses.LossWeights)
    w_mi: float = 0.0  # weight of the soft mutual-information term (losses.soft_mutual_information; 0: off)
    w_scd: float = 0.0  # weight of the correlation-of-differences term (losses.scd; 0: off)
    # per data set multipliers of the MI and SCD terms, e.g. {msrs: {scd: 0.0}}: SCD asked of RoadScene pairs only;
    # keys are data folder names of `data`, unnamed sets and terms keep 1
    source_scale: dict = field(default_factory=dict)
    ema: float = 0.0  # weight EMA decay (e.g. 0.999); validation and the exported bundle use the average; 0: off
    teacher: str = ""  # distillation: a bundle whose fused images (computed once, cached in OUT) the student follows
    w_teacher: float = 1.0  # weight of |F - teacher| added to the fusion loss
    ckpt_every: int = 100  # a kill loses at most this many steps
    val_every: int = 250
    val_crop: int = 256
    val_images: int = 16  # fixed centre crops for the validation loss curve
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # float16 autocast + grad scaling, CUDA only
    threads: int = 0  # torch CPU threads (0: torch's default)
    eval_metrics: bool = True  # fusion metrics on the full validation images at the end
    eval_limit: int = 0  # evaluate at most this many validation pairs (0: all)

    BOUNDS = {"val_every": (1, float("inf"), False)}  # narrows config.RANGES (0 would divide by zero)


def teacher_targets(cfg: TrainConfig, data, out: Path) -> list:
    """The teacher bundle's fused luma of every training pair, computed once and cached in OUT."""
    cache = out / "teacher_targets.npz"
    assert isinstance(data, PairSet)
    if cache.is_file():
        with np.load(cache) as z:
            if list(z["names"]) == list(data.names) and str(z["teacher"]) == str(cfg.teacher):
                return [z[f"t{i}"] for i in range(len(data))]
    teacher = load_bundle(cfg.teacher)[0].eval()
    targets = []
    with torch.no_grad():
        for a, b in tqdm(list(zip(data.a, data.b)), desc="teacher targets", unit="pair"):
            t = teacher(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]).clamp(0, 1)
            targets.append(t[0, 0].numpy().astype(np.float32))
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.array(data.names), teacher=np.array(str(cfg.teacher)),
             **{f"t{i}": t for i, t in enumerate(targets)})
    os.replace(tmp, cache)
    return targets


SCALED_TERMS = ("mi", "scd")


def check_source_scale(cfg: TrainConfig) -> None:
    """ConfigError naming the key unless source_scale maps data set names of cfg.data to {mi|scd: number >= 0}."""
    sources = [source_name(spec) for spec in cfg.data]
    for source, terms in cfg.source_scale.items():
        if source not in sources:
            raise ConfigError(f"source_scale: {source!r} is not a data set of this run; valid: {', '.join(sources)}")
        if not isinstance(terms, dict) or not terms:
            raise ConfigError(f"source_scale.{source}: expected a mapping of {' / '.join(SCALED_TERMS)} to a "
                              f"multiplier, got {terms!r}")
        for term, value in terms.items():
            if term not in SCALED_TERMS:
                raise ConfigError(f"source_scale.{source}: unknown term {term!r}; valid: {', '.join(SCALED_TERMS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ConfigError(f"source_scale.{source}.{term}: {value!r} is not a finite number >= 0")
            if getattr(cfg, f"w_{term}") == 0:
                raise ConfigError(f"source_scale.{source}.{term}: the {term} term is off (w_{term} 0), so it would "
                                  f"scale nothing; set w_{term} > 0 or drop the entry")


def pair_scales(cfg: TrainConfig, data: PairSet) -> dict[str, torch.Tensor]:
    """{term: (pairs,) multiplier} from cfg.source_scale (a pair's data set: the first part of its name)."""
    sources = [name.split("/", 1)[0] for name in data.names]
    terms = {t for v in cfg.source_scale.values() for t in v}
    return {t: torch.tensor([float(cfg.source_scale.get(s, {}).get(t, 1.0)) for s in sources]) for t in terms}


def build_model(cfg: TrainConfig) -> FusionNet:
    if cfg.init:
        return load_bundle(cfg.init)[0]
    return FusionNet(load_genotype(cfg.genotype))



def train(cfg: TrainConfig, resume: bool = False, command: str = "", overwrite: bool = False) -> Path:
    """Train, checkpoint, validate, and export a bundle; returns the bundle path."""
    bundle = bundle_path(cfg)
    check_source_scale(cfg)
    with training_run("train", cfg.out, cfg.steps, cfg.seed, cfg.threads, resume=resume, overwrite=overwrite,
                      export=bundle, distributed=True) as run:
        device = run.device(cfg.device)
        train_set = load_pairs(cfg.data, "train", cfg.val_fraction)
        val_set = load_pairs(cfg.data, "val", cfg.val_fraction)
        if cfg.teacher:
            train_set.target = teacher_targets(cfg, train_set, run.out)
        val_a, val_b = (t.to(device) for t in center_crops(val_set, cfg.val_crop, cfg.val_images))
        scales = pair_scales(cfg, train_set)

        net = build_model(cfg).to(device)
        model = torch.nn.parallel.DistributedDataParallel(net) if run.world > 1 else net
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = warmup_cosine(opt, cfg.steps, cfg.warmup_steps)
        use_amp = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        weights = LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim, cfg.grad_gain, cfg.w_mi, cfg.w_scd)
        ema = averaged_copy(net) if cfg.ema > 0 else None
        ckpt = run.checkpoint(model=net, optimizer=opt, scheduler=sched, scaler=scaler, ema=ema)
        start, _ = run.restore(ckpt, device, fallbacks={"ema": "model"})  # EMA switched on later: from the model

        writer = tensorboard_writer(run.out, run.rank)
        t_last, seen = time.perf_counter(), 0
        for step in run.loop(start, "train"):
            model.train()
            gen = run.generator(step)
            *planes, idx = sample_batch(train_set, cfg.batch, cfg.crop, gen, with_index=True)
            a, b, *target = (t.to(device, non_blocking=True) for t in planes)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                fused = model(a, b)
            loss, terms = fusion_loss(fused.float(), a, b, weights, {t: v[idx].to(device) for t, v in scales.items()})
            if target:
                l_teacher = torch.nn.functional.l1_loss(fused.float(), target[0])
                loss = loss + cfg.w_teacher * l_teacher
                terms["teacher"] = l_teacher.item()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema_update(ema, net, cfg.ema, step)
            seen += cfg.batch * run.world
            done = step + 1
            if run.rank == 0 and run.due(done, cfg.log_every):
                rate = seen / (time.perf_counter() - t_last)
                t_last, seen = time.perf_counter(), 0
                run.bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.1f}")
                writer.add_scalar("train/loss", loss.item(), done)
                for k, v in terms.items():
                    writer.add_scalar(f"train/{k}", v, done)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], done)
                writer.add_scalar("train/images_per_s", rate, done)
            if run.rank == 0 and run.due(done, cfg.val_every):
                validate(ema if ema is not None else net, val_a, val_b, weights, writer, done)
            if run.rank == 0 and run.due(done, cfg.ckpt_every):
                ckpt.save(done, asdict(cfg))
        run.barrier()
        if run.rank == 0:
            final = ema if ema is not None else net
            card = {"task": "fusion", "genotype": net.genotype.name, "data": list(cfg.data),
                    "split": f"name hash, validation fraction {cfg.val_fraction}", "steps": cfg.steps,
                    "command": command, "config": dump_config(cfg), "lineage": lineage_after(cfg.init, command)}
            save_bundle(bundle, final.cpu(), card)
            if cfg.eval_metrics:
                evaluate_on_validation(bundle, cfg.data, cfg.val_fraction, run.out / "val", cfg.eval_limit)
            writer.close()
    return bundle


def validate(net: FusionNet, a: torch.Tensor, b: torch.Tensor, weights: LossWeights, writer, step: int) -> float:
    """Validation loss on fixed centre crops, logged with an IR | VIS | fused image grid."""
    net.eval()
    with torch.no_grad():
        fused = net(a, b).clamp(0, 1)
        loss, _ = fusion_loss(fused, a, b, weights)
    writer.add_scalar("val/loss", loss.item(), step)
    grid = torch.cat([a[:4], b[:4], fused[:4]], dim=3)  # each row: IR | VIS | fused
    writer.add_images("val/ir_vis_fused", grid, step)
    return loss.item()
