"""Structure that keeps the project easy to carry on: no import cycles, run-time loading without training code,
subcommands imported lazily, and the shipped models' fused pixels pinned."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLES

from tim_core.files import pair_paths, read_image
from tim_core.runtime import Fuser

sys.path.insert(0, str(ROOT / "tools"))
import import_graph  # noqa: E402


def test_no_import_cycles_anywhere() -> None:
    """Every import counts, top level and inside functions (tools/import_graph.py)."""
    assert import_graph.cycles(import_graph.graph()) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    g = import_graph.graph()
    assert "tim_core.runtime" in g["tim_core.commands.fuse"]
    assert "tim_core.bundle" in g["tim_core.runtime"]


TRAINING_ONLY = ("tim_core.train", "tim_core.data", "tim_core.synthetic", "tim_core.tasks.data",
                 "tim_core.tasks.training", "tim_core.guided", "tim_core.search", "tim_core.meta", "tim_core.adapt",
                 "tim_core.checkpoint", "tim_core.trainer", "tim_core.tasks.boxes")


def test_loading_a_detection_bundle_imports_no_training_code() -> None:
    code = ("import sys\nfrom tim_core.runtime import Fuser\nFuser('tim_ivif_det', device='cpu', warmup=False)\n"
            f"print(sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def _modules_after(argv: list[str]) -> list[str]:
    code = ("import sys\nfrom tim_core.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('tim_core') or m == 'torch'))")
    res = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_tim_help_imports_no_subcommand_nor_torch() -> None:
    loaded = _modules_after(["--help"])
    assert "torch" not in loaded
    assert [m for m in loaded if m.startswith("tim_core.commands.")] == ["tim_core.commands.common"]


def test_tim_fuse_imports_only_its_own_command_and_no_training_code() -> None:
    loaded = _modules_after(["fuse", "--help"])
    assert [m for m in loaded if m.startswith("tim_core.commands.")] == ["tim_core.commands.common",
                                                                          "tim_core.commands.fuse"]
    assert [m for m in TRAINING_ONLY if m in loaded and m != "tim_core.tasks.boxes"] == []


# Fused 8-bit output of the shipped bundles on samples/ (mean and 4x4 block means per image), computed from the
# real models before the command/trainer refactor. The tolerance covers thread counts and CPUs (a pixel rounding
# to the neighbouring grey level); any change to the network, the weights or the pre/post-processing moves more.
REFERENCE = json.loads((ROOT / "test" / "fused_reference.json").read_text())


@pytest.mark.parametrize("model", sorted({k.split("/")[0] for k in REFERENCE}))
def test_fused_samples_match_the_reference(model: str) -> None:
    fuser = Fuser(model, device="cpu", size_mismatch="resize_ir")
    pairs = pair_paths(SAMPLES / "ir", SAMPLES / "vis")[0]
    assert sorted(f"{model}/{p.name}" for p in pairs) == sorted(k for k in REFERENCE if k.startswith(model + "/"))
    for pair in pairs:
        ref = REFERENCE[f"{model}/{pair.name}"]
        fused = fuser(read_image(pair.a), read_image(pair.b)).fused.astype(np.float64)
        assert list(fused.shape) == ref["shape"], pair.name
        h, w = fused.shape[:2]
        grid = fused[: h // 4 * 4, : w // 4 * 4].reshape(4, h // 4, 4, w // 4, -1).mean(axis=(1, 3, 4)).ravel()
        assert abs(fused.mean() - ref["mean"]) < 0.05, pair.name
        assert np.abs(grid - ref["grid"]).max() < 0.05, pair.name
