"""Each hypergradient option against the exact one on ridge regression, where theta*(alpha) is closed form."""

from __future__ import annotations

import pytest
import torch

from tim_core.hypergrad import METHODS, hypergradient

RHO = 0.1  # weight of the upper level's direct dependence on alpha (so that 'darts1' is not trivially zero)
MU = 0.05  # ridge penalty of the lower level


class RidgeBilevel:
    """Lower: ridge regression to targets y0 + B alpha; upper: validation error + RHO/2 |alpha|^2 (float64)."""

    def __init__(self, seed: int, n: int = 40, d: int = 5, m: int = 4):
        g = torch.Generator().manual_seed(seed)
        def r(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g, dtype=torch.float64)

        self.x, self.xv, self.b = r(n, d), r(n, d), r(n, m)
        self.y0, self.yv = r(n), r(n)
        self.alpha0 = r(m)
        self.n, self.d = n, d

    def lower(self, theta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.x @ theta - self.y0 - self.b @ alpha) ** 2).mean() + 0.5 * MU * (theta**2).sum()

    def upper(self, theta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.xv @ theta - self.yv) ** 2).mean() + 0.5 * RHO * (alpha**2).sum()

    def hessian(self) -> torch.Tensor:
        return self.x.T @ self.x / self.n + MU * torch.eye(self.d, dtype=torch.float64)

    def theta_star(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(self.hessian(), self.x.T @ (self.y0 + self.b @ alpha) / self.n)

    def exact(self) -> torch.Tensor:
        """Closed form: RHO alpha + (dtheta*/dalpha)^T grad_theta L_up, dtheta*/dalpha = H^-1 X^T B / n."""
        theta = self.theta_star(self.alpha0)
        v = self.xv.T @ (self.xv @ theta - self.yv) / self.n
        dtheta = torch.linalg.solve(self.hessian(), self.x.T @ self.b / self.n)
        return RHO * self.alpha0 + dtheta.T @ v

    def gd_iterate(self, steps: int, lr: float = 0.3) -> torch.Tensor:
        """Where a search actually evaluates the hypergradient: a few descent steps short of theta*."""
        theta = torch.zeros(self.d, dtype=torch.float64)
        h, rhs = self.hessian(), self.x.T @ (self.y0 + self.b @ self.alpha0) / self.n
        for _ in range(steps):
            theta = theta - lr * (h @ theta - rhs)
        return theta

    def run(self, method: str, theta_value: torch.Tensor, **kw) -> torch.Tensor:
        theta = theta_value.clone().requires_grad_()
        alpha = self.alpha0.clone().requires_grad_()
        return hypergradient(
            method, lambda: self.upper(theta, alpha), lambda: self.lower(theta, alpha), [theta], [alpha], **kw
        )[0]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_exact_formula_matches_autograd_through_the_solve() -> None:
    p = RidgeBilevel(0)
    alpha = p.alpha0.clone().requires_grad_()
    (auto,) = torch.autograd.grad(p.upper(p.theta_star(alpha), alpha), alpha)
    assert torch.allclose(auto, p.exact(), atol=1e-12)


def test_darts1_is_the_direct_term() -> None:
    p = RidgeBilevel(1)
    theta = p.gd_iterate(3)
    assert torch.allclose(p.run("darts1", theta), RHO * p.alpha0, atol=1e-12)


def test_neumann_converges_to_exact_as_terms_grow() -> None:
    p = RidgeBilevel(2)
    eta = 1.0 / float(torch.linalg.eigvalsh(p.hessian()).max())
    theta = p.theta_star(p.alpha0)
    cos = [cosine(p.run("neumann", theta, neumann_terms=k, neumann_lr=eta), p.exact()) for k in (1, 5, 100)]
    assert cos[0] < cos[1] < cos[2]
    assert cos[2] > 0.99
    err = (p.run("neumann", theta, neumann_terms=100, neumann_lr=eta) - p.exact()).norm() / p.exact().norm()
    assert err < 1e-3


def test_ias_is_exactly_the_tim_facts_formula() -> None:
    p = RidgeBilevel(3)
    theta = p.gd_iterate(3).requires_grad_()
    alpha = p.alpha0.clone().requires_grad_()
    v, du = torch.autograd.grad(p.upper(theta, alpha), (theta, alpha))
    g, dl = torch.autograd.grad(p.lower(theta, alpha), (theta, alpha))
    expected = du - (v @ g) / (g @ g) * dl  # grad_alpha L_up - c grad_alpha L_low, textbook sign
    assert torch.allclose(p.run("ias", theta.detach()), expected, rtol=1e-9, atol=0)


def test_ias_textbook_sign_agrees_with_exact_and_the_released_sign_does_not() -> None:
    """Over ten problems at the iterate a search sees: mean cosine with the exact hypergradient."""
    textbook, released = [], []
    for seed in range(10):
        p = RidgeBilevel(seed)
        theta = p.gd_iterate(3)
        d = p.run("ias", theta)
        direct = p.run("darts1", theta)
        textbook.append(cosine(d, p.exact()))
        released.append(cosine(2 * direct - d, p.exact()))  # grad_alpha L_up + c grad_alpha L_low
    assert sum(textbook) / 10 > 0.3
    assert sum(textbook) / 10 > sum(released) / 10 + 0.3
    assert sum(c > 0 for c in textbook) >= 8


def test_ias_at_exact_optimum_falls_back_to_direct_term() -> None:
    p = RidgeBilevel(4)
    theta = p.theta_star(p.alpha0)
    assert torch.allclose(p.run("ias", theta), p.run("darts1", theta), atol=1e-3)


def test_shapes_for_several_tensors_and_unused_parameters() -> None:
    torch.manual_seed(0)
    w1, w2, unused = (
        torch.randn(3, 2, requires_grad=True),
        torch.randn(2, requires_grad=True),
        torch.zeros(1, requires_grad=True),
    )
    a1, a2 = torch.randn(3, requires_grad=True), torch.randn(2, 2, requires_grad=True)
    x = torch.randn(8, 3)

    def loss(shift: float) -> torch.Tensor:
        h = torch.tanh(x * torch.softmax(a1, 0)) @ w1
        return ((h * a2.sum(0) + w2 - shift) ** 2).mean()

    for method in METHODS:
        out = hypergradient(method, lambda: loss(1.0), lambda: loss(0.0), [w1, w2, unused], [a1, a2], neumann_terms=3)
        assert [o.shape for o in out] == [a1.shape, a2.shape]
        assert all(torch.isfinite(o).all() and not o.requires_grad for o in out)


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="valid: ias, neumann, darts1"):
        hypergradient("darts2", lambda: torch.zeros(()), lambda: torch.zeros(()), [], [])
