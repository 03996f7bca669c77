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

import torch
import torch.distributed as dist
from tqdm import tqdm

from .bundle import load_bundle, pick_device, save_bundle
from .checkpoint import batch_seed, dist_info, lr_lambda, prepare_run_folder, restore, save_atomic
from .checkpoint import load_checkpoint as load_checkpoint
from .config import dump_config
from .data import center_crops, load_pairs, sample_batch
from .genotype import load_genotype
from .losses import LossWeights, fusion_loss
from .network import FusionNet


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


def tensorboard_writer(out: Path, rank: int):
    """TensorBoard writer under OUT/tb on rank 0 (None on other ranks)."""
    if rank != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def teacher_targets(cfg: TrainConfig, data, out: Path) -> list:
    """The teacher bundle's fused luma of every training pair, computed once and cached in OUT."""
    import numpy as np

    from .data import PairSet

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


def lineage(cfg: TrainConfig, command: str) -> list[str]:
    """Every command from scratch to this bundle: the --init bundle's lineage (or command), then this one."""
    earlier: list[str] = []
    if cfg.init:
        card = load_bundle(cfg.init)[1]
        earlier = list(card.get("lineage") or ([card["command"]] if card.get("command") else []))
    return earlier + [command]


def build_model(cfg: TrainConfig) -> FusionNet:
    if cfg.init:
        return load_bundle(cfg.init)[0]
    return FusionNet(load_genotype(cfg.genotype))


def train(cfg: TrainConfig, resume: bool = False, command: str = "", overwrite: bool = False) -> Path:
    """Train, checkpoint, validate, and export a bundle; returns the bundle path."""
    rank, world = dist_info()
    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    ckpt_path = prepare_run_folder(out, resume, overwrite, Path(cfg.export) if cfg.export else out / "bundle")

    train_set = load_pairs(cfg.data, "train", cfg.val_fraction)
    val_set = load_pairs(cfg.data, "val", cfg.val_fraction)
    if cfg.teacher:
        train_set.target = teacher_targets(cfg, train_set, out)
    val_a, val_b = (t.to(device) for t in center_crops(val_set, cfg.val_crop, cfg.val_images))

    net = build_model(cfg).to(device)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.steps, cfg.warmup_steps))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weights = LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim, cfg.grad_gain)
    ema = None
    if cfg.ema > 0:
        import copy

        ema = copy.deepcopy(net).eval()
        for p in ema.parameters():
            p.requires_grad_(False)
    start = 0
    if resume:
        state = load_checkpoint(ckpt_path, device, ("model", "optimizer", "scheduler", "scaler", "torch_rng", "step"))
        restore(net, state, "model", ckpt_path)
        if ema is not None:
            restore(ema, state if "ema" in state else {"ema": state["model"]}, "ema", ckpt_path)
        restore(opt, state, "optimizer", ckpt_path)
        restore(sched, state, "scheduler", ckpt_path)
        restore(scaler, state, "scaler", ckpt_path)
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]

    writer = tensorboard_writer(out, rank)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", disable=rank != 0,
               dynamic_ncols=True)
    t_last, seen = time.perf_counter(), 0
    for step in bar:
        model.train()
        gen = torch.Generator().manual_seed(batch_seed(cfg.seed, step, rank))
        a, b, *target = (t.to(device, non_blocking=True) for t in sample_batch(train_set, cfg.batch, cfg.crop, gen))
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            fused = model(a, b)
        loss, terms = fusion_loss(fused.float(), a, b, weights)
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
            with torch.no_grad():
                for p_e, p in zip(ema.parameters(), net.parameters()):
                    p_e.lerp_(p, 1.0 - cfg.ema)
                for b_e, b_n in zip(ema.buffers(), net.buffers()):
                    b_e.copy_(b_n)
        seen += cfg.batch * world
        done = step + 1
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            rate = seen / (time.perf_counter() - t_last)
            t_last, seen = time.perf_counter(), 0
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.1f}")
            writer.add_scalar("train/loss", loss.item(), done)
            for k, v in terms.items():
                writer.add_scalar(f"train/{k}", v, done)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], done)
            writer.add_scalar("train/images_per_s", rate, done)
        if rank == 0 and (done % cfg.val_every == 0 or done == cfg.steps):
            validate(ema if ema is not None else net, val_a, val_b, weights, writer, done)
        if rank == 0 and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            save_atomic({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), "step": done,
                         "config": asdict(cfg), **({"ema": ema.state_dict()} if ema is not None else {})},
                        ckpt_path)
    bar.close()
    if world > 1:
        dist.barrier()
    bundle = Path(cfg.export) if cfg.export else out / "bundle"
    if rank == 0:
        final = ema if ema is not None else net
        card = {"task": "fusion", "genotype": net.genotype.name, "data": list(cfg.data),
                "split": f"name hash, validation fraction {cfg.val_fraction}", "steps": cfg.steps,
                "command": command, "config": dump_config(cfg), "lineage": lineage(cfg, command)}
        save_bundle(bundle, final.cpu(), card)
        if cfg.eval_metrics:
            from .report import evaluate_on_validation
            evaluate_on_validation(bundle, cfg.data, cfg.val_fraction, out / "val", cfg.eval_limit)
        writer.close()
    if world > 1:
        dist.destroy_process_group()
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
