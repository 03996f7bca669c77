"""PMI: the meta-gradient against finite differences, no leakage into omega, balanced tasks, `tim meta`/`tim adapt`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tim_core.adapt import pair_spec
from tim_core.cli import main
from tim_core.files import write_image
from tim_core.losses import LossWeights
from tim_core.meta import _mean, inner_adapt, meta_gradient, task_schedule
from tim_core.runtime import load_bundle

ALPHA = 0.02


class Toy(nn.Module):
    """A two-layer fusion model small enough for float64 finite differences."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 1, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.tanh(self.conv1(torch.cat((a, b), 1))))


@pytest.fixture
def toy():
    torch.manual_seed(0)
    model = Toy().double()
    g = torch.Generator().manual_seed(1)
    episode = tuple(torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64) for _ in range(4)) + (1.0,)
    return model, episode


def post_adaptation_loss(model: nn.Module, omega: dict, episode, steps: int = 1, alpha: float = ALPHA) -> float:
    """F(omega) = query loss after `steps` inner steps from omega (what the meta step minimises)."""
    from torch.func import functional_call

    from tim_core.losses import fusion_loss

    sa, sb, qa, qb, _ = episode
    start = {n: p.detach().clone().requires_grad_() for n, p in omega.items()}
    theta = inner_adapt(model, start, sa, sb, LossWeights(), alpha, steps, create_graph=False)
    with torch.no_grad():
        return fusion_loss(functional_call(model, theta, (qa, qb)), qa, qb)[0].item()


def outer_grad(model: nn.Module, episode, first_order: bool, steps: int = 1, alpha: float = ALPHA) -> dict:
    model.zero_grad(set_to_none=True)
    meta_gradient(model, [episode], LossWeights(), alpha, steps, first_order)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def directional_fd(
    model: nn.Module, episode, d: dict, eps: float = 1e-5, steps: int = 1, alpha: float = ALPHA
) -> float:
    omega = {n: p.detach() for n, p in model.named_parameters()}
    plus = post_adaptation_loss(model, {n: omega[n] + eps * d[n] for n in omega}, episode, steps, alpha)
    minus = post_adaptation_loss(model, {n: omega[n] - eps * d[n] for n in omega}, episode, steps, alpha)
    return (plus - minus) / (2 * eps)


def dot(x: dict, y: dict) -> float:
    return sum((x[n] * y[n]).sum().item() for n in x)


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_matches_finite_differences(toy, steps) -> None:
    model, episode = toy
    g = outer_grad(model, episode, first_order=False, steps=steps)
    d = {n: torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=v.dtype) for n, v in g.items()}
    assert dot(g, d) == pytest.approx(directional_fd(model, episode, d, steps=steps), rel=1e-5, abs=1e-9)


def test_first_order_step_reduces_post_adaptation_loss(toy) -> None:
    model, episode = toy
    errors = []
    for alpha in (ALPHA, ALPHA / 10):
        g1 = outer_grad(model, episode, first_order=True, alpha=alpha)
        g2 = outer_grad(model, episode, first_order=False, alpha=alpha)
        fd = directional_fd(model, episode, g1, alpha=alpha)  # dF/d(omega) along the first-order direction
        assert fd > 0 and dot(g2, g1) == pytest.approx(fd, rel=1e-5)  # -g1 descends; FD checks itself
        errors.append(abs(dot(g1, g1) - fd) / fd)
    # first order drops the alpha*Hessian term: its error against the exact derivative is O(alpha)
    assert errors[1] < 0.03 and 5 < errors[0] / errors[1] < 20
    omega = {n: p.detach() for n, p in model.named_parameters()}
    before = post_adaptation_loss(model, omega, episode)
    g1 = outer_grad(model, episode, first_order=True)
    after = post_adaptation_loss(model, {n: omega[n] - 1e-3 * g1[n] for n in omega}, episode)
    assert after < before


@pytest.mark.parametrize("first_order", [True, False])
def test_inner_steps_do_not_touch_the_initialization(toy, first_order) -> None:
    model, episode = toy
    sa, sb = episode[:2]
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    omega = dict(model.named_parameters())
    start = {n: p.detach().requires_grad_() for n, p in omega.items()} if first_order else omega
    theta = inner_adapt(model, start, sa, sb, LossWeights(), ALPHA, 3, create_graph=not first_order)
    assert all(p.grad is None for p in model.parameters())  # no backward into omega from the inner loop
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    assert any(not torch.equal(theta[n], saved[n]) for n in saved)
    assert all(not t.requires_grad or t.grad_fn is None for t in theta.values()) == first_order
    g = outer_grad(model, episode, first_order)
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())  # only .grad was written
    assert all(torch.isfinite(v).all() for v in g.values())


def test_task_mean_skips_undefined_metrics() -> None:
    assert _mean([1.0, None, 3.0]) == 2.0 and _mean([None]) is None


def test_task_schedule_is_balanced_and_deterministic() -> None:
    draws = [i for step in range(21) for i in task_schedule(7, 2, step, seed=3)]
    assert np.bincount(draws, minlength=7).tolist() == [6] * 7
    assert task_schedule(7, 2, 5, 3) == task_schedule(7, 2, 5, 3)
    assert draws[:7] != [i for step in range(4) for i in task_schedule(7, 2, step, seed=4)][:7]


@pytest.fixture
def two_tasks(tmp_path):
    """Two synthetic pair sets of ten 48x48 pairs (blob + texture, and texture + gradient)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for i in range(10):
        blob = 220 * np.exp(-((yy - 24) ** 2 + (xx - 4 * i) ** 2) / 80) + rng.normal(20, 3, (48, 48))
        tex = 128 + 60 * np.sin(xx / (2 + i % 3)) * np.cos(yy / 3)
        for root, a, b in (("irvis", blob, tex), ("med", tex, 2.5 * yy + 4 * i)):
            write_image(tmp_path / root / "a" / f"p{i}.png", np.clip(a, 0, 255).astype(np.uint8))
            write_image(tmp_path / root / "b" / f"p{i}.png", np.clip(b, 0, 255).astype(np.uint8))
    config = {
        "genotype": "tim_light",
        "width": 4,
        "tasks": [f"{tmp_path}/irvis:a,b", f"{tmp_path}/med:a,b"],
        "task_weights": [1.0, 2.0],
        "meta_batch": 2,
        "batch": 2,
        "crop": 24,
        "bn_batches": 2,
        "ckpt_every": 1,
        "log_every": 1,
        "eval_metrics": False,
        "val_fraction": 0.3,
        "threads": 1,
    }
    (tmp_path / "meta.yaml").write_text(json.dumps(config))
    return tmp_path


def test_tim_meta_resumes_exactly_and_tim_adapt_validates(two_tasks, capsys) -> None:
    cfg = str(two_tasks / "meta.yaml")
    full, part = two_tasks / "full", two_tasks / "part"
    assert main(["meta", "--config", cfg, "--steps", "4", "--out", str(full)]) == 0
    assert main(["meta", "--config", cfg, "--steps", "2", "--out", str(part)]) == 0
    assert main(["meta", "--config", cfg, "--steps", "4", "--out", str(part), "--resume"]) == 0
    net_full, card, _ = load_bundle(full / "bundle")
    net_part, _, _ = load_bundle(part / "bundle")
    for (k, v), w in zip(net_full.state_dict().items(), net_part.state_dict().values()):
        assert torch.equal(v, w), k
    assert card["task_counts"] == {"irvis": 4, "med": 4} and "tim meta --config" in card["command"]
    log = [json.loads(ln) for ln in (part / "tasks.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]

    out = two_tasks / "adapted"
    args = [
        "adapt",
        "--init",
        str(full / "bundle"),
        "--a",
        str(two_tasks / "med" / "a"),
        "--b",
        str(two_tasks / "med" / "b"),
        "--steps",
        "3",
        "--out",
        str(out),
        "--work",
        str(two_tasks / "work"),
        "--batch",
        "2",
        "--crop",
        "24",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    net, card, _ = load_bundle(out)
    assert card["steps"] == 3 and card["validation"]["n"] >= 1 and "Qabf" in card["validation"]["model"]
    assert card["init_card"]["name"] == "bundle" and "--steps 3" in card["command"]
    assert any(not torch.equal(v, w) for v, w in zip(net.state_dict().values(), net_full.state_dict().values()))

    assert main(["meta", "--config", cfg, "--stepz", "1"]) == 2
    assert "unknown key 'stepz'" in capsys.readouterr().err
    assert (
        main(["adapt", "--init", str(out), "--a", str(two_tasks / "nope"), "--b", str(two_tasks), "--steps", "1"]) == 2
    )


def test_pair_spec_names_the_common_root(tmp_path) -> None:
    (tmp_path / "mri_pet" / "mri").mkdir(parents=True)
    (tmp_path / "mri_pet" / "pet").mkdir()
    assert pair_spec(tmp_path / "mri_pet" / "mri", tmp_path / "mri_pet" / "pet") == f"{tmp_path / 'mri_pet'}:mri,pet"
    with pytest.raises(FileNotFoundError, match="not a folder"):
        pair_spec(tmp_path / "missing", tmp_path / "mri_pet" / "pet")
