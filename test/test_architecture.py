"""Structure that keeps the project easy to carry on: no import cycles, run-time loading without training code."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import import_graph  # noqa: E402


def test_no_import_cycles_anywhere() -> None:
    """Every import counts, top level and inside functions (tools/import_graph.py)."""
    assert import_graph.cycles(import_graph.graph()) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    g = import_graph.graph()
    assert "tim_core.runtime" in g["tim_core.cli"]  # cli imports runtime inside cmd_fuse only
    assert "tim_core.bundle" in g["tim_core.runtime"]


TRAINING_ONLY = ("tim_core.train", "tim_core.data", "tim_core.synthetic", "tim_core.tasks.data",
                 "tim_core.tasks.training", "tim_core.guided", "tim_core.search", "tim_core.meta", "tim_core.adapt",
                 "tim_core.checkpoint", "tim_core.tasks.boxes")


def test_loading_a_detection_bundle_imports_no_training_code() -> None:
    code = ("import sys\nfrom tim_core.runtime import Fuser\nFuser('tim_ivif_det', device='cpu', warmup=False)\n"
            f"print(sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
