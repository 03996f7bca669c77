"""Curves and tables of the PMI study from bench/results/meta_experiment.json (OpenCV drawing, no matplotlib).

Usage: python bench/meta_plot.py [--results bench/results/meta_experiment.json] [--png docs/meta_curves.png]
(the default figure follows the results file: meta_experiment_20x_adam.json -> docs/meta_curves_20x_adam.png)
Draws one row per held-out task and one column per measure (validation loss, MI, VIF, Qabf) against K,
mean over seeds with +-1 standard deviation bars and the mean/max baselines dashed; prints the Markdown
tables of docs/meta_report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("loss", "MI", "VIF", "Qabf")
COLOURS = {"random": (150, 150, 150), "joint": (200, 120, 0), "irvis_only": (0, 160, 0), "meta": (0, 0, 220)}  # BGR
PANEL_W, PANEL_H, MARGIN = 330, 230, 48
FONT = cv2.FONT_HERSHEY_SIMPLEX


def stats(results: dict) -> dict:
    """{held: {method: {K: {measure: (mean, std, values)}}}} over seeds."""
    table: dict = {}
    for key, cell in results["cells"].items():
        held = key.split("/")[0]
        for method, curve in cell["curves"].items():
            for k, scores in curve.items():
                for m in MEASURES:
                    table.setdefault(held, {}).setdefault(method, {}).setdefault(int(k), {}).setdefault(m, []).append(
                        scores[m]
                    )
    return {
        h: {
            me: {k: {m: (float(np.mean(v)), float(np.std(v)), v) for m, v in by_m.items()} for k, by_m in by_k.items()}
            for me, by_k in by_me.items()
        }
        for h, by_me in table.items()
    }


def _dashed(img: np.ndarray, y: int, x0: int, x1: int, colour: tuple) -> None:
    for x in range(x0, x1, 10):
        cv2.line(img, (x, y), (min(x + 5, x1), y), colour, 1, cv2.LINE_AA)


def draw_panel(img: np.ndarray, ox: int, oy: int, title: str, series: dict, ks: list[int], lines: dict) -> None:
    """One measure against K (categorical axis) for each method, with error bars and baseline lines."""
    x0, y0, x1, y1 = ox + MARGIN, oy + 24, ox + PANEL_W - 12, oy + PANEL_H - 28
    vals = [m + s * d for pts in series.values() for m_s in pts.values() for m, s in [m_s[:2]] for d in (-1, 1)]
    vals += list(lines.values())
    lo, hi = min(vals), max(vals)
    pad = 0.08 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad

    def px(i: int) -> int:
        return int(x0 + (x1 - x0) * (i + 0.5) / len(ks))

    def py(v: float) -> int:
        return int(y1 - (y1 - y0) * (v - lo) / (hi - lo))

    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    cv2.putText(img, title, (x0, oy + 16), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, k in enumerate(ks):
        cv2.putText(img, f"K={k}", (px(i) - 16, y1 + 16), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for frac in (0.0, 0.5, 1.0):
        v = lo + pad + frac * (hi - lo - 2 * pad)
        cv2.putText(img, f"{v:.3g}", (ox + 2, py(v) + 4), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    for j, (name, v) in enumerate(sorted(lines.items(), key=lambda kv: kv[1])):
        _dashed(img, py(v), x0, x1, (110, 110, 110))
        dy = 11 if j == 0 and len(lines) > 1 else -3  # the lower label under its line: close baselines stay legible
        cv2.putText(img, name, (x1 - 60, py(v) + dy), FONT, 0.33, (110, 110, 110), 1, cv2.LINE_AA)
    for j, (method, pts) in enumerate(series.items()):
        dx = (j - 1.5) * 4  # small offsets keep overlapping error bars readable
        xy = [(int(px(i) + dx), py(pts[k][0])) for i, k in enumerate(ks)]
        for (x, y), k in zip(xy, ks):
            m, s = pts[k][:2]
            cv2.line(img, (x, py(m - s)), (x, py(m + s)), COLOURS[method], 1, cv2.LINE_AA)
            cv2.circle(img, (x, y), 3, COLOURS[method], -1, cv2.LINE_AA)
        cv2.polylines(img, [np.array(xy, np.int32)], False, COLOURS[method], 2, cv2.LINE_AA)


def draw(results: dict, table: dict, path: Path) -> None:
    """The grid of panels plus a legend, written as PNG."""
    helds = list(table)
    ks = sorted(next(iter(next(iter(table.values())).values())))
    img = np.full((40 + PANEL_H * len(helds), PANEL_W * len(MEASURES), 3), 255, np.uint8)
    x = 10
    for method, colour in COLOURS.items():
        cv2.line(img, (x, 20), (x + 24, 20), colour, 3, cv2.LINE_AA)
        cv2.putText(img, method, (x + 30, 25), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        x += 150
    cv2.putText(img, "mean +- std over seeds; dashed: baselines", (x, 25), FONT, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    for r, held in enumerate(helds):
        for c, measure in enumerate(MEASURES):
            series = {me: {k: table[held][me][k][measure] for k in ks} for me in COLOURS if me in table[held]}
            base = results.get("baselines", {}).get(held, {})
            lines = (
                {} if measure == "loss" else {f"{b} {base[b][measure]:.2f}": base[b][measure] for b in ("mean", "max")}
            )
            title = f"held out {held}: {'val. fusion loss' if measure == 'loss' else measure}"
            draw_panel(img, c * PANEL_W, 40 + r * PANEL_H, title, series, ks, lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def markdown(results: dict, table: dict) -> str:
    """Loss and metric tables (mean +- std over seeds) and the paired meta-vs-joint/IR-VIS comparisons."""
    ks = sorted(next(iter(next(iter(table.values())).values())))
    out = []
    for measure in MEASURES:
        out += [
            f"\n{measure} (mean ± std over seeds; lower is better)"
            if measure == "loss"
            else f"\n{measure} (mean ± std over seeds; higher is better)",
            "",
            "| held out | init | " + " | ".join(f"K={k}" for k in ks) + " |",
            "|---|---|" + "---|" * len(ks),
        ]
        for held, by_me in table.items():
            for me, by_k in by_me.items():
                n = len(by_k[ks[0]][measure][2])
                seeds = "" if n >= 3 else " (1 seed)" if n == 1 else f" ({n} seeds)"  # a study still running
                out.append(
                    f"| {held} | {me}{seeds} | "
                    + " | ".join(f"{by_k[k][measure][0]:.4g} ± {by_k[k][measure][1]:.2g}" for k in ks)
                    + " |"
                )
    for ref in ("joint", "irvis_only"):
        out += [
            "",
            (
                f"Paired by seed, meta minus {ref} (loss: negative favours meta; metrics: positive favours meta;"
                " in brackets the seeds where meta is better):"
            ),
            "",
            "| held out | measure | " + " | ".join(f"K={k}" for k in ks) + " |",
            "|---|---|" + "---|" * len(ks),
        ]
        for held, by_me in table.items():
            seeds = {len(by_me[me][ks[0]]["loss"][2]) for me in ("meta", ref) if me in by_me}
            if "meta" not in by_me or ref not in by_me or len(seeds) != 1:
                continue  # a study still running: this held-out task's seeds are not all in yet
            for m in MEASURES:
                cells = []
                for k in ks:
                    d = np.array(by_me["meta"][k][m][2]) - np.array(by_me[ref][k][m][2])
                    better = int(((d < 0) if m == "loss" else (d > 0)).sum())
                    cells.append(f"{d.mean():+.3g} ({better}/{len(d)})")
                out.append(f"| {held} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(ROOT / "bench/results/meta_experiment.json"))
    parser.add_argument("--png", help="figure to write (default: docs/meta_curves<suffix>.png, the suffix of the "
                                          "results file's name after meta_experiment, so each study has its own)")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    table = stats(results)
    png = args.png or ROOT / "docs" / f"meta_curves{Path(args.results).stem.removeprefix('meta_experiment')}.png"
    draw(results, table, Path(png))
    print(markdown(results, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
