"""Adaptation (`tim adapt`): fine-tune an initialization bundle on a new pair set for K steps.

The same routine serves the shipped medical bundles and the K-step curves of bench/meta_experiment.py:
Adam, plain SGD, or SGD with Meta-SGD's learned per-parameter rates, at a constant rate on random crops of
the pairs' training split (name hash), then BatchNorm statistics re-estimated on that split, because the
initialization's running statistics describe the tasks it was trained on, not the new one (the network
trains with batch statistics either way).

By default the rule is the one the initialization was meta-trained for (its card's `adaptation`, written by
`tim meta`): Adam at the card's lr, or the learned rates of a Meta-SGD initialization. Initializations
meta-trained with plain SGD, and older ones without the field, adapt with Adam at 1e-3: SGD at the inner
rate 0.05 diverged within 10 steps (docs/meta_report.md). --optimizer / --lr override either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .bundle import card_lineage, load_bundle, resolve_bundle, save_bundle
from .config import ConfigError, dump_config
from .data import PairSet, load_pairs, sample_batch
from .inner import ADAM_BETAS, ADAM_EPS, INNER_OPTIMIZERS, RATES_PREFIX, PerParameterSGD, rates_from_bundle
from .losses import LossWeights, fusion_loss
from .network import FusionNet, architecture
from .report import evaluate_on_validation
from .threads import torch_threads
from .trainer import batch_seed

OPTIMIZERS = ("sgd", "adam", "metasgd")  # metasgd: SGD with the initialization's learned per-parameter rates
DEFAULT_OPTIMIZER, DEFAULT_LR = "adam", 1e-3


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
    optimizer: str = ""  # "": the rule the init was meta-trained for (adam, metasgd), else adam; or sgd/adam/metasgd
    lr: float = 0.0  # 0: the init card's lr for that rule, else 1e-3; constant (K is small)
    val_fraction: float = 0.2  # name-hash split: adapt on the rest, report metrics on these
    bn_batches: int = 8
    w_intensity: float = 1.0
    w_gradient: float = 10.0
    w_ssim: float = 1.0
    grad_gain: float = 1.0  # texture target = gain * max(|grad A|, |grad B|) (losses.LossWeights)
    seed: int = 0
    threads: int = 0
    eval_metrics: bool = True
    eval_limit: int = 0  # validation pairs to score (0: all)

    BOUNDS = {"lr": (0.0, 10.0, False)}  # 0 is allowed: the rule's own rate
    CHOICES = {"optimizer": ("", *OPTIMIZERS)}


@dataclass
class AdaptationRule:
    """How to adapt: optimizer, constant lr (0 for metasgd), Meta-SGD's rates, and why this rule."""

    optimizer: str
    lr: float
    rates: dict[str, torch.Tensor] | None
    why: str

    def describe(self) -> str:
        if self.rates is not None:
            flat = torch.cat([r.flatten() for r in self.rates.values()])
            return (f"SGD with the learned per-parameter rates (mean {flat.mean().item():.3g}, range "
                    f"{flat.min().item():.3g} to {flat.max().item():.3g})")
        return f"{self.optimizer} at lr {self.lr:g}"

    def flags(self) -> str:
        """The command-line flags that reproduce this rule whatever the defaults."""
        if self.optimizer == "metasgd":
            return "--optimizer metasgd"
        return f"--optimizer {self.optimizer} --lr {self.lr:g}"


def trained_rule(card: dict, source: str) -> dict | None:
    """The card's `adaptation` field (what `tim meta` trained the initialization for), checked; None if absent."""
    rule = card.get("adaptation")
    if rule is None:
        return None
    if not isinstance(rule, dict) or rule.get("optimizer") not in INNER_OPTIMIZERS:
        raise ConfigError(f"{source}: card field 'adaptation' must be an object with 'optimizer' one of "
                          f"{', '.join(INNER_OPTIMIZERS)}; got {str(rule)[:80]} (re-export with `tim meta`)")
    lr = rule.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10):
        raise ConfigError(f"{source}: card field adaptation.lr = {lr!r} must be a number in (0, 10]")
    return rule


def resolve_rule(cfg: AdaptConfig, net: FusionNet, card: dict, extra: dict[str, torch.Tensor],
                 source: str) -> AdaptationRule:
    """The adaptation rule: --optimizer/--lr, else what the initialization was meta-trained for, else Adam 1e-3."""
    trained = trained_rule(card, source)
    trained_opt = trained["optimizer"] if trained else None
    followed = trained_opt if trained_opt in ("adam", "metasgd") else None
    optimizer = cfg.optimizer or followed or DEFAULT_OPTIMIZER
    if cfg.optimizer:
        why = "--optimizer"
    elif followed:
        why = f"the rule {source} was meta-trained for"
    elif trained_opt == "sgd":
        why = (f"the default: {source} was meta-trained with plain SGD, which diverges over many adaptation steps "
               "at its inner rate; --optimizer sgd follows it")
    else:
        why = f"the default: {source} records no adaptation rule"
    if optimizer == "metasgd":
        if cfg.lr:
            raise ConfigError("lr: metasgd adapts with the initialization's learned per-parameter rates; leave lr "
                              "at 0, or choose --optimizer adam or sgd with --lr")
        if trained_opt != "metasgd":
            raise ConfigError(f"optimizer: metasgd needs an initialization meta-trained with inner_optimizer "
                              f"metasgd; {source} was trained for {trained_opt or 'no recorded rule'} "
                              "(use --optimizer adam or sgd)")
        return AdaptationRule("metasgd", 0.0, rates_from_bundle(extra, net.named_parameters(), source), why)
    card_lr = trained.get("lr") if trained and trained_opt == optimizer else None
    if cfg.lr:
        lr = cfg.lr
        why = "--optimizer and --lr" if cfg.optimizer else f"--lr; the optimizer: {why}"
    else:
        lr = float(card_lr) if card_lr else DEFAULT_LR
    return AdaptationRule(optimizer, lr, None, why)


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


def adaptation_optimizer(net: FusionNet, optimizer: str, lr: float,
                         rates: dict[str, torch.Tensor] | None = None) -> torch.optim.Optimizer:
    """Adam (at inner.py's betas/eps, the ones functional Adam in `tim meta` uses), SGD, or per-parameter SGD."""
    if optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    if optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=lr)
    if optimizer == "metasgd":
        if rates is None:
            raise ValueError("optimizer metasgd needs the per-parameter rates of a Meta-SGD initialization")
        return PerParameterSGD([(p, rates[n]) for n, p in net.named_parameters()])
    raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def fine_tune(net: FusionNet, data: PairSet, steps: int, batch: int, crop: int, lr: float, seed: int,
              weights: LossWeights | None = None, on_step: Callable[[int], None] | None = None,
              progress: bool = False, optimizer: str = "adam",
              rates: dict[str, torch.Tensor] | None = None) -> FusionNet:
    """K Adam / SGD / per-parameter SGD steps of the fusion loss on random crops; on_step(k) after step k = 1..K."""
    opt = adaptation_optimizer(net, optimizer, lr, rates)
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


def lineage(init_card: dict, command: str, rule: AdaptationRule) -> list[str]:
    """Every command from scratch: the initialization's lineage (or command), then this one with the rule's
    flags appended, so that it reproduces what ran whatever the defaults (a later flag wins)."""
    return card_lineage(init_card) + [f"{command or '(command not recorded)'} {rule.flags()}"]


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
    rule = resolve_rule(cfg, net, init_card, extra, str(init))
    extra = {k: v for k, v in extra.items() if not k.startswith(f"{RATES_PREFIX}.")}  # the init's, not the model's
    torch.manual_seed(cfg.seed)
    weights = LossWeights(cfg.w_intensity, cfg.w_gradient, cfg.w_ssim, cfg.grad_gain)
    fine_tune(net, data, cfg.steps, cfg.batch, cfg.crop, rule.lr, cfg.seed, weights, progress=True,
              optimizer=rule.optimizer, rates=rule.rates)
    recalibrate_bn(net, [data], cfg.bn_batches, cfg.batch, cfg.crop, cfg.seed)
    work = Path(cfg.work) / name
    bundle = Path(cfg.out) if cfg.out else work / "bundle"
    card = {"task": "fusion", "genotype": net.genotype.name, "architecture": architecture(net), "data": [spec],
            "pairs_trained": len(data),
            "split": f"name hash, validation fraction {cfg.val_fraction}", "steps": cfg.steps,
            "method": f"adapted from {init_card.get('name', init.name)} ({init}): {cfg.steps} steps of "
                      f"{rule.describe()} ({rule.why}), batch {cfg.batch}, {cfg.crop}x{cfg.crop} crops, then "
                      f"BatchNorm statistics re-estimated on {cfg.bn_batches} batches",
            "adapted_with": {"optimizer": rule.optimizer, "lr": rule.lr or None, "rule": rule.describe(),
                             "why": rule.why},
            "init_card": {k: init_card[k] for k in ("name", "method", "data", "command", "adaptation")
                          if k in init_card},
            "command": command, "lineage": lineage(init_card, command, rule), "config": dump_config(cfg)}
    save_bundle(bundle, net, card, extra)
    if cfg.eval_metrics and cfg.val_fraction > 0:
        evaluate_on_validation(bundle, [spec], cfg.val_fraction, work / "val", cfg.eval_limit)
    return bundle
