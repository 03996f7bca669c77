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
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist

from .bundle import load_bundle, save_bundle
from .config import dump_config
from .files import write_text_atomic
from .genotype import load_genotype
from .hypergrad import hypergradient
from .losses import LossWeights, fusion_loss
from .network import FusionNet
from .report import evaluate_on_validation
from .tasks import TASKS, build_task_net
from .tasks.augment import Augment, sample_augmented_batch
from .tasks.data import load_task_data, sample_task_batch
from .tasks.detection_report import PR_JSON, PR_SVG, detection_eval_card, write_pr_curves
from .tasks.heads import head_card, head_tensors, load_heads
from .tasks.training import evaluate_task, task_loss
from .train import averaged_copy
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
    scale_min: float = 1.0  # random zoom of each training image, boxes follow (0.5-1.5: multi-scale; 1: off)
    scale_max: float = 1.0
    mosaic: float = 0.0  # probability that a training sample is a 2x2 mosaic of four training images
    jitter: float = 0.0  # per-camera brightness/contrast/gamma strength, IR and VIS drawn apart (0: off; 0.3)
    min_box: float = 2.0  # augmented boxes under this many pixels on a side after clipping are dropped
    val_fraction: float = 0.2  # name-hash validation split, never trained on
    out: str = "runs/guide"
    export: str = ""  # final bundle (default OUT/bundle); input ir|vis runs export none
    steps: int = 800
    batch: int = 8
    lr: float = 2e-3  # task network, AdamW
    fusion_lr: float = 2e-4  # fusion network: small, it starts from a trained fusion
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    ema: float = 0.0  # task network weight EMA decay (e.g. 0.999): validation and export use the average; 0: off
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

    BOUNDS = {"crop": (0, 8192, False), "scale_min": (0.0, 8.0, True), "scale_max": (0.0, 8.0, True),
              "mosaic": (0.0, 1.0, False), "jitter": (0.0, 2.0, False), "min_box": (0.0, 1000.0, False)}

    def augment(self) -> Augment:
        """The training augmentation these fields describe."""
        return Augment((self.scale_min, self.scale_max), self.mosaic, self.jitter, self.min_box)


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
    if cfg.scale_min > cfg.scale_max:
        raise ValueError(f"scale_min {cfg.scale_min} is above scale_max {cfg.scale_max}; give scale_min <= scale_max "
                         "(both 1.0: no zoom)")


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
    _check(cfg)
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
                _ema_update(ema, task_net, cfg.ema)
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


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for p_e, p in zip(ema.parameters(), net.parameters()):
            p_e.lerp_(p, 1.0 - decay)
        for b_e, b_n in zip(ema.buffers(), net.buffers()):
            b_e.copy_(b_n)  # BN statistics: the live network's


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
