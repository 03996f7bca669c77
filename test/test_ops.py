"""Every operation and both cells: shapes, finite values, gradients reach every parameter (timm style)."""

from __future__ import annotations

import pytest
import torch

from tim_core.genotype import Cell
from tim_core.network import ChainCell, MultiScaleCell, make_cell
from tim_core.ops import OPS, SKFF, BlurPool, ResidualDown, ResidualUp, make_op


def _check_backward(module: torch.nn.Module, out: torch.Tensor) -> None:
    out.square().mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"


@pytest.mark.parametrize("name", list(OPS))
def test_op_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    op = make_op(name, 8)
    x = torch.randn(2, 8, 13, 11, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    if name == "skip":
        assert torch.equal(y, x)
    _check_backward(op, y) if list(op.parameters()) else None


def test_unknown_op_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid: .*residual_3x3_d1"):
        make_op("residual_7x7", 8)


@pytest.mark.parametrize("cell_type", ["multiscale", "chain"])
@pytest.mark.parametrize("ops", [("residual_3x3_d1", "dil_conv_3x3_d2"), ("dense_3x3", "spatial_k3")])
def test_cells(cell_type: str, ops: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    cell = make_cell(Cell(cell_type, ops), 8)
    assert isinstance(cell, MultiScaleCell if cell_type == "multiscale" else ChainCell)
    x = torch.randn(2, 8, 16, 12)
    y = cell(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    _check_backward(cell, y)


def test_building_blocks_shapes() -> None:
    x = torch.randn(1, 8, 16, 20)
    assert BlurPool(8)(x).shape == (1, 8, 8, 10)
    assert ResidualDown(8)(x).shape == (1, 16, 8, 10)
    assert ResidualUp(8)(x).shape == (1, 4, 32, 40)
    fused = SKFF(8)([x, x, x])
    assert torch.allclose(fused, x, atol=1e-5)  # softmax weights sum to one over identical branches


def test_blurpool_is_a_lowpass_of_constant() -> None:
    x = torch.full((1, 3, 8, 8), 0.7)
    assert torch.allclose(BlurPool(3)(x), torch.full((1, 3, 4, 4), 0.7))
