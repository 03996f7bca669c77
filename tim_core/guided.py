"""Task-guided fusion (`tim guide`): a task network N_T on the fused image guides the fusion network N_F.

Couplings (TIM leaves this open; ../shared/docs/TIM_FACTS.md):
- frozen:      N_F fixed, N_T trained on its output (unguided fusion; with input ir|vis: one camera only).
- alternating: each step, N_T takes a step on ell_T(N_T(I_F)) with I_F detached, then N_F takes a step on
               ell_F(I_F) + lam * ell_T(N_T(I_F)) through the updated N_T.
- bilevel:     N_T is the lower level (theta: its best response on batch 1), N_F the upper (alpha): its
               objective ell_F + lam * ell_T on batch 2, where the task term reaches N_F through the
               hypergradient of tim_core.hypergrad (ias | neumann | darts1). The fusion loss keeps I_F a fusion.
Batches come from generators seeded by (seed, step, rank): a resumed run repeats the uninterrupted one.
Gradients are taken with autograd.grad and averaged over ranks, so torchrun DDP needs no model wrapper.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist

from .bundle import load_bundle, save_bundle
from .config import dump_config
from .genotype import load_genotype
from .hypergrad import hypergradient
from .losses import LossWeights, fusion_loss
from .network import FusionNet
from .report import evaluate_on_validation
from .tasks import TASKS, build_task_net
from .tasks.data import load_task_data, sample_task_batch
from .tasks.heads import head_card, head_tensors, load_heads
from .tasks.training import evaluate_task, task_loss
from .trainer import bundle_path, tensorboard_writer, training_run, warmup_cosine

COUPLINGS = ("frozen", "alternating", "bilevel")
INPUTS = ("fused", "ir", "vis")


@dataclass
class GuideConfig:
    task: str = "detection"  # detection | segmentation | enhancement (also --task on the command line)
    coupling: str = "alternating"  # frozen | alternating | bilevel (see the module docstring)
    input: str = "fused"  # what N_T sees: fused, or ir / vis for single-camera baselines (coupling frozen)
    hypergrad: str = "ias"  # bilevel only: ias | neumann | darts1
    lam: float = 0.1  # weight of the task loss in the fusion network's objective
    init: str = ""  # bundle: fusion weights, and the task head too when it carries one for this task
    genotype: str = "tim_light"  # fusion genotype when init is empty
    data: list = field(default_factory=lambda: ["../shared/data/msrs"])
    labels: str = "labels/fusion"  # detection labels under each data root: YOLO .txt or VOC .xml per image
    classes: list = field(default_factory=lambda: ["person", "bicycle", "car"])  # detection classes
    seg_classes: list = field(default_factory=list)  # segmentation class names (empty: the 9 MSRS classes)
    synthetic: int = 0  # > 0: use this many generated scenes (tim_core.synthetic) instead of data
    height: int = 240  # task input size: images (and boxes) are resized to it; MSRS 640x480 -> half
    width: int = 320
    crop: int = 128  # random training crops of the task-size images (0: whole images)
    val_fraction: float = 0.2  # name-hash validation split, never trained on
    out: str = "runs/guide"
    export: str = ""  # final bundle (default OUT/bundle); input ir|vis runs export none
    steps: int = 800
    batch: int = 8
    lr: float = 2e-3  # task network, AdamW
    fusion_lr: float = 2e-4  # fusion network: small, it starts from a trained fusion
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    head_width: int = 24  # channels of the light task encoders (enhancement: 48 is TIM's)
    dice: float = 0.0  # segmentation: weight of the Dice term next to cross-entropy
    w_intensity: float = 1.0
    w_gradient: float = 10.0
    w_ssim: float = 1.0
    neumann_terms: int = 5
    neumann_lr: float = 0.01
    ckpt_every: int = 50
    log_every: int = 10
    val_every: int = 0  # task validation every N steps (0: at the end only)
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    eval_fusion: bool = False  # fusion metrics of the final N_F on the validation split, into the card
    eval_limit: int = 0

    BOUNDS = {"crop": (0, 8192, False)}  # 0: whole images


def _check(cfg: GuideConfig) -> None:
    for name, value, valid in (
        ("task", cfg.task, TASKS),
        ("coupling", cfg.coupling, COUPLINGS),
        ("input", cfg.input, INPUTS),
        ("hypergrad", cfg.hypergrad, ("ias", "neumann", "darts1")),
    ):
        if value not in valid:
            raise ValueError(f"{name} {value!r} is unknown; valid: {', '.join(valid)}")
    if cfg.input != "fused" and cfg.coupling != "frozen":
        raise ValueError(f"input {cfg.input!r} has no fusion network to guide; use coupling frozen")


def build_nets(cfg: GuideConfig, num_classes: int) -> tuple[FusionNet | None, torch.nn.Module]:
    """N_F (None for single-camera input) and N_T, from the init bundle where it has them."""
    card, extra, fusion = {}, {}, None
    if cfg.init:
        fusion, card, extra = load_bundle(cfg.init)
    elif cfg.input == "fused":
        fusion = FusionNet(load_genotype(cfg.genotype))
    if cfg.task in card.get("heads", []):
        task_net = load_heads(
            {**card, "heads": [cfg.task]}, {k: v for k, v in extra.items() if k.startswith(cfg.task + ".")}, cfg.init
        )[cfg.task]
    else:
        task_net = build_task_net(cfg.task, num_classes, cfg.head_width)
    return (fusion if cfg.input == "fused" else None), task_net.train()


def _apply(params: list[torch.Tensor], grads, world: int) -> None:
    for p, g in zip(params, grads):
        g = torch.zeros_like(p) if g is None else g.detach().clone()
        if world > 1:
            dist.all_reduce(g)
            g /= world
        p.grad = g


def _task_input(cfg: GuideConfig, batch: dict, device: torch.device) -> torch.Tensor:
    if batch["fused"] is not None:
        return batch["fused"].to(device)
    return batch["ir" if cfg.input == "ir" else "vis"].to(device)


def guide(cfg: GuideConfig, resume: bool = False, command: str = "") -> dict:
    """Train N_T (and N_F unless frozen), checkpoint, validate, export; returns {'bundle', 'task', ...}."""
    _check(cfg)
    with training_run("guide", cfg.out, cfg.steps, cfg.seed, cfg.threads, resume=resume, distributed=True,
                      replace_unasked=True) as run:
        device = run.device(cfg.device)
        size = (cfg.height, cfg.width)
        load = {
            "specs": cfg.data,
            "val_fraction": cfg.val_fraction,
            "size": size,
            "labels": cfg.labels,
            "classes": cfg.classes if cfg.task == "detection" else cfg.seg_classes,
            "synthetic": cfg.synthetic,
        }
        train_set = load_task_data(cfg.task, split="train", **load)
        val_set = load_task_data(cfg.task, split="val", **load)
        classes = train_set.classes
        fusion, task_net = build_nets(cfg, len(classes))
        task_net = task_net.to(device)
        trains_fusion = fusion is not None and cfg.coupling != "frozen"
        weights = LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim)
        if fusion is not None:
            fusion = fusion.to(device)
        if not trains_fusion:  # the task input never changes: compute it once
            train_set.fused = _cached_input(cfg, fusion, train_set, device)

        opt_t = torch.optim.AdamW(task_net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched_t = warmup_cosine(opt_t, cfg.steps, cfg.warmup_steps)
        opt_f = (
            torch.optim.AdamW(fusion.parameters(), lr=cfg.fusion_lr, weight_decay=cfg.weight_decay)
            if trains_fusion
            else None
        )
        sched_f = warmup_cosine(opt_f, cfg.steps, cfg.warmup_steps) if opt_f else None
        ckpt = run.checkpoint(task=task_net, opt_task=opt_t, sched_task=sched_t, fusion=fusion if opt_f else None,
                              opt_fusion=opt_f, sched_fusion=sched_f)
        start, _ = run.restore(ckpt, device)

        writer = tensorboard_writer(run.out, run.rank)
        t_params = list(task_net.parameters())
        f_params = list(fusion.parameters()) if trains_fusion else []
        t_last = time.perf_counter()
        for step in run.loop(start, f"guide {cfg.task}/{cfg.coupling}"):
            gen = run.generator(step)
            batch = sample_task_batch(train_set, cfg.batch, cfg.crop, gen)
            if trains_fusion:
                ir, vis = batch["ir"].to(device), batch["vis"].to(device)
                with torch.no_grad():
                    fused = fusion(ir, vis).clamp(0, 1)
            else:
                fused = _task_input(cfg, batch, device)
            loss_t, terms = task_loss(cfg.task, task_net, fused, batch, cfg.dice, weights)
            _apply(t_params, torch.autograd.grad(loss_t, t_params), run.world)
            opt_t.step()
            sched_t.step()
            if trains_fusion:
                f_terms = _fusion_step(
                    cfg,
                    fusion,
                    task_net,
                    batch,
                    sample_task_batch(train_set, cfg.batch, cfg.crop, gen) if cfg.coupling == "bilevel" else None,
                    f_params,
                    t_params,
                    weights,
                    device,
                    run.world,
                )
                opt_f.step()
                sched_f.step()
                terms.update(f_terms)
            done = step + 1
            if run.rank == 0 and run.due(done, cfg.log_every):
                rate = cfg.log_every * cfg.batch * run.world / max(time.perf_counter() - t_last, 1e-9)
                t_last = time.perf_counter()
                run.bar.set_postfix(task=f"{loss_t.item():.3f}", img_s=f"{rate:.1f}")
                writer.add_scalar("train/task_loss", loss_t.item(), done)
                for k, v in terms.items():
                    writer.add_scalar(f"train/{k}", v, done)
                writer.add_scalar("train/lr_task", sched_t.get_last_lr()[0], done)
            if run.rank == 0 and cfg.val_every and done % cfg.val_every == 0 and done != cfg.steps:
                for k, v in _validate(cfg, fusion, task_net, val_set, device).items():
                    if isinstance(v, float):
                        writer.add_scalar(f"val/{k}", v, done)
            if run.rank == 0 and run.due(done, cfg.ckpt_every):
                ckpt.save(done, asdict(cfg))
        result: dict = {}
        if run.rank == 0:
            result = _finish(cfg, fusion, task_net, val_set, classes, device, command, run.out, writer)
        run.barrier()
    return result


def _cached_input(cfg: GuideConfig, fusion: FusionNet | None, data, device: torch.device):
    if fusion is None:
        return data.ir if cfg.input == "ir" else data.vis
    fusion.eval()
    chunks = []
    with torch.no_grad():
        for i in range(0, len(data), 8):
            a = torch.from_numpy(data.ir[i : i + 8])[:, None].to(device)
            b = torch.from_numpy(data.vis[i : i + 8])[:, None].to(device)
            chunks.append(fusion(a, b).clamp(0, 1)[:, 0].cpu())
    return torch.cat(chunks).numpy()


def _fusion_step(cfg, fusion, task_net, batch, upper_batch, f_params, t_params, weights, device, world) -> dict:
    """Set N_F's gradients for this step (alternating: direct; bilevel: hypergradient); returns log terms."""

    def objective(b: dict, with_fusion: bool) -> torch.Tensor:
        ir, vis = b["ir"].to(device), b["vis"].to(device)
        f = fusion(ir, vis)
        l_t, _ = task_loss(cfg.task, task_net, f.clamp(0, 1), b, cfg.dice, weights)
        return fusion_loss(f, ir, vis, weights)[0] + cfg.lam * l_t if with_fusion else l_t

    if upper_batch is None:
        total = objective(batch, True)
        _apply(f_params, torch.autograd.grad(total, f_params), world)
        return {"fusion_objective": total.item()}
    grads = hypergradient(
        cfg.hypergrad,
        lambda: objective(upper_batch, True),
        lambda: objective(batch, False),
        t_params,
        f_params,
        neumann_terms=cfg.neumann_terms,
        neumann_lr=cfg.neumann_lr,
    )
    _apply(f_params, grads, world)
    return {"hypergrad_norm": float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)))}


def _validate(cfg, fusion, task_net, val_set, device) -> dict:
    def input_fn(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        if fusion is None:
            return ir if cfg.input == "ir" else vis
        return fusion(ir, vis).clamp(0, 1)

    was = fusion.training if fusion is not None else False
    if fusion is not None:
        fusion.eval()
    metrics = evaluate_task(
        cfg.task, task_net, val_set, input_fn, device, weights=LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim)
    )
    if fusion is not None:
        fusion.train(was)
    return metrics


def _finish(cfg, fusion, task_net, val_set, classes, device, command, out, writer) -> dict:
    metrics = _validate(cfg, fusion, task_net, val_set, device)
    for k, v in metrics.items():
        if isinstance(v, float):
            writer.add_scalar(f"val/{k}", v, cfg.steps)
    writer.close()
    task_val = {
        "split": f"name hash, validation fraction {cfg.val_fraction}",
        "n": len(val_set),
        "input": cfg.input,
        "size": [cfg.height, cfg.width],
        **metrics,
    }
    result = {"task": task_val, "bundle": None}
    if fusion is not None:
        bundle = bundle_path(cfg)
        card = {
            "task": f"fusion+{cfg.task}",
            "coupling": cfg.coupling,
            "genotype": fusion.genotype.name,
            **head_card(cfg.task, classes, cfg.head_width, (cfg.height, cfg.width)),
            "data": ["synthetic"] if cfg.synthetic else list(cfg.data),
            "steps": cfg.steps,
            "init": cfg.init,
            "command": command,
            "config": dump_config(cfg),
            "task_validation": task_val,
        }
        save_bundle(bundle, fusion.cpu(), card, head_tensors(cfg.task, task_net.cpu()))
        result["bundle"] = str(bundle)
        if cfg.eval_fusion and not cfg.synthetic:
            result["fusion"] = evaluate_on_validation(bundle, cfg.data, cfg.val_fraction, out / "val", cfg.eval_limit)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
