"""The search network: FusionNet's stem, cells and head with a mixed operation per position and weights alpha.

Each cell position computes sum_k softmax(alpha_ops)_k * op_k(x) over the candidate operations, and each cell
whose type is searched computes softmax(alpha_type)-weighted outputs of a plain chain and a multi-scale cell
(the ops' alpha is shared by both, as a derived cell uses the same ops at every scale). Width is not mixed:
it is an outer sweep (docs/search_report.md), because the stem and head, not the cells, set the cost at small
widths and a differentiable width would need channel masks through every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .genotype import CELL_TYPES, Cell, Genotype
from .network import head_outputs, make_head, make_stem, pad_to_multiple, to_cells, to_fused
from .ops import COMPACT_OPS, PUBLISHED_OPS, SKFF, ReLUConvBN, ResidualDown, ResidualUp, make_op

DEFAULT_CANDIDATES = PUBLISHED_OPS + COMPACT_OPS


@dataclass(frozen=True)
class SearchSpace:
    """Width, number of cells, positions (ops) per cell, candidate ops and the cell types a cell may take."""

    width: int = 8
    cells: int = 2
    positions: int = 2
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    cell_types: tuple[str, ...] = CELL_TYPES  # ("multiscale", "chain"): both searched; one entry: fixed
    scale: int = 1  # space-to-depth factor and head of the networks searched (genotype.py), not searched
    output: str = "direct"

    def __post_init__(self) -> None:
        # validates width, names, scale and output
        Genotype("search_space", self.width, (Cell("chain", tuple(self.candidates)),), self.scale, self.output)
        if self.cells < 1 or self.positions < 1:
            raise ValueError(f"search space needs cells >= 1 and positions >= 1, got {self.cells}, {self.positions}")
        bad = [t for t in self.cell_types if t not in CELL_TYPES]
        if bad or not self.cell_types:
            raise ValueError(f"cell_types {list(self.cell_types)}: each must be one of {', '.join(CELL_TYPES)}")


class MixedOp(nn.Module):
    """sum_k w_k op_k(x) over the candidates, all C -> C at the same resolution."""

    def __init__(self, c: int, candidates: tuple[str, ...]):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, c) for name in candidates)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class MixedChain(nn.Module):
    """One MixedOp per position, applied in sequence; weights (positions, candidates)."""

    def __init__(self, c: int, space: SearchSpace):
        super().__init__()
        self.positions = nn.ModuleList(MixedOp(c, space.candidates) for _ in range(space.positions))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        for mixed, w in zip(self.positions, weights):
            x = mixed(x, w)
        return x


class SuperCell(nn.Module):
    """Shared pre-process, then the softmax(alpha_type) mixture of the allowed cell types (network.py's wiring)."""

    def __init__(self, c: int, space: SearchSpace):
        super().__init__()
        self.types = space.cell_types
        self.pre = ReLUConvBN(c)
        if "chain" in self.types:
            self.chain = MixedChain(c, space)
        if "multiscale" in self.types:
            self.down2 = ResidualDown(c)
            self.down4 = nn.Sequential(ResidualDown(c), ResidualDown(2 * c))
            self.scales = nn.ModuleList(MixedChain(w, space) for w in (c, 2 * c, 4 * c))
            self.up2 = ResidualUp(2 * c)
            self.up4 = nn.Sequential(ResidualUp(4 * c), ResidualUp(2 * c))
            self.skff = SKFF(c)

    def forward(self, x: torch.Tensor, w_ops: torch.Tensor, w_type: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        out = 0.0
        for t, w in zip(self.types, w_type):
            if t == "chain":
                out = out + w * self.chain(x, w_ops)
            else:
                s0 = self.scales[0](x, w_ops)
                s1 = self.up2(self.scales[1](self.down2(x), w_ops))
                s2 = self.up4(self.scales[2](self.down4(x), w_ops))
                out = out + w * (x + self.skff([s0, s1, s2]))
        return out


class SuperNet(nn.Module):
    """FusionNet with SuperCells; `weights()` are theta (lower level), `arch_parameters()` are alpha (upper)."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        c = space.width
        self.scale, self.blend = space.scale, space.output == "blend"
        self.stem = make_stem(c, 2 * self.scale * self.scale)
        self.cells = nn.ModuleList(SuperCell(c, space) for _ in range(space.cells))
        self.head = make_head(c, head_outputs(self.scale, self.blend))
        # DARTS initialisation: near-uniform mixtures, small noise breaks ties between identical candidates.
        self.alpha_ops = nn.Parameter(1e-3 * torch.randn(space.cells, space.positions, len(space.candidates)))
        self.alpha_type = nn.Parameter(torch.zeros(space.cells, len(space.cell_types)))
        self.multiple = space.scale * (4 if "multiscale" in space.cell_types else 1)

    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha: op logits (cells, positions, candidates) and cell-type logits (cells, types)."""
        return [self.alpha_ops, self.alpha_type]

    def weights(self) -> list[nn.Parameter]:
        """theta: every parameter except alpha."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(alpha) over candidates and over cell types (differentiable)."""
        return torch.softmax(self.alpha_ops, dim=-1), torch.softmax(self.alpha_type, dim=-1)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(torch.cat((ir, vis), dim=1), self.multiple)
        p_ops, p_type = self.probabilities()
        y = self.stem(to_cells(x, self.scale))
        for cell, w_ops, w_type in zip(self.cells, p_ops, p_type):
            y = cell(y, w_ops, w_type)
        return to_fused(self.head(y), x, self.scale, self.blend)[..., :h, :w]
