"""tim_core.backends: every installed backend fuses a real pair like eager PyTorch (within 1 grey level), and a
backend that cannot run here fails with a message naming the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLES

from tim_core.backends import BACKENDS, BackendError, OpenVinoNet, build_backend, choose, unavailable
from tim_core.export import onnx_file
from tim_core.files import read_image
from tim_core.runtime import Fuser, load_bundle

MODEL = ROOT / "models" / "tim_ivif_compact"  # a trained bundle: real weights, runs in milliseconds
SLOW = {"torch_compile": "compiles for 10-60 s per input size; set TIM_TEST_COMPILE=1 to run it "
                         "(bench/bench_backends.py checks it on full-size pairs)"}


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A real MSRS pair cropped to 96x128: IR as 16 bit (the node's mono16), visible RGB."""
    ir, vis = read_image(SAMPLES / "ir" / "00055D.png"), read_image(SAMPLES / "vis" / "00055D.png")
    return ir[200:296, 240:368].astype(np.uint16) * 257, vis[200:296, 240:368]


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # ONNX exports stay out of ~/.cache


@pytest.mark.parametrize("name", [n for n in BACKENDS if n != "torch"])
def test_backend_within_one_grey_level_of_eager(name, pair) -> None:
    if unavailable(name):
        pytest.skip(unavailable(name))
    if name in SLOW and not os.environ.get("TIM_TEST_COMPILE"):
        pytest.skip(SLOW[name])
    ref = Fuser(MODEL, device="cpu", warmup=False)(*pair).fused
    fuser = Fuser(MODEL, device="cpu", backend=name, threads=1, warmup=False)
    got = fuser(*pair).fused
    assert got.shape == ref.shape == (96, 128, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref).max() <= 1
    grey = fuser(pair[0], pair[1][..., 1]).fused  # a second size-and-layout call on the same backend
    assert grey.shape == (96, 128)


def test_unknown_and_missing_backends_name_the_fix(monkeypatch) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; valid: auto, torch, onnxruntime, openvino"):
        Fuser(MODEL, device="cpu", backend="tensorrt", warmup=False)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(BackendError, match=r"needs the openvino package: pip install openvino \(or use backend "
                                           "'torch'"):
        Fuser(MODEL, device="cpu", backend="openvino", warmup=False)
    monkeypatch.setenv("CXX", "no-such-compiler++")
    assert "C++ compiler" in unavailable("torch_compile")
    with pytest.raises(BackendError, match="'no-such-compiler\\+\\+' not found; install g\\+\\+ or set CXX"):
        build_backend("torch_compile", MODEL, load_bundle(MODEL)[0])


def test_auto_picks_openvino_when_installed_else_torch(monkeypatch, pair) -> None:
    """`auto` (the node's default): openvino on CPU float32 when it can run here, otherwise eager torch; never
    openvino for half or CUDA. What it picked is Fuser.backend (the node's /diagnostics `backend`)."""
    assert choose("auto", "cuda", False) == "torch" and choose("auto", "cpu", True) == "torch"
    assert choose("onnxruntime") == "onnxruntime"
    installed = unavailable("openvino") is None
    assert choose("auto") == ("openvino" if installed else "torch")
    auto = Fuser(MODEL, device="cpu", backend="auto", threads=1, warmup=False)
    assert auto.backend == ("openvino" if installed else "torch")
    eager = Fuser(MODEL, device="cpu", backend="torch", threads=1, warmup=False)
    diff = np.abs(auto(*pair).fused.astype(int) - eager(*pair).fused.astype(int)).max()
    assert diff <= 1
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: a clean fallback, no error
    assert Fuser(MODEL, device="cpu", backend="auto", warmup=False).backend == "torch"


def test_backends_refuse_cuda_and_half_inputs() -> None:
    net = build_backend("onnxruntime", MODEL, load_bundle(MODEL)[0], threads=1)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32 on CPU"):
        net(x, x)


def test_openvino_compiles_each_shape_once_and_keeps_few(pair) -> None:
    pytest.importorskip("openvino", reason="optional backend: pip install openvino")
    net = OpenVinoNet(onnx_file(MODEL), threads=1)
    with torch.inference_mode():
        for h, w in ((16, 24), (16, 24), (20, 24), (24, 24), (28, 24), (32, 24)):
            out = net(torch.rand(1, 1, h, w), torch.rand(1, 1, h, w))
            assert out.shape == (1, 1, h, w) and out.dtype == torch.float32
    assert len(net._requests) <= OpenVinoNet.MAX_SHAPES


def test_backend_benchmark_smoke(tmp_path) -> None:
    """bench/bench_backends.py end to end on a tiny size: rows, roofline, recommendation, stage costs, JSON."""
    out = tmp_path / "backends.json"
    res = subprocess.run([sys.executable, "bench/bench_backends.py", str(MODEL), "--backends", "torch,onnxruntime",
                          "--sizes", "32x40", "--threads", "1", "--rounds", "1", "--pairs", "1", "--stage-calls", "1",
                          "--node-seconds", "0", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert [(r["backend"], r["status"]) for r in data["rows"]] == [("torch", "ok"), ("onnxruntime", "ok")]
    assert all(r["max_grey_diff"] <= 1 and r["x_roofline"] > 0 for r in data["rows"])
    assert data["roofline"]["1"]["32x40"]["achieved_gmac_per_s"] > 0
    assert data["recommendation"]["cpu_backend"] in BACKENDS
    stages = data["stages_in_process"][0]
    assert stages["status"].startswith("skipped") or {"decode", "normalise", "ycbcr", "model", "to_uint8",
                                                      "encode"} <= set(stages["median_ms"])


@pytest.mark.parametrize("genotype", ["tim_compact_s2w16", "tim_compact_s2w16_blend"])
def test_space_to_depth_network_exports_like_eager(tmp_path, pair, genotype: str) -> None:
    """Scale-2 genotypes (pixel_unshuffle / pixel_shuffle; the blend head's bilinear up-sampling) through ONNX and
    OpenVINO at a size that is no multiple of 2."""
    from tim_core.bundle import save_bundle
    from tim_core.genotype import load_genotype
    from tim_core.network import FusionNet

    if unavailable("onnxruntime"):
        pytest.skip(unavailable("onnxruntime"))
    torch.manual_seed(0)
    bundle = save_bundle(tmp_path / "s2", FusionNet(load_genotype(genotype)).eval(),
                         {"name": "s2", "task": "fusion"})
    ir, vis = pair[0][:95, :127], pair[1][:95, :127]
    ref = Fuser(bundle, device="cpu", warmup=False)(ir, vis).fused
    for name in ("onnxruntime", "openvino"):
        if unavailable(name):
            continue
        got = Fuser(bundle, device="cpu", backend=name, threads=1, warmup=False)(ir, vis).fused
        assert got.shape == ref.shape == (95, 127, 3) and np.abs(got.astype(int) - ref).max() <= 1, name
