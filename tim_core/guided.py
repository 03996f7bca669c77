"""Task-guided fusion (`tim guide`): a task network N_T on the fused image guides the fusion network N_F.

Couplings (TIM leaves this open; ../shared/docs/TIM_FACTS.md):
- frozen:      N_F fixed, N_T trained on its output (unguided fusion; with input ir|vis: one camera only).
- alternating: each step, N_T takes a step on ell_T(N_T(I_F)) with I_F detached, then N_F takes a step on
               ell_F(I_F) + lam * ell_T(N_T(I_F)) through the updated N_T.
- bilevel:     N_T is the lower level (theta: its best response on batch 1), N_F the upper (alpha): its
               objective ell_F + lam * ell_T on batch 2, where the task term reaches N_F through the
               hypergradient of tim_core.hypergrad (ias | neumann | darts1). The fusion loss keeps I_F a fusion.
Batches come from generators seeded by (seed, step, rank): a resumed run repeats the uninterrupted one.
Augmentation (scale, mosaic, per-camera jitter: tim_core.tasks.augment) is off by default; with it on, a frozen
fusion network fuses each batch instead of a cached fused image when the cameras are jittered.
Gradients are taken with autograd.grad and averaged over ranks, so torchrun DDP needs no model wrapper.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import torch
import torch.distributed as dist

from .bundle import lineage_after, load_bundle, save_bundle
from .config import dump_config
from .ema import averaged_copy, ema_update
from .files import write_text_atomic
from .genotype import load_genotype
from .guide_config import GuideConfig, check_config
from .hypergrad import hypergradient
from .losses import LossWeights, fusion_loss
from .network import FusionNet
from .report import evaluate_on_validation
from .tasks import build_task_net
from .tasks.augment import sample_augmented_batch
from .tasks.data import load_task_data, sample_task_batch
from .tasks.detection_report import PR_JSON, PR_SVG, detection_eval_card, write_pr_curves
from .tasks.heads import head_card, head_tensors, load_heads
from .tasks.training import evaluate_task, task_loss
from .trainer import bundle_path, tensorboard_writer, training_run, warmup_cosine


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


def guide(cfg: GuideConfig, resume: bool = False, command: str = "", overwrite: bool = False) -> dict:
    """Train N_T (and N_F unless frozen), checkpoint, validate, export; returns {'bundle', 'task', ...}."""
    check_config(cfg)
    with training_run("guide", cfg.out, cfg.steps, cfg.seed, cfg.threads, resume=resume, distributed=True,
                      overwrite=overwrite) as run:
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
        aug = cfg.augment()
        if fusion is not None and not trains_fusion:
            fusion.eval()
        if not trains_fusion and aug.jitter == 0:  # the task input never changes: compute it once
            train_set.fused = _cached_input(cfg, fusion, train_set, device)

        def sample(gen: torch.Generator) -> dict:
            if aug.active:
                return sample_augmented_batch(train_set, cfg.batch, cfg.crop, aug, gen)
            return sample_task_batch(train_set, cfg.batch, cfg.crop, gen)

        opt_t = torch.optim.AdamW(task_net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched_t = warmup_cosine(opt_t, cfg.steps, cfg.warmup_steps)
        opt_f = (
            torch.optim.AdamW(fusion.parameters(), lr=cfg.fusion_lr, weight_decay=cfg.weight_decay)
            if trains_fusion
            else None
        )
        sched_f = warmup_cosine(opt_f, cfg.steps, cfg.warmup_steps) if opt_f else None
        ema = averaged_copy(task_net) if cfg.ema > 0 else None
        ckpt = run.checkpoint(task=task_net, opt_task=opt_t, sched_task=sched_t, fusion=fusion if opt_f else None,
                              opt_fusion=opt_f, sched_fusion=sched_f, ema_task=ema)
        start, _ = run.restore(ckpt, device, fallbacks={"ema_task": "task"})  # EMA switched on later: from N_T

        writer = tensorboard_writer(run.out, run.rank)
        t_params = list(task_net.parameters())
        f_params = list(fusion.parameters()) if trains_fusion else []
        t_last = time.perf_counter()
        for step in run.loop(start, f"guide {cfg.task}/{cfg.coupling}"):
            gen = run.generator(step)
            batch = sample(gen)
            if fusion is not None and batch["fused"] is None:  # N_F trains, or a frozen N_F on jittered cameras
                ir, vis = batch["ir"].to(device), batch["vis"].to(device)
                with torch.no_grad():
                    fused = fusion(ir, vis).clamp(0, 1)
            else:
                fused = _task_input(cfg, batch, device)
            loss_t, terms = task_loss(cfg.task, task_net, fused, batch, cfg.dice, weights)
            _apply(t_params, torch.autograd.grad(loss_t, t_params), run.world)
            opt_t.step()
            sched_t.step()
            if ema is not None:
                ema_update(ema, task_net, cfg.ema, step)
            if trains_fusion:
                f_terms = _fusion_step(
                    cfg,
                    fusion,
                    task_net,
                    batch,
                    sample(gen) if cfg.coupling == "bilevel" else None,
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
                metrics = _validate(cfg, fusion, ema if ema is not None else task_net, val_set, device)
                _log_validation(writer, metrics, done, run.out / "val_task" / f"step_{done:07d}")
            if run.rank == 0 and run.due(done, cfg.ckpt_every):
                ckpt.save(done, asdict(cfg))
        result: dict = {}
        if run.rank == 0:
            final = ema if ema is not None else task_net
            result = _finish(cfg, fusion, final, val_set, classes, device, command, run.out, writer)
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


def _log_validation(writer, metrics: dict, step: int, folder) -> None:
    """Scalars to TensorBoard (per-class AP as val/ap50_CLASS); detection also writes its PR curves to folder."""
    for k, v in metrics.items():
        if isinstance(v, float):
            writer.add_scalar(f"val/{k}", v, step)
    if "pr_curve" in metrics:
        for name, v in metrics["per_class_ap50"].items():
            writer.add_scalar(f"val/ap50_{name}", v, step)
        write_pr_curves(metrics, folder, f"step {step}")


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
    _log_validation(writer, metrics, cfg.steps, out / "val_task" / "final")
    writer.close()
    curves = metrics.pop("pr_curve", None)
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
            "lineage": lineage_after(cfg.init, command),
            "config": dump_config(cfg),
            "task_validation": task_val,
        }
        if curves is not None:
            card["detection_eval"] = detection_eval_card({**metrics, "pr_curve": curves}, PR_JSON)
        save_bundle(bundle, fusion.cpu(), card, head_tensors(cfg.task, task_net.cpu()))
        if curves is not None:  # beside the card: the curves travel with the bundle
            for name in (PR_JSON, PR_SVG):
                write_text_atomic(bundle / name, (out / "val_task" / "final" / name).read_text())
        result["bundle"] = str(bundle)
        if cfg.eval_fusion and not cfg.synthetic:
            result["fusion"] = evaluate_on_validation(bundle, cfg.data, cfg.val_fraction, out / "val", cfg.eval_limit)
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result
