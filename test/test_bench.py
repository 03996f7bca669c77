"""Benchmarks cannot rot: the harness, `tim bench`, `tim export` + ONNX Runtime backend, the speed-path
numerics, and smoke runs of the bench scripts (seconds, tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_GENOTYPE

from tim_core import cli
from tim_core.bench import nearest_rank, time_call
from tim_core.color import _RGB2YCBCR, rgb_to_ycbcr, to_unit, ycbcr_to_rgb
from tim_core.export import ONNX_FILE, OnnxRuntimeNet, export_onnx
from tim_core.runtime import BundleError, Fuser, load_bundle


def test_time_call_respects_runs_and_budget() -> None:
    calls = []
    t = time_call(lambda: (calls.append(1), time.sleep(0.002)), warmup=2, min_runs=4, max_runs=6, budget_s=0.0)
    assert t.runs == 4 and len(calls) == 6  # 2 warm-up + 4 timed
    assert 1.5 <= t.median_ms <= t.p95_ms
    assert time_call(lambda: None, warmup=0, min_runs=1, max_runs=7, budget_s=60.0).runs == 7
    assert nearest_rank(list(range(1, 21)), 0.95) == 19 and nearest_rank([3.0, 1.0, 2.0], 0.95) == 3.0


def test_tim_bench_models_in_one_process(tiny_bundle, tmp_path, capsys) -> None:
    geno = tmp_path / "g.json"
    geno.write_text(json.dumps(TINY_GENOTYPE | {"name": "tiny_random"}))
    rc = cli.main(["bench", "--model", f"{tiny_bundle},{geno}", "--size", "24x40", "--threads", "1",
                   "--runs", "2", "--budget", "0", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["model"] for r in rows] == ["tiny_bundle", "tiny_random (random)"]
    assert rows[0]["ratio"] == 1.0 and all(r["median_ms"] > 0 and r["runs"] == 2 for r in rows)
    assert rows[1]["ratio"] == pytest.approx(rows[1]["fps"] / rows[0]["fps"])
    assert cli.main(["bench", "--model", "no_such_model"]) == 2
    assert "neither a bundle nor a genotype" in capsys.readouterr().err


def test_bench_times_a_detection_bundle_with_its_detector() -> None:
    from tim_core.bench import bench_fuser
    from tim_core.runtime import Fuser

    fuser = Fuser("tim_ivif_det", device="cpu", backend="torch")
    calls, heads = [], fuser.heads
    fuser.heads = lambda *args: calls.append(1) or heads(*args)
    row = bench_fuser(fuser, 48, 64, warmup=0, min_runs=2, max_runs=2, budget_s=0.0)
    assert row["runs"] == 2 and len(calls) == 2  # the detector ran in every timed call, not the fusion alone


def test_export_dynamic_size_and_verified_on_real_pair(tiny_bundle, tmp_path, capsys) -> None:
    out = tmp_path / "tiny.onnx"
    assert cli.main(["export", "--model", str(tiny_bundle), "--format", "onnx", "--out", str(out),
                     "--verify-pairs", "1"]) == 0
    assert "verified on 1 real pair" in capsys.readouterr().out
    net = load_bundle(tiny_bundle)[0].eval()
    ort_net = OnnxRuntimeNet(out)
    for h, w in ((37, 45), (64, 80)):  # odd sizes exercise the in-graph padding of the multi-scale cell
        a, b = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)
        with torch.inference_mode():
            assert (ort_net(a, b) - net(a, b)).abs().max() < 1e-4


def test_fuser_onnxruntime_backend(tiny_bundle, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    export_onnx(tiny_bundle, tiny_bundle / ONNX_FILE)
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 65535, (50, 66), dtype=np.uint16)
    vis = rng.integers(0, 256, (50, 66, 3), dtype=np.uint8)
    ref = Fuser(tiny_bundle, device="cpu")(ir, vis).fused
    fuser = Fuser(tiny_bundle, device="cpu", backend="onnxruntime")
    assert fuser.net.path == tiny_bundle / ONNX_FILE
    assert np.abs(fuser(ir, vis).fused.astype(int) - ref).max() <= 1
    torch.manual_seed(1)  # retrained weights: the stale model.onnx is ignored, a fresh export is cached
    from tim_core.network import FusionNet
    from tim_core.runtime import save_bundle
    save_bundle(tiny_bundle, FusionNet(load_bundle(tiny_bundle)[0].genotype), {"task": "fusion"})
    fresh = Fuser(tiny_bundle, device="cpu", backend="onnxruntime")
    assert fresh.net.path.is_relative_to(tmp_path / "cache")
    with pytest.raises(ValueError, match="valid: auto, torch, onnxruntime"):
        Fuser(tiny_bundle, device="cpu", backend="tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BundleError, match="pip install onnxruntime"):
        Fuser(tiny_bundle, device="cpu", backend="onnxruntime")


def test_fast_colour_path_keeps_numerics() -> None:
    rng = np.random.default_rng(3)
    for raw in (rng.integers(0, 65535, (61, 77), dtype=np.uint16), np.full((4, 5), 9, np.uint16),
                rng.normal(3e4, 900, (40, 40)).astype(np.uint16)):
        x = raw.astype(np.float64)
        lo, hi = np.percentile(x, (1.0, 99.0))
        ref = np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)
        got = to_unit(raw, "percentile")
        assert got.dtype == np.float32 and np.abs(got - ref).max() < 1e-6
    rgb = rng.random((33, 47, 3), dtype=np.float32)
    ycc = rgb_to_ycbcr(rgb)
    assert np.abs(ycc - (rgb @ _RGB2YCBCR.T + [0, 0.5, 0.5])).max() < 1e-6
    assert np.abs(ycbcr_to_rgb(ycc) - rgb).max() < 1e-5


def _script(*args: str, cache: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}  # ONNX exports of test bundles stay out of ~/.cache
    return subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_model_benchmark_smoke(tiny_bundle, tmp_path) -> None:
    res = _script("bench/bench_models.py", "--smoke", "--models", f"{tiny_bundle},tim_light", cache=tmp_path,
                  timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads((ROOT / "bench" / "results" / "models_smoke.tmp").read_text())
    assert {(r["model"], r["backend"]) for r in data["results"]} == {
        ("tiny_bundle", "torch"), ("tiny_bundle", "onnxruntime"), ("tim_light (random)", "torch")}
    assert all(r["x_tim_light"] > 0 for r in data["results"]) and len(data["channels_last"]) == 2
    assert "x tim_light" in res.stdout


def test_node_benchmark_smoke(tmp_path) -> None:
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) not installed; run `make test`")
    res = _script("bench/bench_node.py", "--smoke", cache=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads((ROOT / "bench" / "results" / "node_smoke.tmp").read_text())
    assert data["fused_received"] > 0 and data["stages"]["fuse"]["p50_ms"] > 0
    assert data["outside_model_share"] > 0 and data["node_rss_mb"] > 0


def test_registration_native_smoke(tmp_path) -> None:
    """Two real MSRS pairs registered on their own: an offset from identity per pair, written as JSON."""
    res = _script("bench/registration_native.py", "--smoke", cache=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads((ROOT / "bench" / "results" / "registration_native_smoke.tmp").read_text())
    rows = data["sets"]["msrs"]["pairs"]
    assert len(rows) == 2 and all(np.isfinite(r["offset_px"]) and len(r["homography"]) == 9 for r in rows)


def test_meta_budget_table_from_both_studies(tmp_path) -> None:
    """The gap-vs-budget table of the two PMI studies' committed JSON: one row per held-out task and K, a PNG."""
    png = tmp_path / "budget.png"
    res = _script("bench/meta_budget.py", "--png", str(png), cache=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| mri_") or line.startswith("| roadscene")]
    assert len(rows) == 8 and all(line.count("/3 seeds") == 2 for line in rows)
    assert png.stat().st_size > 1000
