"""A fusion architecture as data: width and cells, each cell a chain of named operations; JSON in/out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .ops import OPS

CELL_TYPES = ("multiscale", "chain")
MAX_WIDTH, MAX_CELLS, MAX_OPS = 512, 32, 16  # bounds on genotypes read from disk (a few MB of weights at most)
GENOTYPE_DIR = Path(__file__).resolve().parent / "genotypes"


class GenotypeError(ValueError):
    """An invalid genotype; the message names the field and the valid values."""


@dataclass(frozen=True)
class Cell:
    """One cell: 'multiscale' (chain at scales 1, 1/2, 1/4 merged by SKFF) or 'chain' (plain)."""

    type: str
    ops: tuple[str, ...]


SCALES = (1, 2, 4)  # space-to-depth factors a genotype may use
OUTPUTS = ("direct", "blend")  # what the head predicts: the fused luma, or local blend coefficients of the sources


@dataclass(frozen=True)
class Genotype:
    """TIM's fusion network N_F as data: stem 2->2C->C, the cells at width C, head C->C->C/2->1.

    `scale` s > 1 runs stem, cells and head on the s x s space-to-depth of the input (pixel_unshuffle: 2 s^2 channels
    at 1/s resolution, no pixel dropped) and rearranges the head's s^2 outputs back to full resolution
    (pixel_shuffle): per layer s^2 fewer pixels, so a width s x C network costs about what width C costs at full
    resolution in MACs, with s^2 more weights per layer and s times the receptive field. TIM's genotypes use s = 1.

    `output` "direct" (TIM's) has the head predict the fused luma. "blend" has it predict three coefficient maps
    a, b, r at 1/s resolution, up-sampled bilinearly to full resolution, and fuses
    F = (1/2 + a) * ir + (1/2 + b) * vis + r: a locally affine blend of the full-resolution sources (as a guided
    filter or HDRNet's bilateral grid applies smooth coefficients to a sharp image), so a network at 1/s resolution
    keeps every source edge at full resolution and spends its capacity on where to follow which source."""

    name: str
    width: int
    cells: tuple[Cell, ...]
    scale: int = 1
    output: str = "direct"

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise GenotypeError(f"genotype {self.name!r}: output must be one of {', '.join(OUTPUTS)}, got "
                                f"{self.output!r}")
        if self.scale not in SCALES or isinstance(self.scale, bool):
            raise GenotypeError(f"genotype {self.name!r}: scale must be one of {SCALES}, got {self.scale!r}")
        if (not isinstance(self.width, int) or isinstance(self.width, bool) or not 4 <= self.width <= MAX_WIDTH
                or self.width % 2):
            raise GenotypeError(
                f"genotype {self.name!r}: width must be an even integer in [4, {MAX_WIDTH}], got {self.width!r}")
        if not self.cells:
            raise GenotypeError(f"genotype {self.name!r}: needs at least one cell")
        if len(self.cells) > MAX_CELLS:
            raise GenotypeError(f"genotype {self.name!r}: {len(self.cells)} cells, at most {MAX_CELLS}")
        for i, cell in enumerate(self.cells):
            if cell.type not in CELL_TYPES:
                raise GenotypeError(
                    f"genotype {self.name!r}: cells[{i}].type {cell.type!r} is unknown; valid: {', '.join(CELL_TYPES)}")
            if not cell.ops:
                raise GenotypeError(f"genotype {self.name!r}: cells[{i}].ops is empty")
            if len(cell.ops) > MAX_OPS:
                raise GenotypeError(f"genotype {self.name!r}: cells[{i}] has {len(cell.ops)} ops, at most {MAX_OPS}")
            for op in cell.ops:
                if not isinstance(op, str) or op not in OPS:
                    raise GenotypeError(
                        f"genotype {self.name!r}: cells[{i}] has unknown operation {op!r}; valid: {', '.join(OPS)}")

    @property
    def multiscale(self) -> bool:
        """True when a cell runs at 1/4 scale, so inputs are padded to a multiple of 4."""
        return any(c.type == "multiscale" for c in self.cells)

    def to_dict(self) -> dict:
        out = {"name": self.name, "width": self.width,
               "cells": [{"type": c.type, "ops": list(c.ops)} for c in self.cells]}
        if self.scale != 1:  # absent at 1: fingerprints of full-resolution genotypes stay what they were
            out["scale"] = self.scale
        if self.output != "direct":  # likewise absent for TIM's direct head
            out["output"] = self.output
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def fingerprint(self) -> str:
        """SHA-256 of the architecture (name excluded): weights record it so a mismatch is caught."""
        arch = {k: v for k, v in self.to_dict().items() if k != "name"}
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict, source: str = "genotype") -> "Genotype":
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object with name, width, cells")
        unknown = set(data) - {"name", "width", "cells", "scale", "output", "notes"}
        if unknown:
            raise GenotypeError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}; valid: name, width, cells, "
                                "scale, output")
        for key in ("width", "cells"):
            if key not in data:
                raise GenotypeError(f"{source}: missing field {key!r}")
        if not isinstance(data["cells"], list):
            raise GenotypeError(f"{source}: 'cells' must be a list of {{type, ops}} objects, got {data['cells']!r}")
        cells = []
        for i, c in enumerate(data["cells"]):
            if not isinstance(c, dict) or set(c) != {"type", "ops"}:
                raise GenotypeError(f"{source}: cells[{i}] must be an object with exactly 'type' and 'ops'")
            if not isinstance(c["type"], str) or not isinstance(c["ops"], list):
                raise GenotypeError(f"{source}: cells[{i}] needs 'type' a string and 'ops' a list of operation names")
            if not all(isinstance(op, str) for op in c["ops"]):
                raise GenotypeError(f"{source}: cells[{i}].ops must hold operation names (strings); valid: "
                                    f"{', '.join(OPS)}")
            cells.append(Cell(c["type"], tuple(c["ops"])))
        name = data.get("name", Path(source).stem)
        if not isinstance(name, str):
            raise GenotypeError(f"{source}: 'name' must be a string, got {name!r}")
        return cls(name, data["width"], tuple(cells), data.get("scale", 1), data.get("output", "direct"))

    @classmethod
    def from_json(cls, text: str, source: str = "genotype") -> "Genotype":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"{source}: not valid JSON ({e})") from None
        except RecursionError:
            raise GenotypeError(f"{source}: JSON nested too deeply") from None
        return cls.from_dict(data, source)


def builtin_genotypes() -> list[str]:
    """Names of the genotypes shipped with tim_core (e.g. tim_ivif, tim_light)."""
    return sorted(p.stem for p in GENOTYPE_DIR.glob("*.json"))


def load_genotype(name_or_path: str | Path) -> Genotype:
    """Load a built-in genotype by name, or a genotype JSON file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        builtin = GENOTYPE_DIR / f"{name_or_path}.json"
        if not builtin.is_file():
            raise GenotypeError(
                f"{name_or_path}: no such genotype file or built-in name; built-in: {', '.join(builtin_genotypes())}")
        path = builtin
    return Genotype.from_json(path.read_text(), str(path))
