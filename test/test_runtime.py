"""Bundles: bit-identical save/load, strict loading errors, Fuser input handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tim_core.runtime import CARD, GENOTYPE, WEIGHTS, BundleError, Fuser, load_bundle, resolve_bundle


def _pair(h=40, w=52, colour=True):
    rng = np.random.default_rng(1)
    ir = rng.integers(0, 256, (h, w), dtype=np.uint8)
    vis = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
    return ir, vis


def test_save_load_bit_identical(tiny_bundle) -> None:
    net, card, extra = load_bundle(tiny_bundle)
    assert card["task"] == "fusion" and extra == {}
    ir, vis = _pair()
    a = Fuser(tiny_bundle, device="cpu")(ir, vis).fused
    b = Fuser(tiny_bundle, device="cpu")(ir, vis).fused
    assert np.array_equal(a, b)
    with torch.no_grad():
        t = torch.rand(1, 1, 20, 24)
        assert torch.equal(net.eval()(t, t), load_bundle(tiny_bundle)[0].eval()(t, t))


def _tamper(bundle, fn):
    tensors = load_file(str(bundle / WEIGHTS))
    from safetensors import safe_open
    with safe_open(str(bundle / WEIGHTS), "pt") as f:
        meta = f.metadata()
    fn(tensors)
    save_file(tensors, str(bundle / WEIGHTS), metadata=meta)


def test_renamed_key_is_named(tiny_bundle) -> None:
    def rename(t):
        t["fusion.stem.0.1.weight_renamed"] = t.pop("fusion.stem.0.1.weight")
    _tamper(tiny_bundle, rename)
    with pytest.raises(BundleError, match=r"missing weight 'fusion.stem.0.1.weight'"):
        load_bundle(tiny_bundle)


def test_unexpected_key_is_named(tiny_bundle) -> None:
    _tamper(tiny_bundle, lambda t: t.__setitem__("fusion.extra.weight", torch.zeros(3)))
    with pytest.raises(BundleError, match=r"unexpected weight 'fusion.extra.weight'"):
        load_bundle(tiny_bundle)


def test_wrong_shape_is_named(tiny_bundle) -> None:
    _tamper(tiny_bundle, lambda t: t.__setitem__("fusion.head.0.1.bias", torch.zeros(5)))
    with pytest.raises(BundleError, match=r"'fusion.head.0.1.bias' has shape \(5,\).*needs \(8,\)"):
        load_bundle(tiny_bundle)


def test_wrong_genotype_is_caught(tiny_bundle) -> None:
    g = json.loads((tiny_bundle / GENOTYPE).read_text())
    g["cells"][1]["ops"][1] = "spatial_k3"  # same width, different architecture
    (tiny_bundle / GENOTYPE).write_text(json.dumps(g))
    with pytest.raises(BundleError, match="genotype does not match"):
        load_bundle(tiny_bundle)


def test_missing_files_and_names(tiny_bundle, tmp_path) -> None:
    (tiny_bundle / CARD).unlink()
    with pytest.raises(BundleError, match="missing card.json"):
        load_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="not a model bundle"):
        resolve_bundle(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        resolve_bundle("no_such_model_name")


def test_fuser_layouts_and_dtypes(tiny_bundle) -> None:
    fuser = Fuser(tiny_bundle, device="cpu")
    ir, vis = _pair(37, 45)
    res = fuser(ir, vis)
    assert res.fused.shape == (37, 45, 3) and res.fused.dtype == np.uint8
    assert set(res.timings) == {"prepare", "model", "finish", "normalise", "ycbcr", "to_uint8"}
    grey = fuser(ir, vis[..., 0]).fused
    assert grey.shape == (37, 45) and grey.dtype == np.uint8
    ir16 = ir.astype(np.uint16) * 16 + 2000  # a 12-bit thermal range with an offset
    assert fuser(ir16, vis).fused.shape == (37, 45, 3)
    assert fuser(ir.astype(np.float32) / 255, vis).fused.shape == (37, 45, 3)


def test_fuser_grey_visible_keeps_colour_neutral(tiny_bundle) -> None:
    fuser = Fuser(tiny_bundle, device="cpu")
    ir, vis = _pair()
    grey_rgb = np.repeat(vis[..., :1], 3, axis=2)
    out = fuser(ir, grey_rgb).fused.astype(int)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 1] - out[..., 2]).max() <= 1


def test_fuser_size_policies(tiny_bundle) -> None:
    ir, _ = _pair(40, 52)
    _, vis = _pair(80, 104)
    with pytest.raises(ValueError, match="sizes differ.*size_mismatch"):
        Fuser(tiny_bundle, device="cpu")(ir, vis)
    assert Fuser(tiny_bundle, device="cpu", size_mismatch="resize_ir")(ir, vis).fused.shape == (80, 104, 3)
    assert Fuser(tiny_bundle, device="cpu", size_mismatch="resize_vis")(ir, vis).fused.shape == (40, 52, 3)


def test_fuser_rejects_bad_input_and_config(tiny_bundle) -> None:
    fuser = Fuser(tiny_bundle, device="cpu")
    with pytest.raises(ValueError, match="empty"):
        fuser(np.zeros((0, 5), np.uint8), np.zeros((0, 5), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        fuser(np.full((8, 8), np.nan, np.float32), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        fuser(np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="unknown device"):
        Fuser(tiny_bundle, device="tpu")
    with pytest.raises(ValueError, match="half=True needs a CUDA device"):
        Fuser(tiny_bundle, device="cpu", half=True)
