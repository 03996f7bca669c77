"""Line plots as SVG text (no plotting library): the vector twin of `plots.line_plot`, same colours and ticks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from .files import write_text_atomic
from .plots import COLOURS, MARGIN, _fmt, _ticks


def _hex(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


def _text(x: float, y: float, text: str, size: int = 12, colour: str = "#000", anchor: str = "start") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="sans-serif" font-size="{size}" fill="{colour}" '
            f'text-anchor="{anchor}">{escape(text)}</text>')


def svg_line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    size: tuple[int, int] = (480, 720),
) -> Path:
    """One polyline per named series (xs, ys; non-finite points skipped), a legend, fixed or data limits;
    writes the SVG atomically and returns its path."""
    height, width = size
    left, right, top, bottom = MARGIN
    x_lo, x_hi = xlim or (min((x for xs, _ in series.values() for x in xs), default=0.0),
                          max((x for xs, _ in series.values() for x in xs), default=1.0))
    finite = [y for _, ys in series.values() for y in ys if math.isfinite(y)]
    y_lo, y_hi = ylim or (min(finite, default=0.0), max(finite, default=1.0))
    x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1.0), (y_hi if y_hi > y_lo else y_lo + 1.0)
    r_px, b_px = width - right, height - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (r_px - left), b_px - (y - y_lo) / (y_hi - y_lo) * (b_px - top))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">', f'<rect width="{width}" height="{height}" fill="#fff"/>',
             f'<rect x="{left}" y="{top}" width="{r_px - left}" height="{b_px - top}" fill="none" stroke="#000"/>',
             _text(4, 18, title, 14), _text((left + r_px) / 2, b_px + 36, xlabel, anchor="middle"),
             _text(4, top - 10, ylabel)]
    for v in _ticks(x_lo, x_hi):
        x = px(v, y_lo)[0]
        parts += [f'<line x1="{x:.1f}" y1="{b_px}" x2="{x:.1f}" y2="{b_px + 4}" stroke="#000"/>',
                  _text(x, b_px + 16, _fmt(v), 11, anchor="middle")]
    for v in _ticks(y_lo, y_hi):
        y = px(x_lo, v)[1]
        parts += [f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#000"/>',
                  _text(left - 6, y + 4, _fmt(v), 11, anchor="end")]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = _hex(COLOURS[i % len(COLOURS)])
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (px(x, y) for x, y in zip(xs, ys) if math.isfinite(y)))
        if pts:
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(_text(r_px + 12, top + 16 + 18 * i, name, 13, colour))
    parts.append("</svg>")
    path = Path(path)
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path
