"""A light encoder-decoder segmenter on the fused luma: network, CE (+ Dice) loss, mIoU, MSRS-layout reader.

MSRS / MFNet layout: ROOT/ir/NAME.png, ROOT/vi/NAME.png and ROOT/Segmentation_labels/NAME.png holding
class ids 0..8 (MSRS_CLASSES; 0 is the 'unlabelled' background class, which MSRS evaluations count).
255 marks pixels to ignore, in training and in the mIoU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..files import ImageFileError, read_image
from .backbone import TinyFPN

IGNORE = 255
LABEL_DIR = "Segmentation_labels"
MSRS_CLASSES = ("unlabelled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump")
MSRS_PALETTE = ((0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192), (128, 128, 0),
                (64, 64, 128), (192, 128, 128), (192, 64, 0))  # MFNet's colours, RGB


class SegNet(nn.Module):
    """(N, 1, H, W) luma in [0, 1] -> (N, K, H, W) class logits: TinyFPN at stride 4, bilinear up-sampling."""

    def __init__(self, num_classes: int, width: int = 24):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = TinyFPN(width)
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")
        logits = F.interpolate(self.head(self.backbone(x)), scale_factor=4.0, mode="bilinear", align_corners=False)
        return logits[..., :h, :w]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy (255 ignored) + dice x soft multi-class Dice loss over the labelled pixels."""
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE)
    terms = {"ce": ce.item()}
    total = ce
    if dice > 0:
        valid = (target != IGNORE).unsqueeze(1).float()
        prob = torch.softmax(logits.float(), 1) * valid
        onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
        inter = (prob * onehot).sum(dim=(0, 2, 3))
        denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        l_dice = 1 - ((2 * inter + 1) / (denom + 1)).mean()
        terms["dice"] = l_dice.item()
        total = total + dice * l_dice
    return total, terms


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = ground truth, columns = prediction; pixels labelled 255 are ignored."""
    valid = target != IGNORE
    idx = target[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou(conf: np.ndarray) -> dict:
    """mIoU over the classes present (ground truth or prediction), per-class IoU and pixel accuracy."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    iou = np.where(present, inter / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)) if present.any() else float("nan"),
            "iou": [None if np.isnan(v) else float(v) for v in iou],
            "pixel_acc": float(inter.sum() / max(conf.sum(), 1))}


def read_label(path: str | Path, num_classes: int) -> np.ndarray:
    """A class-id PNG -> (H, W) uint8; ids >= num_classes other than 255 are an error naming the file."""
    mask = read_image(path)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ImageFileError(f"{path}: a label map must be single-channel 8-bit class ids, got {mask.shape} "
                             f"{mask.dtype} (a colour visualisation is not a label map)")
    bad = (mask >= num_classes) & (mask != IGNORE)
    if bad.any():
        raise ImageFileError(f"{path}: class id {int(mask[bad].max())} >= {num_classes} classes; use 255 to ignore")
    return mask

