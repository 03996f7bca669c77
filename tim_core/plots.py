"""Small PNG plots drawn with OpenCV (no plotting library): line curves, heat maps, labelled scatter plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

# BGR colours that stay distinguishable on white (tab10-like).
COLOURS = [
    (180, 119, 31),
    (14, 127, 255),
    (44, 160, 44),
    (40, 39, 214),
    (189, 103, 148),
    (75, 86, 140),
    (194, 119, 227),
    (127, 127, 127),
    (34, 189, 188),
    (207, 190, 23),
]
FONT = cv2.FONT_HERSHEY_SIMPLEX
MARGIN = (70, 250, 50, 50)  # left, right (legend), top, bottom, in pixels


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4, colour=(0, 0, 0)) -> None:
    cv2.putText(img, text, org, FONT, scale, colour, 1, cv2.LINE_AA)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


class _Axes:
    """Maps data coordinates (optionally log10 in x) to pixels and draws the frame, ticks and labels."""

    def __init__(self, img: np.ndarray, xs: Sequence[float], ys: Sequence[float], logx: bool = False):
        self.img, self.logx = img, logx
        h, w = img.shape[:2]
        left, right, top, bottom = MARGIN
        self.box = (left, top, w - right, h - bottom)
        fx = [math.log10(x) for x in xs] if logx else list(xs)
        self.x0, self.x1 = self._pad(min(fx), max(fx))
        self.y0, self.y1 = self._pad(min(ys), max(ys))

    @staticmethod
    def _pad(lo: float, hi: float) -> tuple[float, float]:
        span = hi - lo or abs(hi) or 1.0
        return lo - 0.05 * span, hi + 0.05 * span

    def px(self, x: float, y: float) -> tuple[int, int]:
        x = math.log10(x) if self.logx else x
        left, t, r, b = self.box
        return (
            int(left + (x - self.x0) / (self.x1 - self.x0) * (r - left)),
            int(b - (y - self.y0) / (self.y1 - self.y0) * (b - t)),
        )

    def frame(self, title: str, xlabel: str, ylabel: str) -> None:
        left, t, r, b = self.box
        cv2.rectangle(self.img, (left, t), (r, b), (0, 0, 0), 1)
        for fx in _ticks(self.x0, self.x1):
            x = int(left + (fx - self.x0) / (self.x1 - self.x0) * (r - left))
            cv2.line(self.img, (x, b), (x, b + 4), (0, 0, 0), 1)
            _text(self.img, _fmt(10**fx if self.logx else fx), (x - 14, b + 16))
        for fy in _ticks(self.y0, self.y1):
            y = int(b - (fy - self.y0) / (self.y1 - self.y0) * (b - t))
            cv2.line(self.img, (left - 4, y), (left, y), (0, 0, 0), 1)
            _text(self.img, _fmt(fy), (4, y + 4))
        _text(self.img, title, (4, 18), 0.5)
        _text(self.img, xlabel + (" (log scale)" if self.logx else ""), ((left + r) // 2 - 60, b + 36))
        _text(self.img, ylabel, (4, t - 10))

    def legend(self, i: int, name: str, colour) -> None:
        _text(self.img, name, (self.box[2] + 12, self.box[1] + 16 + 18 * i), 0.45, colour)


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    size: tuple[int, int] = (480, 960),
) -> Path:
    """One polyline per named series (xs, ys), with a legend; writes a PNG."""
    img = np.full((*size, 3), 255, np.uint8)
    xs = [x for sx, _ in series.values() for x in sx] or [0.0]
    ys = [y for _, sy in series.values() for y in sy if math.isfinite(y)] or [0.0]
    ax = _Axes(img, xs, ys)
    ax.frame(title, xlabel, ylabel)
    for i, (name, (sx, sy)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = np.array([ax.px(x, y) for x, y in zip(sx, sy) if math.isfinite(y)], np.int32)
        if len(pts):
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        ax.legend(i, name, colour)
    return _write(path, img)


def heatmap(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str,
    cell: int = 34,
) -> Path:
    """Values in [0, 1] printed in viridis cells coloured from the matrix's min to its max; writes a PNG."""
    rows, cols = matrix.shape
    left, top = 150, 40
    bottom = 10 + 7 * max((len(c) for c in col_labels), default=1)
    img = np.full((top + rows * cell + bottom, left + cols * cell + 10, 3), 255, np.uint8)
    span = float(matrix.max() - matrix.min()) or 1.0
    scaled = (matrix - matrix.min()) / span  # small differences between near-uniform probabilities stay visible
    colours = cv2.applyColorMap(np.clip(scaled * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    for r in range(rows):
        _text(img, row_labels[r], (4, top + r * cell + cell // 2 + 4))
        for c in range(cols):
            x, y = left + c * cell, top + r * cell
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), tuple(int(v) for v in colours[r, c]), -1)
            ink = (0, 0, 0) if scaled[r, c] > 0.5 else (255, 255, 255)
            _text(img, f"{matrix[r, c]:.2f}"[1:] if matrix[r, c] < 1 else "1.0", (x + 4, y + cell // 2 + 4), 0.35, ink)
    for c, label in enumerate(col_labels):  # column labels written vertically below the grid
        patch = np.full((cell, 7 * len(label) + 10, 3), 255, np.uint8)
        _text(patch, label, (2, cell // 2 + 4), 0.35)
        rotated = cv2.rotate(patch, cv2.ROTATE_90_CLOCKWISE)
        y0, x0 = top + rows * cell + 4, left + c * cell
        hh, ww = min(rotated.shape[0], img.shape[0] - y0), min(rotated.shape[1], img.shape[1] - x0)
        img[y0 : y0 + hh, x0 : x0 + ww] = np.minimum(img[y0 : y0 + hh, x0 : x0 + ww], rotated[:hh, :ww])
    _text(img, f"{title} (colour: {matrix.min():.2f} to {matrix.max():.2f})", (4, 22), 0.5)
    return _write(path, img)


def scatter_plot(
    groups: dict[str, list[tuple[float, float, str]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    size: tuple[int, int] = (540, 1000),
) -> Path:
    """Points (x, y, label) per named group, one colour each, labels printed beside the points; writes a PNG."""
    img = np.full((*size, 3), 255, np.uint8)
    pts = [p for g in groups.values() for p in g]
    ax = _Axes(img, [p[0] for p in pts], [p[1] for p in pts], logx=logx)
    ax.frame(title, xlabel, ylabel)
    for i, (name, points) in enumerate(groups.items()):
        colour = COLOURS[i % len(COLOURS)]
        for x, y, label in points:
            cx, cy = ax.px(x, y)
            cv2.circle(img, (cx, cy), 5, colour, -1, cv2.LINE_AA)
            if label:
                _text(img, label, (cx + 7, cy - 5), 0.33, colour)
        ax.legend(i, name, colour)
    return _write(path, img)


def timeline_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    events: dict[str, Sequence[float]] | None = None,
    levels: dict[str, float] | None = None,
    size: tuple[int, int] = (420, 960),
) -> Path:
    """Points joined per named series, named events as dashed verticals with a cross on the x axis, named levels
    (p50, p95) as dashed horizontals; non-negative axes start at 0 and end on round ticks; writes a PNG."""
    events, levels = events or {}, levels or {}
    img = np.full((*size, 3), 255, np.uint8)
    xs = [x for sx, _ in series.values() for x in sx] + [x for ex in events.values() for x in ex] or [0.0]
    ys = [y for _, sy in series.values() for y in sy if math.isfinite(y)]
    ys += [v for v in levels.values() if math.isfinite(v)]
    ax = _Axes(img, xs, [0.0, *ys])
    if min(xs) >= 0:
        ax.x0, ax.x1 = 0.0, _round_top(max(xs))
    ax.y0, ax.y1 = 0.0, _round_top(max(ys, default=0.0))
    ax.frame(title, xlabel, ylabel)
    left, top, right, bottom = ax.box
    for i, (name, y) in enumerate(levels.items()):
        colour = COLOURS[(7, 4, 5, 6)[i % 4]]  # greys and purples: apart from the series and the events
        if math.isfinite(y):
            _dashed(img, (left, ax.px(0.0, y)[1]), (right, ax.px(0.0, y)[1]), colour)
        ax.legend(i, f"{name} {_fmt(y)}", colour)
    legend = len(levels)
    for j, (name, (sx, sy)) in enumerate(series.items()):
        colour = COLOURS[j % len(COLOURS)]
        pts = [ax.px(x, y) for x, y in zip(sx, sy) if math.isfinite(y)]
        if pts:
            cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        for pt in pts:
            cv2.circle(img, pt, 4, colour, -1, cv2.LINE_AA)
        ax.legend(legend, name, colour)
        legend += 1
    for j, (name, ex) in enumerate(events.items()):
        colour = COLOURS[(1 + j) % len(COLOURS)]
        for x in ex:
            cx = ax.px(x, 0.0)[0]
            _dashed(img, (cx, top), (cx, bottom), colour)
            cv2.drawMarker(img, (cx, bottom), colour, cv2.MARKER_TILTED_CROSS, 12, 2, cv2.LINE_AA)
        ax.legend(legend, f"{name} ({len(ex)})", colour)
        legend += 1
    return _write(path, img)


def stacked_bars(
    bars: dict[str, dict[str, float]],
    path: str | Path,
    title: str,
    xlabel: str,
    marks: dict[str, tuple[str, float]] | None = None,
    size: tuple[int, int] | None = None,
) -> Path:
    """Horizontal bars, one per name, stacked from named segments (one colour per segment name, values printed
    where they fit); marks: bar name -> (label, x) drawn as a black tick across that bar; writes a PNG."""
    marks = marks or {}
    segments = list(dict.fromkeys(k for parts in bars.values() for k in parts))
    bar_h, gap = 36, 18
    height, width = size or (60 + len(bars) * (bar_h + gap) + 50, 960)
    img = np.full((height, width, 3), 255, np.uint8)
    left, top, right, bottom = 110, 40, width - MARGIN[1], height - 45
    span = _round_top(max([sum(parts.values()) for parts in bars.values()] + [v for _, v in marks.values()]))

    def px(v: float) -> int:
        return int(left + v / span * (right - left))

    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    for v in _ticks(0.0, span):
        x = px(v)
        cv2.line(img, (x, bottom), (x, bottom + 4), (0, 0, 0), 1)
        _text(img, _plain(v), (x - 14, bottom + 16))
    _text(img, title, (4, 18), 0.5)
    _text(img, xlabel, ((left + right) // 2 - 60, bottom + 36))
    for r, (bar, parts) in enumerate(bars.items()):
        y0 = top + gap // 2 + r * (bar_h + gap)
        _text(img, bar, (4, y0 + bar_h // 2 + 4), 0.45)
        x = 0.0
        for name, value in parts.items():
            colour = COLOURS[segments.index(name) % len(COLOURS)]
            xa, xb = px(x), px(x + value)
            cv2.rectangle(img, (xa, y0), (max(xa + 1, xb), y0 + bar_h), colour, -1)
            label = _plain(value)
            if xb - xa > 8 * len(label) + 6:  # the value only where it fits inside its segment
                _text(img, label, (xa + 4, y0 + bar_h // 2 + 4), 0.4, (255, 255, 255))
            x += value
        if bar in marks:
            name, value = marks[bar]
            xm, label = px(value), f"{name} {_plain(value)}"
            cv2.line(img, (xm, y0 - 5), (xm, y0 + bar_h + 5), (0, 0, 0), 2)
            tw = cv2.getTextSize(label, FONT, 0.4, 1)[0][0]
            _text(img, label, (xm + 6 if xm + 6 + tw < right else xm - 6 - tw, y0 + bar_h // 2 + 4), 0.4)
    for i, name in enumerate(segments):
        colour = COLOURS[i % len(COLOURS)]
        cv2.rectangle(img, (right + 12, top + 6 + 18 * i), (right + 22, top + 16 + 18 * i), colour, -1)
        _text(img, name, (right + 28, top + 16 + 18 * i), 0.45)
    return _write(path, img)


def _round_top(hi: float, n: int = 4) -> float:
    """The smallest n * step >= 1.05 * hi, step a round multiple (1 to 8) of a power of ten: round tick labels."""
    raw = max(hi * 1.05, 1e-9) / n
    power = 10 ** math.floor(math.log10(raw))
    return n * next(m * power for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * power >= raw)


def _plain(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else _fmt(v)  # ms as 2318, not 2.32e+03


def _dashed(img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], colour, dash: int = 6) -> None:
    length = max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]), 1)
    for s in range(0, length, 2 * dash):
        a, b = s / length, min(s + dash, length) / length
        cv2.line(img, (int(p0[0] + a * (p1[0] - p0[0])), int(p0[1] + a * (p1[1] - p0[1]))),
                 (int(p0[0] + b * (p1[0] - p0[0])), int(p0[1] + b * (p1[1] - p0[1]))), colour, 1, cv2.LINE_AA)


def _write(path: str | Path, img: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: could not write PNG")
    return path
