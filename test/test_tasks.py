"""Task networks: detector targets/decoder/NMS/mAP against hand-computed boxes, readers, mIoU, synthetic scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import needs_shared_data

from tim_core.files import ImageFileError, write_image
from tim_core.network import count_parameters
from tim_core.synthetic import CLASSES, make_scenes
from tim_core.tasks import build_task_net
from tim_core.tasks.boxes import LabelError, coco_map, coco_results, read_voc, read_yolo
from tim_core.tasks.data import load_task_data, sample_task_batch
from tim_core.tasks.detection import (
    CenterNet,
    decode,
    detection_loss,
    encode_targets,
    nms,
)
from tim_core.tasks.enhancement import EnhancementNet
from tim_core.tasks.segmentation import (
    confusion_matrix,
    miou,
    read_label,
    segmentation_loss,
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_enhancement_network_has_the_released_parameter_count() -> None:
    net = EnhancementNet()
    assert count_parameters(net) == 237_308
    ir, vis, fused = (torch.rand(1, 1, 16, 20) for _ in range(3))
    out, aux_ir, aux_vis = net(ir, vis, fused)
    assert out.shape == aux_ir.shape == aux_vis.shape == (1, 1, 16, 20)
    assert aux_ir.abs().max() <= 1.0  # the auxiliary heads end in tanh


def test_decoder_returns_hand_computed_box() -> None:
    out = torch.full((1, 3 + 4, 8, 10), -10.0)
    out[0, 1, 3, 5] = _logit(0.9)  # class 1, centre cell (x=5, y=3)
    out[0, 3:5, 3, 5] = torch.tensor([math.log(3.0), math.log(5.0)])  # w = 3 cells = 12 px, h = 20 px
    out[0, 5:7, 3, 5] = torch.tensor([_logit(0.25), _logit(0.75)])  # offset inside the cell
    boxes, scores, classes = decode(out, score_threshold=0.5)[0]
    cx, cy = (5 + 0.25) * 4, (3 + 0.75) * 4  # 21, 15
    np.testing.assert_allclose(boxes, [[cx - 6, cy - 10, cx + 6, cy + 10]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.9], atol=1e-6)
    assert classes.tolist() == [1]


def test_targets_decode_back_to_the_boxes() -> None:
    boxes = [np.array([[10.0, 6.0, 30.0, 22.0], [40.0, 8.0, 52.0, 40.0]], np.float32)]
    classes = [np.array([0, 2])]
    t = encode_targets(boxes, classes, 3, 48, 64)
    assert t["heat"].shape == (1, 3, 12, 16) and int(t["mask"].sum()) == 2
    heat = t["heat"].clamp(1e-6, 1 - 1e-6)
    off = t["offset"].clamp(1e-6, 1 - 1e-6)
    out = torch.cat([heat.log() - (1 - heat).log(), t["size"], off.log() - (1 - off).log()], 1)
    got, _, cls = decode(out, score_threshold=0.99)[0]
    order = np.argsort(got[:, 0])
    np.testing.assert_allclose(got[order], boxes[0], atol=1e-3)
    assert cls[order].tolist() == [0, 2]


def test_nms_suppresses_overlaps_of_one_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.5).tolist() == [0, 2, 3]  # IoU(0, 1) = 90/110 > 0.5
    assert nms(boxes, scores, classes, 0.95).tolist() == [0, 1, 2, 3]


def test_map_matches_hand_computed_values() -> None:
    gt = [(np.array([[10, 10, 50, 50]], np.float32), np.array([0]))]
    perfect = [(gt[0][0], np.array([0.9]), np.array([0]))]
    assert coco_map(gt, perfect, 3) == {"map50": 1.0, "map": 1.0}
    iou_062 = [(np.array([[10, 10, 10 + 40 * 0.62, 50]], np.float32), np.array([0.9]), np.array([0]))]
    res = coco_map(gt, iou_062, 3)  # passes IoU thresholds 0.50, 0.55, 0.60 of ten
    assert res["map50"] == pytest.approx(1.0) and res["map"] == pytest.approx(0.3)
    fp_first = [(np.array([[100, 100, 120, 120], [10, 10, 50, 50]], np.float32), np.array([0.9, 0.8]),
                 np.array([0, 0]))]
    assert coco_map(gt, fp_first, 3)["map50"] == pytest.approx(0.5)  # precision 1/2 at recall 1
    wrong_class = [(gt[0][0], np.array([0.9]), np.array([1]))]
    assert coco_map(gt, wrong_class, 3)["map50"] == 0.0


def test_coco_results_format() -> None:
    res = coco_results("00004N", np.array([[10, 20, 40, 60]]), np.array([0.5]), np.array([2]))
    assert res == [{"image_id": "00004N", "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.5}]


def test_yolo_reader_parses_msrs_labels() -> None:
    path = needs_shared_data("msrs/labels/fusion") / "00004N.txt"
    boxes, classes = read_yolo(path, 640, 480)
    first = path.read_text().split()[:5]
    cx, cy, w, h = (float(v) for v in first[1:])
    assert len(boxes) == len(classes) == len([ln for ln in path.read_text().splitlines() if ln.strip()])
    np.testing.assert_allclose(boxes[0], [(cx - w / 2) * 640, (cy - h / 2) * 480, (cx + w / 2) * 640,
                                          (cy + h / 2) * 480], rtol=1e-5)
    assert classes[0] == int(first[0])


def test_voc_reader_parses_llvip_sample(tmp_path) -> None:
    path = needs_shared_data("llvip_samples/labels_voc") / "010001.xml"
    boxes, classes, size = read_voc(path, ["person"])
    assert size == (1280, 1024) and len(boxes) == 6 and set(classes.tolist()) == {0}
    np.testing.assert_allclose(boxes[0], [287, 428, 351, 662])
    with pytest.raises(LabelError, match="class 'person' is not in the class list"):
        read_voc(path, ["car"])
    (tmp_path / "bad.txt").write_text("0 0.5 zero 0.1 0.1\n")
    with pytest.raises(LabelError, match="bad.txt:1"):
        read_yolo(tmp_path / "bad.txt", 10, 10)


def test_detection_data_from_msrs_scales_boxes() -> None:
    root = needs_shared_data("msrs")
    data = load_task_data("detection", [str(root)], "val", 0.2, (240, 320), classes=["person", "bicycle", "car"])
    assert data.ir.shape[1:] == (240, 320) and len(data) == len(data.boxes) > 0
    assert all((b[:, 2:] <= [321, 241]).all() for b in data.boxes if len(b))
    batch = sample_task_batch(data, 4, 128, torch.Generator().manual_seed(0))
    assert batch["ir"].shape == (4, 1, 128, 128)
    for b in batch["boxes"]:
        assert ((b >= 0) & (b <= 128)).all()


def test_miou_from_confusion_matrix_ignores_255() -> None:
    target = np.array([[0, 1], [255, 1]], np.uint8)
    pred = np.array([[0, 1], [1, 0]], np.uint8)
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    res = miou(conf)  # IoU0 = 1 / (2 + 1 - 1), IoU1 = 1 / (1 + 2 - 1); class 2 absent
    assert res["miou"] == pytest.approx(0.5) and res["iou"][2] is None


def test_segmentation_loss_and_dice_and_shapes() -> None:
    net = build_task_net("segmentation", 4, 8)
    logits = net(torch.rand(2, 1, 40, 52))
    assert logits.shape == (2, 4, 40, 52)
    target = torch.randint(0, 4, (2, 40, 52))
    target[0, :5] = 255
    loss, terms = segmentation_loss(logits, target, dice=0.5)
    loss.backward()
    assert set(terms) == {"ce", "dice"} and math.isfinite(loss.item())


def test_msrs_segmentation_layout_reader(tmp_path) -> None:
    scenes = make_scenes(6, seed=3, height=48, width=64)
    for i, s in enumerate(scenes):
        write_image(tmp_path / "ir" / f"{i:05d}N.png", (s.ir * 255).astype(np.uint8))
        write_image(tmp_path / "vi" / f"{i:05d}N.png", (s.vis * 255).astype(np.uint8))
        write_image(tmp_path / "Segmentation_labels" / f"{i:05d}N.png", s.mask)
    data = load_task_data("segmentation", [str(tmp_path)], "all", 0.2, (48, 64))
    assert len(data.classes) == 9 and data.classes[0] == "unlabelled"
    np.testing.assert_array_equal(data.masks, np.stack([s.mask for s in scenes]))
    write_image(tmp_path / "bad.png", np.full((4, 4, 3), 9, np.uint8))
    with pytest.raises(ImageFileError, match="single-channel"):
        read_label(tmp_path / "bad.png", 9)


def test_synthetic_scenes_are_exact_and_modality_specific() -> None:
    for s in make_scenes(20, seed=1):
        assert s.mask.max() < len(CLASSES) and len(s.boxes) == len(s.classes) == len(s.visibility)
        for (x1, y1, x2, y2), c, kind in zip(s.boxes.astype(int), s.classes, s.visibility):
            inside = s.mask[y1:y2, x1:x2] == c + 1
            assert inside.any() and inside[0].any() and inside[:, 0].any()  # tight box around the object
            ir_obj, vis_obj = s.ir[y1:y2, x1:x2][inside], s.vis[y1:y2, x1:x2][inside]
            assert (ir_obj.mean() > 0.5) == (kind in ("ir", "both"))  # warm only when IR sees it
            assert (vis_obj.std() > 0.1) == (kind in ("vis", "both"))  # texture only when VIS sees it


def test_detector_learns_a_tiny_synthetic_set() -> None:
    torch.manual_seed(0)
    scenes = make_scenes(80, seed=1, height=48, width=64)
    train, test = scenes[:64], scenes[64:]
    x = torch.from_numpy(np.stack([np.maximum(s.ir, s.vis) for s in scenes]))[:, None]
    targets = encode_targets([s.boxes for s in train], [s.classes for s in train], 3, 48, 64)
    net = CenterNet(3, 16)
    gt = [(s.boxes, s.classes) for s in test]

    def test_map() -> float:
        net.eval()
        with torch.no_grad():
            res = coco_map(gt, decode(net(x[64:]), 0.01), 3)["map50"]
        net.train()
        return res

    chance = test_map()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        i = torch.randint(64, (16,), generator=gen)
        loss, _ = detection_loss(net(x[i]), {k: v[i] for k, v in targets.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert test_map() > chance + 0.05
