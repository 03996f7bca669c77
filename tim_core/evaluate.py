"""Fusion metrics over IR / visible / fused folders, paired by file stem (`tim eval`, reports, bag replay)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tim_core.files import ImageFileError, pair_paths, read_image
from tim_core.metrics import compute_metrics, select_metrics


def evaluate_folders(
    ir: str | Path,
    vis: str | Path,
    fused: str | Path,
    convention: str = "matlab",
    metrics: list[str] | None = None,
    out_prefix: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Metrics of every fused image against its IR and visible sources; writes PREFIX.csv/.md/.json."""
    names = select_metrics(metrics, convention)  # a bad name fails before any image is read
    per_image: dict[str, dict[str, float]] = {}
    for name, ir_path, vis_path, fused_path in tqdm(
        _triplets(ir, vis, fused), desc=f"eval ({convention})", unit="img", disable=not progress
    ):
        a, b, f = (_read_8bit(p) for p in (ir_path, vis_path, fused_path))
        if not a.shape[:2] == b.shape[:2] == f.shape[:2]:
            sizes = ", ".join(f"{p} ({x.shape[1]}x{x.shape[0]})"
                              for p, x in ((ir_path, a), (vis_path, b), (fused_path, f)))
            raise ImageFileError(f"{sizes}: sizes differ; fuse at the source resolution "
                                 "(or resize the fused image back to it) before evaluating")
        try:
            per_image[name] = compute_metrics(a, b, f, convention, names)
        except ValueError as e:
            raise ImageFileError(f"{fused_path}: {e}") from e
    mean = {m: float(np.mean([v[m] for v in per_image.values()])) for m in names}
    result = {"convention": convention, "n": len(per_image),
              "mean": _finite(mean), "per_image": {k: _finite(v) for k, v in per_image.items()}}
    if out_prefix is not None:
        _write_reports(Path(out_prefix), result, names)
    return result


def mean_table(result: dict) -> str:
    """Markdown table of the means in an evaluate_folders result, convention in its header line."""
    names = list(result["mean"])
    lines = [
        (f"Fusion metrics, convention `{result['convention']}` (see ../shared/docs/METRICS.md), "
         f"mean over {result['n']} image(s)"),
        "",
        "| convention | n | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
        f"| {result['convention']} | {result['n']} | "
        + " | ".join(_fmt(result["mean"][m]) for m in names) + " |",
    ]
    return "\n".join(lines) + "\n"


def _triplets(ir: str | Path, vis: str | Path, fused: str | Path) -> list[tuple[str, Path, Path, Path]]:
    # three files, or three folders matched by stem where every image needs both partners
    iv, unpaired_iv = pair_paths(ir, vis)
    i_f, unpaired_if = pair_paths(ir, fused)  # raises for a mix of files and folders
    if Path(fused).is_file():
        return [(Path(fused).stem, iv[0].a, iv[0].b, Path(fused))]
    unpaired = list(dict.fromkeys(unpaired_iv + unpaired_if))  # a stem only in vis and fused once
    if unpaired:
        shown = "; ".join(f"{stem}: {why}" for stem, why in unpaired[:5])
        more = f" (and {len(unpaired) - 5} more)" if len(unpaired) > 5 else ""
        raise ImageFileError(f"unpaired images: {shown}{more}; every image needs an IR, a visible "
                             "and a fused file with the same stem: add the missing ones or remove "
                             "the extras")
    fused_by_stem = {p.name: p.b for p in i_f}
    return [(p.name, p.a, p.b, fused_by_stem[p.name]) for p in iv]


def _read_8bit(path: Path) -> np.ndarray:
    img = read_image(path)
    if img.dtype != np.uint8:
        raise ImageFileError(f"{path}: {img.dtype} image; the metrics are defined on 8-bit images, "
                             "convert it to 8-bit first")
    return img


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    # NaN (e.g. a correlation with a constant image) becomes null, so the JSON stays standard
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if v == 0 or abs(v) >= 0.01 else f"{v:.3e}"  # Nabf is ~1e-4 or smaller


def _write_reports(prefix: Path, result: dict, names: list[str]) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{prefix}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", *names])
        for name, values in result["per_image"].items():
            writer.writerow([name, *("" if values[m] is None else repr(values[m]) for m in names)])
    Path(f"{prefix}.md").write_text(mean_table(result))
    Path(f"{prefix}.json").write_text(json.dumps(result, indent=1) + "\n")

