"""Weight EMA shared by `tim train` and `tim guide`: a frozen copy of a network, moved toward it after each step."""

from __future__ import annotations

import copy

import torch


def averaged_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `net` for the weight EMA."""
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def warmed_decay(decay: float, step: int) -> float:
    """The decay after `step` updates, ramped as TensorFlow's ExponentialMovingAverage does (num_updates):
    min(decay, (1 + step) / (10 + step)). Without it the average still carries the random start thousands of
    steps in (at decay 0.999, e^-1.5 = 22% of it after 1,500 steps)."""
    return min(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float, step: int | None = None) -> None:
    """ema <- d * ema + (1 - d) * net for parameters, d = `decay` ramped by `warmed_decay` when `step` is given;
    buffers (BN statistics) are the live network's."""
    if step is not None:
        decay = warmed_decay(decay, step)
    with torch.no_grad():
        for p_e, p in zip(ema.parameters(), net.parameters()):
            p_e.lerp_(p, 1.0 - decay)
        for b_e, b_n in zip(ema.buffers(), net.buffers()):
            b_e.copy_(b_n)
