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


def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net for parameters; buffers (BN statistics) are the live network's."""
    with torch.no_grad():
        for p_e, p in zip(ema.parameters(), net.parameters()):
            p_e.lerp_(p, 1.0 - decay)
        for b_e, b_n in zip(ema.buffers(), net.buffers()):
            b_e.copy_(b_n)
