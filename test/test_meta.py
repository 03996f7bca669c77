"""PMI: the meta-gradient against finite differences for every inner rule, no leakage into omega, balanced tasks,
functional Adam against torch.optim.Adam, Meta-SGD's rates through `tim meta` and `tim adapt`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from tim_core.adapt import AdaptConfig, fine_tune, pair_spec, resolve_rule
from tim_core.cli import main
from tim_core.data import load_pairs
from tim_core.files import write_image
from tim_core.inner import AdamState, LearnedRates, adam_step
from tim_core.losses import LossWeights, fusion_loss
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


def post_adaptation_loss(model: nn.Module, omega: dict, episode, steps: int = 1, alpha: float = ALPHA,
                         optimizer: str = "sgd", rates: dict | None = None) -> float:
    """F(omega) = query loss after `steps` inner steps from omega (what the meta step minimises)."""
    sa, sb, qa, qb, _ = episode
    start = {n: p.detach().clone().requires_grad_() for n, p in omega.items()}
    theta = inner_adapt(model, start, sa, sb, LossWeights(), alpha, steps, create_graph=False, optimizer=optimizer,
                        rates=rates)
    with torch.no_grad():
        return fusion_loss(functional_call(model, theta, (qa, qb)), qa, qb)[0].item()


def outer_grad(model: nn.Module, episode, first_order: bool, steps: int = 1, alpha: float = ALPHA,
               optimizer: str = "sgd", rates: dict | None = None) -> dict:
    model.zero_grad(set_to_none=True)
    meta_gradient(model, [episode], LossWeights(), alpha, steps, first_order, optimizer, rates)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def directional_fd(
    model: nn.Module, episode, d: dict, eps: float = 1e-5, steps: int = 1, alpha: float = ALPHA,
    optimizer: str = "sgd", rates: dict | None = None,
) -> float:
    omega = {n: p.detach() for n, p in model.named_parameters()}
    plus = post_adaptation_loss(model, {n: omega[n] + eps * d[n] for n in omega}, episode, steps, alpha, optimizer,
                                rates)
    minus = post_adaptation_loss(model, {n: omega[n] - eps * d[n] for n in omega}, episode, steps, alpha, optimizer,
                                 rates)
    return (plus - minus) / (2 * eps)


def toy_rates(model: nn.Module, seed: int = 5) -> dict:
    """Meta-SGD rates around ALPHA, different per element (float64 leaves, like the model)."""
    g = torch.Generator().manual_seed(seed)
    return {n: (ALPHA * (0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))).requires_grad_()
            for n, p in model.named_parameters()}


def dot(x: dict, y: dict) -> float:
    return sum((x[n] * y[n]).sum().item() for n in x)


@pytest.mark.parametrize("optimizer,alpha", [("sgd", ALPHA), ("adam", 1e-3), ("metasgd", 0.0)])
@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_matches_finite_differences(toy, steps, optimizer, alpha) -> None:
    model, episode = toy
    rates = toy_rates(model) if optimizer == "metasgd" else None
    g = outer_grad(model, episode, False, steps, alpha, optimizer, rates)
    d = {n: torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=v.dtype) for n, v in g.items()}
    fd = directional_fd(model, episode, d, steps=steps, alpha=alpha, optimizer=optimizer, rates=rates)
    assert dot(g, d) == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("first_order", [True, False])
@pytest.mark.parametrize("optimizer", ["adam", "metasgd"])
def test_adam_and_metasgd_meta_gradients_are_finite(toy, optimizer, first_order) -> None:
    model, episode = toy
    rates = toy_rates(model) if optimizer == "metasgd" else None
    g = outer_grad(model, episode, first_order, 3, 1e-3, optimizer, rates)
    assert all(torch.isfinite(v).all() and v.abs().sum() > 0 for v in g.values())
    if rates is not None:  # the rates get a meta-gradient in both orders (k = 3: the orders differ)
        assert all(r.grad is not None and torch.isfinite(r.grad).all() for r in rates.values())
        assert sum(r.grad.abs().sum().item() for r in rates.values()) > 0


def test_metasgd_rates_move_with_the_outer_step(toy) -> None:
    model, episode = toy
    rates = LearnedRates(model.named_parameters(), ALPHA)
    before = rates.state_dict()
    opt = torch.optim.Adam([*model.parameters(), *rates.parameters()], lr=1e-3)
    meta_gradient(model, [episode], LossWeights(), 0.0, 1, True, "metasgd", rates.rates)
    opt.step()
    assert all(not torch.equal(before[n], r) for n, r in rates.rates.items())
    assert all(torch.equal(t, rates.state_dict()[k[len("inner_lr."):]]) for k, t in rates.bundle_tensors().items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functional_adam_equals_torch_adam(toy, dtype) -> None:
    model, episode = toy
    model = model.to(dtype)
    sa, sb = (t.to(dtype) for t in episode[:2])
    reference = Toy().to(dtype)
    reference.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(reference.parameters(), lr=1e-3)  # what `tim adapt` builds (defaults betas, eps)
    params, state = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}, AdamState()
    for _ in range(5):
        loss = fusion_loss(functional_call(model, params, (sa, sb)), sa, sb)[0]
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        params, state = adam_step(params, grads, state, 1e-3)
        params = {n: p.detach().requires_grad_() for n, p in params.items()}
        opt.zero_grad()
        fusion_loss(reference(sa, sb), sa, sb)[0].backward()
        opt.step()
    for n, p in reference.named_parameters():
        assert torch.allclose(params[n], p.detach(), rtol=0, atol=1e-6), n
    assert any(not torch.equal(params[n], w) for n, w in model.named_parameters())


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


def adapt_args(two_tasks, init, out, *extra) -> list[str]:
    return ["adapt", "--init", str(init), "--a", str(two_tasks / "med" / "a"), "--b", str(two_tasks / "med" / "b"),
            "--steps", "3", "--out", str(out), "--work", str(two_tasks / "work"), "--batch", "2", "--crop", "24",
            "--threads", "1", "--eval_metrics", "false", *extra]


def test_metasgd_rates_round_trip_through_the_bundle_into_tim_adapt(two_tasks, capsys) -> None:
    cfg = str(two_tasks / "meta.yaml")
    init = two_tasks / "msgd" / "bundle"
    assert main(["meta", "--config", cfg, "--steps", "2", "--out", str(two_tasks / "msgd"), "--inner_optimizer",
                 "metasgd", "--inner_lr", "0.01", "--first_order", "false"]) == 0
    net, card, extra = load_bundle(init)
    assert card["adaptation"]["optimizer"] == "metasgd" and "Meta-SGD" in card["method"]
    assert sorted(extra) == sorted(f"inner_lr.{n}" for n, _ in net.named_parameters())
    assert any(not torch.allclose(r, torch.full_like(r, 0.01)) for r in extra.values())  # learned, not the start

    out = two_tasks / "adapted_msgd"
    assert main(adapt_args(two_tasks, init, out)) == 0
    adapted, card, kept = load_bundle(out)
    assert card["adapted_with"]["optimizer"] == "metasgd" and "meta-trained for" in card["adapted_with"]["why"]
    assert card["lineage"][-1].endswith("--optimizer metasgd") and len(card["lineage"]) == 2 and not kept
    # the same three steps by hand, with the bundle's rates: tim adapt used them
    data = load_pairs([f"{two_tasks / 'med'}:a,b"], "train", 0.2)
    rates = {n: extra[f"inner_lr.{n}"] for n, _ in net.named_parameters()}
    fine_tune(net, data, 3, 2, 24, 0.0, 0, optimizer="metasgd", rates=rates)
    for (n, p), q in zip(net.named_parameters(), adapted.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n

    assert main(adapt_args(two_tasks, init, two_tasks / "a2", "--optimizer", "adam")) == 0  # overridable
    assert load_bundle(two_tasks / "a2")[1]["adapted_with"] == {"optimizer": "adam", "lr": 1e-3,
                                                                 "rule": "adam at lr 0.001", "why": "--optimizer"}
    assert main(adapt_args(two_tasks, init, two_tasks / "a3", "--lr", "0.01")) == 2
    assert "lr: metasgd adapts with the initialization's learned per-parameter rates" in capsys.readouterr().err


def test_metasgd_meta_training_resumes_exactly_with_its_rates(two_tasks) -> None:
    cfg = str(two_tasks / "meta.yaml")
    rule = ["--inner_optimizer", "metasgd", "--ckpt_every", "2"]
    assert main(["meta", "--config", cfg, "--steps", "4", "--out", str(two_tasks / "full"), *rule]) == 0
    assert main(["meta", "--config", cfg, "--steps", "2", "--out", str(two_tasks / "part"), *rule]) == 0
    assert main(["meta", "--config", cfg, "--steps", "4", "--out", str(two_tasks / "part"), "--resume", *rule]) == 0
    _, _, full = load_bundle(two_tasks / "full" / "bundle")
    _, _, part = load_bundle(two_tasks / "part" / "bundle")
    assert sorted(full) == sorted(part) and all(torch.equal(full[k], part[k]) for k in full)


def test_adam_initialization_adapts_with_adam_at_its_lr(two_tasks, capsys) -> None:
    cfg = str(two_tasks / "meta.yaml")
    assert main(["meta", "--config", cfg, "--steps", "1", "--out", str(two_tasks / "adam"), "--inner_optimizer",
                 "adam", "--inner_lr", "0.002"]) == 0
    card = load_bundle(two_tasks / "adam" / "bundle")[1]
    assert card["adaptation"] == {"optimizer": "adam", "inner_steps": 1, "order": "first", "lr": 0.002,
                                  "betas": [0.9, 0.999], "eps": 1e-8}
    assert main(adapt_args(two_tasks, two_tasks / "adam" / "bundle", two_tasks / "ad")) == 0
    card = load_bundle(two_tasks / "ad")[1]
    assert card["adapted_with"]["optimizer"] == "adam" and card["adapted_with"]["lr"] == 0.002
    assert card["lineage"][-1].endswith("--optimizer adam --lr 0.002")
    assert main(adapt_args(two_tasks, two_tasks / "adam" / "bundle", two_tasks / "x", "--optimizer", "metasgd")) == 2
    assert "metasgd needs an initialization meta-trained with inner_optimizer metasgd" in capsys.readouterr().err
    assert main(["meta", "--config", cfg, "--steps", "1", "--inner_optimizer", "adamw"]) == 2
    assert "inner_optimizer: 'adamw' is not one of sgd, adam, metasgd" in capsys.readouterr().err


def test_older_initializations_still_adapt_with_adam_at_1e_3() -> None:
    net, card, extra = load_bundle("tim_meta_init")
    assert card["adaptation"]["optimizer"] == "adam"  # the shipped one is meta-trained with tim adapt's own rule
    shipped = resolve_rule(AdaptConfig(), net, card, extra, "tim_meta_init")
    assert (shipped.optimizer, shipped.lr, shipped.rates) == ("adam", 1e-3, None)
    card = {k: v for k, v in card.items() if k != "adaptation"}  # as bundles shipped before cards recorded a rule
    rule = resolve_rule(AdaptConfig(), net, card, extra, "tim_meta_init")
    assert (rule.optimizer, rule.lr, rule.rates) == ("adam", 1e-3, None) and "records no adaptation rule" in rule.why
    sgd_card = {**card, "adaptation": {"optimizer": "sgd", "lr": 0.05}}  # meta-trained with SGD: Adam, not SGD 0.05
    assert resolve_rule(AdaptConfig(), net, sgd_card, extra, "x").optimizer == "adam"
    assert resolve_rule(AdaptConfig(optimizer="sgd"), net, sgd_card, extra, "x").lr == 0.05


def load_experiment():
    path = Path(__file__).resolve().parents[1] / "bench" / "meta_experiment.py"
    spec = importlib.util.spec_from_file_location("meta_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_meta_experiment_resumes_without_recomputing_finished_cells(two_tasks, monkeypatch, capsys) -> None:
    experiment = load_experiment()
    out = two_tasks / "study.json"
    argv = ["--config", str(two_tasks / "meta.yaml"), "--held-out", "med", "--irvis", "irvis", "--seeds", "0",
            "--passes", "4", "--k", "0", "1", "--val-crop", "16", "--val-crops", "1", "--eval-images", "1",
            "--set", "crop=24", "batch=2", "bn_batches=1", "--inner-optimizer", "metasgd", "--out", str(out)]
    assert experiment.main(argv) == 0
    done = json.loads(out.read_text())
    cell = done["cells"]["med/seed0"]
    assert sorted(cell["curves"]) == sorted(experiment.METHODS) and list(cell["curves"]["meta"]) == ["0", "1"]
    assert "learned per-parameter rates" in cell["adapted_with"]["meta"]
    assert cell["adapted_with"]["joint"] == "adam at lr 0.001"

    del cell["curves"]["meta"]  # as if the sitting had been stopped before the last cell
    out.write_text(json.dumps(done))
    calls = []
    real_curve = experiment.adaptation_curve
    monkeypatch.setattr(experiment, "pretrain", lambda *a: calls.append("pretrain"))
    monkeypatch.setattr(experiment, "adaptation_curve", lambda *a: calls.append("adapt") or real_curve(*a))
    assert experiment.main([*argv, "--resume"]) == 0
    assert calls == ["adapt"]  # only the unfinished cell, its pretraining read back from OUT_inits
    again = json.loads(out.read_text())
    assert again["cells"]["med/seed0"]["curves"]["joint"] == done["cells"]["med/seed0"]["curves"]["joint"]
    assert len(again["sittings"]) == 2 and again["sittings"][1]["cells_run"] == 1

    assert experiment.main([*argv, "--resume"]) == 0 and calls == ["adapt"]  # all finished: nothing recomputed
    with pytest.raises(SystemExit, match="--resume continues it"):
        experiment.main(argv)
    with pytest.raises(SystemExit, match=r"other settings \(passes\)"):
        experiment.main([*argv, "--resume", "--passes", "8"])


def test_pair_spec_names_the_common_root(tmp_path) -> None:
    (tmp_path / "mri_pet" / "mri").mkdir(parents=True)
    (tmp_path / "mri_pet" / "pet").mkdir()
    assert pair_spec(tmp_path / "mri_pet" / "mri", tmp_path / "mri_pet" / "pet") == f"{tmp_path / 'mri_pet'}:mri,pet"
    with pytest.raises(FileNotFoundError, match="not a folder"):
        pair_spec(tmp_path / "missing", tmp_path / "mri_pet" / "pet")
