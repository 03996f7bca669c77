"""Adaptation (`tim adapt`): fine-tune an initialization bundle on a new pair set for K steps.

The same routine serves the shipped medical bundles and the K-step curves of bench/meta_experiment.py:
Adam (or plain SGD, the update rule of PMI's inner loop) at a constant rate on random crops of the
pairs' training split (name hash), then BatchNorm statistics re-estimated on that split, because the
initialization's running statistics describe the tasks it was trained on, not the new one (the network
trains with batch statistics either way).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .bundle import load_bundle, resolve_bundle, save_bundle
from .config import ConfigError, dump_config
from .data import PairSet, load_pairs, sample_batch
from .losses import LossWeights, fusion_loss
from .network import FusionNet, architecture
from .report import evaluate_on_validation
from .threads import torch_threads
from .trainer import batch_seed

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


@dataclass
class AdaptConfig:
    init: str = ""  # initialization bundle (path or shipped name)
    a: str = ""  # folder of modality A (IR, MRI, under-exposed, near focus)
    b: str = ""  # folder of modality B (visible, PET/SPECT/CT, over-exposed, far focus)
    steps: int = 200  # K
    out: str = ""  # bundle to write (default WORK/<data set>/bundle)
    work: str = "runs/adapt"  # validation images and metrics
    batch: int = 4
    crop: int = 64
    optimizer: str = "adam"  # or sgd (PMI's inner rule; at its rate 0.05 it diverged within 10 steps)
    lr: float = 1e-3  # constant: K is small, a schedule would only shorten it further
    val_fraction: float = 0.2  # name-hash split: adapt on the rest, report metrics on these
    bn_batches: int = 8
    w_intensity: float = 1.0
    w_gradient: float = 10.0
    w_ssim: float = 1.0
    seed: int = 0
    threads: int = 0
    eval_metrics: bool = True
    eval_limit: int = 0  # validation pairs to score (0: all)


def pair_spec(a_dir: str | Path, b_dir: str | Path) -> str:
    """Two modality folders as a data spec 'ROOT:A_REL,B_REL' for data.load_pairs."""
    a, b = Path(a_dir), Path(b_dir)
    for p in (a, b):
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: not a folder; --a and --b name two folders paired by file stem")
    if a.is_absolute() != b.is_absolute():
        a, b = a.resolve(), b.resolve()
    root = Path(os.path.commonpath([os.path.normpath(a), os.path.normpath(b)]))
    rel_a, rel_b = os.path.relpath(a, root), os.path.relpath(b, root)
    if any(c in s for s in (rel_a, rel_b) for c in ",:"):
        raise ValueError(f"{a}, {b}: folder names must not contain ',' or ':'")
    return f"{root}:{rel_a},{rel_b}"


def recalibrate_bn(net: torch.nn.Module, sets: list[PairSet], batches: int, batch: int, crop: int, seed: int) -> None:
    """Re-estimate BatchNorm running statistics (exact averages, no gradient) on crops of `sets`, round robin."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    gen = torch.Generator().manual_seed(seed * 7 + 1)
    net.train()
    with torch.no_grad():
        for i in range(batches):
            net(*sample_batch(sets[i % len(sets)], batch, crop, gen))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    net.eval()


def fine_tune(net: FusionNet, data: PairSet, steps: int, batch: int, crop: int, lr: float, seed: int,
              weights: LossWeights | None = None, on_step: Callable[[int], None] | None = None,
              progress: bool = False, optimizer: str = "adam") -> FusionNet:
    """K Adam (or SGD) steps of the fusion loss on random crops; on_step(k) after each step (k = 1..K)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    opt = OPTIMIZERS[optimizer](net.parameters(), lr=lr)
    weights = weights or LossWeights()
    for step in tqdm(range(steps), desc="adapt", disable=not progress, dynamic_ncols=True):
        net.train()
        gen = torch.Generator().manual_seed(batch_seed(seed, step) + 17)  # + 17: not the batches `tim train` draws
        a, b = sample_batch(data, batch, crop, gen)
        loss, _ = fusion_loss(net(a, b), a, b, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1)
    return net


def run_adapt(cfg: AdaptConfig, command: str = "") -> Path:
    """Adapt `cfg.init` to the pairs in (a, b) for `steps` steps, export and validate; returns the bundle."""
    if not cfg.init or not cfg.a or not cfg.b:
        raise ConfigError("init, a and b are required (--init BUNDLE --a DIR --b DIR)")
    with torch_threads(cfg.threads):
        return _adapt(cfg, command)


def _adapt(cfg: AdaptConfig, command: str) -> Path:
    spec = pair_spec(cfg.a, cfg.b)
    name = Path(spec.split(":")[0]).resolve().name
    data = load_pairs([spec], "train", cfg.val_fraction)
    init = resolve_bundle(cfg.init)
    net, init_card, extra = load_bundle(init)
    torch.manual_seed(cfg.seed)
    weights = LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim)
    fine_tune(net, data, cfg.steps, cfg.batch, cfg.crop, cfg.lr, cfg.seed, weights, progress=True,
              optimizer=cfg.optimizer)
    recalibrate_bn(net, [data], cfg.bn_batches, cfg.batch, cfg.crop, cfg.seed)
    work = Path(cfg.work) / name
    bundle = Path(cfg.out) if cfg.out else work / "bundle"
    card = {"task": "fusion", "genotype": net.genotype.name, "architecture": architecture(net), "data": [spec],
            "pairs_trained": len(data),
            "split": f"name hash, validation fraction {cfg.val_fraction}", "steps": cfg.steps,
            "method": f"adapted from {init_card.get('name', init.name)} ({init}): {cfg.steps} {cfg.optimizer} "
                      f"steps at lr {cfg.lr}, batch {cfg.batch}, {cfg.crop}x{cfg.crop} crops, then BatchNorm "
                      f"statistics re-estimated on {cfg.bn_batches} batches",
            "init_card": {k: init_card[k] for k in ("name", "method", "data", "command") if k in init_card},
            "command": command, "config": dump_config(cfg)}
    save_bundle(bundle, net, card, extra)
    if cfg.eval_metrics and cfg.val_fraction > 0:
        evaluate_on_validation(bundle, [spec], cfg.val_fraction, work / "val", cfg.eval_limit)
    return bundle
