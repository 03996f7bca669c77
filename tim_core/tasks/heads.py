"""Task heads inside a bundle: their card fields, strict loading, and running them on the fused luma.

Card: "heads" (e.g. ["detection"]), "classes" (detection) / "segmentation_classes", "task_input" [H, W]
(the size the heads were trained at: the fused luma is resized to it, outputs are mapped back) and
"head_width". Weights: extra tensors "<head>.<key>" in model.safetensors, checked key by key and shape by shape.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from ..bundle import Detection
from . import TASKS, build_task_net, get_task
from .detection import decode


class HeadError(ValueError):
    """A bundle's task heads that do not match its card; the message names the key and the fix."""


def head_card(task: str, classes: list[str], width: int, size: tuple[int, int]) -> dict:
    """Card fields describing one task head."""
    card = {"heads": [task], "task_input": list(size), "head_width": {task: width}}
    key = get_task(task).classes_key
    if key:
        card[key] = list(classes)
    return card


def head_tensors(task: str, net: nn.Module) -> dict[str, torch.Tensor]:
    """The head's floating-point state as bundle tensors prefixed '<task>.'."""
    return {f"{task}.{k}": v for k, v in net.state_dict().items() if v.is_floating_point()}


def load_heads(card: dict, extra: dict[str, torch.Tensor], source: str) -> dict[str, nn.Module]:
    """Build and strictly load every head the card lists; unknown or unlisted tensors are errors."""
    heads: dict[str, nn.Module] = {}
    listed = list(card.get("heads", []))
    for key in extra:
        if key.split(".", 1)[0] not in listed:
            raise HeadError(f"{source}: tensor {key!r} belongs to no head in card['heads'] = {listed}")
    for task in listed:
        if task not in TASKS:
            raise HeadError(f"{source}: card head {task!r} is unknown; valid: {', '.join(TASKS)}")
        key = get_task(task).classes_key
        classes = card.get(key, []) if key else []
        width = card.get("head_width", {}).get(task)
        if width is None or (key and not classes):
            raise HeadError(f"{source}: card needs head_width[{task!r}] and its class list for the {task} head")
        net = build_task_net(task, len(classes), int(width))
        expected = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
        got = {k[len(task) + 1 :]: v for k, v in extra.items() if k.startswith(task + ".")}
        for k, v in expected.items():
            if k not in got:
                raise HeadError(f"{source}: missing weight '{task}.{k}' of the {task} head")
            if got[k].shape != v.shape:
                raise HeadError(
                    f"{source}: weight '{task}.{k}' has shape {tuple(got[k].shape)}, needs {tuple(v.shape)}"
                )
        for k in got:
            if k not in expected:
                raise HeadError(f"{source}: unexpected weight '{task}.{k}' for the {task} head")
        net.load_state_dict(got, strict=False)  # checked above; integer BN counters are not stored
        heads[task] = net.eval()
    return heads


class TaskHeads:
    """Runs a bundle's heads on one fused luma plane: enhancement first, then segmentation and detection."""

    def __init__(
        self,
        card: dict,
        extra: dict[str, torch.Tensor],
        source: str,
        device: torch.device,
        dtype: torch.dtype,
        score_threshold: float = 0.3,
        nms_iou: float = 0.5,
    ):
        self.card, self.device, self.dtype = card, device, dtype
        self.heads = {k: v.to(device, dtype) for k, v in load_heads(card, extra, source).items()}
        self.size = tuple(card.get("task_input", (0, 0)))
        self.score_threshold, self.nms_iou = score_threshold, nms_iou

    def _tensor(self, plane: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(plane, np.float32))[None, None].to(self.device, self.dtype)

    def __call__(self, ir_u: np.ndarray, vis_y: np.ndarray, fused_y: np.ndarray):
        """-> (fused luma, mask (H, W) uint8 or None, [(class_id, label, score, box), ...] in fused pixels)."""
        h, w = fused_y.shape
        mask, detections = None, []
        with torch.inference_mode():
            if "enhancement" in self.heads:
                out = self.heads["enhancement"](self._tensor(ir_u), self._tensor(vis_y), self._tensor(fused_y))[0]
                fused_y = out.clamp(0, 1)[0, 0].float().cpu().numpy()
            th, tw = self.size if all(self.size) else (h, w)
            x = self._tensor(
                cv2.resize(fused_y, (tw, th), interpolation=cv2.INTER_AREA) if (th, tw) != (h, w) else fused_y
            )
            if "segmentation" in self.heads:
                pred = self.heads["segmentation"](x).argmax(1)[0].to(torch.uint8).cpu().numpy()
                mask = cv2.resize(pred, (w, h), interpolation=cv2.INTER_NEAREST)
            if "detection" in self.heads:
                boxes, scores, classes = decode(self.heads["detection"](x), self.score_threshold, self.nms_iou)[0]
                scale = np.array([w / tw, h / th, w / tw, h / th], np.float32)
                names = self.card["classes"]
                boxes = np.clip(boxes * scale, 0, [w, h, w, h])
                detections = [
                    Detection(int(c), names[int(c)], float(s), tuple(float(v) for v in b))
                    for b, s, c in zip(boxes, scores, classes)
                ]
        return fused_y, mask, detections
