"""The demo report's images: per-frame latency, the node's stages, and a zoomed crop of each pair (PNG, OpenCV)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tim_core.files import read_image, write_image
from tim_core.plots import stacked_bars, timeline_plot

# The node's /diagnostics stage keys (STAGE_ms_p50 / _p95) in pipeline order, with what each one times.
STAGES = {
    "decode": "decode (message to array)",
    "prepare_finish": "prepare (YCbCr, pad, crop)",
    "fuse": "fuse (network)",
    "tasks": "task heads",
    "encode": "encode (array to message)",
    "publish": "publish (all outputs)",
}
END_TO_END = "end_to_end"  # header stamp -> outputs published, measured inside the node
CROP_FRACTION = 0.25  # crop side as a fraction of the shorter image side


def stage_ms(summary: dict, stage: str, pct: str) -> float | None:
    """A node stage's p50 or p95 in ms from an eval.json summary, None when the node did not report it."""
    return summary["node_stage_ms"].get(f"{stage}_ms_{pct}")


def latency_plot(summary: dict, path: Path) -> Path:
    """End-to-end latency of every fused pair over the replay, unanswered pairs marked at their publish time."""
    frames = summary["frames"]
    fused = [f for f in frames if f["latency_ms"] is not None]
    events: dict[str, list[float]] = {}
    for f in frames:
        if f["latency_ms"] is None:
            events.setdefault(f["status"], []).append(f["published_s"])
    lat = summary["latency_ms"]
    return timeline_plot(  # seconds: round tick labels from a GPU's 0.02 to a loaded CPU's 4
        {"fused pair": ([f["published_s"] for f in fused], [f["latency_ms"] / 1e3 for f in fused])},
        path,
        "End-to-end latency per pair, s (fused image received - pair published)",
        "pair published at (s since the first pair)",
        "s",
        events=events,
        levels={"p50": lat["p50"] / 1e3, "p95": lat["p95"] / 1e3},
    )


def stage_plot(summary: dict, path: Path) -> Path:
    """The node's stages stacked, p50 and p95 bars, each marked with the node's end-to-end latency."""
    bars, marks = {}, {}
    for pct in ("p50", "p95"):
        bars[pct] = {label: stage_ms(summary, s, pct) or 0.0 for s, label in STAGES.items()}
        end = stage_ms(summary, END_TO_END, pct)
        if end is not None:
            marks[pct] = ("end to end", end)
    return stacked_bars(bars, path, "Node stages (ms, from /diagnostics; each stage's own percentile)", "ms",
                        marks=marks)


def crop_box(img: np.ndarray, fraction: float = CROP_FRACTION) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the square window with the highest gradient energy (Sobel magnitude squared)."""
    grey = img if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    grey = grey.astype(np.float32)
    energy = cv2.Sobel(grey, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(grey, cv2.CV_32F, 0, 1) ** 2
    h, w = grey.shape
    side = max(8, min(h, w, round(min(h, w) * fraction)))
    window = cv2.boxFilter(energy, -1, (side, side), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    valid = window[: h - side + 1, : w - side + 1]  # windows that lie inside the image (anchor: top-left)
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(x), int(y), side, side


def write_crops(eval_dir: Path, name: str, out: Path, kinds: tuple[str, ...] = ("ir", "vis", "fused")) -> dict:
    """The same crop box (from the fused image) cut from each kind; returns {"box": (x, y, w, h), kind: path}."""
    fused = read_image(eval_dir / "fused" / f"{name}.png")
    x, y, w, h = crop_box(fused)
    crops: dict = {"box": (x, y, w, h), "size": fused.shape[1::-1]}
    for kind in kinds:
        src = eval_dir / kind / f"{name}.png"
        if src.is_file():
            crops[kind] = out / f"{name}_{kind}.png"
            write_image(crops[kind], read_image(src)[y : y + h, x : x + w])
    return crops
