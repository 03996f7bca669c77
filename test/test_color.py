"""YCbCr round trip, grey stays grey, intensity normalisation rules."""

from __future__ import annotations

import numpy as np
import pytest

from tim_core.color import replace_luma, rgb_to_ycbcr, split_luma, to_unit, ycbcr_to_rgb


def test_ycbcr_round_trip_below_one_grey_level() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb / 255.0)) * 255.0
    assert np.abs(back - rgb).max() < 1.0


def test_grey_stays_grey() -> None:
    grey = np.repeat(np.linspace(0, 1, 50, dtype=np.float32)[None, :, None], 3, axis=2)
    ycc = rgb_to_ycbcr(grey)
    assert np.allclose(ycc[..., 1:], 0.5, atol=1e-6)
    back = ycbcr_to_rgb(ycc)
    assert np.allclose(back[..., 0], back[..., 1], atol=1e-6) and np.allclose(back[..., 1], back[..., 2], atol=1e-6)


def test_replace_luma_matches_the_ycbcr_round_trip() -> None:
    """The node's one-pass colour path (RGB + 255 dY) against YCbCr -> new Y -> RGB: within 1 grey level, and the
    same luma plane the network gets; saturated where the new luma pushes a channel out of 0..255."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    rgb[:8] = [250, 10, 10]  # saturated red: a brighter luma clips R, a darker one clips G and B
    planes, y = split_luma(rgb)
    planes_f, y_f = split_luma(rgb.astype(np.float32))  # other sources (uint16, float) come as float 0..255
    ycc = rgb_to_ycbcr(rgb / 255.0)
    assert np.abs(y - ycc[..., 0]).max() < 1e-5 and np.abs(y_f - y).max() < 1e-6
    y_new = np.clip(y + rng.normal(0.0, 0.3, y.shape).astype(np.float32), 0.0, 1.0)
    ycc[..., 0] = y_new
    expected = (ycbcr_to_rgb(ycc) * 255.0 + 0.5).astype(np.uint8)
    out = replace_luma(planes, y, y_new)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(replace_luma(planes_f, y_f, y_new), out)
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert (out[:8] == 255).any() and (out[:8] == 0).any()  # both ends were reached and clipped, not wrapped


def test_to_unit_rules() -> None:
    assert to_unit(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    raw = np.array([[1000, 3000, 5000]], np.uint16)
    assert np.allclose(to_unit(raw, "minmax"), [[0.0, 0.5, 1.0]])
    assert np.allclose(to_unit(raw, "fixed", (0, 10000)), [[0.1, 0.3, 0.5]])
    hot = np.full((10, 10), 1000, np.uint16)
    hot[0, 0] = 60000  # one hot pixel: percentile ignores it, minmax does not
    assert to_unit(hot, "percentile").max() <= 1.0
    kelvin = np.array([[290.0, 300.0]], np.float32)
    assert np.allclose(to_unit(kelvin), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        to_unit(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(ValueError, match="valid: minmax"):
        to_unit(raw, "zscore")


def test_uint16_percentiles_are_numpys_exactly() -> None:
    """The byte-plane histogram (cv2.calcHist) gives np.percentile's values, whatever the range or byte order."""
    from tim_core.color import _uint16_histogram, _uint16_percentiles

    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 65536, (48, 64)).astype(np.uint16),
              rng.integers(20000, 24000, (51, 37)).astype(np.uint16), np.full((9, 9), 300, np.uint16),
              rng.integers(250, 262, (31, 7)).astype(np.uint16),
              rng.integers(0, 4096, (40, 30)).astype(">u2")]  # big-endian 12 bit, as a camera may send it
    for img in frames:
        assert np.array_equal(_uint16_histogram(img), np.bincount(img.astype(np.int64).ravel(), minlength=65536))
        for q in ((1.0, 99.0), (0.0, 100.0), (50.0,), (0.1, 99.9)):
            assert np.allclose(_uint16_percentiles(img, q), np.percentile(img.astype(np.float64), q), rtol=0, atol=1e-9)
    scaled = to_unit(frames[1], "percentile")
    lo, hi = np.percentile(frames[1].astype(np.float64), (1.0, 99.0))
    assert scaled.dtype == np.float32
    assert np.abs(scaled - np.clip((frames[1] - lo) / (hi - lo), 0.0, 1.0)).max() < 1e-6
