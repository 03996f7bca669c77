"""Unsupervised fusion loss: intensity, gradient (texture) and SSIM terms; weights come from the config.

TIM does not publish its fusion loss (../shared/docs/TIM_FACTS.md: OPEN). We use the three objectives common to
SeAFusion / TarDAL-style training, all on luma in [0, 1]:

- intensity  ||F - max(A, B)||_1: keep the salient (brighter) source at each pixel; for IR-VIS this
  carries warm targets from the infrared image into the fused one.
- gradient   || |grad F| - max(|grad A|, |grad B|) ||_1 with Sobel magnitudes: keep the strongest
  texture/edges of either source (visible detail, thermal contours).
- ssim       1 - (SSIM(F, A) + SSIM(F, B)) / 2: preserve local structure of both sources.
- mi         optional, -(MI(F, A) + MI(F, B)) / log(bins) from Parzen-window (soft) joint histograms, the
  differentiable estimate of the mutual-information metric (Viola and Wells, IJCV 1997); off unless weighted.
- scd        optional, 1 - SCD / 2 with SCD = corr(F - B, A) + corr(F - A, B) per image, the sum of the correlations
  of differences (Aslantas and Bendes, 2015), exact and differentiable: it asks that what F adds to one source be
  the other source's content; off unless weighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|d/dx| + |d/dy| of an (N, 1, H, W) image with 3x3 Sobel kernels, replicate padding."""
    k = torch.stack((_SOBEL_X, _SOBEL_X.t())).unsqueeze(1).to(x)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    return g.abs().sum(dim=1, keepdim=True)


def soft_mutual_information(f: torch.Tensor, x: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Per-image mutual information (nats) of (N, 1, H, W) images in [0, 1] from a joint histogram in which each
    pixel of F is spread over the bins by a Gaussian Parzen window (sigma = one bin width) and each pixel of X, a
    source that needs no gradient, falls in its nearest bin. Shape (N,)."""
    n = f.shape[0]
    centers = torch.linspace(0.0, 1.0, bins, device=f.device, dtype=torch.float32)
    width = 1.0 / (bins - 1)
    fv = f.float().reshape(n, -1, 1).clamp(0.0, 1.0)
    wf = torch.exp(-0.5 * ((fv - centers) / width) ** 2)
    wf = wf / wf.sum(dim=2, keepdim=True)  # (N, P, bins): each pixel's weights sum to 1
    idx = (x.float().reshape(n, -1).clamp(0.0, 1.0) * (bins - 1)).round().long()
    wx = F.one_hot(idx, bins).float()  # (N, P, bins)
    joint = wx.transpose(1, 2) @ wf / fv.shape[1]  # (N, bins_x, bins_f), sums to 1
    px, pf = joint.sum(dim=2, keepdim=True), joint.sum(dim=1, keepdim=True)
    eps = 1e-10
    return (joint * (torch.log(joint + eps) - torch.log(px * pf + eps))).sum(dim=(1, 2))


def _corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each image of two (N, 1, H, W) batches over all its pixels, shape (N,)."""
    x = x.flatten(1) - x.flatten(1).mean(dim=1, keepdim=True)
    y = y.flatten(1) - y.flatten(1).mean(dim=1, keepdim=True)
    return (x * y).sum(dim=1) / torch.sqrt((x * x).sum(dim=1) * (y * y).sum(dim=1) + 1e-12)


def scd(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The sum of the correlations of differences per image, as tim_core.metrics computes SCD, shape (N,)."""
    f = f.float()
    return _corr(f - b, a) + _corr(f - a, b)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean SSIM of two (N, 1, H, W) images in [0, 1] (Gaussian 11x11, sigma 1.5, C1=1e-4, C2=9e-4)."""
    w = _gaussian_window(window).to(x)
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="replicate"), w)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 1e-4, 9e-4
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (defaults: SeAFusion's 1:10 intensity/gradient balance plus SSIM)."""

    intensity: float = 1.0
    gradient: float = 10.0
    ssim: float = 1.0
    grad_gain: float = 1.0  # gradient target = gain * max(|grad A|, |grad B|): >1 asks for sharper than either source
    mi: float = 0.0  # weight of the soft mutual-information term (0: off, not computed)
    scd: float = 0.0  # weight of the correlation-of-differences term (0: off, not computed)


def fusion_loss(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, weights: LossWeights = LossWeights(),
                scale: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the three terms for fused F and sources A (e.g. IR) and B (e.g. visible luma).

    `scale` optionally multiplies the per-image MI and SCD terms: {"mi" or "scd": (N,) tensor} (train's
    source_scale: a term asked of one data set's pairs only).
    """
    scale = scale or {}
    l_int = F.l1_loss(fused, torch.maximum(a, b))
    target = weights.grad_gain * torch.maximum(sobel_magnitude(a), sobel_magnitude(b))
    l_grad = F.l1_loss(sobel_magnitude(fused), target)
    l_ssim = 1.0 - 0.5 * (ssim(fused, a) + ssim(fused, b))
    total = weights.intensity * l_int + weights.gradient * l_grad + weights.ssim * l_ssim
    terms = {"intensity": l_int.item(), "gradient": l_grad.item(), "ssim": l_ssim.item()}
    if weights.mi > 0:
        bins = 32
        mi = soft_mutual_information(fused, a, bins) + soft_mutual_information(fused, b, bins)
        l_mi = -(mi * scale.get("mi", 1.0)).mean() / math.log(bins)
        total = total + weights.mi * l_mi
        terms["mi"] = l_mi.item()
    if weights.scd > 0:
        l_scd = ((1.0 - 0.5 * scd(fused, a, b)) * scale.get("scd", 1.0)).mean()
        total = total + weights.scd * l_scd
        terms["scd"] = l_scd.item()
    return total, terms
