"""Hypergradients of a bilevel problem: d L_up(theta*(alpha), alpha) / d alpha, three approximations.

With theta*(alpha) = argmin_theta L_low(theta, alpha), the implicit function theorem gives

    dL_up/dalpha = grad_alpha L_up - (d2 L_low / dalpha dtheta) H^-1 grad_theta L_up,   H = d2 L_low / dtheta2.

- 'darts1'  keeps only the direct term grad_alpha L_up (first-order DARTS).
- 'ias'     TIM's rank-1 Gauss-Newton approximation: H ~ g g^T and d2 L_low / dalpha dtheta ~ grad_alpha L_low g^T
            with g = grad_theta L_low, which collapses the second term to c * grad_alpha L_low,
            c = <v, g> / <g, g>, v = grad_theta L_up. The sign is the textbook minus (../shared/docs/TIM_FACTS.md:
            the released code adds it, an apparent slip; test/test_hypergrad.py pins the sign on a problem with a
            known answer).
- 'neumann' H^-1 v ~ eta * sum_{j<K} (I - eta H)^j v with Hessian-vector products, then one mixed
            second-derivative product (Lorraine et al., 2020). Needs eta < 2 / lambda_max(H) to converge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

METHODS = ("ias", "neumann", "darts1")
IAS_DAMPING = 1e-12


def _grads(outputs, inputs: Sequence[torch.Tensor], **kwargs) -> list[torch.Tensor]:
    """torch.autograd.grad with zeros for inputs the outputs do not depend on."""
    grads = torch.autograd.grad(outputs, list(inputs), allow_unused=True, **kwargs)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def hypergradient(method: str, upper: Callable[[], torch.Tensor], lower: Callable[[], torch.Tensor],
                  theta: Sequence[torch.Tensor], alpha: Sequence[torch.Tensor], *,
                  neumann_terms: int = 5, neumann_lr: float = 0.01) -> list[torch.Tensor]:
    """Gradient of the upper loss w.r.t. alpha through theta*(alpha): 'darts1' (direct term only), 'ias' (TIM's rank-1
    Gauss-Newton inverse-Hessian: d = grad_alpha L_up - c * grad_alpha L_low, c = <v,g>/<g,g>, v = grad_theta L_up,
    g = grad_theta L_low; the textbook sign), 'neumann' (truncated Neumann series of Hessian-vector products)."""
    if method not in METHODS:
        raise ValueError(f"unknown hypergradient method {method!r}; valid: {', '.join(METHODS)}")
    theta, alpha = list(theta), list(alpha)
    if method == "darts1":
        return [g.detach() for g in _grads(upper(), alpha)]
    up_grads = _grads(upper(), theta + alpha)
    v, direct = up_grads[:len(theta)], up_grads[len(theta):]
    if method == "ias":
        low_grads = _grads(lower(), theta + alpha)
        g, low_alpha = low_grads[:len(theta)], low_grads[len(theta):]
        # At an exact lower-level optimum g = 0 and the rank-1 term is undefined; the tiny damping makes c -> 0
        # there (the direct term remains) and is negligible wherever |g|^2 is not (float32 losses: |g|^2 >> 1e-12).
        c = _dot(v, g) / (_dot(g, g) + IAS_DAMPING)
        return [(d - c * dl).detach() for d, dl in zip(direct, low_alpha)]
    if neumann_terms < 1:
        raise ValueError(f"neumann_terms must be >= 1, got {neumann_terms}")
    g = _grads(lower(), theta, create_graph=True)
    live = [i for i, gi in enumerate(g) if gi.requires_grad]  # parameters lower() does not reach: H row is 0
    cur = [v[i].detach() for i in live]
    total = [c.clone() for c in cur]
    for _ in range(neumann_terms - 1):
        hv = _grads([g[i] for i in live], [theta[i] for i in live], grad_outputs=cur, retain_graph=True)
        cur = [c - neumann_lr * h for c, h in zip(cur, hv)]
        total = [t + c for t, c in zip(total, cur)]
    inv_hv = [neumann_lr * t for t in total]
    mixed = _grads([g[i] for i in live], alpha, grad_outputs=inv_hv)
    return [(d - m).detach() for d, m in zip(direct, mixed)]
