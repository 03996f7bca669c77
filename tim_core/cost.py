"""Cost of a fusion network: a latency lookup table measured on this device (`tim search --profile`), MACs otherwise.

A network's cost is the sum of its parts, each timed alone at the target resolution: the stem and the head,
a cell's skeleton (the pre-process, plus down/up-sampling and SKFF for a multi-scale cell, with skip ops), and
each candidate op at width C on H x W, and for a multi-scale cell also at 2C on H/2 x W/2 and 4C on H/4 x W/4.
Under softmax(alpha) the expected cost is linear in the probabilities, so it is differentiable in alpha.

A space-to-depth network (scale s) runs every part at (H/s, W/s): its table is profiled at that size, its stem
(2 s^2 inputs) and head (s^2 outputs, or the blend head's 3) have keys of their own. The blend head's bilinear
up-sampling and blend at full resolution is the same for every genotype of a space and is not counted.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .genotype import Cell, Genotype
from .network import FusionNet, count_macs, make_cell
from .ops import make_op
from .supernet import SearchSpace
from .threads import torch_threads

SCALES = {"chain": (1,), "multiscale": (1, 2, 4)}


def stem_key(width: int, scale: int = 1) -> str:
    return f"stem/{width}" if scale == 1 else f"stem/{width}/s{scale}"


def head_key(width: int, scale: int = 1, blend: bool = False) -> str:
    return f"head/{width}" + (f"/s{scale}" if scale > 1 else "") + ("/blend" if blend else "")


def skeleton_key(cell_type: str, width: int) -> str:
    return f"cell_{cell_type}/{width}"


def op_key(name: str, width: int, scale: int) -> str:
    return f"op/{name}/{width}/{scale}"


def part_keys(width: int, candidates: tuple[str, ...], cell_types: tuple[str, ...], scale: int = 1,
              blend: bool = False) -> list[str]:
    """Keys of every part a network of this width (and space-to-depth scale and head) can contain."""
    keys = [stem_key(width, scale), head_key(width, scale, blend), *(skeleton_key(t, width) for t in cell_types)]
    scales = sorted({s for t in cell_types for s in SCALES[t]})
    return keys + [op_key(name, width, s) for name in candidates for s in scales]


def build_part(key: str, size: tuple[int, int]) -> tuple[nn.Module, tuple[int, ...]]:
    """The module a key names and the input shape it sees at size (H, W), the cells' resolution."""
    h, w = size
    kind, *rest = key.split("/")
    if kind == "op":
        name, width, scale = rest[0], int(rest[1]), int(rest[2])
        return make_op(name, width * scale), (1, width * scale, h // scale, w // scale)
    width = int(rest[0])
    if kind.startswith("cell_"):
        return make_cell(Cell(kind[len("cell_"):], ("skip",)), width), (1, width, h, w)
    s = int(rest[1][1:]) if len(rest) > 1 and rest[1].startswith("s") else 1
    output = "blend" if rest[-1] == "blend" else "direct"
    probe = FusionNet(Genotype("probe", width, (Cell("chain", ("skip",)),), s, output))
    if kind == "stem":
        return probe.stem, (1, 2 * s * s, h, w)
    return probe.head, (1, width, h, w)


def time_module(module: nn.Module, shape: tuple[int, ...], repeats: int = 5, warmup: bool = True) -> float:
    """Minimum wall time in ms of a forward pass (after a warm-up): on a shared CPU the minimum is the stable one."""
    module.eval()
    x = torch.rand(shape)
    best = float("inf")
    with torch.inference_mode():
        if warmup:
            module(x)
        for _ in range(repeats):
            t = time.perf_counter()
            module(x)
            best = min(best, time.perf_counter() - t)
    return best * 1e3


class _Probe(nn.Module):
    """Adapts a part to count_macs' (ir, vis) calling convention: ignores them, feeds zeros of the part's shape."""

    def __init__(self, part: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.part, self.shape = part, shape

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.part(torch.zeros(self.shape))


def part_macs(module: nn.Module, shape: tuple[int, ...]) -> float:
    """GMACs of one forward of a part on an input of `shape`."""
    return count_macs(_Probe(module, shape), 1, 1) / 1e9


@dataclass
class LatencyTable:
    """Measured ms per part (keys from stem_key / head_key / skeleton_key / op_key) on one device and size."""

    size: tuple[int, int]
    threads: int
    entries: dict[str, float] = field(default_factory=dict)
    device: str = field(default_factory=lambda: f"{platform.machine()} {platform.processor() or ''} cpu".strip())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"size": list(self.size), "threads": self.threads, "device": self.device, "torch": torch.__version__,
                "statistic": "min over round-robin repeats, ms", "entries": self.entries}
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text())
            return cls(tuple(data["size"]), int(data["threads"]), dict(data["entries"]), data.get("device", "?"))
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a latency table ({e}); rebuild it with `tim search --profile`") from None


def cell_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The resolution a space-to-depth network's stem, cells and head run at, for frames of `size`."""
    return (size[0] // scale, size[1] // scale)


def profile(widths: list[int], candidates: tuple[str, ...], cell_types: tuple[str, ...], size: tuple[int, int],
            threads: int = 2, repeats: int = 5, progress: Callable[[str], None] | None = None, scale: int = 1,
            blend: bool = False) -> LatencyTable:
    """Time every part at every width on this CPU with `threads` torch threads (frames of `size`; a space-to-depth
    space's table is measured, and stored, at its cells' resolution size / scale)."""
    keys = [k for width in widths for k in part_keys(width, tuple(candidates), tuple(cell_types), scale, blend)]
    size = cell_size(size, scale)
    parts = {k: build_part(k, size) for k in keys}
    best = dict.fromkeys(keys, float("inf"))
    with torch_threads(threads):
        # Round-robin over the parts: each part's samples spread over the whole run, so a burst of load from
        # other processes cannot inflate every sample of one part.
        for r in range(repeats):
            for k, (module, shape) in parts.items():
                best[k] = min(best[k], time_module(module, shape, repeats=1, warmup=r == 0))
                if progress and r == repeats - 1:
                    progress(k)
    return LatencyTable(tuple(size), threads, {k: round(v, 4) for k, v in best.items()})


class CostModel:
    """Per-part costs of one search space in ms (from a table covering it) or else GMACs; see the module docstring."""

    def __init__(self, space: SearchSpace, size: tuple[int, int], table: LatencyTable | None = None):
        self.space, self.size = space, cell_size(tuple(size), space.scale)
        self.blend = space.output == "blend"
        keys = set(part_keys(space.width, space.candidates, space.cell_types, space.scale, self.blend))
        self.measured = table is not None and tuple(table.size) == self.size and keys <= set(table.entries)
        self.unit = "ms" if self.measured else "GMAC"
        self._table = table.entries if self.measured else {}
        self._macs: dict[str, float] = {}

    def part(self, key: str) -> float:
        """Cost of one part by key (MACs computed on first use when there is no table)."""
        if self.measured:
            return self._table[key]
        if key not in self._macs:
            self._macs[key] = part_macs(*build_part(key, self.size))
        return self._macs[key]

    def fixed(self) -> float:
        """Stem + head: the cost every genotype of this width pays (the unit of the search's cost penalty)."""
        w, s = self.space.width, self.space.scale
        return self.part(stem_key(w, s)) + self.part(head_key(w, s, self.blend))

    def op_costs(self, cell_type: str) -> torch.Tensor:
        """Cost of each candidate in one position of a cell of this type (summed over the cell's scales)."""
        w = self.space.width
        return torch.tensor([sum(self.part(op_key(n, w, s)) for s in SCALES[cell_type]) for n in self.space.candidates])

    def expected(self, p_ops: torch.Tensor, p_type: torch.Tensor) -> torch.Tensor:
        """E[cost] under probabilities p_ops (cells, positions, candidates) and p_type (cells, types)."""
        total = torch.tensor(self.fixed())
        for t_index, t in enumerate(self.space.cell_types):
            per_cell = self.part(skeleton_key(t, self.space.width)) + (p_ops @ self.op_costs(t).to(p_ops)).sum(-1)
            total = total + (p_type[:, t_index] * per_cell).sum()
        return total

    def genotype_cost(self, genotype: Genotype) -> float:
        """Predicted cost of a derived genotype of this width: the sum of its parts."""
        if (genotype.width, genotype.scale, genotype.output) != (self.space.width, self.space.scale, self.space.output):
            raise ValueError(f"genotype {genotype.name!r} has width {genotype.width}, scale {genotype.scale}, output "
                             f"{genotype.output}; cost model {self.space.width}, {self.space.scale}, "
                             f"{self.space.output}")
        w = genotype.width
        cost = self.fixed()
        for cell in genotype.cells:
            cost += self.part(skeleton_key(cell.type, w))
            cost += sum(self.part(op_key(n, w, s)) for n in cell.ops for s in SCALES[cell.type])
        return cost
