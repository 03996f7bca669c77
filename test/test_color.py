"""YCbCr round trip, grey stays grey, intensity normalisation rules."""

from __future__ import annotations

import numpy as np
import pytest

from tim_core.color import rgb_to_ycbcr, to_unit, ycbcr_to_rgb


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
