"""Paired-folder fusion data sets: layouts, the deterministic validation split, crops and flips.

A data set root holds two modality folders whose files match by stem. Known layouts (first match wins):
ir/vi, ir/vis (MSRS, RoadScene, M3FD, TNO, LLVIP), mri/ct, mri/pet, mri/spect (medical), under/over
(multi-exposure), near/far (multi-focus); or name them explicitly as "ROOT:A_DIR,B_DIR".

Benchmark pairs are never trained on: every `*.txt` in a `benchmarks/` folder beside a data set root whose
name starts with the root's name (e.g. `../shared/data/benchmarks/roadscene50.txt` for `roadscene/`) lists
stems that the 'train' and 'all' splits leave out; the 'val' split keeps them (they only score).

Intensities: 8-bit is divided by 255; 16-bit thermal is stretched per image from its 1st to 99th
percentile (robust to hot pixels, the same rule as `Fuser(ir_norm="percentile")`). Colour images are
fused in luma (BT.601 Y), the convention of TIM and of the metrics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .color import luma, to_unit
from .files import ImageFileError, pair_paths, read_image

LAYOUTS = (("ir", "vi"), ("ir", "vis"), ("mri", "ct"), ("mri", "pet"), ("mri", "spect"),
           ("under", "over"), ("near", "far"), ("a", "b"))


def is_validation(name: str, fraction: float = 0.2) -> bool:
    """Deterministic split by name hash: the same file is always on the same side, on every machine."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2 ** 32 < fraction


def benchmark_names(root: Path) -> set[str]:
    """Stems of the published benchmark pairs of data set `root` (see the module docstring)."""
    bench = Path(root).parent / "benchmarks"
    names: set[str] = set()
    if bench.is_dir():
        for f in sorted(bench.glob(f"{Path(root).name}*.txt")):
            names.update(line.strip() for line in f.read_text().splitlines() if line.strip())
    return names


def resolve_layout(spec: str) -> tuple[Path, Path]:
    """'ROOT' (auto-detected layout) or 'ROOT:A_DIR,B_DIR' -> the two modality folders."""
    if ":" in spec and "," in spec.rsplit(":", 1)[1]:
        root, sub = spec.rsplit(":", 1)
        a, b = sub.split(",", 1)
        return Path(root) / a, Path(root) / b
    root = Path(spec)
    if not root.is_dir():
        raise ImageFileError(f"{root}: data set folder not found")
    for a, b in LAYOUTS:
        if (root / a).is_dir() and (root / b).is_dir():
            return root / a, root / b
    raise ImageFileError(f"{root}: no known modality folders ({', '.join('/'.join(p) for p in LAYOUTS)}); "
                         "name them as ROOT:A_DIR,B_DIR")


def load_unit_gray(path: Path) -> np.ndarray:
    """An image file as float32 luma in [0, 1] by the rules in the module docstring."""
    img = read_image(path)
    unit = to_unit(img, "percentile")
    return luma(unit) if unit.ndim == 3 else unit


@dataclass
class PairSet:
    """In-memory list of (name, A, B) float32 luma planes of one split."""

    names: list[str]
    a: list[np.ndarray]
    b: list[np.ndarray]
    target: list[np.ndarray] | None = None  # optional third plane per pair (a teacher's fused luma), cropped alike

    def __len__(self) -> int:
        return len(self.names)


def source_name(spec: str) -> str:
    """A data set's name, its folder's ('../shared/data/msrs:ir,vi' -> 'msrs'): the prefix of its pair names."""
    return Path(spec.split(":")[0]).name


def load_pairs(specs: list[str], split: str = "train", val_fraction: float = 0.2,
               min_size: int = 0) -> PairSet:
    """Load every pair of the given data sets on one side of the name-hash split ('train', 'val' or 'all')."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"unknown split {split!r}; valid: train, val, all")
    names, a_list, b_list = [], [], []
    for spec in specs:
        a_dir, b_dir = resolve_layout(spec)
        pairs, _unpaired = pair_paths(a_dir, b_dir)
        held_out = benchmark_names(Path(spec.split(":")[0])) if split != "val" else set()
        for p in pairs:
            if split != "all" and is_validation(p.name, val_fraction) != (split == "val"):
                continue
            if p.name in held_out:
                continue
            a, b = load_unit_gray(p.a), load_unit_gray(p.b)
            if a.shape != b.shape:
                raise ImageFileError(f"{p.a} {a.shape} and {p.b} {b.shape}: pair sizes differ; register them first")
            if min(a.shape) < min_size:
                continue
            names.append(f"{source_name(spec)}/{p.name}")
            a_list.append(a)
            b_list.append(b)
    if not names:
        raise ImageFileError(f"no {split} pairs found in {', '.join(specs)}")
    return PairSet(names, a_list, b_list)


def sample_batch(data: PairSet, batch: int, crop: int, generator: torch.Generator,
                 with_index: bool = False) -> tuple[torch.Tensor, ...]:
    """A batch of random crops with random flips, (N, 1, crop, crop) each; fully determined by `generator`.

    Returns (A, B), or (A, B, target) when the set carries a target plane (distillation); with_index appends the
    (N,) indices of the pairs drawn (the same draws either way).
    """
    idx = torch.randint(len(data), (batch,), generator=generator).tolist()
    planes = [data.a, data.b] + ([data.target] if data.target is not None else [])
    outs = [torch.empty(batch, 1, crop, crop) for _ in planes]
    for i, k in enumerate(idx):
        h, w = data.a[k].shape
        ch, cw = min(crop, h), min(crop, w)
        y = int(torch.randint(h - ch + 1, (1,), generator=generator))
        x = int(torch.randint(w - cw + 1, (1,), generator=generator))
        patches = [torch.from_numpy(p[k][y:y + ch, x:x + cw]) for p in planes]
        if (ch, cw) != (crop, crop):  # small images: resize the crop up rather than pad with fake content
            patches = [torch.nn.functional.interpolate(p[None, None], (crop, crop), mode="bilinear")[0, 0]
                       for p in patches]
        flips = torch.rand(2, generator=generator)
        if flips[0] < 0.5:
            patches = [p.flip(-1) for p in patches]
        if flips[1] < 0.5:
            patches = [p.flip(-2) for p in patches]
        for out, p in zip(outs, patches):
            out[i, 0] = p
    return (*outs, torch.tensor(idx)) if with_index else tuple(outs)


def center_crops(data: PairSet, crop: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed centre crops of the first `limit` pairs: the validation batch for a stable val loss."""
    a_out, b_out = [], []
    for a, b in list(zip(data.a, data.b))[:limit]:
        h, w = a.shape
        ch, cw = min(crop, h), min(crop, w)
        y, x = (h - ch) // 2, (w - cw) // 2
        a_out.append(torch.from_numpy(np.ascontiguousarray(a[y:y + ch, x:x + cw])))
        b_out.append(torch.from_numpy(np.ascontiguousarray(b[y:y + ch, x:x + cw])))
    size = min(t.shape for t in a_out)
    a_t = torch.stack([t[: size[0], : size[1]] for t in a_out])[:, None]
    b_t = torch.stack([t[: size[0], : size[1]] for t in b_out])[:, None]
    return a_t, b_t
