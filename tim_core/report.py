"""Validation report of a bundle: fuse the held-back split, score it and two baselines, record it in the card.

The baselines are the pixel-wise mean and max of IR and visible luma (rounded to 8 bits), scored
with the same `tim eval` code and convention, so the model card compares like with like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from .bundle import update_card
from .data import is_validation, resolve_layout, source_name
from .evaluate import evaluate_folders
from .files import pair_paths, read_image, write_image
from .metrics import FAST_METRICS, to_gray
from .runtime import Fuser


def write_validation_split(data: list[str], val_fraction: float, out: Path, limit: int = 0) -> list[str]:
    """Copy the validation pairs as out/ir/NAME.png and out/vis/NAME.png; returns the names."""
    names = []
    for spec in data:
        a_dir, b_dir = resolve_layout(spec)
        prefix = source_name(spec)
        for p in pair_paths(a_dir, b_dir)[0]:
            if not is_validation(p.name, val_fraction) or (limit and len(names) >= limit):
                continue
            name = f"{prefix}_{p.name}"
            write_image(out / "ir" / f"{name}.png", read_image(p.a))
            write_image(out / "vis" / f"{name}.png", read_image(p.b))
            names.append(name)
    return names


def write_baselines(out: Path, names: list[str]) -> None:
    """Pixel-wise mean and max of IR and visible luma (the luma the matlab metrics use)."""
    for name in names:
        a = to_gray(read_image(out / "ir" / f"{name}.png"), "matlab")
        b = to_gray(read_image(out / "vis" / f"{name}.png"), "matlab")
        write_image(out / "mean" / f"{name}.png", np.round((a + b) / 2).astype(np.uint8))
        write_image(out / "max" / f"{name}.png", np.round(np.maximum(a, b)).astype(np.uint8))


def evaluate_on_validation(bundle: Path, data: list[str], val_fraction: float, out: Path, limit: int = 0,
                           convention: str = "matlab") -> dict:
    """Fuse the validation split with `bundle`, score model and baselines, write them into the card."""
    names = write_validation_split(data, val_fraction, out, limit)
    fuser = Fuser(bundle, device="cpu")
    for name in tqdm(names, desc="fusing validation split", unit="pair"):
        ir, vis = read_image(out / "ir" / f"{name}.png"), read_image(out / "vis" / f"{name}.png")
        write_image(out / "fused" / f"{name}.png", fuser(ir, vis).fused)
    write_baselines(out, names)
    table = {}
    for kind in ("fused", "mean", "max"):
        res = evaluate_folders(out / "ir", out / "vis", out / kind, convention=convention, metrics=list(FAST_METRICS),
                               out_prefix=out / f"metrics_{kind}")
        table["model" if kind == "fused" else f"baseline_{kind}"] = res["mean"]
    validation = {"convention": convention, "n": len(names), "images": str(out), **table}
    update_card(bundle, validation=validation)
    return validation
