"""A rig's IR -> VIS homography from image pairs: coarse search, multi-start NGF refinement, convergence checks.

(1) At a coarse level (VIS about 96 px wide): every scale of a log grid around the size ratio, three rotations,
and every shift within `shift_fraction` of the width; the shifts of one (scale, rotation) all at once, as FFT
correlations of the NGF tensor fields (tim_core.ngf). (2) The best distinct placements are refined over the 8
homography parameters (L-BFGS, torch autograd through grid_sample) level by level; the one with the best
similarity summed over the levels up to `select_width` goes on (3) to the full VIS resolution. Every pair adds
to one joint objective: the same two cameras, different scenes, one homography.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .ngf import NgfLevel, gray_unit, norm_matrix, refine, shifted, similarity_g
from .registration import MIN_COVERAGE, MIN_PEAK_Z, MIN_SIMILARITY, Registration, corner_error, coverage
from .threads import torch_threads


@dataclass
class SearchConfig:
    """Search and refinement settings; the defaults suit rigs whose fields of view differ by up to ~1.4x."""

    scale_range: tuple[float, float] = (0.7, 1.45)  # VIS px per IR px, relative to the ratio of the image widths
    scale_step: float = 0.02  # log step of the coarse scale grid (~1 coarse px at the image corners)
    shift_fraction: float = 0.15  # largest offset of the image centres searched, fraction of the VIS width
    rotations_deg: tuple[float, ...] = (-4.0, 0.0, 4.0)  # coarse grid; refinement reaches angles in between
    coarse_width: int = 96  # VIS width of the coarse search level, px
    finest_width: int = 0  # VIS width of the last refinement level (0: full resolution)
    starts: int = 4  # distinct coarse peaks refined through the levels up to select_width
    select_width: int = 400  # the start with the best S summed over the levels up to this VIS width goes on
    eta: float = 0.5  # NGF edge parameter eps, as a fraction of the mean gradient magnitude of each image
    iterations: int = 25  # L-BFGS iterations per level


@dataclass
class SearchResult:
    """The estimate (H: IR px -> VIS px), its final similarity and how clearly the coarse search found it."""

    homography: np.ndarray
    similarity: float  # mean S of the pairs at the finest level, in [0, 1]
    peak_z: float  # best coarse S above the median of every placement tried, in standard deviations
    starts: list[tuple[float, float, int, int]]  # (scale, angle, dx, dy) of the refined coarse peaks


def _widths(cfg: SearchConfig, vis_width: int) -> list[int]:
    """VIS widths of the pyramid levels, coarse to fine, each about twice the previous."""
    finest = min(cfg.finest_width or vis_width, vis_width)
    widths = [min(cfg.coarse_width, finest)]
    while widths[-1] * 2 <= finest * 1.2:
        widths.append(min(widths[-1] * 2, finest))
    return widths if widths[-1] == finest else widths + [finest]


def estimate(pairs: list[tuple[np.ndarray, np.ndarray]], cfg: SearchConfig | None = None) -> SearchResult:
    """One homography IR px -> VIS px for pairs (ir, vis) of one rig; every IR (VIS) image has the same size."""
    cfg = cfg or SearchConfig()
    (hi, wi), (hv, wv) = pairs[0][0].shape[:2], pairs[0][1].shape[:2]
    grays = [(gray_unit(ir), gray_unit(vis)) for ir, vis in pairs]
    ratio = wv / wi  # VIS px per IR px if both lenses saw the same field
    widths = _widths(cfg, wv)

    def levels_at(width: int) -> list[NgfLevel]:
        ir_width = min(wi, max(8, round(width / ratio)))  # IR resampled to about the VIS level's pixel density
        return [NgfLevel(a, b, width, ir_width, cfg.eta) for a, b in grays]

    coarse = levels_at(widths[0])
    shape = coarse[0].shape
    radius = max(1, round(cfg.shift_fraction * shape[1]))
    n_scales = max(1, round(math.log(cfg.scale_range[1] / cfg.scale_range[0]) / cfg.scale_step) + 1)
    peaks, maps = [], []
    with torch.no_grad():
        for scale in ratio * np.geomspace(cfg.scale_range[0], cfg.scale_range[1], n_scales):
            for angle in cfg.rotations_deg:
                g = similarity_g(scale, angle, (wi, hi), (wv, hv))
                s = sum(level.shift_scores(g, radius) for level in coarse) / len(coarse)
                maps.append(s.flatten())
                dy, dx = divmod(int(torch.argmax(s)), s.shape[1])
                peaks.append((float(s[dy, dx]), float(scale), angle, dx - radius, dy - radius))
    peaks.sort(reverse=True)
    scores = torch.cat(maps)
    spread = float(scores.std())
    peak_z = (peaks[0][0] - float(scores.median())) / spread if spread > 0 else 0.0
    starts: list[tuple[float, float, int, int]] = []
    for _, scale, angle, dx, dy in peaks:  # distinct: another shift, or a scale more than 5% away
        if all(abs(math.log(scale / s)) > 0.05 or abs(dx - x) + abs(dy - y) > 2 for s, _, x, y in starts):
            starts.append((scale, angle, dx, dy))
        if len(starts) == cfg.starts:
            break
    # a wrong placement may win one level (noise in dark frames) but rarely all of them
    candidates = [(shifted(similarity_g(sc, a, (wi, hi), (wv, hv)), dx, dy, shape), 0.0, 0.0)
                  for sc, a, dx, dy in starts]
    select = max([w for w in widths if w <= cfg.select_width] or widths[:1])
    for width in widths:
        levels = coarse if width == widths[0] else levels_at(width)
        refined = []
        for g, total, _ in candidates:
            g, s = refine(levels, g, cfg.iterations)
            refined.append((g, total + s, s))
        candidates = [max(refined, key=lambda c: c[1])] if width >= select else refined
    g, _, similarity = candidates[0]
    h = np.linalg.inv(norm_matrix(wv, hv)) @ np.linalg.inv(g.numpy()) @ norm_matrix(wi, hi)
    return SearchResult(h / h[2, 2], similarity, peak_z, starts)


def register_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], cfg: SearchConfig | None = None) -> Registration:
    """The rig's Registration from its (ir, vis) pairs; converged=False with the reasons when it cannot be trusted."""
    (hi, wi), (hv, wv) = pairs[0][0].shape[:2], pairs[0][1].shape[:2]
    with torch_threads(1):  # <= 1 MP in many small steps: one thread beats OpenMP's start-up and spinning
        result = estimate(pairs, cfg)
    problems = []
    if not result.peak_z >= MIN_PEAK_Z:
        problems.append(f"no placement stands out in the coarse search (best {result.peak_z:.1f} standard deviations "
                        f"above the median, needs {MIN_PEAK_Z})")
    if not result.similarity >= MIN_SIMILARITY:
        problems.append(f"edge similarity {result.similarity:.3f} is below {MIN_SIMILARITY}")
    cover = coverage(result.homography, (wi, hi), (wv, hv))
    if cover < MIN_COVERAGE:
        problems.append(f"the IR image would cover {cover:.0%} of the VIS image (needs {MIN_COVERAGE:.0%})")
    return Registration(result.homography, (wv, hv), (wi, hi), 1.0 - result.similarity, "ngf", len(pairs),
                        not problems, "; ".join(problems))


@dataclass
class Refinement:
    """One bounded local refinement of a homography on one pair (`refine_homography`)."""

    homography: np.ndarray  # the refined H (IR px -> VIS px); the start when nothing improved
    similarity_before: float  # S of the start on this pair at the refinement level
    similarity: float  # S of `homography` there
    steps: int  # L-BFGS steps of `step_iterations` run
    elapsed_ms: float
    moved_px: float  # mean displacement of the IR image corners from the start, VIS px


def refine_homography(ir: np.ndarray, vis: np.ndarray, homography: np.ndarray, budget_ms: float,
                      width: int = 320, eta: float = SearchConfig.eta, step_iterations: int = 5) -> Refinement:
    """Local NGF refinement of H on one pair at one level (VIS `width` px wide), bounded in time.

    L-BFGS runs in steps of `step_iterations` iterations (tim_core.ngf.refine) from H, each continuing from the
    last (fewer than 4 iterations per step hardly move: the line search needs them); no step starts once the last
    step's duration would carry it past `budget_ms`, but the first always runs (about 80 ms at 320 px, one CPU
    core). Online use: the rig's homography nudged by the scene at hand; the caller decides whether to take it."""
    t0 = time.perf_counter()
    (hi, wi), (hv, wv) = ir.shape[:2], vis.shape[:2]
    width = min(width, wv)
    with torch_threads(1):
        level = NgfLevel(gray_unit(ir), gray_unit(vis), width, min(wi, max(8, round(width * wi / wv))), eta)
        g0 = torch.from_numpy(norm_matrix(wi, hi) @ np.linalg.inv(homography) @ np.linalg.inv(norm_matrix(wv, hv)))
        with torch.no_grad():
            before = float(level.score(g0))
        g, similarity, steps = g0, before, 0
        while True:
            step_start, previous = time.perf_counter(), similarity
            g, similarity = refine([level], g, step_iterations)
            steps += 1
            now = time.perf_counter()
            if similarity - previous < 1e-6 or (now - t0) + (now - step_start) > budget_ms * 1e-3:
                break  # converged, or the next step would overrun the budget
    h = np.linalg.inv(norm_matrix(wv, hv)) @ np.linalg.inv(g.numpy()) @ norm_matrix(wi, hi)
    h /= h[2, 2]
    if not similarity > before:
        h, similarity = homography, before
    return Refinement(h, before, similarity, steps, (time.perf_counter() - t0) * 1e3,
                      corner_error(homography, h, (wi, hi)))
