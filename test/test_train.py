"""Fusion loss, data split, config handling and `tim train` end to end with an exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_GENOTYPE

from tim_core.cli import main
from tim_core.config import ConfigError, load_config, parse_overrides
from tim_core.data import is_validation, load_pairs, resolve_layout, sample_batch
from tim_core.files import write_image
from tim_core.losses import LossWeights, fusion_loss, scd, soft_mutual_information, ssim
from tim_core.metrics import compute_metrics
from tim_core.runtime import load_bundle
from tim_core.train import TrainConfig


@pytest.fixture
def dataset(tmp_path):
    """Twelve synthetic 80x96 pairs: a warm blob in IR, texture in VIS (names decide the split)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :96]
    for i in range(12):
        ir = (200 * np.exp(-((yy - 40) ** 2 + (xx - 10 * (i % 8)) ** 2) / 200) + rng.normal(20, 3, (80, 96)))
        vis = 128 + 60 * np.sin(xx / (2 + i % 3)) * np.cos(yy / 3)
        write_image(tmp_path / "ds" / "ir" / f"img{i:02d}.png", np.clip(ir, 0, 255).astype(np.uint8))
        write_image(tmp_path / "ds" / "vi" / f"img{i:02d}.png", np.clip(vis, 0, 255).astype(np.uint8))
    (tmp_path / "g.json").write_text(json.dumps(TINY_GENOTYPE))
    return tmp_path


def test_loss_prefers_the_max_target() -> None:
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    good, terms = fusion_loss(torch.maximum(a, b), a, b)
    bad, _ = fusion_loss(torch.full_like(a, 0.5), a, b)
    assert good < bad and terms["intensity"] == 0.0
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)


def test_soft_mutual_information_ranks_as_the_metric() -> None:
    """The differentiable MI term orders fused images as the exact 256-bin MI metric does, and its gradient flows."""
    torch.manual_seed(0)

    def smooth() -> torch.Tensor:
        t = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 128, 128), 5, 1, 2)
        return (t - t.min()) / (t.max() - t.min())

    a, b = smooth(), smooth()
    candidates = {"copy of a": a.clone(), "mostly a": 0.8 * a + 0.2 * b, "mean": (a + b) / 2}
    soft = {k: (soft_mutual_information(f, a) + soft_mutual_information(f, b)).item() for k, f in candidates.items()}
    exact = {k: compute_metrics((a[0, 0] * 255).numpy(), (b[0, 0] * 255).numpy(), (f[0, 0] * 255).numpy(),
                                metrics=["MI"])["MI"] for k, f in candidates.items()}
    assert sorted(soft, key=soft.get) == sorted(exact, key=exact.get) == ["mean", "mostly a", "copy of a"]
    assert soft_mutual_information(1 - a, a).item() == pytest.approx(soft_mutual_information(a, a).item(), rel=1e-4)
    assert soft_mutual_information(torch.rand_like(a), a).item() < 0.05  # independent: near zero (no 256-bin bias)
    f = torch.full_like(a, 0.5).add_(0.1 * torch.rand_like(a)).requires_grad_(True)
    total, terms = fusion_loss(f, a, b, LossWeights(mi=1.0))
    total.backward()
    assert "mi" in terms and terms["mi"] < 0 and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert "mi" not in fusion_loss(f, a, b)[1]  # off by default: not computed


def test_scd_term_is_the_metric_and_has_a_gradient() -> None:
    torch.manual_seed(1)
    a, b = torch.rand(2, 1, 48, 40), torch.rand(2, 1, 48, 40)
    f = (0.6 * a + 0.7 * b + 0.05 * torch.rand_like(a)).requires_grad_(True)
    exact = [compute_metrics((a[i, 0] * 255).numpy(), (b[i, 0] * 255).numpy(), (f[i, 0].detach() * 255).numpy(),
                             metrics=["SCD"])["SCD"] for i in range(2)]
    assert scd(f, a, b).tolist() == pytest.approx(exact, abs=1e-4)
    total, terms = fusion_loss(f, a, b, LossWeights(scd=1.0))
    total.backward()
    assert terms["scd"] == pytest.approx(1 - sum(exact) / 4, abs=1e-4) and f.grad.abs().sum() > 0
    assert scd(a + b, a, b).mean().item() == pytest.approx(2.0, abs=1e-4)  # the additive fusion is SCD's optimum


def test_scale_asks_the_mi_and_scd_terms_of_chosen_images() -> None:
    torch.manual_seed(2)
    a, b = torch.rand(2, 1, 40, 40), torch.rand(2, 1, 40, 40)
    f = 0.5 * a + 0.6 * b
    weights = LossWeights(mi=1.0, scd=1.0)
    plain, terms = fusion_loss(f, a, b, weights)
    same, same_terms = fusion_loss(f, a, b, weights, {"scd": torch.ones(2), "mi": torch.ones(2)})
    assert same.item() == pytest.approx(plain.item()) and same_terms == pytest.approx(terms)
    _, first_only = fusion_loss(f, a, b, weights, {"scd": torch.tensor([1.0, 0.0])})
    assert first_only["scd"] == pytest.approx((1 - 0.5 * scd(f, a, b)[0].item()) / 2, abs=1e-6)
    assert first_only["mi"] == pytest.approx(terms["mi"])  # a term not named keeps its weight
    _, doubled = fusion_loss(f, a, b, weights, {"mi": torch.full((2,), 2.0)})
    assert doubled["mi"] == pytest.approx(2 * terms["mi"])


def test_split_is_deterministic_and_disjoint(dataset) -> None:
    spec = str(dataset / "ds")
    train, val = load_pairs([spec], "train", 0.3), load_pairs([spec], "val", 0.3)
    assert set(train.names).isdisjoint(val.names) and len(train) + len(val) == 12
    assert all(is_validation(n.split("/")[1], 0.3) for n in val.names)
    assert resolve_layout(spec)[1].name == "vi"
    a1, _ = sample_batch(train, 3, 32, torch.Generator().manual_seed(5))
    a2, _ = sample_batch(train, 3, 32, torch.Generator().manual_seed(5))
    assert torch.equal(a1, a2) and a1.shape == (3, 1, 32, 32)
    a3, _, idx = sample_batch(train, 3, 32, torch.Generator().manual_seed(5), with_index=True)
    assert torch.equal(a1, a3) and idx.shape == (3,) and 0 <= int(idx.min()) and int(idx.max()) < len(train)


def test_config_rejects_unknown_keys(tmp_path) -> None:
    cfg = load_config(TrainConfig, None, parse_overrides(["--steps", "5", "--lr=1e-4", "--amp", "false"]))
    assert cfg.steps == 5 and cfg.lr == 1e-4 and cfg.amp is False
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_config(TrainConfig, None, {"stepz": 3})
    (tmp_path / "c.yaml").write_text("batch: eight\n")
    with pytest.raises(ConfigError, match="c.yaml: batch must be a number"):
        load_config(TrainConfig, tmp_path / "c.yaml")


def _args(dataset, out, steps, *extra):
    return ["train", "--genotype", str(dataset / "g.json"), "--data", f"[{dataset / 'ds'}]", "--val_fraction", "0.3",
            "--out", str(out), "--steps", str(steps), "--batch", "2", "--crop", "32", "--ckpt_every", "2",
            "--val_every", "3", "--val_crop", "32", "--warmup_steps", "2", "--device", "cpu", *extra]


def test_train_resume_is_exact(dataset, monkeypatch) -> None:
    assert main(_args(dataset, dataset / "full", 6, "--eval_metrics", "false")) == 0
    full = load_bundle(dataset / "full" / "bundle")[0].state_dict()

    import tim_core.checkpoint as checkpoint_mod
    real_save, saves = checkpoint_mod.save_atomic, []

    def killed_after_step_4(obj, path):
        real_save(obj, path)
        saves.append(obj["step"])
        if obj["step"] == 4:
            raise KeyboardInterrupt  # the process dies right after the step-4 checkpoint

    monkeypatch.setattr(checkpoint_mod, "save_atomic", killed_after_step_4)
    assert main(_args(dataset, dataset / "cut", 6, "--eval_metrics", "false")) == 130  # Ctrl-C's exit status
    monkeypatch.setattr(checkpoint_mod, "save_atomic", real_save)
    assert torch.load(dataset / "cut" / "checkpoint.pt", weights_only=True)["step"] == 4
    assert main(_args(dataset, dataset / "cut", 6, "--eval_metrics", "false", "--resume")) == 0
    resumed = load_bundle(dataset / "cut" / "bundle")[0].state_dict()
    for key, value in full.items():
        assert torch.equal(value, resumed[key]), f"{key} differs after resume"


def test_train_exports_bundle_with_validation_metrics(dataset) -> None:
    assert main(_args(dataset, dataset / "run", 2, "--eval_limit", "2")) == 0
    card = json.loads((dataset / "run" / "bundle" / "card.json").read_text())
    assert card["steps"] == 2 and "tim train" in card["command"]
    val = card["validation"]
    assert val["convention"] == "matlab" and val["n"] == 2
    assert set(val["model"]) >= {"EN", "MI", "VIF", "Qabf", "SSIM"}
    assert val["baseline_max"]["MI"] > val["baseline_mean"]["MI"] * 0.5
    assert (dataset / "run" / "tb").is_dir()


def test_train_errors_are_clear(dataset, capsys) -> None:
    assert main(["train", "--bogus", "1"]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err
    assert main(_args(dataset, dataset / "none", 2, "--resume")) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_source_scale_trains_and_bad_values_are_named(dataset, capsys) -> None:
    import shutil

    shutil.copytree(dataset / "ds", dataset / "road")
    data = f"[{dataset / 'ds'}, {dataset / 'road'}]"
    args = _args(dataset, dataset / "scaled", 2, "--eval_metrics", "false", "--data", data, "--w_scd", "1.0",
                 "--w_mi", "1.0")
    assert main([*args, "--source_scale", "{ds: {scd: 0.0}, road: {mi: 2}}"]) == 0
    card = json.loads((dataset / "scaled" / "bundle" / "card.json").read_text())
    assert "source_scale:\n  ds:\n    scd: 0.0" in card["config"]
    capsys.readouterr()
    for value, message in (("{nope: {scd: 1}}", "source_scale: 'nope' is not a data set of this run; valid: ds, road"),
                           ("{ds: {ssim: 1}}", "source_scale.ds: unknown term 'ssim'; valid: mi, scd"),
                           ("{ds: {scd: -1}}", "source_scale.ds.scd: -1 is not a finite number >= 0"),
                           ("{ds: 2}", "source_scale.ds: expected a mapping"),
                           ("[ds]", "source_scale must be a mapping"),
                           ("{road: {mi: 2}}", "source_scale.road.mi: the mi term is off (w_mi 0)")):
        assert main([*_args(dataset, dataset / "bad", 2, "--data", data), "--source_scale", value]) == 2, value
        assert message in capsys.readouterr().err
    assert not (dataset / "bad").exists()  # refused before any run folder is made


def test_train_runs_unchanged_under_torchrun(dataset) -> None:
    import os
    import subprocess
    import sys

    from conftest import ROOT

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "tim_core", *_args(dataset, dataset / "ddp", 4), "--eval_metrics",
           "false", "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("bundle written") == 1  # rank 0 reports and exports
    net = load_bundle(dataset / "ddp" / "bundle")[0]
    assert torch.load(dataset / "ddp" / "checkpoint.pt", weights_only=True)["step"] == 4
    assert all(torch.isfinite(p).all() for p in net.parameters())
