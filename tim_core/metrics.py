"""Fusion quality metrics for a triplet (A = infrared, B = visible, F = fused), in two conventions.

``matlab`` reproduces the MATLAB toolbox behind SeAFusion/PIAFusion-era tables, ``cddfuse`` the Python
evaluator of CDDFuse/DDFM/EMMA; ../shared/docs/METRICS.md specifies every quirk reproduced below.
Arithmetic is float64 on 0..255 data (cddfuse SSIM: float32, as the original), vectorized with
numpy and OpenCV filters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np

METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "CC", "PSNR", "Nabf")
FAST_METRICS = METRIC_NAMES[:-1]  # all but Nabf, which the cddfuse evaluator does not have
CONVENTIONS = ("matlab", "cddfuse")

_MIN_SIDE = 32  # VIF's 17-tap 'valid' filter and three halvings leave nothing below this
# rgb2gray's documented weights, as ../shared/docs/METRICS.md and the reference images use them (MATLAB's internal
# 0.298936/0.587043/0.114021 round differently on ~0.01% of pixels)
_RGB2GRAY = np.array([0.2989, 0.5870, 0.1140])


def to_gray(img: np.ndarray, convention: str = "matlab") -> np.ndarray:
    """Grey or RGB image (uint8, or float 0..255) -> float64 grey 0..255, luma as the convention does."""
    _check_convention(convention)
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image of shape {img.shape}: expected (H, W) grey or (H, W, 3) RGB")
    rgb = img[:, :, :3]
    if convention == "matlab":
        # rgb2gray on uint8: weighted sum in double, rounded half away from zero back to uint8
        return np.floor(rgb.astype(np.float64) @ _RGB2GRAY + 0.5)
    # CDDFuse's image_read_cv2: float32 image, cvtColor BGR2GRAY (0.299/0.587/0.114), np.round
    y = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    return np.round(y).astype(np.float64)


def compute_metrics(
    a: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    convention: str = "matlab",
    metrics: Iterable[str] | None = None,
) -> dict[str, float]:
    """Metrics of fused F against infrared A and visible B, keyed by name in METRIC_NAMES order."""
    names = select_metrics(metrics, convention)
    a, b, f = (to_gray(x, convention) for x in (a, b, f))
    if not a.shape == b.shape == f.shape:
        raise ValueError(f"size mismatch: A (IR) {a.shape}, B (VIS) {b.shape}, F (fused) {f.shape}; "
                         "all three must have the same height and width")
    if min(f.shape) < _MIN_SIDE:
        raise ValueError(f"image of shape {f.shape} is too small: the metrics need at least "
                         f"{_MIN_SIDE}x{_MIN_SIDE} pixels (VIF filters at four scales)")
    with np.errstate(divide="ignore", invalid="ignore"):  # e.g. SCD of F = A = B is 0/0: NaN
        return {n: float(_METRICS[n](a, b, f, convention)) for n in names}


def select_metrics(metrics: Iterable[str] | None, convention: str = "matlab") -> list[str]:
    """Validated metric names (None = all the convention has), in METRIC_NAMES order."""
    _check_convention(convention)
    valid = METRIC_NAMES if convention == "matlab" else FAST_METRICS
    if metrics is None:
        return list(valid)
    wanted = [metrics] if isinstance(metrics, str) else list(metrics)
    bad = [m for m in wanted if m not in valid]
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, bad))} for convention {convention!r}; "
                         f"valid: {', '.join(valid)}")
    if not wanted:
        raise ValueError(f"no metric names given; valid: {', '.join(valid)}")
    return [m for m in valid if m in wanted]


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}")


# ---- filters and small statistics ----------------------------------------------------------------

def _filter(img: np.ndarray, k1d: np.ndarray, border: int) -> np.ndarray:
    # separable correlation with a symmetric 1-D kernel, i.e. MATLAB filter2 / imfilter
    return cv2.sepFilter2D(img, cv2.CV_64F, k1d, k1d, borderType=border)


def _gauss1d(n: int, sigma: float) -> np.ndarray:
    # fspecial('gaussian', n, sigma) is the outer product of this normalised 1-D kernel
    x = np.arange(n) - (n - 1) / 2
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    # Pearson correlation over all pixels (MATLAB corr2)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def _levels(img: np.ndarray) -> np.ndarray:
    # histogram metrics need integer grey levels: non-integer fused output is rounded
    return np.clip(np.round(img), 0, 255).astype(np.intp)


def _entropy(counts: np.ndarray, log: Callable[[np.ndarray], np.ndarray]) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * log(p)).sum())


# ---- the metrics, each (a, b, f, convention) -> float ----------------------------------------------

def _en(a, b, f, conv):
    return _entropy(np.bincount(_levels(f).ravel(), minlength=256), np.log2)


def _sd(a, b, f, conv):
    return f.std()  # population standard deviation (ddof = 0)


def _sf(a, b, f, conv):
    rf = np.mean(np.diff(f, axis=1) ** 2)  # row frequency: horizontal neighbours
    cf = np.mean(np.diff(f, axis=0) ** 2)  # column frequency: vertical neighbours
    return np.sqrt(rf + cf)


def _ag(a, b, f, conv):
    gy, gx = np.gradient(f)  # = MATLAB gradient: central differences, one-sided at the borders
    s = np.sqrt((gx * gx + gy * gy) / 2)
    if conv == "matlab":
        return s.sum() / ((f.shape[0] - 1) * (f.shape[1] - 1))  # toolbox divides by (M-1)(N-1)
    return s.mean()


def _mi_pair(x: np.ndarray, fl: np.ndarray, conv: str) -> float:
    # MI = H(X) + H(F) - H(X, F), marginals from exact 256-bin histograms
    if conv == "matlab":
        # toolbox quirk: the joint histogram has edges 0..255 (255 bins, last one closed), so
        # levels 254 and 255 share a bin; and the result is in bits
        log, nb, jx, jf = np.log2, 255, np.minimum(x, 254), np.minimum(fl, 254)
    else:
        log, nb, jx, jf = np.log, 256, x, fl  # sklearn mutual_info_score: nats
    joint = np.bincount((jx * nb + jf).ravel(), minlength=nb * nb)
    hx = _entropy(np.bincount(x.ravel(), minlength=256), log)
    hf = _entropy(np.bincount(fl.ravel(), minlength=256), log)
    return hx + hf - _entropy(joint, log)


def _mi(a, b, f, conv):
    fl = _levels(f)
    return _mi_pair(_levels(a), fl, conv) + _mi_pair(_levels(b), fl, conv)


def _scd(a, b, f, conv):
    return _corr(f - b, a) + _corr(f - a, b)  # sum of the correlations of differences


def _cc(a, b, f, conv):
    return (_corr(a, f) + _corr(b, f)) / 2


def _psnr(a, b, f, conv):
    if conv == "matlab":
        mse = (np.mean(((a - f) / 255) ** 2) + np.mean(((b - f) / 255) ** 2)) / 2  # on 0..1 data
        return 20 * np.log10(255 / np.sqrt(mse))  # toolbox: peak 255 over a 0..1 RMSE (~60 dB)
    mse = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2  # on 0..255 data
    return 10 * np.log10(f.max() ** 2 / mse)  # peak is max(F), not 255


def _vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    # vifp_mscale: pixel-domain VIF over 4 scales, 'valid' filtering as MATLAB filter2
    sigma_nsq, eps = 2.0, 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1  # window 17, 9, 5, 3
        k, r = _gauss1d(n, n / 5), (n - 1) // 2

        def valid(x: np.ndarray, k: np.ndarray = k, r: int = r) -> np.ndarray:
            return _filter(x, k, cv2.BORDER_REFLECT)[r:-r, r:-r]  # the border never reaches 'valid'

        if scale > 1:
            ref, dist = valid(ref)[::2, ::2], valid(dist)[::2, ::2]  # low-pass, down-sample by 2
        mu1, mu2 = valid(ref), valid(dist)
        s1 = np.maximum(valid(ref * ref) - mu1 * mu1, 0)
        s2 = np.maximum(valid(dist * dist) - mu2 * mu2, 0)
        s12 = valid(ref * dist) - mu1 * mu2
        g = s12 / (s1 + eps)  # gain of the distortion channel
        sv = s2 - g * s12  # its additive noise variance
        flat1 = s1 < eps  # reference locally flat: nothing to transmit
        g[flat1], sv[flat1], s1[flat1] = 0, s2[flat1], 0
        flat2 = s2 < eps  # distorted locally flat: everything lost
        g[flat2], sv[flat2] = 0, 0
        neg = g < 0  # anti-correlated: pure noise
        sv[neg], g[neg] = s2[neg], 0
        sv[sv <= eps] = eps
        num += np.log10(1 + g * g * s1 / (sv + sigma_nsq)).sum()
        den += np.log10(1 + s1 / sigma_nsq).sum()
    vif = num / den
    return 1.0 if np.isnan(vif) else float(vif)  # 0/0 on a flat reference counts as perfect


def _vif(a, b, f, conv):
    return _vifp(a, f) + _vifp(b, f)


def _sobel(img: np.ndarray, scale: float, border: int) -> tuple[np.ndarray, np.ndarray]:
    # (d/dx, d/dy) by correlation with the 3x3 Sobel kernels
    dx = cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3, scale=scale, borderType=border)
    dy = cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3, scale=scale, borderType=border)
    return dx, dy


def _qabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = _sobel(img, 1.0, cv2.BORDER_CONSTANT)  # conv2(..., 'same'): zero padding
    # conv2 flips the kernels: Sx = conv2(img, h3) = -d/dx, Sy = conv2(img, h1) = +d/dy. The sign
    # matters because Sx = 0 is pinned to +pi/2 while every other angle changes sign with Sx.
    sx, sy = -dx, dy
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(sx == 0, np.pi / 2, np.arctan(sy / sx))
    return np.hypot(sx, sy), alpha


def _qabf(a, b, f, conv):
    (ga, aa), (gb, ab), (gf, af) = (_qabf_edges(x) for x in (a, b, f))

    def q(gx: np.ndarray, ax: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            # relative strength; the toolbox's tie branch (gX == gF) yields gF itself, not 1
            g = np.where(gx > gf, gf / gx, np.where(gx == gf, gf, gx / gf))
        ang = 1 - np.abs(ax - af) / (np.pi / 2)
        qg = 0.9994 / (1 + np.exp(-15 * (g - 0.5)))  # Tg, kg, Dg
        qa = 0.9879 / (1 + np.exp(-22 * (ang - 0.8)))  # Ta, ka, Da
        return qg * qa

    return (q(ga, aa) * ga + q(gb, ab) * gb).sum() / (ga + gb).sum()  # weights g^L, L = 1


def _ssim_matlab(x: np.ndarray, y: np.ndarray) -> float:
    # MATLAB ssim(): 11x11 Gaussian sigma 1.5, replicate padding, mean over the whole map, and
    # DynamicRange 1 (the double default) although the data is 0..255: C1 = 1e-4, C2 = 9e-4
    k, c1, c2 = _gauss1d(11, 1.5), 0.01**2, 0.03**2
    mx, my = (_filter(z, k, cv2.BORDER_REPLICATE) for z in (x, y))
    vx, vy, cxy = (_filter(z, k, cv2.BORDER_REPLICATE) for z in (x * x, y * y, x * y))
    vx, vy, cxy = vx - mx * mx, vy - my * my, cxy - mx * my
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def _box32(z: np.ndarray, win: int) -> np.ndarray:
    # scipy uniform_filter on float32: one 1-D pass per axis (rows first), float32 between passes
    k = np.full((win, 1), 1 / win)
    for kernel in (k, k.T):
        z = cv2.filter2D(z.astype(np.float64), cv2.CV_64F, kernel, borderType=cv2.BORDER_REFLECT)
        z = z.astype(np.float32)
    return z


def _ssim_skimage(x: np.ndarray, y: np.ndarray) -> float:
    # skimage structural_similarity as CDDFuse calls it on its float32 images: 7x7 uniform window,
    # sample covariance (49/48), data_range 2 (float dtype range -1..1), filter radius cropped.
    # Kept in float32 like the original: uxx - ux^2 cancels there, and that is the published number.
    win = 7
    x, y = x.astype(np.float32), y.astype(np.float32)
    c1, c2 = np.float32((0.01 * 2) ** 2), np.float32((0.03 * 2) ** 2)
    norm = np.float32(win * win / (win * win - 1))
    mx, my = _box32(x, win), _box32(y, win)
    vx, vy = norm * (_box32(x * x, win) - mx * mx), norm * (_box32(y * y, win) - my * my)
    cxy = norm * (_box32(x * y, win) - mx * my)
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    r = (win - 1) // 2
    return float(s[r:-r, r:-r].mean(dtype=np.float64))


def _ssim(a, b, f, conv):
    if conv == "matlab":
        return 0.5 * _ssim_matlab(f, a) + 0.5 * _ssim_matlab(f, b)
    return _ssim_skimage(f, a) + _ssim_skimage(f, b)  # a sum: 2 for a perfect fusion


def _nabf(a, b, f, conv):
    # Shreyamsha Kumar's modified artifact measure N_abf (objective_fusion_perform_fn, F first)
    td, wt_min, lg = 2.0, 0.001, 1.5
    grads = [_sobel(x, 1 / 8, cv2.BORDER_REFLECT_101) for x in (a, b, f)]  # Sobel/8, mirror pad
    ga, gb, gf = (np.hypot(dx, dy) for dx, dy in grads)
    with np.errstate(divide="ignore", invalid="ignore"):
        # toolbox orientation atan(gv/gh), where its "gv" is the d/dx kernel; 0 where both are 0
        aa, ab, af = (np.where((dx == 0) & (dy == 0), 0, np.arctan(dx / dy)) for dx, dy in grads)

        def q(gx: np.ndarray, ax: np.ndarray) -> np.ndarray:
            g = np.where((gx == 0) | (gf == 0), 0, np.where(gx > gf, gf / gx, gx / gf))
            ang = np.abs(np.abs(ax - af) - np.pi / 2) * 2 / np.pi
            qg = 0.9999 / (1 + np.exp(-19 * (g - 0.5)))  # Nrg, kg, sigma_g
            qa = 0.9995 / (1 + np.exp(-22 * (ang - 0.5)))  # Nra, ka, sigma_a
            return np.sqrt(qg * qa)

        qaf, qbf = q(ga, aa), q(gb, ab)
    wa = np.where(ga >= td, ga**lg, wt_min)  # edge weights, wt_min below the threshold Td
    wb = np.where(gb >= td, gb**lg, wt_min)
    artifacts = (gf > ga) & (gf > gb)  # F has an edge stronger than in either source
    return (artifacts * ((1 - qaf) * wa + (1 - qbf) * wb)).sum() / (wa + wb).sum()


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, str], float]] = {
    "EN": _en, "SD": _sd, "SF": _sf, "AG": _ag, "MI": _mi, "SCD": _scd, "VIF": _vif,
    "Qabf": _qabf, "SSIM": _ssim, "CC": _cc, "PSNR": _psnr, "Nabf": _nabf,
}
