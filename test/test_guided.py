"""`tim guide` end to end on generated scenes: couplings, exact resume, bundles with heads, Fuser and `tim fuse`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_GENOTYPE
from safetensors.torch import load_file, save_file

from tim_core.cli import main
from tim_core.files import write_image
from tim_core.runtime import BundleError, Fuser, load_bundle
from tim_core.synthetic import make_scenes


@pytest.fixture
def genotype(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(TINY_GENOTYPE))
    return path


def _args(genotype, out, task="detection", steps=4, *extra):
    return [
        "guide",
        "--task",
        task,
        "--genotype",
        str(genotype),
        "--synthetic",
        "40",
        "--height",
        "32",
        "--width",
        "48",
        "--crop",
        "0",
        "--batch",
        "2",
        "--head_width",
        "8",
        "--steps",
        str(steps),
        "--warmup_steps",
        "2",
        "--ckpt_every",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


def test_guide_resume_is_exact(genotype, tmp_path, monkeypatch) -> None:
    assert main(_args(genotype, tmp_path / "full", "detection", 6)) == 0
    full = load_bundle(tmp_path / "full" / "bundle")

    import tim_core.checkpoint as checkpoint_mod

    real_save = checkpoint_mod.save_atomic

    def killed_after_step_4(obj, path):
        real_save(obj, path)
        if obj["step"] == 4:
            raise KeyboardInterrupt  # the process dies right after the step-4 checkpoint

    monkeypatch.setattr(checkpoint_mod, "save_atomic", killed_after_step_4)
    assert main(_args(genotype, tmp_path / "cut", "detection", 6)) == 130  # Ctrl-C's exit status
    monkeypatch.setattr(checkpoint_mod, "save_atomic", real_save)
    assert main(_args(genotype, tmp_path / "cut", "detection", 6, "--resume")) == 0
    resumed = load_bundle(tmp_path / "cut" / "bundle")
    for key, value in full[0].state_dict().items():
        assert torch.equal(value, resumed[0].state_dict()[key]), f"fusion {key} differs after resume"
    for key, value in full[2].items():
        assert torch.equal(value, resumed[2][key]), f"{key} differs after resume"
    start = load_bundle(tmp_path / "full" / "bundle")[0]
    assert (tmp_path / "full" / "tb").is_dir() and start.genotype.name == "tiny_test"


def test_guided_fusion_moves_and_frozen_does_not(genotype, tmp_path) -> None:
    assert main(_args(genotype, tmp_path / "base", "detection", 2, "--coupling", "frozen")) == 0
    base = tmp_path / "base" / "bundle"
    card = json.loads((base / "card.json").read_text())
    assert card["heads"] == ["detection"] and card["classes"] == ["disk", "box", "bar"]
    assert "tim guide" in card["command"] and card["task_validation"]["n"] > 0
    before = load_bundle(base)[0].state_dict()
    for coupling, extra in (
        ("frozen", []),
        ("alternating", []),
        ("bilevel", ["--hypergrad", "ias"]),
        ("bilevel", ["--hypergrad", "neumann", "--neumann_terms", "2"]),
    ):
        out = tmp_path / f"{coupling}_{len(extra)}"
        assert main(_args(genotype, out, "detection", 2, "--coupling", coupling, "--init", str(base), *extra)) == 0
        after, after_card, _ = load_bundle(out / "bundle")
        after = after.state_dict()
        assert after_card["lineage"] == [card["command"], after_card["command"]], coupling  # init's, then its own
        moved = any(not torch.equal(v, after[k]) for k, v in before.items())
        assert moved == (coupling != "frozen"), coupling


def test_single_camera_baseline_exports_no_bundle(genotype, tmp_path, capsys) -> None:
    assert main(_args(genotype, tmp_path / "ir", "segmentation", 2, "--input", "ir", "--coupling", "frozen")) == 0
    metrics = json.loads((tmp_path / "ir" / "metrics.json").read_text())
    assert metrics["bundle"] is None and 0.0 <= metrics["task"]["miou"] <= 1.0
    assert main(_args(genotype, tmp_path / "bad", "detection", 2, "--input", "vis")) == 2
    assert "use coupling frozen" in capsys.readouterr().err


def test_bundle_heads_drive_fuser_and_tim_fuse(genotype, tmp_path) -> None:
    assert main(_args(genotype, tmp_path / "det", "detection", 2)) == 0
    assert main(_args(genotype, tmp_path / "seg", "segmentation", 2)) == 0
    scenes = make_scenes(2, seed=9, height=40, width=60)
    for i, s in enumerate(scenes):
        write_image(tmp_path / "ir" / f"scene{i}.png", (s.ir * 255).astype(np.uint8))
        write_image(tmp_path / "vis" / f"scene{i}.png", (s.vis * 255).astype(np.uint8))
    fuser = Fuser(tmp_path / "det" / "bundle", device="cpu", score_threshold=0.0, nms_iou=0.5)
    res = fuser((scenes[0].ir * 255).astype(np.uint8), (scenes[0].vis * 255).astype(np.uint8))
    assert res.mask is None and "tasks" in res.timings and len(res.detections) > 0
    d = res.detections[0]
    assert d.label == ["disk", "box", "bar"][d.class_id] and 0 <= d.box[0] <= d.box[2] <= 60 and d.box[3] <= 40
    assert (
        main(
            [
                "fuse",
                "--ir",
                str(tmp_path / "ir"),
                "--vis",
                str(tmp_path / "vis"),
                "--out",
                str(tmp_path / "o"),
                "--model",
                str(tmp_path / "det" / "bundle"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    coco = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert {r["image_id"] for r in coco} <= {"scene0", "scene1"}
    assert all(len(r["bbox"]) == 4 and r["score"] >= 0.3 and 0 <= r["category_id"] < 3 for r in coco)
    assert (
        main(
            [
                "fuse",
                "--ir",
                str(tmp_path / "ir"),
                "--vis",
                str(tmp_path / "vis"),
                "--out",
                str(tmp_path / "s"),
                "--model",
                str(tmp_path / "seg" / "bundle"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    from tim_core.files import read_image

    mask = read_image(tmp_path / "s" / "masks" / "scene1.png")
    assert mask.shape == (40, 60) and mask.dtype == np.uint8 and mask.max() < 4


def test_head_weights_load_strictly(genotype, tmp_path) -> None:
    assert main(_args(genotype, tmp_path / "det", "detection", 1)) == 0
    bundle = tmp_path / "det" / "bundle"
    weights = load_file(str(bundle / "model.safetensors"))
    meta = {"format": "tim-bundle-1", "genotype_fingerprint": load_bundle(bundle)[0].genotype.fingerprint()}
    missing = {k: v for k, v in weights.items() if k != "detection.head.2.bias"}
    save_file(missing, str(bundle / "model.safetensors"), metadata=meta)
    with pytest.raises(BundleError, match="missing weight 'detection.head.2.bias'"):
        Fuser(bundle, device="cpu")
    save_file(
        {**weights, "segmentation.head.0.weight": torch.zeros(1)}, str(bundle / "model.safetensors"), metadata=meta
    )
    with pytest.raises(BundleError, match="belongs to no head"):
        Fuser(bundle, device="cpu")


def test_enhancement_task_runs(genotype, tmp_path) -> None:
    assert main(_args(genotype, tmp_path / "enh", "enhancement", 1, "--head_width", "8", "--crop", "16")) == 0
    card = json.loads((tmp_path / "enh" / "bundle" / "card.json").read_text())
    assert card["heads"] == ["enhancement"] and card["task_validation"]["loss"] > 0
    res = Fuser(tmp_path / "enh" / "bundle", device="cpu")(np.zeros((20, 24), np.uint8), np.zeros((20, 24), np.uint8))
    assert res.fused.shape == (20, 24)


def test_guide_segmentation_on_msrs_layout(genotype, tmp_path) -> None:
    for i, s in enumerate(make_scenes(8, seed=4, height=32, width=48)):
        write_image(tmp_path / "msrs" / "ir" / f"{i:05d}D.png", (s.ir * 255).astype(np.uint8))
        write_image(tmp_path / "msrs" / "vi" / f"{i:05d}D.png", (s.vis * 255).astype(np.uint8))
        write_image(tmp_path / "msrs" / "Segmentation_labels" / f"{i:05d}D.png", s.mask)
    assert (
        main(
            _args(
                genotype,
                tmp_path / "seg",
                "segmentation",
                1,
                "--synthetic",
                "0",
                "--data",
                f"[{tmp_path / 'msrs'}]",
                "--val_fraction",
                "0.5",
            )
        )
        == 0
    )
    card = json.loads((tmp_path / "seg" / "bundle" / "card.json").read_text())
    assert card["segmentation_classes"][:2] == ["unlabelled", "car"] and len(card["segmentation_classes"]) == 9


def test_used_run_folder_needs_resume_or_overwrite(genotype, tmp_path, capsys) -> None:
    """A second `tim guide` into a folder holding a run, without --resume, is refused and touches nothing; with
    --overwrite it starts over (the rule `tim train` has, now shared by guide, search and meta)."""
    out = tmp_path / "run"
    assert main(_args(genotype, out, "detection", 2)) == 0
    ckpt = out / "checkpoint.pt"
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert main(_args(genotype, out, "detection", 2)) == 2
    err = capsys.readouterr().err
    assert "holds a previous run" in err and "--resume" in err and "--overwrite" in err
    assert ckpt.read_bytes() == before
    assert main(_args(genotype, out, "detection", 2, "--overwrite")) == 0
