"""Fusion metrics: both conventions against the shared reference values, plus properties and errors."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tim_core.files import read_image
from tim_core.metrics import CONVENTIONS, FAST_METRICS, METRIC_NAMES, compute_metrics, select_metrics, to_gray

REFERENCE = Path(__file__).resolve().parents[2] / "shared/data/metrics_reference"
REFERENCE_FILES = sorted(REFERENCE.glob("*.json"))

# ../shared/docs/METRICS.md: 1e-6 relative, except Qabf (atan branch ties) and cddfuse SSIM/VIF (float32 reference)
TOLERANCE = {("matlab", "Qabf"): 1e-4, ("cddfuse", "Qabf"): 1e-4,
             ("cddfuse", "SSIM"): 1e-5, ("cddfuse", "VIF"): 1e-5}


def _load(ref_file: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    ref = json.loads(ref_file.read_text())
    a, b, f = (read_image(ref_file.parent / ref[k]) for k in ("ir", "vis", "fused"))
    return ref, a, b, f


@pytest.mark.skipif(not REFERENCE_FILES, reason=f"{REFERENCE} not present (reference values live in ../shared)")
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("ref_file", REFERENCE_FILES, ids=[p.stem for p in REFERENCE_FILES])
def test_matches_reference(ref_file: Path, convention: str) -> None:
    ref, a, b, f = _load(ref_file)
    got = compute_metrics(a, b, f, convention)
    expected = {k: v for k, v in ref[convention].items() if k in METRIC_NAMES}
    assert set(got) == set(expected), "every metric of the convention has a reference value"
    for name, want in expected.items():
        tol = TOLERANCE.get((convention, name), 1e-6)
        assert got[name] == pytest.approx(want, rel=tol), f"{ref_file.name} {convention} {name}"


@pytest.mark.skipif(not REFERENCE_FILES, reason=f"{REFERENCE} not present (reference values live in ../shared)")
@pytest.mark.parametrize("ref_file", REFERENCE_FILES, ids=[p.stem for p in REFERENCE_FILES])
def test_reference_mse_is_the_psnr_we_compute(ref_file: Path) -> None:
    # the references also list MSE; our PSNR formulas must be the ones that turn it into their PSNR
    ref, _, _, f = _load(ref_file)
    m, c = ref["matlab"], ref["cddfuse"]
    assert 20 * math.log10(255 / math.sqrt(m["MSE"])) == pytest.approx(m["PSNR"], rel=1e-9)
    assert 10 * math.log10(float(f.max()) ** 2 / c["MSE"]) == pytest.approx(c["PSNR"], rel=1e-6)
    assert m["MSE"] * 255**2 == pytest.approx(c["MSE"], rel=1e-6)


def _triplet(seed: int = 0, shape: tuple[int, int] = (64, 80)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = _smooth(rng.integers(0, 200, shape))
    b = _smooth(rng.integers(30, 250, shape))
    return a, b, np.maximum(a, b)


def _smooth(noise: np.ndarray) -> np.ndarray:
    # blurred noise as uint8: image-like structure, so every metric is in its normal range
    return np.clip(cv2.GaussianBlur(noise.astype(np.float64), (0, 0), 2) * 1.5 - 60, 0, 253).astype(np.uint8)


def test_identical_images_give_the_ideal_values() -> None:
    a, _, _ = _triplet()
    assert a.max() < 254  # keep clear of the matlab MI 254/255 bin quirk
    en = compute_metrics(a, a, a, metrics=["EN"])["EN"]
    m = compute_metrics(a, a, a, "matlab")
    c = compute_metrics(a, a, a, "cddfuse")
    assert m["SSIM"] == pytest.approx(1.0, abs=1e-12)  # mean of two SSIMs
    assert c["SSIM"] == pytest.approx(2.0, abs=1e-6)  # sum of two SSIMs (float32)
    assert m["CC"] == pytest.approx(1.0) and c["CC"] == pytest.approx(1.0)
    assert m["VIF"] == pytest.approx(2.0) and c["VIF"] == pytest.approx(2.0)
    assert m["MI"] == pytest.approx(2 * en)  # bits
    assert c["MI"] == pytest.approx(2 * en * math.log(2))  # nats
    assert m["Nabf"] == 0.0  # no edge of F is stronger than both sources
    assert m["PSNR"] == math.inf and c["PSNR"] == math.inf
    assert math.isnan(m["SCD"])  # corr2 of an all-zero difference image is 0/0, as in MATLAB


def test_matlab_mi_merges_levels_254_and_255_in_the_joint_histogram() -> None:
    a, b, f = _triplet(1)
    assert max(a.max(), b.max(), f.max()) < 254  # no quirk to trigger: bits vs nats is the only difference
    bits = compute_metrics(a, b, f, "matlab", ["MI"])["MI"]
    assert bits == pytest.approx(compute_metrics(a, b, f, "cddfuse", ["MI"])["MI"] / math.log(2), rel=1e-12)
    f[:8], f[8:16] = 254, 255
    # one joint bin for 254 and 255 lowers H(X, F) while the marginals stay exact, so MI rises
    exact = compute_metrics(a, b, f, "cddfuse", ["MI"])["MI"] / math.log(2)
    assert compute_metrics(a, b, f, "matlab", ["MI"])["MI"] > exact + 1e-3


def test_swapping_ir_and_visible_changes_nothing() -> None:
    a, b, f = _triplet(2)
    for conv in CONVENTIONS:
        ab, ba = compute_metrics(a, b, f, conv), compute_metrics(b, a, f, conv)
        assert ab == pytest.approx(ba, rel=1e-9)


def test_float_input_equals_uint8_input() -> None:
    a, b, f = _triplet(3)
    for conv in CONVENTIONS:
        assert compute_metrics(a, b, f, conv) == compute_metrics(a / 1.0, b / 1.0, f / 1.0, conv)


def test_rgb_is_converted_to_luma_per_convention() -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, :20] = (10, 200, 90)
    rgb[:, 20:] = (177, 10, 208)
    # rgb2gray weights 0.2989/0.5870/0.1140: 82.487 -> 82; OpenCV's 0.299/0.587/0.114 (float32): 82.505 -> 83
    assert to_gray(rgb, "matlab")[0, 0] == 131 and to_gray(rgb, "matlab")[0, 39] == 82
    assert to_gray(rgb, "cddfuse")[0, 0] == 131 and to_gray(rgb, "cddfuse")[0, 39] == 83
    assert to_gray(rgb).dtype == np.float64
    for conv in CONVENTIONS:
        grey = to_gray(rgb, conv).astype(np.uint8)
        np.testing.assert_equal(compute_metrics(grey, grey, rgb, conv), compute_metrics(grey, grey, grey, conv))


def test_subset_keeps_canonical_order() -> None:
    a, b, f = _triplet(4)
    got = compute_metrics(a, b, f, metrics=["SSIM", "EN"])
    assert list(got) == ["EN", "SSIM"]
    assert got["EN"] == compute_metrics(a, b, f)["EN"]
    assert select_metrics(None, "cddfuse") == list(FAST_METRICS)


def test_errors_name_the_problem_and_the_valid_choices() -> None:
    a, b, f = _triplet(5)
    with pytest.raises(ValueError, match="valid: matlab, cddfuse"):
        compute_metrics(a, b, f, convention="octave")
    with pytest.raises(ValueError, match=r"'FMI'.*valid: EN, SD"):
        compute_metrics(a, b, f, metrics=["EN", "FMI"])
    with pytest.raises(ValueError, match=r"'Nabf' for convention 'cddfuse'"):
        compute_metrics(a, b, f, convention="cddfuse", metrics=["Nabf"])
    with pytest.raises(ValueError, match="no metric names given; valid: EN"):
        compute_metrics(a, b, f, metrics=[])
    with pytest.raises(ValueError, match=r"size mismatch.*\(64, 80\).*\(64, 80\).*\(64, 79\)"):
        compute_metrics(a, b, f[:, :79])
    with pytest.raises(ValueError, match="too small"):
        compute_metrics(a[:16, :16], b[:16, :16], f[:16, :16])
    with pytest.raises(ValueError, match="expected"):
        to_gray(np.zeros((4, 4, 2)))


def test_vga_triplet_is_fast() -> None:
    # "well under a second" for FAST_METRICS on 640x480; the bound leaves room for a loaded CI box
    a, b, f = _triplet(6, (480, 640))
    compute_metrics(a, b, f, metrics=FAST_METRICS)
    t0 = time.perf_counter()
    compute_metrics(a, b, f, metrics=FAST_METRICS)
    assert time.perf_counter() - t0 < 3.0


@pytest.mark.skipif(not (REFERENCE / "msrs_00004N_vigray.png").is_file()
                    or not (REFERENCE.parent / "msrs/vi/00004N.png").is_file(),
                    reason="reference visible image or its MSRS colour original not present")
def test_matlab_luma_reproduces_the_reference_grey_image() -> None:
    rgb = read_image(REFERENCE.parent / "msrs/vi/00004N.png")
    grey = read_image(REFERENCE / "msrs_00004N_vigray.png")
    assert np.array_equal(to_gray(rgb, "matlab"), grey)
