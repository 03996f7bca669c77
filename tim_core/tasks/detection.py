"""A light anchor-free detector on the fused luma (CenterNet-style, stride 4): network, targets, loss, decoder.

The head predicts, per stride-4 cell, one heatmap logit per class (object centres), the box size as
log(w / 4), log(h / 4) and the sub-cell offset of the centre. Decoding takes 3x3 peaks of the heatmap,
then a per-class greedy NMS of our own (no torchvision). Boxes are (x1, y1, x2, y2) in input pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import TinyFPN

STRIDE = 4
PRIOR = 0.1  # initial object probability of every cell: keeps the focal loss stable at the start


class CenterNet(nn.Module):
    """(N, 1, H, W) luma in [0, 1] -> (N, K + 4, H/4, W/4): K heat logits, log size (w, h), offset logits."""

    def __init__(self, num_classes: int, width: int = 24):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = TinyFPN(width)
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, num_classes + 4, 1))
        with torch.no_grad():
            self.head[-1].bias.zero_()
            self.head[-1].bias[:num_classes] = -math.log((1 - PRIOR) / PRIOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")  # the encoder halves four times
        return self.head(self.backbone(x))[..., : math.ceil(h / STRIDE), : math.ceil(w / STRIDE)]


def _gaussian(h: int, w: int, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    return np.exp(-((xs - cx) ** 2) / (2 * sx * sx) - ((ys - cy) ** 2) / (2 * sy * sy))


def encode_targets(boxes: list[np.ndarray], classes: list[np.ndarray], num_classes: int,
                   height: int, width: int) -> dict[str, torch.Tensor]:
    """Training targets for a batch: heat (N,K,h,w), size and offset (N,2,h,w), centre mask (N,1,h,w)."""
    n, oh, ow = len(boxes), math.ceil(height / STRIDE), math.ceil(width / STRIDE)
    heat = np.zeros((n, num_classes, oh, ow), np.float32)
    size = np.zeros((n, 2, oh, ow), np.float32)
    offset = np.zeros((n, 2, oh, ow), np.float32)
    mask = np.zeros((n, 1, oh, ow), np.float32)
    for i, (bxs, cls) in enumerate(zip(boxes, classes)):
        for (x1, y1, x2, y2), c in zip(bxs, cls):
            bw, bh = (x2 - x1) / STRIDE, (y2 - y1) / STRIDE
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            ix, iy = min(int(cx), ow - 1), min(int(cy), oh - 1)
            # TTFNet's elliptical Gaussian (alpha 0.54) around the centre cell; a floor for tiny boxes
            g = _gaussian(oh, ow, ix, iy, max(0.54 * bw / 6, 0.5), max(0.54 * bh / 6, 0.5))
            heat[i, int(c)] = np.maximum(heat[i, int(c)], g)
            heat[i, int(c), iy, ix] = 1.0
            size[i, :, iy, ix] = (math.log(bw), math.log(bh))
            offset[i, :, iy, ix] = (cx - ix, cy - iy)
            mask[i, 0, iy, ix] = 1.0
    return {k: torch.from_numpy(v) for k, v in
            (("heat", heat), ("size", size), ("offset", offset), ("mask", mask))}


def detection_loss(out: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """CenterNet's penalty-reduced focal loss on the heatmap + L1 on log size and offset at the centres."""
    k = out.shape[1] - 4
    heat_t, mask = targets["heat"], targets["mask"]
    p = torch.sigmoid(out[:, :k].float()).clamp(1e-4, 1 - 1e-4)
    pos = heat_t.eq(1.0).float()
    n_pos = pos.sum().clamp(min=1.0)
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4 * (1 - pos)).sum()
    focal = -(pos_loss + neg_loss) / n_pos
    l_size = (F.l1_loss(out[:, k:k + 2], targets["size"], reduction="none") * mask).sum() / n_pos
    l_off = (F.l1_loss(torch.sigmoid(out[:, k + 2:]), targets["offset"], reduction="none") * mask).sum() / n_pos
    total = focal + l_size + l_off
    return total, {"heat": focal.item(), "size": l_size.item(), "offset": l_off.item()}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (n, 4) and (m, 4) x1y1x2y2 boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy per-class non-maximum suppression; returns the kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    ious = box_iou(boxes, boxes) if len(boxes) else np.zeros((0, 0))
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= (ious[i] > iou) & (classes == classes[i])
    return np.asarray(keep, dtype=np.int64)


def decode(out: torch.Tensor, score_threshold: float = 0.05, nms_iou: float = 0.5,
           top_k: int = 100) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Raw head output -> per image (boxes (n,4) x1y1x2y2 in input pixels, scores, class ids)."""
    k = out.shape[1] - 4
    heat = torch.sigmoid(out[:, :k].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    n, _, oh, ow = heat.shape
    scores, idx = peaks.view(n, -1).topk(min(top_k, k * oh * ow))
    results = []
    for i in range(n):
        s, j = scores[i], idx[i]
        keep = s >= score_threshold
        s, j = s[keep], j[keep]
        cls, cell = j // (oh * ow), j % (oh * ow)
        ys, xs = cell // ow, cell % ow
        size = out[i, k:k + 2].float().exp().view(2, -1)[:, cell] * STRIDE
        off = torch.sigmoid(out[i, k + 2:].float()).view(2, -1)[:, cell]
        cx, cy = (xs + off[0]) * STRIDE, (ys + off[1]) * STRIDE
        boxes = torch.stack((cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2), 1)
        b, sc, c = boxes.cpu().numpy(), s.cpu().numpy(), cls.cpu().numpy()
        kept = nms(b, sc, c, nms_iou) if nms_iou < 1.0 else np.arange(len(b))
        results.append((b[kept], sc[kept], c[kept]))
    return results
