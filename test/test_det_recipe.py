"""The detector recipe: box-aware augmentation, per-class AP and PR curves, and the recipe config end to end
(train -> checkpoint -> resume -> export -> `tim fuse`) on generated scenes."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_GENOTYPE

from tim_core.cli import main
from tim_core.config import ConfigError, load_config
from tim_core.files import write_image
from tim_core.guide_config import GuideConfig
from tim_core.runtime import load_bundle
from tim_core.synthetic import make_scenes
from tim_core.tasks.augment import Augment, clip_boxes, sample_augmented_batch
from tim_core.tasks.boxes import coco_evaluation
from tim_core.tasks.data import TaskData
from tim_core.tasks.detection_report import write_pr_curves

RECIPE = Path(__file__).resolve().parents[1] / "tim_core" / "configs" / "guide_det_recipe.yaml"


def _boxes_data(n: int = 6, h: int = 60, w: int = 80) -> TaskData:
    """Black images with white rectangles exactly at their boxes (IR and VIS alike)."""
    rng = np.random.default_rng(0)
    irs, boxes, labels = [], [], []
    for _ in range(n):
        img = np.zeros((h, w), np.float32)
        b = []
        for _ in range(3):
            x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x2, y2 = x1 + int(rng.integers(8, 20)), y1 + int(rng.integers(8, 20))
            img[y1:y2, x1:x2] = 1.0
            b.append((x1, y1, x2, y2))
        irs.append(img)
        boxes.append(np.array(b, np.float32))
        labels.append(np.array([0, 1, 2], np.int64))
    ir = np.stack(irs)
    return TaskData([f"s{i}" for i in range(n)], ir, ir.copy(), ["a", "b", "c"], boxes, labels)


@pytest.mark.parametrize("aug", [Augment((0.5, 1.5)), Augment((1.0, 1.0), mosaic=1.0), Augment((0.6, 1.4), 0.5)])
def test_boxes_follow_scale_flip_and_mosaic(aug: Augment) -> None:
    data = _boxes_data()
    for seed in range(4):
        b = sample_augmented_batch(data, 4, 48, aug, torch.Generator().manual_seed(seed))
        assert b["ir"].shape == (4, 1, 48, 48) and b["mask"] is None and b["fused"] is None
        for img, boxes in zip(b["ir"][:, 0].numpy(), b["boxes"]):
            covered = np.zeros(img.shape, bool)
            for x1, y1, x2, y2 in boxes:
                assert 0 <= x1 < x2 <= 48 and 0 <= y1 < y2 <= 48
                inner = img[math.ceil(y1) + 1:int(y2) - 1, math.ceil(x1) + 1:int(x2) - 1]
                assert inner.size == 0 or inner.mean() > 0.9, "a box lost its object"
                covered[max(int(y1) - 1, 0):int(y2) + 2, max(int(x1) - 1, 0):int(x2) + 2] = True
            # bright pixels away from every kept box: only objects dropped as tiny or mostly cut (a few)
            assert (img[~covered] > 0.9).mean() < 0.15


def test_augmentation_is_deterministic_and_jitters_cameras_apart() -> None:
    data = _boxes_data()
    aug = Augment((0.5, 1.5), mosaic=0.5, jitter=0.4)
    a, b = (sample_augmented_batch(data, 3, 0, aug, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a["ir"], b["ir"]) and torch.equal(a["vis"], b["vis"])
    assert all(np.array_equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))
    c = sample_augmented_batch(data, 3, 0, aug, torch.Generator().manual_seed(8))
    assert not torch.equal(a["ir"], c["ir"])
    assert not torch.equal(a["ir"], a["vis"]), "IR and VIS must get their own jitter"
    assert 0.0 <= float(a["ir"].min()) and float(a["vis"].max()) <= 1.0
    data.fused = data.ir
    with pytest.raises(ValueError, match="fuse per batch"):
        sample_augmented_batch(data, 1, 0, aug, torch.Generator())


def test_clip_drops_tiny_and_mostly_cut_boxes() -> None:
    boxes = np.array([[-5, 0, 10, 10], [0, 0, 1.5, 10], [-30, 0, 5, 10], [70, 50, 90, 70]], np.float32)
    keep = clip_boxes(boxes, 80, 60, min_box=2.0)
    assert keep.tolist() == [0, 3]
    assert boxes[0].tolist() == [0, 0, 10, 10] and boxes[3].tolist() == [70, 50, 80, 60]


def test_defaults_keep_the_previous_sampler_and_bad_values_name_the_field(tmp_path) -> None:
    assert not GuideConfig().augment().active
    with pytest.raises(ConfigError, match="mosaic"):
        load_config(GuideConfig, overrides={"mosaic": "1.5"})
    with pytest.raises(ConfigError, match="scale_min"):
        load_config(GuideConfig, overrides={"scale_min": "0"})
    cfg = load_config(GuideConfig, RECIPE)
    assert cfg.augment().active and cfg.ema > 0 and cfg.ckpt_every <= 100


def test_per_class_ap_and_pr_curves(tmp_path) -> None:
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([0, 1]))]
    half = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 40, 40]], np.float32),
             np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]))]  # class b: a false positive ranked first
    res = coco_evaluation(gt, half, ["a", "b", "c"])
    assert res["per_class_ap50"]["a"] == pytest.approx(1.0)
    assert res["per_class_ap50"]["b"] == pytest.approx(0.5)
    assert math.isnan(res["per_class_ap50"]["c"]) and "c" not in res["pr_curve"]
    assert res["map50"] == pytest.approx(0.75)
    curve = res["pr_curve"]["b"]
    assert len(curve["recall"]) == 101 and curve["precision"][-1] == pytest.approx(0.5)
    assert curve["score"][-1] == pytest.approx(0.7)
    path = write_pr_curves(res, tmp_path, "test")
    saved = json.loads(path.read_text())
    assert saved["per_class_ap50"] == {"a": 1.0, "b": 0.5, "c": None}
    assert saved["map50_95"] == pytest.approx(res["map"], abs=1e-5)
    svg = ET.parse(tmp_path / "pr_curve.svg").getroot()
    assert svg.tag.endswith("svg") and len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2


def test_recipe_trains_resumes_exactly_exports_and_fuses(tmp_path, monkeypatch) -> None:
    genotype = tmp_path / "g.json"
    genotype.write_text(json.dumps(TINY_GENOTYPE))
    args = ["guide", "--config", str(RECIPE), "--init", "", "--genotype", str(genotype), "--synthetic", "24",
            "--height", "32", "--width", "48", "--crop", "32", "--batch", "2", "--head_width", "8",
            "--steps", "4", "--warmup_steps", "1", "--ckpt_every", "2", "--val_every", "2", "--log_every", "1",
            "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    args += ["--out", str(tmp_path / "run")]
    import tim_core.checkpoint as checkpoint_mod

    real_save = checkpoint_mod.save_atomic

    def killed_after_step_2(obj, path):
        real_save(obj, path)
        if obj["step"] == 2:
            raise KeyboardInterrupt  # the sitting ends right after the step-2 checkpoint

    monkeypatch.setattr(checkpoint_mod, "save_atomic", killed_after_step_2)
    assert main(args) == 130
    monkeypatch.setattr(checkpoint_mod, "save_atomic", real_save)
    assert main([*args, "--resume"]) == 0
    bundle = tmp_path / "run" / "bundle"
    _, card, extra = load_bundle(bundle)
    full = load_bundle(tmp_path / "full" / "bundle")[2]
    for key, value in full.items():  # augmentation draws and the EMA continue exactly across the sittings
        assert torch.equal(value, extra[key]), f"{key} differs after resume"
    assert "detection.head.2.bias" in extra and card["heads"] == ["detection"]
    ev = card["detection_eval"]
    assert set(ev["per_class_ap50"]) == {"disk", "box", "bar"} and ev["pr_curve"] == "pr_curve.json"
    assert json.loads((bundle / "pr_curve.json").read_text())["iou"] == 0.5
    assert (tmp_path / "run" / "val_task" / "step_0000002" / "pr_curve.svg").is_file()
    for i, s in enumerate(make_scenes(2, seed=5, height=32, width=48)):
        write_image(tmp_path / "ir" / f"p{i}.png", (s.ir * 255).astype(np.uint8))
        write_image(tmp_path / "vis" / f"p{i}.png", (s.vis * 255).astype(np.uint8))
    assert main(["fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--out",
                 str(tmp_path / "out"), "--model", str(bundle), "--device", "cpu", "--quiet"]) == 0
    assert (tmp_path / "out" / "detections.json").is_file() and (tmp_path / "out" / "p1.png").is_file()
