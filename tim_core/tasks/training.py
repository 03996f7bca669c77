"""Training-side task code: each task's loss and validation metric (trainers only; run time never imports it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..losses import LossWeights
from .boxes import coco_evaluation
from .data import TaskData
from .detection import decode, detection_loss, encode_targets
from .enhancement import enhancement_loss
from .segmentation import confusion_matrix, miou, segmentation_loss


def task_loss(task: str, net: nn.Module, x: torch.Tensor, batch: dict, dice: float = 0.0,
              weights: LossWeights | None = None) -> tuple[torch.Tensor, dict]:
    """Loss of the task network on input x (the fused image or one camera) against the batch's labels."""
    if task == "detection":
        out = net(x)
        targets = encode_targets(batch["boxes"], batch["classes"], net.num_classes, *x.shape[-2:])
        return detection_loss(out, {k: v.to(out.device) for k, v in targets.items()})
    if task == "segmentation":
        return segmentation_loss(net(x), batch["mask"].to(x.device), dice)
    ir, vis = batch["ir"].to(x.device), batch["vis"].to(x.device)
    return enhancement_loss(net(ir, vis, x), ir, vis, weights)


@torch.no_grad()
def evaluate_task(task: str, net: nn.Module, data: TaskData, input_fn: Callable, device: torch.device,
                  batch: int = 8, weights: LossWeights | None = None) -> dict:
    """Validation metrics on whole images: detection mAP@0.5 / 0.5:0.95 with per-class AP and PR curves
    (`boxes.coco_evaluation`), segmentation mIoU, enhancement loss."""
    was_training = net.training
    net.eval()
    preds, conf, losses = [], None, []
    for i in range(0, len(data), batch):
        ir = torch.from_numpy(data.ir[i:i + batch])[:, None].to(device)
        vis = torch.from_numpy(data.vis[i:i + batch])[:, None].to(device)
        x = input_fn(ir, vis)
        if task == "detection":
            preds += decode(net(x), score_threshold=0.01, nms_iou=0.5)
        elif task == "segmentation":
            pred = net(x).argmax(1).cpu().numpy()
            c = confusion_matrix(pred, data.masks[i:i + batch], net.num_classes)
            conf = c if conf is None else conf + c
        else:
            losses.append(enhancement_loss(net(ir, vis, x), ir, vis, weights)[0].item() * len(ir))
    net.train(was_training)
    if task == "detection":
        return coco_evaluation(list(zip(data.boxes, data.labels)), preds, data.classes)
    if task == "segmentation":
        return miou(conf)
    return {"loss": float(np.sum(losses) / len(data))}
