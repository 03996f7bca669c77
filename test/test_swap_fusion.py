"""tools/swap_fusion.py on the shipped bundles: the detector's heads over the default compact's fusion weights."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from conftest import ROOT, SAMPLES
from safetensors.torch import load_file

from tim_core.files import read_image
from tim_core.runtime import Fuser

TOOL = [sys.executable, str(ROOT / "tools" / "swap_fusion.py")]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TOOL, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_swap_keeps_the_heads_and_takes_the_fusion(tmp_path) -> None:
    det, compact = ROOT / "models" / "tim_ivif_det", ROOT / "models" / "tim_ivif_compact"
    out = tmp_path / "swapped"
    proc = run(str(det), str(compact), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    swapped, heads, fusion = (load_file(str(p / "model.safetensors")) for p in (out, det, compact))
    assert set(swapped) == set(heads)
    assert all(torch.equal(swapped[k], fusion[k]) for k in fusion)  # fusion.* from the compact
    assert all(torch.equal(swapped[k], v) for k, v in heads.items() if not k.startswith("fusion."))
    card = json.loads((out / "card.json").read_text())
    assert card["heads"] == ["detection"] and card["classes"] == json.loads((det / "card.json").read_text())["classes"]
    assert "detection_eval" not in card and "task_validation" not in card  # measured on the old fused images
    assert card["lineage"][-1] == f"python tools/swap_fusion.py {det} {compact} --out {out}"
    fuser = Fuser(out, device="cpu")
    result = fuser(read_image(SAMPLES / "ir" / "00055D.png"), read_image(SAMPLES / "vis" / "00055D.png"))
    assert result.fused.shape == (480, 640, 3) and isinstance(result.detections, list)


def test_swap_refuses_another_genotype_and_an_existing_folder(tmp_path) -> None:
    det = str(ROOT / "models" / "tim_ivif_det")
    proc = run(det, str(ROOT / "models" / "tim_ivif_base"), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "different fusion genotypes" in proc.stderr and not (tmp_path / "x").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    proc = run(det, str(ROOT / "models" / "tim_ivif_compact"), "--out", str(tmp_path / "mine"))
    assert proc.returncode == 2 and "exists" in proc.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    proc = run(str(ROOT / "models" / "tim_ivif_compact"), det, "--out", str(tmp_path / "y"))
    assert proc.returncode == 2 and "has no task heads" in proc.stderr
