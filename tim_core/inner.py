"""Inner-loop update rules of PMI (`tim meta`) and their counterparts at adaptation time (`tim adapt`).

Three rules, each a functional step θ' = step(θ, ∇ℓ_F(θ)) that returns new tensors and is differentiable
in θ (second-order MAML backpropagates through it):

- `sgd`: θ' = θ − α ∇ℓ (MAML, Finn et al. 2017; TIM's pretext meta-initialization).
- `adam`: Adam (Kingma and Ba 2015) with bias-corrected moments carried through the k inner steps, at the
  betas and eps of torch.optim.Adam, which is what `tim adapt` runs: the initialization is trained for the
  adaptation users actually do.
- `metasgd`: Meta-SGD (Li et al. 2017): θ' = θ − lr ⊙ ∇ℓ with a learned rate tensor of each parameter's
  shape, meta-learned with ω by the outer optimizer; `tim adapt` then runs plain SGD with those rates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

INNER_OPTIMIZERS = ("sgd", "adam", "metasgd")
DEFAULT_INNER_LR = {"sgd": 0.05, "adam": 1e-3, "metasgd": 0.05}  # adam: `tim adapt`'s lr; metasgd: initial rates
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, the ones `tim adapt` uses
ADAM_EPS = 1e-8
RATES_PREFIX = "inner_lr"  # bundle keys of Meta-SGD's rates: inner_lr.<parameter name>

Params = dict[str, torch.Tensor]


def _sqrt0(x: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 (not inf) at 0: a parameter whose gradient is exactly 0 would make the
    second-order meta-gradient NaN through Adam's sqrt(v); the value is torch.sqrt's."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


@dataclass
class AdamState:
    """Adam's moments and step count through the inner steps of one episode (plain tensors, or a graph)."""

    t: int = 0
    m: Params = field(default_factory=dict)
    v: Params = field(default_factory=dict)


def adam_step(params: Params, grads: Params, state: AdamState, lr: float,
              betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> tuple[Params, AdamState]:
    """One functional Adam step (torch.optim.Adam's update, weight decay 0); parameters without a gradient stay."""
    b1, b2 = betas
    t = state.t + 1
    c1, c2 = 1 - b1**t, 1 - b2**t
    m, v, out = dict(state.m), dict(state.v), dict(params)
    for n, g in grads.items():
        m[n] = b1 * m[n] + (1 - b1) * g if n in m else (1 - b1) * g
        v[n] = b2 * v[n] + (1 - b2) * g * g if n in v else (1 - b2) * g * g
        # torch.optim.Adam's arrangement: p - (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps)
        out[n] = params[n] - (lr / c1) * m[n] / (_sqrt0(v[n]) / c2**0.5 + eps)
    return out, AdamState(t, m, v)


def inner_step(params: Params, grads: Params, optimizer: str, lr: float, rates: Params | None,
               state: AdamState) -> tuple[Params, AdamState]:
    """θ' from θ and ∇ℓ(θ) under `optimizer`; `rates` are Meta-SGD's (required for metasgd)."""
    if optimizer == "adam":
        return adam_step(params, grads, state, lr)
    if optimizer == "metasgd":
        if rates is None:
            raise ValueError("inner optimizer metasgd needs its per-parameter rates")
        return {n: p - rates[n] * grads[n] if n in grads else p for n, p in params.items()}, state
    if optimizer == "sgd":
        return {n: p - lr * grads[n] if n in grads else p for n, p in params.items()}, state
    raise ValueError(f"unknown inner optimizer {optimizer!r}; valid: {', '.join(INNER_OPTIMIZERS)}")


class LearnedRates:
    """Meta-SGD's learned inner learning rates: a leaf tensor of each parameter's shape, started at `init`.

    Has state_dict / load_state_dict so a Checkpoint saves and restores it with the network and optimizer.
    """

    def __init__(self, named_params: Iterable[tuple[str, torch.Tensor]], init: float):
        self.rates: Params = {n: torch.full_like(p.detach(), init).requires_grad_() for n, p in named_params}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.rates.values())

    def state_dict(self) -> Params:
        return {n: r.detach().clone() for n, r in self.rates.items()}

    def load_state_dict(self, state: Params) -> None:
        if set(state) != set(self.rates):
            raise KeyError(f"rates for {sorted(set(state) ^ set(self.rates))[:3]}... do not match the network")
        with torch.no_grad():
            for n, r in self.rates.items():
                r.copy_(state[n])

    def bundle_tensors(self) -> Params:
        """The rates as bundle tensors, keyed inner_lr.<parameter name>."""
        return {f"{RATES_PREFIX}.{n}": r.detach().clone() for n, r in self.rates.items()}


def rates_from_bundle(extra: Params, named_params: Iterable[tuple[str, torch.Tensor]], source: str) -> Params:
    """Meta-SGD rates from a bundle's tensors, one per parameter with its shape; errors name the key."""
    rates = {}
    for n, p in named_params:
        key = f"{RATES_PREFIX}.{n}"
        if key not in extra:
            raise ValueError(f"{source}: missing tensor {key!r}; a metasgd initialization stores one rate tensor "
                             "per parameter (re-export it with `tim meta`, or adapt with --optimizer adam)")
        if extra[key].shape != p.shape:
            raise ValueError(f"{source}: {key!r} has shape {tuple(extra[key].shape)}, the parameter "
                             f"{tuple(p.shape)}")
        rates[n] = extra[key].detach().clone()
    unexpected = sorted(k for k in extra if k.startswith(f"{RATES_PREFIX}.") and k[len(RATES_PREFIX) + 1:] not in rates)
    if unexpected:
        raise ValueError(f"{source}: unexpected rate tensor {unexpected[0]!r} for no parameter of the network")
    return rates


class PerParameterSGD(torch.optim.Optimizer):
    """SGD with a learning-rate tensor per parameter, Meta-SGD's rule at adaptation time: p ← p − lr ⊙ ∇p."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__([{"params": [p], "rate": r.to(p)} for p, r in pairs], {})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(group["rate"] * p.grad)
