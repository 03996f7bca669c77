"""Normalised gradient fields (NGF): the similarity of an IR and a VIS image under a homography, and its
refinement by gradient ascent. `tim_core.rig_search` builds the search for a rig's homography on top.

Intensities of a thermal and a colour image of one scene are unrelated (a warm wall is bright in one, dark in
the other), but their edges sit in the same places. NGF (Haber & Modersitzki 2006) compares edge directions:
n = grad I / sqrt(|grad I|^2 + eps^2), and (n_ir . n_vis)^2 is blind to contrast polarity. With m the VIS pixels
the warped IR covers, the similarity is

    S = sum m (n_a . n_b)^2 / sqrt(sum m |n_a|^4 * sqrt(sum m |n_b|^4 * sum |n_b|^4))   in [0, 1]

The IR term is normalised over the overlap; the VIS term by the geometric mean of its overlap and full-image
energies: normalising it over the overlap alone rewards small overlaps (a small IR patch placed on a few
matching edges), over the full image alone rewards IR that covers all of VIS (large scales).

Coordinates: normalised [-1, 1] with align_corners=False, the same at every pyramid level. G maps VIS normalised
coordinates to IR normalised coordinates (it samples IR onto the VIS grid); H = N_vis^-1 G^-1 N_ir maps IR
pixels to VIS pixels (pixel centres at integer coordinates, as in OpenCV's warpPerspective).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


def norm_matrix(width: int, height: int) -> np.ndarray:
    """Pixel coordinates (centres at integers) -> normalised [-1, 1] coordinates, align_corners=False."""
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1]])


def gray_unit(img: np.ndarray) -> np.ndarray:
    """Any 8/16-bit or float, grey or RGB image -> float32 grey stretched to its 1..99 percentiles."""
    x = img.astype(np.float32)
    if x.ndim == 3:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
    lo, hi = np.percentile(x, (1.0, 99.0))
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def resized(img: np.ndarray, width: int) -> torch.Tensor:
    """Area-resampled to `width` (height in proportion), slightly blurred, as a (1, 1, h, w) tensor."""
    height = max(8, round(img.shape[0] * width / img.shape[1]))
    small = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(cv2.GaussianBlur(small, (0, 0), 0.7))[None, None]


def ngf_field(img: torch.Tensor, eta: float) -> torch.Tensor:
    """(B, 1, h, w) image -> (B, 2, h, w) normalised gradient field (central differences, edges replicated)."""
    p = F.pad(img, (1, 1, 1, 1), mode="replicate")
    g = torch.cat([(p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) * 0.5, (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) * 0.5], 1)
    mag2 = (g * g).sum(1, keepdim=True)
    eps = eta * mag2.detach().sqrt().mean((1, 2, 3), keepdim=True) + 1e-6
    return g / torch.sqrt(mag2 + eps * eps)


def tensor_field(n: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) field -> (B, 3, h, w) [nx^2, sqrt2 nx ny, ny^2]: tensor . tensor = (n_a . n_b)^2."""
    nx, ny = n[:, :1], n[:, 1:]
    return torch.cat([nx * nx, SQRT2 * nx * ny, ny * ny], 1)


def vis_grid(height: int, width: int, pad: int = 0) -> torch.Tensor:
    """(h + 2 pad) * (w + 2 pad) homogeneous normalised coordinates of VIS pixel centres (pad: beyond the image)."""
    ys = (2.0 * torch.arange(-pad, height + pad, dtype=torch.float32) + 1.0) / height - 1.0
    xs = (2.0 * torch.arange(-pad, width + pad, dtype=torch.float32) + 1.0) / width - 1.0
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)


def _sample(ir: torch.Tensor, grid: torch.Tensor, g: torch.Tensor, shape: tuple[int, int]):
    """IR sampled at G * grid on a (h, w) VIS-grid: (image (1, 1, h, w), coverage mask (1, 1, h, w))."""
    q = grid @ g.T.to(grid.dtype)
    uv = torch.nan_to_num(q[:, :2] / q[:, 2:].clamp_min(1e-6), nan=2.0).clamp(-2.0, 2.0)  # outside, yet finite
    inside = ((uv.abs() < 1.0).all(1) & (q[:, 2] > 1e-6)).to(ir.dtype).reshape(1, 1, *shape)
    img = F.grid_sample(ir, uv.reshape(1, *shape, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return img, inside


class NgfLevel:
    """One pair at one pyramid level: the IR image, and the VIS NGF on the VIS grid."""

    def __init__(self, ir: np.ndarray, vis: np.ndarray, vis_width: int, ir_width: int, eta: float):
        self.ir = resized(ir, ir_width)
        vis_t = resized(vis, vis_width)
        self.shape = tuple(vis_t.shape[-2:])
        self.eta = eta
        self.grid = vis_grid(*self.shape)
        border = torch.zeros(1, 1, *self.shape)
        border[..., 2:-2, 2:-2] = 1.0  # central differences at the image border see replicated pixels
        self.border = border
        self.nb = ngf_field(vis_t, eta)
        self.b4 = (self.nb * self.nb).sum(1, keepdim=True) ** 2  # |n_b|^4
        self.b4_total = (self.b4 * border).sum()
        self._spectra: dict[int, torch.Tensor] = {}

    def score(self, g: torch.Tensor) -> torch.Tensor:
        """S(G) in [0, 1], differentiable in g (3x3, float64)."""
        img, inside = _sample(self.ir, self.grid, g, self.shape)
        m = inside * self.border
        na = ngf_field(img, self.eta)
        d = (na * self.nb).sum(1, keepdim=True)
        a4 = (na * na).sum(1, keepdim=True) ** 2
        den_b = torch.sqrt(((m * self.b4).sum() * self.b4_total).clamp_min(1e-12))
        return (m * d * d).sum() / torch.sqrt(((m * a4).sum() * den_b).clamp_min(1e-12))

    def _vis_spectra(self, radius: int) -> torch.Tensor:
        """FFTs of [tensor(n_b) (3), border (1), |n_b|^4 (1)] zero-padded to the canvas of shifts up to radius."""
        if radius not in self._spectra:
            h, w = self.shape
            fields = torch.cat([tensor_field(self.nb) * self.border, self.border, self.b4 * self.border], 1)
            self._spectra[radius] = torch.fft.rfft2(fields, s=(h + 2 * radius, w + 2 * radius)).conj()
        return self._spectra[radius]

    def shift_scores(self, g: torch.Tensor, radius: int) -> torch.Tensor:
        """S of G composed with every integer shift of up to `radius` VIS px: (2r + 1, 2r + 1), [dy, dx].

        One FFT correlation per term: C[d] = sum_x a(x + d) b(x) over the canvas the shifts reach."""
        h, w = self.shape
        size = (h + 2 * radius, w + 2 * radius)
        img, inside = _sample(self.ir, vis_grid(h, w, radius), g, size)
        na = ngf_field(img, self.eta) * inside
        ta = tensor_field(na)
        fa = torch.fft.rfft2(torch.cat([ta, (ta * ta).sum(1, keepdim=True), inside], 1))
        fb = self._vis_spectra(radius)
        num = torch.fft.irfft2((fa[:, :3] * fb[:, :3]).sum(1), s=size)
        den_a = torch.fft.irfft2(fa[:, 3] * fb[:, 3], s=size)
        den_b = torch.sqrt(torch.fft.irfft2(fa[:, 4] * fb[:, 4], s=size).clamp_min(0.0) * self.b4_total)
        n = 2 * radius + 1
        return (num / torch.sqrt((den_a * den_b).clamp_min(1e-12)))[0, :n, :n]


def shifted(g: torch.Tensor, dx: float, dy: float, shape: tuple[int, int]) -> torch.Tensor:
    """G composed with a shift of the VIS grid by (dx, dy) level pixels: VIS x samples IR where G puts x + d."""
    h, w = shape
    t = torch.eye(3, dtype=torch.float64)
    t[0, 2], t[1, 2] = 2.0 * dx / w, 2.0 * dy / h
    return g @ t


def similarity_g(scale: float, angle_deg: float, ir_size: tuple[int, int], vis_size: tuple[int, int]) -> torch.Tensor:
    """G of 'IR centre on VIS centre, VIS px = scale * IR px, rotated by angle'."""
    (wi, hi), (wv, hv) = ir_size, vis_size
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    h = np.eye(3)
    h[:2, :2] = scale * rot
    h[:2, 2] = np.array([(wv - 1) / 2, (hv - 1) / 2]) - h[:2, :2] @ np.array([(wi - 1) / 2, (hi - 1) / 2])
    g = norm_matrix(wi, hi) @ np.linalg.inv(h) @ np.linalg.inv(norm_matrix(wv, hv))
    return torch.from_numpy(g / g[2, 2])


def refine(levels: list[NgfLevel], g0: torch.Tensor, iterations: int) -> tuple[torch.Tensor, float]:
    """L-BFGS over the 8 entries of G (g33 = 1) maximising the mean S of the pairs; returns (G, mean S)."""
    p = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-9)

    def g_of(p):
        return g0 @ (torch.eye(3, dtype=torch.float64) + torch.cat([p, p.new_zeros(1)]).reshape(3, 3))

    def closure():
        opt.zero_grad()
        loss = -sum(level.score(g_of(p)) for level in levels) / len(levels)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        g = g_of(p) if torch.isfinite(p).all() else g0  # no structure at all (flat image): keep the start
        g = g / g[2, 2]
        return g, float(sum(level.score(g) for level in levels) / len(levels))
