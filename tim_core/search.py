"""Implicit architecture search (`tim search`): bilevel optimisation of alpha over a supernet, then derive().

Lower level: theta <- AdamW step on the fusion loss of a batch from the search's lower split. Upper level:
alpha <- Adam (betas 0.5, 0.999, as TIM) step along the hypergradient (hypergrad.py) of the fusion loss on the
upper split plus cost_weight * E[cost] / cost(stem + head). Both splits come from the training side of the
name-hash split: the evaluation (validation) pairs are never searched on. derive() keeps the argmax per position.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import ConfigError, dump_config
from .cost import CostModel, LatencyTable
from .data import PairSet, is_validation, load_pairs, sample_batch
from .genotype import CELL_TYPES, Cell, Genotype
from .hypergrad import METHODS, hypergradient
from .losses import LossWeights, fusion_loss
from .plots import heatmap, line_plot
from .supernet import DEFAULT_CANDIDATES, SearchSpace, SuperNet
from .trainer import training_run


@dataclass
class SearchConfig:
    data: list = field(default_factory=lambda: ["../shared/data/msrs", "../shared/data/roadscene"])
    val_fraction: float = 0.2  # the evaluation split (name hash) that the search never sees
    upper_fraction: float = 0.5  # share of the remaining training pairs given to the upper level (alpha)
    out: str = "runs/search"
    export: str = ""  # genotype JSON path (default OUT/genotype.json)
    name: str = "searched"  # name of the derived genotype
    width: int = 8  # not searched: the outer sweep picks it (docs/search_report.md)
    cells: int = 2
    positions: int = 2  # ops per cell
    candidates: list = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    cell_types: list = field(default_factory=lambda: list(CELL_TYPES))  # one entry fixes the type
    scale: int = 1  # space-to-depth factor of the searched networks (genotype.py; not searched)
    output: str = "direct"  # direct | blend: the head of the searched networks (genotype.py; not searched)
    hypergrad: str = "ias"  # ias | neumann | darts1
    neumann_terms: int = 3
    neumann_lr: float = 0.01  # eta of the Neumann series; must stay below 2 / lambda_max(H)
    steps: int = 300
    warmup_steps: int = 50  # theta only: alpha's gradient through untrained weights favours parameter-free ops
    batch: int = 4
    crop: int = 48  # a multiple of 4 (the multi-scale cell halves twice)
    lr: float = 2e-3  # theta, AdamW, constant
    weight_decay: float = 1e-4
    alpha_lr: float = 0.02  # large for short searches: alpha must move within a few hundred steps
    alpha_weight_decay: float = 1e-3
    cost_weight: float = 0.05  # lambda: loss per stem+head worth of expected cost
    latency_table: str = "runs/latency_table.json"  # from `tim search --profile`; MACs when absent
    cost_size: list = field(default_factory=lambda: [480, 640])  # H, W the cost is measured at
    profile_widths: list = field(default_factory=lambda: [4, 6, 8])
    profile_threads: int = 2
    profile_repeats: int = 5
    w_intensity: float = 1.0
    w_gradient: float = 10.0
    w_ssim: float = 1.0
    ckpt_every: int = 25
    log_every: int = 5
    seed: int = 0
    threads: int = 0  # torch CPU threads for the search (0: torch's default)


def space_of(cfg: SearchConfig) -> SearchSpace:
    """The search space a config describes."""
    return SearchSpace(cfg.width, cfg.cells, cfg.positions, tuple(cfg.candidates), tuple(cfg.cell_types), cfg.scale,
                       cfg.output)


def split_for_search(data: PairSet, upper_fraction: float) -> tuple[PairSet, PairSet]:
    """Training pairs -> (lower split for theta, upper split for alpha) by a second, salted name hash."""
    sides: tuple[PairSet, PairSet] = (PairSet([], [], []), PairSet([], [], []))
    for name, a, b in zip(data.names, data.a, data.b):
        side = sides[is_validation(f"{name}#search", upper_fraction)]
        side.names.append(name)
        side.a.append(a)
        side.b.append(b)
    if not len(sides[0]) or not len(sides[1]):
        raise ValueError(f"upper_fraction {upper_fraction} leaves an empty split of {len(data)} training pairs")
    return sides


def derive(alpha_ops: torch.Tensor, alpha_type: torch.Tensor, space: SearchSpace, name: str = "searched") -> Genotype:
    """The discrete genotype: argmax op per position and argmax type per cell."""
    cells = []
    for ops_logits, type_logits in zip(alpha_ops, alpha_type):
        ops = tuple(space.candidates[int(i)] for i in ops_logits.argmax(dim=-1))
        cells.append(Cell(space.cell_types[int(type_logits.argmax())], ops))
    return Genotype(name, space.width, tuple(cells), space.scale, space.output)


def cost_model(cfg: SearchConfig, space: SearchSpace | None = None) -> CostModel:
    """Latency table if the config's file covers this space at cost_size, else MACs."""
    table = LatencyTable.load(cfg.latency_table) if cfg.latency_table and Path(cfg.latency_table).is_file() else None
    return CostModel(space or space_of(cfg), tuple(cfg.cost_size), table)


def _snapshot(net: SuperNet) -> dict:
    p_ops, p_type = net.probabilities()
    return {"p_ops": p_ops.detach().tolist(), "p_type": p_type.detach().tolist()}


def _write_logs(out: Path, history: list[dict], space: SearchSpace) -> None:
    """log.jsonl (losses, expected cost, alpha probabilities per logged step) and the PNG plots."""
    with open(out / "log.jsonl", "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
    if not history:
        return
    steps = [h["step"] for h in history]
    curves = {"lower (train) fusion loss": [h["lower"] for h in history],
              "upper (held-out) fusion loss": [h["upper"] for h in history if "upper" in h],
              "cost penalty": [h["penalty"] for h in history if "penalty" in h]}
    upper_steps = [h["step"] for h in history if "upper" in h]
    line_plot({k: (steps if k.startswith("lower") else upper_steps, v) for k, v in curves.items()},
              out / "loss_curves.png", "search losses", ylabel="loss")
    rows = [f"cell{c}.op{p}" for c in range(space.cells) for p in range(space.positions)]
    last = torch.tensor(history[-1]["p_ops"]).reshape(len(rows), -1).numpy()
    heatmap(last, rows, space.candidates, out / "alpha_ops.png", "softmax(alpha) per position, final")
    types = torch.tensor(history[-1]["p_type"]).numpy()
    heatmap(types, [f"cell{c}" for c in range(space.cells)], space.cell_types, out / "alpha_types.png", "cell type")
    picks = history[:: max(1, len(history) // 12)]
    over_time = torch.cat([torch.tensor(h["p_ops"]).reshape(len(rows), -1) for h in picks]).numpy()
    labels = [f"step {h['step']} {r}" for h in picks for r in rows]
    heatmap(over_time, labels, space.candidates, out / "alpha_over_time.png", "softmax(alpha) over time", cell=16)


def search(cfg: SearchConfig, resume: bool = False, command: str = "",
           data: tuple[PairSet, PairSet] | None = None, overwrite: bool = False) -> dict:
    """Run the bilevel search, checkpointing; write the genotype JSON, logs, plots; returns the summary."""
    if cfg.hypergrad not in METHODS:
        raise ConfigError(f"hypergrad {cfg.hypergrad!r} is unknown; valid: {', '.join(METHODS)}")
    if cfg.crop % (4 * cfg.scale):
        raise ConfigError(f"crop {cfg.crop} must be a multiple of {4 * cfg.scale} (the multi-scale cell down-samples "
                          f"twice{f', after the {cfg.scale}x{cfg.scale} space-to-depth' if cfg.scale > 1 else ''})")
    with training_run("search", cfg.out, cfg.steps, cfg.seed, cfg.threads, resume=resume,
                      overwrite=overwrite) as run:
        space = space_of(cfg)
        lower_set, upper_set = data or split_for_search(load_pairs(cfg.data, "train", cfg.val_fraction),
                                                        cfg.upper_fraction)
        costs = cost_model(cfg, space)
        fixed = costs.fixed()

        net = SuperNet(space)
        opt_w = torch.optim.AdamW(net.weights(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt_a = torch.optim.Adam(net.arch_parameters(), lr=cfg.alpha_lr, betas=(0.5, 0.999),
                                 weight_decay=cfg.alpha_weight_decay)
        weights = LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim)
        ckpt = run.checkpoint(model=net, opt_w=opt_w, opt_a=opt_a)
        start, extra = run.restore(ckpt, torch.device("cpu"))
        history, elapsed = extra.get("history", []), extra.get("seconds", 0.0)

        def penalty() -> torch.Tensor:
            return cfg.cost_weight * costs.expected(*net.probabilities()) / fixed

        t0 = time.perf_counter() - elapsed
        for step in run.loop(start, f"search {cfg.hypergrad}"):
            net.train()
            gen = run.generator(step)
            a_t, b_t = sample_batch(lower_set, cfg.batch, cfg.crop, gen)
            a_v, b_v = sample_batch(upper_set, cfg.batch, cfg.crop, gen)
            loss_low, _ = fusion_loss(net(a_t, b_t), a_t, b_t, weights)
            opt_w.zero_grad(set_to_none=True)
            loss_low.backward()
            opt_w.step()
            record = {"step": step + 1, "lower": loss_low.item()}
            if step >= cfg.warmup_steps:
                upper_terms: dict[str, float] = {}

                def upper(a=a_v, b=b_v, terms=upper_terms) -> torch.Tensor:
                    loss, _ = fusion_loss(net(a, b), a, b, weights)
                    terms["upper"] = loss.item()
                    return loss + penalty()

                def lower(a=a_t, b=b_t) -> torch.Tensor:
                    return fusion_loss(net(a, b), a, b, weights)[0]

                grads = hypergradient(cfg.hypergrad, upper, lower, net.weights(), net.arch_parameters(),
                                      neumann_terms=cfg.neumann_terms, neumann_lr=cfg.neumann_lr)
                record.update(upper_terms)
                opt_a.zero_grad(set_to_none=True)
                for p, g in zip(net.arch_parameters(), grads):
                    p.grad = g
                opt_a.step()
                opt_w.zero_grad(set_to_none=True)  # hypergradient() leaves no grads, but never let them leak into theta
                record["penalty"] = penalty().item()
            done = step + 1
            if run.due(done, cfg.log_every):
                history.append({**record, **_snapshot(net)})
                run.bar.set_postfix(loss=f"{record['lower']:.4f}", cost=f"{record.get('penalty', float('nan')):.3f}")
            if run.due(done, cfg.ckpt_every):
                ckpt.save(done, asdict(cfg), history=history, seconds=time.perf_counter() - t0)
                _write_logs(run.out, history, space)
        genotype = derive(net.alpha_ops.detach(), net.alpha_type.detach(), space, cfg.name)
        path = Path(cfg.export) if cfg.export else run.out / "genotype.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(genotype.to_json())
        summary = {"genotype": genotype.to_dict(), "path": str(path), "hypergrad": cfg.hypergrad, "steps": cfg.steps,
                   "seconds": round(time.perf_counter() - t0, 2),
                   "predicted_cost": round(costs.genotype_cost(genotype), 4), "cost_unit": costs.unit,
                   "command": command, "config": dump_config(cfg)}
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _write_logs(run.out, history, space)
    return summary
