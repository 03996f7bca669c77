"""Supernet, derive(), cost model and `tim search` (on a small synthetic paired data set, so it runs anywhere)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tim_core.cli import main
from tim_core.cost import CostModel, LatencyTable, op_key, part_macs, profile
from tim_core.data import is_validation, load_pairs
from tim_core.genotype import Cell, Genotype, load_genotype
from tim_core.losses import fusion_loss
from tim_core.network import FusionNet
from tim_core.search import derive, split_for_search
from tim_core.supernet import DEFAULT_CANDIDATES, SearchSpace, SuperNet

SMALL = ("skip", "conv_1x1", "dw_sep_3x3", "dense_5x5")


def _backward(net: SuperNet, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, size, size), torch.rand(2, 1, size, size)
    out = net(a, b)
    fusion_loss(out, a, b)[0].backward()
    return out


@pytest.mark.parametrize("op", DEFAULT_CANDIDATES)
def test_every_candidate_forward_backward_in_both_cell_types(op: str) -> None:
    net = SuperNet(SearchSpace(width=4, cells=1, positions=1, candidates=(op, "skip")))
    out = _backward(net, 12)  # not a multiple of 4: padded and cropped back
    assert out.shape == (2, 1, 12, 12) and torch.isfinite(out).all()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_full_space_backward_reaches_every_parameter_and_alpha() -> None:
    net = SuperNet(SearchSpace(width=4))
    _backward(net)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(p.grad.abs().sum() > 0 for p in net.arch_parameters())
    assert {id(p) for p in net.weights()}.isdisjoint({id(p) for p in net.arch_parameters()})
    assert len(net.weights()) + 2 == len(list(net.parameters()))


def test_derive_picks_hand_set_alpha() -> None:
    space = SearchSpace(width=8)
    net = SuperNet(space)
    want = [["residual_3x3_d1", "skip"], ["dw_sep_3x3", "eca_k3"]]
    with torch.no_grad():
        for c, ops in enumerate(want):
            for p, name in enumerate(ops):
                net.alpha_ops[c, p, space.candidates.index(name)] = 1.0
        net.alpha_type[0, space.cell_types.index("multiscale")] = 0.5
        net.alpha_type[1, space.cell_types.index("chain")] = 0.5
    g = derive(net.alpha_ops, net.alpha_type, space, "hand")
    assert g.to_dict() == {"name": "hand", "width": 8, "cells": [
        {"type": "multiscale", "ops": want[0]}, {"type": "chain", "ops": want[1]}]}
    assert Genotype.from_json(g.to_json()) == g
    assert FusionNet(g)(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_expected_cost_is_differentiable_and_favours_cheap_ops() -> None:
    space = SearchSpace(width=8, cells=1, positions=1, candidates=SMALL, cell_types=("chain",))
    costs = CostModel(space, (64, 64))  # no table: MACs
    assert costs.unit == "GMAC"
    alpha = torch.zeros(1, 1, len(SMALL), requires_grad=True)
    expected = costs.expected(torch.softmax(alpha, -1), torch.ones(1, 1))
    expected.backward()
    per_op = costs.op_costs("chain")
    assert alpha.grad[0, 0].argmin() == per_op.argmin() and alpha.grad[0, 0].argmax() == per_op.argmax()
    assert per_op[SMALL.index("skip")] == 0
    hard = torch.zeros(1, 1, len(SMALL))
    hard[0, 0, SMALL.index("dense_5x5")] = 1
    g = Genotype("d", 8, (Cell("chain", ("dense_5x5",)),))
    assert costs.expected(hard, torch.ones(1, 1)).item() == pytest.approx(costs.genotype_cost(g))


def _latency(net: FusionNet, size: tuple[int, int], repeats: int = 3) -> float:
    """Minimum seconds of a whole-network forward pass (one thread)."""
    x, best = torch.rand(1, 1, *size), float("inf")
    with torch.inference_mode():
        net.eval()(x, x)
        for _ in range(repeats):
            t = time.perf_counter()
            net(x, x)
            best = min(best, time.perf_counter() - t)
    return best


def test_cost_model_orders_candidates_as_measured_latency(tmp_path: Path) -> None:
    size, space = (96, 128), SearchSpace(width=8, cells=1, positions=1, candidates=SMALL[1:], cell_types=("chain",))
    table = profile([8], space.candidates, space.cell_types, size, threads=1, repeats=3)
    table = LatencyTable.load(table.save(tmp_path / "table.json"))
    measured, macs = CostModel(space, size, table), CostModel(space, size)
    assert measured.unit == "ms" and measured.part(op_key("dense_5x5", 8, 1)) == table.entries["op/dense_5x5/8/1"]
    ops = ("conv_1x1", "dense_5x5")  # 8 vs 150 MACs per pixel and channel: far apart on any CPU
    genotypes = [Genotype(op, 8, (Cell("chain", (op,)),)) for op in ops]
    latency = [_latency(FusionNet(g), size) for g in genotypes]
    assert latency[0] < latency[1]
    for model in (measured, macs):
        assert model.genotype_cost(genotypes[0]) < model.genotype_cost(genotypes[1])
    other_width = CostModel(SearchSpace(width=6, candidates=SMALL), size, table)
    assert other_width.unit == "GMAC"  # table lacks width 6: whole model falls back to MACs, units never mix


def _synthetic_pairs(root: Path, n: int = 16, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("ir", "vi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 3)
        ir = np.clip(base * 400 + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        vi = np.clip(255 - base * 300 + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"p{i:02d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"p{i:02d}.png"), cv2.merge([vi, vi, vi]))
    return root


def test_search_splits_are_disjoint_and_exclude_validation(tmp_path: Path) -> None:
    data = _synthetic_pairs(tmp_path / "ds")
    lower, upper = split_for_search(load_pairs([str(data)], "train", 0.2), 0.5)
    assert lower.names and upper.names and not set(lower.names) & set(upper.names)
    assert not any(is_validation(n.split("/", 1)[1], 0.2) for n in lower.names + upper.names)


def _search_args(tmp_path: Path, out: str) -> list[str]:
    data = _synthetic_pairs(tmp_path / "ds")
    return ["search", "--data", f"[{data}]", "--out", str(tmp_path / out), "--width", "4", "--cells", "1",
            "--candidates", "[skip, conv_1x1, dw_sep_3x3]", "--crop", "16", "--batch", "2", "--warmup_steps", "1",
            "--latency_table", "", "--cost_size", "[32, 32]", "--log_every", "1", "--ckpt_every", "2", "--threads", "1"]


@pytest.mark.parametrize("method", ["ias", "neumann", "darts1"])
def test_tim_search_emits_a_valid_genotype(tmp_path: Path, method: str) -> None:
    assert main([*_search_args(tmp_path, method), "--steps", "3", "--hypergrad", method]) == 0
    out = tmp_path / method
    g = load_genotype(out / "genotype.json")
    assert g.width == 4 and len(g.cells) == 1 and set(g.cells[0].ops) <= {"skip", "conv_1x1", "dw_sep_3x3"}
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log] == [1, 2, 3] and "upper" in log[-1] and "upper" not in log[0]
    assert np.allclose(np.sum(log[-1]["p_ops"], axis=-1), 1.0)
    for png in ("loss_curves", "alpha_ops", "alpha_types", "alpha_over_time"):
        assert cv2.imread(str(out / f"{png}.png")) is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hypergrad"] == method and summary["cost_unit"] == "GMAC" and summary["predicted_cost"] > 0


def test_tim_search_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    assert main([*_search_args(tmp_path, "full"), "--steps", "4"]) == 0
    assert main([*_search_args(tmp_path, "split"), "--steps", "2"]) == 0
    assert main([*_search_args(tmp_path, "split"), "--steps", "4", "--resume"]) == 0
    full, split = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("full", "split"))
    assert split["step"] == 4 and [h["step"] for h in split["extra"]["history"]] == [1, 2, 3, 4]
    for key in ("alpha_ops", "alpha_type"):
        assert torch.allclose(full["states"]["model"][key], split["states"]["model"][key], atol=1e-6)


def test_tim_search_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main([*_search_args(tmp_path, "bad"), "--hypergrad_typo", "x"]) == 2
    assert "unknown key 'hypergrad_typo'" in capsys.readouterr().err
    assert main([*_search_args(tmp_path, "bad"), "--steps", "2", "--resume"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_tim_search_profile_writes_a_table(tmp_path: Path) -> None:
    table = tmp_path / "t.json"
    assert main(["search", "--profile", "--profile_widths", "[4]", "--cost_size", "[16, 16]", "--latency_table",
                 str(table), "--candidates", "[skip, conv_1x1]", "--profile_repeats", "1"]) == 0
    entries = LatencyTable.load(table).entries
    assert {"stem/4", "head/4", "cell_chain/4", "cell_multiscale/4", "op/conv_1x1/4/4"} <= set(entries)
    assert all(v >= 0 for v in entries.values())


def test_space_to_depth_blend_space_searches_and_derives_its_own_kind(tmp_path: Path) -> None:
    """A scale-2 blend-head space: the supernet fuses every size, derive() keeps scale and head, and the cost model
    works at the cells' half resolution (a table profiled for it covers it; its costs are those of the parts)."""
    space = SearchSpace(width=8, cells=1, positions=1, candidates=SMALL, cell_types=("chain",), scale=2,
                        output="blend")
    net = SuperNet(space)
    assert net.multiple == 2 and net.stem[0][1].in_channels == 8 and net.head[-1][1].out_channels == 3
    y = net(torch.rand(1, 1, 13, 18), torch.rand(1, 1, 13, 18))
    assert y.shape == (1, 1, 13, 18) and torch.isfinite(y).all()
    y.mean().backward()
    assert net.alpha_ops.grad is not None and net.alpha_ops.grad.abs().sum() > 0
    g = derive(net.alpha_ops, net.alpha_type, space, "s2b")
    assert (g.scale, g.output) == (2, "blend") and FusionNet(g)(torch.rand(1, 1, 9, 9), torch.rand(1, 1, 9, 9)).shape \
        == (1, 1, 9, 9)
    size = (64, 96)
    table = profile([8], space.candidates, space.cell_types, size, threads=1, repeats=1, scale=2, blend=True)
    assert tuple(table.size) == (32, 48) and "stem/8/s2" in table.entries and "head/8/s2/blend" in table.entries
    measured = CostModel(space, size, LatencyTable.load(table.save(tmp_path / "t.json")))
    assert measured.unit == "ms"
    stem = FusionNet(g).stem  # 8 channels in at 32x48: 2x2 space-to-depth of 2 x 64x96
    assert CostModel(space, size).part("stem/8/s2") == pytest.approx(part_macs(stem, (1, 8, 32, 48)))
    full = CostModel(SearchSpace(width=8, cells=1, positions=1, candidates=SMALL, cell_types=("chain",)), size)
    assert CostModel(space, size).op_costs("chain").sum().item() == pytest.approx(
        full.op_costs("chain").sum().item() / 4, rel=0.01)
    with pytest.raises(ValueError, match="scale 1"):
        measured.genotype_cost(Genotype("full", 8, (Cell("chain", ("conv_1x1",)),)))
