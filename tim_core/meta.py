"""Pretext meta-initialization (PMI, `tim meta`): MAML over several fusion tasks with `functional_call`.

../shared/docs/TIM_FACTS.md, part 3: on pretext task i the inner loop takes k steps θ_i ← θ_i − α ∇ℓ_F(θ_i; support_i)
from θ_i = ω (k = 1 in the paper; `inner_optimizer` swaps the SGD step for Adam or Meta-SGD, tim_core/inner.py,
so that ω is trained for the adaptation `tim adapt` runs); the outer loop minimises Σ_i w_i ℓ_F(θ_i(ω); query_i)
over ω with Adam, and the result ω* initializes θ_F for a new kind of fusion. A task is a paired data set with the same
unsupervised fusion loss (colour sources fuse in luma). First order drops the Hessian terms (the outer
gradient is ∇ℓ_F at θ_i); second order differentiates through the inner steps. With k = 0 the same loop
is joint multi-task training, the control of the experiment in bench/meta_experiment.py.

Tasks are sampled balanced: slot s of the run takes position s mod n of a permutation of the n tasks
seeded by (seed, s div n), so every task is drawn once per round and a resumed run draws exactly what
the uninterrupted one would have; the draws are logged to OUT/tasks.jsonl, TensorBoard and the card.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call

from .adapt import recalibrate_bn
from .bundle import save_bundle, update_card
from .config import ConfigError, dump_config
from .data import PairSet, load_pairs, sample_batch, source_name
from .genotype import Genotype, load_genotype
from .inner import (
    ADAM_BETAS,
    ADAM_EPS,
    DEFAULT_INNER_LR,
    INNER_OPTIMIZERS,
    RATES_PREFIX,
    AdamState,
    LearnedRates,
    inner_step,
)
from .losses import LossWeights, fusion_loss
from .network import FusionNet, architecture
from .report import evaluate_on_validation
from .trainer import batch_seed, bundle_path, tensorboard_writer, training_run

ALL_TASKS = ["../shared/data/msrs", "../shared/data/roadscene", "../shared/data/medical/mri_ct",
             "../shared/data/medical/mri_pet", "../shared/data/medical/mri_spect",
             "../shared/data/multi_exposure", "../shared/data/multi_focus"]


@dataclass
class MetaConfig:
    genotype: str = "tim_light"  # built-in name or JSON path
    width: int = 8  # overrides the genotype's width (0 keeps it): narrow enough to meta-train on a CPU
    tasks: list = field(default_factory=lambda: list(ALL_TASKS))  # one pretext task per data set
    task_weights: list = field(default_factory=list)  # outer loss weight per task (empty: all 1)
    val_fraction: float = 0.2  # name-hash validation split, never trained on
    out: str = "runs/meta"  # checkpoint, task log, TensorBoard
    export: str = ""  # the initialization bundle (default OUT/bundle)
    steps: int = 400  # outer steps
    meta_batch: int = 2  # tasks per outer step
    inner_steps: int = 1  # k; 1 as in TIM, 0 turns the loop into joint multi-task training
    inner_optimizer: str = "sgd"  # sgd (MAML, TIM), adam (what `tim adapt` runs) or metasgd (learned rates)
    inner_lr: float = 0.0  # 0: the rule's default: sgd alpha 0.05, adam 1e-3 (`tim adapt`'s), metasgd start rate 0.05
    first_order: bool = True  # second order costs ~2-3x per step on CPU
    outer_lr: float = 2e-3  # Adam on omega
    batch: int = 4  # support and query batch size, each
    crop: int = 64
    w_intensity: float = 1.0
    w_gradient: float = 10.0
    w_ssim: float = 1.0
    bn_batches: int = 8  # BatchNorm statistics re-estimated on this many batches before export
    ckpt_every: int = 50
    log_every: int = 10
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    eval_metrics: bool = True  # validation metrics per task in the card
    eval_limit: int = 8  # validation pairs per task for those metrics (0: all)

    BOUNDS = {"inner_lr": (0.0, 10.0, False)}  # 0 is allowed: the inner rule's default
    CHOICES = {"inner_optimizer": INNER_OPTIMIZERS}


def inner_lr_of(cfg: MetaConfig) -> float:
    """The inner step size: cfg.inner_lr, or the inner optimizer's default when it is 0."""
    return cfg.inner_lr or DEFAULT_INNER_LR[cfg.inner_optimizer]


def adaptation_rule(cfg: MetaConfig) -> dict:
    """What the initialization is trained for, as the card's `adaptation` field that `tim adapt` follows."""
    rule = {"optimizer": cfg.inner_optimizer, "inner_steps": cfg.inner_steps,
            "order": "first" if cfg.first_order else "second"}
    if cfg.inner_optimizer == "metasgd":
        return {**rule, "rates": f"{RATES_PREFIX}.<parameter>", "initial_lr": inner_lr_of(cfg)}
    if cfg.inner_optimizer == "adam":
        return {**rule, "lr": inner_lr_of(cfg), "betas": list(ADAM_BETAS), "eps": ADAM_EPS}
    return {**rule, "lr": inner_lr_of(cfg)}


def task_name(spec: str) -> str:
    """The task's name: its data set folder ('../shared/data/medical/mri_ct' -> 'mri_ct')."""
    return source_name(spec)


def build_genotype(cfg: MetaConfig) -> Genotype:
    """The configured genotype at the configured width (named e.g. tim_light_w8)."""
    g = load_genotype(cfg.genotype)
    if cfg.width and cfg.width != g.width:
        g = dataclasses.replace(g, name=f"{g.name}_w{cfg.width}", width=cfg.width)
    return g


def task_schedule(n_tasks: int, meta_batch: int, step: int, seed: int) -> list[int]:
    """Task indices of outer step `step`: balanced (each task once per round), fixed by (seed, step)."""
    out = []
    for slot in range(step * meta_batch, (step + 1) * meta_batch):
        rnd, pos = divmod(slot, n_tasks)
        perm = torch.randperm(n_tasks, generator=torch.Generator().manual_seed(seed * 1_000_003 + rnd))
        out.append(int(perm[pos]))
    return out


def inner_adapt(model: torch.nn.Module, params: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor,
                weights: LossWeights, lr: float, steps: int, create_graph: bool, optimizer: str = "sgd",
                rates: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """k functional inner steps (sgd, adam or metasgd) on a support batch; `params` is never modified.

    First order (create_graph False) treats the support gradients as constants: θ keeps no history to ω,
    but Meta-SGD's θ = ω − Σ_j lr ⊙ g_j stays a function of the rates, which is how they learn.
    """
    state = AdamState()
    for _ in range(steps):
        loss, _ = fusion_loss(functional_call(model, params, (a, b)), a, b, weights)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
        params, state = inner_step(params, {n: g for n, g in zip(params, grads) if g is not None}, optimizer, lr,
                                   rates, state)
        if not create_graph and optimizer != "metasgd":  # first order: plain leaves, no history to omega
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
    return params


Episode = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]  # support a, b, query a, b, weight


def meta_gradient(model: torch.nn.Module, episodes: list[Episode], weights: LossWeights, inner_lr: float,
                  inner_steps: int, first_order: bool, optimizer: str = "sgd",
                  rates: dict[str, torch.Tensor] | None = None) -> list[float]:
    """Add the outer gradient of mean_i w_i ℓ_F(θ_i(ω); query_i) to ω.grad (and Meta-SGD's rates' .grad);
    returns the query losses."""
    omega = dict(model.named_parameters())
    learned = list(rates.values()) if rates is not None else []
    losses = []
    for sa, sb, qa, qb, w in episodes:
        start = {n: p.detach().requires_grad_() for n, p in omega.items()} if first_order else omega
        theta = inner_adapt(model, start, sa, sb, weights, inner_lr, inner_steps, create_graph=not first_order,
                            optimizer=optimizer, rates=rates)
        q_loss, _ = fusion_loss(functional_call(model, theta, (qa, qb)), qa, qb, weights)
        scale = w / len(episodes)
        if first_order:
            grads = torch.autograd.grad(q_loss, list(theta.values()) + learned, allow_unused=True)
            for p, g in zip(list(omega.values()) + learned, grads):
                if g is not None:
                    p.grad = scale * g if p.grad is None else p.grad + scale * g
        else:
            (scale * q_loss).backward()
        losses.append(q_loss.item())
    return losses


def outer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, tasks: list[PairSet], task_weights: list[float],
               cfg: MetaConfig, step: int, rates: LearnedRates | None = None) -> tuple[list[int], list[float]]:
    """One outer update of ω (and Meta-SGD's rates, which `opt` must hold too): balanced task draw,
    support/query batches seeded by (seed, step), Adam step."""
    model.train()
    idx = task_schedule(len(tasks), cfg.meta_batch, step, cfg.seed)
    gen = torch.Generator().manual_seed(batch_seed(cfg.seed, step))
    episodes = []
    for i in idx:
        support = sample_batch(tasks[i], cfg.batch, cfg.crop, gen) if cfg.inner_steps else (None, None)
        episodes.append((*support, *sample_batch(tasks[i], cfg.batch, cfg.crop, gen), task_weights[i]))
    opt.zero_grad(set_to_none=True)
    weights = LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim)
    if cfg.inner_optimizer == "metasgd" and rates is None:
        raise ValueError("inner_optimizer metasgd: outer_step needs the LearnedRates (see meta_optimizer)")
    losses = meta_gradient(model, episodes, weights, inner_lr_of(cfg), cfg.inner_steps, cfg.first_order,
                           cfg.inner_optimizer, rates.rates if rates is not None else None)
    opt.step()
    return idx, losses


def meta_optimizer(net: FusionNet, cfg: MetaConfig) -> tuple[torch.optim.Optimizer, LearnedRates | None]:
    """The outer Adam over ω, and over Meta-SGD's rates (started at the inner lr) when the rule is metasgd."""
    rates = LearnedRates(net.named_parameters(), inner_lr_of(cfg)) if cfg.inner_optimizer == "metasgd" else None
    learned = rates.parameters() if rates is not None else []
    return torch.optim.Adam([*net.parameters(), *learned], lr=cfg.outer_lr), rates


def passes_per_step(cfg: MetaConfig) -> int:
    """Forward+backward passes of one outer step (the unit of 'equal compute' in the experiment)."""
    return cfg.meta_batch * (cfg.inner_steps + 1)


def _trim_log(path: Path, upto: int) -> None:
    if path.is_file():
        kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= upto]
        path.write_text("".join(ln + "\n" for ln in kept))


def run_meta(cfg: MetaConfig, resume: bool = False, command: str = "", overwrite: bool = False) -> Path:
    """Meta-train an initialization with checkpoints and resume; export it as a bundle; returns its path."""
    names = [task_name(s) for s in cfg.tasks]
    task_weights = [float(w) for w in cfg.task_weights] or [1.0] * len(cfg.tasks)
    if len(task_weights) != len(cfg.tasks):
        raise ConfigError(f"task_weights has {len(task_weights)} entries for {len(cfg.tasks)} tasks; give one per task")
    with training_run("meta", cfg.out, cfg.steps, cfg.seed, cfg.threads, resume=resume,
                      overwrite=overwrite) as run:
        tasks = [load_pairs([s], "train", cfg.val_fraction) for s in cfg.tasks]
        log_path = run.out / "tasks.jsonl"
        net = FusionNet(build_genotype(cfg))
        opt, rates = meta_optimizer(net, cfg)
        ckpt = run.checkpoint(model=net, optimizer=opt, inner_lr=rates)
        start, extra = run.restore(ckpt, torch.device("cpu"), rng=False)  # draws are seeded by step, not by torch's RNG
        counts = extra.get("task_counts", [0] * len(tasks))
        if resume:
            _trim_log(log_path, start)
        elif log_path.exists():
            log_path.unlink()
        writer = tensorboard_writer(run.out, 0)
        with log_path.open("a") as log:
            for step in run.loop(start, "meta"):
                idx, losses = outer_step(net, opt, tasks, task_weights, cfg, step, rates)
                done = step + 1
                for i, loss in zip(idx, losses):
                    counts[i] += 1
                    writer.add_scalar(f"query_loss/{names[i]}", loss, done)
                log.write(json.dumps({"step": done, "tasks": [names[i] for i in idx], "query_loss": losses}) + "\n")
                if run.due(done, cfg.log_every):
                    mean = sum(losses) / len(losses)
                    run.bar.set_postfix(query_loss=f"{mean:.4f}", tasks="+".join(names[i] for i in idx))
                    writer.add_scalar("meta/query_loss", mean, done)
                    writer.add_scalars("meta/task_counts", dict(zip(names, counts)), done)
                if run.due(done, cfg.ckpt_every):
                    log.flush()
                    ckpt.save(done, asdict(cfg), task_counts=counts)
        writer.close()
        recalibrate_bn(net, tasks, cfg.bn_batches, cfg.batch, cfg.crop, cfg.seed)
        bundle = bundle_path(cfg)
        card = {"task": "fusion initialization (PMI)", "genotype": net.genotype.name,
                "architecture": architecture(net), "data": list(cfg.tasks),
                "split": f"name hash, validation fraction {cfg.val_fraction}", "steps": cfg.steps,
                "method": f"{'first' if cfg.first_order else 'second'}-order MAML, k={cfg.inner_steps} inner "
                          f"step(s) of {inner_rule_text(cfg)}, Adam outer lr {cfg.outer_lr}, "
                          f"{cfg.meta_batch} tasks/step",
                "adaptation": adaptation_rule(cfg), "task_counts": dict(zip(names, counts)), "command": command,
                "lineage": [command], "config": dump_config(cfg)}
        save_bundle(bundle, net, card, rates.bundle_tensors() if rates is not None else None)
        if cfg.eval_metrics:
            record_task_validation(bundle, cfg.tasks, cfg.val_fraction, run.out / "val", cfg.eval_limit)
    return bundle


def inner_rule_text(cfg: MetaConfig) -> str:
    """The inner rule in words, for cards and logs."""
    if cfg.inner_optimizer == "metasgd":
        return f"Meta-SGD (learned per-parameter rates, started at {inner_lr_of(cfg)})"
    if cfg.inner_optimizer == "adam":
        return f"Adam (lr {inner_lr_of(cfg)}, betas {ADAM_BETAS}, eps {ADAM_EPS})"
    return f"SGD at alpha={inner_lr_of(cfg)}"


def _mean(values: list) -> float | None:
    """Mean of the values that exist (a metric undefined on one task, e.g. NaN recorded as null, is skipped)."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def record_task_validation(bundle: Path, specs: list[str], val_fraction: float, out: Path, limit: int) -> dict:
    """Validation metrics per task (and their mean over tasks) next to the mean/max baselines, in the card."""
    per_task = {task_name(s): evaluate_on_validation(bundle, [s], val_fraction, out / task_name(s), limit)
                for s in specs}
    keys = ("model", "baseline_mean", "baseline_max")
    macro = {k: {m: _mean([v[k][m] for v in per_task.values()]) for m in next(iter(per_task.values()))[k]}
             for k in keys}
    validation = {"convention": per_task[task_name(specs[0])]["convention"],
                  "n": sum(v["n"] for v in per_task.values()), "averaged_over": "tasks", **macro,
                  "per_task": {t: {k: v[k] for k in ("n", *keys)} for t, v in per_task.items()}}
    update_card(bundle, validation=validation)
    return validation
